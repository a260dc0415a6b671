//! The label combinations of docs/discovery.md, "Checked against marathon-lb": instances as the
//! store holds them go through the serving rule and the renderer, and the configuration is read
//! back as structure — which frontends and backends exist, what each binds, its mode, balance
//! and options, how the shared frontends route vhosts, paths and app ids, and which servers
//! each backend has. The expectations are marathon-lb's behaviour for these labels; where
//! lb-sync differs on purpose (services without a serving task are kept, HSTS and HTTPS checks
//! in current syntax) the test says so.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use common::*;
use serde_json::{json, Value};
use stride_core::instance::{Instance, InstanceId};
use stride_lb_sync::config::HaproxyConfig;
use stride_lb_sync::haproxy::render::{render, RenderOptions};
use stride_lb_sync::snapshot::{build, Snapshot};

/// One section of the configuration: its lines (whitespace collapsed) and its servers, with
/// the id and the cookie value (hashes of the name, checked in render.rs) replaced by `_`, and
/// lb-sync's spare slots left out.
#[derive(Debug, Default)]
struct Section {
    lines: Vec<String>,
    servers: Vec<String>,
}

impl Section {
    /// The lines that start with `prefix`, in order.
    fn kind(&self, prefix: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|l| l.starts_with(prefix))
            .map(String::as_str)
            .collect()
    }

    /// The ACL declarations, sorted (their place in a frontend does not matter to HAProxy).
    fn acls(&self) -> Vec<&str> {
        let mut acls = self.kind("acl ");
        acls.sort_unstable();
        acls
    }
}

type Config = BTreeMap<String, Section>;

fn parse(text: &str) -> Config {
    let mut out = Config::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            current = ["frontend ", "backend ", "userlist "]
                .iter()
                .any(|k| line.starts_with(k))
                .then(|| line.trim().to_string());
            if let Some(c) = &current {
                out.entry(c.clone()).or_default();
            }
            continue;
        }
        let Some(section) = current.as_ref().and_then(|c| out.get_mut(c)) else {
            continue;
        };
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if tokens.iter().any(|t| t.starts_with("stride_spare_")) {
            continue;
        }
        if tokens.first() == Some(&"server") {
            let mut server = Vec::with_capacity(tokens.len());
            let mut hashed = false;
            for t in &tokens[1..] {
                server.push(if hashed { "_" } else { t });
                hashed = matches!(*t, "id" | "cookie");
            }
            section.servers.push(server.join(" "));
        } else {
            section.lines.push(tokens.join(" "));
        }
    }
    out
}

fn section<'a>(config: &'a Config, name: &str) -> &'a Section {
    config
        .get(name)
        .unwrap_or_else(|| panic!("no `{name}` in {:#?}", config.keys().collect::<Vec<_>>()))
}

/// The per-service sections (`frontend x` and `backend x`): the names of the services.
fn services(config: &Config) -> Vec<&str> {
    let mut names: Vec<&str> = config
        .keys()
        .filter_map(|k| k.strip_prefix("backend "))
        .collect();
    names.sort_unstable();
    for n in &names {
        assert!(
            config.contains_key(&format!("frontend {n}")),
            "backend {n} has its frontend"
        );
    }
    names
}

const HTTP_OPTIONS: [&str; 3] = [
    "option forwardfor",
    "http-request set-header X-Forwarded-Port %[dst_port]",
    "http-request add-header X-Forwarded-Proto https if { ssl_fc }",
];

fn hc(protocol: &str, port_index: u32, path: &str, timeout: u32, max_failures: u32) -> Value {
    json!({"protocol": protocol, "path": path, "portIndex": port_index, "intervalSeconds": 2,
           "timeoutSeconds": timeout, "gracePeriodSeconds": 15, "maxConsecutiveFailures": max_failures})
}

fn def(id: &str, ports: &[u32], checks: Value, labels: Value) -> Value {
    let ports: Vec<Value> = ports.iter().map(|p| json!({"port": p})).collect();
    json!({"id": id, "cmd": "serve", "instances": 1, "portDefinitions": ports,
           "healthChecks": checks, "labels": labels})
}

