//! The leader's state and every decision it makes, as plain synchronous code.
//!
//! [`LeaderState`] holds desired state (apps, deployments) apart from observed state (instances
//! as agents report them, agents and their resources). Each input — a change from the API, a
//! status from an agent, a tick — mutates it and returns [`Effects`]: the writes to persist (as
//! one fenced batch) and the commands to send to agents once those writes are durable. The actor
//! in [`crate::leader`] only carries messages here and effects out; the decisions themselves
//! (plans, scaling, matching, backoff) are the pure functions of `stride-core`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use stride_core::app::App;
use stride_core::backoff::{self, Backoff};
use stride_core::deployment::{
    compute_plan, compute_plan_by_depth, has_dependency_cycle, Action, ActionKind, DeploymentPlan,
};
use stride_core::error::{ApiError, ErrorCode};
use stride_core::events::{self, Event};
use stride_core::group::{GroupMeta, GroupUpdate};
use stride_core::instance::{parse_task_id, Condition, Goal, Instance, InstanceId, Placement};
use stride_core::matching::{match_offers, Offer, Pending, PlacedInstance, Reject};
use stride_core::parse::{app_from_value, merge_patch};
use stride_core::render::task_json;
use stride_core::scaling::{propose_spread, restart_launch_count, restart_strategy};
use stride_core::versioning::{assign_service_ports_in, stamp};
use stride_core::{PathId, Timestamp};
use stride_store::{collections, Batch};

/// Most deployments running at once (Marathon's `--max_running_deployments`).
pub const MAX_RUNNING_DEPLOYMENTS: usize = 100;
/// Versions kept per app (Marathon's `--zk_max_versions`).
pub const MAX_VERSIONS: usize = 50;

/// A command for an agent, sent once the writes it depends on are durable.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentCommand {
    Launch(Vec<LaunchTask>),
    Kill {
        task_id: String,
        grace_ms: u64,
    },
    Acknowledge(Vec<String>),
    /// Delete the persistent volumes of a decommissioned resident instance.
    DestroyVolumes(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct LaunchTask {
    pub app: Arc<App>,
    pub task_id: String,
    pub hostname: String,
    pub host_ports: Vec<u32>,
}

/// How many instances one input or reconcile pass may create. A bigger change is made over
/// several passes, so no pass holds the leader long enough to miss renewing its lease; the
/// deployment stays open until the last pass.
pub const SCHEDULE_PER_PASS: usize = 2_000;

/// How many waiting instances one pass tries to place, in all and of one app.
const LAUNCH_PER_PASS: usize = 10_000;
const LAUNCH_PER_APP_PER_PASS: usize = 2_000;

/// What an input produced.
#[derive(Debug, Default)]
pub struct Effects {
    pub batch: Batch,
    pub commands: Vec<(String, AgentCommand)>,
    /// Instances created so far by this input (bounded by [`SCHEDULE_PER_PASS`]).
    scheduled: usize,
    /// Work was left for another pass.
    pub more: bool,
}

impl Effects {
    fn event(&mut self, e: Event) {
        self.batch.event(e.to_json_string());
    }
    /// An event written as JSON already.
    fn event_json(&mut self, body: String) {
        self.batch.event(body);
    }
    fn command(&mut self, agent: &str, c: AgentCommand) {
        self.commands.push((agent.to_string(), c));
    }
    pub fn append(&mut self, other: Effects) {
        self.batch.append(other.batch);
        self.commands.extend(other.commands);
        self.scheduled += other.scheduled;
        self.more |= other.more;
    }
}

/// A status report from an agent, in domain terms.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentStatus {
    pub task_id: String,
    pub condition: Condition,
    pub terminal: bool,
    pub message: String,
    pub reason: String,
    pub timestamp: Timestamp,
    pub ports: Vec<u32>,
    pub ip_addresses: Vec<String>,
    pub healthy: Option<bool>,
    pub exit_code: Option<i32>,
}

/// What an agent offers, as it registered.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentInfo {
    pub agent_id: String,
    pub hostname: String,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: u32,
    pub ports: Vec<(u32, u32)>,
    pub attributes: Vec<(String, String)>,
    pub region: Option<String>,
    pub zone: Option<String>,
    /// `host:port` of the agent's own gRPC API, empty if it has none.
    pub api_address: String,
}

impl AgentInfo {
    fn record(&self, connected: bool, now: Timestamp) -> stride_core::agent::AgentRecord {
        stride_core::agent::AgentRecord {
            agent_id: self.agent_id.clone(),
            hostname: self.hostname.clone(),
            api_address: self.api_address.clone(),
            cpus: self.cpus,
            mem: self.mem,
            disk: self.disk,
            gpus: self.gpus,
            ports: self.ports.clone(),
            attributes: self.attributes.clone(),
            region: self.region.clone(),
            zone: self.zone.clone(),
            connected,
            registered_at: now,
        }
    }
}

/// An agent as the leader tracks it.
#[derive(Clone, Debug)]
pub struct AgentEntry {
    pub info: AgentInfo,
    /// The session currently attached, if any; commands for an agent without one are dropped
    /// (the agent reconciles when it comes back).
    pub session: Option<u64>,
    /// Last time anything arrived from the agent.
    pub last_seen: Timestamp,
}

/// A change to the root group, as the API asks for it. One per request and short-lived, so
/// the size of its largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Change {
    Create(Value),
    Put(Value),
    Patch {
        app_id: PathId,
        json: Value,
        create_if_missing: bool,
    },
    Remove(PathId),
    Restart(PathId),
    /// Replace an app by a stored definition (fetched by the caller).
    Restore {
        app_id: PathId,
        definition: App,
    },
    /// `POST`/`PUT /v2/groups/{path}` with a structural update (or a rollback's content).
    GroupUpdate {
        path: PathId,
        update: GroupUpdate,
        create_only: bool,
    },
    /// `DELETE /v2/groups/{path}`.
    GroupRemove(PathId),
    /// `PUT /v2/groups/{path}` with `scaleBy`.
    GroupScale {
        path: PathId,
        factor: f64,
    },
    /// `PATCH /v2/groups/{path}`.
    GroupAttributes {
        path: PathId,
        enforce_role: bool,
    },
}

/// Changes being assembled into one new root: `None` marks a removal.
#[derive(Default)]
pub(crate) struct Draft {
    pub(crate) apps: BTreeMap<PathId, Option<App>>,
    pub(crate) groups: BTreeMap<PathId, Option<GroupMeta>>,
    pub(crate) created: bool,
    pub(crate) restarts: BTreeSet<PathId>,
    pub(crate) posted: Vec<PathId>,
}

impl Draft {
    /// The app as it stands with the draft applied.
    pub(crate) fn app(&self, state: &LeaderState, id: &PathId) -> Option<App> {
        match self.apps.get(id) {
            Some(v) => v.clone(),
            None => state.apps.get(id).map(|a| (**a).clone()),
        }
    }

    /// Ids of the apps within `path` with the draft applied.
    pub(crate) fn apps_within(&self, state: &LeaderState, path: &PathId) -> Vec<PathId> {
        let mut ids: BTreeSet<PathId> = state
            .apps
            .keys()
            .filter(|k| k.is_within(path))
            .cloned()
            .collect();
        for (id, app) in &self.apps {
            if id.is_within(path) {
                match app {
                    Some(_) => ids.insert(id.clone()),
                    None => ids.remove(id),
                };
            }
        }
        ids.into_iter().collect()
    }

    /// The group's attributes with the draft applied.
    pub(crate) fn group(&self, state: &LeaderState, id: &PathId) -> Option<GroupMeta> {
        match self.groups.get(id) {
            Some(v) => v.clone(),
            None => state.groups.get(id).cloned(),
        }
    }

    /// Ids of stored groups within `path` (itself included) with the draft applied.
    pub(crate) fn groups_within(&self, state: &LeaderState, path: &PathId) -> Vec<PathId> {
        let mut ids: BTreeSet<PathId> = state
            .groups
            .keys()
            .filter(|k| k.is_within(path))
            .cloned()
            .collect();
        for (id, g) in &self.groups {
            if id.is_within(path) {
                match g {
                    Some(_) => ids.insert(id.clone()),
                    None => ids.remove(id),
                };
            }
        }
        ids.into_iter().collect()
    }
}

/// The result of an accepted deployment.
#[derive(Clone, Debug, PartialEq)]
pub struct Deployed {
    pub deployment_id: String,
    pub version: Timestamp,
    pub apps: Vec<App>,
    pub created: bool,
    /// The plan, for a dry run.
    pub plan: Option<DeploymentPlan>,
}

/// Who asked, for events.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub client_ip: String,
    pub uri: String,
}

/// Progress of one running deployment beyond its stored plan.
#[derive(Clone, Debug, Default)]
pub(crate) struct RestartProgress {
    kill_now: usize,
    max_capacity: usize,
    killed: usize,
}

/// Tunables of the leader.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// An agent silent for this long has its instances marked unreachable.
    pub agent_timeout: Duration,
    /// After an election, how long agents have to come back before their instances count as
    /// unreachable.
    pub reregistration_grace: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            agent_timeout: Duration::from_secs(10),
            reregistration_grace: Duration::from_secs(15),
        }
    }
}

pub struct LeaderState {
    pub(crate) tuning: Tuning,
    /// When this term started; agents get [`Tuning::reregistration_grace`] from here.
    pub(crate) elected_at: Timestamp,
    pub apps: BTreeMap<PathId, Arc<App>>,
    /// Stored version timestamps per app, oldest first (the definitions stay in the store).
    pub(crate) versions: HashMap<PathId, Vec<Timestamp>>,
    pub instances: HashMap<InstanceId, Instance>,
    pub(crate) by_app: HashMap<PathId, BTreeSet<InstanceId>>,
    pub deployments: BTreeMap<String, DeploymentPlan>,
    pub(crate) restarts: HashMap<(String, PathId), RestartProgress>,
    pub agents: HashMap<String, AgentEntry>,
    pub(crate) backoffs: HashMap<PathId, Backoff>,
    pub(crate) task_failures: HashMap<PathId, Value>,
    /// Why each app's last launch attempt found no agent.
    pub(crate) rejects: HashMap<PathId, BTreeMap<Reject, usize>>,
    /// Last version handed out, so versions strictly increase.
    pub(crate) last_version: Timestamp,
    /// Readiness of new instances during deployments (reference §5.6): instance → whether its
    /// readiness check has passed. Only consulted for apps with a readiness check.
    pub(crate) ready: HashMap<InstanceId, bool>,
    /// The last readiness results, as `/v2/deployments` shows them, by instance.
    pub(crate) readiness_results: HashMap<InstanceId, Value>,
    /// Stored groups (their own attributes); the tree also holds every app's ancestors.
    pub groups: BTreeMap<PathId, GroupMeta>,
    /// Stored manifest versions per group, oldest first.
    pub(crate) group_versions: HashMap<PathId, Vec<Timestamp>>,
    /// Indexes over `instances`, maintained by `put_instance` and `expunge`.
    pub(crate) idx: crate::index::Index,
    /// Every app as an owned value, with the service ports and dependencies the whole-root
    /// checks of a deployment read, kept in step with `apps` by [`LeaderState::deploy_with`] so
    /// that a change costs what it changes rather than a clone of every app. `None` until the
    /// first deployment after loading.
    root_cache: Option<crate::root::Root>,
    /// Apps by parent group, kept in step with `apps`: the apps of a group's manifest, as it
    /// lists them (id → version).
    pub(crate) children: BTreeMap<PathId, BTreeMap<String, Option<Timestamp>>>,
    /// The whole root (apps and groups) passed `validate_root` and has every app's ancestors
    /// stored as groups, so a deployment need only check what it changes. Cleared by loading.
    root_checked: bool,
    /// One offer per registered agent, sorted by agent id, kept between launch passes so that
    /// a pass resets only the free resources the matching takes from: see
    /// [`LeaderState::take_offers`]. An agent's registration empties it.
    offer_buf: Vec<Offer>,
    /// Beside each offer of `offer_buf`: the agent's free port ranges as last worked out, and
    /// the [`crate::index::Usage::ports_changed`] they were worked out at.
    offer_ports: Vec<(u64, Vec<(u32, u32)>)>,
}

