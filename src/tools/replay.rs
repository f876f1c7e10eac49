//! Re-producing traffic to the input topic: from a JSON-lines file, a topic, or `loadgen`.
//!
//! Records are produced in the order given, keyed by conversation, by one idempotent producer,
//! so each conversation's records keep their order. Pacing follows the records' `createdAt`
//! (times a speed factor) or is as fast as the broker takes them. Optional ID remapping gives
//! every conversation and message ID of a replay a fresh, consistent substitute, so one trace can
//! be replayed many times into the same system without collisions; relay records Switchboard
//! wrote itself (`import.request`, `import.transfer`, `import.cancel`) are skipped, since the
//! processor will write them again.
//!
//! With `--unwrap-dlq`, a dead-letter topic is re-driven instead: each dead letter's original
//! record, key, payload and headers as they were (`dlq`).
//!
//! This module owns the command (`Args`, [`run`]) and the production; reading a topic is in
//! `source`. It produces only: the processor and its state are not its concern.

mod dlq;
mod source;

pub use self::dlq::{original, NotRedrivable, Original};
pub use self::source::{read_records, read_topic, RawRecord};

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::core::id::is_object_id;
use crate::runtime::kafka::{client_config, send};

/// How fast to produce.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As the records' `createdAt` say, divided by `speed` (2.0: twice as fast).
    Recorded { speed: f64 },
    /// As fast as the broker takes them.
    Fastest,
}

/// When record `created` (µs) is due, relative to the first record (`first`, µs).
pub fn due(pace: Pace, first: i64, created: i64) -> Duration {
    match pace {
        Pace::Fastest => Duration::ZERO,
        Pace::Recorded { speed } => {
            let micros = (created - first).max(0) as f64 / speed;
            Duration::from_micros(micros as u64)
        }
    }
}

/// Rewrites conversation and message IDs to fresh ones derived from a salt. An ID is remapped
/// wherever it occurs (in `meta.message`, in `/import <id>`) once it has been seen as a record's
/// `id` or `conversation`; directory IDs (organizations, users, channels, forms) are never seen
/// there, so they stay and the directory still matches.
#[derive(Debug, Clone)]
pub struct Remap {
    salt: String,
    seen: HashMap<String, String>,
}

impl Remap {
    pub fn new(salt: &str) -> Self {
        Remap {
            salt: salt.to_string(),
            seen: HashMap::new(),
        }
    }

    fn substitute(&mut self, id: &str) -> String {
        if let Some(s) = self.seen.get(id) {
            return s.clone();
        }
        let digest = Sha256::digest(format!("{}:{id}", self.salt).as_bytes());
        let new = hex::encode(&digest[..12]);
        self.seen.insert(id.to_string(), new.clone());
        new
    }

    /// Remaps one message in place.
    pub fn apply(&mut self, message: &mut Value) {
        for field in ["id", "conversation"] {
            if let Some(id) = message[field].as_str().filter(|s| is_object_id(s)) {
                let id = id.to_string();
                self.substitute(&id);
            }
        }
        self.rewrite(message);
    }

    fn rewrite(&mut self, v: &mut Value) {
        match v {
            Value::String(s) => {
                if let Some(new) = self.seen.get(s.as_str()) {
                    *s = new.clone();
                } else if s.len() > 24 {
                    // IDs inside text, such as `/import <id>`.
                    let words: Vec<String> = s
                        .split(' ')
                        .map(|w| self.seen.get(w).cloned().unwrap_or_else(|| w.to_string()))
                        .collect();
                    *s = words.join(" ");
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.rewrite(i)),
            Value::Object(map) => map.values_mut().for_each(|i| self.rewrite(i)),
            _ => {}
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub produced: u64,
    pub conversations: u64,
    /// Relay records skipped (the processor writes them itself).
    pub relays_skipped: u64,
    /// Lines produced without a key (not JSON, or no `conversation`): the processor will send
    /// them to the dead-letter topic.
    pub unkeyed: u64,
    pub failed: u64,
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{} records of {} conversations in {:.1} s ({:.0} records/s); {} relay records skipped, {} without a key, {} failed",
            self.produced,
            self.conversations,
            secs,
            self.produced as f64 / secs.max(1e-9),
            self.relays_skipped,
            self.unkeyed,
            self.failed
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("reading the input: {0}")]
    Io(#[from] std::io::Error),
    #[error("{failed} of {total} records could not be produced (first error: {first})")]
    Undelivered {
        failed: u64,
        total: u64,
        first: String,
    },
    #[error("{refused} dead letters could not be re-driven ({produced} were); first: {first}")]
    NotRedrivable {
        refused: u64,
        produced: u64,
        first: String,
    },
}

/// Counts deliveries that failed, keeping the first error.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    first: std::sync::Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.first
                .lock()
                .expect("delivery lock")
                .get_or_insert_with(|| e.to_string());
        }
    }
}

