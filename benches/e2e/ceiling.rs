//! The machine's ceilings: a passthrough with the processor's own client and batching settings
//! that consumes the same input and produces, transactionally with its offsets, as many records
//! as Switchboard did; and Redis's own pipelined throughput (`redis-benchmark`).

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use switchboard::core::event::Topic;
// The processor's own Kafka helpers (`crate::runtime`), measured against.
use switchboard::runtime::kafka::{await_deliveries, send};

use crate::process::{bootstrap, consumer, redis_url};
use crate::run::Run;

/// One consumed record: partition, offset, key, payload.
type Consumed = (i32, i64, Option<Vec<u8>>, Vec<u8>);

/// The ceiling: consume the same input and, per batch, produce as many records as Switchboard
/// produced for it and commit them with the offsets in one transaction; no state. Returns its
/// rate (messages per second) and its CPU seconds per million messages: this process's, from
/// the first batch on (the processor it is compared with has exited by then).
pub fn passthrough(run: &Run, inputs: u64, outputs: f64) -> (f64, f64) {
    // The processor's own client and batching settings.
    let config = switchboard::config::Config::load(None).expect("the compiled defaults");
    let group = format!("{}-passthrough", run.name);
    let consumer = consumer(&group);
    consumer.subscribe(&[&run.topic(Topic::Input)]).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("transactional.id", &group)
        .set("enable.idempotence", "true")
        .set("linger.ms", config.kafka.linger_ms.to_string())
        .set(
            "retry.backoff.ms",
            switchboard::runtime::kafka::RETRY_BACKOFF_MS,
        )
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    let sink = format!("passthrough.{}", run.name);
    let per_input = outputs / inputs as f64;
    let (mut seen, mut owed) = (0u64, 0.0f64);
    let mut started: Option<(Instant, f64)> = None;
    // The processor's own batching settings.
    let (max, linger) = (
        config.kafka.batch_max_messages,
        Duration::from_millis(config.kafka.batch_linger_ms),
    );
    while seen < inputs {
        let batch = collect(&consumer, max, linger);
        started.get_or_insert_with(|| (Instant::now(), cpu_seconds()));
        producer.begin_transaction().unwrap();
        let mut offsets: HashMap<i32, i64> = HashMap::new();
        for (partition, offset, key, payload) in &batch {
            owed += per_input;
            while owed >= 1.0 {
                owed -= 1.0;
                let mut record = BaseRecord::<[u8], [u8]>::to(&sink).payload(payload);
                if let Some(k) = key {
                    record = record.key(k);
                }
                send(&producer, record).expect("passthrough");
            }
            offsets.insert(*partition, offset + 1);
        }
        commit(run, &consumer, &producer, offsets);
        seen += batch.len() as u64;
    }
    let (at, cpu_at) = started.expect("at least one batch");
    let rate = inputs as f64 / at.elapsed().as_secs_f64();
    let cpu = (cpu_seconds() - cpu_at) / inputs as f64 * 1e6;
    eprintln!("  passthrough: {rate:.0} messages/s, {cpu:.1} CPU s per million");
    (rate, cpu)
}

/// This process's CPU seconds, user and system.
fn cpu_seconds() -> f64 {
    crate::probe::usage(std::process::id()).0
}

/// A batch as the processor collects one: up to `max` records, for at most `linger` once the
/// first has arrived.
fn collect(consumer: &BaseConsumer, max: usize, linger: Duration) -> Vec<Consumed> {
    let mut batch = Vec::new();
    let first = Instant::now();
    while batch.len() < max && (batch.is_empty() || first.elapsed() < linger) {
        match consumer.poll(linger) {
            Some(Ok(m)) => batch.push((
                m.partition(),
                m.offset(),
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(e)) => panic!("passthrough: {e}"),
            None if batch.is_empty() && first.elapsed() > Duration::from_secs(60) => {
                panic!("passthrough: no input")
            }
            None => {}
        }
    }
    batch
}

/// The offsets into the transaction, the deliveries awaited, the transaction committed.
fn commit(run: &Run, consumer: &BaseConsumer, producer: &BaseProducer, offsets: HashMap<i32, i64>) {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(&run.topic(Topic::Input), p, Offset::Offset(o))
            .unwrap();
    }
    producer
        .send_offsets_to_transaction(
            &tpl,
            &consumer.group_metadata().unwrap(),
            Duration::from_secs(30),
        )
        .unwrap();
    // As the processor does (see `await_deliveries`).
    await_deliveries(producer, Duration::from_secs(30));
    producer
        .commit_transaction(Duration::from_secs(30))
        .unwrap();
}

/// `redis-benchmark`'s pipelined SET and GET throughput, requests per second.
pub fn redis_benchmark() -> HashMap<String, f64> {
    let url = redis_url();
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
        .unwrap_or(16379);
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-q",
            "-n",
            "400000",
            "-P",
            "32",
            "-t",
            "set,get",
        ])
        .output();
    let mut rates = HashMap::new();
    if let Ok(out) = out {
        for line in String::from_utf8_lossy(&out.stdout).split(['\r', '\n']) {
            if let Some((name, rest)) = line.split_once(": ") {
                if let Some(v) = rest
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                {
                    rates.insert(name.trim().to_string(), v);
                }
            }
        }
    }
    eprintln!("  redis-benchmark (pipelined 32): {rates:?}");
    rates
}
