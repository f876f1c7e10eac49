//! Latency: traffic produced at a fixed rate, its `createdAt` the moment of production, and the
//! time until each result is visible to a `read_committed` consumer (percentiles after a 3 s
//! warm-up, which the chart still shows; and the peak RSS meanwhile).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use switchboard::core::event::Topic;
use switchboard::tools::replay::Pace;

use crate::probe::{breakdown, usage};
use crate::process::{consumer, free_port, metrics, Proc};
use crate::run::Run;
use crate::{model, PARTITIONS};

/// Latency percentiles leave out results of the first this-many microseconds of a run.
const WARMUP_MICROS: i64 = 3_000_000;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Latency {
    pub rate: f64,
    pub seconds: f64,
    pub results: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub peak_rss_mib: f64,
    /// Per second of the run: (second, p99 latency ms, results).
    pub series: Vec<(u64, f64, u64)>,
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
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

/// A processor whose latency is measured, started on a run's topics.
pub trait Processor {
    fn pid(&self) -> u32;
    /// Whether it owns every input partition, so that what is produced now is processed now.
    fn ready(&self) -> bool;
    /// The topic of its one result per input message.
    fn results(&self) -> String;
    /// What it shows of itself after the run (Switchboard: where a batch's time went).
    fn describe(&self) -> String;
    /// Stops it (SIGTERM, and waits).
    fn stop(self: Box<Self>);
}

/// `switchboard run` on a run's topics.
struct Switchboard {
    child: Proc,
    port: u16,
    results: String,
}

impl Switchboard {
    fn start(run: &Run) -> Switchboard {
        let port = free_port();
        Switchboard {
            child: run.spawn(port),
            port,
            results: run.topic(Topic::CommandResults),
        }
    }
}

impl Processor for Switchboard {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ready(&self) -> bool {
        metrics(self.port)
            .get("switchboard_assigned_partitions")
            .copied()
            .unwrap_or(0.0)
            >= PARTITIONS as f64
    }

    fn results(&self) -> String {
        self.results.clone()
    }

    fn describe(&self) -> String {
        breakdown(&metrics(self.port))
    }

    fn stop(self: Box<Self>) {
        let _ = self.child.terminate();
    }
}

/// Traffic produced at `rate` for `seconds`, its `createdAt` the moment of production; the
/// latency of each result of `switchboard run` as a `read_committed` consumer sees it.
pub fn latency(io: &tokio::runtime::Runtime, rate: f64, seconds: f64) -> Latency {
    latency_of(io, "latency", rate, seconds, start_switchboard)
}

/// `switchboard run` on `run`'s topics, as a [`Processor`] for [`latency_of`].
pub fn start_switchboard(run: &Run) -> Box<dyn Processor> {
    Box::new(Switchboard::start(run))
}

/// As [`latency`], of the processor `start` starts on the run's topics.
pub fn latency_of(
    io: &tokio::runtime::Runtime,
    what: &str,
    rate: f64,
    seconds: f64,
    start: impl FnOnce(&Run) -> Box<dyn Processor>,
) -> Latency {
    latency_in(io, Run::new(what), rate, seconds, start)
}

/// As [`latency_of`], in `run` (which may name another build: [`Run::with_binary`]).
pub fn latency_in(
    io: &tokio::runtime::Runtime,
    run: Run,
    rate: f64,
    seconds: f64,
    start: impl FnOnce(&Run) -> Box<dyn Processor>,
) -> Latency {
    let what = run.name.clone();
    let what = what.as_str();
    run.create_topics(io);
    let messages = (rate * seconds) as u64;
    let mut m = model(messages / 15 + 1, Some(messages), 11);
    m.rate = rate;
    run.load_directory(&m);
    let processor = start(&run);
    let begun = Instant::now();
    while !processor.ready() {
        assert!(
            begun.elapsed() < Duration::from_secs(60),
            "{what}: no assignment"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let reader = read_results(processor.results(), messages, seconds);
    m.start_micros = now_micros();
    let first = m.start_micros;
    let sampler = PeakRss::sample(processor.pid());
    run.produce(m, Pace::Recorded { speed: 1.0 })
        .expect("producing");
    let seen = reader.join().unwrap();
    let peak = sampler.stop();
    eprintln!("  {what}: {}", processor.describe());
    processor.stop();
    let result = summarise(rate, seconds, first, &seen, peak);
    eprintln!(
        "  {what} at {rate:.0}/s: p50 {:.1} ms, p99 {:.1} ms, p999 {:.1} ms ({} results after the warm-up, of {messages})",
        result.p50_ms, result.p99_ms, result.p999_ms, result.results
    );
    result
}

/// On a thread of its own, the results of `topic` as they become visible: (when seen, µs;
/// latency, ms), until `messages` were seen or the run's time is well past.
fn read_results(topic: String, messages: u64, seconds: f64) -> JoinHandle<Vec<(i64, f64)>> {
    std::thread::spawn(move || {
        let consumer = consumer("latency-reader");
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut seen: Vec<(i64, f64)> = Vec::with_capacity(messages as usize);
        let deadline = Instant::now() + Duration::from_secs_f64(seconds * 3.0 + 60.0);
        while (seen.len() as u64) < messages && Instant::now() < deadline {
            if let Some(Ok(r)) = consumer.poll(Duration::from_millis(100)) {
                let now = now_micros();
                let v: Value = serde_json::from_slice(r.payload().unwrap_or_default()).unwrap();
                // A result's `time` is its message's `createdAt`; the passthrough copies the
                // message itself.
                if let Some(t) = v["time"]
                    .as_str()
                    .or_else(|| v["createdAt"].as_str())
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                {
                    seen.push((now, (now - t.timestamp_micros()) as f64 / 1000.0));
                }
            }
        }
        seen
    })
}

/// A process's peak RSS (MiB), sampled every 200 ms on a thread of its own until stopped.
struct PeakRss {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<f64>,
}

impl PeakRss {
    fn sample(pid: u32) -> PeakRss {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = 0.0f64;
            while !stopped.load(Ordering::Relaxed) {
                let (_, rss, hwm) = usage(pid);
                peak = peak.max(rss).max(hwm);
                std::thread::sleep(Duration::from_millis(200));
            }
            peak
        });
        PeakRss { stop, thread }
    }

    fn stop(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Percentiles of what was seen after the warm-up, and the p99 of every second.
fn summarise(rate: f64, seconds: f64, first: i64, seen: &[(i64, f64)], peak: f64) -> Latency {
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
    for (at, l) in seen {
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
    Latency {
        rate,
        seconds,
        results: all.len() as u64,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        p999_ms: percentile(&all, 0.999),
        max_ms: all.last().copied().unwrap_or(f64::NAN),
        peak_rss_mib: peak,
        series,
    }
}
