//! The supervisor: sole owner of the task table. It starts tasks (processes and Docker
//! containers), watches them, kills them, persists every change to the task journal before
//! reporting it, and keeps terminal statuses until the leader acknowledges them.
//!
//! It is one tokio task fed by two queues: commands from the session (launch, kill, reconcile,
//! acknowledge, destroy volumes, snapshot, describe) and events from its own jobs (a task was
//! prepared, a process exited, a container ended, a kill's grace period is over). Preparing a
//! task — fetching its URIs, pulling its image — can take long, so it runs as a job of its own
//! while the task is STARTING; the supervisor keeps answering meanwhile. Every status it reports
//! goes out numbered on the `updates` queue; a [`Snapshot`] carries the number of the last one,
//! so the session can tell which queued updates the snapshot already covers.
//!
//! Changes are committed in groups: the supervisor handles every command and event that is
//! ready, then appends the changed records to the task journal with one `fdatasync`, and only
//! then sends the statuses (in the order they were produced) and starts the preparations of the
//! launches (so a restart always knows a task that may have started). A burst of launches thus
//! costs a few disk flushes, not two per task.
//!
//! ```text
//!  session ──Command──►  Supervisor  ──Update{seq, status}──► session ──► leader
//!                          ▲     │ prepare (sandbox, volumes, fetch, cgroups, pull)
//!          Event::Prepared,│     │ then spawn / docker create+start; killpg / docker stop
//!          Exited,         │     ▼
//!          ContainerEnded, └── jobs: child.wait(), /proc polling for adopted processes,
//!          GraceOver             docker wait + log copy for containers
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use metrics::{counter, gauge};
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::cgroups::{self, Cgroups, TaskGroups};
use crate::container::{self, Plan, PlanContext};
use crate::docker::{ContainerOutcome, DockerEngine, Found};
use crate::fetcher::Fetcher;
use crate::metrics as m;
use crate::process::{self, RunAs};
use crate::spawner::Spawner;
use crate::state::{Change, StateDir, TaskJournal, TaskRecord};
use crate::task::{
    instance_id, valid_task_id, LaunchSpec, Status, TaskState, REASON_COMMAND_FAILED,
    REASON_LAUNCH_FAILED, REASON_MEMORY, REASON_TASK_UNKNOWN,
};
use crate::taskenv::task_environment;
use crate::volumes;

/// How often a task adopted after a restart (not our child, so not waitable) is checked.
const ADOPTED_POLL: Duration = Duration::from_millis(500);
/// SIGTERM→SIGKILL window when neither the kill nor the app names one (Mesos' default).
const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);
/// How often old sandboxes are swept (more often when the retention is shorter).
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// Task cgroups empty for this long are abandoned (a launch fills its group within
/// milliseconds).
const ABANDONED_CGROUP: Duration = Duration::from_secs(60);
/// How often the running-tasks gauge is brought up to date when tasks changed (counting them
/// at every commit of a burst of launches would walk the task table each time).
const GAUGE_EVERY: Duration = Duration::from_secs(1);
/// While tasks are being started, how long a change may wait for others to share its commit
/// (one `fdatasync` and one message to the leader for a burst of launches, not one each).
const COMMIT_WINDOW: Duration = Duration::from_millis(5);
/// Most commands and events handled before their changes are committed.
const MAX_BATCH: usize = 512;

const DIED_WHILE_DOWN: &str = "task died while the agent was down";
const EXITED_UNWATCHED: &str = "task exited while the agent was not watching; exit status unknown";
const UNKNOWN_TASK: &str = "task unknown to the agent";
const RESTARTED_WHILE_STARTING: &str = "the agent restarted while the task was starting";
const KILLED_BEFORE_START: &str = "task killed before it started";

/// What the session (and the agent's API) asks of the supervisor.
#[derive(Debug)]
pub(crate) enum Command {
    Launch(Box<LaunchSpec>),
    /// `grace: None` means the app's kill grace period, or [`DEFAULT_KILL_GRACE`].
    Kill {
        task_id: String,
        grace: Option<Duration>,
    },
    Reconcile {
        known: HashSet<String>,
    },
    Acknowledge {
        task_ids: Vec<String>,
    },
    /// Deletes the persistent volumes of an instance that is gone for good.
    DestroyVolumes {
        instance_id: String,
    },
    Snapshot(oneshot::Sender<Snapshot>),
    /// What the agent's API needs to know about one task.
    Describe {
        task_id: String,
        reply: oneshot::Sender<Option<TaskView>>,
    },
}

/// Every task's current status, and the number of the last update it includes.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub statuses: Vec<Status>,
    pub seq: u64,
}

/// One task as the agent's API sees it.
#[derive(Clone, Debug)]
pub(crate) struct TaskView {
    pub spec: LaunchSpec,
    pub state: TaskState,
    pub container: Option<String>,
}

/// A status to report, numbered in the order the supervisor produced it.
#[derive(Debug)]
pub(crate) struct Update {
    pub seq: u64,
    pub status: Status,
}

/// The session's (and the API's) way to the supervisor.
#[derive(Clone, Debug)]
pub(crate) struct SupervisorHandle {
    commands: mpsc::Sender<Command>,
}

impl SupervisorHandle {
    pub fn new(commands: mpsc::Sender<Command>) -> Self {
        Self { commands }
    }

    /// Queues a command; false when the supervisor is gone.
    pub async fn send(&self, command: Command) -> bool {
        self.commands.send(command).await.is_ok()
    }

    pub async fn snapshot(&self) -> Option<Snapshot> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Snapshot(tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn describe(&self, task_id: &str) -> Option<TaskView> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Describe {
            task_id: task_id.to_string(),
            reply,
        };
        self.commands.send(command).await.ok()?;
        rx.await.ok().flatten()
    }
}

/// What the jobs tell the supervisor.
#[derive(Debug)]
enum Event {
    Prepared {
        task_id: String,
        result: Result<Started, Failure>,
    },
    Exited {
        task_id: String,
        pid: u32,
        outcome: Outcome,
    },
    ContainerEnded {
        task_id: String,
        container: String,
        outcome: ContainerOutcome,
    },
    GraceOver {
        task_id: String,
        pid: u32,
    },
}

