//! The records Stride publishes in DNS, computed from a snapshot: a pure function, shared by
//! the embedded server ([`super::wire`]) and the RFC 2136 publisher ([`super::update`]).
//!
//! For an app `/prod/api` with label `api-prod` (see [`super::names`]), domain `mesos` and
//! framework `marathon`:
//!
//! | name | type | value |
//! |---|---|---|
//! | `api-prod.marathon.mesos` | A/AAAA | the address of every serving task (its host's, or its own with IP-per-task) |
//! | `api-prod.marathon.slave.mesos` | A/AAAA | the hosts of the serving tasks |
//! | `_api-prod._tcp.marathon.mesos` (and `_udp`, and `.slave.` variants) | SRV | `0 1 <port> <task>.marathon.mesos.` per task and port |
//! | `_<port-name>._api-prod._tcp.marathon.mesos` | SRV | the same, for one named port |
//! | `api-prod-<hash>.marathon.mesos` | A/AAAA | one task (the SRV targets) |
//! | `<host-label>.agents.mesos` | A/AAAA | one agent |
//! | `slave.mesos` | A/AAAA | every agent (Mesos-DNS had it) |
//! | `ns1.mesos` | A/AAAA | this server |
//!
//! Only serving tasks (running, healthy where checked) appear; the SOA and NS of the apex are
//! added by the server.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use sha1::{Digest, Sha1};
use stride_core::app::NetworkMode;
use stride_core::App;

use super::fasthash::FastMap;
use super::names::{app_label, label};
use crate::snapshot::{Snapshot, Task};

/// Record types lb-sync publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RType {
    A,
    Aaaa,
    Srv,
    Txt,
}

impl RType {
    pub fn code(self) -> u16 {
        match self {
            RType::A => 1,
            RType::Aaaa => 28,
            RType::Srv => 33,
            RType::Txt => 16,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RData {
    A(std::net::Ipv4Addr),
    Aaaa(std::net::Ipv6Addr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        /// Fully qualified, lower case, with the trailing dot (shared by every SRV record of
        /// the task).
        target: Arc<str>,
    },
    Txt(String),
}

impl RData {
    pub fn rtype(&self) -> RType {
        match self {
            RData::A(_) => RType::A,
            RData::Aaaa(_) => RType::Aaaa,
            RData::Srv { .. } => RType::Srv,
            RData::Txt(_) => RType::Txt,
        }
    }

    fn address(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => RData::A(v4),
            IpAddr::V6(v6) => RData::Aaaa(v6),
        }
    }
}

/// Every published record set: (owner name, type) → sorted, distinct data. Owner names are
/// lower case and fully qualified with the trailing dot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    pub sets: FastMap<(String, RType), Vec<RData>>,
}

impl Records {
    fn add_all(&mut self, name: String, data: impl IntoIterator<Item = RData>) {
        let mut data = data.into_iter().peekable();
        let Some(first) = data.peek().map(RData::rtype) else {
            return;
        };
        // Usually one type: one entry, the name moved rather than cloned.
        let (same, other): (Vec<RData>, Vec<RData>) = data.partition(|d| d.rtype() == first);
        for d in other {
            self.sets
                .entry((name.clone(), d.rtype()))
                .or_default()
                .push(d);
        }
        self.sets.entry((name, first)).or_default().extend(same);
    }

