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