/// A task whose preparation is done and which now runs.
#[derive(Debug)]
enum Started {
    Process {
        child: Box<tokio::process::Child>,
        pid: u32,
        start_time: Option<u64>,
        cgroups: TaskGroups,
    },
    Container {
        id: String,
    },
}

/// Why a task could not be started: the TASK_FAILED message and reason.
#[derive(Debug)]
struct Failure {
    message: String,
    reason: &'static str,
}

impl Failure {
    fn launch(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            reason: REASON_LAUNCH_FAILED,
        }
    }
}

#[derive(Debug)]
enum Outcome {
    /// Our child, reaped: we know how it ended.
    Exited(ExitStatus),
    /// An adopted process that is gone: how it ended is unknowable.
    Unobserved,
    WaitFailed(String),
}

/// What the supervisor needs to know about the node and its policy.
#[derive(Clone, Debug)]
pub(crate) struct SupervisorConfig {
    pub agent_id: String,
    pub hostname: String,
    pub task_path: String,
    pub sandbox_retention: Duration,
    pub allow_privileged: bool,
    pub allow_host_volumes: bool,
}

/// Everything preparation jobs (and the agent's API) share with the supervisor; immutable.
pub(crate) struct Shared {
    pub config: SupervisorConfig,
    pub state: StateDir,
    /// The agent's own user, for `USER`/`HOME` of tasks that run as it.
    pub own_user: Option<RunAs>,
    /// `None` where cgroups are not usable: process tasks run unconfined.
    pub cgroups: Option<Cgroups>,
    /// With cgroup v1: starts process tasks inside their groups.
    pub spawner: Option<Spawner>,
    pub docker: Arc<DockerEngine>,
    pub fetcher: Fetcher,
}

impl Shared {
    /// The environment of a process task (also that of its command checks).
    pub fn process_environment(
        &self,
        spec: &LaunchSpec,
        run_as: Option<&RunAs>,
    ) -> BTreeMap<String, String> {
        let sandbox = self.state.sandbox(&spec.task_id);
        task_environment(
            spec,
            &self.config.hostname,
            &sandbox,
            &self.config.task_path,
            run_as.or(self.own_user.as_ref()),
        )
    }
}

pub(crate) struct Supervisor {
    shared: Arc<Shared>,
    /// Every task not yet forgotten: starting, running and unacknowledged terminal ones.
    tasks: BTreeMap<String, TaskRecord>,
    /// Tasks being prepared, with the switch that asks their preparation to give up.
    preparing: HashMap<String, watch::Sender<bool>>,
    /// Jobs: preparations, watchers, grace timers, sweeps; dropping the supervisor aborts them
    /// (never the tasks).
    background: JoinSet<()>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    /// Unbounded so that reporting never waits for a session that may be disconnected.
    updates: mpsc::UnboundedSender<Update>,
    /// Number of the last update sent.
    seq: u64,
    /// The task table on disk.
    journal: TaskJournal,
    /// Tasks changed or forgotten since the last commit, in order.
    changed: Vec<Changed>,
    /// Statuses waiting for the commit of the changes they report.
    outbox: Vec<Status>,
    /// Launches whose preparation waits for the commit of their record.
    to_prepare: Vec<(LaunchSpec, watch::Receiver<bool>)>,
    /// Tasks changed since the gauge of running tasks was last set.
    gauge_stale: bool,
    /// When the oldest change not yet committed was made.
    pending_since: Option<Instant>,
}

/// A change of the task table not yet in the journal.
#[derive(Debug)]
enum Changed {
    Saved(String),
    Forgotten(String),
}

impl Supervisor {
    /// Loads the task records and takes every task back: running processes and containers are
    /// adopted, tasks that are gone are marked failed (or killed, if a kill was under way).
    pub async fn recover(
        shared: Arc<Shared>,
        updates: mpsc::UnboundedSender<Update>,
    ) -> Result<Self, crate::state::StateError> {
        let (journal, records) = TaskJournal::open(&shared.state).await?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut supervisor = Self {
            shared,
            tasks: BTreeMap::new(),
            preparing: HashMap::new(),
            background: JoinSet::new(),
            events_tx,
            events_rx,
            updates,
            seq: 0,
            journal,
            changed: Vec::new(),
            outbox: Vec::new(),
            to_prepare: Vec::new(),
            gauge_stale: false,
            pending_since: None,
        };
        let mut containers = supervisor.own_containers(&records).await;
        for record in records {
            let span = info_span!("task", task_id = %record.spec.task_id);
            let found = match &mut containers {
                Some(listed) => Lookup::Listed(listed.remove(&record.spec.task_id)),
                None => Lookup::Unknown,
            };
            supervisor
                .recover_task(record, found)
                .instrument(span)
                .await;
        }
        // Containers of this agent that no task record claims: nobody will ever watch them.
        for (task_id, found) in containers.unwrap_or_default() {
            warn!(%task_id, container = %found.id, "removing a container no task record claims");
            supervisor.shared.docker.remove(&found.id).await;
        }
        supervisor.commit().await;
        supervisor.update_gauge();
        Ok(supervisor)
    }

    /// This agent's containers, when there is any Docker task to recover (so that an agent
    /// without Docker tasks never needs Docker); `None` when Docker cannot say.
    async fn own_containers(&self, records: &[TaskRecord]) -> Option<HashMap<String, Found>> {
        let any_docker = records.iter().any(|r| {
            !r.status.state.is_terminal() && (r.container.is_some() || is_docker(&r.spec))
        });
        if !any_docker {
            return Some(HashMap::new());
        }
        match self
            .shared
            .docker
            .find_all(&self.shared.config.agent_id)
            .await
        {
            Ok(found) => Some(found),
            Err(e) => {
                warn!(error = %e, "cannot list this agent's containers; their tasks are watched once Docker answers");
                None
            }
        }
    }

