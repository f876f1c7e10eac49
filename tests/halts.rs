//! Redis losing writes that Kafka committed (review F1, fault case 1), on the real broker and
//! Redis: the partitions it concerns halt loudly (log, `/metrics`, `/readyz`) instead of
//! diverging, and `switchboard rebuild` brings them back to exactly what `simulate` computes.

mod kafka_support;

use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use switchboard::core::event::Topic;

use kafka_support::*;

#[tokio::test(flavor = "multi_thread")]
async fn redis_restored_from_an_old_backup_halts_its_partitions_until_rebuilt() {
    let setup = Setup::create("lost").await;
    let prefix = format!("sbk:{}", setup.name);
    let trace = scaled_trace("lost", 3);
    let total = std::fs::read_to_string(&trace).unwrap().lines().count();
    let (a, b) = (total / 3, 2 * total / 3);
    // What each phase produces, and what the stream holds after it.
    let phase = |from, to, n| slice(&trace, from, to, &format!("lost-phase{n}"));
    let upto = |to, n| slice(&trace, 0, to, &format!("lost-upto{n}"));

    // Phase 1, then a backup; phase 2, then the backup restored: Redis lost phase 2, which
    // Kafka committed.
    setup.produce_trace(&phase(0, a, 1));
    let child = setup.spawn();
    wait_for_results(
        &setup,
        expected_results(&upto(a, 1)),
        Duration::from_secs(120),
    );
    terminate(child);
    let old = backup(&redis_url(), &prefix);
    setup.produce_trace(&phase(a, b, 2));
    let child = setup.spawn();
    wait_for_results(
        &setup,
        expected_results(&upto(b, 2)),
        Duration::from_secs(120),
    );
    terminate(child);
    restore(&redis_url(), &prefix, &old);

    // Phase 3 arrives; the instance halts what Redis is behind on instead of applying it.
    setup.produce_trace(&phase(b, total, 3));
    let port = free_http_port();
    let child = setup.spawn_with("1", &format!("127.0.0.1:{port}"));
    let halted = halted_partitions(port, "Redis lost writes", Duration::from_secs(90));
    assert!(!halted.is_empty());
    let results_while_halted = setup.committed(Topic::CommandResults).len();
    terminate(child);

    // The way out: rebuild each halted partition from the topic, then run again.
    for p in &halted {
        let (out, _) = setup.run_ok(&["rebuild", "--partition", &p.to_string()]);
        assert!(out.contains("records applied"), "{out}");
    }
    let child = setup.spawn();
    wait_for_results(&setup, expected_results(&trace), Duration::from_secs(120));
    terminate(child);
    assert!(results_while_halted < expected_results(&trace));
    assert_matches_oracle(&setup, &trace).await;
}

/// The group's committed offsets on the input topic, partition by partition.
fn group_offsets(setup: &Setup) -> Vec<(i32, i64)> {
    let consumer = consumer(&format!("sb-{}", setup.name));
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(&setup.topic(Topic::Input), p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => (e.partition(), o),
            other => panic!("partition {} has no commit: {other:?}", e.partition()),
        })
        .collect()
}

/// Commits `offsets` for the group, as `kafka-consumer-groups --reset-offsets` does while no
/// member is running. A stopped instance stays a member (static membership) until its session
/// lapses, and the broker takes offsets from outside the group only once it is empty.
fn set_group_offsets(setup: &Setup, offsets: &[(i32, i64)]) {
    let consumer = consumer(&format!("sb-{}", setup.name));
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(&setup.topic(Topic::Input), *p, Offset::Offset(*o))
            .unwrap();
    }
    let start = std::time::Instant::now();
    while let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the group took no offsets for 30 s: {e}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A trace processed to the end by one instance, then the group's offsets moved back by 6 on
/// every partition while it is stopped: the setup, the trace, its results and the offsets the
/// group had committed.
async fn processed_then_moved_back(
    name: &str,
) -> (Setup, std::path::PathBuf, usize, Vec<(i32, i64)>) {
    let setup = Setup::create(name).await;
    let trace = scaled_trace(name, 2);
    setup.produce_trace(&trace);
    let child = setup.spawn();
    let expected = expected_results(&trace);
    wait_for_results(&setup, expected, Duration::from_secs(120));
    terminate(child);
    let done = group_offsets(&setup);
    let back: Vec<(i32, i64)> = done.iter().map(|(p, o)| (*p, (o - 6).max(0))).collect();
    set_group_offsets(&setup, &back);
    (setup, trace, expected, done)
}

