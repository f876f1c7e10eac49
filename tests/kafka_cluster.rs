//! Switchboard on a replicated cluster (three KRaft nodes, replication factor 3,
//! min.insync.replicas=2; `deploy/local/kafka-cluster`): the node leading input and output
//! partitions is SIGKILLed mid-stream and started again later, and the committed outputs and
//! the state must still be `simulate`'s, each output once and in order. A binary of its own: it
//! kills the cluster's nodes, which no other test shares.

mod kafka_support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use switchboard::core::event::Topic;

use kafka_support::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/kafka-cluster");

fn cluster() -> &'static Target {
    use_target(|| {
        let port: u16 = std::env::var("KAFKA_CLUSTER_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(29092);
        let bootstrap = (0..3)
            .map(|n| format!("127.0.0.1:{}", port + n))
            .collect::<Vec<_>>()
            .join(",");
        Target {
            bootstrap,
            properties: Vec::new(),
            replication: 3,
        }
    })
}

fn script(args: &[&str]) {
    let status = Command::new(SCRIPT).args(args).status().unwrap();
    assert!(
        status.success(),
        "deploy/local/kafka-cluster {args:?} failed"
    );
}

/// Each partition's leader (a node ID, which is the script's node number) of `topic`.
fn leaders(topic: &str) -> BTreeMap<i32, i32> {
    let client: BaseConsumer = client_config().create().unwrap();
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| (p.id(), p.leader()))
        .collect()
}

/// Fails at once, saying how to start it, unless all three nodes answer.
fn require_cluster() {
    let client: BaseConsumer = client_config().create().unwrap();
    let brokers = client
        .fetch_metadata(None, Duration::from_secs(10))
        .map(|m| m.brokers().len())
        .unwrap_or(0);
    assert_eq!(
        brokers,
        3,
        "the replicated Kafka cluster at {} is not (fully) running: start it with \
         deploy/local/kafka-cluster start",
        bootstrap()
    );
}

/// Waits until every partition of `topic` has a leader other than `gone` again.
fn wait_for_failover(topic: &str, gone: i32, deadline: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = leaders(topic);
        if now.values().all(|l| *l >= 0 && *l != gone) {
            return start.elapsed();
        }
        assert!(start.elapsed() < deadline, "{topic}: leaders {now:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_the_leader_of_input_and_output_partitions_loses_and_duplicates_nothing() {
    cluster();
    require_cluster();
    let setup = Setup::create("cluster").await;
    let trace = scaled_trace("cluster", 30);
    let lines = std::fs::read_to_string(&trace).unwrap().lines().count();
    // The input arrives in three phases, so that the node is down, and back, while the stream
    // is still running however fast the machine is: a second phase produced while it is down,
    // and a third only once it is back.
    let (a, b) = (lines * 3 / 5, lines * 4 / 5);
    setup.produce_trace(&slice(&trace, 0, a, "cluster-phase1"));
    let expected = expected_results(&trace);
    let through_b = expected_results(&slice(&trace, 0, b, "cluster-upto2"));
    let started = Instant::now();
    let one = setup.spawn_instance("1");
    let two = setup.spawn_instance("2");

    let before = setup.wait_for_progress(expected / 4, Duration::from_secs(120));
    let input = leaders(&setup.topic(Topic::Input));
    let results = leaders(&setup.topic(Topic::CommandResults));
    // The node leading the most input and result partitions together.
    let victim = (1..=3)
        .max_by_key(|n| {
            input
                .values()
                .chain(results.values())
                .filter(|l| *l == n)
                .count()
        })
        .unwrap();
    assert!(
        input.values().any(|l| *l == victim) && results.values().any(|l| *l == victim),
        "node {victim} must lead input and output partitions: input {input:?}, results {results:?}"
    );
    script(&["kill", &victim.to_string()]);
    let failover = wait_for_failover(&setup.topic(Topic::Input), victim, Duration::from_secs(60));
    eprintln!(
        "killed node {victim} (leading input {input:?}, results {results:?}) at {before} of \
         {expected} results; input partitions led elsewhere {failover:?} later"
    );

    setup.produce_trace(&slice(&trace, a, b, "cluster-phase2"));
    let during = setup.wait_for_progress(through_b, Duration::from_secs(180));
    script(&["start", &victim.to_string()]);
    eprintln!(
        "all {during} results of the first two phases with node {victim} down; started it again"
    );
    setup.produce_trace(&slice(&trace, b, lines, "cluster-phase3"));

    wait_for_results(&setup, expected, Duration::from_secs(240));
    terminate_after_broker_loss(one);
    terminate_after_broker_loss(two);
    eprintln!("all {expected} results after {:?}", started.elapsed());
    assert_matches_oracle(&setup, &trace).await;
}