fn to_bytes<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

impl LeaderState {
    pub fn new(tuning: Tuning, now: Timestamp) -> Self {
        Self {
            tuning,
            elected_at: now,
            apps: BTreeMap::new(),
            versions: HashMap::new(),
            instances: HashMap::new(),
            by_app: HashMap::new(),
            deployments: BTreeMap::new(),
            restarts: HashMap::new(),
            agents: HashMap::new(),
            backoffs: HashMap::new(),
            task_failures: HashMap::new(),
            rejects: HashMap::new(),
            last_version: Timestamp(0),
            ready: HashMap::new(),
            readiness_results: HashMap::new(),
            groups: BTreeMap::new(),
            group_versions: HashMap::new(),
            idx: Default::default(),
            root_cache: None,
            children: BTreeMap::new(),
            root_checked: false,
            offer_buf: Vec::new(),
            offer_ports: Vec::new(),
        }
    }

    // ---------------------------------------------------------------------------------------
    // Loading
    // ---------------------------------------------------------------------------------------

    pub fn load_app(&mut self, app: App, versions: Vec<Timestamp>) {
        self.last_version = self.last_version.max(app.version.unwrap_or_default());
        self.idx.dirty_apps.insert(app.id.clone());
        self.versions.insert(app.id.clone(), versions);
        self.set_app(Arc::new(app));
        self.root_cache = None;
        self.root_checked = false;
    }

    /// Stores `app` in `apps` and `children`.
    fn set_app(&mut self, app: Arc<App>) {
        self.children
            .entry(app.id.parent())
            .or_default()
            .insert(app.id.to_string(), app.version);
        self.apps.insert(app.id.clone(), app);
    }

    fn remove_app(&mut self, id: &PathId) {
        let parent = id.parent();
        if let Some(apps) = self.children.get_mut(&parent) {
            apps.remove(&id.to_string());
            if apps.is_empty() {
                self.children.remove(&parent);
            }
        }
        self.apps.remove(id);
    }

    /// Loading changed the groups: the next deployment checks the whole root again.
    pub(crate) fn groups_loaded(&mut self) {
        self.root_checked = false;
    }

    /// [`LeaderState::load_instance`] of every instance of `instances`, by id. Taken whole when
    /// nothing is loaded yet, rather than moved one by one into a map of their own.
    pub fn load_instances(&mut self, instances: HashMap<InstanceId, Instance>) {
        if !self.instances.is_empty() || instances.iter().any(|(id, i)| *id != i.id) {
            self.instances.reserve(instances.len());
            for i in instances.into_values() {
                self.load_instance(i);
            }
            return;
        }
        self.instances = instances;
        // The same records as one `load_instance` after another, made by two threads: one
        // fills `by_app`, the other the index.
        let (instances, apps, by_app, idx) =
            (&self.instances, &self.apps, &mut self.by_app, &mut self.idx);
        std::thread::scope(|threads| {
            threads.spawn(|| {
                for i in instances.values() {
                    Self::by_app_loaded(by_app, i);
                }
            });
            for i in instances.values() {
                idx.add(i, apps.get(&i.app_id).map(|a| a.as_ref()), None);
            }
        });
    }

    pub fn load_instance(&mut self, i: Instance) {
        Self::by_app_loaded(&mut self.by_app, &i);
        self.idx
            .add(&i, self.apps.get(&i.app_id).map(|a| a.as_ref()), None);
        self.instances.insert(i.id.clone(), i);
    }

    fn by_app_loaded(by_app: &mut HashMap<PathId, BTreeSet<InstanceId>>, i: &Instance) {
        match by_app.get_mut(&i.app_id) {
            Some(ids) => {
                ids.insert(i.id.clone());
            }
            None => {
                by_app.insert(i.app_id.clone(), BTreeSet::from([i.id.clone()]));
            }
        }
    }

    pub fn load_deployment(&mut self, plan: DeploymentPlan) {
        self.last_version = self.last_version.max(plan.version);
        self.deployments.insert(plan.id.clone(), plan);
    }

    pub fn load_task_failure(&mut self, app: PathId, failure: Value) {
        self.task_failures.insert(app, failure);
    }

    // ---------------------------------------------------------------------------------------
    // Instances
    // ---------------------------------------------------------------------------------------

    pub(crate) fn put_instance(&mut self, i: Instance, fx: &mut Effects) {
        fx.batch
            .put(collections::INSTANCES, i.id.0.clone(), to_bytes(&i));
        self.by_app
            .entry(i.app_id.clone())
            .or_default()
            .insert(i.id.clone());
        let app = self.apps.get(&i.app_id).cloned();
        match self.instances.get(&i.id) {
            Some(old) => self.idx.replace(old, &i, app.as_deref()),
            None => self.idx.add(&i, app.as_deref(), None),
        }
        self.instances.insert(i.id.clone(), i);
    }

    pub(crate) fn expunge(&mut self, id: &InstanceId, fx: &mut Effects) {
        if let Some(i) = self.instances.remove(id) {
            if let Some(set) = self.by_app.get_mut(&i.app_id) {
                set.remove(id);
                if set.is_empty() {
                    self.by_app.remove(&i.app_id);
                }
            }
            self.idx.remove(&i);
            fx.batch.delete(collections::INSTANCES, id.0.clone());
            if i.resident && i.goal != Goal::Running {
                if let Some(agent) = i.agent_id() {
                    fx.command(agent, AgentCommand::DestroyVolumes(i.id.0.clone()));
                }
            }
        }
    }

    /// Instances whose task is Running, and Staging or Starting.
    pub fn condition_counts(&self) -> (usize, usize) {
        (self.idx.running, self.idx.staged)
    }

    pub fn app_instances(&self, app: &PathId) -> Vec<&Instance> {
        self.by_app
            .get(app)
            .map(|ids| ids.iter().filter_map(|id| self.instances.get(id)).collect())
            .unwrap_or_default()
    }