fn instance(app: &str, id: &str, host: &str, ports: &[u16], healthy: Option<bool>) -> Instance {
    let mut i = running(app, host, ports, healthy);
    i.id = InstanceId(format!(
        "{}.instance-{id}",
        app.trim_start_matches('/').replace('/', "_")
    ));
    i
}

/// The apps of the comparison, with instances on two named agents and one addressed by IP.
fn world() -> (Vec<stride_core::App>, Vec<Instance>) {
    let ext = |extra: Value| {
        let mut l = json!({"HAPROXY_GROUP": "external"});
        if let (Some(l), Some(e)) = (l.as_object_mut(), extra.as_object()) {
            l.extend(e.clone());
        }
        l
    };
    let bg = |colour: &str, started: &str, alt: u32| {
        json!({"HAPROXY_GROUP": "external", "HAPROXY_DEPLOYMENT_GROUP": "bg",
               "HAPROXY_DEPLOYMENT_COLOUR": colour, "HAPROXY_DEPLOYMENT_STARTED_AT": started,
               "HAPROXY_DEPLOYMENT_ALT_PORT": alt.to_string(),
               "HAPROXY_DEPLOYMENT_TARGET_INSTANCES": "3",
               "HAPROXY_0_VHOST": "bg.example.com", "HAPROXY_0_PORT": "10300"})
    };
    let mut blue = def(
        "/bg-blue",
        &[10300],
        json!([hc("HTTP", 0, "/", 3, 2)]),
        bg("blue", "2026-01-01T00:00:00.000000", 10301),
    );
    blue["instances"] = json!(3);
    let defs = vec![
        def(
            "/web",
            &[10100],
            json!([hc("HTTP", 0, "/", 5, 3)]),
            ext(
                json!({"HAPROXY_0_VHOST": "web.example.com", "HAPROXY_0_PATH": "/api",
                       "HAPROXY_0_BALANCE": "leastconn", "HAPROXY_0_STICKY": "true"}),
            ),
        ),
        def(
            "/prod/api/svc",
            &[10110, 10111],
            json!([{"protocol": "TCP", "portIndex": 1, "intervalSeconds": 3, "timeoutSeconds": 4,
                    "gracePeriodSeconds": 10, "maxConsecutiveFailures": 2}]),
            ext(
                json!({"HAPROXY_0_VHOST": "api.example.com,www.api.example.com",
                       "HAPROXY_0_REDIRECT_TO_HTTPS": "true", "HAPROXY_0_BACKEND_WEIGHT": "5",
                       "HAPROXY_1_MODE": "tcp", "HAPROXY_1_BIND_ADDR": "127.0.0.1",
                       "HAPROXY_1_PORT": "10150"}),
            ),
        ),
        def(
            "/prod/data/db",
            &[10120],
            json!([]),
            json!({"HAPROXY_GROUP": "external,internal", "HAPROXY_0_BALANCE": "source"}),
        ),
        def(
            "/prod/admin",
            &[10130],
            json!([]),
            ext(
                json!({"HAPROXY_0_MODE": "http", "HAPROXY_0_VHOST": "admin.example.com",
                       "HAPROXY_0_PATH": "/admin", "HAPROXY_0_BACKEND_WEIGHT": "10"}),
            ),
        ),
        def(
            "/multi",
            &[10140, 10141, 10142],
            json!([hc("HTTP", 2, "/", 5, 3)]),
            ext(
                json!({"HAPROXY_0_MODE": "http", "HAPROXY_1_GROUP": "internal",
                       "HAPROXY_2_VHOST": "multi.example.com", "HAPROXY_2_PATH": "/m"}),
            ),
        ),
        def(
            "/internal/cache",
            &[10160],
            json!([]),
            json!({"HAPROXY_GROUP": "internal"}),
        ),
        def("/nolabel", &[10170], json!([]), json!({})),
        def(
            "/sick",
            &[10180],
            json!([hc("HTTP", 0, "/nonexistent", 2, 100)]),
            ext(json!({})),
        ),
        def(
            "/redir",
            &[10200],
            json!([]),
            ext(json!({"HAPROXY_0_VHOST": "redir.example.com",
                       "HAPROXY_0_REDIRECT_TO_HTTPS": "true", "HAPROXY_0_USE_HSTS": "true"})),
        ),
        def(
            "/secure",
            &[10210],
            json!([hc("HTTP", 0, "/", 3, 2)]),
            ext(
                json!({"HAPROXY_0_VHOST": "secure.example.com", "HAPROXY_0_PATH": "/s",
                       "HAPROXY_0_AUTH": "realm:admin:$6$salt$hash",
                       "HAPROXY_0_BIND_OPTIONS": "maxconn 100",
                       "HAPROXY_0_SSL_CERT": "/etc/ssl/site.pem"}),
            ),
        ),
        def(
            "/tls",
            &[10220],
            json!([hc("HTTPS", 0, "/", 3, 2)]),
            ext(json!({"HAPROXY_0_VHOST": "tls.example.com"})),
        ),
        def(
            "/mesoshttp",
            &[10230],
            json!([hc("MESOS_HTTP", 0, "/", 3, 2)]),
            ext(json!({})),
        ),
        def(
            "/portgroup",
            &[10250, 10251],
            json!([]),
            json!({"HAPROXY_GROUP": "internal", "HAPROXY_0_GROUP": "external"}),
        ),
        def(
            "/hcidx",
            &[10260, 10261],
            json!([hc("HTTP", 1, "/", 3, 2)]),
            ext(json!({"HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX": "1"})),
        ),
        def(
            "/hcidx-tls",
            &[10320, 10321],
            json!([hc("HTTPS", 1, "/", 3, 2)]),
            ext(json!({"HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX": "1"})),
        ),
        def(
            "/upper",
            &[10270],
            json!([]),
            ext(
                json!({"HAPROXY_0_MODE": "HTTP", "HAPROXY_0_BALANCE": "first",
                       "HAPROXY_0_STICKY": "1"}),
            ),
        ),
        def(
            "/a.b/c-d",
            &[10280],
            json!([]),
            ext(json!({"HAPROXY_0_VHOST": "Odd.Example.com"})),
        ),
        def(
            "/shop/a",
            &[10290],
            json!([]),
            ext(json!({"HAPROXY_0_VHOST": "shop.example.com", "HAPROXY_0_PATH": "/a"})),
        ),
        def(
            "/shop/b",
            &[10291],
            json!([]),
            ext(json!({"HAPROXY_0_VHOST": "shop.example.com", "HAPROXY_0_PATH": "/b"})),
        ),
        def(
            "/shop/c",
            &[10292],
            json!([]),
            ext(
                json!({"HAPROXY_0_VHOST": "shop.example.com", "HAPROXY_0_PATH": "/",
                       "HAPROXY_0_BACKEND_WEIGHT": "-1"}),
            ),
        ),
        def(
            "/strict",
            &[10310, 10311],
            json!([]),
            ext(json!({"HAPROXY_0_ENABLED": "true", "HAPROXY_1_ENABLED": "false"})),
        ),
        blue,
        def(
            "/bg-green",
            &[10301],
            json!([hc("HTTP", 0, "/", 3, 2)]),
            bg("green", "2026-01-02T00:00:00.000000", 10300),
        ),
    ];
    let apps = defs.into_iter().map(app).collect();
    let (a1, a2) = ("agent-1", "agent-2");
    let instances = vec![
        instance("/web", "1", a1, &[31000], Some(true)),
        // No health result yet: not served while the app has an HTTP check.
        instance("/web", "2", a2, &[31000], None),
        instance("/prod/api/svc", "1", a1, &[31010, 31011], Some(true)),
        instance("/prod/api/svc", "2", a2, &[31010, 31011], Some(true)),
        instance("/prod/data/db", "1", a2, &[31020], None),
        instance("/prod/admin", "1", a1, &[31030], None),
        instance("/multi", "1", a1, &[31040, 31041, 31042], Some(true)),
        instance("/multi", "2", a2, &[31040, 31041, 31042], Some(false)),
        instance("/internal/cache", "1", a1, &[31045], None),
        instance("/nolabel", "1", a1, &[31046], None),
        instance("/sick", "1", a1, &[31047], Some(false)),
        instance("/redir", "1", a1, &[31050], None),
        instance("/secure", "1", a1, &[31055], Some(true)),
        instance("/tls", "1", a1, &[31060], Some(true)),
        instance("/mesoshttp", "1", a1, &[31070], Some(true)),
        instance("/portgroup", "1", a1, &[31075, 31076], None),
        instance("/hcidx", "1", a1, &[31090, 31091], Some(true)),
        instance("/hcidx", "2", a2, &[31090, 31091], Some(true)),
        instance("/hcidx-tls", "1", a1, &[31095, 31096], Some(true)),
        instance("/upper", "1", a1, &[31080], None),
        instance("/a.b/c-d", "1", a2, &[31085], None),
        instance("/shop/a", "1", a1, &[31081], None),
        instance("/shop/b", "1", a1, &[31082], None),
        instance("/shop/c", "1", a1, &[31083], None),
        instance("/strict", "1", a1, &[31086, 31087], None),
        instance("/bg-blue", "1", "10.0.0.3", &[31100], Some(true)),
        instance("/bg-blue", "2", "10.0.0.3", &[31101], Some(true)),
        instance("/bg-blue", "3", "10.0.0.3", &[31102], Some(true)),
        instance("/bg-green", "1", "10.0.0.3", &[31103], Some(true)),
    ];
    (apps, instances)
}

