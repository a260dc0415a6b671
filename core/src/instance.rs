//! Instances and their tasks: ids in Marathon's formats, the conditions a task goes through,
//! and the goal the scheduler holds for each instance.
//!
//! An instance is one wanted copy of an app. Its goal is what the user wants (keep it running,
//! or get rid of it); its condition is what the agent last reported. The scheduler moves the
//! second towards the first.

use std::fmt;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::path::PathId;
use crate::time::Timestamp;

/// `<safePath>.instance-<uuid>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(pub String);

impl InstanceId {
    pub fn new(app: &PathId) -> Self {
        Self(format!(
            "{}.instance-{}",
            app.safe_path(),
            uuid::Uuid::new_v4()
        ))
    }

    /// The task id of the given incarnation: `<instanceId>._app.<n>`.
    pub fn task_id(&self, incarnation: u32) -> String {
        format!("{}._app.{incarnation}", self.0)
    }

    pub fn app_id(&self) -> PathId {
        let safe = self.0.split('.').next().unwrap_or("");
        PathId::from_safe_path(safe)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn task_id_patterns() -> &'static [Regex; 4] {
    static RE: OnceLock<[Regex; 4]> = OnceLock::new();
    RE.get_or_init(|| {
        let c = |p: &str| Regex::new(p).unwrap_or_else(|e| panic!("task id pattern: {e}"));
        [
            c(r"^(.+)\.(instance-|marathon-)([^_\.]+)[\._]([^\.]+)\.(\d+)$"),
            c(r"^(.+)\.(instance-|marathon-)([^_\.]+)[\._]([^\.]+)$"),
            c(r"^(.+)([\._])([^_\.]+)(\.)(\d+)$"),
            c(r"^(.+)([\._])([^_\.]+)$"),
        ]
    })
}

/// The current format as the leader writes it (`<safePath>.instance-<uuid>._app.<n>`) without
/// the patterns: what the first of them finds, or `None` to leave it to them. A new leader
/// parses every task of every agent that registers again.
fn parse_current(raw: &str) -> Option<ParsedTaskId> {
    // The first pattern's greedy `(.+)` ends at the last marker after which the rest matches;
    // the rest has no `.` before its final `.<n>` but one, so the last marker is the one.
    let at = [".instance-", ".marathon-"]
        .iter()
        .filter_map(|m| raw.rfind(m))
        .max()
        .filter(|at| *at > 0)?;
    let safe = &raw[..at];
    let (marker, rest) = raw[at + 1..].split_at("instance-".len());
    let (uuid, rest) = rest.split_at(rest.find(['.', '_'])?);
    let (middle, n) = rest[1..].split_once('.')?;
    let plain = !uuid.is_empty()
        && !middle.is_empty()
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit());
    plain.then(|| ParsedTaskId {
        app_id: PathId::from_safe_path(safe),
        instance_id: InstanceId(format!("{safe}.{marker}{uuid}")),
        incarnation: n.parse().ok(),
    })
}

/// A parsed task id: the instance it belongs to and, where the format has one, its incarnation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedTaskId {
    pub instance_id: InstanceId,
    pub app_id: PathId,
    pub incarnation: Option<u32>,
}

/// Parses any of Marathon's task id formats (current and legacy).
pub fn parse_task_id(raw: &str) -> Option<ParsedTaskId> {
    if let Some(parsed) = parse_current(raw) {
        return Some(parsed);
    }
    let [current, current_no_attempt, legacy_attempt, legacy] = task_id_patterns();
    if let Some(c) = current.captures(raw) {
        let instance = format!("{}.{}{}", &c[1], &c[2], &c[3]);
        return Some(ParsedTaskId {
            app_id: PathId::from_safe_path(&c[1]),
            instance_id: InstanceId(instance),
            incarnation: c[5].parse().ok(),
        });
    }
    if let Some(c) = current_no_attempt.captures(raw) {
        let instance = format!("{}.{}{}", &c[1], &c[2], &c[3]);
        return Some(ParsedTaskId {
            app_id: PathId::from_safe_path(&c[1]),
            instance_id: InstanceId(instance),
            incarnation: None,
        });
    }
    // Instance ids themselves (`<safePath>.instance-<uuid>`) are accepted where a task id is.
    if let Some(rest) = raw
        .split_once(".instance-")
        .or_else(|| raw.split_once(".marathon-"))
    {
        if !rest.1.contains('.') && !rest.0.is_empty() {
            return Some(ParsedTaskId {
                app_id: PathId::from_safe_path(rest.0),
                instance_id: InstanceId(raw.to_string()),
                incarnation: None,
            });
        }
    }
    for re in [legacy_attempt, legacy] {
        if let Some(c) = re.captures(raw) {
            return Some(ParsedTaskId {
                app_id: PathId::from_safe_path(&c[1]),
                instance_id: InstanceId(format!("{}{}{}", &c[1], &c[2], &c[3])),
                incarnation: c.get(5).and_then(|m| m.as_str().parse().ok()),
            });
        }
    }
    None
}

