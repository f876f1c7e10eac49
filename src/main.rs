//! The `switchboard` command line: parses it, sets up logging, hands each subcommand whole to
//! the tool that runs it, and maps the outcome to the exit code (0, or 1 with the error on
//! standard error; clap's own usage errors exit with 2).

mod cli;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use cli::{Cli, Command, DirectoryCommand};
use switchboard::config::{Config, Log, LogFormat};
use switchboard::runtime::serve::serve;
use switchboard::tools;

// Switchboard allocates many small, short-lived strings per message; mimalloc handles that
// pattern markedly better than the system allocator (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => {
            let config = Config::load(args.config.as_deref())?;
            init_logging(&config.log)?;
            Ok(serve(config)?)
        }
        Command::Inspect(args) => tools::inspect::run(args),
        Command::Loadgen(args) => tools::loadgen::run(args),
        Command::Replay(args) => tools::replay::run(args),
        Command::Directory {
            command: DirectoryCommand::Load(args),
        } => tools::directory::load(args),
        Command::Demo(args) => tools::demo::run(args),
        Command::Simulate(args) => tools::simulate::run(args),
    }
}

/// Logs go to standard error, as the configuration's `log` section says. Only the processor
/// logs; the other commands print what they did.
fn init_logging(log: &Log) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level).with_context(|| {
        format!(
            "configuration: log.level: {:?} is not a valid filter",
            log.level
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}
