//! `/import` of an origin too long for one relay record: the transfer travels in parts, and the
//! target applies it once all have arrived, exactly as it applies a transfer of one record.

use serde_json::{json, Value};
use switchboard::core::event::{Output, Topic};

use crate::common::*;

/// Small enough that the origin below needs several parts, large enough for any one copy.
const SMALL: usize = 2500;
/// Large enough for the whole transfer in one record.
const BIG: usize = 1 << 20;
const COMMAND: &str = "00000000000000000000ca01";

/// An origin of many messages and a target with a few, both in the same organization.
fn conversations(h: &mut H) -> (String, String) {
    let (origin, target) = (conv(1), conv(2));
    h.contact(&origin, "hello from the origin").applied();
    h.contact(&target, "hello from the target").applied();
    for i in 0..24 {
        let text = format!("origin message {i}: {}", "words ".repeat(i % 7 * 10));
        if i % 2 == 0 {
            h.contact(&origin, &text).applied();
        } else {
            h.agent_chat(&origin, BEN, &text).applied();
        }
    }
    h.agent_chat(&target, ADA, "a reply in the target")
        .applied();
    (origin, target)
}

fn value(o: &Output) -> Value {
    serde_json::to_value(&o.value).unwrap()
}

/// Applies one record as the stream delivers it, without following the relay records it
/// causes; returns its outputs.
fn deliver(h: &mut H, record: &Value) -> Vec<Output> {
    h.sim.process(&serde_json::to_vec(record).unwrap(), "test")
}

/// `/import origin` into `target`, and the origin's answer to its request: the transfer
/// records, not yet delivered.
fn transfers(h: &mut H, target: &str, origin: &str) -> Vec<Value> {
    let command = json!({"id": COMMAND, "conversation": target, "type": "command", "role": "agent",
        "sender": ADA, "text": format!("/import {origin}"), "createdAt": time(100)});
    let request = deliver(h, &command);
    assert_eq!(request.len(), 1, "only the request, no result yet");
    deliver(h, &value(&request[0]))
        .iter()
        .inspect(|o| assert_eq!((o.topic, o.key.as_str()), (Topic::Input, target)))
        .map(value)
        .collect()
}

/// The outputs on the result topic.
fn results(outputs: &[Output]) -> Vec<Value> {
    outputs
        .iter()
        .filter(|o| o.topic == Topic::CommandResults)
        .map(value)
        .collect()
}

/// Both conversations' state and logs.
fn snapshot(h: &H, origin: &str, target: &str) -> Value {
    json!({"origin": h.sim.state_document()[origin], "target": h.sim.state_document()[target]})
}

/// The import applied from one record, with a limit that fits it: what parts must come to.
fn reference(between: bool) -> (Value, Value) {
    let mut h = H::with_max_relay_bytes(BIG);
    let (origin, target) = conversations(&mut h);
    let single = transfers(&mut h, &target, &origin);
    assert_eq!(single.len(), 1);
    assert_eq!(single[0]["meta"].get("part"), None);
    if between {
        h.contact(&target, "meanwhile").applied();
    }
    let result = results(&deliver(&mut h, &single[0]));
    assert_eq!(result.len(), 1);
    (snapshot(&h, &origin, &target), result[0].clone())
}

#[test]
fn a_long_origin_travels_in_parts_that_each_fit() {
    let mut h = H::with_max_relay_bytes(SMALL);
    let (origin, target) = conversations(&mut h);
    let parts = transfers(&mut h, &target, &origin);
    assert!(parts.len() >= 3, "{} parts", parts.len());
    let mut carried = 0;
    for (i, part) in parts.iter().enumerate() {
        let bytes = serde_json::to_vec(part).unwrap().len();
        assert!(bytes <= SMALL, "part {i} takes {bytes} bytes");
        assert_eq!(part["type"], "import.transfer");
        assert_eq!(part["meta"]["part"], json!(i + 1));
        assert_eq!(part["meta"]["parts"], json!(parts.len()));
        assert_eq!(part["meta"]["command"]["id"], COMMAND);
        carried += part["meta"]["messages"].as_array().unwrap().len();
    }
    assert_eq!(carried, h.messages(&origin).len(), "every copy, once");
    let ids: std::collections::BTreeSet<&str> =
        parts.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), parts.len(), "distinct IDs");

    let target_before = h.state(&target);
    let (last, first) = parts.split_last().unwrap();
    for part in first {
        assert!(
            deliver(&mut h, part).is_empty(),
            "no result before the last part"
        );
    }
    let t = h.state(&target);
    assert_eq!(t.version, target_before.version, "no version bump yet");
    assert_eq!(t.message_count, target_before.message_count);
    let kept = t
        .pending_import
        .and_then(|p| p.transfer)
        .expect("parts kept");
    assert_eq!(kept.received.len(), first.len());

    let result = results(&deliver(&mut h, last));
    let (expected_state, expected_result) = reference(false);
    assert_eq!(result, [expected_result], "one result, as from one record");
    assert_eq!(snapshot(&h, &origin, &target), expected_state);
    assert_eq!(h.state(&target).pending_import, None);
}

