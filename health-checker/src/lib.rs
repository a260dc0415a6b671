//! The Stride health checker: any number of replicas that share the health checks (reference
//! §7) and readiness checks (§5.6) of every running task and report the results to the
//! scheduler leader, which keeps the health records, counts failures and kills.
//!
//! ```text
//!  store ──snapshot + events──► follow ──Update──┐
//!  store ◄─heartbeat / members─► membership ──live members──► Tracker (owned checks, due times)
//!                                                               │ Dispatch
//!                      agents ◄── COMMAND (gRPC) ── probes ◄────┘  (HTTP, HTTPS, TCP: own sockets)
//!                                                      │ Report
//!                         scheduler leader ◄── batches ── report
//! ```
//!
//! Replicas register in the store's `health-checkers` collection with a heartbeat
//! ([`membership`]) and each takes the checks it owns by rendezvous hashing over the live
//! members ([`stride_core::rendezvous`]): a replica that joins takes only its share, and the share
//! of one that dies is taken over by the others once its heartbeat is stale (3 s), each check
//! then running within `min(interval, 1 s)`. The leader applies the same function to accept each
//! check's results only from its owner, so a rebalance never counts one failure twice.
//!
//! A replica whose heartbeat the store has not confirmed within its lease (2 s) owns nothing and
//! reports nothing until it has registered again, under a new registration; results carry the
//! registration they were produced under, so what it found while cut off is dropped, here and
//! by the leader. Every store and scheduler call has a deadline.
//!
//! What is checked follows stored state ([`follow`], [`targets`]); the schedule is a plain state
//! machine ([`tracker`]); checks are hand-written HTTP/1.1 GETs and TCP connects over tokio, or
//! COMMAND checks run by the task's agent ([`probe`]); results go out in batches ([`report`]).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use stride_core::rendezvous::Member;
use stride_core::Timestamp;
use stride_proto::tls::MutualTls;
use stride_proto::v1::{HealthResult, HealthVerdict, ReadinessResult};
use stride_store::StateStore;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tracing::info;

pub mod follow;
pub mod http;
pub mod membership;
pub mod metrics;
pub mod probe;
pub mod report;
pub mod targets;
pub mod tracker;

use crate::membership::Standing;
use crate::metrics as m;
use crate::probe::{Prober, Verdict};
use crate::report::{Outcome, Report};
use crate::targets::Spec;
use crate::tracker::{Dispatch, Tracker};

/// A replica's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Unique among replicas; the key of its membership record.
    pub replica_id: String,
    /// Where this replica serves its metrics, shown in its membership record.
    pub advertised_address: Option<String>,
    /// Schedulers to report to while the store names no leader (`host:port`).
    pub schedulers: Vec<String>,
    /// How often everything is read from the store again (events cover the time between).
    pub resync_interval: Duration,
    /// Checks running at once (Marathon's `--max_concurrent_marathon_health_checks`).
    pub max_concurrent_checks: usize,
    /// Most results per report.
    pub batch_max: usize,
    /// How long results wait to be batched.
    pub flush_interval: Duration,
    /// Results waiting to be reported; beyond this they are dropped.
    pub queue: usize,
    /// Mutual TLS towards the scheduler (`HealthReports`) and the agents (`AgentApi`).
    pub tls: Option<MutualTls>,
}

impl Config {
    pub fn new(replica_id: impl Into<String>) -> Self {
        Self {
            replica_id: replica_id.into(),
            advertised_address: None,
            schedulers: Vec::new(),
            resync_interval: Duration::from_secs(30),
            max_concurrent_checks: 256,
            batch_max: 10_000,
            flush_interval: Duration::from_millis(100),
            queue: 200_000,
            tls: None,
        }
    }
}

