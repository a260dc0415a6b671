//! The JSON Marathon shows for apps with their status (`AppInfo`) and for tasks (reference
//! §3.14, §4). Pure functions of stored state, shared by every reader.

use serde_json::{json, Map, Value};

use crate::app::App;
use crate::instance::{Condition, Instance};

/// Which extras to add to an app (`embed=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Embed {
    pub tasks: bool,
    pub counts: bool,
    pub deployments: bool,
    pub readiness: bool,
    pub last_task_failure: bool,
    pub task_stats: bool,
}

impl Embed {
    /// What `GET /v2/apps/{id}` always embeds.
    pub fn single_app() -> Self {
        Self {
            tasks: true,
            counts: true,
            deployments: true,
            last_task_failure: true,
            ..Self::default()
        }
    }

    /// Parses `embed` values; the prefixes `apps.`, `app.` and `group.apps.` are interchangeable.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>, base: Embed) -> Self {
        let mut e = base;
        for v in values {
            let name = v
                .strip_prefix("group.apps.")
                .or_else(|| v.strip_prefix("apps."))
                .or_else(|| v.strip_prefix("app."))
                .unwrap_or(v);
            match name {
                "tasks" => {
                    e.tasks = true;
                    e.deployments = true;
                }
                "counts" => e.counts = true,
                "deployments" => e.deployments = true,
                "readiness" => e.readiness = true,
                "lastTaskFailure" => e.last_task_failure = true,
                "taskStats" => e.task_stats = true,
                "failures" => {
                    e.tasks = true;
                    e.last_task_failure = true;
                    e.deployments = true;
                }
                _ => {}
            }
        }
        e
    }
}

/// Instances that show as tasks: launched and not yet forgotten.
pub fn is_visible_task(i: &Instance) -> bool {
    i.is_launched() && (i.condition.is_active() || i.condition == Condition::UnreachableInactive)
}

/// A task as `/v2/apps/{id}/tasks` and `/v2/tasks` show it.
pub fn task_json(i: &Instance, service_ports: &[i64]) -> Value {
    let mut t = Map::new();
    t.insert("id".into(), Value::from(i.task_id()));
    t.insert("appId".into(), Value::from(i.app_id.to_string()));
    if let Some(p) = &i.placement {
        t.insert("host".into(), Value::from(p.hostname.clone()));
        t.insert("slaveId".into(), Value::from(p.agent_id.clone()));
    }
    t.insert("state".into(), Value::from(i.condition.mesos_state()));
    if i.condition.is_active() {
        if let Some(s) = i.staged_at {
            t.insert("stagedAt".into(), json!(s));
        }
        if let Some(s) = i.started_at {
            t.insert("startedAt".into(), json!(s));
        }
        t.insert("version".into(), json!(i.app_version));
        t.insert("ports".into(), json!(i.host_ports));
    }
    t.insert("servicePorts".into(), json!(service_ports));
    let ips: Vec<Value> = if i.ip_addresses.is_empty() {
        Vec::new()
    } else {
        i.ip_addresses
            .iter()
            .map(|ip| json!({ "ipAddress": ip, "protocol": "IPv4" }))
            .collect()
    };
    t.insert("ipAddresses".into(), Value::Array(ips));
    if !i.health.is_empty() {
        let results: Vec<Value> = i
            .health
            .iter()
            .map(|h| {
                let mut r = Map::new();
                r.insert("alive".into(), Value::from(h.alive));
                r.insert(
                    "consecutiveFailures".into(),
                    Value::from(h.consecutive_failures),
                );
                for (k, v) in [
                    ("firstSuccess", h.first_success),
                    ("lastSuccess", h.last_success),
                    ("lastFailure", h.last_failure),
                ] {
                    if let Some(v) = v {
                        r.insert(k.into(), json!(v));
                    }
                }
                if let Some(c) = &h.last_failure_cause {
                    r.insert("lastFailureCause".into(), Value::from(c.clone()));
                }
                r.insert("instanceId".into(), Value::from(i.id.0.clone()));
                Value::Object(r)
            })
            .collect();
        t.insert("healthCheckResults".into(), Value::Array(results));
    }
    t.insert("role".into(), Value::from("*"));
    Value::Object(t)
}

/// The four task counters of an app.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub staged: usize,
    pub running: usize,
    pub healthy: usize,
    pub unhealthy: usize,
}

pub fn counts<'a>(instances: impl IntoIterator<Item = &'a Instance>) -> Counts {
    let mut c = Counts::default();
    for i in instances {
        if i.condition == Condition::Scheduled || !i.is_launched() {
            continue;
        }
        match i.condition {
            Condition::Provisioned | Condition::Staging | Condition::Starting => c.staged += 1,
            Condition::Running => c.running += 1,
            _ => {}
        }
        if !i.health.is_empty() {
            if i.health.iter().all(|h| h.alive) {
                c.healthy += 1;
            } else {
                c.unhealthy += 1;
            }
        }
    }
    c
}

/// What a reader knows of an app besides its definition.
pub struct AppStatus<'a> {
    pub instances: Vec<&'a Instance>,
    pub deployment_ids: Vec<String>,
    pub last_task_failure: Option<&'a Value>,
    pub readiness: Vec<Value>,
}

/// `AppInfo`: the app's JSON with the extras `embed` asks for.
pub fn app_info(app: &App, status: &AppStatus<'_>, embed: Embed) -> Value {
    let mut v = app.to_json();
    let Some(o) = v.as_object_mut() else { return v };
    if embed.counts {
        let c = counts(status.instances.iter().copied());
        o.insert("tasksStaged".into(), Value::from(c.staged));
        o.insert("tasksRunning".into(), Value::from(c.running));
        o.insert("tasksHealthy".into(), Value::from(c.healthy));
        o.insert("tasksUnhealthy".into(), Value::from(c.unhealthy));
    }
    if embed.deployments {
        o.insert(
            "deployments".into(),
            Value::Array(
                status
                    .deployment_ids
                    .iter()
                    .map(|id| json!({ "id": id }))
                    .collect(),
            ),
        );
    }
    if embed.readiness {
        o.insert(
            "readinessCheckResults".into(),
            Value::Array(status.readiness.clone()),
        );
    }
    if embed.tasks {
        o.insert(
            "tasks".into(),
            Value::Array(
                status
                    .instances
                    .iter()
                    .filter(|i| is_visible_task(i))
                    .map(|i| task_json(i, &[]))
                    .collect(),
            ),
        );
    }
    if embed.last_task_failure {
        if let Some(f) = status.last_task_failure {
            o.insert("lastTaskFailure".into(), f.clone());
        }
    }
    if embed.task_stats {
        o.insert("tasksStats".into(), json!({}));
    }
    v
}
