//! The system under test as real processes: a `redis-server` of its own on a free loopback port
//! (append-only, as the README's topology runs it), `stride-scheduler`s and one
//! `stride-api-gateway` from the release build, and optionally one real `stride-agent`. Every
//! process is killed when its handle drops; their logs stay in a temporary directory while the
//! scenario runs.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use stride_testkit::{free_port, RedisServer};

use crate::client::Http;

/// Where the release binaries are.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub dir: PathBuf,
}

impl Binaries {
    pub fn path(&self, name: &str) -> anyhow::Result<PathBuf> {
        let p = self.dir.join(name);
        if !p.exists() {
            bail!(
                "{} is missing: build it with `cargo build --release -p stride-scheduler -p stride-api-gateway -p stride-agent` (scripts/bench does)",
                p.display()
            );
        }
        Ok(p)
    }
}

/// One child process of ours.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[String], logs: &Path) -> anyhow::Result<Self> {
        let log = logs.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("log file {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`, and reap.
    pub fn kill9(&mut self) {
        let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Resident set size of `pid`, in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time (user + system) `pid` has used so far, in seconds; `None` for a process gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Some((utime + stime) / tick)
}

/// Seconds the threads of `pid` spent runnable but waiting for a CPU (run-queue delay, the
/// second field of `/proc/<pid>/task/*/schedstat`): high when other work on the machine
/// crowds the process out.
pub fn run_delay_seconds(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            total += s
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Some(total as f64 / 1e9)
}

/// CPU seconds of a set of processes between two points in time.
pub struct CpuMeter {
    pids: Vec<(String, u32)>,
    start: Vec<f64>,
    start_wait: Vec<f64>,
    started: Instant,
}

impl CpuMeter {
    pub fn start(pids: Vec<(String, u32)>) -> Self {
        let start = pids
            .iter()
            .map(|(_, p)| cpu_seconds(*p).unwrap_or(0.0))
            .collect();
        let start_wait = pids
            .iter()
            .map(|(_, p)| run_delay_seconds(*p).unwrap_or(0.0))
            .collect();
        Self {
            pids,
            start,
            start_wait,
            started: Instant::now(),
        }
    }

    /// Each process's time waiting for a CPU over the interval, in percent of the interval.
    pub fn waiting_percent(&self) -> Vec<(String, f64)> {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        self.pids
            .iter()
            .zip(&self.start_wait)
            .map(|((name, pid), s)| {
                let waited = run_delay_seconds(*pid).unwrap_or(*s) - s;
                (name.clone(), 100.0 * waited / wall)
            })
            .collect()
    }

    /// Each process's share of one core over the interval, in percent.
    pub fn percent(&self) -> Vec<(String, f64)> {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        self.pids
            .iter()
            .zip(&self.start)
            .map(|((name, pid), s)| {
                let used = cpu_seconds(*pid).unwrap_or(*s) - s;
                (name.clone(), 100.0 * used / wall)
            })
            .collect()
    }
}

/// Watches the leader's lease from outside while a scenario runs: every 50 ms, the lease's
/// remaining TTL (`PTTL`) and how long Redis took to answer. A lease that runs low while Redis
/// answers quickly means the leader did not renew in time; slow answers mean Redis was busy.
pub struct LeaseWatch {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<LeaseReport>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LeaseReport {
    /// Lowest remaining lease TTL seen, in ms (0: the lease expired).
    pub min_ttl_ms: i64,
    /// Slowest `PTTL` round trip, in ms.
    pub max_rtt_ms: f64,
    /// Samples where no lease existed.
    pub expired: u64,
}

impl LeaseWatch {
    pub async fn start(url: &str) -> anyhow::Result<Self> {
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(60)));
        let mut conn = redis::Client::open(url)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut r = LeaseReport {
                min_ttl_ms: i64::MAX,
                ..Default::default()
            };
            loop {
                let t = Instant::now();
                let ttl: redis::RedisResult<i64> = redis::cmd("PTTL")
                    .arg("stride:lease")
                    .query_async(&mut conn)
                    .await;
                r.max_rtt_ms = r.max_rtt_ms.max(t.elapsed().as_secs_f64() * 1000.0);
                match ttl {
                    Ok(ms) if ms >= 0 => r.min_ttl_ms = r.min_ttl_ms.min(ms),
                    Ok(_) => {
                        r.expired += 1;
                        r.min_ttl_ms = 0;
                    }
                    Err(_) => {}
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stopped.changed() => return r,
                }
            }
        });
        Ok(Self { stop, task })
    }

    pub async fn finish(self) -> LeaseReport {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// Redis, schedulers and a gateway, as separate processes.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub redis: RedisServer,
    pub schedulers: Vec<Proc>,
    pub scheduler_ports: Vec<u16>,
    pub gateway: Proc,
    pub http: Http,
    pub agent: Option<Proc>,
    redis_conn: redis::aio::MultiplexedConnection,
}

