//! The event fan-out behind `GET /v2/events`.
//!
//! One task per gateway tails the store's event stream ([`EventHub::tail`]) and hands each event
//! to every connected SSE client through a `tokio::sync::broadcast` channel. It also keeps the
//! last `event_buffer` events in memory, so a client reconnecting with `Last-Event-ID` usually
//! resumes without touching the store; an older id is served from the store first.
//!
//! Subscribing and publishing take the same lock, which makes "the recent events after X" and
//! "everything from now on" meet without a gap; the client drops duplicates by stream id.
//!
//! ```text
//!  store stream ──read_events(after, 1000, 5s)──► tail ──► recent (ring) + broadcast
//!                                                             │ subscribe(after)
//!                        SSE client: [store backlog] → [ring backlog] → live (dedup by id)
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use stride_store::{event_id_cmp, StateStore, StoredEvent};
use tokio::sync::{broadcast, watch};

use crate::metrics::EVENTS_READ;

/// Events asked for per store read.
const READ_BATCH: usize = 1000;
/// How long one store read may block waiting for new events.
const READ_BLOCK: Duration = Duration::from_secs(5);
/// Pause after a failed store read.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// An event ready to write to SSE clients. A stored event is parsed only when a client first
/// needs it, so that events nobody is listening to cost the gateway no JSON work.
#[derive(Debug)]
pub(crate) struct SseEvent {
    /// Stream id; `None` for events synthesized for one client (`event_stream_attached`).
    pub id: Option<String>,
    body: Bytes,
    parsed: OnceLock<Option<Parsed>>,
}

#[derive(Debug)]
struct Parsed {
    event_type: String,
    /// Single-line JSON.
    data: String,
    /// The apps and groups the event concerns (none for events about the cluster), found once
    /// here so that each SSE client filters by its view scope without parsing the event.
    subjects: Vec<stride_core::PathId>,
}

impl Parsed {
    fn of(value: &Value) -> Option<Self> {
        Some(Self {
            event_type: value.get("eventType")?.as_str()?.to_string(),
            subjects: crate::auth::policy::event_subjects(value),
            data: value.to_string(),
        })
    }
}

impl SseEvent {
    /// A stored event, parsed when first needed.
    pub fn from_stored(e: &StoredEvent) -> Self {
        Self {
            id: Some(e.id.clone()),
            body: e.body.clone(),
            parsed: OnceLock::new(),
        }
    }

    /// A local event for one client, never stored.
    pub fn local(body: &Value) -> Self {
        Self {
            id: None,
            body: Bytes::new(),
            parsed: OnceLock::from(Parsed::of(body)),
        }
    }

    /// `None` when the body is not a JSON object with `eventType`: such an event is sent to
    /// nobody.
    fn parsed(&self) -> Option<&Parsed> {
        self.parsed
            .get_or_init(|| {
                let parsed = serde_json::from_slice::<Value>(&self.body)
                    .ok()
                    .and_then(|v| Parsed::of(&v));
                if parsed.is_none() {
                    tracing::warn!(id = ?self.id, "skipping a stored event that is not a JSON object with eventType");
                }
                parsed
            })
            .as_ref()
    }

    /// Whether a client that takes `wanted_type` events and sees `sees` subjects gets this one.
    pub fn wanted(
        &self,
        wanted_type: impl Fn(&str) -> bool,
        sees: impl Fn(&[stride_core::PathId]) -> bool,
    ) -> bool {
        self.parsed()
            .is_some_and(|p| wanted_type(&p.event_type) && sees(&p.subjects))
    }

    /// The SSE frame, with CRLF line ends as Marathon's Jetty writes them; empty for an event
    /// that is not a JSON object with `eventType`.
    pub fn frame(&self) -> Bytes {
        let Some(p) = self.parsed() else {
            return Bytes::new();
        };
        let mut s = String::with_capacity(p.data.len() + 64);
        if let Some(id) = &self.id {
            s.push_str("id: ");
            s.push_str(id);
            s.push_str("\r\n");
        }
        s.push_str("event: ");
        s.push_str(&p.event_type);
        s.push_str("\r\ndata: ");
        s.push_str(&p.data);
        s.push_str("\r\n\r\n");
        Bytes::from(s)
    }

    /// True when this event comes after stream id `after`.
    pub fn is_after(&self, after: &str) -> bool {
        self.id
            .as_deref()
            .is_some_and(|id| event_id_cmp(id, after).is_gt())
    }
}

struct HubState {
    recent: VecDeque<Arc<SseEvent>>,
    /// Every event after this stream id is in `recent` or still to be published; `None` until
    /// the tail has found its starting point.
    covered_after: Option<String>,
}

/// The broadcast of store events to SSE clients, with a ring of recent ones.
pub(crate) struct EventHub {
    tx: broadcast::Sender<Arc<SseEvent>>,
    state: parking_lot::Mutex<HubState>,
    capacity: usize,
}

/// What a new subscriber gets: the live channel and what it missed.
pub(crate) struct Subscription {
    pub live: broadcast::Receiver<Arc<SseEvent>>,
    /// Recent events after the requested id, oldest first.
    pub recent: Vec<Arc<SseEvent>>,
    /// When the requested id is older than the ring: read the store after the requested id up
    /// to and including this id before sending `recent`.
    pub from_store_until: Option<Option<String>>,
}

impl EventHub {
    pub fn new(capacity: usize) -> Arc<Self> {
        let capacity = capacity.max(1);
        let (tx, _) = broadcast::channel(capacity);
        Arc::new(Self {
            tx,
            state: parking_lot::Mutex::new(HubState {
                recent: VecDeque::with_capacity(capacity),
                covered_after: None,
            }),
            capacity,
        })
    }

