//! The leader's side of health checking: results from the health-checker replicas come in
//! over `HealthReports`, and the leader keeps the health records, decides kills and readiness.
//!
//! ```text
//!  health-checker ×N ──Report(batch)──► HealthService ──HealthReported──► LeaderActor
//!       (owners by rendezvous)            │ live members (store, ≤0.5 s old)   │ LeaderState::apply_health_reports
//!                                         │ not leading: UNAVAILABLE + leader  ▼
//!                                                               records, events, kills, ready
//! ```
//!
//! Each result is accepted only from the replica that owns its (instance, check) by rendezvous
//! hashing over the live members the leader reads from the store (the function the replicas use
//! too), and only for the task, version and check it names; the leader then applies Marathon's
//! rules (reference §7.2) to the instance's record and counts consecutive failures itself.
//!
//! Ownership is judged by [`Membership`]: the replica must be live under the registration its
//! batch names (a replica that lost its membership, say cut off from Redis, registers again under
//! a new one, so what it found meanwhile is refused), and the check must have started after the
//! replica became its owner in the leader's view (results from before a rebalance are refused).
//! The leader keeps the last few views of the members, with when each was first seen, for that.
//! Start times come from the replicas' clocks and views from the leader's: as with membership
//! itself, clocks are assumed to agree to well within the 3 s membership TTL. On top, a failure
//! arriving less than half an interval after the last one counted is dropped: the moment a check
//! moves between replicas cannot count one failure twice.
//!
//! Readiness results (reference §5.6) of apps under deployment are persisted in the store's
//! [`READINESS_RESULTS`] collection, which the gateway reads for `/v2/deployments`
//! (`currentActions[].readinessCheckResults`); they are deleted once the app's deployment is over
//! or the instance is gone, and a new leader deletes those its predecessor left behind.
//!
//! Records live in `Instance.health` (one per `healthChecks` entry) and are persisted with the
//! instance when something the API shows changes; a success that changes nothing refreshes
//! `lastSuccess` at most every [`SUCCESS_REFRESH_MS`], which keeps writes bounded at tens of
//! thousands of checks a second and does not change `alive`.
//!
//! COMMAND and MESOS_* checks follow Mesos' counting (kill at the `maxConsecutiveFailures`-th
//! failure, 0 meaning the first) and start `delaySeconds` after the task; HTTP, HTTPS and TCP
//! follow Marathon's (kill at the `(max+1)`-th, 0 meaning never).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::{json, Value};
use stride_core::app::HealthCheck;
use stride_core::deployment::READINESS_RESULTS;
use stride_core::events;
use stride_core::instance::{Condition, Goal, HealthRecord, InstanceId};
use stride_core::rendezvous::{check_owner, CheckSlot, MEMBERS, MEMBER_TTL_MS};
use stride_core::{PathId, Timestamp};
use stride_proto::v1::{self, health_reports_server::HealthReportsServer, HealthVerdict};
use stride_store::{collections, StateStore};
use tokio::sync::{watch, Mutex};
use tonic::{Request, Response, Status};
use tracing::{debug, info};

use crate::elector::Role;
use crate::grpc::Shared;
use crate::leader::LeaderActor;
use crate::state::{AgentCommand, Effects, LeaderState};

/// A success that changes nothing else refreshes `lastSuccess` at most this often.
pub const SUCCESS_REFRESH_MS: i64 = 10_000;
/// Metadata entry naming the leader in an UNAVAILABLE answer.
pub const LEADER_METADATA: &str = "x-stride-leader";
/// How old the leader's view of the live replicas may be.
const MEMBERS_MAX_AGE: Duration = Duration::from_millis(500);
/// How long reading the membership records may take.
const MEMBERS_READ_DEADLINE: Duration = Duration::from_secs(2);

// -------------------------------------------------------------------------------------------
// Results in domain terms
// -------------------------------------------------------------------------------------------

/// What a check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Unhealthy(String),
    Ignored,
}

/// One health-check result.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    pub instance_id: InstanceId,
    pub task_id: String,
    /// Index into the app's `healthChecks`.
    pub index: usize,
    pub app_version: Timestamp,
    pub verdict: Verdict,
    /// When the check started (the replica's clock), if it said.
    pub started_at: Option<Timestamp>,
}

/// One readiness-check result.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadinessReport {
    pub instance_id: InstanceId,
    pub task_id: String,
    pub app_version: Timestamp,
    pub name: String,
    pub ready: bool,
    /// 0 when nothing answered.
    pub status: u16,
    pub content_type: String,
    pub body: String,
    /// When the check started (the replica's clock), if it said.
    pub started_at: Option<Timestamp>,
}

/// What the leader made of a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ack {
    pub accepted: u32,
    pub not_owner: u32,
    pub stale: u32,
}

/// Health checks announced with `add_health_check_event`, per app and configuration version.
pub type Registry = BTreeMap<PathId, BTreeMap<Timestamp, Vec<HealthCheck>>>;

// -------------------------------------------------------------------------------------------
// Who owns which check, and since when
// -------------------------------------------------------------------------------------------

/// The membership record of a replica as the leader reads it: `stride_core::rendezvous::Member`
/// and the registration the replica writes beside it.
#[derive(Debug, serde::Deserialize)]
struct MemberRecord {
    id: String,
    heartbeat_at_ms: i64,
    #[serde(default)]
    joined_at_ms: i64,
}

/// The live replicas among stored membership records, with their registrations.
pub fn live_registrations<'a>(
    records: impl IntoIterator<Item = &'a [u8]>,
    now_ms: i64,
) -> BTreeMap<String, i64> {
    records
        .into_iter()
        .filter_map(|r| serde_json::from_slice::<MemberRecord>(r).ok())
        .filter(|m| now_ms - m.heartbeat_at_ms <= MEMBER_TTL_MS)
        .map(|m| (m.id, m.joined_at_ms))
        .collect()
}

/// One view of the live replicas and their registrations, from when the leader first saw it.
#[derive(Clone, Debug, PartialEq)]
struct View {
    since: Timestamp,
    members: Vec<String>,
    registrations: BTreeMap<String, i64>,
}

/// How many past views are kept. A replica that has owned a check through all of them is taken
/// to have owned it since the oldest.
const VIEWS_KEPT: usize = 16;

/// The live health-checker replicas as the leader has seen them over time.
#[derive(Clone, Debug, Default)]
pub struct Membership {
    /// Oldest first; the last is the current one.
    views: VecDeque<View>,
}

