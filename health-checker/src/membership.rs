//! Membership: each replica writes its heartbeat into the store's `health-checkers` collection
//! every half second (unfenced: replicas do not lead) and reads everyone's as often. Members
//! whose heartbeat is older than [`MEMBER_TTL_MS`] are dead; the live set decides who owns which
//! check ([`stride_core::rendezvous`]), and the scheduler leader reads the same records to decide
//! whose results it accepts.
//!
//! Every store call has a deadline (reads [`CALL_DEADLINE`], heartbeats [`LEASE`]: a heartbeat
//! is written without waiting for the one before), and a heartbeat counts only once the store
//! has confirmed it. A confirmed heartbeat keeps this replica a member for [`LEASE`],
//! measured from when the write began: a second less than the others wait before counting it
//! out, so a replica cut off from the store stops owning checks and stops reporting before
//! anyone takes its share over ([`Standing::is_member`]; the replica's main loop and its
//! reporter each hold it to that deadline themselves, whatever the store calls are doing).
//!
//! A replica that lost its membership that way registers again under a new `joined_at_ms`
//! ([`Registration`]). Its results carry the registration they were produced under, and both the
//! reporter and the leader drop those of an earlier one: what a replica found while cut off
//! (checks of tasks it could not reach) never counts once it is back.
//!
//! ```text
//!  heartbeat written at t (confirmed)   ─► member until t + LEASE (2 s)
//!  others count it out at               ─► t + MEMBER_TTL_MS (3 s)
//!  lease lapsed, heartbeat confirmed again ─► new joined_at_ms; older results are dropped
//! ```
//!
//! A replica that stops cleanly deletes its record so its share moves at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use stride_core::rendezvous::{live_members, Member, MEMBERS, MEMBER_TTL_MS};
use stride_core::Timestamp;
use stride_store::StateStore;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use tracing::{info, warn};

use crate::metrics as m;

/// How often the heartbeat is written.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// How often the members are read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The longest any one membership call to the store may take.
pub const CALL_DEADLINE: Duration = Duration::from_millis(800);
/// How long a confirmed heartbeat keeps this replica a member, from when its write began: one
/// second less than the others wait ([`MEMBER_TTL_MS`]) before they take its share over.
pub const LEASE: Duration = Duration::from_millis(MEMBER_TTL_MS as u64 - 1_000);
/// Records silent for this long are deleted by whoever sees them (replicas that were killed).
const FORGET_AFTER_MS: i64 = 5 * 60 * 1000;

/// The membership record a replica writes: [`Member`] and the registration it belongs to.
/// Readers that know only [`Member`] (such as [`live_members`]) ignore the extra field.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Registration {
    #[serde(flatten)]
    pub member: Member,
    /// When this registration began (ms since the epoch), unique per replica: it changes only
    /// when the replica registers again after losing its membership.
    #[serde(default)]
    pub joined_at_ms: i64,
}

/// Where this replica stands, as the rest of the replica needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// The registration results are produced under; 0 before the first one.
    pub joined_at_ms: i64,
    /// Until when the last confirmed heartbeat keeps this replica a member; `None` while out.
    pub until: Option<Instant>,
    /// The live members (sorted) as last read while a member, this replica included.
    pub members: Vec<String>,
}

impl Standing {
    /// Whether this replica is a member at `now`: it may own checks and report.
    pub fn is_member(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// The members to share the checks with at `now`: none while out.
    pub fn members_at(&self, now: Instant) -> Vec<String> {
        if self.is_member(now) {
            self.members.clone()
        } else {
            Vec::new()
        }
    }

    /// The registration results may be reported under at `now`, if any.
    pub fn registration_at(&self, now: Instant) -> Option<i64> {
        self.is_member(now).then_some(self.joined_at_ms)
    }
}

/// The heartbeat's bookkeeping, apart from the store so that tests drive it with made-up
/// times.
#[derive(Debug, Default)]
pub struct Heart {
    /// The registration being held or attempted.
    registration: Option<i64>,
    /// The registration before, so a new one is never equal to it.
    previous: i64,
    /// When a confirmed heartbeat stops keeping this replica a member.
    until: Option<Instant>,
}

impl Heart {
    /// The registration to write a heartbeat under, begun at `now_ms` if there is none.
    pub fn registration(&mut self, now_ms: i64) -> i64 {
        let previous = self.previous;
        *self
            .registration
            .get_or_insert_with(|| now_ms.max(previous + 1))
    }

    /// A heartbeat of `registration` whose write began at `began` was confirmed; true if that
    /// made this replica a member. A confirmation of a registration given up meanwhile is
    /// ignored, and one that arrives (at `now`) after its lease would have ended keeps nothing.
    pub fn confirmed(&mut self, began: Instant, registration: i64, now: Instant) -> bool {
        // A lease that ran out before this confirmation ended the registration, whether or not
        // anything noticed yet: the next heartbeat registers anew.
        self.expire(now);
        if self.registration != Some(registration) {
            return false;
        }
        let until = began + LEASE;
        if until <= now {
            return false;
        }
        let joined = self.until.is_none();
        self.until = Some(self.until.map_or(until, |u| u.max(until)));
        joined
    }

