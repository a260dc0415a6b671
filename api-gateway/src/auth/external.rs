//! Decisions delegated to an HTTP service (`auth.external_url`), Marathon's Authenticator and
//! Authorizer plugins in a form any language can implement:
//!
//! ```text
//!  gateway ── POST {"method","path","headers":{"authorization"},"action","resource"} ──► service
//!          ◄── {"allow": bool, "principal": "alice"|null, "message": "…", "viewPrefixes": […]} ──
//! ```
//!
//! `allow: false` with no principal is a 401 (not authenticated), with a principal a 403. A
//! service that fails or answers late fails the request closed with a 503, as Marathon did when
//! an Authenticator threw.
//!
//! [`JsonClient`] is also what admission webhooks are called with.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

/// POSTs JSON and reads JSON back, on the gateway's main runtime (as the leader link does), so
/// pooled connections outlive whichever HTTP worker opened them.
#[derive(Clone)]
pub struct JsonClient {
    http: reqwest::Client,
    runtime: Option<tokio::runtime::Handle>,
}

impl JsonClient {
    /// Create it inside the runtime the calls should run on.
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::new(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// The answer of a 2xx as JSON; anything else is an error with a reason.
    pub async fn post(&self, url: &str, body: Value, timeout: Duration) -> Result<Value, String> {
        let request = self.http.post(url).timeout(timeout).json(&body);
        let call = async move {
            let res = request.send().await.map_err(|e| {
                if e.is_timeout() {
                    format!("no answer within {timeout:?}")
                } else {
                    error_chain(&e)
                }
            })?;
            let status = res.status();
            if !status.is_success() {
                return Err(format!("answered {status}"));
            }
            res.json::<Value>()
                .await
                .map_err(|e| format!("answer is not JSON: {e}"))
        };
        match &self.runtime {
            Some(rt) => rt
                .spawn(call)
                .await
                .unwrap_or_else(|e| Err(format!("call aborted: {e}"))),
            None => call.await,
        }
    }
}

impl Default for JsonClient {
    fn default() -> Self {
        Self::new()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// The service's answer.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub allow: bool,
    #[serde(default)]
    pub principal: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// For listings (`view` on `/`): only what lies below these prefixes is shown. Absent:
    /// everything.
    #[serde(default)]
    pub view_prefixes: Option<Vec<String>>,
}

/// What the gateway knows of the request being decided.
#[derive(Clone, Debug)]
pub struct Asked {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
}

/// The external authoriser.
pub struct External {
    url: String,
    timeout: Duration,
    client: JsonClient,
}

impl External {
    pub fn new(url: String, timeout: Duration, client: JsonClient) -> Self {
        Self {
            url,
            timeout,
            client,
        }
    }

    /// Asks whether the request may do `action` on `resource`; `Err` when the service cannot
    /// say.
    pub async fn decide(
        &self,
        asked: &Asked,
        action: &str,
        resource: &str,
    ) -> Result<Decision, String> {
        let body = json!({
            "method": asked.method,
            "path": asked.path,
            "headers": { "authorization": asked.authorization },
            "action": action,
            "resource": resource,
        });
        let answer = self
            .client
            .post(&self.url, body, self.timeout)
            .await
            .map_err(|e| format!("authorization service {} failed: {e}", self.url))?;
        serde_json::from_value(answer).map_err(|e| {
            format!(
                "authorization service {} answered without a valid decision: {e}",
                self.url
            )
        })
    }
}
