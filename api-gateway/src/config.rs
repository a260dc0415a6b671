//! The gateway's configuration: one typed struct, loaded defaults → file (JSON) → environment
//! (`STRIDE_API_GATEWAY_<FIELD>`, `__` between nested fields) → flags (applied by `main.rs`).
//! Unknown keys are rejected at every layer; durations are written as `10s`, `500ms`, `2m`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use stride_core::layers::{env_layer, merge};
use stride_telemetry::TelemetryConfig;

/// Prefix of the environment variables that configure the gateway.
pub const ENV_PREFIX: &str = "STRIDE_API_GATEWAY_";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the binary binds (`run` takes an already bound listener and ignores it).
    pub listen: String,
    /// `host:port` under which clients reach this gateway. It is what `X-Marathon-Leader`,
    /// `GET /v2/leader` and `/v2/info` show: any gateway replica answers for the leader, so
    /// from a client's point of view the gateway it talks to *is* the leader. Unset: the
    /// listener's address, with `localhost` for an unspecified IP.
    pub advertised_address: Option<String>,
    /// Events each SSE client may fall behind by before it is disconnected (Marathon's
    /// `--event_stream_max_outstanding_messages`); also the number of recent events kept in
    /// memory to serve `Last-Event-ID` resumes without reading the store.
    pub event_buffer: usize,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub request_body_limit: usize,
    /// Interval of the bare `\r\n` heartbeat on SSE streams.
    #[serde(with = "duration_str")]
    pub event_heartbeat: Duration,
    /// Deadline of one gRPC call to the leader.
    #[serde(with = "duration_str")]
    pub leader_call_timeout: Duration,
    /// How often the gateway re-reads who leads, for the `X-Marathon-Leader` header.
    #[serde(with = "duration_str")]
    pub leader_poll_interval: Duration,
    /// How often the gateway brings the app listings' state up to date from the store's change
    /// feed (and renders what changed) between requests, so that a listing finds little left
    /// to do; `0s` leaves it all to the requests.
    #[serde(with = "duration_str")]
    pub snapshot_refresh_interval: Duration,
    /// HTTP worker threads; 0 means one per CPU.
    pub workers: usize,
    /// Logs and metrics (used by the binary; `run` takes an already-initialised handle).
    pub telemetry: TelemetryConfig,
    /// The security file (TOML, or JSON by its `.json` name): users, tokens, roles, an external
    /// authoriser, admission webhooks (`docs/security.md`). Without it the gateway refuses to
    /// start unless `insecure_no_auth` is set.
    pub auth_config: Option<PathBuf>,
    /// Serve the API with no authentication at all: anyone who reaches the port may run any
    /// command on every agent. Only ever set explicitly.
    pub insecure_no_auth: bool,
    /// Appends a JSON line for every change request to this file (also logged with the
    /// `stride_audit` target).
    pub audit_log: Option<PathBuf>,
    /// PEM CA of the cluster: with `tls_cert` and `tls_key`, the gateway dials schedulers and
    /// agents over mutual TLS.
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate (chain) of this gateway: serves HTTPS, and is the client certificate of
    /// its gRPC links when `tls_ca` is set.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            advertised_address: None,
            event_buffer: 1024,
            request_body_limit: 1024 * 1024,
            event_heartbeat: Duration::from_secs(10),
            leader_call_timeout: Duration::from_secs(30),
            leader_poll_interval: Duration::from_secs(1),
            snapshot_refresh_interval: Duration::from_millis(250),
            workers: 0,
            telemetry: TelemetryConfig::default(),
            auth_config: None,
            insecure_no_auth: false,
            audit_log: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
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
    /// Defaults with the given advertised address.
    pub fn new(advertised_address: impl Into<String>) -> Self {
        Self {
            advertised_address: Some(advertised_address.into()),
            ..Self::default()
        }
    }

    /// Defaults, then the JSON file (if any), then `STRIDE_API_GATEWAY_*` variables from `env`.
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
        Self::check(&merged, "configuration")
    }

    fn check(value: &Value, origin: &str) -> Result<Self, ConfigError> {
        serde_json::from_value(value.clone()).map_err(|e| ConfigError::Invalid {
            origin: origin.into(),
            message: e.to_string(),
        })
    }
}

/// Durations as `500ms`, `10s`, `2m`, `1h` (a bare number is seconds).
pub use stride_core::duration::text as duration_str;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_and_unknown_keys_fail() {
        let dir = std::env::temp_dir().join(format!("stride-gw-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("gw.json");
        std::fs::write(
            &file,
            r#"{"advertised_address": "gw:9000", "event_heartbeat": "2s"}"#,
        )
        .expect("write");
        let env: HashMap<String, String> = [
            (
                "STRIDE_API_GATEWAY_EVENT_BUFFER".to_string(),
                "64".to_string(),
            ),
            (
                "STRIDE_API_GATEWAY_TELEMETRY__STATSD".to_string(),
                "statsd:8125".to_string(),
            ),
            (
                "STRIDE_API_GATEWAY_LISTEN".to_string(),
                "127.0.0.1:9000".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ]
        .into();
        let c = Config::load(Some(&file), &env).expect("valid");
        assert_eq!(c.advertised_address.as_deref(), Some("gw:9000"));
        assert_eq!(c.listen, "127.0.0.1:9000");
        assert_eq!(c.event_heartbeat, Duration::from_secs(2));
        assert_eq!(c.event_buffer, 64);
        assert_eq!(c.telemetry.statsd.as_deref(), Some("statsd:8125"));
        assert_eq!(c.request_body_limit, 1024 * 1024);

        let bad: HashMap<String, String> =
            [("STRIDE_API_GATEWAY_NOPE".to_string(), "1".to_string())].into();
        assert!(Config::load(None, &bad).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(duration_str::parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration_str::parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration_str::parse("3"), Ok(Duration::from_secs(3)));
        assert!(duration_str::parse("soon").is_err());
        assert_eq!(duration_str::format(Duration::from_secs(10)), "10s");
        assert_eq!(duration_str::format(Duration::from_millis(1500)), "1500ms");
    }
}