/// What the leader makes of one result's provenance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provenance {
    /// From the owner, started while it owned the check.
    Owner,
    /// From a replica that does not own the check now, or not under the registration it names.
    NotOwner,
    /// From the owner, but the check started before it became the owner.
    BeforeOwnership,
}

impl Membership {
    /// Notes the live replicas (id → registration) read at `now`; a view that differs from the
    /// current one starts at `now`.
    pub fn observe(&mut self, live: BTreeMap<String, i64>, now: Timestamp) {
        if self.views.back().is_some_and(|v| v.registrations == live) {
            return;
        }
        self.views.push_back(View {
            since: now,
            members: live.keys().cloned().collect(),
            registrations: live,
        });
        while self.views.len() > VIEWS_KEPT {
            self.views.pop_front();
        }
    }

    /// The live replicas now, sorted.
    pub fn members(&self) -> &[String] {
        self.views.back().map_or(&[], |v| v.members.as_slice())
    }

    /// Since when `replica`, under `registration`, has owned `slot` of `instance` without a
    /// break; `None` if it does not own it now.
    pub fn owned_since(
        &self,
        replica: &str,
        registration: i64,
        instance: &str,
        slot: CheckSlot,
    ) -> Option<Timestamp> {
        let mut since = None;
        for v in self.views.iter().rev() {
            let owns = v.registrations.get(replica) == Some(&registration)
                && check_owner(instance, slot, &v.members) == Some(replica);
            if !owns {
                break;
            }
            since = Some(v.since);
        }
        since
    }

    /// Whether a result of `slot` of `instance` from `replica` under `registration`, whose
    /// check started at `started_at`, counts.
    pub fn provenance(
        &self,
        replica: &str,
        registration: i64,
        instance: &str,
        slot: CheckSlot,
        started_at: Option<Timestamp>,
    ) -> Provenance {
        match self.owned_since(replica, registration, instance, slot) {
            None => Provenance::NotOwner,
            Some(since) if started_at.is_some_and(|t| t < since) => Provenance::BeforeOwnership,
            Some(_) => Provenance::Owner,
        }
    }
}

// -------------------------------------------------------------------------------------------
// Marathon's rules for one result, as a pure function
// -------------------------------------------------------------------------------------------

/// Who counts failures how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counting {
    /// HTTP, HTTPS, TCP: kill on the failure after `max` counted ones; 0 = never.
    Marathon,
    /// COMMAND, MESOS_*: kill on the `max`-th failure; 0 = the first.
    Mesos,
}

impl Counting {
    pub fn of(check: &HealthCheck) -> Self {
        if check.is_marathon_level() {
            Counting::Marathon
        } else {
            Counting::Mesos
        }
    }
}

/// What one result did to a record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// The record changed in a way worth persisting.
    pub changed: bool,
    /// A failure was counted (`failed_health_check_event`).
    pub counted_failure: bool,
    /// The instance is to be killed, for this reason.
    pub kill: Option<String>,
    /// `alive` before and after.
    pub alive: (bool, bool),
}

pub fn alive(r: &HealthRecord) -> bool {
    r.last_success
        .is_some_and(|s| r.last_failure.is_none_or(|f| s > f))
}

/// Applies one result to `record` (reference §7.2). `running_since` is when the instance
/// became Running (`None` if it is not Running: results are then ignored).
pub fn step(
    record: &mut HealthRecord,
    check: &HealthCheck,
    verdict: &Verdict,
    running_since: Option<Timestamp>,
    now: Timestamp,
) -> Step {
    let before = alive(record);
    let mut s = Step {
        alive: (before, before),
        ..Step::default()
    };
    let Some(since) = running_since else {
        return s;
    };
    match verdict {
        Verdict::Ignored => {}
        Verdict::Healthy => {
            let material = record.first_success.is_none()
                || record.consecutive_failures > 0
                || !before
                || record
                    .last_success
                    .is_none_or(|t| now.0 - t.0 >= SUCCESS_REFRESH_MS);
            if material {
                record.first_success.get_or_insert(now);
                record.last_success = Some(now);
                record.consecutive_failures = 0;
                s.changed = true;
            }
        }
        Verdict::Unhealthy(cause) => {
            let interval_ms = check.interval_seconds.max(0) * 1000;
            if record
                .last_failure
                .is_some_and(|f| now.0 - f.0 < interval_ms / 2)
            {
                // The same failure reported again around a hand-over between replicas.
                return s;
            }
            let grace_ms = check.grace_period_seconds.max(0) * 1000;
            if record.first_success.is_none() && now.0 < since.0 + grace_ms {
                return s;
            }
            let max = check.max_consecutive_failures.max(0) as u64;
            let previous = u64::from(record.consecutive_failures);
            let previous_cause = record.last_failure_cause.clone();
            record.last_failure = Some(now);
            record.last_failure_cause = Some(cause.clone());
            record.consecutive_failures = record.consecutive_failures.saturating_add(1);
            s.changed = true;
            s.counted_failure = true;
            s.kill = match Counting::of(check) {
                Counting::Marathon if max > 0 && previous >= max => {
                    Some(previous_cause.unwrap_or_else(|| "unknown".into()))
                }
                Counting::Mesos if u64::from(record.consecutive_failures) >= max => {
                    Some(cause.clone())
                }
                _ => None,
            };
        }
    }
    s.alive.1 = alive(record);
    // Stored for readers (the gateway renders `alive` from the record).
    record.alive = s.alive.1;
    s
}

/// The instance's health flag from its records: `Some(false)` once a check has failed and is
/// not alive, `Some(true)` when every check is alive, `None` while some check has no verdict.
pub fn aggregate(records: &[HealthRecord], checks: usize) -> Option<bool> {
    if records
        .iter()
        .any(|r| r.last_failure.is_some() && !alive(r))
    {
        return Some(false);
    }
    (checks > 0 && records.len() == checks && records.iter().all(alive)).then_some(true)
}

fn to_bytes<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn event(fx: &mut Effects, e: events::Event) {
    fx.batch.event(e.to_json_string());
}

// -------------------------------------------------------------------------------------------
// The leader's state
// -------------------------------------------------------------------------------------------

