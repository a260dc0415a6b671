//! What every request handler shares: the configuration, the store to read, the link to the
//! leader, the event hub, and a cached view of who leads (for the per-response
//! `X-Marathon-Leader` header, which must not cost a store read per request).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use stride_proto::tls::MutualTls;
use stride_store::{LeaderRecord, StateStore};
use stride_telemetry::MetricsHandle;
use tokio::sync::watch;

use crate::admission::Admission;
use crate::audit::AuditLog;
use crate::auth::Security;
use crate::config::Config;
use crate::events::EventHub;
use crate::leader::LeaderLink;
use crate::metrics::EVENT_STREAMS_ACTIVE;

pub(crate) struct Gateway {
    pub config: Config,
    /// `host:port` clients reach this gateway at (the configured one, or the listener's).
    pub advertised: String,
    pub store: Arc<dyn StateStore>,
    pub leader_link: Arc<dyn LeaderLink>,
    pub metrics: MetricsHandle,
    pub hub: Arc<EventHub>,
    pub leader: Arc<LeaderWatch>,
    /// Flips to `true` when the server shuts down, so open SSE streams end instead of holding
    /// the graceful shutdown until its timeout.
    pub shutdown: watch::Receiver<bool>,
    /// Open SSE streams, mirrored into a gauge with `.set()`.
    pub event_streams: AtomicI64,
    /// Who may do what (`auth`).
    pub security: Security,
    /// Webhooks every app and group change passes before it reaches the leader.
    pub admission: Admission,
    /// Where change requests are recorded.
    pub audit: AuditLog,
    /// Mutual TLS of the gRPC links to agents (the leader link holds its own copy).
    pub grpc_tls: Option<MutualTls>,
    /// What the listings show, kept up to date from the store's change feed.
    pub snapshots: Arc<crate::read::SnapshotCache>,
}

impl Gateway {
    /// Counts an SSE stream in or out and publishes the gauge.
    pub fn event_stream_delta(&self, delta: i64) {
        let now = self.event_streams.fetch_add(delta, Ordering::SeqCst) + delta;
        metrics::gauge!(EVENT_STREAMS_ACTIVE).set(now as f64);
    }
}

/// The lease holder as last read from the store.
#[derive(Default)]
pub(crate) struct LeaderWatch {
    current: parking_lot::RwLock<Option<LeaderRecord>>,
}

impl LeaderWatch {
    pub fn has_leader(&self) -> bool {
        self.current.read().is_some()
    }

    /// Re-reads the lease; a store error keeps the last known value.
    pub async fn refresh(&self, store: &dyn StateStore) {
        match store.leader().await {
            Ok(record) => {
                let mut current = self.current.write();
                if current.as_ref().map(|r| r.epoch) != record.as_ref().map(|r| r.epoch) {
                    tracing::info!(epoch = record.as_ref().map(|r| r.epoch), "leader changed");
                }
                *current = record;
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the leader lease"),
        }
    }
}
