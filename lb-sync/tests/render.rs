//! The rendered configuration: against what marathon-lb is documented to produce (its own test
//! suite's expected output, for a few label combinations), and accepted by Debian's HAProxy
//! with every label in use.
//!
//! The comparison here is with the expected text of marathon-lb's tests: the frontend and
//! backend names, the ACLs, and the server lines with their stable ids and cookies. lb-sync's
//! own additions (spare slots) are left out of the comparison. `marathon_lb.rs` covers the
//! label combinations checked against marathon-lb itself (docs/discovery.md).

mod common;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use common::*;
use serde_json::json;
use stride_lb_sync::config::HaproxyConfig;
use stride_lb_sync::haproxy::files;
use stride_lb_sync::haproxy::render::{render, RenderOptions};
use stride_lb_sync::snapshot::{AppEntry, Snapshot, Task};

fn options() -> RenderOptions {
    let cfg = HaproxyConfig {
        ssl_certs: vec!["/etc/ssl/cert.pem".into()],
        ..HaproxyConfig::default()
    };
    RenderOptions::from_config(&cfg)
}

fn task(id: &str, host: &str, ip: &str, ports: &[u32]) -> Task {
    Task {
        id: id.into(),
        host: host.into(),
        host_ip: ip.parse::<IpAddr>().ok(),
        ip_addresses: Vec::new(),
        ports: ports.to_vec(),
    }
}

fn nginx(extra_labels: serde_json::Value, health: serde_json::Value) -> stride_core::App {
    let mut labels = json!({"HAPROXY_GROUP": "external"});
    if let (Some(l), Some(e)) = (labels.as_object_mut(), extra_labels.as_object()) {
        l.extend(e.clone());
    }
    app(json!({
        "id": "/nginx", "cmd": "x",
        "portDefinitions": [{"port": 10000}],
        "healthChecks": health,
        "labels": labels
    }))
}

fn http_check(extra: serde_json::Value) -> serde_json::Value {
    let mut hc = json!({"path": "/", "protocol": "HTTP", "gracePeriodSeconds": 10,
                        "intervalSeconds": 2, "timeoutSeconds": 10, "maxConsecutiveFailures": 10});
    if let (Some(h), Some(e)) = (hc.as_object_mut(), extra.as_object()) {
        h.extend(e.clone());
    }
    json!([hc])
}

fn rendered(apps: Vec<(stride_core::App, Vec<Task>)>) -> String {
    let snap = Snapshot {
        apps: apps
            .into_iter()
            .map(|(app, tasks)| AppEntry { app, tasks })
            .collect(),
        agents: Vec::new(),
    };
    render(&snap, &options(), &HashMap::new(), &HashSet::new()).text
}

/// The lines of the section that starts with `header`, without lb-sync's spare slots.
fn section(text: &str, header: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line == header {
            inside = true;
            out.push(line.to_string());
            continue;
        }
        if inside {
            if !line.starts_with("  ") {
                break;
            }
            if !line.contains("stride_spare_") {
                out.push(line.to_string());
            }
        }
    }
    assert!(!out.is_empty(), "no section {header:?} in:\n{text}");
    out
}

/// marathon-lb's expected text, split into its sections.
fn expected_sections(expected: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in expected.lines() {
        if line.starts_with("frontend ") || line.starts_with("backend ") {
            out.push((line.to_string(), vec![line.to_string()]));
        } else if line.starts_with("  ") {
            if let Some((_, lines)) = out.last_mut() {
                lines.push(line.to_string());
            }
        }
    }
    out
}

/// Every section of `expected` appears in `text`; `unordered` sections may list their lines
/// in another order (lb-sync puts a redirect before the `use_backend` HAProxy evaluates
/// after it anyway, which spares a warning).
fn assert_matches(text: &str, expected: &str, unordered: &[&str]) {
    for (header, want) in expected_sections(expected) {
        let mut got = section(text, &header);
        let mut want = want;
        if unordered.contains(&header.as_str()) {
            got.sort();
            want.sort();
        }
        assert_eq!(got, want, "section {header}\n--- whole output ---\n{text}");
    }
}

