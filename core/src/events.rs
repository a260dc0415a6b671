//! Marathon's event bus payloads (reference §9.2). Each event is a JSON object with
//! `eventType` and `timestamp`; the constructors here are the one place their shapes are written.

use serde_json::{json, Map, Value};

use crate::app::App;
use crate::deployment::DeploymentPlan;
use crate::instance::Instance;
use crate::path::PathId;
use crate::time::Timestamp;

/// An event ready to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub event_type: &'static str,
    pub body: Value,
}

impl Event {
    fn new(event_type: &'static str, at: Timestamp, fields: Value) -> Self {
        let mut body = Map::new();
        if let Value::Object(f) = fields {
            body.extend(f);
        }
        body.insert("eventType".into(), Value::from(event_type));
        body.insert("timestamp".into(), Value::from(at.to_string()));
        Self {
            event_type,
            body: Value::Object(body),
        }
    }

    /// The app ids the event concerns, for filtering by permission.
    pub fn app_id(&self) -> Option<&str> {
        ["appId", "runSpecId"]
            .iter()
            .find_map(|k| self.body.get(*k).and_then(Value::as_str))
    }

    pub fn to_json_string(&self) -> String {
        self.body.to_string()
    }
}

pub fn api_post(at: Timestamp, client_ip: &str, uri: &str, app: &App) -> Event {
    Event::new(
        "api_post_event",
        at,
        json!({ "clientIp": client_ip, "uri": uri, "appDefinition": app.to_json() }),
    )
}

pub fn status_update(at: Timestamp, inst: &Instance) -> Event {
    Event::new(
        "status_update_event",
        at,
        json!({
            "slaveId": inst.agent_id().unwrap_or(""),
            "taskId": inst.task_id(),
            "taskStatus": inst.condition.mesos_state(),
            "message": inst.message,
            "appId": inst.app_id.to_string(),
            "host": inst.placement.as_ref().map_or("", |p| p.hostname.as_str()),
            "ipAddresses": inst.ip_addresses.iter().map(|ip| json!({"ipAddress": ip, "protocol": "IPv4"})).collect::<Vec<_>>(),
            "ports": inst.host_ports,
            "version": inst.app_version,
        }),
    )
}

pub fn instance_changed(at: Timestamp, inst: &Instance) -> Event {
    Event::new(
        "instance_changed_event",
        at,
        json!({
            "instanceId": inst.id.0,
            "condition": inst.condition.name(),
            "runSpecId": inst.app_id.to_string(),
            "agentId": inst.agent_id().unwrap_or(""),
            "host": inst.placement.as_ref().map_or("", |p| p.hostname.as_str()),
            "runSpecVersion": inst.app_version,
            "timestamp": at,
            "goal": format!("{:?}", inst.goal),
        }),
    )
}

pub fn instance_health_changed(at: Timestamp, inst: &Instance) -> Event {
    Event::new(
        "instance_health_changed_event",
        at,
        json!({
            "instanceId": inst.id.0,
            "runSpecId": inst.app_id.to_string(),
            "runSpecVersion": inst.app_version,
            "healthy": inst.healthy,
        }),
    )
}

pub fn app_terminated(at: Timestamp, app_id: &PathId) -> Event {
    Event::new(
        "app_terminated_event",
        at,
        json!({ "appId": app_id.to_string() }),
    )
}

pub fn group_change_success(at: Timestamp, group: &PathId, version: Timestamp) -> Event {
    Event::new(
        "group_change_success",
        at,
        json!({ "groupId": group.to_string(), "version": version }),
    )
}

pub fn group_change_failed(
    at: Timestamp,
    group: &PathId,
    version: Timestamp,
    reason: &str,
) -> Event {
    Event::new(
        "group_change_failed",
        at,
        json!({ "groupId": group.to_string(), "version": version, "reason": reason }),
    )
}

