//! `/v2/apps` (reference §1.1): listings and app views read from the store; creates, updates,
//! rollbacks, restarts, deletions and task kills sent to the leader.
//!
//! App ids contain slashes, so everything below `/v2/apps/` arrives as one tail and
//! [`AppPath`] finds the sub-resource from its last segments: `…/tasks`, `…/tasks/{taskId}`,
//! `…/versions`, `…/versions/{v}`, `…/restart`, `…/*`. App ids cannot end in `tasks`,
//! `versions` or `restart` (reserved), so the suffixes are unambiguous.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};
use stride_core::error::ApiError;
use stride_core::instance::{parse_task_id, Instance};
use stride_core::parse::{app_from_value, from_value, parse_app, parse_json};
use stride_core::render::{app_info, is_visible_task, task_json, AppStatus, Embed};
use stride_core::{App, PathId, Timestamp};
use stride_proto::v1::app_change::Change;
use stride_proto::v1::{
    AppChange, AppPatch, AppRollback, DeployRequest, DeployResponse, KillTasksRequest, RunSpecJson,
};
use stride_store::collections;

use super::tasks::{endpoints_text, tasks_from_reply};
use crate::admission::{Kind, Operation};
use crate::auth::{Action, Caller, Scope};
use crate::error::{GatewayError, Result};
use crate::http::{
    base_url, deployment_result, json as json_response, json_bytes, json_list, origin,
    set_deployment_id, wants_text_plain, Query,
};
use crate::labels;
use crate::read::{self, Snapshot};
use crate::state::Gateway;

/// What a path below `/v2/apps/` names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum AppPath {
    App(PathId),
    /// `{group}/*`: every app in the group, transitively.
    Wildcard(PathId),
    Tasks(PathId),
    /// `{group}/*/tasks`.
    WildcardTasks(PathId),
    Task(PathId, String),
    Versions(PathId),
    Version(PathId, String),
    Restart(PathId),
}

fn id_of(segments: &[&str]) -> PathId {
    PathId::parse(&segments.join("/"))
}

impl AppPath {
    fn parse(tail: &str, method: &actix_web::http::Method) -> Self {
        use actix_web::http::Method;
        let s: Vec<&str> = tail.split('/').filter(|s| !s.is_empty()).collect();
        let n = s.len();
        let last = s.last().copied().unwrap_or("");
        let second_last = if n >= 2 { s[n - 2] } else { "" };
        if *method == Method::GET {
            if last == "*" {
                return AppPath::Wildcard(id_of(&s[..n - 1]));
            }
            if n >= 2 && last == "tasks" {
                return if second_last == "*" {
                    AppPath::WildcardTasks(id_of(&s[..n - 2]))
                } else {
                    AppPath::Tasks(id_of(&s[..n - 1]))
                };
            }
            if n >= 3 && second_last == "versions" {
                return AppPath::Version(id_of(&s[..n - 2]), last.to_string());
            }
            if n >= 2 && last == "versions" {
                return AppPath::Versions(id_of(&s[..n - 1]));
            }
        } else if *method == Method::DELETE {
            if n >= 3 && second_last == "tasks" {
                return AppPath::Task(id_of(&s[..n - 2]), last.to_string());
            }
            if n >= 2 && last == "tasks" {
                return AppPath::Tasks(id_of(&s[..n - 1]));
            }
        } else if *method == Method::POST && n >= 2 && last == "restart" {
            return AppPath::Restart(id_of(&s[..n - 1]));
        }
        AppPath::App(id_of(&s))
    }
}

