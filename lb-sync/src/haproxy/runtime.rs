//! HAProxy's runtime API: the worker's admin socket (server state, addresses) and the master
//! CLI (`show proc`, `reload`), and [`plan`], the pure diff from the servers HAProxy runs to the
//! servers wanted.
//!
//! The plan never trusts names: the running process may hold a task in any slot (filled at
//! runtime) or under its marathon-lb name (after a reload from the file). It matches live
//! servers to wanted ones by address and port, puts every unmatched live server in maintenance,
//! and fills free slots with wanted servers that have none. A backend without enough free slots,
//! or missing entirely, needs a reload.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::render::BackendPlan;

/// `srv_admin_state` bits meaning "in maintenance" (forced, inherited, resolution). The
/// configured-`disabled` bit (0x04) is not among them: HAProxy keeps it as a remembered origin
/// after `state ready`, while forced maintenance (0x01) comes and goes with the state.
const ADMIN_MAINT_MASK: u32 = 0x01 | 0x02 | 0x20;

/// One server as `show servers state` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveServer {
    pub backend: String,
    pub name: String,
    pub addr: Option<IpAddr>,
    pub port: u32,
    pub op_state: u32,
    pub admin_state: u32,
    pub check_port: u32,
}

impl LiveServer {
    pub fn in_maintenance(&self) -> bool {
        self.admin_state & ADMIN_MAINT_MASK != 0
    }
}

/// Parses `show servers state` (format version 1).
pub fn parse_servers_state(text: &str) -> Vec<LiveServer> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 19 {
                return None;
            }
            Some(LiveServer {
                backend: f[1].to_string(),
                name: f[3].to_string(),
                addr: f[4].parse().ok().filter(|ip: &IpAddr| !ip.is_unspecified()),
                op_state: f[5].parse().ok()?,
                admin_state: f[6].parse().ok()?,
                port: f[18].parse().unwrap_or(0),
                check_port: f.get(21).and_then(|p| p.parse().ok()).unwrap_or(0),
            })
        })
        .collect()
}

/// What to send, and what cannot be done at runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimePlan {
    pub commands: Vec<String>,
    /// Backends whose wanted servers do not fit the free slots.
    pub short_of_slots: Vec<String>,
    /// Wanted backends HAProxy does not have (a reload is pending or needed).
    pub missing_backends: Vec<String>,
}

