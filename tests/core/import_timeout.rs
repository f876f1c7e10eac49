//! `/import` past `imports.timeout_ms`: the target fails it on the next message, the origin
//! undoes its archiving when the cancel reaches it, and every interleaving of the relay records
//! ends all or nothing: the origin archived exactly when the `/import` was applied.
//!
//! Relay records are held back here (`raw`) and delivered by hand (`deliver`), in the order the
//! input topic would give them to each conversation.

use serde_json::{json, Value};
use switchboard::core::event::{Output, Topic};
use switchboard::core::id::derive;
use switchboard::core::state::{Conversation, Status};
use switchboard::core::Dialect;
use switchboard::tools::simulate::output_line;

use crate::common::*;

/// The default timeout, in seconds (24 hours).
const DAY: u64 = 86_400;
/// When the `/import` is sent, in seconds after `common::time`'s origin.
const T0: u64 = 1_000;
const IMPORT: &str = "0000000000000000000000d1";
const IMPORT2: &str = "0000000000000000000000d2";

/// One record through the core; the relay records it causes are returned, not delivered.
fn raw(h: &mut H, record: Value) -> Vec<Output> {
    h.sim.process(&serde_json::to_vec(&record).unwrap(), "raw")
}

/// A relay record, arriving at the conversation it is keyed by.
fn deliver(h: &mut H, relay: &Output) -> Vec<Output> {
    assert_eq!(relay.topic, Topic::Input);
    h.sim
        .process(&serde_json::to_vec(&relay.value).unwrap(), "relay")
}

fn relays(outputs: &[Output]) -> Vec<Output> {
    outputs
        .iter()
        .filter(|o| o.topic == Topic::Input)
        .cloned()
        .collect()
}

fn results(outputs: &[Output]) -> Vec<Value> {
    outputs
        .iter()
        .filter(|o| o.topic == Topic::CommandResults)
        .map(|o| serde_json::to_value(&o.event_ref().unwrap().data).unwrap())
        .collect()
}

fn lines(outputs: &[Output]) -> Vec<String> {
    outputs.iter().map(output_line).collect()
}

fn field<'a>(relay: &'a Output, name: &str) -> &'a Value {
    match &relay.value {
        switchboard::core::event::Payload::Message(v) => &v[name],
        other => panic!("not a relay record: {other:?}"),
    }
}

fn import(target: &str, origin: &str, id: &str, at: &str) -> Value {
    json!({"id": id, "conversation": target, "type": "command", "role": "agent", "sender": ADA,
        "text": format!("/import {origin}"), "createdAt": at})
}

fn chat(conv: &str, id: &str, at: &str) -> Value {
    json!({"id": id, "conversation": conv, "type": "chat", "role": "contact", "text": "still there?",
        "touchpoint": "web", "createdAt": at})
}

