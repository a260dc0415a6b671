//! The `stride-api-gateway` binary: flags and configuration, telemetry, the Redis store, the
//! listener, then [`stride_api_gateway::run`] until Ctrl-C or SIGTERM.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use stride_api_gateway::Config;
use stride_store::RedisStore;
use stride_telemetry::LogFormat;

#[derive(Parser, Debug)]
#[command(
    name = "stride-api-gateway",
    version,
    about = "Stride's Marathon-compatible REST API"
)]
struct Args {
    /// Address to listen on [default: 0.0.0.0:8080; env STRIDE_API_GATEWAY_LISTEN].
    #[arg(long)]
    listen: Option<String>,
    /// Redis URL of the state store: `redis://[user:password@]host:port/db`, `rediss://` for
    /// TLS, or `redis+sentinel://host:26379,host:26379/<master-name>` (docs/operations.md)
    /// [default: redis://127.0.0.1:6379/; env STRIDE_REDIS_URL, or the older STRIDE_REDIS].
    #[arg(long, env = "STRIDE_REDIS_URL")]
    redis: Option<String>,
    /// Prefix of every Redis key.
    #[arg(long, env = "STRIDE_REDIS_PREFIX", default_value = "stride")]
    redis_prefix: String,
    /// `host:port` clients reach this gateway at [default: the listen address, `localhost`
    /// for an unspecified IP; env STRIDE_API_GATEWAY_ADVERTISED_ADDRESS].
    #[arg(long)]
    advertised_address: Option<String>,
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
    /// The security file: users, tokens, roles, external authoriser, admission webhooks
    /// (TOML, or JSON by its name; see docs/security.md). Required unless --insecure-no-auth.
    /// Every flag below is also `STRIDE_API_GATEWAY_<FLAG>` (e.g. `..._AUTH_CONFIG`).
    #[arg(long)]
    auth_config: Option<PathBuf>,
    /// Run with NO authentication: anyone who can reach the port can run any command on every
    /// agent. Only for a machine nobody else can reach.
    #[arg(long)]
    insecure_no_auth: bool,
    /// Append a JSON line for every change request to this file.
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// PEM CA of the cluster: with --tls-cert and --tls-key, schedulers and agents are dialled
    /// over mutual TLS.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// PEM certificate (chain): the API serves HTTPS with it, and presents it to schedulers and
    /// agents when --tls-ca is given.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Reads a password from standard input (one line) and prints its argon2id PHC hash, for
    /// `password_hash` in the security file.
    HashPassword,
    /// Prints a new bearer token for NAME and the `[[tokens]]` entry (with the token's hash)
    /// to put in the security file. The token is shown once; only its hash is kept.
    NewToken {
        /// The token's name (no '.' or spaces).
        name: String,
        /// Roles to list in the entry.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
    },
}

/// The helper subcommands: no server, no configuration.
fn run_command(command: Command) -> ExitCode {
    use stride_api_gateway::auth::credentials::{hash_secret, new_token};
    match command {
        Command::HashPassword => {
            let mut line = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                eprintln!("cannot read the password: {e}");
                return ExitCode::FAILURE;
            }
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                eprintln!("an empty password cannot be hashed");
                return ExitCode::from(64);
            }
            match hash_secret(password) {
                Ok(h) => {
                    println!("{h}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cannot hash: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::NewToken { name, roles } => {
            if name.is_empty() || name.contains(['.', ' ']) {
                eprintln!("a token name must be non-empty and hold no '.' or space");
                return ExitCode::from(64);
            }
            match new_token(&name) {
                Ok((token, hash)) => {
                    let roles: Vec<String> = roles.iter().map(|r| format!("{r:?}")).collect();
                    println!("# Give this token to its holder (shown once): {token}");
                    println!("[[tokens]]");
                    println!("name = {name:?}");
                    println!("token_hash = {hash:?}");
                    println!("roles = [{}]", roles.join(", "));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cannot make a token: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The leader and the gateway allocate and free small objects by the million (instances,
/// events, JSON); mimalloc does that with far less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(command) = args.command.take() {
        return run_command(command);
    }
    let env: HashMap<String, String> = std::env::vars().collect();
    let redis = stride_store::redis_url(args.redis.clone(), &env);
    let mut config = match Config::load(args.config.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::from(64);
        }
    };
    if let Some(l) = args.listen.clone() {
        config.listen = l;
    }
    if let Some(a) = args.advertised_address.clone() {
        config.advertised_address = Some(a);
    }
    if let Some(s) = args.statsd.clone() {
        config.telemetry.statsd = Some(s);
    }
    if let Some(p) = args.auth_config.clone() {
        config.auth_config = Some(p);
    }
    if args.insecure_no_auth {
        config.insecure_no_auth = true;
    }
    if let Some(p) = args.audit_log.clone() {
        config.audit_log = Some(p);
    }
    for (field, flag) in [
        (&mut config.tls_ca, &args.tls_ca),
        (&mut config.tls_cert, &args.tls_cert),
        (&mut config.tls_key, &args.tls_key),
    ] {
        if let Some(p) = flag {
            *field = Some(p.clone());
        }
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

    if config.auth_config.is_none() && !config.insecure_no_auth {
        eprintln!(
            "stride-api-gateway: refusing to start without authentication. Give a security file \
             with --auth-config (docs/security.md), or --insecure-no-auth to run open on purpose."
        );
        return ExitCode::from(64);
    }
    if config.insecure_no_auth && config.auth_config.is_none() {
        eprintln!();
        eprintln!("  WARNING: --insecure-no-auth: THE API IS OPEN.");
        eprintln!("  Anyone who can reach it can run any command on every agent of this cluster.");
        eprintln!();
    }
    stride_telemetry::init_tracing(&config.telemetry);
    let metrics = match stride_telemetry::init_metrics(&config.telemetry) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("cannot start metrics: {e}");
            return ExitCode::from(64);
        }
    };
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
        let listener = std::net::TcpListener::bind(&config.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        stride_api_gateway::run(
            config,
            listener,
            Arc::new(store),
            metrics,
            shutdown_signal(),
        )
        .await?;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "api-gateway failed");
            eprintln!("stride-api-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}
