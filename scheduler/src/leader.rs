//! The leader's actors: [`LeaderActor`] carries inputs to [`LeaderState`] and its effects out;
//! [`Persister`] writes those effects to the store as fenced batches, in order, coalescing what
//! queues up behind a slow write, and only then sends agent commands and answers callers.
//!
//! ```text
//!  gRPC (gateway, agents) ──msg──► LeaderActor ──(batch, replies, commands)──► Persister
//!                                     │  LeaderState (pure decisions)              │ commit (fenced)
//!                                     └─ reconcile after every burst of input      ▼
//!                                                                   agents ◄── commands, callers ◄── replies
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use parking_lot::Mutex;
use serde_json::Value;
use stride_core::error::ApiError;
use stride_core::instance::InstanceId;
use stride_core::{PathId, Timestamp};
use stride_proto::v1::{self, scheduler_message::Msg};
use stride_store::{Batch, Lease, StateStore, StoreError};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::metrics as m;
use crate::state::{
    AgentCommand, AgentInfo, AgentStatus, Change, Deployed, Effects, LeaderState, Origin,
};

/// Outbound streams of the agents attached to this leader, by agent id: (session, sender).
pub type Sessions = Arc<Mutex<HashMap<String, (u64, mpsc::Sender<v1::SchedulerMessage>)>>>;

/// Something to do once a batch is durable.
pub(crate) enum After {
    Reply(Box<dyn FnOnce(Result<(), ApiError>) + Send>),
}

struct Job {
    batch: Batch,
    commands: Vec<(String, AgentCommand)>,
    after: Vec<After>,
}

/// Writes jobs in order; see the module docs.
struct Persister {
    store: Arc<dyn StateStore>,
    lease: Lease,
    sessions: Sessions,
    /// Told when the store says this term is over.
    fenced: mpsc::UnboundedSender<()>,
}

/// Most writes coalesced into one commit.
const MAX_OPS_PER_COMMIT: usize = 20_000;

