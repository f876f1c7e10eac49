//! `--peer`: Switchboard against what a team would write instead, a Kafka Streams application
//! (`benches/peer/`: exactly-once, one stream thread, its state in RocksDB with changelogs),
//! in alternated pairs (`--pairs N`, default 5; `--quick`: 3 pairs and a quarter of the load).
//!
//! Each pair measures, on fresh topics:
//! - throughput: the same preloaded loadgen traffic drained by `switchboard run` and by the peer
//!   (the peer's progress is its group's committed input offsets), over the whole run and over
//!   its second half of messages (the JVM warmed up), with CPU seconds per million messages and
//!   peak RSS of each process (Switchboard's Redis CPU is shown beside it; the peer's RocksDB
//!   is in its own process);
//! - latency at 1,000 messages/s, `createdAt` to the result visible to a `read_committed`
//!   consumer: Switchboard, and the peer at `commit.interval.ms` 10 and 100.
//!
//! It prints each pair, then the median of every ratio with its spread over the pairs, and
//! writes them to `target/bench/peer.json`.

pub mod app;

use serde::Serialize;
use serde_json::json;
use switchboard::tools::loadgen::Model;

use crate::latency::{latency_of, start_switchboard, Latency, Processor};
use crate::run::Run;
use crate::saturation::{saturate_on, Sample, Saturation};
use crate::scale::{median, pair};
use app::PeerApp;

/// The latency measurements' input rate, messages per second.
const LATENCY_RATE: f64 = 1000.0;
/// The peer's `commit.interval.ms` in the throughput runs: Kafka Streams' exactly-once default.
const THROUGHPUT_COMMIT_MS: u32 = 100;

/// One side's throughput run.
#[derive(Debug, Clone, Serialize)]
struct Throughput {
    rate: f64,
    /// Over the second half of the messages.
    second_half_rate: f64,
    cpu_seconds_per_million: f64,
    second_half_cpu_seconds_per_million: f64,
    peak_rss_mib: f64,
    /// Switchboard's Redis, its append-only file's rewrites included (as the peer's RocksDB
    /// compactions are in its process); 0 for the peer, whose store is in its own process.
    redis_cpu_seconds_per_million: f64,
}

impl Throughput {
    fn of(s: &Saturation) -> Throughput {
        let (rate, cpu) = second_half(&s.samples, s.messages);
        Throughput {
            rate: s.rate,
            second_half_rate: rate,
            cpu_seconds_per_million: s.cpu_seconds_per_million,
            second_half_cpu_seconds_per_million: cpu,
            peak_rss_mib: s.peak_rss_mib,
            redis_cpu_seconds_per_million: s.redis_cpu_seconds_per_million
                + s.redis_rewrite_cpu_seconds_per_million,
        }
    }
}

/// Rate and CPU seconds per million from the sample where half of the `n` messages were
/// processed to the last sample.
fn second_half(samples: &[Sample], n: u64) -> (f64, f64) {
    let half = samples
        .iter()
        .find(|s| s.processed >= n as f64 / 2.0)
        .expect("a sample past half");
    let end = samples.last().expect("samples");
    let messages = (end.processed - half.processed).max(1.0);
    (
        messages / (end.t - half.t).max(0.2),
        (end.cpu_seconds - half.cpu_seconds) / messages * 1e6,
    )
}

/// Everything one pair measured.
#[derive(Debug, Clone, Serialize)]
struct PairFigures {
    switchboard: Throughput,
    peer: Throughput,
    switchboard_latency: Latency,
    peer_latency_commit_10ms: Latency,
    peer_latency_commit_100ms: Latency,
}

/// Runs `pairs` alternated pairs, prints them and the ratios, writes `peer.json`.
pub fn peer(io: &tokio::runtime::Runtime, quick: bool, pairs: usize, latency_seconds: f64) {
    let (conversations, messages) = crate::pair_traffic(quick);
    let model = crate::model(conversations, Some(messages), 1);
    eprintln!(
        "peer: {pairs} pairs; throughput over {messages} messages of {conversations} conversations, latency at {LATENCY_RATE}/s for {latency_seconds} s"
    );
    let figures: Vec<PairFigures> = (0..pairs)
        .map(|i| {
            let p = measure_pair(io, &model, i, latency_seconds);
            println!("pair {i}: {}", describe(&p));
            p
        })
        .collect();
    report(quick, &figures);
}

