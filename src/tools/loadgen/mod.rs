//! Synthetic traffic from a seeded model of conversation lifecycles, with a directory to match.
//!
//! Each conversation lives through episodes: a contact writes in (the first time with its
//! organization, touchpoint and contact details), a bot may categorise it, an agent or bot may
//! `/notify`, someone may be `/assign`ed or `/follow`, an agent `/accept`s, agent and contact
//! chat, an agent may like or comment on a message, fill in and `/send` a form, `/set` a
//! property, and finally `/leave`s. A few conversations are `/block`ed (and end there), a few
//! `/import` an earlier conversation of their organization. With a message budget above one
//! episode, the contact writes again and a new episode starts.
//!
//! The interleaving is seeded too: up to `concurrency` conversations are open at once, and each
//! next message comes from one of them at random, so every conversation keeps its own order. The
//! k-th message overall is created at `start + k / rate`. Same model, same seed: the same bytes.
//!
//! This module owns the command (`Args`, [`run`]); [`Model`] and the IDs are in `model`, the
//! directory in `directory`, one conversation's life in `conversation`, the interleaving in
//! `generator`. Those four are pure (seeded, no clock, no IO); only [`run`] writes files, and it
//! produces to a topic through [`crate::tools::replay`], never with a client of its own.

mod conversation;
mod directory;
mod generator;
mod model;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

pub use self::directory::directory;
pub use self::generator::Generator;
pub use self::model::{conversation_id, organization_id, Model};
use crate::config::Config;
use crate::tools::replay::{self, Options, Pace, Target};

/// The arguments of `switchboard loadgen` (its help text is the subcommand's doc, in the
/// binary's command line).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 1000, value_parser = at_least_one)]
    pub conversations: u64,
    /// Total messages; default: one lifecycle per conversation (about 15 messages).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Messages per second: the spacing of `createdAt`, and the production pace to a topic.
    #[arg(long, default_value_t = 1000.0, value_parser = positive_rate)]
    pub rate: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Conversations open at the same time.
    #[arg(long, default_value_t = 1000)]
    pub concurrency: usize,
    /// The share of all messages (0 to 1) carried by one hot conversation; needs --messages.
    #[arg(long, default_value_t = 0.0, value_parser = share, requires = "messages")]
    pub hot: f64,
    /// Write the messages here (`-`: standard output).
    #[arg(long, conflicts_with = "topic")]
    pub output: Option<PathBuf>,
    /// Produce to this topic instead (the `kafka` settings of the configuration apply);
    /// `createdAt` is then the moment of production.
    #[arg(long)]
    pub topic: Option<String>,
    /// Write the matching directory (YAML) here, for `directory load` or `simulate`.
    #[arg(long)]
    pub directory: Option<PathBuf>,
    /// Configuration file (TOML), for the Kafka settings; SWITCHBOARD_* variables win.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

fn at_least_one(s: &str) -> Result<u64, String> {
    match s.parse::<u64>().map_err(|e| e.to_string())? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

fn share(s: &str) -> Result<f64, String> {
    let share = s.parse::<f64>().map_err(|e| e.to_string())?;
    if (0.0..=1.0).contains(&share) {
        Ok(share)
    } else {
        Err("must be a share between 0 and 1".into())
    }
}

fn positive_rate(s: &str) -> Result<f64, String> {
    let rate = s.parse::<f64>().map_err(|e| e.to_string())?;
    if rate > 0.0 && rate.is_finite() {
        Ok(rate)
    } else {
        Err("must be a positive number of messages per second".into())
    }
}

impl Args {
    pub fn model(&self) -> Model {
        Model {
            conversations: self.conversations,
            messages: self.messages,
            rate: self.rate,
            seed: self.seed,
            concurrency: self.concurrency,
            hot: self.hot,
            // 2025-01-01T00:00:00Z: files are the same bytes whenever they are made.
            start_micros: 1_735_689_600_000_000,
        }
    }
}

/// `switchboard loadgen`: the directory, if asked for, then the traffic to a topic or a file.
pub fn run(args: Args) -> anyhow::Result<()> {
    let model = args.model();
    if let Some(path) = &args.directory {
        let yaml = serde_yaml_ng::to_string(&directory(&model))?;
        std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))?;
    }
    match &args.topic {
        Some(topic) => to_topic(model, topic, args.config.as_deref()),
        None => to_file(model, args.output.as_deref()),
    }
}

/// Produced at the model's rate, `createdAt` the moment of production.
fn to_topic(mut model: Model, topic: &str, config: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    model.start_micros =
        chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()).timestamp_micros();
    let total = model.messages;
    let summary = replay::produce(
        Generator::new(model).map(|m| Ok(m.to_string())),
        total,
        &Target::new(&config, topic),
        &Options {
            pace: Pace::Recorded { speed: 1.0 },
            remap: None,
            retime: false,
        },
    )?;
    eprintln!("loadgen: {summary}");
    Ok(())
}

/// One JSON message a line, to `output` (none or `-`: standard output).
fn to_file(model: Model, output: Option<&Path>) -> anyhow::Result<()> {
    let mut out: Box<dyn Write> = match output {
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
        Some(p) if p.as_os_str() == "-" => Box::new(BufWriter::new(std::io::stdout().lock())),
        Some(p) => Box::new(BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
    };
    for m in Generator::new(model) {
        serde_json::to_writer(&mut out, &m)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
