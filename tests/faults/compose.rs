//! docker-compose.yml under test: the image built from this tree's debug binaries
//! (`docker/build-images.sh --profile debug`, skipped when nothing changed), one compose project
//! per test process with every host port chosen by Docker, torn down with its volumes on drop.
//! Works with `docker-compose` (v1, Debian's package) and `docker compose` (v2).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use stride_tests::Api;

/// The example admin of examples/auth.toml, which docker-compose.yml gives the gateway.
pub const AUTH: &str = "admin:admin-change-me";
const IMAGE: &str = "stride:debug";

pub struct Compose {
    pub root: PathBuf,
    pub project: String,
    /// `docker-compose` or `docker compose`.
    program: Vec<String>,
    /// The Redis container's address, asked once (the compose CLI takes about a second).
    redis_ip: std::sync::OnceLock<String>,
}

fn compose_program() -> Vec<String> {
    let works = |cmd: &[&str]| {
        Command::new(cmd[0])
            .args(&cmd[1..])
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works(&["docker-compose"]) {
        vec!["docker-compose".into()]
    } else if works(&["docker", "compose"]) {
        vec!["docker".into(), "compose".into()]
    } else {
        panic!("Docker answers but neither `docker-compose` nor `docker compose` is installed (Debian: docker-compose)");
    }
}

impl Compose {
    /// Builds the image if needed and brings the project up (detached).
    pub fn up() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .canonicalize()
            .expect("the workspace");
        let out = Command::new(root.join("docker/build-images.sh"))
            .args(["--profile", "debug"])
            .current_dir(&root)
            .output()
            .expect("docker/build-images.sh runs");
        assert!(
            out.status.success(),
            "docker/build-images.sh --profile debug failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let me = Self {
            root,
            project: format!("stride-faults-{}", std::process::id()),
            program: compose_program(),
            redis_ip: std::sync::OnceLock::new(),
        };
        me.remove_stale_projects();
        let out = me.output(&["up", "-d"]);
        assert!(
            out.status.success(),
            "docker-compose up failed:\n{}",
            text(&out)
        );
        me
    }

    fn command(&self) -> Command {
        self.command_for(&self.project)
    }

    fn command_for(&self, project: &str) -> Command {
        let mut c = Command::new(&self.program[0]);
        c.args(&self.program[1..])
            .args(["-f", "docker-compose.yml", "-p", project])
            .current_dir(&self.root)
            .env("STRIDE_IMAGE", IMAGE)
            // Empty: Docker picks free host ports, so runs never collide.
            .env("STRIDE_API_PORT", "")
            .env("STRIDE_HTTP_PORT", "")
            .env("STRIDE_STATS_PORT", "")
            .env("STRIDE_DNS_PORT", "")
            .env("STRIDE_BIND", "127.0.0.1");
        c
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{:?}: {e}", self.program))
    }

    /// Runs a compose command; panics with its output if it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "docker-compose {}: {}",
            args.join(" "),
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Projects of fault-test processes that died without tearing down: their containers,
    /// networks or volumes, whichever are left.
    fn remove_stale_projects(&self) {
        let mut projects = BTreeSet::new();
        for kind in [
            &["ps", "-a"][..],
            &["network", "ls"][..],
            &["volume", "ls"][..],
        ] {
            let Ok(out) = Command::new("docker")
                .args(kind)
                .args(["--filter", "label=com.docker.compose.project"])
                .args(["--format", "{{.Label \"com.docker.compose.project\"}}"])
                .output()
            else {
                continue;
            };
            projects.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|p| p.starts_with("stride-faults-"))
                    .map(str::to_string),
            );
        }
        for p in projects {
            let alive = p
                .strip_prefix("stride-faults-")
                .and_then(|pid| pid.parse::<i32>().ok())
                .is_some_and(stride_tests::process_alive);
            if !alive {
                let _ = self
                    .command_for(&p)
                    .args(["down", "-v", "-t", "1", "--remove-orphans"])
                    .output();
            }
        }
    }

    /// The host address a service's container port is published on.
    pub fn port(&self, service: &str, port: &str, udp: bool) -> String {
        let mut args = vec!["port"];
        if udp {
            args.push("--protocol=udp");
        }
        args.extend([service, port]);
        let out = self.run(&args);
        out.trim().to_string()
    }

    pub fn api_address(&self) -> String {
        self.port("api", "8080", false)
    }

    /// The API, with the example admin's credentials in the URL.
    pub fn api(&self) -> Api {
        Api::new(&format!("http://{AUTH}@{}", self.api_address()))
    }

    pub fn demo_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "STRIDE_URL".into(),
                format!("http://{}", self.api_address()),
            ),
            ("STRIDE_AUTH".into(), AUTH.into()),
            (
                "STRIDE_HAPROXY".into(),
                format!("http://{}", self.port("lb-sync", "80", false)),
            ),
            (
                "STRIDE_STATS".into(),
                format!("http://{}", self.port("lb-sync", "9090", false)),
            ),
            ("STRIDE_DNS".into(), self.port("lb-sync", "53", true)),
            ("STRIDE_DEMO_TIMEOUT".into(), "180".into()),
        ]
    }

    /// The distinct bodies of `n` requests to HAProxy for `vhost`.
    pub async fn vhost_answers(&self, vhost: &str, n: usize) -> BTreeSet<String> {
        let url = format!("http://{}/", self.port("lb-sync", "80", false));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let mut seen = BTreeSet::new();
        for _ in 0..n {
            if let Ok(r) = client.get(&url).header("Host", vhost).send().await {
                if r.status().is_success() {
                    seen.insert(r.text().await.unwrap_or_default().trim().to_string());
                }
            }
        }
        seen
    }

    /// A/AAAA answers from lb-sync's DNS, or `None` where `dig` is not installed.
    pub fn dig(&self, name: &str) -> Option<Vec<String>> {
        let addr = self.port("lb-sync", "53", true);
        let (host, port) = addr.rsplit_once(':')?;
        let out = Command::new("dig")
            .args(["+short", &format!("@{host}"), "-p", port, name])
            .output()
            .ok()?;
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .filter(|l| !l.is_empty())
                .collect(),
        )
    }

    /// `GET path` on the API (blocking, through curl), as JSON.
    pub fn get(&self, path: &str) -> Value {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-u",
                AUTH,
                &format!("http://{}{path}", self.api_address()),
            ])
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    pub fn task_ids(&self, app: &str) -> BTreeSet<String> {
        self.get(&format!("/v2/apps{app}"))["app"]["tasks"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|x| x["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The IP address of a service's (first) container on the compose network.
    pub fn ip(&self, service: &str) -> String {
        let id = self.run(&["ps", "-q", service]);
        let id = id.lines().next().expect("a container").to_string();
        let out = Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                &id,
            ])
            .output()
            .expect("docker inspect");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .expect("an address")
            .to_string()
    }

    /// One Redis command straight to the Redis container (from the host, over the bridge), the
    /// answer's payload as text; empty when it does not answer.
    pub fn redis(&self, args: &[&str]) -> String {
        let ip = self.redis_ip.get_or_init(|| self.ip("redis"));
        let Ok(mut s) = std::net::TcpStream::connect_timeout(
            &format!("{ip}:6379").parse().expect("an address"),
            Duration::from_secs(1),
        ) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        if s.write_all(req.as_bytes()).is_err() {
            return String::new();
        }
        let mut buf = vec![0u8; 8192];
        let n = s.read(&mut buf).unwrap_or(0);
        let reply = String::from_utf8_lossy(&buf[..n]).to_string();
        // ":3" (an integer), "$n\r\nvalue", "$-1" (nil)
        match reply.chars().next() {
            Some(':') | Some('+') => reply[1..].trim().to_string(),
            Some('$') => reply.split("\r\n").nth(1).unwrap_or("").to_string(),
            _ => String::new(),
        }
    }

    pub fn logs(&self) -> String {
        text(&self.output(&["logs", "--no-color", "--tail", "60"]))
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("===== docker-compose logs =====\n{}", self.logs());
        }
        // Stopped first: `docker-compose stop` marks every container stopped by hand, so no
        // restart policy brings one back while `down` removes it (a container restarting as
        // its network goes can leave the daemon with a network it will not remove).
        let _ = self.output(&["stop", "-t", "2"]);
        for attempt in 0..2 {
            let out = self.output(&["down", "-v", "-t", "2", "--remove-orphans"]);
            if out.status.success() {
                break;
            }
            if attempt == 1 {
                eprintln!(
                    "docker-compose -p {} down failed:\n{}",
                    self.project,
                    text(&out)
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
