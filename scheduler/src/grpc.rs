//! The scheduler's gRPC face: `Control` for api-gateway and `AgentLink` for agents. Both only
//! translate wire types to domain messages and forward them to the current [`LeaderActor`]; a
//! scheduler that does not lead answers `Control` calls with "no leader" and sends agents to
//! the leader recorded in the store.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use futures::Stream;
use stride_core::error::{ApiError, ErrorCode};
use stride_core::{PathId, Timestamp};
use stride_proto::convert::{condition_from_state, status_from_api_error};
use stride_proto::v1::{
    self, agent_link_server::AgentLink, agent_message, app_change, control_server::Control,
    scheduler_message,
};
use stride_store::{collections, StateStore};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::elector::{Abdicate, Elector, Role};
use crate::leader::{
    self, AgentDetached, AgentHeartbeat, AgentRegistered, AgentStatusReceived, LeaderActor,
};
use crate::state::{AgentInfo, AgentStatus, Change, Deployed, Origin};

fn no_leader() -> Status {
    status_from_api_error(&ApiError::new(
        ErrorCode::NoLeader,
        "Could not determine the current leader",
    ))
}

fn api(e: ApiError) -> Status {
    status_from_api_error(&e)
}

fn mailbox<E: std::fmt::Display>(e: E) -> Status {
    warn!(error = %e, "leader actor unavailable");
    no_leader()
}

/// Shared by both services.
#[derive(Clone)]
pub struct Shared {
    pub role: watch::Receiver<Role>,
    pub elector: Addr<Elector>,
    pub store: Arc<dyn StateStore>,
    pub heartbeat_interval: Duration,
    pub sessions: Arc<AtomicU64>,
}

impl Shared {
    fn leader(&self) -> Result<(Addr<LeaderActor>, u64), Status> {
        match &*self.role.borrow() {
            Role::Leader { addr, epoch } => Ok((addr.clone(), *epoch)),
            Role::Follower => Err(no_leader()),
        }
    }
}

pub struct ControlService(pub Shared);

fn origin(o: Option<v1::RequestOrigin>) -> Origin {
    let o = o.unwrap_or_default();
    Origin {
        client_ip: o.client_ip,
        uri: o.uri,
    }
}

fn parse_json(raw: &str) -> Result<serde_json::Value, Status> {
    stride_core::parse::parse_json(raw.as_bytes()).map_err(api)
}

/// A stored group snapshot as a GroupUpdate body: group `version`s would read as rollbacks.
fn without_versions(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("version");
        if let Some(groups) = o
            .get_mut("groups")
            .and_then(serde_json::Value::as_array_mut)
        {
            for g in groups.iter_mut() {
                *g = without_versions(std::mem::take(g));
            }
        }
    }
    v
}