fn snapshot() -> Snapshot {
    let (apps, instances) = world();
    let resolve = |host: &str| -> Option<IpAddr> {
        match host {
            "agent-1" => "10.0.0.1".parse().ok(),
            "agent-2" => "10.0.0.2".parse().ok(),
            other => other.parse().ok(),
        }
    };
    build(apps, instances, Vec::new(), &resolve)
}

/// marathon-lb's command line `--group <groups> --ssl-certs /etc/ssl/cert.pem`, as lb-sync
/// configuration (apps without `HAPROXY_GROUP` in no group, as there).
fn config(groups: &[&str], adjust: impl FnOnce(&mut HaproxyConfig)) -> Config {
    let mut cfg = HaproxyConfig {
        groups: groups.iter().map(|g| g.to_string()).collect(),
        default_group: String::new(),
        ssl_certs: vec!["/etc/ssl/cert.pem".into()],
        ..HaproxyConfig::default()
    };
    adjust(&mut cfg);
    let text = render(
        &snapshot(),
        &RenderOptions::from_config(&cfg),
        &HashMap::new(),
        &HashSet::new(),
    )
    .text;
    parse(&text)
}

/// Asserts a service's frontend (bind line, mode) and backend (every non-server line, then the
/// servers).
fn assert_service(
    config: &Config,
    name: &str,
    bind: &str,
    backend_lines: &[&str],
    servers: &[&str],
) {
    let frontend = section(config, &format!("frontend {name}"));
    let mode = backend_lines
        .iter()
        .find_map(|l| l.strip_prefix("mode "))
        .unwrap_or_else(|| panic!("expectation for {name} names its mode"));
    assert_eq!(
        frontend.lines,
        [
            format!("bind {bind}"),
            format!("mode {mode}"),
            format!("use_backend {name}")
        ],
        "frontend {name}"
    );
    let backend = section(config, &format!("backend {name}"));
    assert_eq!(backend.lines, backend_lines, "backend {name}");
    assert_eq!(backend.servers, servers, "servers of {name}");
}

