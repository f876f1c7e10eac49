//! Saturation: a topic preloaded with loadgen traffic, drained by `switchboard run` as fast as
//! it goes (messages/s, CPU seconds per million messages, RSS sampled throughout). The scale
//! measurements are the same over other models.

use std::time::{Duration, Instant};

use switchboard::tools::loadgen::Model;

use crate::probe::{breakdown, processed, usage};
use crate::process::{free_port, metrics, Proc};
use crate::run::Run;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Sample {
    pub t: f64,
    pub processed: f64,
    pub rss_mib: f64,
    /// CPU seconds (user + system) the processor has used so far.
    pub cpu_seconds: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Saturation {
    pub conversations: u64,
    pub messages: u64,
    pub seconds: f64,
    pub rate: f64,
    pub cpu_seconds_per_million: f64,
    pub peak_rss_mib: f64,
    /// Redis's CPU seconds (user + system, every node of the run's Redis, replicas included)
    /// per million messages, from spawning the processor to the last message processed.
    pub redis_cpu_seconds_per_million: f64,
    pub outputs: f64,
    pub samples: Vec<Sample>,
}

/// Preloads the model's traffic, then drains it with `switchboard run`.
pub fn saturate(io: &tokio::runtime::Runtime, what: &str, model: &Model) -> (Run, Saturation) {
    saturate_on(io, Run::new(what), model, 1)
}

/// [`saturate`] in `run`, drained by `instances` instances of one group (CPU summed over them).
pub fn saturate_on(
    io: &tokio::runtime::Runtime,
    run: Run,
    model: &Model,
    instances: usize,
) -> (Run, Saturation) {
    let what = run.name.clone();
    let what = what.as_str();
    run.create_topics(io);
    run.load_directory(model);
    let produced_at = Instant::now();
    let n = run.preload(model);
    eprintln!(
        "  {what}: {n} records preloaded in {:.1} s",
        produced_at.elapsed().as_secs_f64()
    );
    let redis_before = redis_cpu(&run);
    let ports: Vec<u16> = (0..instances).map(|_| free_port()).collect();
    let mut children: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| run.spawn_nth(*port, i))
        .collect();
    let progress = || ports.iter().map(|port| processed(&metrics(*port))).sum();
    let d = drain(what, &mut children, progress, n);
    let redis_seconds = redis_cpu(&run) - redis_before;
    eprintln!("  {what}: {}", breakdown(&metrics(ports[0])));
    let outputs = ports
        .iter()
        .filter_map(|port| {
            metrics(*port)
                .get("switchboard_output_records_total")
                .copied()
        })
        .sum();
    for child in children {
        let _ = child.terminate();
    }
    let result = Saturation {
        redis_cpu_seconds_per_million: redis_seconds / n as f64 * 1e6,
        outputs,
        ..Saturation::drained(model, n, d)
    };
    eprintln!(
        "  {what}: {:.0} messages/s, {:.1} CPU s per million, peak RSS {:.0} MiB; Redis {:.1} CPU s per million",
        result.rate, result.cpu_seconds_per_million, result.peak_rss_mib, result.redis_cpu_seconds_per_million
    );
    (run, result)
}

/// What sampling the processor every 200 ms saw while it drained the input.
impl Saturation {
    /// The rate, CPU and memory of `n` messages of `model` drained as `d` saw it.
    pub fn drained(model: &Model, n: u64, d: Drained) -> Saturation {
        let ((t0, cpu0), (t1, cpu1)) = (d.start, d.end);
        let seconds = (t1 - t0).max(0.2);
        Saturation {
            conversations: model.conversations,
            messages: n,
            seconds,
            rate: n as f64 / seconds,
            cpu_seconds_per_million: (cpu1 - cpu0) / n as f64 * 1e6,
            peak_rss_mib: d.peak,
            samples: d.samples,
            ..Saturation::default()
        }
    }
}

pub struct Drained {
    pub samples: Vec<Sample>,
    /// (seconds since start, CPU seconds) at the first processed message and at the last.
    pub start: (f64, f64),
    pub end: (f64, f64),
    pub peak: f64,
}

/// Samples `children` every 200 ms until `progress` (messages processed so far) reaches `n`.
pub fn drain(what: &str, children: &mut [Proc], progress: impl Fn() -> f64, n: u64) -> Drained {
    let pids: Vec<u32> = children.iter().map(Proc::id).collect();
    let begun = Instant::now();
    let mut samples = Vec::new();
    let mut start: Option<(f64, f64)> = None;
    let mut peak = 0.0f64;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let p = progress();
        let t = begun.elapsed().as_secs_f64();
        let (mut cpu, mut rss) = (0.0, 0.0);
        for pid in &pids {
            let (c, r, hwm) = usage(*pid);
            cpu += c;
            rss += r;
            peak = peak.max(hwm);
        }
        peak = peak.max(rss);
        samples.push(Sample {
            t,
            processed: p,
            rss_mib: rss,
            cpu_seconds: cpu,
        });
        if p > 0.0 && start.is_none() {
            start = Some((t, cpu));
        }
        if p >= n as f64 {
            return Drained {
                samples,
                start: start.expect("started"),
                end: (t, cpu),
                peak,
            };
        }
        assert!(
            t < 1800.0,
            "{what}: only {p} of {n} processed after {t:.0} s"
        );
        for child in children.iter_mut() {
            if let Some(status) = child.try_wait() {
                panic!("{what}: the processor exited ({status}) after {p} of {n}");
            }
        }
    }
}

/// The CPU seconds (user + system) Redis has used so far: every node of the run's Cluster, or
/// the one Redis.
fn redis_cpu(run: &Run) -> f64 {
    let nodes: Vec<String> = match &run.cluster {
        Some(nodes) => nodes.split(',').map(|n| format!("redis://{n}")).collect(),
        None => vec![crate::process::redis_url()],
    };
    nodes
        .iter()
        .map(|url| {
            let info: String = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("INFO").arg("cpu").query(&mut c))
                .unwrap_or_default();
            info.lines()
                .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
                .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum()
}
