//! The gateway's link to the scheduler leader: every change the API accepts goes through here.
//!
//! [`LeaderLink`] has one method per `Control` call and answers with Marathon's error
//! ([`ApiError`]) when the leader refuses, so handlers render what the leader said. The real
//! implementation, [`GrpcLeaderLink`], finds the leader in the store's lease record, dials it
//! with tonic and caches the channel for as long as the lease keeps the same epoch. Tests pass a
//! fake; `stride dev` may pass an in-process one.
//!
//! The request and reply types are the `stride-proto` messages: this is the transport edge, and
//! defining a parallel set of structs would only add a copy of the contract to keep in step.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stride_core::error::{ApiError, ErrorCode};
use stride_proto::control_client::ControlClient;
use stride_proto::convert::api_error_from_status;
use stride_proto::tls::{grpc_url, MutualTls};
use stride_proto::v1::{
    CancelDeploymentRequest, DeployRequest, DeployResponse, Empty, KillTasksRequest,
    KillTasksResponse, QueueRequest, ResetDelayRequest,
};
use stride_store::StateStore;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::metrics::LEADER_CALLS;

/// What the gateway asks of the scheduler leader (`stride.v1.Control`).
#[async_trait]
pub trait LeaderLink: Send + Sync + 'static {
    /// Applies app changes and starts the resulting deployment.
    async fn deploy(&self, request: DeployRequest) -> Result<DeployResponse, ApiError>;
    /// Kills tasks, optionally scaling down or wiping.
    async fn kill_tasks(&self, request: KillTasksRequest) -> Result<KillTasksResponse, ApiError>;
    /// Rolls a deployment back (`force = false`) or stops it in place.
    async fn cancel_deployment(
        &self,
        request: CancelDeploymentRequest,
    ) -> Result<DeployResponse, ApiError>;
    /// Resets an app's launch backoff.
    async fn reset_delay(&self, request: ResetDelayRequest) -> Result<(), ApiError>;
    /// Makes the leader step down.
    async fn abdicate(&self) -> Result<(), ApiError>;
    /// The launch queue as `GET /v2/queue` shows it, as JSON text.
    async fn queue(&self, request: QueueRequest) -> Result<String, ApiError>;
}

/// 502 `Could not determine the current leader` (reference §0.3).
pub fn no_leader() -> ApiError {
    ApiError::new(
        ErrorCode::NoLeader,
        "Could not determine the current leader",
    )
}

/// The channel to the current leader and the term it belongs to.
struct Dialed {
    epoch: u64,
    address: String,
    client: ControlClient<Channel>,
}

struct Inner {
    store: Arc<dyn StateStore>,
    /// Deadline of each call (connection included).
    call_timeout: Duration,
    /// Reused while the lease keeps the same epoch and address; dropped when a call finds the
    /// leader unreachable.
    dialed: parking_lot::Mutex<Option<Dialed>>,
    /// Mutual TLS to the leader (`https://`, with the gateway's client certificate).
    tls: Option<MutualTls>,
}

/// [`LeaderLink`] over gRPC to whichever scheduler holds the lease.
///
/// Calls run on the Tokio runtime that was current when the link was created (when there was
/// one), not on the HTTP worker that asked: the cached channel's background tasks then live as
/// long as the process, whichever worker first dialed.
#[derive(Clone)]
pub struct GrpcLeaderLink {
    inner: Arc<Inner>,
    runtime: Option<tokio::runtime::Handle>,
}

impl GrpcLeaderLink {
    /// A link that finds the leader through `store`. Create it inside the Tokio runtime the
    /// calls should run on.
    pub fn new(store: Arc<dyn StateStore>, call_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                call_timeout,
                dialed: parking_lot::Mutex::new(None),
                tls: None,
            }),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// The same link, dialling the leader over mutual TLS when `tls` is given.
    pub fn with_tls(self, tls: Option<MutualTls>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: self.inner.store.clone(),
                call_timeout: self.inner.call_timeout,
                dialed: parking_lot::Mutex::new(None),
                tls,
            }),
            runtime: self.runtime,
        }
    }

    /// Runs `call` against the leader on the link's runtime.
    async fn run<T, F, Fut>(&self, name: &'static str, call: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: Fn(ControlClient<Channel>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
    {
        let inner = self.inner.clone();
        let result = match &self.runtime {
            Some(rt) => rt
                .spawn(async move { inner.call(call).await })
                .await
                .unwrap_or_else(|e| Err(ApiError::internal(format!("leader call aborted: {e}")))),
            None => inner.call(call).await,
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if e.code == ErrorCode::NoLeader => "no_leader",
            Err(_) => "error",
        };
        metrics::counter!(LEADER_CALLS, "call" => name, "outcome" => outcome).increment(1);
        result
    }
}

