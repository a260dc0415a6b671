//! The session with the scheduler leader: one `AgentLink::Session` stream at a time.
//!
//! ```text
//!  dial ──► Register{tasks, epoch_seen} ──► Registered ──► heartbeats + statuses ──►
//!    ▲          │                               │             commands ──► fence ──► supervisor
//!    │          └─ NotLeader{addr} ─► dial addr │
//!    └── backoff 100 ms … 1 s ◄── stream ends ──┘   (last leader first, then the list)
//! ```
//!
//! Tasks do not depend on the session: while it is down they keep running and their statuses
//! wait; the next `Register` carries every task's current status, and queued updates that the
//! `Register` already covers are dropped (see `supervisor::Snapshot`).

use std::time::Duration;

use metrics::{counter, gauge};
use stride_proto::tls::{grpc_url, MutualTls};
use stride_proto::v1::agent_link_client::AgentLinkClient;
use stride_proto::v1::{scheduler_message::Msg, AgentMessage, SchedulerMessage};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::fence::EpochFence;
use crate::metrics as m;
use crate::node::NodeInfo;
use crate::supervisor::{Command, SupervisorHandle, Update};
use crate::task::{now_ms, LaunchSpec};
use crate::wire;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(1000);
/// A scheduler that neither accepts nor refuses the registration within this is given up on.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);
/// Messages queued towards the scheduler before the session stops reading commands.
const OUTBOUND_BUFFER: usize = 1024;

/// How one session ended, which decides where to dial next.
#[derive(Debug)]
enum Ended {
    /// A scheduler that is not the leader named the leader.
    Redirected(String),
    /// A scheduler that is not the leader does not know the leader either.
    NoLeader,
    /// The stream ended; `registered` tells whether this scheduler was the leader.
    Closed { registered: bool, reason: String },
    /// The scheduler could not be reached.
    Unreachable(String),
}

pub(crate) struct Session {
    node: NodeInfo,
    schedulers: Vec<String>,
    fence: EpochFence,
    supervisor: SupervisorHandle,
    /// Statuses from the supervisor, read only while registered.
    updates: mpsc::UnboundedReceiver<Update>,
    /// Mutual TLS towards the schedulers: every endpoint is dialled as `https://` with the
    /// agent's certificate.
    tls: Option<MutualTls>,
}

impl Session {
    pub fn new(
        node: NodeInfo,
        schedulers: Vec<String>,
        fence: EpochFence,
        supervisor: SupervisorHandle,
        updates: mpsc::UnboundedReceiver<Update>,
        tls: Option<MutualTls>,
    ) -> Self {
        let schedulers = schedulers
            .iter()
            .map(|s| endpoint_url(s, tls.is_some()))
            .collect();
        Self {
            node,
            schedulers,
            fence,
            supervisor,
            updates,
            tls,
        }
    }

    /// Keeps a session with the leader, forever.
    pub async fn run(mut self) {
        let mut backoff = Backoff::default();
        let mut cursor = 0usize;
        let mut next: Option<String> = None;
        let mut redirects = 0usize;
        let mut failures = 0u64;
        loop {
            let endpoint = next.take().unwrap_or_else(|| {
                let e = self.schedulers[cursor % self.schedulers.len()].clone();
                cursor = cursor.wrapping_add(1);
                e
            });
            let ended = self
                .serve(&endpoint)
                .instrument(info_span!("session", scheduler = %endpoint))
                .await;
            gauge!(m::CONNECTED).set(0.0);
            match ended {
                Ended::Redirected(leader) => {
                    info!(scheduler = %endpoint, leader = %leader, "not the leader; following its redirect");
                    next = Some(endpoint_url(&leader, self.tls.is_some()));
                    redirects += 1;
                    // Schedulers that disagree about the leader must not make us spin.
                    if redirects > self.schedulers.len() {
                        tokio::time::sleep(backoff.next()).await;
                    }
                    continue;
                }
                Ended::NoLeader => {
                    info!(scheduler = %endpoint, "not the leader and no leader known; trying the next scheduler");
                }
                Ended::Closed {
                    registered: true,
                    reason,
                } => {
                    warn!(scheduler = %endpoint, %reason, "session with the leader ended; reconnecting");
                    backoff = Backoff::default();
                    redirects = 0;
                    failures = 0;
                    next = Some(endpoint);
                }
                Ended::Closed {
                    registered: false,
                    reason,
                }
                | Ended::Unreachable(reason) => {
                    failures += 1;
                    // One line per attempt would flood the log while the leader is away.
                    if failures == 10 || failures.is_multiple_of(100) {
                        warn!(scheduler = %endpoint, %reason, attempts = failures, "still no session with a leader");
                    } else {
                        debug!(scheduler = %endpoint, %reason, "no session with this scheduler");
                    }
                }
            }
            tokio::time::sleep(backoff.next()).await;
        }
    }