/// `GET /v2/apps`: the apps the caller may view.
pub(crate) async fn list(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    caller: Caller,
) -> Result<HttpResponse> {
    let scope = caller.view_scope().await?;
    let q = Query::from_request(&req);
    let selectors = q
        .get("label")
        .map(labels::parse)
        .transpose()
        .map_err(GatewayError::unprocessable)?;
    // The list always embeds counts and deployments.
    let embed = read::listing_embed(Embed::parse(q.all("embed"), Embed::default()));
    let cmd = q.get("cmd").map(str::to_lowercase);
    let id = q.get("id").map(str::to_lowercase);

    let snap = gw.snapshots.get(gw.store.as_ref()).await?;
    let apps: Vec<Bytes> = snap
        .apps
        .values()
        .filter(|a| scope.sees(&a.id))
        .filter(|a| {
            cmd.as_ref().is_none_or(|c| {
                a.cmd
                    .as_ref()
                    .is_some_and(|x| x.to_lowercase().contains(c.as_str()))
            })
        })
        .filter(|a| {
            id.as_ref()
                .is_none_or(|i| a.id.to_string().to_lowercase().contains(i.as_str()))
        })
        .filter(|a| selectors.as_ref().is_none_or(|s| s.matches(&a.labels)))
        .map(|a| snap.app_info_json(a, embed))
        .collect();
    Ok(rendered_list("apps", &apps))
}

/// `{"<key>":[…]}` of rendered apps.
fn rendered_list(key: &str, apps: &[Bytes]) -> HttpResponse {
    let size = apps.iter().map(|a| a.len() + 1).sum();
    json_bytes(
        StatusCode::OK,
        json_list(key, apps.iter().map(AsRef::as_ref), size),
    )
}

/// `GET /v2/apps/{…}`.
pub(crate) async fn get_sub(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    tail: web::Path<String>,
    caller: Caller,
) -> Result<HttpResponse> {
    let q = Query::from_request(&req);
    let path = AppPath::parse(&tail, req.method());
    match &path {
        AppPath::App(id) | AppPath::Tasks(id) | AppPath::Versions(id) | AppPath::Version(id, _) => {
            caller.require(Action::View, id).await?
        }
        _ => {}
    }
    match path {
        AppPath::App(id) => show(&gw, &q, &id).await,
        AppPath::Wildcard(group) => {
            let scope = group_scope(&caller, &group).await?;
            show_group(&gw, &q, &group, &scope).await
        }
        AppPath::Tasks(id) => app_tasks(&req, &gw, &id, None).await,
        AppPath::WildcardTasks(group) => {
            let scope = group_scope(&caller, &group).await?;
            app_tasks(&req, &gw, &group, Some(&scope)).await
        }
        AppPath::Versions(id) => versions(&gw, &id).await,
        AppPath::Version(id, v) => version(&gw, &id, &v).await,
        AppPath::Task(..) | AppPath::Restart(_) => Err(GatewayError::uri_not_found(req.path())),
    }
}

/// What of `group` the caller may see; a 403 when nothing.
async fn group_scope(caller: &Caller, group: &PathId) -> Result<Arc<Scope>> {
    let scope = caller.view_scope().await?;
    if scope.sees(group) || scope.sees_into(group) {
        Ok(scope)
    } else {
        Err(caller.not_visible(group))
    }
}

async fn show(gw: &Gateway, q: &Query, id: &PathId) -> Result<HttpResponse> {
    let store = gw.store.as_ref();
    let embed = Embed::parse(q.all("embed"), Embed::single_app());
    if let Some(snap) = gw.snapshots.fresh(store).await? {
        let app = snap
            .apps
            .get(id)
            .ok_or_else(|| ApiError::app_not_found(id))?;
        let info = snap.app_info_json(app, embed);
        let mut body = Vec::with_capacity(info.len() + 8);
        body.extend_from_slice(b"{\"app\":");
        body.extend_from_slice(&info);
        body.push(b'}');
        return Ok(json_bytes(StatusCode::OK, body));
    }
    let key = id.to_string();
    let (app, instances, deployments, failure) = futures::try_join!(
        read::app(store, id),
        read::app_instances(store, id),
        read::deployments(store),
        async { Ok(store.get(collections::TASK_FAILURES, &key).await?) },
    )?;
    let app = app.ok_or_else(|| ApiError::app_not_found(id))?;
    let failure: Option<Value> = failure.and_then(|b| serde_json::from_slice(&b).ok());
    let status = AppStatus {
        instances: instances.iter().collect(),
        deployment_ids: read::deployment_ids(&deployments, id),
        last_task_failure: failure.as_ref(),
        readiness: Vec::new(),
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({ "app": app_info(&app, &status, embed) }),
    ))
}

