//! lb-sync's configuration: one typed struct, loaded defaults → file (JSON) → environment
//! (`STRIDE_LB_SYNC_<FIELD>`, `__` between nested fields, e.g.
//! `STRIDE_LB_SYNC_DNS__TTL=10`) → flags (applied by `main.rs`). Unknown keys are rejected at
//! every layer; durations are written as `10s`, `500ms`, `2m`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use stride_core::layers::{env_layer, merge};
use stride_telemetry::TelemetryConfig;

/// Prefix of the environment variables that configure lb-sync.
pub const ENV_PREFIX: &str = "STRIDE_LB_SYNC_";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// After a change is noticed, how long to wait for more before reading the store, so that a
    /// burst of events (a deployment touching fifty instances) costs one read and one apply.
    #[serde(with = "duration_str")]
    pub debounce: Duration,
    /// A full re-read of the store even when no event arrived: a safety net against a missed
    /// event, never the main path.
    #[serde(with = "duration_str")]
    pub resync_interval: Duration,
    /// Deadline of one read of the store; a read that misses it counts as a failure and the
    /// last good state stays published.
    #[serde(with = "duration_str")]
    pub store_timeout: Duration,
    pub haproxy: HaproxyConfig,
    pub dns: DnsConfig,
    /// Logs and metrics (used by the binary).
    pub telemetry: TelemetryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(30),
            resync_interval: Duration::from_secs(30),
            store_timeout: Duration::from_secs(5),
            haproxy: HaproxyConfig::default(),
            dns: DnsConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// The HAProxy side: what is rendered, where it is written, and how HAProxy is run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HaproxyConfig {
    pub enabled: bool,
    /// Groups this load balancer serves (marathon-lb's `--group`); `*` serves every app.
    pub groups: Vec<String>,
    /// The group of an app without an `HAPROXY_GROUP` label. Empty: such apps are in no group
    /// (marathon-lb's behaviour), reachable only through a `*` load balancer.
    pub default_group: String,
    /// Expose a service port only when `HAPROXY_{n}_ENABLED` is true (marathon-lb's
    /// `--strict-mode`).
    pub strict_mode: bool,
    /// The configuration file lb-sync writes (temp file + rename in the same directory).
    pub config_file: PathBuf,
    /// The `haproxy` executable, for `haproxy -c` and to run HAProxy.
    pub binary: PathBuf,
    /// Run HAProxy as a child in master-worker mode (`-W -S <master_socket>`). When false, an
    /// HAProxy started elsewhere (systemd) must read `config_file` and expose `master_socket`.
    pub manage_process: bool,
    /// The master CLI socket (`-S`): reloads and `show proc`.
    pub master_socket: PathBuf,
    /// The worker's admin socket (`stats socket ... level admin`): runtime server updates.
    pub admin_socket: PathBuf,
    /// Render the shared vhost frontends `marathon_http_in` and `marathon_https_in`
    /// (marathon-lb's `--dont-bind-http-https` when false). `marathon_http_appid_in` is
    /// rendered either way, as marathon-lb does.
    pub bind_http_https: bool,
    pub http_bind: String,
    pub https_bind: String,
    pub appid_bind: String,
    /// Bind address of per-service-port frontends unless `HAPROXY_{n}_BIND_ADDR` says otherwise.
    pub default_bind_addr: String,
    /// Certificates of `marathon_https_in` (`crt` each); without any, and without an app's
    /// `HAPROXY_{n}_SSL_CERT`, that frontend is left out (it could not bind).
    pub ssl_certs: Vec<String>,
    /// `listen stats` (stats page, `/metrics`, `/_haproxy_health_check`); `None` leaves it out.
    pub stats_bind: Option<String>,
    /// `hard-stop-after`: how long an old worker may keep serving long connections after a
    /// reload before it is stopped.
    #[serde(with = "duration_str")]
    pub hard_stop_after: Duration,
    /// Structural changes are reloaded at most this often; membership changes never wait.
    #[serde(with = "duration_str")]
    pub min_reload_interval: Duration,
    /// How long a reload may take to show a new worker in `show proc`.
    #[serde(with = "duration_str")]
    pub reload_timeout: Duration,
    /// Free server slots kept in every backend, so that scaling up needs no reload.
    pub spare_slots: usize,
    /// Backend capacities are rounded up to a multiple of this.
    pub slot_block: usize,
    /// Translate Marathon health checks into HAProxy checks, as marathon-lb does.
    pub health_checks: bool,
    /// Apps never exposed (marathon-lb skipped its own app, `$FRAMEWORK_NAME`).
    pub skip_app_ids: Vec<String>,
    /// `maxconn` in `global`. Unset: HAProxy derives it from the file descriptor limit (a
    /// fixed value above what `ulimit -n` allows is fatal to HAProxy 2.6).
    pub maxconn: Option<u32>,
    /// Extra lines appended to `global` and `defaults` (e.g. `log stderr format raw local0`).
    pub extra_global: Vec<String>,
    pub extra_defaults: Vec<String>,
}