    async fn serve(&mut self, endpoint: &str) -> Ended {
        let channel = match Endpoint::from_shared(endpoint.to_string()) {
            Ok(e) => e
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true),
            Err(e) => return Ended::Unreachable(format!("invalid endpoint: {e}")),
        };
        let channel = match &self.tls {
            Some(tls) => match channel.tls_config(tls.client()) {
                Ok(c) => c,
                Err(e) => return Ended::Unreachable(format!("TLS: {}", error_chain(&e))),
            },
            None => channel,
        };
        let channel = match channel.connect().await {
            Ok(c) => c,
            Err(e) => return Ended::Unreachable(error_chain(&e)),
        };
        let Some(snapshot) = self.supervisor.snapshot().await else {
            return Ended::Closed {
                registered: false,
                reason: "the supervisor stopped".into(),
            };
        };
        let (tx, rx) = mpsc::channel::<AgentMessage>(OUTBOUND_BUFFER);
        let register = wire::register(&self.node, &snapshot.statuses, self.fence.highest());
        if tx.send(register).await.is_err() {
            return Ended::Unreachable("outbound queue closed".into());
        }
        debug!(
            tasks = snapshot.statuses.len(),
            epoch_seen = self.fence.highest(),
            "registering"
        );
        let mut client = AgentLinkClient::new(channel);
        let mut inbound =
            match tokio::time::timeout(CONNECT_TIMEOUT, client.session(ReceiverStream::new(rx)))
                .await
            {
                Ok(Ok(response)) => response.into_inner(),
                Ok(Err(status)) => return Ended::Unreachable(status.to_string()),
                Err(_) => return Ended::Unreachable("the scheduler did not answer".into()),
            };