#[test]
fn matches_marathon_lb_for_an_http_health_check_with_a_port() {
    let text = rendered(vec![(
        nginx(json!({}), http_check(json!({"port": 1024}))),
        vec![task("t1", "agent1", "1.1.1.1", &[1024])],
    )]);
    assert_matches(
        &text,
        "
frontend marathon_http_appid_in
  bind *:9091
  mode http
  acl app__nginx hdr(x-marathon-app-id) -i /nginx
  use_backend nginx_10000 if app__nginx

frontend nginx_10000
  bind *:10000
  mode http
  use_backend nginx_10000

backend nginx_10000
  balance roundrobin
  mode http
  option forwardfor
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request add-header X-Forwarded-Proto https if { ssl_fc }
  option  httpchk GET /
  timeout check 10s
  server agent1_1_1_1_1_1024 1.1.1.1:1024 id 28363 check inter 2s fall 11 port 1024
",
        &[],
    );
}

#[test]
fn matches_marathon_lb_for_a_vhost_with_a_path() {
    let text = rendered(vec![(
        nginx(
            json!({"HAPROXY_0_VHOST": "test.example.com", "HAPROXY_0_PATH": "/some/path"}),
            http_check(json!({"portIndex": 0})),
        ),
        vec![task("t1", "agent1", "1.1.1.1", &[1024])],
    )]);
    assert_matches(
        &text,
        "
frontend marathon_http_in
  bind *:80
  mode http
  acl host_test_example_com_nginx hdr(host) -i test.example.com
  acl path_nginx_10000 path_beg /some/path
  use_backend nginx_10000 if host_test_example_com_nginx path_nginx_10000

frontend marathon_https_in
  bind *:443 ssl crt /etc/ssl/cert.pem
  mode http
  acl path_nginx_10000 path_beg /some/path
  use_backend nginx_10000 if { ssl_fc_sni test.example.com } path_nginx_10000

backend nginx_10000
  balance roundrobin
  mode http
  option forwardfor
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request add-header X-Forwarded-Proto https if { ssl_fc }
  option  httpchk GET /
  timeout check 10s
  server agent1_1_1_1_1_1024 1.1.1.1:1024 id 28363 check inter 2s fall 11
",
        &[],
    );
}

#[test]
fn matches_marathon_lb_for_several_vhosts_with_a_redirect() {
    let text = rendered(vec![(
        nginx(
            json!({"HAPROXY_0_VHOST": "test.example.com,test", "HAPROXY_0_REDIRECT_TO_HTTPS": "true"}),
            http_check(json!({"portIndex": 0})),
        ),
        vec![task("t1", "agent1", "192.0.2.1", &[1234])],
    )]);
    assert_matches(
        &text,
        "
frontend marathon_http_in
  bind *:80
  mode http
  acl host_test_example_com_nginx hdr(host) -i test.example.com
  acl host_test_example_com_nginx hdr(host) -i test
  redirect scheme https code 301 if !{ ssl_fc } host_test_example_com_nginx

frontend marathon_https_in
  bind *:443 ssl crt /etc/ssl/cert.pem
  mode http
  use_backend nginx_10000 if { ssl_fc_sni test.example.com }
  use_backend nginx_10000 if { ssl_fc_sni test }

backend nginx_10000
  balance roundrobin
  mode http
  option forwardfor
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request add-header X-Forwarded-Proto https if { ssl_fc }
  option  httpchk GET /
  timeout check 10s
  server agent1_192_0_2_1_1234 192.0.2.1:1234 id 15582 check inter 2s fall 11
",
        &[],
    );
    // One vhost with a redirect: the same lines, the redirect placed first.
    let text = rendered(vec![(
        nginx(
            json!({"HAPROXY_0_VHOST": "test.example.com", "HAPROXY_0_REDIRECT_TO_HTTPS": "true"}),
            http_check(json!({"portIndex": 0})),
        ),
        vec![task("t1", "agent1", "1.1.1.1", &[1024])],
    )]);
    assert_matches(
        &text,
        "
frontend marathon_http_in
  bind *:80
  mode http
  acl host_test_example_com_nginx hdr(host) -i test.example.com
  use_backend nginx_10000 if host_test_example_com_nginx
  redirect scheme https code 301 if !{ ssl_fc } host_test_example_com_nginx
",
        &["frontend marathon_http_in"],
    );
}

