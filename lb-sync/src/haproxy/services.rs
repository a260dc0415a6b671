//! From apps to load-balanced services, marathon-lb's way: one [`Service`] per app service
//! port that this load balancer serves, with its `HAPROXY_*` labels parsed and its servers
//! (the serving tasks) listed.
//!
//! Blue/green pairs (`HAPROXY_DEPLOYMENT_GROUP`) merge here: both apps become one service under
//! the group's id, the older app's definition and ports winning, and as many of the old app's
//! tasks as there are healthy new ones are marked draining (see [`merge_pair`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use stride_core::App;
use stride_core::Timestamp;

use crate::snapshot::{Snapshot, Task};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Http,
    Tcp,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::Tcp => "tcp",
        }
    }
}

/// The Marathon health check that applies to a service port, as HAProxy needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckSpec {
    pub protocol: String,
    pub path: String,
    pub port: Option<u32>,
    pub interval_seconds: i64,
    pub timeout_seconds: i64,
    pub max_consecutive_failures: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    pub realm: String,
    pub user: String,
    pub password: String,
}

/// One backend server: a task's endpoint for this service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub host: Arc<str>,
    pub ip: IpAddr,
    pub port: u32,
    /// Blue/green: an old task being replaced; kept in the backend but sent no new traffic.
    pub draining: bool,
    /// `HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX`: the port HAProxy checks on this server.
    pub check_port: Option<u32>,
}

/// One app service port as HAProxy serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// `<app id without the leading slash, / → _>_<port>`: the frontend and backend name.
    pub backend: String,
    /// The app id (the deployment group's, for blue/green pairs), with its leading `/`.
    pub app_id: String,
    /// The port the frontend binds (`HAPROXY_{n}_PORT` or the service port).
    pub service_port: u32,
    /// `HAPROXY_{n}_VHOST`, split at commas, lower case.
    pub vhosts: Vec<String>,
    pub path: Option<String>,
    pub mode: Mode,
    pub balance: String,
    pub bind_addr: String,
    pub bind_options: Option<String>,
    pub ssl_cert: Option<String>,
    pub sticky: bool,
    pub redirect_to_https: bool,
    pub use_hsts: bool,
    pub auth: Option<Auth>,
    pub backend_weight: i64,
    pub network_allowed: Option<String>,
    pub proxypath: Option<String>,
    pub revproxypath: Option<String>,
    pub redirpath: Option<String>,
    pub health_check: Option<HealthCheckSpec>,
    pub healthcheck_port_index: Option<usize>,
    /// Per-port template overrides (`HAPROXY_{n}_FRONTEND_HEAD`, …), by template name.
    pub templates: BTreeMap<String, String>,
    /// Sorted by (host, port), as marathon-lb sorts them.
    pub servers: Vec<Server>,
}

impl Service {
    /// `<app id without the leading slash, / → _>_<port>`: the frontend and backend name.
    pub fn backend_name(&self) -> String {
        self.backend.clone()
    }
}

/// Which services this load balancer serves.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    pub groups: Vec<String>,
    pub default_group: String,
    pub strict_mode: bool,
    pub default_bind_addr: String,
    pub skip_app_ids: Vec<String>,
}

/// Template names that may be overridden per port with `HAPROXY_{n}_<NAME>`.
pub const OVERRIDABLE_TEMPLATES: [&str; 5] = [
    "FRONTEND_HEAD",
    "BACKEND_HEAD",
    "FRONTEND_BACKEND_GLUE",
    "BACKEND_HTTP_OPTIONS",
    "BACKEND_STICKY_OPTIONS",
];

fn sorted(out: Vec<Service>) -> Vec<Service> {
    let mut order: Vec<usize> = (0..out.len()).collect();
    order.sort_by(|&a, &b| {
        (&out[a].app_id, out[a].service_port).cmp(&(&out[b].app_id, out[b].service_port))
    });
    let mut slots: Vec<Option<Service>> = out.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// `/prod/web`, 10000 → `prod_web_10000`.
fn backend_name(app_id: &str, port: u32) -> String {
    let id = app_id.trim_start_matches('/');
    let mut out = String::with_capacity(id.len() + 6);
    out.extend(id.chars().map(|c| if c == '/' { '_' } else { c }));
    out.push('_');
    let _ = std::fmt::Write::write_fmt(&mut out, format_args!("{port}"));
    out
}

/// marathon-lb's reading of a boolean label: `true`, `t`, `yes`, `y` in any case (so `1` is
/// false, as there).
fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "t" | "yes" | "y"
    )
}

