//! The command line's shape: which subcommands there are, and their help.
//!
//! Each subcommand's arguments are a `clap::Args` struct beside the tool that runs them (in the
//! library, since the tool's `run` takes them whole); this module only assembles them, so it
//! lives in the binary, which alone parses a command line.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use switchboard::tools::{check, demo, directory, inspect, loadgen, rebuild, replay, simulate};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Conversation-command stream processor",
    after_help = "Exit status: 0 done; 1 failed; 2 bad command line; 69 a server (Kafka, Redis) \
                  unreachable, a topic missing or no directory loaded; 78 a bad configuration \
                  or directory file."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Print one conversation's state from Redis (the document of SPEC section 3).
    Inspect(inspect::Args),
    /// The stream processor: consumes the input topic, keeps state in Redis, produces the
    /// output topics, exactly once. Stops cleanly on SIGTERM or SIGINT.
    ///
    /// The directory is read from Redis: write it there first with `switchboard directory load`.
    Run(RunArgs),
    /// Validate the configuration (and a directory file), reporting every problem at once, then
    /// check that the brokers answer with every configured topic and that Redis answers.
    /// Exit status: 0 all good, 78 a bad configuration or directory file, 69 a server
    /// unreachable or a topic missing.
    Check(check::Args),
    /// Synthetic traffic from a seeded model of conversation lifecycles, to a JSON-lines file
    /// (or standard output) or to a topic, with the directory it is written against.
    Loadgen(loadgen::Args),
    /// Re-produce a JSON-lines file or a topic to a topic, keeping each conversation's order.
    Replay(replay::Args),
    /// Make a halted partition's state again from the input topic (Redis lost writes Kafka had
    /// committed): its conversations are deleted and its committed records applied again, with
    /// no outputs. Run it while no instance processes the partition.
    Rebuild(rebuild::Args),
    /// The directory (organizations, channels, users, forms, blocked IPs) in Redis.
    Directory {
        #[command(subcommand)]
        command: DirectoryCommand,
    },
    /// The whole pipeline on embedded defaults: an in-process Kafka cluster and an in-memory
    /// store, fed with the example traffic; prints every output record and the final state.
    Demo(demo::Args),
    /// Apply a JSON-lines trace with the domain core alone (no Kafka, no Redis) and print every
    /// output record as one JSON line {"topic", "key", "value"}.
    Simulate(simulate::Args),
}

#[derive(Subcommand)]
pub enum DirectoryCommand {
    /// Validate a directory file (YAML or JSON), offline, then write it to Redis, replacing the
    /// previous load atomically. Running processors pick it up within
    /// `directory.version_check_ms`. A file with no organizations, or with fewer than half the
    /// entries of the directory it replaces, is refused without --force.
    Load(directory::LoadArgs),
}

/// `run`'s one argument: the processor's settings all come from the configuration.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Configuration file (TOML), over config/default.toml; SWITCHBOARD_* variables win.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
}

impl Command {
    /// The configuration file the command was given, if it takes one.
    pub fn config_path(&self) -> Option<&Path> {
        match self {
            Command::Run(a) => a.config.as_deref(),
            Command::Check(a) => a.config.as_deref(),
            Command::Inspect(a) => a.config.as_deref(),
            Command::Rebuild(a) => a.config.as_deref(),
            Command::Loadgen(a) => a.config.as_deref(),
            Command::Replay(a) => a.config.as_deref(),
            Command::Directory {
                command: DirectoryCommand::Load(a),
            } => a.config.as_deref(),
            Command::Demo(_) | Command::Simulate(_) => None,
        }
    }
}