/// What the scheduler wants for an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Goal {
    Running,
    Stopped,
    Decommissioned,
}

/// Marathon's internal instance conditions (reference §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Condition {
    Scheduled,
    Provisioned,
    Staging,
    Starting,
    Running,
    Killing,
    Unreachable,
    UnreachableInactive,
    Finished,
    Killed,
    Error,
    Failed,
    Gone,
    Dropped,
    Unknown,
}

impl Condition {
    /// Holds resources on an agent (or is expected to).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Condition::Provisioned
                | Condition::Staging
                | Condition::Starting
                | Condition::Running
                | Condition::Killing
                | Condition::Unreachable
        )
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Condition::Finished
                | Condition::Killed
                | Condition::Error
                | Condition::Failed
                | Condition::Gone
                | Condition::Dropped
                | Condition::Unknown
        )
    }

    /// Conditions that lengthen the launch backoff (TASK_KILLED does not).
    pub fn counts_as_failure(self) -> bool {
        matches!(
            self,
            Condition::Failed
                | Condition::Error
                | Condition::Finished
                | Condition::Gone
                | Condition::Dropped
        )
    }

    /// Conditions recorded as `lastTaskFailure`.
    pub fn is_failure_for_record(self) -> bool {
        matches!(
            self,
            Condition::Failed
                | Condition::Error
                | Condition::Gone
                | Condition::Dropped
                | Condition::Unknown
        )
    }

    pub fn is_lost(self) -> bool {
        matches!(
            self,
            Condition::Gone | Condition::Unreachable | Condition::Unknown | Condition::Dropped
        )
    }

    /// The Mesos state name shown in task JSON.
    pub fn mesos_state(self) -> &'static str {
        match self {
            Condition::Scheduled | Condition::Provisioned | Condition::Staging => "TASK_STAGING",
            Condition::Starting => "TASK_STARTING",
            Condition::Running => "TASK_RUNNING",
            Condition::Killing => "TASK_KILLING",
            Condition::Unreachable | Condition::UnreachableInactive => "TASK_UNREACHABLE",
            Condition::Finished => "TASK_FINISHED",
            Condition::Killed => "TASK_KILLED",
            Condition::Error => "TASK_ERROR",
            Condition::Failed => "TASK_FAILED",
            Condition::Gone => "TASK_GONE",
            Condition::Dropped => "TASK_DROPPED",
            Condition::Unknown => "TASK_UNKNOWN",
        }
    }

    /// The name used in `instance_changed_event`.
    pub fn name(self) -> &'static str {
        match self {
            Condition::Scheduled => "Scheduled",
            Condition::Provisioned => "Provisioned",
            Condition::Staging => "Staging",
            Condition::Starting => "Starting",
            Condition::Running => "Running",
            Condition::Killing => "Killing",
            Condition::Unreachable => "Unreachable",
            Condition::UnreachableInactive => "UnreachableInactive",
            Condition::Finished => "Finished",
            Condition::Killed => "Killed",
            Condition::Error => "Error",
            Condition::Failed => "Failed",
            Condition::Gone => "Gone",
            Condition::Dropped => "Dropped",
            Condition::Unknown => "Unknown",
        }
    }

    /// Weight used to pick which instances to kill first when scaling down.
    pub fn kill_weight(self) -> u8 {
        match self {
            Condition::Unreachable => 0,
            Condition::Staging | Condition::Scheduled | Condition::Provisioned => 1,
            Condition::Starting => 2,
            Condition::Running => 3,
            _ => 4,
        }
    }
}

/// Where an instance was placed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub agent_id: String,
    pub hostname: String,
    /// The agent's attributes when the instance was placed, for constraint evaluation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<(String, String)>,
}

/// One health check's state for an instance (reference §7.4).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub alive: bool,
    pub consecutive_failures: u32,
    pub first_success: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    pub last_failure: Option<Timestamp>,
    pub last_failure_cause: Option<String>,
}

