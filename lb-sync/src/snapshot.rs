//! The world as lb-sync publishes it: every app with the instances that may receive traffic,
//! and the agents, read from the store in one go.
//!
//! [`build`] is pure (store records in, [`Snapshot`] out) and holds the one rule both HAProxy
//! and DNS follow, [`is_serving`]: an instance gets traffic when it is Running, meant to keep
//! running, and healthy — `healthy == Some(true)` where its app has Marathon-level health
//! checks, merely Running where it has none. [`Loader`] reads the store and resolves agent
//! hostnames; a failed read is an error, never an empty snapshot, so that an unreachable store
//! leaves the last good configuration in place.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use stride_core::agent::AgentRecord;
use stride_core::app::NetworkMode;
use stride_core::instance::{Condition, Goal, Instance};
use stride_core::App;
use stride_store::{collections, StateStore, StoreError};

/// Apps and agents at one moment. Apps are sorted by id, tasks by id, agents by hostname, so
/// that equal states compare equal and render identically.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub apps: Vec<AppEntry>,
    pub agents: Vec<AgentEntry>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AppEntry {
    pub app: App,
    /// The instances that may receive traffic ([`is_serving`]).
    pub tasks: Vec<Task>,
}

/// One serving instance, with what publishing needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// The instance id (stable across task incarnations).
    pub id: String,
    /// The agent's hostname, as placed (shared: every service port of the task names it).
    pub host: Arc<str>,
    /// `host` resolved; `None` when it does not resolve (the task is then left out).
    pub host_ip: Option<IpAddr>,
    /// The task's own addresses (IP-per-task networking).
    pub ip_addresses: Vec<IpAddr>,
    /// Host ports, in the app's port order.
    pub ports: Vec<u32>,
}

