//! Every metric a health-checker replica exports, by name. The library records through the
//! `metrics` facade and never installs a recorder: the binary decides where metrics go. Gauges
//! are only ever `.set()`, since the StatsD exporter drops increments of gauges.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Counter: checks run, labelled with [`LABEL_PROTOCOL`] and [`LABEL_KIND`].
pub const CHECKS: &str = "stride_health_checker_checks_total";
/// Counter: checks that found the task unhealthy (or not ready), same labels as [`CHECKS`].
pub const CHECK_FAILURES: &str = "stride_health_checker_check_failures_total";
/// Histogram: how long a check took, seconds, labelled with [`LABEL_PROTOCOL`].
pub const CHECK_SECONDS: &str = "stride_health_checker_check_duration_seconds";
/// Gauge: checks this replica owns (health and readiness).
pub const CHECKS_OWNED: &str = "stride_health_checker_checks_owned";
/// Gauge: live replicas, this one included.
pub const MEMBERS_LIVE: &str = "stride_health_checker_members_live";
/// Counter: result batches the leader answered.
pub const REPORTS: &str = "stride_health_checker_reports_total";
/// Counter: results the leader accepted.
pub const RESULTS_ACCEPTED: &str = "stride_health_checker_results_accepted_total";
/// Counter: results the leader refused, labelled with [`LABEL_REASON`] (`not_owner`, `stale`).
pub const RESULTS_REFUSED: &str = "stride_health_checker_results_refused_total";
/// Counter: results dropped before reaching a leader (none reachable, or the queue was full).
pub const RESULTS_DROPPED: &str = "stride_health_checker_results_dropped_total";

/// `HTTP`, `HTTPS`, `TCP`, `COMMAND`, `MESOS_HTTP`, `MESOS_HTTPS`, `MESOS_TCP`.
pub const LABEL_PROTOCOL: &str = "protocol";
/// `health` or `readiness`.
pub const LABEL_KIND: &str = "kind";
pub const LABEL_REASON: &str = "reason";

/// Describes the metrics to whatever recorder is installed.
pub fn describe() {
    describe_counter!(CHECKS, Unit::Count, "Checks run, by protocol and kind");
    describe_counter!(
        CHECK_FAILURES,
        Unit::Count,
        "Checks that found a task unhealthy or not ready, by protocol and kind"
    );
    describe_histogram!(CHECK_SECONDS, Unit::Seconds, "How long a check took");
    describe_gauge!(CHECKS_OWNED, Unit::Count, "Checks this replica owns");
    describe_gauge!(MEMBERS_LIVE, Unit::Count, "Live health-checker replicas");
    describe_counter!(
        REPORTS,
        Unit::Count,
        "Result batches answered by the leader"
    );
    describe_counter!(RESULTS_ACCEPTED, Unit::Count, "Results the leader accepted");
    describe_counter!(
        RESULTS_REFUSED,
        Unit::Count,
        "Results the leader refused, by reason"
    );
    describe_counter!(
        RESULTS_DROPPED,
        Unit::Count,
        "Results dropped before reaching a leader"
    );
}