/// A task of a (possibly merged) app, with the app whose port layout it has.
struct MemberTask<'a> {
    owner: &'a App,
    task: &'a Task,
    draining: bool,
}

/// An app as the load balancer sees it: blue/green pairs merged.
struct LbApp<'a> {
    id: String,
    def: &'a App,
    tasks: Vec<MemberTask<'a>>,
}

/// `HAPROXY_DEPLOYMENT_STARTED_AT` in milliseconds: ISO 8601 with an offset, or without one
/// (as zdd wrote it, Python's `isoformat()`), taken as UTC. Missing or unreadable sorts first.
fn started_at(app: &App) -> i64 {
    let Some(raw) = app.labels.get("HAPROXY_DEPLOYMENT_STARTED_AT") else {
        return i64::MIN;
    };
    if let Ok(t) = Timestamp::parse(raw) {
        return t.millis();
    }
    chrono::NaiveDateTime::parse_from_str(raw.trim(), "%Y-%m-%dT%H:%M:%S%.f")
        .map_or(i64::MIN, |t| t.and_utc().timestamp_millis())
}

fn last_scaling_at(app: &App) -> i64 {
    app.version_info
        .as_ref()
        .map_or(i64::MIN, |v| v.last_scaling_at.millis())
}

/// Merges two apps of one deployment group (marathon-lb's rule): the app deployed earlier
/// (`HAPROXY_DEPLOYMENT_STARTED_AT`) is old, its definition wins; in hybrid mode
/// (`HAPROXY_DEPLOYMENT_NEW_INSTANCES` non-zero) the one scaled later is old. Then
/// `min(old tasks, healthy new, max(0, healthy new + old instances − target))` old tasks are
/// drained, where target is `HAPROXY_DEPLOYMENT_TARGET_INSTANCES` in hybrid mode and 1
/// otherwise — so each healthy new task takes one old task's place, and the traffic share of
/// each colour follows its count of live tasks. Unlike marathon-lb, "healthy new" counts the
/// new tasks actually serving even without health checks, never the instances merely asked for.
fn merge_pair<'a>(prev: LbApp<'a>, cur: LbApp<'a>) -> LbApp<'a> {
    let (mut old, mut new) = if started_at(prev.def) < started_at(cur.def) {
        (prev, cur)
    } else {
        (cur, prev)
    };
    let hybrid = new
        .def
        .labels
        .get("HAPROXY_DEPLOYMENT_NEW_INSTANCES")
        .and_then(|v| v.trim().parse::<i64>().ok());
    let target = if let Some(n) = hybrid {
        if n != 0 && last_scaling_at(old.def) > last_scaling_at(new.def) {
            std::mem::swap(&mut old, &mut new);
        }
        new.def
            .labels
            .get("HAPROXY_DEPLOYMENT_TARGET_INSTANCES")
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(1)
    } else {
        1
    };
    let healthy_new = new.tasks.iter().filter(|t| !t.draining).count() as i64;
    let max_drainable = (healthy_new + old.def.instances - target).max(0);
    let drain = (old.tasks.len() as i64).min(healthy_new).min(max_drainable);
    old.tasks.sort_by(|a, b| a.task.id.cmp(&b.task.id));
    for t in old.tasks.iter_mut().take(drain.max(0) as usize) {
        t.draining = true;
    }
    old.tasks.extend(new.tasks);
    old
}

fn health_check_for(app: &App, index: usize) -> Option<HealthCheckSpec> {
    app.health_checks
        .iter()
        .filter(|h| h.uses_port())
        .find(|h| h.port.is_some() || h.port_index == Some(index as i64))
        .map(|h| HealthCheckSpec {
            protocol: h.protocol.clone(),
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            port: h
                .port
                .and_then(|p| u32::try_from(p).ok())
                .filter(|p| *p > 0),
            interval_seconds: h.interval_seconds,
            timeout_seconds: h.timeout_seconds,
            max_consecutive_failures: h.max_consecutive_failures,
        })
}

/// A port's own health check makes it an HTTP service only when it is a Marathon `HTTP` check
/// (marathon-lb's rule: `MESOS_HTTP` and `HTTPS` leave the mode to the labels).
fn is_http_check(h: &HealthCheckSpec) -> bool {
    h.protocol == "HTTP"
}

