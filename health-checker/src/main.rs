//! `stride-health-checker`: parses flags, sets up telemetry and the store, and runs a replica.
//! Scale it like any stateless service (`docker compose up --scale health-checker=3`): replicas
//! find each other in the store and share the checks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use stride_core::duration::parse_duration;
use stride_telemetry::{LogFormat, MetricsHandle, TelemetryConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::warn;

#[derive(Parser, Debug)]
#[command(
    name = "stride-health-checker",
    version,
    about = "Stride's health checker: one replica of the sharded health and readiness checks"
)]
struct Args {
    /// Redis URL (redis://[user:password@]host:port/db, rediss:// for TLS,
    /// redis+sentinel://host:port,…/master for Sentinel)
    /// [default: redis://127.0.0.1:6379/; env STRIDE_REDIS_URL, or the older STRIDE_REDIS].
    #[arg(long, env = "STRIDE_REDIS_URL")]
    redis: Option<String>,
    /// Prefix of every Redis key.
    #[arg(long, env = "STRIDE_REDIS_PREFIX", default_value = "stride")]
    redis_prefix: String,
    /// Unique id of this replica (default: a random one).
    #[arg(long, env = "STRIDE_HEALTH_CHECKER_ID")]
    id: Option<String>,
    /// Schedulers' gRPC addresses, comma separated, tried while the store names no leader.
    #[arg(long, env = "STRIDE_HEALTH_CHECKER_SCHEDULERS", value_delimiter = ',')]
    schedulers: Vec<String>,
    /// Serve Prometheus metrics on this address (`/metrics`).
    #[arg(long, env = "STRIDE_HEALTH_CHECKER_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Address to show for this replica (default: the metrics address).
    #[arg(long, env = "STRIDE_HEALTH_CHECKER_ADVERTISE")]
    advertise: Option<String>,
    /// How often everything is read from the store again.
    #[arg(long, env = "STRIDE_HEALTH_CHECKER_RESYNC", default_value = "30s")]
    resync: String,
    /// Checks running at once.
    #[arg(
        long,
        env = "STRIDE_HEALTH_CHECKER_MAX_CONCURRENT",
        default_value_t = 256
    )]
    max_concurrent: usize,
    /// How long results wait to be sent as one batch.
    #[arg(long, env = "STRIDE_HEALTH_CHECKER_FLUSH", default_value = "100ms")]
    flush: String,
    /// StatsD host:port.
    #[arg(long, env = "STRIDE_STATSD")]
    statsd: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "STRIDE_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// PEM CA of the cluster; with --tls-cert and --tls-key, mutual TLS to the schedulers
    /// (reports) and to the agents' APIs (COMMAND checks).
    #[arg(long, env = "STRIDE_HEALTH_CHECKER_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// PEM certificate of this replica, signed by --tls-ca.
    #[arg(long, env = "STRIDE_HEALTH_CHECKER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "STRIDE_HEALTH_CHECKER_TLS_KEY")]
    tls_key: Option<PathBuf>,
}

fn fail(message: String) -> ExitCode {
    eprintln!("stride-health-checker: {message}");
    ExitCode::from(64)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (resync, flush) = match (parse_duration(&args.resync), parse_duration(&args.flush)) {
        (Ok(r), Ok(f)) => (r, f),
        (Err(e), _) | (_, Err(e)) => return fail(e),
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
    let metrics = match stride_telemetry::init_metrics(&telemetry) {
        Ok(h) => h,
        Err(e) => return fail(e.to_string()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the tokio runtime: {e}")),
    };
    let result = runtime.block_on(async move {
        let mut config = stride_health_checker::Config::new(
            args.id
                .clone()
                .unwrap_or_else(|| format!("health-checker-{}", uuid::Uuid::new_v4())),
        );
        config.schedulers = args
            .schedulers
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        config.resync_interval = resync;
        config.max_concurrent_checks = args.max_concurrent;
        config.flush_interval = flush;
        config.tls = tls;
        match &args.metrics_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
                let local = listener.local_addr().map_err(|e| e.to_string())?;
                config.advertised_address = Some(args.advertise.unwrap_or(local.to_string()));
                tokio::spawn(serve_metrics(listener, metrics.clone()));
            }
            None => config.advertised_address = args.advertise,
        }
        tokio::spawn(upkeep(metrics));
        let redis = stride_store::redis_url(args.redis.clone(), &std::env::vars().collect());
        let store = stride_store::RedisStore::connect(&redis, &args.redis_prefix)
            .await
            .map_err(|e| format!("cannot connect to Redis at {redis}: {e}"))?;
        stride_health_checker::run(config, Arc::new(store), shutdown_signal()).await;
        Ok::<(), String>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stride-health-checker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Without a scrape endpoint, histograms still need folding now and then, or their samples
/// pile up.
async fn upkeep(metrics: MetricsHandle) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let _ = metrics.render_prometheus();
    }
}

/// A minimal `/metrics` endpoint (Prometheus text), one request per connection.
async fn serve_metrics(listener: tokio::net::TcpListener, metrics: MetricsHandle) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            while n < buf.len() {
                match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf[n..])).await
                {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    Ok(Ok(k)) => n += k,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path.split('?').next() {
                Some("/metrics") => ("200 OK", metrics.render_prometheus()),
                Some("/ping") => ("200 OK", "pong\n".to_string()),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(e) = stream.write_all(response.as_bytes()).await {
                warn!(error = %e, "metrics response failed");
            }
        });
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
