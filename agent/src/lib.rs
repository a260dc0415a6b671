//! # stride-agent
//!
//! The node agent. One runs per node: it dials the scheduler leader, offers the node's resources
//! and attributes, and runs the tasks the leader launches there — processes under `/bin/sh -c`
//! (a command of plain words as the program itself, see `shellcmd`), each in a sandbox
//! directory, a process group and (where the node allows) cgroups of its own, or Docker
//! containers through the Engine API — reporting every change of their state back.
//! Before a task starts its URIs are fetched into the sandbox and its persistent volumes made;
//! its sandbox stays readable through the agent's own gRPC API (`AgentApi`), which also runs
//! COMMAND health checks. Tasks outlive the agent: a restarted agent finds them again from its
//! work directory (and Docker's labels) and carries on watching them.
//!
//! ```text
//!               scheduler leader (AgentLink::Session, a bidirectional gRPC stream)
//!                    ▲ Register, Heartbeat, TaskStatus      │ Registered, NotLeader, Launch,
//!                    │                                      ▼ Kill, Reconcile, Acknowledge
//!              ┌─────┴──────────────────────────────────────────┐
//!              │ session: dial, follow NotLeader, reconnect,    │
//!              │          heartbeat, epoch fence                │
//!              └─────▲──────────────────────────┬───────────────┘
//!               Update{seq, status}       Command (fenced)
//!              ┌─────┴──────────────────────────▼───────────────┐
//!              │ supervisor: the task table; prepare (fetch,    │──► <work_dir>/tasks.journal
//!              │ volumes, cgroups, pull), start, watch, kill    │
//!              └──────┬──────────────────────────────┬──────────┘
//!                     ▼                              ▼
//!               task processes (own process     Docker containers (labels stride.*,
//!               group and cgroups)              output copied into the sandbox)
//!                     └──── stdout/stderr in <work_dir>/sandboxes/<task_id>/ ────┘
//!                                    ▲
//!               AgentApi (gRPC, api_listen): ListFiles, ReadFile, RunCommandCheck
//! ```
//!
//! The library exports [`Config`], [`run`] and [`AgentError`]; `main.rs` only turns flags and the
//! environment into a `Config`. [`run`] uses no process-wide state, so several agents can run in
//! one process (tests, `stride dev`).

mod api;
mod cgroups;
mod checks;
mod config;
mod container;
mod docker;
mod error;
mod fence;
mod fetcher;
mod files;
mod metrics;
mod node;
mod process;
mod session;
mod shellcmd;
mod spawner;
mod state;
mod supervisor;
mod task;
mod taskenv;
mod volumes;
mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use stride_proto::v1::agent_api_server::AgentApiServer;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{error, info, info_span, warn, Instrument};

pub use config::{
    Attributes, Config, ConfigError, PortRange, PortRanges, DEFAULT_API_LISTEN, DEFAULT_TASK_PATH,
};
pub use error::AgentError;
pub use state::StateError;

use api::AgentApiService;
use cgroups::Cgroups;
use docker::DockerEngine;
use fence::EpochFence;
use fetcher::Fetcher;
use node::NodeInfo;
use session::Session;
use spawner::Spawner;
use state::StateDir;
use supervisor::{Shared, Supervisor, SupervisorConfig, SupervisorHandle};

/// Commands queued from the session to the supervisor.
const COMMAND_BUFFER: usize = 256;