impl Default for HaproxyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            groups: vec!["external".into()],
            default_group: "external".into(),
            strict_mode: false,
            config_file: "/var/lib/stride-lb-sync/haproxy.cfg".into(),
            binary: "haproxy".into(),
            manage_process: true,
            master_socket: "/run/stride-lb-sync/haproxy-master.sock".into(),
            admin_socket: "/run/stride-lb-sync/haproxy.sock".into(),
            bind_http_https: true,
            http_bind: "*:80".into(),
            https_bind: "*:443".into(),
            appid_bind: "*:9091".into(),
            default_bind_addr: "*".into(),
            ssl_certs: Vec::new(),
            stats_bind: Some("*:9090".into()),
            hard_stop_after: Duration::from_secs(300),
            min_reload_interval: Duration::from_secs(2),
            reload_timeout: Duration::from_secs(15),
            spare_slots: 4,
            slot_block: 8,
            health_checks: true,
            skip_app_ids: Vec::new(),
            maxconn: None,
            extra_global: Vec::new(),
            extra_defaults: Vec::new(),
        }
    }
}

/// The DNS side: the embedded authoritative server and the optional RFC 2136 push.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    pub enabled: bool,
    /// Addresses the server answers on, UDP and TCP each.
    pub listen: Vec<String>,
    /// The zone served, Mesos-DNS's `domain`.
    pub domain: String,
    /// The label under the domain that holds the apps (`web.marathon.mesos`).
    pub framework: String,
    /// TTL of A and SRV records, in seconds. Short: records follow health within seconds.
    pub ttl: u32,
    /// TTL of negative answers (the SOA minimum), in seconds.
    pub negative_ttl: u32,
    /// The address `ns1.<domain>` resolves to.
    pub ns_address: String,
    /// Resolvers (`ip:port`) that names outside the domain are forwarded to; empty: REFUSED.
    pub forward: Vec<String>,
    #[serde(with = "duration_str")]
    pub forward_timeout: Duration,
    /// The UDP payload size advertised in EDNS answers.
    pub max_udp_payload: u16,
    /// Push the records to another DNS server with RFC 2136 updates.
    pub update: Option<UpdateConfig>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: vec!["0.0.0.0:53".into()],
            domain: "mesos".into(),
            framework: "marathon".into(),
            ttl: 5,
            negative_ttl: 5,
            ns_address: "127.0.0.1".into(),
            forward: Vec::new(),
            forward_timeout: Duration::from_secs(2),
            max_udp_payload: 1232,
            update: None,
        }
    }
}

