//! Test support: a fake scheduler (a real tonic `AgentLink` server on 127.0.0.1:0 whose sessions
//! the test drives), a handle on an agent running in-process, and `/proc` helpers to check what
//! really runs. Nothing on the process side is mocked.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stride_agent::{AgentError, Config};
use stride_proto::v1::agent_link_server::{AgentLink, AgentLinkServer};
use stride_proto::v1::{
    agent_message, scheduler_message::Msg, AgentMessage, Register, Registered, Resources,
    SchedulerMessage, TaskSpec, TaskState, TaskStatus,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

/// The patience of every wait.
pub const PATIENCE: Duration = Duration::from_secs(15);

type Outbound = mpsc::UnboundedSender<Result<SchedulerMessage, Status>>;

/// A scheduler as far as the agent can tell: it accepts sessions and hands them to the test.
pub struct FakeScheduler {
    pub addr: SocketAddr,
    sessions: mpsc::UnboundedReceiver<FakeSession>,
    server: JoinHandle<()>,
}

struct Link {
    sessions: mpsc::UnboundedSender<FakeSession>,
}

#[tonic::async_trait]
impl AgentLink for Link {
    type SessionStream = UnboundedReceiverStream<Result<SchedulerMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let session = FakeSession {
            inbound: request.into_inner(),
            outbound: Some(tx),
            epoch: 0,
            pending: Vec::new(),
        };
        self.sessions
            .send(session)
            .map_err(|_| Status::unavailable("test is over"))?;
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

impl FakeScheduler {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, sessions) = mpsc::unbounded_channel();
        let service = AgentLinkServer::new(Link { sessions: tx });
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Ok(Self {
            addr,
            sessions,
            server,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next session an agent opens.
    pub async fn session(&mut self) -> FakeSession {
        match tokio::time::timeout(PATIENCE, self.sessions.recv()).await {
            Ok(Some(s)) => s,
            Ok(None) => panic!("fake scheduler stopped"),
            Err(_) => panic!("no agent session within {PATIENCE:?}"),
        }
    }
}

impl Drop for FakeScheduler {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One agent session, seen from the scheduler's side.
pub struct FakeSession {
    inbound: Streaming<AgentMessage>,
    outbound: Option<Outbound>,
    /// Epoch stamped on commands sent with [`FakeSession::command`].
    pub epoch: u64,
    /// Statuses received but not waited for yet.
    pending: Vec<TaskStatus>,
}

impl FakeSession {
    /// The next message from the agent; `None` when the agent closed the stream.
    pub async fn recv(&mut self) -> Option<AgentMessage> {
        match tokio::time::timeout(PATIENCE, self.inbound.message()).await {
            Ok(Ok(m)) => m,
            Ok(Err(_)) => None,
            Err(_) => panic!("no message from the agent within {PATIENCE:?}"),
        }
    }

    /// The agent's first message, which must be `Register`.
    pub async fn register(&mut self) -> Register {
        match self.recv().await.and_then(|m| m.msg) {
            Some(agent_message::Msg::Register(r)) => r,
            other => panic!("expected Register first, got {other:?}"),
        }
    }

    pub fn send(&self, msg: Msg, epoch: u64) {
        let outbound = self.outbound.as_ref().expect("session already closed");
        outbound
            .send(Ok(SchedulerMessage {
                msg: Some(msg),
                epoch,
            }))
            .expect("agent went away");
    }

    /// Sends a command stamped with the session's epoch.
    pub fn command(&self, msg: Msg) {
        self.send(msg, self.epoch);
    }

    /// Accepts the registration as leader of `epoch`.
    pub fn registered(&mut self, agent_id: &str, epoch: u64, heartbeat_ms: u32) {
        self.epoch = epoch;
        let msg = Msg::Registered(Registered {
            agent_id: agent_id.into(),
            epoch,
            heartbeat_interval_ms: heartbeat_ms,
        });
        self.send(msg, epoch);
    }

    /// Waits for a status of `task_id` in `state`. Statuses of other tasks or states are kept
    /// for later waits (the agent may report several tasks in any order); heartbeats are skipped.
    pub async fn status(&mut self, task_id: &str, state: TaskState) -> TaskStatus {
        let wanted = |s: &TaskStatus| s.task_id == task_id && s.state() == state;
        if let Some(i) = self.pending.iter().position(wanted) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            match self.recv().await.and_then(|m| m.msg) {
                Some(agent_message::Msg::Status(s)) if wanted(&s) => return s,
                Some(agent_message::Msg::Status(s)) => self.pending.push(s),
                Some(_) => {}
                None => panic!(
                    "stream ended while waiting for {task_id} {state:?}; saw {:?}",
                    self.pending
                ),
            }
        }
        panic!(
            "no {state:?} for {task_id} within {PATIENCE:?}; saw {:?}",
            self.pending
        )
    }

    /// Ends the session from the scheduler's side.
    pub fn close(&mut self) {
        self.outbound = None;
    }
}

/// An agent running in this process.
pub struct RunningAgent {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), AgentError>>,
}

impl RunningAgent {
    pub fn start(config: Config) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(stride_agent::run(config, async move {
            let _ = stopped.await;
        }));
        Self {
            stop: Some(stop),
            handle,
        }
    }

    /// Resolves the agent's shutdown future and waits for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(PATIENCE, &mut self.handle).await {
            Ok(joined) => Ok(joined??),
            Err(_) => anyhow::bail!("agent did not stop within {PATIENCE:?}"),
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// A work directory that kills every task it recorded when dropped, so a failing test leaves no
/// `sleep 1000` behind.
pub struct WorkDir {
    pub dir: tempfile::TempDir,
}

impl WorkDir {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn sandbox(&self, task_id: &str) -> PathBuf {
        self.path().join("sandboxes").join(task_id)
    }

    /// Every task record in the agent's journal, replayed: the last `put` of a task wins, a
    /// `forget` drops it.
    pub fn records(&self) -> BTreeMap<String, serde_json::Value> {
        let mut table = BTreeMap::new();
        let text = std::fs::read_to_string(self.path().join("tasks.journal")).unwrap_or_default();
        for line in text.lines() {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let Some(id) = entry["forget"].as_str() {
                table.remove(id);
            } else if let Some(id) = entry["put"]["spec"]["task_id"].as_str() {
                table.insert(id.to_string(), entry["put"].clone());
            }
        }
        table
    }

    /// The record the agent keeps of a task, if it keeps one.
    pub fn record(&self, task_id: &str) -> Option<serde_json::Value> {
        self.records().remove(task_id)
    }

    /// The pid the agent recorded for a task.
    pub fn pid(&self, task_id: &str) -> anyhow::Result<i32> {
        let record = self
            .record(task_id)
            .ok_or_else(|| anyhow::anyhow!("no record of {task_id}"))?;
        record["pid"]
            .as_i64()
            .map(|p| p as i32)
            .ok_or_else(|| anyhow::anyhow!("no pid in {record}"))
    }

    /// The state the agent recorded for a task.
    pub fn recorded_state(&self, task_id: &str) -> Option<String> {
        let record = self.record(task_id)?;
        record["status"]["state"].as_str().map(String::from)
    }

    /// A configuration for an agent on this directory with fixed resources.
    pub fn config(&self, schedulers: Vec<String>) -> Config {
        let mut config = Config::for_dev(self.path(), schedulers);
        config.hostname = Some("127.0.0.1".into());
        config.cpus = Some(2.0);
        config.mem = Some(1024.0);
        config.disk = Some(2048.0);
        config.ports = "31000-31099".parse().expect("port range");
        config.attributes = "rack_id:r1;zone:a".parse().expect("attributes");
        config
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        for record in self.records().into_values() {
            let pid = record["pid"].as_i64();
            if let Some(pid) = pid.map(|p| p as i32).filter(|p| *p > 1) {
                if process_group(pid) == Some(pid) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// `(state, pgrp)` of a process from `/proc/<pid>/stat`.
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(2)?.parse().ok()?,
    ))
}

fn process_group(pid: i32) -> Option<i32> {
    stat(pid).map(|(_, pgrp)| pgrp)
}

/// Whether `pid` is a live process (zombies, which only wait to be reaped, are not).
pub fn is_alive(pid: i32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z')
}

/// Live (non-zombie) processes in process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z'))
        .collect()
}

/// Polls `check` every 50 ms until it holds, failing after [`PATIENCE`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A shell task of app `/test/app`.
pub fn shell_task(task_id: &str, cmd: &str) -> TaskSpec {
    TaskSpec {
        task_id: task_id.into(),
        app_id: "/test/app".into(),
        app_version: "2024-05-01T10:00:00.000Z".into(),
        cmd: cmd.into(),
        resources: Some(Resources {
            cpus: 0.5,
            mem: 64.0,
            disk: 0.0,
            gpus: 0,
            ports: Vec::new(),
        }),
        ..TaskSpec::default()
    }
}

pub fn launch(tasks: Vec<TaskSpec>) -> Msg {
    Msg::Launch(stride_proto::v1::Launch { tasks })
}

pub fn kill(task_id: &str, grace_period_ms: u32) -> Msg {
    Msg::Kill(stride_proto::v1::Kill {
        task_id: task_id.into(),
        grace_period_ms,
    })
}

/// A fake scheduler, an agent registered with it at epoch 1, and the session.
pub struct Connected {
    pub work: WorkDir,
    pub scheduler: FakeScheduler,
    pub agent: RunningAgent,
    pub session: FakeSession,
    pub register: Register,
}

pub async fn connected() -> anyhow::Result<Connected> {
    let work = WorkDir::new()?;
    let mut scheduler = FakeScheduler::start().await?;
    let agent = RunningAgent::start(work.config(vec![scheduler.url()]));
    let mut session = scheduler.session().await;
    let register = session.register().await;
    session.registered(&register.agent_id, 1, 1000);
    Ok(Connected {
        work,
        scheduler,
        agent,
        session,
        register,
    })
}

// ---------------------------------------------------------------------------------------------
// The agent's own API, Docker, and a file server for the fetcher
// ---------------------------------------------------------------------------------------------

/// A client of the agent's `AgentApi`, at the address it registered with.
pub async fn agent_api(
    register: &Register,
) -> anyhow::Result<stride_proto::v1::agent_api_client::AgentApiClient<tonic::transport::Channel>> {
    anyhow::ensure!(
        !register.api_address.is_empty(),
        "the agent registered without an API address"
    );
    let url = format!("http://{}", register.api_address);
    Ok(tokio::time::timeout(
        PATIENCE,
        stride_proto::v1::agent_api_client::AgentApiClient::connect(url),
    )
    .await??)
}

/// The tiny image Docker tests run: Debian's static busybox and a few applet links.
pub const TEST_IMAGE: &str = "stride-test-busybox:latest";

/// Whether Docker answers `docker info`; if not, says why the test is skipped.
pub fn docker_available(test: &str) -> bool {
    match std::process::Command::new("docker").arg("info").output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "SKIPPED {test}: `docker info` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: cannot run `docker info`: {e}");
            false
        }
    }
}