    async fn recover_task(&mut self, mut record: TaskRecord, lookup: Lookup) {
        let task_id = record.spec.task_id.clone();
        if !valid_task_id(&task_id) {
            warn!("ignoring a task record with an invalid task id");
            return;
        }
        let state = record.status.state;
        if state.is_terminal() {
            self.tasks.insert(task_id.clone(), record);
            // An agent stopped right after the task ended may have left its groups behind.
            self.release_cgroups(&task_id);
            return;
        }
        let grace = self.grace_for(&record.spec, None);
        let ports = record.spec.host_ports.clone();
        let found = match &lookup {
            Lookup::Listed(found) => found.clone(),
            Lookup::Unknown => None,
        };

        // A container started before its record said so: the agent stopped mid-launch.
        if record.container.is_none() && record.pid.is_none() {
            if let Some(found) = found.filter(|f| f.running) {
                if state == TaskState::Starting {
                    info!(container = %found.id, "adopting a container started while the agent went down");
                    record.container = Some(found.id.clone());
                    self.tasks.insert(task_id.clone(), record);
                    self.watch_container(&task_id, &found.id, false);
                    self.record(
                        &task_id,
                        Status::now(&task_id, TaskState::Running, "").with_ports(&ports),
                    )
                    .await;
                    return;
                }
                self.shared.docker.remove(&found.id).await;
            }
            let status = if state == TaskState::Killing {
                Status::now(&task_id, TaskState::Killed, KILLED_BEFORE_START)
            } else {
                Status::now(&task_id, TaskState::Failed, RESTARTED_WHILE_STARTING)
                    .with_reason(REASON_LAUNCH_FAILED)
            };
            warn!(
                state = status.state.label(),
                "the task was being started when the agent stopped"
            );
            self.tasks.insert(task_id.clone(), record);
            self.record(&task_id, status.with_ports(&ports)).await;
            return;
        }

        if let Some(container) = record.container.clone() {
            self.tasks.insert(task_id.clone(), record);
            // Ended while the agent was down: settled now, so the Register already says so.
            if matches!(lookup, Lookup::Listed(None))
                || found
                    .as_ref()
                    .is_some_and(|f| f.id == container && !f.running)
            {
                let sandbox = self.shared.state.sandbox(&task_id);
                let outcome = self.shared.docker.watch(&container, &sandbox, false).await;
                warn!(%container, "the container ended while the agent was down");
                self.container_ended(&task_id, &container, outcome).await;
                return;
            }
            info!(%container, state = state.label(), "re-attaching to a container");
            self.watch_container(&task_id, &container, false);
            if state == TaskState::Killing {
                self.stop_container(&container, grace);
            }
            return;
        }

        let (pid, start_time) = (record.pid, record.start_time);
        self.tasks.insert(task_id.clone(), record);
        match pid {
            Some(pid) if process::is_running(pid, start_time) => {
                info!(
                    pid,
                    state = state.label(),
                    "adopting a task that kept running"
                );
                self.watch_adopted(&task_id, pid, start_time);
                if state == TaskState::Killing {
                    self.signal_and_arm(&task_id, pid, grace);
                }
            }
            _ => {
                if let Some(pid) = pid {
                    process::kill_leftovers(pid, start_time);
                }
                let oom = self
                    .tasks
                    .get(&task_id)
                    .is_some_and(|t| cgroups::oom_killed(&t.cgroups));
                let status = if state == TaskState::Killing {
                    Status::now(&task_id, TaskState::Killed, DIED_WHILE_DOWN)
                } else if oom {
                    Status::now(&task_id, TaskState::Failed, DIED_WHILE_DOWN)
                        .with_reason(REASON_MEMORY)
                } else {
                    Status::now(&task_id, TaskState::Failed, DIED_WHILE_DOWN)
                        .with_reason(REASON_COMMAND_FAILED)
                };
                warn!(
                    state = status.state.label(),
                    "task died while the agent was down"
                );
                self.release_cgroups(&task_id);
                self.record(&task_id, status).await;
            }
        }
    }