impl LeaderState {
    /// Applies a batch of results from `replica`, produced under its registration
    /// `registration`, given the leader's view of the live replicas.
    pub fn apply_health_reports(
        &mut self,
        replica: &str,
        registration: i64,
        membership: &Membership,
        results: Vec<CheckResult>,
        readiness: Vec<ReadinessReport>,
        now: Timestamp,
    ) -> (Effects, Ack) {
        let mut fx = Effects::default();
        let mut ack = Ack::default();
        let mut dirty: HashSet<InstanceId> = HashSet::new();
        let mut condemned: Vec<(InstanceId, String)> = Vec::new();
        for r in results {
            let Some(i) = self.instances.get_mut(&r.instance_id) else {
                ack.stale += 1;
                continue;
            };
            let Some(app) = self.apps.get(&i.app_id) else {
                ack.stale += 1;
                continue;
            };
            let current = i.task_id() == r.task_id
                && i.app_version == r.app_version
                && app.config_version() == r.app_version;
            let Some(check) = app.health_checks.get(r.index).filter(|_| current) else {
                ack.stale += 1;
                continue;
            };
            match membership.provenance(
                replica,
                registration,
                &r.instance_id.0,
                CheckSlot::Health(r.index as u32),
                r.started_at,
            ) {
                Provenance::Owner => {}
                Provenance::NotOwner => {
                    ack.not_owner += 1;
                    continue;
                }
                Provenance::BeforeOwnership => {
                    ack.stale += 1;
                    continue;
                }
            }
            ack.accepted += 1;
            let n = app.health_checks.len();
            // A first result creates the records, shown (not alive) even while failures are
            // still ignored, as Marathon shows them.
            let created = i.health.len() != n;
            if created {
                i.health.resize(n, HealthRecord::default());
            }
            let running_since = (i.condition == Condition::Running).then_some(i.since);
            let s = step(
                &mut i.health[r.index],
                check,
                &r.verdict,
                running_since,
                now,
            );
            if s.counted_failure {
                event(&mut fx, events::failed_health_check(now, i, check));
            }
            if let Some(reason) = s.kill {
                condemned.push((i.id.clone(), reason));
            }
            if s.alive.0 != s.alive.1 {
                event(&mut fx, events::health_status_changed(now, i, s.alive.1));
            }
            let healthy = aggregate(&i.health, n);
            if healthy != i.healthy && healthy.is_some() {
                let was = i.healthy;
                i.healthy = healthy;
                self.idx.health_changed(i, was);
                event(&mut fx, events::instance_health_changed(now, i));
            }
            if created || s.changed || s.alive.0 != s.alive.1 {
                dirty.insert(i.id.clone());
            }
        }
        for (id, reason) in condemned {
            self.kill_unhealthy(&id, &reason, now, &mut fx);
        }
        for id in dirty {
            if let Some(i) = self.instances.get(&id) {
                fx.batch
                    .put(collections::INSTANCES, id.0.clone(), to_bytes(i));
            }
        }
        for r in readiness {
            match self.apply_readiness(replica, registration, membership, r, &mut fx) {
                Some(Provenance::Owner) => ack.accepted += 1,
                Some(Provenance::NotOwner) => ack.not_owner += 1,
                Some(Provenance::BeforeOwnership) | None => ack.stale += 1,
            }
        }
        (fx, ack)
    }

    /// Kills a task for failing its health checks: its goal stays Running, so it is replaced
    /// (reference §7.2). Published and recorded as `lastTaskFailure` once per task; a repeated
    /// verdict only sends the kill again.
    fn kill_unhealthy(&mut self, id: &InstanceId, reason: &str, now: Timestamp, fx: &mut Effects) {
        let Some(i) = self.instances.get(id) else {
            return;
        };
        if i.goal != Goal::Running
            || i.condition == Condition::Unreachable
            || !i.condition.is_active()
        {
            return;
        }
        let task_id = i.task_id();
        let grace_ms = self
            .apps
            .get(&i.app_id)
            .map_or(3_000, |a| a.kill_grace_period_ms());
        if let Some(agent) = i.agent_id() {
            fx.commands.push((
                agent.to_string(),
                AgentCommand::Kill {
                    task_id: task_id.clone(),
                    grace_ms,
                },
            ));
        }
        let already = self
            .task_failures
            .get(&i.app_id)
            .and_then(|f| f.get("taskId"))
            .and_then(Value::as_str)
            == Some(task_id.as_str());
        if already {
            return;
        }
        info!(instance = %i.id, reason, "killing an unhealthy task");
        event(fx, events::unhealthy_instance_kill(now, i, reason));
        let failure = json!({
            "appId": i.app_id.to_string(),
            "host": i.placement.as_ref().map_or("", |p| p.hostname.as_str()),
            "message": format!("Task was killed since health check failed. Reason: {reason}"),
            "state": "TASK_KILLED",
            "taskId": task_id,
            "timestamp": now,
            "version": i.app_version,
            "slaveId": i.agent_id(),
        });
        fx.batch.put(
            collections::TASK_FAILURES,
            i.app_id.to_string(),
            to_bytes(&failure),
        );
        self.task_failures.insert(i.app_id.clone(), failure);
    }

    /// `Some(Owner)` applied, `Some(_)` refused for its provenance, `None` stale. Results of an
    /// app under deployment are persisted for `/v2/deployments` when they change.
    fn apply_readiness(
        &mut self,
        replica: &str,
        registration: i64,
        membership: &Membership,
        r: ReadinessReport,
        fx: &mut Effects,
    ) -> Option<Provenance> {
        let i = self.instances.get(&r.instance_id)?;
        let app = self.apps.get(&i.app_id)?;
        let check = app.readiness_checks.first()?;
        let current = i.task_id() == r.task_id
            && i.app_version == r.app_version
            && app.config_version() == r.app_version
            && i.condition == Condition::Running
            && check.name == r.name;
        if !current {
            return None;
        }
        let provenance = membership.provenance(
            replica,
            registration,
            &r.instance_id.0,
            CheckSlot::Readiness,
            r.started_at,
        );
        if provenance != Provenance::Owner {
            return Some(provenance);
        }
        if self.ready.get(&r.instance_id) == Some(&true) {
            // Ready the first time; later answers do not take it back (reference §5.6).
            return Some(provenance);
        }
        let mut result = json!({ "name": r.name, "taskId": r.task_id, "ready": r.ready });
        if check.preserve_last_response && r.status > 0 {
            result["lastResponse"] = json!({
                "status": r.status,
                "contentType": r.content_type,
                "body": r.body,
            });
        }
        let deploying = self.deployments.values().any(|p| p.touches(&i.app_id));
        let changed = self.readiness_results.get(&r.instance_id) != Some(&result);
        if deploying && changed {
            let stored = json!({
                "appId": i.app_id.to_string(),
                "appVersion": r.app_version,
                "result": result,
            });
            fx.batch.put(
                READINESS_RESULTS,
                r.instance_id.0.clone(),
                to_bytes(&stored),
            );
        }
        if deploying {
            self.readiness_results.insert(r.instance_id.clone(), result);
        }
        self.ready.insert(r.instance_id, r.ready);
        Some(provenance)
    }