/// Pair `i`: throughput, then latency, each side first in turn (`scale::pair`).
fn measure_pair(
    io: &tokio::runtime::Runtime,
    model: &Model,
    i: usize,
    latency_seconds: f64,
) -> PairFigures {
    let (switchboard, peer) = pair(
        i,
        || Throughput::of(&saturate_on(io, Run::new(&format!("sb-{i}")), model, 1).1),
        || Throughput::of(&peer_throughput(io, model, i)),
    );
    let latency = |what: String, start: &dyn Fn(&Run) -> Box<dyn Processor>| {
        latency_of(io, &what, LATENCY_RATE, latency_seconds, start)
    };
    let (switchboard_latency, (peer_latency_commit_10ms, peer_latency_commit_100ms)) = pair(
        i,
        || latency(format!("sb-latency-{i}"), &start_switchboard),
        || {
            let at = |ms| {
                latency(format!("peer-latency-{ms}-{i}"), &|run| {
                    Box::new(PeerApp::start(run, ms))
                })
            };
            (at(10), at(100))
        },
    );
    PairFigures {
        switchboard,
        peer,
        switchboard_latency,
        peer_latency_commit_10ms,
        peer_latency_commit_100ms,
    }
}

/// The peer draining the model's traffic, preloaded into a run of its own.
fn peer_throughput(io: &tokio::runtime::Runtime, model: &Model, i: usize) -> Saturation {
    let run = Run::new(&format!("peer-{i}"));
    run.create_topics(io);
    let produced_at = std::time::Instant::now();
    let n = run.preload(model);
    eprintln!(
        "  {}: {n} records preloaded in {:.1} s",
        run.name,
        produced_at.elapsed().as_secs_f64()
    );
    let mut app = PeerApp::start(&run, THROUGHPUT_COMMIT_MS);
    let s = Saturation::drained(model, n, app.drain(n));
    eprintln!(
        "  {}: {:.0} messages/s, {:.1} CPU s per million, peak RSS {:.0} MiB",
        run.name, s.rate, s.cpu_seconds_per_million, s.peak_rss_mib
    );
    s
}

fn describe(p: &PairFigures) -> String {
    let side = |t: &Throughput| {
        format!(
            "{:.0} msg/s (2nd half {:.0}), {:.1} CPU s/M (2nd half {:.1}), RSS {:.0} MiB",
            t.rate,
            t.second_half_rate,
            t.cpu_seconds_per_million,
            t.second_half_cpu_seconds_per_million,
            t.peak_rss_mib
        )
    };
    let lat = |l: &Latency| format!("p50 {:.1} ms, p99 {:.1} ms", l.p50_ms, l.p99_ms);
    format!(
        "Switchboard {} + Redis {:.1} CPU s/M; peer {}; latency at {LATENCY_RATE}/s: Switchboard {}, peer (commit 10 ms) {}, peer (commit 100 ms) {}",
        side(&p.switchboard),
        p.switchboard.redis_cpu_seconds_per_million,
        side(&p.peer),
        lat(&p.switchboard_latency),
        lat(&p.peer_latency_commit_10ms),
        lat(&p.peer_latency_commit_100ms),
    )
}

/// A ratio measured in every pair: its values, median and spread.
struct Ratio {
    name: &'static str,
    values: Vec<f64>,
}

impl Ratio {
    fn new(name: &'static str, figures: &[PairFigures], f: impl Fn(&PairFigures) -> f64) -> Ratio {
        Ratio {
            name,
            values: figures.iter().map(f).collect(),
        }
    }

