//! `switchboard check`: is this configuration (and directory file) good, and can the processor
//! reach what it needs? It loads and validates the configuration and, with `--directory`, the
//! directory file, reporting every problem found rather than the first; then, unless
//! `--no-connect`, asks the brokers for metadata (every configured topic must exist) and pings
//! Redis, each within `--timeout-ms`. It writes nothing anywhere.
//!
//! One line per finding on standard output; the verdict is the exit status, as `vector
//! validate`'s is: 0 all good, 78 (EX_CONFIG) the configuration or the directory file is wrong
//! (TLS or SASL authentication with the brokers failing included), 69 (EX_UNAVAILABLE) a server
//! is unreachable or a topic is missing.

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::{Config, Loaded};
use crate::core::event::Topic;
use crate::runtime::kafka::{client_config, AuthFailures};
use crate::runtime::store::RedisDirectory;

/// The arguments of `switchboard check` (its help text is the subcommand's doc, in the binary's
/// command line).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Configuration file (TOML), over config/default.toml; SWITCHBOARD_* variables win.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Also validate this directory file (as `directory load` would, without loading it).
    #[arg(long, value_name = "FILE")]
    pub directory: Option<PathBuf>,
    /// Check the files only: connect to neither Kafka nor Redis.
    #[arg(long)]
    pub no_connect: bool,
    /// How long each server may take to answer.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub timeout_ms: u64,
}

/// What `check` concluded, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// The configuration or the directory file is wrong.
    Invalid,
    /// A server could not be reached, or lacks a topic.
    Unavailable,
    Ok,
}

impl Verdict {
    /// The process exit status: 78 (EX_CONFIG), 69 (EX_UNAVAILABLE), 0.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Invalid => 78,
            Verdict::Unavailable => 69,
            Verdict::Ok => 0,
        }
    }
}

/// Runs the checks, printing one line per finding.
pub fn run(args: Args) -> Verdict {
    let mut verdict = Verdict::Ok;
    let loaded = match Config::load_reporting(args.config.as_deref()) {
        Ok(loaded) => Some(loaded),
        Err(e) => {
            for p in e.problems() {
                println!("error    configuration: {p}");
            }
            verdict = Verdict::Invalid;
            None
        }
    };
    if let Some(loaded) = &loaded {
        report_loaded(loaded);
    }
    if let Some(path) = &args.directory {
        verdict = verdict.min(directory(path));
    }
    match &loaded {
        Some(_) if args.no_connect => println!("skipped  Kafka and Redis (--no-connect)"),
        Some(loaded) => {
            let timeout = Duration::from_millis(args.timeout_ms);
            verdict = verdict.min(kafka(&loaded.config, timeout));
            verdict = verdict.min(redis(&loaded.config, timeout));
        }
        None => println!("skipped  Kafka and Redis: the configuration has problems"),
    }
    verdict
}

fn report_loaded(loaded: &Loaded) {
    let c = &loaded.config;
    let file = match &loaded.file {
        Some(f) => format!("{} over the defaults", f.display()),
        None => "the defaults".into(),
    };
    println!("ok       configuration: {file} and the environment");
    println!(
        "ok       instance: transactional.id {}, client.id {}",
        c.transactional_id(),
        c.client_id()
    );
    if !loaded.ignored.is_empty() {
        println!(
            "warning  environment: ignored, not settings: {}",
            loaded.ignored.join(", ")
        );
    }
}

fn directory(path: &std::path::Path) -> Verdict {
    let shown = path.display().to_string();
    let file = crate::directory_file::read(path)
        .map_err(anyhow::Error::from)
        .and_then(|f| Ok((crate::tools::directory::validate(&f, &shown)?, f)));
    match file {
        Ok((_, f)) if f.organizations.is_empty() => {
            println!("error    directory file {shown}: no organizations (`directory load` refuses it without --force)");
            Verdict::Invalid
        }
        Ok((_, f)) => {
            println!(
                "ok       directory file {shown}: {} organizations, {} channels, {} users, {} forms, {} blocked IPs",
                f.organizations.len(),
                f.channels.len(),
                f.users.len(),
                f.forms.len(),
                f.blocked.len()
            );
            Verdict::Ok
        }
        Err(e) => {
            println!("error    {}", error_text(&e));
            Verdict::Invalid
        }
    }
}

