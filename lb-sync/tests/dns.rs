//! lb-sync's DNS server asked with the real `dig`.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use stride_lb_sync::dns::server::{serve_udp, Shared};
use stride_lb_sync::dns::wire::{CompiledZone, ZoneParams};
use stride_lb_sync::dns::zone::{RData, RType, Records};

fn lines(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_finds_healthy_tasks_by_mesos_dns_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = World::new().await;
    world
        .put_app(&app(json!({
            "id": "/web", "cmd": "x",
            "portDefinitions": [{"port": 10000, "name": "http"}, {"port": 10001, "protocol": "udp"}],
            "healthChecks": [{"protocol": "HTTP"}]
        })))
        .await;
    world
        .put_app(&app(
            json!({"id": "/prod/api", "cmd": "x", "portDefinitions": [{"port": 10002}]}),
        ))
        .await;
    let sick = running("/web", "127.0.0.4", &[31004, 32004], Some(false));
    world
        .put_instances(&[
            running("/web", "127.0.0.2", &[31002, 32002], Some(true)),
            running("/web", "127.0.0.3", &[31003, 32003], Some(true)),
            sick.clone(),
            running("/prod/api", "127.0.0.6", &[31006], None),
        ])
        .await;
    let mut staging = running("/web", "127.0.0.5", &[31005, 32005], Some(true));
    staging.condition = stride_core::instance::Condition::Staging;
    world.put_instance(&staging).await;
    world.put_agent("agent-7", "127.0.0.7").await;

    let mut cfg = config(dir.path());
    cfg.haproxy.enabled = false;
    let lb = LbSync::start(cfg, world.dyn_store(), true).await;
    let dns = lb.dns.expect("dns");
    let at = format!("@{}", dns.ip());
    let port = dns.port().to_string();
    let q = |name: &'static str, t: &'static str| {
        let (at, port) = (at.clone(), port.clone());
        async move { dig(&[&at, "-p", &port, name, t, "+short"]).await }
    };

    eventually(
        Duration::from_secs(10),
        "A records of the healthy tasks",
        || async {
            (lines(&q("web.marathon.mesos", "A").await) == set(&["127.0.0.2", "127.0.0.3"]))
                .then_some(())
        },
    )
    .await;

    // SRV: the host ports of the healthy tasks, targets that resolve.
    let srv = lines(&q("_web._tcp.marathon.mesos", "SRV").await);
    let ports: BTreeSet<String> = srv
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    assert_eq!(ports, set(&["31002", "31003"]), "{srv:?}");
    for line in &srv {
        let target = line.split_whitespace().nth(3).expect("target").to_string();
        let a = dig(&[&at, "-p", &port, &target, "A", "+short"]).await;
        assert!(
            a.trim() == "127.0.0.2" || a.trim() == "127.0.0.3",
            "{target}: {a}"
        );
    }
    let full = dig(&[&at, "-p", &port, "_web._tcp.marathon.mesos", "SRV"]).await;
    assert!(full.contains("flags: qr aa rd"), "authoritative: {full}");
    assert!(
        full.contains("ADDITIONAL: 3"),
        "two target addresses and OPT: {full}"
    );
    let udp = lines(&q("_web._udp.marathon.mesos", "SRV").await);
    assert_eq!(udp.len(), 2);
    assert!(udp.iter().all(|l| l.contains(" 3200")));
    let named = lines(&q("_http._web._tcp.marathon.mesos", "SRV").await);
    assert_eq!(named.len(), 2);

    // The group path reversed; any letter case.
    assert_eq!(
        lines(&q("api-prod.marathon.mesos", "A").await),
        set(&["127.0.0.6"])
    );
    assert_eq!(
        lines(&q("API-Prod.Marathon.MESOS", "A").await),
        set(&["127.0.0.6"])
    );
    assert_eq!(
        lines(&q("api-prod.marathon.slave.mesos", "A").await),
        set(&["127.0.0.6"])
    );
    // Agents.
    assert_eq!(
        lines(&q("127-0-0-7.agents.mesos", "A").await),
        set(&["127.0.0.7"])
    );
    assert_eq!(lines(&q("slave.mesos", "A").await), set(&["127.0.0.7"]));

    // Negative answers carry the SOA; TCP works.
    let nx = dig(&[&at, "-p", &port, "nope.marathon.mesos", "A"]).await;
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("AUTHORITY: 1"),
        "{nx}"
    );
    let nodata = dig(&[&at, "-p", &port, "web.marathon.mesos", "AAAA"]).await;
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );
    let tcp = dig(&[
        &at,
        "-p",
        &port,
        "+tcp",
        "web.marathon.mesos",
        "A",
        "+short",
    ])
    .await;
    assert_eq!(lines(&tcp), set(&["127.0.0.2", "127.0.0.3"]));
    let refused = dig(&[&at, "-p", &port, "example.com", "A"]).await;
    assert!(refused.contains("status: REFUSED"), "{refused}");

    // A recovery shows up, with a higher serial.
    let serial = |soa: String| -> u64 {
        soa.split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .expect("serial")
    };
    let before = serial(q("mesos", "SOA").await);
    let mut healed = sick.clone();
    healed.healthy = Some(true);
    world.put_instance(&healed).await;
    eventually(
        Duration::from_secs(5),
        "the recovered task resolves",
        || async {
            lines(&q("web.marathon.mesos", "A").await)
                .contains("127.0.0.4")
                .then_some(())
        },
    )
    .await;
    assert!(
        serial(q("mesos", "SOA").await) > before,
        "the serial goes up"
    );
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_outside_the_domain_are_forwarded() {
    // An upstream: lb-sync's own server, serving `example.`.
    let mut records = Records::default();
    records.sets.insert(
        ("www.example.".into(), RType::A),
        vec![RData::A([192, 0, 2, 10].into())],
    );
    let upstream = Arc::new(Shared::new(
        "example.",
        Vec::new(),
        Duration::from_secs(1),
        1232,
    ));
    upstream.zone.store(Some(Arc::new(CompiledZone::compile(
        &records,
        &ZoneParams {
            apex: "example.".into(),
            ttl: 30,
            negative_ttl: 30,
            serial: 1,
        },
    ))));
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    let upstream_addr = socket.local_addr().expect("addr");
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(serve_udp(socket, upstream, stop_rx));

    let dir = tempfile::tempdir().expect("tempdir");
    let world = World::new().await;
    let mut cfg = config(dir.path());
    cfg.haproxy.enabled = false;
    cfg.dns.forward = vec![upstream_addr.to_string()];
    let lb = LbSync::start(cfg, world.dyn_store(), true).await;
    let dns = lb.dns.expect("dns");
    let (at, port) = (format!("@{}", dns.ip()), dns.port().to_string());
    let answer = eventually(Duration::from_secs(5), "a forwarded answer", || async {
        let a = dig(&[&at, "-p", &port, "www.example", "A", "+short"]).await;
        (!a.trim().is_empty()).then_some(a)
    })
    .await;
    assert_eq!(answer.trim(), "192.0.2.10");
    let soa = dig(&[&at, "-p", &port, "mesos", "SOA"]).await;
    assert!(
        soa.contains("flags: qr aa rd ra"),
        "RA set when forwarding: {soa}"
    );
    lb.stop().await;
}