    /// Publishes `add_health_check_event` for app versions with checks not yet announced in this
    /// term and `remove_health_check_event` for announced ones that have no instance left (or
    /// whose app is gone); forgets readiness of instances that are gone, and deletes the stored
    /// readiness results of those and of apps no longer under deployment. `stored` names
    /// readiness results found in the store that this leader may not know of (an earlier
    /// term's): those it does not hold are deleted too.
    pub fn sync_health_checks(
        &mut self,
        known: &mut Registry,
        stored: &[String],
        now: Timestamp,
    ) -> Effects {
        let mut fx = Effects::default();
        for app in self.apps.values() {
            if app.health_checks.is_empty() {
                continue;
            }
            let version = app.config_version();
            let versions = known.entry(app.id.clone()).or_default();
            if let std::collections::btree_map::Entry::Vacant(e) = versions.entry(version) {
                for check in &app.health_checks {
                    event(
                        &mut fx,
                        events::add_health_check(now, &app.id, version, check),
                    );
                }
                e.insert(app.health_checks.clone());
            }
        }
        for (app_id, versions) in known.iter_mut() {
            let current = self.apps.get(app_id).map(|a| a.config_version());
            let alive: HashSet<Timestamp> = self
                .app_instances(app_id)
                .iter()
                .filter(|i| i.condition.is_active())
                .map(|i| i.app_version)
                .collect();
            versions.retain(|version, checks| {
                let keep = Some(*version) == current || alive.contains(version);
                if !keep {
                    for _ in checks.iter() {
                        event(&mut fx, events::remove_health_check(now, app_id));
                    }
                }
                keep
            });
        }
        known.retain(|_, v| !v.is_empty());
        let instances = &self.instances;
        self.ready.retain(|id, _| instances.contains_key(id));
        let deployments = &self.deployments;
        let mut gone: Vec<String> = Vec::new();
        self.readiness_results.retain(|id, _| {
            let keep = instances
                .get(id)
                .is_some_and(|i| deployments.values().any(|p| p.touches(&i.app_id)));
            if !keep {
                gone.push(id.0.clone());
            }
            keep
        });
        gone.extend(
            stored
                .iter()
                .filter(|k| {
                    !self
                        .readiness_results
                        .contains_key(&InstanceId((*k).clone()))
                })
                .cloned(),
        );
        gone.sort();
        gone.dedup();
        for id in gone {
            fx.batch.delete(READINESS_RESULTS, id);
        }
        fx
    }
}

// -------------------------------------------------------------------------------------------
// Actor messages
// -------------------------------------------------------------------------------------------

/// A batch of results from one replica, with the live replicas as the leader sees them.
#[derive(Message)]
#[rtype(result = "Ack")]
pub struct HealthReported {
    pub replica: String,
    /// The registration the replica produced the results under.
    pub registration: i64,
    pub membership: Arc<Membership>,
    pub results: Vec<CheckResult>,
    pub readiness: Vec<ReadinessReport>,
}

impl Handler<HealthReported> for LeaderActor {
    type Result = MessageResult<HealthReported>;

    fn handle(&mut self, msg: HealthReported, ctx: &mut Context<Self>) -> Self::Result {
        let (fx, ack) = self.state.apply_health_reports(
            &msg.replica,
            msg.registration,
            &msg.membership,
            msg.results,
            msg.readiness,
            Timestamp::now(),
        );
        if !fx.batch.is_empty() || !fx.commands.is_empty() {
            self.submit(fx, Vec::new());
            // Health and readiness move deployments on.
            self.touch(ctx);
        }
        MessageResult(ack)
    }
}

/// Announces and retires health checks; carries this term's registry in and out, and the
/// readiness results found in the store at the start of the term.
#[derive(Message)]
#[rtype(result = "Registry")]
pub struct SyncHealthChecks {
    pub registry: Registry,
    pub stored_readiness: Vec<String>,
}

impl Handler<SyncHealthChecks> for LeaderActor {
    type Result = MessageResult<SyncHealthChecks>;

    fn handle(&mut self, msg: SyncHealthChecks, _: &mut Context<Self>) -> Self::Result {
        let mut known = msg.registry;
        let fx = self
            .state
            .sync_health_checks(&mut known, &msg.stored_readiness, Timestamp::now());
        if !fx.batch.is_empty() || !fx.commands.is_empty() {
            self.submit(fx, Vec::new());
        }
        MessageResult(known)
    }
}

// -------------------------------------------------------------------------------------------
// gRPC
// -------------------------------------------------------------------------------------------

struct MembersView {
    read_at: Option<Instant>,
    membership: Arc<Membership>,
}

/// Serves `HealthReports` on every scheduler; only the leader accepts.
pub struct HealthService {
    shared: Shared,
    members: Arc<Mutex<MembersView>>,
}

/// The service, plus the task that announces health checks while this scheduler leads.
pub fn server(shared: Shared) -> HealthReportsServer<HealthService> {
    tokio::spawn(announce_checks(shared.role.clone(), shared.store.clone()));
    HealthReportsServer::new(HealthService {
        shared,
        members: Arc::new(Mutex::new(MembersView {
            read_at: None,
            membership: Arc::new(Membership::default()),
        })),
    })
    .max_decoding_message_size(64 << 20)
}

/// Every second while leading, lets the leader announce and retire health checks; the
/// registry of what was announced lives for one term, so a new leader announces them again,
/// as Marathon's does. At the start of a term it reads which readiness results are stored, so
/// the leader can delete those an earlier term left.
async fn announce_checks(mut role: watch::Receiver<Role>, store: Arc<dyn StateStore>) {
    let mut registry = Registry::new();
    let mut term = 0;
    let mut stored_readiness: Option<Vec<String>> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = role.changed() => if changed.is_err() { return } else { continue },
        }
        let leader = match &*role.borrow() {
            Role::Leader { addr, epoch } => Some((addr.clone(), *epoch)),
            Role::Follower => None,
        };
        let Some((addr, epoch)) = leader else {
            registry.clear();
            continue;
        };
        if epoch != term {
            registry.clear();
            term = epoch;
            stored_readiness = None;
        }
        let mut leftovers = Vec::new();
        if stored_readiness.is_none() {
            let read =
                tokio::time::timeout(Duration::from_secs(5), store.keys(READINESS_RESULTS)).await;
            if let Ok(Ok(keys)) = read {
                leftovers = keys.clone();
                stored_readiness = Some(keys);
            }
        }
        let sync = SyncHealthChecks {
            registry: std::mem::take(&mut registry),
            stored_readiness: leftovers,
        };
        if let Ok(r) = addr.send(sync).await {
            registry = r;
        }
    }
}

