//! The fault tests' machinery: a whole Stride of real processes on loopback (a restartable Redis
//! with its append-only file, schedulers, a gateway, agents, health checkers, lb-sync with its
//! HAProxy), each process under a group id of its own so that a packet filter can cut exactly
//! that process off, and the recovery figures the tests print.
//!
//! Why processes on the host and not containers: see docs/operations.md, "How the faults are
//! tested". In short, a cluster starts in about a second, every process is signalled and
//! inspected directly (pids of tasks, logs), and a partition is two iptables rules.
//!
//! Partitions: every packet a process sends passes the OUTPUT chain with the process's group id
//! on its socket. A rule there puts a connection mark on each connection the process takes part
//! in (`CONNMARK`), and a rule in INPUT drops every packet of marked connections, in both
//! directions. Nothing is refused: packets vanish, as on a cut cable, and TCP finds out by its
//! own timeouts. Healing deletes the two rules; the marks left on connections then match nothing.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use stride_tests::{bin, kill_tasks_under, Api, Proc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// Ports and group ids

/// A port on 127.0.0.1 below the kernel's ephemeral range (32768 and up here), free now. A
/// process restarted on it (Redis, a scheduler) finds it free again: no client connection takes
/// a port from this range behind our back.
pub fn quiet_port() -> u16 {
    quiet_block(1)
}

/// `n` consecutive such ports (an agent's range for its tasks).
pub fn quiet_block(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..2000 {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        // 12000..19999: below the agents' default 31000 and other tests' 20000+ blocks.
        let slots = 8000 / u32::from(n.max(1)).max(1);
        let lo = 12_000 + (seed.wrapping_add(k.wrapping_mul(7_919)) % slots) as u16 * n;
        if (lo..lo + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return lo;
        }
    }
    panic!("no {n} free ports in 12000-19999");
}

/// Runs the command under group `gid`, which the packet filter matches. Only root may (and only
/// root can have a packet filter): for anyone else the process keeps the caller's group, and the
/// partition tests skip.
fn in_group(c: &mut Command, gid: u32) -> &mut Command {
    if nix::unistd::Uid::effective().is_root() {
        c.gid(gid);
    }
    c
}

/// Group ids for this test process's children: 400 of them from a base no other test process
/// of this machine uses at the same time.
fn gid_base() -> u32 {
    41_000 + (std::process::id() % 50) * 400
}

// ---------------------------------------------------------------------------------------------
// The packet filter

/// iptables chains of this test process, hooked into INPUT and OUTPUT; removed on drop.
pub struct Firewall {
    out: String,
    inp: String,
    next_mark: u32,
    /// Rules in place, by the cut's name: (chain, rule) pairs to delete on heal.
    cuts: BTreeMap<String, Vec<(String, Vec<String>)>>,
}

