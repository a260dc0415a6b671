//! Rendering the HAProxy configuration for large clusters: 1,000 and 10,000 backends (one per
//! app service port), three tasks each, a third of them with vhosts and half with health
//! checks. The budget is 50 ms for 10,000 backends.
//!
//! `cargo bench -p stride-lb-sync --bench render`

use std::collections::{HashMap, HashSet};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use stride_core::App;
use stride_lb_sync::config::{DnsConfig, HaproxyConfig};
use stride_lb_sync::dns::names::fqdn;
use stride_lb_sync::dns::wire::{CompiledZone, ZoneParams};
use stride_lb_sync::dns::zone::{records, ZoneOptions};
use stride_lb_sync::haproxy::render::{render, RenderOptions};
use stride_lb_sync::snapshot::{AppEntry, Snapshot, Task};

fn snapshot(apps: usize) -> Snapshot {
    let mut entries: Vec<AppEntry> = (0..apps)
        .map(|i| {
            let mut labels = serde_json::Map::new();
            if i % 3 == 0 {
                labels.insert(
                    "HAPROXY_0_VHOST".into(),
                    json!(format!("app{i}.example.com")),
                );
            }
            let checks = if i % 2 == 0 {
                json!([{"protocol": "HTTP", "path": "/health"}])
            } else {
                json!([])
            };
            let mut app: App = serde_json::from_value(json!({
                "id": format!("/team{}/app{i}", i % 100),
                "cmd": "serve",
                "portDefinitions": [{"port": 10_000 + i}],
                "healthChecks": checks,
                "labels": labels,
            }))
            .expect("app");
            app.normalize();
            let tasks = (0..3)
                .map(|t| Task {
                    id: format!("team_app{i}.instance-{t}"),
                    host: format!("agent{}.example.com", (i + t) % 200).into(),
                    host_ip: Some(
                        format!("10.0.{}.{}", (i + t) % 200 / 250, (i + t) % 250 + 1)
                            .parse()
                            .expect("ip"),
                    ),
                    ip_addresses: Vec::new(),
                    ports: vec![31_000 + (t as u32) * 100 + (i as u32 % 100)],
                })
                .collect();
            AppEntry { app, tasks }
        })
        .collect();
    // As the loader delivers them.
    entries.sort_by(|a, b| a.app.id.cmp(&b.app.id));
    Snapshot {
        apps: entries,
        agents: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let opts = RenderOptions::from_config(&HaproxyConfig::default());
    for n in [1_000, 10_000] {
        let snap = snapshot(n);
        let first = render(&snap, &opts, &HashMap::new(), &HashSet::new());
        assert_eq!(first.backends.len(), n);
        let caps = first.capacities();
        c.bench_function(&format!("render {n} backends"), |b| {
            b.iter(|| black_box(render(black_box(&snap), &opts, &caps, &HashSet::new())))
        });
    }
    let snap = snapshot(10_000);
    let dns = DnsConfig::default();
    let zopts = ZoneOptions {
        domain: fqdn(&dns.domain),
        framework: dns.framework.clone(),
        ns_address: [127, 0, 0, 1].into(),
    };
    c.bench_function("dns zone for 10000 apps", |b| {
        b.iter(|| {
            let r = records(black_box(&snap), &zopts);
            black_box(CompiledZone::compile(
                &r,
                &ZoneParams {
                    apex: zopts.domain.clone(),
                    ttl: 5,
                    negative_ttl: 5,
                    serial: 1,
                },
            ))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