/// Runs the agent until `shutdown` resolves. Tasks keep running when it returns; the next agent
/// started on the same `work_dir` takes them back.
///
/// Fails only at start-up (bad configuration, unusable work directory); after that, an
/// unreachable scheduler is retried for as long as it takes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    config.validate()?;
    let tls = config.mutual_tls()?;
    metrics::describe();
    let work_dir = std::path::absolute(&config.work_dir).map_err(|source| AgentError::WorkDir {
        path: config.work_dir.clone(),
        source,
    })?;
    let state = StateDir::open(&work_dir).await?;
    let mut node = NodeInfo::resolve(&config, &state).await?;
    let span = info_span!("agent", agent_id = %node.agent_id);
    async move {
        let epoch = state.load_epoch().await?;
        // Without its API the agent still runs tasks: sandboxes and command checks are what is
        // lost, which a person must fix (another process on the port, most likely).
        let api_listener = match tokio::net::TcpListener::bind(&config.api_listen).await {
            Ok(listener) => Some(listener),
            Err(e) => {
                error!(listen = %config.api_listen, error = %e, "cannot listen for the agent API; task sandboxes and command checks are unavailable");
                None
            }
        };
        if let Some(port) = api_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
        {
            node.api_address = config
                .api_advertise
                .clone()
                .unwrap_or_else(|| format!("{}:{port}", node.hostname));
        }
        info!(
            hostname = %node.hostname,
            work_dir = %work_dir.display(),
            cpus = node.cpus,
            mem = node.mem,
            disk = node.disk,
            api = %node.api_address,
            epoch,
            "agent starting"
        );
        let cgroups = if config.cgroups {
            match Cgroups::detect() {
                Ok(c) => {
                    info!(version = c.version(), "process tasks are confined with cgroups");
                    Some(c)
                }
                Err(reason) => {
                    warn!(%reason, "cgroups are not usable; process tasks run without memory and CPU limits");
                    None
                }
            }
        } else {
            info!("cgroups are disabled by configuration; process tasks run unconfined");
            None
        };
        // v1 lets a task start inside its groups; v2 starts it behind its gate.
        let spawner = match &cgroups {
            Some(Cgroups::V1 { .. }) => match Spawner::new(tokio::runtime::Handle::current()) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(error = %e, "cannot start the task spawner thread; tasks start behind a gate");
                    None
                }
            },
            _ => None,
        };
        let docker = Arc::new(DockerEngine::new(config.docker_host.clone()));
        let fetcher = Fetcher::new(state.cache_dir()).map_err(|message| AgentError::Detect {
            what: "fetcher",
            message,
        })?;
        let shared = Arc::new(Shared {
            config: SupervisorConfig {
                agent_id: node.agent_id.clone(),
                hostname: node.hostname.clone(),
                task_path: config.task_path.clone(),
                sandbox_retention: config.sandbox_retention,
                allow_privileged: config.allow_privileged,
                allow_host_volumes: config.allow_host_volumes,
            },
            state: state.clone(),
            own_user: process::current_user(),
            cgroups,
            spawner,
            docker: docker.clone(),
            fetcher,
        });
        // Docker is optional: say once whether Docker tasks can run here.
        tokio::spawn(
            async move {
                match tokio::time::timeout(Duration::from_secs(5), docker.available()).await {
                    Ok(Ok(())) => info!("Docker is available for Docker tasks"),
                    Ok(Err(e)) => info!(reason = %e, "Docker tasks cannot run until Docker is available"),
                    Err(_) => info!("Docker did not answer within 5s; Docker tasks wait for it"),
                }
            }
            .in_current_span(),
        );
        let (updates_tx, updates_rx) = mpsc::unbounded_channel();
        let supervisor = Supervisor::recover(shared.clone(), updates_tx).await?;
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_BUFFER);
        let handle = SupervisorHandle::new(commands_tx);
        let api_handle = handle.clone();
        let api_tls = tls.clone();
        let api = async move {
            let Some(listener) = api_listener else {
                return std::future::pending().await;
            };
            let service = AgentApiServer::new(AgentApiService::new(shared, api_handle));
            let mut builder = tonic::transport::Server::builder();
            if let Some(tls) = &api_tls {
                builder = match builder.tls_config(tls.server()) {
                    Ok(b) => b,
                    Err(e) => {
                        error!(error = %e, "cannot use the TLS certificate for the agent API; task sandboxes and command checks are unavailable");
                        return std::future::pending().await;
                    }
                };
            }
            if let Err(e) = builder
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
            {
                error!(error = %e, "the agent API stopped; task sandboxes and command checks are unavailable");
            }
            std::future::pending::<()>().await
        };
        let session = Session::new(
            node,
            config.schedulers.clone(),
            EpochFence::new(state, epoch),
            handle,
            updates_rx,
            tls,
        );
        // The loops run until shutdown; dropping them closes the stream and stops the watchers,
        // never the tasks.
        tokio::select! {
            () = shutdown => info!("shutting down; tasks keep running"),
            () = supervisor.run(commands_rx) => info!("supervisor stopped"),
            () = session.run() => info!("session stopped"),
            () = api => {}
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// Whether this node lets the agent confine process tasks with cgroups: the cgroup version it
/// would use, or why it cannot (the agent then runs them unconfined). For diagnostics and tests.
pub fn probe_cgroups() -> Result<u8, String> {
    Cgroups::detect().map(|c| c.version())
}
