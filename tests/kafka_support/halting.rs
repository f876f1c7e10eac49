//! What the tests of halted partitions share: traces cut in phases, and waiting for a halt.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::process::{http_get, metrics, try_http_get};

/// Lines `from..to` of `trace`, as a trace file of their own.
pub fn slice(trace: &std::path::Path, from: usize, to: usize, name: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(trace).unwrap();
    let lines: Vec<&str> = text.lines().skip(from).take(to - from).collect();
    let path = std::env::temp_dir().join(format!("{name}-{}.jsonl", std::process::id()));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

pub fn free_http_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the instance reports halted partitions on `/metrics`; returns them from
/// `/readyz`, whose reasons must say `why`.
pub fn halted_partitions(port: u16, why: &str, deadline: Duration) -> BTreeSet<i32> {
    let start = Instant::now();
    loop {
        let halted = metrics(port)
            .get("switchboard_halted_partitions")
            .copied()
            .unwrap_or(0.0);
        if halted > 0.0 {
            // Give the batch in hand time to meet the other partitions too.
            std::thread::sleep(Duration::from_secs(3));
            let (_, body) = http_get(port, "/readyz");
            assert!(body.contains(why), "the reason says what happened: {body}");
            return listed_halted(&body);
        }
        assert!(
            start.elapsed() < deadline,
            "no partition halted after {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every key under `prefix` on the Redis at `url` (one node, even of a Cluster), dumped: a
/// backup of it as it is now.
pub fn backup(url: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut conn)
        .unwrap();
    keys.into_iter()
        .map(|k| {
            let dump: Vec<u8> = redis::cmd("DUMP").arg(&k).query(&mut conn).unwrap();
            (k, dump)
        })
        .collect()
}

/// That Redis put back as `backup` had it: what was written to it since is lost.
pub fn restore(url: &str, prefix: &str, backup: &[(String, Vec<u8>)]) {
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut conn)
        .unwrap();
    // One key per DEL: a Cluster node refuses keys of several slots in one command.
    for k in keys {
        let _: () = redis::cmd("DEL").arg(&k).query(&mut conn).unwrap();
    }
    for (k, dump) in backup {
        let _: () = redis::cmd("RESTORE")
            .arg(k)
            .arg(0)
            .arg(dump.as_slice())
            .arg("REPLACE")
            .query(&mut conn)
            .unwrap();
    }
}

/// The partitions a `/readyz` body lists as halted.
fn listed_halted(body: &str) -> BTreeSet<i32> {
    body.lines()
        .filter_map(|l| l.strip_prefix("halted partition "))
        .map(|l| l.split(':').next().unwrap().parse().unwrap())
        .collect()
}

/// The partitions `/readyz` lists as halted right now (none while it is not up).
pub fn halted_now(port: u16) -> BTreeSet<i32> {
    try_http_get(port, "/readyz")
        .map(|(_, body)| listed_halted(&body))
        .unwrap_or_default()
}
