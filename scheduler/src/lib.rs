//! The Stride scheduler.
//!
//! One scheduler leads (it holds the store's lease), any number stand by. The leader owns
//! desired state, plans and runs deployments, matches launches to the agents' free resources,
//! handles task status and reconciles after failover. See `README.md` beside this file for the
//! flow; the decisions live in `stride-core` and [`state`], the actors in [`elector`] and
//! [`leader`] only carry messages.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use stride_proto::v1::{agent_link_server::AgentLinkServer, control_server::ControlServer};
use stride_store::{Candidate, StateStore};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;
use tracing::info;

pub mod callbacks;
pub mod elector;
pub mod groups;
pub mod grpc;
pub mod health;
mod index;
pub mod leader;
pub mod metrics;
mod root;
pub mod standby;
pub mod state;

pub use elector::Role;
pub use state::Tuning;

/// Everything the scheduler needs besides its listener and store.
#[derive(Clone, Debug)]
pub struct Config {
    /// Unique among schedulers; shown as the leader's id.
    pub scheduler_id: String,
    /// `host:port` where agents and gateways reach this scheduler's gRPC.
    pub advertised_grpc_address: String,
    /// Address of the HTTP API users should be sent to, for display.
    pub http_address: String,
    pub lease_ttl: Duration,
    pub renew_interval: Duration,
    pub campaign_interval: Duration,
    pub heartbeat_interval: Duration,
    /// How often a standby brings its copy of the state up to date from the store's change
    /// feed, so that winning an election costs a catch-up rather than reading everything;
    /// `None` to read everything at every election instead.
    pub standby_poll: Option<Duration>,
    pub tuning: Tuning,
    /// Mutual TLS on the gRPC port: with it, only clients presenting a certificate signed by
    /// the CA (gateways, agents, health checkers) get past the handshake.
    pub tls: Option<stride_proto::tls::MutualTls>,
}

impl Config {
    /// Defaults for a scheduler reachable at `advertised_grpc_address`.
    pub fn new(advertised_grpc_address: &str) -> Self {
        Self {
            scheduler_id: format!("scheduler-{}", uuid::Uuid::new_v4()),
            advertised_grpc_address: advertised_grpc_address.to_string(),
            http_address: String::new(),
            lease_ttl: Duration::from_secs(2),
            renew_interval: Duration::from_millis(500),
            // Cheap (one script call), and a standby takes over this much sooner.
            campaign_interval: Duration::from_millis(100),
            heartbeat_interval: Duration::from_secs(1),
            standby_poll: Some(Duration::from_millis(500)),
            tuning: Tuning::default(),
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Runs the scheduler until `shutdown` resolves, then resigns leadership. Must be called inside
/// an actix `System` (the actors live on its arbiter); the gRPC server runs on tokio.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    store: Arc<dyn StateStore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SchedulerError> {
    metrics::describe();
    let (role_tx, role_rx) = watch::channel(Role::Follower);
    let candidate = Candidate {
        scheduler_id: config.scheduler_id.clone(),
        grpc_address: config.advertised_grpc_address.clone(),
        http_address: config.http_address.clone(),
    };
    let timing = elector::Timing {
        lease_ttl: config.lease_ttl,
        renew_interval: config.renew_interval,
        campaign_interval: config.campaign_interval,
    };
    // A lease renewed on time never has less than `lease_ttl - renew_interval` left: a
    // renewal half an interval late means its holder is most likely gone. A standby that
    // guesses wrong only spends the CPU of a build.
    let build_ahead_below = config
        .lease_ttl
        .saturating_sub(config.renew_interval * 3 / 2)
        .max(config.lease_ttl / 4);
    let standby = config.standby_poll.map(|poll| {
        standby::Standby::start(
            store.clone(),
            standby::Following {
                poll,
                build_ahead_below,
            },
        )
    });
    let elector = elector::Elector::new(
        store.clone(),
        candidate,
        timing,
        config.tuning.clone(),
        role_tx,
        standby,
    )
    .start();
    let shared = grpc::Shared {
        role: role_rx,
        elector: elector.clone(),
        store,
        heartbeat_interval: config.heartbeat_interval,
        sessions: Default::default(),
    };
    info!(id = %config.scheduler_id, grpc = %config.advertised_grpc_address, "scheduler starting");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        builder = builder.tls_config(tls.server())?;
        info!("gRPC requires client certificates signed by the cluster CA");
    }
    // tonic sets TCP_NODELAY only on sockets it accepts itself; these it does not, and
    // without it a reply whose frames go out in two writes waits for the peer's delayed ACK
    // (40 ms on Linux) before its last frame is sent.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    });
    let server = builder
        .http2_keepalive_interval(Some(Duration::from_secs(2)))
        .http2_keepalive_timeout(Some(Duration::from_secs(3)))
        .add_service(ControlServer::new(grpc::ControlService(shared.clone())))
        .add_service(health::server(shared.clone()))
        .add_service(AgentLinkServer::new(grpc::AgentLinkService(shared)))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
    let server = tokio::spawn(server);
    shutdown.await;
    info!("scheduler shutting down");
    let _ = elector.send(elector::Resign).await;
    let _ = stop_tx.send(());
    if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(5), server).await {
        r?;
    }
    Ok(())
}
