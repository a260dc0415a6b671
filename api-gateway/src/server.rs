//! Starting and stopping the gateway: the HTTP server, the event-stream tail, the leader
//! watch and the listings kept current, all ended by one shutdown future.
//!
//! `run` works inside any Tokio runtime (a multi-threaded one in `main.rs`, a test's runtime,
//! `stride dev`'s); it needs no actix `System` or `LocalSet`. actix-web runs its HTTP workers on
//! threads of their own; the background tasks and gRPC calls run on the caller's runtime.

use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::{from_fn, NormalizePath};
use actix_web::{web, App, HttpServer};
use stride_proto::tls::MutualTls;
use stride_store::StateStore;
use stride_telemetry::MetricsHandle;
use tokio::sync::watch;

use crate::admission::Admission;
use crate::audit::{self, AuditLog};
use crate::auth::external::JsonClient;
use crate::auth::file::AuthFile;
use crate::auth::{self, Security};
use crate::config::Config;
use crate::events::EventHub;
use crate::leader::{GrpcLeaderLink, LeaderLink};
use crate::routes;
use crate::state::{Gateway, LeaderWatch};

/// Seconds open requests get to finish once shutdown begins.
const SHUTDOWN_GRACE_SECS: u64 = 5;

/// Serves the API on `listener` until `shutdown` completes, sending changes to whichever
/// scheduler holds the lease in `store` (over gRPC, [`GrpcLeaderLink`]).
///
/// Call it from inside any Tokio runtime (no actix `System` or `LocalSet` needed); the HTTP
/// workers run on threads of their own, the event tail, the leader watch and the gRPC calls on
/// the caller's runtime.
pub async fn run(
    config: Config,
    listener: TcpListener,
    store: Arc<dyn StateStore>,
    metrics: MetricsHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let link = Arc::new(
        GrpcLeaderLink::new(store.clone(), config.leader_call_timeout).with_tls(grpc_tls(&config)?),
    );
    run_with_leader(config, listener, store, link, metrics, shutdown).await
}

/// [`run`] with any [`LeaderLink`]: a fake in tests, an in-process one in `stride dev`.
pub async fn run_with_leader(
    config: Config,
    listener: TcpListener,
    store: Arc<dyn StateStore>,
    leader_link: Arc<dyn LeaderLink>,
    metrics: MetricsHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grpc_tls = grpc_tls(&config)?;
    let (security, admission) = security(&config)?;
    let audit = AuditLog::open(config.audit_log.as_deref()).map_err(invalid)?;
    let https = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            Some(crate::auth::tls::server_config(cert, key).map_err(invalid)?)
        }
        (None, None) => None,
        _ => return Err(invalid("HTTPS needs both --tls-cert and --tls-key")),
    };
    crate::metrics::describe();

    let (stop_tx, stop_rx) = watch::channel(false);

    let hub = EventHub::new(config.event_buffer);
    let tail = tokio::spawn(hub.clone().tail(store.clone(), stop_rx.clone()));

    let leader = Arc::new(LeaderWatch::default());
    leader.refresh(store.as_ref()).await;
    let poller = tokio::spawn(poll_leader(
        leader.clone(),
        store.clone(),
        config.leader_poll_interval,
        stop_rx.clone(),
    ));

    let snapshots = Arc::new(crate::read::SnapshotCache::default());
    let keeper = (!config.snapshot_refresh_interval.is_zero()).then(|| {
        let (snapshots, store, every, stop) = (
            snapshots.clone(),
            store.clone(),
            config.snapshot_refresh_interval,
            stop_rx.clone(),
        );
        tokio::spawn(async move { snapshots.keep_current(store.as_ref(), every, stop).await })
    });

    let body_limit = config.request_body_limit;
    let workers = config.workers;
    let local_addr = listener.local_addr()?;
    let advertised = config
        .advertised_address
        .clone()
        .unwrap_or_else(|| advertised_from(local_addr));
    let state = web::Data::new(Gateway {
        config,
        advertised,
        store,
        leader_link,
        metrics,
        hub,
        leader,
        shutdown: stop_rx,
        event_streams: AtomicI64::new(0),
        security,
        admission,
        audit,
        grpc_tls,
        snapshots,
    });

    let scheme = if https.is_some() { "https" } else { "http" };
    let server = http_server(state, listener, https, body_limit, workers, async move {
        shutdown.await;
        // Open SSE streams end first, so the graceful shutdown does not wait on them.
        let _ = stop_tx.send(true);
    })?;
    tracing::info!(address = %local_addr, scheme, "api-gateway listening");
    let result = server.await;
    tail.abort();
    poller.abort();
    if let Some(keeper) = keeper {
        keeper.abort();
    }
    tracing::info!("api-gateway stopped");
    result
}

fn invalid(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message.into())
}

/// Mutual TLS of the gRPC links: with `tls_ca` (and then `tls_cert`, `tls_key`).
fn grpc_tls(config: &Config) -> std::io::Result<Option<MutualTls>> {
    match &config.tls_ca {
        None => Ok(None),
        Some(ca) => MutualTls::from_paths(
            Some(ca),
            config.tls_cert.as_deref(),
            config.tls_key.as_deref(),
        )
        .map_err(|e| invalid(e.to_string())),
    }
}

/// Who may do what and which webhooks see changes: from the security file, or open when (and
/// only when) `insecure_no_auth` says so.
fn security(config: &Config) -> std::io::Result<(Security, Admission)> {
    let client = JsonClient::new();
    match (&config.auth_config, config.insecure_no_auth) {
        (Some(_), true) => Err(invalid(
            "both a security file (--auth-config) and --insecure-no-auth are given; choose one",
        )),
        (Some(path), false) => {
            let file = AuthFile::load(path).map_err(|e| invalid(e.to_string()))?;
            let security = Security::from_file(&file, client.clone()).map_err(invalid)?;
            tracing::info!(file = %path.display(), users = file.users.len(), tokens = file.tokens.len(),
                external = file.auth.external_url.as_deref().unwrap_or(""),
                webhooks = file.admission.webhooks.len(), "authentication on");
            Ok((security, Admission::new(file.admission.webhooks, client)))
        }
        (None, true) => {
            tracing::warn!("THE API IS OPEN (--insecure-no-auth): anyone who can reach it can run any command on every agent");
            Ok((Security::open(), Admission::none()))
        }
        (None, false) => Err(invalid(
            "refusing to start without authentication: give a security file with --auth-config \
             (see docs/security.md), or --insecure-no-auth to run open on purpose",
        )),
    }
}

/// What clients should dial when only the bound address is known.
fn advertised_from(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// Builds and starts the actix server. A plain function, so that nothing of the (non-`Send`)
/// builder lives across an `.await` of `run`'s future.
fn http_server(
    state: web::Data<Gateway>,
    listener: TcpListener,
    https: Option<rustls::ServerConfig>,
    body_limit: usize,
    workers: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Server> {
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(body_limit))
            .configure(routes::configure)
            .default_service(web::to(routes::not_found))
            .wrap(from_fn(auth::authenticate))
            .wrap(from_fn(audit::record))
            .wrap(from_fn(routes::common))
            .wrap(NormalizePath::trim())
    })
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_GRACE_SECS)
    .shutdown_signal(shutdown);
    if workers > 0 {
        server = server.workers(workers);
    }
    let server = match https {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}

async fn poll_leader(
    leader: Arc<LeaderWatch>,
    store: Arc<dyn StateStore>,
    every: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    let every = every.max(std::time::Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => leader.refresh(store.as_ref()).await,
            _ = stop.changed() => return,
        }
    }
}
