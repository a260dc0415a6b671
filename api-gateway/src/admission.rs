//! Admission webhooks: HTTP services that see every app or group change before the gateway
//! sends it to the leader, and may refuse or amend it (Marathon's `RunSpecValidator` plugin, in
//! a form any language can implement). Configured in the security file:
//!
//! ```toml
//! [[admission.webhooks]]
//! url = "http://policy.internal:8081/admit"
//! timeout = "2s"
//! ```
//!
//! ```text
//!  handler ─ parse ─ authorise ─► webhook 1 ─► webhook 2 ─► … ─► leader
//!     POST {"kind":"app"|"group","operation":"create"|"update"|"delete","object":{…},"principal"}
//!     ◄─── {"allowed": true|false, "message": "…", "patch": {…}|null}
//! ```
//!
//! Webhooks run in the order listed; each sees the object as the previous one left it. A
//! `patch` replaces the whole definition (it is parsed and validated again, and may not change
//! the id). `allowed: false` is a 422 with the webhook's message. A webhook that fails, answers
//! late or answers nonsense fails the change closed: 503
//! `{"message":"admission webhook <url> failed: …"}`.

use serde_json::{json, Value};
use stride_core::error::ErrorCode;

use crate::auth::external::JsonClient;
use crate::auth::file::WebhookEntry;
use crate::error::GatewayError;

/// What kind of object changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    App,
    Group,
}

/// How it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::App => "app",
            Kind::Group => "group",
        }
    }
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

/// The configured webhooks.
pub struct Admission {
    webhooks: Vec<WebhookEntry>,
    client: JsonClient,
}

impl Admission {
    pub fn new(webhooks: Vec<WebhookEntry>, client: JsonClient) -> Self {
        Self { webhooks, client }
    }

    /// No webhooks: every change is admitted as it is.
    pub fn none() -> Self {
        Self::new(Vec::new(), JsonClient::new())
    }

    /// True when no webhook is configured: changes need not be shown to anyone.
    pub fn is_empty(&self) -> bool {
        self.webhooks.is_empty()
    }

    /// Runs the change past every webhook; answers the object to apply.
    pub async fn review(
        &self,
        kind: Kind,
        operation: Operation,
        mut object: Value,
        principal: Option<&str>,
    ) -> Result<Value, GatewayError> {
        for hook in &self.webhooks {
            let failed = |why: String| {
                GatewayError::new(
                    ErrorCode::Unavailable,
                    format!("admission webhook {} failed: {why}", hook.url),
                )
            };
            let answer = self
                .client
                .post(
                    &hook.url,
                    json!({
                        "kind": kind.name(),
                        "operation": operation.name(),
                        "object": object,
                        "principal": principal,
                    }),
                    hook.timeout,
                )
                .await
                .map_err(failed)?;
            let Some(allowed) = answer.get("allowed").and_then(Value::as_bool) else {
                return Err(failed("the answer has no boolean 'allowed'".into()));
            };
            let message = answer.get("message").and_then(Value::as_str);
            if !allowed {
                return Err(GatewayError::unprocessable(message.map_or_else(
                    || format!("admission webhook {} rejected the change", hook.url),
                    str::to_string,
                )));
            }
            match answer.get("patch") {
                None | Some(Value::Null) => {}
                Some(patch @ Value::Object(_)) => {
                    tracing::info!(webhook = %hook.url, kind = kind.name(), "admission webhook amended the change");
                    object = patch.clone();
                }
                Some(_) => return Err(failed("'patch' is neither an object nor null".into())),
            }
        }
        Ok(object)
    }
}
