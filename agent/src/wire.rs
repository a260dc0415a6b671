//! Conversions between the AgentLink wire types (`stride-proto`) and the agent's own types. The
//! supervisor never sees a prost struct; this module is the only place that knows both.

use stride_proto::v1;

use crate::node::NodeInfo;
use crate::task::{FetchSpec, LaunchSpec, Status, TaskResources, TaskState};

impl From<v1::TaskSpec> for LaunchSpec {
    fn from(spec: v1::TaskSpec) -> Self {
        let resources = spec.resources.unwrap_or_default();
        LaunchSpec {
            task_id: spec.task_id,
            app_id: spec.app_id,
            app_version: spec.app_version,
            cmd: spec.cmd,
            args: spec.args,
            env: spec.env.into_iter().map(|kv| (kv.key, kv.value)).collect(),
            resources: TaskResources {
                cpus: resources.cpus,
                mem: resources.mem,
                disk: resources.disk,
                gpus: resources.gpus,
            },
            host_ports: spec.host_ports,
            port_names: spec.port_names,
            kill_grace_period_ms: spec.kill_grace_period_ms,
            user: spec.user,
            fetch: spec
                .fetch
                .into_iter()
                .map(|f| FetchSpec {
                    uri: f.uri,
                    extract: f.extract,
                    executable: f.executable,
                    cache: f.cache,
                    dest_path: f.dest_path,
                })
                .collect(),
            container_json: spec.container_json,
            hostname: spec.hostname,
            labels: spec
                .labels
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect(),
            network_mode: spec.network_mode,
        }
    }
}

fn state(state: TaskState) -> v1::TaskState {
    match state {
        TaskState::Starting => v1::TaskState::TaskStarting,
        TaskState::Running => v1::TaskState::TaskRunning,
        TaskState::Killing => v1::TaskState::TaskKilling,
        TaskState::Finished => v1::TaskState::TaskFinished,
        TaskState::Failed => v1::TaskState::TaskFailed,
        TaskState::Killed => v1::TaskState::TaskKilled,
        TaskState::Error => v1::TaskState::TaskError,
        TaskState::Lost => v1::TaskState::TaskLost,
    }
}

pub(crate) fn status(s: &Status) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: s.task_id.clone(),
        state: state(s.state).into(),
        message: s.message.clone(),
        timestamp_ms: s.timestamp_ms,
        ports: s.ports.clone(),
        ip_addresses: Vec::new(),
        healthy: None,
        reason: s.reason.clone(),
        exit_code: s.exit_code,
    }
}

pub(crate) fn register(node: &NodeInfo, statuses: &[Status], epoch_seen: u64) -> v1::AgentMessage {
    let register = v1::Register {
        agent_id: node.agent_id.clone(),
        hostname: node.hostname.clone(),
        total: Some(v1::Resources {
            cpus: node.cpus,
            mem: node.mem,
            disk: node.disk,
            gpus: 0,
            ports: node
                .ports
                .0
                .iter()
                .map(|r| v1::PortRange {
                    begin: u32::from(r.begin),
                    end: u32::from(r.end),
                })
                .collect(),
        }),
        attributes: node
            .attributes
            .0
            .iter()
            .map(|(name, value)| v1::Attribute {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        tasks: statuses.iter().map(status).collect(),
        epoch_seen,
        region: node.region.clone(),
        zone: node.zone.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        api_address: node.api_address.clone(),
    };
    v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Register(register)),
    }
}

pub(crate) fn heartbeat(sent_at_ms: u64) -> v1::AgentMessage {
    v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Heartbeat(v1::Heartbeat {
            sent_at_ms,
        })),
    }
}

pub(crate) fn status_message(s: &Status) -> v1::AgentMessage {
    v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Status(status(s))),
    }
}
