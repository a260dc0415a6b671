//! Results go to the scheduler leader in batches: whatever the probes produced within a flush
//! interval (or up to a batch size), in one `HealthReports.Report` call.
//!
//! The leader is found in the store's lease record (or, before that, among the configured
//! schedulers). A scheduler that does not lead answers UNAVAILABLE naming the leader in
//! [`LEADER_METADATA`]; the batch then goes there (it was not applied). A batch whose call
//! failed otherwise is dropped, never resent: it may have been applied, and checks repeat.

use std::sync::Arc;
use std::time::Duration;

use stride_proto::v1::health_reports_client::HealthReportsClient;
use stride_proto::v1::{HealthReportBatch, HealthResult, ReadinessResult};
use stride_store::StateStore;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tracing::{debug, info, warn};

use crate::metrics as m;

/// Metadata entry of an UNAVAILABLE answer that names the leader's gRPC address.
pub const LEADER_METADATA: &str = "x-stride-leader";

/// One result on its way.
#[derive(Clone, Debug)]
pub enum Report {
    Health(HealthResult),
    Readiness(ReadinessResult),
}

/// How results are batched and where they go.
#[derive(Clone, Debug)]
pub struct Settings {
    pub replica_id: String,
    /// Schedulers to try when the store names no leader (`host:port` or URLs).
    pub schedulers: Vec<String>,
    pub batch_max: usize,
    pub flush_interval: Duration,
    pub call_timeout: Duration,
}

fn url(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

fn client(address: &str) -> Option<HealthReportsClient<Channel>> {
    let endpoint = Endpoint::from_shared(url(address))
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10));
    Some(
        HealthReportsClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20),
    )
}

struct Leader {
    address: String,
    client: HealthReportsClient<Channel>,
}

struct Reporter {
    store: Arc<dyn StateStore>,
    settings: Settings,
    leader: Option<Leader>,
    next_configured: usize,
}

impl Reporter {
    async fn find_leader(&mut self) -> Option<&mut Leader> {
        if self.leader.is_none() {
            let address = match self.store.leader().await {
                Ok(Some(l)) if !l.grpc_address.is_empty() => Some(l.grpc_address),
                _ if !self.settings.schedulers.is_empty() => {
                    let n = self.settings.schedulers.len();
                    self.next_configured = self.next_configured.wrapping_add(1) % n;
                    Some(self.settings.schedulers[self.next_configured].clone())
                }
                _ => None,
            }?;
            self.leader = client(&address).map(|client| Leader { address, client });
        }
        self.leader.as_mut()
    }

    async fn send(&mut self, batch: HealthReportBatch) {
        let n = (batch.results.len() + batch.readiness.len()) as u64;
        for _ in 0..2 {
            let timeout = self.settings.call_timeout;
            let Some(leader) = self.find_leader().await else {
                debug!("no leader known; dropping a batch");
                break;
            };
            let address = leader.address.clone();
            let mut request = tonic::Request::new(batch.clone());
            request.set_timeout(timeout);
            match leader.client.report(request).await {
                Ok(ack) => {
                    let ack = ack.into_inner();
                    metrics::counter!(m::REPORTS).increment(1);
                    metrics::counter!(m::RESULTS_ACCEPTED).increment(u64::from(ack.accepted));
                    if ack.not_owner > 0 {
                        metrics::counter!(m::RESULTS_REFUSED, m::LABEL_REASON => "not_owner")
                            .increment(u64::from(ack.not_owner));
                    }
                    if ack.stale > 0 {
                        metrics::counter!(m::RESULTS_REFUSED, m::LABEL_REASON => "stale")
                            .increment(u64::from(ack.stale));
                    }
                    return;
                }
                Err(s) if s.code() == Code::Unavailable => {
                    let hint = s
                        .metadata()
                        .get(LEADER_METADATA)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    self.leader = None;
                    if !hint.is_empty() && hint != address {
                        info!(from = %address, to = %hint, "following the leader");
                        self.leader = client(&hint).map(|client| Leader {
                            address: hint,
                            client,
                        });
                        continue;
                    }
                    debug!(scheduler = %address, error = %s.message(), "no leader there");
                    break;
                }
                Err(s) => {
                    warn!(scheduler = %address, error = %s, "reporting failed; dropping the batch");
                    self.leader = None;
                    break;
                }
            }
        }
        metrics::counter!(m::RESULTS_DROPPED).increment(n);
    }
}

/// Batches and sends results until the channel closes or `stop` turns true.
pub async fn run(
    store: Arc<dyn StateStore>,
    settings: Settings,
    mut results: mpsc::Receiver<Report>,
    mut stop: watch::Receiver<bool>,
) {
    let mut reporter = Reporter {
        store,
        settings,
        leader: None,
        next_configured: usize::MAX,
    };
    let max = reporter.settings.batch_max.max(1);
    loop {
        let first = tokio::select! {
            r = results.recv() => r,
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(first) = first else { return };
        let mut batch = HealthReportBatch {
            replica_id: reporter.settings.replica_id.clone(),
            results: Vec::new(),
            readiness: Vec::new(),
        };
        let push = |r: Report, batch: &mut HealthReportBatch| match r {
            Report::Health(h) => batch.results.push(h),
            Report::Readiness(r) => batch.readiness.push(r),
        };
        push(first, &mut batch);
        let flush_at = Instant::now() + reporter.settings.flush_interval;
        let flush = tokio::time::sleep_until(flush_at);
        tokio::pin!(flush);
        let mut closed = false;
        while batch.results.len() + batch.readiness.len() < max {
            tokio::select! {
                r = results.recv() => match r {
                    Some(r) => push(r, &mut batch),
                    None => { closed = true; break }
                },
                _ = &mut flush => break,
            }
        }
        reporter.send(batch).await;
        if closed {
            return;
        }
    }
}