fn deploy_response(d: Deployed) -> v1::DeployResponse {
    let plan_json = d
        .plan
        .as_ref()
        .map(|p| {
            serde_json::json!({
                "steps": p.steps.iter().map(|s| serde_json::json!({
                    "actions": s.iter().map(|a| a.to_json()).collect::<Vec<_>>()
                })).collect::<Vec<_>>()
            })
            .to_string()
        })
        .unwrap_or_default();
    v1::DeployResponse {
        plan_json,
        deployment_id: d.deployment_id,
        version: d.version.to_string(),
        apps: d
            .apps
            .iter()
            .map(|a| v1::RunSpecJson {
                json: a.to_json().to_string(),
            })
            .collect(),
        created: d.created,
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn deploy(
        &self,
        request: Request<v1::DeployRequest>,
    ) -> Result<Response<v1::DeployResponse>, Status> {
        let (leader, _) = self.0.leader()?;
        let req = request.into_inner();
        let mut changes = Vec::with_capacity(req.changes.len());
        for c in req.changes {
            let change = match c.change {
                Some(app_change::Change::Create(s)) => Change::Create(parse_json(&s.json)?),
                Some(app_change::Change::Put(s)) => Change::Put(parse_json(&s.json)?),
                Some(app_change::Change::Patch(p)) => Change::Patch {
                    app_id: PathId::parse(&p.app_id),
                    json: parse_json(&p.json)?,
                    create_if_missing: p.create_if_missing,
                },
                Some(app_change::Change::Remove(id)) => Change::Remove(PathId::parse(&id)),
                Some(app_change::Change::Restart(id)) => Change::Restart(PathId::parse(&id)),
                Some(app_change::Change::Rollback(r)) => {
                    let id = PathId::parse(&r.app_id);
                    let version = Timestamp::parse(&r.version)
                        .map_err(|e| api(ApiError::new(ErrorCode::Unprocessable, e)))?;
                    let stored = self
                        .0
                        .store
                        .get(
                            &collections::app_versions(&id.to_string()),
                            &version.to_string(),
                        )
                        .await
                        .map_err(|e| api(ApiError::unavailable(e.to_string())))?
                        .ok_or_else(|| api(ApiError::app_not_found(&id)))?;
                    let definition: stride_core::App =
                        serde_json::from_slice(&stored).map_err(|e| {
                            api(ApiError::internal(format!(
                                "stored version is unreadable: {e}"
                            )))
                        })?;
                    Change::Restore {
                        app_id: id,
                        definition,
                    }
                }
                Some(app_change::Change::GroupUpdate(g)) => Change::GroupUpdate {
                    path: PathId::parse(&g.path),
                    update: stride_core::parse::from_value(parse_json(&g.json)?).map_err(api)?,
                    create_only: g.create_only,
                },
                Some(app_change::Change::GroupRemove(path)) => {
                    Change::GroupRemove(PathId::parse(&path))
                }
                Some(app_change::Change::GroupScale(g)) => Change::GroupScale {
                    path: PathId::parse(&g.path),
                    factor: g.factor,
                },
                Some(app_change::Change::GroupAttributes(g)) => Change::GroupAttributes {
                    path: PathId::parse(&g.path),
                    enforce_role: g.enforce_role,
                },
                Some(app_change::Change::GroupRollback(r)) => {
                    let path = PathId::parse(&r.path);
                    let version = Timestamp::parse(&r.version)
                        .map_err(|e| api(ApiError::new(ErrorCode::Unprocessable, e)))?;
                    let snapshot = stride_store::history::group_at(
                        self.0.store.as_ref(),
                        &path.to_string(),
                        &version.to_string(),
                    )
                    .await
                    .map_err(|e| api(ApiError::unavailable(e.to_string())))?
                    .ok_or_else(|| {
                        api(ApiError::new(
                            ErrorCode::Unprocessable,
                            format!("Group {path} does not exist in version {version}"),
                        ))
                    })?;
                    Change::GroupUpdate {
                        path,
                        update: stride_core::parse::from_value(without_versions(snapshot))
                            .map_err(api)?,
                        create_only: false,
                    }
                }
                None => return Err(api(ApiError::new(ErrorCode::BadRequest, "empty change"))),
            };
            changes.push(change);
        }
        let deployed = leader
            .send(leader::Deploy {
                changes,
                force: req.force,
                dry_run: req.dry_run,
                origin: origin(req.origin),
            })
            .await
            .map_err(mailbox)?
            .map_err(api)?;
        Ok(Response::new(deploy_response(deployed)))
    }

    async fn kill_tasks(
        &self,
        request: Request<v1::KillTasksRequest>,
    ) -> Result<Response<v1::KillTasksResponse>, Status> {
        let (leader, _) = self.0.leader()?;
        let r = request.into_inner();
        let (killed, deployed) = leader
            .send(leader::KillTasks {
                task_ids: r.task_ids,
                app_ids: r.app_ids.iter().map(|a| PathId::parse(a)).collect(),
                host: (!r.host.is_empty()).then_some(r.host),
                scale: r.scale,
                wipe: r.wipe,
                force: r.force,
                origin: origin(r.origin),
            })
            .await
            .map_err(mailbox)?
            .map_err(api)?;
        Ok(Response::new(v1::KillTasksResponse {
            deployment_id: deployed
                .as_ref()
                .map(|d| d.deployment_id.clone())
                .unwrap_or_default(),
            version: deployed
                .as_ref()
                .map(|d| d.version.to_string())
                .unwrap_or_default(),
            tasks_json: killed.iter().map(|t| t.to_string()).collect(),
        }))
    }

    async fn cancel_deployment(
        &self,
        request: Request<v1::CancelDeploymentRequest>,
    ) -> Result<Response<v1::DeployResponse>, Status> {
        let (leader, _) = self.0.leader()?;
        let r = request.into_inner();
        let deployed = leader
            .send(leader::CancelDeployment {
                id: r.deployment_id,
                force: r.force,
            })
            .await
            .map_err(mailbox)?
            .map_err(api)?;
        Ok(Response::new(
            deployed.map(deploy_response).unwrap_or_default(),
        ))
    }

    async fn reset_delay(
        &self,
        request: Request<v1::ResetDelayRequest>,
    ) -> Result<Response<v1::Empty>, Status> {
        let (leader, _) = self.0.leader()?;
        let id = PathId::parse(&request.into_inner().app_id);
        leader
            .send(leader::ResetDelay(id))
            .await
            .map_err(mailbox)?
            .map_err(api)?;
        Ok(Response::new(v1::Empty {}))
    }

    async fn abdicate(&self, _: Request<v1::Empty>) -> Result<Response<v1::Empty>, Status> {
        let abdicated = self.0.elector.send(Abdicate).await.map_err(mailbox)?;
        if abdicated {
            Ok(Response::new(v1::Empty {}))
        } else {
            Err(api(ApiError::new(
                ErrorCode::NotFound,
                "There is no leader",
            )))
        }
    }

    async fn leader(&self, _: Request<v1::Empty>) -> Result<Response<v1::LeaderInfo>, Status> {
        let record = self
            .0
            .store
            .leader()
            .await
            .map_err(|e| api(ApiError::unavailable(e.to_string())))?;
        Ok(Response::new(record.map_or_else(
            v1::LeaderInfo::default,
            |r| v1::LeaderInfo {
                scheduler_id: r.scheduler_id,
                grpc_address: r.grpc_address,
                http_address: r.http_address,
                epoch: r.epoch,
            },
        )))
    }

    async fn queue(
        &self,
        _: Request<v1::QueueRequest>,
    ) -> Result<Response<v1::JsonResponse>, Status> {
        let (leader, _) = self.0.leader()?;
        let json = leader.send(leader::QueueJson).await.map_err(mailbox)?;
        Ok(Response::new(v1::JsonResponse {
            json: json.to_string(),
        }))
    }
}

pub struct AgentLinkService(pub Shared);

fn agent_status(s: v1::TaskStatus) -> AgentStatus {
    let state = v1::TaskState::try_from(s.state).unwrap_or(v1::TaskState::Unspecified);
    AgentStatus {
        condition: condition_from_state(state, &s.reason),
        terminal: state.is_terminal(),
        task_id: s.task_id,
        message: s.message,
        reason: s.reason,
        timestamp: if s.timestamp_ms > 0 {
            Timestamp(s.timestamp_ms as i64)
        } else {
            Timestamp::now()
        },
        ports: s.ports,
        ip_addresses: s.ip_addresses,
        healthy: s.healthy,
        exit_code: s.exit_code,
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<v1::SchedulerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentLink for AgentLinkService {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Register within 10 s"))??;
        let Some(v1::AgentMessage {
            msg: Some(agent_message::Msg::Register(reg)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first message of a session must be Register",
            ));
        };
        let (tx, rx) = mpsc::channel::<v1::SchedulerMessage>(4096);
        let stream: SessionStream =
            Box::pin(tokio_stream::StreamExt::map(ReceiverStream::new(rx), Ok));
        let (leader, epoch) = match self.0.leader() {
            Ok(l) => l,
            Err(_) => {
                let leader = self.0.store.leader().await.ok().flatten();
                let address = leader.map(|l| l.grpc_address).unwrap_or_default();
                debug!(agent = %reg.agent_id, leader = %address, "not the leader; redirecting agent");
                let _ = tx
                    .send(v1::SchedulerMessage {
                        msg: Some(scheduler_message::Msg::NotLeader(v1::NotLeader {
                            leader_grpc_address: address,
                        })),
                        epoch: 0,
                    })
                    .await;
                return Ok(Response::new(stream));
            }
        };
        if reg.epoch_seen > epoch {
            warn!(agent = %reg.agent_id, seen = reg.epoch_seen, ours = epoch, "agent has seen a newer leader");
        }
        let session = self.0.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let agent_id = reg.agent_id.clone();
        let total = reg.total.unwrap_or_default();
        let info = AgentInfo {
            agent_id: reg.agent_id,
            hostname: reg.hostname,
            cpus: total.cpus,
            mem: total.mem,
            disk: total.disk,
            gpus: total.gpus,
            ports: total.ports.iter().map(|r| (r.begin, r.end)).collect(),
            attributes: reg
                .attributes
                .into_iter()
                .map(|a| (a.name, a.value))
                .collect(),
            region: (!reg.region.is_empty()).then_some(reg.region),
            zone: (!reg.zone.is_empty()).then_some(reg.zone),
            api_address: reg.api_address,
        };
        leader.do_send(AgentRegistered {
            info,
            session,
            tasks: reg.tasks.into_iter().map(agent_status).collect(),
            sender: tx,
            heartbeat_interval: self.0.heartbeat_interval,
        });
        let mut role = self.0.role.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(v1::AgentMessage { msg: Some(agent_message::Msg::Status(s)) })) => {
                            leader.do_send(AgentStatusReceived { agent_id: agent_id.clone(), status: agent_status(s) });
                        }
                        Ok(Some(v1::AgentMessage { msg: Some(agent_message::Msg::Heartbeat(_)) })) => {
                            leader.do_send(AgentHeartbeat { agent_id: agent_id.clone() });
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    },
                    changed = role.changed() => {
                        let same = matches!(&*role.borrow(), Role::Leader { epoch: e, .. } if *e == epoch);
                        if changed.is_err() || !same { break; }
                    }
                }
            }
            info!(agent = %agent_id, session, "agent session ended");
            leader.do_send(AgentDetached { agent_id, session });
        });
        Ok(Response::new(stream))
    }
}