impl Persister {
    async fn run(self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        while let Some(first) = jobs.recv().await {
            let mut group = vec![first];
            let mut ops = group[0].batch.len();
            while ops < MAX_OPS_PER_COMMIT {
                match jobs.try_recv() {
                    Ok(j) => {
                        ops += j.batch.len();
                        group.push(j);
                    }
                    Err(_) => break,
                }
            }
            let mut batch = Batch::new();
            for j in &mut group {
                batch.append(std::mem::take(&mut j.batch));
            }
            let result = self.commit(batch).await;
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(StoreError::Fenced) => Err(ApiError::unavailable(
                    "Leadership was lost; retry against the new leader",
                )),
                Err(e) => Err(ApiError::unavailable(format!(
                    "the state store is unavailable: {e}"
                ))),
            };
            for j in group {
                if outcome.is_ok() {
                    self.send(j.commands);
                }
                for a in j.after {
                    match a {
                        After::Reply(f) => f(outcome.clone()),
                    }
                }
            }
            if result.is_err() {
                let _ = self.fenced.send(());
                // Nothing more may be written in this term.
                jobs.close();
                while let Some(j) = jobs.recv().await {
                    for After::Reply(f) in j.after {
                        f(Err(ApiError::unavailable(
                            "Leadership was lost; retry against the new leader",
                        )));
                    }
                }
                return;
            }
        }
    }

    /// Commits, retrying while the store is unreachable; gives up when fenced or when the lease
    /// must have expired meanwhile (the elector steps down on its own by then).
    async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len();
        let started = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            match self.store.commit(&self.lease, batch.clone()).await {
                Ok(()) => {
                    metrics::counter!(m::COMMITS).increment(1);
                    metrics::counter!(m::COMMIT_OPS).increment(n as u64);
                    metrics::histogram!(m::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
                    return Ok(());
                }
                Err(StoreError::Fenced) => {
                    warn!(
                        epoch = self.lease.epoch(),
                        "write fenced: another term holds the lease"
                    );
                    return Err(StoreError::Fenced);
                }
                Err(e) if started.elapsed() > Duration::from_secs(30) => {
                    error!(error = %e, "the store has been unreachable for 30 s; giving up this term");
                    return Err(e);
                }
                Err(e) => {
                    warn!(error = %e, "store write failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn send(&self, commands: Vec<(String, AgentCommand)>) {
        let sessions = self.sessions.lock();
        for (agent, cmd) in commands {
            let Some((_, tx)) = sessions.get(&agent) else {
                debug!(
                    agent,
                    "agent not attached; command dropped, it reconciles on return"
                );
                continue;
            };
            let msg = match cmd {
                AgentCommand::Launch(tasks) => {
                    metrics::counter!(m::TASKS_LAUNCHED).increment(tasks.len() as u64);
                    Msg::Launch(v1::Launch {
                        tasks: tasks
                            .iter()
                            .map(|t| {
                                stride_proto::convert::task_spec(
                                    &t.app,
                                    &t.task_id,
                                    &t.hostname,
                                    &t.host_ports,
                                )
                            })
                            .collect(),
                    })
                }
                AgentCommand::Kill { task_id, grace_ms } => Msg::Kill(v1::Kill {
                    task_id,
                    grace_period_ms: grace_ms.min(u64::from(u32::MAX)) as u32,
                }),
                AgentCommand::Acknowledge(task_ids) => {
                    Msg::Acknowledge(v1::Acknowledge { task_ids })
                }
                AgentCommand::DestroyVolumes(instance_id) => {
                    Msg::DestroyVolumes(v1::DestroyVolumes { instance_id })
                }
            };
            let message = v1::SchedulerMessage {
                msg: Some(msg),
                epoch: self.lease.epoch(),
            };
            if tx.try_send(message).is_err() {
                warn!(agent, "agent stream is full or closed; command dropped");
            }
        }
    }
}

/// The leader for one term.
pub struct LeaderActor {
    pub(crate) state: LeaderState,
    lease: Lease,
    sessions: Sessions,
    jobs: mpsc::UnboundedSender<Job>,
    /// A reconcile pass is queued.
    reconcile_queued: bool,
    /// Ends this term's background tasks (event callbacks) when the actor stops.
    term_over: tokio::sync::watch::Sender<bool>,
}

impl LeaderActor {
    pub fn new(
        state: LeaderState,
        lease: Lease,
        store: Arc<dyn StateStore>,
        sessions: Sessions,
        fenced: mpsc::UnboundedSender<()>,
    ) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        let persister = Persister {
            store,
            lease: lease.clone(),
            sessions: sessions.clone(),
            fenced,
        };
        let store_for_callbacks = persister.store.clone();
        tokio::spawn(persister.run(rx));
        let (term_over, over) = tokio::sync::watch::channel(false);
        tokio::spawn(crate::callbacks::run(store_for_callbacks, over));
        Self {
            term_over,
            state,
            lease,
            sessions,
            jobs,
            reconcile_queued: false,
        }
    }

    pub(crate) fn submit(&self, fx: Effects, after: Vec<After>) {
        if fx.batch.is_empty() && fx.commands.is_empty() && after.is_empty() {
            return;
        }
        let _ = self.jobs.send(Job {
            batch: fx.batch,
            commands: fx.commands,
            after,
        });
    }

    /// Queues a reconcile pass shortly, so a burst of inputs makes one pass and one write.
    pub(crate) fn touch(&mut self, ctx: &mut Context<Self>) {
        if self.reconcile_queued {
            return;
        }
        self.reconcile_queued = true;
        ctx.run_later(Duration::from_millis(5), |act, ctx| {
            act.reconcile_queued = false;
            act.reconcile_now(ctx);
        });
    }

    /// One reconcile pass; another is queued soon when this one left work over.
    fn reconcile_now(&mut self, ctx: &mut Context<Self>) {
        let started = Instant::now();
        let fx = self.state.reconcile(Timestamp::now());
        let more = fx.more;
        let took = started.elapsed();
        if took > Duration::from_millis(500) {
            warn!(
                took_ms = took.as_millis() as u64,
                instances = self.state.instances.len(),
                "slow reconcile pass"
            );
        }
        self.submit(fx, Vec::new());
        self.publish_gauges();
        if more && !self.reconcile_queued {
            // Bulk work gets at most half the thread, so renewals, agents and the API keep up.
            self.reconcile_queued = true;
            ctx.run_later(took.max(Duration::from_millis(5)), |act, ctx| {
                act.reconcile_queued = false;
                act.reconcile_now(ctx);
            });
        }
    }

    fn publish_gauges(&self) {
        let s = &self.state;
        let (running, staged) = s.condition_counts();
        metrics::gauge!(m::APPS_ACTIVE).set(s.apps.len() as f64);
        metrics::gauge!(m::DEPLOYMENTS_ACTIVE).set(s.deployments.len() as f64);
        metrics::gauge!(m::INSTANCES_RUNNING).set(running as f64);
        metrics::gauge!(m::INSTANCES_STAGED).set(staged as f64);
        metrics::gauge!(m::AGENTS_CONNECTED).set(self.sessions.lock().len() as f64);
    }

    /// Submits `fx` and answers `reply` with `value` once it is durable.
    fn reply_after<T: Send + 'static>(
        &self,
        fx: Effects,
        value: T,
    ) -> oneshot::Receiver<Result<T, ApiError>> {
        let (tx, rx) = oneshot::channel();
        let after = After::Reply(Box::new(move |r: Result<(), ApiError>| {
            let _ = tx.send(r.map(|()| value));
        }));
        self.submit(fx, vec![after]);
        rx
    }
}

