//! Telemetry set up once per process: `tracing` logs (text or JSON) and one `metrics` recorder
//! that fans out to StatsD (when configured) and to a Prometheus registry, which also renders
//! Marathon's `/metrics` JSON.
//!
//! Several services can share a process (`stride dev`, in-process tests), so initialisation is
//! idempotent: the first call installs, later calls get the same [`MetricsHandle`].

use std::collections::BTreeMap;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Logging and metrics settings shared by every service's configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `text` (default) or `json`.
    pub log_format: LogFormat,
    /// A tracing filter such as `info,stride_scheduler=debug`; `RUST_LOG` style.
    pub log_filter: Option<String>,
    /// `host:port` of a StatsD server; metrics go there when set.
    pub statsd: Option<String>,
    /// Prefix of StatsD metric names.
    pub statsd_prefix: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid StatsD address {0:?}: expected host:port")]
    StatsdAddress(String),
    #[error("cannot start the StatsD exporter: {0}")]
    Statsd(String),
}

/// Renders the process's metrics.
#[derive(Clone)]
pub struct MetricsHandle {
    prometheus: PrometheusHandle,
}

static METRICS: OnceLock<MetricsHandle> = OnceLock::new();
static TRACING: OnceLock<()> = OnceLock::new();

/// Changes the log filter of the running process.
type Reloader = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static RELOAD: OnceLock<Reloader> = OnceLock::new();
static FILTER: parking_lot::Mutex<String> = parking_lot::Mutex::new(String::new());

/// Installs the tracing subscriber (once per process).
pub fn init_tracing(config: &TelemetryConfig) {
    TRACING.get_or_init(|| {
        let directives = config.log_filter.clone().unwrap_or_else(|| "info".into());
        let filter = tracing_subscriber::EnvFilter::try_new(&directives)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        *FILTER.lock() = directives;
        fn reloader<L, S>(handle: tracing_subscriber::reload::Handle<L, S>) -> Reloader
        where
            L: From<tracing_subscriber::EnvFilter> + Send + Sync + 'static,
            S: Send + Sync + 'static,
        {
            Box::new(move |d: &str| {
                let f = tracing_subscriber::EnvFilter::try_new(d).map_err(|e| e.to_string())?;
                handle.reload(f).map_err(|e| e.to_string())
            })
        }
        match config.log_format {
            LogFormat::Text => {
                let b = tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .with_writer(std::io::stderr)
                    .with_filter_reloading();
                let handle = b.reload_handle();
                if b.try_init().is_ok() {
                    let _ = RELOAD.set(reloader(handle));
                }
            }
            LogFormat::Json => {
                let b = tracing_subscriber::fmt()
                    .json()
                    .with_env_filter(filter)
                    .with_writer(std::io::stderr)
                    .with_filter_reloading();
                let handle = b.reload_handle();
                if b.try_init().is_ok() {
                    let _ = RELOAD.set(reloader(handle));
                }
            }
        }
    });
}

/// The log filter in force (`info,stride_scheduler=debug`).
pub fn log_filter() -> String {
    FILTER.lock().clone()
}

/// Replaces the log filter of this process.
pub fn set_log_filter(directives: &str) -> Result<(), String> {
    let reload = RELOAD
        .get()
        .ok_or("logging is not set up in this process")?;
    reload(directives)?;
    *FILTER.lock() = directives.to_string();
    Ok(())
}

/// Installs the metrics recorder (once per process) and returns the handle that renders it.
pub fn init_metrics(config: &TelemetryConfig) -> Result<MetricsHandle, TelemetryError> {
    if let Some(h) = METRICS.get() {
        return Ok(h.clone());
    }
    let prom = PrometheusBuilder::new().build_recorder();
    let handle = MetricsHandle {
        prometheus: prom.handle(),
    };
    let mut fanout = metrics_util::layers::FanoutBuilder::default().add_recorder(prom);
    if let Some(addr) = &config.statsd {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)))
            .ok_or_else(|| TelemetryError::StatsdAddress(addr.clone()))?;
        let statsd = metrics_exporter_statsd::StatsdBuilder::from(host, port)
            .histogram_is_timer()
            .build(config.statsd_prefix.as_deref().or(Some("stride")))
            .map_err(|e| TelemetryError::Statsd(e.to_string()))?;
        fanout = fanout.add_recorder(statsd);
    }
    if metrics::set_global_recorder(fanout.build()).is_err() {
        // Another recorder won a race; ours still renders what it saw.
        tracing::warn!("a metrics recorder was already installed");
    }
    Ok(METRICS.get_or_init(|| handle).clone())
}

