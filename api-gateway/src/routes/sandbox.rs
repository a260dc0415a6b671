//! Task sandboxes (what Mesos' `files/browse` and `files/read` gave Marathon users), read
//! through the `AgentApi` of the agent the task runs on:
//!
//! - `GET /v2/tasks/{taskId}/files?path=<dir>` → `{"files": [{path, size, mtime, mode, isDir}]}`
//! - `GET /v2/tasks/{taskId}/files/read?path=<file>&offset=<n>&length=<n>` →
//!   `{"data": "<utf-8, lossy>", "offset": n}` (`offset=-1` answers the file's size)
//! - `GET /v2/tasks/{taskId}/files/download?path=<file>` → the raw bytes
//!
//! ```text
//!  task id ──parse──► instance (store: instances) ──placement.agent_id──► agent record
//!  (store: agents).api_address ──gRPC AgentApi──► ListFiles / ReadFile
//! ```
//!
//! The agent refuses paths that leave the sandbox; that becomes a 400 here. An unknown task
//! is a 404 `Task '<id>' does not exist`; an agent that cannot be reached, a 503.

use std::time::Duration;

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::{json, Value};
use stride_core::agent::AgentRecord;
use stride_core::error::ErrorCode;
use stride_core::instance::{parse_task_id, Instance};
use stride_proto::tls::{grpc_url, MutualTls};
use stride_proto::v1::agent_api_client::AgentApiClient;
use stride_proto::v1::{ListFilesRequest, ReadFileRequest};
use stride_store::{collections, StateStore};
use tonic::transport::{Channel, Endpoint};

use crate::auth::{Action, Caller};
use crate::error::{GatewayError, Result};
use crate::http::{json as json_response, Query};
use crate::state::Gateway;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes asked of the agent per `ReadFile` while downloading (its maximum).
const DOWNLOAD_CHUNK: u64 = 1024 * 1024;

/// `GET /v2/tasks/{taskId}/files`
pub(crate) async fn list(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    task_id: web::Path<String>,
    caller: Caller,
) -> Result<HttpResponse> {
    require_view(&caller, &task_id).await?;
    let q = Query::from_request(&req);
    list_files(
        gw.store.as_ref(),
        gw.grpc_tls.as_ref(),
        &task_id,
        q.get("path").unwrap_or(""),
    )
    .await
}

/// `GET /v2/tasks/{taskId}/files/read`
pub(crate) async fn read(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    task_id: web::Path<String>,
    caller: Caller,
) -> Result<HttpResponse> {
    require_view(&caller, &task_id).await?;
    let q = Query::from_request(&req);
    read_file(
        gw.store.as_ref(),
        gw.grpc_tls.as_ref(),
        &task_id,
        required_path(&q)?,
        number(&q, "offset", 0i64)?,
        number(&q, "length", 0u64)?,
    )
    .await
}

/// `GET /v2/tasks/{taskId}/files/download`
pub(crate) async fn download(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    task_id: web::Path<String>,
    caller: Caller,
) -> Result<HttpResponse> {
    require_view(&caller, &task_id).await?;
    let q = Query::from_request(&req);
    download_file(
        gw.store.as_ref(),
        gw.grpc_tls.as_ref(),
        &task_id,
        required_path(&q)?,
    )
    .await
}

/// Reading a sandbox takes `view` on the task's app; a task id that does not parse is left to
/// answer its 404.
async fn require_view(caller: &Caller, task_id: &str) -> Result<()> {
    match parse_task_id(task_id) {
        Some(parsed) => caller.require(Action::View, &parsed.app_id).await,
        None => Ok(()),
    }
}

fn required_path(q: &Query) -> Result<&str> {
    q.get("path")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| GatewayError::bad_request("The query parameter 'path' is required"))
}

fn number<T: std::str::FromStr>(q: &Query, key: &str, default: T) -> Result<T> {
    match q.get(key) {
        None | Some("") => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            GatewayError::bad_request(format!("The query parameter '{key}' is not a number: {v}"))
        }),
    }
}

/// Where a task's sandbox can be read: the agent's API, through the instance in the store.
struct Located {
    agent_id: String,
    address: String,
}

fn task_not_found(task_id: &str) -> GatewayError {
    GatewayError::not_found(format!("Task '{task_id}' does not exist"))
}