/// Counts instances whose stored JSON says `"condition":"Running"` without shipping the hash.
const COUNT_RUNNING: &str = r#"
local n = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  if string.find(v, '"condition":"Running"', 1, true) then n = n + 1 end
end
return n
"#;

impl Stack {
    /// Starts Redis, `schedulers` schedulers and a gateway, and waits for a leader.
    pub async fn start(bins: &Binaries, schedulers: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("stride-bench").tempdir()?;
        let redis = RedisServer::start_with(&["--appendonly", "yes"]);
        let scheduler_ports: Vec<u16> = (0..schedulers).map(|_| free_port()).collect();
        let mut procs = Vec::new();
        for (i, port) in scheduler_ports.iter().enumerate() {
            procs.push(Proc::spawn(
                &format!("scheduler-{i}"),
                &bins.path("stride-scheduler")?,
                &scheduler_args(i, *port, &redis.url()),
                dir.path(),
            )?);
            // The first one started leads; the others stand by.
            if i == 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        let http_port = free_port();
        let gateway = Proc::spawn(
            "gateway",
            &bins.path("stride-api-gateway")?,
            &[
                "--listen".into(),
                format!("127.0.0.1:{http_port}"),
                "--redis".into(),
                redis.url(),
                "--advertised-address".into(),
                format!("127.0.0.1:{http_port}"),
                // Loopback only, and the figures are of the orchestrator, not of password hashing.
                "--insecure-no-auth".into(),
            ],
            dir.path(),
        )?;
        // Counting 100,000 instances takes longer than the client's default response timeout.
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(60)));
        let redis_conn = redis::Client::open(redis.url())?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let stack = Self {
            dir,
            redis,
            schedulers: procs,
            scheduler_ports,
            gateway,
            http: Http::new(&format!("http://127.0.0.1:{http_port}")),
            agent: None,
            redis_conn,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leader = stack.http.get("/v2/leader").await;
            if leader.as_ref().is_ok_and(|r| r.status == 200)
                && stack.leader_index().await.is_some()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "no leader after 30 s\n{}\n{}",
                    stack.schedulers[0].log_text(),
                    stack.gateway.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(stack)
    }

    /// Starts scheduler `i` again (after [`Proc::kill9`]), on the same port and with the same
    /// id, with `extra` flags; its log is `scheduler-<i>-<log_suffix>.log`.
    pub fn restart_scheduler(
        &mut self,
        bins: &Binaries,
        i: usize,
        extra: &[&str],
        log_suffix: &str,
    ) -> anyhow::Result<()> {
        let mut args = scheduler_args(i, self.scheduler_ports[i], &self.redis.url());
        args.extend(extra.iter().map(|a| a.to_string()));
        self.schedulers[i] = Proc::spawn(
            &format!("scheduler-{i}-{log_suffix}"),
            &bins.path("stride-scheduler")?,
            &args,
            self.dir.path(),
        )?;
        Ok(())
    }

    /// The schedulers' gRPC URLs, as agents are given them.
    pub fn grpc_endpoints(&self) -> Vec<String> {
        self.scheduler_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect()
    }

    /// Which scheduler holds the lease (index into `schedulers`).
    pub async fn leader_index(&self) -> Option<usize> {
        let mut c = self.redis_conn.clone();
        let lease: Option<String> = redis::cmd("GET")
            .arg("stride:lease")
            .query_async(&mut c)
            .await
            .ok()?;
        // "<epoch>|<id>|<grpc>|<http>"
        let lease = lease?;
        let grpc = lease.split('|').nth(2)?;
        self.scheduler_ports
            .iter()
            .position(|p| grpc.ends_with(&format!(":{p}")))
    }

    /// Leader terms so far (the store's epoch counter): 1 means the first leader never lost its
    /// lease.
    pub async fn terms(&self) -> anyhow::Result<u64> {
        let mut c = self.redis_conn.clone();
        let n: Option<u64> = redis::cmd("GET")
            .arg("stride:epoch")
            .query_async(&mut c)
            .await?;
        Ok(n.unwrap_or(0))
    }

