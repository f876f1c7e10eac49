//! Network faults between `switchboard run` and its broker and Redis, put on their connections
//! through Toxiproxy (`deploy/local/toxiproxy`; `scripts/faults` starts everything and runs this
//! with the kill, freeze and restart cases). The processors connect through the proxies; the
//! test itself (topics, the trace, reading back) goes to the servers directly, so a fault hits
//! only the processors. Each case runs the trace to the end and judges it against
//! `switchboard simulate` as tests/kafka.rs does: every output exactly once and in order per
//! conversation, one result per message, and Redis's state equal to simulate's; and no
//! instance may exit before it is told to stop, nor fail to stop cleanly.
//!
//! Long cases are `#[ignore]`d, so that `cargo test` runs a representative subset;
//! `scripts/faults` runs them all (`--include-ignored`). docs/faults.md describes each case.

mod kafka_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kafka_support::toxiproxy::{self, Stream, KAFKA, REDIS};
use kafka_support::*;

/// Which of an instance's connections go through the proxies.
#[derive(Clone, Copy)]
struct Via {
    kafka: bool,
    redis: bool,
}

const BOTH: Via = Via {
    kafka: true,
    redis: true,
};

struct Instance {
    name: String,
    proc: Proc,
    log: PathBuf,
    http: u16,
}

