//! `/v2/eventSubscriptions` (reference §1.7): HTTP callback subscriptions. The gateway records
//! them in the store; the leading scheduler POSTs every event to every subscribed URL (see
//! `stride_scheduler::callbacks`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use stride_core::Timestamp;

use crate::auth::{Caller, SystemAction, SystemResource};
use crate::error::{GatewayError, Result};
use crate::http::{json as json_response, origin, Query};
use crate::state::Gateway;

/// Where subscriptions live (shared with the scheduler).
const SUBSCRIPTIONS: &str = "event-subscriptions";

fn callback_url(req: &HttpRequest) -> Result<String> {
    let q = Query::from_request(req);
    let url = q
        .get("callbackUrl")
        .ok_or_else(|| GatewayError::bad_request("The callbackUrl query parameter is required"))?
        .to_string();
    let host = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""))
        .unwrap_or("");
    let valid = !host.is_empty()
        && !host.starts_with(':')
        && !url.contains(char::is_whitespace)
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]@_%".contains(c));
    if !valid {
        return Err(GatewayError::unprocessable(format!("Invalid URL: {url}")));
    }
    Ok(url)
}

fn event(req: &HttpRequest, url: &str, kind: &str) -> serde_json::Value {
    json!({
        "callbackUrl": url,
        "clientIp": origin(req).client_ip,
        "eventType": kind,
        "timestamp": Timestamp::now(),
    })
}

/// `GET /v2/eventSubscriptions`.
pub(crate) async fn list(gw: web::Data<Gateway>, caller: Caller) -> Result<HttpResponse> {
    caller
        .require_system(SystemAction::View, SystemResource::Subscriptions)
        .await?;
    let mut urls = gw.store.keys(SUBSCRIPTIONS).await?;
    urls.sort();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "callbackUrls": urls }),
    ))
}

/// `POST /v2/eventSubscriptions?callbackUrl=`.
pub(crate) async fn subscribe(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    caller: Caller,
) -> Result<HttpResponse> {
    caller
        .require_system(SystemAction::Update, SystemResource::Subscriptions)
        .await?;
    let url = callback_url(&req)?;
    let body = event(&req, &url, "subscribe_event");
    gw.store
        .put_unfenced(SUBSCRIPTIONS, &url, body.to_string().into())
        .await?;
    Ok(json_response(StatusCode::OK, &body))
}

/// `DELETE /v2/eventSubscriptions?callbackUrl=`.
pub(crate) async fn unsubscribe(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    caller: Caller,
) -> Result<HttpResponse> {
    caller
        .require_system(SystemAction::Update, SystemResource::Subscriptions)
        .await?;
    let url = callback_url(&req)?;
    gw.store.delete_unfenced(SUBSCRIPTIONS, &url).await?;
    Ok(json_response(
        StatusCode::OK,
        &event(&req, &url, "unsubscribe_event"),
    ))
}