/// True when `group` is the root, a stored group, or holds an app.
async fn group_exists(gw: &Gateway, snap: &Snapshot, group: &PathId) -> Result<bool> {
    if group.is_root() || snap.apps.keys().any(|a| a.is_within(group) && a != group) {
        return Ok(true);
    }
    Ok(gw
        .store
        .get(collections::GROUPS, &group.to_string())
        .await?
        .is_some())
}

async fn show_group(
    gw: &Gateway,
    q: &Query,
    group: &PathId,
    scope: &Scope,
) -> Result<HttpResponse> {
    let snap = gw.snapshots.get(gw.store.as_ref()).await?;
    if !group_exists(gw, &snap, group).await? {
        return Err(GatewayError::not_found(format!(
            "Group '{group}' does not exist"
        )));
    }
    let embed = read::listing_embed(Embed::parse(q.all("embed"), Embed::default()));
    let apps: Vec<Bytes> = snap
        .apps
        .values()
        .filter(|a| a.id.is_within(group) && scope.sees(&a.id))
        .map(|a| snap.app_info_json(a, embed))
        .collect();
    Ok(rendered_list("*", &apps))
}

/// The tasks of app `id`, or with `wildcard` (the part of the group the caller may see) of
/// every app in group `id`.
async fn app_tasks(
    req: &HttpRequest,
    gw: &Gateway,
    id: &PathId,
    wildcard: Option<&Scope>,
) -> Result<HttpResponse> {
    let store = gw.store.as_ref();
    let snap = gw.snapshots.get(store).await?;
    let selected: Vec<&App> = if let Some(scope) = wildcard {
        if !group_exists(gw, &snap, id).await? {
            return Err(GatewayError::not_found(format!(
                "Group '{id}' does not exist"
            )));
        }
        snap.apps
            .values()
            .filter(|a| a.id.is_within(id) && scope.sees(&a.id))
            .collect()
    } else {
        vec![snap
            .apps
            .get(id)
            .ok_or_else(|| ApiError::app_not_found(id))?]
    };
    let by_app = snap.instances_by_app();
    if wants_text_plain(req) {
        return Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(endpoints_text(selected.iter().copied(), &by_app)));
    }
    let tasks: Vec<Value> = selected
        .iter()
        .flat_map(|a| by_app.get(&a.id).into_iter().flatten())
        .filter(|i| is_visible_task(i))
        .map(|i: &&Instance| task_json(i, &[]))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "tasks": tasks })))
}

async fn versions(gw: &Gateway, id: &PathId) -> Result<HttpResponse> {
    let store = gw.store.as_ref();
    let app = read::app(store, id)
        .await?
        .ok_or_else(|| ApiError::app_not_found(id))?;
    let mut versions = read::app_versions(store, id).await?;
    if let Some(current) = app.version {
        if !versions.contains(&current) {
            versions.push(current);
            versions.sort_unstable_by(|a, b| b.cmp(a));
        }
    }
    let versions: Vec<String> = versions.iter().map(ToString::to_string).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "versions": versions }),
    ))
}

async fn version(gw: &Gateway, id: &PathId, raw: &str) -> Result<HttpResponse> {
    let version = Timestamp::parse(raw).map_err(GatewayError::unprocessable)?;
    let store = gw.store.as_ref();
    if let Some(app) = read::app_version(store, id, version).await? {
        return Ok(json_response(StatusCode::OK, &app));
    }
    match read::app(store, id).await? {
        Some(app) if app.version == Some(version) => {
            Ok(json_response(StatusCode::OK, &app.to_json()))
        }
        _ => Err(GatewayError::not_found(format!(
            "App '{id}' does not exist in version {version}"
        ))),
    }
}

fn change(c: Change) -> AppChange {
    AppChange { change: Some(c) }
}

async fn deploy(
    req: &HttpRequest,
    gw: &Gateway,
    changes: Vec<AppChange>,
    force: bool,
) -> Result<DeployResponse> {
    Ok(gw
        .leader_link
        .deploy(DeployRequest {
            dry_run: false,
            changes,
            force,
            origin: Some(origin(req)),
        })
        .await?)
}