/// The proxies are shared: cases take turns, however many test threads cargo runs.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One case: its topics, trace and instances, and the clock the report is timed on.
struct Case {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    setup: Setup,
    trace: PathBuf,
    expected: usize,
    instances: Vec<Instance>,
    /// Settings every instance of the case gets, over the ones `Setup::command` gives.
    env: Vec<(&'static str, String)>,
    started: Instant,
}

impl Case {
    /// Proxies reset (no toxics left by a case that failed), the broker checked to keep clients
    /// on the proxy, topics created and `copies` of the example trace produced.
    async fn new(name: &str, copies: u32, env: &[(&'static str, &str)]) -> Case {
        let turn = TURN.lock().await;
        toxiproxy::reset();
        toxiproxy::check_kafka_listener();
        let setup = Setup::create(name).await;
        let trace = scaled_trace(name, copies);
        setup.produce_trace(&trace);
        let expected = expected_results(&trace);
        Case {
            _turn: turn,
            setup,
            trace,
            expected,
            instances: Vec::new(),
            env: env.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            started: Instant::now(),
        }
    }

    /// Starts instance `name`, its log in a file of its own (read back in the report).
    fn spawn(&mut self, name: &str, via: Via) {
        let http = free_port();
        let mut cmd = self
            .setup
            .instance_command(name, &format!("127.0.0.1:{http}"));
        if via.kafka {
            cmd.env("SWITCHBOARD_KAFKA__BROKERS", toxiproxy::kafka_proxy());
        }
        if via.redis {
            cmd.env("SWITCHBOARD_REDIS__URL", toxiproxy::redis_proxy_url());
        }
        // Info: rebalances and recoveries are logged there, and the report counts them.
        cmd.env("SWITCHBOARD_LOG__LEVEL", "info");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let log = std::env::temp_dir().join(format!("sb-faults-{}-{name}.log", self.setup.name));
        cmd.stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        self.instances.push(Instance {
            name: name.to_string(),
            proc: Proc::spawn(&mut cmd),
            log,
            http,
        });
    }

    fn results(&self) -> usize {
        self.setup
            .committed(switchboard::core::event::Topic::CommandResults)
            .len()
    }

    /// Panics, with its log, if an instance has exited: none may before it is told to stop.
    fn all_alive(&mut self) {
        for i in &mut self.instances {
            if let Some(status) = i.proc.try_wait() {
                panic!(
                    "instance {} exited ({status}) {:.1?} into the case; its log:\n{}",
                    i.name,
                    self.started.elapsed(),
                    tail(&i.log, 60)
                );
            }
        }
    }

    /// Waits until `n` results are committed, every instance staying alive; the count reached.
    fn wait_for(&mut self, n: usize, deadline: Duration) -> usize {
        let start = Instant::now();
        loop {
            self.all_alive();
            let done = self.results();
            if done >= n {
                return done;
            }
            assert!(
                start.elapsed() < deadline,
                "only {done} of {n} results after {deadline:?}{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits `d`, every instance staying alive; the results committed meanwhile.
    fn hold(&mut self, d: Duration) -> usize {
        let start = Instant::now();
        while start.elapsed() < d {
            self.all_alive();
            std::thread::sleep(Duration::from_millis(300).min(d));
        }
        self.results()
    }

    /// Waits until a quarter of the results are committed, so that the fault lands mid-stream.
    fn mid_stream(&mut self) -> usize {
        let at = self.wait_for(self.expected / 4, Duration::from_secs(180));
        assert!(
            at < self.expected,
            "the fault must land mid-stream: {at} of {} results already",
            self.expected
        );
        at
    }

    /// The partitions instance `name` holds (0 while it starts).
    fn assigned(&self, name: &str) -> i64 {
        let i = self.instances.iter().find(|i| i.name == name).unwrap();
        metrics(i.http)
            .get("switchboard_assigned_partitions")
            .map_or(0, |n| *n as i64)
    }

    /// Panics unless some batch failed: the fault just put on must have hit work in flight, or
    /// the case proved nothing.
    fn assert_aborted(&self, fault: &str) {
        let aborted: f64 = self
            .instances
            .iter()
            .map(|i| {
                metrics(i.http)
                    .get("switchboard_batches_aborted_total")
                    .copied()
                    .unwrap_or(0.0)
            })
            .sum();
        assert!(
            aborted > 0.0,
            "{fault} made no batch fail: it missed the work in flight{}",
            self.logs()
        );
    }

    /// Every instance's log, for a failure message.
    fn logs(&self) -> String {
        self.instances
            .iter()
            .map(|i| format!("\n--- instance {} ---\n{}", i.name, tail(&i.log, 40)))
            .collect()
    }

    /// Runs the case to its end and judges it: all results, every instance alive until SIGTERM
    /// and then exiting 0, and the oracle. Prints what happened, for docs/architecture.md.
    async fn finish(mut self, what: &str) {
        let expected = self.expected;
        self.wait_for(expected, Duration::from_secs(300));
        let drained = self.started.elapsed();
        // Whatever an instance still had in hand (a fenced transaction, a stale write) has
        // time to go wrong before the judgement.
        self.hold(Duration::from_secs(3));
        let mut counters = BTreeMap::new();
        for i in &self.instances {
            let m = metrics(i.http);
            for name in [
                "switchboard_fencings_total",
                "switchboard_batches_aborted_total",
                "switchboard_rebalances_total",
            ] {
                *counters.entry(name).or_insert(0.0) += m.get(name).copied().unwrap_or(0.0);
            }
        }
        let logs: Vec<(String, PathBuf)> = self
            .instances
            .iter()
            .map(|i| (i.name.clone(), i.log.clone()))
            .collect();
        for i in self.instances.drain(..) {
            let status = i.proc.terminate().expect("SIGTERM sent");
            assert!(
                status.success(),
                "instance {} did not stop cleanly on SIGTERM ({status}); its log:\n{}",
                i.name,
                tail(&i.log, 60)
            );
        }
        assert_matches_oracle(&self.setup, &self.trace).await;
        eprintln!(
            "FAULT CASE {what}: exact; {expected} results, drained {drained:.1?} after the trace was produced; {}",
            counters
                .iter()
                .map(|(k, v)| format!("{}={v}", k.trim_start_matches("switchboard_")))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (name, log) in logs {
            eprintln!("  instance {name}: {}", warnings(&log));
            if std::env::var_os("FAULTS_KEEP_LOGS").is_none() {
                let _ = std::fs::remove_file(log);
            }
        }
    }
}

/// The last `n` lines of a log, without colour codes.
fn tail(log: &Path, n: usize) -> String {
    let text = plain(&std::fs::read_to_string(log).unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // A colour code: ESC [ … m.
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A log's warnings and errors, each distinct message once with its count.
fn warnings(log: &Path) -> String {
    let text = plain(&std::fs::read_to_string(log).unwrap_or_default());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut librdkafka = 0;
    for line in text.lines() {
        let Some(at) = line.find(" WARN ").or_else(|| line.find(" ERROR ")) else {
            continue;
        };
        // librdkafka reports every refused connection and timed-out request: counted only, but
        // for a lost group session, which says a rebalance came from the fault.
        if line.contains("librdkafka")
            && !line.contains("switchboard::")
            && !line.contains("SESSTMOUT")
        {
            librdkafka += 1;
            continue;
        }
        // From the level on, without the timestamp; long errors cut.
        let message: String = line[at + 1..].chars().take(400).collect();
        *seen.entry(message).or_default() += 1;
    }
    let own: String = seen
        .iter()
        .map(|(m, n)| format!("\n    {n} × {m}"))
        .collect();
    format!("{librdkafka} librdkafka warnings and errors{own}")
}

/// How the broker goes away.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// A network partition: connections stay open, nothing gets through until it ends, then
    /// what was held is delivered.
    Stall,
    /// Connections closed and refused: clients notice at once, and back off reconnecting.
    Cut,
}

/// The broker goes away for `secs` under two instances, longer than the transaction timeout
/// (5 s) and the session timeout (6 s): the coordinator aborts their transactions and drops them
/// from the group, they are fenced or time out when they are heard again, and must rejoin,
/// replay and end exact, neither exiting.
async fn broker_outage(name: &str, outage: Outage, secs: u64, copies: u32) {
    let mut case = Case::new(
        name,
        copies,
        &[("SWITCHBOARD_KAFKA__TRANSACTION_TIMEOUT_MS", "5000")],
    )
    .await;
    let via = Via {
        kafka: true,
        redis: false,
    };
    case.spawn("a", via);
    case.spawn("b", via);
    let at = case.mid_stream();
    match outage {
        Outage::Stall => KAFKA.stall(),
        Outage::Cut => KAFKA.set_enabled(false),
    }
    let during = case.hold(Duration::from_secs(secs));
    match outage {
        Outage::Stall => KAFKA.unstall(),
        Outage::Cut => KAFKA.set_enabled(true),
    }
    eprintln!(
        "broker {outage:?} for {secs} s at {at} of {} results ({during} when it ended)",
        case.expected
    );
    case.finish(&format!(
        "broker {outage:?} {secs} s (transaction timeout 5 s, session 6 s), 2 instances"
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_cut_longer_than_the_transaction_timeout() {
    broker_outage("cut", Outage::Cut, 15, 20).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "long (about a minute): scripts/faults runs it"]
async fn a_broker_stall_longer_than_the_transaction_timeout() {
    broker_outage("stall", Outage::Stall, 20, 30).await;
}

/// Past the 30 s every call to the broker may take (begin, commit, abort, the rewind's
/// committed offsets): the recovery steps themselves time out, again and again.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "long (about 2 minutes): scripts/faults runs it"]
async fn a_broker_cut_longer_than_a_call_timeout() {
    broker_outage("longcut", Outage::Cut, 45, 30).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "long (about 2 minutes): scripts/faults runs it"]
async fn a_broker_stall_longer_than_a_call_timeout() {
    broker_outage("longstall", Outage::Stall, 45, 30).await;
}

/// Only instance b loses the broker (stalled, as by a partition between its host and the
/// broker), past its session and transaction timeouts, while a carries on with every partition:
/// when b is heard again its transaction was aborted and its partitions are a's, and it must
/// get back without disturbing a, and without exiting.
#[tokio::test(flavor = "multi_thread")]
async fn one_instance_partitioned_from_the_broker_while_the_other_runs_on() {
    let mut case = Case::new(
        "partitioned",
        60,
        &[("SWITCHBOARD_KAFKA__TRANSACTION_TIMEOUT_MS", "5000")],
    )
    .await;
    // Alone, a would drain the rest of the trace before b is heard again; 20 ms on each Redis
    // reply keeps it busy.
    REDIS.latency("pace", Stream::Downstream, 20);
    case.spawn(
        "a",
        Via {
            kafka: false,
            redis: true,
        },
    );
    case.spawn("b", BOTH);
    let at = case.mid_stream();
    KAFKA.stall();
    let during = case.hold(Duration::from_secs(10));
    KAFKA.unstall();
    assert!(
        during < case.expected,
        "a must still be busy when b is heard again: {during} of {}",
        case.expected
    );
    eprintln!(
        "b's broker stalled for 10 s at {at} of {} results ({during} when it ended)",
        case.expected
    );
    case.finish("b alone partitioned from the broker 10 s (transaction timeout 5 s, session 6 s)")
        .await;
}

/// SIGTERM while the broker is away: the processor cannot commit nor get back to its last
/// commit, and must still stop as a stop is documented to (status 0), within the time its
/// broker calls may take; a new instance then finishes the run exact. (It once exited with
/// status 1 here, with the error of the recovery step that failed after the signal.)
#[tokio::test(flavor = "multi_thread")]
#[ignore = "long (about 90 s): scripts/faults runs it"]
async fn a_stop_asked_during_a_broker_outage_ends_cleanly() {
    let mut case = Case::new(
        "stopstall",
        30,
        &[("SWITCHBOARD_KAFKA__TRANSACTION_TIMEOUT_MS", "5000")],
    )
    .await;
    let via = Via {
        kafka: true,
        redis: false,
    };
    case.spawn("a", via);
    let at = case.mid_stream();
    KAFKA.stall();
    case.hold(Duration::from_secs(8));
    let a = case.instances.pop().unwrap();
    let asked = Instant::now();
    let status = a.proc.terminate().expect("SIGTERM sent");
    let took = asked.elapsed();
    KAFKA.unstall();
    assert!(
        status.success(),
        "SIGTERM during the outage must end the processor cleanly, got {status} after {took:.1?}; its log:\n{}",
        tail(&a.log, 40)
    );
    eprintln!(
        "stalled the broker at {at} of {} results; SIGTERM 8 s later ended the processor with {status} after {took:.1?}",
        case.expected
    );
    eprintln!("  stopped instance: {}", warnings(&a.log));
    case.spawn("a", via);
    case.finish("SIGTERM during a broker stall, then a new instance")
        .await;
}

/// Redis slow (200 ms on every reply) for a while, then cut for 4 s, under two instances: batches
/// fail on the cut, abort and replay from the last commit.
#[tokio::test(flavor = "multi_thread")]
async fn redis_latency_then_a_redis_cut() {
    let mut case = Case::new("redis", 30, &[]).await;
    case.spawn("a", BOTH);
    case.spawn("b", BOTH);
    let at = case.mid_stream();
    REDIS.latency("slow", Stream::Downstream, 200);
    let slow = case.hold(Duration::from_secs(10));
    REDIS.remove("slow");
    assert!(
        slow > at,
        "the processors must go on, if slowly, with Redis 200 ms away: {at} → {slow}"
    );
    let cut_at = slow;
    assert!(cut_at < case.expected, "the cut must land mid-stream");
    REDIS.set_enabled(false);
    case.hold(Duration::from_secs(4));
    REDIS.set_enabled(true);
    case.assert_aborted("the Redis cut");
    eprintln!(
        "Redis +200 ms from {at} to {slow} results, cut 4 s at {cut_at} of {}",
        case.expected
    );
    case.finish("Redis +200 ms for 10 s, then cut 4 s, 2 instances")
        .await;
}

/// The broker slow (300 ms on every request: produce, send-offsets, commit) for a while, then cut
/// for 3 s, less than the session timeout, under one instance: no rebalance is needed, and the
/// transaction in flight fails or resumes.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_latency_then_a_short_kafka_cut() {
    let mut case = Case::new("kafka", 30, &[]).await;
    case.spawn(
        "a",
        Via {
            kafka: true,
            redis: false,
        },
    );
    let at = case.mid_stream();
    KAFKA.latency("slow", Stream::Upstream, 300);
    let slow = case.hold(Duration::from_secs(10));
    KAFKA.remove("slow");
    assert!(
        slow > at,
        "the processor must go on, if slowly, with the broker 300 ms away: {at} → {slow}"
    );
    let cut_at = slow;
    assert!(cut_at < case.expected, "the cut must land mid-stream");
    KAFKA.set_enabled(false);
    case.hold(Duration::from_secs(3));
    KAFKA.set_enabled(true);
    eprintln!(
        "broker +300 ms from {at} to {slow} results, cut 3 s at {cut_at} of {}",
        case.expected
    );
    case.finish("broker +300 ms for 10 s, then cut 3 s, 1 instance")
        .await;
}

/// A slow commit across a rebalance: instance a's broker connection gets 700 ms of latency each
/// way (a commit's few round trips then take seconds; more, and a's heartbeats outlast its
/// session and it is simply dropped from the group) while instance b (connected directly) joins,
/// so that a is mid-commit when it is asked to give partitions up; it must finish (or fail) that
/// commit before they move, and b must start exactly where a's last commit ended.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_commit_across_a_rebalance() {
    let mut case = Case::new("slowcommit", 30, &[]).await;
    case.spawn(
        "a",
        Via {
            kafka: true,
            redis: false,
        },
    );
    let at = case.mid_stream();
    KAFKA.latency("slow-up", Stream::Upstream, 700);
    KAFKA.latency("slow-down", Stream::Downstream, 700);
    let joining = Instant::now();
    case.spawn(
        "b",
        Via {
            kafka: false,
            redis: false,
        },
    );
    while case.assigned("b") == 0 {
        assert!(
            joining.elapsed() < Duration::from_secs(90),
            "b got no partitions{}",
            case.logs()
        );
        case.hold(Duration::from_millis(300));
    }
    let moved = case.results();
    let took = joining.elapsed();
    assert!(
        moved < case.expected,
        "the rebalance must land mid-stream: {moved} of {}",
        case.expected
    );
    case.hold(Duration::from_secs(5));
    KAFKA.remove("slow-up");
    KAFKA.remove("slow-down");
    eprintln!(
        "a's broker +700 ms each way from {at} of {} results; b held partitions {took:.1?} after it started, at {moved}",
        case.expected
    );
    case.finish("a's broker +700 ms each way while b joins")
        .await;
}
