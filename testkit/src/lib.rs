//! Test helpers shared by every crate's tests: free loopback ports, a real `redis-server` started
//! per test on such a port (and stopped when dropped), and "eventually" assertions with a
//! deadline instead of sleeps.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// Polls `check` until it returns `Some`, or panics with `what` after `within`.
pub fn eventually<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Async flavour of [`eventually`].
pub async fn eventually_async<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
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
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `redis-server` of its own on a free loopback port, with its data in a temporary directory.
/// Stopped (SIGKILL) when dropped.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra `redis-server` arguments (e.g. `["--appendonly", "yes"]`).
    pub fn start_with(extra: &[&str]) -> Self {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
            let port = free_port();
            let child = Command::new(redis_binary())
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--daemonize",
                    "no",
                ])
                .arg("--dir")
                .arg(dir.path())
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("redis-server must be installed (scripts/test installs it): {e}")
                });
            let mut server = Self { child, port, dir };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return server;
                }
                if let Ok(Some(_)) = server.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(server);
        }
        panic!("redis-server did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_binary() -> PathBuf {
    std::env::var_os("STRIDE_REDIS_SERVER")
        .map_or_else(|| PathBuf::from("redis-server"), PathBuf::from)
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Builds the Docker image `image` with `docker import` from `/bin/busybox` (Debian's
/// `busybox-static`) and a few applet links, unless it exists already: a shell, `httpd` and
/// friends in a few hundred KiB, with no registry needed.
pub fn ensure_test_image(image: &str) -> Result<(), String> {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    let busybox = Path::new("/bin/busybox");
    ensure!(
        busybox.exists(),
        "/bin/busybox is missing: install Debian's busybox-static (scripts/test does)"
    );
    let mut tar = tar::Builder::new(Vec::new());
    let dir = |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| -> Result<(), String> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_cksum();
        tar.append_data(&mut h, path, std::io::empty())
            .map_err(|e| e.to_string())?;
        Ok(())
    };
    for (path, mode) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("tmp", 0o1777),
        ("www", 0o755),
    ] {
        dir(&mut tar, path, mode)?;
    }
    let bytes = std::fs::read(busybox).map_err(|e| e.to_string())?;
    // A dynamically linked busybox (Debian's `busybox`) would find no libc in the image.
    ensure!(
        !has_interpreter(&bytes),
        "/bin/busybox is dynamically linked: install Debian's busybox-static (scripts/test does)"
    );
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(bytes.len() as u64);
    h.set_cksum();
    tar.append_data(&mut h, "bin/busybox", &bytes[..])
        .map_err(|e| e.to_string())?;
    for applet in [
        "sh", "httpd", "sleep", "cat", "echo", "mkdir", "ls", "id", "env", "touch", "dd", "test",
        "true", "false", "rm", "pwd", "wc",
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_cksum();
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .map_err(|e| e.to_string())?;
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n";
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(passwd.len() as u64);
    h.set_cksum();
    tar.append_data(&mut h, "etc/passwd", &passwd[..])
        .map_err(|e| e.to_string())?;
    let bytes = tar.into_inner().map_err(|e| e.to_string())?;

    let mut import = std::process::Command::new("docker")
        .args(["import", "-", image])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    {
        use std::io::Write;
        let mut stdin = import.stdin.take().ok_or("no stdin")?;
        stdin.write_all(&bytes).map_err(|e| e.to_string())?;
    }
    let out = import.wait_with_output().map_err(|e| e.to_string())?;
    ensure!(
        out.status.success(),
        "docker import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// linked): a `PT_INTERP` entry among its program headers.
pub fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(|b: [u8; 8]| u64::from_le_bytes(b) as usize)
    };
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return true;
    };
    (0..count).any(|i| {
        elf.get(phoff + i * size..phoff + i * size + 4)
            .is_some_and(|t| t == [3, 0, 0, 0])
    })
}

/// Runs `redis-cli -p <port> <args>` against 127.0.0.1 and returns its raw output, `None` when
/// it fails or does not answer within 5 s.
pub fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--raw"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    Some(out)
}

/// `field:value` lines of an `INFO` reply (or `field\nvalue` pairs of a `--raw` `SENTINEL`
/// reply, with `pairs`), looked up by field.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{field}:")))
        .map(str::to_string)
}

fn raw_pairs_field(reply: &str, field: &str) -> Option<String> {
    let lines: Vec<&str> = reply.lines().map(str::trim).collect();
    lines
        .chunks(2)
        .find(|kv| kv.first() == Some(&field))
        .and_then(|kv| kv.get(1))
        .map(|v| v.to_string())
}