/// `POST /v2/apps`: parsed and validated here, authorised, admitted, created by the leader.
pub(crate) async fn create(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    body: web::Bytes,
    caller: Caller,
) -> Result<HttpResponse> {
    let q = Query::from_request(&req);
    let app = parse_app(&body, &PathId::root())?;
    caller.require(Action::Create, &app.id).await?;
    let mut app = admit_app(&gw, &caller, app).await?;
    // The leader versions the app; a version in the body means nothing here.
    app.version = None;
    app.version_info = None;
    let reply = deploy(
        &req,
        &gw,
        vec![change(Change::Create(RunSpecJson {
            json: app.to_json().to_string(),
        }))],
        q.flag("force", false),
    )
    .await?;
    // The leader answers with the app as stored (version, service ports); fall back to what
    // was sent if it did not.
    let stored: App = reply
        .apps
        .first()
        .and_then(|a| serde_json::from_str(&a.json).ok())
        .unwrap_or_else(|| {
            let mut a = app.clone();
            a.version = Timestamp::parse(&reply.version).ok();
            a
        });
    let status = AppStatus {
        instances: Vec::new(),
        deployment_ids: vec![reply.deployment_id.clone()],
        last_task_failure: None,
        readiness: Vec::new(),
    };
    let embed = Embed {
        tasks: true,
        counts: true,
        deployments: true,
        ..Embed::default()
    };
    let mut created = json_response(StatusCode::CREATED, &app_info(&stored, &status, embed));
    set_deployment_id(&mut created, &reply.deployment_id);
    set_location(&req, &mut created, &stored.id);
    Ok(created)
}

/// A new app through the admission webhooks: as it was, or as they amended it (validated
/// again, and still under the id the caller was authorised for).
async fn admit_app(gw: &Gateway, caller: &Caller, app: App) -> Result<App> {
    if gw.admission.is_empty() {
        return Ok(app);
    }
    let original = app.to_json();
    let admitted = gw
        .admission
        .review(
            Kind::App,
            Operation::Create,
            original.clone(),
            caller.name(),
        )
        .await?;
    if admitted == original {
        return Ok(app);
    }
    let amended = app_from_value(admitted, &PathId::root(), None)?;
    if amended.id != app.id {
        return Err(GatewayError::unprocessable(format!(
            "An admission webhook changed the app id from {} to {}",
            app.id, amended.id
        )));
    }
    Ok(amended)
}

/// An app update or deletion through the admission webhooks: `body` as it was, or as they
/// amended it. The webhooks see the body with its `id`.
async fn admit_change(
    gw: &Gateway,
    caller: &Caller,
    operation: Operation,
    id: &PathId,
    body: Value,
) -> Result<Value> {
    if gw.admission.is_empty() {
        return Ok(body);
    }
    let mut object = body;
    if let Some(o) = object.as_object_mut() {
        o.insert("id".into(), Value::String(id.to_string()));
    }
    let admitted = gw
        .admission
        .review(Kind::App, operation, object, caller.name())
        .await?;
    match admitted
        .get("id")
        .and_then(Value::as_str)
        .map(PathId::parse)
    {
        Some(changed) if changed != *id => Err(GatewayError::unprocessable(format!(
            "An admission webhook changed the app id from {id} to {changed}"
        ))),
        _ => Ok(admitted),
    }
}

/// What a PUT or PATCH of app `id` needs: `update`, or `create` when a PUT makes a new app.
async fn authorise_update(
    gw: &Gateway,
    caller: &Caller,
    id: &PathId,
    allow_create: bool,
) -> Result<Operation> {
    let creates = allow_create && read::app(gw.store.as_ref(), id).await?.is_none();
    let (action, operation) = if creates {
        (Action::Create, Operation::Create)
    } else {
        (Action::Update, Operation::Update)
    };
    caller.require(action, id).await?;
    Ok(operation)
}

