//! Conversions between wire types and `stride-core` types, and the mapping of core error codes to
//! gRPC status codes (and back), so an error raised by the leader reaches the HTTP client with
//! Marathon's status and body intact.

use stride_core::error::{ApiError, ErrorCode};
use stride_core::instance::Condition;
use tonic::{Code, Status};

use crate::v1::TaskState;

/// The gRPC code for an error code.
pub fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::BadRequest => Code::InvalidArgument,
        ErrorCode::Unauthenticated => Code::Unauthenticated,
        ErrorCode::Forbidden => Code::PermissionDenied,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::Conflict => Code::AlreadyExists,
        ErrorCode::Unprocessable => Code::FailedPrecondition,
        ErrorCode::NoLeader => Code::Unavailable,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::Internal => Code::Internal,
    }
}

/// Marks statuses that carry a Marathon body in their details.
const BODY_MARKER: &str = "stride-api-error";

/// An API error as a gRPC status: the code for transports that only look at codes, and the exact
/// error (code and body) in the details for Stride's own clients.
pub fn status_from_api_error(e: &ApiError) -> Status {
    let details = serde_json::to_vec(e).unwrap_or_default();
    Status::with_details(grpc_code(e.code), BODY_MARKER, details.into())
}

/// Recovers the API error carried by a status; other statuses become 503 (the leader could not
/// be reached) or 500.
pub fn api_error_from_status(s: &Status) -> ApiError {
    if s.message() == BODY_MARKER {
        if let Ok(e) = serde_json::from_slice::<ApiError>(s.details()) {
            return e;
        }
    }
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => ApiError::new(
            ErrorCode::NoLeader,
            "Could not determine the current leader",
        ),
        _ => ApiError::internal(s.message().to_string()),
    }
}

pub fn condition_from_state(state: TaskState, reason: &str) -> Condition {
    match state {
        TaskState::Unspecified | TaskState::TaskStaging => Condition::Staging,
        TaskState::TaskStarting => Condition::Starting,
        TaskState::TaskRunning => Condition::Running,
        TaskState::TaskKilling => Condition::Killing,
        TaskState::TaskFinished => Condition::Finished,
        TaskState::TaskFailed => Condition::Failed,
        TaskState::TaskKilled => Condition::Killed,
        TaskState::TaskError => Condition::Error,
        TaskState::TaskLost => match reason {
            "REASON_RECONCILIATION" | "REASON_SLAVE_DISCONNECTED" | "REASON_SLAVE_REMOVED" => {
                Condition::Unreachable
            }
            "REASON_TASK_UNKNOWN" => Condition::Unknown,
            _ => Condition::Gone,
        },
        TaskState::TaskDropped => Condition::Dropped,
        TaskState::TaskUnreachable => Condition::Unreachable,
        TaskState::TaskGone | TaskState::TaskGoneByOperator => Condition::Gone,
        TaskState::TaskUnknown => Condition::Unknown,
    }
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::TaskFinished
                | TaskState::TaskFailed
                | TaskState::TaskKilled
                | TaskState::TaskError
                | TaskState::TaskLost
                | TaskState::TaskDropped
                | TaskState::TaskGone
                | TaskState::TaskGoneByOperator
                | TaskState::TaskUnknown
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_survive_the_trip() {
        let e = ApiError::locked(&["d1".into()]);
        let back = api_error_from_status(&status_from_api_error(&e));
        assert_eq!(back, e);
    }
}

/// Label variables as Marathon sets them: `MARATHON_APP_LABELS` and `MARATHON_APP_LABEL_<NAME>`,
/// names reduced to `[A-Za-z0-9_]`, keys or values over 512 characters skipped.
fn label_env(app: &stride_core::App) -> Vec<(String, String)> {
    let clean = |k: &str| -> String {
        k.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    let labels: Vec<(&String, &String)> = app
        .labels
        .iter()
        .filter(|(k, v)| k.len() <= 512 && v.len() <= 512)
        .collect();
    let mut env = Vec::new();
    if !labels.is_empty() {
        env.push((
            "MARATHON_APP_LABELS".to_string(),
            labels
                .iter()
                .map(|(k, _)| clean(k))
                .collect::<Vec<_>>()
                .join(" "),
        ));
    }
    for (k, v) in labels {
        env.push((format!("MARATHON_APP_LABEL_{}", clean(k)), v.clone()));
    }
    env
}

/// The launch of one task of `app` on an agent.
pub fn task_spec(
    app: &stride_core::App,
    task_id: &str,
    hostname: &str,
    host_ports: &[u32],
) -> crate::v1::TaskSpec {
    use crate::v1::{FetchUri, KeyValue, PortRange, Resources, TaskSpec};
    use stride_core::app::EnvValue;
    let mut env: Vec<KeyValue> = app
        .env
        .iter()
        .filter_map(|(k, v)| match v {
            EnvValue::Plain(s) => Some(KeyValue {
                key: k.clone(),
                value: s.clone(),
            }),
            EnvValue::Secret { .. } => None,
        })
        .collect();
    env.extend(
        label_env(app)
            .into_iter()
            .map(|(key, value)| KeyValue { key, value }),
    );
    if let Some(image) = app
        .container
        .as_ref()
        .and_then(|c| c.docker.as_ref())
        .map(|d| d.image.clone())
    {
        env.push(KeyValue {
            key: "MARATHON_APP_DOCKER_IMAGE".into(),
            value: image,
        });
    }
    TaskSpec {
        task_id: task_id.to_string(),
        app_id: app.id.to_string(),
        app_version: app.config_version().to_string(),
        cmd: app.cmd.clone().unwrap_or_default(),
        args: app.args.clone(),
        env,
        resources: Some(Resources {
            cpus: app.cpus,
            mem: app.mem,
            disk: app.disk,
            gpus: app.gpus.max(0) as u32,
            ports: host_ports
                .iter()
                .map(|p| PortRange { begin: *p, end: *p })
                .collect(),
        }),
        host_ports: host_ports.to_vec(),
        kill_grace_period_ms: app.kill_grace_period_ms().min(u64::from(u32::MAX)) as u32,
        user: app.user.clone().unwrap_or_default(),
        fetch: app
            .fetch
            .iter()
            .map(|f| FetchUri {
                uri: f.uri.clone(),
                extract: f.extract,
                executable: f.executable,
                cache: f.cache,
                dest_path: f.dest_path.clone().unwrap_or_default(),
            })
            .collect(),
        // MESOS containers too: the agent needs their volumes, and refuses their images.
        container_json: app
            .container
            .as_ref()
            .map(|c| serde_json::to_string(c).unwrap_or_default())
            .unwrap_or_default(),
        labels: app
            .labels
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        port_names: app
            .port_names()
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect(),
        hostname: hostname.to_string(),
        network_mode: app
            .networks
            .first()
            .map_or_else(|| "host".to_string(), |n| n.mode.clone()),
    }
}
