//! Restart (`--restart`): an instance working through a preloaded topic is stopped (SIGTERM)
//! and started again under the same name, as an orchestrator's rolling restart does; measured is
//! the time from starting the new process to its first committed batch (target: ≤ 3 s). The same
//! name is the same transactional ID and `group.instance.id`, so the group gives the partitions
//! back without waiting for a rebalance.

use std::time::{Duration, Instant};

use crate::probe::processed;
use crate::process::{free_port, metrics};
use crate::run::Run;
use crate::scale::median;

/// Committed batches of the processor on `port`, 0 while it is not up.
fn batches(port: u16) -> f64 {
    metrics(port)
        .get("switchboard_batches_total")
        .copied()
        .unwrap_or(0.0)
}

/// Waits until `done` holds, or panics with `what` after `limit`; how long it took.
fn wait(what: &str, limit: Duration, done: impl Fn() -> bool) -> Duration {
    let began = Instant::now();
    while !done() {
        assert!(began.elapsed() < limit, "{what} after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    began.elapsed()
}

pub fn restart(io: &tokio::runtime::Runtime, restarts: usize) {
    // Enough work that the topic is not drained before the last restart.
    let model = crate::model(20_000, Some(600_000), 1);
    let run = Run::new("restart");
    run.create_topics(io);
    run.load_directory(&model);
    let n = run.preload(&model);
    eprintln!("restart: {restarts} restarts of one instance working through {n} messages");
    let mut port = free_port();
    let mut child = run.spawn(port);
    let mut took = Vec::new();
    for i in 0..restarts {
        wait("no message processed", Duration::from_secs(60), || {
            processed(&metrics(port)) > 0.0
        });
        // Mid-work, not at its first batch.
        std::thread::sleep(Duration::from_millis(500));
        let _ = child.terminate();
        port = free_port();
        let began = Instant::now();
        child = run.spawn(port);
        wait("no batch committed", Duration::from_secs(60), || {
            batches(port) >= 1.0
        });
        let t = began.elapsed().as_secs_f64();
        eprintln!("restart {i}: first commit {t:.2} s after the process started");
        took.push(t);
    }
    let _ = child.terminate();
    let worst = took.iter().copied().fold(0.0, f64::max);
    let m = median(took);
    eprintln!(
        "restart to first commit: median {m:.2} s, worst {worst:.2} s; target ≤ 3 s: {}",
        if worst <= 3.0 { "met" } else { "not met" }
    );
}