fn iptables(args: &[&str]) -> Result<(), String> {
    let out = Command::new("iptables")
        .args(["-w", "5"])
        .args(args)
        .output()
        .map_err(|e| format!("iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Firewall {
    /// The chains, or why there can be none here (not root, no iptables, no owner match).
    pub fn new() -> Result<Self, String> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err("partitions need root (iptables); this test runs as another user".into());
        }
        remove_stale_chains();
        let pid = std::process::id();
        let me = Self {
            out: format!("STRIDE-F{pid}-O"),
            inp: format!("STRIDE-F{pid}-I"),
            next_mark: 0x5f00_0000 + (pid % 0xffff) * 0x100,
            cuts: BTreeMap::new(),
        };
        iptables(&["-N", &me.out])?;
        iptables(&["-N", &me.inp])?;
        iptables(&["-I", "OUTPUT", "1", "-j", &me.out])?;
        iptables(&["-I", "INPUT", "1", "-j", &me.inp])?;
        // The owner match is what everything rests on; prove it loads.
        let probe = ["-m", "owner", "--gid-owner", "1", "-j", "RETURN"];
        iptables(&[&["-A", me.out.as_str()][..], &probe[..]].concat())?;
        iptables(&[&["-D", me.out.as_str()][..], &probe[..]].concat())?;
        Ok(me)
    }

    /// Cuts the process of group `gid` (and what it runs) off: from everything, or only from
    /// the listed TCP ports (connections it opens to them).
    pub fn cut(&mut self, name: &str, gid: u32, ports: &[u16]) {
        let mark = format!("{:#x}", self.next_mark);
        self.next_mark += 1;
        let mut mark_rule: Vec<String> = vec![
            "-m".into(),
            "owner".into(),
            "--gid-owner".into(),
            gid.to_string(),
        ];
        if !ports.is_empty() {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            mark_rule.extend(["-p", "tcp", "-m", "multiport", "--dports"].map(String::from));
            mark_rule.push(list.join(","));
        }
        mark_rule.extend(["-j", "CONNMARK", "--set-mark"].map(String::from));
        mark_rule.push(mark.clone());
        let drop_rule: Vec<String> = vec![
            "-m".into(),
            "connmark".into(),
            "--mark".into(),
            mark,
            "-j".into(),
            "DROP".into(),
        ];
        let rules = vec![(self.out.clone(), mark_rule), (self.inp.clone(), drop_rule)];
        for (chain, rule) in &rules {
            let mut args = vec!["-A", chain.as_str()];
            args.extend(rule.iter().map(String::as_str));
            iptables(&args).unwrap_or_else(|e| panic!("cut {name}: {e}"));
        }
        self.cuts.insert(name.to_string(), rules);
    }

    /// Undoes [`Firewall::cut`].
    pub fn heal(&mut self, name: &str) {
        for (chain, rule) in self.cuts.remove(name).unwrap_or_default() {
            let mut args = vec!["-D", chain.as_str()];
            args.extend(rule.iter().map(String::as_str));
            iptables(&args).unwrap_or_else(|e| panic!("heal {name}: {e}"));
        }
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = iptables(&["-D", "OUTPUT", "-j", &self.out]);
        let _ = iptables(&["-D", "INPUT", "-j", &self.inp]);
        for c in [&self.out, &self.inp] {
            let _ = iptables(&["-F", c]);
            let _ = iptables(&["-X", c]);
        }
    }
}

/// Chains of fault-test processes that died without cleaning up (killed by a timeout).
fn remove_stale_chains() {
    let Ok(out) = Command::new("iptables").args(["-w", "5", "-S"]).output() else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let Some(chain) = line.strip_prefix("-N ") else {
            continue;
        };
        let Some(pid) = chain
            .strip_prefix("STRIDE-F")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if stride_tests::process_alive(pid) {
            continue;
        }
        for hook in ["OUTPUT", "INPUT"] {
            let _ = iptables(&["-D", hook, "-j", chain]);
        }
        let _ = iptables(&["-F", chain]);
        let _ = iptables(&["-X", chain]);
    }
}

// ---------------------------------------------------------------------------------------------
// Redis

/// A `redis-server` with its append-only file on, restartable on the same port and directory.
pub struct Redis {
    pub port: u16,
    pub dir: PathBuf,
    pub proc: Option<Proc>,
    logs: PathBuf,
    starts: u32,
}

impl Redis {
    pub fn start(logs: &Path) -> Self {
        let dir = logs.join("redis");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("redis dir: {e}"));
        let mut r = Self {
            port: quiet_port(),
            dir,
            proc: None,
            logs: logs.to_path_buf(),
            starts: 0,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `kill -9`: nothing is flushed beyond what the append-only file already has.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// Starts it (again) on the same port and directory, and waits until it answers PING.
    pub fn restart(&mut self) {
        self.kill9();
        self.starts += 1;
        let args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
            "--dir",
            &self.dir.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = Proc::spawn(
            &format!("redis-{}", self.starts),
            Path::new("redis-server"),
            &args,
            &self.logs,
        );
        self.proc = Some(p);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if resp_sync(self.port, &["PING"]).is_some_and(|r| r.contains("PONG")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer after a restart");
    }
}

/// One RESP command, answer as text (blocking, 2 s deadline); `None` when Redis does not answer.
pub fn resp_sync(port: u16, args: &[&str]) -> Option<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(&resp_encode(args)).ok()?;
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).to_string())
}

