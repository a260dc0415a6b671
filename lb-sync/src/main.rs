//! The `stride-lb-sync` binary: flags and configuration, telemetry, the Redis store, then
//! [`stride_lb_sync::run`] until Ctrl-C or SIGTERM.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use stride_lb_sync::Config;
use stride_store::RedisStore;
use stride_telemetry::LogFormat;

#[derive(Parser, Debug)]
#[command(
    name = "stride-lb-sync",
    version,
    about = "Publishes Stride's healthy instances to HAProxy (marathon-lb compatible) and DNS (Mesos-DNS names)"
)]
struct Args {
    /// Redis URL of the state store: `redis://[user:password@]host:port/db`, `rediss://` for
    /// TLS, or `redis+sentinel://host:26379,host:26379/<master-name>` (docs/operations.md)
    /// [default: redis://127.0.0.1:6379/; env STRIDE_REDIS_URL, or the older STRIDE_REDIS].
    #[arg(long, env = "STRIDE_REDIS_URL")]
    redis: Option<String>,
    /// Prefix of every Redis key.
    #[arg(long, env = "STRIDE_REDIS_PREFIX", default_value = "stride")]
    redis_prefix: String,
    /// HAProxy groups to serve (repeatable; `*` for all) [default: external].
    #[arg(long = "group")]
    groups: Vec<String>,
    /// Where to write haproxy.cfg [default: /var/lib/stride-lb-sync/haproxy.cfg].
    #[arg(long)]
    haproxy_config: Option<PathBuf>,
    /// DNS listen address (repeatable) [default: 0.0.0.0:53].
    #[arg(long = "dns-listen")]
    dns_listen: Vec<String>,
    /// StatsD `host:port`.
    #[arg(long)]
    statsd: Option<String>,
    /// `text` or `json`.
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// A JSON configuration file (see `--dump-config`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    dump_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let redis = stride_store::redis_url(args.redis.clone(), &env);
    let mut config = match Config::load(args.config.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::from(64);
        }
    };
    if !args.groups.is_empty() {
        config.haproxy.groups = args.groups.clone();
    }
    if let Some(p) = args.haproxy_config.clone() {
        config.haproxy.config_file = p;
    }
    if !args.dns_listen.is_empty() {
        config.dns.listen = args.dns_listen.clone();
    }
    if let Some(s) = args.statsd.clone() {
        config.telemetry.statsd = Some(s);
    }
    match args.log_format.as_deref() {
        Some("json") => config.telemetry.log_format = LogFormat::Json,
        Some(_) => config.telemetry.log_format = LogFormat::Text,
        None => {}
    }
    if args.dump_config {
        match serde_json::to_string_pretty(&config) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("cannot print the configuration: {e}"),
        }
        return ExitCode::SUCCESS;
    }

    stride_telemetry::init_tracing(&config.telemetry);
    if let Err(e) = stride_telemetry::init_metrics(&config.telemetry) {
        eprintln!("cannot start metrics: {e}");
        return ExitCode::from(64);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let store = RedisStore::connect(&redis, &args.redis_prefix)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to {redis}: {e}"))?;
        stride_lb_sync::run(config, Arc::new(store), shutdown_signal()).await?;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "lb-sync failed");
            eprintln!("stride-lb-sync: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