/// The runtime commands that bring `live` to `desired`.
pub fn plan(desired: &[BackendPlan], live: &[LiveServer]) -> RuntimePlan {
    let mut by_backend: HashMap<&str, Vec<&LiveServer>> = HashMap::new();
    for s in live {
        by_backend.entry(s.backend.as_str()).or_default().push(s);
    }
    let mut out = RuntimePlan::default();
    for b in desired {
        let Some(slots) = by_backend.get(b.name.as_str()) else {
            out.missing_backends.push(b.name.clone());
            continue;
        };
        let mut claimed = vec![false; slots.len()];
        let mut unplaced = Vec::new();
        let mut fills = Vec::new();
        // 1. Wanted servers already present (by address and port) keep their slot.
        for want in &b.servers {
            let at = slots
                .iter()
                .enumerate()
                .position(|(i, s)| !claimed[i] && s.addr == Some(want.ip) && s.port == want.port);
            match at {
                Some(i) => {
                    claimed[i] = true;
                    let s = slots[i];
                    let target = format!("{}/{}", b.name, s.name);
                    if let Some(p) = want.check_port {
                        if s.check_port != p {
                            out.commands
                                .push(format!("set server {target} check-port {p}"));
                        }
                    }
                    match (want.disabled, s.in_maintenance()) {
                        (true, false) => out
                            .commands
                            .push(format!("set server {target} state maint")),
                        (false, true) => {
                            if b.checks {
                                out.commands.push(format!("set server {target} health up"));
                            }
                            out.commands
                                .push(format!("set server {target} state ready"));
                        }
                        _ => {}
                    }
                }
                // Draining servers that are not running anywhere need no slot.
                None if !want.disabled => unplaced.push(want),
                None => {}
            }
        }
        // 2. Everything else running is stopped; stopped slots are free.
        let mut free = Vec::new();
        for (i, s) in slots.iter().enumerate() {
            if claimed[i] {
                continue;
            }
            if !s.in_maintenance() {
                out.commands
                    .push(format!("set server {}/{} state maint", b.name, s.name));
            }
            free.push(*s);
        }
        // 3. Unplaced servers take free slots, preferring ones that never held a task.
        free.sort_by_key(|s| s.addr.is_some());
        let mut free = free.into_iter();
        for want in unplaced {
            let Some(slot) = free.next() else {
                out.short_of_slots.push(b.name.clone());
                break;
            };
            let target = format!("{}/{}", b.name, slot.name);
            fills.push(format!(
                "set server {target} addr {} port {}",
                want.ip, want.port
            ));
            if let Some(p) = want.check_port {
                fills.push(format!("set server {target} check-port {p}"));
            }
            if b.checks {
                fills.push(format!("set server {target} health up"));
            }
            fills.push(format!("set server {target} state ready"));
        }
        out.commands.extend(fills);
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no answer in time")]
    Timeout(PathBuf),
    #[error("unexpected answer from {path}: {answer}")]
    Unexpected { path: PathBuf, answer: String },
}

/// Sends one line to a HAProxy CLI socket and reads the answer to the end.
pub async fn command(path: &Path, line: &str, timeout: Duration) -> Result<String, CliError> {
    let io = async {
        let mut s = UnixStream::connect(path).await?;
        s.write_all(line.as_bytes()).await?;
        s.write_all(b"\n").await?;
        // The master CLI answers only once the client half-closes, as socat does.
        s.shutdown().await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    tokio::time::timeout(timeout, io)
        .await
        .map_err(|_| CliError::Timeout(path.to_path_buf()))?
        .map_err(|source| CliError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// The worker's admin socket.
#[derive(Clone, Debug)]
pub struct AdminSocket {
    pub path: PathBuf,
    pub timeout: Duration,
}

impl AdminSocket {
    pub async fn servers_state(&self) -> Result<Vec<LiveServer>, CliError> {
        let text = command(&self.path, "show servers state", self.timeout).await?;
        if !text.starts_with('1') {
            return Err(CliError::Unexpected {
                path: self.path.clone(),
                answer: text.chars().take(200).collect(),
            });
        }
        Ok(parse_servers_state(&text))
    }

    /// Sends commands, several per connection (`;`-separated, within HAProxy's line buffer).
    /// Returns the lines of output that look like errors.
    pub async fn run(&self, commands: &[String]) -> Result<Vec<String>, CliError> {
        let mut errors = Vec::new();
        let mut line = String::new();
        let mut pending = 0;
        for (i, c) in commands.iter().enumerate() {
            if !line.is_empty() {
                line.push_str("; ");
            }
            line.push_str(c);
            pending += 1;
            if line.len() > 6_000 || i + 1 == commands.len() {
                let answer = command(&self.path, &line, self.timeout).await?;
                for l in answer.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    let benign = l.contains("changed from") || l.starts_with("Health check");
                    if !benign {
                        errors.push(l.to_string());
                    }
                }
                metrics::counter!(crate::metrics::RUNTIME_COMMANDS).increment(pending);
                line.clear();
                pending = 0;
            }
        }
        Ok(errors)
    }
}

/// What `show proc` on the master says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    pub master_pid: u32,
    pub reloads: u64,
    pub failed: u64,
    /// Current workers' pids.
    pub workers: Vec<u32>,
    /// Workers of earlier generations still finishing their connections.
    pub old_workers: usize,
}

/// Parses `show proc` (HAProxy 2.6).
pub fn parse_show_proc(text: &str) -> Option<ProcInfo> {
    let mut info = ProcInfo::default();
    let mut section = "";
    let mut saw_master = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("# workers") {
            section = "workers";
            continue;
        }
        if t.starts_with("# old workers") {
            section = "old";
            continue;
        }
        if t.starts_with('#') {
            if !t.starts_with("#<PID>") {
                section = "other";
            }
            continue;
        }
        let f: Vec<&str> = t.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        match (f[1], section) {
            ("master", _) => {
                saw_master = true;
                info.master_pid = f[0].parse().ok()?;
                info.reloads = f[2].parse().ok()?;
                if let Some(at) = t.find("[failed:") {
                    info.failed = t[at + 8..]
                        .trim_start()
                        .split(']')
                        .next()
                        .and_then(|n| n.trim().parse().ok())
                        .unwrap_or(0);
                }
            }
            ("worker", "workers") => info.workers.push(f[0].parse().ok()?),
            ("worker", "old") => info.old_workers += 1,
            _ => {}
        }
    }
    saw_master.then_some(info)
}

/// The master CLI (`-S`).
#[derive(Clone, Debug)]
pub struct MasterSocket {
    pub path: PathBuf,
    pub timeout: Duration,
}

impl MasterSocket {
    pub async fn show_proc(&self) -> Result<ProcInfo, CliError> {
        let text = command(&self.path, "show proc", self.timeout).await?;
        parse_show_proc(&text).ok_or_else(|| CliError::Unexpected {
            path: self.path.clone(),
            answer: text.chars().take(200).collect(),
        })
    }

    /// Asks the master to reload; the answer comes through [`MasterSocket::show_proc`].
    pub async fn reload(&self) -> Result<(), CliError> {
        // The master re-executes itself and drops the connection: an I/O error here is normal.
        match command(&self.path, "reload", self.timeout).await {
            Ok(_) | Err(CliError::Io { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::render::ServerPlan;

    const STATE: &str = "1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 web_10000 123 127_0_0_1_31000 127.0.0.1 2 0 1 1 1 1 0 2 0 0 0 1 - 31000 - 0 0 - - 0
3 web_10000 2 stride_spare_1 127.0.0.1 2 4 1 1 0 1 0 0 8 0 0 0 - 31001 - 0 0 - - 0
3 web_10000 3 stride_spare_2 0.0.0.0 0 5 1 1 1 1 0 0 8 0 0 0 - 0 - 0 0 - - 0
3 web_10000 4 stride_spare_3 0.0.0.0 0 5 1 1 1 1 0 0 8 0 0 0 - 0 - 0 0 - - 0
";

    fn want(port: u32) -> ServerPlan {
        ServerPlan {
            name: format!("127_0_0_1_{port}"),
            ip: "127.0.0.1".parse().expect("ip"),
            port,
            disabled: false,
            check_port: None,
        }
    }

    fn backend(servers: Vec<ServerPlan>) -> BackendPlan {
        BackendPlan {
            name: "web_10000".into(),
            app_id: "/web".into(),
            capacity: 4,
            checks: false,
            servers,
        }
    }

    #[test]
    fn parses_servers_state() {
        let live = parse_servers_state(STATE);
        assert_eq!(live.len(), 4);
        assert!(!live[0].in_maintenance());
        assert!(!live[1].in_maintenance(), "filled at runtime: ready");
        assert!(live[2].in_maintenance());
        assert_eq!(live[2].addr, None);
        assert_eq!(live[1].port, 31001);
    }

    #[test]
    fn plan_is_empty_when_live_matches() {
        let live = parse_servers_state(STATE);
        let p = plan(&[backend(vec![want(31000), want(31001)])], &live);
        assert_eq!(p, RuntimePlan::default());
    }

    #[test]
    fn plan_fills_free_slots_and_stops_the_rest() {
        let live = parse_servers_state(STATE);
        let p = plan(&[backend(vec![want(31001), want(31005)])], &live);
        assert_eq!(
            p.commands,
            vec![
                "set server web_10000/127_0_0_1_31000 state maint".to_string(),
                "set server web_10000/stride_spare_2 addr 127.0.0.1 port 31005".to_string(),
                "set server web_10000/stride_spare_2 state ready".to_string(),
            ]
        );
        let p = plan(
            &[backend(vec![want(1), want(2), want(3), want(4), want(5)])],
            &live,
        );
        assert_eq!(p.short_of_slots, vec!["web_10000".to_string()]);
        let mut other = backend(Vec::new());
        other.name = "api_10001".into();
        assert_eq!(plan(&[other], &live).missing_backends, ["api_10001"]);
    }

    #[test]
    fn draining_servers_go_to_maintenance() {
        let live = parse_servers_state(STATE);
        let mut draining = want(31000);
        draining.disabled = true;
        let p = plan(&[backend(vec![draining, want(31001)])], &live);
        assert_eq!(
            p.commands,
            vec!["set server web_10000/127_0_0_1_31000 state maint".to_string()]
        );
    }

    #[test]
    fn parses_show_proc() {
        let text = "#<PID>          <type>          <reloads>       <uptime>        <version>
11215           master          3 [failed: 1]   0d00h00m08s     2.6.12-1+deb12u4
# workers
12387           worker          0               0d00h00m00s     2.6.12-1+deb12u4
# old workers
12001           worker          1               0d00h00m05s     2.6.12-1+deb12u4
# programs

";
        let p = parse_show_proc(text).expect("parses");
        assert_eq!(p.master_pid, 11215);
        assert_eq!(p.reloads, 3);
        assert_eq!(p.failed, 1);
        assert_eq!(p.workers, vec![12387]);
        assert_eq!(p.old_workers, 1);
    }
}