#[test]
fn matches_marathon_lb_for_a_tcp_health_check_and_for_sticky_sessions() {
    let text = rendered(vec![(
        nginx(
            json!({"HAPROXY_0_VHOST": "test.example.com"}),
            json!([{"protocol": "TCP", "portIndex": 0, "gracePeriodSeconds": 10,
                    "intervalSeconds": 2, "timeoutSeconds": 10, "maxConsecutiveFailures": 10}]),
        ),
        vec![task("t1", "agent1", "1.1.1.1", &[1024])],
    )]);
    assert_matches(
        &text,
        "
backend nginx_10000
  balance roundrobin
  mode http
  option forwardfor
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request add-header X-Forwarded-Proto https if { ssl_fc }
  server agent1_1_1_1_1_1024 1.1.1.1:1024 id 28363 check inter 2s fall 11
",
        &[],
    );
    let text = rendered(vec![(
        nginx(json!({"HAPROXY_0_STICKY": "true"}), json!([])),
        vec![task("t1", "agent1", "1.1.1.1", &[1024])],
    )]);
    assert_matches(
        &text,
        "
frontend nginx_10000
  bind *:10000
  mode tcp
  use_backend nginx_10000

backend nginx_10000
  balance roundrobin
  mode tcp
  cookie mesosphere_server_id insert indirect nocache
  server agent1_1_1_1_1_1024 1.1.1.1:1024 id 28363 check cookie d6ad48c81f
",
        &[],
    );
}

#[test]
fn matches_marathon_lb_for_a_blue_green_pair() {
    // marathon-lb's tests/zdd_apps.json, as Stride stores those apps.
    let labels = |colour: &str, started: &str, target: &str| {
        json!({"HAPROXY_DEPLOYMENT_GROUP": "nginx", "HAPROXY_GROUP": "external",
               "HAPROXY_DEPLOYMENT_COLOUR": colour, "HAPROXY_DEPLOYMENT_TARGET_INSTANCES": target,
               "HAPROXY_DEPLOYMENT_STARTED_AT": started, "HAPROXY_DEPLOYMENT_ALT_PORT": "10001",
               "HAPROXY_0_PORT": "10000", "HAPROXY_APP_ID": "nginx"})
    };
    let docker = |service_port: u32| {
        json!({"type": "DOCKER", "docker": {"image": "nginx", "network": "BRIDGE",
               "portMappings": [{"containerPort": 8080, "hostPort": 0, "servicePort": service_port, "protocol": "tcp"}]}})
    };
    let check = json!([{"path": "/", "protocol": "HTTP", "portIndex": 0, "gracePeriodSeconds": 15,
                        "intervalSeconds": 3, "timeoutSeconds": 15, "maxConsecutiveFailures": 10}]);
    let green = app(
        json!({"id": "/nginx-green", "instances": 3, "container": docker(10000),
                           "healthChecks": check,
                           "labels": labels("green", "2016-02-01T14:13:42.499089", "20")}),
    );
    let blue = app(
        json!({"id": "/nginx-blue", "instances": 1, "container": docker(10001),
                          "healthChecks": check,
                          "labels": labels("blue", "2016-02-01T14:57:54.371005", "3")}),
    );
    let text = rendered(vec![
        (
            green,
            vec![
                task(
                    "nginx-green.1883a887-c931-11e5-9836-026ee08d9f6f",
                    "10.0.6.25",
                    "10.0.6.25",
                    &[16916],
                ),
                task(
                    "nginx-green.0dbabba6-c931-11e5-9836-026ee08d9f6f",
                    "10.0.6.25",
                    "10.0.6.25",
                    &[31184],
                ),
                task(
                    "nginx-green.23532518-c931-11e5-9836-026ee08d9f6f",
                    "10.0.6.25",
                    "10.0.6.25",
                    &[23336],
                ),
            ],
        ),
        (
            blue,
            vec![task(
                "nginx-blue.3a58a46a-c937-11e5-9836-026ee08d9f6f",
                "10.0.1.147",
                "10.0.1.147",
                &[25724],
            )],
        ),
    ]);
    assert_matches(
        &text,
        "
frontend marathon_http_appid_in
  bind *:9091
  mode http
  acl app__nginx hdr(x-marathon-app-id) -i /nginx
  use_backend nginx_10000 if app__nginx

frontend nginx_10000
  bind *:10000
  mode http
  use_backend nginx_10000

backend nginx_10000
  balance roundrobin
  mode http
  option forwardfor
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request add-header X-Forwarded-Proto https if { ssl_fc }
  option  httpchk GET /
  timeout check 15s
  server 10_0_1_147_25724 10.0.1.147:25724 id 9975 check inter 3s fall 11
  server 10_0_6_25_16916 10.0.6.25:16916 id 14685 check inter 3s fall 11
  server 10_0_6_25_23336 10.0.6.25:23336 id 14676 check inter 3s fall 11
  server 10_0_6_25_31184 10.0.6.25:31184 id 27565 check inter 3s fall 11 disabled
",
        &[],
    );
    assert!(!text.contains("nginx_10001"), "one backend for the pair");
}