/// Where records go.
pub struct Target {
    pub topic: String,
    /// Client settings: brokers, security, and the partitioner (which must be the platform's).
    pub client: ClientConfig,
}

impl Target {
    /// `topic`, with the configuration's client settings and partitioner: records land where
    /// the platform's own producers would put them.
    pub fn new(config: &crate::config::Config, topic: &str) -> Target {
        let mut client = client_config(config);
        client.set("partitioner", &config.kafka.partitioner);
        Target {
            topic: topic.to_string(),
            client,
        }
    }
}

/// Options of a replay.
#[derive(Debug, Clone)]
pub struct Options {
    pub pace: Pace,
    pub remap: Option<String>,
    /// Set each record's `createdAt` to the moment it is produced (for latency measurements).
    pub retime: bool,
}

fn micros(created_at: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(created_at)
        .ok()
        .map(|t| t.timestamp_micros())
}

fn now_rfc3339() -> String {
    // The core has no clock (chrono's is not even compiled in); adapters read the system's.
    chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Produces `lines` to the target. `progress` is told of every record.
pub fn replay<I>(
    lines: I,
    target: &Target,
    options: &Options,
    progress: &indicatif::ProgressBar,
) -> Result<Summary, ReplayError>
where
    I: IntoIterator<Item = Result<String, std::io::Error>>,
{
    let producer = producer(target)?;
    let mut remap = options.remap.as_deref().map(Remap::new);
    let mut summary = Summary::default();
    let mut conversations: std::collections::HashSet<String> = std::collections::HashSet::new();
    let started = Instant::now();
    let mut first: Option<i64> = None;
    for line in lines {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let mut parsed: Option<Value> = serde_json::from_str(&line).ok();
        if parsed.as_ref().is_some_and(is_relay) {
            summary.relays_skipped += 1;
            progress.inc(1);
            continue;
        }
        let wait = turn(options.pace, parsed.as_ref(), &mut first, started);
        if !wait.is_zero() {
            producer.poll(Duration::ZERO);
            std::thread::sleep(wait);
        }
        let payload = rewrite(parsed.as_mut(), remap.as_mut(), options.retime).unwrap_or(line);
        let key = parsed
            .as_ref()
            .and_then(|v| v["conversation"].as_str())
            .map(str::to_string);
        let mut record = BaseRecord::<str, str>::to(&target.topic).payload(&payload);
        match &key {
            Some(k) => {
                if !conversations.contains(k) {
                    conversations.insert(k.clone());
                }
                record = record.key(k.as_str());
            }
            None => summary.unkeyed += 1,
        }
        send(&producer, record)?;
        producer.poll(Duration::ZERO);
        summary.produced += 1;
        progress.inc(1);
    }
    producer.flush(Duration::from_secs(60))?;
    summary.elapsed = started.elapsed();
    summary.conversations = conversations.len() as u64;
    delivered(producer.context(), summary)
}

/// One idempotent producer, so that each key's records keep their order.
fn producer(target: &Target) -> Result<BaseProducer<Deliveries>, KafkaError> {
    target
        .client
        .clone()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create_with_context(Deliveries::default())
}

/// Relay records are Switchboard's own (`/import`): the processor writes them again.
fn is_relay(v: &Value) -> bool {
    matches!(
        v["type"].as_str(),
        Some(
            crate::core::message::IMPORT_REQUEST
                | crate::core::message::IMPORT_TRANSFER
                | crate::core::message::IMPORT_CANCEL
        )
    )
}

/// How long a record must wait for its turn at `pace`, measured from `started`; the first
/// record with a `createdAt` sets `first`. Records without one go at once.
fn turn(pace: Pace, parsed: Option<&Value>, first: &mut Option<i64>, started: Instant) -> Duration {
    let created = parsed
        .and_then(|v| v["createdAt"].as_str())
        .and_then(micros);
    match (pace, created) {
        (Pace::Recorded { .. }, Some(created)) => {
            let first = *first.get_or_insert(created);
            due(pace, first, created).saturating_sub(started.elapsed())
        }
        _ => Duration::ZERO,
    }
}

/// The payload to produce instead of the line, when remapping or retiming changed it.
fn rewrite(parsed: Option<&mut Value>, remap: Option<&mut Remap>, retime: bool) -> Option<String> {
    let v = parsed?;
    let changed = remap.is_some() || retime;
    if let Some(r) = remap {
        r.apply(v);
    }
    if retime && v.get("createdAt").is_some() {
        v["createdAt"] = now_rfc3339().into();
    }
    changed.then(|| v.to_string())
}

/// The summary, unless some records could not be delivered.
fn delivered(deliveries: &Deliveries, mut summary: Summary) -> Result<Summary, ReplayError> {
    summary.failed = deliveries.failed.load(Ordering::Relaxed);
    if summary.failed > 0 {
        let first = deliveries
            .first
            .lock()
            .expect("delivery lock")
            .clone()
            .unwrap_or_default();
        return Err(ReplayError::Undelivered {
            failed: summary.failed,
            total: summary.produced,
            first,
        });
    }
    Ok(summary)
}

/// The arguments of `switchboard replay` (its help text is the subcommand's doc, in the
/// binary's command line).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A JSON-lines file (`-`: standard input); or use --from-topic.
    #[arg(required_unless_present = "from_topic")]
    pub input: Option<PathBuf>,
    /// Read this topic from its beginning to its current end instead of a file.
    #[arg(long, conflicts_with = "input")]
    pub from_topic: Option<String>,
    /// The topic to produce to; default: the configured input topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Pace: the recorded `createdAt` spacing divided by this factor.
    #[arg(long, default_value_t = 1.0, conflicts_with = "fastest", value_parser = positive_speed)]
    pub speed: f64,
    /// As fast as the broker takes them.
    #[arg(long)]
    pub fastest: bool,
    /// Give every conversation and message ID a fresh substitute derived from this salt, so
    /// a trace can be replayed many times without collisions.
    #[arg(long)]
    pub remap: Option<String>,
    /// Set `createdAt` to the moment each record is produced.
    #[arg(long)]
    pub retime: bool,
    /// Configuration file (TOML), for the Kafka settings; SWITCHBOARD_* variables win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The --from-topic is a dead-letter topic: produce each dead letter's original record
    /// (key, payload and headers as they were), as fast as the broker takes them.
    #[arg(long, requires = "from_topic", conflicts_with_all = ["remap", "retime"])]
    pub unwrap_dlq: bool,
}

