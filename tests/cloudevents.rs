//! The output topics as a CloudEvents consumer sees them, on a real broker (`deploy/local/up`):
//! after `switchboard run` over the example trace, every record of every output topic is read
//! with the official CloudEvents Python SDK (`scripts/cloudevents-check`, which installs it from
//! PyPI into `.cache/` the first time) and must be a structured-mode CloudEvent; a record without
//! the `content-type` header must fail that check. The trace context of each input record must
//! reach every output it caused.

mod kafka_support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use kafka_support::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use switchboard::core::event::Topic;
use switchboard::runtime::pipeline::headers::{self, STRUCTURED_JSON};
use switchboard::runtime::pipeline::{Header, Headers};
use switchboard::tools::demo::{read_committed_records, CommittedRecord};

/// `scripts/cloudevents-check` over `topics`: (success, stdout, stderr).
fn sdk_check(topics: &[String]) -> (bool, String, String) {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/cloudevents-check"
    ))
    .arg("--bootstrap")
    .arg(bootstrap())
    .args(topics)
    .output()
    .expect("running scripts/cloudevents-check (needs python3)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn traceparent(line: usize) -> String {
    format!("00-{:032x}-{:016x}-01", line + 1, line + 1)
}

/// The example trace, every record with a trace context of its own (and a `tracestate`).
fn produce_traced(setup: &Setup) {
    let producer: BaseProducer = producer_config().create().unwrap();
    let input = setup.topic(Topic::Input);
    for (i, line) in std::fs::read_to_string(TRACE).unwrap().lines().enumerate() {
        let key = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v["conversation"].as_str().map(str::to_string));
        let headers = Headers::new(vec![
            Header::new("traceparent", traceparent(i)),
            Header::new("tracestate", "sb=t"),
        ]);
        let mut record = BaseRecord::<str, str>::to(&input)
            .payload(line)
            .headers(headers.to_kafka().unwrap());
        if let Some(k) = &key {
            record = record.key(k.as_str());
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn read(setup: &Setup, t: Topic) -> Vec<CommittedRecord> {
    read_committed_records(&bootstrap(), &setup.topic(t), PARTITIONS).unwrap()
}

fn json(r: &CommittedRecord) -> Value {
    serde_json::from_slice(r.payload.as_deref().unwrap_or_default()).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_output_record_is_a_structured_mode_cloudevent_to_the_sdk() {
    let setup = Setup::create("cloudevents").await;
    produce_traced(&setup);
    let child = setup.spawn();
    let trace = std::path::Path::new(TRACE);
    wait_for_results(&setup, expected_results(trace), Duration::from_secs(120));
    terminate(child);

    let outputs: Vec<Topic> = Topic::ALL
        .into_iter()
        .filter(|t| *t != Topic::Input)
        .collect();
    let names: Vec<String> = outputs.iter().map(|t| setup.topic(*t)).collect();
    let (ok, stdout, stderr) = sdk_check(&names);
    assert!(ok, "the SDK refused records:\n{stderr}\n{stdout}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    for name in &names {
        let records = summary[name]["records"].as_u64().unwrap();
        assert!(
            records > 0,
            "{name} is empty: the check proved nothing there"
        );
    }
    eprintln!("CloudEvents SDK read: {summary}");

    // Each input record's trace context, by message ID (relay records included) and by position.
    let input = read(&setup, Topic::Input);
    let by_id: HashMap<String, &CommittedRecord> = input
        .iter()
        .filter_map(|r| Some((json(r)["id"].as_str()?.to_string(), r)))
        .collect();
    let at = |partition: &[u8], offset: &[u8]| {
        input
            .iter()
            .find(|r| {
                r.partition.to_string().as_bytes() == partition
                    && r.offset.to_string().as_bytes() == offset
            })
            .unwrap()
    };
    let mut checked = 0;
    for t in outputs {
        for r in read(&setup, t) {
            assert_eq!(
                r.headers.iter().next(),
                Some(&Header::new(headers::CONTENT_TYPE, STRUCTURED_JSON)),
                "{t:?}: the content type comes first"
            );
            let cause = match t {
                Topic::DeadLetters => at(
                    r.headers.get(headers::ORIGINAL_PARTITION).unwrap(),
                    r.headers.get(headers::ORIGINAL_OFFSET).unwrap(),
                ),
                _ => {
                    let id = json(&r)["id"].as_str().unwrap().to_string();
                    by_id[id.rsplit_once(':').unwrap().0]
                }
            };
            assert!(cause.headers.get("traceparent").is_some());
            for name in ["traceparent", "tracestate"] {
                assert_eq!(r.headers.get(name), cause.headers.get(name), "{t:?} {name}");
            }
            checked += 1;
        }
    }
    // Relay records carry the trace context of the `/import` that caused them.
    let relays: Vec<&CommittedRecord> = input
        .iter()
        .filter(|r| {
            json(r)["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("import."))
        })
        .collect();
    assert_eq!(relays.len(), 2, "the example's /import relays twice");
    for relay in relays {
        let command = json(relay)["meta"]["command"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(relay.headers, by_id[&command].headers, "relay of {command}");
    }
    eprintln!("{checked} output records carry their cause's trace context");
}

/// The check is not vacuous: the same event, once without the binding's header and once with it,
/// fails and passes.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_without_the_content_type_header_fails_the_sdk_check() {
    let setup = Setup::create("cloudevents-bare").await;
    let event = r#"{"specversion":"1.0","id":"000000000000000000000001:0","source":"/switchboard","type":"chat.bot.command","time":"2024-05-01T09:00:30Z","subject":"00000000000000000000d001","datacontenttype":"application/json","dataschema":"https://switchboard.example/schemas/events/chat.bot.command.schema.json","data":{"conversation":"00000000000000000000d001","message":"000000000000000000000001","text":"> hi"}}"#;
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let (bare, with) = (
        setup.topic(Topic::BotCommands),
        setup.topic(Topic::MessageDeliveries),
    );
    let structured = Headers::new(vec![Header::new(headers::CONTENT_TYPE, STRUCTURED_JSON)]);
    let records = [
        BaseRecord::<str, str>::to(&bare).key("k").payload(event),
        BaseRecord::<str, str>::to(&with)
            .key("k")
            .payload(event)
            .headers(structured.to_kafka().unwrap()),
    ];
    for r in records {
        producer.send(r).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let (ok, _, stderr) = sdk_check(std::slice::from_ref(&with));
    assert!(ok, "with the header: {stderr}");
    let (ok, _, stderr) = sdk_check(std::slice::from_ref(&bare));
    assert!(!ok, "a record without the content-type header passed");
    assert!(stderr.contains("not a CloudEvent"), "{stderr}");
    eprintln!("without the header, the SDK says: {stderr}");
}
