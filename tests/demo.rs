//! `switchboard demo`: the Kafka runtime on librdkafka's mock cluster with the in-memory store
//! must commit exactly what the core alone (`simulate`) produces, and reach the same state.

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/directory.yaml");
const TRACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/trace.jsonl");

/// A record with what legitimately differs between a trace and a stream removed: a dead
/// letter's ID names its source (line or partition/offset) and only the stream has a broker time.
fn normalised(topic: &str, key: &str, value: &Value) -> String {
    let mut v = value.clone();
    if topic.ends_with(".dlq") {
        v["id"] = Value::Null;
        v.as_object_mut().unwrap().remove("time");
    }
    format!("{topic} {key} {v}")
}

fn counts(records: impl Iterator<Item = String>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in records {
        *m.entry(r).or_default() += 1;
    }
    m
}

#[test]
fn the_demo_commits_what_the_core_computes() {
    let demo = Command::new(BIN)
        .args(["demo", "--trace", TRACE, "--directory", DIR])
        .output()
        .unwrap();
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let stdout = String::from_utf8(demo.stdout).unwrap();
    let (records, state): (Vec<&str>, Vec<&str>) =
        stdout.lines().partition(|l| l.starts_with("{\""));
    let state: Value = serde_json::from_str(&state.join("\n")).unwrap();
    let records: Vec<Value> = records
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let state_file = std::env::temp_dir().join(format!(
        "switchboard-demo-state-{}.json",
        std::process::id()
    ));
    let sim = Command::new(BIN)
        .args([
            "simulate",
            "--directory",
            DIR,
            "--input",
            TRACE,
            "--state",
            state_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(sim.status.success());
    let expected: Vec<Value> = String::from_utf8(sim.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["topic"] != "conversation.messages")
        .collect();
    let expected_state: Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    let _ = std::fs::remove_file(state_file);

    let key = |v: &Value| {
        normalised(
            v["topic"].as_str().unwrap(),
            v["key"].as_str().unwrap(),
            &v["value"],
        )
    };
    assert_eq!(records.len(), expected.len());
    assert_eq!(
        counts(records.iter().map(key)),
        counts(expected.iter().map(key))
    );
    assert_eq!(state, expected_state);

    // Per key, records come in the order the core produced them.
    for topic in [
        "command.results",
        "channel.notifications",
        "message.deliveries",
    ] {
        let order = |rs: &[Value]| -> HashMap<String, Vec<String>> {
            let mut m: HashMap<String, Vec<String>> = HashMap::new();
            for r in rs.iter().filter(|r| r["topic"] == topic) {
                m.entry(r["key"].as_str().unwrap().to_string())
                    .or_default()
                    .push(r["value"]["id"].to_string());
            }
            m
        };
        assert_eq!(order(&records), order(&expected), "{topic}");
    }
}