fn resp_encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
    }
    out
}

/// The lease as Redis holds it: (epoch, scheduler id), or `None` when nobody holds it or Redis
/// does not answer within 1 s.
pub async fn lease(port: u16) -> Option<(u64, String)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(&resp_encode(&["GET", "stride:lease"]))
            .await
            .ok()?;
        let mut buf = vec![0u8; 1024];
        let n = s.read(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        // "$<len>\r\n<epoch>|<id>|<grpc>|<http>\r\n", or "$-1\r\n"
        let value = text.split("\r\n").nth(1)?;
        let mut parts = value.split('|');
        let epoch = parts.next()?.parse().ok()?;
        let id = parts.next()?.to_string();
        Some((epoch, id))
    };
    tokio::time::timeout(Duration::from_secs(1), fut)
        .await
        .ok()
        .flatten()
}

// ---------------------------------------------------------------------------------------------
// The stack

/// What to start.
#[derive(Clone)]
pub struct Spec {
    pub schedulers: usize,
    pub agents: usize,
    pub checkers: usize,
    pub lb_sync: bool,
    /// Extra flags for every scheduler.
    pub scheduler_flags: Vec<String>,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            schedulers: 2,
            agents: 2,
            checkers: 0,
            lb_sync: false,
            scheduler_flags: Vec::new(),
        }
    }
}

/// lb-sync's HAProxy and DNS addresses.
pub struct Lb {
    pub proc: Proc,
    pub http_port: u16,
    pub dns_port: u16,
    pub master_socket: PathBuf,
}

/// A whole Stride of real processes on 127.0.0.1. Dropping it kills every process and task.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub spec: Spec,
    pub redis: Redis,
    pub schedulers: Vec<Proc>,
    pub scheduler_ports: Vec<u16>,
    pub gateway: Proc,
    pub gateway_port: u16,
    pub agents: Vec<Proc>,
    agent_ports: Vec<(u16, u16)>,
    pub checkers: BTreeMap<usize, Proc>,
    pub checker_metrics: BTreeMap<usize, u16>,
    pub lb: Option<Lb>,
    pub api: Api,
}

pub const SCHEDULER_GID: u32 = 0;
pub const GATEWAY_GID: u32 = 10;
pub const AGENT_GID: u32 = 20;
pub const CHECKER_GID: u32 = 40;
pub const LB_GID: u32 = 60;

