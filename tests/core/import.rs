//! `/import`: the three relay steps, every refusal, and the guarantees around them.

use serde_json::json;
use switchboard::core::event::Topic;
use switchboard::core::state::Status;

use crate::common::*;

#[test]
fn import_merges_the_origin_into_the_target() {
    let mut h = H::new();
    let (origin, target) = (conv(1), conv(2));
    h.contact(&origin, "first, on email").applied(); // t1
    h.contact(&target, "second, on web").applied(); // t2
    h.agent_chat(&origin, BEN, "third, a reply").applied(); // t3
    let origin_log = h.messages(&origin);
    let origin_version = h.state(&origin).version;

    let out = h.cmd(&target, ADA, &format!("/import {origin}"));
    out.applied();
    // The relay went through the input topic both ways; relay records got no result.
    let relays: Vec<_> = out
        .records
        .iter()
        .filter(|r| r["topic"] == "conversation.messages")
        .collect();
    assert_eq!(relays.len(), 2);
    assert_eq!(
        (
            relays[0]["key"].as_str(),
            relays[0]["value"]["type"].as_str()
        ),
        (Some(origin.as_str()), Some("import.request"))
    );
    assert_eq!(
        (
            relays[1]["key"].as_str(),
            relays[1]["value"]["type"].as_str()
        ),
        (Some(target.as_str()), Some("import.transfer"))
    );
    assert_eq!(out.on(Topic::CommandResults).len(), 1);

    let o = h.state(&origin);
    assert_eq!(
        (o.name.as_str(), o.status),
        ("TRANSFERRED", Status::Archived)
    );
    assert_eq!(o.version, origin_version + 1);
    let t = h.state(&target);
    assert_eq!(t.version, 2);
    assert_eq!(t.pending_import, None);

    let log = h.messages(&target);
    let texts: Vec<&str> = log.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "first, on email",
            "second, on web",
            "third, a reply",
            &format!("/import {origin}")
        ]
    );
    for (i, m) in log.iter().enumerate() {
        assert_eq!(m.index, i as u64, "re-indexed from 0");
    }
    let tagged = h.messages(&origin);
    for (original, tagged) in origin_log.iter().zip(&tagged) {
        let copy = log
            .iter()
            .find(|m| m.meta.get("_source") == Some(&json!(original.id)))
            .expect("a copy");
        assert_ne!(copy.id, original.id);
        assert_eq!(copy.version, original.version + 1);
        assert_eq!(tagged.meta["_target"], json!(copy.id));
        assert_eq!(tagged.version, original.version + 1);
    }
    // "Replied" is recomputed on the merged log: the target's contact message (t2) is now
    // followed by the origin's agent reply (t3).
    assert!(t.replied());
    assert_eq!(t.message_count, 4);
}

#[test]
fn ties_put_the_target_first_then_order_by_id() {
    let mut h = H::new();
    let (origin, target) = (conv(1), conv(2));
    let at = "2024-05-01T10:00:00Z";
    for (c, id) in [
        (&origin, "00000000000000000000000b"),
        (&origin, "00000000000000000000000a"),
        (&target, "00000000000000000000000c"),
    ] {
        h.send(json!({"id": id, "conversation": c, "type": "chat", "role": "contact", "text": id, "organization": ORG,
            "touchpoint": "web", "createdAt": at}))
            .applied();
    }
    h.send(
        json!({"conversation": target, "type": "command", "role": "agent", "sender": ADA,
        "text": format!("/import {origin}"), "createdAt": at}),
    )
    .applied();
    let texts: Vec<String> = h.messages(&target).iter().map(|m| m.text.clone()).collect();
    assert_eq!(texts[0], "00000000000000000000000c");
    assert_eq!(
        texts[2..],
        ["00000000000000000000000a", "00000000000000000000000b"]
    );
}

#[test]
fn an_archived_origin_accepts_nothing_more() {
    let mut h = H::new();
    let (origin, target) = (h.open(1), h.open(2));
    h.cmd(&target, ADA, &format!("/import {origin}")).applied();
    h.contact(&origin, "hello?").rejected("archived");
    h.cmd(&origin, ADA, "/accept").rejected("archived");
    h.cmd(&conv(3), ADA, &format!("/import {origin}"))
        .rejected("unknown_conversation");
    let third = h.open(3);
    h.cmd(&third, ADA, &format!("/import {origin}"))
        .rejected("archived");
    assert_eq!(h.state(&third).pending_import, None);
}

