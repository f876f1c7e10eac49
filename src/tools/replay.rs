//! Re-producing traffic to the input topic: from a JSON-lines file, a topic, or `loadgen`.
//!
//! Records are produced in the order given, keyed by conversation, by one idempotent producer,
//! so each conversation's records keep their order. Pacing follows the records' `createdAt`
//! (times a speed factor) or is as fast as the broker takes them. Optional ID remapping gives
//! every conversation and message ID of a replay a fresh, consistent substitute, so one trace can
//! be replayed many times into the same system without collisions; relay records Switchboard
//! wrote itself (`import.request`, `import.transfer`) are skipped, since the processor will
//! write them again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message as _};
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
    let producer: BaseProducer<Deliveries> = target
        .client
        .clone()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create_with_context(Deliveries::default())?;
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
        if let Some(v) = &parsed {
            if matches!(
                v["type"].as_str(),
                Some(crate::core::message::IMPORT_REQUEST | crate::core::message::IMPORT_TRANSFER)
            ) {
                summary.relays_skipped += 1;
                progress.inc(1);
                continue;
            }
        }
        if let (Pace::Recorded { .. }, Some(created)) = (
            options.pace,
            parsed
                .as_ref()
                .and_then(|v| v["createdAt"].as_str())
                .and_then(micros),
        ) {
            let first = *first.get_or_insert(created);
            let wait = due(options.pace, first, created).saturating_sub(started.elapsed());
            if !wait.is_zero() {
                producer.poll(Duration::ZERO);
                std::thread::sleep(wait);
            }
        }
        let mut payload = None;
        if let Some(v) = &mut parsed {
            if let Some(r) = &mut remap {
                r.apply(v);
            }
            if options.retime && v.get("createdAt").is_some() {
                v["createdAt"] = now_rfc3339().into();
            }
            if remap.is_some() || options.retime {
                payload = Some(v.to_string());
            }
        }
        let payload = payload.unwrap_or(line);
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
    let deliveries = producer.context();
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

/// Every record of a topic, from the beginning to its end when called, interleaved across
/// partitions by `createdAt` (each partition in offset order).
pub fn read_topic(client: &ClientConfig, topic: &str) -> Result<Vec<String>, ReplayError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};

    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "switchboard-replay")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut queues: std::collections::BTreeMap<i32, std::collections::VecDeque<(i64, String)>> =
        std::collections::BTreeMap::new();
    let mut open = std::collections::HashSet::new();
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *p, Duration::from_secs(30))?;
        queues.insert(*p, Default::default());
        if high > low {
            tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
            open.insert(*p);
        }
    }
    consumer.assign(&tpl)?;
    while !open.is_empty() {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                let text = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                let created = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["createdAt"].as_str().and_then(micros))
                    .unwrap_or(i64::MIN);
                queues
                    .get_mut(&m.partition())
                    .expect("assigned")
                    .push_back((created, text));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(ReplayError::Kafka(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::OperationTimedOut,
                )))
            }
        }
    }
    let total = queues.values().map(|q| q.len()).sum();
    let mut out = Vec::with_capacity(total);
    while let Some((_, p)) = queues
        .iter()
        .filter_map(|(p, q)| q.front().map(|(t, _)| (*t, *p)))
        .min()
    {
        let (_, text) = queues
            .get_mut(&p)
            .and_then(|q| q.pop_front())
            .expect("non-empty");
        out.push(text);
    }
    Ok(out)
}
