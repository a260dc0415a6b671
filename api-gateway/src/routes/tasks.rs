//! `/v2/tasks` (reference §1.2): every task with its app's service ports, in JSON or in the
//! ≤1.10 `text/plain` endpoint format that haproxy-marathon-bridge reads; and
//! `POST /v2/tasks/delete`, sent to the leader.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use stride_core::error::ApiError;
use stride_core::instance::{parse_task_id, Condition, Instance};
use stride_core::parse::parse_json;
use stride_core::render::{is_visible_task, task_json};
use stride_core::{App, PathId};
use stride_proto::v1::{KillTasksRequest, KillTasksResponse};

use super::apps::kill_request;
use crate::auth::{Action, Caller};
use crate::error::{GatewayError, Result};
use crate::http::{deployment_result, json as json_response, wants_text_plain, Query};
use crate::state::Gateway;

/// `GET /v2/tasks` (`status` / `status[]` = `running`, `staging`): the tasks of the apps the
/// caller may view.
pub(crate) async fn list(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    caller: Caller,
) -> Result<HttpResponse> {
    let scope = caller.view_scope().await?;
    let q = Query::from_request(&req);
    let wanted: Vec<Condition> = q
        .all("status")
        .chain(q.all("status[]"))
        .filter_map(|s| match s.to_ascii_lowercase().as_str() {
            "running" => Some(Condition::Running),
            "staging" => Some(Condition::Staging),
            _ => None,
        })
        .collect();
    let snap = gw.snapshots.get(gw.store.as_ref()).await?;
    if wants_text_plain(&req) {
        let by_app = snap.instances_by_app();
        return Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(endpoints_text(
                snap.apps.values().filter(|a| scope.sees(&a.id)),
                &by_app,
            )));
    }
    let service_ports: HashMap<&PathId, Vec<i64>> = snap
        .apps
        .iter()
        .map(|(id, a)| (id, a.service_ports()))
        .collect();
    let tasks: Vec<Value> = snap
        .instances()
        .filter(|i| is_visible_task(i) && scope.sees(&i.app_id))
        .filter(|i| wanted.is_empty() || wanted.contains(&i.condition))
        .map(|i| {
            task_json(
                i,
                service_ports.get(&i.app_id).map_or(&[][..], Vec::as_slice),
            )
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "tasks": tasks })))
}

/// Marathon's `text/plain` task list: per app and service port, a line
/// `<app id with / as _>\t<servicePort>\t<host>:<hostPort>\t…` of its running tasks; an app
/// without ports gets `<id>\t \t<host>\t…`.
pub(crate) fn endpoints_text<'a>(
    apps: impl IntoIterator<Item = &'a App>,
    by_app: &HashMap<&PathId, Vec<&Instance>>,
) -> String {
    let mut out = String::new();
    for app in apps {
        let running: Vec<(&str, &Instance)> = by_app
            .get(&app.id)
            .into_iter()
            .flatten()
            .filter(|i| i.condition == Condition::Running)
            .filter_map(|i| i.placement.as_ref().map(|p| (p.hostname.as_str(), *i)))
            .collect();
        let id = app.id.safe_path();
        let ports = app.service_ports();
        if ports.is_empty() {
            let mut line = format!("{id}\t ");
            for (host, _) in &running {
                line.push('\t');
                line.push_str(host);
            }
            out.push_str(&line);
            out.push('\n');
        }
        for (n, port) in ports.iter().enumerate() {
            let mut line = format!("{id}\t{port}");
            for (host, i) in &running {
                let host_port = i.host_ports.get(n).copied().unwrap_or(0);
                line.push_str(&format!("\t{host}:{host_port}"));
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// The killed tasks of a kill reply, as JSON.
pub(crate) fn tasks_from_reply(reply: &KillTasksResponse) -> Vec<Value> {
    reply
        .tasks_json
        .iter()
        .filter_map(|t| match serde_json::from_str::<Value>(t) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "the leader sent a killed task that is not JSON");
                None
            }
        })
        .collect()
}

/// `POST /v2/tasks/delete` with `{"ids":[…]}`.
pub(crate) async fn delete_many(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    body: web::Bytes,
    caller: Caller,
) -> Result<HttpResponse> {
    let q = Query::from_request(&req);
    let kill = kill_request(&req, &q)?;
    let value = parse_json(&body)?;
    let ids = match value.get("ids") {
        Some(Value::Array(ids)) => ids,
        Some(_) => {
            return Err(ApiError::json_type("/ids".into(), "error.expected.jsarray".into()).into())
        }
        None => return Err(ApiError::json_type("/ids".into(), "error.path.missing".into()).into()),
    };
    let mut task_ids = Vec::with_capacity(ids.len());
    for (n, id) in ids.iter().enumerate() {
        let id = id.as_str().ok_or_else(|| {
            ApiError::json_type(format!("/ids({n})"), "error.expected.jsstring".into())
        })?;
        let Some(parsed) = parse_task_id(id) else {
            return Err(GatewayError::bad_request(format!(
                "Invalid task id '{id}'. [{id} (of class java.lang.String)]"
            )));
        };
        caller.require(Action::Kill, &parsed.app_id).await?;
        task_ids.push(id.to_string());
    }
    let reply = gw
        .leader_link
        .kill_tasks(KillTasksRequest { task_ids, ..kill })
        .await?;
    if reply.deployment_id.is_empty() {
        Ok(json_response(
            StatusCode::OK,
            &json!({ "tasks": tasks_from_reply(&reply) }),
        ))
    } else {
        Ok(deployment_result(
            StatusCode::OK,
            &reply.deployment_id,
            &reply.version,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stride_core::instance::Placement;
    use stride_core::Timestamp;

    #[test]
    fn text_plain_lists_running_tasks_per_service_port() {
        let mut app = App::new("/tools/registry");
        app.port_definitions = Some(vec![
            serde_json::from_value(json!({"port": 10000})).expect("port"),
            serde_json::from_value(json!({"port": 10001})).expect("port"),
        ]);
        let mut running = Instance::scheduled(&app.id, Timestamp(1), Timestamp(1));
        running.condition = Condition::Running;
        running.incarnation = 1;
        running.host_ports = vec![31000, 31001];
        running.placement = Some(Placement {
            agent_id: "a1".into(),
            hostname: "srv1".into(),
            attributes: Vec::new(),
        });
        let mut staging = running.clone();
        staging.condition = Condition::Staging;
        let by_app: HashMap<&PathId, Vec<&Instance>> = [(&app.id, vec![&running, &staging])].into();
        assert_eq!(
            endpoints_text([&app], &by_app),
            "tools_registry\t10000\tsrv1:31000\ntools_registry\t10001\tsrv1:31001\n"
        );
        let mut portless = App::new("/worker");
        portless.port_definitions = Some(Vec::new());
        assert_eq!(endpoints_text([&portless], &HashMap::new()), "worker\t \n");
    }
}