#[test]
fn import_refusals_reach_the_command_result() {
    let mut h = H::new();
    let target = h.open(1);
    h.cmd(&target, ADA, "/import").rejected("missing_argument");
    h.cmd(&target, ADA, "/import 42").rejected("invalid_id");
    h.cmd(&target, ADA, &format!("/import {target}"))
        .rejected("same_conversation");
    let out = h.cmd(&target, ADA, &format!("/import {}", conv(9)));
    out.rejected("unknown_conversation");
    assert_eq!(out.result()["conversation"], target.as_str());
    // Another organization's conversation.
    let foreign = conv(5);
    h.send(json!({"conversation": foreign, "type": "chat", "role": "contact", "text": "hi", "organization": OTHER_ORG}))
        .applied();
    h.cmd(&target, ADA, &format!("/import {foreign}"))
        .rejected("organization_mismatch");
    assert_eq!(h.state(&foreign).status, Status::Queued, "origin untouched");
    assert_eq!(h.state(&target).version, 1, "target untouched");
    assert_eq!(h.state(&target).pending_import, None);
}

#[test]
fn one_import_at_a_time_and_no_mutual_archiving() {
    let mut h = H::new();
    let (a, b) = (h.open(1), h.open(2));
    // Step 1 on both before any relay is delivered.
    let cmd = |c: &str, o: &str, id: &str| {
        serde_json::to_vec(
            &json!({"id": id, "conversation": c, "type": "command", "role": "agent", "sender": ADA,
            "text": format!("/import {o}"), "createdAt": "2024-06-01T00:00:00Z"}),
        )
        .unwrap()
    };
    let to_b = h.sim.process(&cmd(&a, &b, "0000000000000000000000aa"), "x");
    let to_a = h.sim.process(&cmd(&b, &a, "0000000000000000000000bb"), "y");
    assert!(
        to_b.iter().all(|o| o.topic == Topic::Input),
        "no result yet"
    );
    let again = h.sim.process(&cmd(&a, &b, "0000000000000000000000ab"), "z");
    let line = switchboard::tools::simulate::output_line(again.last().unwrap());
    assert!(line.contains("import_in_progress"), "{line}");
    // Deliver the relays in order, and their answers.
    let mut queue: std::collections::VecDeque<Vec<u8>> = to_b
        .iter()
        .chain(&to_a)
        .map(|o| serde_json::to_vec(&o.value).unwrap())
        .collect();
    let mut results = Vec::new();
    while let Some(p) = queue.pop_front() {
        for o in h.sim.process(&p, "relay") {
            match o.topic {
                Topic::Input => queue.push_back(serde_json::to_vec(&o.value).unwrap()),
                Topic::CommandResults => {
                    results.push(switchboard::tools::simulate::output_line(&o))
                }
                _ => {}
            }
        }
    }
    assert_eq!(results.len(), 2);
    assert!(
        results.iter().all(|r| r.contains("import_in_progress")),
        "{results:#?}"
    );
    assert_ne!(h.state(&a).status, Status::Archived);
    assert_ne!(h.state(&b).status, Status::Archived);
    assert_eq!(
        (
            h.state(&a).pending_import.clone(),
            h.state(&b).pending_import.clone()
        ),
        (None, None)
    );
}

#[test]
fn a_stray_transfer_is_rejected_without_touching_state() {
    let mut h = H::new();
    let c = h.open(1);
    let before = h.state(&c);
    let out = h.send(json!({"conversation": c, "type": "import.transfer", "role": "bot", "sender": ADA,
        "meta": {"origin": conv(2), "command": {"id": NOBODY, "index": 0, "type": "command", "role": "agent",
        "sender": ADA, "text": "/import", "meta": {}, "createdAt": time(1), "likes": [], "comments": [], "version": 0}}}));
    out.rejected("unexpected_relay");
    h.send(json!({"conversation": c, "type": "import.request", "role": "bot", "sender": ADA, "meta": {"x": 1}}))
        .rejected("unexpected_relay");
    assert_eq!(h.state(&c), before);
}
