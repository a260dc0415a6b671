//! The real [`GrpcLeaderLink`] against an in-process tonic `Control` server: it finds the
//! leader through the store's lease, and Marathon errors survive the gRPC trip.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use stride_api_gateway::{GrpcLeaderLink, LeaderLink};
use stride_core::error::{ApiError, ErrorCode};
use stride_proto::control_server::{Control, ControlServer};
use stride_proto::convert::status_from_api_error;
use stride_proto::v1::{
    CancelDeploymentRequest, DeployRequest, DeployResponse, Empty, JsonResponse, KillTasksRequest,
    KillTasksResponse, LeaderInfo, QueueRequest, ResetDelayRequest,
};
use stride_store::{Candidate, MemoryStore, StateStore};
use tonic::{Request, Response, Status};

struct CannedControl;

#[tonic::async_trait]
impl Control for CannedControl {
    async fn deploy(
        &self,
        request: Request<DeployRequest>,
    ) -> Result<Response<DeployResponse>, Status> {
        if request.get_ref().force {
            return Ok(Response::new(DeployResponse {
                plan_json: String::new(),
                deployment_id: "d-2".into(),
                version: "2021-01-01T00:00:00.000Z".into(),
                apps: Vec::new(),
                created: false,
            }));
        }
        Err(status_from_api_error(&ApiError::locked(&["d-1".into()])))
    }
    async fn kill_tasks(
        &self,
        _: Request<KillTasksRequest>,
    ) -> Result<Response<KillTasksResponse>, Status> {
        Err(Status::unimplemented("kill"))
    }
    async fn cancel_deployment(
        &self,
        _: Request<CancelDeploymentRequest>,
    ) -> Result<Response<DeployResponse>, Status> {
        Err(Status::unimplemented("cancel"))
    }
    async fn reset_delay(&self, _: Request<ResetDelayRequest>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }
    async fn abdicate(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }
    async fn leader(&self, _: Request<Empty>) -> Result<Response<LeaderInfo>, Status> {
        Ok(Response::new(LeaderInfo::default()))
    }
    async fn queue(&self, _: Request<QueueRequest>) -> Result<Response<JsonResponse>, Status> {
        Ok(Response::new(JsonResponse {
            json: r#"{"queue":[]}"#.into(),
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_the_leader_in_the_store_and_keeps_marathon_errors() -> anyhow::Result<()> {
    let store = MemoryStore::new();
    let link = GrpcLeaderLink::new(Arc::new(store.clone()), Duration::from_secs(5));

    let e = link.abdicate().await.expect_err("no leader yet");
    assert_eq!(e.code, ErrorCode::NoLeader);
    assert_eq!(e.message(), "Could not determine the current leader");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ControlServer::new(CannedControl))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    store
        .try_acquire(
            &Candidate {
                scheduler_id: "s1".into(),
                grpc_address: address,
                http_address: String::new(),
            },
            Duration::from_secs(600),
        )
        .await?
        .ok_or_else(|| anyhow!("lease"))?;

    let e = link
        .deploy(DeployRequest::default())
        .await
        .expect_err("locked");
    assert_eq!(e, ApiError::locked(&["d-1".into()]));
    let ok = link
        .deploy(DeployRequest {
            force: true,
            ..DeployRequest::default()
        })
        .await
        .map_err(|e| anyhow!("{e}"))?;
    assert_eq!(ok.deployment_id, "d-2");
    let queue = link
        .queue(QueueRequest::default())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    assert_eq!(queue, r#"{"queue":[]}"#);
    let e = link
        .kill_tasks(KillTasksRequest::default())
        .await
        .expect_err("unimplemented");
    assert_eq!(e.code, ErrorCode::Internal);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .context("the leader stops")??
        .map_err(|e| anyhow!("{e}"))?;
    // The leader is gone but still holds the lease: 502, no panic, no hang.
    let e = tokio::time::timeout(Duration::from_secs(10), link.abdicate())
        .await
        .context("the call must give up")?
        .expect_err("leader down");
    assert_eq!(e.code, ErrorCode::NoLeader);
    Ok(())
}
