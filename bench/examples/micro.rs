//! Times single calls of the leader's hot functions in-process, without a stack: offer
//! matching of one app × 100 over a fleet (with and without UNIQUE + GROUP_BY), and one
//! `LeaderState::deploy` beside 1,000 and 10,000 apps.
//!
//!     cargo run --release -p stride-bench --example micro -- [agents, default 1000]
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use stride_core::instance::InstanceId;
use stride_core::matching::{match_offers, Offer, Pending};
use stride_core::{PathId, Timestamp};
use stride_scheduler::state::{Change, LeaderState, Origin};

fn offers(n: usize) -> Vec<Offer> {
    (0..n)
        .map(|i| Offer {
            agent_id: format!("sim-{i:05}"),
            hostname: format!("sim-{i:05}.bench"),
            cpus: 16.0,
            mem: 65536.0,
            disk: 65536.0,
            gpus: 0,
            ports: vec![(31000, 32999)],
            attributes: vec![("rack_id".into(), format!("rack-{:03}", i % 25))],
            region: None,
            zone: None,
        })
        .collect()
}

fn app(id: &str, n: usize, spread: bool) -> stride_core::App {
    let mut v = serde_json::json!({"id": id, "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": n,
        "portDefinitions": [{"port": 0}]});
    if spread {
        v["constraints"] = serde_json::json!([["hostname", "UNIQUE"], ["rack_id", "GROUP_BY"]]);
    }
    stride_core::parse::app_from_value(v, &PathId::root(), None).expect("app")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let agents: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    for spread in [false, true] {
        let a = app("/bench/x", 100, spread);
        let mut o = offers(agents);
        let pending: Vec<Pending<'_>> = (0..100)
            .map(|_| Pending {
                instance_id: InstanceId::new(&a.id),
                app: &a,
            })
            .collect();
        let mut placed = HashMap::new();
        let t = Instant::now();
        let r = match_offers(&mut o, &pending, &mut placed);
        println!("match_offers: one app × 100 over {agents} agents, constraints={spread}: {:.1} ms ({} placed)", t.elapsed().as_secs_f64() * 1e3, r.assignments.len());
    }
    for existing in [1000usize, 10_000] {
        let mut s = LeaderState::new(Default::default(), Timestamp::now());
        for i in 0..existing {
            let mut a = app(&format!("/bench/app-{i:05}"), 10, false);
            a.version = Some(Timestamp(1_700_000_000_000 + i as i64));
            s.load_app(a, vec![]);
        }
        let mut times = Vec::new();
        for k in 0..20 {
            let v = serde_json::json!({"id": format!("/bench/new-{k}"), "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 1, "portDefinitions": []});
            let t = Instant::now();
            let r = s.deploy(
                vec![Change::Create(v)],
                false,
                &Origin::default(),
                BTreeMap::new(),
                Timestamp::now(),
            );
            times.push(t.elapsed().as_secs_f64() * 1e3);
            if let Err(e) = r {
                println!("deploy failed: {e:?}");
                break;
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "LeaderState::deploy of one app beside {existing} apps: median {:.1} ms, max {:.1} ms",
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
}