#[test]
fn parts_arriving_out_of_order_with_traffic_between_merge_the_same() {
    let mut h = H::with_max_relay_bytes(SMALL);
    let (origin, target) = conversations(&mut h);
    let mut parts = transfers(&mut h, &target, &origin);
    assert!(parts.len() >= 3);
    parts.reverse();
    let last = parts.pop().unwrap();
    for (i, part) in parts.iter().enumerate() {
        assert!(results(&deliver(&mut h, part)).is_empty());
        if i == 0 {
            h.contact(&target, "meanwhile").applied();
        }
    }
    let result = results(&deliver(&mut h, &last));
    let (expected_state, expected_result) = reference(true);
    assert_eq!(result, [expected_result]);
    assert_eq!(snapshot(&h, &origin, &target), expected_state);
}

#[test]
fn a_part_received_twice_is_kept_once() {
    let mut h = H::with_max_relay_bytes(SMALL);
    let (origin, target) = conversations(&mut h);
    let parts = transfers(&mut h, &target, &origin);
    assert!(results(&deliver(&mut h, &parts[0])).is_empty());
    let once = h.state(&target);
    assert!(
        deliver(&mut h, &parts[0]).is_empty(),
        "a duplicate gets no result"
    );
    assert_eq!(h.state(&target), once, "and changes nothing");
    let mut outputs = Vec::new();
    for part in &parts[1..] {
        outputs.extend(deliver(&mut h, part));
    }
    let (expected_state, expected_result) = reference(false);
    assert_eq!(results(&outputs), [expected_result]);
    assert_eq!(snapshot(&h, &origin, &target), expected_state);
    // Once the import is over, a part is a stray relay.
    let late = deliver(&mut h, &parts[1]);
    assert_eq!(results(&late)[0]["data"]["code"], "unexpected_relay");
    assert_eq!(snapshot(&h, &origin, &target), expected_state);
}

#[test]
fn a_refusal_travels_as_one_record() {
    let mut h = H::with_max_relay_bytes(SMALL);
    let (origin, target) = conversations(&mut h);
    let out = h.cmd(&target, ADA, &format!("/import {origin}"));
    out.applied();
    assert!(
        out.records
            .iter()
            .filter(|r| r["value"]["type"] == "import.transfer")
            .count()
            > 1
    );
    // A second import of the now archived origin is refused by the origin.
    let third = h.open(3);
    let out = h.cmd(&third, ADA, &format!("/import {origin}"));
    out.rejected("archived");
    let transfers: Vec<&Value> = out
        .records
        .iter()
        .filter(|r| r["value"]["type"] == "import.transfer")
        .collect();
    assert_eq!(transfers.len(), 1);
    assert_eq!(transfers[0]["value"]["meta"].get("part"), None);
}

#[test]
fn a_message_no_part_can_carry_refuses_the_import() {
    let mut h = H::with_max_relay_bytes(SMALL);
    let (origin, target) = conversations(&mut h);
    h.contact(&origin, &"x".repeat(SMALL)).applied();
    let before = (h.state(&origin), h.messages(&origin));
    let out = h.cmd(&target, ADA, &format!("/import {origin}"));
    out.rejected("limit_reached");
    assert!(out.code().is_some());
    assert_eq!(
        (h.state(&origin), h.messages(&origin)),
        before,
        "origin untouched"
    );
    assert_eq!(h.state(&target).pending_import, None);
    // The target may import again.
    h.cmd(&target, ADA, &format!("/import {}", conv(9)))
        .rejected("unknown_conversation");
}

#[test]
fn an_import_command_too_large_to_relay_is_refused_at_once() {
    let mut h = H::with_max_relay_bytes(SMALL);
    let (origin, target) = conversations(&mut h);
    let text = format!("/import {origin} {}", "padding ".repeat(SMALL / 8));
    let out = h.cmd(&target, ADA, &text);
    out.rejected("limit_reached");
    assert!(
        out.records
            .iter()
            .all(|r| r["topic"] != "conversation.messages"),
        "nothing relayed"
    );
    assert_eq!(h.state(&target).pending_import, None);
}
