//! Every event and state the core produces matches the JSON Schemas published in `schemas/`.

mod support;

use proptest::prelude::*;
use serde_json::{json, Value};
use support::common::*;
use support::{build, specs, Schemas};
use switchboard::core::Dialect;
use switchboard::tools::simulate::{output_line, Simulator};

/// Every CloudEvents `type` the core emits.
const EVENT_TYPES: [&str; 8] = [
    "chat.bot.command",
    "chat.channel.dequeue",
    "chat.channel.notification",
    "chat.command.result",
    "chat.email.notification",
    "chat.inbox.notification",
    "chat.message.deadletter",
    "chat.message.delivery",
];

fn run(lines: &str) -> (Vec<Value>, Value) {
    let mut sim = Simulator::new(directory(), Dialect::Web1on1);
    let outputs = sim.run_trace(lines);
    let lines = outputs
        .iter()
        .map(|o| serde_json::from_str(&output_line(o)).unwrap())
        .collect();
    (lines, sim.state_document())
}

#[test]
fn there_is_a_valid_schema_for_the_input_the_state_and_every_event_type() {
    let schemas = Schemas::load();
    let mut names = schemas.names();
    names.sort();
    let mut expected: Vec<&str> = EVENT_TYPES
        .into_iter()
        .chain(["conversation", "message"])
        .collect();
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn the_example_trace_produces_only_schema_valid_records_and_state() {
    let schemas = Schemas::load();
    let trace =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/trace.jsonl"))
            .unwrap();
    let (outputs, state) = run(&trace);
    let mut types: Vec<String> = Vec::new();
    for line in &outputs {
        schemas.check_output(line);
        types.push(line["value"]["type"].as_str().unwrap().to_string());
    }
    types.sort();
    types.dedup();
    let mut expected: Vec<&str> = EVENT_TYPES
        .into_iter()
        .chain(["import.request", "import.transfer"])
        .collect();
    expected.sort();
    assert_eq!(
        types, expected,
        "the example covers every event type and both relay steps"
    );
    for doc in state.as_object().unwrap().values() {
        schemas.check_state(doc);
    }
    // The example's readable messages match the input schema too.
    for line in trace.lines() {
        if let switchboard::core::message::Decoded::Message(_) = switchboard::core::message::decode(
            switchboard::core::message::KeySource::FromConversation,
            line.as_bytes(),
        ) {
            let v: Value = serde_json::from_str(line).unwrap();
            assert!(schemas.errors("message", &v).is_empty(), "{line}");
        }
    }
}

#[test]
fn the_schemas_reject_what_the_contract_forbids() {
    let schemas = Schemas::load();
    let trace =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/trace.jsonl"))
            .unwrap();
    let (outputs, state) = run(&trace);
    let find = |t: &str| outputs.iter().find(|l| l["value"]["type"] == t).unwrap()["value"].clone();

    let mut e = find("chat.channel.notification");
    e["data"]["reason"] = json!("because");
    assert!(!schemas.errors("chat.channel.notification", &e).is_empty());
    let mut e = find("chat.command.result");
    assert_eq!(e["data"]["outcome"], "applied");
    e["data"]["code"] = json!("no_change");
    assert!(
        !schemas.errors("chat.command.result", &e).is_empty(),
        "applied carries no code"
    );
    let mut e = find("chat.inbox.notification");
    e["data"].as_object_mut().unwrap().remove("user");
    assert!(!schemas.errors("chat.inbox.notification", &e).is_empty());
    let mut e = find("chat.message.delivery");
    e["specversion"] = json!("0.3");
    assert!(!schemas.errors("chat.message.delivery", &e).is_empty());
    let mut e = find("chat.message.deadletter");
    e["subject"] = json!("");
    assert!(
        !schemas.errors("chat.message.deadletter", &e).is_empty(),
        "CloudEvents forbids an empty subject"
    );
    let mut e = find("chat.bot.command");
    e["dataschema"] =
        json!("https://switchboard.example/schemas/events/chat.message.delivery.schema.json");
    assert!(
        !schemas.errors("chat.bot.command", &e).is_empty(),
        "another type's schema"
    );
    e.as_object_mut().unwrap().remove("dataschema");
    assert!(
        !schemas.errors("chat.bot.command", &e).is_empty(),
        "no dataschema"
    );

    let mut doc = state.as_object().unwrap().values().next().unwrap().clone();
    doc["status"] = json!("closed");
    doc["channels"] = json!([C1]);
    assert!(
        !schemas.errors("conversation", &doc).is_empty(),
        "channels only while queued"
    );
    let mut doc = state.as_object().unwrap().values().next().unwrap().clone();
    doc["messages"][0]["likes"] = json!(vec![ADA; 2]);
    assert!(
        !schemas.errors("conversation", &doc).is_empty(),
        "a user likes once"
    );
    assert!(!schemas
        .errors(
            "message",
            &json!({"id": "x", "conversation": conv(1), "type": "chat",
        "createdAt": time(1)})
        )
        .is_empty());
    assert!(
        !schemas
            .errors(
                "message",
                &json!({"id": conv(2), "conversation": conv(1), "type": "chat",
        "role": "agent", "createdAt": time(1)})
            )
            .is_empty(),
        "agents need a sender"
    );
}

/// Each event's `dataschema` is the `$id` of its type's schema file, and no attribute is an empty
/// string (CloudEvents: "if present, MUST be a non-empty string"): a dead letter of a record
/// without a key has no `subject` at all.
#[test]
fn every_event_names_its_schema_and_no_attribute_is_empty() {
    let trace =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/trace.jsonl"))
            .unwrap();
    let (outputs, _) = run(&trace);
    let mut without_subject = 0;
    for line in outputs
        .iter()
        .filter(|l| l["topic"] != "conversation.messages")
    {
        let event = line["value"].as_object().unwrap();
        let file = format!(
            "{}/schemas/events/{}.schema.json",
            env!("CARGO_MANIFEST_DIR"),
            event["type"].as_str().unwrap()
        );
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        assert_eq!(event["dataschema"], schema["$id"]);
        for (name, attribute) in event.iter().filter(|(name, _)| *name != "data") {
            assert_ne!(attribute.as_str(), Some(""), "{name} is empty in {event:?}");
        }
        if !event.contains_key("subject") {
            assert_eq!(event["type"], "chat.message.deadletter");
            without_subject += 1;
        }
    }
    assert!(
        without_subject > 0,
        "the example has a dead letter without a key"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_traffic_produces_only_schema_valid_records_and_state(s in specs(60)) {
        let schemas = Schemas::load();
        let (outputs, state) = run(&build(&s).join("\n"));
        for line in &outputs {
            schemas.check_output(line);
        }
        for doc in state.as_object().unwrap().values() {
            schemas.check_state(doc);
        }
    }
}

#[tokio::test]
async fn the_dead_letter_standing_in_for_an_oversize_output_matches_its_schema() {
    use switchboard::runtime::pipeline::{process_batch, InputRecord, Limits};
    use switchboard::runtime::store::MemoryStore;
    let schemas = Schemas::load();
    let trace =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/trace.jsonl"))
            .unwrap();
    let long = format!(">crm-sync {}", "x".repeat(20_000));
    let records: Vec<InputRecord> = trace
        .lines()
        .take_while(|l| !l.contains("/import"))
        .enumerate()
        .map(|(i, l)| InputRecord {
            offset: i as i64,
            payload: l.replace(">crm-sync", &long).into_bytes(),
            key: serde_json::from_str::<Value>(l).unwrap()["conversation"]
                .as_str()
                .map(|c| c.as_bytes().to_vec()),
            topic: "conversation.messages".into(),
            ..InputRecord::default()
        })
        .collect();
    let limits = Limits {
        max_output_bytes: 16_384,
        ..Limits::defaults()
    };
    let out = process_batch(
        &MemoryStore::new(),
        &directory(),
        Dialect::Web1on1,
        limits,
        records,
    )
    .await
    .unwrap();
    let dead: Vec<Value> = out
        .outputs
        .iter()
        .filter(|o| o.topic == switchboard::core::event::Topic::DeadLetters)
        .map(|o| serde_json::from_str(&o.value).unwrap())
        .collect();
    assert_eq!(dead.len(), 1);
    schemas.check_output(&json!({"topic": "conversation.messages.dlq", "value": dead[0]}));
    assert_eq!(dead[0]["data"]["reason"], "too_large");
}

#[test]
fn a_transfer_in_parts_and_the_state_waiting_for_them_match_their_schemas() {
    let schemas = Schemas::load();
    let mut sim = Simulator::new(directory(), Dialect::Web1on1).with_max_relay_bytes(2000);
    let (origin, target) = ("00000000000000000000d0b1", "00000000000000000000d0b2");
    let mut trace = Vec::new();
    for (i, conv) in std::iter::repeat_n(origin, 20).chain([target]).enumerate() {
        trace.push(
            json!({"id": format!("{:024x}", i + 1), "conversation": conv, "type": "chat",
            "role": "contact", "organization": ORG, "touchpoint": "web",
            "text": format!("message {i}: {}", "words ".repeat(20)),
            "createdAt": format!("2024-05-01T10:00:{i:02}Z")}),
        );
    }
    for line in &trace {
        sim.process(line.to_string().as_bytes(), "t");
    }
    let command = json!({"id": "0000000000000000000000ff", "conversation": target,
        "type": "command", "role": "agent", "sender": ADA, "text": format!("/import {origin}"),
        "createdAt": "2024-05-01T10:01:00Z"});
    let request = sim.process(command.to_string().as_bytes(), "t");
    let request = serde_json::to_vec(&request[0].value).unwrap();
    let parts: Vec<_> = sim
        .process(&request, "t")
        .into_iter()
        .filter(|o| o.topic == switchboard::core::event::Topic::Input)
        .collect();
    assert!(parts.len() > 2, "{} parts", parts.len());
    for part in &parts {
        let line: Value = serde_json::from_str(&output_line(part)).unwrap();
        schemas.check_output(&line);
    }
    let kept = sim.process(&serde_json::to_vec(&parts[1].value).unwrap(), "t");
    assert!(
        kept.is_empty(),
        "{:?}",
        kept.iter().map(output_line).collect::<Vec<_>>()
    );
    let waiting = sim.state_document()[target].clone();
    assert_eq!(
        waiting["pendingImport"]["transfer"]["received"][0]["part"],
        2
    );
    schemas.check_state(&waiting);
    let mut broken = waiting.clone();
    broken["pendingImport"]["transfer"]["received"][0]["extra"] = json!(1);
    assert!(!schemas.errors("conversation", &broken).is_empty());
}

#[test]
fn a_timed_out_import_its_cancel_and_the_states_around_it_match_their_schemas() {
    let schemas = Schemas::load();
    let mut sim = Simulator::new(directory(), Dialect::Web1on1).with_import_timeout_ms(60_000);
    let (origin, target) = ("00000000000000000000d0d1", "00000000000000000000d0d2");
    let line = |id: u32, conv: &str, at: &str, extra: Value| {
        let mut v = json!({"id": format!("{id:024x}"), "conversation": conv,
            "createdAt": format!("2024-05-01T10:{at}Z")});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    let contact = json!({"type": "chat", "role": "contact", "organization": ORG,
        "touchpoint": "web", "text": "hi"});
    let import = json!({"type": "command", "role": "agent", "sender": ADA,
        "text": format!("/import {origin}")});
    sim.process(
        line(1, origin, "00:01", contact.clone())
            .to_string()
            .as_bytes(),
        "t",
    );
    sim.process(
        line(2, target, "00:02", contact.clone())
            .to_string()
            .as_bytes(),
        "t",
    );
    let request = sim.process(line(3, target, "00:03", import).to_string().as_bytes(), "t");
    schemas.check_state(&sim.state_document()[target]);
    let late = sim.process(
        line(4, target, "01:04", contact).to_string().as_bytes(),
        "t",
    );
    let archived = sim.process(&serde_json::to_vec(&request[0].value).unwrap(), "t");
    schemas.check_state(&sim.state_document()[origin]);
    assert!(sim.state_document()[origin].get("transferred").is_some());
    let restored = sim.process(&serde_json::to_vec(&late[0].value).unwrap(), "t");
    let types: Vec<Value> = late.iter().map(|o| json!(output_line(o))).collect();
    assert!(types[0].as_str().unwrap().contains("import.cancel"));
    for o in late.iter().chain(&archived).chain(&restored) {
        schemas.check_output(&serde_json::from_str(&output_line(o)).unwrap());
    }
    assert!(late
        .iter()
        .any(|o| output_line(o).contains("import_timed_out")));
    schemas.check_state(&sim.state_document()[origin]);
}
