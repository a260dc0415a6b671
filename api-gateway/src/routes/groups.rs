//! `/v2/groups` (reference §1.3): the tree read from the store; creations, structural updates,
//! `scaleBy`, rollbacks to a version and deletions sent to the leader.
//!
//! Group ids contain slashes; the tail below `/v2/groups/` ends in `versions`, `versions/{v}`
//! or `apps` for the sub-resources (of the root when that is all there is).

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};
use stride_core::error::ApiError;
use stride_core::group::{all_groups, GroupEmbed, GroupMeta, GroupUpdate};
use stride_core::parse::{from_value, parse_json};
use stride_core::render::{app_info, Embed};
use stride_core::validation::MAX_ID_LENGTH;
use stride_core::{PathId, Timestamp};
use stride_proto::v1::app_change::Change;
use stride_proto::v1::{
    AppChange, DeployRequest, GroupAttributes, GroupChange, GroupRollback, GroupScale,
};
use stride_store::{collections, history};

use crate::admission::{Kind, Operation};
use crate::auth::{Action, Caller};
use crate::error::{GatewayError, Result};
use crate::http::{base_url, deployment_result, json as json_response, origin, Query};
use crate::state::Gateway;

enum GroupPath {
    Group(PathId),
    Versions(PathId),
    Version(PathId, String),
    Apps(PathId),
}

impl GroupPath {
    fn parse(tail: &str) -> Self {
        let s: Vec<&str> = tail.split('/').filter(|s| !s.is_empty()).collect();
        let n = s.len();
        let id = |k: usize| PathId::parse(&s[..k].join("/"));
        if n >= 1 && s[n - 1] == "versions" {
            return GroupPath::Versions(id(n - 1));
        }
        if n >= 2 && s[n - 2] == "versions" {
            return GroupPath::Version(id(n - 2), s[n - 1].to_string());
        }
        if n >= 1 && s[n - 1] == "apps" {
            return GroupPath::Apps(id(n - 1));
        }
        GroupPath::Group(id(n))
    }
}

async fn metas(gw: &Gateway) -> Result<std::collections::BTreeMap<PathId, GroupMeta>> {
    Ok(gw
        .store
        .get_all(collections::GROUPS)
        .await?
        .into_iter()
        .filter_map(|(_, b)| serde_json::from_slice::<GroupMeta>(&b).ok())
        .map(|m| (m.id.clone(), m))
        .collect())
}

fn no_group(id: &PathId) -> GatewayError {
    GatewayError::not_found(format!("Group '{id}' does not exist"))
}

/// `GET /v2/groups` and `GET /v2/groups/{…}`.
pub(crate) async fn get(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    tail: Option<web::Path<String>>,
    caller: Caller,
) -> Result<HttpResponse> {
    let tail = tail.map(|t| t.into_inner()).unwrap_or_default();
    let q = Query::from_request(&req);
    match GroupPath::parse(&tail) {
        GroupPath::Group(id) => Ok(json_response(
            StatusCode::OK,
            &visible_value(&gw, &caller, &q, &id).await?,
        )),
        GroupPath::Apps(id) => {
            let v = visible_value(&gw, &caller, &q, &id).await?;
            let mut apps = Vec::new();
            collect_apps(&v, &mut apps);
            Ok(json_response(StatusCode::OK, &Value::Array(apps)))
        }
        GroupPath::Versions(id) => {
            caller.require(Action::View, &id).await?;
            let versions = history::group_versions(gw.store.as_ref(), &id.to_string()).await?;
            if versions.is_empty() && !id.is_root() {
                let snap = gw.snapshots.get(gw.store.as_ref()).await?;
                let tree = all_groups(snap.apps.keys(), &metas(&gw).await?);
                if !tree.contains(&id) {
                    return Err(no_group(&id));
                }
            }
            Ok(json_response(StatusCode::OK, &json!(versions)))
        }
        GroupPath::Version(id, raw) => {
            caller.require(Action::View, &id).await?;
            let version = Timestamp::parse(&raw).map_err(GatewayError::unprocessable)?;
            match history::group_at(gw.store.as_ref(), &id.to_string(), &version.to_string())
                .await?
            {
                Some(v) => Ok(json_response(StatusCode::OK, &v)),
                None => Err(no_group(&id)),
            }
        }
    }
}

fn collect_apps(group: &Value, out: &mut Vec<Value>) {
    if let Some(apps) = group.get("apps").and_then(Value::as_array) {
        out.extend(apps.iter().cloned());
    }
    if let Some(groups) = group.get("groups").and_then(Value::as_array) {
        for g in groups {
            collect_apps(g, out);
        }
    }
}