    /// Sorts and de-duplicates every set (after building).
    fn normalise(&mut self) {
        for set in self.sets.values_mut() {
            set.sort_unstable();
            set.dedup();
        }
    }
}

/// What [`records`] needs from the configuration.
#[derive(Clone, Debug)]
pub struct ZoneOptions {
    /// The apex, fully qualified (`mesos.`).
    pub domain: String,
    /// `marathon`.
    pub framework: String,
    pub ns_address: IpAddr,
}

/// The records of a snapshot.
pub fn records(snapshot: &Snapshot, opts: &ZoneOptions) -> Records {
    let mut out = Records::default();
    let domain = &opts.domain;
    let fw = label(&opts.framework);
    // Per app, the sets are gathered locally and added once each.
    let mut app_a: Vec<RData> = Vec::new();
    let mut slave_a: Vec<RData> = Vec::new();
    let mut srv: FastMap<String, Vec<RData>> = FastMap::default();
    let mut name = String::new();
    for entry in &snapshot.apps {
        let app = &entry.app;
        let l = app_label(&app.id);
        if l.is_empty() {
            continue;
        }
        let ports = port_meta(app);
        app_a.clear();
        slave_a.clear();
        srv.clear();
        for task in &entry.tasks {
            let canonical: Arc<str> = format!("{l}-{}.{fw}.{domain}", task_hash(task)).into();
            let mut canonical_a = Vec::new();
            if let Some(ip) = task_address(app, task) {
                app_a.push(RData::address(ip));
                canonical_a.push(RData::address(ip));
            }
            if let Some(ip) = task.host_ip {
                slave_a.push(RData::address(ip));
            }
            for (index, (protocols, port_name)) in ports.iter().enumerate() {
                let Some((ip, port)) = task.endpoint(app, index) else {
                    continue;
                };
                let Ok(port) = u16::try_from(port) else {
                    continue;
                };
                // The SRV target must resolve to the endpoint's address.
                canonical_a.push(RData::address(ip));
                let record = RData::Srv {
                    priority: 0,
                    weight: 1,
                    port,
                    target: canonical.clone(),
                };
                for proto in protocols {
                    for slave in ["", "slave."] {
                        name.clear();
                        let _ = write!(name, "_{l}._{proto}.{fw}.{slave}{domain}");
                        srv.entry(name.clone()).or_default().push(record.clone());
                    }
                    if let Some(pn) = port_name {
                        name.clear();
                        let _ = write!(name, "_{pn}._{l}._{proto}.{fw}.{domain}");
                        srv.entry(name.clone()).or_default().push(record.clone());
                    }
                }
            }
            if !canonical_a.is_empty() {
                out.add_all(canonical.to_string(), canonical_a);
            }
        }
        if !app_a.is_empty() {
            out.add_all(format!("{l}.{fw}.{domain}"), app_a.drain(..));
        }
        if !slave_a.is_empty() {
            out.add_all(format!("{l}.{fw}.slave.{domain}"), slave_a.drain(..));
        }
        for (n, records) in srv.drain() {
            out.add_all(n, records);
        }
    }
    for agent in &snapshot.agents {
        let Some(ip) = agent.ip else { continue };
        let l = label(&agent.hostname);
        if !l.is_empty() {
            out.add_all(format!("{l}.agents.{domain}"), [RData::address(ip)]);
        }
        out.add_all(format!("slave.{domain}"), [RData::address(ip)]);
    }
    out.add_all(format!("ns1.{domain}"), [RData::address(opts.ns_address)]);
    out.normalise();
    out
}

/// The address of a task for its app's A record: its own under IP-per-task networking, its
/// host's otherwise.
fn task_address(app: &App, task: &Task) -> Option<IpAddr> {
    if app.network_mode() == NetworkMode::Container {
        if let Some(ip) = task.ip_addresses.first() {
            return Some(*ip);
        }
    }
    task.host_ip
}

/// A short stable tag of a task, for its canonical name.
fn task_hash(task: &Task) -> String {
    let digest = Sha1::digest(task.id.as_bytes());
    digest[..3].iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Per port (in the app's port order): the protocols (`tcp`, `udp`) and the mangled name.
fn port_meta(app: &App) -> Vec<(Vec<&'static str>, Option<String>)> {
    let protocols = |p: &str| {
        let mut v = Vec::new();
        if p.contains("tcp") || p.is_empty() {
            v.push("tcp");
        }
        if p.contains("udp") {
            v.push("udp");
        }
        v
    };
    let name = |n: &Option<String>| n.as_deref().map(label).filter(|l| !l.is_empty());
    match app.network_mode() {
        NetworkMode::Host => app
            .port_definitions
            .iter()
            .flatten()
            .map(|p| (protocols(&p.protocol), name(&p.name)))
            .collect(),
        _ => app
            .container
            .iter()
            .flat_map(|c| c.port_mappings.iter().flatten())
            .map(|m| (protocols(&m.protocol), name(&m.name)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{AgentEntry, AppEntry};

    fn opts() -> ZoneOptions {
        ZoneOptions {
            domain: "mesos.".into(),
            framework: "marathon".into(),
            ns_address: "127.0.0.1".parse().expect("ip"),
        }
    }

    fn task(id: &str, ip: &str, ports: &[u32]) -> Task {
        Task {
            id: id.into(),
            host: ip.into(),
            host_ip: ip.parse().ok(),
            ip_addresses: Vec::new(),
            ports: ports.to_vec(),
        }
    }

    #[test]
    fn apps_get_a_and_srv_records_under_their_reversed_path() {
        let mut app: App = serde_json::from_value(serde_json::json!({
            "id": "/prod/api", "cmd": "x",
            "portDefinitions": [{"port": 10000, "name": "http"}, {"port": 10001, "protocol": "udp"}]
        }))
        .expect("app");
        app.normalize();
        let snap = Snapshot {
            apps: vec![AppEntry {
                app,
                tasks: vec![
                    task("t1", "10.0.0.1", &[31000, 31001]),
                    task("t2", "10.0.0.2", &[31002, 31003]),
                ],
            }],
            agents: vec![AgentEntry {
                id: "a1".into(),
                hostname: "node1.example.com".into(),
                ip: "10.0.0.1".parse().ok(),
            }],
        };
        let r = records(&snap, &opts());
        let a = &r.sets[&("api-prod.marathon.mesos.".to_string(), RType::A)];
        assert_eq!(a.len(), 2);
        let srv = &r.sets[&("_api-prod._tcp.marathon.mesos.".to_string(), RType::Srv)];
        let ports: Vec<u16> = srv
            .iter()
            .map(|s| match s {
                RData::Srv { port, .. } => *port,
                _ => 0,
            })
            .collect();
        assert_eq!(ports.len(), 2);
        assert!(ports.contains(&31000) && ports.contains(&31002));
        assert!(r
            .sets
            .contains_key(&("_api-prod._udp.marathon.mesos.".to_string(), RType::Srv)));
        assert!(r.sets.contains_key(&(
            "_http._api-prod._tcp.marathon.mesos.".to_string(),
            RType::Srv
        )));
        for s in srv {
            if let RData::Srv { target, .. } = s {
                assert!(
                    r.sets.contains_key(&(target.to_string(), RType::A)),
                    "{target}"
                );
            }
        }
        assert!(r
            .sets
            .contains_key(&("node1-example-com.agents.mesos.".to_string(), RType::A)));
        assert!(r.sets.contains_key(&("slave.mesos.".to_string(), RType::A)));
    }
}
