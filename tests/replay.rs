//! `switchboard replay` and `switchboard loadgen --topic` against a real broker
//! (`deploy/local/up`): everything arrives, once, each conversation in its order, remapped IDs
//! consistent, Switchboard's own relay records left out.

mod kafka_support;

use std::collections::HashMap;

use kafka_support::*;
use serde_json::Value;
use switchboard::core::event::Topic;
use switchboard::tools::replay::Remap;

/// Per key, the `id`s in the order they were committed.
fn sequences(records: &[(String, Value)]) -> HashMap<String, Vec<String>> {
    let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in records {
        by_key
            .entry(k.clone())
            .or_default()
            .push(v["id"].as_str().unwrap_or_default().to_string());
    }
    by_key
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_and_then_a_topic_replay_keep_every_record_once_and_in_order() {
    let setup = Setup::create("replay").await;
    let trace = scaled_trace("replay", 3);
    // A relay record as Switchboard writes it to the input topic: not the platform's to replay.
    let relay = r#"{"id":"relay-1","conversation":"00000000000000000000d004","type":"import.request","createdAt":"2024-05-01T09:18:00Z"}"#;
    let text = std::fs::read_to_string(&trace).unwrap() + relay + "\n";
    std::fs::write(&trace, &text).unwrap();

    let (_, stderr) = setup.run_ok(&[
        "replay",
        trace.to_str().unwrap(),
        "--fastest",
        "--remap",
        "run-7",
        "--topic",
        &setup.topic(Topic::Input),
    ]);
    assert!(stderr.contains("1 relay records skipped"), "{stderr}");

    // The expected records: the file's, remapped as the replay did, without the relay.
    let mut remap = Remap::new("run-7");
    let mut expected: Vec<(String, Value)> = Vec::new();
    let mut unkeyed = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(mut v) = serde_json::from_str::<Value>(line) else {
            unkeyed += 1;
            continue;
        };
        if v["type"] == "import.request" {
            continue;
        }
        remap.apply(&mut v);
        match v["conversation"].as_str() {
            Some(k) => expected.push((k.to_string(), v.clone())),
            None => unkeyed += 1,
        }
    }
    let got = setup.committed(Topic::Input);
    let keyed: Vec<(String, Value)> = got.iter().filter(|(k, _)| !k.is_empty()).cloned().collect();
    assert_eq!(keyed.len(), expected.len());
    assert_eq!(
        got.len() - keyed.len(),
        unkeyed,
        "unkeyed lines are replayed too"
    );
    assert_eq!(sequences(&keyed), sequences(&expected));
    assert!(
        !got.iter()
            .any(|(k, _)| k.ends_with("d004") && k.starts_with("0000")),
        "original conversation IDs are gone"
    );

    // The topic, replayed to another topic as it is.
    setup.run_ok(&[
        "replay",
        "--from-topic",
        &setup.topic(Topic::Input),
        "--fastest",
        "--topic",
        &setup.topic(Topic::BotCommands),
    ]);
    let copied = setup.committed(Topic::BotCommands);
    assert_eq!(copied.len(), got.len());
    assert_eq!(sequences(&copied), sequences(&got));
}

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_to_a_topic_produces_its_model() {
    let setup = Setup::create("loadgen").await;
    setup.run_ok(&[
        "loadgen",
        "--conversations",
        "40",
        "--messages",
        "400",
        "--rate",
        "2000",
        "--seed",
        "9",
        "--topic",
        &setup.topic(Topic::Input),
    ]);
    let got = setup.committed(Topic::Input);
    assert_eq!(got.len(), 400);
    let per = sequences(&got);
    assert_eq!(per.len(), 40);
    // The same model written to a file gives the same messages in each conversation's order
    // (only `createdAt`, the moment of production, differs).
    let (file, _) = setup.run_ok(&[
        "loadgen",
        "--conversations",
        "40",
        "--messages",
        "400",
        "--seed",
        "9",
        "--output",
        "-",
    ]);
    let from_file: Vec<(String, Value)> = file
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["conversation"].as_str().unwrap().to_string(), v)
        })
        .collect();
    assert_eq!(sequences(&from_file), per);
}