/// `secs` after `common::time`'s origin, plus `millis`.
fn time_ms(secs: u64, millis: u32) -> String {
    chrono::DateTime::from_timestamp(1_714_554_000 + secs as i64, millis * 1_000_000)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An origin of two contact messages, queued with its channels notified, and a target.
fn setup(h: &mut H) -> (String, String) {
    let origin = h.open(1);
    h.contact(&origin, "a second message").applied();
    let target = h.open(2);
    (origin, target)
}

/// What a conversation is once its archiving was undone: as it was, two versions on (archived,
/// restored), touched by the cancel.
fn restored(before: &Conversation, at: &str) -> Conversation {
    Conversation {
        version: before.version + 2,
        updated_at: at.to_string(),
        ..before.clone()
    }
}

fn transfer_never_arriving_in_time_ends_as_if_never_asked(dialect: Dialect) {
    let (mut h, mut twin) = (H::with_dialect(dialect), H::with_dialect(dialect));
    let (origin, target) = setup(&mut h);
    setup(&mut twin);
    let (origin_before, log_before) = (h.state(&origin), h.messages(&origin));

    let request = relays(&raw(&mut h, import(&target, &origin, IMPORT, &time(T0))));
    assert_eq!(request.len(), 1, "the request, held in flight");
    let version = h.state(&target).version;

    // A day and a second later, a message to the target fails the import before it applies.
    let late = chat(&target, "0000000000000000000000f7", &time(T0 + DAY + 1));
    let out = raw(&mut h, late.clone());
    let cancel = &out[0];
    assert_eq!(
        (cancel.topic, cancel.key.as_str()),
        (Topic::Input, origin.as_str())
    );
    assert_eq!(field(cancel, "type"), "import.cancel");
    assert_eq!(
        field(cancel, "id"),
        derive(&[IMPORT, "import.cancel"]).as_str()
    );
    assert_eq!(
        field(cancel, "meta"),
        &json!({"target": target, "command": IMPORT})
    );
    let timed_out = &results(&out[1..2])[0];
    assert_eq!(
        (
            &timed_out["message"],
            &timed_out["outcome"],
            &timed_out["code"]
        ),
        (
            &json!(IMPORT),
            &json!("rejected"),
            &json!("import_timed_out")
        )
    );
    assert_eq!(timed_out["version"], version, "a refusal moves no version");
    // Then the message itself, exactly as without any import.
    assert_eq!(lines(&out[2..]), lines(&raw(&mut twin, late)));
    assert_eq!(h.state(&target), twin.state(&target));
    assert_eq!(h.messages(&target), twin.messages(&target));

    // The request reaches the origin only now: it archives itself and sends its transfer...
    let transfer = relays(&deliver(&mut h, &request[0]));
    assert_eq!(h.state(&origin).status, Status::Archived);
    // ...and the cancel, which comes after it under the same key, undoes that, with no result.
    let undone = deliver(&mut h, cancel);
    assert!(results(&undone).is_empty() && relays(&undone).is_empty());
    let channels: Vec<_> = undone
        .iter()
        .map(|o| serde_json::to_value(&o.event_ref().unwrap().data).unwrap())
        .map(|d| (d["channel"].clone(), d["reason"].clone()))
        .collect();
    let queued: Vec<_> = (origin_before.channels.iter())
        .map(|c| (json!(c), json!("notify")))
        .collect();
    assert!(!queued.is_empty());
    assert_eq!(
        channels, queued,
        "the queued period's channels hear of it again"
    );
    assert_eq!(
        h.state(&origin),
        restored(&origin_before, &time(T0 + DAY + 1))
    );
    let log: Vec<_> = log_before
        .iter()
        .map(|m| switchboard::core::state::StoredMessage {
            version: m.version + 2,
            ..m.clone()
        })
        .collect();
    assert_eq!(h.messages(&origin), log, "the _target tags are gone");
    assert_eq!(twin.state(&origin), origin_before);

    // The transfer, late, is refused on its own ID: the /import keeps its one result.
    let target_before = h.state(&target);
    for part in &transfer {
        let got = deliver(&mut h, part);
        let r = results(&got);
        assert_eq!(r.len(), 1, "{:#?}", lines(&got));
        assert_eq!(
            (&r[0]["message"], &r[0]["code"]),
            (field(part, "id"), &json!("unexpected_relay"))
        );
    }
    assert_eq!(h.state(&target), target_before);

    // The origin can be imported again, here by another target.
    let third = h.open(3);
    h.cmd(&third, ADA, &format!("/import {origin}")).applied();
    assert_eq!(h.state(&origin).status, Status::Archived);
}

#[test]
fn a_transfer_never_arriving_in_time_ends_as_if_never_asked() {
    transfer_never_arriving_in_time_ends_as_if_never_asked(Dialect::Web1on1);
}

#[test]
fn a_transfer_never_arriving_in_time_ends_as_if_never_asked_in_chatshipper() {
    transfer_never_arriving_in_time_ends_as_if_never_asked(Dialect::Chatshipper);
}

#[test]
fn a_transfer_arriving_before_the_late_message_applies_and_nothing_is_cancelled() {
    let mut h = H::new();
    let (origin, target) = setup(&mut h);
    let request = relays(&raw(&mut h, import(&target, &origin, IMPORT, &time(T0))));
    let transfer = relays(&deliver(&mut h, &request[0]));
    let applied = deliver(&mut h, &transfer[0]);
    assert_eq!(results(&applied)[0]["outcome"], "applied");
    let out = raw(
        &mut h,
        chat(&target, "0000000000000000000000f7", &time(T0 + DAY + 1)),
    );
    assert!(relays(&out).is_empty(), "{:#?}", lines(&out));
    let r = results(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["message"], "0000000000000000000000f7");
    assert_eq!(h.state(&origin).status, Status::Archived);
    assert_eq!(h.state(&target).pending_import, None);
}

#[test]
fn an_import_times_out_strictly_after_the_limit() {
    let mut h = H::new();
    let (origin, target) = setup(&mut h);
    raw(&mut h, import(&target, &origin, IMPORT, &time(T0)));
    let at_limit = raw(
        &mut h,
        chat(&target, "0000000000000000000000f7", &time(T0 + DAY)),
    );
    assert!(relays(&at_limit).is_empty(), "{:#?}", lines(&at_limit));
    assert!(h.state(&target).pending_import.is_some());
    let after = raw(
        &mut h,
        chat(&target, "0000000000000000000000f8", &time_ms(T0 + DAY, 1)),
    );
    assert_eq!(relays(&after).len(), 1, "{:#?}", lines(&after));
    assert_eq!(h.state(&target).pending_import, None);
}

#[test]
fn the_timeout_is_the_configured_one() {
    let mut h = H::with_import_timeout_ms(Dialect::Web1on1, 60_000);
    let (origin, target) = setup(&mut h);
    raw(&mut h, import(&target, &origin, IMPORT, &time(T0)));
    let at_limit = raw(
        &mut h,
        chat(&target, "0000000000000000000000f7", &time(T0 + 60)),
    );
    assert!(relays(&at_limit).is_empty());
    let after = raw(
        &mut h,
        chat(&target, "0000000000000000000000f8", &time(T0 + 61)),
    );
    assert_eq!(results(&after)[0]["code"], "import_timed_out");
}

#[test]
fn a_second_import_after_the_timeout_succeeds_and_the_first_transfer_is_refused() {
    let mut h = H::new();
    let (origin, target) = setup(&mut h);
    let first = relays(&raw(&mut h, import(&target, &origin, IMPORT, &time(T0))));
    // The second /import is what finds the first timed out: it fails it, then proceeds.
    let out = raw(
        &mut h,
        import(&target, &origin, IMPORT2, &time(T0 + DAY + 1)),
    );
    let r = results(&out);
    assert_eq!(r.len(), 1, "the second waits for its transfer");
    assert_eq!(
        (&r[0]["message"], &r[0]["code"]),
        (&json!(IMPORT), &json!("import_timed_out"))
    );
    let sent = relays(&out);
    let types: Vec<_> = sent.iter().map(|o| field(o, "type").clone()).collect();
    assert_eq!(types, [json!("import.cancel"), json!("import.request")]);
    // The origin gets them in the order produced: request 1, cancel 1, request 2.
    let transfer1 = relays(&deliver(&mut h, &first[0]));
    deliver(&mut h, &sent[0]);
    assert_eq!(h.state(&origin).status, Status::Queued);
    let transfer2 = relays(&deliver(&mut h, &sent[1]));
    assert_eq!(
        h.state(&origin).transferred.map(|t| t.command),
        Some(IMPORT2.to_string())
    );
    assert_eq!(
        results(&deliver(&mut h, &transfer1[0]))[0]["code"],
        "unexpected_relay"
    );
    let done = results(&deliver(&mut h, &transfer2[0]));
    assert_eq!(
        (&done[0]["message"], &done[0]["outcome"]),
        (&json!(IMPORT2), &json!("applied"))
    );
    let copies: Vec<_> = h
        .messages(&target)
        .into_iter()
        .filter_map(|m| m.meta.get("_source").cloned().map(|s| (s, m.id)))
        .collect();
    assert_eq!(copies.len(), 2);
    for (source, copy) in copies {
        let original = h
            .messages(&origin)
            .into_iter()
            .find(|m| json!(m.id) == source);
        assert_eq!(original.unwrap().meta["_target"], json!(copy));
        assert_eq!(copy, derive(&[IMPORT2, source.as_str().unwrap()]));
    }
}

#[test]
fn a_cancel_changes_nothing_where_nothing_was_archived_for_its_import() {
    let mut h = H::new();
    // An origin that refuses the request (another organization's) has nothing to undo.
    let target = h.open(2);
    let foreign = conv(5);
    h.send(
        json!({"conversation": foreign, "type": "chat", "role": "contact", "text": "hi",
        "organization": OTHER_ORG}),
    )
    .applied();
    let request = relays(&raw(&mut h, import(&target, &foreign, IMPORT, &time(T0))));
    let out = raw(
        &mut h,
        chat(&target, "0000000000000000000000f7", &time(T0 + DAY + 1)),
    );
    let refusal = relays(&deliver(&mut h, &request[0]));
    let before = h.state(&foreign);
    assert!(deliver(&mut h, &out[0]).is_empty());
    assert_eq!(h.state(&foreign), before);
    let late = results(&deliver(&mut h, &refusal[0]));
    assert_eq!(late.len(), 1);
    assert_ne!(
        late[0]["message"], IMPORT,
        "no second result for the /import"
    );

    // An origin archived for an import that succeeded ignores a cancel naming another one.
    let (origin, other) = (h.open(6), h.open(7));
    h.cmd(&other, ADA, &format!("/import {origin}")).applied();
    let before = (h.state(&origin), h.messages(&origin));
    let forged = json!({"conversation": origin, "type": "import.cancel", "role": "bot",
        "sender": ADA, "meta": {"target": other, "command": NOBODY}});
    assert!(h.send(forged).records.is_empty());
    assert_eq!((h.state(&origin), h.messages(&origin)), before);
}

#[test]
fn a_relay_record_reaching_the_target_late_fails_its_import_first() {
    let mut h = H::new();
    let (b, a, c) = (h.open(1), h.open(2), h.open(3));
    // A imports B; the request never arrives.
    let lost = relays(&raw(&mut h, import(&a, &b, IMPORT, &time(T0))));
    assert_eq!(lost.len(), 1);
    // A day later C imports A: its request, reaching A, first fails A's own import.
    let out = raw(&mut h, import(&c, &a, IMPORT2, &time(T0 + DAY + 1)));
    let at_a = deliver(&mut h, &relays(&out)[0]);
    let r = results(&at_a);
    assert_eq!(
        (&r[0]["message"], &r[0]["code"]),
        (&json!(IMPORT), &json!("import_timed_out"))
    );
    let sent = relays(&at_a);
    assert_eq!(field(&sent[0], "type"), "import.cancel");
    assert_eq!(sent[0].key, b);
    // No longer importing, A could be the origin: it archived itself for C.
    assert_eq!(h.state(&a).status, Status::Archived);
    let done = results(&deliver(&mut h, &sent[1]));
    assert_eq!(
        (&done[0]["message"], &done[0]["outcome"]),
        (&json!(IMPORT2), &json!("applied"))
    );
}
