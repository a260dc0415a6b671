//! `stride-agent`: parses flags, loads the configuration (defaults → `--config` JSON file →
//! `STRIDE_AGENT_*` → flags), starts logging and runs the agent until SIGINT or SIGTERM. Tasks
//! keep running after the agent exits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use stride_agent::Config;
use tracing_subscriber::EnvFilter;

/// Stride's node agent. Every flag can also be set as `STRIDE_AGENT_<FLAG>` (e.g.
/// `STRIDE_AGENT_WORK_DIR`) or in the JSON file given with `--config`.
#[derive(Parser, Debug)]
#[command(name = "stride-agent", version)]
struct Args {
    /// JSON configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the resolved configuration as JSON and exit.
    #[arg(long)]
    dump_config: bool,
    /// Scheduler gRPC endpoints, comma-separated (`http://10.0.0.1:5051,http://10.0.0.2:5051`).
    #[arg(long)]
    schedulers: Option<String>,
    #[arg(long)]
    agent_id: Option<String>,
    #[arg(long)]
    hostname: Option<String>,
    #[arg(long)]
    work_dir: Option<String>,
    #[arg(long)]
    cpus: Option<String>,
    /// MiB.
    #[arg(long)]
    mem: Option<String>,
    /// MiB.
    #[arg(long)]
    disk: Option<String>,
    /// Host port ranges, e.g. `31000-32000`.
    #[arg(long)]
    ports: Option<String>,
    /// Attributes, e.g. `rack_id:r1;zone:a`.
    #[arg(long)]
    attributes: Option<String>,
    #[arg(long)]
    region: Option<String>,
    #[arg(long)]
    zone: Option<String>,
    /// How long sandboxes of finished tasks are kept, e.g. `24h`.
    #[arg(long)]
    sandbox_retention: Option<String>,
    /// PATH given to tasks.
    #[arg(long)]
    task_path: Option<String>,
    /// Where the agent's own gRPC API listens (sandbox files, command checks), e.g. `0.0.0.0:5052`.
    #[arg(long)]
    api_listen: Option<String>,
    /// `host:port` the scheduler records for the agent's API (default `<hostname>:<port>`).
    #[arg(long)]
    api_advertise: Option<String>,
    /// Honour `privileged: true` of Docker containers (`true`/`false`).
    #[arg(long)]
    allow_privileged: Option<String>,
    /// Allow volumes with an absolute `hostPath` (`true`/`false`).
    #[arg(long)]
    allow_host_volumes: Option<String>,
    /// Docker Engine endpoint, e.g. `unix:///var/run/docker.sock` (default: `DOCKER_HOST` or the local socket).
    #[arg(long)]
    docker_host: Option<String>,
    /// Confine process tasks with cgroups where possible (`true`/`false`).
    #[arg(long)]
    cgroups: Option<String>,
    /// PEM CA of the cluster; with --tls-cert and --tls-key, mutual TLS to the schedulers and
    /// on the agent API.
    #[arg(long)]
    tls_ca: Option<String>,
    /// PEM certificate of this agent, signed by --tls-ca.
    #[arg(long)]
    tls_cert: Option<String>,
    /// PEM private key of --tls-cert.
    #[arg(long)]
    tls_key: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

impl Args {
    /// The flags that were given, as configuration keys and values.
    fn overrides(&self) -> Vec<(String, String)> {
        [
            ("schedulers", &self.schedulers),
            ("agent_id", &self.agent_id),
            ("hostname", &self.hostname),
            ("work_dir", &self.work_dir),
            ("cpus", &self.cpus),
            ("mem", &self.mem),
            ("disk", &self.disk),
            ("ports", &self.ports),
            ("attributes", &self.attributes),
            ("region", &self.region),
            ("zone", &self.zone),
            ("sandbox_retention", &self.sandbox_retention),
            ("task_path", &self.task_path),
            ("api_listen", &self.api_listen),
            ("api_advertise", &self.api_advertise),
            ("allow_privileged", &self.allow_privileged),
            ("allow_host_volumes", &self.allow_host_volumes),
            ("docker_host", &self.docker_host),
            ("cgroups", &self.cgroups),
            ("tls_ca", &self.tls_ca),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_ref().map(|v| (key.to_string(), v.clone())))
        .collect()
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = match Config::load(args.config.as_deref(), &env, &args.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::from(64);
        }
    };
    if args.dump_config {
        return match serde_json::to_string_pretty(&config) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot print the configuration: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(stride_agent::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "agent failed");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the agent");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
