//! The small endpoints (reference §1.8, §1.9): `/ping`, `/metrics`, `/metrics/prometheus`,
//! `/v2/info`, `/v2/leader`, `/v2/whoami` (Stride's own), and `/v2/pods`, which Stride does not
//! support yet.
//!
//! Any gateway replica answers for the leader, so "the leader" a client sees is the gateway it
//! talks to (its advertised address) whenever some scheduler holds the lease.

use actix_web::http::header::ContentType;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use stride_store::collections;

use crate::auth::{Action, Caller, SystemAction, SystemResource};
use crate::error::{GatewayError, Result};
use crate::http::{accepted, json as json_response};
use crate::state::Gateway;
use crate::MARATHON_COMPATIBLE_VERSION;

/// `GET /ping`: `pong` as text (or HTML), the JSON string `"pong"` for JSON clients, 204 when
/// the client accepts none of those.
pub(crate) async fn ping(req: HttpRequest) -> HttpResponse {
    let types = accepted(&req);
    if types.is_empty() {
        return HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body("pong");
    }
    for t in &types {
        match t.as_str() {
            "text/plain" | "text/*" | "*/*" => {
                return HttpResponse::Ok()
                    .content_type("text/plain; charset=utf-8")
                    .body("pong");
            }
            "text/html" => {
                return HttpResponse::Ok()
                    .content_type("text/html; charset=utf-8")
                    .body("pong")
            }
            "application/json" | "application/*" => {
                return HttpResponse::Ok()
                    .insert_header(ContentType::json())
                    .body("\"pong\"");
            }
            _ => {}
        }
    }
    HttpResponse::NoContent().finish()
}

/// `GET /metrics`: Marathon's Dropwizard-style JSON.
pub(crate) async fn metrics_json(gw: web::Data<Gateway>, caller: Caller) -> Result<HttpResponse> {
    caller
        .require_system(SystemAction::View, SystemResource::Metrics)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &gw.metrics.render_marathon_json(),
    ))
}

/// `GET /metrics/prometheus`.
pub(crate) async fn metrics_prometheus(
    gw: web::Data<Gateway>,
    caller: Caller,
) -> Result<HttpResponse> {
    caller
        .require_system(SystemAction::View, SystemResource::Metrics)
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(gw.metrics.render_prometheus()))
}

/// The framework id the leader recorded, if any (stored as a JSON string or as plain text).
async fn framework_id(gw: &Gateway) -> Value {
    match gw.store.get(collections::META, "framework-id").await {
        Ok(Some(bytes)) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::String(s)) => Value::String(s),
            _ => std::str::from_utf8(&bytes)
                .map_or(Value::Null, |s| Value::String(s.trim().to_string())),
        },
        Ok(None) => Value::Null,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the framework id");
            Value::Null
        }
    }
}