impl Task {
    /// Where a client reaches port `index` of this task: the agent and the host port, or for
    /// IP-per-task apps without host ports the task's own address and container port.
    pub fn endpoint(&self, app: &App, index: usize) -> Option<(IpAddr, u32)> {
        if app.network_mode() == NetworkMode::Container {
            let mapping = app
                .container
                .as_ref()
                .and_then(|c| c.port_mappings.as_ref())
                .and_then(|m| m.get(index))?;
            if mapping.host_port.is_none() {
                let ip = *self.ip_addresses.first()?;
                let port = u32::try_from(mapping.container_port).ok()?;
                return (port > 0).then_some((ip, port));
            }
            // Host ports are numbered among the mappings that have one.
            let host_index = app
                .container
                .as_ref()
                .and_then(|c| c.port_mappings.as_ref())
                .map(|m| m[..index].iter().filter(|m| m.host_port.is_some()).count())?;
            return Some((self.host_ip?, *self.ports.get(host_index)?));
        }
        Some((self.host_ip?, *self.ports.get(index)?))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct AgentEntry {
    pub id: String,
    pub hostname: String,
    pub ip: Option<IpAddr>,
}

/// Whether `inst` of `app` may receive traffic.
pub fn is_serving(app: &App, inst: &Instance) -> bool {
    if inst.condition != Condition::Running || inst.goal != Goal::Running {
        return false;
    }
    if inst.placement.is_none() {
        return false;
    }
    let healthy = inst
        .healthy
        .or_else(|| (!inst.health.is_empty()).then(|| inst.health.iter().all(|h| h.alive)));
    if app.health_checks.iter().any(|h| h.is_marathon_level()) {
        healthy == Some(true)
    } else {
        // Checks run elsewhere (COMMAND, MESOS_*) still veto an instance they found unhealthy.
        healthy != Some(false)
    }
}

/// Builds a snapshot from store records. `resolve` maps an agent hostname to an address.
pub fn build(
    mut apps: Vec<App>,
    instances: Vec<Instance>,
    agents: Vec<AgentRecord>,
    resolve: &dyn Fn(&str) -> Option<IpAddr>,
) -> Snapshot {
    apps.sort_by(|a, b| a.id.cmp(&b.id));
    let mut by_app: HashMap<String, Vec<Instance>> = HashMap::new();
    for inst in instances {
        by_app
            .entry(inst.app_id.to_string())
            .or_default()
            .push(inst);
    }
    let apps = apps
        .into_iter()
        .map(|app| {
            let mut tasks: Vec<Task> = by_app
                .remove(&app.id.to_string())
                .unwrap_or_default()
                .into_iter()
                .filter(|i| is_serving(&app, i))
                .filter_map(|i| {
                    let placement = i.placement?;
                    Some(Task {
                        id: i.id.0,
                        host_ip: resolve(&placement.hostname),
                        host: placement.hostname.into(),
                        ip_addresses: i
                            .ip_addresses
                            .iter()
                            .filter_map(|a| a.parse().ok())
                            .collect(),
                        ports: i.host_ports,
                    })
                })
                .collect();
            tasks.sort_by(|a, b| a.id.cmp(&b.id));
            AppEntry { app, tasks }
        })
        .collect();
    let mut agents: Vec<AgentEntry> = agents
        .into_iter()
        .map(|a| AgentEntry {
            ip: resolve(&a.hostname),
            id: a.agent_id,
            hostname: a.hostname,
        })
        .collect();
    agents.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
    Snapshot { apps, agents }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
}

/// Reads snapshots from the store, resolving hostnames through a small cache.
#[derive(Clone)]
pub struct Loader {
    store: Arc<dyn StateStore>,
    timeout: Duration,
    resolver: Resolver,
}

impl Loader {
    pub fn new(store: Arc<dyn StateStore>, timeout: Duration) -> Self {
        Self {
            store,
            timeout,
            resolver: Resolver::default(),
        }
    }

    /// One consistent-enough read: apps, instances and agents. Entries that do not parse are
    /// skipped with a warning (one corrupt record must not unpublish everything else).
    pub async fn load(&self) -> Result<Snapshot, LoadError> {
        let read = async {
            let apps = self.store.get_all(collections::APPS).await?;
            let instances = self.store.get_all(collections::INSTANCES).await?;
            let agents = self.store.get_all(collections::AGENTS).await?;
            Ok::<_, StoreError>((apps, instances, agents))
        };
        let (apps, instances, agents) = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| LoadError::Timeout(self.timeout))??;
        let apps: Vec<App> = parse_all(collections::APPS, apps)
            .into_iter()
            .map(|mut a: App| {
                a.normalize();
                a
            })
            .collect();
        let instances: Vec<Instance> = parse_all(collections::INSTANCES, instances);
        let agents: Vec<AgentRecord> = parse_all(collections::AGENTS, agents);
        let mut hosts: Vec<&str> = instances
            .iter()
            .filter_map(|i| i.placement.as_ref().map(|p| p.hostname.as_str()))
            .chain(agents.iter().map(|a| a.hostname.as_str()))
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        self.resolver.refresh(&hosts).await;
        let resolved = self.resolver.table();
        Ok(build(apps, instances, agents, &|h| {
            h.parse::<IpAddr>()
                .ok()
                .or_else(|| resolved.get(h).copied().flatten())
        }))
    }
}

fn parse_all<T: serde::de::DeserializeOwned>(
    collection: &str,
    entries: Vec<(String, bytes::Bytes)>,
) -> Vec<T> {
    entries
        .into_iter()
        .filter_map(|(key, value)| match serde_json::from_slice(&value) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(collection, key = %key, error = %e, "skipping a record that does not parse");
                metrics::counter!(crate::metrics::CORRUPT_RECORDS).increment(1);
                None
            }
        })
        .collect()
}

/// Hostname → address, refreshed at most once a minute per name. A failed refresh keeps the
/// last answer: a resolver hiccup must not drop backends.
/// A hostname's address (if it resolved) and when it was looked up.
type Resolved = (Option<IpAddr>, Instant);

#[derive(Clone, Default)]
struct Resolver {
    cache: Arc<Mutex<HashMap<String, Resolved>>>,
}

const RESOLVE_TTL: Duration = Duration::from_secs(60);

