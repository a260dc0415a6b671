//! Authentication and authorisation of the API.
//!
//! Stride is closed by default: the gateway refuses to start without a security file
//! (`--auth-config`, [`file`]) unless `--insecure-no-auth` says, explicitly, that anyone who can
//! reach the port may do anything.
//!
//! ```text
//!  request ─► authenticate (middleware) ─► handler ─► caller.require(action, id) ─► leader
//!               │ open paths pass: /ping, /, /ui/*, /openapi.json
//!               │ Authorization: Basic user:pass | Bearer name.secret ─► argon2 (cached)
//!               │ missing or wrong ─► 401 + WWW-Authenticate: Basic realm="Mesosphere"
//!               └ inserts a Caller into the request
//!  lists ─► caller.view_scope() ─► Scope filters apps, groups, tasks, deployments, queue, events
//! ```
//!
//! Handlers name what they do with [`Caller::require`] (an action on an app or group id) or
//! [`Caller::require_system`]; a refusal is Marathon's 403 `{"message"}`. With
//! `auth.external_url` every decision is the external service's ([`external`]) instead.
//! Every id checked is remembered on the caller, so the audit log can say what a change touched.

pub mod credentials;
pub mod external;
pub mod file;
pub mod policy;
pub mod tls;

use std::collections::HashMap;
use std::future::{ready, Ready};
use std::sync::{Arc, OnceLock};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, ResponseError};
use stride_core::error::ErrorCode;
use stride_core::PathId;

use crate::error::GatewayError;
use crate::state::Gateway;
use credentials::{Account, Verifier};
use external::{Asked, Decision, External, JsonClient};
use file::AuthFile;
pub use policy::{Action, Grants, Scope, SystemAction, SystemResource};

/// Who a request is, once its credentials were checked.
#[derive(Clone, Debug)]
pub struct Principal {
    pub name: String,
    /// The union of the grants of the principal's roles, compiled when the file loaded.
    pub grants: Grants,
    /// What lists show this principal, derived from `grants` once.
    view: Arc<Scope>,
}

impl Principal {
    pub fn new(name: impl Into<String>, grants: Grants) -> Self {
        let view = Arc::new(grants.view_scope());
        Self {
            name: name.into(),
            grants,
            view,
        }
    }
}

/// Who decides.
enum Authority {
    /// `--insecure-no-auth`: everyone is this principal, who may do everything.
    Open(Arc<Principal>),
    /// The users and tokens of the security file.
    Local(Box<Verifier>),
    /// `auth.external_url`.
    External(Arc<External>),
}

/// How requests are authenticated and authorised; built once at start-up.
pub struct Security {
    authority: Authority,
    realm: String,
}

impl Security {
    /// No authentication: every request may do everything.
    pub fn open() -> Self {
        Self {
            authority: Authority::Open(Arc::new(Principal::new("anonymous", Grants::everything()))),
            realm: file::DEFAULT_REALM.into(),
        }
    }

    /// The policy of a loaded security file.
    pub fn from_file(file: &AuthFile, client: JsonClient) -> Result<Self, String> {
        let authority = match &file.auth.external_url {
            Some(url) => Authority::External(Arc::new(External::new(
                url.clone(),
                file.auth.external_timeout,
                client,
            ))),
            None => {
                let roles = file.compiled_roles()?;
                let account = |name: &str, hash: &str, role_names: &[String]| {
                    let mut grants = Grants::default();
                    for r in role_names {
                        if let Some(g) = roles.get(r) {
                            grants.merge(g);
                        }
                    }
                    (
                        name.to_string(),
                        Account {
                            hash: hash.to_string(),
                            principal: Arc::new(Principal::new(name, grants)),
                        },
                    )
                };
                let users: HashMap<String, Account> = file
                    .users
                    .iter()
                    .map(|u| account(&u.name, &u.password_hash, &u.roles))
                    .collect();
                let tokens: HashMap<String, Account> = file
                    .tokens
                    .iter()
                    .map(|t| account(&t.name, &t.token_hash, &t.roles))
                    .collect();
                Authority::Local(Box::new(Verifier::new(users, tokens)))
            }
        };
        Ok(Self {
            authority,
            realm: file.auth.realm.clone(),
        })
    }

    pub fn is_open(&self) -> bool {
        matches!(self.authority, Authority::Open(_))
    }

    fn challenge(&self) -> HeaderValue {
        HeaderValue::from_str(&format!("Basic realm=\"{}\"", self.realm.replace('"', "")))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"Mesosphere\""))
    }
}