/// Review case 4: the group's offsets moved back while the processor was stopped. Nothing is
/// applied or produced again; the partitions halt naming the watermark, and moving the offsets
/// forward to it, as the reason says, lets the stream go on exactly.
#[tokio::test(flavor = "multi_thread")]
async fn offsets_moved_back_halt_until_moved_forward_again() {
    let (setup, trace, expected, done) = processed_then_moved_back("moved").await;

    let port = free_http_port();
    let child = setup.spawn_with("1", &format!("127.0.0.1:{port}"));
    let halted = halted_partitions(port, "moved back", Duration::from_secs(90));
    assert_eq!(halted.len(), done.iter().filter(|(_, o)| *o > 0).count());
    terminate(child);
    assert_eq!(
        setup.committed(Topic::CommandResults).len(),
        expected,
        "nothing was produced again"
    );

    set_group_offsets(&setup, &done);
    let child = setup.spawn();
    std::thread::sleep(Duration::from_secs(8));
    terminate(child);
    assert_matches_oracle(&setup, &trace).await;
}

/// Review case 13: one conversation whose stored state cannot be read (its header overwritten
/// with garbage while the processor was down) halts only its own partition; the other
/// partitions go on, `/readyz` stays ready and names the partition, and a rebuild of that one
/// partition ends exactly as `simulate`.
#[tokio::test(flavor = "multi_thread")]
async fn a_poison_conversation_halts_its_partition_while_the_others_flow() {
    let setup = Setup::create("poison-conv").await;
    let prefix = format!("sbk:{}", setup.name);
    let trace = scaled_trace("poison-conv", 3);
    let total = std::fs::read_to_string(&trace).unwrap().lines().count();
    let half = total / 2;
    setup.produce_trace(&slice(&trace, 0, half, "poison-1"));
    let child = setup.spawn();
    wait_for_results(
        &setup,
        expected_results(&slice(&trace, 0, half, "poison-upto")),
        Duration::from_secs(120),
    );
    terminate(child);

    // A conversation with messages on both sides of the stop, corrupted.
    let conversations: Vec<String> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            v["conversation"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    let victim = conversations[half..]
        .iter()
        .find(|c| !c.is_empty() && conversations[..half].contains(c))
        .expect("a conversation on both sides")
        .clone();
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}:{{{victim}}}:h"))
        .arg("doc")
        .arg("{garbage")
        .query(&mut conn)
        .unwrap();

    setup.produce_trace(&slice(&trace, half, total, "poison-2"));
    let before = setup.committed(Topic::CommandResults).len();
    let port = free_http_port();
    let child = setup.spawn_with("1", &format!("127.0.0.1:{port}"));
    let halted = halted_partitions(port, &victim, Duration::from_secs(90));
    assert_eq!(halted.len(), 1, "only the victim's partition: {halted:?}");
    // The others go on: results keep arriving, and the instance stays ready.
    let start = Instant::now();
    while setup.committed(Topic::CommandResults).len() <= before {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the other partitions stalled"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(http_get(port, "/readyz").0, 200);
    terminate(child);

    let p = halted.iter().next().unwrap().to_string();
    setup.run_ok(&["rebuild", "--partition", &p]);
    let child = setup.spawn();
    wait_for_results(&setup, expected_results(&trace), Duration::from_secs(120));
    terminate(child);
    assert_matches_oracle(&setup, &trace).await;
}

/// Waits until `/readyz` lists as halted what `done` says (or panics after `deadline`).
fn wait_halted(port: u16, done: impl Fn(&std::collections::BTreeSet<i32>) -> bool, what: &str) {
    let start = Instant::now();
    loop {
        let halted = halted_now(port);
        if done(&halted) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{what}: halted {halted:?} after 120 s"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A halted partition revoked from an instance (which releases its halt) and assigned back to
/// it is consumed again, and halts again while its cause is there. librdkafka keeps a partition
/// paused through its revoke and a new assignment: without resuming it on assignment, it sat
/// paused, consumed by no one and reported halted by nothing (found by `scripts/faults`).
#[tokio::test(flavor = "multi_thread")]
async fn a_halted_partition_assigned_back_halts_again_rather_than_sitting_paused() {
    let (setup, _, expected, done) = processed_then_moved_back("halt-back").await;
    let moved: std::collections::BTreeSet<i32> = done
        .iter()
        .filter(|(_, o)| *o > 0)
        .map(|(p, _)| *p)
        .collect();
    assert!(moved.len() > 1, "partitions to share: {moved:?}");

    let port = free_http_port();
    let one = setup.spawn_with("1", &format!("127.0.0.1:{port}"));
    wait_halted(port, |h| *h == moved, "all halted on the first instance");
    // A second instance takes some of them from the first, then stops: they come back.
    let two = setup.spawn_instance("2");
    wait_halted(
        port,
        |h| h.len() < moved.len(),
        "some revoked from the first instance",
    );
    terminate(two);
    wait_halted(port, |h| *h == moved, "all halted again once assigned back");
    terminate(one);
    assert_eq!(
        setup.committed(Topic::CommandResults).len(),
        expected,
        "nothing was produced again"
    );
}