/// Metadata from the brokers, and every configured topic in it.
fn kafka(config: &Config, timeout: Duration) -> Verdict {
    let brokers = &config.kafka.brokers;
    let consumer: BaseConsumer<AuthFailures> =
        match client_config(config).create_with_context(AuthFailures::default()) {
            Ok(c) => c,
            Err(e) => {
                let e = crate::runtime::kafka::redacted(&e);
                println!("error    Kafka client for {brokers}: {e}");
                return Verdict::Invalid;
            }
        };
    let metadata = match consumer.fetch_metadata(None, timeout) {
        Ok(m) => m,
        Err(e) => {
            // The client's errors arrive through its queue, which fetching metadata leaves unread.
            let _ = consumer.poll(Duration::from_millis(100));
            if let Some(reason) = consumer.context().last() {
                println!("error    Kafka at {brokers}: TLS or SASL authentication failed: {reason}; check the sasl.* and ssl.* settings of kafka.properties");
                return Verdict::Invalid;
            }
            println!(
                "error    Kafka at {brokers} (kafka.brokers): no metadata within {timeout:?}: {e}"
            );
            return Verdict::Unavailable;
        }
    };
    let present: Vec<&str> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name())
        .collect();
    let missing: Vec<&str> = Topic::ALL
        .iter()
        .map(|t| config.topics.name(*t))
        .filter(|name| !present.contains(name))
        .collect();
    let answered = metadata.brokers().len();
    let plural = if answered == 1 { "" } else { "s" };
    let found = format!("Kafka at {brokers}: {answered} broker{plural} answered");
    if missing.is_empty() {
        println!("ok       {found}; all {} topics exist", Topic::ALL.len());
        Verdict::Ok
    } else {
        println!("error    {found}; missing topics: {}", missing.join(", "));
        Verdict::Unavailable
    }
}

/// PING, then whether a directory was loaded under the key prefix.
fn redis(config: &Config, timeout: Duration) -> Verdict {
    let address = config.redis.address();
    let io = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(io) => io,
        Err(e) => {
            println!("error    Redis at {address}: {e}");
            return Verdict::Unavailable;
        }
    };
    let prefix = &config.redis.key_prefix;
    let answered = io.block_on(async {
        let work = async {
            let directory =
                RedisDirectory::connect(config.redis_target(), prefix, config.directory.settings())
                    .await?;
            let pong = directory.ping().await?;
            let version = directory.loaded_version().await?;
            anyhow::Ok((pong, version))
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("no answer within {timeout:?}")),
        }
    });
    match answered {
        Ok((pong, Some(version))) => {
            println!("ok       Redis at {address}: {pong}; directory version {version} under prefix {prefix:?}");
            Verdict::Ok
        }
        Ok((pong, None)) => {
            println!("ok       Redis at {address}: {pong}");
            println!("warning  Redis: no directory under prefix {prefix:?}: `run` refuses to start until `directory load` has run");
            Verdict::Ok
        }
        Err(e) => {
            println!(
                "error    Redis at {address} (redis.url): {}",
                error_text(&e)
            );
            Verdict::Unavailable
        }
    }
}

/// An error and its causes as one line, each cause once: errors that print their source in
/// their own message (`redis: {0}`) would otherwise repeat it. A Kafka configuration error's
/// value, which may be a secret, is left out wherever it appears.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut secrets = Vec::new();
    for cause in e.chain() {
        if let Some(rdkafka::error::KafkaError::ClientConfig(_, _, _, value)) = cause.downcast_ref()
        {
            secrets.push(value.clone());
        }
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret.as_str(), "[redacted]");
    }
    text
}
