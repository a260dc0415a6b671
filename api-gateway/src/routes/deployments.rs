//! `/v2/deployments` (reference §1.4): running deployments read from the store; cancelling one
//! is the leader's job.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;
use stride_proto::v1::CancelDeploymentRequest;

use crate::auth::{Action, Caller};
use crate::error::Result;
use crate::http::{deployment_result, json as json_response, Query};
use crate::read;
use crate::state::Gateway;

/// `GET /v2/deployments`: those whose every affected app the caller may view.
pub(crate) async fn list(gw: web::Data<Gateway>, caller: Caller) -> Result<HttpResponse> {
    let scope = caller.view_scope().await?;
    let plans = read::deployments(gw.store.as_ref()).await?;
    // Each current action shows the readiness results of its app's instances of the version
    // being deployed, as the leader stored them.
    let readiness = read::readiness_results(gw.store.as_ref()).await?;
    let body: Vec<Value> = plans
        .iter()
        .filter(|p| p.affected_apps().iter().all(|a| scope.sees(a)))
        .map(|p| {
            p.step_info_json(&|app| {
                let version = p.target.get(app).map(|a| a.config_version());
                readiness
                    .get(app)
                    .into_iter()
                    .flatten()
                    .filter(|(v, _)| Some(*v) == version)
                    .map(|(_, r)| r.clone())
                    .collect()
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(body)))
}

/// `DELETE /v2/deployments/{id}`: rollback (200 with the revert deployment) or, with
/// `force=true`, stop in place (202, empty body). Takes `update` on every app it affects; an
/// unknown id goes to the leader, which answers 404.
pub(crate) async fn cancel(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    id: web::Path<String>,
    caller: Caller,
) -> Result<HttpResponse> {
    let plans = read::deployments(gw.store.as_ref()).await?;
    if let Some(plan) = plans.iter().find(|p| p.id == *id) {
        caller
            .require_all(Action::Update, &plan.affected_apps())
            .await?;
    }
    let force = Query::from_request(&req).flag("force", false);
    let reply = gw
        .leader_link
        .cancel_deployment(CancelDeploymentRequest {
            deployment_id: id.into_inner(),
            force,
        })
        .await?;
    if force {
        Ok(HttpResponse::Accepted().finish())
    } else {
        Ok(deployment_result(
            StatusCode::OK,
            &reply.deployment_id,
            &reply.version,
        ))
    }
}
