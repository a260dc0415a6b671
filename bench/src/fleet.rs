//! Simulated agents: thousands of `AgentLink.Session` clients in one process, each on its own
//! HTTP/2 connection as a real agent would be, speaking the real protocol and running nothing:
//! every launched task is reported `TASK_RUNNING` at once, every kill `TASK_KILLED` (the idea of
//! Marathon's mesos-simulation).
//!
//! ```text
//!  dial ──► Register{tasks, epoch_seen} ──► Registered ──► Heartbeat every heartbeat_interval_ms
//!    ▲         │                               │   Launch ──► TaskStatus{TASK_RUNNING} per task
//!    │         └─ NotLeader{addr} ─► dial addr │   Kill   ──► TaskStatus{TASK_KILLED}
//!    └── backoff 100 ms … 1 s ◄── stream ends ─┘   (last leader first, then the list)
//! ```
//!
//! The loop follows `agent/src/session.rs`: same redirects, same backoff, same epoch fence
//! (commands stamped with an epoch older than the highest obeyed are refused), and a `Register`
//! that carries every task still running, so a failover adopts them instead of relaunching.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stride_proto::v1::{
    self, agent_link_client::AgentLinkClient, agent_message, scheduler_message::Msg,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Endpoint;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);

/// What one simulated agent offers.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub agent_id: String,
    pub hostname: String,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub ports: (u32, u32),
    pub attributes: Vec<(String, String)>,
}

impl AgentSpec {
    /// Agent `i` of a fleet: a distinct hostname, `rack_id` over `racks` racks, and room for a
    /// few hundred small tasks.
    pub fn numbered(i: usize, racks: usize) -> Self {
        Self {
            agent_id: format!("sim-{i:05}"),
            hostname: format!("sim-{i:05}.bench"),
            cpus: 16.0,
            mem: 65_536.0,
            disk: 65_536.0,
            ports: (31_000, 32_999),
            attributes: vec![("rack_id".into(), format!("rack-{:03}", i % racks.max(1)))],
        }
    }
}

/// Counters over the whole fleet; read while a scenario runs.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Sessions currently registered with a leader.
    pub registered: AtomicI64,
    /// `Registered` answers received, over all sessions.
    pub registrations: AtomicU64,
    /// Tasks running across the fleet.
    pub running: AtomicI64,
    /// Tasks received in `Launch` commands.
    pub launched: AtomicU64,
    /// `Kill` commands received.
    pub kills: AtomicU64,
    /// Commands refused because a newer leader epoch was already obeyed.
    pub refused: AtomicU64,
}

/// A running fleet; stopped (every session dropped) by [`Fleet::stop`] or on drop.
pub struct Fleet {
    stats: Arc<FleetStats>,
    stop: watch::Sender<bool>,
    agents: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Starts one task per agent, each dialling `schedulers` (URLs) as a real agent would.
    pub fn start(specs: Vec<AgentSpec>, schedulers: Vec<String>) -> Self {
        let stats = Arc::new(FleetStats::default());
        let (stop, stopped) = watch::channel(false);
        let agents = specs
            .into_iter()
            .map(|spec| {
                let agent = SimAgent {
                    spec,
                    schedulers: schedulers.clone(),
                    stats: stats.clone(),
                    running: HashMap::new(),
                    terminal: HashMap::new(),
                    epoch_seen: 0,
                };
                tokio::spawn(agent.run(stopped.clone()))
            })
            .collect();
        Self {
            stats,
            stop,
            agents,
        }
    }

    pub fn registered(&self) -> i64 {
        self.stats.registered.load(Ordering::Relaxed)
    }

    pub fn running(&self) -> i64 {
        self.stats.running.load(Ordering::Relaxed)
    }

    pub fn launched(&self) -> u64 {
        self.stats.launched.load(Ordering::Relaxed)
    }

    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for a in self.agents.drain(..) {
            let _ = a.await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for a in &self.agents {
            a.abort();
        }
    }
}

/// How one session ended, which decides where to dial next (as in the real agent).
enum Ended {
    Redirected(String),
    NoLeader,
    Closed { registered: bool },
    Unreachable,
    Stopped,
}

