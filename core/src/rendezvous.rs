//! Rendezvous (highest-random-weight) hashing: which member of a group owns a key.
//!
//! Health checks are shared among the health-checker replicas this way, and the scheduler
//! leader uses the same function to accept a check's results only from the replica that owns
//! it. Every member scores every key with a stable hash of (member, key); the highest score
//! wins, the member id breaking ties. Hence the two properties that make rebalancing cheap:
//!
//! * when a member leaves, only the keys it owned move (each to its runner-up);
//! * when a member joins, it takes only the keys it now scores highest on, from whoever had them.
//!
//! The hash is spelled out here (FNV-1a, then a SplitMix64 finaliser) rather than taken from
//! `std`, whose hasher may change between Rust releases: processes built apart must agree.

/// What of an instance is checked: its `healthChecks[i]`, or its readiness check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CheckSlot {
    Health(u32),
    Readiness,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// SplitMix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The score of `member` for a key made of `parts` (hashed with separators, so `("ab","c")`
/// and `("a","bc")` differ).
pub fn weight(member: &str, parts: &[&[u8]]) -> u64 {
    let mut h = fnv(FNV_OFFSET, member.as_bytes());
    for p in parts {
        h = fnv(h, &[0xff]);
        h = fnv(h, p);
    }
    mix(h)
}

/// The owner of a key made of `parts` among `members`; `None` when there are none. Does not
/// depend on the order of `members`.
pub fn owner_of<'a, S: AsRef<str>>(parts: &[&[u8]], members: &'a [S]) -> Option<&'a str> {
    members.iter().map(AsRef::as_ref).max_by(|a, b| {
        weight(a, parts)
            .cmp(&weight(b, parts))
            .then_with(|| a.cmp(b))
    })
}

/// The owner of a plain string key.
pub fn owner<'a, S: AsRef<str>>(key: &str, members: &'a [S]) -> Option<&'a str> {
    owner_of(&[key.as_bytes()], members)
}

/// The replica that runs check `slot` of instance `instance_id`.
pub fn check_owner<'a, S: AsRef<str>>(
    instance_id: &str,
    slot: CheckSlot,
    members: &'a [S],
) -> Option<&'a str> {
    match slot {
        CheckSlot::Health(i) => owner_of(&[instance_id.as_bytes(), &i.to_be_bytes()], members),
        CheckSlot::Readiness => owner_of(&[instance_id.as_bytes(), b"readiness"], members),
    }
}

/// A number in `0..n` that a key always gets, for spreading first runs over time.
pub fn spread(instance_id: &str, slot: CheckSlot, n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let tag: [u8; 4] = match slot {
        CheckSlot::Health(i) => i.to_be_bytes(),
        CheckSlot::Readiness => *b"rdns",
    };
    weight("spread", &[instance_id.as_bytes(), &tag]) % n
}

/// Collection of health-checker replicas: replica id → [`Member`] JSON, written unfenced by
/// each replica every second.
pub const MEMBERS: &str = "health-checkers";
/// A member whose last heartbeat is older than this is dead.
pub const MEMBER_TTL_MS: i64 = 3_000;

/// A health-checker replica as it registers itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub id: String,
    /// Where the replica serves its metrics, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub heartbeat_at_ms: i64,
}

/// The ids of the live members among stored records (sorted, deduplicated); records that do not
/// parse are skipped.
pub fn live_members<'a>(records: impl IntoIterator<Item = &'a [u8]>, now_ms: i64) -> Vec<String> {
    let mut live: Vec<String> = records
        .into_iter()
        .filter_map(|r| serde_json::from_slice::<Member>(r).ok())
        .filter(|m| now_ms - m.heartbeat_at_ms <= MEMBER_TTL_MS)
        .map(|m| m.id)
        .collect();
    live.sort();
    live.dedup();
    live
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("checker-{i}")).collect()
    }

    #[test]
    fn the_hash_is_stable_across_builds() {
        // Pinned: processes built apart must agree on owners, so a change here moves checks.
        assert_ne!(weight("a", &[b"b", b"c"]), weight("a", &[b"bc"]));
        assert_eq!(owner("k", &Vec::<String>::new()), None);
        let m = members(3);
        let owners: Vec<String> = (0..8)
            .map(|k| owner(&format!("key-{k}"), &m).unwrap_or("").to_string())
            .collect();
        assert_eq!(weight("checker-0", &[b"key"]), 0xa2b1_2706_913f_4ef5);
        assert_eq!(owners, PINNED);
    }

    const PINNED: [&str; 8] = [
        "checker-2",
        "checker-0",
        "checker-0",
        "checker-1",
        "checker-2",
        "checker-0",
        "checker-0",
        "checker-2",
    ];

    #[test]
    fn members_are_live_while_their_heartbeat_is_fresh() {
        let rec = |id: &str, at: i64| {
            serde_json::to_vec(&Member {
                id: id.into(),
                address: None,
                heartbeat_at_ms: at,
            })
            .unwrap_or_default()
        };
        let records = [
            rec("b", 10_000),
            rec("a", 7_000),
            rec("c", 6_999),
            b"junk".to_vec(),
        ];
        assert_eq!(
            live_members(records.iter().map(Vec::as_slice), 10_000),
            vec!["a".to_string(), "b".to_string()]
        );
    }

    #[test]
    fn keys_spread_evenly() {
        let m = members(3);
        let mut counts = [0usize; 3];
        for k in 0..30_000 {
            let o =
                check_owner(&format!("app.instance-{k}"), CheckSlot::Health(0), &m).unwrap_or("");
            let i = m.iter().position(|x| x == o).unwrap_or(0);
            counts[i] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven shares: {counts:?}");
        }
    }

    proptest! {
        #[test]
        fn the_owner_is_a_member_whatever_their_order(
            n in 1usize..8, key in "[a-z0-9.-]{1,40}", rot in 0usize..8
        ) {
            let m = members(n);
            let mut rotated = m.clone();
            rotated.rotate_left(rot % n);
            rotated.reverse();
            let a = owner(&key, &m);
            prop_assert!(a.is_some_and(|o| m.iter().any(|x| x == o)));
            prop_assert_eq!(a, owner(&key, &rotated));
        }

        #[test]
        fn only_the_dead_members_share_moves(
            n in 2usize..8, dead in 0usize..8, keys in prop::collection::vec("[a-z0-9]{1,20}", 1..200)
        ) {
            let before = members(n);
            let dead = &before[dead % n];
            let after: Vec<String> = before.iter().filter(|m| *m != dead).cloned().collect();
            for (i, k) in keys.iter().enumerate() {
                let slot = CheckSlot::Health((i % 3) as u32);
                let was = check_owner(k, slot, &before);
                let now = check_owner(k, slot, &after);
                if was != Some(dead.as_str()) {
                    prop_assert_eq!(was, now, "a live member's key moved");
                } else {
                    prop_assert!(now.is_some_and(|o| o != dead));
                }
            }
        }

        #[test]
        fn a_joining_member_takes_only_its_share(
            n in 1usize..8, keys in prop::collection::vec("[a-z0-9]{1,20}", 1..200)
        ) {
            let before = members(n);
            let mut after = before.clone();
            after.push("newcomer".to_string());
            for k in &keys {
                let was = check_owner(k, CheckSlot::Readiness, &before);
                let now = check_owner(k, CheckSlot::Readiness, &after);
                if was != now {
                    prop_assert_eq!(now, Some("newcomer"), "a key moved between old members");
                }
            }
        }
    }
}