fn set_location(req: &HttpRequest, res: &mut HttpResponse, id: &PathId) {
    if let Ok(v) = HeaderValue::from_str(&format!("{}/v2/apps{}", base_url(req), id)) {
        res.headers_mut().insert(header::LOCATION, v);
    }
}

/// Keys of a JSON object whose values are not `null` (old clients send `null` for absent).
fn present_keys(obj: &Map<String, Value>) -> impl Iterator<Item = &str> {
    obj.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, _)| k.as_str())
}

/// The change one app update asks for: a rollback (`version`), a merge, or a replacement.
fn app_change(
    id: &PathId,
    body: Value,
    partial: bool,
    create_if_missing: bool,
) -> Result<AppChange> {
    let Value::Object(obj) = body else {
        return Err(ApiError::json_type("/".into(), "error.expected.jsobject".into()).into());
    };
    if let Some(v) = obj.get("version").filter(|v| !v.is_null()) {
        if present_keys(&obj).any(|k| k != "version" && k != "id") {
            return Err(GatewayError::unprocessable(
                "The 'version' field may only be combined with the 'id' field.",
            ));
        }
        let raw = v.as_str().ok_or_else(|| {
            ApiError::json_type("/version".into(), "error.expected.jsstring".into())
        })?;
        let version = Timestamp::parse(raw).map_err(GatewayError::unprocessable)?;
        return Ok(change(Change::Rollback(AppRollback {
            app_id: id.to_string(),
            version: version.to_string(),
        })));
    }
    if partial {
        // Types are checked here so that a wrong one is a 422 without a round trip; the
        // merged definition is validated by the leader, which has the current app.
        let mut typed = obj.clone();
        typed.remove("id");
        from_value::<App>(Value::Object(typed))?;
        Ok(change(Change::Patch(AppPatch {
            app_id: id.to_string(),
            json: Value::Object(obj).to_string(),
            create_if_missing,
        })))
    } else {
        let app = app_from_value(Value::Object(obj), &PathId::root(), Some(id))?;
        Ok(change(Change::Put(RunSpecJson {
            json: app.to_json().to_string(),
        })))
    }
}

/// `PUT` (`allow_create`) and `PATCH` of one app.
async fn update_one(
    req: &HttpRequest,
    gw: &Gateway,
    caller: &Caller,
    id: &PathId,
    body: &[u8],
    allow_create: bool,
) -> Result<HttpResponse> {
    let q = Query::from_request(req);
    let value = parse_json(body)?;
    let operation = authorise_update(gw, caller, id, allow_create).await?;
    let value = admit_change(gw, caller, operation, id, value).await?;
    let partial = !allow_create || q.flag("partialUpdate", true);
    let c = app_change(id, value, partial, allow_create)?;
    let reply = deploy(req, gw, vec![c], q.flag("force", false)).await?;
    if reply.created {
        let mut res = deployment_result(StatusCode::CREATED, &reply.deployment_id, &reply.version);
        set_location(req, &mut res, id);
        Ok(res)
    } else {
        Ok(deployment_result(
            StatusCode::OK,
            &reply.deployment_id,
            &reply.version,
        ))
    }
}

/// `PUT` and `PATCH /v2/apps` with an array body: one deployment for every change.
async fn update_many_inner(
    req: &HttpRequest,
    gw: &Gateway,
    caller: &Caller,
    body: &[u8],
    allow_create: bool,
) -> Result<HttpResponse> {
    let q = Query::from_request(req);
    let Value::Array(items) = parse_json(body)? else {
        return Err(ApiError::json_type("/".into(), "error.expected.jsarray".into()).into());
    };
    let partial = !allow_create || q.flag("partialUpdate", true);
    let mut changes = Vec::with_capacity(items.len());
    for (n, item) in items.into_iter().enumerate() {
        if !item.is_object() {
            return Err(
                ApiError::json_type(format!("({n})"), "error.expected.jsobject".into()).into(),
            );
        }
        let Some(raw_id) = item.get("id").and_then(Value::as_str).map(str::to_string) else {
            return Err(GatewayError::unprocessable(
                "requirement failed: App Update must have app id set",
            ));
        };
        let id = PathId::parse(&raw_id);
        let operation = authorise_update(gw, caller, &id, allow_create).await?;
        let item = admit_change(gw, caller, operation, &id, item).await?;
        changes.push(app_change(&id, item, partial, allow_create)?);
    }
    let reply = deploy(req, gw, changes, q.flag("force", false)).await?;
    Ok(deployment_result(
        StatusCode::OK,
        &reply.deployment_id,
        &reply.version,
    ))
}

