//! lb-sync: publishes Stride's healthy instances to HAProxy and DNS.
//!
//! ```text
//!  store events ──► tail ──► (debounce) ──► loader: apps + instances + agents ──► Snapshot
//!                                              │ (a failed read keeps the last one)
//!                         ┌────────────────────┴─────────────────────┐
//!                         ▼                                          ▼
//!              haproxy::Controller                           dns::Publisher
//!   marathon-lb config, runtime API, reloads      zone ─► UDP/TCP server, RFC 2136 push
//! ```
//!
//! Every change to apps or instances appends an event to the store's stream; any event marks
//! the state dirty, and after a short debounce (bursts coalesce) the loader reads a full
//! snapshot. Snapshots go to the HAProxy side and the DNS side through `watch` channels, so a
//! slow reload never delays DNS and each side only ever works on the newest state. A full
//! re-read also runs every `resync_interval`, in case an event was missed.
//!
//! Modules: [`snapshot`] (the state and the serving rule), [`haproxy`] (rendering, runtime API,
//! reloads), [`dns`] (records, the server, RFC 2136), [`config`].

pub mod config;
pub mod dns;
pub mod haproxy;
pub mod metrics;
pub mod snapshot;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stride_store::StateStore;
use tokio::sync::{watch, Notify};

pub use config::Config;
pub use dns::DnsListeners;
use snapshot::{Loader, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind the DNS listeners: {0}")]
    Bind(std::io::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Runs lb-sync until `shutdown` completes, binding the DNS listeners from `config`.
pub async fn run(
    config: Config,
    store: Arc<dyn StateStore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let listeners = DnsListeners::bind(&config.dns).await.map_err(Error::Bind)?;
    run_with(config, store, listeners, shutdown).await
}

/// Runs lb-sync with DNS listeners bound by the caller (tests bind `127.0.0.1:0`).
pub async fn run_with(
    config: Config,
    store: Arc<dyn StateStore>,
    listeners: DnsListeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    config
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
    crate::metrics::describe();
    // Everything that can refuse the configuration, before any task starts.
    let forward: Vec<SocketAddr> = config
        .dns
        .forward
        .iter()
        .map(|f| {
            f.parse::<SocketAddr>()
                .or_else(|_| format!("{f}:53").parse())
                .map_err(|e| Error::Config(format!("dns.forward {f:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let pusher = match (&config.dns.update, config.dns.enabled) {
        (Some(update), true) => Some(
            dns::update::Pusher::new(update, &config.dns.domain, config.dns.ttl)
                .map_err(|e| Error::Config(e.to_string()))?,
        ),
        _ => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let (snap_tx, snap_rx) = watch::channel::<Option<Arc<Snapshot>>>(None);
    let dirty = Arc::new(Notify::new());
    let mut tasks = Vec::new();

    tasks.push(tokio::spawn(tail(
        store.clone(),
        dirty.clone(),
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(load(
        Loader::new(store, config.store_timeout),
        config.debounce,
        config.resync_interval,
        dirty,
        snap_tx,
        stop_rx.clone(),
    )));

    if config.haproxy.enabled {
        tasks.push(tokio::spawn(haproxy::run(
            config.haproxy.clone(),
            snap_rx.clone(),
            stop_rx.clone(),
            None,
        )));
    }

    if config.dns.enabled {
        let shared = Arc::new(dns::server::Shared::new(
            &dns::names::fqdn(&config.dns.domain),
            forward,
            config.dns.forward_timeout,
            config.dns.max_udp_payload,
        ));
        for socket in listeners.udp {
            tasks.push(tokio::spawn(dns::server::serve_udp(
                socket,
                shared.clone(),
                stop_rx.clone(),
            )));
        }
        for listener in listeners.tcp {
            tasks.push(tokio::spawn(dns::server::serve_tcp(
                listener,
                shared.clone(),
                stop_rx.clone(),
            )));
        }
        let mut publisher = dns::Publisher::new(&config.dns, shared);
        if let (Some(update), Some(pusher)) = (&config.dns.update, pusher) {
            tasks.push(tokio::spawn(dns::update::run(
                update.clone(),
                pusher,
                publisher.subscribe(),
                stop_rx.clone(),
            )));
        }
        let mut snaps = snap_rx.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = snaps.changed() => {
                        if r.is_err() { break; }
                        let snap = snaps.borrow_and_update().clone();
                        if let Some(snap) = snap {
                            if publisher.publish(&snap) {
                                tracing::debug!(serial = publisher.serial(), "DNS zone updated");
                            }
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        }));
    }

    tracing::info!("lb-sync running");
    shutdown.await;
    tracing::info!("lb-sync stopping");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// Follows the store's event stream; any event marks the state dirty.
async fn tail(store: Arc<dyn StateStore>, dirty: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    let mut last: Option<String> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        if last.is_none() {
            match store.last_event_id().await {
                Ok(id) => last = Some(id),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the event stream position");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            // Anything may have happened before we were listening.
            dirty.notify_one();
        }
        let read = store.read_events(last.as_deref(), 1000, Duration::from_secs(1));
        let result = tokio::select! {
            r = read => r,
            _ = stop.changed() => return,
        };
        match result {
            Ok(events) => {
                backoff = Duration::from_millis(200);
                if let Some(e) = events.last() {
                    last = Some(e.id.clone());
                    dirty.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the event stream failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                // Resume from a fresh position: events may have been trimmed meanwhile.
                last = None;
            }
        }
    }
}

/// Reads a snapshot whenever the state is dirty (after `debounce`), at every resync, and
/// again soon after a failed read. A failed read publishes nothing: the last good snapshot
/// stays in force.
async fn load(
    loader: Loader,
    debounce: Duration,
    resync: Duration,
    dirty: Arc<Notify>,
    out: watch::Sender<Option<Arc<Snapshot>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut retry: Option<Duration> = None;
    let mut first = true;
    loop {
        if !first {
            let wait = retry.unwrap_or(resync);
            tokio::select! {
                _ = dirty.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            tokio::time::sleep(debounce).await;
        }
        first = false;
        match loader.load().await {
            Ok(snapshot) => {
                retry = None;
                ::metrics::counter!(crate::metrics::STORE_READS, "result" => "ok").increment(1);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                ::metrics::gauge!(crate::metrics::LAST_SUCCESS).set(now);
                let changed = out.borrow().as_deref() != Some(&snapshot);
                if changed {
                    out.send_replace(Some(Arc::new(snapshot)));
                }
            }
            Err(e) => {
                ::metrics::counter!(crate::metrics::STORE_READS, "result" => "error").increment(1);
                let next = retry.map_or(Duration::from_millis(500), |r| {
                    (r * 2).min(Duration::from_secs(5))
                });
                tracing::warn!(error = %e, retry_in = ?next, "cannot read the store; keeping the last published state");
                retry = Some(next);
            }
        }
    }
}
