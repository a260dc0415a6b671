//! Every metric lb-sync emits, named once. Labels stay bounded (a result, a transport); never
//! an app or task id.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// HAProxy reloads; label `result` (`ok`, `failed`: HAProxy refused it and kept the old
/// workers, `error`: no answer in time).
pub const RELOADS: &str = "stride_lb_sync_reloads_total";
pub const RELOAD_SECONDS: &str = "stride_lb_sync_reload_duration_seconds";
/// Membership changes applied through the runtime API (each a batch of commands).
pub const RUNTIME_UPDATES: &str = "stride_lb_sync_runtime_updates_total";
pub const RUNTIME_COMMANDS: &str = "stride_lb_sync_runtime_commands_total";
pub const RENDER_SECONDS: &str = "stride_lb_sync_render_duration_seconds";
pub const CONFIG_WRITES: &str = "stride_lb_sync_config_writes_total";
pub const BACKENDS: &str = "stride_lb_sync_backends";
pub const SERVERS: &str = "stride_lb_sync_servers";
/// Apps left out of HAProxy because their labels made the configuration invalid.
pub const EXCLUDED_APPS: &str = "stride_lb_sync_excluded_apps";
/// Old HAProxy workers still finishing connections after the last reload.
pub const OLD_WORKERS: &str = "stride_lb_sync_haproxy_old_workers";
/// Reads of the store; label `result` (`ok`, `error`).
pub const STORE_READS: &str = "stride_lb_sync_store_reads_total";
/// Unix time of the last successful read: staleness shows as this falling behind.
pub const LAST_SUCCESS: &str = "stride_lb_sync_source_last_success_timestamp_seconds";
pub const CORRUPT_RECORDS: &str = "stride_lb_sync_corrupt_records_total";
/// DNS queries answered; label `transport` (`udp`, `tcp`).
pub const DNS_QUERIES: &str = "stride_lb_sync_dns_queries_total";
pub const DNS_FORWARDED: &str = "stride_lb_sync_dns_forwarded_total";
pub const DNS_RECORDS: &str = "stride_lb_sync_dns_records";
pub const DNS_UPDATES: &str = "stride_lb_sync_dns_updates_total";
pub const DNS_UPDATE_FAILURES: &str = "stride_lb_sync_dns_update_failures_total";
/// 1 while RFC 2136 pushes succeed, 0 after a failure until the next success.
pub const DNS_UPDATE_HEALTHY: &str = "stride_lb_sync_dns_update_healthy";

/// Registers descriptions with the recorder; called once at start-up.
pub fn describe() {
    describe_counter!(RELOADS, "HAProxy reloads, by result");
    describe_histogram!(
        RELOAD_SECONDS,
        Unit::Seconds,
        "Time for a reload to show a new worker"
    );
    describe_counter!(
        RUNTIME_UPDATES,
        "Membership changes applied without a reload"
    );
    describe_counter!(RUNTIME_COMMANDS, "Commands sent to HAProxy's runtime API");
    describe_histogram!(
        RENDER_SECONDS,
        Unit::Seconds,
        "Time to render the configuration"
    );
    describe_counter!(CONFIG_WRITES, "Configuration files written");
    describe_gauge!(BACKENDS, "HAProxy backends rendered");
    describe_gauge!(SERVERS, "HAProxy servers (serving tasks) rendered");
    describe_gauge!(
        EXCLUDED_APPS,
        "Apps left out because HAProxy refused their labels"
    );
    describe_gauge!(OLD_WORKERS, "Old HAProxy workers after the last reload");
    describe_counter!(STORE_READS, "Snapshots read from the store, by result");
    describe_gauge!(LAST_SUCCESS, "Unix time of the last successful store read");
    describe_counter!(
        CORRUPT_RECORDS,
        "Store records skipped because they do not parse"
    );
    describe_counter!(DNS_QUERIES, "DNS queries answered, by transport");
    describe_counter!(DNS_FORWARDED, "DNS queries forwarded upstream");
    describe_gauge!(DNS_RECORDS, "DNS records served");
    describe_counter!(DNS_UPDATES, "RFC 2136 UPDATE messages accepted");
    describe_counter!(DNS_UPDATE_FAILURES, "RFC 2136 pushes that failed");
    describe_gauge!(
        DNS_UPDATE_HEALTHY,
        "Whether the last RFC 2136 push succeeded"
    );
}