async fn locate(store: &dyn StateStore, task_id: &str) -> Result<Located> {
    let parsed = parse_task_id(task_id).ok_or_else(|| task_not_found(task_id))?;
    let instance: Instance = match store
        .get(collections::INSTANCES, &parsed.instance_id.0)
        .await?
    {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            GatewayError::Store(stride_store::StoreError::Corrupt(format!(
                "instance {}: {e}",
                parsed.instance_id
            )))
        })?,
        None => return Err(task_not_found(task_id)),
    };
    let agent_id = instance
        .placement
        .map(|p| p.agent_id)
        .ok_or_else(|| task_not_found(task_id))?;
    let agent: AgentRecord = match store.get(collections::AGENTS, &agent_id).await? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            GatewayError::Store(stride_store::StoreError::Corrupt(format!(
                "agent {agent_id}: {e}"
            )))
        })?,
        None => {
            return Err(GatewayError::new(
                ErrorCode::Unavailable,
                format!("The agent {agent_id} of task '{task_id}' is not known"),
            ))
        }
    };
    if agent.api_address.is_empty() {
        return Err(GatewayError::new(
            ErrorCode::Unavailable,
            format!("The agent {agent_id} of task '{task_id}' serves no sandbox API"),
        ));
    }
    Ok(Located {
        agent_id,
        address: agent.api_address,
    })
}

async fn client(at: &Located, tls: Option<&MutualTls>) -> Result<AgentApiClient<Channel>> {
    let unreachable = |e: &dyn std::fmt::Display| {
        GatewayError::new(
            ErrorCode::Unavailable,
            format!(
                "The agent {} at {} cannot be reached: {e}",
                at.agent_id, at.address
            ),
        )
    };
    let mut endpoint = Endpoint::from_shared(grpc_url(&at.address, tls.is_some()))
        .map_err(|e| unreachable(&e))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.client())
            .map_err(|e| unreachable(&e))?;
    }
    let channel = endpoint.connect().await.map_err(|e| unreachable(&e))?;
    Ok(AgentApiClient::new(channel))
}

/// The agent's refusal as Marathon-style errors: a path leaving the sandbox is the client's
/// mistake (400), a missing file or task a 404, anything else the agent's trouble (503).
fn agent_error(at: &Located, s: &tonic::Status) -> GatewayError {
    match s.code() {
        tonic::Code::InvalidArgument
        | tonic::Code::PermissionDenied
        | tonic::Code::FailedPrecondition => GatewayError::bad_request(s.message()),
        tonic::Code::NotFound => GatewayError::not_found(s.message()),
        _ => GatewayError::new(
            ErrorCode::Unavailable,
            format!(
                "The agent {} at {} failed: {}",
                at.agent_id,
                at.address,
                s.message()
            ),
        ),
    }
}

async fn list_files(
    store: &dyn StateStore,
    tls: Option<&MutualTls>,
    task_id: &str,
    path: &str,
) -> Result<HttpResponse> {
    let at = locate(store, task_id).await?;
    let files = client(&at, tls)
        .await?
        .list_files(ListFilesRequest {
            task_id: task_id.to_string(),
            path: path.to_string(),
        })
        .await
        .map_err(|s| agent_error(&at, &s))?
        .into_inner()
        .files;
    let files: Vec<Value> = files
        .into_iter()
        .map(|f| {
            json!({
                "path": f.path,
                "size": f.size,
                "mtime": f.mtime,
                "mode": f.mode,
                "isDir": f.is_dir,
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "files": files })))
}

async fn read_file(
    store: &dyn StateStore,
    tls: Option<&MutualTls>,
    task_id: &str,
    path: &str,
    offset: i64,
    length: u64,
) -> Result<HttpResponse> {
    let at = locate(store, task_id).await?;
    let read = client(&at, tls)
        .await?
        .read_file(ReadFileRequest {
            task_id: task_id.to_string(),
            path: path.to_string(),
            offset,
            length,
        })
        .await
        .map_err(|s| agent_error(&at, &s))?
        .into_inner();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "data": String::from_utf8_lossy(&read.data),
            "offset": read.offset,
        }),
    ))
}