    /// Serves commands until the session drops its handle.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let every =
            SWEEP_EVERY.min((self.shared.config.sandbox_retention / 2).max(Duration::from_secs(1)));
        let mut sweep = tokio::time::interval(every);
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut gauge = tokio::time::interval(GAUGE_EVERY);
        gauge.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let due = self.pending_since.map(|t| t + COMMIT_WINDOW);
            tokio::select! {
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() => {}
                command = commands.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => {
                        self.commit().await;
                        return;
                    }
                },
                Some(event) = self.events_rx.recv() => self.on_event(event).await,
                _ = sweep.tick() => self.sweep_sandboxes(),
                _ = gauge.tick(), if self.gauge_stale => self.update_gauge(),
                Some(done) = self.background.join_next() => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            error!(error = %e, "a supervisor background job panicked");
                        }
                    }
                }
            }
            // Whatever else is ready joins this commit.
            for _ in 1..MAX_BATCH {
                if let Ok(command) = commands.try_recv() {
                    self.handle(command).await;
                } else if let Ok(event) = self.events_rx.try_recv() {
                    self.on_event(event).await;
                } else {
                    break;
                }
            }
            if self.commit_now() {
                self.commit().await;
            }
        }
    }

    /// Whether the changes made so far are committed now, or wait (within [`COMMIT_WINDOW`]) for
    /// the tasks being started to join them. Launches waiting for their records start at once.
    fn commit_now(&mut self) -> bool {
        if self.changed.is_empty() && self.outbox.is_empty() && self.to_prepare.is_empty() {
            return true;
        }
        let since = *self.pending_since.get_or_insert_with(Instant::now);
        self.preparing.is_empty()
            || !self.to_prepare.is_empty()
            || self.changed.len() >= MAX_BATCH
            || since.elapsed() >= COMMIT_WINDOW
    }

    /// Writes the changes since the last commit to the journal (one flush for all of them), then
    /// sends the statuses that report them and starts the launches that wait for them.
    async fn commit(&mut self) {
        self.pending_since = None;
        if !self.changed.is_empty() {
            let changed = std::mem::take(&mut self.changed);
            let written = if self.journal.wants_rewrite(self.tasks.len()) {
                self.journal.rewrite(self.tasks.values()).await
            } else {
                let mut saved = HashSet::new();
                let mut changes = Vec::with_capacity(changed.len());
                for c in &changed {
                    match c {
                        // The record as it is now: once is enough until it is forgotten.
                        Changed::Saved(task_id) => {
                            if let Some(task) = self.tasks.get(task_id) {
                                if saved.insert(task_id.as_str()) {
                                    changes.push(Change::Put(task));
                                }
                            }
                        }
                        Changed::Forgotten(task_id) => {
                            saved.remove(task_id.as_str());
                            changes.push(Change::Forget(task_id));
                        }
                    }
                }
                self.journal.append(&changes).await
            };
            if let Err(e) = written {
                // The statuses still go out; only a restart before the next commit loses them.
                error!(error = %e, "cannot persist the tasks' state");
            }
            self.gauge_stale = true;
        }
        for status in std::mem::take(&mut self.outbox) {
            self.seq += 1;
            // The receiver lives as long as the session, which outlives the supervisor's work.
            let _ = self.updates.send(Update {
                seq: self.seq,
                status,
            });
        }
        for (spec, cancelled) in std::mem::take(&mut self.to_prepare) {
            let span = info_span!("launch", task_id = %spec.task_id, app_id = %spec.app_id);
            let (shared, tx) = (self.shared.clone(), self.events_tx.clone());
            self.background.spawn(
                async move {
                    let result = prepare(&shared, &spec, cancelled).await;
                    let _ = tx.send(Event::Prepared {
                        task_id: spec.task_id.clone(),
                        result,
                    });
                }
                .instrument(span),
            );
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Launch(spec) => {
                let span = info_span!("launch", task_id = %spec.task_id, app_id = %spec.app_id);
                self.launch(*spec).instrument(span).await;
            }
            Command::Kill { task_id, grace } => {
                let span = info_span!("kill", task_id = %task_id);
                self.kill(&task_id, grace).instrument(span).await;
            }
            Command::Reconcile { known } => {
                self.reconcile(known)
                    .instrument(info_span!("reconcile"))
                    .await
            }
            Command::Acknowledge { task_ids } => {
                for task_id in task_ids {
                    if self
                        .tasks
                        .get(&task_id)
                        .is_some_and(|t| t.status.state.is_terminal())
                    {
                        self.forget(&task_id).await;
                    }
                }
            }
            Command::DestroyVolumes { instance_id } => self.destroy_volumes(instance_id),
            Command::Snapshot(reply) => {
                // Only what is on disk may be reported, and the number must cover it.
                self.commit().await;
                let statuses = self.tasks.values().map(|t| t.status.clone()).collect();
                let _ = reply.send(Snapshot {
                    statuses,
                    seq: self.seq,
                });
            }
            Command::Describe { task_id, reply } => {
                let view = self.tasks.get(&task_id).map(|t| TaskView {
                    spec: t.spec.clone(),
                    state: t.status.state,
                    container: t.container.clone(),
                });
                let _ = reply.send(view);
            }
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Prepared { task_id, result } => {
                let span = info_span!("task", task_id = %task_id);
                self.prepared(&task_id, result).instrument(span).await;
            }
            Event::Exited {
                task_id,
                pid,
                outcome,
            } => {
                let span = info_span!("task", task_id = %task_id, pid);
                self.exited(&task_id, pid, outcome).instrument(span).await;
            }
            Event::ContainerEnded {
                task_id,
                container,
                outcome,
            } => {
                let span = info_span!("task", task_id = %task_id, container = %container);
                self.container_ended(&task_id, &container, outcome)
                    .instrument(span)
                    .await;
            }
            Event::GraceOver { task_id, pid } => {
                if self.is_live(&task_id, pid) {
                    warn!(task_id = %task_id, pid, "grace period over; sending SIGKILL to the task's process group");
                    if let Err(e) = process::signal_group(pid, Signal::SIGKILL) {
                        warn!(task_id = %task_id, pid, error = %e, "cannot SIGKILL the task's process group");
                    }
                }
            }
        }
    }

    async fn launch(&mut self, spec: LaunchSpec) {
        let task_id = spec.task_id.clone();
        if !valid_task_id(&task_id) {
            warn!("refusing to launch a task with an invalid id");
            self.emit(
                Status::now(&task_id, TaskState::Error, "invalid task id")
                    .with_reason(REASON_LAUNCH_FAILED),
            );
            return;
        }
        if let Some(existing) = self.tasks.get(&task_id) {
            warn!("launch of a task the agent already has; repeating its status");
            let status = existing.status.clone();
            self.emit(status);
            return;
        }
        counter!(m::TASKS_LAUNCHED).increment(1);
        // Fetching and pulling take a while: the leader hears TASK_STARTING meanwhile.
        let slow = !spec.fetch.is_empty() || is_docker(&spec);
        let starting = Status::now(&task_id, TaskState::Starting, "").with_ports(&spec.host_ports);
        let record = TaskRecord {
            spec: spec.clone(),
            pid: None,
            start_time: None,
            container: None,
            cgroups: Vec::new(),
            status: starting.clone(),
        };
        self.tasks.insert(task_id.clone(), record);
        if slow {
            self.record(&task_id, starting).await;
        } else {
            // Persisted (a restart must know it was being started), not reported.
            self.changed.push(Changed::Saved(task_id.clone()));
        }

        // Prepared once the record is committed.
        let (cancel, cancelled) = watch::channel(false);
        self.preparing.insert(task_id, cancel);
        self.to_prepare.push((spec, cancelled));
    }

    /// A preparation finished: the task runs, or failed to start, or was killed meanwhile.
    async fn prepared(&mut self, task_id: &str, result: Result<Started, Failure>) {
        self.preparing.remove(task_id);
        let Some(task) = self.tasks.get_mut(task_id) else {
            if let Ok(started) = result {
                self.discard(started);
            }
            return;
        };
        let ports = task.spec.host_ports.clone();
        let state = task.status.state;
        if state != TaskState::Starting {
            // Killed while starting (KILLING), or forgotten meanwhile.
            if let Ok(started) = result {
                info!("the task started after it was killed; stopping it");
                self.discard(started);
            }
            if state == TaskState::Killing {
                self.record(
                    task_id,
                    Status::now(task_id, TaskState::Killed, KILLED_BEFORE_START).with_ports(&ports),
                )
                .await;
            }
            return;
        }
        match result {
            Ok(Started::Process {
                child,
                pid,
                start_time,
                cgroups,
            }) => {
                info!(pid, confined = !cgroups.is_empty(), "task started");
                task.pid = Some(pid);
                task.start_time = start_time;
                task.cgroups = cgroups;
                self.watch_child(task_id, pid, *child);
            }
            Ok(Started::Container { id }) => {
                info!(container = %id, "container started");
                task.container = Some(id.clone());
                self.watch_container(task_id, &id, true);
            }
            Err(failure) => {
                warn!(message = %failure.message, "task could not be started");
                self.record(
                    task_id,
                    Status::now(task_id, TaskState::Failed, failure.message)
                        .with_reason(failure.reason)
                        .with_ports(&ports),
                )
                .await;
                return;
            }
        }
        self.record(
            task_id,
            Status::now(task_id, TaskState::Running, "").with_ports(&ports),
        )
        .await;
    }

    /// Stops what a preparation started for a task that is no longer wanted.
    fn discard(&mut self, started: Started) {
        match started {
            Started::Process {
                mut child,
                pid,
                cgroups,
                ..
            } => {
                let _ = process::signal_group(pid, Signal::SIGKILL);
                self.background.spawn(async move {
                    let _ = child.wait().await;
                    cgroups::remove(cgroups).await;
                });
            }
            Started::Container { id } => {
                let docker = self.shared.docker.clone();
                self.background
                    .spawn(async move { docker.remove(&id).await });
            }
        }
    }

    async fn kill(&mut self, task_id: &str, grace: Option<Duration>) {
        let Some(task) = self.tasks.get(task_id) else {
            info!("kill of a task the agent does not know");
            self.emit(
                Status::now(task_id, TaskState::Lost, UNKNOWN_TASK)
                    .with_reason(REASON_TASK_UNKNOWN),
            );
            return;
        };
        let status = task.status.clone();
        let grace = self.grace_for(&task.spec, grace);
        let ports = task.spec.host_ports.clone();
        let killing = Status::now(task_id, TaskState::Killing, "").with_ports(&ports);
        match (status.state, task.pid, task.container.clone()) {
            (state, _, _) if state.is_terminal() => self.emit(status),
            (TaskState::Killing, _, _) => {
                debug!("kill already under way");
                self.emit(status);
            }
            (TaskState::Starting, _, _) => {
                info!("killing a task that is still starting");
                if let Some(cancel) = self.preparing.get(task_id) {
                    let _ = cancel.send(true);
                }
                self.record(task_id, killing).await;
            }
            (_, Some(pid), _) => {
                info!(pid, grace_ms = grace.as_millis(), "killing task");
                self.record(task_id, killing).await;
                self.signal_and_arm(task_id, pid, grace);
            }
            (_, None, Some(container)) => {
                info!(%container, grace_ms = grace.as_millis(), "stopping the task's container");
                self.record(task_id, killing).await;
                self.stop_container(&container, grace);
            }
            (_, None, None) => {
                // Cannot happen: a running task has a process or a container.
                self.record(
                    task_id,
                    Status::now(task_id, TaskState::Killed, "the task had no process"),
                )
                .await;
            }
        }
    }

    fn grace_for(&self, spec: &LaunchSpec, asked: Option<Duration>) -> Duration {
        asked
            .filter(|g| !g.is_zero())
            .unwrap_or_else(|| match spec.kill_grace_period_ms {
                0 => DEFAULT_KILL_GRACE,
                ms => Duration::from_millis(u64::from(ms)),
            })
    }

    /// SIGTERM to the group now, SIGKILL when the grace period is over (if it is still alive).
    fn signal_and_arm(&mut self, task_id: &str, pid: u32, grace: Duration) {
        if let Err(e) = process::signal_group(pid, Signal::SIGTERM) {
            warn!(pid, error = %e, "cannot SIGTERM the task's process group");
        }
        let (tx, task_id) = (self.events_tx.clone(), task_id.to_string());
        self.background.spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = tx.send(Event::GraceOver { task_id, pid });
        });
    }

    /// `docker stop` with the grace period; the container's watcher reports the end.
    fn stop_container(&mut self, container: &str, grace: Duration) {
        let (docker, container) = (self.shared.docker.clone(), container.to_string());
        self.background.spawn(
            async move {
                if let Err(e) = docker.stop(&container, grace).await {
                    warn!(%container, error = %e, "cannot stop the container");
                }
            }
            .in_current_span(),
        );
    }

    async fn reconcile(&mut self, known: HashSet<String>) {
        let unknown_here: Vec<String> = self
            .tasks
            .keys()
            .filter(|id| !known.contains(*id))
            .cloned()
            .collect();
        for task_id in unknown_here {
            let terminal = self
                .tasks
                .get(&task_id)
                .is_some_and(|t| t.status.state.is_terminal());
            let span = info_span!("task", task_id = %task_id);
            if terminal {
                info!(parent: &span, "dropping a terminal status the leader no longer knows");
                self.forget(&task_id).instrument(span).await;
            } else {
                info!(parent: &span, "killing a task the leader does not know");
                self.kill(&task_id, None).instrument(span).await;
            }
        }
        let mut missing: Vec<&String> = known
            .iter()
            .filter(|id| !self.tasks.contains_key(*id))
            .collect();
        missing.sort();
        let lost: Vec<Status> = missing
            .into_iter()
            .map(|id| {
                Status::now(id, TaskState::Lost, UNKNOWN_TASK).with_reason(REASON_TASK_UNKNOWN)
            })
            .collect();
        for status in lost {
            info!(task_id = %status.task_id, "the leader knows a task this agent does not have");
            self.emit(status);
        }
    }

    fn destroy_volumes(&mut self, instance: String) {
        let span = info_span!("destroy_volumes", instance_id = %instance);
        let _enter = span.enter();
        if !valid_task_id(&instance) {
            warn!("refusing to destroy volumes of an invalid instance id");
            return;
        }
        let in_use = self
            .tasks
            .values()
            .any(|t| !t.status.state.is_terminal() && instance_id(&t.spec.task_id) == instance);
        if in_use {
            warn!("refusing to destroy the volumes of an instance whose task still runs");
            return;
        }
        let dir = self.shared.state.volumes_dir();
        self.background.spawn(
            async move {
                match tokio::task::spawn_blocking(move || volumes::destroy(&dir, &instance)).await {
                    Ok(Ok(removed)) => info!(count = removed.len(), "destroyed persistent volumes"),
                    Ok(Err(e)) => error!(error = %e, "cannot destroy persistent volumes"),
                    Err(e) => error!(error = %e, "destroying persistent volumes failed"),
                }
            }
            .in_current_span(),
        );
    }

    async fn exited(&mut self, task_id: &str, pid: u32, outcome: Outcome) {
        if !self.is_live(task_id, pid) {
            return;
        }
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        // Whatever the task started must not outlive it.
        process::kill_leftovers(pid, task.start_time);
        let killing = task.status.state == TaskState::Killing;
        let ports = task.spec.host_ports.clone();
        let oom = cgroups::oom_killed(&task.cgroups);
        let mem = task.spec.resources.mem;
        let (state, message, exit_code) = match outcome {
            Outcome::Exited(status) => process::describe_exit(status),
            Outcome::Unobserved => (TaskState::Failed, EXITED_UNWATCHED.to_string(), None),
            Outcome::WaitFailed(e) => (
                TaskState::Failed,
                format!("cannot observe the task's exit: {e}"),
                None,
            ),
        };
        let mut status = if killing {
            Status::now(task_id, TaskState::Killed, message)
        } else if oom {
            Status::now(task_id, TaskState::Failed, memory_exceeded(mem)).with_reason(REASON_MEMORY)
        } else if state == TaskState::Failed {
            Status::now(task_id, state, message).with_reason(REASON_COMMAND_FAILED)
        } else {
            Status::now(task_id, state, message)
        };
        status = status.with_ports(&ports).with_exit_code(exit_code);
        info!(state = status.state.label(), message = %status.message, "task ended");
        self.release_cgroups(task_id);
        self.record(task_id, status).await;
    }

    async fn container_ended(&mut self, task_id: &str, container: &str, outcome: ContainerOutcome) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        if task.container.as_deref() != Some(container) || task.status.state.is_terminal() {
            return;
        }
        let killing = task.status.state == TaskState::Killing;
        let ports = task.spec.host_ports.clone();
        let mem = task.spec.resources.mem;
        let code = outcome.exit_code.and_then(|c| i32::try_from(c).ok());
        let described = match code {
            Some(c) => format!("Container exited with status {c}"),
            None => "Container exited".to_string(),
        };
        let mut status = if let Some(e) = &outcome.error {
            Status::now(
                task_id,
                TaskState::Failed,
                format!("cannot observe the container: {e}"),
            )
            .with_reason(REASON_COMMAND_FAILED)
        } else if outcome.gone {
            let message = if outcome.ended_unwatched {
                DIED_WHILE_DOWN.to_string()
            } else {
                "the container disappeared".to_string()
            };
            Status::now(task_id, TaskState::Failed, message).with_reason(REASON_COMMAND_FAILED)
        } else if killing {
            Status::now(task_id, TaskState::Killed, described)
        } else if outcome.oom_killed {
            Status::now(task_id, TaskState::Failed, memory_exceeded(mem)).with_reason(REASON_MEMORY)
        } else if code == Some(0) {
            Status::now(task_id, TaskState::Finished, described)
        } else {
            Status::now(task_id, TaskState::Failed, described).with_reason(REASON_COMMAND_FAILED)
        };
        if killing && status.state == TaskState::Failed {
            status.state = TaskState::Killed;
            status.reason.clear();
        }
        if outcome.ended_unwatched && !outcome.gone {
            status.message = format!("{}: {}", DIED_WHILE_DOWN, status.message);
        }
        status = status.with_ports(&ports).with_exit_code(code);
        info!(state = status.state.label(), message = %status.message, "container ended");
        self.record(task_id, status).await;
    }

    /// Whether `task_id` is still running as `pid` (events may outlive what they were about).
    fn is_live(&self, task_id: &str, pid: u32) -> bool {
        self.tasks
            .get(task_id)
            .is_some_and(|t| t.pid == Some(pid) && !t.status.state.is_terminal())
    }

    fn watch_child(&mut self, task_id: &str, pid: u32, mut child: tokio::process::Child) {
        let (tx, task_id) = (self.events_tx.clone(), task_id.to_string());
        self.background.spawn(async move {
            let outcome = match child.wait().await {
                Ok(status) => Outcome::Exited(status),
                Err(e) => Outcome::WaitFailed(e.to_string()),
            };
            let _ = tx.send(Event::Exited {
                task_id,
                pid,
                outcome,
            });
        });
    }

    /// Watches a process that is not our child (we cannot wait for it) by polling `/proc`.
    fn watch_adopted(&mut self, task_id: &str, pid: u32, start_time: Option<u64>) {
        let (tx, task_id) = (self.events_tx.clone(), task_id.to_string());
        self.background.spawn(async move {
            let mut poll = tokio::time::interval(ADOPTED_POLL);
            poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                poll.tick().await;
                if !process::is_running(pid, start_time) {
                    break;
                }
            }
            let _ = tx.send(Event::Exited {
                task_id,
                pid,
                outcome: Outcome::Unobserved,
            });
        });
    }

    /// Follows a container (copying its output into the sandbox) until it ends.
    fn watch_container(&mut self, task_id: &str, container: &str, fresh: bool) {
        let (tx, task_id, container) = (
            self.events_tx.clone(),
            task_id.to_string(),
            container.to_string(),
        );
        let docker = self.shared.docker.clone();
        let sandbox = self.shared.state.sandbox(&task_id);
        self.background.spawn(
            async move {
                let outcome = docker.watch(&container, &sandbox, fresh).await;
                let _ = tx.send(Event::ContainerEnded {
                    task_id,
                    container,
                    outcome,
                });
            }
            .in_current_span(),
        );
    }

    /// Removes a finished task's cgroups (in the background: the kernel needs the group empty).
    fn release_cgroups(&mut self, task_id: &str) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        let left: TaskGroups = task
            .cgroups
            .iter()
            .filter(|dir| dir.exists() && std::fs::remove_dir(dir).is_err())
            .cloned()
            .collect();
        if !left.is_empty() {
            self.background.spawn(cgroups::remove(left));
        }
    }

    /// Makes `status` the task's state: persisted first (at the next commit), then reported.
    async fn record(&mut self, task_id: &str, status: Status) {
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        task.status = status.clone();
        self.changed.push(Changed::Saved(task_id.to_string()));
        if status.state.is_terminal() {
            counter!(m::TASK_EXITS, m::LABEL_STATE => status.state.label()).increment(1);
        }
        self.emit(status);
    }

    async fn forget(&mut self, task_id: &str) {
        if self.tasks.remove(task_id).is_some() {
            self.changed.push(Changed::Forgotten(task_id.to_string()));
        }
    }

    /// Queues a status; it goes out after the commit of what precedes it, in order.
    fn emit(&mut self, status: Status) {
        self.outbox.push(status);
    }

    fn update_gauge(&mut self) {
        self.gauge_stale = false;
        let running = self
            .tasks
            .values()
            .filter(|t| !t.status.state.is_terminal())
            .count();
        gauge!(m::TASKS_RUNNING).set(running as f64);
    }

    /// Deletes sandboxes of forgotten tasks once they are older than the retention, and task
    /// cgroups nobody removed.
    fn sweep_sandboxes(&mut self) {
        let keep: HashSet<String> = self.tasks.keys().cloned().collect();
        let dir = self.shared.state.sandboxes_dir();
        let retention = self.shared.config.sandbox_retention;
        let shared = self.shared.clone();
        self.background.spawn(async move {
            if let Some(cgroups) = shared.cgroups.clone() {
                let swept =
                    tokio::task::spawn_blocking(move || cgroups.sweep_abandoned(ABANDONED_CGROUP))
                        .await;
                if let Ok(n @ 1..) = swept {
                    info!(count = n, "removed abandoned task cgroups");
                }
            }
            match tokio::task::spawn_blocking(move || sweep(&dir, &keep, retention)).await {
                Ok(removed) if !removed.is_empty() => {
                    info!(count = removed.len(), "removed old sandboxes")
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "sandbox sweep failed"),
            }
        });
    }
}

