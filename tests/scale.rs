//! Many instances on the real broker and Redis (`deploy/local/up`; `KAFKA_BOOTSTRAP` and
//! `REDIS_URL` override the local defaults), under continuous load: one instance, then three,
//! then two, then a rolling restart of both. The committed outputs and the state must equal what
//! `switchboard simulate` gives, every output exactly once and in order.
//!
//! Along the way it measures how long the messages of the partitions that kept their owner
//! waited for their results while the group rebalanced (from the input record's timestamp to its
//! committed result's), beside the longest wait while the group was stable, and prints that (not
//! asserted: timings on a shared machine are no test's business). A result of input partition p
//! lands on partition p of the results topic (same key, same partitioner, same partition count).

mod kafka_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_support::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use switchboard::core::event::Topic;

/// Input lines per second while the group changes.
const RATE: f64 = 60.0;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One `switchboard run`, restartable under its name (its transactional id, and so its
/// `group.instance.id`), logging to a file of its own.
struct Instance {
    name: String,
    port: u16,
    proc: Option<Proc>,
    log: std::path::PathBuf,
}

impl Instance {
    fn new(setup: &Setup, name: &str) -> Instance {
        let log = std::env::temp_dir().join(format!("sb-scale-{}-{name}.log", setup.name));
        let mut i = Instance {
            name: name.to_string(),
            port: free_port(),
            proc: None,
            log,
        };
        i.start(setup);
        i
    }

    fn start(&mut self, setup: &Setup) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = setup.instance_command(&self.name, &format!("127.0.0.1:{}", self.port));
        cmd.env("SWITCHBOARD_LOG__LEVEL", "info")
            .env("SWITCHBOARD_KAFKA__BATCH_MAX_MESSAGES", "50")
            .stderr(Stdio::from(log));
        self.proc = Some(Proc::spawn(&mut cmd));
    }

    /// SIGTERM: the batch in flight is committed, and the process must exit 0, soon.
    fn stop(&mut self) {
        let mut proc = self.proc.take().expect("running");
        assert!(proc.signal("-TERM"), "SIGTERM to {}", self.name);
        let start = Instant::now();
        let status = loop {
            if let Some(status) = proc.try_wait() {
                break status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{} did not exit within 60 s of SIGTERM (log: {})",
                self.name,
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{} exited {status:?}", self.name);
    }

    /// The input partitions it holds and when it last got or gave one up (ms), by its log of
    /// rebalances since it last started; `None` while it is not running.
    fn held(&self) -> Option<(i64, BTreeSet<i32>)> {
        self.proc.as_ref()?;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let since = log.rfind("INFO switchboard::runtime::serve: starting")?;
        let mut held = BTreeSet::new();
        let mut last = 0;
        for line in log[since..].lines() {
            let assigned = line.contains("partitions assigned");
            if !assigned && !line.contains("partitions revoked") {
                continue;
            }
            let at = line.split_whitespace().next()?;
            last = chrono::DateTime::parse_from_rfc3339(at)
                .ok()?
                .timestamp_millis();
            let list = line.split("partitions={").nth(1)?.split('}').next()?;
            for p in list.split(", ").filter_map(|p| p.parse::<i32>().ok()) {
                if assigned {
                    held.insert(p);
                } else {
                    held.remove(&p);
                }
            }
        }
        Some((last, held))
    }

    /// The rebalances it took part in since `since` (ms), by its log.
    fn rebalances_since(&self, since: i64) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("partitions assigned") || l.contains("partitions revoked"))
            .filter_map(|l| chrono::DateTime::parse_from_rfc3339(l.split_whitespace().next()?).ok())
            .filter(|t| t.timestamp_millis() >= since)
            .count()
    }

    /// Batches it aborted and replayed, by its log: (overtaken by a rebalance, failed otherwise).
    fn aborted(&self) -> (usize, usize) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
        (
            count("the group rebalanced while the batch committed"),
            count("batch failed"),
        )
    }
}

