//! The end-to-end benchmark: Switchboard on the real broker and Redis of this machine, against
//! the machine's own ceiling and a naive consumer, in one run (`scripts/bench`, which starts the
//! servers; or `cargo bench --bench e2e -- [--quick]` with them running).
//!
//! It measures, each on fresh topics and a fresh key prefix:
//! - saturation: a topic preloaded with loadgen traffic, drained by `switchboard run`
//!   (messages/s, CPU seconds per million messages, RSS sampled throughout);
//! - the ceiling: a passthrough with the same client settings that consumes the same input and
//!   produces, transactionally with its offsets, as many records as Switchboard did; and Redis's
//!   own pipelined throughput (`redis-benchmark`);
//! - a naive consumer: per message one GET and one SET of the conversation, a produce awaited
//!   and a synchronous offset commit;
//! - latency at half the saturation rate: `createdAt` to the result being visible to a
//!   `read_committed` consumer (after a 3 s warm-up, which the chart still shows);
//! - scale: the same traffic mix over 1,000 conversations and over 1,000,000 (100,000 with
//!   `--quick`);
//! - history: one command on a conversation of 100,000 messages against one on a fresh
//!   conversation, through the Redis store.
//!
//! `--throughput-only` runs just saturation and the passthrough; `--latency-only RATE` just the
//! latency at that rate.
//!
//! It prints the figures and the targets of BENCHMARKS.md, and writes `e2e.json` and `e2e.svg`
//! (throughput and latency over time) to `target/bench/`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use switchboard::core::directory::MemoryDirectory;
use switchboard::core::event::Topic;
use switchboard::tools::loadgen::{directory, Generator, Model};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const PARTITIONS: i32 = 12;
const START: i64 = 1_735_689_600_000_000;
/// Latency percentiles leave out results of the first this-many microseconds of a run.
const WARMUP_MICROS: i64 = 3_000_000;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379/".into())
}

fn model(conversations: u64, messages: Option<u64>, seed: u64) -> Model {
    Model {
        conversations,
        messages,
        rate: 1000.0,
        seed,
        concurrency: 1000,
        start_micros: START,
    }
}

/// Topics, group, transactional ID and key prefix of one measurement.
struct Run {
    name: String,
}

impl Run {
    fn new(what: &str) -> Run {
        Run {
            name: format!("bench-{what}-{}", std::process::id()),
        }
    }

    fn topic_names(&self) -> Vec<String> {
        Topic::ALL
            .iter()
            .map(|t| self.topic(*t))
            .chain([
                format!("passthrough.{}", self.name),
                format!("naive.{}", self.name),
            ])
            .collect()
    }

    fn topic(&self, t: Topic) -> String {
        format!("{}.{}", t.default_name(), self.name)
    }

