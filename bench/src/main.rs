//! `stride-bench`: issue 11's scenarios against the real release binaries, a real Redis and a
//! simulated fleet (see `fleet`). Each scenario runs `--runs` times on a fresh stack; the medians
//! are printed as JSON and as a Markdown table, each beside its reference from the same runs.
//!
//!     stride-bench all                 every scenario at the sizes, 3 runs each
//!     stride-bench --quick all         2,000 instances over 100 agents, one run (CI's smoke test)
//!     stride-bench launch-many --runs 5 --json out.json

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;

mod client;
mod cluster;
mod fleet;
mod report;
mod scenarios;
mod static_server;

use report::Measure;
use scenarios::{launch::Shape, Ctx, Sizes};

#[derive(Parser, Debug)]
#[command(
    name = "stride-bench",
    about = "Stride's benchmarks: a simulated fleet and the real binaries"
)]
struct Args {
    /// Small sizes (2,000 instances over 100 agents) and one run unless --runs says otherwise.
    #[arg(long, global = true)]
    quick: bool,
    /// Runs of each scenario; the table shows their medians [default: 3, 1 with --quick].
    #[arg(long, global = true)]
    runs: Option<usize>,
    /// Simulated agents [default: 1000, 100 with --quick].
    #[arg(long, global = true)]
    agents: Option<usize>,
    /// Apps of launch-many, launch-spread, failover and api (to try other sizes).
    #[arg(long, global = true)]
    apps: Option<usize>,
    /// Instances per app of launch-many, launch-spread, failover and api.
    #[arg(long, global = true)]
    per_app: Option<usize>,
    /// Instances of launch-one.
    #[arg(long, global = true)]
    instances: Option<usize>,
    /// Where stride-scheduler, stride-api-gateway and stride-agent are [default: beside this
    /// executable].
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// Also write the JSON results here.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Skip the Docker Swarm reference of `containers` (it needs `docker swarm init` on an
    /// engine in no swarm, which other users of the engine would see while it runs).
    #[arg(long, global = true)]
    no_swarm: bool,
    /// Also write the Markdown table here.
    #[arg(long, global = true)]
    markdown: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug, Clone, PartialEq)]
enum Cmd {
    /// Every scenario below, in order.
    All,
    /// 1: 1,000 apps × 100 instances.
    LaunchMany,
    /// 1: one app × 100,000 instances.
    LaunchOne,
    /// 2: 1,000 apps × 100 with hostname UNIQUE and rack_id GROUP_BY.
    LaunchSpread,
    /// 3: GET /v2/apps, POST /v2/apps and GET /v2/apps/{id} at 10,000 apps and 100,000 tasks.
    Api,
    /// 4: kill -9 the leader at 100,000 instances.
    Failover,
    /// 5: 1,000 real sleep tasks on one real agent.
    Sleeps,
    /// 6: 100 Docker containers on one real agent.
    Containers,
    /// The static reference server of `api` (started by it).
    #[command(hide = true)]
    StaticServer {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        body: PathBuf,
    },
}

const SCENARIOS: [Cmd; 8] = [
    Cmd::LaunchMany,
    Cmd::LaunchOne,
    Cmd::LaunchSpread,
    Cmd::Api,
    Cmd::Failover,
    Cmd::Sleeps,
    Cmd::Containers,
    Cmd::All,
];

async fn run_one(ctx: &Ctx, cmd: &Cmd) -> anyhow::Result<Vec<Measure>> {
    let z = &ctx.sizes;
    match cmd {
        Cmd::LaunchMany => {
            let scenario = format!("1 · {} apps × {}", z.many_apps, z.many_per_app);
            let shape = Shape {
                scenario: leak(scenario),
                apps: z.many_apps,
                per_app: z.many_per_app,
                spread: false,
                target: 10_000.0,
            };
            scenarios::launch::run(ctx, &shape).await
        }
        Cmd::LaunchOne => {
            let shape = Shape {
                scenario: leak(format!("1 · one app × {}", z.one_instances)),
                apps: 1,
                per_app: z.one_instances,
                spread: false,
                target: 10_000.0,
            };
            scenarios::launch::run(ctx, &shape).await
        }
        Cmd::LaunchSpread => {
            let shape = Shape {
                scenario: leak(format!(
                    "2 · {} apps × {}, UNIQUE + GROUP_BY",
                    z.spread_apps, z.spread_per_app
                )),
                apps: z.spread_apps,
                per_app: z.spread_per_app,
                spread: true,
                target: 5_000.0,
            };
            scenarios::launch::run(ctx, &shape).await
        }
        Cmd::Api => scenarios::api::run(ctx).await,
        Cmd::Failover => scenarios::failover::run(ctx).await,
        Cmd::Sleeps => scenarios::real::sleeps(ctx).await,
        Cmd::Containers => scenarios::real::containers(ctx).await,
        Cmd::All | Cmd::StaticServer { .. } => unreachable!("not a single scenario"),
    }
}