    fn schedule(
        &mut self,
        app: &App,
        count: usize,
        now: Timestamp,
        fx: &mut Effects,
    ) -> Vec<InstanceId> {
        let room = SCHEDULE_PER_PASS.saturating_sub(fx.scheduled);
        if count > room {
            fx.more = true;
        }
        let count = count.min(room);
        fx.scheduled += count;
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let mut i = Instance::scheduled(&app.id, app.config_version(), now);
            i.resident = app.has_persistent_volumes();
            ids.push(i.id.clone());
            fx.event_json(events::instance_changed_json(now, &i));
            self.put_instance(i, fx);
        }
        ids
    }

    /// Sets the goal to Decommissioned and kills the task (or forgets an unlaunched instance).
    fn decommission(&mut self, id: &InstanceId, now: Timestamp, fx: &mut Effects) {
        let Some(mut i) = self.instances.get(id).cloned() else {
            return;
        };
        let grace = self
            .apps
            .get(&i.app_id)
            .map_or(3_000, |a| a.kill_grace_period_ms());
        i.goal = Goal::Decommissioned;
        if !i.is_launched() || i.condition.is_terminal() || i.condition == Condition::Scheduled {
            fx.event_json(events::instance_changed_json(now, &i));
            self.expunge(id, fx);
            return;
        }
        if let Some(agent) = i.agent_id().map(str::to_string) {
            fx.command(
                &agent,
                AgentCommand::Kill {
                    task_id: i.task_id(),
                    grace_ms: grace,
                },
            );
        }
        if matches!(i.condition, Condition::UnreachableInactive) {
            fx.event_json(events::instance_changed_json(now, &i));
            self.expunge(id, fx);
            return;
        }
        fx.event_json(events::instance_changed_json(now, &i));
        self.put_instance(i, fx);
    }

    /// Gives a resident instance the new configuration version and stops its task; once the task
    /// has ended it is relaunched in place (see `replace_failed`).
    fn upgrade_in_place(
        &mut self,
        id: &InstanceId,
        version: Timestamp,
        now: Timestamp,
        fx: &mut Effects,
    ) {
        let Some(mut i) = self.instances.get(id).cloned() else {
            return;
        };
        i.app_version = version;
        fx.event_json(events::instance_changed_json(now, &i));
        self.put_instance(i, fx);
        self.kill_task(id, fx);
    }

    /// Kills a task but keeps its goal: it will be replaced.
    fn kill_task(&mut self, id: &InstanceId, fx: &mut Effects) {
        let Some(i) = self.instances.get(id) else {
            return;
        };
        let grace = self
            .apps
            .get(&i.app_id)
            .map_or(3_000, |a| a.kill_grace_period_ms());
        if let Some(agent) = i.agent_id() {
            if i.condition.is_active() {
                fx.command(
                    agent,
                    AgentCommand::Kill {
                        task_id: i.task_id(),
                        grace_ms: grace,
                    },
                );
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Agents
    // ---------------------------------------------------------------------------------------

    /// An agent (re)registered with the tasks it runs.
    pub fn agent_registered(
        &mut self,
        info: AgentInfo,
        session: u64,
        tasks: Vec<AgentStatus>,
        now: Timestamp,
    ) -> Effects {
        let mut fx = Effects::default();
        let agent_id = info.agent_id.clone();
        fx.batch.put(
            collections::AGENTS,
            agent_id.clone(),
            to_bytes(&info.record(true, now)),
        );
        self.offer_buf.clear();
        self.agents.insert(
            agent_id.clone(),
            AgentEntry {
                info,
                session: Some(session),
                last_seen: now,
            },
        );
        let reported: BTreeSet<InstanceId> = tasks
            .iter()
            .filter_map(|t| parse_task_id(&t.task_id).map(|p| p.instance_id))
            .collect();
        for t in tasks {
            fx.append(self.status(&agent_id, t, now));
        }
        // Instances the leader placed on this agent that the agent does not know are gone.
        let missing: Vec<InstanceId> = self
            .idx
            .by_agent
            .get(&agent_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.instances.get(id))
            .filter(|i| {
                i.agent_id() == Some(agent_id.as_str())
                    && i.condition.is_active()
                    && !reported.contains(&i.id)
            })
            .map(|i| i.id.clone())
            .collect();
        for id in missing {
            let status = AgentStatus {
                task_id: self
                    .instances
                    .get(&id)
                    .map(Instance::task_id)
                    .unwrap_or_default(),
                condition: Condition::Gone,
                terminal: true,
                message: "the agent does not know this task".into(),
                reason: "REASON_RECONCILIATION".into(),
                timestamp: now,
                ports: Vec::new(),
                ip_addresses: Vec::new(),
                healthy: None,
                exit_code: None,
            };
            fx.append(self.status(&agent_id, status, now));
        }
        fx
    }

    pub fn agent_seen(&mut self, agent_id: &str, now: Timestamp) {
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.last_seen = now;
        }
    }

    pub fn agent_disconnected(&mut self, agent_id: &str, session: u64, now: Timestamp) -> Effects {
        let mut fx = Effects::default();
        if let Some(a) = self.agents.get_mut(agent_id) {
            if a.session == Some(session) {
                a.session = None;
                fx.batch.put(
                    collections::AGENTS,
                    agent_id.to_string(),
                    to_bytes(&a.info.record(false, now)),
                );
            }
        }
        fx
    }

    pub fn agent_session(&self, agent_id: &str) -> Option<u64> {
        self.agents.get(agent_id).and_then(|a| a.session)
    }

    /// Heard from within the agent timeout: its tasks count as reachable, even while its
    /// session is being re-established.
    fn agent_is_reachable(&self, agent_id: &str, now: Timestamp) -> bool {
        self.agents.get(agent_id).is_some_and(|a| {
            now.seconds_since(a.last_seen) < self.tuning.agent_timeout.as_secs_f64()
        })
    }

    /// Attached and reachable: may be offered new tasks.
    fn agent_is_up(&self, agent_id: &str, now: Timestamp) -> bool {
        self.agents
            .get(agent_id)
            .is_some_and(|a| a.session.is_some())
            && self.agent_is_reachable(agent_id, now)
    }
    // ---------------------------------------------------------------------------------------
    // Status updates
    // ---------------------------------------------------------------------------------------

    /// Applies one task status from `agent_id`.
    pub fn status(&mut self, agent_id: &str, s: AgentStatus, now: Timestamp) -> Effects {
        let mut fx = Effects::default();
        self.agent_seen(agent_id, now);
        let Some(parsed) = parse_task_id(&s.task_id) else {
            if !s.terminal {
                fx.command(
                    agent_id,
                    AgentCommand::Kill {
                        task_id: s.task_id.clone(),
                        grace_ms: 0,
                    },
                );
            }
            return fx;
        };
        let known = self
            .instances
            .get(&parsed.instance_id)
            .is_some_and(|i| i.task_id() == s.task_id);
        if !known {
            if s.terminal {
                fx.event(events::unknown_instance_terminated(
                    now,
                    &parsed.instance_id.0,
                    &parsed.app_id,
                    s.condition.name(),
                ));
                fx.command(agent_id, AgentCommand::Acknowledge(vec![s.task_id]));
            } else {
                // Nobody wants this task (expunged while its agent was away, or a leftover).
                fx.command(
                    agent_id,
                    AgentCommand::Kill {
                        task_id: s.task_id,
                        grace_ms: 0,
                    },
                );
            }
            return fx;
        }
        let Some(mut i) = self.instances.get(&parsed.instance_id).cloned() else {
            return fx;
        };
        let changed = i.condition != s.condition;
        let was_active = i.condition.is_active();
        i.condition = s.condition;
        if changed {
            i.since = now;
        }
        if s.condition == Condition::Running && i.started_at.is_none() {
            i.started_at = Some(s.timestamp.max(i.staged_at.unwrap_or_default()));
        }
        if !s.ports.is_empty() {
            i.host_ports = s.ports.clone();
        }
        if !s.ip_addresses.is_empty() {
            i.ip_addresses = s.ip_addresses.clone();
        }
        i.message = s.message.clone();
        i.exit_code = s.exit_code;
        if s.condition == Condition::Running {
            i.unreachable_since = None;
        }
        if let Some(h) = s.healthy {
            if i.healthy != Some(h) {
                i.healthy = Some(h);
                fx.event(events::instance_health_changed(now, &i));
            }
        }
        if changed {
            fx.event_json(events::status_update_json(now, &i));
            fx.event_json(events::instance_changed_json(now, &i));
        }
        if let Some(app) = self.apps.get(&i.app_id).cloned() {
            if changed && s.condition.counts_as_failure() && i.goal == Goal::Running && was_active {
                let next = backoff::on_failure(self.backoffs.get(&app.id), &app, now);
                self.backoffs.insert(app.id.clone(), next);
            } else if changed
                && matches!(
                    s.condition,
                    Condition::Staging | Condition::Starting | Condition::Running
                )
            {
                if let Some(b) = self.backoffs.get_mut(&app.id) {
                    b.reference = now;
                }
            }
            if changed && s.condition.is_failure_for_record() {
                let failure = json!({
                    "appId": app.id.to_string(),
                    "host": i.placement.as_ref().map_or("", |p| p.hostname.as_str()),
                    "message": s.message,
                    "state": s.condition.mesos_state(),
                    "taskId": s.task_id,
                    "timestamp": now,
                    "version": i.app_version,
                    "slaveId": agent_id,
                });
                fx.batch.put(
                    collections::TASK_FAILURES,
                    app.id.to_string(),
                    to_bytes(&failure),
                );
                self.task_failures.insert(app.id.clone(), failure);
            }
        }
        if s.terminal {
            fx.command(agent_id, AgentCommand::Acknowledge(vec![s.task_id.clone()]));
            if i.goal != Goal::Running {
                self.expunge(&i.id, &mut fx);
                return fx;
            }
        }
        // A status that changes nothing (an agent re-registering with its running tasks after a
        // failover, a repeated report) is neither written nor indexed again.
        if self.instances.get(&i.id) != Some(&i) {
            self.put_instance(i, &mut fx);
        }
        fx
    }

    // ---------------------------------------------------------------------------------------
    // Changes from the API
    // ---------------------------------------------------------------------------------------

    fn next_version(&mut self, now: Timestamp) -> Timestamp {
        let v = if now > self.last_version {
            now
        } else {
            Timestamp(self.last_version.0 + 1)
        };
        self.last_version = v;
        v
    }

    fn deployments_touching<'a>(
        &'a self,
        apps: impl Iterator<Item = &'a PathId> + Clone,
    ) -> Vec<String> {
        self.deployments
            .values()
            .filter(|d| apps.clone().any(|a| d.touches(a)))
            .map(|d| d.id.clone())
            .collect()
    }

    /// Applies changes to the root and starts the deployment they make.
    pub fn deploy(
        &mut self,
        changes: Vec<Change>,
        force: bool,
        origin: &Origin,
        sentenced: BTreeMap<PathId, Vec<InstanceId>>,
        now: Timestamp,
    ) -> Result<(Deployed, Effects), ApiError> {
        self.deploy_with(changes, force, false, origin, sentenced, now)
    }

    /// [`LeaderState::deploy`], or with `dry_run` only the plan (nothing changes).
    pub fn deploy_with(
        &mut self,
        changes: Vec<Change>,
        force: bool,
        dry_run: bool,
        origin: &Origin,
        sentenced: BTreeMap<PathId, Vec<InstanceId>>,
        now: Timestamp,
    ) -> Result<(Deployed, Effects), ApiError> {
        let t = if dry_run { now } else { self.next_version(now) };
        let mut draft = Draft::default();
        let root = PathId::root();
        for change in changes {
            match change {
                Change::Create(json) => {
                    let app = app_from_value(json, &root, None)?;
                    if draft.app(self, &app.id).is_some() {
                        return Err(ApiError::app_exists(&app.id));
                    }
                    draft.created = true;
                    draft.posted.push(app.id.clone());
                    draft.apps.insert(app.id.clone(), Some(app));
                }
                Change::Put(json) => {
                    let app = app_from_value(json, &root, None)?;
                    if draft.app(self, &app.id).is_none() {
                        draft.created = true;
                    }
                    draft.posted.push(app.id.clone());
                    draft.apps.insert(app.id.clone(), Some(app));
                }
                Change::Patch {
                    app_id,
                    json,
                    create_if_missing,
                } => {
                    let Some(obj) = json.as_object() else {
                        return Err(ApiError::json_type(
                            "/".into(),
                            "error.expected.jsobject".into(),
                        ));
                    };
                    let app = match draft.app(self, &app_id) {
                        Some(existing) => {
                            app_from_value(merge_patch(&existing, obj), &root, Some(&app_id))?
                        }
                        None if create_if_missing => {
                            draft.created = true;
                            app_from_value(json.clone(), &root, Some(&app_id))?
                        }
                        None => return Err(ApiError::app_not_found(&app_id)),
                    };
                    draft.posted.push(app.id.clone());
                    draft.apps.insert(app_id, Some(app));
                }
                Change::Remove(id) => {
                    if draft.app(self, &id).is_none() {
                        return Err(ApiError::app_not_found(&id));
                    }
                    draft.apps.insert(id, None);
                }
                Change::Restart(id) => {
                    let Some(app) = draft.app(self, &id) else {
                        return Err(ApiError::app_not_found(&id));
                    };
                    draft.restarts.insert(id.clone());
                    draft.apps.insert(id, Some(app));
                }
                Change::Restore {
                    app_id,
                    mut definition,
                } => {
                    if draft.app(self, &app_id).is_none() {
                        return Err(ApiError::app_not_found(&app_id));
                    }
                    definition.id = app_id.clone();
                    definition.version = None;
                    definition.version_info = None;
                    draft.posted.push(app_id.clone());
                    draft.apps.insert(app_id, Some(definition));
                }
                Change::GroupUpdate {
                    path,
                    update,
                    create_only,
                } => self.apply_group_update(&mut draft, &path, update, create_only, t)?,
                Change::GroupRemove(path) => self.apply_group_remove(&mut draft, &path)?,
                Change::GroupScale { path, factor } => {
                    self.apply_group_scale(&mut draft, &path, factor)?
                }
                Change::GroupAttributes { path, enforce_role } => {
                    self.apply_group_attributes(&mut draft, &path, enforce_role, t)?
                }
            }
        }
        let touched: Vec<PathId> = draft.apps.keys().cloned().collect();
        let mut root = match self.root_cache.take() {
            Some(r) if r.len() == self.apps.len() => r,
            _ => crate::root::Root::new(self.apps.values().map(|a| (**a).clone())),
        };
        let result = self.deploy_draft(draft, &mut root, force, dry_run, origin, sentenced, now, t);
        // Back in step with `apps`, whether the draft was applied or refused.
        for id in touched {
            match self.apps.get(&id) {
                Some(a) => root.insert(id, (**a).clone()),
                None => root.remove(&id),
            }
        }
        self.root_cache = Some(root);
        result
    }

    /// The second half of [`LeaderState::deploy_with`]: checks `draft` against the whole new
    /// root and applies it. `new_root` holds every app as `apps` does on entry; it is left with
    /// the draft's apps changed, which the caller sets back in step with `apps`.
    #[allow(clippy::too_many_arguments)]
    fn deploy_draft(
        &mut self,
        draft: Draft,
        new_root: &mut crate::root::Root,
        force: bool,
        dry_run: bool,
        origin: &Origin,
        sentenced: BTreeMap<PathId, Vec<InstanceId>>,
        now: Timestamp,
        t: Timestamp,
    ) -> Result<(Deployed, Effects), ApiError> {
        let Draft {
            apps: mut target,
            groups: target_groups,
            created,
            restarts,
            posted,
        } = draft;

        // Versions and service ports against the whole new root.
        for (id, app) in &target {
            match app {
                Some(a) => {
                    new_root.insert(id.clone(), a.clone());
                }
                None => {
                    new_root.remove(id);
                }
            }
        }
        for (id, app) in target.iter_mut() {
            let Some(app) = app.as_mut() else { continue };
            let old = self.apps.get(id).map(|a| &**a);
            stamp(old, app, t, restarts.contains(id));
            // The root's ports include the app's own as given, as `assign_service_ports` has it.
            assign_service_ports_in(|p| new_root.port_in_use(p), old, app)?;
            new_root.insert(id.clone(), app.clone());
        }
        let mut new_metas = self.groups.clone();
        for (id, meta) in &target_groups {
            match meta {
                Some(m) => {
                    new_metas.insert(id.clone(), m.clone());
                }
                None => {
                    new_metas.remove(id);
                }
            }
        }
        let group_deps: BTreeMap<PathId, Vec<PathId>> = new_metas
            .iter()
            .map(|(k, m)| (k.clone(), m.dependencies.clone()))
            .collect();
        // No dependency anywhere: no cycle, and every app at depth 1 in the plan.
        let dependencies =
            new_root.has_dependencies() || group_deps.values().any(|d| !d.is_empty());
        if self.root_checked {
            validate_changes(
                new_root,
                &new_metas,
                &group_deps,
                dependencies,
                target.keys(),
                target_groups.keys(),
            )?;
        } else {
            validate_root(new_root.apps(), &new_metas, &group_deps)?;
        }

        // The plan over the affected apps.
        let original: BTreeMap<PathId, App> = target
            .keys()
            .filter_map(|id| self.apps.get(id).map(|a| (id.clone(), (**a).clone())))
            .collect();
        let target_apps: BTreeMap<PathId, App> = target
            .iter()
            .filter_map(|(id, a)| a.clone().map(|a| (id.clone(), a)))
            .collect();
        // Dependencies order the whole new root, so pass every app for depth computation.
        let mut plan = if dependencies {
            compute_plan(
                uuid::Uuid::new_v4().to_string(),
                t,
                &original,
                &target_apps,
                new_root.apps(),
                &group_deps,
            )
        } else {
            compute_plan_by_depth(
                uuid::Uuid::new_v4().to_string(),
                t,
                &original,
                &target_apps,
                |_| 1,
            )
        };
        for step in &mut plan.steps {
            for action in step.iter_mut() {
                if let Some(s) = sentenced.get(&action.app) {
                    action.sentenced = s.clone();
                }
            }
        }
        // A kill-and-scale whose instance count did not change still must kill.
        for (app, ids) in &sentenced {
            if !plan.steps.iter().flatten().any(|a| &a.app == app) {
                let mut a = Action::new(ActionKind::ScaleApplication, app);
                a.sentenced = ids.clone();
                plan.steps.push(vec![a]);
                if let Some(x) = target_apps.get(app) {
                    plan.target.insert(app.clone(), x.clone());
                }
                if let Some(x) = original.get(app) {
                    plan.original.insert(app.clone(), x.clone());
                }
            }
        }
        if dry_run {
            let deployed = Deployed {
                deployment_id: String::new(),
                version: t,
                apps: Vec::new(),
                created,
                plan: Some(plan),
            };
            return Ok((deployed, Effects::default()));
        }

        let mut fx = Effects::default();
        let affected = plan.affected_apps();
        let conflicts = self.deployments_touching(affected.iter());
        if !conflicts.is_empty() {
            if !force {
                fx.event(events::deployment_failed(
                    now,
                    &plan,
                    "App is locked by one or more deployments.",
                ));
                return Err(ApiError::locked(&conflicts));
            }
            for id in conflicts {
                self.cancel_in_place(&id, "The upgrade has been cancelled", now, &mut fx);
            }
        }
        if self.deployments.len() >= MAX_RUNNING_DEPLOYMENTS {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "Max number ({MAX_RUNNING_DEPLOYMENTS}) of running deployments is achieved. Wait for existing deployments to complete or cancel one using force=true parameter."
                ),
            ));
        }

        // Store the new root.
        let mut changed_paths: Vec<PathId> = Vec::new();
        let mut stored_apps = Vec::new();
        for (id, app) in target {
            match app {
                Some(app) => {
                    let unchanged = self.apps.get(&id).is_some_and(|old| **old == app);
                    if !unchanged {
                        let key = app.version.unwrap_or(t).to_string();
                        fx.batch
                            .put(collections::APPS, id.to_string(), to_bytes(&app));
                        fx.batch.put(
                            collections::app_versions(&id.to_string()),
                            key,
                            to_bytes(&app),
                        );
                        let versions = self.versions.entry(id.clone()).or_default();
                        versions.push(app.version.unwrap_or(t));
                        while versions.len() > MAX_VERSIONS {
                            let old = versions.remove(0);
                            fx.batch.delete(
                                collections::app_versions(&id.to_string()),
                                old.to_string(),
                            );
                        }
                        changed_paths.push(id.clone());
                    }
                    if posted.contains(&id) {
                        fx.event(events::api_post(now, &origin.client_ip, &origin.uri, &app));
                    }
                    stored_apps.push(app.clone());
                    self.set_app(Arc::new(app));
                }
                None => {
                    if self.apps.contains_key(&id) {
                        changed_paths.push(id.clone());
                    }
                    fx.batch.delete(collections::APPS, id.to_string());
                    fx.batch
                        .drop_collection(collections::app_versions(&id.to_string()));
                    fx.batch.delete(collections::TASK_FAILURES, id.to_string());
                    self.remove_app(&id);
                    self.versions.remove(&id);
                    self.task_failures.remove(&id);
                }
            }
        }
        // Once the whole root was checked, only the apps changed here can lack an ancestor
        // (unless a group was removed).
        let whole = !self.root_checked || target_groups.values().any(Option::is_none);
        let placed_apps: Vec<PathId> = if whole {
            new_root.apps().keys().cloned().collect()
        } else {
            changed_paths
                .iter()
                .filter(|id| new_root.apps().contains_key(*id))
                .cloned()
                .collect()
        };
        for (id, meta) in target_groups {
            changed_paths.push(id.child("_"));
            match meta {
                Some(m) => {
                    fx.batch
                        .put(collections::GROUPS, id.to_string(), to_bytes(&m));
                    self.groups.insert(id, m);
                }
                None => {
                    fx.batch.delete(collections::GROUPS, id.to_string());
                    fx.batch
                        .drop_collection(collections::group_versions(&id.to_string()));
                    self.group_versions.remove(&id);
                    self.groups.remove(&id);
                }
            }
        }
        // Every app's ancestors exist as groups.
        for id in &placed_apps {
            for g in id.ancestors().into_iter().skip(1) {
                if let std::collections::btree_map::Entry::Vacant(e) = self.groups.entry(g) {
                    let m = GroupMeta::new(e.key().clone(), t);
                    fx.batch
                        .put(collections::GROUPS, e.key().to_string(), to_bytes(&m));
                    e.insert(m);
                }
            }
        }
        self.write_manifests(&changed_paths, t, &mut fx);
        let group = common_group(
            affected.iter().chain(
                changed_paths
                    .iter()
                    .map(|p| p.parent())
                    .collect::<Vec<_>>()
                    .iter(),
            ),
        );
        fx.event(events::group_change_success(now, &group, t));
        fx.batch
            .put(collections::DEPLOYMENTS, plan.id.clone(), to_bytes(&plan));
        let deployed = Deployed {
            deployment_id: plan.id.clone(),
            version: t,
            apps: stored_apps,
            created,
            plan: None,
        };
        self.deployments.insert(plan.id.clone(), plan);
        self.root_checked = true;
        Ok((deployed, fx))
    }

    /// Stops a deployment where it is (no rollback).
    fn cancel_in_place(&mut self, id: &str, reason: &str, now: Timestamp, fx: &mut Effects) {
        if let Some(plan) = self.deployments.remove(id) {
            self.restarts.retain(|(d, _), _| d != id);
            fx.batch.delete(collections::DEPLOYMENTS, id.to_string());
            fx.event(events::deployment_failed(now, &plan, reason));
        }
    }

    /// `DELETE /v2/deployments/{id}`: with `force`, stop in place; otherwise roll back by a new
    /// deployment (reference §5.8).
    pub fn cancel_deployment(
        &mut self,
        id: &str,
        force: bool,
        origin: &Origin,
        now: Timestamp,
    ) -> Result<(Option<Deployed>, Effects), ApiError> {
        let Some(plan) = self.deployments.get(id).cloned() else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("DeploymentPlan {id} does not exist"),
            ));
        };
        if force {
            let mut fx = Effects::default();
            self.cancel_in_place(id, "The upgrade has been cancelled", now, &mut fx);
            return Ok((None, fx));
        }
        let mut changes = Vec::new();
        for app in plan.affected_apps() {
            match (plan.original.get(&app), plan.target.get(&app)) {
                (None, Some(_)) => {
                    if self.apps.contains_key(&app) {
                        changes.push(Change::Remove(app));
                    }
                }
                (Some(orig), _) => changes.push(if self.apps.contains_key(&app) {
                    Change::Restore {
                        app_id: app,
                        definition: orig.clone(),
                    }
                } else {
                    let mut a = orig.clone();
                    a.version = None;
                    a.version_info = None;
                    Change::Put(a.to_json())
                }),
                (None, None) => {}
            }
        }
        let (deployed, fx) = self.deploy(changes, true, origin, BTreeMap::new(), now)?;
        Ok((Some(deployed), fx))
    }

    /// Kills tasks (reference §1.1 `DELETE /v2/apps/{id}/tasks`, §1.2 `POST /v2/tasks/delete`).
    #[allow(clippy::too_many_arguments)]
    pub fn kill_tasks(
        &mut self,
        task_ids: &[String],
        app_ids: &[PathId],
        host: Option<&str>,
        scale: bool,
        wipe: bool,
        force: bool,
        origin: &Origin,
        now: Timestamp,
    ) -> Result<(Vec<Value>, Option<Deployed>, Effects), ApiError> {
        if scale && wipe {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "You cannot use scale and wipe at the same time.",
            ));
        }
        let mut selected: Vec<InstanceId> = Vec::new();
        for app in app_ids {
            if !self.apps.contains_key(app) {
                return Err(ApiError::app_not_found(app));
            }
            for i in self.app_instances(app) {
                let on_host = match host {
                    None | Some("*") => true,
                    Some(h) => i.placement.as_ref().is_some_and(|p| p.hostname == h),
                };
                if on_host && i.condition.is_active() {
                    selected.push(i.id.clone());
                }
            }
        }
        for t in task_ids {
            let found = parse_task_id(t)
                .map(|p| p.instance_id)
                .filter(|id| self.instances.contains_key(id));
            match found {
                Some(id) => selected.push(id),
                None if task_ids.len() == 1 && app_ids.is_empty() => {
                    return Err(ApiError::new(
                        ErrorCode::NotFound,
                        format!("Task '{t}' does not exist"),
                    ));
                }
                None => {}
            }
        }
        selected.sort();
        selected.dedup();
        let killed: Vec<Value> = selected
            .iter()
            .filter_map(|id| self.instances.get(id))
            .map(|i| task_json(i, &[]))
            .collect();
        if scale {
            let mut per_app: BTreeMap<PathId, Vec<InstanceId>> = BTreeMap::new();
            for id in &selected {
                if let Some(i) = self.instances.get(id) {
                    if i.goal == Goal::Running && i.condition != Condition::Killing {
                        per_app
                            .entry(i.app_id.clone())
                            .or_default()
                            .push(id.clone());
                    }
                }
            }
            let changes = per_app
                .iter()
                .filter_map(|(app, ids)| {
                    let a = self.apps.get(app)?;
                    Some(Change::Patch {
                        app_id: app.clone(),
                        json: json!({ "instances": (a.instances - ids.len() as i64).max(0) }),
                        create_if_missing: false,
                    })
                })
                .collect();
            let (deployed, fx) = self.deploy(changes, force, origin, per_app, now)?;
            return Ok((killed, Some(deployed), fx));
        }
        let mut fx = Effects::default();
        for id in &selected {
            if wipe {
                self.decommission(id, now, &mut fx);
            } else {
                self.kill_task(id, &mut fx);
            }
        }
        Ok((killed, None, fx))
    }

    pub fn reset_delay(&mut self, app: &PathId) -> Result<(), ApiError> {
        let queued = self
            .app_instances(app)
            .iter()
            .any(|i| i.condition == Condition::Scheduled && i.goal == Goal::Running);
        if !queued {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("Application {app} not found in tasks queue."),
            ));
        }
        self.backoffs.remove(app);
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // The reconcile pass: deployments, replacements, unreachable agents, launches
    // ---------------------------------------------------------------------------------------

    /// Makes the next pass check every app's instance count, not only those that changed.
    pub fn mark_all_dirty(&mut self) {
        self.idx.dirty_apps.extend(self.apps.keys().cloned());
    }

    /// Moves observed state towards desired state. Run after every batch of inputs and on a
    /// timer; idempotent.
    pub fn reconcile(&mut self, now: Timestamp) -> Effects {
        let mut fx = Effects::default();
        self.mark_unreachable(now, &mut fx);
        self.advance_deployments(now, &mut fx);
        self.replace_failed(now, &mut fx);
        self.launch(now, &mut fx);
        fx
    }

    fn mark_unreachable(&mut self, now: Timestamp, fx: &mut Effects) {
        let in_grace =
            now.seconds_since(self.elected_at) < self.tuning.reregistration_grace.as_secs_f64();
        let timeout = self.tuning.agent_timeout.as_secs_f64();
        let lost_agents: Vec<&String> = self
            .idx
            .by_agent
            .keys()
            .filter(|agent| match self.agents.get(*agent) {
                // As `agent_is_reachable` has it, without looking the agent up again.
                Some(a) => now.seconds_since(a.last_seen) >= timeout,
                None => !in_grace,
            })
            .collect();
        let candidates: Vec<InstanceId> = lost_agents
            .into_iter()
            .flat_map(|agent| self.idx.by_agent.get(agent).into_iter().flatten())
            .filter_map(|id| self.instances.get(id))
            .filter(|i| {
                i.is_launched()
                    && (i.condition.is_active() || i.condition == Condition::UnreachableInactive)
            })
            .map(|i| i.id.clone())
            .collect();
        for id in candidates {
            let Some(mut i) = self.instances.get(&id).cloned() else {
                continue;
            };
            let strategy = self
                .apps
                .get(&i.app_id)
                .map(|a| a.unreachable())
                .unwrap_or_default();
            if i.goal != Goal::Running {
                // Nobody wants it; the agent kills it when it returns.
                self.expunge(&id, fx);
                continue;
            }
            let since = *i.unreachable_since.get_or_insert(now);
            let elapsed = now.seconds_since(since);
            let next = match strategy {
                stride_core::app::UnreachableStrategy::Disabled => Condition::Unreachable,
                stride_core::app::UnreachableStrategy::Enabled {
                    inactive_after_seconds,
                    expunge_after_seconds,
                } => {
                    if elapsed >= expunge_after_seconds as f64
                        && elapsed >= inactive_after_seconds as f64
                    {
                        fx.event_json(events::instance_changed_json(
                            now,
                            &Instance {
                                condition: Condition::UnreachableInactive,
                                ..i.clone()
                            },
                        ));
                        self.expunge(&id, fx);
                        continue;
                    }
                    if elapsed >= inactive_after_seconds as f64 {
                        Condition::UnreachableInactive
                    } else {
                        Condition::Unreachable
                    }
                }
            };
            if i.condition != next {
                i.condition = next;
                i.since = now;
                fx.event_json(events::instance_changed_json(now, &i));
                self.put_instance(i, fx);
            }
        }
    }

    /// Instances with goal Running whose task ended are replaced by fresh ones (or, for apps in
    /// no deployment, the count is restored to `instances`).
    fn replace_failed(&mut self, now: Timestamp, fx: &mut Effects) {
        let dead: Vec<InstanceId> = self.idx.dead.iter().cloned().collect();
        for id in dead {
            // A resident instance goes back to its agent and its volumes, in place.
            if let Some(i) = self
                .instances
                .get(&id)
                .filter(|i| i.resident && i.placement.is_some())
            {
                let mut again = i.clone();
                again.condition = Condition::Scheduled;
                again.since = now;
                again.staged_at = None;
                again.started_at = None;
                again.host_ports.clear();
                again.healthy = None;
                again.health.clear();
                fx.event_json(events::instance_changed_json(now, &again));
                self.put_instance(again, fx);
                continue;
            }
            if let Some(i) = self.instances.get(&id) {
                let mut gone = i.clone();
                gone.goal = Goal::Decommissioned;
                fx.event_json(events::instance_changed_json(now, &gone));
            }
            self.expunge(&id, fx);
        }
        // Scale check for apps not locked by a deployment.
        let locked: BTreeSet<PathId> = self
            .deployments
            .values()
            .flat_map(|d| d.affected_apps())
            .collect();
        // Only apps whose instances changed since the last check (all of them on a full pass).
        let dirty = std::mem::take(&mut self.idx.dirty_apps);
        let apps: Vec<Arc<App>> = dirty
            .iter()
            .filter(|id| !locked.contains(*id))
            .filter_map(|id| self.apps.get(id).cloned())
            .collect();
        // Locked apps are checked again once their deployment is over.
        self.idx
            .dirty_apps
            .extend(dirty.into_iter().filter(|id| locked.contains(id)));
        for app in apps {
            // At its count nothing is killed or started (`propose_spread` with none sentenced).
            if self.idx.counts(&app.id).toward_scale == app.instances.max(0) as usize {
                continue;
            }
            let insts = self.app_instances(&app.id);
            let p = propose_spread(
                &insts,
                &[],
                app.instances.max(0) as usize,
                app.kill_selection,
                group_by_field(&app),
            );
            for id in p.to_kill {
                self.decommission(&id, now, fx);
            }
            let started = self.schedule(&app, p.to_start, now, fx).len();
            if started < p.to_start {
                // The rest comes in the next pass.
                self.idx.dirty_apps.insert(app.id.clone());
            }
        }
    }

    /// Healthy as deployments count it: Running, alive by its health checks where the app has
    /// any (reference §5.6).
    pub(crate) fn is_healthy(app: &App, i: &Instance) -> bool {
        if i.goal != Goal::Running || i.condition != Condition::Running {
            return false;
        }
        if app.health_checks.is_empty() {
            true
        } else {
            i.healthy == Some(true)
        }
    }

    /// Healthy and, where the app has a readiness check, ready: what lets a deployment move on.
    pub(crate) fn is_healthy_and_ready(&self, app: &App, i: &Instance) -> bool {
        Self::is_healthy(app, i)
            && (app.readiness_checks.is_empty() || self.ready.get(&i.id) == Some(&true))
    }

    /// Starts an action of a deployment step.
    fn start_action(
        &mut self,
        deployment: &str,
        action: &Action,
        now: Timestamp,
        fx: &mut Effects,
    ) {
        match action.kind {
            ActionKind::StartApplication => {}
            ActionKind::StopApplication => {
                let ids: Vec<InstanceId> = self
                    .app_instances(&action.app)
                    .iter()
                    .map(|i| i.id.clone())
                    .collect();
                for id in ids {
                    self.decommission(&id, now, fx);
                }
                self.backoffs.remove(&action.app);
            }
            ActionKind::ScaleApplication => {
                let Some(app) = self.apps.get(&action.app).cloned() else {
                    return;
                };
                let insts = self.app_instances(&app.id);
                let p = propose_spread(
                    &insts,
                    &action.sentenced,
                    app.instances.max(0) as usize,
                    app.kill_selection,
                    group_by_field(&app),
                );
                for id in p.to_kill {
                    self.decommission(&id, now, fx);
                }
                self.schedule(&app, p.to_start, now, fx);
            }
            ActionKind::RestartApplication => {
                let Some(app) = self.apps.get(&action.app).cloned() else {
                    return;
                };
                self.backoffs.remove(&app.id);
                let insts = self.app_instances(&app.id);
                let n = app.instances.max(0) as usize;
                let current = insts.iter().filter(|i| i.goal == Goal::Running).count();
                let healthy = insts.iter().filter(|i| Self::is_healthy(&app, i)).count();
                let u = app.upgrade();
                let s = restart_strategy(
                    n,
                    u.minimum_health_capacity,
                    u.maximum_over_capacity,
                    healthy,
                    current,
                    app.has_persistent_volumes(),
                );
                self.restarts.insert(
                    (deployment.to_string(), app.id.clone()),
                    RestartProgress {
                        kill_now: s.kill_now,
                        max_capacity: s.max_capacity,
                        killed: 0,
                    },
                );
            }
        }
    }

    /// Whether an action is complete, doing its next moves when not.
    fn drive_action(
        &mut self,
        deployment: &str,
        action: &Action,
        now: Timestamp,
        fx: &mut Effects,
    ) -> bool {
        match action.kind {
            ActionKind::StartApplication => true,
            ActionKind::StopApplication => {
                let active = self.idx.counts(&action.app).active > 0;
                if !active {
                    // Anything still listed (unlaunched, unreachable) is forgotten.
                    let rest: Vec<InstanceId> = self
                        .app_instances(&action.app)
                        .iter()
                        .map(|i| i.id.clone())
                        .collect();
                    for id in rest {
                        self.expunge(&id, fx);
                    }
                    fx.event(events::app_terminated(now, &action.app));
                }
                !active
            }
            ActionKind::ScaleApplication => {
                let Some(app) = self.apps.get(&action.app).cloned() else {
                    return true;
                };
                // Read from the index's counts: a pass costs the same however big the app.
                let counts = self.idx.counts(&app.id);
                let want = app.instances.max(0) as usize;
                let running = counts.toward_scale;
                if running < want {
                    self.schedule(&app, want - running, now, fx);
                    return false;
                }
                let healthy = if !app.readiness_checks.is_empty() {
                    self.app_instances(&app.id)
                        .iter()
                        .filter(|i| self.is_healthy_and_ready(&app, i))
                        .count()
                } else if app.health_checks.is_empty() {
                    counts.running
                } else {
                    counts.running_healthy
                };
                healthy >= want && counts.stopping == 0
            }
            ActionKind::RestartApplication => self.drive_restart(deployment, &action.app, now, fx),
        }
    }

    /// One move of a rolling restart (reference §5.5), evaluated from the current instances.
    fn drive_restart(
        &mut self,
        deployment: &str,
        app_id: &PathId,
        now: Timestamp,
        fx: &mut Effects,
    ) -> bool {
        let Some(app) = self.apps.get(app_id).cloned() else {
            return true;
        };
        let key = (deployment.to_string(), app_id.clone());
        let Some(mut progress) = self.restarts.get(&key).cloned() else {
            // Resumed after a failover: start again from what runs now.
            self.start_action(
                deployment,
                &Action::new(ActionKind::RestartApplication, app_id),
                now,
                fx,
            );
            return false;
        };
        let version = app.config_version();
        let n = app.instances.max(0) as usize;
        let insts = self.app_instances(app_id);
        let new_ready = insts
            .iter()
            .filter(|i| i.app_version == version && self.is_healthy_and_ready(&app, i))
            .count();
        let new_started = insts
            .iter()
            .filter(|i| i.app_version == version && i.goal == Goal::Running)
            .count();
        let old_active = insts
            .iter()
            .filter(|i| i.app_version != version && !i.condition.is_terminal())
            .count();
        let mut old_running: Vec<&Instance> = insts
            .iter()
            .copied()
            .filter(|i| i.app_version != version && i.goal == Goal::Running)
            .collect();
        // Unhealthy old instances go first.
        old_running.sort_by_key(|i| (Self::is_healthy(&app, i), i.active_since(), i.id.clone()));
        let want_killed = (progress.kill_now + new_ready).min(progress.killed + old_running.len());
        let to_kill: Vec<InstanceId> = old_running
            .iter()
            .take(want_killed.saturating_sub(progress.killed))
            .map(|i| i.id.clone())
            .collect();
        let start = restart_launch_count(n, progress.max_capacity, old_active, new_started);
        let done = new_ready >= n && old_active == 0 && new_started == n;
        progress.killed += to_kill.len();
        self.restarts.insert(key.clone(), progress);
        for id in to_kill {
            if app.has_persistent_volumes() {
                // Resident instances are upgraded in place: the task stops, and the instance
                // comes back on its agent, with its volumes, as the new version.
                self.upgrade_in_place(&id, version, now, fx);
            } else {
                self.decommission(&id, now, fx);
            }
        }
        if start > 0 {
            self.schedule(&app, start, now, fx);
        }
        // Surplus new instances (a forced deployment left extras) go too.
        if new_started > n {
            let extra: Vec<InstanceId> = self
                .app_instances(app_id)
                .iter()
                .filter(|i| i.app_version == version && i.goal == Goal::Running)
                .map(|i| i.id.clone())
                .take(new_started - n)
                .collect();
            for id in extra {
                self.decommission(&id, now, fx);
            }
        }
        if done {
            self.restarts.remove(&key);
        }
        done
    }

    fn advance_deployments(&mut self, now: Timestamp, fx: &mut Effects) {
        let ids: Vec<String> = self.deployments.keys().cloned().collect();
        for id in ids {
            // Driving a step never changes the stored plans, so a plan is only copied when it
            // moves on.
            while let Some(plan) = self.deployments.get(&id) {
                let step = match plan.current_step {
                    None => {
                        let mut p = plan.clone();
                        p.current_step = Some(0);
                        self.begin_step(p, now, fx);
                        continue;
                    }
                    Some(s) => s,
                };
                if step >= plan.steps.len() {
                    let Some(plan) = self.deployments.remove(&id) else {
                        break;
                    };
                    self.idx.dirty_apps.extend(plan.affected_apps());
                    fx.batch.delete(collections::DEPLOYMENTS, id.clone());
                    fx.event(events::deployment_success(now, &plan));
                    break;
                }
                let actions = plan.steps[step].clone();
                let mut all_done = true;
                for a in &actions {
                    if !self.drive_action(&id, a, now, fx) {
                        all_done = false;
                    }
                }
                if !all_done {
                    break;
                }
                let Some(mut p) = self.deployments.get(&id).cloned() else {
                    break;
                };
                fx.event(events::deployment_step_success(now, &p));
                p.current_step = Some(step + 1);
                self.begin_step(p, now, fx);
            }
        }
    }

    fn begin_step(&mut self, plan: DeploymentPlan, now: Timestamp, fx: &mut Effects) {
        let step = plan.current_step.unwrap_or(0);
        if let Some(actions) = plan.steps.get(step).cloned() {
            fx.event(events::deployment_info(now, &plan));
            for a in &actions {
                self.start_action(&plan.id, a, now, fx);
            }
        }
        fx.batch
            .put(collections::DEPLOYMENTS, plan.id.clone(), to_bytes(&plan));
        self.deployments.insert(plan.id.clone(), plan);
    }

    /// Matches scheduled instances to the agents' free resources and launches them.
    fn launch(&mut self, now: Timestamp, fx: &mut Effects) {
        // The queue is ordered by when each instance was scheduled.
        // A pass considers a bounded share of the queue, and of each app's part of it, so that
        // one huge app neither stalls the leader nor keeps the others waiting.
        let mut per_app: HashMap<&PathId, usize> = HashMap::new();
        let mut waiting: Vec<(InstanceId, Arc<App>)> = Vec::new();
        let mut capped = false;
        for (_, id) in self.idx.pending.iter() {
            if waiting.len() >= LAUNCH_PER_PASS {
                capped = true;
                break;
            }
            let Some(i) = self.instances.get(id) else {
                continue;
            };
            let Some(app) = self.apps.get(&i.app_id) else {
                continue;
            };
            let taken = per_app.entry(&app.id).or_default();
            if *taken >= LAUNCH_PER_APP_PER_PASS {
                capped = true;
                continue;
            }
            if backoff::is_delayed(self.backoffs.get(&app.id), app, now) {
                continue;
            }
            *taken += 1;
            waiting.push((id.clone(), app.clone()));
        }
        if waiting.is_empty() {
            return;
        }
        let (mut offers, kept) = self.take_offers(now);
        if offers.is_empty() {
            if kept {
                self.offer_buf = offers;
            }
            return;
        }
        let waiting_apps: BTreeMap<&PathId, &App> =
            waiting.iter().map(|(_, a)| (&a.id, &**a)).collect();
        // The placed instances of each app's current configuration, lent by the index for the
        // matching (and given back below), so a pass does not copy them.
        let mut placed: HashMap<PathId, Vec<PlacedInstance>> = HashMap::new();
        let mut lent: Vec<(PathId, Timestamp, usize)> = Vec::new();
        for (id, app) in &waiting_apps {
            let Some(versions) = self.idx.placed.get_mut(*id) else {
                continue;
            };
            let current = app.config_version();
            let mut lists = versions.range_mut(current..);
            match (lists.next(), lists.next()) {
                (None, _) => {}
                (Some((version, list)), None) => {
                    lent.push(((*id).clone(), *version, list.items.len()));
                    placed.insert((*id).clone(), std::mem::take(&mut list.items));
                }
                _ => {
                    let all = versions
                        .range(current..)
                        .flat_map(|(_, l)| l.items.iter().cloned())
                        .collect();
                    placed.insert((*id).clone(), all);
                }
            }
        }
        // Resident instances may only go back to the agent that holds their volumes.
        let pinned_to = |id: &InstanceId| -> Option<String> {
            self.instances
                .get(id)
                .filter(|i| i.resident)
                .and_then(|i| i.agent_id().map(str::to_string))
        };
        let mut result = stride_core::matching::MatchResult::default();
        let mut free: Vec<Pending<'_>> = Vec::with_capacity(waiting.len());
        for (id, app) in &waiting {
            let p = Pending {
                instance_id: id.clone(),
                app,
            };
            match pinned_to(id) {
                None => free.push(p),
                Some(agent) => {
                    let Some(ix) = offers.iter().position(|o| o.agent_id == agent) else {
                        continue;
                    };
                    let r =
                        match_offers(&mut offers[ix..=ix], std::slice::from_ref(&p), &mut placed);
                    result.assignments.extend(r.assignments);
                    result.unmatched.extend(r.unmatched);
                }
            }
        }
        let r = match_offers(&mut offers, &free, &mut placed);
        result.assignments.extend(r.assignments);
        result.unmatched.extend(r.unmatched);
        // The matcher only appends what it assigned; those are indexed as they are stored.
        for (id, version, len) in lent {
            let Some(mut items) = placed.remove(&id) else {
                continue;
            };
            items.truncate(len);
            if let Some(list) = self
                .idx
                .placed
                .get_mut(&id)
                .and_then(|v| v.get_mut(&version))
            {
                list.items = items;
            }
        }
        if kept {
            self.offer_buf = offers;
        }
        // Everything tried found a place, so the rest of the queue may too: another pass soon.
        fx.more |= capped && result.unmatched.is_empty();
        let mut launches: BTreeMap<String, Vec<LaunchTask>> = BTreeMap::new();
        for a in result.assignments {
            let Some(mut i) = self.instances.get(&a.instance_id).cloned() else {
                continue;
            };
            let Some(app) = self.apps.get(&a.app_id).cloned() else {
                continue;
            };
            i.incarnation += 1;
            i.condition = Condition::Staging;
            i.since = now;
            i.staged_at = Some(now);
            i.host_ports = a.host_ports.clone();
            i.placement = Some(Placement {
                agent_id: a.agent_id.clone(),
                hostname: a.hostname.clone(),
                attributes: a.attributes.clone(),
            });
            launches
                .entry(a.agent_id.clone())
                .or_default()
                .push(LaunchTask {
                    app,
                    task_id: i.task_id(),
                    hostname: a.hostname.clone(),
                    host_ports: a.host_ports,
                });
            fx.event_json(events::instance_changed_json(now, &i));
            self.put_instance(i, fx);
            self.rejects.remove(&a.app_id);
        }
        for (id, reasons) in result.unmatched {
            self.rejects.insert(id.app_id(), reasons);
        }
        for (agent, tasks) in launches {
            fx.command(&agent, AgentCommand::Launch(tasks));
        }
    }

    /// Each connected agent's free resources: its total less what its active instances hold,
    /// sorted by agent id. Made from `offer_buf`, whose names and attributes are kept between
    /// passes; `true` when what is returned is that buffer, to be given back after the pass.
    fn take_offers(&mut self, now: Timestamp) -> (Vec<Offer>, bool) {
        let mut offers = std::mem::take(&mut self.offer_buf);
        if offers.len() != self.agents.len() {
            let mut infos: Vec<&AgentInfo> = self.agents.values().map(|a| &a.info).collect();
            infos.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
            offers = infos
                .into_iter()
                .map(|a| Offer {
                    agent_id: a.agent_id.clone(),
                    hostname: a.hostname.clone(),
                    cpus: 0.0,
                    mem: 0.0,
                    disk: 0.0,
                    gpus: 0,
                    ports: Vec::new(),
                    attributes: a.attributes.clone(),
                    region: a.region.clone(),
                    zone: a.zone.clone(),
                })
                .collect();
            self.offer_ports = vec![(0, Vec::new()); offers.len()];
        }
        let timeout = self.tuning.agent_timeout.as_secs_f64();
        let mut up = Vec::with_capacity(offers.len());
        for (o, kept) in offers.iter_mut().zip(&mut self.offer_ports) {
            let Some(a) = self.agents.get(&o.agent_id) else {
                up.push(false);
                continue;
            };
            up.push(a.session.is_some() && now.seconds_since(a.last_seen) < timeout);
            let info = &a.info;
            o.cpus = info.cpus;
            o.mem = info.mem;
            o.disk = info.disk;
            o.gpus = info.gpus;
            match self.idx.usage.get(&o.agent_id) {
                Some(used) => {
                    o.cpus -= used.cpus;
                    o.mem -= used.mem;
                    o.disk -= used.disk;
                    o.gpus = o.gpus.saturating_sub(used.gpus);
                    // Counts start at 1: 0 marks ranges never worked out.
                    if kept.0 != used.ports_changed || used.ports_changed == 0 {
                        *kept = (
                            used.ports_changed,
                            crate::index::free_ranges(&info.ports, &used.ports),
                        );
                    }
                    o.ports.clone_from(&kept.1);
                }
                None => {
                    o.ports.clear();
                    o.ports.extend_from_slice(&info.ports);
                }
            }
        }
        if up.iter().all(|u| *u) {
            return (offers, true);
        }
        let some = offers
            .iter()
            .zip(&up)
            .filter(|(_, u)| **u)
            .map(|(o, _)| o.clone())
            .collect();
        self.offer_buf = offers;
        (some, false)
    }

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// `GET /v2/queue` (reference §1.5).
    pub fn queue_json(&self, now: Timestamp) -> Value {
        let mut items = Vec::new();
        for app in self.apps.values() {
            let waiting: Vec<&Instance> = self
                .app_instances(&app.id)
                .into_iter()
                .filter(|i| i.condition == Condition::Scheduled && i.goal == Goal::Running)
                .collect();
            if waiting.is_empty() {
                continue;
            }
            let since = waiting.iter().map(|i| i.since).min().unwrap_or(now);
            let b = self
                .backoffs
                .get(&app.id)
                .filter(|b| b.config_version == app.config_version());
            let time_left = b.map_or(0.0, |b| b.time_left_seconds(now));
            let rejects = self.rejects.get(&app.id).cloned().unwrap_or_default();
            let agents = self
                .agents
                .values()
                .filter(|a| self.agent_is_up(&a.info.agent_id, now))
                .count();
            let mut processed = agents;
            let summary: Vec<Value> = [
                Reject::UnfulfilledRole,
                Reject::UnfulfilledConstraint,
                Reject::InsufficientCpus,
                Reject::InsufficientMemory,
                Reject::InsufficientDisk,
                Reject::InsufficientGpus,
                Reject::InsufficientPorts,
            ]
            .iter()
            .map(|r| {
                let declined = rejects.get(r).copied().unwrap_or(0);
                let v = json!({ "reason": r.name(), "declined": declined, "processed": processed });
                processed = processed.saturating_sub(declined);
                v
            })
            .collect();
            items.push(json!({
                "app": app.to_json(),
                "count": waiting.len(),
                "role": app.role.clone().unwrap_or_else(|| "*".into()),
                "delay": { "timeLeftSeconds": time_left.ceil() as i64, "overdue": time_left <= 0.0 },
                "since": since,
                "processedOffersSummary": {
                    "processedOffersCount": agents,
                    "unusedOffersCount": rejects.values().sum::<usize>().min(agents),
                    "rejectSummaryLastOffers": summary,
                    "rejectSummaryLaunchAttempt": summary,
                },
                "lastUnusedOffers": [],
            }));
        }
        json!({ "queue": items })
    }
}

