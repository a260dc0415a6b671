//! What to check, as a pure function of stored state: an app's checks ([`AppChecks`], built
//! once per app definition) applied to one of its instances give that instance's [`Target`]s.
//!
//! An instance is checked only while its condition is Running and it runs the app's current
//! configuration version (reference §7.2, §5.6). The address is the instance's agent hostname
//! with the host port at `portIndex` (or the fixed `port`); a readiness check uses the port
//! named by `portName`. COMMAND checks go to the agent's own API instead.

use std::sync::Arc;
use std::time::Duration;

use stride_core::app::{App, HealthCheck, ReadinessCheck};
use stride_core::instance::{Condition, Instance};
use stride_core::rendezvous::CheckSlot;
use stride_core::Timestamp;

/// How a check is carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Http {
        tls: bool,
        path: String,
        ignore_1xx: bool,
    },
    Tcp,
    /// Run by the task's agent in the task's context.
    Command {
        value: String,
    },
}

/// One of an app's `healthChecks`, ready to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSpec {
    /// As written in the app (`HTTP`, `MESOS_TCP`, …), for metrics and logs.
    pub protocol: &'static str,
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    /// Mesos-level checks (COMMAND, MESOS_*) start `delaySeconds` after the task started.
    pub delay: Option<Duration>,
    /// A fixed port (`port`) or an index into the task's host ports (`portIndex`).
    pub port: PortRef,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    Fixed(u16),
    Index(usize),
    None,
}

/// The app's readiness check, ready to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadinessSpec {
    pub name: String,
    pub tls: bool,
    pub path: String,
    /// Index of the port named `portName` among the task's host ports.
    pub port_index: Option<usize>,
    pub interval: Duration,
    pub timeout: Duration,
    pub ready_codes: Vec<u16>,
    pub preserve_last_response: bool,
}

/// Either kind of check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    Health(Arc<HealthSpec>),
    Readiness(Arc<ReadinessSpec>),
}

impl Spec {
    pub fn interval(&self) -> Duration {
        match self {
            Spec::Health(h) => h.interval,
            Spec::Readiness(r) => r.interval,
        }
    }
    pub fn protocol(&self) -> &'static str {
        match self {
            Spec::Health(h) => h.protocol,
            Spec::Readiness(r) if r.tls => "HTTPS",
            Spec::Readiness(_) => "HTTP",
        }
    }
}

/// Every check of one app definition.
#[derive(Clone, Debug, PartialEq)]
pub struct AppChecks {
    /// The configuration version the checks belong to.
    pub version: Timestamp,
    /// By index into `healthChecks`; `None` for a check Stride cannot run (unknown protocol).
    pub health: Vec<Option<Arc<HealthSpec>>>,
    pub readiness: Option<Arc<ReadinessSpec>>,
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(0) as u64)
}

fn health_spec(hc: &HealthCheck) -> Option<HealthSpec> {
    let (protocol, mesos): (&'static str, bool) = match hc.protocol.as_str() {
        "HTTP" => ("HTTP", false),
        "HTTPS" => ("HTTPS", false),
        "TCP" => ("TCP", false),
        "COMMAND" => ("COMMAND", true),
        "MESOS_HTTP" => ("MESOS_HTTP", true),
        "MESOS_HTTPS" => ("MESOS_HTTPS", true),
        "MESOS_TCP" => ("MESOS_TCP", true),
        _ => return None,
    };
    let path = || {
        let p = hc.path.clone().unwrap_or_else(|| "/".into());
        if p.starts_with('/') {
            p
        } else {
            format!("/{p}")
        }
    };
    let probe = match protocol {
        "HTTP" | "MESOS_HTTP" => Probe::Http {
            tls: false,
            path: path(),
            ignore_1xx: hc.ignore_http1xx,
        },
        "HTTPS" | "MESOS_HTTPS" => Probe::Http {
            tls: true,
            path: path(),
            ignore_1xx: hc.ignore_http1xx,
        },
        "TCP" | "MESOS_TCP" => Probe::Tcp,
        _ => Probe::Command {
            value: hc.command.as_ref()?.value.clone(),
        },
    };
    let port = match (hc.port, hc.port_index) {
        _ if matches!(probe, Probe::Command { .. }) => PortRef::None,
        (Some(p), _) => PortRef::Fixed(u16::try_from(p).ok()?),
        (None, Some(i)) => PortRef::Index(usize::try_from(i).ok()?),
        (None, None) => PortRef::Index(0),
    };
    Some(HealthSpec {
        protocol,
        probe,
        // An interval of 0 would spin; Marathon's validation requires at least 1 s anyway.
        interval: secs(hc.interval_seconds).max(Duration::from_millis(100)),
        timeout: secs(hc.timeout_seconds).max(Duration::from_millis(100)),
        delay: mesos.then(|| secs(hc.delay_seconds)),
        port,
    })
}