/// Runs a replica until `shutdown` resolves, then deregisters.
pub async fn run(
    config: Config,
    store: Arc<dyn StateStore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    m::describe();
    info!(id = %config.replica_id, "health checker starting");
    let (stop_tx, stop) = watch::channel(false);
    let (standing_tx, mut standing) = watch::channel(Standing::default());
    let me = Member {
        id: config.replica_id.clone(),
        address: config.advertised_address.clone(),
        heartbeat_at_ms: 0,
    };
    let membership = tokio::spawn(membership::run(
        store.clone(),
        me,
        standing_tx,
        stop.clone(),
    ));
    let (updates_tx, mut updates) = mpsc::channel(64);
    let follower = tokio::spawn(follow::run(
        store.clone(),
        updates_tx,
        config.resync_interval,
        stop.clone(),
    ));
    let (results_tx, results) = mpsc::channel(config.queue.max(1));
    let reporter = tokio::spawn(report::run(
        store.clone(),
        report::Settings {
            replica_id: config.replica_id.clone(),
            schedulers: config.schedulers.clone(),
            batch_max: config.batch_max,
            flush_interval: config.flush_interval,
            call_timeout: report::CALL_TIMEOUT,
            tls: config.tls.clone(),
        },
        results,
        standing.clone(),
        stop.clone(),
    ));
    let runner = Runner {
        prober: Arc::new(Prober::with_tls(config.tls.clone())),
        permits: Arc::new(Semaphore::new(config.max_concurrent_checks.max(1))),
        results: results_tx,
    };
    let mut tracker = Tracker::new(config.replica_id.clone());
    let mut owned_shown = usize::MAX;
    // The registration checks are dispatched under, and until when it holds.
    let mut registration: Option<i64> = None;
    let mut lease_ends: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let wake = tracker
            .next_due()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let wake = lease_ends.map_or(wake, |l| wake.min(l));
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            changed = standing.changed() => {
                if changed.is_err() { break }
            }
            update = updates.recv() => match update {
                Some(u) => tracker.apply(u, Instant::now(), Timestamp::now()),
                None => break,
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        let (members, current) = {
            let s = standing.borrow_and_update();
            lease_ends = s.until.filter(|u| now < *u);
            (s.members_at(now), s.registration_at(now))
        };
        if current != registration && current.is_none() {
            info!("membership lapsed: dropping every check until registered again");
        }
        registration = current;
        tracker.set_members(members, now, Timestamp::now());
        if let Some(r) = registration {
            for d in tracker.due(now) {
                runner.start(d, r);
            }
        }
        if tracker.owned() != owned_shown {
            owned_shown = tracker.owned();
            ::metrics::gauge!(m::CHECKS_OWNED).set(owned_shown as f64);
        }
    }
    info!(id = %config.replica_id, "health checker stopping");
    let _ = stop_tx.send(true);
    drop(runner);
    let _ = tokio::time::timeout(Duration::from_secs(5), membership).await;
    follower.abort();
    let _ = tokio::time::timeout(Duration::from_secs(2), reporter).await;
}

/// Starts probes.
struct Runner {
    prober: Arc<Prober>,
    permits: Arc<Semaphore>,
    results: mpsc::Sender<Outcome>,
}

impl Runner {
    /// Runs `d` in the background; its result is reported under `registration`.
    fn start(&self, d: Dispatch, registration: i64) {
        let prober = self.prober.clone();
        let permits = self.permits.clone();
        let results = self.results.clone();
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                d.busy.store(false, Ordering::Release);
                return;
            };
            // Boxed once running: a check waiting for a permit stays a few hundred bytes.
            let report = Box::pin(run_check(&prober, &d)).await;
            d.busy.store(false, Ordering::Release);
            if results
                .try_send(Outcome {
                    registration,
                    report,
                })
                .is_err()
            {
                ::metrics::counter!(m::RESULTS_DROPPED).increment(1);
            }
        });
    }
}

/// Runs one dispatched check and makes its report.
pub async fn run_check(prober: &Prober, d: &Dispatch) -> Report {
    let t = &d.target;
    let protocol = t.spec.protocol();
    let started = Instant::now();
    let started_at_ms = Timestamp::now().0;
    let (report, failed, kind) = match &t.spec {
        Spec::Health(spec) => {
            let verdict = prober.health(t, spec).await;
            let (v, cause) = match verdict {
                Verdict::Healthy => (HealthVerdict::Healthy, String::new()),
                Verdict::Unhealthy(c) => (HealthVerdict::Unhealthy, c),
                Verdict::Ignored(c) => (HealthVerdict::Ignored, c),
            };
            let failed = v == HealthVerdict::Unhealthy;
            let slot = match t.slot {
                stride_core::rendezvous::CheckSlot::Health(i) => i,
                stride_core::rendezvous::CheckSlot::Readiness => 0,
            };
            let r = HealthResult {
                instance_id: t.instance_id.clone(),
                task_id: t.task_id.clone(),
                check_index: slot,
                app_version_ms: t.app_version.0,
                verdict: v as i32,
                cause,
                checked_at_ms: Timestamp::now().0,
                started_at_ms,
            };
            (Report::Health(r), failed, "health")
        }
        Spec::Readiness(spec) => {
            let r = prober.readiness(t, spec).await;
            let failed = !r.ready;
            let out = ReadinessResult {
                instance_id: t.instance_id.clone(),
                task_id: t.task_id.clone(),
                app_version_ms: t.app_version.0,
                name: spec.name.clone(),
                ready: r.ready,
                status: u32::from(r.status),
                content_type: r.content_type,
                body: if spec.preserve_last_response {
                    r.body
                } else {
                    String::new()
                },
                error: r.error,
                started_at_ms,
            };
            (Report::Readiness(out), failed, "readiness")
        }
    };
    ::metrics::histogram!(m::CHECK_SECONDS, m::LABEL_PROTOCOL => protocol)
        .record(started.elapsed().as_secs_f64());
    ::metrics::counter!(m::CHECKS, m::LABEL_PROTOCOL => protocol, m::LABEL_KIND => kind)
        .increment(1);
    if failed {
        ::metrics::counter!(m::CHECK_FAILURES, m::LABEL_PROTOCOL => protocol, m::LABEL_KIND => kind)
            .increment(1);
    }
    report
}