pub(crate) async fn update_many(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    body: web::Bytes,
    caller: Caller,
) -> Result<HttpResponse> {
    update_many_inner(&req, &gw, &caller, &body, true).await
}

pub(crate) async fn patch_many(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    body: web::Bytes,
    caller: Caller,
) -> Result<HttpResponse> {
    update_many_inner(&req, &gw, &caller, &body, false).await
}

pub(crate) async fn put_sub(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    tail: web::Path<String>,
    body: web::Bytes,
    caller: Caller,
) -> Result<HttpResponse> {
    match AppPath::parse(&tail, req.method()) {
        AppPath::App(id) => update_one(&req, &gw, &caller, &id, &body, true).await,
        _ => Err(GatewayError::uri_not_found(req.path())),
    }
}

pub(crate) async fn patch_sub(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    tail: web::Path<String>,
    body: web::Bytes,
    caller: Caller,
) -> Result<HttpResponse> {
    match AppPath::parse(&tail, req.method()) {
        AppPath::App(id) => update_one(&req, &gw, &caller, &id, &body, false).await,
        _ => Err(GatewayError::uri_not_found(req.path())),
    }
}

/// `POST /v2/apps/{id}/restart`.
pub(crate) async fn post_sub(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    tail: web::Path<String>,
    caller: Caller,
) -> Result<HttpResponse> {
    match AppPath::parse(&tail, req.method()) {
        AppPath::Restart(id) => {
            caller.require(Action::Update, &id).await?;
            let q = Query::from_request(&req);
            let reply = deploy(
                &req,
                &gw,
                vec![change(Change::Restart(id.to_string()))],
                q.flag("force", false),
            )
            .await?;
            Ok(deployment_result(
                StatusCode::OK,
                &reply.deployment_id,
                &reply.version,
            ))
        }
        _ => Ok(HttpResponse::MethodNotAllowed()
            .json(json!({ "message": "HTTP 405 Method Not Allowed" }))),
    }
}