async fn show_value(gw: &Gateway, q: &Query, id: &PathId) -> Result<Value> {
    let (snap, metas) = futures::try_join!(gw.snapshots.get(gw.store.as_ref()), metas(gw))?;
    let tree = all_groups(snap.apps.keys(), &metas);
    if !tree.contains(id) {
        return Err(no_group(id));
    }
    let embed_values: Vec<&str> = q.all("embed").collect();
    let group_embed = GroupEmbed::parse(embed_values.iter().copied());
    // Only `group.apps.<x>` asks for app extras here.
    let app_embed = Embed::parse(
        embed_values
            .iter()
            .filter_map(|v| v.strip_prefix("group.apps.")),
        Embed::default(),
    );
    let by_app = snap.instances_by_app();
    let render = |a: &stride_core::App| {
        app_info(
            a,
            &snap.status(&a.id, by_app.get(&a.id).cloned().unwrap_or_default()),
            app_embed,
        )
    };
    Ok(stride_core::group::group_json(
        id,
        &snap.apps,
        &metas,
        &tree,
        group_embed,
        &render,
    ))
}

/// The group as the caller may see it: whole, pruned to what it may view inside, or a 403.
async fn visible_value(gw: &Gateway, caller: &Caller, q: &Query, id: &PathId) -> Result<Value> {
    let scope = caller.view_scope().await?;
    if scope.sees(id) {
        return show_value(gw, q, id).await;
    }
    if !scope.sees_into(id) {
        return Err(caller.not_visible(id));
    }
    let mut v = show_value(gw, q, id).await?;
    scope.prune_group(&mut v);
    Ok(v)
}

/// The group body through the admission webhooks (with its `id`): as it was, or amended.
async fn admit(
    gw: &Gateway,
    caller: &Caller,
    operation: Operation,
    path: &PathId,
    mut value: Value,
) -> Result<Value> {
    if gw.admission.is_empty() {
        return Ok(value);
    }
    if let Some(o) = value.as_object_mut() {
        o.insert("id".into(), Value::String(path.to_string()));
    }
    let admitted = gw
        .admission
        .review(Kind::Group, operation, value, caller.name())
        .await?;
    match admitted
        .get("id")
        .and_then(Value::as_str)
        .map(PathId::parse)
    {
        Some(changed) if changed != *path => Err(GatewayError::unprocessable(format!(
            "An admission webhook changed the group id from {path} to {changed}"
        ))),
        _ => Ok(admitted),
    }
}

/// Hostile input: a group id longer than any app id may be.
fn check_id_length(path: &PathId) -> Result<()> {
    if path.to_string().len() <= MAX_ID_LENGTH {
        return Ok(());
    }
    Err(ApiError::invalid(vec![stride_core::error::Violation {
        path: "/id".into(),
        errors: vec![format!(
            "must not be longer than {MAX_ID_LENGTH} characters"
        )],
    }])
    .into())
}

/// A body that lists `apps` or `groups` replaces the group's content (and a rollback restores
/// another), which may create and remove apps: that takes create, update and delete.
async fn require_replace(caller: &Caller, path: &PathId) -> Result<()> {
    caller.require(Action::Update, path).await?;
    caller.require(Action::Create, path).await?;
    caller.require(Action::Delete, path).await
}

fn change(c: Change) -> AppChange {
    AppChange { change: Some(c) }
}

/// Parses a GroupUpdate body here, so a bad one gets its 400/422 without a round trip.
fn parse_update(body: &[u8]) -> Result<(Value, GroupUpdate)> {
    let value = parse_json(body)?;
    if !value.is_object() {
        return Err(ApiError::json_type("/".into(), "error.expected.jsobject".into()).into());
    }
    let update: GroupUpdate = from_value(value.clone())?;
    Ok((value, update))
}

async fn deploy(
    req: &HttpRequest,
    gw: &Gateway,
    changes: Vec<AppChange>,
    force: bool,
    dry_run: bool,
) -> Result<stride_proto::v1::DeployResponse> {
    Ok(gw
        .leader_link
        .deploy(DeployRequest {
            changes,
            force,
            dry_run,
            origin: Some(origin(req)),
        })
        .await?)
}

fn url_path(tail: Option<web::Path<String>>) -> PathId {
    PathId::parse(&tail.map(|t| t.into_inner()).unwrap_or_default())
}

/// `POST /v2/groups[/{id}]`: creates the group at the body's id resolved against the URL.
pub(crate) async fn create(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    tail: Option<web::Path<String>>,
    body: web::Bytes,
    caller: Caller,
) -> Result<HttpResponse> {
    let base = url_path(tail);
    let (value, update) = parse_update(&body)?;
    let path = match &update.id {
        Some(raw) => PathId::resolve(raw, &base),
        None => base.clone(),
    };
    if path.is_root() {
        return Err(ApiError::invalid(vec![stride_core::error::Violation {
            path: "/id".into(),
            errors: vec!["path must not be root".into()],
        }])
        .into());
    }
    check_id_length(&path)?;
    caller.require(Action::Create, &path).await?;
    // The leader parses and validates the body, amended or not.
    let value = admit(&gw, &caller, Operation::Create, &path, value).await?;
    let q = Query::from_request(&req);
    let reply = deploy(
        &req,
        &gw,
        vec![change(Change::GroupUpdate(GroupChange {
            path: path.to_string(),
            json: without_id(value).to_string(),
            create_only: true,
        }))],
        q.flag("force", false),
        false,
    )
    .await?;
    let mut res = deployment_result(StatusCode::CREATED, &reply.deployment_id, &reply.version);
    if let Ok(v) = HeaderValue::from_str(&format!("{}/v2/groups{path}", base_url(&req))) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

fn without_id(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("id");
    }
    v
}