impl Inner {
    /// The client for the current leader, dialing when the term or address changed.
    async fn client(&self) -> Result<(u64, ControlClient<Channel>), ApiError> {
        let record = match self.store.leader().await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(no_leader()),
            Err(e) => {
                return Err(ApiError::unavailable(format!(
                    "The state store is unavailable: {e}"
                )));
            }
        };
        let mut dialed = self.dialed.lock();
        if let Some(d) = dialed.as_ref() {
            if d.epoch == record.epoch && d.address == record.grpc_address {
                return Ok((d.epoch, d.client.clone()));
            }
        }
        let mut endpoint =
            Endpoint::from_shared(grpc_url(&record.grpc_address, self.tls.is_some()))
                .map_err(|e| {
                    ApiError::internal(format!(
                        "invalid leader address {:?}: {e}",
                        record.grpc_address
                    ))
                })?
                .connect_timeout(self.call_timeout.min(Duration::from_secs(5)))
                .timeout(self.call_timeout);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.client())
                .map_err(|e| ApiError::internal(format!("TLS to the leader: {e}")))?;
        }
        let client = ControlClient::new(endpoint.connect_lazy());
        tracing::info!(epoch = record.epoch, address = %record.grpc_address, "dialing the scheduler leader");
        *dialed = Some(Dialed {
            epoch: record.epoch,
            address: record.grpc_address,
            client: client.clone(),
        });
        Ok((record.epoch, client))
    }

    fn forget(&self, epoch: u64) {
        let mut dialed = self.dialed.lock();
        if dialed.as_ref().is_some_and(|d| d.epoch == epoch) {
            *dialed = None;
        }
    }

    async fn call<T, F, Fut>(&self, call: F) -> Result<T, ApiError>
    where
        F: Fn(ControlClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (epoch, client) = self.client().await?;
        match call(client).await {
            Ok(r) => Ok(r.into_inner()),
            // A transport failure (no Marathon body in the details): the leader may have moved.
            Err(s) if s.code() == Code::Unavailable && s.details().is_empty() => {
                self.forget(epoch);
                let (new_epoch, client) = self.client().await?;
                if new_epoch == epoch {
                    // Same term: the leader is down or unreachable, and a retry could apply a
                    // change twice if it did get through.
                    return Err(api_error_from_status(&s));
                }
                tracing::info!(
                    old = epoch,
                    new = new_epoch,
                    "leader changed; retrying on the new one"
                );
                call(client)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| {
                        if s.code() == Code::Unavailable && s.details().is_empty() {
                            self.forget(new_epoch);
                        }
                        api_error_from_status(&s)
                    })
            }
            Err(s) => Err(api_error_from_status(&s)),
        }
    }
}

#[async_trait]
impl LeaderLink for GrpcLeaderLink {
    async fn deploy(&self, request: DeployRequest) -> Result<DeployResponse, ApiError> {
        self.run("deploy", move |mut c| {
            let r = request.clone();
            async move { c.deploy(r).await }
        })
        .await
    }

    async fn kill_tasks(&self, request: KillTasksRequest) -> Result<KillTasksResponse, ApiError> {
        self.run("kill_tasks", move |mut c| {
            let r = request.clone();
            async move { c.kill_tasks(r).await }
        })
        .await
    }

    async fn cancel_deployment(
        &self,
        request: CancelDeploymentRequest,
    ) -> Result<DeployResponse, ApiError> {
        self.run("cancel_deployment", move |mut c| {
            let r = request.clone();
            async move { c.cancel_deployment(r).await }
        })
        .await
    }

    async fn reset_delay(&self, request: ResetDelayRequest) -> Result<(), ApiError> {
        self.run("reset_delay", move |mut c| {
            let r = request.clone();
            async move { c.reset_delay(r).await }
        })
        .await
        .map(|_: Empty| ())
    }

    async fn abdicate(&self) -> Result<(), ApiError> {
        self.run(
            "abdicate",
            |mut c| async move { c.abdicate(Empty {}).await },
        )
        .await
        .map(|_: Empty| ())
    }

    async fn queue(&self, request: QueueRequest) -> Result<String, ApiError> {
        self.run("queue", move |mut c| async move { c.queue(request).await })
            .await
            .map(|r| r.json)
    }
}
