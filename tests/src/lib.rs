//! Support for Stride's end-to-end tests: find the built binaries, start them as real
//! processes on free loopback ports with their logs in a temporary directory, and drive the
//! HTTP API. Every process is killed when its handle is dropped; every wait has a deadline.
//!
//! The binaries are the workspace's own (`cargo build --bins`, which `scripts/test` runs first);
//! `STRIDE_BIN_DIR` points elsewhere.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
pub use stride_testkit::{free_port, RedisServer};

/// Where the binaries are.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STRIDE_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug")
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --bins` first (scripts/test does)",
        p.display()
    );
    p
}

/// An argon2 hash of `password` for a security file, made by the gateway's own
/// `hash-password`.
pub fn hash_password(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(bin("stride-api-gateway"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("stride-api-gateway hash-password: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{password}").unwrap_or_else(|e| panic!("hash-password stdin: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("hash-password: {e}"));
    assert!(out.status.success(), "hash-password failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A running process of ours.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[String], logs: &Path) -> Self {
        let log = logs.join(format!("{name}.log"));
        let out = File::create(&log).unwrap_or_else(|e| panic!("log file {}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Self {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// Like [`Proc::spawn`], with `configure` applied to the command before it starts (the
    /// fault tests give each process a group id of its own, which their packet filters match).
    pub fn spawn_with(
        name: &str,
        program: &Path,
        args: &[String],
        logs: &Path,
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let log = logs.join(format!("{name}.log"));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let mut command = Command::new(program);
        command
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        configure(&mut command);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Self {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, s: Signal) {
        let _ = kill(Pid::from_raw(self.pid()), s);
    }

    /// `kill -9`, and reap.
    pub fn kill9(&mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit (SIGKILL after `patience`).
    pub fn terminate(&mut self, patience: Duration) {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal(Signal::SIGCONT);
        self.kill9();
    }
}

/// True while any process of the process group `pgid` exists.
pub fn process_group_alive(pgid: i32) -> bool {
    kill(Pid::from_raw(-pgid), None).is_ok()
}

/// True while process `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Pids of processes whose environment has `MESOS_TASK_ID=<task_id>`.
pub fn pids_of_task(task_id: &str) -> Vec<i32> {
    let needle = format!("MESOS_TASK_ID={task_id}");
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) && process_alive(pid) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// An HTTP client for the Marathon API at `base` (`http://127.0.0.1:port`).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
    /// `Authorization` sent with every request.
    auth: Option<String>,
}

