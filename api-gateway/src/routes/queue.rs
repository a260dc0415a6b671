//! `/v2/queue` (reference §1.5). Launch delays live only in the leader's memory, as in
//! Marathon, so both the listing and the delay reset are calls to the leader.

use actix_web::http::header::ContentType;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;
use stride_core::error::ApiError;
use stride_core::PathId;
use stride_proto::v1::{QueueRequest, ResetDelayRequest};

use crate::auth::{Action, Caller};
use crate::error::{GatewayError, Result};
use crate::http::Query;
use crate::state::Gateway;

/// `GET /v2/queue[?embed=lastUnusedOffers]`: the leader's JSON, as it is, less the entries of
/// apps the caller may not view.
pub(crate) async fn list(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    caller: Caller,
) -> Result<HttpResponse> {
    let scope = caller.view_scope().await?;
    let q = Query::from_request(&req);
    let embed_last_unused_offers = q.all("embed").any(|e| e == "lastUnusedOffers");
    let json = gw
        .leader_link
        .queue(QueueRequest {
            embed_last_unused_offers,
        })
        .await?;
    if scope.is_everything() {
        return Ok(HttpResponse::Ok()
            .insert_header(ContentType::json())
            .body(json));
    }
    let mut queue: Value = serde_json::from_str(&json)
        .map_err(|e| GatewayError::Api(ApiError::internal(format!("the leader's queue: {e}"))))?;
    if let Some(Value::Array(entries)) = queue.get_mut("queue") {
        entries.retain(|e| {
            ["/app/id", "/pod/id"]
                .iter()
                .find_map(|k| e.pointer(k).and_then(Value::as_str))
                .is_some_and(|id| scope.sees(&PathId::parse(id)))
        });
    }
    Ok(HttpResponse::Ok().json(queue))
}

/// `DELETE /v2/queue/{appId}/delay` → 204.
pub(crate) async fn reset_delay(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    tail: web::Path<String>,
    caller: Caller,
) -> Result<HttpResponse> {
    let Some(app) = tail
        .strip_suffix("/delay")
        .filter(|a| !a.trim_matches('/').is_empty())
    else {
        return Err(GatewayError::uri_not_found(req.path()));
    };
    let app = PathId::parse(app);
    caller.require(Action::Update, &app).await?;
    gw.leader_link
        .reset_delay(ResetDelayRequest {
            app_id: app.to_string(),
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