impl HealthService {
    /// The membership as of at most [`MEMBERS_MAX_AGE`] ago.
    async fn membership(&self) -> Result<Arc<Membership>, Status> {
        let mut view = self.members.lock().await;
        if view.read_at.is_some_and(|t| t.elapsed() < MEMBERS_MAX_AGE) {
            return Ok(view.membership.clone());
        }
        let read = tokio::time::timeout(MEMBERS_READ_DEADLINE, self.shared.store.get_all(MEMBERS))
            .await
            .unwrap_or_else(|_| {
                Err(stride_store::StoreError::Unavailable(
                    "no answer in time".into(),
                ))
            });
        let records =
            read.map_err(|e| Status::unavailable(format!("cannot read the health checkers: {e}")))?;
        let now = Timestamp::now();
        let live = live_registrations(records.iter().map(|(_, v)| v.as_ref()), now.0);
        Arc::make_mut(&mut view.membership).observe(live, now);
        view.read_at = Some(Instant::now());
        Ok(view.membership.clone())
    }

    async fn not_leader(&self) -> Status {
        let leader = self
            .shared
            .store
            .leader()
            .await
            .ok()
            .flatten()
            .map(|l| l.grpc_address)
            .unwrap_or_default();
        let mut status = Status::unavailable("not the leader");
        if let Ok(v) = leader.parse() {
            status.metadata_mut().insert(LEADER_METADATA, v);
        }
        status
    }
}

fn check_result(r: v1::HealthResult) -> CheckResult {
    let verdict = match HealthVerdict::try_from(r.verdict) {
        Ok(HealthVerdict::Healthy) => Verdict::Healthy,
        Ok(HealthVerdict::Unhealthy) if r.cause.is_empty() => {
            Verdict::Unhealthy("unhealthy".into())
        }
        Ok(HealthVerdict::Unhealthy) => Verdict::Unhealthy(r.cause),
        _ => Verdict::Ignored,
    };
    CheckResult {
        instance_id: InstanceId(r.instance_id),
        task_id: r.task_id,
        index: r.check_index as usize,
        app_version: Timestamp(r.app_version_ms),
        verdict,
        started_at: (r.started_at_ms > 0).then_some(Timestamp(r.started_at_ms)),
    }
}

fn readiness_report(r: v1::ReadinessResult) -> ReadinessReport {
    ReadinessReport {
        instance_id: InstanceId(r.instance_id),
        task_id: r.task_id,
        app_version: Timestamp(r.app_version_ms),
        name: r.name,
        ready: r.ready,
        status: u16::try_from(r.status).unwrap_or(0),
        content_type: r.content_type,
        body: r.body,
        started_at: (r.started_at_ms > 0).then_some(Timestamp(r.started_at_ms)),
    }
}