/// The example trace, copy after copy, produced at [`RATE`] until stopped (at the end of a
/// copy, so that every conversation produced is whole).
///
/// Each copy's `/import` goes out a copy later. In the example, the origin of the import gets
/// a message after it; `simulate` applies relay records after the whole input, so that message
/// reaches the origin before the import request does. A stream paced this slowly could give the
/// request the lead (the order of two conversations is nobody's promise); sent a second later,
/// the import comes after everything its copy has, as in `simulate`.
struct Load {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<String>>,
}

impl Load {
    fn start(setup: &Setup) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let input = setup.topic(Topic::Input);
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let original = std::fs::read_to_string(TRACE).unwrap();
            let producer: BaseProducer = producer_config().create().unwrap();
            let mut produced = Vec::new();
            let mut held_back: Vec<String> = Vec::new();
            let start = Instant::now();
            let send = |line: String, produced: &mut Vec<String>| {
                let key = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v["conversation"].as_str().map(str::to_string));
                let mut record = BaseRecord::<str, str>::to(&input).payload(&line);
                if let Some(k) = &key {
                    record = record.key(k.as_str());
                }
                producer.send(record).map_err(|(e, _)| e).unwrap();
                producer.poll(Duration::ZERO);
                produced.push(line);
                let due = Duration::from_secs_f64(produced.len() as f64 / RATE);
                std::thread::sleep(due.saturating_sub(start.elapsed()));
            };
            for copy in 0..0xffff {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let (imports, rest): (Vec<String>, Vec<String>) = original
                    .lines()
                    .map(|l| remap(l, copy))
                    .partition(|l| l.contains("\"/import "));
                for line in rest
                    .into_iter()
                    .chain(std::mem::replace(&mut held_back, imports))
                {
                    send(line, &mut produced);
                }
            }
            for line in held_back {
                send(line, &mut produced);
            }
            producer.flush(Duration::from_secs(30)).unwrap();
            produced
        });
        Load { stop, thread }
    }

    /// Stops producing; the trace of what was produced.
    fn finish(self, name: &str) -> (std::path::PathBuf, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let lines = self.thread.join().unwrap();
        let path = std::env::temp_dir().join(format!("sb-scale-trace-{name}.jsonl"));
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        (path, lines.len())
    }
}

/// Who holds what, as the instances' /metrics say.
type Owners = BTreeMap<String, BTreeSet<i32>>;