pub fn deployment_info(at: Timestamp, plan: &DeploymentPlan) -> Event {
    Event::new(
        "deployment_info",
        at,
        json!({ "plan": plan.light_json(), "currentStep": current_step(plan) }),
    )
}

pub fn deployment_step_success(at: Timestamp, plan: &DeploymentPlan) -> Event {
    Event::new(
        "deployment_step_success",
        at,
        json!({ "plan": plan.light_json(), "currentStep": current_step(plan) }),
    )
}

pub fn deployment_success(at: Timestamp, plan: &DeploymentPlan) -> Event {
    Event::new(
        "deployment_success",
        at,
        json!({ "id": plan.id, "plan": plan.light_json() }),
    )
}

pub fn deployment_failed(at: Timestamp, plan: &DeploymentPlan, reason: &str) -> Event {
    Event::new(
        "deployment_failed",
        at,
        json!({ "id": plan.id, "plan": plan.light_json(), "reason": reason }),
    )
}

pub fn event_stream_attached(at: Timestamp, remote: &str) -> Event {
    Event::new(
        "event_stream_attached",
        at,
        json!({ "remoteAddress": remote }),
    )
}

pub fn event_stream_detached(at: Timestamp, remote: &str) -> Event {
    Event::new(
        "event_stream_detached",
        at,
        json!({ "remoteAddress": remote }),
    )
}

pub fn unknown_instance_terminated(
    at: Timestamp,
    instance_id: &str,
    app_id: &PathId,
    condition: &str,
) -> Event {
    Event::new(
        "unknown_instance_terminated_event",
        at,
        json!({ "instanceId": instance_id, "runSpecId": app_id.to_string(), "condition": condition }),
    )
}

fn current_step(plan: &DeploymentPlan) -> Value {
    json!({ "actions": plan.current_actions().iter().map(|a| a.to_json()).collect::<Vec<_>>() })
}

// Health checks (reference §7.2, §9.2).

/// A health check was registered for an app version.
pub fn add_health_check(
    at: Timestamp,
    app_id: &PathId,
    version: Timestamp,
    check: &crate::app::HealthCheck,
) -> Event {
    Event::new(
        "add_health_check_event",
        at,
        json!({ "appId": app_id.to_string(), "version": version, "healthCheck": check }),
    )
}

/// A health check was removed (its app version has no instance left, or the app went away).
pub fn remove_health_check(at: Timestamp, app_id: &PathId) -> Event {
    Event::new(
        "remove_health_check_event",
        at,
        json!({ "appId": app_id.to_string() }),
    )
}

/// A counted health-check failure. Marathon names the instance id `taskId` here.
pub fn failed_health_check(
    at: Timestamp,
    inst: &Instance,
    check: &crate::app::HealthCheck,
) -> Event {
    Event::new(
        "failed_health_check_event",
        at,
        json!({ "appId": inst.app_id.to_string(), "taskId": inst.id.0, "healthCheck": check }),
    )
}

/// A check's `alive` flipped.
pub fn health_status_changed(at: Timestamp, inst: &Instance, alive: bool) -> Event {
    Event::new(
        "health_status_changed_event",
        at,
        json!({
            "appId": inst.app_id.to_string(),
            "instanceId": inst.id.0,
            "version": inst.app_version,
            "alive": alive,
        }),
    )
}

/// An instance is killed for failing its health checks; `reason` is the last failure's cause.
pub fn unhealthy_instance_kill(at: Timestamp, inst: &Instance, reason: &str) -> Event {
    Event::new(
        "unhealthy_instance_kill_event",
        at,
        json!({
            "appId": inst.app_id.to_string(),
            "taskId": inst.task_id(),
            "instanceId": inst.id.0,
            "version": inst.app_version,
            "reason": reason,
            "host": inst.placement.as_ref().map_or("unknown", |p| p.hostname.as_str()),
            "slaveId": inst.agent_id(),
        }),
    )
}
