//! The gateway on `127.0.0.1:0` over a `MemoryStore` the test writes directly, with a fake
//! leader that records every call and answers with canned replies.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{json, Value};
use stride_api_gateway::{run_with_leader, Config, LeaderLink};
use stride_core::deployment::{Action, ActionKind, DeploymentPlan};
use stride_core::error::ApiError;
use stride_core::instance::{Condition, Instance, Placement};
use stride_core::parse::parse_app;
use stride_core::{App, PathId, Timestamp};
use stride_proto::v1::app_change::Change;
use stride_proto::v1::{
    CancelDeploymentRequest, DeployRequest, DeployResponse, KillTasksRequest, KillTasksResponse,
    QueueRequest, ResetDelayRequest, RunSpecJson,
};
use stride_store::{collections, Batch, Candidate, Lease, MemoryStore, StateStore};
use tokio::sync::oneshot;

/// Every wait in these tests ends within this.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub const DEPLOYMENT_ID: &str = "5ed4c0c5-9ff8-4a6f-a0cd-f57f59a34b43";
pub const VERSION: &str = "2021-01-01T00:00:00.000Z";
pub const ADVERTISED: &str = "gw.test:8080";

#[derive(Clone, Debug)]
pub enum Call {
    Deploy(DeployRequest),
    Kill(KillTasksRequest),
    Cancel(CancelDeploymentRequest),
    ResetDelay(ResetDelayRequest),
    Abdicate,
    Queue(QueueRequest),
}

/// Records calls; answers with the next queued error if any, else a canned success.
#[derive(Default)]
pub struct FakeLeader {
    pub calls: Mutex<Vec<Call>>,
    pub errors: Mutex<VecDeque<ApiError>>,
    pub killed_tasks: Mutex<Vec<String>>,
}

impl FakeLeader {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().clone()
    }

    pub fn fail_next(&self, e: ApiError) {
        self.errors.lock().push_back(e);
    }

    fn record(&self, c: Call) -> Result<(), ApiError> {
        self.calls.lock().push(c);
        match self.errors.lock().pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn deploys(&self) -> Vec<DeployRequest> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Deploy(d) => Some(d),
                _ => None,
            })
            .collect()
    }
}

#[async_trait]
impl LeaderLink for FakeLeader {
    async fn deploy(&self, request: DeployRequest) -> Result<DeployResponse, ApiError> {
        self.record(Call::Deploy(request.clone()))?;
        let mut apps = Vec::new();
        let mut created = false;
        for c in &request.changes {
            if let Some(Change::Create(spec)) | Some(Change::Put(spec)) = &c.change {
                created |= matches!(c.change, Some(Change::Create(_)));
                let mut v: Value = serde_json::from_str(&spec.json)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                v["version"] = json!(VERSION);
                v["versionInfo"] =
                    json!({ "lastScalingAt": VERSION, "lastConfigChangeAt": VERSION });
                apps.push(RunSpecJson {
                    json: v.to_string(),
                });
            }
        }
        Ok(DeployResponse {
            plan_json: String::new(),
            deployment_id: DEPLOYMENT_ID.into(),
            version: VERSION.into(),
            apps,
            created,
        })
    }

    async fn kill_tasks(&self, request: KillTasksRequest) -> Result<KillTasksResponse, ApiError> {
        self.record(Call::Kill(request.clone()))?;
        if request.scale {
            return Ok(KillTasksResponse {
                deployment_id: DEPLOYMENT_ID.into(),
                version: VERSION.into(),
                tasks_json: Vec::new(),
            });
        }
        Ok(KillTasksResponse {
            deployment_id: String::new(),
            version: String::new(),
            tasks_json: self.killed_tasks.lock().clone(),
        })
    }

    async fn cancel_deployment(
        &self,
        request: CancelDeploymentRequest,
    ) -> Result<DeployResponse, ApiError> {
        self.record(Call::Cancel(request))?;
        Ok(DeployResponse {
            plan_json: String::new(),
            deployment_id: "revert-1".into(),
            version: VERSION.into(),
            apps: Vec::new(),
            created: false,
        })
    }

    async fn reset_delay(&self, request: ResetDelayRequest) -> Result<(), ApiError> {
        self.record(Call::ResetDelay(request))
    }

    async fn abdicate(&self) -> Result<(), ApiError> {
        self.record(Call::Abdicate)
    }

    async fn queue(&self, request: QueueRequest) -> Result<String, ApiError> {
        self.record(Call::Queue(request))?;
        Ok(r#"{"queue":[]}"#.into())
    }
}

pub struct Harness {
    pub base: String,
    pub store: MemoryStore,
    pub lease: Lease,
    pub leader: Arc<FakeLeader>,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Harness {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        let store = MemoryStore::new();
        let lease = Self::lease(&store).await?;
        Self::start_on(store, lease, tune).await
    }

    /// The scheduler's lease in `store`, taken for the test's whole length.
    pub async fn lease(store: &MemoryStore) -> anyhow::Result<Lease> {
        store
            .try_acquire(
                &Candidate {
                    scheduler_id: "scheduler-1".into(),
                    grpc_address: "127.0.0.1:1".into(),
                    http_address: "127.0.0.1:2".into(),
                },
                Duration::from_secs(3600),
            )
            .await?
            .ok_or_else(|| anyhow!("the lease is free in a new store"))
    }