#[cfg(test)]
impl LeaderState {
    /// Panics unless the counts and placed instances of the index, and the apps by parent,
    /// are what walking every instance and app gives.
    pub(crate) fn check_index(&self) {
        let mut counts: HashMap<PathId, crate::index::AppCounts> = HashMap::new();
        let mut placed: BTreeMap<(PathId, Timestamp), BTreeSet<String>> = BTreeMap::new();
        let (mut running, mut staged) = (0, 0);
        for i in self.instances.values() {
            let c = counts.entry(i.app_id.clone()).or_default();
            let run = i.goal == Goal::Running && i.condition == Condition::Running;
            c.toward_scale += usize::from(i.counts_toward_scale());
            c.active += usize::from(i.condition.is_active());
            c.running += usize::from(run);
            c.running_healthy += usize::from(run && i.healthy == Some(true));
            c.stopping += usize::from(i.goal != Goal::Running && i.condition.is_active());
            running += usize::from(i.condition == Condition::Running);
            staged += usize::from(matches!(
                i.condition,
                Condition::Staging | Condition::Starting
            ));
            if let Some(p) = i.placement.as_ref() {
                if i.condition.is_active() && i.goal == Goal::Running {
                    placed
                        .entry((i.app_id.clone(), i.app_version))
                        .or_default()
                        .insert(format!("{}@{}", i.id, p.agent_id));
                }
            }
        }
        counts.retain(|_, c| *c != crate::index::AppCounts::default());
        assert_eq!(counts, self.idx.counts, "counts per app");
        assert_eq!((running, staged), self.condition_counts(), "fleet counts");
        let indexed: BTreeMap<(PathId, Timestamp), BTreeSet<String>> = self
            .idx
            .placed
            .iter()
            .flat_map(|(app, versions)| {
                versions.iter().map(move |(v, list)| {
                    let ids = list
                        .entries()
                        .map(|(id, p)| format!("{id}@{}", p.agent_id))
                        .collect();
                    ((app.clone(), *v), ids)
                })
            })
            .collect();
        assert_eq!(placed, indexed, "placed instances");
        let mut by_agent: HashMap<String, BTreeSet<InstanceId>> = HashMap::new();
        let mut pending = BTreeSet::new();
        for i in self.instances.values() {
            if let Some(agent) = i.agent_id() {
                by_agent
                    .entry(agent.to_string())
                    .or_default()
                    .insert(i.id.clone());
            }
            if i.goal == Goal::Running && i.condition == Condition::Scheduled {
                pending.insert((i.since, i.id.clone()));
            }
        }
        assert_eq!(by_agent, self.idx.by_agent, "instances by agent");
        assert_eq!(pending, self.idx.pending, "the launch queue");
        let mut children: BTreeMap<PathId, BTreeMap<String, Option<Timestamp>>> = BTreeMap::new();
        for (id, a) in &self.apps {
            children
                .entry(id.parent())
                .or_default()
                .insert(id.to_string(), a.version);
        }
        assert_eq!(children, self.children, "apps by parent");
    }
}