    /// Ends a membership whose lease ran out by `now`; true if it did.
    pub fn expire(&mut self, now: Instant) -> bool {
        match self.until {
            Some(u) if now >= u => {
                self.until = None;
                if let Some(r) = self.registration.take() {
                    self.previous = r;
                }
                true
            }
            _ => false,
        }
    }

    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    pub fn joined_at_ms(&self) -> i64 {
        self.registration.unwrap_or(self.previous)
    }
}

/// Keeps this replica registered and publishes its [`Standing`] until `stop` turns true, then
/// deregisters.
pub async fn run(
    store: Arc<dyn StateStore>,
    me: Member,
    standing: watch::Sender<Standing>,
    mut stop: watch::Receiver<bool>,
) {
    let heart = Arc::new(Mutex::new(Heart::default()));
    let standing = Arc::new(standing);
    let writer = tokio::spawn(beat(
        store.clone(),
        me.clone(),
        heart.clone(),
        standing.clone(),
        stop.clone(),
    ));
    loop {
        if lock(&heart).expire(Instant::now()) {
            warn!(
                "no heartbeat confirmed within the lease: owning nothing until it registers again"
            );
        }
        let now_ms = Timestamp::now().0;
        let live = match timeout(CALL_DEADLINE, store.get_all(MEMBERS)).await {
            Ok(Ok(records)) => {
                let _ = timeout(
                    CALL_DEADLINE,
                    forget_the_long_dead(&store, &records, now_ms),
                )
                .await;
                Some(live_members(
                    records.iter().map(|(_, v)| v.as_ref()),
                    now_ms,
                ))
            }
            Ok(Err(e)) => {
                warn!(error = %e, "cannot read the members");
                None
            }
            Err(_) => {
                warn!(deadline = ?CALL_DEADLINE, "reading the members timed out");
                None
            }
        };
        publish(&standing, &heart, live);
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    // Writes still in flight were sent before the delete on the same connection, so none of
    // them brings the record back.
    let _ = writer.await;
    match timeout(
        Duration::from_secs(2),
        store.delete_unfenced(MEMBERS, &me.id),
    )
    .await
    {
        Ok(Ok(())) => info!(id = %me.id, "deregistered"),
        _ => warn!("cannot deregister; the others take over once the heartbeat is stale"),
    }
}

/// Writes a heartbeat every [`HEARTBEAT_INTERVAL`] without waiting for the last one: each may
/// take up to the lease to be confirmed, so a slow store delays confirmations without spacing
/// the heartbeats out. Each confirmation extends the lease and is published at once.
async fn beat(
    store: Arc<dyn StateStore>,
    me: Member,
    heart: Arc<Mutex<Heart>>,
    standing: Arc<watch::Sender<Standing>>,
    mut stop: watch::Receiver<bool>,
) {
    /// More than this many writes unconfirmed: the store is not answering; wait.
    const IN_FLIGHT: usize = 4;
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut writes = tokio::task::JoinSet::new();
    let mut warned = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if writes.len() >= IN_FLIGHT {
                    continue;
                }
                let began = Instant::now();
                let now = Timestamp::now();
                let record = Registration {
                    member: Member {
                        heartbeat_at_ms: now.0,
                        ..me.clone()
                    },
                    joined_at_ms: lock(&heart).registration(now.0),
                };
                let bytes = serde_json::to_vec(&record).unwrap_or_default();
                let store = store.clone();
                let id = me.id.clone();
                writes.spawn(async move {
                    let written = timeout(LEASE, store.put_unfenced(MEMBERS, &id, bytes.into())).await;
                    (began, record.joined_at_ms, written)
                });
            }
            Some(done) = writes.join_next() => {
                let Ok((began, registration, written)) = done else { continue };
                match written {
                    Ok(Ok(())) => {
                        let joined = lock(&heart).confirmed(began, registration, Instant::now());
                        if joined {
                            info!(joined_at_ms = registration, "registered in the membership");
                        }
                        warned = false;
                        publish(&standing, &heart, None);
                    }
                    Ok(Err(e)) if !warned => {
                        warn!(error = %e, "cannot write the heartbeat; retrying");
                        warned = true;
                    }
                    Err(_) if !warned => {
                        warn!(deadline = ?LEASE, "a heartbeat was not confirmed in time");
                        warned = true;
                    }
                    _ => {}
                }
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

fn lock(heart: &Mutex<Heart>) -> std::sync::MutexGuard<'_, Heart> {
    heart.lock().unwrap_or_else(|e| e.into_inner())
}

/// Publishes the standing: the registration and its lease as they are now, and the members
/// when they were read (`None`: keep the last list).
fn publish(standing: &watch::Sender<Standing>, heart: &Mutex<Heart>, live: Option<Vec<String>>) {
    standing.send_if_modified(|cur| {
        let (until, joined_at_ms) = {
            let h = lock(heart);
            (h.until(), h.joined_at_ms())
        };
        let mut changed = false;
        if cur.until != until || cur.joined_at_ms != joined_at_ms {
            cur.until = until;
            cur.joined_at_ms = joined_at_ms;
            changed = true;
        }
        let members = match (until, live) {
            (None, _) => Some(Vec::new()),
            (Some(_), live) => live,
        };
        if let Some(next) = members {
            metrics::gauge!(m::MEMBERS_LIVE).set(next.len() as f64);
            if cur.members != next {
                info!(members = ?next, "live health checkers changed");
                cur.members = next;
                changed = true;
            }
        }
        changed
    });
}

async fn forget_the_long_dead(
    store: &Arc<dyn StateStore>,
    records: &[(String, bytes::Bytes)],
    now_ms: i64,
) {
    for (key, value) in records {
        let stale = serde_json::from_slice::<Member>(value)
            .map_or(true, |m| now_ms - m.heartbeat_at_ms > FORGET_AFTER_MS);
        if stale {
            let _ = store.delete_unfenced(MEMBERS, key).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lapsed_lease_ends_the_membership_and_the_next_one_is_a_new_registration() {
        let t0 = Instant::now();
        let mut h = Heart::default();
        assert_eq!(h.registration(5_000), 5_000);
        assert_eq!(h.until(), None, "not a member before a confirmed heartbeat");
        assert!(h.confirmed(t0, 5_000, Instant::now()), "joined");
        assert_eq!(h.until(), Some(t0 + LEASE));
        // Heartbeats keep it, under the same registration.
        assert_eq!(h.registration(6_000), 5_000);
        assert!(!h.confirmed(t0 + Duration::from_millis(500), 5_000, Instant::now()));
        assert!(!h.expire(t0 + Duration::from_millis(2_400)));
        // A late confirmation of an older write does not shorten the lease.
        h.confirmed(t0, 5_000, Instant::now());
        assert_eq!(h.until(), Some(t0 + Duration::from_millis(500) + LEASE));
        // Cut off: nothing confirmed; the lease runs out.
        assert!(h.expire(t0 + Duration::from_millis(500) + LEASE));
        assert_eq!(h.until(), None);
        assert_eq!(h.joined_at_ms(), 5_000);
        // A confirmation of the old registration arriving now keeps nothing.
        assert!(!h.confirmed(Instant::now(), 5_000, Instant::now()));
        assert_eq!(h.until(), None);
        // Back: a new registration, even if the clock says the same millisecond.
        assert_eq!(h.registration(5_000), 5_001);
        assert_eq!(h.registration(9_000), 5_001, "kept until confirmed");
        assert!(h.confirmed(Instant::now(), 5_001, Instant::now()));
        assert_eq!(h.joined_at_ms(), 5_001);
        // A confirmation that comes after its lease would have ended keeps nothing.
        let mut late = Heart::default();
        late.registration(1);
        assert!(!late.confirmed(Instant::now() - LEASE, 1, Instant::now()));
    }

    #[test]
    fn a_lease_that_ran_out_unnoticed_ends_the_registration_at_the_next_confirmation() {
        let mut h = Heart::default();
        assert_eq!(h.registration(5_000), 5_000);
        let t0 = Instant::now();
        assert!(h.confirmed(t0 - LEASE + Duration::from_millis(5), 5_000, t0));
        // Cut off until after the lease ended; nothing called `expire`. A heartbeat of the
        // old registration written after the cut is confirmed: it keeps nothing.
        let later = t0 + Duration::from_millis(10);
        assert!(!h.confirmed(later, 5_000, later));
        assert_eq!(h.until(), None);
        assert_eq!(h.registration(5_000), 5_001);
        assert!(h.confirmed(later, 5_001, later), "joined again");
    }

    #[test]
    fn the_lease_ends_before_the_others_count_the_replica_out() {
        assert!(LEASE + HEARTBEAT_INTERVAL <= Duration::from_millis(MEMBER_TTL_MS as u64));
        assert!(CALL_DEADLINE < LEASE);
    }

    #[test]
    fn a_standing_owns_and_reports_only_while_its_lease_runs() {
        let t0 = Instant::now();
        let s = Standing {
            joined_at_ms: 7,
            until: Some(t0 + LEASE),
            members: vec!["a".into(), "b".into()],
        };
        assert_eq!(s.members_at(t0), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(s.registration_at(t0), Some(7));
        assert!(s.members_at(t0 + LEASE).is_empty());
        assert_eq!(s.registration_at(t0 + LEASE), None);
    }

    #[test]
    fn the_record_reads_as_a_member_too() {
        let r = Registration {
            member: Member {
                id: "c1".into(),
                address: None,
                heartbeat_at_ms: 10_000,
            },
            joined_at_ms: 9_000,
        };
        let bytes = serde_json::to_vec(&r).unwrap_or_default();
        assert_eq!(
            live_members([bytes.as_slice()], 10_500),
            vec!["c1".to_string()]
        );
        let back: Registration = serde_json::from_slice(&bytes).expect("registration");
        assert_eq!(back, r);
        let old: Registration =
            serde_json::from_slice(br#"{"id":"c2","heartbeat_at_ms":1}"#).expect("old record");
        assert_eq!(old.joined_at_ms, 0);
    }
}
