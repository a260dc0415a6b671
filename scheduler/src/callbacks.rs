//! HTTP callback subscriptions (Marathon's `--event_subscriber http_callback`, reference §1.7):
//! while this scheduler leads, every event of the store's stream is POSTed as JSON to every
//! subscribed URL.
//!
//! Each URL has its own queue and worker, so a slow subscriber delays only itself. A delivery
//! is tried three times (after 0.2 s and 1 s); a URL that keeps failing is skipped for 2^n
//! seconds after its n-th consecutive failed event (at most 60 s), as Marathon does, and a
//! success resets it. Subscriptions live in the store (collection `event-subscriptions`, written
//! by api-gateway), re-read every second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stride_store::{StateStore, StoredEvent};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// Collection of subscriptions: key = callback URL.
pub const SUBSCRIPTIONS: &str = "event-subscriptions";
/// Events a slow subscriber may have waiting before newer ones are dropped for it.
const QUEUE: usize = 10_000;

/// Runs until `stop` turns true.
pub async fn run(store: Arc<dyn StateStore>, mut stop: watch::Receiver<bool>) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot build the HTTP client; event callbacks are off");
            return;
        }
    };
    let mut position = match store.last_event_id().await {
        Ok(id) => id,
        Err(e) => {
            warn!(error = %e, "cannot read the event stream; event callbacks are off this term");
            return;
        }
    };
    let mut workers: HashMap<String, mpsc::Sender<Bytes>> = HashMap::new();
    let mut refreshed = Instant::now() - Duration::from_secs(10);
    loop {
        if *stop.borrow() {
            return;
        }
        if refreshed.elapsed() >= Duration::from_secs(1) {
            refreshed = Instant::now();
            match store.keys(SUBSCRIPTIONS).await {
                Ok(urls) => {
                    workers.retain(|url, _| urls.contains(url));
                    for url in urls {
                        workers.entry(url.clone()).or_insert_with(|| {
                            info!(%url, "delivering events to a subscriber");
                            let (tx, rx) = mpsc::channel(QUEUE);
                            tokio::spawn(deliver(http.clone(), url, rx));
                            tx
                        });
                    }
                }
                Err(e) => debug!(error = %e, "cannot read subscriptions"),
            }
        }
        let events: Vec<StoredEvent> = tokio::select! {
            r = store.read_events(Some(&position), 1000, Duration::from_secs(1)) => match r {
                Ok(e) => e,
                Err(e) => {
                    debug!(error = %e, "cannot read events");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        for e in events {
            position = e.id.clone();
            for (url, tx) in &workers {
                if tx.try_send(e.body.clone()).is_err() {
                    warn!(%url, "subscriber is too far behind; event dropped for it");
                }
            }
        }
    }
}

async fn deliver(http: reqwest::Client, url: String, mut events: mpsc::Receiver<Bytes>) {
    let mut failures: u32 = 0;
    let mut skip_until: Option<Instant> = None;
    while let Some(body) = events.recv().await {
        if skip_until.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        let mut delivered = false;
        for delay in [None, Some(200), Some(1000)] {
            if let Some(ms) = delay {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let sent = http
                .post(&url)
                .header("Content-Type", "application/json")
                .header("Accept", "application/json")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    delivered = true;
                    break;
                }
                Ok(r) => debug!(%url, status = %r.status(), "subscriber refused an event"),
                Err(e) => debug!(%url, error = %e, "cannot deliver an event"),
            }
        }
        if delivered {
            failures = 0;
            skip_until = None;
        } else {
            failures += 1;
            let pause = Duration::from_secs(2u64.saturating_pow(failures).min(60));
            warn!(%url, failures, pause_s = pause.as_secs(), "subscriber failing; skipping it for a while");
            skip_until = Some(Instant::now() + pause);
        }
    }
}
