//! Every metric the agent exports, by name. The library records through the `metrics` facade
//! and never installs a recorder: the binary (or `stride dev`) decides where metrics go.
//! Gauges are only ever `.set()`, since the StatsD exporter drops increments of gauges.

use metrics::{describe_counter, describe_gauge, Unit};

/// Gauge: tasks whose process is running (including those being killed).
pub const TASKS_RUNNING: &str = "stride_agent_tasks_running";
/// Counter: launch commands accepted (whether or not the process could start).
pub const TASKS_LAUNCHED: &str = "stride_agent_tasks_launched_total";
/// Counter: tasks that reached a terminal state, labelled with [`LABEL_STATE`].
pub const TASK_EXITS: &str = "stride_agent_task_exits_total";
/// Counter: commands refused because they came from an older leader epoch.
pub const COMMANDS_REFUSED: &str = "stride_agent_commands_refused_total";
/// Counter: sessions registered with a leader.
pub const REGISTRATIONS: &str = "stride_agent_registrations_total";
/// Gauge: 1 while registered with a leader, else 0.
pub const CONNECTED: &str = "stride_agent_connected";

/// Label of [`TASK_EXITS`]: `finished`, `failed`, `killed`, `error` or `lost`.
pub const LABEL_STATE: &str = "state";

/// Describes the metrics to whatever recorder is installed.
pub fn describe() {
    describe_gauge!(
        TASKS_RUNNING,
        Unit::Count,
        "Tasks whose process is running on this agent"
    );
    describe_counter!(TASKS_LAUNCHED, Unit::Count, "Launch commands accepted");
    describe_counter!(
        TASK_EXITS,
        Unit::Count,
        "Tasks that reached a terminal state, by state"
    );
    describe_counter!(
        COMMANDS_REFUSED,
        Unit::Count,
        "Commands refused because of a stale leader epoch"
    );
    describe_counter!(
        REGISTRATIONS,
        Unit::Count,
        "Sessions registered with a scheduler leader"
    );
    describe_gauge!(
        CONNECTED,
        Unit::Count,
        "1 while registered with a scheduler leader"
    );
}
