//! Review case 2 on the real broker and Redis: an `/import` of an origin whose messages add up
//! to more than one record may hold (three of about 400 KB) travels in parts, and the whole run
//! — the transfer's parts, the import, every other output — equals `simulate`'s, with nothing
//! dead-lettered and no partition stuck.

mod kafka_support;

use std::time::Duration;

use kafka_support::*;
use serde_json::{json, Value};

/// The example trace's d004 and d005 (lines 33–36), with three messages of about 400 KB in
/// d004 before d005 imports it.
fn trace(name: &str) -> std::path::PathBuf {
    let example = std::fs::read_to_string(TRACE).unwrap();
    let lines: Vec<&str> = example.lines().collect();
    let mut out: Vec<String> = lines[32..34].iter().map(|l| l.to_string()).collect();
    for i in 0..3u8 {
        let big = json!({
            "id": format!("0000000000000000000001b{i}"),
            "conversation": "00000000000000000000d004",
            "type": "chat",
            "role": "contact",
            "text": format!("{}{i}", "long message ".repeat(31_000)),
            "createdAt": format!("2024-05-01T09:17:0{}Z", i + 1),
        });
        out.push(big.to_string());
    }
    out.extend(lines[34..36].iter().map(|l| l.to_string()));
    let path = std::env::temp_dir().join(format!("{name}-{}.jsonl", std::process::id()));
    std::fs::write(&path, out.join("\n") + "\n").unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_larger_than_a_record_travels_in_parts_on_the_real_broker() {
    let setup = Setup::create("oversize").await;
    let trace = trace("oversize");
    let sizes: Vec<usize> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(str::len)
        .collect();
    assert!(
        sizes.iter().filter(|s| **s > 350_000).count() == 3,
        "{sizes:?}"
    );
    setup.produce_trace(&trace);
    let child = setup.spawn();
    wait_for_results(&setup, expected_results(&trace), Duration::from_secs(120));
    terminate(child);
    assert!(
        setup
            .committed(switchboard::core::event::Topic::DeadLetters)
            .is_empty(),
        "nothing dead-lettered"
    );
    // The transfer went as several records on the input topic.
    let parts: Vec<Value> = setup
        .committed(switchboard::core::event::Topic::Input)
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| v["type"] == "import.transfer")
        .collect();
    assert!(parts.len() > 1, "a transfer of {} records", parts.len());
    assert_matches_oracle(&setup, &trace).await;
    let (_, state) = oracle(&trace);
    assert_eq!(state["00000000000000000000d004"]["status"], "archived");
}