impl Stack {
    pub async fn start(spec: Spec) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let redis = Redis::start(dir.path());
        let scheduler_ports: Vec<u16> = (0..spec.schedulers).map(|_| quiet_port()).collect();
        let gateway_port = quiet_port();
        let gateway = Proc::spawn_with(
            "gateway",
            &bin("stride-api-gateway"),
            &[
                "--listen".into(),
                format!("127.0.0.1:{gateway_port}"),
                "--redis".into(),
                redis.url(),
                "--advertised-address".into(),
                format!("127.0.0.1:{gateway_port}"),
                "--insecure-no-auth".into(),
            ],
            dir.path(),
            |c| {
                in_group(c, gid_base() + GATEWAY_GID);
            },
        );
        let mut s = Self {
            api: Api::new(&format!("http://127.0.0.1:{gateway_port}")),
            dir,
            spec: spec.clone(),
            redis,
            schedulers: Vec::new(),
            scheduler_ports,
            gateway,
            gateway_port,
            agents: Vec::new(),
            agent_ports: Vec::new(),
            checkers: BTreeMap::new(),
            checker_metrics: BTreeMap::new(),
            lb: None,
        };
        for i in 0..spec.schedulers {
            let p = s.scheduler_proc(i);
            s.schedulers.push(p);
        }
        for i in 0..spec.agents {
            s.agent_ports.push((quiet_block(100), quiet_port()));
            let p = s.agent_proc(i);
            s.agents.push(p);
        }
        for i in 0..spec.checkers {
            s.add_checker(i);
        }
        if spec.lb_sync {
            s.start_lb();
        }
        s.leader_within(Duration::from_secs(30)).await;
        s.api
            .until(
                Duration::from_secs(30),
                "the gateway to answer /ping",
                |api| async move { (api.try_get("/ping").await?.status == 200).then_some(()) },
            )
            .await;
        s
    }

    pub fn gid(&self, offset: u32) -> u32 {
        gid_base() + offset
    }

    fn scheduler_proc(&self, i: usize) -> Proc {
        let port = self.scheduler_ports[i];
        let mut args = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--redis".into(),
            self.redis.url(),
            "--id".into(),
            format!("scheduler-{i}"),
        ];
        args.extend(self.spec.scheduler_flags.iter().cloned());
        let gid = self.gid(SCHEDULER_GID + i as u32);
        Proc::spawn_with(
            &format!("scheduler-{i}"),
            &bin("stride-scheduler"),
            &args,
            self.dir.path(),
            |c| {
                in_group(c, gid);
            },
        )
    }

    /// Starts scheduler `i` again (after a kill), as a standby.
    pub fn restart_scheduler(&mut self, i: usize) {
        self.schedulers[i].kill9();
        self.schedulers[i] = self.scheduler_proc(i);
    }

    pub fn scheduler_endpoints(&self) -> Vec<String> {
        self.scheduler_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect()
    }

    fn agent_proc(&self, i: usize) -> Proc {
        let (lo, api) = self.agent_ports[i];
        let work = self.dir.path().join(format!("agent-{i}"));
        let gid = self.gid(AGENT_GID + i as u32);
        Proc::spawn_with(
            &format!("agent-{i}"),
            &bin("stride-agent"),
            &[
                "--schedulers".into(),
                self.scheduler_endpoints().join(","),
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
                format!("{lo}-{}", lo + 99),
                "--attributes".into(),
                format!("rack_id:r{i}"),
                "--api-listen".into(),
                format!("127.0.0.1:{api}"),
                "--cgroups".into(),
                "false".into(),
            ],
            self.dir.path(),
            |c| {
                in_group(c, gid);
            },
        )
    }

    pub fn restart_agent(&mut self, i: usize) {
        self.agents[i].kill9();
        self.agents[i] = self.agent_proc(i);
    }

    /// Starts health-checker replica `i`.
    pub fn add_checker(&mut self, i: usize) {
        let port = quiet_port();
        let gid = self.gid(CHECKER_GID + i as u32);
        let schedulers: Vec<String> = self
            .scheduler_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let p = Proc::spawn_with(
            &format!("health-checker-{i}"),
            &bin("stride-health-checker"),
            &[
                "--redis".into(),
                self.redis.url(),
                "--id".into(),
                checker_id(i),
                "--schedulers".into(),
                schedulers.join(","),
                "--metrics-listen".into(),
                format!("127.0.0.1:{port}"),
                "--flush".into(),
                "50ms".into(),
            ],
            self.dir.path(),
            |c| {
                in_group(c, gid);
            },
        );
        self.checkers.insert(i, p);
        self.checker_metrics.insert(i, port);
    }

    /// A gauge or counter of checker `i`'s metrics (summed over labels), if it answers.
    pub async fn checker_metric(&self, i: usize, name: &str) -> Option<f64> {
        stride_tests::metric_at(*self.checker_metrics.get(&i)?, name).await
    }

    fn start_lb(&mut self) {
        let http_port = quiet_port();
        let dns_port = quiet_port();
        let dir = self.dir.path().join("lb");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("lb dir: {e}"));
        let master_socket = dir.join("master.sock");
        // Everything on loopback ports of ours; HAProxy's other frontends off.
        let config = serde_json::json!({
            "debounce": "20ms",
            "haproxy": {
                "config_file": dir.join("haproxy.cfg"),
                "master_socket": master_socket,
                "admin_socket": dir.join("admin.sock"),
                "http_bind": format!("127.0.0.1:{http_port}"),
                "https_bind": format!("127.0.0.1:{}", quiet_port()),
                "appid_bind": format!("127.0.0.1:{}", quiet_port()),
                "default_bind_addr": "127.0.0.1",
                "stats_bind": null,
                "hard_stop_after": "5s",
                "min_reload_interval": "500ms",
                "extra_global": ["nbthread 1", "log stderr format raw local0"],
                "extra_defaults": ["option httplog"],
            },
            "dns": { "listen": [format!("127.0.0.1:{dns_port}")] },
        });
        let path = dir.join("lb-sync.json");
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&config).unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("lb-sync.json: {e}"));
        let gid = self.gid(LB_GID);
        let proc = Proc::spawn_with(
            "lb-sync",
            &bin("stride-lb-sync"),
            &[
                "--redis".into(),
                self.redis.url(),
                "--config".into(),
                path.display().to_string(),
            ],
            self.dir.path(),
            |c| {
                // HAProxy's own log (one line per request) is lb-sync's `haproxy` debug target.
                in_group(c, gid).env("RUST_LOG", "info,haproxy=debug");
            },
        );
        self.lb = Some(Lb {
            proc,
            http_port,
            dns_port,
            master_socket,
        });
    }

    /// The leader by the lease in Redis: (scheduler index, epoch).
    pub async fn leader(&self) -> Option<(usize, u64)> {
        let (epoch, id) = lease(self.redis.port).await?;
        let i = id.strip_prefix("scheduler-")?.parse().ok()?;
        Some((i, epoch))
    }

    pub async fn leader_within(&self, within: Duration) -> (usize, u64) {
        self.api
            .until(within, "a scheduler to lead", |_| async {
                self.leader().await
            })
            .await
    }

    /// Every process's log, for a failing test's output.
    pub fn dump_logs(&self) {
        let mut all: Vec<&Proc> = self.schedulers.iter().collect();
        all.push(&self.gateway);
        all.extend(self.agents.iter());
        all.extend(self.checkers.values());
        if let Some(lb) = &self.lb {
            all.push(&lb.proc);
        }
        for p in all {
            let text = p.log_text();
            // The end of each: what happened last is what explains a failure.
            let tail: Vec<&str> = text.lines().rev().take(150).collect();
            eprintln!("===== {} (last {} lines) =====", p.name, tail.len());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for a in &mut self.agents {
            a.kill9();
        }
        kill_tasks_under(self.dir.path());
        if let Some(lb) = &mut self.lb {
            // lb-sync's HAProxy is its child; SIGTERM lets lb-sync stop it.
            lb.proc.terminate(Duration::from_secs(5));
        }
    }
}

