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
