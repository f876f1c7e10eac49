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

/// Unreadable records with headers of every kind: dead-lettered by the processor, then re-driven
/// from the dead-letter topic, each arrives as the original, key, payload and headers byte for
/// byte. A dead letter that keeps only a prefix (`too_large`) is left out, and the exit status
/// says so.
#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_re_driven_arrive_as_the_originals() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use std::time::{Duration, Instant};
    use switchboard::runtime::pipeline::headers;
    use switchboard::runtime::pipeline::{Header, Headers};
    use switchboard::tools::demo::read_committed_records;

    let setup = Setup::create("redrive").await;
    let producer: BaseProducer = producer_config().create().unwrap();
    let input = setup.topic(Topic::Input);
    let trace = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let good = r#"{"id":"0000000000000000000000a1","conversation":"00000000000000000000d0aa","type":"chat","role":"contact","text":"hi","createdAt":"2024-05-01T10:00:00Z"}"#;
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(3000));
    let header = |name: &str, value: &[u8]| Header::new(name, value);
    let send = |key: Option<&[u8]>, payload: &[u8], headers: Vec<Header>| {
        let mut r = BaseRecord::<[u8], [u8]>::to(&input).payload(payload);
        if let Some(h) = Headers::new(headers).to_kafka() {
            r = r.headers(h);
        }
        if let Some(k) = key {
            r = r.key(k);
        }
        producer.send(r).map_err(|(e, _)| e).unwrap();
    };
    send(
        Some(b"00000000000000000000d0aa"),
        b"{broken json",
        vec![
            header("traceparent", trace),
            header("Content-Type", b"text/plain"),
            Header {
                name: "nothing".into(),
                value: None,
            },
            header("switchboard.error.reason", b"theirs"),
        ],
    );
    send(None, good.as_bytes(), vec![header("traceparent", trace)]);
    send(Some(&[0xff, 0x01]), &[0xc3, 0x28], vec![]);
    send(
        Some(b"00000000000000000000d0bb"),
        good.as_bytes(),
        vec![header("ce_id", b"x"), header("bytes", &[0, 0xfe])],
    );
    send(Some(b"00000000000000000000d0aa"), big.as_bytes(), vec![]);
    producer.flush(Duration::from_secs(30)).unwrap();

    let child = Proc::spawn(
        setup
            .command(&["run"])
            .env("SWITCHBOARD_KAFKA__MAX_RECORD_BYTES", "2048")
            .env(
                "SWITCHBOARD_KAFKA__TRANSACTIONAL_ID",
                format!("sb-{}", setup.name),
            ),
    );
    let start = Instant::now();
    while setup.committed(Topic::DeadLetters).len() < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "dead letters missing"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    terminate(child);

    let read =
        |t: Topic| read_committed_records(&bootstrap(), &setup.topic(t), PARTITIONS).unwrap();
    let originals = read(Topic::Input);
    for d in read(Topic::DeadLetters) {
        let offset = d.headers.get(headers::ORIGINAL_OFFSET).unwrap();
        let partition = d.headers.get(headers::ORIGINAL_PARTITION).unwrap();
        let o = originals
            .iter()
            .find(|o| {
                o.offset.to_string().as_bytes() == offset
                    && o.partition.to_string().as_bytes() == partition
            })
            .unwrap();
        assert_eq!(headers::original_headers(&d.headers), o.headers);
        assert_eq!(d.headers.get(headers::ORIGINAL_KEY), o.key.as_deref());
        assert_eq!(
            d.headers.get(headers::ORIGINAL_TOPIC),
            Some(input.as_bytes())
        );
        assert_eq!(
            d.headers.get(headers::CONTENT_TYPE),
            Some(headers::STRUCTURED_JSON.as_bytes())
        );
    }

    let target = setup.topic(Topic::BotCommands);
    let out = setup
        .command(&[
            "replay",
            "--from-topic",
            &setup.topic(Topic::DeadLetters),
            "--unwrap-dlq",
            "--topic",
            &target,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a too_large dead letter cannot be re-driven"
    );
    assert!(
        stderr.contains("1 dead letters could not be re-driven (4 were)")
            && stderr.contains("too_large"),
        "{stderr}"
    );
    let whole = |records: Vec<switchboard::tools::demo::CommittedRecord>| {
        let mut v: Vec<_> = records
            .into_iter()
            .filter(|r| r.payload.as_ref().is_some_and(|p| p.len() < 2048))
            .map(|r| {
                (
                    r.key,
                    r.payload,
                    r.headers.iter().cloned().collect::<Vec<_>>(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let originals = whole(originals);
    assert_eq!(originals.len(), 4);
    assert_eq!(whole(read(Topic::BotCommands)), originals);
}
