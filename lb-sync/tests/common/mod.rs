//! Shared pieces of lb-sync's end-to-end tests: a store the test writes like the scheduler
//! does, tiny HTTP backends, an HTTP client, lb-sync itself on loopback ports, and the external
//! tools (`haproxy`, `dig`, `named`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stride_core::agent::AgentRecord;
use stride_core::instance::{Condition, Goal, Instance, InstanceId, Placement};
use stride_core::{events, App, PathId, Timestamp};
use stride_lb_sync::config::Config;
use stride_lb_sync::DnsListeners;
use stride_store::{collections, Batch, Candidate, Lease, MemoryStore, StateStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Logs to the test's output, filtered by `RUST_LOG` (default: warnings).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// An executable from `PATH` or the sbin directories; a clear failure when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let dirs = std::env::var("PATH").unwrap_or_default();
    for dir in dirs
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
    {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` is not installed: scripts/test installs it (Debian packages haproxy, bind9, bind9-dnsutils)");
}

/// A free port for HAProxy and named to bind, outside the kernel's ephemeral range (where
/// backends bound to port 0 and client connections take theirs), so that none of those can
/// take it between the pick and the bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919).wrapping_add(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    );
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(7_727)) % 12_000) as u16;
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn app(json: serde_json::Value) -> App {
    let mut a: App = serde_json::from_value(json).expect("a valid app");
    a.normalize();
    a.version = Some(Timestamp::now());
    a
}

/// The store as the scheduler leaves it: the test writes apps and instances in fenced batches
/// with their events, as the leader does.
pub struct World {
    pub store: Arc<MemoryStore>,
    lease: Lease,
}

impl World {
    pub async fn new() -> Self {
        let store = Arc::new(MemoryStore::new());
        let lease = store
            .try_acquire(
                &Candidate {
                    scheduler_id: "test".into(),
                    grpc_address: "127.0.0.1:1".into(),
                    http_address: "127.0.0.1:2".into(),
                },
                Duration::from_secs(3600),
            )
            .await
            .expect("store")
            .expect("lease");
        Self { store, lease }
    }

    pub fn dyn_store(&self) -> Arc<dyn StateStore> {
        self.store.clone()
    }

    pub async fn commit(&self, batch: Batch) {
        self.store.commit(&self.lease, batch).await.expect("commit");
    }

    pub async fn put_app(&self, app: &App) {
        let mut b = Batch::new();
        b.put(
            collections::APPS,
            app.id.to_string(),
            serde_json::to_vec(app).expect("json"),
        );
        b.event(events::api_post(Timestamp::now(), "127.0.0.1", "/v2/apps", app).to_json_string());
        self.commit(b).await;
    }

    pub async fn delete_app(&self, id: &str) {
        let mut b = Batch::new();
        b.delete(collections::APPS, id);
        b.event(events::app_terminated(Timestamp::now(), &PathId::parse(id)).to_json_string());
        self.commit(b).await;
    }

    pub async fn put_instance(&self, inst: &Instance) {
        let mut b = Batch::new();
        b.put(
            collections::INSTANCES,
            inst.id.0.clone(),
            serde_json::to_vec(inst).expect("json"),
        );
        b.event(events::instance_changed(Timestamp::now(), inst).to_json_string());
        self.commit(b).await;
    }

    pub async fn put_instances(&self, list: &[Instance]) {
        let mut b = Batch::new();
        for inst in list {
            b.put(
                collections::INSTANCES,
                inst.id.0.clone(),
                serde_json::to_vec(inst).expect("json"),
            );
            b.event(events::instance_changed(Timestamp::now(), inst).to_json_string());
        }
        self.commit(b).await;
    }

    pub async fn delete_instance(&self, inst: &Instance) {
        let mut b = Batch::new();
        b.delete(collections::INSTANCES, inst.id.0.clone());
        b.event(events::instance_changed(Timestamp::now(), inst).to_json_string());
        self.commit(b).await;
    }

    pub async fn put_agent(&self, id: &str, hostname: &str) {
        let rec = AgentRecord {
            agent_id: id.into(),
            hostname: hostname.into(),
            api_address: String::new(),
            cpus: 4.0,
            mem: 4096.0,
            disk: 1000.0,
            gpus: 0,
            ports: vec![(31000, 32000)],
            attributes: Vec::new(),
            region: None,
            zone: None,
            connected: true,
            registered_at: Timestamp::now(),
        };
        let mut b = Batch::new();
        b.put(
            collections::AGENTS,
            id,
            serde_json::to_vec(&rec).expect("json"),
        );
        self.commit(b).await;
    }
}

/// A running instance of `app` on `host` with the given host ports.
pub fn running(app: &str, host: &str, ports: &[u16], healthy: Option<bool>) -> Instance {
    let id = PathId::parse(app);
    let mut i = Instance::scheduled(&id, Timestamp::now(), Timestamp::now());
    i.id = InstanceId::new(&id);
    i.condition = Condition::Running;
    i.goal = Goal::Running;
    i.incarnation = 1;
    i.placement = Some(Placement {
        agent_id: format!("agent-{host}"),
        hostname: host.into(),
        attributes: Vec::new(),
    });
    i.host_ports = ports.iter().map(|p| u32::from(*p)).collect();
    i.healthy = healthy;
    i
}

/// The instance being stopped, as the scheduler marks it before the kill.
pub fn killing(inst: &Instance) -> Instance {
    let mut i = inst.clone();
    i.condition = Condition::Killing;
    i.goal = Goal::Decommissioned;
    i
}

/// A tiny HTTP server on 127.0.0.1 that answers every request with its id.
pub struct Backend {
    pub id: String,
    pub port: u16,
    stop: Option<oneshot::Sender<()>>,
}

impl Backend {
    pub async fn start(id: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, mut rx) = oneshot::channel::<()>();
        let body = id.to_string();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((mut s, _)) = r else { continue };
                        let body = body.clone();
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 4096];
                            let mut got = Vec::new();
                            loop {
                                match s.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => {
                                        got.extend_from_slice(&buf[..n]);
                                        if got.windows(4).any(|w| w == b"\r\n\r\n") {
                                            break;
                                        }
                                    }
                                }
                            }
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                                body.len(),
                                body
                            );
                            let _ = s.write_all(resp.as_bytes()).await;
                            let _ = s.shutdown().await;
                        });
                    }
                    _ = &mut rx => return,
                }
            }
        });
        Self {
            id: id.to_string(),
            port,
            stop: Some(tx),
        }
    }

    /// Stops accepting (the task's process is gone).
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP/1.1 GET on a fresh connection: (status, body).
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    let io = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&resp).into_owned();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status in {text:?}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// lb-sync's configuration for a test: everything on loopback, files in `dir`.
pub fn config(dir: &Path) -> Config {
    let mut c = Config {
        debounce: Duration::from_millis(10),
        ..Config::default()
    };
    c.haproxy.binary = binary("haproxy");
    c.haproxy.config_file = dir.join("haproxy.cfg");
    c.haproxy.master_socket = dir.join("master.sock");
    c.haproxy.admin_socket = dir.join("admin.sock");
    c.haproxy.default_bind_addr = "127.0.0.1".into();
    c.haproxy.http_bind = format!("127.0.0.1:{}", free_port());
    c.haproxy.appid_bind = format!("127.0.0.1:{}", free_port());
    c.haproxy.https_bind = format!("127.0.0.1:{}", free_port());
    c.haproxy.stats_bind = None;
    c.haproxy.hard_stop_after = Duration::from_secs(5);
    c.haproxy.min_reload_interval = Duration::from_millis(500);
    c.haproxy.extra_global = vec!["nbthread 1".into()];
    c.dns.listen = Vec::new();
    c
}

/// lb-sync running in the test's runtime; stopped (and its HAProxy with it) on `stop`.
pub struct LbSync {
    pub dns: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LbSync {
    pub async fn start(config: Config, store: Arc<dyn StateStore>, with_dns: bool) -> Self {
        logs();
        let mut listeners = DnsListeners::default();
        let mut dns = None;
        if with_dns {
            // UDP and TCP on one port: a port free for UDP may be taken for TCP; try again.
            for attempt in 0.. {
                let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
                    .await
                    .expect("udp");
                let port = udp.local_addr().expect("addr").port();
                match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                    Ok(tcp) => {
                        dns = Some(udp.local_addr().expect("addr"));
                        listeners.udp.push(udp);
                        listeners.tcp.push(tcp);
                        break;
                    }
                    Err(e) if attempt < 50 => drop(e),
                    Err(e) => panic!("no port free for both UDP and TCP: {e}"),
                }
            }
        }
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            stride_lb_sync::run_with(config, store, listeners, async {
                let _ = rx.await;
            })
            .await
            .expect("lb-sync runs");
        });
        Self {
            dns,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

impl Drop for LbSync {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// One line to a HAProxy CLI socket.
pub async fn cli(path: &Path, line: &str) -> String {
    let mut s = tokio::net::UnixStream::connect(path)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    s.write_all(format!("{line}\n").as_bytes())
        .await
        .expect("write");
    s.shutdown().await.expect("half-close");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

/// The master's reload counter (waiting for the master CLI, which comes up after the
/// first worker already serves).
pub async fn reloads(master: &Path) -> u64 {
    eventually(
        Duration::from_secs(10),
        "the master CLI answers",
        || async {
            let mut s = tokio::net::UnixStream::connect(master).await.ok()?;
            s.write_all(b"show proc\n").await.ok()?;
            s.shutdown().await.ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).await.ok()?;
            text.lines()
                .find(|l| l.contains("master"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|n| n.parse().ok())
        },
    )
    .await
}

/// Ports of the servers HAProxy has ready in `backend`.
pub async fn ready_ports(admin: &Path, backend: &str) -> Vec<u32> {
    let Ok(mut s) = tokio::net::UnixStream::connect(admin).await else {
        return Vec::new();
    };
    if s.write_all(b"show servers state\n").await.is_err() || s.shutdown().await.is_err() {
        return Vec::new();
    }
    let mut out = String::new();
    if s.read_to_string(&mut out).await.is_err() {
        return Vec::new();
    }
    let mut ports: Vec<u32> = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 19 || f[1] != backend {
                return None;
            }
            let admin: u32 = f[6].parse().ok()?;
            (admin & 0x23 == 0).then(|| f[18].parse().ok()).flatten()
        })
        .collect();
    ports.sort_unstable();
    ports
}

/// Runs `dig` and returns its standard output.
pub async fn dig(args: &[&str]) -> String {
    let out = tokio::process::Command::new(binary("dig"))
        .args(args)
        .output()
        .await
        .expect("dig runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Percentile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
