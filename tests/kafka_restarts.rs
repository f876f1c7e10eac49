//! Redis and the Kafka broker restarted under a running processor. A binary of its own, so
//! that cargo runs it alone: the restarts hit the shared local servers.

mod kafka_support;

use std::process::Command;
use std::time::Duration;

use kafka_support::*;

fn restart(server: &str) {
    let script = format!("{}/deploy/local/{server}", env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(&script).arg("restart").status().unwrap();
    assert!(status.success(), "{script} restart failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_and_broker_restarts_mid_stream_lose_and_duplicate_nothing() {
    let setup = Setup::create("restarts").await;
    let trace = scaled_trace("restarts", 45);
    setup.produce_trace(&trace);
    let expected = expected_results(&trace);
    let child = setup.spawn();

    let before_redis = setup.wait_for_progress(expected / 4, Duration::from_secs(120));
    restart("redis");
    let before_kafka = setup.wait_for_progress(before_redis + 100, Duration::from_secs(120));
    restart("kafka");
    eprintln!(
        "restarted Redis at {before_redis} and Kafka at {before_kafka} of {expected} results"
    );
    assert!(
        before_kafka < expected,
        "both restarts must land mid-stream"
    );

    wait_for_results(&setup, expected, Duration::from_secs(240));
    terminate(child);
    assert_matches_oracle(&setup, &trace).await;
}