#[tonic::async_trait]
impl v1::health_reports_server::HealthReports for HealthService {
    async fn report(
        &self,
        request: Request<v1::HealthReportBatch>,
    ) -> Result<Response<v1::HealthAck>, Status> {
        let leader = match &*self.shared.role.borrow() {
            Role::Leader { addr, .. } => Some(addr.clone()),
            Role::Follower => None,
        };
        let Some(leader) = leader else {
            return Err(self.not_leader().await);
        };
        let membership = self.membership().await?;
        let batch = request.into_inner();
        debug!(replica = %batch.replica_id, results = batch.results.len(), "health report");
        let ack = leader
            .send(HealthReported {
                replica: batch.replica_id,
                registration: batch.joined_at_ms,
                membership,
                results: batch.results.into_iter().map(check_result).collect(),
                readiness: batch.readiness.into_iter().map(readiness_report).collect(),
            })
            .await
            .map_err(|_| Status::unavailable("leadership was lost"))?;
        Ok(Response::new(v1::HealthAck {
            accepted: ack.accepted,
            not_owner: ack.not_owner,
            stale: ack.stale,
        }))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use stride_core::instance::{Instance, Placement};
    use stride_core::App;

    use super::*;
    use crate::state::Tuning;

    fn check(json: Value) -> HealthCheck {
        serde_json::from_value(json).expect("health check")
    }

    fn t(s: i64) -> Timestamp {
        Timestamp(s * 1000)
    }

    fn fail(cause: &str) -> Verdict {
        Verdict::Unhealthy(cause.into())
    }

    #[test]
    fn marathon_counts_kill_on_the_failure_after_max() {
        let c = check(
            json!({"protocol": "HTTP", "gracePeriodSeconds": 10, "intervalSeconds": 2,
            "maxConsecutiveFailures": 3}),
        );
        let mut r = HealthRecord::default();
        let since = Some(t(100));
        // In the grace period, a task that never succeeded: ignored.
        assert_eq!(
            step(&mut r, &c, &fail("500"), since, t(105)),
            Step::default()
        );
        assert_eq!(r, HealthRecord::default());
        let s = step(&mut r, &c, &Verdict::Healthy, since, t(106));
        assert_eq!((s.changed, s.alive), (true, (false, true)));
        assert_eq!(r.first_success, Some(t(106)));
        // After a success the grace period no longer applies.
        for (k, at) in [108, 110, 112].into_iter().enumerate() {
            let s = step(&mut r, &c, &fail(&format!("500 #{k}")), since, t(at));
            assert!(
                s.counted_failure && s.kill.is_none(),
                "failure {k} counted, no kill"
            );
        }
        assert_eq!(r.consecutive_failures, 3);
        assert!(!alive(&r));
        let s = step(&mut r, &c, &fail("503"), since, t(114));
        assert_eq!(
            s.kill.as_deref(),
            Some("500 #2"),
            "the (max+1)-th kills, with the last cause"
        );
        assert_eq!(r.last_failure_cause.as_deref(), Some("503"));

        let never =
            check(json!({"protocol": "TCP", "gracePeriodSeconds": 0, "maxConsecutiveFailures": 0}));
        let mut r = HealthRecord::default();
        for k in 0..10 {
            assert!(
                step(&mut r, &never, &fail("refused"), since, t(200 + 60 * k))
                    .kill
                    .is_none()
            );
        }
    }

    #[test]
    fn mesos_counts_kill_on_the_max_th_failure_and_zero_means_the_first() {
        let since = Some(t(0));
        let c = check(json!({"protocol": "COMMAND", "command": {"value": "false"},
            "gracePeriodSeconds": 0, "maxConsecutiveFailures": 2, "intervalSeconds": 1}));
        let mut r = HealthRecord::default();
        assert!(step(&mut r, &c, &fail("exit 1"), since, t(10))
            .kill
            .is_none());
        assert_eq!(
            step(&mut r, &c, &fail("exit 1"), since, t(11))
                .kill
                .as_deref(),
            Some("exit 1")
        );
        let zero = check(
            json!({"protocol": "MESOS_TCP", "gracePeriodSeconds": 0, "maxConsecutiveFailures": 0}),
        );
        let mut r = HealthRecord::default();
        assert!(step(&mut r, &zero, &fail("refused"), since, t(10))
            .kill
            .is_some());
    }

    #[test]
    fn repeats_are_not_counted_twice_and_idle_successes_are_not_rewritten() {
        let c = check(json!({"protocol": "HTTP", "gracePeriodSeconds": 0, "intervalSeconds": 10}));
        let since = Some(t(0));
        let mut r = HealthRecord::default();
        assert!(step(&mut r, &c, &fail("500"), since, t(100)).counted_failure);
        // Another replica's report of the same moment (a hand-over): dropped.
        assert!(!step(&mut r, &c, &fail("500"), since, t(103)).counted_failure);
        assert!(step(&mut r, &c, &fail("500"), since, t(110)).counted_failure);
        assert_eq!(r.consecutive_failures, 2);
        assert!(step(&mut r, &c, &Verdict::Healthy, since, t(120)).changed);
        assert!(!step(&mut r, &c, &Verdict::Healthy, since, t(125)).changed);
        assert!(step(&mut r, &c, &Verdict::Healthy, since, t(130)).changed);
        assert!(!step(&mut r, &c, &Verdict::Ignored, since, t(131)).changed);
        // Not Running: nothing counts.
        assert_eq!(
            step(&mut r, &c, &fail("x"), None, t(200)),
            Step {
                alive: (true, true),
                ..Step::default()
            }
        );
    }

    #[test]
    fn the_instance_is_healthy_when_every_check_is_alive() {
        let ok = HealthRecord {
            last_success: Some(t(1)),
            ..HealthRecord::default()
        };
        let failed = HealthRecord {
            last_success: Some(t(1)),
            last_failure: Some(t(2)),
            ..HealthRecord::default()
        };
        assert_eq!(aggregate(&[], 2), None);
        assert_eq!(aggregate(&[ok.clone(), HealthRecord::default()], 2), None);
        assert_eq!(aggregate(&[ok.clone(), ok.clone()], 2), Some(true));
        assert_eq!(aggregate(&[ok, failed], 2), Some(false));
    }

    fn app(json: Value) -> App {
        let mut a: App = serde_json::from_value(json).expect("app");
        a.normalize();
        a.version = Some(t(1));
        a.version_info = Some(stride_core::app::VersionInfo {
            last_scaling_at: t(1),
            last_config_change_at: t(1),
        });
        a
    }

    fn running(a: &App) -> Instance {
        let mut i = Instance::scheduled(&a.id, a.config_version(), t(2));
        i.condition = Condition::Running;
        i.since = t(3);
        i.incarnation = 1;
        i.host_ports = vec![31000];
        i.placement = Some(Placement {
            agent_id: "agent-1".into(),
            hostname: "h1".into(),
            attributes: Vec::new(),
        });
        i
    }

    fn leader(a: &App, n: usize) -> (LeaderState, Vec<InstanceId>) {
        let mut s = LeaderState::new(Tuning::default(), t(0));
        s.load_app(a.clone(), vec![t(1)]);
        let mut ids = Vec::new();
        for _ in 0..n {
            let i = running(a);
            ids.push(i.id.clone());
            s.load_instance(i);
        }
        (s, ids)
    }

    fn result(s: &LeaderState, id: &InstanceId, verdict: Verdict) -> CheckResult {
        let i = &s.instances[id];
        CheckResult {
            instance_id: id.clone(),
            task_id: i.task_id(),
            index: 0,
            app_version: i.app_version,
            verdict,
            started_at: None,
        }
    }

    fn event_types(fx: &Effects) -> Vec<String> {
        fx.batch
            .ops
            .iter()
            .filter_map(|op| match op {
                stride_store::Op::Event { body } => serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|v| v["eventType"].as_str().map(str::to_string)),
                _ => None,
            })
            .collect()
    }

    fn view(ids: &[&str]) -> Membership {
        let mut m = Membership::default();
        m.observe(ids.iter().map(|i| (i.to_string(), 0)).collect(), t(0));
        m
    }

    fn owner_of(id: &InstanceId, members: &[String]) -> String {
        check_owner(&id.0, CheckSlot::Health(0), members)
            .unwrap_or("")
            .to_string()
    }