pub fn checker_id(i: usize) -> String {
    format!("checker-{i}")
}

// ---------------------------------------------------------------------------------------------
// The test app

/// A small HTTP server: `/` answers its task id, `/health` 200; every request is appended to
/// `$MESOS_SANDBOX/hits` with its time. `--delay N` waits N seconds before listening (a slow
/// start). On SIGTERM it does what a service behind a load balancer must: it writes the time to
/// `$MESOS_SANDBOX/term`, keeps serving for `--drain N` seconds (default 1) while lb-sync takes
/// it out of HAProxy, then stops accepting, finishes what it is serving, and exits.
pub const SERVER: &str = r#"
import http.server, os, signal, sys, threading, time
sandbox = os.environ.get('MESOS_SANDBOX', '.')
task = os.environ.get('MESOS_TASK_ID', '?').encode()
args = sys.argv[1:]
opts = {'--delay': 0.0, '--drain': 1.0}
while args[:1] and args[0] in opts:
    opts[args[0]] = float(args[1]); args = args[2:]
delay, drain = opts['--delay'], opts['--drain']
port = int(args[0])
time.sleep(delay)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        with open(os.path.join(sandbox, 'hits'), 'a') as f:
            f.write('%f %s\n' % (time.time(), self.path))
        body = b'ok' if self.path == '/health' else task
        self.send_response(200)
        self.send_header('Content-Type', 'text/plain')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True
server = S(('127.0.0.1', port), H)
def stop(*_):
    with open(os.path.join(sandbox, 'term'), 'w') as f:
        f.write('%f' % time.time())
    def later():
        time.sleep(drain)
        server.shutdown()
    threading.Thread(target=later).start()