/// What Docker said about a task's container at recovery.
enum Lookup {
    /// Docker listed this agent's containers; the task's, if it has one.
    Listed(Option<Found>),
    /// Docker could not be asked.
    Unknown,
}

/// Whether the task runs as a Docker container.
fn is_docker(spec: &LaunchSpec) -> bool {
    serde_json::from_str::<serde_json::Value>(&spec.container_json)
        .ok()
        .and_then(|v| {
            v.get("type")
                .and_then(|t| t.as_str())
                .map(|t| t == "DOCKER")
        })
        .unwrap_or(false)
}

/// The message of a task the OOM killer ended, as Mesos words it.
fn memory_exceeded(mem: f64) -> String {
    format!("Memory limit exceeded: Requested: {mem}MB; the task used more and was killed by the kernel's OOM killer")
}

/// Waits for `future` unless the task is killed first.
async fn unless_cancelled<T>(
    cancelled: &mut watch::Receiver<bool>,
    future: impl std::future::Future<Output = T>,
) -> Result<T, Failure> {
    let was_cancelled = async {
        // An error means the supervisor is gone, which cancels too.
        let _ = cancelled.wait_for(|c| *c).await;
    };
    tokio::select! {
        value = future => Ok(value),
        () = was_cancelled => Err(Failure::launch(KILLED_BEFORE_START)),
    }
}

