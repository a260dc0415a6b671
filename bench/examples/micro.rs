//! Times single calls of the leader's hot functions in-process, without a stack: offer
//! matching of one app × 100 over a fleet (with and without UNIQUE + GROUP_BY), one
//! `LeaderState::deploy` beside 1,000 and 10,000 apps, and what one `POST /v2/apps` of a
//! single instance costs the leader beside 10,000 apps on the fleet (the deploy, then the
//! reconcile pass that launches it), and the leader's decisions alone (no gRPC, no store) to
//! launch 100,000 instances as one app, as 1,000 apps, and as 1,000 apps with constraints.
//!
//!     cargo run --release -p stride-bench --example micro -- [agents, default 1000]
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use stride_core::instance::{Condition, Instance, InstanceId, Placement};
use stride_core::matching::{match_offers, Offer, Pending};
use stride_core::{PathId, Timestamp};
use stride_scheduler::state::{
    AgentCommand, AgentInfo, AgentStatus, Change, LeaderState, Origin, MAX_RUNNING_DEPLOYMENTS,
};

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
    post_beside(10_000, agents);
    for (apps, per_app, spread) in [(1, 100_000, false), (1_000, 100, false), (1_000, 100, true)] {
        let (passes, secs) = launch_all(apps, per_app, agents, spread);
        println!(
            "decisions alone, {apps} apps × {per_app} (constraints={spread}) on {agents} agents: {passes} passes, {secs:.2} s, {:.1} ms per 1,000 instances",
            secs * 1e6 / (apps * per_app) as f64
        );
    }
}

/// Posts `apps` apps of `per_app` instances as the API would (no more than the running
/// deployments allowed) and runs passes, each launch answered at once with Running, until all
/// run on `agents` agents: the passes and the time they took.
fn launch_all(apps: usize, per_app: usize, agents: usize, spread: bool) -> (usize, f64) {
    let mut now = Timestamp(1_000_000);
    let mut s = LeaderState::new(Default::default(), now);
    for (n, o) in offers(agents).into_iter().enumerate() {
        s.agent_registered(agent_info(o), n as u64, Vec::new(), now);
    }
    let started = Instant::now();
    let (mut posted, mut passes, mut launched) = (0, 0, 0);
    while launched < apps * per_app {
        while posted < apps && s.deployments.len() < MAX_RUNNING_DEPLOYMENTS {
            let mut v = serde_json::json!({"id": format!("/load/app-{posted:05}"), "cmd": "sleep 1000",
                "cpus": 0.01, "mem": 8, "instances": per_app, "portDefinitions": []});
            if spread {
                v["constraints"] =
                    serde_json::json!([["hostname", "UNIQUE"], ["rack_id", "GROUP_BY"]]);
            }
            s.deploy(
                vec![Change::Create(v)],
                false,
                &Origin::default(),
                BTreeMap::new(),
                now,
            )
            .expect("deploys");
            posted += 1;
        }
        passes += 1;
        assert!(passes < 10_000, "{launched} launched after {passes} passes");
        now = now.plus_millis(10);
        let fx = s.reconcile(now);
        for (agent, c) in &fx.commands {
            let AgentCommand::Launch(tasks) = c else {
                continue;
            };
            launched += tasks.len();
            for t in tasks {
                let status = AgentStatus {
                    task_id: t.task_id.clone(),
                    condition: Condition::Running,
                    terminal: false,
                    message: String::new(),
                    reason: String::new(),
                    timestamp: now,
                    ports: t.host_ports.clone(),
                    ip_addresses: Vec::new(),
                    healthy: None,
                    exit_code: None,
                };
                s.status(agent, status, now);
            }
        }
    }
    (passes, started.elapsed().as_secs_f64())
}

fn agent_info(o: Offer) -> AgentInfo {
    AgentInfo {
        agent_id: o.agent_id,
        hostname: o.hostname,
        cpus: o.cpus,
        mem: o.mem,
        disk: o.disk,
        gpus: o.gpus,
        ports: o.ports,
        attributes: o.attributes,
        region: None,
        zone: None,
        api_address: String::new(),
    }
}

/// One app of one instance posted beside `existing` apps (100 to a group) on `agents`
/// connected agents: the deploy, then the reconcile pass that places and launches it.
fn post_beside(existing: usize, agents: usize) {
    let now = Timestamp::now();
    let mut s = LeaderState::new(Default::default(), now);
    for (n, o) in offers(agents).into_iter().enumerate() {
        s.agent_registered(agent_info(o), n as u64, Vec::new(), now);
    }
    // Ten running instances each, spread over the agents, each on a host port of its own.
    let fleet = offers(agents);
    for i in 0..existing {
        let mut a = app(&format!("/bench/g-{:03}/app-{i:05}", i / 100), 10, false);
        a.version = Some(Timestamp(1_700_000_000_000 + i as i64));
        let mut instances = Vec::new();
        for k in 0..10 {
            let n = i * 10 + k;
            let o = &fleet[n % agents];
            let mut inst = Instance::scheduled(&a.id, a.config_version(), now);
            inst.condition = Condition::Running;
            inst.incarnation = 1;
            inst.host_ports = vec![31000 + (n / agents) as u32];
            inst.placement = Some(Placement {
                agent_id: o.agent_id.clone(),
                hostname: o.hostname.clone(),
                attributes: o.attributes.clone(),
            });
            instances.push(inst);
        }
        s.load_app(a, vec![]);
        instances.into_iter().for_each(|i| s.load_instance(i));
    }
    let (mut deploys, mut passes) = (Vec::new(), Vec::new());
    for k in 0..50 {
        let v = serde_json::json!({"id": format!("/api/extra-{k:04}"), "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 1, "portDefinitions": []});
        let t = Instant::now();
        if let Err(e) = s.deploy(
            vec![Change::Create(v)],
            false,
            &Origin::default(),
            BTreeMap::new(),
            Timestamp::now(),
        ) {
            println!("deploy failed: {e:?}");
            return;
        }
        deploys.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        s.reconcile(Timestamp::now());
        passes.push(t.elapsed().as_secs_f64() * 1e3);
    }
    for v in [&mut deploys, &mut passes] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "POST of one instance beside {existing} apps on {agents} agents: deploy median {:.2} ms, the pass that launches it median {:.2} ms (max {:.2} / {:.2} ms)",
        deploys[deploys.len() / 2],
        passes[passes.len() / 2],
        deploys[deploys.len() - 1],
        passes[passes.len() - 1]
    );
}
