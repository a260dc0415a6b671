//! The scenarios of issue 11, each a function from sizes to [`Measure`]s of one run. Every run
//! starts a fresh stack (Redis, schedulers, gateway) and measures its reference in the same run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use crate::cluster::{Binaries, Stack};
use crate::fleet::{AgentSpec, Fleet};

pub mod api;
pub mod failover;
pub mod launch;
pub mod real;

/// How big each scenario is.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub agents: usize,
    pub many_apps: usize,
    pub many_per_app: usize,
    pub one_instances: usize,
    pub spread_apps: usize,
    pub spread_per_app: usize,
    pub api_apps: usize,
    pub api_per_app: usize,
    pub api_posts: usize,
    pub api_gets: usize,
    pub api_seconds: u64,
    pub failover_apps: usize,
    pub failover_per_app: usize,
    pub sleeps: usize,
    pub containers: usize,
}

impl Sizes {
    /// The sizes the targets are stated for.
    pub fn full() -> Self {
        Self {
            agents: 1000,
            many_apps: 1000,
            many_per_app: 100,
            one_instances: 100_000,
            spread_apps: 1000,
            spread_per_app: 100,
            api_apps: 10_000,
            api_per_app: 10,
            api_posts: 200,
            api_gets: 30,
            api_seconds: 10,
            failover_apps: 1000,
            failover_per_app: 100,
            sleeps: 1000,
            containers: 100,
        }
    }

    /// The smoke test: 2,000 instances over 100 agents.
    pub fn quick() -> Self {
        Self {
            agents: 100,
            many_apps: 20,
            many_per_app: 100,
            one_instances: 2000,
            spread_apps: 20,
            spread_per_app: 100,
            api_apps: 200,
            api_per_app: 10,
            api_posts: 50,
            api_gets: 10,
            api_seconds: 3,
            failover_apps: 20,
            failover_per_app: 100,
            sleeps: 100,
            containers: 10,
        }
    }
}

/// What every scenario gets.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub bins: Binaries,
    pub sizes: Sizes,
    /// This executable, to start the static reference server as a process of its own.
    pub exe: PathBuf,
    /// Whether `containers` measures Docker Swarm too (it initialises a single-node swarm on
    /// the engine when none is active, and leaves it afterwards).
    pub swarm: bool,
}

/// A small app of `instances` sleeps; one host port each unless `ports` is false.
pub fn app_json(id: &str, instances: usize, ports: bool, spread: bool) -> String {
    let mut app = json!({
        "id": id,
        "cmd": "sleep 1000",
        "cpus": 0.01,
        "mem": 8,
        "instances": instances,
        "portDefinitions": if ports { json!([{"port": 0, "protocol": "tcp"}]) } else { json!([]) },
    });
    if spread {
        app["constraints"] = json!([["hostname", "UNIQUE"], ["rack_id", "GROUP_BY"]]);
    }
    app.to_string()
}

/// Starts `agents` simulated agents against the stack and waits until all are registered.
pub async fn start_fleet(stack: &Stack, agents: usize) -> anyhow::Result<Fleet> {
    let racks = (agents / 40).max(2);
    let specs = (0..agents).map(|i| AgentSpec::numbered(i, racks)).collect();
    let fleet = Fleet::start(specs, stack.grpc_endpoints());
    let deadline = Instant::now() + Duration::from_secs(120);
    while fleet.registered() < agents as i64 {
        if Instant::now() > deadline {
            bail!(
                "{} of {agents} simulated agents registered after 120 s",
                fleet.registered()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(fleet)
}

/// Waits until `done` holds, checking every `every`; the moment it was seen.
pub async fn until(
    what: &str,
    every: Duration,
    within: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Prints progress to stderr (stdout carries the results).
#[macro_export]
macro_rules! progress {
    ($($t:tt)*) => {{
        eprintln!("[stride-bench] {}", format!($($t)*));
    }};
}