    /// A gateway over `store`, which the test writes under `lease` (another gateway's too).
    pub async fn start_on(
        store: MemoryStore,
        lease: Lease,
        tune: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let base = format!("http://{}", listener.local_addr()?);
        let mut config = Config::new(ADVERTISED);
        config.insecure_no_auth = true;
        config.workers = 1;
        tune(&mut config);
        let metrics = stride_telemetry::init_metrics(&Default::default())?;
        let leader = Arc::new(FakeLeader::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(run_with_leader(
            config,
            listener,
            Arc::new(store.clone()),
            leader.clone(),
            metrics,
            async move {
                let _ = stopped.await;
            },
        ));
        let http = reqwest::Client::builder().timeout(PATIENCE).build()?;
        let mut h = Self {
            base,
            store,
            lease,
            leader,
            http,
            stop: Some(stop),
            server: Some(server),
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(r) = h.http.get(h.url("/ping")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if h.server.as_ref().is_some_and(|s| s.is_finished()) {
                let server = h.server.take().context("server")?;
                return Err(anyhow!(
                    "the gateway stopped at start-up: {:?}",
                    server.await
                ));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(anyhow!(
                    "the gateway did not answer /ping within {PATIENCE:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(h)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn commit(&self, batch: Batch) -> anyhow::Result<()> {
        self.store
            .commit(&self.lease, batch)
            .await
            .context("commit")
    }

    pub async fn put_app(&self, app: &App) -> anyhow::Result<()> {
        let mut b = Batch::new();
        let json = app.to_json().to_string();
        b.put(collections::APPS, app.id.to_string(), json.clone());
        if let Some(v) = app.version {
            b.put(
                collections::app_versions(&app.id.to_string()),
                v.to_string(),
                json,
            );
        }
        self.commit(b).await
    }

    pub async fn put_instance(&self, i: &Instance) -> anyhow::Result<()> {
        let mut b = Batch::new();
        b.put(
            collections::INSTANCES,
            i.id.0.clone(),
            serde_json::to_string(i)?,
        );
        self.commit(b).await
    }

    pub async fn put_deployment(&self, p: &DeploymentPlan) -> anyhow::Result<()> {
        let mut b = Batch::new();
        b.put(
            collections::DEPLOYMENTS,
            p.id.clone(),
            serde_json::to_string(p)?,
        );
        self.commit(b).await
    }

    pub async fn publish(&self, event: &Value) -> anyhow::Result<()> {
        let mut b = Batch::new();
        b.event(event.to_string());
        self.commit(b).await
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(PATIENCE, server)
                .await
                .context("the gateway did not stop")???;
        }
        Ok(())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// An app as the leader would store it.
pub fn app(id: &str, json: Value) -> anyhow::Result<App> {
    let mut body = json;
    body["id"] = json!(id);
    let mut app =
        parse_app(body.to_string().as_bytes(), &PathId::root()).map_err(|e| anyhow!("{e}"))?;
    let v = Timestamp::parse(VERSION).map_err(|e| anyhow!(e))?;
    app.version = Some(v);
    app.version_info = Some(stride_core::app::VersionInfo {
        last_scaling_at: v,
        last_config_change_at: v,
    });
    Ok(app)
}

/// A launched instance of `app` on `host` in `condition`.
pub fn instance(app: &App, condition: Condition, host: &str, ports: &[u32]) -> Instance {
    let v = app.version.unwrap_or_default();
    let mut i = Instance::scheduled(&app.id, v, v);
    i.condition = condition;
    i.incarnation = 1;
    i.staged_at = Some(v);
    if condition == Condition::Running {
        i.started_at = Some(v);
    }
    i.placement = Some(Placement {
        agent_id: format!("agent-{host}"),
        hostname: host.into(),
        attributes: Vec::new(),
    });
    i.host_ports = ports.to_vec();
    i
}

/// A started one-step plan scaling `app`.
pub fn scaling_plan(id: &str, app: &App) -> DeploymentPlan {
    DeploymentPlan {
        id: id.into(),
        version: app.version.unwrap_or_default(),
        steps: vec![vec![Action::new(ActionKind::ScaleApplication, &app.id)]],
        original: Default::default(),
        target: [(app.id.clone(), app.clone())].into(),
        current_step: Some(0),
    }
}

/// An SSE frame as a client sees it.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// Reads SSE frames from a streaming response.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    pub async fn connect(
        h: &Harness,
        path: &str,
        last_event_id: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut req = h
            .http
            .get(h.url(path))
            .header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        // The client-wide timeout would end a long stream; each read has its own deadline.
        let response = req.timeout(Duration::from_secs(3600)).send().await?;
        anyhow::ensure!(response.status() == 200, "SSE status {}", response.status());
        let ct = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        anyhow::ensure!(ct.starts_with("text/event-stream"), "SSE content type {ct}");
        Ok(Self {
            response,
            buffer: String::new(),
        })
    }

    /// The next frame, skipping heartbeats, within `PATIENCE`.
    pub async fn next(&mut self) -> anyhow::Result<Frame> {
        tokio::time::timeout(PATIENCE, self.next_inner())
            .await
            .context("no SSE frame within the deadline")?
    }

    async fn next_inner(&mut self) -> anyhow::Result<Frame> {
        loop {
            let trimmed = self.buffer.trim_start_matches("\r\n").to_string();
            self.buffer = trimmed;
            if let Some(end) = self.buffer.find("\r\n\r\n") {
                let frame: String = self.buffer.drain(..end + 4).collect();
                let mut id = None;
                let mut event = String::new();
                let mut data = Value::Null;
                for line in frame.split("\r\n").filter(|l| !l.is_empty()) {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(v)?;
                    } else {
                        anyhow::bail!("unexpected SSE line {line:?}");
                    }
                }
                return Ok(Frame { id, event, data });
            }
            match self.response.chunk().await? {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes)?),
                None => anyhow::bail!("the SSE stream ended"),
            }
        }
    }

    /// True when nothing but heartbeats arrives for `quiet`.
    pub async fn stays_quiet(&mut self, quiet: Duration) -> bool {
        tokio::time::timeout(quiet, self.next_inner())
            .await
            .is_err()
    }
}