/// `GET /v2/info`.
pub(crate) async fn info(gw: web::Data<Gateway>, caller: Caller) -> Result<HttpResponse> {
    caller
        .require_system(SystemAction::View, SystemResource::Config)
        .await?;
    let leader = gw.store.leader().await?;
    let elected = leader.is_some();
    let advertised = gw.advertised.clone();
    let (host, port) = match advertised.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse::<u16>().unwrap_or(8080)),
        None => (advertised.clone(), 8080),
    };
    // Marathon's flags with Stride's equivalents, or Marathon's defaults where Stride has none.
    let marathon_config = json!({
        "access_control_allow_origin": null,
        "checkpoint": true,
        "decline_offer_duration": 120000,
        "default_network_name": null,
        "env_vars_prefix": null,
        "executor": "//cmd",
        "failover_timeout": 604800,
        "features": [],
        "framework_name": "marathon",
        "ha": true,
        "hostname": host,
        "launch_token": 100,
        "launch_token_refresh_interval": 30000,
        "leader_proxy_connection_timeout_ms": 5000,
        "leader_proxy_read_timeout_ms": 10000,
        "local_port_max": 20000,
        "local_port_min": 10000,
        "master": "redacted",
        "max_instances_per_offer": 5,
        "mesos_bridge_name": "mesos-bridge",
        "mesos_heartbeat_failure_threshold": 5,
        "mesos_heartbeat_interval": 15000,
        "mesos_leader_ui_url": null,
        "mesos_role": null,
        "mesos_user": "root",
        "min_revive_offers_interval": 5000,
        "new_group_enforce_role": "off",
        "offer_matching_timeout": 3000,
        "on_elected_prepare_timeout": 180000,
        "reconciliation_initial_delay": 15000,
        "reconciliation_interval": 600000,
        "scale_apps_initial_delay": 15000,
        "scale_apps_interval": 300000,
        "store_cache": true,
        "task_launch_confirm_timeout": 300000,
        "task_launch_timeout": 300000,
        "task_lost_expunge_initial_delay": 300000,
        "task_lost_expunge_interval": 30000,
        "task_reservation_timeout": 20000,
        "webui_url": format!("http://{advertised}"),
        "maintenance_mode": false,
    });
    let body = json!({
        "name": "marathon",
        "version": MARATHON_COMPATIBLE_VERSION,
        // Marathon's clients reject unknown keys here, so Stride's own version rides in
        // `buildref`.
        "buildref": format!("stride {}", env!("CARGO_PKG_VERSION")),
        "elected": elected,
        "leader": if elected { Value::String(advertised.clone()) } else { Value::Null },
        "frameworkId": framework_id(&gw).await,
        "marathon_config": marathon_config,
        "zookeeper_config": {
            "zk": "redacted",
            "zk_compression": true,
            "zk_compression_threshold": 65536,
            "zk_connection_timeout": 10000,
            "zk_max_node_size": 1024000,
            "zk_max_versions": 50,
            "zk_session_timeout": 10000,
            "zk_timeout": 10000,
        },
        "http_config": { "http_port": port, "https_port": 8443 },
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /v2/leader`.
pub(crate) async fn leader(gw: web::Data<Gateway>, caller: Caller) -> Result<HttpResponse> {
    caller
        .require_system(SystemAction::View, SystemResource::Leader)
        .await?;
    match gw.store.leader().await? {
        Some(_) => Ok(json_response(
            StatusCode::OK,
            &json!({ "leader": gw.advertised }),
        )),
        None => Err(GatewayError::not_found("There is no leader")),
    }
}

/// `DELETE /v2/leader`: the scheduler leader steps down; a standby takes over.
pub(crate) async fn abdicate(gw: web::Data<Gateway>, caller: Caller) -> Result<HttpResponse> {
    caller
        .require_system(SystemAction::Abdicate, SystemResource::Leader)
        .await?;
    gw.leader_link.abdicate().await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "message": "Leadership abdicated" }),
    ))
}

/// `GET /v2/whoami`: who the caller is and what it may do, so that a client (the web UI) offers
/// only the actions the caller's roles allow. Needs authentication and nothing more. With an
/// external authoriser the grants are unknown until asked, so `system` and `paths` are null.
pub(crate) async fn whoami(gw: web::Data<Gateway>, caller: Caller) -> HttpResponse {
    let Some(grants) = caller.grants() else {
        let body = json!({
            "name": caller.name(),
            "authorization": "external",
            "system": null,
            "paths": null,
        });
        return json_response(StatusCode::OK, &body);
    };
    let authorization = if gw.security.is_open() {
        "open"
    } else {
        "roles"
    };
    let system: Vec<&str> = grants
        .system_actions()
        .into_iter()
        .map(SystemAction::name)
        .collect();
    let paths: Vec<Value> = grants
        .by_prefix()
        .into_iter()
        .map(|(prefix, actions)| {
            let actions: Vec<&str> = actions.into_iter().map(Action::name).collect();
            json!({ "prefix": prefix.to_string(), "actions": actions })
        })
        .collect();
    let body = json!({
        "name": caller.name(),
        "authorization": authorization,
        "system": system,
        "paths": paths,
    });
    json_response(StatusCode::OK, &body)
}

/// `/v2/pods…`, any method: 404 with a message saying why. Marathon's clients probe pod
/// support with `HEAD /v2/pods`, and a 404 is what tells them there is none; a 5xx would read
/// as a server fault.
pub(crate) async fn pods() -> HttpResponse {
    HttpResponse::NotFound()
        .json(json!({ "message": "Pods are not supported by Stride yet; use apps" }))
}

/// The OpenAPI document describing the API as served.
const OPENAPI: &str = include_str!("../../openapi.json");

/// `GET /openapi.json`.
pub(crate) async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}
