//! What a running processor shows from outside: where a batch's time went (its /metrics), how
//! many messages it has processed, and its CPU time and memory (from /proc).

use std::collections::HashMap;

/// Where a batch's time went, from the processor's histograms: mean milliseconds per batch.
pub fn breakdown(m: &HashMap<String, f64>) -> String {
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

pub fn processed(m: &HashMap<String, f64>) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with("switchboard_messages_total"))
        .map(|(_, v)| v)
        .sum()
}

/// CPU seconds (user + system) and RSS, peak RSS (MiB) of a process, from /proc.
pub fn usage(pid: u32) -> (f64, f64, f64) {
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

/// What the whole machine spent over a measurement: every core's busy time (from /proc/stat) and
/// the local broker's CPU, so a run can say whether the machine, not the processor, was the limit.
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    at: std::time::Instant,
    /// CPU seconds all cores spent outside idle and iowait since boot, and in iowait.
    busy: f64,
    iowait: f64,
    /// The local broker's CPU seconds (user + system); 0 when no broker runs on this machine.
    broker: f64,
}

/// Over an interval: cores busy on average, and the broker's CPU seconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct MachineUse {
    pub cores_busy: f64,
    /// Cores idle with a disk read or write outstanding, on average.
    pub cores_iowait: f64,
    pub broker_cpu_seconds: f64,
}

impl Machine {
    pub fn now() -> Machine {
        let (busy, iowait) = busy_seconds();
        Machine {
            at: std::time::Instant::now(),
            busy,
            iowait,
            broker: broker_pid().map(|pid| usage(pid).0).unwrap_or(0.0),
        }
    }

    pub fn since(&self, earlier: &Machine) -> MachineUse {
        let seconds = (self.at - earlier.at).as_secs_f64().max(1e-3);
        MachineUse {
            cores_busy: (self.busy - earlier.busy) / seconds,
            cores_iowait: (self.iowait - earlier.iowait) / seconds,
            broker_cpu_seconds: self.broker - earlier.broker,
        }
    }
}

/// The machine's busy CPU seconds since boot (the "cpu" line of /proc/stat less idle and iowait),
/// and its iowait seconds.
fn busy_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is already in user).
    let total: f64 = ticks.iter().take(8).sum();
    let iowait = ticks.get(4).copied().unwrap_or(0.0);
    let idle = ticks.get(3).copied().unwrap_or(0.0) + iowait;
    ((total - idle) / 100.0, iowait / 100.0)
}

/// The pid of the Kafka broker on this machine (`deploy/local/kafka`'s), if one runs here.
fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == b"kafka.Kafka")
            .then_some(pid)
    })
}