/// Everything before a task runs: the plan, the sandbox, volumes, fetched URIs, cgroups, the
/// image; then the process or container is started. Runs as a job of its own.
async fn prepare(
    shared: &Shared,
    spec: &LaunchSpec,
    mut cancelled: watch::Receiver<bool>,
) -> Result<Started, Failure> {
    let sandbox = shared.state.sandbox(&spec.task_id);
    let volumes_dir = shared.state.volumes_dir();
    let ctx = PlanContext {
        agent_id: &shared.config.agent_id,
        agent_hostname: &shared.config.hostname,
        sandbox: &sandbox,
        volumes_dir: &volumes_dir,
        allow_privileged: shared.config.allow_privileged,
        allow_host_volumes: shared.config.allow_host_volumes,
    };
    let plan = container::plan(spec, &ctx).map_err(Failure::launch)?;
    let run_as = match &plan {
        Plan::Process(_) => process::resolve_user(&spec.user).map_err(Failure::launch)?,
        // A container's user is the container's business (`--user`).
        Plan::Docker(_) => None,
    };
    // Synchronously, like the rest of a process task's start: one mkdir, where `tokio::fs` would
    // hand every launch of a burst to the blocking pool, which grows by a thread for each.
    std::fs::create_dir_all(&sandbox).map_err(|e| {
        Failure::launch(format!(
            "cannot create the sandbox {}: {e}",
            sandbox.display()
        ))
    })?;
    if let Some(user) = &run_as {
        nix::unistd::chown(&sandbox, Some(user.uid), Some(user.gid)).map_err(|e| {
            Failure::launch(format!("cannot give the sandbox to {}: {e}", user.name))
        })?;
    }
    if !spec.fetch.is_empty() {
        let fetched = unless_cancelled(
            &mut cancelled,
            shared
                .fetcher
                .fetch_all(&spec.fetch, &sandbox, run_as.as_ref()),
        )
        .await?;
        fetched.map_err(|message| {
            warn!(%message, "fetching failed");
            Failure::launch(message)
        })?;
    }
    match plan {
        Plan::Process(plan) => {
            for link in &plan.links {
                make_link(&sandbox, link, run_as.as_ref()).map_err(Failure::launch)?;
            }
            start_process(shared, spec, &sandbox, run_as.as_ref()).await
        }
        Plan::Docker(plan) => {
            for name in &plan.volumes {
                volumes::ensure(&volumes_dir, name).map_err(|e| {
                    Failure::launch(format!("cannot create the persistent volume {name}: {e}"))
                })?;
            }
            // The sandbox files exist from the start, so they can be read before any output.
            for name in ["stdout", "stderr"] {
                let path = sandbox.join(name);
                if !path.exists() {
                    tokio::fs::write(&path, b"").await.map_err(|e| {
                        Failure::launch(format!("cannot create {}: {e}", path.display()))
                    })?;
                }
            }
            unless_cancelled(
                &mut cancelled,
                shared
                    .docker
                    .ensure_image(&plan.image, plan.force_pull, &sandbox),
            )
            .await?
            .map_err(Failure::launch)?;
            if *cancelled.borrow() {
                return Err(Failure::launch(KILLED_BEFORE_START));
            }
            let id = shared
                .docker
                .create_and_start(&plan)
                .await
                .map_err(Failure::launch)?;
            Ok(Started::Container { id })
        }
    }
}