/// Runs `docker <args>`; its stdout, or an error with its stderr.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("docker").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Ids of the running containers of a task (`docker ps` by the `stride.task_id` label).
pub fn running_containers(task_id: &str) -> anyhow::Result<Vec<String>> {
    let out = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=stride.task_id={task_id}"),
    ])?;
    Ok(out.lines().map(String::from).collect())
}

/// Builds [`TEST_IMAGE`] (see `stride_testkit::ensure_test_image`).
pub fn ensure_test_image() -> anyhow::Result<()> {
    stride_testkit::ensure_test_image(TEST_IMAGE).map_err(|e| anyhow::anyhow!(e))
}

/// A Docker task of app `/test/docker` running `cmd` in [`TEST_IMAGE`], with `container` merged
/// into its container definition.
pub fn docker_task(task_id: &str, cmd: &str, container: serde_json::Value) -> TaskSpec {
    let mut definition = serde_json::json!({
        "type": "DOCKER",
        "docker": {"image": TEST_IMAGE},
    });
    if let (Some(base), Some(extra)) = (definition.as_object_mut(), container.as_object()) {
        for (k, v) in extra {
            if k == "docker" {
                if let (Some(d), Some(extra)) = (base["docker"].as_object_mut(), v.as_object()) {
                    d.extend(extra.clone());
                }
            } else {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    let mut task = shell_task(task_id, cmd);
    task.app_id = "/test/docker".into();
    task.container_json = definition.to_string();
    task.network_mode = "host".into();
    task
}

/// Removes every container of this work directory's agent when dropped, so that a failing test
/// leaves nothing running.
pub struct ContainerSweeper {
    pub agent_id: String,
}

impl Drop for ContainerSweeper {
    fn drop(&mut self) {
        if let Ok(ids) = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=stride.agent_id={}", self.agent_id),
        ]) {
            for id in ids.lines() {
                let _ = docker(&["rm", "-f", id]);
            }
        }
    }
}

/// A free TCP port on this machine (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("0.0.0.0:0")?;
    Ok(listener.local_addr()?.port())
}

