//! `switchboard demo`: the whole pipeline on embedded defaults — librdkafka's in-process mock
//! cluster and the in-memory store — fed with the example traffic.
//!
//! It owns the command (`Args`, [`run`]) and [`read_committed`] (and
//! [`read_committed_records`], headers included), which the real-broker tests share; the processor it runs is [`crate::runtime::Runtime`], unchanged.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::core::event::Topic;
use crate::core::Dialect;
use crate::runtime::pipeline::Headers;
use crate::runtime::store::MemoryStore;
use crate::runtime::Runtime;
use crate::tools::simulate::inspect_document;

const PARTITIONS: i32 = 12;

/// The arguments of `switchboard demo` (its help text is the subcommand's doc, in the
/// binary's command line).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Input messages, one JSON object per line.
    #[arg(long, default_value = "examples/trace.jsonl")]
    pub trace: PathBuf,
    /// Directory file (YAML or JSON).
    #[arg(long, default_value = "examples/directory.yaml")]
    pub directory: PathBuf,
    #[arg(long, default_value = "web1on1")]
    pub dialect: Dialect,
}

/// Runs the demo, writing every output record as a JSON line and then the final state to
/// standard output.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    demo(&args, &mut out)?;
    out.flush()?;
    Ok(())
}

fn demo(args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let directory = crate::directory_file::load(&args.directory)?;
    let trace = std::fs::read_to_string(&args.trace)
        .with_context(|| format!("reading {}", args.trace.display()))?;
    let mut config = Config::load(None)?;
    let cluster = MockCluster::new(1).context("starting the in-process Kafka cluster")?;
    config.kafka.brokers = cluster.bootstrap_servers();
    config.kafka.transactional_id = "switchboard-demo".into();
    config.kafka.group_id = "switchboard-demo".into();
    config.dialect = args.dialect;
    for topic in Topic::ALL {
        cluster.create_topic(config.topics.name(topic), PARTITIONS, 1)?;
    }
    produce(&config, &trace)?;
    let topics = config.topics.clone();
    let runtime = process(config, directory)?;
    for topic in Topic::ALL.into_iter().filter(|t| *t != Topic::Input) {
        for (key, value) in
            read_committed(&cluster.bootstrap_servers(), topics.name(topic), PARTITIONS)?
        {
            writeln!(
                out,
                "{}",
                serde_json::json!({"topic": topics.name(topic), "key": key, "value": value})
            )?;
        }
    }
    write_state(runtime.store(), out)
}

/// The trace to the input topic, keyed as Switchboard's relay records are, as the platform's
/// producers must be.
fn produce(config: &Config, trace: &str) -> anyhow::Result<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("partitioner", &config.kafka.partitioner)
        .create()?;
    let mut produced = 0;
    for line in trace.lines().filter(|l| !l.trim().is_empty()) {
        // The platform keys each record by its conversation; an unreadable line has no key.
        let key = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["conversation"].as_str().map(str::to_string));
        let mut record = BaseRecord::<str, str>::to(&config.topics.input).payload(line);
        if let Some(k) = &key {
            record = record.key(k.as_str());
        }
        producer.send(record).map_err(|(e, _)| e)?;
        produced += 1;
    }
    producer.flush(Duration::from_secs(10))?;
    eprintln!(
        "demo: produced {produced} example messages to {}",
        config.topics.input
    );
    Ok(())
}

/// The processor over the input topic until it has been idle for 3 s.
fn process(
    config: Config,
    directory: crate::core::directory::MemoryDirectory,
) -> anyhow::Result<Runtime<MemoryStore, crate::core::directory::MemoryDirectory>> {
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut runtime = Runtime::new(
        config,
        MemoryStore::new(),
        directory,
        io,
        crate::runtime::metrics::Metrics::new(),
    )?;
    let stats = runtime.run(
        &Arc::new(AtomicBool::new(false)),
        Some(Duration::from_secs(3)),
    )?;
    eprintln!(
        "demo: {} batches, {} records in, {} records out, {} aborted",
        stats.batches, stats.records, stats.outputs, stats.aborted
    );
    Ok(runtime)
}

/// Every conversation's final state (messages included), as one pretty JSON object.
fn write_state(store: &MemoryStore, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut state = serde_json::Map::new();
    let io = tokio::runtime::Builder::new_current_thread().build()?;
    for id in store.conversation_ids() {
        let (header, log) = io
            .block_on(crate::runtime::store::document(store, &id, true))?
            .expect("listed");
        state.insert(id, inspect_document(&header, log.as_deref()));
    }
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Object(state))?
    )?;
    Ok(())
}

/// Every committed record of a topic (as a `read_committed` consumer sees it), partition by
/// partition: `(key, value)`.
pub fn read_committed(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<(String, serde_json::Value)>, KafkaError> {
    read_committed_with(reader(bootstrap), topic, partitions)
}

/// As [`read_committed`], with a client of the caller's (a secured broker's settings).
pub fn read_committed_with(
    client: ClientConfig,
    topic: &str,
    partitions: i32,
) -> Result<Vec<(String, serde_json::Value)>, KafkaError> {
    Ok(read_committed_records_with(client, topic, partitions)?
        .into_iter()
        .map(|r| {
            let key = r
                .key
                .map(|k| String::from_utf8_lossy(&k).into_owned())
                .unwrap_or_default();
            let value = r
                .payload
                .and_then(|p| serde_json::from_slice(&p).ok())
                .unwrap_or(serde_json::Value::Null);
            (key, value)
        })
        .collect())
}

/// A committed record as it is on the topic, bytes and headers included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Headers,
}

/// Every committed record of a topic, as [`read_committed`], whole.
pub fn read_committed_records(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<CommittedRecord>, KafkaError> {
    read_committed_records_with(reader(bootstrap), topic, partitions)
}

fn reader(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// As [`read_committed_records`], with a client of the caller's.
pub fn read_committed_records_with(
    mut client: ClientConfig,
    topic: &str,
    partitions: i32,
) -> Result<Vec<CommittedRecord>, KafkaError> {
    let consumer: BaseConsumer = client
        .set("group.id", "switchboard-demo-reader")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut done: HashSet<i32> = HashSet::new();
    let mut records = Vec::new();
    while done.len() < partitions as usize {
        match consumer.poll(Duration::from_secs(5)) {
            Some(Ok(m)) => records.push(CommittedRecord {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec),
                headers: Headers::from_kafka(m.headers()),
            }),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                done.insert(p);
            }
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    Ok(records)
}