    /// Instances stored with condition Running.
    pub async fn running_instances(&self) -> anyhow::Result<u64> {
        let mut c = self.redis_conn.clone();
        let n: u64 = redis::Script::new(COUNT_RUNNING)
            .key("stride:c:instances")
            .invoke_async(&mut c)
            .await?;
        Ok(n)
    }

    /// Where the event stream ends now, for [`Stack::until_running_events`] to start after.
    pub async fn events_end(&self) -> anyhow::Result<String> {
        let mut c = self.redis_conn.clone();
        let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg("stride:events")
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut c)
            .await?;
        Ok(last
            .ids
            .first()
            .map_or_else(|| "0-0".to_string(), |e| e.id.clone()))
    }

    /// Follows the event stream after `from` until `want` instances of the apps at or under
    /// `apps` were reported Running; see [`until_running_events`].
    pub async fn until_running_events(
        &self,
        apps: &str,
        want: usize,
        from: String,
        within: Duration,
    ) -> anyhow::Result<Instant> {
        until_running_events(self.redis.url(), apps.to_string(), want, from, within).await
    }

    /// Polls the store until `want` instances are Running, `every` apart; the time it was seen.
    pub async fn until_running(
        &self,
        want: u64,
        every: Duration,
        within: Duration,
    ) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + within;
        loop {
            let n = self.running_instances().await?;
            if n >= want {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!("{n} of {want} instances Running in the store after {within:?}");
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Starts one real `stride-agent` with room for `cpus` cpus.
    pub fn start_agent(&mut self, bins: &Binaries, cpus: u32, mem: u32) -> anyhow::Result<()> {
        let work = self.dir.path().join("agent");
        let agent = Proc::spawn(
            "agent",
            &bins.path("stride-agent")?,
            &[
                "--schedulers".into(),
                self.grpc_endpoints().join(","),
                "--agent-id".into(),
                "bench-agent".into(),
                "--hostname".into(),
                "127.0.0.1".into(),
                "--work-dir".into(),
                work.display().to_string(),
                "--cpus".into(),
                cpus.to_string(),
                "--mem".into(),
                mem.to_string(),
                "--ports".into(),
                "31000-32999".into(),
            ],
            self.dir.path(),
        )?;
        self.agent = Some(agent);
        Ok(())
    }

    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut pids: Vec<(String, u32)> = self
            .schedulers
            .iter()
            .map(|s| (s.name.clone(), s.pid()))
            .collect();
        pids.push(("gateway".into(), self.gateway.pid()));
        pids.push(("redis".into(), self.redis.pid()));
        if let Some(a) = &self.agent {
            pids.push(("agent".into(), a.pid()));
        }
        pids.push(("bench".into(), std::process::id()));
        pids
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(a) = &mut self.agent {
            a.kill9();
        }
        kill_tasks_under(self.dir.path());
        keep_logs(self.dir.path());
    }
}

static STACKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Copies the logs of a stack to `$STRIDE_BENCH_LOGS/<n>-<name>.log` when that is set (scripts/bench
/// sets it to target/bench/logs), so a failed or slow run can be read afterwards.
fn keep_logs(dir: &Path) {
    let Some(to) = std::env::var_os("STRIDE_BENCH_LOGS").map(PathBuf::from) else {
        return;
    };
    let n = STACKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _ = std::fs::create_dir_all(&to);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".log") {
            let _ = std::fs::copy(
                e.path(),
                to.join(format!("{}-{n:02}-{name}", std::process::id())),
            );
        }
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

/// `redis-benchmark -q -t set -P 64 -n 200000` against `port`: SETs a second.
pub fn redis_benchmark(port: u16) -> anyhow::Result<f64> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-q", "-t", "set", "-P", "64", "-n", "200000"])
        .output()
        .context("redis-benchmark must be installed (Debian's redis-tools)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "SET: 1234567.89 requests per second, p50=0.383 msec" after \r-separated progress.
    text.split(['\r', '\n'])
        .filter_map(|l| l.trim().strip_prefix("SET:"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .next_back()
        .with_context(|| format!("unexpected redis-benchmark output: {text}"))
}

/// Flags of scheduler `i` of a stack.
fn scheduler_args(i: usize, port: u16, redis_url: &str) -> Vec<String> {
    vec![
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--advertise".into(),
        format!("127.0.0.1:{port}"),
        "--redis".into(),
        redis_url.to_string(),
        "--id".into(),
        format!("scheduler-{i}"),
    ]
}

/// What a new leader's `state loaded` line says.
#[derive(Clone, Debug, PartialEq)]
pub struct StateLoaded {
    /// `mirror-ahead` (built from the standby's mirror before the election), `mirror` (built
    /// from it caught up after) or `store` (everything read).
    pub from: String,
    /// Election to a built state.
    pub took_ms: f64,
    /// The catch-up of the mirror, or reading everything.
    pub read_ms: f64,
    /// Building the leader state from what was read.
    pub build_ms: f64,
    /// Building it ahead, before the election (`mirror-ahead`).
    pub built_ahead_ms: f64,
}

/// The last `state loaded` line in a scheduler log.
pub fn state_loaded(log: &str) -> Option<StateLoaded> {
    let text = strip_ansi(log);
    let line = text.lines().rfind(|l| l.contains("state loaded"))?;
    let number = |name: &str| -> Option<f64> {
        let at = line.find(&format!("{name}="))? + name.len() + 1;
        let digits: String = line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    let from = line
        .find("from=")
        .map(|at| {
            line[at + "from=".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect()
        })
        .unwrap_or_else(|| "store".to_string());
    Some(StateLoaded {
        from,
        took_ms: number("took_ms")?,
        read_ms: number("read_ms").unwrap_or(f64::NAN),
        build_ms: number("build_ms").unwrap_or(f64::NAN),
        built_ahead_ms: number("built_ahead_ms").unwrap_or(f64::NAN),
    })
}

/// The `took_ms` of the last line of a standby's mirror read from the store, if any.
pub fn mirror_read_ms(log: &str) -> Option<f64> {
    let text = strip_ansi(log);
    let line = text.lines().rfind(|l| l.contains("standby mirror read"))?;
    let at = line.find("took_ms=")? + "took_ms=".len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Text without ANSI colour sequences (the services colour their logs by default).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The fields of a stored event that tell an instance became Running.
#[derive(serde::Deserialize)]
struct InstanceEvent<'a> {
    #[serde(rename = "eventType")]
    event_type: &'a str,
    condition: Option<&'a str>,
    #[serde(rename = "runSpecId")]
    run_spec_id: Option<&'a str>,
    #[serde(rename = "instanceId")]
    instance_id: Option<&'a str>,
}

/// Follows the event stream of the Redis at `url` after `from` until `want` instances of the
/// apps at or under `apps` were reported Running; the time the last was seen. An instance's
/// event is committed with the instance itself, so this is when the store had them all
/// Running. Unlike [`Stack::until_running`], whose every poll reads every instance (0.4 s of
/// Redis at 100,000), it costs Redis only the events, so measuring takes little from what is
/// measured. The store trims the stream to about 100,000 entries: a reader that fell that far
/// behind would miss some and wait until `within`.
pub async fn until_running_events(
    url: String,
    apps: String,
    want: usize,
    from: String,
    within: Duration,
) -> anyhow::Result<Instant> {
    // A connection of its own: a blocking read holds up whatever shares it.
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(5)));
    let mut c = redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let under = format!("{}/", apps.trim_end_matches('/'));
    let deadline = Instant::now() + within;
    let mut last = from;
    let mut running = std::collections::HashSet::new();
    loop {
        let read: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(10_000)
            .arg("BLOCK")
            .arg(100)
            .arg("STREAMS")
            .arg("stride:events")
            .arg(&last)
            .query_async(&mut c)
            .await?;
        for entry in read.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            if let Some(redis::Value::BulkString(bytes)) = entry.map.get("e") {
                // Most events are not about an instance becoming Running: skip them unparsed.
                let text = std::str::from_utf8(bytes)?;
                if text.contains(r#""condition":"Running""#) {
                    let event: InstanceEvent = serde_json::from_str(text)?;
                    let app = event.run_spec_id.unwrap_or_default();
                    if event.event_type == "instance_changed_event"
                        && event.condition == Some("Running")
                        && (app == apps || app.starts_with(&under))
                    {
                        if let Some(id) = event.instance_id {
                            running.insert(id.to_string());
                        }
                    }
                }
            }
            last = entry.id;
        }
        if running.len() >= want {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {want} instances under {apps} reported Running after {within:?}",
                running.len()
            );
        }
    }
}