/// The field of the app's first `GROUP_BY` constraint, which scale-down keeps evenly spread.
fn group_by_field(app: &App) -> Option<&str> {
    app.constraints
        .iter()
        .find(|c| c.get(1).is_some_and(|op| op == "GROUP_BY"))
        .and_then(|c| c.first())
        .map(String::as_str)
}

fn root_invalid(e: &str) -> ApiError {
    ApiError::invalid(vec![stride_core::error::Violation {
        path: "/".into(),
        errors: vec![e.to_string()],
    }])
}

const SAME_IDENTIFIER: &str = "Groups and Applications may not have the same identifier.";
const CYCLIC: &str = "Dependency graph has cyclic dependencies.";

/// Rules over the whole root that single apps cannot check.
fn validate_root(
    apps: &BTreeMap<PathId, App>,
    metas: &BTreeMap<PathId, GroupMeta>,
    group_deps: &BTreeMap<PathId, Vec<PathId>>,
) -> Result<(), ApiError> {
    for id in apps.keys() {
        for ancestor in id.ancestors().iter().skip(1) {
            if apps.contains_key(ancestor) {
                return Err(root_invalid(SAME_IDENTIFIER));
            }
        }
        if metas.contains_key(id) {
            return Err(root_invalid(SAME_IDENTIFIER));
        }
    }
    if has_dependency_cycle(apps, group_deps) {
        return Err(root_invalid(CYCLIC));
    }
    Ok(())
}