fn readiness_spec(app: &App, rc: &ReadinessCheck) -> ReadinessSpec {
    let port_index = app
        .port_names()
        .iter()
        .position(|n| n.as_deref() == Some(rc.port_name.as_str()));
    ReadinessSpec {
        name: rc.name.clone(),
        tls: rc.protocol == "HTTPS",
        path: if rc.path.starts_with('/') {
            rc.path.clone()
        } else {
            format!("/{}", rc.path)
        },
        port_index,
        interval: secs(rc.interval_seconds).max(Duration::from_millis(100)),
        timeout: secs(rc.timeout_seconds).max(Duration::from_millis(100)),
        ready_codes: if rc.http_status_codes_for_ready.is_empty() {
            vec![200]
        } else {
            rc.http_status_codes_for_ready.clone()
        },
        preserve_last_response: rc.preserve_last_response,
    }
}

impl AppChecks {
    pub fn of(app: &App) -> Self {
        Self {
            version: app.config_version(),
            health: app
                .health_checks
                .iter()
                .map(health_spec)
                .map(|s| s.map(Arc::new))
                .collect(),
            readiness: app
                .readiness_checks
                .first()
                .map(|rc| Arc::new(readiness_spec(app, rc))),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.health.iter().all(Option::is_none) && self.readiness.is_none()
    }

    pub fn has_command_checks(&self) -> bool {
        self.health
            .iter()
            .flatten()
            .any(|h| matches!(h.probe, Probe::Command { .. }))
    }
}

/// One check of one task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub instance_id: String,
    pub task_id: String,
    pub slot: CheckSlot,
    pub app_version: Timestamp,
    pub spec: Spec,
    pub host: String,
    /// 0 for COMMAND checks.
    pub port: u16,
    /// The agent's API (`host:port`), for COMMAND checks.
    pub agent_api: Option<String>,
    /// Not to be run before this (Mesos-level checks: task start + `delaySeconds`).
    pub not_before: Timestamp,
}