async fn download_file(
    store: &dyn StateStore,
    tls: Option<&MutualTls>,
    task_id: &str,
    path: &str,
) -> Result<HttpResponse> {
    let at = locate(store, task_id).await?;
    let mut client = client(&at, tls).await?;
    let request = |offset: i64| ReadFileRequest {
        task_id: task_id.to_string(),
        path: path.to_string(),
        offset,
        length: DOWNLOAD_CHUNK,
    };
    // The first chunk is read before answering, so that a bad path is a proper error.
    let first = client
        .read_file(request(0))
        .await
        .map_err(|s| agent_error(&at, &s))?
        .into_inner();
    let size = first.size;
    let next_offset = first.offset + first.data.len() as i64;
    let name = path.rsplit('/').next().unwrap_or(path).replace('"', "");
    let first_chunk = Bytes::from(first.data);
    let rest = futures::stream::unfold(
        (client, request(next_offset), size),
        |(mut client, req, size)| async move {
            if u64::try_from(req.offset).unwrap_or(u64::MAX) >= size {
                return None;
            }
            match client.read_file(req.clone()).await {
                Ok(r) => {
                    let r = r.into_inner();
                    if r.data.is_empty() {
                        return None;
                    }
                    let mut next = req;
                    next.offset = r.offset + r.data.len() as i64;
                    Some((Ok(Bytes::from(r.data)), (client, next, size)))
                }
                Err(s) => Some((
                    Err(std::io::Error::other(s.message().to_string())),
                    (
                        client,
                        ReadFileRequest {
                            offset: i64::MAX,
                            ..req
                        },
                        size,
                    ),
                )),
            }
        },
    );
    let body = futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, std::io::Error>(first_chunk) }),
        rest,
    );
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .no_chunking(size)
        .streaming(body))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use actix_web::body::MessageBody;
    use stride_core::instance::{Condition, Goal, InstanceId, Placement};
    use stride_core::{PathId, Timestamp};
    use stride_proto::v1::agent_api_server::{AgentApi, AgentApiServer};
    use stride_proto::v1::{
        CommandCheckRequest, CommandCheckResponse, FileInfo, ListFilesResponse, ReadFileResponse,
    };
    use stride_store::MemoryStore;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response, Status};

    use super::*;

    const TASK: &str = "web.instance-6d3c1a52-0000-11ef-8000-000000000001._app.1";
    const INSTANCE: &str = "web.instance-6d3c1a52-0000-11ef-8000-000000000001";

    /// An agent API with one task's sandbox in memory, refusing what the real agent refuses.
    struct FakeAgent {
        files: HashMap<String, Vec<u8>>,
    }

    fn check(path: &str) -> std::result::Result<(), Status> {
        if path.starts_with('/') || path.split('/').any(|p| p == "..") {
            return Err(Status::invalid_argument(format!(
                "{path:?}: paths may not leave the sandbox"
            )));
        }
        if path.starts_with("out/") {
            return Err(Status::permission_denied(format!(
                "{path:?} leads outside the sandbox"
            )));
        }
        Ok(())
    }

    #[tonic::async_trait]
    impl AgentApi for FakeAgent {
        async fn list_files(
            &self,
            request: Request<ListFilesRequest>,
        ) -> std::result::Result<Response<ListFilesResponse>, Status> {
            let r = request.into_inner();
            check(&r.path)?;
            let mut files: Vec<FileInfo> = self
                .files
                .iter()
                .map(|(path, data)| FileInfo {
                    path: path.clone(),
                    is_dir: false,
                    size: data.len() as u64,
                    mtime: 1_700_000_000,
                    mode: 0o100644,
                })
                .collect();
            files.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(Response::new(ListFilesResponse { files }))
        }

        async fn read_file(
            &self,
            request: Request<ReadFileRequest>,
        ) -> std::result::Result<Response<ReadFileResponse>, Status> {
            let r = request.into_inner();
            check(&r.path)?;
            let data = self
                .files
                .get(&r.path)
                .ok_or_else(|| Status::not_found(format!("{:?} does not exist", r.path)))?;
            let size = data.len() as u64;
            let start = if r.offset < 0 {
                size
            } else {
                (r.offset as u64).min(size)
            };
            let length = if r.length == 0 {
                65536
            } else {
                r.length.min(1 << 20)
            };
            let end = (start + length).min(size);
            Ok(Response::new(ReadFileResponse {
                data: data[start as usize..end as usize].to_vec(),
                offset: start as i64,
                size,
            }))
        }

        async fn run_command_check(
            &self,
            _: Request<CommandCheckRequest>,
        ) -> std::result::Result<Response<CommandCheckResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    async fn fake_agent(files: HashMap<String, Vec<u8>>) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AgentApiServer::new(FakeAgent { files }))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Ok(address)
    }

    async fn store_with(api_address: &str) -> anyhow::Result<Arc<MemoryStore>> {
        let store = Arc::new(MemoryStore::new());
        let mut instance = Instance::scheduled(
            &PathId::parse("/web"),
            Timestamp::default(),
            Timestamp::default(),
        );
        instance.id = InstanceId(INSTANCE.into());
        instance.incarnation = 1;
        instance.goal = Goal::Running;
        instance.condition = Condition::Running;
        instance.placement = Some(Placement {
            agent_id: "agent-1".into(),
            hostname: "127.0.0.1".into(),
            attributes: Vec::new(),
        });
        store
            .put_unfenced(
                collections::INSTANCES,
                INSTANCE,
                serde_json::to_vec(&instance)?.into(),
            )
            .await?;
        let agent = json!({
            "agentId": "agent-1", "hostname": "127.0.0.1", "apiAddress": api_address,
            "cpus": 1.0, "mem": 1024.0, "disk": 0.0, "connected": true,
            "registeredAt": "2024-01-01T00:00:00.000Z",
        });
        store
            .put_unfenced(collections::AGENTS, "agent-1", agent.to_string().into())
            .await?;
        Ok(store)
    }

    async fn body(res: HttpResponse) -> anyhow::Result<(u16, Vec<u8>)> {
        let status = res.status().as_u16();
        let bytes = res
            .into_body()
            .try_into_bytes()
            .map_err(|_| anyhow::anyhow!("a streaming body"))?;
        Ok((status, bytes.to_vec()))
    }

    /// Renders a result as the client would see it.
    async fn answer(result: Result<HttpResponse>) -> anyhow::Result<(u16, Value)> {
        let res = match result {
            Ok(r) => r,
            Err(e) => actix_web::ResponseError::error_response(&e),
        };
        let (status, bytes) = body(res).await?;
        Ok((status, serde_json::from_slice(&bytes)?))
    }

    #[tokio::test]
    async fn files_are_listed_read_and_downloaded_through_the_agent() -> anyhow::Result<()> {
        let stdout = b"line one\nline two\n".to_vec();
        let mut files = HashMap::from([("stdout".to_string(), stdout.clone())]);
        let big: Vec<u8> = (0..(2 * DOWNLOAD_CHUNK + 10))
            .map(|i| (i % 251) as u8)
            .collect();
        files.insert("big.bin".into(), big.clone());
        let store = store_with(&fake_agent(files).await?).await?;

        let (status, listed) = answer(list_files(store.as_ref(), None, TASK, "").await).await?;
        assert_eq!(status, 200);
        assert_eq!(
            listed["files"][1],
            json!({"path": "stdout", "size": 18, "mtime": 1_700_000_000, "mode": 0o100644, "isDir": false})
        );
        let (status, read) =
            answer(read_file(store.as_ref(), None, TASK, "stdout", 5, 8).await).await?;
        assert_eq!(status, 200);
        assert_eq!(read, json!({"data": "one\nline", "offset": 5}));
        let (_, end) = answer(read_file(store.as_ref(), None, TASK, "stdout", -1, 0).await).await?;
        assert_eq!(end, json!({"data": "", "offset": 18}));

        let res = download_file(store.as_ref(), None, TASK, "big.bin")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(
            res.headers()
                .get(header::CONTENT_DISPOSITION)
                .and_then(|v| v.to_str().ok()),
            Some("attachment; filename=\"big.bin\"")
        );
        let downloaded = actix_web::body::to_bytes(res.into_body())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(downloaded.len(), big.len());
        assert!(
            downloaded[..] == big[..],
            "the bytes arrive intact and in order"
        );
        Ok(())
    }

    #[tokio::test]
    async fn traversal_unknown_tasks_and_dead_agents_are_refused() -> anyhow::Result<()> {
        let store = store_with(&fake_agent(HashMap::new()).await?).await?;
        for path in ["../../etc/passwd", "/etc/passwd", "out/passwd"] {
            let (status, body) =
                answer(read_file(store.as_ref(), None, TASK, path, 0, 0).await).await?;
            assert_eq!(status, 400, "{path}: {body}");
            assert!(body["message"].is_string(), "{body}");
        }
        let (status, body) =
            answer(read_file(store.as_ref(), None, TASK, "missing", 0, 0).await).await?;
        assert_eq!(status, 404, "{body}");

        let other = "web.instance-6d3c1a52-0000-11ef-8000-00000000ffff._app.1";
        let (status, body) = answer(list_files(store.as_ref(), None, other, "").await).await?;
        assert_eq!(
            (status, body),
            (
                404,
                json!({"message": format!("Task '{other}' does not exist")})
            )
        );
        let (status, body) = answer(list_files(store.as_ref(), None, "garbage", "").await).await?;
        assert_eq!(
            (status, body),
            (404, json!({"message": "Task 'garbage' does not exist"}))
        );

        // An agent that registered an address nobody answers at.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let store = store_with(&closed.to_string()).await?;
        let (status, body) = answer(list_files(store.as_ref(), None, TASK, "").await).await?;
        assert_eq!(status, 503, "{body}");
        Ok(())
    }
}