impl Actor for LeaderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(
            epoch = self.lease.epoch(),
            apps = self.state.apps.len(),
            instances = self.state.instances.len(),
            "leading"
        );
        let mut ticks: u64 = 0;
        ctx.run_interval(Duration::from_secs(1), move |act, ctx| {
            ticks += 1;
            // Every half minute, check every app's count, whatever changed.
            if ticks.is_multiple_of(30) {
                act.state.mark_all_dirty();
            }
            if !act.reconcile_queued {
                act.reconcile_now(ctx);
            }
        });
        self.touch(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let _ = self.term_over.send(true);
        // Dropping the senders ends every agent stream; agents find the next leader.
        self.sessions.lock().clear();
        info!(epoch = self.lease.epoch(), "stopped leading");
    }
}

fn wait<T: Send + 'static>(
    rx: oneshot::Receiver<Result<T, ApiError>>,
) -> ResponseFuture<Result<T, ApiError>> {
    Box::pin(async move {
        rx.await.unwrap_or_else(|_| {
            Err(ApiError::unavailable(
                "Leadership was lost; retry against the new leader",
            ))
        })
    })
}

/// Apply changes to the root group and deploy them.
#[derive(Message)]
#[rtype(result = "Result<Deployed, ApiError>")]
pub struct Deploy {
    pub changes: Vec<Change>,
    pub force: bool,
    /// Only compute the plan.
    pub dry_run: bool,
    pub origin: Origin,
}

impl Handler<Deploy> for LeaderActor {
    type Result = ResponseFuture<Result<Deployed, ApiError>>;