#[tokio::test]
async fn every_label_renders_a_configuration_haproxy_accepts() {
    let haproxy = binary("haproxy");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("site.pem");
    let key = dir.path().join("site.key");
    let ok = std::process::Command::new(binary("openssl"))
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test.example.com",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl made a certificate");
    let pem = [
        std::fs::read_to_string(&cert).expect("cert"),
        std::fs::read_to_string(&key).expect("key"),
    ]
    .concat();
    std::fs::write(&cert, pem).expect("pem");
    let cert = cert.display().to_string();

    let everything = app(json!({
        "id": "/shop/front", "cmd": "x",
        "portDefinitions": [{"port": 10000}, {"port": 10001}, {"port": 10002}],
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 1}],
        "labels": {
            "HAPROXY_GROUP": "external",
            "HAPROXY_0_VHOST": "shop.example.com,www.shop.example.com",
            "HAPROXY_0_PATH": "/api",
            "HAPROXY_0_BACKEND_WEIGHT": "5",
            "HAPROXY_0_AUTH": "realm:admin:$6$salt$hash",
            "HAPROXY_0_USE_HSTS": "true",
            "HAPROXY_0_STICKY": "true",
            "HAPROXY_0_BALANCE": "leastconn",
            "HAPROXY_0_BIND_ADDR": "127.0.0.1",
            "HAPROXY_0_BIND_OPTIONS": "maxconn 1000",
            "HAPROXY_0_SSL_CERT": cert,
            "HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL": "127.0.0.0/8 10.0.0.0/8",
            "HAPROXY_0_HTTP_BACKEND_PROXYPASS_PATH": "/api",
            "HAPROXY_0_HTTP_BACKEND_REVPROXY_PATH": "/shop",
            "HAPROXY_0_HTTP_BACKEND_REDIR": "/welcome",
            "HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX": "1",
            "HAPROXY_1_MODE": "tcp",
            "HAPROXY_1_PORT": "10011",
            "HAPROXY_1_BACKEND_NETWORK_ALLOWED_ACL": "127.0.0.1",
            "HAPROXY_1_BACKEND_HEAD": "\nbackend {backend}\n  balance source\n  mode {mode}\n",
            "HAPROXY_1_FRONTEND_HEAD": "\nfrontend {backend}\n  bind {bindAddr}:{servicePort}\n  mode {mode}\n  timeout client 10s\n",
            "HAPROXY_2_VHOST": "other.example.com",
            "HAPROXY_2_REDIRECT_TO_HTTPS": "true",
            "HAPROXY_2_AUTH": "r:u:p"
        }
    }));
    let plain = app(
        json!({"id": "/db", "cmd": "x", "portDefinitions": [{"port": 10005}],
                           "healthChecks": [{"protocol": "TCP"}]}),
    );
    let text = rendered(vec![
        (
            everything,
            vec![
                task("a", "agent1", "10.0.0.1", &[31000, 31001, 31002]),
                task("b", "agent2", "10.0.0.2", &[31003, 31004, 31005]),
            ],
        ),
        (plain, vec![task("c", "agent1", "10.0.0.1", &[31006])]),
    ])
    .replace("crt /etc/ssl/cert.pem ", "");
    let target = dir.path().join("haproxy.cfg");
    if let Err(e) = files::check_text(&haproxy, &target, &text).await {
        panic!("HAProxy refuses:\n{e}\n--- configuration ---\n{text}");
    }
    // Not even a warning (cookies in a TCP backend aside, which marathon-lb writes too).
    std::fs::write(&target, &text).expect("write");
    let out = std::process::Command::new(&haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&target)
        .output()
        .expect("haproxy -c");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARNING") && !l.contains("cookie"))
        .collect();
    assert!(
        warnings.is_empty(),
        "{warnings:#?}\n--- configuration ---\n{text}"
    );
    for must in [
        "userlist user_shop_front_10000",
        "http-response set-header Strict-Transport-Security max-age=15768000",
        "http-request replace-path ^/api/?(.*) /\\1",
        "frontend shop_front_10011",
        "balance source",
        "port 31001",
        "redirect scheme https code 301 if !{ ssl_fc } host_other_example_com_shop_front",
    ] {
        assert!(text.contains(must), "{must:?} missing from:\n{text}");
    }
}
