//! The agent's own gRPC API (`AgentApi` in `proto/agent_api.proto`), served on `api_listen` and
//! advertised to the scheduler in `Register.api_address`:
//!
//! - `ListFiles` / `ReadFile`: a task's sandbox, for api-gateway's `/v2/tasks/{id}/files`
//!   routes. Works for as long as the sandbox is kept, also after the task ended. Paths that
//!   try to leave the sandbox are refused (see `files`).
//! - `RunCommandCheck`: a COMMAND health check in the task's context, for health checkers: in
//!   the sandbox with the task's environment and user for processes, `docker exec` for
//!   containers.

use std::sync::Arc;
use std::time::Duration;

use stride_proto::v1::agent_api_server::AgentApi;
use stride_proto::v1::{
    CommandCheckRequest, CommandCheckResponse, FileInfo, ListFilesRequest, ListFilesResponse,
    ReadFileRequest, ReadFileResponse,
};
use tonic::{Request, Response, Status};
use tracing::{debug, info_span, Instrument};

use crate::checks::{self, CheckResult};
use crate::files::{FileError, Sandbox};
use crate::process;
use crate::supervisor::{Shared, SupervisorHandle};
use crate::task::{instance_id, valid_task_id, TaskState};
use crate::volumes;

pub(crate) struct AgentApiService {
    shared: Arc<Shared>,
    supervisor: SupervisorHandle,
}

impl AgentApiService {
    pub fn new(shared: Arc<Shared>, supervisor: SupervisorHandle) -> Self {
        Self { shared, supervisor }
    }

    /// The task's sandbox, whether or not the agent still tracks the task.
    fn sandbox(&self, task_id: &str) -> Result<Sandbox, Status> {
        if !valid_task_id(task_id) {
            return Err(Status::invalid_argument(format!(
                "{task_id:?} is not a task id"
            )));
        }
        let allowed = volumes::of_instance(&self.shared.state.volumes_dir(), instance_id(task_id));
        Sandbox::open(&self.shared.state.sandbox(task_id), allowed).map_err(|e| match e {
            FileError::NotFound(_) => {
                Status::not_found(format!("task {task_id} has no sandbox on this agent"))
            }
            other => status(other),
        })
    }
}

fn status(e: FileError) -> Status {
    match e {
        FileError::Invalid(m) => Status::invalid_argument(m),
        FileError::Forbidden(m) => Status::permission_denied(m),
        FileError::NotFound(m) => Status::not_found(m),
        FileError::Io(m) => Status::internal(m),
    }
}

#[tonic::async_trait]
impl AgentApi for AgentApiService {
    async fn list_files(
        &self,
        request: Request<ListFilesRequest>,
    ) -> Result<Response<ListFilesResponse>, Status> {
        let r = request.into_inner();
        let sandbox = self.sandbox(&r.task_id)?;
        let entries = tokio::task::spawn_blocking(move || sandbox.list(&r.path))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(ListFilesResponse {
            files: entries
                .into_iter()
                .map(|e| FileInfo {
                    path: e.path,
                    is_dir: e.is_dir,
                    size: e.size,
                    mtime: e.mtime,
                    mode: e.mode,
                })
                .collect(),
        }))
    }

    async fn read_file(
        &self,
        request: Request<ReadFileRequest>,
    ) -> Result<Response<ReadFileResponse>, Status> {
        let r = request.into_inner();
        let sandbox = self.sandbox(&r.task_id)?;
        let (data, offset, size) =
            tokio::task::spawn_blocking(move || sandbox.read(&r.path, r.offset, r.length))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(status)?;
        Ok(Response::new(ReadFileResponse { data, offset, size }))
    }

    async fn run_command_check(
        &self,
        request: Request<CommandCheckRequest>,
    ) -> Result<Response<CommandCheckResponse>, Status> {
        let r = request.into_inner();
        let span = info_span!("command_check", task_id = %r.task_id);
        async move {
            let Some(task) = self.supervisor.describe(&r.task_id).await else {
                return Err(Status::not_found(format!(
                    "task {} is unknown to this agent",
                    r.task_id
                )));
            };
            if task.state != TaskState::Running {
                return Err(Status::failed_precondition(format!(
                    "task {} is not running (it is {})",
                    r.task_id,
                    task.state.label()
                )));
            }
            let timeout = match r.timeout_ms {
                0 => checks::DEFAULT_TIMEOUT,
                ms => Duration::from_millis(u64::from(ms)),
            };
            let result = match &task.container {
                Some(container) => match self
                    .shared
                    .docker
                    .exec(container, &r.command, timeout, checks::OUTPUT_LIMIT)
                    .await
                {
                    Ok((code, output)) => CheckResult::from_exit(code, output),
                    Err(e) if e.contains("timed out") => {
                        CheckResult::timed_out(timeout, String::new())
                    }
                    Err(e) => return Err(Status::unavailable(e)),
                },
                None => {
                    let run_as = process::resolve_user(&task.spec.user)
                        .map_err(Status::failed_precondition)?;
                    let env = self.shared.process_environment(&task.spec, run_as.as_ref());
                    let sandbox = self.shared.state.sandbox(&task.spec.task_id);
                    checks::run_in_sandbox(&r.command, &sandbox, &env, run_as.as_ref(), timeout)
                        .await
                        .map_err(Status::internal)?
                }
            };
            debug!(
                healthy = result.healthy,
                exit_code = result.exit_code,
                "command check"
            );
            Ok(Response::new(CommandCheckResponse {
                healthy: result.healthy,
                exit_code: result.exit_code,
                output: result.output,
            }))
        }
        .instrument(span)
        .await
    }
}
