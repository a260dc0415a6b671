//! What the agent tells the leader about its node: identity, hostname, resources and
//! attributes. Whatever the configuration leaves open is detected here, once, at start-up.

use std::path::Path;

use crate::config::{Attributes, Config, PortRanges};
use crate::error::AgentError;
use crate::state::StateDir;

/// The node as offered to the scheduler.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NodeInfo {
    pub agent_id: String,
    pub hostname: String,
    pub cpus: f64,
    /// MiB.
    pub mem: f64,
    /// MiB.
    pub disk: f64,
    pub ports: PortRanges,
    pub attributes: Attributes,
    pub region: String,
    pub zone: String,
    /// `host:port` of the agent's own gRPC API; empty while it has none. Set once the API's
    /// listener is bound, since port 0 is only known then.
    pub api_address: String,
}

impl NodeInfo {
    pub async fn resolve(config: &Config, state: &StateDir) -> Result<Self, AgentError> {
        let agent_id = match &config.agent_id {
            Some(id) => id.clone(),
            None => state.agent_id().await?,
        };
        let hostname = match &config.hostname {
            Some(h) => h.clone(),
            None => detect_hostname()?,
        };
        let mem = match config.mem {
            Some(m) => m,
            None => detect_mem()?,
        };
        let disk = match config.disk {
            Some(d) => d,
            None => detect_disk(state.root())?,
        };
        Ok(Self {
            agent_id,
            hostname,
            cpus: config.cpus.unwrap_or_else(detect_cpus),
            mem,
            disk,
            ports: config.ports.clone(),
            attributes: config.attributes.clone(),
            region: config.region.clone().unwrap_or_default(),
            zone: config.zone.clone().unwrap_or_default(),
            api_address: String::new(),
        })
    }
}

fn detect_hostname() -> Result<String, AgentError> {
    let text =
        std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(|e| AgentError::Detect {
            what: "hostname",
            message: e.to_string(),
        })?;
    Some(text.trim().to_string())
        .filter(|h| !h.is_empty())
        .ok_or(AgentError::Detect {
            what: "hostname",
            message: "the kernel's hostname is empty".into(),
        })
}

/// The CPUs this process may run on (which honours affinity masks, unlike a count of `/proc/cpuinfo`).
fn detect_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

fn detect_mem() -> Result<f64, AgentError> {
    let text = std::fs::read_to_string("/proc/meminfo").map_err(|e| AgentError::Detect {
        what: "memory",
        message: e.to_string(),
    })?;
    parse_mem_total_mib(&text).ok_or(AgentError::Detect {
        what: "memory",
        message: "no MemTotal in /proc/meminfo".into(),
    })
}

/// `MemTotal:  24684100 kB` → MiB.
fn parse_mem_total_mib(meminfo: &str) -> Option<f64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kib / 1024) as f64)
}

fn detect_disk(work_dir: &Path) -> Result<f64, AgentError> {
    let stat = nix::sys::statvfs::statvfs(work_dir).map_err(|e| AgentError::Detect {
        what: "disk space",
        message: format!("{}: {e}", work_dir.display()),
    })?;
    let bytes = u128::from(stat.blocks_available()) * u128::from(stat.fragment_size());
    Ok((bytes / (1024 * 1024)) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_mib() {
        assert_eq!(
            parse_mem_total_mib("MemTotal:       24684100 kB\nMemFree: 1 kB\n"),
            Some(24105.0)
        );
        assert_eq!(parse_mem_total_mib("MemFree: 1 kB\n"), None);
    }

    #[tokio::test]
    async fn unset_resources_are_detected() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = StateDir::open(dir.path()).await?;
        let config = Config::for_dev(dir.path(), vec!["http://127.0.0.1:1".into()]);
        let node = NodeInfo::resolve(&config, &state).await?;
        assert!(node.cpus >= 1.0);
        assert!(node.mem > 0.0);
        assert!(!node.hostname.is_empty());
        assert_eq!(node.agent_id, state.agent_id().await?);
        Ok(())
    }
}