/// Links a volume into the sandbox (`<sandbox>/<name>` → its directory).
fn make_link(sandbox: &Path, link: &container::Link, run_as: Option<&RunAs>) -> Result<(), String> {
    if let Some(volume) = &link.persistent {
        let created = !link.target.exists();
        std::fs::create_dir_all(&link.target)
            .map_err(|e| format!("cannot create the persistent volume {volume}: {e}"))?;
        if let (true, Some(user)) = (created, run_as) {
            nix::unistd::chown(&link.target, Some(user.uid), Some(user.gid))
                .map_err(|e| format!("cannot give the persistent volume to {}: {e}", user.name))?;
        }
    }
    let path: PathBuf = sandbox.join(&link.name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    if path.symlink_metadata().is_ok() {
        std::fs::remove_file(&path)
            .map_err(|e| format!("{} is in the way of a volume: {e}", path.display()))?;
    }
    std::os::unix::fs::symlink(&link.target, &path).map_err(|e| {
        format!(
            "cannot link the volume into the sandbox at {}: {e}",
            path.display()
        )
    })
}

/// Starts a process task, inside its cgroups when the agent can make them.
async fn start_process(
    shared: &Shared,
    spec: &LaunchSpec,
    sandbox: &Path,
    run_as: Option<&RunAs>,
) -> Result<Started, Failure> {
    let env = shared.process_environment(spec, run_as);
    let groups = match &shared.cgroups {
        Some(cg) => match cg.create(&spec.task_id, spec.resources.mem, spec.resources.cpus) {
            Ok(groups) => groups,
            Err(e) => {
                warn!(error = %e, "cannot create the task's cgroup; it runs unconfined");
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let entry = match &shared.spawner {
        _ if groups.is_empty() => process::Entry::Unconfined,
        Some(spawner) => process::Entry::Inside(spawner, &groups),
        None => process::Entry::Gated,
    };
    let spawned = match process::spawn(spec, sandbox, &env, run_as, entry).await {
        Ok(s) => s,
        Err(e) => {
            cgroups_cleanup_now(&groups);
            return Err(Failure::launch(e));
        }
    };
    let process::Spawned {
        mut child,
        pid,
        start_time,
        gate,
    } = spawned;
    let entered = match gate {
        Some(gate) => cgroups::add_process(&groups, pid)
            .map_err(|e| format!("cannot put the task into its cgroup: {e}"))
            .map(|()| Some(gate)),
        None => Ok(None),
    };
    let limited = entered.and_then(|gate| {
        if let Some(cg) = shared.cgroups.as_ref().filter(|_| !groups.is_empty()) {
            cg.limit_cpu(&spec.task_id, spec.resources.cpus)
                .map_err(|e| format!("cannot set the task's CPU quota: {e}"))?;
        }
        gate.map_or(Ok(()), process::Gate::open)
    });
    if let Err(message) = limited {
        let _ = process::signal_group(pid, Signal::SIGKILL);
        // Reaped in the background, and its groups removed once it is gone.
        tokio::spawn(async move {
            let _ = child.wait().await;
            cgroups::remove(groups).await;
        });
        return Err(Failure::launch(message));
    }
    Ok(Started::Process {
        child: Box::new(child),
        pid,
        start_time,
        cgroups: groups,
    })
}

fn cgroups_cleanup_now(groups: &TaskGroups) {
    for dir in groups {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Removes the sandboxes in `dir` not named in `keep` and not modified within `retention`.
fn sweep(dir: &Path, keep: &HashSet<String>, retention: Duration) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if keep.contains(&name) {
            continue;
        }
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok());
        if age.is_some_and(|a| a >= retention) {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => removed.push(path),
                Err(e) => warn!(path = %path.display(), error = %e, "cannot remove an old sandbox"),
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_keeps_tracked_and_recent_sandboxes() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        for name in ["tracked", "forgotten"] {
            std::fs::create_dir(dir.path().join(name))?;
        }
        let keep: HashSet<String> = ["tracked".to_string()].into();
        assert!(
            sweep(dir.path(), &keep, Duration::from_secs(3600)).is_empty(),
            "recent sandboxes stay"
        );
        let removed = sweep(dir.path(), &keep, Duration::ZERO);
        assert_eq!(removed, vec![dir.path().join("forgotten")]);
        assert!(dir.path().join("tracked").exists());
        Ok(())
    }
}
