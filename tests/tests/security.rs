//! Security end to end, against the real binaries: every endpoint against every role
//! (allowed, forbidden, unauthenticated) on a gateway with a security file; filtered lists and
//! events; the audit log; bearer tokens; mutual TLS that keeps out agents without a certificate
//! from the cluster CA; HTTPS on the API; admission webhooks and an external authoriser;
//! Redis AUTH, ACL users and TLS; the refusal to start open; and the agent's own guards (the
//! app's `user`, host volumes).
//!
//! Certificates are made here with rcgen, into each test's temporary directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stride_tests::{bin, free_port, hash_password as hash, Api, Cluster, Flags, Proc, RedisServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers: hashes, security files, certificates, a tiny JSON HTTP server, raw calls.

/// A bearer token and its `[[tokens]]` entry, from `new-token`.
fn new_token(name: &str, role: &str) -> (String, String) {
    let out = Command::new(bin("stride-api-gateway"))
        .args(["new-token", name, "--roles", role])
        .output()
        .expect("new-token runs");
    assert!(out.status.success(), "new-token failed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let token = text
        .lines()
        .find_map(|l| l.split("(shown once): ").nth(1))
        .expect("the token is printed")
        .trim()
        .to_string();
    let entry = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    (token, entry)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A CA and what it signs, as PEM files in a directory.
struct Pki {
    dir: PathBuf,
    name: String,
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

/// Paths of one certificate and its key.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Self {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        write(dir, &format!("{name}-ca.pem"), &cert.pem());
        Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            params,
            key,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A certificate for `127.0.0.1` and `localhost`, usable as server and as client.
    fn issue(&self, who: &str) -> Issued {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, who.to_string());
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("signed");
        Issued {
            cert: write(&self.dir, &format!("{}-{who}.pem", self.name), &cert.pem()),
            key: write(
                &self.dir,
                &format!("{}-{who}-key.pem", self.name),
                &key.serialize_pem(),
            ),
        }
    }
}

fn tls_flags(ca: &Path, issued: &Issued) -> Vec<String> {
    vec![
        "--tls-ca".into(),
        ca.display().to_string(),
        "--tls-cert".into(),
        issued.cert.display().to_string(),
        "--tls-key".into(),
        issued.key.display().to_string(),
    ]
}

/// What a fake HTTP service answers: status, JSON body, and how long it waits first.
struct Answer {
    status: u16,
    body: Value,
    delay: Duration,
}

impl Answer {
    fn ok(body: Value) -> Self {
        Self {
            status: 200,
            body,
            delay: Duration::ZERO,
        }
    }
}

type Handler = Arc<dyn Fn(&Value) -> Answer + Send + Sync>;

/// The request bodies a fake service saw.
#[derive(Default)]
struct Log(std::sync::Mutex<Vec<Value>>);

impl Log {
    fn push(&self, v: Value) {
        if let Ok(mut l) = self.0.lock() {
            l.push(v);
        }
    }

    fn all(&self) -> Vec<Value> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// A one-request-per-connection HTTP server answering JSON POSTs with `handler`; every request
/// body it saw is kept in the returned log.
async fn json_service(handler: Handler) -> (u16, Arc<Log>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let log = Arc::new(Log::default());
    let seen = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, length) = loop {
                    let Ok(n) = conn.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body: Value = serde_json::from_slice(&buf[head_end..head_end + length])
                    .unwrap_or(Value::Null);
                seen.push(body.clone());
                let answer = handler(&body);
                tokio::time::sleep(answer.delay).await;
                let text = answer.body.to_string();
                let response = format!(
                    "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    answer.status,
                    text.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (port, log)
}

/// Waits until `check` holds, or panics after `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ids(list: &Value, key: &str, field: &str) -> Vec<String> {
    list[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a[field].as_str().map(str::to_string))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The role matrix.

/// What a role gets from an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// Past authentication and authorisation: any status but 401, 403 and 5xx.
    Yes,
    /// 403 with a message.
    No,
    /// 401 with the Basic challenge.
    Auth,
}
use Want::{Auth, No, Yes};

/// The roles of the matrix, in the order of each case's expectations.
const ROLES: [&str; 5] = ["admin", "alice", "bob", "viewer", "anonymous"];

const SECURITY_FILE: &str = r#"
[[users]]
name = "admin"
password_hash = "{admin}"
roles = ["admin"]

[[users]]
name = "alice"
password_hash = "{alice}"
roles = ["team-a"]

[[users]]
name = "bob"
password_hash = "{bob}"
roles = ["team-b"]

[[users]]
name = "viewer"
password_hash = "{viewer}"
roles = ["viewer"]

{token}

[roles.admin]
system = ["*"]
paths = [{ prefix = "/", actions = ["*"] }]

[roles.team-a]
paths = [{ prefix = "/team-a", actions = ["view", "create", "update", "delete", "kill"] }]

[roles.team-b]
paths = [{ prefix = "/team-b", actions = ["view", "create", "update", "delete", "kill"] }]

[roles.viewer]
system = ["view"]
paths = [{ prefix = "/", actions = ["view"] }]
"#;

struct Secured {
    cluster: Cluster,
    /// The security file and the audit log, kept for as long as the gateway runs.
    _dir: tempfile::TempDir,
    /// `Authorization` of each role of [`ROLES`] (`None` for anonymous).
    auth: HashMap<&'static str, Option<String>>,
    token: String,
    audit: PathBuf,
}

impl Secured {
    fn start(agents: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut auth = HashMap::new();
        let mut file = SECURITY_FILE.to_string();
        for role in ["admin", "alice", "bob", "viewer"] {
            let password = format!("{role}-password");
            file = file.replace(&format!("{{{role}}}"), &hash(&password));
            auth.insert(role, Some(basic(role, &password)));
        }
        auth.insert("anonymous", None);
        let (token, entry) = new_token("ci-team-a", "team-a");
        file = file.replace("{token}", &entry);
        let security = write(dir.path(), "auth.toml", &file);
        let audit = dir.path().join("audit.jsonl");
        let cluster = Cluster::start_with(
            1,
            agents,
            Flags {
                gateway: vec![
                    "--auth-config".into(),
                    security.display().to_string(),
                    "--audit-log".into(),
                    audit.display().to_string(),
                ],
                ..Flags::default()
            },
        );
        Self {
            cluster,
            _dir: dir,
            auth,
            token,
            audit,
        }
    }

    fn as_role(&self, role: &str) -> Api {
        self.cluster
            .api
            .with_auth(self.auth.get(role).cloned().flatten().as_deref())
    }

    fn admin(&self) -> Api {
        self.as_role("admin")
    }

    async fn until_leader(&self) {
        let admin = self.admin();
        eventually(PATIENCE, "a leader behind the gateway", || {
            let admin = admin.clone();
            async move {
                admin
                    .try_get("/v2/leader")
                    .await
                    .filter(|r| r.status == 200)
            }
        })
        .await;
    }
}

/// One HTTP call with a role's credentials; `/v2/events` answers once its headers arrive.
async fn raw_call(
    base: &str,
    auth: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    if path.starts_with("/v2/events") {
        req = req.header("Accept", "text/event-stream");
    }
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    if path.starts_with("/v2/events") && status == 200 {
        return (status, Value::Null, headers);
    }
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        headers,
    )
}

struct Case {
    method: &'static str,
    /// `{who}` is the role's name; `{a_task}`, `{a_deployment}` come from the cluster.
    path: &'static str,
    body: Option<&'static str>,
    want: [Want; 5],
}

const fn case(
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    want: [Want; 5],
) -> Case {
    Case {
        method,
        path,
        body,
        want,
    }
}

const ANY: [Want; 5] = [Yes, Yes, Yes, Yes, Auth];
const OPEN: [Want; 5] = [Yes, Yes, Yes, Yes, Yes];
const SEE_A: [Want; 5] = [Yes, Yes, No, Yes, Auth];
const CHANGE_A: [Want; 5] = [Yes, Yes, No, No, Auth];
const CHANGE_B: [Want; 5] = [Yes, No, Yes, No, Auth];
const SYSTEM_VIEW: [Want; 5] = [Yes, No, No, Yes, Auth];
const SYSTEM_CHANGE: [Want; 5] = [Yes, No, No, No, Auth];
const ROOT_CHANGE: [Want; 5] = [Yes, No, No, No, Auth];

/// Every endpoint of the API. Reads first, then changes (whose effects may turn a later role's
/// call into a 404 or 409, which still counts as "past authorisation").
fn cases() -> Vec<Case> {
    const APP: Option<&str> =
        Some(r#"{"id":"/team-a/new-{who}","cmd":"sleep 1000","cpus":0.01,"mem":8,"instances":0}"#);
    const APP_B: Option<&str> =
        Some(r#"{"id":"/team-b/new-{who}","cmd":"sleep 1000","cpus":0.01,"mem":8,"instances":0}"#);
    vec![
        // Open to everyone.
        case("GET", "/ping", None, OPEN),
        case("GET", "/", None, OPEN),
        case("GET", "/ui/", None, OPEN),
        case("GET", "/openapi.json", None, OPEN),
        // Lists: everyone authenticated, filtered.
        case("GET", "/v2/apps", None, ANY),
        case("GET", "/v2/apps/*", None, ANY),
        case("GET", "/v2/tasks", None, ANY),
        case("GET", "/v2/groups", None, ANY),
        case("GET", "/v2/deployments", None, ANY),
        case("GET", "/v2/queue", None, ANY),
        case("GET", "/v2/events", None, ANY),
        case("GET", "/v2/pods", None, ANY),
        case("GET", "/v2/no-such-thing", None, ANY),
        // Reads of /team-a.
        case("GET", "/v2/apps/team-a/web", None, SEE_A),
        case("GET", "/v2/apps/team-a/web/tasks", None, SEE_A),
        case("GET", "/v2/apps/team-a/web/versions", None, SEE_A),
        case("GET", "/v2/apps/team-a/*", None, SEE_A),
        case("GET", "/v2/apps/team-a/*/tasks", None, SEE_A),
        case("GET", "/v2/groups/team-a", None, SEE_A),
        case("GET", "/v2/groups/team-a/versions", None, SEE_A),
        case("GET", "/v2/groups/team-a/apps", None, SEE_A),
        case("GET", "/v2/tasks/{a_task}/files", None, SEE_A),
        case(
            "GET",
            "/v2/tasks/{a_task}/files/read?path=stdout",
            None,
            SEE_A,
        ),
        case(
            "GET",
            "/v2/tasks/{a_task}/files/download?path=stdout",
            None,
            SEE_A,
        ),
        // System reads.
        case("GET", "/v2/info", None, SYSTEM_VIEW),
        case("GET", "/v2/leader", None, SYSTEM_VIEW),
        case("GET", "/metrics", None, SYSTEM_VIEW),
        case("GET", "/metrics/prometheus", None, SYSTEM_VIEW),
        case("GET", "/logging", None, SYSTEM_VIEW),
        case("GET", "/config", None, SYSTEM_VIEW),
        case("GET", "/v2/plugins", None, SYSTEM_VIEW),
        case("GET", "/v2/eventSubscriptions", None, SYSTEM_VIEW),
        // Changes to /team-a, /team-b and the root.
        case("POST", "/v2/apps", APP, CHANGE_A),
        case("POST", "/v2/apps", APP_B, CHANGE_B),
        case(
            "PUT",
            "/v2/apps/team-a/put-{who}",
            Some(r#"{"cmd":"sleep 1000","cpus":0.01,"mem":8,"instances":0}"#),
            CHANGE_A,
        ),
        case(
            "PUT",
            "/v2/apps/team-a/web?force=true",
            Some(r#"{"instances":1}"#),
            CHANGE_A,
        ),
        case(
            "PATCH",
            "/v2/apps/team-a/web?force=true",
            Some(r#"{"labels":{"by":"{who}"}}"#),
            CHANGE_A,
        ),
        case(
            "PUT",
            "/v2/apps?force=true",
            Some(r#"[{"id":"/team-a/web","instances":1}]"#),
            CHANGE_A,
        ),
        case(
            "PATCH",
            "/v2/apps?force=true",
            Some(r#"[{"id":"/team-a/web","labels":{}}]"#),
            CHANGE_A,
        ),
        case(
            "POST",
            "/v2/apps/team-a/web/restart?force=true",
            None,
            CHANGE_A,
        ),
        case("DELETE", "/v2/apps/team-a/new-{who}", None, CHANGE_A),
        case("DELETE", "/v2/queue/team-a/stuck/delay", None, CHANGE_A),
        case(
            "POST",
            "/v2/groups",
            Some(r#"{"id":"/team-a/g-{who}"}"#),
            CHANGE_A,
        ),
        case(
            "PUT",
            "/v2/groups/team-a/g-{who}?force=true",
            Some(r#"{"dependencies":[]}"#),
            CHANGE_A,
        ),
        case(
            "PUT",
            "/v2/groups/team-a?force=true",
            Some(r#"{"scaleBy":1}"#),
            CHANGE_A,
        ),
        case(
            "PATCH",
            "/v2/groups/team-a",
            Some(r#"{"enforceRole":false}"#),
            CHANGE_A,
        ),
        case("DELETE", "/v2/groups/team-a/g-{who}", None, CHANGE_A),
        case(
            "PUT",
            "/v2/groups?force=true",
            Some(r#"{"scaleBy":1}"#),
            ROOT_CHANGE,
        ),
        case(
            "DELETE",
            "/v2/deployments/{a_deployment}?force=true",
            None,
            CHANGE_A,
        ),
        case(
            "DELETE",
            "/v2/apps/team-a/web/tasks/{a_task}",
            None,
            CHANGE_A,
        ),
        case("DELETE", "/v2/apps/team-a/web/tasks", None, CHANGE_A),
        case(
            "POST",
            "/v2/tasks/delete",
            Some(r#"{"ids":["{a_task}"]}"#),
            CHANGE_A,
        ),
        case(
            "POST",
            "/logging",
            Some(r#"{"logger":"stride_audit","level":"info"}"#),
            SYSTEM_CHANGE,
        ),
        case(
            "POST",
            "/v2/eventSubscriptions?callbackUrl=http://127.0.0.1:9/callback",
            None,
            SYSTEM_CHANGE,
        ),
        case(
            "DELETE",
            "/v2/eventSubscriptions?callbackUrl=http://127.0.0.1:9/callback",
            None,
            SYSTEM_CHANGE,
        ),
    ]
}

fn fill(template: &str, who: &str, vars: &HashMap<&str, String>) -> String {
    let mut s = template.replace("{who}", who);
    for (k, v) in vars {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_every_role_as_its_grants_say() {
    let s = Secured::start(1);
    s.until_leader().await;
    let admin = s.admin();
    let app = |id: &str, extra: Value| {
        let mut a = json!({"id": id, "cmd": "echo started; sleep 1000", "cpus": 0.01, "mem": 8, "instances": 1});
        if let (Some(a), Some(e)) = (a.as_object_mut(), extra.as_object()) {
            a.extend(e.clone());
        }
        a.to_string()
    };
    for id in ["/team-a/web", "/team-b/web"] {
        let r = admin.post("/v2/apps", &app(id, json!({}))).await;
        assert_eq!(r.status, 201, "{id}: {}", r.text);
    }
    // Deployments that never finish and queue entries that stay: no agent is called nowhere.
    for id in ["/team-a/stuck", "/team-b/stuck"] {
        let r = admin
            .post(
                "/v2/apps",
                &app(
                    id,
                    json!({"constraints": [["hostname", "LIKE", "nowhere"]]}),
                ),
            )
            .await;
        assert_eq!(r.status, 201, "{id}: {}", r.text);
    }
    let tasks = admin.until_running("/team-a/web", 1, PATIENCE).await;
    admin.until_running("/team-b/web", 1, PATIENCE).await;
    let a_task = tasks[0]["id"].as_str().expect("task id").to_string();
    let deployments = admin.get("/v2/deployments").await;
    let a_deployment = deployments
        .body
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["affectedApps"] == json!(["/team-a/stuck"]))
        .and_then(|d| d["id"].as_str())
        .expect("the /team-a/stuck deployment")
        .to_string();

    // Lists show each role what it may view, and nothing else.
    let alice = s.as_role("alice");
    let bob = s.as_role("bob");
    let viewer = s.as_role("viewer");
    let only = |who: &str, list: Vec<String>, prefix: &str| {
        assert!(!list.is_empty(), "{who} sees nothing");
        assert!(
            list.iter().all(|i| i.starts_with(prefix)),
            "{who} sees {list:?}"
        );
    };
    only(
        "alice",
        ids(&alice.get("/v2/apps").await.body, "apps", "id"),
        "/team-a/",
    );
    only(
        "bob",
        ids(&bob.get("/v2/apps").await.body, "apps", "id"),
        "/team-b/",
    );
    only(
        "alice",
        ids(&alice.get("/v2/apps/*").await.body, "*", "id"),
        "/team-a/",
    );
    only(
        "alice",
        ids(&alice.get("/v2/tasks").await.body, "tasks", "appId"),
        "/team-a/",
    );
    // The sandbox routes refuse to leave the sandbox.
    for path in ["../../../../etc/passwd", "/etc/passwd", "a/../../x"] {
        let r = admin
            .get(&format!("/v2/tasks/{a_task}/files/read?path={path}"))
            .await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
    }
    let viewer_apps = ids(&viewer.get("/v2/apps").await.body, "apps", "id");
    assert_eq!(
        viewer_apps.len(),
        4,
        "the viewer sees every app: {viewer_apps:?}"
    );
    let root = alice.get("/v2/groups").await.body;
    assert_eq!(ids(&root, "groups", "id"), vec!["/team-a"], "{root}");
    assert!(root["apps"].as_array().is_some_and(|a| a.is_empty()));
    let viewer_root = viewer.get("/v2/groups").await.body;
    assert_eq!(ids(&viewer_root, "groups", "id").len(), 2, "{viewer_root}");
    let affected: Vec<String> = alice
        .get("/v2/deployments")
        .await
        .body
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["affectedApps"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    only("alice", affected, "/team-a/");
    let queue = alice.get("/v2/queue").await.body;
    let queued: Vec<String> = queue["queue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|q| q["app"]["id"].as_str().map(str::to_string))
        .collect();
    only("alice", queued, "/team-a/");

    // The matrix.
    let vars: HashMap<&str, String> = [
        ("a_task", a_task.clone()),
        ("a_deployment", a_deployment.clone()),
    ]
    .into();
    let base = s.cluster.api.base.clone();
    let mut failures = Vec::new();
    let mut calls = 0;
    for c in cases() {
        // Anonymous and the roles that must be refused go first, so nothing they could do
        // would be hidden by an allowed role's change.
        let mut order: Vec<usize> = (0..ROLES.len()).collect();
        order.sort_by_key(|i| c.want[*i] == Yes);
        for i in order {
            let role = ROLES[i];
            let path = fill(c.path, role, &vars);
            let body = c.body.map(|b| fill(b, role, &vars));
            let auth = s.auth[role].clone();
            let (status, body_seen, headers) =
                raw_call(&base, auth.as_deref(), c.method, &path, body.as_deref()).await;
            calls += 1;
            let got = match status {
                401 => Auth,
                403 => No,
                _ => Yes,
            };
            let mut problems = Vec::new();
            if got != c.want[i] || status >= 500 {
                problems.push(format!("status {status}"));
            }
            if status == 401
                && headers
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    != Some("Basic realm=\"Mesosphere\"")
            {
                problems.push("no Basic challenge".into());
            }
            if matches!(status, 401 | 403) && !body_seen["message"].is_string() {
                problems.push(format!("body {body_seen}"));
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "{role} {} {path}: wanted {:?}, got {} ({body_seen})",
                    c.method,
                    c.want[i],
                    problems.join(", ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {calls} calls went wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!(
        "role matrix: {} endpoints × {} roles = {calls} calls, all as expected",
        cases().len(),
        ROLES.len()
    );

    // Refused changes changed nothing.
    for who in ["bob", "viewer", "anonymous"] {
        for path in [
            format!("/v2/apps/team-a/new-{who}"),
            format!("/v2/apps/team-a/put-{who}"),
        ] {
            assert_eq!(
                admin.get(&path).await.status,
                404,
                "{path} exists after a refused create"
            );
        }
    }
    for who in ["alice", "viewer", "anonymous"] {
        let path = format!("/v2/apps/team-b/new-{who}");
        assert_eq!(
            admin.get(&path).await.status,
            404,
            "{path} exists after a refused create"
        );
    }
    assert_eq!(
        admin.get("/v2/apps/team-a/new-alice").await.status,
        404,
        "alice deleted her app"
    );
    assert_eq!(
        admin.get("/v2/apps/team-a/put-alice").await.status,
        200,
        "alice's PUT created an app"
    );

    // A bearer token acts with its role; a forged one is refused.
    let ci = s
        .cluster
        .api
        .with_auth(Some(&format!("Bearer {}", s.token)));
    only(
        "the token",
        ids(&ci.get("/v2/apps").await.body, "apps", "id"),
        "/team-a/",
    );
    let (name, _) = s.token.rsplit_once('.').expect("name.secret");
    let forged = s
        .cluster
        .api
        .with_auth(Some(&format!("Bearer {name}.forged")));
    let r = forged.get("/v2/apps").await;
    assert_eq!(
        (r.status, r.body["message"].as_str()),
        (401, Some("Invalid credentials"))
    );
    let wrong = s.cluster.api.as_user("alice", "not-her-password");
    assert_eq!(wrong.get("/v2/apps").await.status, 401);
    let r = alice
        .post("/v2/apps", &app("/team-b/sneaky", json!({})))
        .await;
    assert_eq!(
        (r.status, r.body["message"].as_str()),
        (
            403,
            Some("Not authorized: alice may not create /team-b/sneaky")
        )
    );
    // `..` cannot climb out of a prefix: the id is resolved before it is checked.
    let r = alice
        .post("/v2/apps", &app("/team-a/../team-b/climb", json!({})))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);

    // The event stream carries only what the role may view.
    let (attached, on_attach) = tokio::sync::oneshot::channel();
    let events = tokio::spawn(read_events(
        base.clone(),
        s.auth["alice"].clone(),
        PATIENCE,
        attached,
    ));
    tokio::time::timeout(PATIENCE, on_attach)
        .await
        .expect("alice's event stream attached in time")
        .expect("the stream attached");
    for id in ["/team-b/web", "/team-a/web"] {
        let r = admin
            .put(&format!("/v2/apps{id}?force=true"), r#"{"instances":2}"#)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let seen = events.await.expect("events");
    assert!(
        seen.contains("/team-a/web"),
        "alice saw no event of /team-a: {seen}"
    );
    assert!(
        !seen.contains("/team-b"),
        "alice saw an event of /team-b: {seen}"
    );

    // The audit log holds every change, allowed or not.
    let audit: Vec<Value> = std::fs::read_to_string(&s.audit)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let has = |pred: &dyn Fn(&Value) -> bool| audit.iter().any(pred);
    assert!(
        has(&|r| r["principal"] == "bob"
            && r["method"] == "POST"
            && r["outcome"] == "forbidden"
            && r["ids"] == json!(["/team-a/new-bob"])
            && r["status"] == 403),
        "no record of bob's refused create"
    );
    assert!(
        has(&|r| r["principal"] == "admin"
            && r["path"] == "/v2/apps"
            && r["outcome"] == "ok"
            && r["deploymentId"].is_string()
            && r["ids"] == json!(["/team-a/web"])),
        "no record of admin's create with its deployment"
    );
    assert!(
        has(&|r| r["principal"].is_null() && r["outcome"] == "unauthenticated"),
        "no record of an anonymous change"
    );
    assert!(
        audit
            .iter()
            .all(|r| r["time"].is_string() && r["method"] != "GET"),
        "audit records reads or lacks times"
    );

    // Abdication last: only the admin may, and the cluster gets a leader again.
    for who in ["alice", "bob", "viewer", "anonymous"] {
        let (status, _, _) =
            raw_call(&base, s.auth[who].as_deref(), "DELETE", "/v2/leader", None).await;
        assert_eq!(
            status,
            if who == "anonymous" { 401 } else { 403 },
            "{who} abdicated"
        );
    }
    let r = admin.delete("/v2/leader").await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.until_leader().await;
}

/// What an SSE client with `auth` receives (the raw text), until a `/team-a/web` deployment
/// succeeded or `within` passed; `attached` fires once the stream is attached.
async fn read_events(
    base: String,
    auth: Option<String>,
    within: Duration,
    attached: tokio::sync::oneshot::Sender<()>,
) -> String {
    let client = reqwest::Client::new();
    let mut req = client
        .get(format!("{base}/v2/events"))
        .header("Accept", "text/event-stream");
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let Ok(mut resp) = req.send().await else {
        return String::new();
    };
    let mut attached = Some(attached);
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(bytes))) => text.push_str(&String::from_utf8_lossy(&bytes)),
            _ => return text,
        }
        if text.contains("event_stream_attached") {
            if let Some(tx) = attached.take() {
                let _ = tx.send(());
            }
        }
        // Enough once both scale-ups could have shown: a /team-a deployment finished.
        if text.contains("deployment_success") && text.contains("/team-a/web") {
            return text;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The agent's guards, end to end.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_as_the_apps_user_and_host_volumes_need_the_agents_consent() {
    let s = Secured::start(1);
    s.until_leader().await;
    let admin = s.admin();
    let host_volume = json!({"id": "/team-a/host-volume", "cmd": "ls data; sleep 1000", "cpus": 0.01, "mem": 8,
        "container": {"type": "MESOS", "volumes": [{"containerPath": "data", "hostPath": "/etc", "mode": "RO"}]}});
    let r = admin.post("/v2/apps", &host_volume.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let failure = eventually(PATIENCE, "the host volume task to fail", || {
        let admin = admin.clone();
        async move {
            let r = admin.try_get("/v2/apps/team-a/host-volume").await?;
            r.body["app"]["lastTaskFailure"]["message"]
                .as_str()
                .map(str::to_string)
        }
    })
    .await;
    assert!(
        failure.contains("host path volumes are not allowed"),
        "{failure}"
    );

    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("the user check needs root; skipped");
        return;
    }
    let Some(nobody) = nix::unistd::User::from_name("nobody").ok().flatten() else {
        eprintln!("no user nobody; skipped");
        return;
    };
    let r = admin
        .post(
            "/v2/apps",
            &json!({"id": "/team-a/as-nobody", "cmd": "id -u > uid; sleep 1000",
            "cpus": 0.01, "mem": 8, "user": "nobody"})
            .to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let tasks = admin.until_running("/team-a/as-nobody", 1, PATIENCE).await;
    let task = tasks[0]["id"].as_str().expect("task id").to_string();
    let uid = eventually(PATIENCE, "the task to write its uid", || {
        let (admin, task) = (admin.clone(), task.clone());
        async move {
            let r = admin
                .try_get(&format!("/v2/tasks/{task}/files/read?path=uid"))
                .await?;
            r.body["data"]
                .as_str()
                .filter(|d| d.ends_with('\n'))
                .map(str::to_string)
        }
    })
    .await;
    assert_eq!(uid.trim(), nobody.uid.to_string());
}

// ---------------------------------------------------------------------------------------------
// Mutual TLS and HTTPS.

/// Waits until the log of `p` holds `needle`.
async fn until_logged(p: &Proc, needle: &str, within: Duration) {
    eventually(within, &format!("{} to log {needle:?}", p.name), || async {
        p.log_text().contains(needle).then_some(())
    })
    .await;
}

async fn registered_agents(redis_url: &str) -> Vec<String> {
    use stride_store::StateStore;
    let store = stride_store::RedisStore::connect(redis_url, "stride")
        .await
        .expect("redis");
    let mut ids: Vec<String> = store
        .get_all(stride_store::collections::AGENTS)
        .await
        .expect("agents")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    ids.sort();
    ids
}

/// A cluster of one scheduler and a gateway with no agents, both on certificates from
/// `cluster_ca`, the gateway open (`--insecure-no-auth`) so the tests see only the gRPC links;
/// with the gateway's certificate, which any client of the cluster may present.
fn mtls_cluster(cluster_ca: &Pki) -> (Cluster, Issued) {
    let scheduler = cluster_ca.issue("scheduler");
    let gateway = cluster_ca.issue("gateway");
    let mut gateway_flags = vec!["--insecure-no-auth".to_string()];
    gateway_flags.extend(tls_flags(&cluster_ca.ca(), &gateway));
    let cluster = Cluster::start_with(
        1,
        0,
        Flags {
            gateway: gateway_flags,
            scheduler: tls_flags(&cluster_ca.ca(), &scheduler),
            agent: Vec::new(),
            ..Flags::default()
        },
    );
    (cluster, gateway)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_keeps_out_agents_without_a_certificate_from_the_cluster_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster_ca = Pki::new(dir.path(), "cluster");
    let rogue_ca = Pki::new(dir.path(), "rogue");
    let agent = cluster_ca.issue("agent-0");
    let rogue = rogue_ca.issue("agent-2");
    let (mut c, gateway) = mtls_cluster(&cluster_ca);
    let endpoints = vec![format!("http://127.0.0.1:{}", c.scheduler_ports[0])];
    // agent-0: the cluster's certificate. agent-1: no TLS at all. agent-2: it trusts the
    // cluster CA but its own certificate comes from another CA.
    c.agents.push(Cluster::agent_proc_with(
        c.dir.path(),
        &endpoints,
        0,
        &tls_flags(&cluster_ca.ca(), &agent),
    ));
    c.agents
        .push(Cluster::agent_proc_with(c.dir.path(), &endpoints, 1, &[]));
    c.agents.push(Cluster::agent_proc_with(
        c.dir.path(),
        &endpoints,
        2,
        &tls_flags(&cluster_ca.ca(), &rogue),
    ));

    // The API is HTTPS with the gateway's certificate; a client that trusts the cluster CA
    // gets in, a plaintext one does not.
    let ca_pem = std::fs::read(cluster_ca.ca()).expect("ca");
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).expect("pem"))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("https client");
    c.api = Api::with_client(&format!("https://127.0.0.1:{}", c.gateway_port), https);
    let api = c.api.clone();
    api.until(PATIENCE, "the HTTPS API and a leader", |api| async move {
        api.try_get("/v2/leader").await.filter(|r| r.status == 200)
    })
    .await;
    let https_leader = format!("https://127.0.0.1:{}", c.gateway_port);
    api.until(PATIENCE, "X-Marathon-Leader with https", |api| {
        let want = https_leader.clone();
        async move {
            let r = api.try_get("/v2/leader").await?;
            (r.header("x-marathon-leader") == Some(want)).then_some(())
        }
    })
    .await;
    assert!(
        Api::new(&format!("http://127.0.0.1:{}", c.gateway_port))
            .try_get("/ping")
            .await
            .is_none_or(|r| r.status != 200),
        "the HTTPS port answered plaintext HTTP"
    );

    // agent-0 registers; the gateway reaches the leader over mTLS and the agent's API too.
    let url = c.redis.url();
    eventually(PATIENCE, "agent-0 to register", || {
        let url = url.clone();
        async move {
            registered_agents(&url)
                .await
                .contains(&"agent-0".to_string())
                .then_some(())
        }
    })
    .await;
    let r = api
        .post(
            "/v2/apps",
            r#"{"id":"/tls/web","cmd":"echo over-tls; sleep 1000","cpus":0.01,"mem":8}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let tasks = api.until_running("/tls/web", 1, PATIENCE).await;
    assert_eq!(tasks[0]["slaveId"], "agent-0");
    let task = tasks[0]["id"].as_str().expect("task").to_string();
    let stdout = eventually(PATIENCE, "the sandbox through the agent's mTLS API", || {
        let (api, task) = (api.clone(), task.clone());
        async move {
            let r = api
                .try_get(&format!("/v2/tasks/{task}/files/read?path=stdout"))
                .await?;
            r.body["data"]
                .as_str()
                .filter(|d| d.contains("over-tls"))
                .map(str::to_string)
        }
    })
    .await;
    assert!(stdout.contains("over-tls"));

    // The others keep failing and never register.
    for i in [1, 2] {
        until_logged(&c.agents[i], "still no session with a leader", PATIENCE).await;
        let log = c.agents[i].log_text();
        let why = log
            .lines()
            .find(|l| l.contains("still no session"))
            .unwrap_or("");
        println!("agent-{i}: {why}");
    }
    assert_eq!(registered_agents(&url).await, vec!["agent-0".to_string()]);

    // A TLS client without a certificate, and a plaintext one, get no answer from the leader.
    let grpc = format!("https://127.0.0.1:{}", c.scheduler_ports[0]);
    let no_cert = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem));
    let channel = tonic::transport::Endpoint::from_shared(grpc.clone())
        .expect("endpoint")
        .tls_config(no_cert)
        .expect("tls")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let mut client = stride_proto::control_client::ControlClient::new(channel.connect_lazy());
    let refused = client
        .queue(stride_proto::v1::QueueRequest {
            embed_last_unused_offers: false,
        })
        .await;
    assert!(
        refused.is_err(),
        "a client without a certificate was served"
    );
    let with_cert = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(&gateway.cert).expect("cert"),
            std::fs::read(&gateway.key).expect("key"),
        ));
    let channel = tonic::transport::Endpoint::from_shared(grpc)
        .expect("endpoint")
        .tls_config(with_cert)
        .expect("tls")
        .timeout(Duration::from_secs(5));
    let mut client = stride_proto::control_client::ControlClient::new(channel.connect_lazy());
    let served = client
        .queue(stride_proto::v1::QueueRequest {
            embed_last_unused_offers: false,
        })
        .await;
    assert!(
        served.is_ok(),
        "a client with the cluster's certificate was refused: {served:?}"
    );
    let plain = tonic::transport::Endpoint::from_shared(format!(
        "http://127.0.0.1:{}",
        c.scheduler_ports[0]
    ))
    .expect("endpoint")
    .timeout(Duration::from_secs(5));
    let mut client = stride_proto::control_client::ControlClient::new(plain.connect_lazy());
    assert!(client
        .queue(stride_proto::v1::QueueRequest {
            embed_last_unused_offers: false
        })
        .await
        .is_err());
}

// ---------------------------------------------------------------------------------------------
// Plugins: admission webhooks and an external authoriser.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_webhooks_refuse_amend_and_fail_closed() {
    let (webhook_port, webhook_log) = json_service(Arc::new(|review: &Value| {
        let object = &review["object"];
        let id = object["id"].as_str().unwrap_or("");
        if id.contains("slow") {
            return Answer {
                status: 200,
                body: json!({"allowed": true}),
                delay: Duration::from_secs(3),
            };
        }
        if id.contains("broken") {
            return Answer {
                status: 500,
                body: json!({"error": "boom"}),
                delay: Duration::ZERO,
            };
        }
        if object["labels"]["reject"] == "yes" || id == "/denied-group" {
            return Answer::ok(
                json!({"allowed": false, "message": "refused by policy: reject=yes"}),
            );
        }
        if review["kind"] == "app" && review["operation"] == "create" {
            let mut patched = object.clone();
            patched["labels"]["admitted"] = json!("true");
            return Answer::ok(json!({"allowed": true, "message": null, "patch": patched}));
        }
        Answer::ok(json!({"allowed": true, "patch": null}))
    }))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let security = write(
        dir.path(),
        "auth.toml",
        &format!(
            "[[users]]\nname = \"admin\"\npassword_hash = \"{}\"\nroles = [\"admin\"]\n\
             [roles.admin]\nsystem = [\"*\"]\npaths = [{{ prefix = \"/\", actions = [\"*\"] }}]\n\
             [[admission.webhooks]]\nurl = \"http://127.0.0.1:{webhook_port}/admit\"\ntimeout = \"1s\"\n",
            hash("pw")
        ),
    );
    let c = Cluster::start_with(
        1,
        0,
        Flags {
            gateway: vec!["--auth-config".into(), security.display().to_string()],
            ..Flags::default()
        },
    );
    let admin = c.api.as_user("admin", "pw");
    admin
        .until(PATIENCE, "a leader", |api| async move {
            api.try_get("/v2/leader").await.filter(|r| r.status == 200)
        })
        .await;
    let app = |id: &str, labels: Value| {
        json!({"id": id, "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 0, "labels": labels}).to_string()
    };

    let r = admin.post("/v2/apps", &app("/adm/keep", json!({}))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Amended: the stored app carries the webhook's label.
    let r = admin.post("/v2/apps", &app("/adm/ok", json!({}))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let stored = admin.get("/v2/apps/adm/ok").await;
    assert_eq!(
        stored.body["app"]["labels"]["admitted"], "true",
        "{}",
        stored.text
    );
    // Refused: 422 with the webhook's message, nothing stored.
    let r = admin
        .post("/v2/apps", &app("/adm/refused", json!({"reject": "yes"})))
        .await;
    assert_eq!(
        (r.status, r.body["message"].as_str()),
        (422, Some("refused by policy: reject=yes"))
    );
    assert_eq!(admin.get("/v2/apps/adm/refused").await.status, 404);
    // Late or failing: 503, closed.
    let hook = format!("admission webhook http://127.0.0.1:{webhook_port}/admit failed: ");
    for id in ["/adm/slow", "/adm/broken"] {
        let r = admin.post("/v2/apps", &app(id, json!({}))).await;
        assert_eq!(r.status, 503, "{id}: {}", r.text);
        let message = r.body["message"].as_str().unwrap_or("");
        assert!(message.starts_with(&hook), "{id}: {message}");
        assert_eq!(admin.get(&format!("/v2/apps{id}")).await.status, 404);
    }
    // Updates, deletions and groups are reviewed too.
    let r = admin
        .put("/v2/apps/adm/ok", r#"{"labels":{"reject":"yes"}}"#)
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = admin
        .put(
            "/v2/apps/adm/ok",
            r#"{"instances":0,"labels":{"admitted":"true","v":"2"}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = admin.post("/v2/groups", r#"{"id":"/denied-group"}"#).await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = admin.delete("/v2/apps/adm/ok").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let reviews = webhook_log.all();
    let saw = |kind: &str, op: &str, id: &str| {
        reviews.iter().any(|r| {
            r["kind"] == kind
                && r["operation"] == op
                && r["object"]["id"] == id
                && r["principal"] == "admin"
        })
    };
    assert!(
        saw("app", "create", "/adm/ok")
            && saw("app", "update", "/adm/ok")
            && saw("app", "delete", "/adm/ok"),
        "{reviews:?}"
    );
    assert!(saw("group", "create", "/denied-group"), "{reviews:?}");

    // An external authoriser decides for a second gateway on the same cluster.
    let (authz_port, authz_log) = json_service(Arc::new(|asked: &Value| {
        let authorization = asked["headers"]["authorization"].as_str().unwrap_or("");
        let action = asked["action"].as_str().unwrap_or("");
        let resource = asked["resource"].as_str().unwrap_or("");
        match authorization {
            "Bearer slow" => Answer { status: 200, body: json!({"allow": true}), delay: Duration::from_secs(3) },
            "Bearer good" if action == "view" && resource == "/" => {
                Answer::ok(json!({"allow": true, "principal": "ext-user", "viewPrefixes": ["/ext"]}))
            }
            "Bearer good" if resource.starts_with("/ext") => Answer::ok(json!({"allow": true, "principal": "ext-user"})),
            "Bearer good" => Answer::ok(json!({"allow": false, "principal": "ext-user", "message": format!("ext-user may not {action} {resource}")})),
            _ => Answer::ok(json!({"allow": false, "principal": null, "message": "who are you?"})),
        }
    }))
    .await;
    let external = write(
        dir.path(),
        "external.toml",
        &format!("[auth]\nexternal_url = \"http://127.0.0.1:{authz_port}/authz\"\nexternal_timeout = \"1s\"\n"),
    );
    let port = free_port();
    let _gateway = Proc::spawn(
        "external-gateway",
        &bin("stride-api-gateway"),
        &[
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--redis".into(),
            c.redis.url(),
            "--auth-config".into(),
            external.display().to_string(),
        ],
        c.dir.path(),
    );
    let ext = Api::new(&format!("http://127.0.0.1:{port}"));
    ext.until(PATIENCE, "the second gateway", |api| async move {
        api.try_get("/ping").await.filter(|r| r.status == 200)
    })
    .await;
    let r = ext.get("/v2/apps").await;
    assert_eq!(
        (r.status, r.body["message"].as_str()),
        (401, Some("who are you?"))
    );
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Basic realm=\"Mesosphere\"")
    );
    let good = ext.with_auth(Some("Bearer good"));
    let r = good.post("/v2/apps", &app("/ext/web", json!({}))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = good
        .post("/v2/apps", &app("/adm/not-mine", json!({})))
        .await;
    assert_eq!(
        (r.status, r.body["message"].as_str()),
        (403, Some("ext-user may not create /adm/not-mine"))
    );
    assert_eq!(
        ids(&good.get("/v2/apps").await.body, "apps", "id"),
        vec!["/ext/web"]
    );
    assert_eq!(good.get("/v2/info").await.status, 403);
    let r = ext.with_auth(Some("Bearer slow")).get("/v2/apps").await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("authorization service"),
        "{}",
        r.text
    );
    let asked = authz_log.all();
    assert!(
        asked.iter().any(|a| a["method"] == "POST"
            && a["path"] == "/v2/apps"
            && a["action"] == "create"
            && a["resource"] == "/ext/web"
            && a["headers"]["authorization"] == "Bearer good"),
        "{asked:?}"
    );
    assert!(
        asked.iter().any(|a| a["resource"] == "system:config"),
        "{asked:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Closed by default.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refuses_to_start_open_unless_told_and_says_so_when_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start();
    let out = Command::new(bin("stride-api-gateway"))
        .args(["--listen", "127.0.0.1:0", "--redis", &redis.url()])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to start without authentication")
    );

    let bad = write(
        dir.path(),
        "bad.toml",
        "[[users]]\nname = \"x\"\npassword_hash = \"plain\"\n",
    );
    let out = Command::new(bin("stride-api-gateway"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--redis",
            &redis.url(),
            "--auth-config",
            &bad.display().to_string(),
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a PHC hash string"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let port = free_port();
    let open = Proc::spawn(
        "open-gateway",
        &bin("stride-api-gateway"),
        &[
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--redis".into(),
            redis.url(),
            "--insecure-no-auth".into(),
        ],
        dir.path(),
    );
    let api = Api::new(&format!("http://127.0.0.1:{port}"));
    api.until(PATIENCE, "the open gateway", |api| async move {
        api.try_get("/v2/apps").await.filter(|r| r.status == 200)
    })
    .await;
    assert!(
        open.log_text()
            .contains("WARNING: --insecure-no-auth: THE API IS OPEN"),
        "{}",
        open.log_text()
    );

    let dev = stride_tests::Dev::start().await;
    assert!(
        dev.proc.log_text().contains("WARNING: this API is open"),
        "{}",
        dev.proc.log_text()
    );
    assert_eq!(dev.api.get("/v2/apps").await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Redis: AUTH, ACL users, TLS.

/// What a scheduler does with the store: take the lease, commit a fenced batch with an event,
/// read it back, renew, release.
async fn leader_ops_work(url: &str) -> Result<(), String> {
    use stride_store::StateStore;
    let store = stride_store::RedisStore::connect(url, "stride-sec")
        .await
        .map_err(|e| e.to_string())?;
    let candidate = stride_store::Candidate {
        scheduler_id: "s".into(),
        grpc_address: "127.0.0.1:1".into(),
        http_address: "127.0.0.1:2".into(),
    };
    let lease = store
        .try_acquire(&candidate, Duration::from_secs(30))
        .await
        .map_err(|e| format!("acquire: {e}"))?
        .ok_or("the lease is taken")?;
    let mut batch = stride_store::Batch::new();
    batch.put("apps", "/web", "{}");
    batch.event(r#"{"eventType":"probe"}"#);
    store
        .commit(&lease, batch)
        .await
        .map_err(|e| format!("commit: {e}"))?;
    let events = store
        .read_events(Some("0"), 10, Duration::from_millis(100))
        .await
        .map_err(|e| format!("read events: {e}"))?;
    if events.is_empty() {
        return Err("no event read back".into());
    }
    store
        .renew(&lease, Duration::from_secs(30))
        .await
        .map_err(|e| format!("renew: {e}"))?;
    store
        .release(&lease)
        .await
        .map_err(|e| format!("release: {e}"))
}

async fn store_works(url: &str) -> Result<(), String> {
    use stride_store::StateStore;
    let store = tokio::time::timeout(
        Duration::from_secs(10),
        stride_store::RedisStore::connect(url, "stride-sec"),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    tokio::time::timeout(
        Duration::from_secs(10),
        store.put_unfenced("probe", "k", "v".into()),
    )
    .await
    .map_err(|_| "write timed out".to_string())?
    .map_err(|e| e.to_string())?;
    match store.get("probe", "k").await.map_err(|e| e.to_string())? {
        Some(v) if v.as_ref() == b"v" => Ok(()),
        other => Err(format!("read back {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_speaks_redis_auth_acl_users_and_tls() {
    let redis = RedisServer::start_with(&[
        "--requirepass",
        "topsecret",
        "--user",
        "stride",
        "on",
        ">stride-pw",
        "~*",
        "&*",
        "+@all",
        // What docs/security.md says a narrow user needs.
        "--user",
        "narrow",
        "on",
        ">narrow-pw",
        "~stride-sec:*",
        "resetchannels",
        "-@all",
        "+@read",
        "+@write",
        "+@stream",
        "+@scripting",
        "+@connection",
        "+info",
    ]);
    let p = redis.port;
    leader_ops_work(&format!("redis://narrow:narrow-pw@127.0.0.1:{p}/"))
        .await
        .expect("the narrow ACL user does what a leader does");
    let outside = stride_store::RedisStore::connect(
        &format!("redis://narrow:narrow-pw@127.0.0.1:{p}/"),
        "elsewhere",
    )
    .await
    .expect("connects");
    {
        use stride_store::StateStore;
        assert!(
            outside.get("apps", "/web").await.is_err(),
            "the narrow user read outside its prefix"
        );
    }
    assert!(
        store_works(&format!("redis://127.0.0.1:{p}/"))
            .await
            .is_err(),
        "no password, yet served"
    );
    store_works(&format!("redis://:topsecret@127.0.0.1:{p}/"))
        .await
        .expect("requirepass");
    store_works(&format!("redis://stride:stride-pw@127.0.0.1:{p}/"))
        .await
        .expect("ACL user");
    assert!(
        store_works(&format!("redis://stride:wrong@127.0.0.1:{p}/"))
            .await
            .is_err(),
        "a wrong ACL password was served"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "redis");
    let server = pki.issue("server");
    let client = pki.issue("client");
    let tls_port = free_port().to_string();
    let tls = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &server.cert.display().to_string(),
        "--tls-key-file",
        &server.key.display().to_string(),
        "--tls-ca-cert-file",
        &pki.ca().display().to_string(),
        "--tls-auth-clients",
        "yes",
    ]);
    let ca = pki.ca().display().to_string();
    let base = format!("rediss://127.0.0.1:{tls_port}/");
    eventually(
        PATIENCE,
        "redis TLS with the CA and a client certificate",
        || {
            let url = format!(
                "{base}?tls_ca={ca}&tls_cert={}&tls_key={}",
                client.cert.display(),
                client.key.display()
            );
            async move { store_works(&url).await.ok() }
        },
    )
    .await;
    assert!(
        store_works(&format!("{base}?tls_ca={ca}")).await.is_err(),
        "served without a client certificate"
    );
    assert!(
        store_works(&base).await.is_err(),
        "an unknown server certificate was trusted"
    );
    drop(tls);
}

// ---------------------------------------------------------------------------------------------
// Mutual TLS for health checkers.

/// Starts a health-checker replica against the cluster, with its metrics on `metrics`.
fn health_checker(c: &Cluster, id: &str, metrics: u16, extra: &[String]) -> Proc {
    let mut args: Vec<String> = vec![
        "--redis".into(),
        c.redis.url(),
        "--id".into(),
        id.into(),
        "--schedulers".into(),
        format!("127.0.0.1:{}", c.scheduler_ports[0]),
        "--metrics-listen".into(),
        format!("127.0.0.1:{metrics}"),
        "--flush".into(),
        "50ms".into(),
    ];
    args.extend(extra.iter().cloned());
    Proc::spawn(id, &bin("stride-health-checker"), &args, c.dir.path())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_lets_in_only_health_checkers_with_a_certificate_from_the_cluster_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster_ca = Pki::new(dir.path(), "cluster");
    let rogue_ca = Pki::new(dir.path(), "rogue");
    let agent = cluster_ca.issue("agent");
    let checker = cluster_ca.issue("checker");
    let rogue = rogue_ca.issue("checker");
    let (mut c, _) = mtls_cluster(&cluster_ca);
    let endpoints = vec![format!("http://127.0.0.1:{}", c.scheduler_ports[0])];
    c.agents.push(Cluster::agent_proc_with(
        c.dir.path(),
        &endpoints,
        7,
        &tls_flags(&cluster_ca.ca(), &agent),
    ));
    let ca_pem = std::fs::read(cluster_ca.ca()).expect("ca");
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).expect("pem"))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("https client");
    c.api = Api::with_client(&format!("https://127.0.0.1:{}", c.gateway_port), https);
    let api = c.api.clone();
    api.until(PATIENCE, "the HTTPS API and a leader", |api| async move {
        api.try_get("/v2/leader").await.filter(|r| r.status == 200)
    })
    .await;

    // The replica with the cluster's certificate: it asks the agent to run the COMMAND check
    // over the agent's mTLS API and reports the verdict to the leader over mTLS; the task
    // becomes healthy.
    let good_port = free_port();
    let mut good = health_checker(
        &c,
        "checker-good",
        good_port,
        &tls_flags(&cluster_ca.ca(), &checker),
    );
    let app = json!({
        "id": "/tls/checked", "cmd": "sleep 1000", "cpus": 0.01, "mem": 16,
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": "true"},
            "gracePeriodSeconds": 60, "intervalSeconds": 1, "timeoutSeconds": 5,
            "delaySeconds": 0}]
    });
    let r = api.post("/v2/apps", &app.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let deadline = Instant::now() + PATIENCE;
    let healthy = loop {
        let a = api
            .try_get("/v2/apps/tls/checked")
            .await
            .map_or(Value::Null, |r| r.body["app"].clone());
        if a["tasksHealthy"] == 1 {
            break a;
        }
        if Instant::now() > deadline {
            c.dump_logs();
            panic!(
                "the task was not healthy within {PATIENCE:?}: {a:#}\n{}",
                good.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        healthy["tasks"][0]["healthCheckResults"][0]["alive"], true,
        "{healthy:#}"
    );
    assert!(
        stride_tests::metric_at(good_port, "stride_health_checker_results_accepted_total")
            .await
            .is_some_and(|n| n > 0.0),
        "the leader accepted the replica's results"
    );
    good.terminate(Duration::from_secs(10));

    // Replicas without a certificate of the cluster (none at all, or one from another CA) own
    // the check but get nothing to the leader (nor to the agent).
    for (name, flags) in [
        ("checker-plain", Vec::new()),
        ("checker-rogue", tls_flags(&cluster_ca.ca(), &rogue)),
    ] {
        let port = free_port();
        let mut bad = health_checker(&c, name, port, &flags);
        eventually(PATIENCE, &format!("{name} to own the check"), || async {
            (stride_tests::metric_at(port, "stride_health_checker_checks_owned").await? == 1.0)
                .then_some(())
        })
        .await;
        eventually(
            PATIENCE,
            &format!("{name} to have results it could not report"),
            || async {
                (stride_tests::metric_at(port, "stride_health_checker_results_dropped_total")
                    .await?
                    >= 3.0)
                    .then_some(())
            },
        )
        .await;
        assert_eq!(
            stride_tests::metric_at(port, "stride_health_checker_results_accepted_total").await,
            None,
            "{name} reported results:\n{}",
            bad.log_text()
        );
        assert_eq!(
            stride_tests::metric_at(port, "stride_health_checker_reports_total").await,
            None,
            "{name} was answered by the leader"
        );
        bad.terminate(Duration::from_secs(10));
    }
}