/// [`validate_root`] for a root that passed it before `apps` and `groups` changed: only a
/// changed app or group can break a rule, and without dependencies there is no cycle. The same
/// answer at the cost of what changed.
fn validate_changes<'a>(
    root: &crate::root::Root,
    metas: &BTreeMap<PathId, GroupMeta>,
    group_deps: &BTreeMap<PathId, Vec<PathId>>,
    dependencies: bool,
    apps: impl Iterator<Item = &'a PathId>,
    groups: impl Iterator<Item = &'a PathId>,
) -> Result<(), ApiError> {
    for id in apps.filter(|id| root.apps().contains_key(*id)) {
        let nested = id
            .ancestors()
            .iter()
            .skip(1)
            .any(|a| root.apps().contains_key(a));
        if nested || metas.contains_key(id) || root.has_app_below(id) {
            return Err(root_invalid(SAME_IDENTIFIER));
        }
    }
    for id in groups.filter(|id| metas.contains_key(*id)) {
        if root.apps().contains_key(id) {
            return Err(root_invalid(SAME_IDENTIFIER));
        }
    }
    if dependencies && has_dependency_cycle(root.apps(), group_deps) {
        return Err(root_invalid(CYCLIC));
    }
    Ok(())
}

/// The deepest group holding every path given (the root when they share none).
fn common_group<'a>(paths: impl Iterator<Item = &'a PathId>) -> PathId {
    let mut common: Option<Vec<String>> = None;
    for p in paths {
        let segs = p.parent().segments().to_vec();
        common = Some(match common {
            None => segs,
            Some(c) => c
                .iter()
                .zip(segs.iter())
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a.clone())
                .collect(),
        });
    }
    PathId::parse(&common.unwrap_or_default().join("/"))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use stride_store::Op;

    pub(super) fn agent(id: &str) -> AgentInfo {
        AgentInfo {
            agent_id: id.into(),
            hostname: format!("{id}.local"),
            cpus: 4.0,
            mem: 4096.0,
            disk: 10000.0,
            gpus: 0,
            ports: vec![(31000, 32000)],
            attributes: vec![],
            region: None,
            zone: None,
            api_address: String::new(),
        }
    }

    pub(super) fn running(state: &mut LeaderState, fx: &Effects, now: Timestamp) {
        for (agent, cmd) in &fx.commands {
            if let AgentCommand::Launch(tasks) = cmd {
                for t in tasks {
                    let s = AgentStatus {
                        task_id: t.task_id.clone(),
                        condition: Condition::Running,
                        terminal: false,
                        message: String::new(),
                        reason: String::new(),
                        timestamp: now,
                        ports: t.host_ports.clone(),
                        ip_addresses: vec![],
                        healthy: None,
                        exit_code: None,
                    };
                    state.status(agent, s, now);
                }
            }
        }
    }

    fn settle(state: &mut LeaderState, mut now: Timestamp) -> Timestamp {
        for _ in 0..20 {
            now = now.plus_millis(10);
            let fx = state.reconcile(now);
            state.check_index();
            running(state, &fx, now);
            state.check_index();
            // Kills complete at once.
            for (agent, cmd) in &fx.commands {
                if let AgentCommand::Kill { task_id, .. } = cmd {
                    let s = AgentStatus {
                        task_id: task_id.clone(),
                        condition: Condition::Killed,
                        terminal: true,
                        message: String::new(),
                        reason: String::new(),
                        timestamp: now,
                        ports: vec![],
                        ip_addresses: vec![],
                        healthy: None,
                        exit_code: None,
                    };
                    state.status(agent, s, now);
                }
            }
        }
        now
    }

    fn running_count(state: &LeaderState, app: &str) -> usize {
        state
            .app_instances(&PathId::parse(app))
            .iter()
            .filter(|i| i.condition == Condition::Running)
            .count()
    }

    /// After a failover every agent re-registers with the tasks it runs: what the leader
    /// already knows is neither written again nor re-indexed, and what the agent no longer
    /// knows is found through the per-agent index and marked gone.
    #[test]
    fn a_re_registering_agent_rewrites_nothing_it_did_not_change() {
        let mut now = Timestamp(1_000_000);
        let mut s = LeaderState::new(Tuning::default(), now);
        s.agent_registered(agent("a1"), 1, vec![], now);
        s.deploy(
            vec![Change::Create(
                json!({"id": "/web", "cmd": "sleep 100", "cpus": 0.1, "mem": 32, "instances": 3}),
            )],
            false,
            &Origin::default(),
            BTreeMap::new(),
            now,
        )
        .expect("deploys");
        now = settle(&mut s, now);
        assert_eq!(running_count(&s, "/web"), 3);
        let reports: Vec<AgentStatus> = s
            .app_instances(&PathId::parse("/web"))
            .iter()
            .map(|i| AgentStatus {
                task_id: i.task_id(),
                condition: i.condition,
                terminal: false,
                message: i.message.clone(),
                reason: String::new(),
                timestamp: now,
                ports: i.host_ports.clone(),
                ip_addresses: i.ip_addresses.clone(),
                healthy: i.healthy,
                exit_code: i.exit_code,
            })
            .collect();

        let fx = s.agent_registered(agent("a1"), 2, reports.clone(), now);
        s.check_index();
        let written: Vec<&Op> = fx
            .batch
            .ops
            .iter()
            .filter(
                |op| !matches!(op, Op::Put { collection, .. } if collection == collections::AGENTS),
            )
            .collect();
        assert!(
            written.is_empty(),
            "nothing but the agent written: {written:?}"
        );
        assert_eq!(running_count(&s, "/web"), 3);

        let fx = s.agent_registered(agent("a1"), 3, reports[1..].to_vec(), now);
        s.check_index();
        let gone = parse_task_id(&reports[0].task_id)
            .expect("a task id")
            .instance_id;
        assert!(
            fx.batch
                .ops
                .iter()
                .any(|op| matches!(op, Op::Put { key, .. } if *key == gone.0)),
            "the task the agent no longer knows is written as gone"
        );
        assert_ne!(s.instances[&gone].condition, Condition::Running);
        assert_eq!(running_count(&s, "/web"), 2);
    }

    #[test]
    fn create_scale_restart_and_remove() {
        let mut now = Timestamp(1_000_000);
        let mut s = LeaderState::new(Tuning::default(), now);
        s.agent_registered(agent("a1"), 1, vec![], now);
        s.agent_registered(agent("a2"), 2, vec![], now);
        let origin = Origin::default();
        let (d, _) = s
            .deploy(vec![Change::Create(json!({"id": "/web", "cmd": "sleep 100", "cpus": 0.1, "mem": 32, "instances": 3}))], false, &origin, BTreeMap::new(), now)
            .expect("deploys");
        assert!(d.created);
        assert_eq!(d.apps[0].service_ports(), vec![10000]);
        now = settle(&mut s, now);
        assert_eq!(running_count(&s, "/web"), 3);
        assert!(s.deployments.is_empty(), "the deployment finished");

        // A second create conflicts.
        let e = s
            .deploy(
                vec![Change::Create(json!({"id": "/web", "cmd": "sleep 100"}))],
                false,
                &origin,
                BTreeMap::new(),
                now,
            )
            .expect_err("exists");
        assert_eq!(e.code, ErrorCode::Conflict);

        s.deploy(
            vec![Change::Patch {
                app_id: PathId::parse("/web"),
                json: json!({"instances": 5}),
                create_if_missing: false,
            }],
            false,
            &origin,
            BTreeMap::new(),
            now,
        )
        .expect("scales");
        now = settle(&mut s, now);
        assert_eq!(running_count(&s, "/web"), 5);

        s.deploy(
            vec![Change::Patch {
                app_id: PathId::parse("/web"),
                json: json!({"instances": 1}),
                create_if_missing: false,
            }],
            false,
            &origin,
            BTreeMap::new(),
            now,
        )
        .expect("scales");
        now = settle(&mut s, now);
        assert_eq!(running_count(&s, "/web"), 1);
        assert_eq!(s.app_instances(&PathId::parse("/web")).len(), 1);

        // A config change rolls the instance over.
        let before: Vec<InstanceId> = s
            .app_instances(&PathId::parse("/web"))
            .iter()
            .map(|i| i.id.clone())
            .collect();
        s.deploy(
            vec![Change::Patch {
                app_id: PathId::parse("/web"),
                json: json!({"cmd": "sleep 200"}),
                create_if_missing: false,
            }],
            false,
            &origin,
            BTreeMap::new(),
            now,
        )
        .expect("upgrades");
        now = settle(&mut s, now);
        let after: Vec<InstanceId> = s
            .app_instances(&PathId::parse("/web"))
            .iter()
            .map(|i| i.id.clone())
            .collect();
        assert_eq!(after.len(), 1);
        assert_ne!(before, after);
        assert!(s.deployments.is_empty());

        s.deploy(
            vec![Change::Remove(PathId::parse("/web"))],
            true,
            &origin,
            BTreeMap::new(),
            now,
        )
        .expect("removes");
        settle(&mut s, now);
        assert!(s.app_instances(&PathId::parse("/web")).is_empty());
        assert!(s.apps.is_empty());
        assert!(s.deployments.is_empty());
    }

    #[test]
    fn a_conflicting_change_is_locked_unless_forced() {
        let now = Timestamp(1_000_000);
        let mut s = LeaderState::new(Tuning::default(), now);
        let origin = Origin::default();
        // No agents: the deployment cannot finish.
        let (d, _) = s
            .deploy(
                vec![Change::Create(json!({"id": "/a", "cmd": "sleep 100"}))],
                false,
                &origin,
                BTreeMap::new(),
                now,
            )
            .expect("deploys");
        s.reconcile(now);
        let e = s
            .deploy(
                vec![Change::Patch {
                    app_id: PathId::parse("/a"),
                    json: json!({"instances": 2}),
                    create_if_missing: false,
                }],
                false,
                &origin,
                BTreeMap::new(),
                now,
            )
            .expect_err("locked");
        assert_eq!(e.code, ErrorCode::Conflict);
        assert_eq!(e.body["deployments"][0]["id"], d.deployment_id);
        s.deploy(
            vec![Change::Patch {
                app_id: PathId::parse("/a"),
                json: json!({"instances": 2}),
                create_if_missing: false,
            }],
            true,
            &origin,
            BTreeMap::new(),
            now,
        )
        .expect("forced");
        assert_eq!(s.deployments.len(), 1);
        // Disjoint apps deploy side by side.
        s.deploy(
            vec![Change::Create(json!({"id": "/b", "cmd": "sleep 100"}))],
            false,
            &origin,
            BTreeMap::new(),
            now,
        )
        .expect("disjoint");
        assert_eq!(s.deployments.len(), 2);
    }

    #[test]
    fn a_failed_task_is_replaced_after_its_backoff() {
        let mut now = Timestamp(1_000_000);
        let mut s = LeaderState::new(Tuning::default(), now);
        s.agent_registered(agent("a1"), 1, vec![], now);
        s.deploy(
            vec![Change::Create(
                json!({"id": "/f", "cmd": "false", "cpus": 0.1, "mem": 16}),
            )],
            false,
            &Origin::default(),
            BTreeMap::new(),
            now,
        )
        .expect("deploys");
        now = settle(&mut s, now);
        let task = s.app_instances(&PathId::parse("/f"))[0].task_id();
        let fx = s.status(
            "a1",
            AgentStatus {
                task_id: task.clone(),
                condition: Condition::Failed,
                terminal: true,
                message: "Command exited with status 1".into(),
                reason: String::new(),
                timestamp: now,
                ports: vec![],
                ip_addresses: vec![],
                healthy: None,
                exit_code: Some(1),
            },
            now,
        );
        assert!(fx
            .commands
            .iter()
            .any(|(_, c)| matches!(c, AgentCommand::Acknowledge(_))));
        let fx = s.reconcile(now);
        assert!(
            !fx.commands
                .iter()
                .any(|(_, c)| matches!(c, AgentCommand::Launch(_))),
            "backoff holds the relaunch"
        );
        let fx = s.reconcile(now.plus_millis(1_100));
        assert!(
            fx.commands
                .iter()
                .any(|(_, c)| matches!(c, AgentCommand::Launch(_))),
            "relaunched after the delay"
        );
        assert!(s.task_failures.contains_key(&PathId::parse("/f")));
    }

    #[test]
    fn agents_that_vanish_make_instances_unreachable_and_replaced() {
        let mut now = Timestamp(1_000_000);
        let tuning = Tuning {
            agent_timeout: Duration::from_secs(5),
            reregistration_grace: Duration::from_secs(5),
        };
        let mut s = LeaderState::new(tuning, now);
        s.agent_registered(agent("a1"), 1, vec![], now);
        s.deploy(
            vec![Change::Create(
                json!({"id": "/u", "cmd": "sleep 100", "cpus": 0.1, "mem": 16}),
            )],
            false,
            &Origin::default(),
            BTreeMap::new(),
            now,
        )
        .expect("deploys");
        now = settle(&mut s, now);
        let first = s.app_instances(&PathId::parse("/u"))[0].id.clone();
        s.agent_registered(agent("a2"), 2, vec![], now);
        s.agent_disconnected("a1", 1, now);
        now = now.plus_millis(6_000);
        s.agent_seen("a2", now);
        let fx = s.reconcile(now);
        assert!(
            !s.instances.contains_key(&first),
            "expunged under the default strategy"
        );
        assert!(fx
            .commands
            .iter()
            .any(|(a, c)| a == "a2" && matches!(c, AgentCommand::Launch(_))));
    }

    /// Steps the cluster with one tick of latency: launches run, and kills end, one pass after
    /// they were sent. Returns (most instances alive at once, fewest running at once).
    fn roll(state: &mut LeaderState, mut now: Timestamp, passes: usize) -> (usize, usize) {
        let mut pending: Vec<(String, AgentCommand)> = Vec::new();
        let (mut most, mut fewest) = (0, usize::MAX);
        for _ in 0..passes {
            now = now.plus_millis(10);
            for (agent, cmd) in std::mem::take(&mut pending) {
                let (task_ids, condition, terminal) = match &cmd {
                    AgentCommand::Launch(t) => (
                        t.iter().map(|x| x.task_id.clone()).collect::<Vec<_>>(),
                        Condition::Running,
                        false,
                    ),
                    AgentCommand::Kill { task_id, .. } => {
                        (vec![task_id.clone()], Condition::Killed, true)
                    }
                    AgentCommand::Acknowledge(_) | AgentCommand::DestroyVolumes(_) => continue,
                };
                for task_id in task_ids {
                    let s = AgentStatus {
                        task_id,
                        condition,
                        terminal,
                        message: String::new(),
                        reason: String::new(),
                        timestamp: now,
                        ports: vec![],
                        ip_addresses: vec![],
                        healthy: None,
                        exit_code: None,
                    };
                    state.status(&agent, s, now);
                }
            }
            let fx = state.reconcile(now);
            state.check_index();
            pending.extend(fx.commands);
            let alive = state
                .instances
                .values()
                .filter(|i| i.condition.is_active() || i.condition == Condition::Scheduled)
                .count();
            let running = state
                .instances
                .values()
                .filter(|i| i.condition == Condition::Running && i.goal == Goal::Running)
                .count();
            most = most.max(alive);
            fewest = fewest.min(running);
        }
        (most, fewest)
    }

    #[test]
    fn rolling_restarts_respect_the_upgrade_strategy() {
        for (m, o, n, max_alive, min_running) in [
            (1.0, 0.0, 3, 4, 3),
            (1.0, 1.0, 4, 8, 4),
            (0.5, 0.0, 4, 4, 2),
            (0.0, 0.0, 3, 3, 0),
        ] {
            let now = Timestamp(1_000_000);
            let mut s = LeaderState::new(Tuning::default(), now);
            s.agent_registered(agent("a1"), 1, vec![], now);
            let body = json!({"id": "/r", "cmd": "sleep 100", "cpus": 0.01, "mem": 1, "instances": n,
                              "upgradeStrategy": {"minimumHealthCapacity": m, "maximumOverCapacity": o}});
            s.deploy(
                vec![Change::Create(body)],
                false,
                &Origin::default(),
                BTreeMap::new(),
                now,
            )
            .expect("deploys");
            let now = settle(&mut s, now);
            assert_eq!(running_count(&s, "/r"), n);
            s.deploy(
                vec![Change::Patch {
                    app_id: PathId::parse("/r"),
                    json: json!({"cmd": "sleep 200"}),
                    create_if_missing: false,
                }],
                false,
                &Origin::default(),
                BTreeMap::new(),
                now,
            )
            .expect("upgrades");
            let (most, fewest) = roll(&mut s, now, 60);
            assert!(
                s.deployments.is_empty(),
                "m={m} o={o}: the restart finished"
            );
            let version = s.apps[&PathId::parse("/r")].config_version();
            assert!(s
                .app_instances(&PathId::parse("/r"))
                .iter()
                .all(|i| i.app_version == version && i.condition == Condition::Running));
            assert_eq!(running_count(&s, "/r"), n);
            assert!(
                most <= max_alive,
                "m={m} o={o}: {most} alive at once, at most {max_alive} allowed"
            );
            assert!(
                fewest >= min_running,
                "m={m} o={o}: {fewest} running at one point, at least {min_running} wanted"
            );
        }
    }
}

