//! The `stride` command line client: `stride app`, `group`, `deployment`, `queue`, `leader`,
//! `info` and `ping` over Stride's Marathon API (`docs/cli.md`).
//!
//! Each command is one or a few HTTP calls ([`client`]); its answer is printed as a plain table
//! ([`output`]) or, with `--json`, as the API's JSON. Commands that deploy take `--wait`, which
//! follows the deployment with a progress line on stderr ([`wait`]). Every outcome maps to an
//! exit code a script can test ([`error::Exit`]).
//!
//! One current-thread tokio runtime runs the whole command: the client does a few calls in a
//! row, and the event stream of `--wait` is the only thing running beside them.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

mod apps;
mod client;
mod error;
mod groups;
mod output;
mod system;
mod update;
mod wait;

use client::{Auth, Client};
pub use error::EXIT_CODES_HELP;
use error::{CliError, Exit};

/// Options of every client command (`stride dev` ignores them).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Client options")]
pub struct GlobalArgs {
    /// Stride's API.
    #[arg(
        long,
        global = true,
        env = "STRIDE_URL",
        default_value = "http://localhost:8080",
        value_name = "URL",
        hide_env_values = true
    )]
    url: String,
    /// HTTP Basic credentials.
    #[arg(
        long,
        global = true,
        env = "STRIDE_CREDENTIALS",
        value_name = "USER:PASSWORD",
        hide_env_values = true
    )]
    user: Option<String>,
    /// Send `Authorization: Bearer <TOKEN>` (wins over --user).
    #[arg(
        long,
        global = true,
        env = "STRIDE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Print the API's JSON instead of tables and messages.
    #[arg(long, global = true)]
    json: bool,
}

/// `--wait` and its bound, on every command that makes a deployment.
#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Follow the deployment to its end, with its progress on stderr; the exit code tells how
    /// it ended (0 done, 5 failed or rolled back, 6 timed out).
    #[arg(long)]
    wait: bool,
    /// How long --wait waits: 30s, 5m, 1h; 0 waits for ever.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_timeout)]
    timeout: Duration,
}

impl WaitArgs {
    fn bound(&self) -> Option<Duration> {
        (!self.timeout.is_zero()).then_some(self.timeout)
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    stride_core::duration::parse_duration(s)
}

/// The client's commands (beside `stride dev`).
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apps: add, list, show, update, scale, restart, remove, kill, versions, tasks.
    #[command(subcommand, alias = "apps")]
    App(apps::AppCommand),
    /// Groups: add, list, show, update, scale, remove.
    #[command(subcommand, alias = "groups")]
    Group(groups::GroupCommand),
    /// Deployments: list, watch, rollback, stop.
    #[command(subcommand, alias = "deployments")]
    Deployment(system::DeploymentCommand),
    /// The launch queue: what waits to be launched, and why (`queue reset <app>` ends a backoff).
    Queue(system::QueueArgs),
    /// The leader (`leader abdicate` makes it step down).
    Leader(system::LeaderArgs),
    /// What Stride says about itself (`/v2/info`).
    Info,
    /// Whether Stride answers (`/ping`).
    Ping,
}

/// What every command gets: the API client and how to print.
pub struct Ctx {
    client: Client,
    json: bool,
}

impl Ctx {
    /// Prints a reply's JSON with `--json`; otherwise `human()`'s text, if any.
    fn print(&self, body: &serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            if !body.is_null() {
                say(&serde_json::to_string_pretty(body).unwrap_or_else(|_| body.to_string()));
            }
        } else {
            let text = human();
            if !text.is_empty() {
                say(&text);
            }
        }
    }

    /// Sends a request that makes a deployment, prints its answer, and with `--wait` follows
    /// the deployment. The event stream opens before `send` is awaited, so no end is missed.
    async fn deploy<F>(
        &self,
        wait: &WaitArgs,
        send: F,
        human: impl FnOnce(&client::Reply) -> String,
    ) -> Result<(), CliError>
    where
        F: std::future::Future<Output = Result<client::Reply, CliError>>,
    {
        let events = if wait.wait {
            wait::open_events(&self.client).await
        } else {
            None
        };
        let started = std::time::Instant::now();
        let reply = send.await?;
        self.print(&reply.body, || human(&reply));
        if !wait.wait {
            return Ok(());
        }
        match &reply.deployment_id {
            Some(id) => wait::follow(&self.client, id, events, wait.bound(), started).await,
            None => {
                eprintln!("stride: the answer named no deployment; nothing to wait for");
                Ok(())
            }
        }
    }
}

/// Runs one client command; the exit code is the contract in [`EXIT_CODES_HELP`].
pub fn run(global: GlobalArgs, command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stride: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = Auth::from_flags(global.user.as_deref(), global.token.as_deref())
        .and_then(|auth| Client::new(&global.url, auth))
        .map(|client| Ctx {
            client,
            json: global.json,
        });
    let result = match result {
        Ok(ctx) => runtime.block_on(dispatch(&ctx, command)),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Exit::Success.into(),
        Err(e) => {
            eprintln!("{}", e.render());
            e.exit().into()
        }
    }
}

async fn dispatch(ctx: &Ctx, command: Command) -> Result<(), CliError> {
    match command {
        Command::App(c) => apps::run(ctx, c).await,
        Command::Group(c) => groups::run(ctx, c).await,
        Command::Deployment(c) => system::deployment(ctx, c).await,
        Command::Queue(a) => system::queue(ctx, a).await,
        Command::Leader(a) => system::leader(ctx, a).await,
        Command::Info => system::info(ctx).await,
        Command::Ping => system::ping(ctx).await,
    }
}

/// Prints a line on stdout. A closed stdout (`stride app list | head -1`) is no error worth
/// a panic: what was asked for has been done.
fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// Reads a JSON document from a file, or from stdin for `-`.
fn read_json(path: &str) -> Result<serde_json::Value, CliError> {
    let text = if path == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("cannot read {path}: {e}")))?
    };
    let name = if path == "-" { "stdin" } else { path };
    serde_json::from_str(&text).map_err(|e| CliError::Usage(format!("{name} is not JSON: {e}")))
}

/// `?force=true` when asked, nothing otherwise (the API's own default then holds).
fn force_query(force: bool) -> Vec<(&'static str, String)> {
    if force {
        vec![("force", "true".to_string())]
    } else {
        Vec::new()
    }
}

/// `(deployment <id>)`, or nothing when the answer named none.
fn deployment_note(reply: &client::Reply) -> String {
    reply
        .deployment_id
        .as_ref()
        .map(|d| format!(" (deployment {d})"))
        .unwrap_or_default()
}
