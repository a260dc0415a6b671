//! `GET /v2/events`: Marathon's SSE stream (reference §9.1), fed by the gateway's [`EventHub`].
//!
//! Differences from Marathon, all additive: frames of stored events carry `id: <stream id>`, and
//! `Last-Event-ID` (or `?lastEventId=`) resumes after that id. `event_stream_attached` is made up
//! for the new client only and `event_stream_detached` is not published: the gateway never
//! writes to the store. `plan-format=light` is accepted; light is the only format.
//!
//! [`EventHub`]: crate::events::EventHub

use std::convert::Infallible;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::json;
use stride_core::Timestamp;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::{Caller, Scope};
use crate::events::{read_backlog, SseEvent, Subscription};
use crate::http::{accepted, Query};
use crate::metrics::EVENT_STREAMS_LAGGED;
use crate::state::Gateway;

/// Frames buffered between the pump task and the HTTP response.
const FRAME_BUFFER: usize = 32;

type FrameSender = mpsc::Sender<Result<Bytes, Infallible>>;

/// The stream, less the events about apps and groups the caller may not view (and, unless it
/// may view the system, events about the cluster itself).
pub(crate) async fn stream(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    caller: Caller,
) -> Result<HttpResponse, crate::error::GatewayError> {
    let scope = caller.view_scope().await?;
    if !accepted(&req).iter().any(|t| t == "text/event-stream") {
        return Ok(HttpResponse::MethodNotAllowed().json(
            json!({ "message": "The event stream needs the header 'Accept: text/event-stream'" }),
        ));
    }
    let q = Query::from_request(&req);
    let filter: Vec<String> = q.all("event_type").map(str::to_string).collect();
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .or_else(|| q.get("lastEventId").filter(|v| !v.is_empty()))
        .map(str::to_string);
    let remote = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();

    // Subscribe before answering, so nothing published from here on is missed.
    let subscription = gw.hub.subscribe(last_event_id.as_deref());
    let (tx, rx) = mpsc::channel(FRAME_BUFFER);
    actix_web::rt::spawn(pump(
        gw.into_inner(),
        subscription,
        last_event_id,
        filter,
        scope,
        remote,
        tx,
    ));
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream;charset=UTF-8")
        .streaming(ReceiverStream::new(rx)))
}

/// Keeps the open-streams gauge right however the pump ends.
struct StreamGuard(Arc<Gateway>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.event_stream_delta(-1);
    }
}

async fn send(tx: &FrameSender, frame: Bytes) -> bool {
    tx.send(Ok(frame)).await.is_ok()
}

/// Writes one client's stream until it disconnects, falls behind, or the server stops.
async fn pump(
    gw: Arc<Gateway>,
    subscription: Subscription,
    after: Option<String>,
    filter: Vec<String>,
    scope: Arc<Scope>,
    remote: String,
    tx: FrameSender,
) {
    gw.event_stream_delta(1);
    let _guard = StreamGuard(gw.clone());
    let wanted_type = |t: &str| filter.is_empty() || filter.iter().any(|f| f == t);
    let wanted = |e: &SseEvent| e.wanted(wanted_type, |subjects| scope.sees_event(subjects));
    tracing::debug!(remote = %remote, "event stream attached");

    let attached = stride_core::events::event_stream_attached(Timestamp::now(), &remote);
    if wanted_type(attached.event_type) && !send(&tx, SseEvent::local(&attached.body).frame()).await
    {
        return;
    }

    let Subscription {
        mut live,
        recent,
        from_store_until,
    } = subscription;
    let mut last_sent = after.clone();
    if let Some(after) = &after {
        if let Some(until) = from_store_until {
            match read_backlog(gw.store.as_ref(), after, until.as_deref()).await {
                Ok(events) => {
                    for e in events {
                        last_sent = e.id.clone();
                        if wanted(&e) && !send(&tx, e.frame()).await {
                            return;
                        }
                    }
                }
                Err(e) => {
                    // Closing makes the client reconnect with its Last-Event-ID and try again.
                    tracing::warn!(error = %e, "cannot read missed events for a resuming SSE client");
                    return;
                }
            }
        }
        for e in recent {
            if last_sent.as_deref().is_some_and(|l| !e.is_after(l)) {
                continue;
            }
            last_sent = e.id.clone();
            if wanted(&e) && !send(&tx, e.frame()).await {
                return;
            }
        }
    }

    let period = gw
        .config
        .event_heartbeat
        .max(std::time::Duration::from_millis(10));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut shutdown = gw.shutdown.clone();
    if *shutdown.borrow() {
        return;
    }
    loop {
        tokio::select! {
            _ = tx.closed() => break,
            _ = shutdown.changed() => break,
            _ = heartbeat.tick() => {
                if !send(&tx, Bytes::from_static(b"\r\n")).await {
                    break;
                }
            }
            received = live.recv() => match received {
                Ok(e) => {
                    if last_sent.as_deref().is_some_and(|l| !e.is_after(l)) {
                        continue;
                    }
                    last_sent = e.id.clone();
                    if wanted(&e) && !send(&tx, e.frame()).await {
                        break;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    metrics::counter!(EVENT_STREAMS_LAGGED).increment(1);
                    tracing::info!(remote = %remote, missed, "disconnecting an SSE client that fell behind");
                    break;
                }
                Err(RecvError::Closed) => break,
            }
        }
    }
    tracing::debug!(remote = %remote, "event stream detached");
}