/// A response: status, headers we look at, and the JSON body (Null if none).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self::with_client(
            base,
            reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap_or_else(|e| panic!("http client: {e}")),
        )
    }

    /// With a client of the test's making (HTTPS with a test CA).
    pub fn with_client(base: &str, http: reqwest::Client) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http,
            auth: None,
        }
    }

    /// The same API, sending `Authorization: <header>` (`None`: nothing).
    pub fn with_auth(&self, header: Option<&str>) -> Self {
        Self {
            auth: header.map(str::to_string),
            ..self.clone()
        }
    }

    /// The same API as `user`, with HTTP Basic.
    pub fn as_user(&self, user: &str, password: &str) -> Self {
        use base64::Engine;
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.with_auth(Some(&format!("Basic {pair}")))
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some(a) => req.header("Authorization", a),
            None => req,
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = self.authorized(self.http.request(method, format!("{}{path}", self.base)));
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            text,
            headers,
        }
    }

    /// Like [`Api::call`], but `None` when the server cannot be reached.
    pub async fn try_get(&self, path: &str) -> Option<Reply> {
        let resp = self
            .authorized(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.ok()?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Some(Reply {
            status,
            body,
            text,
            headers,
        })
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None).await
    }
    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.call("POST", path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: &str) -> Reply {
        self.call("PUT", path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Reply {
        self.call("DELETE", path, None).await
    }

    /// The app's tasks (`GET /v2/apps/{id}/tasks`).
    pub async fn tasks(&self, app: &str) -> Vec<Value> {
        let r = self.get(&format!("/v2/apps{app}/tasks")).await;
        r.body["tasks"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `check` holds, polling every 100 ms, or panics after `within`.
    pub async fn until<T, F, Fut>(&self, within: Duration, what: &str, mut check: F) -> T
    where
        F: FnMut(Api) -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = check(self.clone()).await {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for: {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the app shows `running` tasks in TASK_RUNNING and no deployment.
    pub async fn until_running(&self, app: &str, running: usize, within: Duration) -> Vec<Value> {
        let path = format!("/v2/apps{app}");
        self.until(
            within,
            &format!("{app} to run {running} tasks with no deployment"),
            |api| {
                let path = path.clone();
                async move {
                    let r = api.try_get(&path).await?;
                    let a = &r.body["app"];
                    let tasks = a["tasks"].as_array()?.clone();
                    let ok = a["tasksRunning"] == running
                        && a["deployments"].as_array().is_some_and(|d| d.is_empty())
                        && tasks.len() == running
                        && tasks.iter().all(|t| t["state"] == "TASK_RUNNING");
                    ok.then_some(tasks)
                }
            },
        )
        .await
    }
}

/// Sends an HTTP GET to `http://host:port/` and tells whether anything answered 2xx.
pub async fn serves_http(host: &str, port: u64) -> bool {
    let url = format!("http://{host}:{port}/");
    match reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    {
        Ok(c) => c
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()),
        Err(_) => false,
    }
}

/// A counter or gauge from the Prometheus text a process serves at
/// `http://127.0.0.1:port/metrics`, summed over its labels; `None` when it does not answer
/// within 2 s or has not recorded the metric.
pub async fn metric_at(port: u16, name: &str) -> Option<f64> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let text = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

/// A whole Stride of separate processes against one Redis.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub redis: RedisServer,
    pub schedulers: Vec<Proc>,
    pub scheduler_ports: Vec<u16>,
    pub gateway: Proc,
    pub gateway_port: u16,
    pub agents: Vec<Proc>,
    pub api: Api,
    pub flags: Flags,
}

/// Extra flags of a cluster's processes, for clusters that are not open and plaintext.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// The gateway's security flags; empty means `--insecure-no-auth`.
    pub gateway: Vec<String>,
    pub scheduler: Vec<String>,
    pub agent: Vec<String>,
    /// The store URL the schedulers and the gateway use instead of the cluster's own Redis
    /// (a `redis+sentinel://` URL).
    pub redis_url: Option<String>,
}

impl Cluster {
    /// `schedulers` schedulers, one gateway, `agents` agents (hostname 127.0.0.1, disjoint port
    /// ranges), all against a fresh Redis. The API is open (`--insecure-no-auth`).
    pub fn start(schedulers: usize, agents: usize) -> Self {
        Self::start_with(schedulers, agents, Flags::default())
    }

    /// [`Cluster::start`] with extra flags (authentication, TLS).
    pub fn start_with(schedulers: usize, agents: usize, flags: Flags) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let redis = RedisServer::start();
        let redis_url = flags.redis_url.clone().unwrap_or_else(|| redis.url());
        let scheduler_ports: Vec<u16> = (0..schedulers).map(|_| free_port()).collect();
        let mut procs = Vec::new();
        for (i, port) in scheduler_ports.iter().enumerate() {
            procs.push(Self::scheduler_proc(
                dir.path(),
                &redis_url,
                i,
                *port,
                &flags.scheduler,
            ));
        }
        let http_port = free_port();
        let mut gateway_args = vec![
            "--listen".into(),
            format!("127.0.0.1:{http_port}"),
            "--redis".into(),
            redis_url,
            "--advertised-address".into(),
            format!("127.0.0.1:{http_port}"),
        ];
        if flags.gateway.is_empty() {
            gateway_args.push("--insecure-no-auth".into());
        } else {
            gateway_args.extend(flags.gateway.iter().cloned());
        }
        let gateway = Proc::spawn(
            "gateway",
            &bin("stride-api-gateway"),
            &gateway_args,
            dir.path(),
        );
        let endpoints: Vec<String> = scheduler_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let mut agent_procs = Vec::new();
        for i in 0..agents {
            agent_procs.push(Self::agent_proc_with(
                dir.path(),
                &endpoints,
                i,
                &flags.agent,
            ));
        }
        Self {
            dir,
            redis,
            schedulers: procs,
            scheduler_ports,
            gateway,
            gateway_port: http_port,
            agents: agent_procs,
            api: Api::new(&format!("http://127.0.0.1:{http_port}")),
            flags,
        }
    }

    fn scheduler_proc(dir: &Path, redis_url: &str, i: usize, port: u16, extra: &[String]) -> Proc {
        let mut args = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--redis".into(),
            redis_url.into(),
            "--id".into(),
            format!("scheduler-{i}"),
        ];
        args.extend(extra.iter().cloned());
        Proc::spawn(
            &format!("scheduler-{i}"),
            &bin("stride-scheduler"),
            &args,
            dir,
        )
    }

    /// Starts agent `i` (again) on its own work directory.
    pub fn agent_proc(dir: &Path, endpoints: &[String], i: usize) -> Proc {
        Self::agent_proc_with(dir, endpoints, i, &[])
    }

    /// [`Cluster::agent_proc`] with extra flags (TLS).
    pub fn agent_proc_with(dir: &Path, endpoints: &[String], i: usize, extra: &[String]) -> Proc {
        let work = dir.join(format!("agent-{i}"));
        let lo = 31000 + i * 1000;
        let mut args: Vec<String> = vec![
            "--schedulers".into(),
            endpoints.join(","),
            "--agent-id".into(),
            format!("agent-{i}"),
            "--hostname".into(),
            "127.0.0.1".into(),
            "--work-dir".into(),
            work.display().to_string(),
            "--cpus".into(),
            "8".into(),
            "--mem".into(),
            "8192".into(),
            "--ports".into(),
            format!("{lo}-{}", lo + 999),
            "--attributes".into(),
            format!("rack_id:r{i}"),
            "--api-listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().cloned());
        Proc::spawn(&format!("agent-{i}"), &bin("stride-agent"), &args, dir)
    }

    pub fn restart_agent(&mut self, i: usize) {
        let endpoints: Vec<String> = self
            .scheduler_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        self.agents[i] = Self::agent_proc_with(self.dir.path(), &endpoints, i, &self.flags.agent);
    }

    /// Which scheduler leads, by the lease in Redis (index into `schedulers`).
    pub async fn leader_index(&self) -> Option<usize> {
        let r = self.api.try_get("/v2/leader").await?;
        if r.status != 200 {
            return None;
        }
        // The gateway reports itself; ask Redis for the scheduler behind it.
        let store = stride_store_probe::leader(&self.redis.url()).await?;
        self.scheduler_ports
            .iter()
            .position(|p| store.ends_with(&format!(":{p}")))
    }

    /// Prints every process's log (on failure, for the person reading CI output).
    pub fn dump_logs(&self) {
        for p in self
            .schedulers
            .iter()
            .chain(std::iter::once(&self.gateway))
            .chain(self.agents.iter())
        {
            eprintln!("===== {} =====\n{}", p.name, p.log_text());
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        // Stop agents first, then kill what they ran, so no task outlives the test.
        for a in &mut self.agents {
            a.kill9();
        }
        kill_tasks_under(self.dir.path());
    }
}

/// Kills every process whose sandbox (`MESOS_SANDBOX`) lies under `dir`.
pub fn kill_tasks_under(dir: &Path) {
    let prefix = format!("MESOS_SANDBOX={}", dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            if env
                .split(|b| *b == 0)
                .any(|kv| kv.starts_with(prefix.as_bytes()))
            {
                let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// Reads the leader lease straight from Redis with a raw RESP `GET`, so the tests do not depend
/// on the store crate to observe it.
mod stride_store_probe {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub async fn leader(url: &str) -> Option<String> {
        let addr = url.trim_start_matches("redis://").trim_end_matches('/');
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"*2\r\n$3\r\nGET\r\n$12\r\nstride:lease\r\n")
            .await
            .ok()?;
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        // "$<len>\r\n<epoch>|<id>|<grpc>|<http>\r\n"
        let value = text.split("\r\n").nth(1)?;
        value.split('|').nth(2).map(str::to_string)
    }
}

/// `stride dev` on a free port with its own work directory; on drop it is stopped with SIGTERM
/// (it then kills its tasks) and anything left under its directory is killed too.
pub struct Dev {
    pub proc: Proc,
    pub api: Api,
    pub dir: tempfile::TempDir,
}

impl Dev {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts with extra `stride dev` flags.
    pub async fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let port = free_port();
        let mut args = vec![
            "dev".to_string(),
            "--listen".to_string(),
            format!("127.0.0.1:{port}"),
            "--work-dir".to_string(),
            dir.path().join("work").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn("stride-dev", &bin("stride"), &args, dir.path());
        let api = Api::new(&format!("http://127.0.0.1:{port}"));
        api.until(
            Duration::from_secs(30),
            "stride dev to answer /ping",
            |api| async move {
                api.try_get("/ping")
                    .await
                    .filter(|r| r.status == 200)
                    .map(|_| ())
            },
        )
        .await;
        Self { proc, api, dir }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("===== stride dev =====\n{}", self.proc.log_text());
        }
        self.proc.terminate(Duration::from_secs(10));
        kill_tasks_under(self.dir.path());
    }
}