    fn create_topics(&self, io: &tokio::runtime::Runtime) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .create()
            .expect("admin client");
        let names = self.topic_names();
        let topics: Vec<NewTopic> = names
            .iter()
            .map(|n| NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(1)))
            .collect();
        let results = io
            .block_on(admin.create_topics(&topics, &AdminOptions::new()))
            .unwrap_or_else(|e| panic!("Kafka at {}: {e}; run scripts/bench", bootstrap()));
        for r in results {
            r.expect("topic created");
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("SWITCHBOARD_KAFKA__BROKERS", bootstrap())
            .env("SWITCHBOARD_KAFKA__GROUP_ID", &self.name)
            .env("SWITCHBOARD_KAFKA__TRANSACTIONAL_ID", &self.name)
            .env("SWITCHBOARD_REDIS__URL", redis_url())
            .env("SWITCHBOARD_REDIS__KEY_PREFIX", &self.name)
            .env("SWITCHBOARD_LOG__LEVEL", "warn");
        for t in Topic::ALL {
            let key = match t {
                Topic::Input => "INPUT",
                Topic::ChannelNotifications => "CHANNEL_NOTIFICATIONS",
                Topic::ChannelDequeues => "CHANNEL_DEQUEUES",
                Topic::InboxNotifications => "INBOX_NOTIFICATIONS",
                Topic::EmailNotifications => "EMAIL_NOTIFICATIONS",
                Topic::MessageDeliveries => "MESSAGE_DELIVERIES",
                Topic::CommandResults => "COMMAND_RESULTS",
                Topic::BotCommands => "BOT_COMMANDS",
                Topic::DeadLetters => "DEAD_LETTERS",
            };
            cmd.env(format!("SWITCHBOARD_TOPICS__{key}"), self.topic(t));
        }
        cmd
    }

    fn load_directory(&self, model: &Model) {
        let path = std::env::temp_dir().join(format!("{}.yaml", self.name));
        std::fs::write(&path, serde_yaml_ng::to_string(&directory(model)).unwrap()).unwrap();
        let out = self
            .command(&["directory", "load", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Produces a model's traffic as fast as the broker takes it; returns the record count.
    fn preload(&self, model: &Model) -> u64 {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", bootstrap())
            .set("partitioner", "murmur2_random");
        let summary = switchboard::tools::replay::replay(
            Generator::new(model.clone()).map(|m| Ok(m.to_string())),
            &switchboard::tools::replay::Target {
                topic: self.topic(Topic::Input),
                client,
            },
            &switchboard::tools::replay::Options {
                pace: switchboard::tools::replay::Pace::Fastest,
                remap: None,
                retime: false,
            },
            &indicatif::ProgressBar::hidden(),
        )
        .expect("preloading the input topic");
        summary.produced
    }

    fn spawn(&self, port: u16) -> Child {
        self.command(&["run"])
            .env("SWITCHBOARD_HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting switchboard run")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `/metrics` as name (with labels) → value; empty while the server is not up.
fn metrics(port: u16) -> HashMap<String, f64> {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return HashMap::new();
    };
    let _ = write!(s, "GET /metrics HTTP/1.0\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Where a batch's time went, from the processor's histograms: mean milliseconds per batch.
fn breakdown(m: &HashMap<String, f64>) -> String {
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    let batches = get("switchboard_batches_total").max(1.0);
    let ms = |k: &str| get(k) / batches * 1e3;
    let mut parts = vec![
        format!(
            "{batches:.0} batches of {:.0}",
            get("switchboard_batch_records_sum") / batches
        ),
        format!("apply {:.1} ms", ms("switchboard_apply_seconds_sum")),
        format!(
            "produce+commit {:.1} ms",
            ms("switchboard_produce_seconds_sum")
        ),
    ];
    let mut ops: Vec<(&String, &f64)> = m
        .iter()
        .filter(|(k, _)| k.starts_with("switchboard_redis_seconds_sum"))
        .collect();
    ops.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in ops {
        let op = k.split('"').nth(1).unwrap_or(k);
        let calls = get(&k.replace("_sum", "_count"));
        parts.push(format!(
            "redis {op} {:.1} ms ({:.1} calls)",
            v / batches * 1e3,
            calls / batches
        ));
    }
    format!("per batch: {}", parts.join(", "))
}

fn processed(m: &HashMap<String, f64>) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with("switchboard_messages_total"))
        .map(|(_, v)| v)
        .sum()
}

/// CPU seconds (user + system) and RSS, peak RSS (MiB) of a process, from /proc.
fn usage(pid: u32) -> (f64, f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the ")": state is field 0, utime 11, stime 12; clock ticks are 1/100 s on Linux.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (cpu, kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

fn terminate(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[derive(Debug, Clone, Default, serde::Serialize)]
struct Sample {
    t: f64,
    processed: f64,
    rss_mib: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
struct Saturation {
    conversations: u64,
    messages: u64,
    seconds: f64,
    rate: f64,
    cpu_seconds_per_million: f64,
    peak_rss_mib: f64,
    outputs: f64,
    samples: Vec<Sample>,
}

/// A measurement leaves the servers as it found them: its topics and keys run to gigabytes, and a
/// Redis that keeps growing (rewriting its append-only file) slows the runs after it.
impl Drop for Run {
    fn drop(&mut self) {
        let io = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let names = self.topic_names();
        let topics: Vec<&str> = names.iter().map(String::as_str).collect();
        if let Ok(admin) = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .create::<AdminClient<DefaultClientContext>>()
        {
            let _ = io.block_on(admin.delete_topics(&topics, &AdminOptions::new()));
        }
        forget_keys(&io, &self.name);
    }
}

/// Deletes every Redis key under `prefix`.
fn forget_keys(io: &tokio::runtime::Runtime, prefix: &str) {
    let _ = io.block_on(async {
        let client = redis::Client::open(redis_url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let _: () = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await?;
            }
            if next == 0 {
                return Ok::<(), redis::RedisError>(());
            }
            cursor = next;
        }
    });
}

/// Preloads the model's traffic, then drains it with `switchboard run`.
fn saturate(io: &tokio::runtime::Runtime, what: &str, model: &Model) -> (Run, Saturation) {
    let run = Run::new(what);
    run.create_topics(io);
    run.load_directory(model);
    let produced_at = Instant::now();
    let n = run.preload(model);
    eprintln!(
        "  {what}: {n} records preloaded in {:.1} s",
        produced_at.elapsed().as_secs_f64()
    );
    let port = free_port();
    let mut child = run.spawn(port);
    let pid = child.id();
    let begun = Instant::now();
    let mut samples = Vec::new();
    let mut start: Option<(f64, f64)> = None;
    let mut end: Option<(f64, f64, f64)> = None;
    let mut peak = 0.0f64;
    let mut outputs = 0.0;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let m = metrics(port);
        let t = begun.elapsed().as_secs_f64();
        let (cpu, rss, hwm) = usage(pid);
        peak = peak.max(hwm).max(rss);
        let p = processed(&m);
        samples.push(Sample {
            t,
            processed: p,
            rss_mib: rss,
        });
        if p > 0.0 && start.is_none() {
            start = Some((t, cpu));
        }
        if p >= n as f64 && end.is_none() {
            end = Some((t, cpu, p));
            outputs = m
                .get("switchboard_output_records_total")
                .copied()
                .unwrap_or(0.0);
        }
        if end.is_some() {
            break;
        }
        assert!(
            t < 1800.0,
            "{what}: only {p} of {n} processed after {t:.0} s"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what}: switchboard run exited ({status}) after {p} of {n}");
        }
    }
    eprintln!("  {what}: {}", breakdown(&metrics(port)));
    terminate(child);
    let (t0, cpu0) = start.expect("started");
    let (t1, cpu1, _) = end.expect("finished");
    let seconds = (t1 - t0).max(0.2);
    let result = Saturation {
        conversations: model.conversations,
        messages: n,
        seconds,
        rate: n as f64 / seconds,
        cpu_seconds_per_million: (cpu1 - cpu0) / n as f64 * 1e6,
        peak_rss_mib: peak,
        outputs,
        samples,
    };
    eprintln!(
        "  {what}: {:.0} messages/s, {:.1} CPU s per million, peak RSS {:.0} MiB",
        result.rate, result.cpu_seconds_per_million, result.peak_rss_mib
    );
    (run, result)
}

fn consumer(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer")
}

/// The ceiling: consume the same input and, per batch, produce as many records as Switchboard
/// produced for it and commit them with the offsets in one transaction; no state.
fn passthrough(run: &Run, inputs: u64, outputs: f64) -> f64 {
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
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    let sink = format!("passthrough.{}", run.name);
    let per_input = outputs / inputs as f64;
    let (mut seen, mut owed) = (0u64, 0.0f64);
    let mut started: Option<Instant> = None;
    // The processor's own batching settings.
    let (max, linger) = (
        config.kafka.batch_max_messages,
        Duration::from_millis(config.kafka.batch_linger_ms),
    );
    while seen < inputs {
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
        started.get_or_insert_with(Instant::now);
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
                switchboard::runtime::send(&producer, record).expect("passthrough");
            }
            offsets.insert(*partition, offset + 1);
        }
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
        switchboard::runtime::await_deliveries(&producer, Duration::from_secs(30));
        producer
            .commit_transaction(Duration::from_secs(30))
            .unwrap();
        seen += batch.len() as u64;
    }
    let rate = inputs as f64 / started.unwrap().elapsed().as_secs_f64();
    eprintln!("  passthrough: {rate:.0} messages/s");
    rate
}

/// The naive consumer, over the first `limit` input records.
fn naive(run: &Run, model: &Model, limit: u64) -> f64 {
    use switchboard::core::log::{LogWrite, MemoryLog};
    use switchboard::core::message::{decode, Decoded, KeySource};
    use switchboard::core::state::{Conversation, StoredMessage};
    use switchboard::core::transition::{apply, Env};

    let group = format!("{}-naive", run.name);
    let consumer = consumer(&group);
    consumer.subscribe(&[&run.topic(Topic::Input)]).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let dir = MemoryDirectory::from_file(directory(model)).unwrap();
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Blob {
        conversation: Conversation,
        messages: Vec<StoredMessage>,
    }
    let mut done = 0u64;
    let mut started: Option<Instant> = None;
    let waiting = Instant::now();
    while done < limit {
        // `poll` also returns on group events; only a long silence means no input.
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            assert!(
                started.is_some() || waiting.elapsed() < Duration::from_secs(60),
                "naive: no input"
            );
            continue;
        };
        let m = m.unwrap();
        started.get_or_insert_with(Instant::now);
        if let Decoded::Message(msg) =
            decode(KeySource::Record(m.key()), m.payload().unwrap_or_default())
        {
            let key = format!("{}:naive:{}", run.name, msg.conversation);
            let blob: Option<String> = redis::cmd("GET").arg(&key).query(&mut redis).unwrap();
            let blob: Option<Blob> = blob.map(|b| serde_json::from_str(&b).unwrap());
            let mut log = MemoryLog::new();
            let conversation = blob.map(|b| {
                log.apply(vec![LogWrite::Replace(b.messages)]);
                b.conversation
            });
            let env = Env {
                directory: &dir,
                dialect: switchboard::core::Dialect::Web1on1,
            };
            let t = apply(conversation, &log, msg, &env);
            log.apply(t.log);
            if let Some(c) = t.conversation {
                let blob = serde_json::to_string(&Blob {
                    conversation: c,
                    messages: log.messages().to_vec(),
                })
                .unwrap();
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(blob)
                    .query(&mut redis)
                    .unwrap();
            }
            for o in t.outputs {
                let value = serde_json::to_string(&o.value).unwrap();
                producer
                    .send(
                        BaseRecord::to(&format!("naive.{}", run.name))
                            .key(&o.key)
                            .payload(&value),
                    )
                    .map_err(|(e, _)| e)
                    .unwrap();
            }
            // Awaiting each delivery, as `send().await` would; not `flush`, whose 100 ms
            // polling slices would make this baseline slower than it deserves.
            switchboard::runtime::await_deliveries(&producer, Duration::from_secs(30));
        }
        consumer.commit_message(&m, CommitMode::Sync).unwrap();
        done += 1;
    }
    let rate = done as f64 / started.unwrap().elapsed().as_secs_f64();
    eprintln!("  naive: {rate:.0} messages/s over {done} messages");
    rate
}

#[derive(Debug, Clone, Default, serde::Serialize)]
struct Latency {
    rate: f64,
    seconds: f64,
    results: u64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    peak_rss_mib: f64,
    /// Per second of the run: (second, p99 latency ms, results).
    series: Vec<(u64, f64, u64)>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Traffic produced at `rate` for `seconds`, its `createdAt` the moment of production; the
/// latency of each result as a `read_committed` consumer sees it.
fn latency(io: &tokio::runtime::Runtime, rate: f64, seconds: f64) -> Latency {
    let run = Run::new("latency");
    run.create_topics(io);
    let messages = (rate * seconds) as u64;
    let mut m = model(messages / 15 + 1, Some(messages), 11);
    m.rate = rate;
    run.load_directory(&m);
    let port = free_port();
    let child = run.spawn(port);
    let begun = Instant::now();
    while metrics(port)
        .get("switchboard_assigned_partitions")
        .copied()
        .unwrap_or(0.0)
        < PARTITIONS as f64
    {
        assert!(begun.elapsed() < Duration::from_secs(60), "no assignment");
        std::thread::sleep(Duration::from_millis(100));
    }
    let results_topic = run.topic(Topic::CommandResults);
    let reader = std::thread::spawn(move || {
        let consumer = consumer("latency-reader");
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(&results_topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut seen: Vec<(i64, f64)> = Vec::with_capacity(messages as usize);
        let deadline = Instant::now() + Duration::from_secs_f64(seconds * 3.0 + 60.0);
        while (seen.len() as u64) < messages && Instant::now() < deadline {
            if let Some(Ok(r)) = consumer.poll(Duration::from_millis(100)) {
                let now = now_micros();
                let v: Value = serde_json::from_slice(r.payload().unwrap_or_default()).unwrap();
                if let Some(t) = v["time"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                {
                    seen.push((now, (now - t.timestamp_micros()) as f64 / 1000.0));
                }
            }
        }
        seen
    });
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", bootstrap())
        .set("partitioner", "murmur2_random");
    m.start_micros = now_micros();
    let first = m.start_micros;
    let pid = child.id();
    let sampler_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = sampler_stop.clone();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0.0f64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let (_, rss, hwm) = usage(pid);
            peak = peak.max(rss).max(hwm);
            std::thread::sleep(Duration::from_millis(200));
        }
        peak
    });
    switchboard::tools::replay::replay(
        Generator::new(m).map(|v| Ok(v.to_string())),
        &switchboard::tools::replay::Target {
            topic: run.topic(Topic::Input),
            client,
        },
        &switchboard::tools::replay::Options {
            pace: switchboard::tools::replay::Pace::Recorded { speed: 1.0 },
            remap: None,
            retime: false,
        },
        &indicatif::ProgressBar::hidden(),
    )
    .expect("producing");
    let seen = reader.join().unwrap();
    sampler_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    eprintln!("  latency: {}", breakdown(&metrics(port)));
    terminate(child);
    // The first seconds include the processor's warm-up (output-topic metadata, the first
    // transaction's partitions, an empty directory cache); they are charted but left out of the
    // percentiles.
    let mut all: Vec<f64> = seen
        .iter()
        .filter(|(at, _)| *at - first >= WARMUP_MICROS)
        .map(|(_, l)| *l)
        .collect();
    all.sort_by(f64::total_cmp);
    let mut by_second: std::collections::BTreeMap<u64, Vec<f64>> = Default::default();
    for (at, l) in &seen {
        by_second
            .entry(((at - first).max(0) / 1_000_000) as u64)
            .or_default()
            .push(*l);
    }
    let series = by_second
        .into_iter()
        .map(|(s, mut v)| {
            v.sort_by(f64::total_cmp);
            (s, percentile(&v, 0.99), v.len() as u64)
        })
        .collect();
    let result = Latency {
        rate,
        seconds,
        results: all.len() as u64,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        p999_ms: percentile(&all, 0.999),
        max_ms: all.last().copied().unwrap_or(f64::NAN),
        peak_rss_mib: peak,
        series,
    };
    eprintln!(
        "  latency at {rate:.0}/s: p50 {:.1} ms, p99 {:.1} ms, p999 {:.1} ms ({} results after the warm-up, of {messages})",
        result.p50_ms, result.p99_ms, result.p999_ms, result.results
    );
    result
}

#[derive(Debug, Clone, Default, serde::Serialize)]
struct History {
    messages: u64,
    fresh_us: f64,
    long_us: f64,
}

/// One command applied through the Redis store to a conversation of `length` messages, and to
/// a fresh one: median microseconds per batch of one.
fn history(io: &tokio::runtime::Runtime, length: u64) -> History {
    use switchboard::runtime::pipeline::{process_batch, InputRecord};
    use switchboard::runtime::store::RedisStore;

    let prefix = format!("bench-history-{}", std::process::id());
    let store = io
        .block_on(RedisStore::connect(&redis_url(), &prefix))
        .unwrap();
    let m = model(1, Some(length), 21);
    let dir = MemoryDirectory::from_file(directory(&m)).unwrap();
    let record = |offset: i64, v: &Value| InputRecord {
        partition: 0,
        offset,
        key: v["conversation"].as_str().map(|c| c.as_bytes().to_vec()),
        payload: v.to_string().into_bytes(),
        timestamp: None,
    };
    let long_id = switchboard::tools::loadgen::conversation_id(21, 0);
    let mut offset = 0i64;
    let mut batch = Vec::new();
    for v in Generator::new(m.clone()) {
        batch.push(record(offset, &v));
        offset += 1;
        if batch.len() == 1000 {
            io.block_on(process_batch(
                &store,
                &dir,
                switchboard::core::Dialect::Web1on1,
                1 << 20,
                std::mem::take(&mut batch),
            ))
            .unwrap();
        }
    }
    if !batch.is_empty() {
        io.block_on(process_batch(
            &store,
            &dir,
            switchboard::core::Dialect::Web1on1,
            1 << 20,
            batch,
        ))
        .unwrap();
    }
    let org = switchboard::tools::loadgen::organization_id(21, 0);
    let fresh_id = "d0ffffff0000000000000001".to_string();
    let opening = json!({"id": "1fffffff0000000000000000", "conversation": fresh_id, "type": "chat",
        "role": "contact", "text": "hello", "organization": org, "touchpoint": "web",
        "createdAt": "2030-01-01T00:00:00Z"});
    io.block_on(process_batch(
        &store,
        &dir,
        switchboard::core::Dialect::Web1on1,
        1 << 20,
        vec![record(offset, &opening)],
    ))
    .unwrap();
    offset += 1;
    let agent = directory(&m).users[0].id.clone();
    let time = |conversation: &str, offset: &mut i64| -> f64 {
        let mut took = Vec::new();
        for i in 0..400 {
            let v = json!({"id": format!("1ffffffe{:016x}", *offset), "conversation": conversation,
                "type": "command", "role": "agent", "sender": agent,
                "text": if i % 2 == 0 { "/set engagement high" } else { "/set engagement low" },
                "createdAt": "2030-01-01T00:00:01Z"});
            let r = record(*offset, &v);
            *offset += 1;
            let t = Instant::now();
            io.block_on(process_batch(
                &store,
                &dir,
                switchboard::core::Dialect::Web1on1,
                1 << 20,
                vec![r],
            ))
            .unwrap();
            took.push(t.elapsed().as_secs_f64() * 1e6);
        }
        took.sort_by(f64::total_cmp);
        percentile(&took, 0.5)
    };
    // Alternate, so that machine noise hits both alike.
    let (mut fresh, mut long) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        fresh.push(time(&fresh_id, &mut offset));
        long.push(time(&long_id, &mut offset));
    }
    fresh.sort_by(f64::total_cmp);
    long.sort_by(f64::total_cmp);
    forget_keys(io, &prefix);
    let result = History {
        messages: length,
        fresh_us: fresh[1],
        long_us: long[1],
    };
    eprintln!(
        "  history: a command takes {:.0} µs on a fresh conversation, {:.0} µs on one of {length} messages",
        result.fresh_us, result.long_us
    );
    result
}