/// Paths anyone may read: the liveness probe, the UI's static files (its login form sends the
/// credentials) and the API description.
pub fn is_open_path(path: &str) -> bool {
    matches!(path, "/ping" | "/" | "/ui" | "/openapi.json") || path.starts_with("/ui/")
}

pub(crate) fn unauthenticated(message: impl Into<String>) -> GatewayError {
    GatewayError::new(ErrorCode::Unauthenticated, message)
}

fn forbidden(message: impl Into<String>) -> GatewayError {
    GatewayError::new(ErrorCode::Forbidden, message)
}

const NO_CREDENTIALS: &str =
    "Authentication required: send HTTP Basic credentials or a bearer token";
const BAD_CREDENTIALS: &str = "Invalid credentials";

/// Checks the credentials of every request outside the open paths and attaches its [`Caller`];
/// adds the `WWW-Authenticate` challenge to every 401.
pub(crate) async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(gw) = req.app_data::<web::Data<Gateway>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if !is_open_path(req.path()) {
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let caller = match &gw.security.authority {
            Authority::Open(p) => Caller::local(p.clone()),
            Authority::Local(verifier) => {
                let principal = match &authorization {
                    Some(h) => verifier.verify(h).await,
                    None => None,
                };
                match principal {
                    Some(p) => Caller::local(p),
                    None => {
                        let message = if authorization.is_some() {
                            BAD_CREDENTIALS
                        } else {
                            NO_CREDENTIALS
                        };
                        let mut res = unauthenticated(message).error_response();
                        res.headers_mut()
                            .insert(header::WWW_AUTHENTICATE, gw.security.challenge());
                        return Ok(req.into_response(res));
                    }
                }
            }
            Authority::External(service) => Caller::external(
                service.clone(),
                Asked {
                    method: req.method().to_string(),
                    path: req.path().to_string(),
                    authorization,
                },
            ),
        };
        req.extensions_mut().insert(caller);
    }
    let mut res = next.call(req).await?.map_into_boxed_body();
    if res.status() == StatusCode::UNAUTHORIZED
        && !res.headers().contains_key(header::WWW_AUTHENTICATE)
    {
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, gw.security.challenge());
    }
    Ok(res)
}

enum Who {
    Local(Arc<Principal>),
    External {
        service: Arc<External>,
        asked: Asked,
    },
}

struct CallerInner {
    who: Who,
    /// The principal's name; for an external authoriser, known after its first answer.
    name: OnceLock<String>,
    /// Every app or group id checked, in order, for the audit log.
    touched: parking_lot::Mutex<Vec<String>>,
}

/// The authenticated client of one request (a handler argument).
#[derive(Clone)]
pub struct Caller(Arc<CallerInner>);

impl Caller {
    fn local(principal: Arc<Principal>) -> Self {
        let name = OnceLock::new();
        let _ = name.set(principal.name.clone());
        Self(Arc::new(CallerInner {
            who: Who::Local(principal),
            name,
            touched: Default::default(),
        }))
    }

    fn external(service: Arc<External>, asked: Asked) -> Self {
        Self(Arc::new(CallerInner {
            who: Who::External { service, asked },
            name: OnceLock::new(),
            touched: Default::default(),
        }))
    }

    /// A caller that may do everything (tests).
    #[cfg(test)]
    pub fn everything() -> Self {
        Self::local(Arc::new(Principal::new("test", Grants::everything())))
    }

    /// The principal's name, when known.
    pub fn name(&self) -> Option<&str> {
        self.0.name.get().map(String::as_str)
    }

    /// The caller's grants, compiled from its roles; `None` with an external authoriser, whose
    /// decisions are only known when asked.
    pub fn grants(&self) -> Option<&Grants> {
        match &self.0.who {
            Who::Local(p) => Some(&p.grants),
            Who::External { .. } => None,
        }
    }

    /// The ids this request was checked against.
    pub fn touched(&self) -> Vec<String> {
        self.0.touched.lock().clone()
    }

    fn touch(&self, resource: &str) {
        let mut t = self.0.touched.lock();
        if !t.iter().any(|r| r == resource) {
            t.push(resource.to_string());
        }
    }

    fn who(&self) -> String {
        self.name().unwrap_or("anonymous").to_string()
    }

