//! The agent's own view of a task: what to run ([`LaunchSpec`]), the states it reports
//! ([`TaskState`]) and a reported state with its details ([`Status`]).
//!
//! These types are what the supervisor works with and what the task state files hold; the wire
//! types of `stride-proto` are converted to and from them in `wire`, at the edge.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Mesos' reason for a command that ended badly.
pub(crate) const REASON_COMMAND_FAILED: &str = "REASON_COMMAND_EXECUTOR_FAILED";
/// Mesos' reason for a task that could not be started.
pub(crate) const REASON_LAUNCH_FAILED: &str = "REASON_CONTAINER_LAUNCH_FAILED";
/// Mesos' reason for a task id the agent has never heard of (or has forgotten).
pub(crate) const REASON_TASK_UNKNOWN: &str = "REASON_TASK_UNKNOWN";
/// Mesos' reason for a task the kernel killed for going over its memory limit.
pub(crate) const REASON_MEMORY: &str = "REASON_CONTAINER_LIMITATION_MEMORY";

/// What to run, as the leader asked for it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct LaunchSpec {
    pub task_id: String,
    pub app_id: String,
    pub app_version: String,
    /// Shell command, run with `/bin/sh -c` (plain words as the program itself, see `shellcmd`);
    /// empty when `args` is the argv.
    pub cmd: String,
    pub args: Vec<String>,
    /// The app's variables (and its label variables), in the order given.
    pub env: Vec<(String, String)>,
    pub resources: TaskResources,
    /// Host ports in port-definition order, with their names (empty where unnamed).
    pub host_ports: Vec<u32>,
    pub port_names: Vec<String>,
    pub kill_grace_period_ms: u32,
    /// Unix user to run as; empty for the agent's own user.
    pub user: String,
    /// URIs to fetch into the sandbox before starting.
    pub fetch: Vec<FetchSpec>,
    /// The app's `container` as Marathon JSON (DOCKER or MESOS); empty without one.
    pub container_json: String,
    /// `HOST` as the scheduler placed it; empty means the agent's hostname.
    pub hostname: String,
    /// The app's labels (Docker containers carry them as container labels).
    #[serde(default)]
    pub labels: Vec<(String, String)>,
    /// `host`, `container/bridge` or `container`; empty (older schedulers) means `host`.
    #[serde(default)]
    pub network_mode: String,
}

/// One URI to fetch into the sandbox, as Marathon's `fetch` entries have it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct FetchSpec {
    pub uri: String,
    pub extract: bool,
    pub executable: bool,
    pub cache: bool,
    /// Where the file goes, relative to the sandbox; empty for the URI's file name.
    pub dest_path: String,
}

/// The resources a task was given, for `MARATHON_APP_RESOURCE_*`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskResources {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: u32,
}

/// The states this agent reports (a subset of Mesos' task states).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TaskState {
    /// Being prepared: URIs fetched, image pulled, container created.
    Starting,
    Running,
    Killing,
    Finished,
    Failed,
    Killed,
    Error,
    Lost,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            TaskState::Starting | TaskState::Running | TaskState::Killing
        )
    }

    /// A short label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Killing => "killing",
            TaskState::Finished => "finished",
            TaskState::Failed => "failed",
            TaskState::Killed => "killed",
            TaskState::Error => "error",
            TaskState::Lost => "lost",
        }
    }
}

/// One observation of a task, as reported to the leader.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Status {
    pub task_id: String,
    pub state: TaskState,
    pub message: String,
    pub reason: String,
    /// Milliseconds since the Unix epoch when the agent observed the state.
    pub timestamp_ms: u64,
    pub ports: Vec<u32>,
    pub exit_code: Option<i32>,
}

impl Status {
    /// A status observed now.
    pub fn now(task_id: &str, state: TaskState, message: impl Into<String>) -> Self {
        Self {
            task_id: task_id.to_string(),
            state,
            message: message.into(),
            reason: String::new(),
            timestamp_ms: now_ms(),
            ports: Vec::new(),
            exit_code: None,
        }
    }

    pub fn with_reason(mut self, reason: &str) -> Self {
        self.reason = reason.to_string();
        self
    }

    pub fn with_ports(mut self, ports: &[u32]) -> Self {
        self.ports = ports.to_vec();
        self
    }

    pub fn with_exit_code(mut self, code: Option<i32>) -> Self {
        self.exit_code = code;
        self
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The instance a task belongs to: its id without the `._app.<n>` incarnation suffix, so that
/// every relaunch of an instance (the scheduler bumps `n`) maps to the same instance.
pub(crate) fn instance_id(task_id: &str) -> &str {
    match task_id.rsplit_once("._app.") {
        Some((instance, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => instance,
        _ => task_id,
    }
}

/// Whether `id` can name a task's state file and sandbox directory: task ids come over the
/// network and must not escape `work_dir`.
pub(crate) fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id != "."
        && id != ".."
        && !id.contains(['/', '\0'])
        && !id.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_drop_the_incarnation() {
        assert_eq!(
            instance_id("web.instance-0b5b7cda-2a1c-11ee-be56-0242ac120002._app.3"),
            "web.instance-0b5b7cda-2a1c-11ee-be56-0242ac120002"
        );
        assert_eq!(instance_id("legacy-task"), "legacy-task");
        assert_eq!(instance_id("odd._app.x"), "odd._app.x");
    }

    #[test]
    fn task_ids_cannot_escape_the_work_dir() {
        assert!(valid_task_id(
            "web.instance-0b5b7cda-2a1c-11ee-be56-0242ac120002._app.1"
        ));
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a\0b"] {
            assert!(!valid_task_id(bad), "{bad:?}");
        }
    }
}
