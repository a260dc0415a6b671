//! Metric names of the scheduler, described once at start-up.

pub const LEADER: &str = "stride_scheduler_leader";
pub const ELECTIONS_WON: &str = "stride_scheduler_elections_won_total";
pub const APPS_ACTIVE: &str = "stride_apps_active";
pub const DEPLOYMENTS_ACTIVE: &str = "stride_deployments_active";
pub const INSTANCES_RUNNING: &str = "stride_instances_running";
pub const INSTANCES_STAGED: &str = "stride_instances_staged";
pub const AGENTS_CONNECTED: &str = "stride_agents_connected";
pub const TASKS_LAUNCHED: &str = "stride_tasks_launched_total";
pub const STATUS_UPDATES: &str = "stride_task_updates_total";
pub const COMMITS: &str = "stride_store_commits_total";
pub const COMMIT_OPS: &str = "stride_store_commit_ops_total";
pub const COMMIT_SECONDS: &str = "stride_store_commit_seconds";

pub fn describe() {
    metrics::describe_gauge!(LEADER, "1 while this scheduler leads");
    metrics::describe_counter!(ELECTIONS_WON, "Terms this scheduler has led");
    metrics::describe_gauge!(APPS_ACTIVE, "Apps in the root group");
    metrics::describe_gauge!(DEPLOYMENTS_ACTIVE, "Deployments running");
    metrics::describe_gauge!(INSTANCES_RUNNING, "Instances in TASK_RUNNING");
    metrics::describe_gauge!(INSTANCES_STAGED, "Instances launched and not yet running");
    metrics::describe_gauge!(AGENTS_CONNECTED, "Agents with a live session");
    metrics::describe_counter!(TASKS_LAUNCHED, "Tasks sent to agents");
    metrics::describe_counter!(STATUS_UPDATES, "Task status updates received");
    metrics::describe_counter!(COMMITS, "Fenced batches written to the store");
    metrics::describe_counter!(COMMIT_OPS, "Writes in those batches");
    metrics::describe_histogram!(COMMIT_SECONDS, "Time to write one batch");
}