    /// Asks the external service; a refusal is the 401 or 403 it implies.
    async fn ask(
        &self,
        service: &External,
        asked: &Asked,
        action: &str,
        resource: &str,
    ) -> Result<Decision, GatewayError> {
        let d = service
            .decide(asked, action, resource)
            .await
            .map_err(|e| GatewayError::new(ErrorCode::Unavailable, e))?;
        if let Some(p) = &d.principal {
            let _ = self.0.name.set(p.clone());
        }
        if d.allow {
            return Ok(d);
        }
        match (&d.principal, d.message.clone()) {
            (None, m) => Err(unauthenticated(m.unwrap_or_else(|| NO_CREDENTIALS.into()))),
            (Some(p), m) => Err(forbidden(m.unwrap_or_else(|| {
                format!("Not authorized: {p} may not {action} {resource}")
            }))),
        }
    }

    /// Succeeds when the caller may do `action` on the app or group `id`; a 403 otherwise.
    pub async fn require(&self, action: Action, id: &PathId) -> Result<(), GatewayError> {
        let resource = id.to_string();
        self.touch(&resource);
        match &self.0.who {
            Who::Local(p) if p.grants.allows(action, id) => Ok(()),
            Who::Local(p) => Err(forbidden(format!(
                "Not authorized: {} may not {action} {resource}",
                p.name
            ))),
            Who::External { service, asked } => self
                .ask(service, asked, action.name(), &resource)
                .await
                .map(|_| ()),
        }
    }

    /// [`Caller::require`] for every id.
    pub async fn require_all<'a>(
        &self,
        action: Action,
        ids: impl IntoIterator<Item = &'a PathId>,
    ) -> Result<(), GatewayError> {
        for id in ids {
            self.require(action, id).await?;
        }
        Ok(())
    }

    /// Succeeds when the caller may do `action` on the system `resource`.
    pub async fn require_system(
        &self,
        action: SystemAction,
        resource: SystemResource,
    ) -> Result<(), GatewayError> {
        match &self.0.who {
            Who::Local(p) if p.grants.allows_system(action) => Ok(()),
            Who::Local(p) => Err(forbidden(format!(
                "Not authorized: {} may not {} {}",
                p.name,
                action.name(),
                resource.name()
            ))),
            Who::External { service, asked } => self
                .ask(service, asked, action.name(), resource.name())
                .await
                .map(|_| ()),
        }
    }

    /// What lists may show this caller.
    pub async fn view_scope(&self) -> Result<Arc<Scope>, GatewayError> {
        match &self.0.who {
            Who::Local(p) => Ok(p.view.clone()),
            Who::External { service, asked } => {
                let d = self.ask(service, asked, Action::View.name(), "/").await?;
                Ok(Arc::new(match d.view_prefixes {
                    None => Scope::everything(),
                    Some(prefixes) => {
                        Scope::of(prefixes.iter().map(|p| PathId::parse(p)).collect(), false)
                    }
                }))
            }
        }
    }

    /// The 403 for a caller that may see nothing of what it asked for.
    pub fn not_visible(&self, id: &PathId) -> GatewayError {
        self.touch(&id.to_string());
        forbidden(format!("Not authorized: {} may not view {id}", self.who()))
    }
}

impl FromRequest for Caller {
    type Error = GatewayError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Absent only if the middleware did not run: refuse rather than guess.
        ready(
            req.extensions()
                .get::<Caller>()
                .cloned()
                .ok_or_else(|| unauthenticated(NO_CREDENTIALS)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_paths_are_the_probe_the_ui_and_the_description() {
        for open in [
            "/ping",
            "/",
            "/ui",
            "/ui/",
            "/ui/js/main.js",
            "/openapi.json",
        ] {
            assert!(is_open_path(open), "{open}");
        }
        for closed in [
            "/v2/apps",
            "/metrics",
            "/uix",
            "/v2/info",
            "/v2/events",
            "/pingx",
        ] {
            assert!(!is_open_path(closed), "{closed}");
        }
    }

    #[tokio::test]
    async fn local_callers_are_refused_outside_their_grants() {
        let mut grants = Grants::default();
        grants.grant(Action::View, PathId::parse("/team-a"));
        let caller = Caller::local(Arc::new(Principal::new("alice", grants)));
        assert!(caller
            .require(Action::View, &PathId::parse("/team-a/web"))
            .await
            .is_ok());
        let e = caller
            .require(Action::Update, &PathId::parse("/team-a/web"))
            .await
            .expect_err("403");
        assert_eq!(e.to_api_error().code, ErrorCode::Forbidden);
        assert_eq!(
            e.to_api_error().body["message"],
            "Not authorized: alice may not update /team-a/web"
        );
        assert!(caller
            .require_system(SystemAction::View, SystemResource::Config)
            .await
            .is_err());
        assert_eq!(caller.touched(), vec!["/team-a/web".to_string()]);
    }
}