    fn min(&self) -> f64 {
        self.values.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.values
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

fn ratios(figures: &[PairFigures]) -> Vec<Ratio> {
    let cpu = |t: &Throughput| t.cpu_seconds_per_million;
    vec![
        Ratio::new("throughput Switchboard/peer, whole run", figures, |p| {
            p.switchboard.rate / p.peer.rate
        }),
        Ratio::new(
            "throughput Switchboard/peer, second half (peer warmed up)",
            figures,
            |p| p.switchboard.second_half_rate / p.peer.second_half_rate,
        ),
        Ratio::new(
            "CPU per message peer/Switchboard, whole run",
            figures,
            |p| cpu(&p.peer) / cpu(&p.switchboard),
        ),
        Ratio::new(
            "CPU per message peer/Switchboard, second half",
            figures,
            |p| {
                p.peer.second_half_cpu_seconds_per_million
                    / p.switchboard.second_half_cpu_seconds_per_million
            },
        ),
        Ratio::new(
            "CPU per message peer/(Switchboard + its Redis), whole run",
            figures,
            |p| cpu(&p.peer) / (cpu(&p.switchboard) + p.switchboard.redis_cpu_seconds_per_million),
        ),
        Ratio::new("peak RSS peer/Switchboard", figures, |p| {
            p.peer.peak_rss_mib / p.switchboard.peak_rss_mib
        }),
        Ratio::new(
            "p99 latency Switchboard/peer, peer at commit.interval.ms=10",
            figures,
            |p| p.switchboard_latency.p99_ms / p.peer_latency_commit_10ms.p99_ms,
        ),
        Ratio::new(
            "p99 latency Switchboard/peer, peer at commit.interval.ms=100",
            figures,
            |p| p.switchboard_latency.p99_ms / p.peer_latency_commit_100ms.p99_ms,
        ),
    ]
}

/// The medians of each side's figures, and of each ratio with its spread; `peer.json`.
fn report(quick: bool, figures: &[PairFigures]) {
    let med = |f: &dyn Fn(&PairFigures) -> f64| median(figures.iter().map(f).collect());
    println!(
        "medians over {} pairs: Switchboard {:.0} msg/s (2nd half {:.0}), {:.1} CPU s/M, RSS {:.0} MiB, p99 {:.1} ms; peer {:.0} msg/s (2nd half {:.0}), {:.1} CPU s/M, RSS {:.0} MiB, p99 {:.1} ms (commit 10 ms), {:.1} ms (commit 100 ms)",
        figures.len(),
        med(&|p| p.switchboard.rate),
        med(&|p| p.switchboard.second_half_rate),
        med(&|p| p.switchboard.cpu_seconds_per_million),
        med(&|p| p.switchboard.peak_rss_mib),
        med(&|p| p.switchboard_latency.p99_ms),
        med(&|p| p.peer.rate),
        med(&|p| p.peer.second_half_rate),
        med(&|p| p.peer.cpu_seconds_per_million),
        med(&|p| p.peer.peak_rss_mib),
        med(&|p| p.peer_latency_commit_10ms.p99_ms),
        med(&|p| p.peer_latency_commit_100ms.p99_ms),
    );
    let ratios = ratios(figures);
    for r in &ratios {
        println!(
            "  {}: median {:.2} (pairs {:.2}–{:.2})",
            r.name,
            median(r.values.clone()),
            r.min(),
            r.max()
        );
    }
    let steady = median(ratios[1].values.clone());
    println!(
        "target: Switchboard ≥ 2× the peer's throughput in steady state: {steady:.2}× (second half) — {}",
        if steady >= 2.0 { "met" } else { "not met" }
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let summary = json!({
        "quick": quick,
        "pairs": figures,
        "ratios": ratios.iter().map(|r| json!({
            "ratio": r.name,
            "median": median(r.values.clone()),
            "min": r.min(),
            "max": r.max(),
            "pairs": r.values,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.join("peer.json"),
        serde_json::to_string_pretty(&summary).unwrap(),
    )
    .unwrap();
    eprintln!("peer: wrote {}/peer.json", dir.display());
}