impl Resolver {
    async fn refresh(&self, hosts: &[&str]) {
        let stale: Vec<String> = {
            let cache = self.cache.lock();
            hosts
                .iter()
                .filter(|h| h.parse::<IpAddr>().is_err())
                .filter(|h| {
                    cache
                        .get(**h)
                        .is_none_or(|(_, at)| at.elapsed() > RESOLVE_TTL)
                })
                .map(|h| h.to_string())
                .collect()
        };
        for host in stale {
            let lookup = tokio::net::lookup_host((host.as_str(), 0));
            let found = match tokio::time::timeout(Duration::from_secs(2), lookup).await {
                Ok(Ok(addrs)) => {
                    let addrs: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    addrs
                        .iter()
                        .find(|a| a.is_ipv4())
                        .or(addrs.first())
                        .copied()
                }
                _ => None,
            };
            let mut cache = self.cache.lock();
            let previous = cache.get(&host).and_then(|(ip, _)| *ip);
            if found.is_none() && previous.is_some() {
                tracing::warn!(host = %host, "hostname no longer resolves; keeping its last address");
            }
            cache.insert(host, (found.or(previous), Instant::now()));
        }
    }

    fn table(&self) -> HashMap<String, Option<IpAddr>> {
        self.cache
            .lock()
            .iter()
            .map(|(h, (ip, _))| (h.clone(), *ip))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stride_core::instance::{HealthRecord, Placement};
    use stride_core::{PathId, Timestamp};

    fn instance(app: &str, condition: Condition, healthy: Option<bool>) -> Instance {
        let mut i = Instance::scheduled(&PathId::parse(app), Timestamp(0), Timestamp(0));
        i.condition = condition;
        i.incarnation = 1;
        i.placement = Some(Placement {
            agent_id: "a1".into(),
            hostname: "10.0.0.1".into(),
            attributes: Vec::new(),
        });
        i.host_ports = vec![31000];
        i.healthy = healthy;
        i
    }

    fn app_with_http_check(id: &str) -> App {
        let mut app: App = serde_json::from_value(serde_json::json!({
            "id": id, "cmd": "x", "healthChecks": [{"protocol": "HTTP"}]
        }))
        .expect("app");
        app.normalize();
        app
    }

    #[test]
    fn serving_needs_running_and_health_where_checked() {
        let plain = App::new("/web");
        assert!(is_serving(
            &plain,
            &instance("/web", Condition::Running, None)
        ));
        assert!(!is_serving(
            &plain,
            &instance("/web", Condition::Staging, None)
        ));
        let mut stopping = instance("/web", Condition::Running, None);
        stopping.goal = Goal::Decommissioned;
        assert!(!is_serving(&plain, &stopping));

        let checked = app_with_http_check("/web");
        assert!(!is_serving(
            &checked,
            &instance("/web", Condition::Running, None)
        ));
        assert!(!is_serving(
            &checked,
            &instance("/web", Condition::Running, Some(false))
        ));
        assert!(is_serving(
            &checked,
            &instance("/web", Condition::Running, Some(true))
        ));
        let mut by_records = instance("/web", Condition::Running, None);
        by_records.health = vec![HealthRecord {
            alive: true,
            ..HealthRecord::default()
        }];
        assert!(is_serving(&checked, &by_records));
    }

    #[test]
    fn build_keeps_serving_tasks_sorted_and_resolved() {
        let apps = vec![App::new("/b"), App::new("/a")];
        let mut i2 = instance("/a", Condition::Running, None);
        i2.id.0 = "a.instance-2".into();
        let mut i1 = instance("/a", Condition::Running, None);
        i1.id.0 = "a.instance-1".into();
        let dead = instance("/b", Condition::Killed, None);
        let snap = build(apps, vec![i2, dead, i1], Vec::new(), &|h| h.parse().ok());
        assert_eq!(snap.apps[0].app.id.to_string(), "/a");
        let ids: Vec<&str> = snap.apps[0].tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a.instance-1", "a.instance-2"]);
        assert!(snap.apps[1].tasks.is_empty());
        assert_eq!(
            snap.apps[0].tasks[0].endpoint(&snap.apps[0].app, 0),
            Some(("10.0.0.1".parse().expect("ip"), 31000))
        );
    }
}