/// A check borrowed through `HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX` makes the port an HTTP
/// service for any HTTP-family protocol (marathon-lb's wider rule for that label).
fn is_http_family_check(h: &HealthCheckSpec) -> bool {
    matches!(
        h.protocol.as_str(),
        "HTTP" | "HTTPS" | "MESOS_HTTP" | "MESOS_HTTPS"
    )
}

/// The services of a snapshot this load balancer serves, sorted by (app id, service port).
pub fn services(snapshot: &Snapshot, opts: &ServiceOptions) -> Vec<Service> {
    let serve_all = opts.groups.iter().any(|g| g == "*");
    // Pass 1: merge deployment groups.
    let mut lb_apps: Vec<LbApp<'_>> = Vec::new();
    let mut groups: HashMap<String, usize> = HashMap::new();
    for entry in &snapshot.apps {
        let app = &entry.app;
        let tasks = entry
            .tasks
            .iter()
            .map(|t| MemberTask {
                owner: app,
                task: t,
                draining: false,
            })
            .collect();
        match app.labels.get("HAPROXY_DEPLOYMENT_GROUP") {
            Some(group) if !group.trim().is_empty() => {
                let id = if group.starts_with('/') {
                    group.trim().to_string()
                } else {
                    format!("/{}", group.trim())
                };
                let cur = LbApp {
                    id: id.clone(),
                    def: app,
                    tasks,
                };
                match groups.get(&id) {
                    Some(&at) => {
                        let prev = std::mem::replace(
                            &mut lb_apps[at],
                            LbApp {
                                id: String::new(),
                                def: app,
                                tasks: Vec::new(),
                            },
                        );
                        lb_apps[at] = merge_pair(prev, cur);
                    }
                    None => {
                        groups.insert(id, lb_apps.len());
                        lb_apps.push(cur);
                    }
                }
            }
            _ => lb_apps.push(LbApp {
                id: app.id.to_string(),
                def: app,
                tasks,
            }),
        }
    }

    // Pass 2: one service per service port.
    let mut out = Vec::with_capacity(lb_apps.len());
    for lb in &lb_apps {
        if opts
            .skip_app_ids
            .iter()
            .any(|s| s.trim_start_matches('/') == lb.id.trim_start_matches('/'))
        {
            continue;
        }
        let labels = &lb.def.labels;
        let app_groups: Vec<&str> = match labels.get("HAPROXY_GROUP") {
            Some(g) => g.split(',').map(str::trim).collect(),
            None if !opts.default_group.is_empty() => vec![opts.default_group.as_str()],
            None => Vec::new(),
        };
        // `HAPROXY_{n}_{NAME}` labels, read in one pass: (n, NAME, value).
        let port_labels: Vec<(usize, &str, &str)> = labels
            .iter()
            .filter_map(|(k, v)| {
                let (n, name) = k.strip_prefix("HAPROXY_")?.split_once('_')?;
                Some((n.parse().ok()?, name, v.as_str()))
            })
            .collect();
        for (i, port) in lb.def.service_ports().into_iter().enumerate() {
            let label = |name: &str| {
                port_labels
                    .iter()
                    .find(|(n, l, _)| *n == i && *l == name)
                    .map(|(_, _, v)| *v)
            };
            let service_port = match label("PORT").and_then(|p| p.trim().parse::<u32>().ok()) {
                Some(p) => p,
                None => match u32::try_from(port) {
                    Ok(p) if p > 0 => p,
                    _ => continue,
                },
            };
            let in_group = |g: &str| opts.groups.iter().any(|mine| mine == g);
            let served = match label("GROUP") {
                Some(g) => g.split(',').map(str::trim).any(in_group),
                None => app_groups.iter().copied().any(in_group),
            };
            if !serve_all && !served {
                continue;
            }
            let enabled = match label("ENABLED") {
                Some(v) => truthy(v),
                None => !opts.strict_mode,
            };
            if !enabled {
                continue;
            }
            let mut health_check = health_check_for(lb.def, i);
            let healthcheck_port_index = label("BACKEND_HEALTHCHECK_PORT_INDEX")
                .and_then(|v| v.trim().parse::<usize>().ok());
            let mut mode = health_check
                .as_ref()
                .filter(|h| is_http_check(h))
                .map(|_| Mode::Http);
            let path = label("PATH").map(str::to_string);
            let mut backend_weight = 0;
            if path.is_some() {
                backend_weight = 1;
            }
            if let Some(w) = label("BACKEND_WEIGHT").and_then(|w| w.trim().parse::<i64>().ok()) {
                backend_weight = w;
            }
            if let Some(m) = label("MODE") {
                match m.trim().to_ascii_lowercase().as_str() {
                    "http" => mode = Some(Mode::Http),
                    "tcp" => mode = Some(Mode::Tcp),
                    _ => {}
                }
            }
            if health_check.is_none() {
                if let Some(k) = healthcheck_port_index {
                    health_check = health_check_for(lb.def, k);
                    if health_check.as_ref().is_some_and(is_http_family_check) {
                        mode = Some(Mode::Http);
                    }
                }
            }
            let vhosts: Vec<String> = label("VHOST")
                .map(|v| {
                    v.split(',')
                        .map(|h| h.trim().to_ascii_lowercase())
                        .filter(|h| !h.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let mode = mode.unwrap_or(if vhosts.is_empty() {
                Mode::Tcp
            } else {
                Mode::Http
            });
            let auth = label("AUTH").and_then(|v| {
                let mut parts = v.splitn(3, ':');
                Some(Auth {
                    realm: parts.next()?.to_string(),
                    user: parts.next()?.to_string(),
                    password: parts.next()?.to_string(),
                })
            });
            let mut templates = BTreeMap::new();
            for t in OVERRIDABLE_TEMPLATES {
                if let Some(v) = label(t) {
                    templates.insert(t.to_string(), v.replace("\r\n", "\n"));
                }
            }
            let mut servers: Vec<Server> = lb
                .tasks
                .iter()
                .filter_map(|m| {
                    let (ip, port) = m.task.endpoint(m.owner, i)?;
                    let check_port = healthcheck_port_index
                        .and_then(|k| m.task.endpoint(m.owner, k))
                        .map(|(_, p)| p);
                    Some(Server {
                        host: m.task.host.clone(),
                        ip,
                        port,
                        draining: m.draining,
                        check_port,
                    })
                })
                .collect();
            servers.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
            servers.dedup_by(|a, b| a.host == b.host && a.ip == b.ip && a.port == b.port);
            out.push(Service {
                backend: backend_name(&lb.id, service_port),
                app_id: lb.id.clone(),
                service_port,
                vhosts,
                path,
                mode,
                balance: label("BALANCE")
                    .map(|b| b.trim().to_string())
                    .filter(|b| !b.is_empty())
                    .unwrap_or_else(|| "roundrobin".into()),
                bind_addr: label("BIND_ADDR")
                    .map(|b| b.trim().to_string())
                    .unwrap_or_else(|| opts.default_bind_addr.clone()),
                bind_options: label("BIND_OPTIONS").map(str::to_string),
                ssl_cert: label("SSL_CERT").map(str::to_string),
                sticky: label("STICKY").is_some_and(truthy),
                redirect_to_https: label("REDIRECT_TO_HTTPS").is_some_and(truthy),
                use_hsts: label("USE_HSTS").is_some_and(truthy),
                auth,
                backend_weight,
                network_allowed: label("BACKEND_NETWORK_ALLOWED_ACL").map(str::to_string),
                proxypath: label("HTTP_BACKEND_PROXYPASS_PATH").map(str::to_string),
                revproxypath: label("HTTP_BACKEND_REVPROXY_PATH").map(str::to_string),
                redirpath: label("HTTP_BACKEND_REDIR").map(str::to_string),
                health_check,
                healthcheck_port_index,
                templates,
                servers,
            });
        }
    }
    // Usually sorted already (the snapshot is). Otherwise sort by index: services are large,
    // moving them around costs more than comparing.
    if !out.is_sorted_by(|a, b| (&a.app_id, a.service_port) <= (&b.app_id, b.service_port)) {
        out = sorted(out);
    }
    let mut bound = HashSet::new();
    // Two services binding one port (a `HAPROXY_{n}_PORT` clash): HAProxy could not bind
    // both, and `haproxy -c` would not notice. The first keeps the port.
    out.retain(|s| {
        let first = bound.insert(s.service_port);
        if !first {
            tracing::warn!(app_id = %s.app_id, port = s.service_port, "service port already bound by another app; left out");
        }
        first
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::AppEntry;

    fn app(json: serde_json::Value) -> App {
        let mut a: App = serde_json::from_value(json).expect("app");
        a.normalize();
        a
    }

    fn task(id: &str, host: &str, port: u32) -> Task {
        Task {
            id: id.into(),
            host: host.into(),
            host_ip: host.parse().ok(),
            ip_addresses: Vec::new(),
            ports: vec![port],
        }
    }

    fn opts() -> ServiceOptions {
        ServiceOptions {
            groups: vec!["external".into()],
            default_group: "external".into(),
            strict_mode: false,
            default_bind_addr: "*".into(),
            skip_app_ids: Vec::new(),
        }
    }

    #[test]
    fn labels_shape_the_service() {
        let a = app(serde_json::json!({
            "id": "/prod/web", "cmd": "x",
            "portDefinitions": [{"port": 10000}, {"port": 10001}],
            "labels": {
                "HAPROXY_0_VHOST": "Web.Example.com,www.example.com",
                "HAPROXY_0_PATH": "/api",
                "HAPROXY_0_STICKY": "true",
                "HAPROXY_1_GROUP": "internal"
            }
        }));
        let snap = Snapshot {
            apps: vec![AppEntry {
                app: a,
                tasks: vec![task("t1", "10.0.0.2", 31000), task("t2", "10.0.0.1", 31001)],
            }],
            agents: Vec::new(),
        };
        let s = services(&snap, &opts());
        assert_eq!(s.len(), 1, "port 1 is in another group");
        let s = &s[0];
        assert_eq!(s.backend_name(), "prod_web_10000");
        assert_eq!(s.vhosts, ["web.example.com", "www.example.com"]);
        assert_eq!(s.mode, Mode::Http);
        assert_eq!(s.backend_weight, 1);
        assert!(s.sticky);
        assert_eq!(&*s.servers[0].host, "10.0.0.1", "sorted by host");
    }

    #[test]
    fn apps_outside_the_groups_or_disabled_are_skipped() {
        let labelled =
            app(serde_json::json!({"id": "/a", "labels": {"HAPROXY_GROUP": "internal"}}));
        let plain = app(serde_json::json!({"id": "/b", "portDefinitions": [{"port": 10005}]}));
        let snap = Snapshot {
            apps: vec![
                AppEntry {
                    app: labelled,
                    tasks: Vec::new(),
                },
                AppEntry {
                    app: plain,
                    tasks: Vec::new(),
                },
            ],
            agents: Vec::new(),
        };
        let s = services(&snap, &opts());
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].app_id, "/b");
        let strict = ServiceOptions {
            strict_mode: true,
            ..opts()
        };
        assert!(services(&snap, &strict).is_empty());
        let marathon_lb_default = ServiceOptions {
            default_group: String::new(),
            ..opts()
        };
        assert!(services(&snap, &marathon_lb_default).is_empty());
        let all = ServiceOptions {
            groups: vec!["*".into()],
            ..opts()
        };
        assert_eq!(services(&snap, &all).len(), 1, "/a has no service port");
    }

    #[test]
    fn blue_green_pairs_share_one_backend_and_drain_old_tasks() {
        let blue = app(serde_json::json!({
            "id": "/web-blue", "instances": 3,
            "portDefinitions": [{"port": 10000}],
            "labels": {"HAPROXY_DEPLOYMENT_GROUP": "web", "HAPROXY_DEPLOYMENT_ALT_PORT": "10001",
                       "HAPROXY_DEPLOYMENT_STARTED_AT": "2024-01-01T00:00:00.000Z"}
        }));
        let green = app(serde_json::json!({
            "id": "/web-green", "instances": 2,
            "portDefinitions": [{"port": 10001}],
            "labels": {"HAPROXY_DEPLOYMENT_GROUP": "web", "HAPROXY_DEPLOYMENT_ALT_PORT": "10000",
                       "HAPROXY_0_PORT": "10000",
                       "HAPROXY_DEPLOYMENT_STARTED_AT": "2024-01-02T00:00:00.000Z"}
        }));
        let snap = Snapshot {
            apps: vec![
                AppEntry {
                    app: blue,
                    tasks: vec![
                        task("b1", "10.0.0.1", 31001),
                        task("b2", "10.0.0.1", 31002),
                        task("b3", "10.0.0.1", 31003),
                    ],
                },
                AppEntry {
                    app: green,
                    tasks: vec![task("g1", "10.0.0.2", 31004), task("g2", "10.0.0.2", 31005)],
                },
            ],
            agents: Vec::new(),
        };
        let s = services(&snap, &opts());
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].backend_name(), "web_10000");
        let draining: Vec<u32> = s[0]
            .servers
            .iter()
            .filter(|s| s.draining)
            .map(|s| s.port)
            .collect();
        assert_eq!(
            draining,
            [31001, 31002],
            "two healthy new tasks drain two old ones"
        );
        assert_eq!(s[0].servers.len(), 5);
    }
}