impl Target {
    /// Same check of the same task at the same address: its schedule can stay.
    pub fn same_as(&self, other: &Target) -> bool {
        let same_spec = match (&self.spec, &other.spec) {
            (Spec::Health(a), Spec::Health(b)) => Arc::ptr_eq(a, b) || a == b,
            (Spec::Readiness(a), Spec::Readiness(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        };
        same_spec
            && self.task_id == other.task_id
            && self.host == other.host
            && self.port == other.port
            && self.agent_api == other.agent_api
            && self.app_version == other.app_version
    }
}

/// Whether an instance is to be checked at all.
pub fn is_checked(checks: &AppChecks, i: &Instance) -> bool {
    i.condition == Condition::Running
        && i.app_version == checks.version
        && i.is_launched()
        && i.placement.is_some()
}

/// The targets of one instance; `agent_api` gives an agent's API address by agent id.
pub fn targets_of<'a>(
    checks: &AppChecks,
    i: &Instance,
    agent_api: impl Fn(&str) -> Option<&'a str>,
) -> Vec<Target> {
    let Some(placement) = i.placement.as_ref().filter(|_| is_checked(checks, i)) else {
        return Vec::new();
    };
    let task_id = i.task_id();
    let host_port = |idx: usize| i.host_ports.get(idx).and_then(|p| u16::try_from(*p).ok());
    let mut out = Vec::with_capacity(checks.health.len() + 1);
    for (idx, spec) in checks.health.iter().enumerate() {
        let Some(spec) = spec else { continue };
        let (port, agent) = match (&spec.probe, &spec.port) {
            (Probe::Command { .. }, _) => {
                let Some(api) = agent_api(&placement.agent_id).filter(|a| !a.is_empty()) else {
                    continue;
                };
                (0, Some(api.to_string()))
            }
            (_, PortRef::Fixed(p)) => (*p, None),
            (_, PortRef::Index(n)) => match host_port(*n) {
                Some(p) => (p, None),
                None => continue,
            },
            (_, PortRef::None) => continue,
        };
        let not_before = match spec.delay {
            Some(d) => i
                .started_at
                .unwrap_or(i.since)
                .plus_millis(d.as_millis() as i64),
            None => Timestamp(0),
        };
        out.push(Target {
            instance_id: i.id.0.clone(),
            task_id: task_id.clone(),
            slot: CheckSlot::Health(idx as u32),
            app_version: i.app_version,
            spec: Spec::Health(spec.clone()),
            host: placement.hostname.clone(),
            port,
            agent_api: agent,
            not_before,
        });
    }
    if let Some(r) = &checks.readiness {
        if let Some(port) = r.port_index.and_then(host_port) {
            out.push(Target {
                instance_id: i.id.0.clone(),
                task_id,
                slot: CheckSlot::Readiness,
                app_version: i.app_version,
                spec: Spec::Readiness(r.clone()),
                host: placement.hostname.clone(),
                port,
                agent_api: None,
                not_before: Timestamp(0),
            });
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod fixtures {
    use stride_core::instance::Placement;

    use super::*;

    /// A normalized app from JSON, with a config version.
    pub fn app(json: serde_json::Value) -> App {
        let mut app: App = serde_json::from_value(json).expect("app json");
        app.normalize();
        app.version = Some(Timestamp(1_000));
        app.version_info = Some(stride_core::app::VersionInfo {
            last_scaling_at: Timestamp(1_000),
            last_config_change_at: Timestamp(1_000),
        });
        app
    }

    /// A Running instance of `app` on agent `a1` (host `h1`) with the given host ports.
    pub fn running(app: &App, ports: &[u32]) -> Instance {
        let mut i = Instance::scheduled(&app.id, app.config_version(), Timestamp(2_000));
        i.condition = Condition::Running;
        i.incarnation = 1;
        i.started_at = Some(Timestamp(3_000));
        i.since = Timestamp(3_000);
        i.host_ports = ports.to_vec();
        i.placement = Some(Placement {
            agent_id: "a1".into(),
            hostname: "h1".into(),
            attributes: Vec::new(),
        });
        i
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::fixtures::{app, running};
    use super::*;

    #[test]
    fn every_protocol_and_default() {
        let a = app(json!({
            "id": "/web", "cmd": "x", "portDefinitions": [{"port": 0}, {"port": 0, "name": "admin"}],
            "healthChecks": [
                {"protocol": "HTTP", "path": "health"},
                {"protocol": "HTTPS", "portIndex": 1, "ignoreHttp1xx": true, "intervalSeconds": 5},
                {"protocol": "TCP", "port": 9999},
                {"protocol": "COMMAND", "command": {"value": "true"}},
                {"protocol": "MESOS_HTTP", "delaySeconds": 2},
                {"protocol": "MESOS_TCP", "portIndex": 1},
                {"protocol": "UDP"}
            ],
            "readinessChecks": [{"portName": "admin", "path": "ready", "httpStatusCodesForReady": [200, 204]}]
        }));
        let checks = AppChecks::of(&a);
        assert_eq!(checks.health.len(), 7);
        assert!(checks.health[6].is_none(), "an unknown protocol is not run");
        let h0 = checks.health[0].clone().expect("http");
        assert_eq!(
            h0.probe,
            Probe::Http {
                tls: false,
                path: "/health".into(),
                ignore_1xx: false
            }
        );
        assert_eq!(h0.interval, Duration::from_secs(60));
        assert_eq!(h0.timeout, Duration::from_secs(20));
        assert_eq!(h0.delay, None, "Marathon-level checks ignore delaySeconds");
        assert_eq!(h0.port, PortRef::Index(0));

        let i = running(&a, &[31000, 31001]);
        let t = targets_of(&checks, &i, |agent| (agent == "a1").then_some("h1:5052"));
        let summary: Vec<(CheckSlot, &str, u16, Option<&str>)> = t
            .iter()
            .map(|t| (t.slot, t.spec.protocol(), t.port, t.agent_api.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (CheckSlot::Health(0), "HTTP", 31000, None),
                (CheckSlot::Health(1), "HTTPS", 31001, None),
                (CheckSlot::Health(2), "TCP", 9999, None),
                (CheckSlot::Health(3), "COMMAND", 0, Some("h1:5052")),
                (CheckSlot::Health(4), "MESOS_HTTP", 31000, None),
                (CheckSlot::Health(5), "MESOS_TCP", 31001, None),
                (CheckSlot::Readiness, "HTTP", 31001, None),
            ]
        );
        assert!(t.iter().all(|t| t.host == "h1" && t.task_id == i.task_id()));
        assert_eq!(t[4].not_before, Timestamp(5_000), "started + delaySeconds");
        let Spec::Readiness(r) = &t[6].spec else {
            panic!("readiness")
        };
        assert_eq!(r.path, "/ready");
        assert_eq!(r.ready_codes, vec![200, 204]);
        assert_eq!(r.interval, Duration::from_secs(30));
        assert_eq!(r.timeout, Duration::from_secs(10));
    }

    #[test]
    fn only_running_tasks_of_the_current_version_are_checked() {
        let a = app(json!({"id": "/web", "cmd": "x", "healthChecks": [{"protocol": "TCP"}]}));
        let checks = AppChecks::of(&a);
        let mut i = running(&a, &[31000]);
        assert_eq!(targets_of(&checks, &i, |_| None).len(), 1);
        i.condition = Condition::Staging;
        assert!(targets_of(&checks, &i, |_| None).is_empty());
        i.condition = Condition::Running;
        i.app_version = Timestamp(500);
        assert!(targets_of(&checks, &i, |_| None).is_empty());
        i.app_version = a.config_version();
        i.host_ports.clear();
        assert!(
            targets_of(&checks, &i, |_| None).is_empty(),
            "no host port yet: nothing to check"
        );
    }

    #[test]
    fn a_command_check_needs_the_agents_api() {
        let a = app(json!({"id": "/c", "cmd": "x",
            "healthChecks": [{"protocol": "COMMAND", "command": {"value": "test -f ok"}}]}));
        let checks = AppChecks::of(&a);
        let i = running(&a, &[]);
        assert!(targets_of(&checks, &i, |_| Some("")).is_empty());
        let t = targets_of(&checks, &i, |_| Some("10.0.0.5:5052"));
        assert_eq!(
            t[0].spec,
            Spec::Health(Arc::new(HealthSpec {
                protocol: "COMMAND",
                probe: Probe::Command {
                    value: "test -f ok".into()
                },
                interval: Duration::from_secs(60),
                timeout: Duration::from_secs(20),
                delay: Some(Duration::from_secs(15)),
                port: PortRef::None,
            }))
        );
    }
}
