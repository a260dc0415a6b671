//! Rendering time for a large cluster without criterion's statistics, split into its two
//! stages, with the minimum (least disturbed by other processes on a shared machine) beside
//! the median, and the CPU time the process used.
//!
//! `cargo run --release -p stride-lb-sync --example renderbench [apps] [rounds]`

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;
use stride_core::App;
use stride_lb_sync::config::HaproxyConfig;
use stride_lb_sync::dns::names::fqdn;
use stride_lb_sync::dns::wire::{CompiledZone, ZoneParams};
use stride_lb_sync::dns::zone::{records, ZoneOptions};
use stride_lb_sync::haproxy::render::{render, render_services, RenderOptions};
use stride_lb_sync::haproxy::services::services;
use stride_lb_sync::snapshot::{AppEntry, Snapshot, Task};

/// The same cluster as `benches/render.rs`: three tasks per app, a third with vhosts, half
/// with health checks.
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

/// User + system CPU time of this process, from /proc (10 ms resolution).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let apps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let opts = RenderOptions::from_config(&HaproxyConfig::default());
    let snap = snapshot(apps);
    let first = render(&snap, &opts, &HashMap::new(), &HashSet::new());
    if std::env::var_os("RENDERBENCH_DUMP").is_some() {
        print!("{}", first.text);
        return;
    }
    let caps = first.capacities();
    let (mut total, mut svc, mut txt) = (Vec::new(), Vec::new(), Vec::new());
    let cpu0 = cpu_time();
    let mut size = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let list = services(&snap, &opts.services);
        let t1 = t.elapsed();
        let r = render_services(&list, &opts, &caps);
        let t2 = t.elapsed();
        size = r.text.len();
        total.push(t2);
        svc.push(t1);
        txt.push(t2 - t1);
        drop(r);
    }
    let cpu = (cpu_time() - cpu0) / rounds as u32;
    let (tmin, tmed) = stats(total);
    let (smin, smed) = stats(svc);
    let (rmin, rmed) = stats(txt);
    // The DNS side of the same snapshot: records, then the encoded zone.
    let zopts = ZoneOptions {
        domain: fqdn("mesos"),
        framework: "marathon".into(),
        ns_address: [127, 0, 0, 1].into(),
    };
    let params = ZoneParams {
        apex: "mesos.".into(),
        ttl: 5,
        negative_ttl: 5,
        serial: 1,
    };
    let (mut recs_t, mut zone_t) = (Vec::new(), Vec::new());
    for _ in 0..rounds.min(10) {
        let t = Instant::now();
        let r = records(&snap, &zopts);
        let t1 = t.elapsed();
        let z = CompiledZone::compile(&r, &params);
        zone_t.push(t.elapsed() - t1);
        recs_t.push(t1);
        drop(z);
    }
    let (rmin2, rmed2) = stats(recs_t);
    let (zmin, zmed) = stats(zone_t);
    println!(
        "dns zone for {apps} apps: records {rmed2:.2?} (min {rmin2:.2?}), encoding {zmed:.2?} (min {zmin:.2?})"
    );
    println!(
        "render {apps} backends ({:.1} MB): median {tmed:.2?} (min {tmin:.2?}; services {smed:.2?}/{smin:.2?}, text {rmed:.2?}/{rmin:.2?}); CPU {cpu:.2?} per render",
        size as f64 / 1e6
    );
}
