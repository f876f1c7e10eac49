//! Saturation: a topic preloaded with loadgen traffic, drained by `switchboard run` as fast as
//! it goes (messages/s, CPU seconds per million messages, RSS sampled throughout). The scale
//! measurements are the same over other models.

use std::time::{Duration, Instant};

use switchboard::tools::loadgen::Model;

use crate::probe::{breakdown, processed, usage, Machine, MachineUse};
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
    /// What Redis's append-only file rewrites during the run cost (their forks' CPU seconds per
    /// million messages; not in `redis_cpu_seconds_per_million`), and how many there were.
    pub redis_rewrite_cpu_seconds_per_million: f64,
    pub redis_rewrites: u64,
    /// The machine's cores busy on average while draining (of all its cores, every process),
    /// and the local broker's CPU seconds per million messages (0 with a remote broker).
    pub cores_busy: f64,
    pub cores_iowait: f64,
    pub broker_cpu_seconds_per_million: f64,
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
    compact_aof(&run);
    let redis_before = redis_cpu(&run);
    let ports: Vec<u16> = (0..instances).map(|_| free_port()).collect();
    let mut children: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| run.spawn_nth(*port, i))
        .collect();
    let progress = || ports.iter().map(|port| processed(&metrics(*port))).sum();
    let d = drain(what, &mut children, progress, n);
    // A rewrite's CPU is counted once its fork has ended.
    rewritten(&run);
    let redis_after = redis_cpu(&run);
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
    let per_million = |seconds: f64| seconds / n as f64 * 1e6;
    let result = Saturation {
        redis_cpu_seconds_per_million: per_million(redis_after.main - redis_before.main),
        redis_rewrite_cpu_seconds_per_million: per_million(
            redis_after.children - redis_before.children,
        ),
        redis_rewrites: redis_after.forks - redis_before.forks,
        outputs,
        ..Saturation::drained(model, n, d)
    };
    eprintln!(
        "  {what}: {:.0} messages/s, {:.1} CPU s per million, peak RSS {:.0} MiB; Redis {:.1} CPU s per million, and {:.1} in {} rewrites of its append-only file; broker {:.1} CPU s per million; the machine {:.2} cores busy, {:.2} in iowait",
        result.rate, result.cpu_seconds_per_million, result.peak_rss_mib, result.redis_cpu_seconds_per_million,
        result.redis_rewrite_cpu_seconds_per_million, result.redis_rewrites,
        result.broker_cpu_seconds_per_million, result.cores_busy, result.cores_iowait
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
            cores_busy: d.machine.cores_busy,
            cores_iowait: d.machine.cores_iowait,
            broker_cpu_seconds_per_million: d.machine.broker_cpu_seconds / n as f64 * 1e6,
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
    /// The whole machine between the first processed message and the last.
    pub machine: MachineUse,
}

/// Samples `children` every 200 ms until `progress` (messages processed so far) reaches `n`.
pub fn drain(what: &str, children: &mut [Proc], progress: impl Fn() -> f64, n: u64) -> Drained {
    let pids: Vec<u32> = children.iter().map(Proc::id).collect();
    let begun = Instant::now();
    let mut samples = Vec::new();
    let mut start: Option<(f64, f64)> = None;
    let mut machine_at: Option<Machine> = None;
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
            machine_at = Some(Machine::now());
        }
        if p >= n as f64 {
            return Drained {
                samples,
                start: start.expect("started"),
                end: (t, cpu),
                peak,
                machine: Machine::now().since(&machine_at.expect("started")),
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

/// Redis's CPU seconds so far (user + system, every node of the run's Redis): its own, and its
/// forks' (the append-only file's rewrites), with how many forks it made.
#[derive(Debug, Clone, Copy, Default)]
struct RedisCpu {
    main: f64,
    children: f64,
    forks: u64,
}

fn redis_nodes(run: &Run) -> Vec<String> {
    match &run.cluster {
        Some(nodes) => nodes.split(',').map(|n| format!("redis://{n}")).collect(),
        None => vec![crate::process::redis_url()],
    }
}

fn redis_info(url: &str, section: &str) -> Vec<(String, String)> {
    let info: String = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .and_then(|mut c| redis::cmd("INFO").arg(section).query(&mut c))
        .unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), v.trim().to_string()))
        })
        .collect()
}

fn redis_cpu(run: &Run) -> RedisCpu {
    let mut total = RedisCpu::default();
    for url in redis_nodes(run) {
        for (k, v) in redis_info(&url, "cpu")
            .into_iter()
            .chain(redis_info(&url, "stats"))
        {
            let seconds = v.parse::<f64>().unwrap_or(0.0);
            match k.as_str() {
                "used_cpu_sys" | "used_cpu_user" => total.main += seconds,
                "used_cpu_sys_children" | "used_cpu_user_children" => total.children += seconds,
                "total_forks" => total.forks += v.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Waits (up to a minute) until no node is rewriting its append-only file.
fn rewritten(run: &Run) {
    let busy = |url: &str| {
        redis_info(url, "persistence").iter().any(|(k, v)| {
            (k == "aof_rewrite_in_progress" || k == "aof_rewrite_scheduled") && v != "0"
        })
    };
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until && redis_nodes(run).iter().any(|u| busy(u)) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Rewrites Redis's append-only file before a run, so that every run starts from a compact file
/// whatever the runs before it wrote, and its own rewrites (Redis rewrites each time the file
/// doubles) fall at the same points of each run: left to chance they made the same binary drain
/// 19k or 59k msg/s (BENCHMARKS.md).
fn compact_aof(run: &Run) {
    rewritten(run);
    for url in redis_nodes(run) {
        let _ = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("BGREWRITEAOF").query::<String>(&mut c));
    }
    rewritten(run);
}
