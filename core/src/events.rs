//! Marathon's event bus payloads (reference §9.2). Each event is a JSON object with
//! `eventType` and `timestamp`; the constructors here are the one place their shapes are written.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::app::App;
use crate::deployment::DeploymentPlan;
use crate::instance::{Goal, Instance};
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

    /// An event whose body is `fields` as they serialise, `eventType` and `timestamp` among
    /// them.
    fn of(event_type: &'static str, fields: &impl Serialize) -> Self {
        Self {
            event_type,
            body: serde_json::to_value(fields).unwrap_or_default(),
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

/// `status_update_event`: the shape [`status_update`] and [`status_update_json`] share.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusUpdate<'a> {
    slave_id: &'a str,
    task_id: String,
    task_status: &'static str,
    message: &'a str,
    app_id: &'a PathId,
    host: &'a str,
    ip_addresses: Vec<IpAddress<'a>>,
    ports: &'a [u32],
    version: Timestamp,
    event_type: &'static str,
    timestamp: Timestamp,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IpAddress<'a> {
    ip_address: &'a str,
    protocol: &'static str,
}

impl<'a> StatusUpdate<'a> {
    fn of(at: Timestamp, inst: &'a Instance) -> Self {
        Self {
            slave_id: inst.agent_id().unwrap_or(""),
            task_id: inst.task_id(),
            task_status: inst.condition.mesos_state(),
            message: &inst.message,
            app_id: &inst.app_id,
            host: inst.placement.as_ref().map_or("", |p| p.hostname.as_str()),
            ip_addresses: inst
                .ip_addresses
                .iter()
                .map(|ip| IpAddress {
                    ip_address: ip,
                    protocol: "IPv4",
                })
                .collect(),
            ports: &inst.host_ports,
            version: inst.app_version,
            event_type: "status_update_event",
            timestamp: at,
        }
    }
}

pub fn status_update(at: Timestamp, inst: &Instance) -> Event {
    Event::of("status_update_event", &StatusUpdate::of(at, inst))
}

/// [`status_update`] as published, written straight from the instance: the leader publishes
/// one for every task status.
pub fn status_update_json(at: Timestamp, inst: &Instance) -> String {
    serde_json::to_string(&StatusUpdate::of(at, inst)).unwrap_or_default()
}

/// `instance_changed_event`: the shape [`instance_changed`] and [`instance_changed_json`] share.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InstanceChanged<'a> {
    instance_id: &'a str,
    condition: &'static str,
    run_spec_id: &'a PathId,
    agent_id: &'a str,
    host: &'a str,
    run_spec_version: Timestamp,
    timestamp: Timestamp,
    goal: Goal,
    event_type: &'static str,
}

impl<'a> InstanceChanged<'a> {
    fn of(at: Timestamp, inst: &'a Instance) -> Self {
        Self {
            instance_id: &inst.id.0,
            condition: inst.condition.name(),
            run_spec_id: &inst.app_id,
            agent_id: inst.agent_id().unwrap_or(""),
            host: inst.placement.as_ref().map_or("", |p| p.hostname.as_str()),
            run_spec_version: inst.app_version,
            timestamp: at,
            goal: inst.goal,
            event_type: "instance_changed_event",
        }
    }
}

pub fn instance_changed(at: Timestamp, inst: &Instance) -> Event {
    Event::of("instance_changed_event", &InstanceChanged::of(at, inst))
}

/// [`instance_changed`] as published, written straight from the instance: the leader
/// publishes one for every change of every instance.
pub fn instance_changed_json(at: Timestamp, inst: &Instance) -> String {
    serde_json::to_string(&InstanceChanged::of(at, inst)).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::{Condition, Placement};

    fn instances() -> Vec<Instance> {
        let app = PathId::parse("/prod/web");
        let now = Timestamp(1_763_700_000_123);
        let scheduled = Instance::scheduled(&app, now, now);
        let mut running = Instance::scheduled(&app, now, now);
        running.incarnation = 2;
        running.condition = Condition::Running;
        running.goal = Goal::Decommissioned;
        running.message = "it said \"hi\"\n".into();
        running.host_ports = vec![31000, 31001];
        running.ip_addresses = vec!["10.0.0.7".into(), "fd00::7".into()];
        running.placement = Some(Placement {
            agent_id: "agent-1".into(),
            hostname: "node-1.example".into(),
            attributes: vec![("rack_id".into(), "r1".into())],
        });
        vec![scheduled, running]
    }

    #[test]
    fn instance_events_read_as_marathon_writes_them() {
        let at = Timestamp(1_763_700_001_456);
        for inst in instances() {
            let changed = json!({
                "instanceId": inst.id.0,
                "condition": inst.condition.name(),
                "runSpecId": inst.app_id.to_string(),
                "agentId": inst.agent_id().unwrap_or(""),
                "host": inst.placement.as_ref().map_or("", |p| p.hostname.as_str()),
                "runSpecVersion": inst.app_version,
                "timestamp": at.to_string(),
                "goal": format!("{:?}", inst.goal),
                "eventType": "instance_changed_event",
            })
            .to_string();
            assert_eq!(instance_changed(at, &inst).to_json_string(), changed);
            assert_eq!(instance_changed_json(at, &inst), changed);

            let status = json!({
                "slaveId": inst.agent_id().unwrap_or(""),
                "taskId": inst.task_id(),
                "taskStatus": inst.condition.mesos_state(),
                "message": inst.message,
                "appId": inst.app_id.to_string(),
                "host": inst.placement.as_ref().map_or("", |p| p.hostname.as_str()),
                "ipAddresses": inst.ip_addresses.iter()
                    .map(|ip| json!({"ipAddress": ip, "protocol": "IPv4"}))
                    .collect::<Vec<_>>(),
                "ports": inst.host_ports,
                "version": inst.app_version,
                "eventType": "status_update_event",
                "timestamp": at.to_string(),
            })
            .to_string();
            assert_eq!(status_update(at, &inst).to_json_string(), status);
            assert_eq!(status_update_json(at, &inst), status);
            assert_eq!(
                instance_changed(at, &inst).app_id(),
                Some(inst.app_id.to_string().as_str())
            );
        }
    }
}