/// Scenario names are built once per process; a `'static` label keeps `Shape` simple.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The 1-minute load average.
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn machine() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let mem_kb: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "memory_gib": (mem_kb as f64 / (1 << 20) as f64 * 10.0).round() / 10.0,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "loadavg_at_start": read("/proc/loadavg").trim(),
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Cmd::StaticServer { listen, body } = &args.command {
        return match static_server::serve(listen, body) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("static server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if let Some(a) = args.agents {
        sizes.agents = a;
    }
    if let Some(a) = args.apps {
        (
            sizes.many_apps,
            sizes.spread_apps,
            sizes.failover_apps,
            sizes.api_apps,
        ) = (a, a, a, a);
    }
    if let Some(p) = args.per_app {
        (
            sizes.many_per_app,
            sizes.spread_per_app,
            sizes.failover_per_app,
            sizes.api_per_app,
        ) = (p, p, p, p);
    }
    if let Some(n) = args.instances {
        sizes.one_instances = n;
    }
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("stride-bench: cannot find this executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bin_dir = args
        .bin_dir
        .clone()
        .or_else(|| exe.parent().map(PathBuf::from))
        .unwrap_or_default();
    let ctx = Ctx {
        bins: cluster::Binaries { dir: bin_dir },
        sizes,
        exe,
        swarm: !args.no_swarm,
    };
    let chosen: Vec<Cmd> = if args.command == Cmd::All {
        SCENARIOS
            .iter()
            .filter(|c| **c != Cmd::All)
            .cloned()
            .collect()
    } else {
        vec![args.command.clone()]
    };
    let machine = machine();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stride-bench: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = std::time::Instant::now();
    let (measures, errors, load) = runtime.block_on(async {
        let mut measures = Vec::new();
        let mut errors = Vec::new();
        let mut load = Vec::new();
        for cmd in &chosen {
            for run in 1..=runs {
                progress!("{cmd:?}: run {run}/{runs}");
                let before = loadavg();
                let result = run_one(&ctx, cmd).await;
                // What else ran: the 1-minute load average around each run (2.0 = both cores).
                load.push(json!({"scenario": format!("{cmd:?}"), "run": run, "before": before, "after": loadavg()}));
                match result {
                    Ok(m) => measures.extend(m),
                    Err(e) => {
                        progress!("{cmd:?}: run {run} failed: {e:#}");
                        errors.push(json!({"scenario": format!("{cmd:?}"), "run": run, "error": format!("{e:#}")}));
                    }
                }
            }
        }
        (measures, errors, load)
    });
    let rows = report::aggregate(&measures);
    let result = json!({
        "machine": machine,
        "runs": runs,
        "quick": args.quick,
        "sizes": format!("{:?}", ctx.sizes),
        "wall_seconds": started.elapsed().as_secs_f64(),
        "rows": rows,
        "load": load,
        "errors": errors,
    });
    let json_text = serde_json::to_string_pretty(&result).unwrap_or_default();
    let table = report::markdown(&rows);
    println!("{json_text}\n");
    println!(
        "Machine: {} cores ({}), {} GiB; {} run(s) each, medians.\n",
        machine["nproc"],
        machine["cpu"].as_str().unwrap_or(""),
        machine["memory_gib"],
        runs
    );
    println!("{table}");
    if let Some(p) = &args.json {
        if let Err(e) = std::fs::write(p, &json_text) {
            eprintln!("stride-bench: cannot write {}: {e}", p.display());
        }
    }
    if let Some(p) = &args.markdown {
        if let Err(e) = std::fs::write(p, &table) {
            eprintln!("stride-bench: cannot write {}: {e}", p.display());
        }
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        for e in &errors {
            eprintln!("stride-bench: {}", e["error"].as_str().unwrap_or(""));
        }
        ExitCode::FAILURE
    }
}
