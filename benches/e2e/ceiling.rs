//! The machine's ceilings: a passthrough with the processor's own client and batching settings
//! that consumes the same input and produces, transactionally with its offsets, as many records
//! as Switchboard did; and Redis's own pipelined throughput (`redis-benchmark`).

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use switchboard::core::event::Topic;
// The processor's own Kafka helpers (`crate::runtime`), measured against.
use switchboard::runtime::kafka::{await_deliveries, send};

use crate::latency::Processor;
use crate::probe::Machine;
use crate::process::{bootstrap, consumer, redis_url};
use crate::run::Run;
use crate::PARTITIONS;

/// One consumed record: partition, offset, key, payload.
type Consumed = (i32, i64, Option<Vec<u8>>, Vec<u8>);

/// A consumer and a transactional producer with the processor's own client and batching
/// settings; per batch, `per_input` records per input record (the first of each to `first`, the
/// rest to `sink`), committed with the batch's offsets in one transaction. No state.
struct Passthrough {
    consumer: BaseConsumer,
    producer: BaseProducer,
    input: String,
    first: String,
    sink: String,
    per_input: f64,
    owed: f64,
    max: usize,
    linger: Duration,
}

impl Passthrough {
    fn new(run: &Run, group: &str, first: String, per_input: f64) -> Passthrough {
        let config = switchboard::config::Config::load(None).expect("the compiled defaults");
        let consumer = consumer(group);
        consumer.subscribe(&[&run.topic(Topic::Input)]).unwrap();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("transactional.id", group)
            .set("enable.idempotence", "true")
            .set("linger.ms", config.kafka.linger_ms.to_string())
            .set(
                "retry.backoff.ms",
                switchboard::runtime::kafka::RETRY_BACKOFF_MS,
            )
            .create()
            .unwrap();
        producer.init_transactions(Duration::from_secs(30)).unwrap();
        Passthrough {
            consumer,
            producer,
            input: run.topic(Topic::Input),
            first,
            sink: format!("passthrough.{}", run.name),
            per_input,
            owed: 0.0,
            max: config.kafka.batch_max_messages,
            linger: Duration::from_millis(config.kafka.batch_linger_ms),
        }
    }

    /// One batch, as the processor collects one, produced and committed; its size (0 when
    /// nothing arrived for `idle`).
    fn step(&mut self, idle: Duration) -> usize {
        let batch = collect(&self.consumer, self.max, self.linger, idle);
        if batch.is_empty() {
            return 0;
        }
        self.producer.begin_transaction().unwrap();
        let mut offsets: HashMap<i32, i64> = HashMap::new();
        for (partition, offset, key, payload) in &batch {
            self.owed += self.per_input;
            let mut topic = &self.first;
            while self.owed >= 1.0 {
                self.owed -= 1.0;
                let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(payload);
                if let Some(k) = key {
                    record = record.key(k);
                }
                send(&self.producer, record).expect("passthrough");
                topic = &self.sink;
            }
            offsets.insert(*partition, offset + 1);
        }
        self.commit(offsets);
        batch.len()
    }

    /// The offsets into the transaction, the deliveries awaited, the transaction committed.
    fn commit(&self, offsets: HashMap<i32, i64>) {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            tpl.add_partition_offset(&self.input, p, Offset::Offset(o))
                .unwrap();
        }
        self.producer
            .send_offsets_to_transaction(
                &tpl,
                &self.consumer.group_metadata().unwrap(),
                Duration::from_secs(30),
            )
            .unwrap();
        // As the processor does (see `await_deliveries`).
        await_deliveries(&self.producer, Duration::from_secs(30));
        self.producer
            .commit_transaction(Duration::from_secs(30))
            .unwrap();
    }

    fn assigned(&self) -> usize {
        self.consumer.assignment().map_or(0, |a| a.count())
    }
}

/// The ceiling: consume the same input and, per batch, produce as many records as Switchboard
/// produced for it and commit them with the offsets in one transaction; no state. Returns its
/// rate (messages per second) and its CPU seconds per million messages: this process's, from
/// the first batch on (the processor it is compared with has exited by then).
pub fn passthrough(run: &Run, inputs: u64, outputs: f64) -> (f64, f64) {
    let group = format!("{}-passthrough", run.name);
    let sink = format!("passthrough.{}", run.name);
    let mut p = Passthrough::new(run, &group, sink, outputs / inputs as f64);
    let step = |p: &mut Passthrough| match p.step(Duration::from_secs(60)) {
        0 => panic!("passthrough: no input for 60 s"),
        n => n as u64,
    };
    let mut seen = step(&mut p);
    let (at, cpu_at, machine_at) = (Instant::now(), cpu_seconds(), Machine::now());
    // The first batch waited for the group's assignment: timed from its end.
    let timed = inputs - seen;
    while seen < inputs {
        seen += step(&mut p);
    }
    let rate = timed as f64 / at.elapsed().as_secs_f64();
    let cpu = (cpu_seconds() - cpu_at) / timed as f64 * 1e6;
    let machine = Machine::now().since(&machine_at);
    eprintln!(
        "  passthrough: {rate:.0} messages/s, {cpu:.1} CPU s per million; broker {:.1} CPU s per million; the machine {:.2} cores busy, {:.2} in iowait",
        machine.broker_cpu_seconds / timed as f64 * 1e6,
        machine.cores_busy,
        machine.cores_iowait
    );
    (rate, cpu)
}

/// The passthrough as a [`Processor`] for the latency runs, on a thread of the bench: one
/// record per input to the run's `command.results` topic (the one the latency is read from),
/// the rest of `per_input` to its own sink.
pub struct PassthroughApp {
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
    results: String,
    thread: Option<JoinHandle<()>>,
}

impl PassthroughApp {
    pub fn start(run: &Run, per_input: f64) -> PassthroughApp {
        let group = format!("{}-passthrough", run.name);
        let results = run.topic(Topic::CommandResults);
        let mut p = Passthrough::new(run, &group, results.clone(), per_input);
        let (stop, ready) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (stopping, assigned) = (Arc::clone(&stop), Arc::clone(&ready));
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                p.step(Duration::from_millis(100));
                if p.assigned() >= PARTITIONS as usize {
                    assigned.store(true, Ordering::Relaxed);
                }
            }
        });
        PassthroughApp {
            stop,
            ready,
            results,
            thread: Some(thread),
        }
    }
}

impl Processor for PassthroughApp {
    /// The bench's own: the passthrough is a thread of it.
    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn results(&self) -> String {
        self.results.clone()
    }

    fn describe(&self) -> String {
        "passthrough (a thread of the bench: its RSS is the bench's)".to_string()
    }

    fn stop(mut self: Box<Self>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// This process's CPU seconds, user and system.
fn cpu_seconds() -> f64 {
    crate::probe::usage(std::process::id()).0
}

/// A batch as the processor collects one: up to `max` records, for at most `linger` once the
/// first has arrived; empty if nothing arrived for `idle`.
fn collect(consumer: &BaseConsumer, max: usize, linger: Duration, idle: Duration) -> Vec<Consumed> {
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
            None if batch.is_empty() && first.elapsed() > idle => break,
            None => {}
        }
    }
    batch
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
