//! `stride-scheduler`: parses flags, sets up telemetry and the store, and runs the scheduler.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use stride_core::duration::parse_duration;
use stride_telemetry::{LogFormat, TelemetryConfig};

#[derive(Parser, Debug)]
#[command(
    name = "stride-scheduler",
    version,
    about = "Stride's leader-elected scheduler"
)]
struct Args {
    /// gRPC listen address.
    #[arg(long, env = "STRIDE_SCHEDULER_LISTEN", default_value = "0.0.0.0:5051")]
    listen: String,
    /// Address agents and gateways use to reach this scheduler (host:port); defaults to the
    /// listen address.
    #[arg(long, env = "STRIDE_SCHEDULER_ADVERTISE")]
    advertise: Option<String>,
    /// Redis URL (redis://[user:password@]host:port/db, rediss:// for TLS, or
    /// redis+sentinel://host:26379,host:26379/<master-name>; docs/operations.md)
    /// [default: redis://127.0.0.1:6379/; env STRIDE_REDIS_URL, or the older STRIDE_REDIS].
    #[arg(long, env = "STRIDE_REDIS_URL")]
    redis: Option<String>,
    /// Prefix of every Redis key.
    #[arg(long, env = "STRIDE_REDIS_PREFIX", default_value = "stride")]
    redis_prefix: String,
    /// Unique id of this scheduler.
    #[arg(long, env = "STRIDE_SCHEDULER_ID")]
    id: Option<String>,
    /// The user-facing API address, for display.
    #[arg(long, env = "STRIDE_SCHEDULER_HTTP_ADDRESS", default_value = "")]
    http_address: String,
    /// Leader lease time to live.
    #[arg(long, env = "STRIDE_SCHEDULER_LEASE_TTL", default_value = "2s")]
    lease_ttl: String,
    /// How long an agent may stay silent before its instances count as unreachable.
    #[arg(long, env = "STRIDE_SCHEDULER_AGENT_TIMEOUT", default_value = "10s")]
    agent_timeout: String,
    /// After an election, how long agents have to re-register.
    #[arg(
        long,
        env = "STRIDE_SCHEDULER_REREGISTRATION_GRACE",
        default_value = "15s"
    )]
    reregistration_grace: String,
    /// How often a standby brings its copy of the state up to date, so that winning an
    /// election costs a catch-up rather than reading everything; `0s` keeps no copy.
    #[arg(long, env = "STRIDE_SCHEDULER_STANDBY_POLL", default_value = "500ms")]
    standby_poll: String,
    /// StatsD host:port.
    #[arg(long, env = "STRIDE_STATSD")]
    statsd: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "STRIDE_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// PEM CA that signs every cluster certificate; with --tls-cert and --tls-key, turns on
    /// mutual TLS: clients (gateways, agents, health checkers) must present a certificate it
    /// signed.
    #[arg(long, env = "STRIDE_SCHEDULER_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// PEM certificate of this scheduler (its SANs must name the advertised host).
    #[arg(long, env = "STRIDE_SCHEDULER_TLS_CERT")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "STRIDE_SCHEDULER_TLS_KEY")]
    tls_key: Option<std::path::PathBuf>,
}

fn fail(message: String) -> ExitCode {
    eprintln!("stride-scheduler: {message}");
    ExitCode::from(64)
}

/// The leader and the gateway allocate and free small objects by the million (instances,
/// events, JSON); mimalloc does that with far less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    let durations = (|| -> Result<_, String> {
        Ok((
            parse_duration(&args.lease_ttl)?,
            parse_duration(&args.agent_timeout)?,
            parse_duration(&args.reregistration_grace)?,
            parse_duration(&args.standby_poll)?,
        ))
    })();
    let (lease_ttl, agent_timeout, grace, standby_poll) = match durations {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let tls = match stride_proto::tls::MutualTls::from_paths(
        args.tls_ca.as_deref(),
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
    ) {
        Ok(t) => t,
        Err(e) => return fail(e.to_string()),
    };
    let log_format = match args.log_format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => return fail(format!("--log-format must be text or json, not {other:?}")),
    };
    let telemetry = TelemetryConfig {
        log_format,
        log_filter: std::env::var("RUST_LOG").ok(),
        statsd: args.statsd.clone(),
        statsd_prefix: None,
    };
    stride_telemetry::init_tracing(&telemetry);
    if let Err(e) = stride_telemetry::init_metrics(&telemetry) {
        return fail(e.to_string());
    }
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the tokio runtime: {e}"))
    };
    let result = actix_rt::System::with_tokio_rt(runtime).block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let mut config = stride_scheduler::Config::new(
            &args.advertise.clone().unwrap_or_else(|| local.to_string()),
        );
        if let Some(id) = args.id {
            config.scheduler_id = id;
        }
        config.http_address = args.http_address;
        config.lease_ttl = lease_ttl;
        config.renew_interval = lease_ttl / 4;
        config.tuning.agent_timeout = agent_timeout;
        config.tuning.reregistration_grace = grace;
        config.standby_poll = Some(standby_poll).filter(|d| !d.is_zero());
        config.tls = tls;
        let redis = stride_store::redis_url(args.redis, &std::env::vars().collect());
        let store = stride_store::RedisStore::connect(&redis, &args.redis_prefix)
            .await
            .map_err(|e| format!("cannot connect to Redis at {redis}: {e}"))?;
        stride_scheduler::run(config, listener, Arc::new(store), shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stride-scheduler: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