/// `redis-benchmark`'s pipelined SET and GET throughput, requests per second.
fn redis_benchmark() -> HashMap<String, f64> {
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

fn chart(
    path: &std::path::Path,
    sat: &Saturation,
    lat: &Latency,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(350);
    // Throughput: messages processed per second, between samples.
    let rates: Vec<(f64, f64)> = sat
        .samples
        .windows(2)
        .map(|w| {
            let dt = (w[1].t - w[0].t).max(1e-3);
            (w[1].t, (w[1].processed - w[0].processed) / dt)
        })
        .collect();
    let max_rate = rates.iter().map(|r| r.1).fold(1.0, f64::max);
    let max_t = rates.last().map_or(1.0, |r| r.0);
    let mut c = ChartBuilder::on(&top)
        .caption(
            format!(
                "Saturation: {} messages, {} conversations",
                sat.messages, sat.conversations
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_t, 0.0..max_rate * 1.1)?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_desc("messages/s")
        .draw()?;
    c.draw_series(LineSeries::new(rates, &BLUE))?;
    let max_lat = lat.series.iter().map(|s| s.1).fold(1.0, f64::max);
    let max_s = lat.series.last().map_or(1, |s| s.0) as f64 + 1.0;
    let mut c = ChartBuilder::on(&bottom)
        .caption(
            format!("p99 latency per second at {:.0} messages/s", lat.rate),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_s, 0.0..max_lat * 1.1)?;
    c.configure_mesh().x_desc("seconds").y_desc("ms").draw()?;
    c.draw_series(LineSeries::new(
        lat.series.iter().map(|s| (s.0 as f64, s.1)),
        &RED,
    ))?;
    root.present()?;
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // cargo bench passes --bench; anything else we do not know is an error.
    let quick = args.iter().any(|a| a == "--quick");
    // `--latency-only R`: just the latency measurement, at R messages per second.
    let latency_only: Option<f64> = args.iter().position(|a| a == "--latency-only").map(|i| {
        args.get(i + 1)
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| {
                eprintln!("e2e: --latency-only needs a rate (messages per second)");
                std::process::exit(2)
            })
    });
    // `--throughput-only`: just saturation and the passthrough ceiling, and their ratio.
    let throughput_only = args.iter().any(|a| a == "--throughput-only");
    let known = |a: &str| {
        matches!(
            a,
            "--quick" | "--bench" | "--latency-only" | "--throughput-only"
        ) || a.parse::<f64>().is_ok()
    };
    if let Some(bad) = args.iter().skip(1).find(|a| !known(a)) {
        eprintln!(
            "e2e: unknown argument {bad:?} (known: --quick, --latency-only RATE, --throughput-only)"
        );
        std::process::exit(2);
    }
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (main_convs, main_msgs, many) = if quick {
        (5_000, 150_000, 100_000)
    } else {
        (20_000, 600_000, 1_000_000)
    };
    if let Some(rate) = latency_only {
        let lat = latency(&io, rate, if quick { 20.0 } else { 60.0 });
        println!("{}", serde_json::to_string_pretty(&lat).unwrap());
        return;
    }
    eprintln!("e2e benchmark ({}):", if quick { "quick" } else { "full" });
    let redis = redis_benchmark();
    let (run, sat) = saturate(&io, "saturation", &model(main_convs, Some(main_msgs), 1));
    let ceiling = passthrough(&run, sat.messages, sat.outputs);
    if throughput_only {
        println!(
            "Switchboard {:.0} msg/s · passthrough {ceiling:.0} msg/s · {:.0}% · {:.1} CPU s per million",
            sat.rate,
            sat.rate / ceiling * 100.0,
            sat.cpu_seconds_per_million
        );
        return;
    }
    let naive_rate = naive(
        &run,
        &model(main_convs, Some(main_msgs), 1),
        if quick { 2_000 } else { 5_000 },
    );
    let lat = latency(
        &io,
        (sat.rate / 2.0).floor(),
        if quick { 20.0 } else { 60.0 },
    );
    // The same traffic mix in both: one lifecycle per conversation for the many, ten for each
    // of the few (a conversation's later lifecycles lack only /block and /import).
    let (_, few) = saturate(&io, "few-conversations", &model(1_000, Some(150_000), 2));
    let (_, lots) = saturate(&io, "many-conversations", &model(many, None, 3));
    let hist = history(&io, 100_000);

    let peak_rss = [
        sat.peak_rss_mib,
        lat.peak_rss_mib,
        few.peak_rss_mib,
        lots.peak_rss_mib,
    ]
    .into_iter()
    .fold(0.0, f64::max);
    let targets = vec![
        (
            "throughput ≥ 70% of the passthrough ceiling",
            sat.rate / ceiling,
            0.70,
            format!("{:.0}%", 100.0 * sat.rate / ceiling),
        ),
        (
            "throughput ≥ 20× the naive baseline",
            sat.rate / naive_rate,
            20.0,
            format!("{:.1}×", sat.rate / naive_rate),
        ),
        (
            "p99 latency < 50 ms at half of saturation",
            50.0 / lat.p99_ms,
            1.0,
            format!("{:.1} ms", lat.p99_ms),
        ),
        (
            "1,000,000 conversations within 20% of 1,000",
            lots.rate / few.rate,
            0.8,
            format!(
                "{:.0}% ({} conversations: {:.0}/s; 1,000: {:.0}/s)",
                100.0 * lots.rate / few.rate,
                many,
                lots.rate,
                few.rate
            ),
        ),
        (
            "a command on 100,000 messages within 20% of a fresh one",
            hist.fresh_us * 1.2 / hist.long_us,
            1.0,
            format!("{:.0} µs vs {:.0} µs", hist.long_us, hist.fresh_us),
        ),
        (
            "RSS < 256 MiB throughout",
            256.0 / peak_rss,
            1.0,
            format!("{peak_rss:.0} MiB"),
        ),
    ];
    println!();
    println!("| target | measured | met |");
    println!("|---|---|---|");
    for (name, ratio, need, shown) in &targets {
        println!(
            "| {name} | {shown} | {} |",
            if ratio >= need { "yes" } else { "**no**" }
        );
    }
    println!();
    println!(
        "Switchboard {:.0} msg/s · passthrough {:.0} msg/s · naive {:.0} msg/s · Redis SET {:.0}/s GET {:.0}/s (pipelined) · {:.1} CPU s per million messages",
        sat.rate,
        ceiling,
        naive_rate,
        redis.get("SET").copied().unwrap_or(f64::NAN),
        redis.get("GET").copied().unwrap_or(f64::NAN),
        sat.cpu_seconds_per_million
    );

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let summary = json!({
        "mode": if quick { "quick" } else { "full" },
        "partitions": PARTITIONS,
        "saturation": sat,
        "passthrough_rate": ceiling,
        "naive_rate": naive_rate,
        "redis_benchmark": redis,
        "latency": lat,
        "scale": { "few": few, "many": lots },
        "history": hist,
        "peak_rss_mib": peak_rss,
        "targets": targets.iter().map(|(n, r, need, shown)| json!({"target": n, "measured": shown, "met": r >= need})).collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.join("e2e.json"),
        serde_json::to_string_pretty(&summary).unwrap(),
    )
    .unwrap();
    if let Err(e) = chart(&dir.join("e2e.svg"), &sat, &lat) {
        eprintln!("e2e: chart not written: {e}");
    }
    eprintln!("e2e: wrote {}/e2e.json and e2e.svg", dir.display());
}
