//! The route table and what every response goes through.
//!
//! Paths are normalized before routing (`//v2/apps`, `/v2/apps/` and `/v2/apps//web` all work),
//! app ids may contain slashes (`/v2/apps/{id:.*}` with the sub-resource found from the
//! suffix), and every response — errors from actix's own extractors included — leaves with a
//! JSON body where it has one and Marathon's standard headers (reference §0.2).

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::error::GatewayError;
use crate::metrics::{HTTP_REQUESTS, HTTP_REQUEST_DURATION};
use crate::state::Gateway;

mod admin;
mod apps;
mod deployments;
mod events;
mod groups;
mod queue;
mod sandbox;
mod subscriptions;
mod system;
mod tasks;
mod ui;

/// Registers every route.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/ping")
            .route(web::get().to(system::ping))
            .route(web::head().to(system::ping))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(system::metrics_json))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/metrics/prometheus")
            .route(web::get().to(system::metrics_prometheus))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/logging")
            .route(web::get().to(admin::logging))
            .route(web::post().to(admin::set_logging))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/config")
            .route(web::get().to(admin::config))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/plugins")
            .route(web::get().to(admin::plugins))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/openapi.json")
            .route(web::get().to(system::openapi))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/info")
            .route(web::get().to(system::info))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/leader")
            .route(web::get().to(system::leader))
            .route(web::delete().to(system::abdicate))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/whoami")
            .route(web::get().to(system::whoami))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/events")
            .route(web::get().to(events::stream))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/apps")
            .route(web::get().to(apps::list))
            .route(web::post().to(apps::create))
            .route(web::put().to(apps::update_many))
            .route(web::patch().to(apps::patch_many))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/apps/{tail:.*}")
            .route(web::get().to(apps::get_sub))
            .route(web::put().to(apps::put_sub))
            .route(web::patch().to(apps::patch_sub))
            .route(web::delete().to(apps::delete_sub))
            .route(web::post().to(apps::post_sub))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/groups")
            .route(web::get().to(groups::get))
            .route(web::post().to(groups::create))
            .route(web::put().to(groups::update))
            .route(web::delete().to(groups::delete))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/groups/{tail:.*}")
            .route(web::get().to(groups::get))
            .route(web::post().to(groups::create))
            .route(web::put().to(groups::update))
            .route(web::patch().to(groups::patch))
            .route(web::delete().to(groups::delete))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/eventSubscriptions")
            .route(web::get().to(subscriptions::list))
            .route(web::post().to(subscriptions::subscribe))
            .route(web::delete().to(subscriptions::unsubscribe))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/tasks")
            .route(web::get().to(tasks::list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/tasks/delete")
            .route(web::post().to(tasks::delete_many))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/tasks/{task_id}/files")
            .route(web::get().to(sandbox::list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/tasks/{task_id}/files/read")
            .route(web::get().to(sandbox::read))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/tasks/{task_id}/files/download")
            .route(web::get().to(sandbox::download))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/deployments")
            .route(web::get().to(deployments::list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/deployments/{id}")
            .route(web::delete().to(deployments::cancel))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/queue")
            .route(web::get().to(queue::list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v2/queue/{tail:.*}")
            .route(web::delete().to(queue::reset_delay))
            .default_service(web::to(not_found)),
    )
    .service(web::resource("/v2/pods").route(web::route().to(system::pods)))
    .service(web::resource("/v2/pods/{tail:.*}").route(web::route().to(system::pods)));
    // The web UI (`ui/`, embedded): `/` redirects to it.
    cfg.service(
        web::resource("/")
            .route(web::get().to(ui::root))
            .route(web::head().to(ui::root))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/ui")
            .route(web::get().to(ui::index))
            .route(web::head().to(ui::index))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/ui/{file:.*}")
            .route(web::get().to(ui::file))
            .route(web::head().to(ui::file))
            .default_service(web::to(method_not_allowed)),
    );
}

/// 404 `URI not found: /path` for everything without a route.
pub(crate) async fn not_found(req: HttpRequest) -> Result<HttpResponse, GatewayError> {
    Err(GatewayError::uri_not_found(req.path()))
}

/// 405 as Jersey words it, in JSON.
async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed().json(json!({ "message": "HTTP 405 Method Not Allowed" }))
}

/// The `method` label: the standard methods by name, anything else as `other`.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// Every response: JSON bodies for actix's own errors, Marathon's headers, metrics.
pub(crate) async fn common(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let method = method_label(req.method());
    let gateway = req.app_data::<web::Data<Gateway>>().cloned();
    // Handler and extractor errors arrive as responses with the error attached; an `Err` here
    // could only come from a service without a request to answer with (the request must not be
    // cloned before routing, which needs it unshared).
    let mut res = next.call(req).await?.map_into_boxed_body();

    // Errors raised by actix itself (payload too large, unreadable body) get a JSON body.
    let foreign = res
        .response()
        .error()
        .filter(|e| e.as_error::<GatewayError>().is_none())
        .map(|e| (e.as_response_error().status_code(), e.to_string()));
    if let Some((status, text)) = foreign {
        let message = match (status, &gateway) {
            (StatusCode::PAYLOAD_TOO_LARGE, Some(g)) => {
                format!(
                    "Request body is larger than the limit of {} bytes",
                    g.config.request_body_limit
                )
            }
            _ => text,
        };
        let (req, _) = res.into_parts();
        res = ServiceResponse::new(
            req,
            HttpResponse::build(status).json(json!({ "message": message })),
        );
    }

    let headers = res.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"),
        (header::PRAGMA, "no-cache"),
        (header::EXPIRES, "0"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_XSS_PROTECTION, "1; mode=block"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if let Some(g) = &gateway {
        if g.leader.has_leader() {
            let scheme = if g.config.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            if let Ok(v) = HeaderValue::from_str(&format!("{scheme}://{}", g.advertised)) {
                headers.insert(HeaderName::from_static("x-marathon-leader"), v);
            }
        }
    }

    let status = status_class(res.status());
    metrics::counter!(HTTP_REQUESTS, "method" => method, "status" => status).increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION, "method" => method)
        .record(started.elapsed().as_secs_f64());
    Ok(res)
}