    fn handle(&mut self, msg: Deploy, ctx: &mut Context<Self>) -> Self::Result {
        let now = Timestamp::now();
        let dry_run = msg.dry_run;
        match self.state.deploy_with(
            msg.changes,
            msg.force,
            dry_run,
            &msg.origin,
            BTreeMap::new(),
            now,
        ) {
            Ok((deployed, _)) if dry_run => Box::pin(async move { Ok(deployed) }),
            Ok((deployed, fx)) => {
                let rx = self.reply_after(fx, deployed);
                self.touch(ctx);
                wait(rx)
            }
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

/// Kill tasks, optionally scaling down or wiping.
#[derive(Message)]
#[rtype(result = "Result<(Vec<Value>, Option<Deployed>), ApiError>")]
pub struct KillTasks {
    pub task_ids: Vec<String>,
    pub app_ids: Vec<PathId>,
    pub host: Option<String>,
    pub scale: bool,
    pub wipe: bool,
    pub force: bool,
    pub origin: Origin,
}

impl Handler<KillTasks> for LeaderActor {
    type Result = ResponseFuture<Result<(Vec<Value>, Option<Deployed>), ApiError>>;

    fn handle(&mut self, msg: KillTasks, ctx: &mut Context<Self>) -> Self::Result {
        let now = Timestamp::now();
        let result = self.state.kill_tasks(
            &msg.task_ids,
            &msg.app_ids,
            msg.host.as_deref(),
            msg.scale,
            msg.wipe,
            msg.force,
            &msg.origin,
            now,
        );
        match result {
            Ok((killed, deployed, fx)) => {
                let rx = self.reply_after(fx, (killed, deployed));
                self.touch(ctx);
                wait(rx)
            }
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

#[derive(Message)]
#[rtype(result = "Result<Option<Deployed>, ApiError>")]
pub struct CancelDeployment {
    pub id: String,
    pub force: bool,
}

impl Handler<CancelDeployment> for LeaderActor {
    type Result = ResponseFuture<Result<Option<Deployed>, ApiError>>;

    fn handle(&mut self, msg: CancelDeployment, ctx: &mut Context<Self>) -> Self::Result {
        match self
            .state
            .cancel_deployment(&msg.id, msg.force, &Origin::default(), Timestamp::now())
        {
            Ok((deployed, fx)) => {
                let rx = self.reply_after(fx, deployed);
                self.touch(ctx);
                wait(rx)
            }
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct ResetDelay(pub PathId);

impl Handler<ResetDelay> for LeaderActor {
    type Result = Result<(), ApiError>;

    fn handle(&mut self, msg: ResetDelay, ctx: &mut Context<Self>) -> Self::Result {
        self.state.reset_delay(&msg.0)?;
        self.touch(ctx);
        Ok(())
    }
}

#[derive(Message)]
#[rtype(result = "Value")]
pub struct QueueJson;

impl Handler<QueueJson> for LeaderActor {
    type Result = MessageResult<QueueJson>;

    fn handle(&mut self, _: QueueJson, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.state.queue_json(Timestamp::now()))
    }
}

/// An agent attached with its outbound stream.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentRegistered {
    pub info: AgentInfo,
    pub session: u64,
    pub tasks: Vec<AgentStatus>,
    pub sender: mpsc::Sender<v1::SchedulerMessage>,
    pub heartbeat_interval: Duration,
}

impl Handler<AgentRegistered> for LeaderActor {
    type Result = ();

    fn handle(&mut self, msg: AgentRegistered, ctx: &mut Context<Self>) {
        let agent_id = msg.info.agent_id.clone();
        info!(agent = %agent_id, hostname = %msg.info.hostname, tasks = msg.tasks.len(), "agent registered");
        let registered = v1::SchedulerMessage {
            msg: Some(Msg::Registered(v1::Registered {
                agent_id: agent_id.clone(),
                epoch: self.lease.epoch(),
                heartbeat_interval_ms: msg.heartbeat_interval.as_millis() as u32,
            })),
            epoch: self.lease.epoch(),
        };
        let _ = msg.sender.try_send(registered);
        self.sessions
            .lock()
            .insert(agent_id, (msg.session, msg.sender));
        let fx = self
            .state
            .agent_registered(msg.info, msg.session, msg.tasks, Timestamp::now());
        self.submit(fx, Vec::new());
        self.touch(ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentStatusReceived {
    pub agent_id: String,
    pub status: AgentStatus,
}

impl Handler<AgentStatusReceived> for LeaderActor {
    type Result = ();

    fn handle(&mut self, msg: AgentStatusReceived, ctx: &mut Context<Self>) {
        metrics::counter!(m::STATUS_UPDATES).increment(1);
        let fx = self
            .state
            .status(&msg.agent_id, msg.status, Timestamp::now());
        self.submit(fx, Vec::new());
        self.touch(ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentHeartbeat {
    pub agent_id: String,
}

impl Handler<AgentHeartbeat> for LeaderActor {
    type Result = ();

    fn handle(&mut self, msg: AgentHeartbeat, _: &mut Context<Self>) {
        self.state.agent_seen(&msg.agent_id, Timestamp::now());
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentDetached {
    pub agent_id: String,
    pub session: u64,
}

impl Handler<AgentDetached> for LeaderActor {
    type Result = ();

    fn handle(&mut self, msg: AgentDetached, ctx: &mut Context<Self>) {
        let mut sessions = self.sessions.lock();
        if sessions
            .get(&msg.agent_id)
            .is_some_and(|(s, _)| *s == msg.session)
        {
            sessions.remove(&msg.agent_id);
            info!(agent = %msg.agent_id, "agent detached");
        }
        drop(sessions);
        let fx = self
            .state
            .agent_disconnected(&msg.agent_id, msg.session, Timestamp::now());
        self.submit(fx, Vec::new());
        self.touch(ctx);
    }
}

/// Used by tests and the debug view: instance ids per app.
#[derive(Message)]
#[rtype(result = "Vec<InstanceId>")]
pub struct InstancesOf(pub PathId);

impl Handler<InstancesOf> for LeaderActor {
    type Result = MessageResult<InstancesOf>;

    fn handle(&mut self, msg: InstancesOf, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.state
                .app_instances(&msg.0)
                .iter()
                .map(|i| i.id.clone())
                .collect(),
        )
    }
}