/// An instance as the scheduler keeps it and the store persists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    pub app_id: PathId,
    /// The app's configuration version this instance runs (`lastConfigChangeAt`).
    pub app_version: Timestamp,
    pub goal: Goal,
    pub condition: Condition,
    /// When the condition last changed.
    pub since: Timestamp,
    /// The task incarnation; 0 while nothing was launched.
    pub incarnation: u32,
    pub placement: Option<Placement>,
    pub staged_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    #[serde(default)]
    pub host_ports: Vec<u32>,
    #[serde(default)]
    pub ip_addresses: Vec<String>,
    #[serde(default)]
    pub message: String,
    /// Aggregate health: `None` without checks or results.
    #[serde(default)]
    pub healthy: Option<bool>,
    #[serde(default)]
    pub health: Vec<HealthRecord>,
    #[serde(default)]
    pub unreachable_since: Option<Timestamp>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Has persistent volumes on its agent: relaunched there, in place, with the next
    /// incarnation; its volumes are destroyed only when it is decommissioned.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resident: bool,
}

impl Instance {
    /// A new instance waiting for an offer.
    pub fn scheduled(app_id: &PathId, app_version: Timestamp, now: Timestamp) -> Self {
        Self {
            id: InstanceId::new(app_id),
            app_id: app_id.clone(),
            app_version,
            goal: Goal::Running,
            condition: Condition::Scheduled,
            since: now,
            incarnation: 0,
            placement: None,
            staged_at: None,
            started_at: None,
            host_ports: Vec::new(),
            ip_addresses: Vec::new(),
            message: String::new(),
            healthy: None,
            health: Vec::new(),
            unreachable_since: None,
            exit_code: None,
            resident: false,
        }
    }

    pub fn task_id(&self) -> String {
        self.id.task_id(self.incarnation.max(1))
    }

    pub fn is_launched(&self) -> bool {
        self.incarnation > 0 && self.placement.is_some()
    }

    pub fn agent_id(&self) -> Option<&str> {
        self.placement.as_ref().map(|p| p.agent_id.as_str())
    }

    /// When the instance became active, for kill ordering.
    pub fn active_since(&self) -> Timestamp {
        self.started_at.or(self.staged_at).unwrap_or(self.since)
    }

    /// Counts toward `instances`.
    pub fn counts_toward_scale(&self) -> bool {
        self.goal == Goal::Running && self.condition != Condition::UnreachableInactive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_round_trip() {
        let app = PathId::parse("/my-group/my-app");
        let inst = InstanceId::new(&app);
        let task = inst.task_id(3);
        let parsed = parse_task_id(&task).expect("parses");
        assert_eq!(parsed.instance_id, inst);
        assert_eq!(parsed.app_id, app);
        assert_eq!(parsed.incarnation, Some(3));
        assert_eq!(inst.app_id(), app);
    }

    #[test]
    fn the_current_format_parses_as_the_patterns_parse_it() {
        let uuid = "e8456182-88b1-42fc-b818-2de53254f7f1";
        let ids = [
            format!("prod_web.instance-{uuid}._app.1"),
            format!("prod_web.instance-{uuid}._app.4294967296"),
            format!("a.instance-{uuid}._app.12"),
            format!("a.b.marathon-{uuid}.x_y.3"),
            format!("a.instance-x.instance-{uuid}._app.2"),
            format!("a.instance-{uuid}.b.instance-{uuid}._app.2"),
            format!("a.instance-{uuid}._app.2.3"),
            format!("a.instance-{uuid}._app."),
            format!("a.instance-{uuid}._app.٣"),
            format!("a.instance-{uuid}._.7"),
            format!("a.instance-{uuid}.._app.7"),
            format!(".instance-{uuid}._app.1"),
            "a.instance-._app.1".to_string(),
            "a.instance-".to_string(),
            "x.marathon-y".to_string(),
        ];
        for raw in &ids {
            let [current, ..] = task_id_patterns();
            let by_pattern = current.captures(raw).map(|c| ParsedTaskId {
                app_id: PathId::from_safe_path(&c[1]),
                instance_id: InstanceId(format!("{}.{}{}", &c[1], &c[2], &c[3])),
                incarnation: c[5].parse().ok(),
            });
            if let Some(fast) = parse_current(raw) {
                assert_eq!(Some(fast), by_pattern, "{raw}");
            }
        }
        assert!(parse_current(&ids[0]).is_some());
        assert!(parse_current(&ids[3]).is_some());
    }

    #[test]
    fn legacy_task_ids_parse() {
        let p = parse_task_id("my-app.5d2a9b2c-4c30-11e5-98c1-be5b2935a987").expect("legacy");
        assert_eq!(p.app_id, PathId::parse("/my-app"));
        let p = parse_task_id("grp_app.instance-564bd685-4c30-11e5-98c1-be5b2935a987._app.1")
            .expect("current");
        assert_eq!(p.app_id, PathId::parse("/grp/app"));
        assert!(parse_task_id("nonsense").is_none());
    }
}