/// `PUT /v2/groups[/{id}]`: rollback (`version`), scale (`scaleBy`) or a structural update.
pub(crate) async fn update(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    tail: Option<web::Path<String>>,
    body: web::Bytes,
    caller: Caller,
) -> Result<HttpResponse> {
    let base = url_path(tail);
    let (value, update) = parse_update(&body)?;
    let q = Query::from_request(&req);
    let force = q.flag("force", false);
    let dry_run = q.flag("dryRun", false);
    let path = match &update.id {
        Some(raw) => PathId::resolve(raw, &base),
        None => base,
    };
    check_id_length(&path)?;
    if update.scale_by.is_some() && update.version.is_none() {
        caller.require(Action::Update, &path).await?;
    } else {
        require_replace(&caller, &path).await?;
    }
    let (value, update) = if dry_run || gw.admission.is_empty() {
        (value, update)
    } else {
        let admitted = admit(&gw, &caller, Operation::Update, &path, value).await?;
        let update: GroupUpdate = from_value(admitted.clone())?;
        (admitted, update)
    };
    let fields: Vec<&String> = value
        .as_object()
        .map(|o| o.keys().filter(|k| k.as_str() != "id").collect())
        .unwrap_or_default();
    let c = if let Some(version) = &update.version {
        if fields.len() > 1 {
            return Err(GatewayError::unprocessable(
                "version is not allowed in conjunction with other properties.",
            ));
        }
        Change::GroupRollback(GroupRollback {
            path: path.to_string(),
            version: version.clone(),
        })
    } else if let Some(factor) = update.scale_by {
        if fields.len() > 1 {
            return Err(GatewayError::unprocessable(
                "scaleBy is not allowed in conjunction with other properties.",
            ));
        }
        Change::GroupScale(GroupScale {
            path: path.to_string(),
            factor,
        })
    } else {
        Change::GroupUpdate(GroupChange {
            path: path.to_string(),
            json: without_id(value).to_string(),
            create_only: false,
        })
    };
    let reply = deploy(&req, &gw, vec![change(c)], force, dry_run).await?;
    if dry_run {
        let plan: Value =
            serde_json::from_str(&reply.plan_json).unwrap_or_else(|_| json!({ "steps": [] }));
        return Ok(json_response(StatusCode::OK, &plan));
    }
    Ok(deployment_result(
        StatusCode::OK,
        &reply.deployment_id,
        &reply.version,
    ))
}

/// `PATCH /v2/groups/{id}`: only `enforceRole`, on top-level groups.
pub(crate) async fn patch(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    tail: Option<web::Path<String>>,
    body: web::Bytes,
    caller: Caller,
) -> Result<HttpResponse> {
    let path = url_path(tail);
    caller.require(Action::Update, &path).await?;
    let value = parse_json(&body)?;
    let Some(enforce) = value.get("enforceRole").and_then(Value::as_bool) else {
        return Err(ApiError::invalid(vec![stride_core::error::Violation {
            path: "/enforceRole".into(),
            errors: vec!["error.path.missing".into()],
        }])
        .into());
    };
    let mut extra = Map::new();
    if let Some(o) = value.as_object() {
        extra.extend(
            o.iter()
                .filter(|(k, _)| k.as_str() != "enforceRole")
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }
    if !extra.is_empty() {
        return Err(GatewayError::unprocessable(
            "Only enforceRole can be changed with PATCH",
        ));
    }
    // A webhook may amend `enforceRole`, nothing else.
    let admitted = admit(&gw, &caller, Operation::Update, &path, value).await?;
    let enforce = admitted
        .get("enforceRole")
        .and_then(Value::as_bool)
        .unwrap_or(enforce);
    deploy(
        &req,
        &gw,
        vec![change(Change::GroupAttributes(GroupAttributes {
            path: path.to_string(),
            enforce_role: enforce,
        }))],
        false,
        false,
    )
    .await?;
    Ok(HttpResponse::Ok().finish())
}

/// `DELETE /v2/groups[/{id}]`.
pub(crate) async fn delete(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    tail: Option<web::Path<String>>,
    caller: Caller,
) -> Result<HttpResponse> {
    let path = url_path(tail);
    caller.require(Action::Delete, &path).await?;
    admit(&gw, &caller, Operation::Delete, &path, json!({})).await?;
    let q = Query::from_request(&req);
    let reply = deploy(
        &req,
        &gw,
        vec![change(Change::GroupRemove(path.to_string()))],
        q.flag("force", false),
        false,
    )
    .await?;
    Ok(deployment_result(
        StatusCode::OK,
        &reply.deployment_id,
        &reply.version,
    ))
}
