//! Results go to the scheduler leader in batches: whatever the probes produced within a flush
//! interval (or up to a batch size), in one `HealthReports.Report` call.
//!
//! The leader is found in the store's lease record (or, before that, among the configured
//! schedulers). A scheduler that does not lead answers UNAVAILABLE naming the leader in
//! [`LEADER_METADATA`]; the batch then goes there (it was not applied). A batch whose call
//! failed otherwise is dropped, never resent: it may have been applied, and checks repeat.
//!
//! Only results of the replica's current registration go out, and only while it is a member
//! ([`Standing`]): a replica cut off from the store drops what it found meanwhile rather than
//! bring it to the leader once the network is back. Each batch names its registration, which the
//! leader checks against the membership record. Every call has a deadline: the store's lease
//! record [`LOOKUP_DEADLINE`], a report [`CALL_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use stride_proto::tls::{grpc_url, MutualTls};
use stride_proto::v1::health_reports_client::HealthReportsClient;
use stride_proto::v1::{HealthReportBatch, HealthResult, ReadinessResult};
use stride_store::StateStore;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tracing::{debug, info, warn};

use crate::membership::Standing;
use crate::metrics as m;

/// Metadata entry of an UNAVAILABLE answer that names the leader's gRPC address.
pub const LEADER_METADATA: &str = "x-stride-leader";
/// How long reading the leader's address from the store may take.
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(1);
/// How long one report to the leader may take, connecting included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One result on its way.
#[derive(Clone, Debug)]
pub enum Report {
    Health(HealthResult),
    Readiness(ReadinessResult),
}

/// A result and the registration its check was dispatched under.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub registration: i64,
    pub report: Report,
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
    /// Mutual TLS to the scheduler, when the cluster uses it.
    pub tls: Option<MutualTls>,
}

fn client(address: &str, tls: Option<&MutualTls>) -> Option<HealthReportsClient<Channel>> {
    let mut endpoint = Endpoint::from_shared(grpc_url(address, tls.is_some()))
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = match endpoint.tls_config(tls.client()) {
            Ok(e) => e,
            Err(e) => {
                warn!(scheduler = %address, error = %e, "cannot set up TLS to the scheduler");
                return None;
            }
        };
    }
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
            let recorded = tokio::time::timeout(LOOKUP_DEADLINE, self.store.leader()).await;
            let address = match recorded {
                Ok(Ok(Some(l))) if !l.grpc_address.is_empty() => Some(l.grpc_address),
                _ if !self.settings.schedulers.is_empty() => {
                    let n = self.settings.schedulers.len();
                    self.next_configured = self.next_configured.wrapping_add(1) % n;
                    Some(self.settings.schedulers[self.next_configured].clone())
                }
                _ => None,
            }?;
            self.leader = client(&address, self.settings.tls.as_ref())
                .map(|client| Leader { address, client });
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
            // The deadline travels as `grpc-timeout` for the leader and bounds the wait here
            // too: a call into a cut network would otherwise wait for TCP to give up.
            let answer = tokio::time::timeout(timeout, leader.client.report(request))
                .await
                .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in time")));
            match answer {
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
                        self.leader =
                            client(&hint, self.settings.tls.as_ref()).map(|client| Leader {
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

/// Batches and sends results until the channel closes or `stop` turns true. Results of another
/// registration than the current one, or produced while this replica is out, are dropped.
pub async fn run(
    store: Arc<dyn StateStore>,
    settings: Settings,
    mut results: mpsc::Receiver<Outcome>,
    standing: watch::Receiver<Standing>,
    mut stop: watch::Receiver<bool>,
) {
    let mut reporter = Reporter {
        store,
        settings,
        leader: None,
        next_configured: usize::MAX,
    };
    let max = reporter.settings.batch_max.max(1);
    let current = || standing.borrow().registration_at(Instant::now());
    let drop_one = || metrics::counter!(m::RESULTS_DROPPED).increment(1);
    loop {
        let first = tokio::select! {
            r = results.recv() => r,
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(first) = first else { return };
        if current() != Some(first.registration) {
            drop_one();
            continue;
        }
        let mut batch = HealthReportBatch {
            replica_id: reporter.settings.replica_id.clone(),
            results: Vec::new(),
            readiness: Vec::new(),
            joined_at_ms: first.registration,
        };
        let push = |o: Outcome, batch: &mut HealthReportBatch| {
            if o.registration != batch.joined_at_ms {
                drop_one();
                return;
            }
            match o.report {
                Report::Health(h) => batch.results.push(h),
                Report::Readiness(r) => batch.readiness.push(r),
            }
        };
        push(first, &mut batch);
        let flush_at = Instant::now() + reporter.settings.flush_interval;
        let flush = tokio::time::sleep_until(flush_at);
        tokio::pin!(flush);
        let mut closed = false;
        while batch.results.len() + batch.readiness.len() < max {
            tokio::select! {
                r = results.recv() => match r {
                    Some(o) => push(o, &mut batch),
                    None => { closed = true; break }
                },
                _ = &mut flush => break,
            }
        }
        // The membership may have lapsed while the batch filled.
        if current() == Some(batch.joined_at_ms) {
            reporter.send(batch).await;
        } else {
            metrics::counter!(m::RESULTS_DROPPED)
                .increment((batch.results.len() + batch.readiness.len()) as u64);
        }
        if closed {
            return;
        }
    }
}
