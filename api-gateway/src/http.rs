//! Small HTTP helpers shared by the routes: query strings with repeated keys (`embed`,
//! `event_type`, `status[]`), Marathon's boolean flags, content negotiation, and the common
//! response shapes (JSON, `DeploymentResult`).

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};
use stride_proto::v1::RequestOrigin;

/// `Marathon-Deployment-Id`: the deployment a change started (reference §0.2).
const DEPLOYMENT_ID_HEADER: &str = "marathon-deployment-id";

/// A parsed query string; keys may repeat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: &str) -> Self {
        let pairs = raw
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        Self { pairs }
    }

    pub fn from_request(req: &HttpRequest) -> Self {
        Self::parse(req.query_string())
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, with comma-separated lists split.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    /// A boolean flag: `true`, `True`, `1` (and a bare `?flag`) are true; `false`, `0` and
    /// anything else are false; absent is `default`.
    pub fn flag(&self, key: &str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(v) => v.is_empty() || v.eq_ignore_ascii_case("true") || v == "1",
        }
    }
}

/// Percent-decoding with `+` as space (form encoding); invalid escapes are kept as they are.
fn decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JSON response.
pub fn json(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status).json(body)
}

/// A JSON response whose body is already serialised.
pub fn json_bytes(status: StatusCode, body: impl Into<actix_web::web::Bytes>) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(header::ContentType::json())
        .body(body.into())
}

/// `{"<key>":[<items>…]}` from items already serialised as JSON.
pub fn json_list<'a>(
    key: &str,
    items: impl IntoIterator<Item = &'a [u8]>,
    size_hint: usize,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(size_hint + key.len() + 8);
    body.extend_from_slice(b"{");
    body.extend_from_slice(Value::from(key).to_string().as_bytes());
    body.extend_from_slice(b":[");
    for (n, item) in items.into_iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    body
}

/// `{"deploymentId","version"}` with the deployment header.
pub fn deployment_result(status: StatusCode, deployment_id: &str, version: &str) -> HttpResponse {
    let mut res = json(
        status,
        &json!({ "deploymentId": deployment_id, "version": version }),
    );
    set_deployment_id(&mut res, deployment_id);
    res
}

/// Adds `Marathon-Deployment-Id`.
pub fn set_deployment_id(res: &mut HttpResponse, deployment_id: &str) {
    if let Ok(v) = HeaderValue::from_str(deployment_id) {
        res.headers_mut()
            .insert(header::HeaderName::from_static(DEPLOYMENT_ID_HEADER), v);
    }
}

/// Who asked, for the leader's audit trail and `api_post_event`.
pub fn origin(req: &HttpRequest) -> RequestOrigin {
    let info = req.connection_info();
    let client_ip = info
        .realip_remote_addr()
        .map(strip_port)
        .unwrap_or_default()
        .to_string();
    RequestOrigin {
        client_ip,
        uri: req.path().to_string(),
        principal: String::new(),
    }
}

fn strip_port(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            host
        }
        _ => addr,
    }
}

/// `scheme://host` of the request, for `Location` headers.
pub fn base_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

/// The media types of the `Accept` header, in order, without parameters, lowercased.
pub fn accepted(req: &HttpRequest) -> Vec<String> {
    req.headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|m| {
            m.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

/// True when the client asked for `text/plain` ahead of JSON (`/v2/tasks`, ≤1.10).
pub fn wants_text_plain(req: &HttpRequest) -> bool {
    for m in accepted(req) {
        match m.as_str() {
            "text/plain" => return true,
            "application/json" | "*/*" | "application/*" => return false,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_repeat_and_decode() {
        let q = Query::parse("embed=apps.tasks&embed=apps.counts,apps.readiness&label=a+in+(x%2Cy)&force=True&status%5B%5D=running&bad=%zz");
        assert_eq!(
            q.all("embed").collect::<Vec<_>>(),
            vec!["apps.tasks", "apps.counts", "apps.readiness"]
        );
        assert_eq!(q.get("label"), Some("a in (x,y)"));
        assert!(q.flag("force", false));
        assert!(q.flag("absent", true));
        assert!(!Query::parse("force=false").flag("force", true));
        assert!(Query::parse("force=1").flag("force", false));
        assert_eq!(q.get("status[]"), Some("running"));
        assert_eq!(q.get("bad"), Some("%zz"));
        assert_eq!(Query::parse("x=%4").get("x"), Some("%4"));
    }

    #[test]
    fn ports_are_stripped_from_client_addresses() {
        assert_eq!(strip_port("10.0.0.1:5555"), "10.0.0.1");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("host"), "host");
    }
}
