//! The HTTP side of the client: one `reqwest` client, the credentials, and the mapping of
//! answers to [`Reply`] or [`CliError`].

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::error::CliError;

/// How long one API call may take; waiting for deployments is many short calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to authenticate, if at all.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

impl Auth {
    /// `--token` wins over `--user`; `--user` is `user:password` (the password may hold `:`).
    pub fn from_flags(user: Option<&str>, token: Option<&str>) -> Result<Self, CliError> {
        if let Some(t) = token.filter(|t| !t.is_empty()) {
            return Ok(Auth::Bearer(t.to_string()));
        }
        match user.filter(|u| !u.is_empty()) {
            None => Ok(Auth::None),
            Some(u) => match u.split_once(':') {
                Some((user, password)) => Ok(Auth::Basic {
                    user: user.to_string(),
                    password: password.to_string(),
                }),
                None => Err(CliError::Usage(
                    "--user takes user:password (or set STRIDE_CREDENTIALS)".into(),
                )),
            },
        }
    }
}

/// A 2xx answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The JSON body; `Null` when empty or not JSON (`/ping`).
    pub body: Value,
    pub text: String,
    /// `Marathon-Deployment-Id`, else the body's `deploymentId`.
    pub deployment_id: Option<String>,
}

/// Stride's API at one base URL.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    auth: Auth,
}

impl Client {
    pub fn new(url: &str, auth: Auth) -> Result<Self, CliError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| CliError::Usage(format!("--url {url:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(CliError::Usage(format!(
                "--url {url:?}: use an http:// or https:// URL"
            )));
        }
        // No overall timeout on the client: the event stream stays open; calls set their own.
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("stride-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self {
            base: url.trim_end_matches('/').to_string(),
            http,
            auth,
        })
    }

    /// A request to `path` (starting with `/`) with the credentials on it.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Auth::None => req,
            Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
            Auth::Bearer(token) => req.bearer_auth(token),
        }
    }

    /// Sends one call and sorts the answer: 2xx is a [`Reply`], anything else a [`CliError`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Reply, CliError> {
        let mut req = self
            .request(method, path)
            .timeout(CALL_TIMEOUT)
            .header(reqwest::header::ACCEPT, "application/json");
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let deployment_id = resp
            .headers()
            .get("marathon-deployment-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.map_err(|e| self.unreachable(&e))?;
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        if !status.is_success() {
            return Err(CliError::Api {
                status: status.as_u16(),
                body,
                text,
            });
        }
        let deployment_id = deployment_id.or_else(|| {
            body.get("deploymentId")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        Ok(Reply {
            status: status.as_u16(),
            body,
            text,
            deployment_id,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Reply, CliError> {
        self.call(Method::GET, path, &[], None).await
    }

    pub fn unreachable(&self, e: &reqwest::Error) -> CliError {
        CliError::Unreachable(format!(
            "cannot reach Stride at {}: {}",
            self.base,
            error_chain(e)
        ))
    }
}

/// Whether a status means the server is there but unwell (worth retrying while waiting).
pub fn is_server_error(status: u16) -> bool {
    StatusCode::from_u16(status).is_ok_and(|s| s.is_server_error())
}

/// `error sending request: client error (Connect): tcp connect error: Connection refused`,
/// without the repeats reqwest's chain tends to have.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// The API path of an app (or group) id: `web`, `/web` and `/web/` are all `/web`.
pub fn id_path(id: &str) -> String {
    format!("/{}", id.trim_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_flags() {
        assert!(matches!(Auth::from_flags(None, None), Ok(Auth::None)));
        assert!(matches!(
            Auth::from_flags(Some("ann:se:cret"), None),
            Ok(Auth::Basic { user, password }) if user == "ann" && password == "se:cret"
        ));
        assert!(matches!(
            Auth::from_flags(Some("ann:pw"), Some("t0k")),
            Ok(Auth::Bearer(t)) if t == "t0k"
        ));
        assert!(matches!(
            Auth::from_flags(Some("ann"), None),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn ids_become_paths() {
        assert_eq!(id_path("web"), "/web");
        assert_eq!(id_path("/prod/web/"), "/prod/web");
    }

    #[test]
    fn urls_are_checked() {
        assert!(Client::new("http://localhost:8080/", Auth::None).is_ok());
        assert!(matches!(
            Client::new("localhost:8080", Auth::None),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            Client::new("not a url", Auth::None),
            Err(CliError::Usage(_))
        ));
    }
}