    #[test]
    fn results_count_only_from_the_owner_and_for_the_current_task() {
        let a = app(
            json!({"id": "/web", "cmd": "x", "healthChecks": [{"protocol": "HTTP",
            "gracePeriodSeconds": 0, "intervalSeconds": 1, "maxConsecutiveFailures": 1}]}),
        );
        let (mut s, ids) = leader(&a, 1);
        let id = &ids[0];
        let members = view(&["r1", "r2"]);
        let owner = owner_of(id, members.members());
        let other = if owner == "r1" { "r2" } else { "r1" };

        let (fx, ack) = s.apply_health_reports(
            other,
            0,
            &members,
            vec![result(&s, id, Verdict::Healthy)],
            vec![],
            t(10),
        );
        assert_eq!(
            ack,
            Ack {
                not_owner: 1,
                ..Ack::default()
            }
        );
        assert!(fx.batch.is_empty());
        let mut stale = result(&s, id, Verdict::Healthy);
        stale.task_id = id.task_id(7);
        let (_, ack) = s.apply_health_reports(&owner, 0, &members, vec![stale], vec![], t(10));
        assert_eq!(
            ack,
            Ack {
                stale: 1,
                ..Ack::default()
            }
        );

        let (fx, ack) = s.apply_health_reports(
            &owner,
            0,
            &members,
            vec![result(&s, id, Verdict::Healthy)],
            vec![],
            t(10),
        );
        assert_eq!(ack.accepted, 1);
        assert_eq!(
            event_types(&fx),
            vec![
                "health_status_changed_event",
                "instance_health_changed_event"
            ]
        );
        assert_eq!(s.instances[id].healthy, Some(true));
        assert_eq!(s.instances[id].health.len(), 1);
        s.check_index();
        assert_eq!(s.idx.counts(&a.id).running_healthy, 1);

        // max = 1: the first failure is counted, the second kills.
        let (fx, _) = s.apply_health_reports(
            &owner,
            0,
            &members,
            vec![result(&s, id, fail("500 Internal Server Error"))],
            vec![],
            t(11),
        );
        assert_eq!(
            event_types(&fx),
            vec![
                "failed_health_check_event",
                "health_status_changed_event",
                "instance_health_changed_event"
            ]
        );
        assert!(fx.commands.is_empty());
        assert_eq!(s.instances[id].healthy, Some(false));
        let (fx, _) = s.apply_health_reports(
            &owner,
            0,
            &members,
            vec![result(&s, id, fail("500 Internal Server Error"))],
            vec![],
            t(12),
        );
        assert_eq!(
            event_types(&fx),
            vec!["failed_health_check_event", "unhealthy_instance_kill_event"]
        );
        assert_eq!(
            fx.commands,
            vec![(
                "agent-1".to_string(),
                AgentCommand::Kill {
                    task_id: id.task_id(1),
                    grace_ms: 3_000
                }
            )]
        );
        let failure = &s.task_failures[&a.id];
        assert_eq!(failure["state"], "TASK_KILLED");
        assert_eq!(failure["taskId"], id.task_id(1));
        assert_eq!(
            failure["message"],
            "Task was killed since health check failed. Reason: 500 Internal Server Error"
        );
        assert_eq!(s.instances[id].goal, Goal::Running, "killed to be replaced");
        // Still failing before the kill lands: the kill is sent again, not announced again.
        let (fx, _) = s.apply_health_reports(
            &owner,
            0,
            &members,
            vec![result(&s, id, fail("500"))],
            vec![],
            t(13),
        );
        assert_eq!(event_types(&fx), vec!["failed_health_check_event"]);
        assert_eq!(fx.commands.len(), 1);
    }

    #[test]
    fn readiness_is_set_by_the_owner_and_sticks() {
        let a = app(
            json!({"id": "/web", "cmd": "x", "portDefinitions": [{"port": 0, "name": "http-api"}],
            "readinessChecks": [{"preserveLastResponse": true}]}),
        );
        let (mut s, ids) = leader(&a, 1);
        let id = ids[0].clone();
        deploying(&mut s, &a);
        let members = view(&["only"]);
        let report = |ready: bool, status: u16| ReadinessReport {
            instance_id: id.clone(),
            task_id: id.task_id(1),
            app_version: t(1),
            name: "readinessCheck".into(),
            ready,
            status,
            content_type: "text/plain".into(),
            body: "warming up".into(),
            started_at: None,
        };
        let (fx, ack) =
            s.apply_health_reports("only", 0, &members, vec![], vec![report(false, 503)], t(10));
        assert_eq!(ack.accepted, 1);
        assert_eq!(s.ready.get(&id), Some(&false));
        let shown = json!({"name": "readinessCheck", "taskId": id.task_id(1), "ready": false,
            "lastResponse": {"status": 503, "contentType": "text/plain", "body": "warming up"}});
        assert_eq!(s.readiness_results[&id], shown);
        assert_eq!(
            stored_readiness(&fx),
            vec![(
                id.0.clone(),
                Some(json!({"appId": "/web", "appVersion": t(1), "result": shown}))
            )],
            "persisted for /v2/deployments"
        );
        let (fx, _) =
            s.apply_health_reports("only", 0, &members, vec![], vec![report(false, 503)], t(11));
        assert!(
            stored_readiness(&fx).is_empty(),
            "written only when it changes"
        );
        let (_, ack) = s.apply_health_reports(
            "someone-else",
            0,
            &members,
            vec![],
            vec![report(true, 200)],
            t(11),
        );
        assert_eq!(ack.not_owner, 1);
        s.apply_health_reports("only", 0, &members, vec![], vec![report(true, 200)], t(12));
        assert_eq!(s.ready.get(&id), Some(&true));
        s.apply_health_reports("only", 0, &members, vec![], vec![report(false, 500)], t(13));
        assert_eq!(
            s.ready.get(&id),
            Some(&true),
            "ready the first time, for good"
        );
        assert_eq!(s.readiness_results[&id]["ready"], true);
        // The deployment is over: the stored results go.
        s.deployments.clear();
        let fx = s.sync_health_checks(&mut Registry::new(), &[], t(14));
        assert_eq!(stored_readiness(&fx), vec![(id.0.clone(), None)]);
        assert!(s.readiness_results.is_empty());
        // A new leader deletes what an earlier term left behind.
        let fx = s.sync_health_checks(&mut Registry::new(), &["web.old".to_string()], t(15));
        assert_eq!(stored_readiness(&fx), vec![("web.old".to_string(), None)]);
    }

    #[test]
    fn readiness_outside_a_deployment_is_not_stored() {
        let a = app(
            json!({"id": "/web", "cmd": "x", "portDefinitions": [{"port": 0, "name": "http-api"}],
            "readinessChecks": [{}]}),
        );
        let (mut s, ids) = leader(&a, 1);
        let id = ids[0].clone();
        let report = ReadinessReport {
            instance_id: id.clone(),
            task_id: id.task_id(1),
            app_version: t(1),
            name: "readinessCheck".into(),
            ready: false,
            status: 503,
            content_type: String::new(),
            body: String::new(),
            started_at: None,
        };
        let (fx, ack) =
            s.apply_health_reports("only", 0, &view(&["only"]), vec![], vec![report], t(10));
        assert_eq!(ack.accepted, 1);
        assert!(fx.batch.is_empty());
        assert!(s.readiness_results.is_empty());
    }

    fn deploying(s: &mut LeaderState, a: &App) {
        use stride_core::deployment::{Action, ActionKind, DeploymentPlan};
        s.deployments.insert(
            "d1".into(),
            DeploymentPlan {
                id: "d1".into(),
                version: t(1),
                steps: vec![vec![Action::new(ActionKind::StartApplication, &a.id)]],
                original: BTreeMap::new(),
                target: [(a.id.clone(), a.clone())].into_iter().collect(),
                current_step: Some(0),
            },
        );
    }

