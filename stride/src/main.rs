//! `stride`: the command line of Stride.
//!
//! `stride app`, `group`, `deployment`, `queue`, `leader`, `info` and `ping` are a client of
//! the Marathon API of a running Stride (`cli`, `docs/cli.md`). `stride dev` runs the scheduler,
//! the API gateway and one local agent in one process, with the state in memory: a first try on
//! a laptop. The real topology is separate processes against Redis (`docker-compose.yml`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;
mod dev;

#[derive(Parser, Debug)]
#[command(
    name = "stride",
    version,
    about = "Stride: Marathon-compatible orchestration of long-running services",
    after_help = cli::EXIT_CODES_HELP
)]
struct Cli {
    #[command(flatten)]
    client: cli::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Client(cli::Command),
    /// Run everything in one process: scheduler, API and UI on :8080, one local agent, state in
    /// memory (lost on exit). The API is open: anyone who can reach the port can run commands.
    Dev(dev::DevArgs),
}

/// As the scheduler's and the gateway's binaries: their hot paths allocate and free small
/// objects by the million, which mimalloc does with far less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Client(command) => cli::run(cli.client, command),
        Command::Dev(args) => dev::main(args),
    }
}