#[allow(unused_imports)]
pub use stride_testkit::has_interpreter;

/// A tiny HTTP/1.1 file server on 127.0.0.1:0 that counts requests per path.
pub struct FileServer {
    pub addr: SocketAddr,
    hits: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    server: JoinHandle<()>,
}

impl FileServer {
    pub async fn start(files: Vec<(&str, Vec<u8>)>) -> anyhow::Result<Self> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let files: std::sync::Arc<std::collections::HashMap<String, Vec<u8>>> =
            std::sync::Arc::new(files.into_iter().map(|(p, b)| (p.to_string(), b)).collect());
        let hits = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let counted = hits.clone();
        let server = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (files, hits) = (files.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request);
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                    *hits
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(path.clone())
                        .or_default() += 1;
                    let (status, body) = match files.get(&path) {
                        Some(b) => ("200 OK", b.clone()),
                        None => ("404 Not Found", b"not found".to_vec()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(&body).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Ok(Self { addr, hits, server })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A fetch entry.
pub fn fetch(
    uri: &str,
    extract: bool,
    executable: bool,
    cache: bool,
) -> stride_proto::v1::FetchUri {
    stride_proto::v1::FetchUri {
        uri: uri.into(),
        extract,
        executable,
        cache,
        dest_path: String::new(),
    }
}