/// A `redis-sentinel` of its own on a free loopback port, watching the master `name` at
/// `127.0.0.1:master_port`. Stopped (SIGKILL) when dropped.
pub struct RedisSentinel {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl RedisSentinel {
    /// Starts a sentinel that calls the master down after `down_after` without an answer and
    /// fails over with `quorum` sentinels agreeing.
    pub fn start(name: &str, master_port: u16, quorum: u32, down_after: Duration) -> Self {
        let ms = down_after.as_millis();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
            let port = free_port();
            // Sentinel rewrites its configuration file, so each has its own.
            let conf = dir.path().join("sentinel.conf");
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\nlogfile \"\"\ndir {dir}\n\
                 sentinel monitor {name} 127.0.0.1 {master_port} {quorum}\n\
                 sentinel down-after-milliseconds {name} {ms}\n\
                 sentinel failover-timeout {name} {failover}\n\
                 sentinel parallel-syncs {name} 1\n",
                dir = dir.path().display(),
                failover = (ms * 4).max(2000),
            );
            std::fs::write(&conf, text).unwrap_or_else(|e| panic!("sentinel.conf: {e}"));
            let child = Command::new(sentinel_binary())
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("redis-sentinel must be installed (scripts/test installs it): {e}")
                });
            let mut sentinel = Self { child, port, dir };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return sentinel;
                }
                if let Ok(Some(_)) = sentinel.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(sentinel);
        }
        panic!("redis-sentinel did not start");
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The master's port as this sentinel knows it.
    pub fn master_port(&self, name: &str) -> Option<u16> {
        let out = redis_cli(self.port, &["SENTINEL", "get-master-addr-by-name", name])?;
        out.lines().nth(1)?.trim().parse().ok()
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sentinel_binary() -> PathBuf {
    std::env::var_os("STRIDE_REDIS_SENTINEL")
        .map_or_else(|| PathBuf::from("redis-sentinel"), PathBuf::from)
}

/// A Redis master with replicas, watched by sentinels (quorum: a majority), all on loopback.
/// Sentinels call a node down after 1 s of silence, so a failover takes a few seconds.
pub struct RedisHa {
    pub master_name: String,
    /// The nodes by port; a killed one is removed.
    pub nodes: Vec<RedisServer>,
    pub sentinels: Vec<RedisSentinel>,
}

impl RedisHa {
    /// Starts a master, `replicas` replicas of it, and `sentinels` sentinels, and waits until
    /// every replica is in sync and every sentinel knows all the replicas and the other
    /// sentinels, so a failover can happen.
    pub fn start(replicas: usize, sentinels: usize) -> Self {
        let name = "stride-ha".to_string();
        // Without the 5 s a master waits for more replicas before a diskless full sync.
        let quick = ["--repl-diskless-sync-delay", "0"];
        let master = RedisServer::start_with(&quick);
        let master_port = master.port.to_string();
        let mut nodes = vec![master];
        for _ in 0..replicas {
            let replica_of = ["--replicaof", "127.0.0.1", &master_port];
            nodes.push(RedisServer::start_with(
                &[&quick[..], &replica_of[..]].concat(),
            ));
        }
        let port = nodes[0].port;
        eventually(Duration::from_secs(30), "replicas in sync", || {
            let info = redis_cli(port, &["INFO", "replication"])?;
            let online = info
                .lines()
                .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                .count();
            (online == replicas).then_some(())
        });
        let quorum = (sentinels / 2 + 1) as u32;
        let sentinels = (0..sentinels)
            .map(|_| RedisSentinel::start(&name, port, quorum, Duration::from_millis(1000)))
            .collect();
        let ha = Self {
            master_name: name,
            nodes,
            sentinels,
        };
        ha.wait_ready(Duration::from_secs(30));
        ha
    }

    /// `redis+sentinel://` URL of the group, with `extra` query parameters (`a=b&c=d`).
    pub fn url(&self, extra: &str) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|s| s.addr()).collect();
        let mut url = format!("redis+sentinel://{}/{}", hosts.join(","), self.master_name);
        if !extra.is_empty() {
            url.push('?');
            url.push_str(extra);
        }
        url
    }

    /// The master's port, as the sentinels agree on it.
    pub fn master_port(&self) -> Option<u16> {
        let mut ports = self
            .sentinels
            .iter()
            .map(|s| s.master_port(&self.master_name));
        let first = ports.next()??;
        ports.all(|p| p == Some(first)).then_some(first)
    }

    /// Waits until the sentinels agree on a master that `ROLE` confirms, which has every
    /// other live node as a replica in sync, and every sentinel knows them all and the other
    /// sentinels.
    pub fn wait_ready(&self, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        loop {
            let state = match self.ready() {
                Ok(port) => return port,
                Err(state) => state,
            };
            if Instant::now() > deadline {
                panic!(
                    "timed out after {within:?} waiting for a master with its replicas, seen by \
                     every sentinel; last seen: {state}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The master's port when the group is ready, what is missing otherwise.
    fn ready(&self) -> Result<u16, String> {
        let replicas = self.nodes.len().saturating_sub(1);
        let others = self.sentinels.len().saturating_sub(1);
        let port = self
            .master_port()
            .ok_or("the sentinels do not agree on a master")?;
        let role = redis_cli(port, &["ROLE"]).ok_or(format!("no ROLE from {port}"))?;
        if role.lines().next().map(str::trim) != Some("master") {
            return Err(format!("{port} is not a master: {role:?}"));
        }
        let info =
            redis_cli(port, &["INFO", "replication"]).ok_or(format!("no INFO from {port}"))?;
        let online = info
            .lines()
            .filter(|l| l.starts_with("slave") && l.contains("state=online"))
            .count();
        if online != replicas || info_field(&info, "role").as_deref() != Some("master") {
            return Err(format!(
                "{port} has {online} of {replicas} replicas in sync: {info:?}"
            ));
        }
        for s in &self.sentinels {
            let m = redis_cli(s.port, &["SENTINEL", "MASTER", &self.master_name])
                .ok_or(format!("no answer from sentinel {}", s.port))?;
            let num = |f: &str| raw_pairs_field(&m, f).and_then(|v| v.parse::<usize>().ok());
            let flags = raw_pairs_field(&m, "flags").unwrap_or_default();
            if num("num-slaves").unwrap_or(0) < replicas
                || num("num-other-sentinels") != Some(others)
                || flags != "master"
            {
                return Err(format!(
                    "sentinel {} sees slaves {:?}, other sentinels {:?}, flags {flags:?}",
                    s.port,
                    num("num-slaves"),
                    num("num-other-sentinels")
                ));
            }
        }
        Ok(port)
    }

    /// Kills (SIGKILL) the node on `port`.
    pub fn kill(&mut self, port: u16) {
        self.nodes.retain(|n| n.port != port);
    }
}