signal.signal(signal.SIGTERM, stop)
server.serve_forever()
server.server_close()
"#;

impl Stack {
    /// Writes [`SERVER`] next to the logs; returns its path.
    pub fn server_script(&self) -> PathBuf {
        let path = self.dir.path().join("server.py");
        if !path.exists() {
            std::fs::write(&path, SERVER).unwrap_or_else(|e| panic!("server.py: {e}"));
        }
        path
    }
}

/// Times (seconds since the epoch) of the requests a task's server logged.
pub fn hits(sandbox: &Path) -> Vec<f64> {
    std::fs::read_to_string(sandbox.join("hits"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

/// Times of the requests for `path` only.
pub fn hits_on(sandbox: &Path, path: &str) -> Vec<f64> {
    std::fs::read_to_string(sandbox.join("hits"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (t, p) = l.split_once(' ')?;
            (p == path).then(|| t.parse().ok()).flatten()
        })
        .collect()
}

/// When the server got its SIGTERM (`term` in its sandbox).
pub fn term_time(sandbox: &Path) -> Option<f64> {
    std::fs::read_to_string(sandbox.join("term"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The sandbox of a running task, from its process's environment.
pub fn sandbox_of(task_id: &str) -> Option<PathBuf> {
    let pid = *stride_tests::pids_of_task(task_id).first()?;
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0).find_map(|kv| {
        std::str::from_utf8(kv)
            .ok()?
            .strip_prefix("MESOS_SANDBOX=")
            .map(PathBuf::from)
    })
}

pub fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers that never panic on a refused connection

/// A request through the gateway; `None` when it cannot be reached.
pub async fn try_call(
    api: &Api,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Option<(u16, Value)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
    let method = reqwest::Method::from_bytes(method.as_bytes()).ok()?;
    let mut req = client.request(method, format!("{}{path}", api.base));
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.ok()?;
    let status = resp.status().as_u16();
    let text = resp.text().await.ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// The app (`GET /v2/apps{id}`) once `check` accepts it.
pub async fn app_until(
    api: &Api,
    id: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!("/v2/apps{id}");
    let check = &check;
    api.until(within, what, |api| {
        let path = path.clone();
        async move {
            let r = api.try_get(&path).await?;
            check(&r.body["app"]).then(|| r.body["app"].clone())
        }
    })
    .await
}

pub fn task_ids(app: &Value) -> std::collections::BTreeSet<String> {
    app["tasks"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|x| x["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every instance of the app Running (and healthy where `healthy`), none other, no deployment.
pub fn settled(n: usize, healthy: bool) -> impl Fn(&Value) -> bool {
    move |a: &Value| {
        let tasks = a["tasks"].as_array().cloned().unwrap_or_default();
        a["tasksRunning"] == n
            && (!healthy || a["tasksHealthy"] == n)
            && tasks.len() == n
            && tasks.iter().all(|t| t["state"] == "TASK_RUNNING")
            && a["deployments"].as_array().is_some_and(|d| d.is_empty())
    }
}

// ---------------------------------------------------------------------------------------------
// Figures

/// Prints a recovery figure and appends it to `target/faults/recovery.txt`, the source of the
/// table in docs/operations.md.
pub fn figure(fault: &str, what: &str, took: Duration) {
    let line = format!("RECOVERY | {fault} | {what} | {:.2} s", took.as_secs_f64());
    eprintln!("{line}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/faults");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("recovery.txt"))
    {
        let _ = writeln!(f, "{} {line}", chrono_free_now());
    }
}

/// A note that goes with the figures (what was lost, counts).
pub fn note(fault: &str, what: &str) {
    let line = format!("RESULT   | {fault} | {what}");
    eprintln!("{line}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/faults");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("recovery.txt"))
    {
        let _ = writeln!(f, "{} {line}", chrono_free_now());
    }
}

fn chrono_free_now() -> String {
    format!("{:.0}", epoch_now())
}

/// Waits until `check` holds, polling every 25 ms; returns how long that took. Panics after
/// `within`.
pub async fn timed<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