    /// Readiness results put (`Some`) and deleted (`None`) by a batch, by instance.
    fn stored_readiness(fx: &Effects) -> Vec<(String, Option<Value>)> {
        fx.batch
            .ops
            .iter()
            .filter_map(|op| match op {
                stride_store::Op::Put {
                    collection,
                    key,
                    value,
                } if collection == READINESS_RESULTS => {
                    Some((key.clone(), serde_json::from_slice(value).ok()))
                }
                stride_store::Op::Delete { collection, key } if collection == READINESS_RESULTS => {
                    Some((key.clone(), None))
                }
                _ => None,
            })
            .collect()
    }

    fn live(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn results_count_only_under_the_current_registration_and_after_the_ownership_began() {
        let a = app(
            json!({"id": "/web", "cmd": "x", "healthChecks": [{"protocol": "HTTP",
            "gracePeriodSeconds": 0, "intervalSeconds": 1, "maxConsecutiveFailures": 1}]}),
        );
        let (mut s, ids) = leader(&a, 1);
        let id = ids[0].clone();
        let mut m = Membership::default();
        m.observe(live(&[("r1", 100), ("r2", 200)]), t(10));
        let owner = owner_of(&id, m.members());
        let other = if owner == "r1" { "r2" } else { "r1" };
        let reg = |r: &str| if r == "r1" { 100 } else { 200 };
        let base = result(&s, &id, Verdict::Healthy);
        let at = |secs: i64, verdict: Verdict| CheckResult {
            started_at: Some(t(secs)),
            verdict,
            ..base.clone()
        };
        // The owner under its registration, for a check started after the view began.
        let (_, ack) = s.apply_health_reports(
            &owner,
            reg(&owner),
            &m,
            vec![at(11, Verdict::Healthy)],
            vec![],
            t(11),
        );
        assert_eq!(ack.accepted, 1);
        // The owner is cut off, its lease lapses, the other takes over; it comes back under a
        // new registration. What it found before is refused, whatever it names.
        m.observe(live(&[(other, reg(other))]), t(20));
        let (_, ack) = s.apply_health_reports(
            &owner,
            reg(&owner),
            &m,
            vec![at(19, fail("timeout"))],
            vec![],
            t(21),
        );
        assert_eq!(ack.not_owner, 1, "not a member any more");
        let mut back = live(&[(other, reg(other))]);
        back.insert(owner.clone(), 999);
        m.observe(back, t(30));
        for (registration, started) in [(reg(&owner), 19), (reg(&owner), 31), (999, 25)] {
            let (fx, ack) = s.apply_health_reports(
                &owner,
                registration,
                &m,
                vec![at(started, fail("timeout"))],
                vec![],
                t(31),
            );
            assert_eq!(
                ack.accepted, 0,
                "registration {registration}, started {started}"
            );
            assert!(fx.batch.is_empty() && fx.commands.is_empty());
        }
        assert_eq!(s.instances[&id].health[0].consecutive_failures, 0);
        // Under the new registration, a check started since it is the owner again counts.
        let (_, ack) =
            s.apply_health_reports(&owner, 999, &m, vec![at(31, fail("500"))], vec![], t(32));
        assert_eq!(ack.accepted, 1);
        assert_eq!(s.instances[&id].health[0].consecutive_failures, 1);
        // The one that covered meanwhile is refused from the moment the owner is back.
        let (_, ack) = s.apply_health_reports(
            other,
            reg(other),
            &m,
            vec![at(29, fail("500"))],
            vec![],
            t(33),
        );
        assert_eq!(ack.not_owner, 1);
    }

    #[test]
    fn ownership_lasts_across_views_that_leave_the_check_where_it_was() {
        let mut m = Membership::default();
        m.observe(live(&[("a", 1)]), t(1));
        let key = "web.instance-1";
        let slot = CheckSlot::Health(0);
        assert_eq!(m.owned_since("a", 1, key, slot), Some(t(1)));
        assert_eq!(
            m.owned_since("a", 2, key, slot),
            None,
            "another registration"
        );
        // A replica joins and leaves again: if it never took the check, the owner kept it.
        let mut joined = live(&[("a", 1), ("b", 1)]);
        m.observe(joined.clone(), t(5));
        m.observe(live(&[("a", 1)]), t(9));
        let kept = check_owner(key, slot, &["a".to_string(), "b".to_string()]) == Some("a");
        let expected = if kept { t(1) } else { t(9) };
        assert_eq!(m.owned_since("a", 1, key, slot), Some(expected));
        // The same view again is no change.
        m.observe(live(&[("a", 1)]), t(12));
        assert_eq!(m.owned_since("a", 1, key, slot), Some(expected));
        // Only so many views are kept; what is older counts from the oldest kept.
        for k in 0..(VIEWS_KEPT as i64) {
            joined.insert("c".into(), k);
            m.observe(joined.clone(), t(100 + k));
        }
        assert_eq!(m.views.len(), VIEWS_KEPT);
        assert_eq!(m.provenance("zz", 1, key, slot, None), Provenance::NotOwner);
    }

    #[test]
    fn checks_are_announced_per_version_and_retired_with_their_last_instance() {
        let a = app(
            json!({"id": "/web", "cmd": "x", "healthChecks": [{"protocol": "TCP"}, {"protocol": "HTTP"}]}),
        );
        let (mut s, ids) = leader(&a, 1);
        let mut known = Registry::new();
        let fx = s.sync_health_checks(&mut known, &[], t(5));
        assert_eq!(
            event_types(&fx),
            vec!["add_health_check_event", "add_health_check_event"]
        );
        assert!(
            s.sync_health_checks(&mut known, &[], t(6)).batch.is_empty(),
            "announced once"
        );
        // A new configuration: its checks are added; the old ones stay while the old task runs.
        let mut b = a.clone();
        b.version_info = Some(stride_core::app::VersionInfo {
            last_scaling_at: t(7),
            last_config_change_at: t(7),
        });
        s.load_app(b, vec![t(1), t(7)]);
        assert_eq!(
            event_types(&s.sync_health_checks(&mut known, &[], t(8))).len(),
            2
        );
        assert_eq!(known[&a.id].len(), 2);
        s.instances.remove(&ids[0]);
        let fx = s.sync_health_checks(&mut known, &[], t(9));
        assert_eq!(
            event_types(&fx),
            vec!["remove_health_check_event", "remove_health_check_event"]
        );
        assert_eq!(known[&a.id].len(), 1);
    }
}