        let mut registered = false;
        let mut heartbeat: Option<Interval> = None;
        let register_deadline = tokio::time::sleep(REGISTER_TIMEOUT);
        tokio::pin!(register_deadline);
        loop {
            tokio::select! {
                () = &mut register_deadline, if !registered => {
                    return Ended::Closed { registered, reason: "no answer to the registration".into() };
                }
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        if let Some(ended) = self.on_message(message, &mut registered, &mut heartbeat).await {
                            return ended;
                        }
                    }
                    Ok(None) => return Ended::Closed { registered, reason: "the scheduler closed the stream".into() },
                    Err(status) => return Ended::Closed { registered, reason: status.to_string() },
                },
                () = tick(&mut heartbeat) => {
                    if tx.send(wire::heartbeat(now_ms())).await.is_err() {
                        return Ended::Closed { registered, reason: "the request stream closed".into() };
                    }
                }
                update = self.updates.recv(), if registered => match update {
                    Some(update) if update.seq > snapshot.seq => {
                        if tx.send(wire::status_message(&update.status)).await.is_err() {
                            return Ended::Closed { registered, reason: "the request stream closed".into() };
                        }
                    }
                    Some(_) => {} // already in the Register
                    None => return Ended::Closed { registered, reason: "the supervisor stopped".into() },
                },
            }
        }
    }

    /// Handles one message; `Some` ends the session.
    async fn on_message(
        &mut self,
        message: SchedulerMessage,
        registered: &mut bool,
        heartbeat: &mut Option<Interval>,
    ) -> Option<Ended> {
        let epoch = message.epoch;
        let (kind, commands): (&str, Vec<Command>) = match message.msg? {
            Msg::Registered(r) => {
                let leader_epoch = r.epoch.max(epoch);
                if leader_epoch < self.fence.highest() {
                    warn!(
                        epoch = leader_epoch,
                        highest_seen = self.fence.highest(),
                        "registered by a leader older than one already seen; its commands will be refused"
                    );
                }
                self.fence.observe(leader_epoch).await;
                let every = match r.heartbeat_interval_ms {
                    0 => DEFAULT_HEARTBEAT,
                    ms => Duration::from_millis(u64::from(ms)),
                };
                let mut interval = tokio::time::interval_at(Instant::now() + every, every);
                interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                *heartbeat = Some(interval);
                *registered = true;
                counter!(m::REGISTRATIONS).increment(1);
                gauge!(m::CONNECTED).set(1.0);
                info!(agent_id = %self.node.agent_id, epoch = leader_epoch, "registered with the leader");
                return None;
            }
            Msg::NotLeader(n) => {
                return Some(if n.leader_grpc_address.trim().is_empty() {
                    Ended::NoLeader
                } else {
                    Ended::Redirected(n.leader_grpc_address)
                });
            }
            Msg::Launch(launch) => (
                "launch",
                launch
                    .tasks
                    .into_iter()
                    .map(|t| Command::Launch(Box::new(LaunchSpec::from(t))))
                    .collect(),
            ),
            Msg::Kill(kill) => (
                "kill",
                vec![Command::Kill {
                    task_id: kill.task_id,
                    grace: Some(Duration::from_millis(u64::from(kill.grace_period_ms))),
                }],
            ),
            Msg::Reconcile(r) => (
                "reconcile",
                vec![Command::Reconcile {
                    known: r.known_task_ids.into_iter().collect(),
                }],
            ),
            Msg::Acknowledge(a) => (
                "acknowledge",
                vec![Command::Acknowledge {
                    task_ids: a.task_ids,
                }],
            ),
            Msg::DestroyVolumes(d) => (
                "destroy_volumes",
                vec![Command::DestroyVolumes {
                    instance_id: d.instance_id,
                }],
            ),
        };
        if !self.fence.admit(epoch).await {
            warn!(
                command = kind,
                epoch,
                highest_seen = self.fence.highest(),
                "refusing a command from an older leader epoch"
            );
            counter!(m::COMMANDS_REFUSED).increment(1);
            return None;
        }
        for command in commands {
            if !self.supervisor.send(command).await {
                return Some(Ended::Closed {
                    registered: *registered,
                    reason: "the supervisor stopped".into(),
                });
            }
        }
        None
    }
}

/// Waits for the next heartbeat, or forever before registration.
async fn tick(heartbeat: &mut Option<Interval>) {
    match heartbeat {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Leaders advertise `host:port`; tonic wants a URL, `https://` when the link is TLS.
fn endpoint_url(address: &str, tls: bool) -> String {
    let address = address.trim();
    if tls {
        grpc_url(address, true)
    } else if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

/// Transport errors hide their cause in the source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        // Some layers already repeat their source's text in their own.
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// 100 ms doubling to 1 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: BACKOFF_MIN }
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_second() {
        let mut b = Backoff::default();
        let waits: Vec<u128> = (0..6).map(|_| b.next().as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn leader_addresses_become_urls() {
        assert_eq!(endpoint_url("10.0.0.1:5051", false), "http://10.0.0.1:5051");
        assert_eq!(
            endpoint_url("https://leader:5051", false),
            "https://leader:5051"
        );
        assert_eq!(
            endpoint_url("http://leader:5051", true),
            "https://leader:5051"
        );
    }
}