fn positive_speed(s: &str) -> Result<f64, String> {
    let speed = s.parse::<f64>().map_err(|e| e.to_string())?;
    if speed > 0.0 && speed.is_finite() {
        Ok(speed)
    } else {
        Err("must be a positive factor".into())
    }
}

/// `switchboard replay`: a file, standard input or a topic to the target topic.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = crate::config::Config::load(args.config.as_deref())?;
    let target = Target::new(
        &config,
        args.topic.as_deref().unwrap_or(&config.topics.input),
    );
    let options = Options {
        pace: if args.fastest {
            Pace::Fastest
        } else {
            Pace::Recorded { speed: args.speed }
        },
        remap: args.remap,
        retime: args.retime,
    };
    let summary = match (args.input, args.from_topic) {
        (_, Some(source)) if args.unwrap_dlq => {
            let records = read_records(&client_config(&config), &source)?;
            let bar = progress_bar(Some(records.len() as u64));
            let summary = dlq::redrive(records, &target, &bar)?;
            bar.finish_and_clear();
            summary
        }
        (_, Some(source)) => {
            let client = client_config(&config);
            let lines = read_topic(&client, &source)?;
            let total = lines.len() as u64;
            produce(lines.into_iter().map(Ok), Some(total), &target, &options)?
        }
        (Some(path), None) if path.as_os_str() == "-" => {
            produce(std::io::stdin().lock().lines(), None, &target, &options)?
        }
        (Some(path), None) => {
            let open = || {
                std::fs::File::open(&path)
                    .map(std::io::BufReader::new)
                    .with_context(|| format!("opening {}", path.display()))
            };
            let total = open()?.lines().count() as u64;
            produce(open()?.lines(), Some(total), &target, &options)?
        }
        (None, None) => anyhow::bail!("give a file to replay, or --from-topic"),
    };
    eprintln!("replay: {summary}");
    Ok(())
}

/// [`replay`] behind a progress bar on standard error (of `total` records, when known).
pub fn produce<I>(
    lines: I,
    total: Option<u64>,
    target: &Target,
    options: &Options,
) -> Result<Summary, ReplayError>
where
    I: IntoIterator<Item = Result<String, std::io::Error>>,
{
    let bar = progress_bar(total);
    let summary = replay(lines, target, options, &bar)?;
    bar.finish_and_clear();
    Ok(summary)
}

/// A progress bar on standard error, of `total` records when known.
fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::no_length(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} records, {per_sec}",
        )
        .expect("a valid template"),
    );
    bar
}