#[cfg(test)]
mod pass_tests {
    use std::collections::BTreeMap;

    use serde_json::json;
    use stride_core::Timestamp;

    use super::{Change, LeaderState, Origin, Tuning, SCHEDULE_PER_PASS};

    #[test]
    fn a_big_scale_is_made_over_several_bounded_passes() {
        let mut s = LeaderState::new(Tuning::default(), Timestamp(1));
        let want = SCHEDULE_PER_PASS * 2 + 17;
        let app = json!({"id": "/big", "cmd": "sleep 1", "instances": want});
        s.deploy(
            vec![Change::Create(app)],
            false,
            &Origin::default(),
            BTreeMap::new(),
            Timestamp::now(),
        )
        .expect("deploys");
        let fx = s.reconcile(Timestamp::now());
        assert_eq!(s.instances.len(), SCHEDULE_PER_PASS);
        assert!(fx.more, "the first pass leaves work over");
        let mut passes = 1;
        while s.instances.len() < want {
            passes += 1;
            assert!(passes <= 10, "still {} instances", s.instances.len());
            let before = s.instances.len();
            s.reconcile(Timestamp::now());
            assert!(s.instances.len() - before <= SCHEDULE_PER_PASS);
        }
        assert_eq!(s.instances.len(), want);
        assert!(passes >= 2, "made in {passes} passes");
        let fx = s.reconcile(Timestamp::now());
        assert_eq!(s.instances.len(), want, "no more than wanted");
        assert!(!fx.more, "the work runs out");
    }
}