struct SimAgent {
    spec: AgentSpec,
    schedulers: Vec<String>,
    stats: Arc<FleetStats>,
    /// Running tasks and the host ports they hold.
    running: HashMap<String, Vec<u32>>,
    /// Terminal statuses not yet acknowledged by the leader.
    terminal: HashMap<String, v1::TaskStatus>,
    /// Highest leader epoch obeyed.
    epoch_seen: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn url(address: &str) -> String {
    let address = address.trim();
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

fn status(task_id: &str, state: v1::TaskState, ports: Vec<u32>) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: task_id.to_string(),
        state: state.into(),
        timestamp_ms: now_ms(),
        ports,
        ..Default::default()
    }
}

fn status_message(s: v1::TaskStatus) -> v1::AgentMessage {
    v1::AgentMessage {
        msg: Some(agent_message::Msg::Status(s)),
    }
}

impl SimAgent {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_MIN;
        let mut cursor = 0usize;
        let mut next: Option<String> = None;
        let mut redirects = 0usize;
        loop {
            if *stop.borrow() {
                return;
            }
            let endpoint = next.take().unwrap_or_else(|| {
                let e = self.schedulers[cursor % self.schedulers.len()].clone();
                cursor = cursor.wrapping_add(1);
                e
            });
            let ended = self.serve(&endpoint, &mut stop).await;
            match ended {
                Ended::Stopped => return,
                Ended::Redirected(leader) => {
                    next = Some(url(&leader));
                    redirects += 1;
                    if redirects <= self.schedulers.len() {
                        continue;
                    }
                }
                Ended::Closed { registered: true } => {
                    backoff = BACKOFF_MIN;
                    redirects = 0;
                    next = Some(endpoint);
                }
                Ended::NoLeader | Ended::Closed { registered: false } | Ended::Unreachable => {}
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn register(&self) -> v1::AgentMessage {
        let mut tasks: Vec<v1::TaskStatus> = self
            .running
            .iter()
            .map(|(id, ports)| status(id, v1::TaskState::TaskRunning, ports.clone()))
            .collect();
        tasks.extend(self.terminal.values().cloned());
        v1::AgentMessage {
            msg: Some(agent_message::Msg::Register(v1::Register {
                agent_id: self.spec.agent_id.clone(),
                hostname: self.spec.hostname.clone(),
                total: Some(v1::Resources {
                    cpus: self.spec.cpus,
                    mem: self.spec.mem,
                    disk: self.spec.disk,
                    gpus: 0,
                    ports: vec![v1::PortRange {
                        begin: self.spec.ports.0,
                        end: self.spec.ports.1,
                    }],
                }),
                attributes: self
                    .spec
                    .attributes
                    .iter()
                    .map(|(name, value)| v1::Attribute {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                tasks,
                epoch_seen: self.epoch_seen,
                version: "stride-bench".into(),
                ..Default::default()
            })),
        }
    }

    async fn serve(&mut self, endpoint: &str, stop: &mut watch::Receiver<bool>) -> Ended {
        let channel = match Endpoint::from_shared(endpoint.to_string()) {
            Ok(e) => e
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(10))
                .keep_alive_while_idle(true),
            Err(_) => return Ended::Unreachable,
        };
        let channel = tokio::select! {
            c = channel.connect() => match c {
                Ok(c) => c,
                Err(_) => return Ended::Unreachable,
            },
            _ = stop.changed() => return Ended::Stopped,
        };
        // Unbounded: the leader drops commands to a full stream, so this loop must never stop
        // reading commands because its own statuses queue up.
        let (tx, rx) = mpsc::unbounded_channel::<v1::AgentMessage>();
        if tx.send(self.register()).is_err() {
            return Ended::Unreachable;
        }
        let mut client = AgentLinkClient::new(channel)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        let mut inbound = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            client.session(UnboundedReceiverStream::new(rx)),
        )
        .await
        {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(_)) | Err(_) => return Ended::Unreachable,
        };
        let mut registered = false;
        let mut heartbeat: Option<tokio::time::Interval> = None;
        let deadline = tokio::time::sleep(REGISTER_TIMEOUT);
        tokio::pin!(deadline);
        let ended = loop {
            tokio::select! {
                () = &mut deadline, if !registered => break Ended::Closed { registered },
                _ = stop.changed() => break Ended::Stopped,
                message = inbound.message() => match message {
                    Ok(Some(m)) => {
                        if let Some(ended) = self.on_message(m, &tx, &mut registered, &mut heartbeat) {
                            break ended;
                        }
                    }
                    Ok(None) | Err(_) => break Ended::Closed { registered },
                },
                () = tick(&mut heartbeat) => {
                    let beat = v1::AgentMessage {
                        msg: Some(agent_message::Msg::Heartbeat(v1::Heartbeat { sent_at_ms: now_ms() })),
                    };
                    if tx.send(beat).is_err() {
                        break Ended::Closed { registered };
                    }
                }
            }
        };
        if registered {
            self.stats.registered.fetch_sub(1, Ordering::Relaxed);
        }
        ended
    }

    fn on_message(
        &mut self,
        message: v1::SchedulerMessage,
        tx: &mpsc::UnboundedSender<v1::AgentMessage>,
        registered: &mut bool,
        heartbeat: &mut Option<tokio::time::Interval>,
    ) -> Option<Ended> {
        let epoch = message.epoch;
        let msg = message.msg?;
        match msg {
            Msg::Registered(r) => {
                self.epoch_seen = self.epoch_seen.max(r.epoch.max(epoch));
                let every = match r.heartbeat_interval_ms {
                    0 => Duration::from_secs(1),
                    ms => Duration::from_millis(u64::from(ms)),
                };
                let mut interval = tokio::time::interval_at(Instant::now() + every, every);
                interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                *heartbeat = Some(interval);
                if !*registered {
                    self.stats.registered.fetch_add(1, Ordering::Relaxed);
                }
                *registered = true;
                self.stats.registrations.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Msg::NotLeader(n) => {
                return Some(if n.leader_grpc_address.trim().is_empty() {
                    Ended::NoLeader
                } else {
                    Ended::Redirected(n.leader_grpc_address)
                });
            }
            _ => {}
        }
        if epoch < self.epoch_seen {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.epoch_seen = epoch;
        let send = |s: v1::TaskStatus| tx.send(status_message(s)).is_ok();
        match msg {
            Msg::Launch(launch) => {
                let n = launch.tasks.len();
                for t in launch.tasks {
                    let fresh = self
                        .running
                        .insert(t.task_id.clone(), t.host_ports.clone())
                        .is_none();
                    if fresh {
                        self.stats.running.fetch_add(1, Ordering::Relaxed);
                    }
                    self.terminal.remove(&t.task_id);
                    if !send(status(&t.task_id, v1::TaskState::TaskRunning, t.host_ports)) {
                        return Some(Ended::Closed {
                            registered: *registered,
                        });
                    }
                }
                self.stats.launched.fetch_add(n as u64, Ordering::Relaxed);
            }
            Msg::Kill(kill) => {
                self.stats.kills.fetch_add(1, Ordering::Relaxed);
                let ports = self.running.remove(&kill.task_id);
                if ports.is_some() {
                    self.stats.running.fetch_sub(1, Ordering::Relaxed);
                }
                let s = status(
                    &kill.task_id,
                    v1::TaskState::TaskKilled,
                    ports.unwrap_or_default(),
                );
                self.terminal.insert(kill.task_id, s.clone());
                if !send(s) {
                    return Some(Ended::Closed {
                        registered: *registered,
                    });
                }
            }
            Msg::Reconcile(r) => {
                // As the real agent: kill what the leader does not know, report what it knows
                // but this agent does not as lost.
                let known: HashSet<String> = r.known_task_ids.into_iter().collect();
                let unknown: Vec<String> = self
                    .running
                    .keys()
                    .filter(|id| !known.contains(*id))
                    .cloned()
                    .collect();
                for id in unknown {
                    let ports = self.running.remove(&id).unwrap_or_default();
                    self.stats.running.fetch_sub(1, Ordering::Relaxed);
                    let s = status(&id, v1::TaskState::TaskKilled, ports);
                    self.terminal.insert(id, s.clone());
                    send(s);
                }
                for id in known {
                    if !self.running.contains_key(&id) && !self.terminal.contains_key(&id) {
                        send(status(&id, v1::TaskState::TaskLost, Vec::new()));
                    }
                }
            }
            Msg::Acknowledge(a) => {
                for id in a.task_ids {
                    self.terminal.remove(&id);
                }
            }
            _ => {}
        }
        None
    }
}

/// The next heartbeat, or never before registration.
async fn tick(heartbeat: &mut Option<tokio::time::Interval>) {
    match heartbeat {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