fn with_http(first: &[&'static str], rest: &[&'static str]) -> Vec<&'static str> {
    first
        .iter()
        .chain(HTTP_OPTIONS.iter())
        .chain(rest.iter())
        .copied()
        .collect()
}

#[test]
fn the_external_group_renders_as_marathon_lb_does() {
    let c = config(&["external"], |_| {});
    assert_eq!(
        services(&c),
        [
            "a.b_c-d_10280",
            "bg_10300",
            "hcidx-tls_10320",
            "hcidx-tls_10321",
            "hcidx_10260",
            "hcidx_10261",
            "mesoshttp_10230",
            "multi_10140",
            "multi_10142",
            "portgroup_10250",
            "prod_admin_10130",
            "prod_api_svc_10110",
            "prod_api_svc_10150",
            "prod_data_db_10120",
            "redir_10200",
            "secure_10210",
            "shop_a_10290",
            "shop_b_10291",
            "shop_c_10292",
            "sick_10180",
            "strict_10310",
            "tls_10220",
            "upper_10270",
            "web_10100",
        ],
        "no /internal/cache, /nolabel, multi's port 1, portgroup's port 1 or strict's disabled \
         port 1; /bg-blue and /bg-green as one service; HAPROXY_1_PORT renames prod_api_svc's \
         second port"
    );

    // Balance, stickiness, an HTTP check on a vhost with a path; the instance without a
    // health result yet is left out.
    assert_service(
        &c,
        "web_10100",
        "*:10100",
        &with_http(
            &["balance leastconn", "mode http"],
            &[
                "cookie mesosphere_server_id insert indirect nocache",
                "option httpchk GET /",
                "timeout check 5s",
            ],
        ),
        &["agent-1_10_0_0_1_31000 10.0.0.1:31000 id _ check cookie _ check inter 2s fall 4"],
    );
    // Several vhosts with a redirect: HTTP mode; the TCP check of port 1 applies to port 1 only,
    // which binds 127.0.0.1:10150 in TCP mode.
    assert_service(
        &c,
        "prod_api_svc_10110",
        "*:10110",
        &with_http(&["balance roundrobin", "mode http"], &[]),
        &[
            "agent-1_10_0_0_1_31010 10.0.0.1:31010 id _",
            "agent-2_10_0_0_2_31010 10.0.0.2:31010 id _",
        ],
    );
    assert_service(
        &c,
        "prod_api_svc_10150",
        "127.0.0.1:10150",
        &["balance roundrobin", "mode tcp"],
        &[
            "agent-1_10_0_0_1_31011 10.0.0.1:31011 id _ check inter 3s fall 3",
            "agent-2_10_0_0_2_31011 10.0.0.2:31011 id _ check inter 3s fall 3",
        ],
    );
    assert_service(
        &c,
        "prod_data_db_10120",
        "*:10120",
        &["balance source", "mode tcp"],
        &["agent-2_10_0_0_2_31020 10.0.0.2:31020 id _"],
    );
    assert_service(
        &c,
        "prod_admin_10130",
        "*:10130",
        &with_http(&["balance roundrobin", "mode http"], &[]),
        &["agent-1_10_0_0_1_31030 10.0.0.1:31030 id _"],
    );
    // The app's check is on port 2: every port loses the unhealthy instance, only port 2 checks.
    assert_service(
        &c,
        "multi_10140",
        "*:10140",
        &with_http(&["balance roundrobin", "mode http"], &[]),
        &["agent-1_10_0_0_1_31040 10.0.0.1:31040 id _"],
    );
    assert_service(
        &c,
        "multi_10142",
        "*:10142",
        &with_http(
            &["balance roundrobin", "mode http"],
            &["option httpchk GET /", "timeout check 5s"],
        ),
        &["agent-1_10_0_0_1_31042 10.0.0.1:31042 id _ check inter 2s fall 4"],
    );
    assert_service(
        &c,
        "portgroup_10250",
        "*:10250",
        &["balance roundrobin", "mode tcp"],
        &["agent-1_10_0_0_1_31075 10.0.0.1:31075 id _"],
    );
    // Deliberate: a service with no serving instance keeps its frontend and backend
    // (marathon-lb drops both, and its routing rules).
    assert_service(
        &c,
        "sick_10180",
        "*:10180",
        &with_http(
            &["balance roundrobin", "mode http"],
            &["option httpchk GET /nonexistent", "timeout check 2s"],
        ),
        &[],
    );
    // Deliberate: HSTS in current syntax (marathon-lb: `rspadd`, refused by HAProxy 2.1+).
    assert_service(
        &c,
        "redir_10200",
        "*:10200",
        &[
            "balance roundrobin",
            "mode http",
            "http-response set-header Strict-Transport-Security max-age=15768000",
            HTTP_OPTIONS[0],
            HTTP_OPTIONS[1],
            HTTP_OPTIONS[2],
        ],
        &["agent-1_10_0_0_1_31050 10.0.0.1:31050 id _"],
    );
    assert_service(
        &c,
        "secure_10210",
        "*:10210 ssl crt /etc/ssl/site.pem maxconn 100",
        &with_http(
            &["balance roundrobin", "mode http"],
            &["option httpchk GET /", "timeout check 3s"],
        ),
        &["agent-1_10_0_0_1_31055 10.0.0.1:31055 id _ check inter 2s fall 3"],
    );
    assert_eq!(
        section(&c, "userlist user_secure_10210").lines,
        ["user admin password $6$salt$hash"]
    );
    // Deliberate: an HTTPS check is a connect check (marathon-lb writes `option httpchk`, sent
    // in plain text to the TLS port).
    assert_service(
        &c,
        "tls_10220",
        "*:10220",
        &with_http(&["balance roundrobin", "mode http"], &[]),
        &["agent-1_10_0_0_1_31060 10.0.0.1:31060 id _ check inter 2s fall 3"],
    );
    // Only a Marathon `HTTP` check makes a port HTTP by itself.
    assert_service(
        &c,
        "mesoshttp_10230",
        "*:10230",
        &["balance roundrobin", "mode tcp"],
        &["agent-1_10_0_0_1_31070 10.0.0.1:31070 id _ check inter 2s fall 3"],
    );
    // A check borrowed from another port: HTTP mode, checked on that port of each task.
    assert_service(
        &c,
        "hcidx_10260",
        "*:10260",
        &with_http(
            &["balance roundrobin", "mode http"],
            &["option httpchk GET /", "timeout check 3s"],
        ),
        &[
            "agent-1_10_0_0_1_31090 10.0.0.1:31090 id _ check inter 2s fall 3 port 31091",
            "agent-2_10_0_0_2_31090 10.0.0.2:31090 id _ check inter 2s fall 3 port 31091",
        ],
    );
    assert_service(
        &c,
        "hcidx_10261",
        "*:10261",
        &with_http(
            &["balance roundrobin", "mode http"],
            &["option httpchk GET /", "timeout check 3s"],
        ),
        &[
            "agent-1_10_0_0_1_31091 10.0.0.1:31091 id _ check inter 2s fall 3",
            "agent-2_10_0_0_2_31091 10.0.0.2:31091 id _ check inter 2s fall 3",
        ],
    );
    // Borrowed HTTPS check: HTTP mode as in marathon-lb, a connect check (deliberate, above).
    assert_service(
        &c,
        "hcidx-tls_10320",
        "*:10320",
        &with_http(&["balance roundrobin", "mode http"], &[]),
        &["agent-1_10_0_0_1_31095 10.0.0.1:31095 id _ check inter 2s fall 3 port 31096"],
    );
    assert_service(
        &c,
        "hcidx-tls_10321",
        "*:10321",
        &["balance roundrobin", "mode tcp"],
        &["agent-1_10_0_0_1_31096 10.0.0.1:31096 id _ check inter 2s fall 3"],
    );
    // `HTTP` in capitals is http; `1` is not true.
    assert_service(
        &c,
        "upper_10270",
        "*:10270",
        &with_http(&["balance first", "mode http"], &[]),
        &["agent-1_10_0_0_1_31080 10.0.0.1:31080 id _"],
    );
    assert_service(
        &c,
        "a.b_c-d_10280",
        "*:10280",
        &with_http(&["balance roundrobin", "mode http"], &[]),
        &["agent-2_10_0_0_2_31085 10.0.0.2:31085 id _"],
    );
    // Blue/green: one backend under the deployment group's name; one old task drained per
    // healthy new one, the first by task id.
    assert_service(
        &c,
        "bg_10300",
        "*:10300",
        &with_http(
            &["balance roundrobin", "mode http"],
            &["option httpchk GET /", "timeout check 3s"],
        ),
        &[
            "10_0_0_3_31100 10.0.0.3:31100 id _ check inter 2s fall 3 disabled",
            "10_0_0_3_31101 10.0.0.3:31101 id _ check inter 2s fall 3",
            "10_0_0_3_31102 10.0.0.3:31102 id _ check inter 2s fall 3",
            "10_0_0_3_31103 10.0.0.3:31103 id _ check inter 2s fall 3",
        ],
    );

    // Vhost routing: heaviest HAPROXY_{n}_BACKEND_WEIGHT first, then app id and port order.
    let http = section(&c, "frontend marathon_http_in");
    assert_eq!(http.kind("bind "), ["bind *:80"]);
    assert_eq!(
        http.acls(),
        [
            "acl auth_secure_example_com_secure http_auth(user_secure_10210)",
            "acl host_admin_example_com_prod_admin hdr(host) -i admin.example.com",
            "acl host_api_example_com_prod_api_svc hdr(host) -i api.example.com",
            "acl host_api_example_com_prod_api_svc hdr(host) -i www.api.example.com",
            "acl host_bg_example_com_bg hdr(host) -i bg.example.com",
            "acl host_multi_example_com_multi hdr(host) -i multi.example.com",
            "acl host_odd_example_com_a.b_c-d hdr(host) -i odd.example.com",
            "acl host_redir_example_com_redir hdr(host) -i redir.example.com",
            "acl host_secure_example_com_secure hdr(host) -i secure.example.com",
            "acl host_shop_example_com_shop_a hdr(host) -i shop.example.com",
            "acl host_shop_example_com_shop_b hdr(host) -i shop.example.com",
            "acl host_shop_example_com_shop_c hdr(host) -i shop.example.com",
            "acl host_tls_example_com_tls hdr(host) -i tls.example.com",
            "acl host_web_example_com_web hdr(host) -i web.example.com",
            "acl path_multi_10142 path_beg /m",
            "acl path_prod_admin_10130 path_beg /admin",
            "acl path_secure_10210 path_beg /s",
            "acl path_shop_a_10290 path_beg /a",
            "acl path_shop_b_10291 path_beg /b",
            "acl path_shop_c_10292 path_beg /",
            "acl path_web_10100 path_beg /api",
        ]
    );
    assert_eq!(
        http.kind("http-request "),
        ["http-request auth realm \"realm\" if host_secure_example_com_secure path_secure_10210 !auth_secure_example_com_secure"]
    );
    assert_eq!(
        http.kind("redirect "),
        [
            "redirect scheme https code 301 if !{ ssl_fc } host_api_example_com_prod_api_svc",
            "redirect scheme https code 301 if !{ ssl_fc } host_redir_example_com_redir",
        ]
    );
    assert_eq!(
        http.kind("use_backend "),
        [
            "use_backend prod_admin_10130 if host_admin_example_com_prod_admin path_prod_admin_10130",
            "use_backend multi_10142 if host_multi_example_com_multi path_multi_10142",
            "use_backend secure_10210 if host_secure_example_com_secure path_secure_10210",
            "use_backend shop_a_10290 if host_shop_example_com_shop_a path_shop_a_10290",
            "use_backend shop_b_10291 if host_shop_example_com_shop_b path_shop_b_10291",
            "use_backend web_10100 if host_web_example_com_web path_web_10100",
            "use_backend a.b_c-d_10280 if host_odd_example_com_a.b_c-d",
            "use_backend bg_10300 if host_bg_example_com_bg",
            "use_backend redir_10200 if host_redir_example_com_redir",
            "use_backend tls_10220 if host_tls_example_com_tls",
            "use_backend shop_c_10292 if host_shop_example_com_shop_c path_shop_c_10292",
        ],
        "several vhosts with a redirect route nothing on :80"
    );

    let https = section(&c, "frontend marathon_https_in");
    assert_eq!(
        https.kind("bind "),
        ["bind *:443 ssl crt /etc/ssl/cert.pem crt /etc/ssl/site.pem"]
    );
    assert_eq!(
        https.acls(),
        [
            "acl auth_secure_example_com_secure http_auth(user_secure_10210)",
            "acl path_multi_10142 path_beg /m",
            "acl path_prod_admin_10130 path_beg /admin",
            "acl path_secure_10210 path_beg /s",
            "acl path_shop_a_10290 path_beg /a",
            "acl path_shop_b_10291 path_beg /b",
            "acl path_shop_c_10292 path_beg /",
            "acl path_web_10100 path_beg /api",
        ]
    );
    assert_eq!(
        https.kind("http-request "),
        ["http-request auth realm \"realm\" if { ssl_fc_sni secure.example.com } path_secure_10210 !auth_secure_example_com_secure"]
    );
    assert_eq!(
        https.kind("use_backend "),
        [
            "use_backend prod_admin_10130 if { ssl_fc_sni admin.example.com } path_prod_admin_10130",
            "use_backend prod_api_svc_10110 if { ssl_fc_sni api.example.com }",
            "use_backend prod_api_svc_10110 if { ssl_fc_sni www.api.example.com }",
            "use_backend multi_10142 if { ssl_fc_sni multi.example.com } path_multi_10142",
            "use_backend secure_10210 if { ssl_fc_sni secure.example.com } path_secure_10210",
            "use_backend shop_a_10290 if { ssl_fc_sni shop.example.com } path_shop_a_10290",
            "use_backend shop_b_10291 if { ssl_fc_sni shop.example.com } path_shop_b_10291",
            "use_backend web_10100 if { ssl_fc_sni web.example.com } path_web_10100",
            "use_backend a.b_c-d_10280 if { ssl_fc_sni odd.example.com }",
            "use_backend bg_10300 if { ssl_fc_sni bg.example.com }",
            "use_backend redir_10200 if { ssl_fc_sni redir.example.com }",
            "use_backend tls_10220 if { ssl_fc_sni tls.example.com }",
            "use_backend shop_c_10292 if { ssl_fc_sni shop.example.com } path_shop_c_10292",
        ]
    );

    // X-Marathon-App-Id: the first HTTP-mode port of each app.
    let appid = section(&c, "frontend marathon_http_appid_in");
    assert_eq!(appid.kind("bind "), ["bind *:9091"]);
    assert_eq!(
        appid.kind("use_backend "),
        [
            "use_backend a.b_c-d_10280 if app__a_b_c-d",
            "use_backend bg_10300 if app__bg",
            "use_backend hcidx_10260 if app__hcidx",
            "use_backend hcidx-tls_10320 if app__hcidx-tls",
            "use_backend multi_10140 if app__multi",
            "use_backend prod_admin_10130 if app__prod_admin",
            "use_backend prod_api_svc_10110 if app__prod_api_svc",
            "use_backend redir_10200 if app__redir",
            "use_backend secure_10210 if app__secure",
            "use_backend shop_a_10290 if app__shop_a",
            "use_backend shop_b_10291 if app__shop_b",
            "use_backend shop_c_10292 if app__shop_c",
            "use_backend sick_10180 if app__sick",
            "use_backend tls_10220 if app__tls",
            "use_backend upper_10270 if app__upper",
            "use_backend web_10100 if app__web",
        ]
    );
    assert!(appid
        .acls()
        .contains(&"acl app__a_b_c-d hdr(x-marathon-app-id) -i /a.b/c-d"));
}