impl MetricsHandle {
    /// Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        self.prometheus.run_upkeep();
        self.prometheus.render()
    }

    /// Marathon's Dropwizard-style JSON (`{"version","counters","gauges","histograms",...}`),
    /// derived from the same registry.
    pub fn render_marathon_json(&self) -> Value {
        marathon_json(&self.render_prometheus())
    }
}

/// Converts Prometheus text to Marathon's `/metrics` JSON. Counters become `{"count"}`, gauges
/// `{"value"}`, summaries `{"count","p50",...}`. Labelled series keep their labels in the name.
pub fn marathon_json(text: &str) -> Value {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut counters = Map::new();
    let mut gauges = Map::new();
    let mut histograms: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(n), Some(t)) = (it.next(), it.next()) {
                types.insert(n.to_string(), t.to_string());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let base = name.trim_end_matches("_sum").trim_end_matches("_count");
        let kind = types
            .get(name)
            .or_else(|| types.get(base))
            .map(String::as_str)
            .unwrap_or("untyped");
        let pretty = |n: &str, labels: &str| -> String {
            let mut s = n.replace('_', ".");
            for part in labels
                .split(',')
                .filter(|p| !p.is_empty() && !p.starts_with("quantile="))
            {
                if let Some((_, v)) = part.split_once('=') {
                    s.push('.');
                    s.push_str(v.trim_matches('"'));
                }
            }
            s
        };
        match kind {
            "counter" => {
                counters.insert(pretty(name, labels), json!({ "count": value }));
            }
            "gauge" => {
                gauges.insert(pretty(name, labels), json!({ "value": value }));
            }
            "summary" | "histogram" => {
                let entry = histograms.entry(pretty(base, labels)).or_default();
                if name.ends_with("_count") {
                    entry.insert("count".into(), json!(value));
                } else if name.ends_with("_sum") {
                    entry.insert("sum".into(), json!(value));
                } else if let Some(q) = labels.split(',').find_map(|p| p.strip_prefix("quantile="))
                {
                    let key = match q.trim_matches('"') {
                        "0" => "min".to_string(),
                        "1" => "max".to_string(),
                        "0.5" => "p50".to_string(),
                        "0.9" => "p90".to_string(),
                        "0.95" => "p95".to_string(),
                        "0.99" => "p99".to_string(),
                        "0.999" => "p999".to_string(),
                        other => format!("q{other}"),
                    };
                    entry.insert(key, json!(value));
                }
            }
            _ => {
                gauges.insert(pretty(name, labels), json!({ "value": value }));
            }
        }
    }
    json!({
        "version": "4.0.0",
        "counters": counters,
        "gauges": gauges,
        "histograms": histograms,
        "meters": {},
        "timers": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_becomes_marathon_json() {
        let text = "# TYPE stride_apps_active gauge\nstride_apps_active 3\n# TYPE stride_http_requests counter\nstride_http_requests{method=\"get\"} 7\n# TYPE stride_latency summary\nstride_latency{quantile=\"0.5\"} 0.1\nstride_latency_count 4\n";
        let v = marathon_json(text);
        assert_eq!(v["gauges"]["stride.apps.active"]["value"], 3.0);
        assert_eq!(v["counters"]["stride.http.requests.get"]["count"], 7.0);
        assert_eq!(v["histograms"]["stride.latency"]["count"], 4.0);
        assert_eq!(v["histograms"]["stride.latency"]["p50"], 0.1);
    }
}