/// Once every running instance holds a share, the shares are disjoint and cover every
/// partition: the moment of the last rebalance that made it so, and who holds what.
fn settled(instances: &[&Instance], within: Duration) -> (i64, Owners) {
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    let start = Instant::now();
    loop {
        let shares: Option<Vec<_>> = instances.iter().map(|i| i.held()).collect();
        if let Some(shares) = shares {
            let last = shares.iter().map(|(t, _)| *t).max().unwrap_or(0);
            let owners: Owners = instances
                .iter()
                .zip(shares)
                .map(|(i, (_, held))| (i.name.clone(), held))
                .collect();
            let union: BTreeSet<i32> = owners.values().flatten().copied().collect();
            let count: usize = owners.values().map(BTreeSet::len).sum();
            if union == all && count == all.len() && owners.values().all(|s| !s.is_empty()) {
                return (last, owners);
            }
        }
        assert!(
            start.elapsed() < within,
            "the group did not settle within {within:?}: {:?}",
            instances
                .iter()
                .map(|i| (i.name.clone(), i.held()))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The committed records of `topic` as (partition, timestamp in ms, what `id` picks of the
/// value).
fn records(topic: &str, id: fn(&serde_json::Value) -> Option<&str>) -> Vec<(i32, i64, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", "sb-scale-reader")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    while done.len() < PARTITIONS as usize {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                let value = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok());
                if let Some(id) = value.as_ref().and_then(id) {
                    let at = m.timestamp().to_millis().unwrap();
                    out.push((m.partition(), at, id.to_string()));
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                done.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => panic!("reading {topic}: nothing for 10 s"),
        }
    }
    out
}

/// Per input partition, when each message was produced and when its result was committed (ms).
type Waits = BTreeMap<i32, Vec<(i64, i64)>>;

fn waits(setup: &Setup) -> Waits {
    // An `/import` waits for its relay's round trip through the partition of its origin, which
    // may be one that moved: not a wait of its own partition. Relay records repeat its ID.
    fn own(v: &serde_json::Value) -> Option<&str> {
        let relayed = v["type"].as_str().is_some_and(|t| t.starts_with("import."));
        let import = v["text"].as_str().is_some_and(|t| t.starts_with("/import"));
        (!relayed && !import).then(|| v["id"].as_str()).flatten()
    }
    let produced: BTreeMap<String, i64> = records(&setup.topic(Topic::Input), own)
        .into_iter()
        .map(|(_, at, id)| (id, at))
        .collect();
    let mut waits = Waits::new();
    for (p, at, id) in records(&setup.topic(Topic::CommandResults), |v| {
        v["data"]["message"].as_str()
    }) {
        if let Some(sent) = produced.get(&id) {
            waits.entry(p).or_default().push((*sent, at));
        }
    }
    waits
}

/// The longest a message of `partitions` waited for its result (ms), of those waiting during
/// `[from, to]`, or, `within`, produced and committed inside it; and how many there were.
fn longest_wait(
    waits: &Waits,
    partitions: &BTreeSet<i32>,
    (from, to): (i64, i64),
    within: bool,
) -> (i64, usize) {
    let measured: Vec<i64> = partitions
        .iter()
        .filter_map(|p| waits.get(p))
        .flatten()
        .filter(|(sent, done)| match within {
            true => *sent >= from && *done <= to,
            false => *sent <= to && *done >= from,
        })
        .map(|(sent, done)| done - sent)
        .collect();
    (measured.iter().copied().max().unwrap_or(0), measured.len())
}

/// A change of the group: when it was made, when the group had settled after it, and who held
/// what before and after.
struct Change {
    what: String,
    at: i64,
    settled: i64,
    before: Owners,
    after: Owners,
}

impl Change {
    /// Partitions held by the same instance before and after, that instance running throughout.
    fn kept(&self, restarted: &[&str]) -> BTreeSet<i32> {
        self.before
            .iter()
            .filter(|(name, _)| !restarted.contains(&name.as_str()))
            .filter_map(|(name, held)| Some(held & self.after.get(name)?))
            .flatten()
            .collect()
    }
}

/// Waits for the group to settle after a change made at `at`, and notes the change.
fn record(
    changes: &mut Vec<Change>,
    what: &str,
    at: i64,
    before: &Owners,
    (settled, after): (i64, Owners),
) -> Owners {
    eprintln!("{what}: settled after {} ms: {after:?}", settled - at);
    changes.push(Change {
        what: what.to_string(),
        at,
        settled,
        before: before.clone(),
        after: after.clone(),
    });
    after
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_one_three_two_and_a_rolling_restart_under_load_stay_exact() {
    let setup = Setup::create("scale").await;
    let started = Instant::now();
    let load = Load::start(&setup);
    let a = Instance::new(&setup, "a");
    let (settled_at, mut owners) = settled(&[&a], Duration::from_secs(60));
    let mut changes = Vec::new();
    // The stable periods, between one change's settling and the next change.
    let mut quiet = Vec::new();
    let mut stable = |from: i64, secs: u64| {
        std::thread::sleep(Duration::from_secs(secs));
        quiet.push((from, now_ms()));
    };
    stable(settled_at, 8);

    // 1 → 3: two instances join at once, as a StatefulSet's pods do.
    let at = now_ms();
    let b = Instance::new(&setup, "b");
    let mut c = Instance::new(&setup, "c");
    let three = settled(&[&a, &b, &c], Duration::from_secs(60));
    owners = record(&mut changes, "1 -> 3 (b, c join)", at, &owners, three);
    stable(changes.last().unwrap().settled, 8);

    // 3 → 2: c stops for good. A static member does not leave the group: its partitions wait
    // out its session (6 s here) before they move.
    let at = now_ms();
    c.stop();
    let two = settled(&[&a, &b], Duration::from_secs(60));
    owners = record(&mut changes, "3 -> 2 (c stops)", at, &owners, two);
    stable(changes.last().unwrap().settled, 5);

    // A rolling restart: each instance stopped and started again under its name, the next one
    // once the group has settled.
    let mut pair = [a, b];
    for i in 0..pair.len() {
        let at = now_ms();
        pair[i].stop();
        pair[i].start(&setup);
        let what = format!("restart {}", pair[i].name);
        let after = settled(&[&pair[0], &pair[1]], Duration::from_secs(60));
        owners = record(&mut changes, &what, at, &owners, after);
        stable(changes.last().unwrap().settled, 5);
        let other = &pair[1 - i];
        assert_eq!(
            other.rebalances_since(at),
            0,
            "{what}: a restart within the session timeout is no rebalance for {}",
            other.name
        );
    }

    let (trace, produced) = load.finish(&setup.name);
    let expected = expected_results(&trace);
    wait_for_results(&setup, expected, Duration::from_secs(120));
    let aborted: Vec<(String, (usize, usize))> = pair
        .iter()
        .chain([&c])
        .map(|i| (i.name.clone(), i.aborted()))
        .collect();
    for i in &mut pair {
        i.stop();
    }
    report(&setup, &changes, &quiet);
    eprintln!(
        "{produced} input records at {RATE}/s, {expected} results; batches aborted and replayed, by instance (overtaken by a rebalance, failed otherwise): {aborted:?}; {:?} in all",
        started.elapsed()
    );
    for change in changes.iter().filter(|c| c.what.starts_with("restart")) {
        assert_eq!(
            change.before, change.after,
            "{}: a restart within the session timeout moves no partition",
            change.what
        );
    }
    assert_matches_oracle(&setup, &trace).await;
}

/// Prints, for each change of the group, the longest a message of the partitions that kept
/// their owner waited for its result, beside the longest wait while the group was stable.
fn report(setup: &Setup, changes: &[Change], quiet: &[(i64, i64)]) {
    let waits = waits(setup);
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    let baseline = quiet
        .iter()
        .map(|window| longest_wait(&waits, &all, *window, true).0)
        .max()
        .unwrap_or(0);
    eprintln!("longest a message waited for its result while the group was stable: {baseline} ms");
    for c in changes {
        let restarted: Vec<&str> = c.what.strip_prefix("restart ").into_iter().collect();
        let kept = c.kept(&restarted);
        let others = &all - &kept;
        let (kept_wait, kept_n) = longest_wait(&waits, &kept, (c.at, c.settled), false);
        let (other_wait, other_n) = longest_wait(&waits, &others, (c.at, c.settled), false);
        eprintln!(
            "{}: settled in {} ms; partitions kept by running instances {kept:?}: longest wait {kept_wait} ms ({kept_n} messages); the others {others:?}: {other_wait} ms ({other_n} messages)",
            c.what,
            c.settled - c.at,
        );
    }
}

/// A mistake an operator can make: two instances started under one name. They would share a
/// transactional id and a `group.instance.id`; the broker fences the older member, which must
/// exit non-zero saying why, while the newer one goes on.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_whose_name_is_taken_exits_fenced_saying_so() {
    let setup = Setup::create("fenced-name").await;
    let log = std::env::temp_dir().join(format!("sb-scale-{}.log", setup.name));
    let mut older = Proc::spawn(
        setup
            .instance_command("same", "127.0.0.1:0")
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap())),
    );
    setup.produce_trace(&scaled_trace("fenced-name", 1));
    setup.wait_for_progress(10, Duration::from_secs(60));
    let mut newer = setup.spawn_instance("same");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = older.try_wait() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the older instance still runs after its name was taken"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "exit status {status:?}: {stderr}");
    assert!(
        stderr.contains("group.instance.id") && stderr.contains("each needs its own"),
        "{stderr}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(newer.try_wait().is_none(), "the newer instance goes on");
    eprintln!("the older instance exited {status:?}: {}", stderr.trim());
}