#[test]
fn other_groups_strict_mode_and_no_shared_frontends_follow_marathon_lb_flags() {
    // `--group internal`: HAPROXY_GROUP lists, and HAPROXY_{n}_GROUP overriding it either way.
    let c = config(&["internal"], |_| {});
    assert_eq!(
        services(&c),
        [
            "internal_cache_10160",
            "multi_10141",
            "portgroup_10251",
            "prod_data_db_10120"
        ]
    );
    assert_service(
        &c,
        "multi_10141",
        "*:10141",
        &["balance roundrobin", "mode tcp"],
        &["agent-1_10_0_0_1_31041 10.0.0.1:31041 id _"],
    );

    // `--group '*'`: every app, those without a group included.
    let all = config(&["*"], |_| {});
    let names = services(&all);
    let external = services(&config(&["external"], |_| {})).len();
    for must in [
        "nolabel_10170",
        "internal_cache_10160",
        "multi_10141",
        "portgroup_10251",
    ] {
        assert!(names.contains(&must), "{must} in {names:?}");
    }
    assert_eq!(names.len(), external + 4, "{names:?}");

    // `--strict-mode`: only ports with HAPROXY_{n}_ENABLED true.
    let strict = config(&["external"], |h| h.strict_mode = true);
    assert_eq!(services(&strict), ["strict_10310"]);

    // `--dont-bind-http-https`: no vhost frontends, the app-id frontend all the same.
    let bare = config(&["external"], |h| h.bind_http_https = false);
    assert!(!bare.contains_key("frontend marathon_http_in"));
    assert!(!bare.contains_key("frontend marathon_https_in"));
    assert_eq!(
        section(&bare, "frontend marathon_http_appid_in")
            .kind("use_backend ")
            .len(),
        16
    );

    // lb-sync's default group (deliberate): apps without HAPROXY_GROUP are `external`.
    let defaulted = config(&["external"], |h| h.default_group = "external".into());
    assert!(services(&defaulted).contains(&"nolabel_10170"));
}
