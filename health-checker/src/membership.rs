//! Membership: each replica writes its heartbeat into the store's `health-checkers` collection
//! every second (unfenced: replicas do not lead) and reads everyone's every half second. Members
//! whose heartbeat is older than [`MEMBER_TTL_MS`] are dead; the live set decides who owns which
//! check ([`stride_core::rendezvous`]), and the scheduler leader reads the same records to decide
//! whose results it accepts.
//!
//! A replica that cannot renew its own heartbeat for that long considers itself out (others
//! take its share by then), and one that stops cleanly deletes its record so its share moves at
//! once.

use std::sync::Arc;
use std::time::Duration;

use stride_core::rendezvous::{live_members, Member, MEMBERS, MEMBER_TTL_MS};
use stride_core::Timestamp;
use stride_store::StateStore;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::metrics as m;

/// How often the heartbeat is written.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// How often the members are read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Records silent for this long are deleted by whoever sees them (replicas that were killed).
const FORGET_AFTER_MS: i64 = 5 * 60 * 1000;

/// Keeps this replica registered and publishes the live members until `stop` turns true, then
/// deregisters.
pub async fn run(
    store: Arc<dyn StateStore>,
    me: Member,
    members: watch::Sender<Vec<String>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_beat: Option<Instant> = None;
    let mut warned = false;
    loop {
        let now = Timestamp::now();
        if last_beat.is_none_or(|t| t.elapsed() >= HEARTBEAT_INTERVAL) {
            let record = Member {
                heartbeat_at_ms: now.0,
                ..me.clone()
            };
            let bytes = serde_json::to_vec(&record).unwrap_or_default();
            match store.put_unfenced(MEMBERS, &me.id, bytes.into()).await {
                Ok(()) => {
                    last_beat = Some(Instant::now());
                    warned = false;
                }
                Err(e) if !warned => {
                    warn!(error = %e, "cannot write the heartbeat; retrying");
                    warned = true;
                }
                Err(_) => {}
            }
        }
        let beating =
            last_beat.is_some_and(|t| t.elapsed() < Duration::from_millis(MEMBER_TTL_MS as u64));
        let live = match store.get_all(MEMBERS).await {
            Ok(records) => {
                forget_the_long_dead(&store, &records, now.0).await;
                Some(live_members(records.iter().map(|(_, v)| v.as_ref()), now.0))
            }
            Err(e) => {
                warn!(error = %e, "cannot read the members");
                None
            }
        };
        let next = match live {
            Some(l) if beating => Some(l),
            // Without our own heartbeat the others count us out: own nothing.
            _ if !beating => Some(Vec::new()),
            _ => None,
        };
        if let Some(next) = next {
            metrics::gauge!(m::MEMBERS_LIVE).set(next.len() as f64);
            members.send_if_modified(|cur| {
                if *cur == next {
                    return false;
                }
                info!(members = ?next, "live health checkers changed");
                *cur = next;
                true
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    if let Err(e) = store.delete_unfenced(MEMBERS, &me.id).await {
        warn!(error = %e, "cannot deregister; the others take over once the heartbeat is stale");
    }
    info!(id = %me.id, "deregistered");
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
