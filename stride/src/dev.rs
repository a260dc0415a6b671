//! `stride dev`: every service in one process over an in-memory store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use stride_telemetry::TelemetryConfig;
use tokio::sync::watch;
use tracing::info;

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Where the API and UI listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The agent's work directory (sandboxes of tasks, its state).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Hostname the local agent reports; tasks' `host` and `$HOST`.
    #[arg(long, default_value = "127.0.0.1")]
    hostname: String,
    /// Host port range the local agent offers.
    #[arg(long, default_value = "31000-32000")]
    ports: String,
    /// Leave tasks running when `stride dev` exits (they are killed by default, since the state
    /// that knew them lives only in memory).
    #[arg(long)]
    keep_tasks: bool,
}

pub fn main(args: DevArgs) -> ExitCode {
    let telemetry = TelemetryConfig {
        log_filter: std::env::var("RUST_LOG")
            .ok()
            .or_else(|| Some("info,actix_server=warn".into())),
        ..TelemetryConfig::default()
    };
    stride_telemetry::init_tracing(&telemetry);
    let metrics = match stride_telemetry::init_metrics(&telemetry) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("stride dev: {e}");
            return ExitCode::FAILURE;
        }
    };
    let work_dir = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("stride-dev-{}", nix::unistd::getuid()))
    });
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the tokio runtime: {e}"))
    };
    let keep = args.keep_tasks;
    let result =
        actix_rt::System::with_tokio_rt(runtime).block_on(run(args, work_dir.clone(), metrics));
    if !keep {
        kill_tasks_under(&work_dir);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stride dev: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    args: DevArgs,
    work_dir: PathBuf,
    metrics: stride_telemetry::MetricsHandle,
) -> Result<(), String> {
    let store: Arc<dyn stride_store::StateStore> = Arc::new(stride_store::MemoryStore::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let http = std::net::TcpListener::bind(args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot open the scheduler's port: {e}"))?;
    let grpc_addr = grpc.local_addr().map_err(|e| e.to_string())?;

    let mut scheduler = stride_scheduler::Config::new(&grpc_addr.to_string());
    scheduler.scheduler_id = "dev".into();
    scheduler.http_address = args.listen.to_string();
    // One process: there is no other scheduler to fail over to, and no agent to wait for.
    scheduler.tuning.reregistration_grace = std::time::Duration::from_secs(1);
    // Nobody else campaigns for the lease, so a long one costs nothing, and a machine busy
    // with a big deployment cannot make the only scheduler lose it.
    scheduler.lease_ttl = std::time::Duration::from_secs(30);
    scheduler.renew_interval = std::time::Duration::from_secs(5);
    let scheduler_task = actix_rt::spawn(stride_scheduler::run(
        scheduler,
        grpc,
        store.clone(),
        stopped(),
    ));

    // The state lives in memory, so whatever an earlier run left in the agent's work directory
    // (task records, the highest leader epoch seen) describes a cluster that no longer exists.
    for stale in ["tasks", "epoch"] {
        let path = work_dir.join(stale);
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
    let mut agent = stride_agent::Config::for_dev(&work_dir, vec![format!("http://{grpc_addr}")]);
    agent.hostname = Some(args.hostname.clone());
    if let Ok(path) = std::env::var("PATH") {
        agent.task_path = path;
    }
    agent.ports = args.ports.parse().map_err(|e| format!("--ports: {e}"))?;
    let agent_task = tokio::spawn(stride_agent::run(agent, stopped()));

    // One health-checker replica, so apps with health checks become healthy and their
    // deployments finish.
    let mut checker = stride_health_checker::Config::new("dev");
    checker.schedulers = vec![grpc_addr.to_string()];
    let checker_task = tokio::spawn(stride_health_checker::run(
        checker,
        store.clone(),
        stopped(),
    ));

    let mut gateway = stride_api_gateway::Config::new(args.listen.to_string());
    // `stride dev` is the one place that runs open by design, and says so below.
    gateway.insecure_no_auth = true;
    let gateway_task = actix_rt::spawn(stride_api_gateway::run(
        gateway,
        http,
        store,
        metrics,
        stopped(),
    ));

    eprintln!();
    eprintln!("  Stride is running at http://{}", args.listen);
    eprintln!(
        "  WARNING: this API is open. Anyone who can reach it can run any command on this machine."
    );
    eprintln!("  State is kept in memory; tasks are killed when this process exits.");
    eprintln!("  Sandboxes of tasks: {}", work_dir.display());
    eprintln!();
    info!(api = %args.listen, grpc = %grpc_addr, "stride dev started");

    shutdown_signal().await;
    info!("stopping");
    let _ = stop_tx.send(true);
    let _ = gateway_task.await;
    let _ = agent_task.await;
    let _ = checker_task.await;
    let _ = scheduler_task.await;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Kills every process whose sandbox lies under `dir`, with its process group.
fn kill_tasks_under(dir: &Path) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let prefix = format!("MESOS_SANDBOX={}", dir.display());
    let tasks = || -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                    env.split(|b| *b == 0)
                        .any(|kv| kv.starts_with(prefix.as_bytes()))
                })
            })
            .collect()
    };
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let pids = tasks();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(-pid), signal);
            let _ = kill(Pid::from_raw(pid), signal);
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}
