//! `switchboard run` against a real Kafka broker and a real Redis (`deploy/local/up`;
//! `KAFKA_BOOTSTRAP` and `REDIS_URL` override the local defaults). The core is the oracle: after
//! the run — plain, with the processor killed again and again, with two instances one of which
//! dies — the committed output topics and the state in Redis must equal what
//! `switchboard simulate` gives, every output exactly once.

mod kafka_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kafka_support::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use switchboard::core::event::Topic;

#[tokio::test(flavor = "multi_thread")]
async fn a_run_commits_exactly_what_the_core_computes() {
    let setup = Setup::create("plain").await;
    let trace = scaled_trace("plain", 3);
    setup.produce_trace(&trace);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = setup.spawn_with("1", &format!("127.0.0.1:{port}"));
    let expected = expected_results(&trace);
    wait_for_results(&setup, expected, Duration::from_secs(120));

    // Operations endpoints, while it runs.
    let (status, _) = http_get(port, "/healthz");
    assert_eq!(status, 200);
    let (status, _) = http_get(port, "/readyz");
    assert_eq!(status, 200, "ready while assigned and committing");
    // A batch is counted once its commit is back on the processor's loop, a moment after its
    // results are visible on the topic: wait for the count to settle, then require it exact.
    let count = |metrics: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("switchboard_messages_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    let settled = std::time::Instant::now();
    let (status, metrics) = loop {
        let (status, metrics) = http_get(port, "/metrics");
        if count(&metrics) >= 3 * 67 + 3 * 2 || settled.elapsed() > Duration::from_secs(10) {
            break (status, metrics);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 200);
    let counted = count(&metrics);
    assert_eq!(
        counted as usize,
        3 * 67 + 3 * 2,
        "every input and relay record is counted once: {metrics}"
    );
    for name in [
        "switchboard_batches_total",
        "switchboard_batch_records_bucket",
        "switchboard_apply_seconds_bucket",
        "switchboard_produce_seconds_bucket",
        "switchboard_redis_seconds_bucket{op=\"write\",le=\"0.0005\"}",
        "switchboard_rebalances_total",
        "switchboard_assigned_partitions 4",
        "switchboard_messages_total{outcome=\"dead_letter\",type=\"unreadable\"} 3",
        "switchboard_dead_letters_total 3",
        "switchboard_messages_total{outcome=\"relayed\",type=\"import.request\"} 3",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    terminate(child);
    assert_matches_oracle(&setup, &trace).await;

    // `inspect` prints what simulate's state says, with and without the log.
    let (_, state) = oracle(&trace);
    let id = "00010000000000000000d005";
    let inspect = |extra: &[&str]| {
        let args: Vec<&str> = ["inspect", id]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        serde_json::from_str::<serde_json::Value>(&setup.run_ok(&args).0).unwrap()
    };
    assert_eq!(inspect(&["--messages"]), state[id]);
    let mut without = state[id].clone();
    without.as_object_mut().unwrap().remove("messages");
    assert_eq!(inspect(&[]), without);
    let missing = setup
        .command(&["inspect", "00000000000000000000ffff"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_processor_at_any_point_loses_and_duplicates_nothing() {
    let setup = Setup::create("sigkill").await;
    let trace = scaled_trace("sigkill", 30);
    setup.produce_trace(&trace);
    let expected = expected_results(&trace);
    // Kill at different points of the run; each restart fences its predecessor's transaction.
    // A kill counts once the run has made progress since the last one, so that each lands
    // mid-stream, with a transaction and Redis writes likely in flight.
    let mut progress = vec![0usize];
    for delay_ms in [1500u64, 900, 1700, 1200] {
        let mut child = setup.spawn();
        let start = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(delay_ms.min(500)));
            let done = setup.committed(Topic::CommandResults).len();
            if (done > *progress.last().unwrap()
                && start.elapsed() >= Duration::from_millis(delay_ms))
                || start.elapsed() > Duration::from_secs(60)
            {
                progress.push(done);
                break;
            }
        }
        child.kill();
    }
    eprintln!("committed results at each SIGKILL: {progress:?} of {expected}");
    assert!(
        progress
            .windows(2)
            .filter(|w| w[1] > w[0] && w[1] < expected)
            .count()
            >= 2,
        "at least two kills must land mid-stream: {progress:?} of {expected}"
    );
    let child = setup.spawn();
    wait_for_results(&setup, expected, Duration::from_secs(180));
    terminate(child);
    assert_matches_oracle(&setup, &trace).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_the_group_and_one_dies_mid_stream() {
    let setup = Setup::create("pair").await;
    let trace = scaled_trace("pair", 30);
    setup.produce_trace(&trace);
    let expected = expected_results(&trace);
    let a = setup.spawn_instance("a");
    let mut b = setup.spawn_instance("b");
    let at_kill = setup.wait_for_progress(expected / 3, Duration::from_secs(120));
    b.kill();
    eprintln!("instance b killed with {at_kill} of {expected} results committed");
    assert!(at_kill < expected, "the kill must land mid-stream");
    wait_for_results(&setup, expected, Duration::from_secs(180));
    terminate(a);
    assert_matches_oracle(&setup, &trace).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_records_go_to_the_dead_letter_topic_while_the_rest_flows() {
    let setup = Setup::create_with("poison", &[("max.message.bytes", "4194304")]).await;
    let producer: BaseProducer = producer_config()
        .set("message.max.bytes", "4194304")
        .create()
        .unwrap();
    let input = setup.topic(Topic::Input);
    let conversation = "00000000000000000000d0aa";
    let message = |id: &str, text: &str, extra: &str| {
        format!(
            r#"{{"id":"{id}","conversation":"{conversation}","type":"chat","role":"contact","text":"{text}","createdAt":"2024-05-01T10:00:00Z"{extra}}}"#
        )
    };
    let first = message(
        "0000000000000000000000a1",
        "hello",
        r#","organization":"0000000000000000000000a2""#,
    );
    let good = message("0000000000000000000000a2", "still here", "");
    let big = message("0000000000000000000000a3", &"x".repeat(2 << 20), "");
    let send = |key: Option<&str>, payload: &str| {
        let mut r = BaseRecord::<str, str>::to(&input).payload(payload);
        if let Some(k) = key {
            r = r.key(k);
        }
        producer.send(r).map_err(|(e, _)| e).unwrap();
    };
    send(Some(conversation), &first);
    send(Some(conversation), "{broken json");
    send(None, &good);
    send(Some("00000000000000000000d0bb"), &good);
    send(Some(conversation), &big);
    send(Some(conversation), &good);
    producer.flush(Duration::from_secs(30)).unwrap();

    let child = setup.spawn();
    let start = Instant::now();
    while setup.committed(Topic::DeadLetters).len() < 4
        || setup.committed(Topic::CommandResults).len() < 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "poison records did not all arrive"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    terminate(child);
    let mut reasons: Vec<String> = setup
        .committed(Topic::DeadLetters)
        .iter()
        .map(|(_, v)| v["data"]["reason"].as_str().unwrap().to_string())
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["key_mismatch", "no_key", "not_json", "too_large"]);
    let results: Vec<(String, String)> = setup
        .committed(Topic::CommandResults)
        .iter()
        .map(|(_, v)| {
            (
                v["data"]["message"].as_str().unwrap().to_string(),
                v["data"]["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            (
                "0000000000000000000000a1".to_string(),
                "applied".to_string()
            ),
            (
                "0000000000000000000000a2".to_string(),
                "applied".to_string()
            )
        ],
        "the stream goes on past the poison"
    );
}

#[test]
fn run_refuses_to_start_without_a_directory_and_load_refuses_a_bad_file() {
    let setup = Setup {
        name: format!("nodir-{}", std::process::id()),
    };
    let out = setup.command(&["run"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("switchboard directory load"), "{stderr}");

    let bad = std::env::temp_dir().join(format!("sb-bad-directory-{}.yaml", std::process::id()));
    std::fs::write(
        &bad,
        "organizations:\n  - id: 0000000000000000000000a1\nusers:\n  - id: not-an-id\n    organization: 0000000000000000000000a1\n",
    )
    .unwrap();
    let out = setup
        .command(&["directory", "load", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not-an-id"), "{stderr}");
    // Still nothing loaded: run still refuses.
    assert!(!setup.command(&["run"]).output().unwrap().status.success());
    let _ = std::fs::remove_file(bad);

    let loaded = setup.load_directory(DIR);
    assert!(loaded.contains("version 1"), "{loaded}");
}

/// `switchboard_assigned_partitions` of the instance serving /metrics on `port` (none while
/// it starts and is not listening yet).
fn assigned(port: u16) -> Option<i64> {
    metrics(port)
        .get("switchboard_assigned_partitions")
        .map(|n| *n as i64)
}

/// Notes the partition each delivered record landed on, by key.
#[derive(Default)]
struct Deliveries(std::sync::Mutex<HashMap<String, i32>>);

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        use rdkafka::message::Message as _;
        let m = result.as_ref().expect("delivered");
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        self.0.lock().unwrap().insert(key, m.partition());
    }
}

/// Produces lines keyed by conversation; returns each conversation's partition.
fn produce_lines(setup: &Setup, lines: &[String]) -> HashMap<String, i32> {
    let producer: BaseProducer<Deliveries> = producer_config()
        .create_with_context(Deliveries::default())
        .unwrap();
    let input = setup.topic(Topic::Input);
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = v["conversation"].as_str().unwrap();
        producer
            .send(BaseRecord::to(&input).key(key).payload(line))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let partitions = producer.context().0.lock().unwrap().clone();
    partitions
}

/// The input partitions the instance serving /metrics on `port` has lag series for: those it
/// holds, once its statistics have come (every 5 s).
fn held(port: u16, input: &str) -> std::collections::BTreeSet<i32> {
    metrics(port)
        .keys()
        .filter(|k| k.starts_with("switchboard_consumer_lag{"))
        .filter(|k| k.contains(&format!("topic=\"{input}\"")))
        .filter_map(|k| {
            k.split("partition=\"")
                .nth(1)?
                .split('"')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// SPEC: `/import` between conversations on different partitions and instances goes through
/// the input-topic relay (request to the origin's owner, transfer back to the target's), exactly
/// once. Two instances split the partitions, and only then is traffic produced, so that each pair
/// whose conversations fall to different instances crosses them.
#[tokio::test(flavor = "multi_thread")]
async fn import_between_conversations_held_by_different_instances() {
    let setup = Setup::create("import").await;
    let (pa, pb) = (free_port(), free_port());
    let a = setup.spawn_with("a", &format!("127.0.0.1:{pa}"));
    let b = setup.spawn_with("b", &format!("127.0.0.1:{pb}"));
    let start = Instant::now();
    let half = Some(i64::from(PARTITIONS / 2));
    let input = setup.topic(Topic::Input);
    let a_holds = loop {
        let (ha, hb) = (held(pa, &input), held(pb, &input));
        if assigned(pa) == half && assigned(pb) == half && ha.len() == 2 && hb.len() == 2 {
            break ha;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "each instance should hold half the partitions: a {ha:?}, b {hb:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };

    // The example's d004 (origin) and d005 (target, whose agent runs `/import d004`), 24 times.
    let trace = std::fs::read_to_string(TRACE).unwrap();
    let pick = |conversation: &str, import: bool| -> Vec<&str> {
        trace
            .lines()
            .filter(|l| l.contains(&format!("\"conversation\": \"{conversation}\"")))
            .filter(|l| l.contains("/import") == import)
            .collect()
    };
    let (d004, d005) = ("00000000000000000000d004", "00000000000000000000d005");
    let before: Vec<&str> = pick(d004, false)
        .into_iter()
        .take(2)
        .chain(pick(d005, false))
        .collect();
    let imports = pick(d005, true);
    assert_eq!((before.len(), imports.len()), (3, 1));
    let copies = 100..124u32;
    let phase1: Vec<String> = copies
        .clone()
        .flat_map(|c| before.iter().map(move |l| remap(l, c)))
        .collect();
    let phase2: Vec<String> = copies
        .clone()
        .flat_map(|c| imports.iter().map(move |l| remap(l, c)))
        .collect();
    let partitions = produce_lines(&setup, &phase1);
    let crossing = copies
        .clone()
        .filter(|c| {
            let on_a = |id: &str| a_holds.contains(&partitions[&remap(id, *c)]);
            on_a(d004) != on_a(d005)
        })
        .count();
    assert!(crossing >= 3, "only {crossing} of 24 pairs cross instances");
    wait_for_results(&setup, phase1.len(), Duration::from_secs(60));
    produce_lines(&setup, &phase2);

    let path = std::env::temp_dir().join(format!("sb-import-{}.jsonl", std::process::id()));
    std::fs::write(&path, [phase1, phase2].concat().join("\n") + "\n").unwrap();
    wait_for_results(&setup, expected_results(&path), Duration::from_secs(90));
    assert_eq!(
        (assigned(pa), assigned(pb)),
        (half, half),
        "no rebalance moved the partitions meanwhile"
    );
    terminate(a);
    terminate(b);
    assert_matches_oracle(&setup, &path).await;
    eprintln!("{crossing} of 24 imports crossed instances");
}

fn signal(proc: &Proc, sig: &str) {
    assert!(proc.signal(sig), "kill {sig} {}", proc.id());
}

/// A zombie: instance b is frozen (SIGSTOP) mid-stream, past its session timeout, so that its
/// partitions move to a; then it wakes up (SIGCONT) believing it still owns them, with whatever
/// batch and transaction it had open. Its Redis writes must be fenced, its transaction must not
/// commit, and the committed result must still be exactly the core's.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_instance_that_wakes_up_after_losing_its_partitions_changes_nothing() {
    let setup = Setup::create("zombie").await;
    let trace = scaled_trace("zombie", 30);
    setup.produce_trace(&trace);
    let expected = expected_results(&trace);
    let a = setup.spawn_instance("a");
    let b = setup.spawn_instance("b");
    let at_freeze = setup.wait_for_progress(expected / 4, Duration::from_secs(120));
    signal(&b, "-STOP");
    // Session timeout 6 s: a takes b's partitions and carries on while b sleeps.
    let start = Instant::now();
    let moved = loop {
        let n = setup.committed(Topic::CommandResults).len();
        if n >= expected || start.elapsed() > Duration::from_secs(20) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    signal(&b, "-CONT");
    eprintln!("b frozen at {at_freeze} of {expected} results; {moved} committed when it woke up");
    assert!(at_freeze < expected, "the freeze must land mid-stream");
    wait_for_results(&setup, expected, Duration::from_secs(180));
    // Give the woken instance time to try whatever it had in hand.
    std::thread::sleep(Duration::from_secs(3));
    terminate(a);
    terminate(b);
    assert_matches_oracle(&setup, &trace).await;
}
