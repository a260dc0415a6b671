//! How soon a task that becomes healthy is served: from the store commit to a ready server in
//! HAProxy's runtime and to its SRV record in lb-sync's DNS answer. Also the way back (a task
//! that turns unhealthy is taken out). Prints the distribution; asserts p99 under one second.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RData;
use serde_json::json;
use stride_lb_sync::dns::wire::build_query;

async fn srv_ports(dns: SocketAddr, name: &str) -> Vec<u16> {
    let Ok(sock) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
        return Vec::new();
    };
    let q = build_query(7, name, 33, Some(4096));
    if sock.send_to(&q, dns).await.is_err() {
        return Vec::new();
    }
    let mut buf = vec![0u8; 4096];
    let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await
    else {
        return Vec::new();
    };
    let Ok(m) = Message::from_vec(&buf[..n]) else {
        return Vec::new();
    };
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.port),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_turning_healthy_is_served_and_resolvable_within_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = World::new().await;
    let sp = free_port();
    let backend = format!("lat_{sp}");
    world
        .put_app(&app(json!({
            "id": "/lat", "cmd": "x",
            "portDefinitions": [{"port": sp}],
            "healthChecks": [{"protocol": "HTTP", "intervalSeconds": 60}]
        })))
        .await;
    let base = Backend::start("base").await;
    world
        .put_instance(&running("/lat", "127.0.0.1", &[base.port], Some(true)))
        .await;
    let mut cfg = config(dir.path());
    cfg.debounce = stride_lb_sync::Config::default().debounce;
    let admin = cfg.haproxy.admin_socket.clone();
    let master = cfg.haproxy.master_socket.clone();
    let lb = LbSync::start(cfg, world.dyn_store(), true).await;
    let dns = lb.dns.expect("dns");
    eventually(
        Duration::from_secs(15),
        "the first task is served",
        || async {
            (ready_ports(&admin, &backend).await == vec![u32::from(base.port)]).then_some(())
        },
    )
    .await;
    let reloads_before = reloads(&master).await;

    let (mut up_lb, mut up_dns, mut down_lb, mut down_dns) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..40 {
        let b = Backend::start(&format!("t{i}")).await;
        let mut inst = running("/lat", "127.0.0.1", &[b.port], Some(false));
        world.put_instance(&inst).await;
        tokio::time::sleep(Duration::from_millis(40)).await;

        inst.healthy = Some(true);
        let t0 = Instant::now();
        world.put_instance(&inst).await;
        let (mut lb_at, mut dns_at) = (None, None);
        while lb_at.is_none() || dns_at.is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "not served within 5 s"
            );
            if lb_at.is_none()
                && ready_ports(&admin, &backend)
                    .await
                    .contains(&u32::from(b.port))
            {
                lb_at = Some(t0.elapsed());
            }
            if dns_at.is_none()
                && srv_ports(dns, "_lat._tcp.marathon.mesos")
                    .await
                    .contains(&b.port)
            {
                dns_at = Some(t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        up_lb.extend(lb_at);
        up_dns.extend(dns_at);

        inst.healthy = Some(false);
        let t0 = Instant::now();
        world.put_instance(&inst).await;
        let (mut lb_at, mut dns_at) = (None, None);
        while lb_at.is_none() || dns_at.is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "not removed within 5 s"
            );
            if lb_at.is_none()
                && !ready_ports(&admin, &backend)
                    .await
                    .contains(&u32::from(b.port))
            {
                lb_at = Some(t0.elapsed());
            }
            if dns_at.is_none()
                && !srv_ports(dns, "_lat._tcp.marathon.mesos")
                    .await
                    .contains(&b.port)
            {
                dns_at = Some(t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        down_lb.extend(lb_at);
        down_dns.extend(dns_at);
        world.delete_instance(&inst).await;
    }
    let reloads_after = reloads(&master).await;
    for (what, v) in [
        ("healthy → HAProxy ready", &mut up_lb),
        ("healthy → DNS SRV", &mut up_dns),
        ("unhealthy → out of HAProxy", &mut down_lb),
        ("unhealthy → out of DNS", &mut down_dns),
    ] {
        v.sort();
        eprintln!(
            "{what}: n={} p50={:?} p99={:?} max={:?}",
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.99),
            v.last().copied().unwrap_or_default()
        );
        assert!(
            percentile(v, 0.99) < Duration::from_secs(1),
            "{what}: p99 {:?}",
            percentile(v, 0.99)
        );
    }
    assert_eq!(
        reloads_after, reloads_before,
        "membership changes never reloaded"
    );
    lb.stop().await;
}