/// `DELETE /v2/apps/{id}`, `…/tasks`, `…/tasks/{taskId}`.
pub(crate) async fn delete_sub(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    tail: web::Path<String>,
    caller: Caller,
) -> Result<HttpResponse> {
    let q = Query::from_request(&req);
    match AppPath::parse(&tail, req.method()) {
        AppPath::App(id) => {
            caller.require(Action::Delete, &id).await?;
            admit_change(&gw, &caller, Operation::Delete, &id, json!({})).await?;
            // DELETE is the one deployable call whose force defaults to true.
            let reply = deploy(
                &req,
                &gw,
                vec![change(Change::Remove(id.to_string()))],
                q.flag("force", true),
            )
            .await?;
            Ok(deployment_result(
                StatusCode::OK,
                &reply.deployment_id,
                &reply.version,
            ))
        }
        AppPath::Tasks(id) => {
            caller.require(Action::Kill, &id).await?;
            let kill = kill_request(&req, &q)?;
            let reply = gw
                .leader_link
                .kill_tasks(KillTasksRequest {
                    app_ids: vec![id.to_string()],
                    host: q.get("host").unwrap_or_default().to_string(),
                    ..kill
                })
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
        AppPath::Task(id, task_id) => {
            let unknown = || GatewayError::not_found(format!("Task '{task_id}' does not exist"));
            match parse_task_id(&task_id) {
                Some(parsed) if parsed.app_id == id => {}
                _ => return Err(unknown()),
            }
            caller.require(Action::Kill, &id).await?;
            let kill = kill_request(&req, &q)?;
            let reply = gw
                .leader_link
                .kill_tasks(KillTasksRequest {
                    task_ids: vec![task_id.clone()],
                    ..kill
                })
                .await?;
            if !reply.deployment_id.is_empty() {
                return Ok(deployment_result(
                    StatusCode::OK,
                    &reply.deployment_id,
                    &reply.version,
                ));
            }
            let task = tasks_from_reply(&reply)
                .into_iter()
                .next()
                .ok_or_else(unknown)?;
            Ok(json_response(StatusCode::OK, &json!({ "task": task })))
        }
        _ => Err(GatewayError::uri_not_found(req.path())),
    }
}

/// The flags every kill shares (`scale`, `wipe`, `force`), checked.
pub(crate) fn kill_request(req: &HttpRequest, q: &Query) -> Result<KillTasksRequest> {
    let scale = q.flag("scale", false);
    let wipe = q.flag("wipe", false);
    if scale && wipe {
        return Err(GatewayError::bad_request(
            "You cannot use scale and wipe at the same time.",
        ));
    }
    Ok(KillTasksRequest {
        task_ids: Vec::new(),
        app_ids: Vec::new(),
        host: String::new(),
        scale,
        wipe,
        force: q.flag("force", false),
        origin: Some(origin(req)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::Method;

    #[test]
    fn suffixes_name_sub_resources() {
        let p = |tail: &str, m: &Method| AppPath::parse(tail, m);
        let id = |s: &str| PathId::parse(s);
        assert_eq!(p("prod/web", &Method::GET), AppPath::App(id("/prod/web")));
        assert_eq!(p("*", &Method::GET), AppPath::Wildcard(PathId::root()));
        assert_eq!(p("prod/*", &Method::GET), AppPath::Wildcard(id("/prod")));
        assert_eq!(
            p("prod/*/tasks", &Method::GET),
            AppPath::WildcardTasks(id("/prod"))
        );
        assert_eq!(
            p("prod/web/tasks", &Method::GET),
            AppPath::Tasks(id("/prod/web"))
        );
        assert_eq!(
            p("web/versions", &Method::GET),
            AppPath::Versions(id("/web"))
        );
        assert_eq!(
            p("web/versions/2021-01-01T00:00:00.000Z", &Method::GET),
            AppPath::Version(id("/web"), "2021-01-01T00:00:00.000Z".into())
        );
        assert_eq!(
            p("web/tasks/t1", &Method::DELETE),
            AppPath::Task(id("/web"), "t1".into())
        );
        assert_eq!(p("web/tasks", &Method::DELETE), AppPath::Tasks(id("/web")));
        assert_eq!(p("web", &Method::DELETE), AppPath::App(id("/web")));
        assert_eq!(
            p("web/restart", &Method::POST),
            AppPath::Restart(id("/web"))
        );
        assert_eq!(p("tasks", &Method::GET), AppPath::App(id("/tasks")));
    }

    #[test]
    fn version_combines_only_with_id() {
        let id = PathId::parse("/web");
        let c = app_change(
            &id,
            json!({"id": "/web", "version": "2021-01-01T00:00:00.000Z"}),
            true,
            true,
        )
        .expect("rollback");
        assert!(
            matches!(c.change, Some(Change::Rollback(r)) if r.version == "2021-01-01T00:00:00.000Z")
        );
        let e = app_change(
            &id,
            json!({"version": "2021-01-01T00:00:00.000Z", "cmd": "x"}),
            true,
            true,
        )
        .expect_err("422");
        assert_eq!(e.to_api_error().code.http_status(), 422);
        let e = app_change(&id, json!({"version": "yesterday"}), true, true).expect_err("422");
        assert_eq!(e.to_api_error().code.http_status(), 422);
        let e = app_change(&id, json!({"instances": "two"}), true, true).expect_err("422");
        assert_eq!(e.to_api_error().body["details"][0]["path"], "/instances");
        let c =
            app_change(&id, json!({"instances": 2, "version": null}), true, false).expect("patch");
        assert!(
            matches!(c.change, Some(Change::Patch(p)) if !p.create_if_missing && p.app_id == "/web")
        );
    }
}