/// Where and how records are pushed with RFC 2136 dynamic updates.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    /// The primary server, `ip:port`.
    pub server: String,
    /// The zone updated there; the served domain must be this zone or lie below it.
    pub zone: String,
    /// TSIG key name, algorithm (`hmac-sha256`, `hmac-sha384`, `hmac-sha512`) and secret
    /// (base64, as `tsig-keygen` prints it).
    pub key_name: String,
    pub key_algorithm: String,
    pub key_secret: String,
    /// Written as a TXT record beside every name lb-sync owns, so that a reconciliation after a
    /// restart removes only its own records and never touches anyone else's.
    pub owner_id: String,
    /// Records per UPDATE message.
    pub batch_records: usize,
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// Longest wait between retries after a failure.
    #[serde(with = "duration_str")]
    pub retry_max: Duration,
    /// A full reconciliation (read back from the server with AXFR where allowed) this often.
    #[serde(with = "duration_str")]
    pub reconcile_interval: Duration,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            server: "127.0.0.1:53".into(),
            zone: "mesos".into(),
            key_name: "stride".into(),
            key_algorithm: "hmac-sha256".into(),
            key_secret: String::new(),
            owner_id: "stride-lb-sync".into(),
            batch_records: 400,
            timeout: Duration::from_secs(5),
            retry_max: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl Config {
    /// Defaults, then the JSON file (if any), then `STRIDE_LB_SYNC_*` variables from `env`.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut merged =
            serde_json::to_value(Self::default()).map_err(|e| ConfigError::Invalid {
                origin: "defaults".into(),
                message: e.to_string(),
            })?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let layer: Value = serde_json::from_str(&text).map_err(|e| ConfigError::Invalid {
                origin: path.display().to_string(),
                message: e.to_string(),
            })?;
            merge(&mut merged, layer);
            Self::check(&merged, &path.display().to_string())?;
        }
        let env_layer = env_layer(env, ENV_PREFIX);
        if !env_layer.as_object().is_some_and(Map::is_empty) {
            merge(&mut merged, env_layer);
            Self::check(&merged, "environment")?;
        }
        let config = Self::check(&merged, "configuration")?;
        config.validate()?;
        Ok(config)
    }

    fn check(value: &Value, origin: &str) -> Result<Self, ConfigError> {
        serde_json::from_value(value.clone()).map_err(|e| ConfigError::Invalid {
            origin: origin.into(),
            message: e.to_string(),
        })
    }

    /// Checks across fields that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: "configuration".into(),
            message,
        };
        if self.haproxy.slot_block == 0 {
            return Err(invalid("haproxy.slot_block must be at least 1".into()));
        }
        if self.dns.domain.trim_matches('.').is_empty() {
            return Err(invalid("dns.domain must not be empty".into()));
        }
        if let Some(u) = &self.dns.update {
            let zone = u.zone.trim_end_matches('.').to_ascii_lowercase();
            let domain = self.dns.domain.trim_end_matches('.').to_ascii_lowercase();
            if !(domain == zone || domain.ends_with(&format!(".{zone}"))) {
                return Err(invalid(format!(
                    "dns.domain {domain:?} must be dns.update.zone {zone:?} or lie below it"
                )));
            }
        }
        Ok(())
    }
}

/// Durations as `500ms`, `10s`, `2m`, `1h` (a bare number is seconds).
pub use stride_core::duration::text as duration_str;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("lb.json");
        std::fs::write(
            &file,
            r#"{"haproxy": {"groups": ["internal"], "min_reload_interval": "500ms"}, "dns": {"ttl": 7}}"#,
        )
        .expect("write");
        let env: HashMap<String, String> = [
            ("STRIDE_LB_SYNC_DNS__TTL".to_string(), "9".to_string()),
            (
                "STRIDE_LB_SYNC_DNS__LISTEN".to_string(),
                r#"["127.0.0.1:5353"]"#.to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ]
        .into();
        let c = Config::load(Some(&file), &env).expect("valid");
        assert_eq!(c.haproxy.groups, vec!["internal".to_string()]);
        assert_eq!(c.haproxy.min_reload_interval, Duration::from_millis(500));
        assert_eq!(c.dns.ttl, 9);
        assert_eq!(c.dns.listen, vec!["127.0.0.1:5353".to_string()]);
        assert_eq!(c.dns.domain, "mesos");

        let bad: HashMap<String, String> =
            [("STRIDE_LB_SYNC_NOPE".to_string(), "1".to_string())].into();
        assert!(Config::load(None, &bad).is_err());
    }

    #[test]
    fn the_update_zone_must_contain_the_domain() {
        let mut c = Config::default();
        c.dns.update = Some(UpdateConfig {
            zone: "example.com".into(),
            ..UpdateConfig::default()
        });
        assert!(c.validate().is_err());
        c.dns.domain = "dc1.example.com".into();
        assert!(c.validate().is_ok());
    }
}