    /// Subscribes to new events; with `after`, also returns what came after that id.
    pub fn subscribe(&self, after: Option<&str>) -> Subscription {
        let state = self.state.lock();
        let live = self.tx.subscribe();
        let Some(after) = after else {
            return Subscription {
                live,
                recent: Vec::new(),
                from_store_until: None,
            };
        };
        let recent: Vec<Arc<SseEvent>> = state
            .recent
            .iter()
            .filter(|e| e.is_after(after))
            .cloned()
            .collect();
        let from_store_until = match &state.covered_after {
            Some(covered) if event_id_cmp(after, covered).is_ge() => None,
            Some(covered) => Some(Some(covered.clone())),
            None => Some(None),
        };
        Subscription {
            live,
            recent,
            from_store_until,
        }
    }

    fn started(&self, position: &str) {
        let mut state = self.state.lock();
        if state.covered_after.is_none() {
            state.covered_after = Some(position.to_string());
        }
    }

    fn publish(&self, events: &[StoredEvent]) {
        let mut state = self.state.lock();
        for stored in events {
            let event = Arc::new(SseEvent::from_stored(stored));
            if state.recent.len() == self.capacity {
                if let Some(dropped) = state.recent.pop_front() {
                    state.covered_after = dropped.id.clone();
                }
            }
            state.recent.push_back(event.clone());
            // No receivers is fine: nobody is listening right now.
            let _ = self.tx.send(event);
        }
    }

    /// Tails the store's event stream until `shutdown` turns true.
    pub async fn tail(
        self: Arc<Self>,
        store: Arc<dyn StateStore>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut position = loop {
            match store.last_event_id().await {
                Ok(id) => break id,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the event stream position; retrying");
                    if pause_or_shutdown(&mut shutdown, RETRY_PAUSE).await {
                        return;
                    }
                }
            }
        };
        self.started(&position);
        tracing::info!(position = %position, "tailing the event stream");
        loop {
            if *shutdown.borrow() {
                return;
            }
            let read = tokio::select! {
                r = store.read_events(Some(&position), READ_BATCH, READ_BLOCK) => r,
                _ = shutdown.changed() => return,
            };
            match read {
                Ok(events) => {
                    if let Some(last) = events.last() {
                        position = last.id.clone();
                        metrics::counter!(EVENTS_READ).increment(events.len() as u64);
                        self.publish(&events);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the event stream; retrying");
                    if pause_or_shutdown(&mut shutdown, RETRY_PAUSE).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Sleeps for `pause`; `true` when shutdown came first.
async fn pause_or_shutdown(shutdown: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(pause) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

/// Reads stored events after `after` up to and including `until` (or up to the end when
/// `until` is `None`), for a client resuming from an id older than the hub's ring.
pub(crate) async fn read_backlog(
    store: &dyn StateStore,
    after: &str,
    until: Option<&str>,
) -> Result<Vec<SseEvent>, stride_store::StoreError> {
    let mut out = Vec::new();
    let mut cursor = after.to_string();
    loop {
        let batch = store
            .read_events(Some(&cursor), READ_BATCH, Duration::from_millis(1))
            .await?;
        let Some(last) = batch.last() else { break };
        cursor = last.id.clone();
        let full = batch.len() == READ_BATCH;
        for e in &batch {
            if until.is_some_and(|u| event_id_cmp(&e.id, u).is_gt()) {
                return Ok(out);
            }
            out.push(SseEvent::from_stored(e));
        }
        if !full || until.is_some_and(|u| event_id_cmp(&cursor, u).is_ge()) {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: &str, kind: &str) -> StoredEvent {
        StoredEvent {
            id: id.into(),
            body: Bytes::from(format!(
                r#"{{"eventType":"{kind}","timestamp":"2021-01-01T00:00:00.000Z"}}"#
            )),
        }
    }

    #[test]
    fn frames_use_crlf_and_carry_the_id() {
        let e = SseEvent::from_stored(&stored("5-0", "deployment_info"));
        let text = String::from_utf8(e.frame().to_vec()).expect("utf8");
        assert!(text.starts_with("id: 5-0\r\nevent: deployment_info\r\ndata: {"));
        assert!(text.ends_with("}\r\n\r\n"));
        assert!(e.wanted(|t| t == "deployment_info", |_| true));
        let nope = SseEvent::from_stored(&StoredEvent {
            id: "1-0".into(),
            body: Bytes::from_static(b"nope"),
        });
        assert!(!nope.wanted(|_| true, |_| true));
        assert!(nope.frame().is_empty());
    }

    #[test]
    fn resumes_from_the_ring_or_asks_for_the_store() {
        let hub = EventHub::new(2);
        hub.started("1-0");
        hub.publish(&[stored("2-0", "a"), stored("3-0", "b")]);
        let sub = hub.subscribe(Some("2-0"));
        assert_eq!(sub.recent.len(), 1);
        assert_eq!(sub.from_store_until, None);
        // The ring holds two: 2-0 drops out, so a resume from 1-0 needs the store up to 2-0.
        hub.publish(&[stored("4-0", "c")]);
        let sub = hub.subscribe(Some("1-0"));
        assert_eq!(sub.from_store_until, Some(Some("2-0".to_string())));
        assert_eq!(
            sub.recent.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            vec![Some("3-0".into()), Some("4-0".into())]
        );
        let sub = hub.subscribe(None);
        assert!(sub.recent.is_empty() && sub.from_store_until.is_none());
    }
}
