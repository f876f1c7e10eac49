//! Conversation creation, the envelope rules, authorisation, and what every message gets.

use serde_json::json;
use switchboard::core::event::Topic;
use switchboard::core::state::Status;

use crate::common::*;

#[test]
fn first_message_creates_the_conversation() {
    let mut h = H::new();
    let c = conv(1);
    h.contact(&c, "hello").applied();
    let s = h.state(&c);
    assert_eq!(s.organization, ORG);
    assert_eq!(s.version, 1);
    assert_eq!(s.status, Status::Queued);
    assert_eq!(s.kind, "contact");
    assert_eq!(s.created_at, time(1));
    assert_eq!(s.name, switchboard::core::names::fantasy_name(&c));
    assert_eq!(h.messages(&c).len(), 1);
    assert_eq!(h.messages(&c)[0].index, 0);
}

#[test]
fn unknown_conversation_without_organization() {
    let mut h = H::new();
    let out =
        h.send(json!({"conversation": conv(1), "type": "chat", "role": "contact", "text": "hi"}));
    out.rejected("unknown_conversation");
    assert_eq!(out.result()["version"], 0);
    assert!(!h.exists(&conv(1)));
}

#[test]
fn unknown_organization() {
    let mut h = H::new();
    h.send(
        json!({"conversation": conv(1), "type": "chat", "role": "contact", "text": "hi",
        "organization": NOBODY}),
    )
    .rejected("unknown_organization");
    assert!(!h.exists(&conv(1)));
}

#[test]
fn organization_is_ignored_after_creation() {
    let mut h = H::new();
    let c = h.open(1);
    h.send(json!({"conversation": c, "type": "chat", "role": "contact", "text": "again", "organization": OTHER_ORG}))
        .applied();
    assert_eq!(h.state(&c).organization, ORG);
}

#[test]
fn envelope_violations_are_rejected_with_the_current_version() {
    let mut h = H::new();
    let c = h.open(1);
    let out = h.send(json!({"id": "xyz", "conversation": c, "type": "chat", "role": "contact"}));
    out.rejected("invalid_id");
    assert_eq!(out.result()["version"], 1);
    h.send(json!({"conversation": c, "type": "chat", "role": "ghost", "sender": ADA}))
        .rejected("invalid_role");
    h.send(json!({"conversation": c, "type": "chat", "role": "agent"}))
        .rejected("missing_sender");
    h.send(json!({"conversation": c, "type": "chat", "role": "agent", "sender": ADA, "createdAt": "noon"}))
        .rejected("invalid_time");
    h.send(json!({"conversation": c, "role": "agent", "sender": ADA}))
        .rejected("missing_field");
    h.send(json!({"conversation": c, "type": "chat", "role": "agent", "sender": ADA, "meta": [1]}))
        .rejected("invalid_field");
    assert_eq!(h.state(&c).version, 1);
}

#[test]
fn unreadable_records_go_to_the_dead_letter_topic() {
    let mut h = H::new();
    let outs = h.sim.process(b"{oops", "line-1");
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].topic, Topic::DeadLetters);
    let line: serde_json::Value =
        serde_json::from_str(&switchboard::tools::simulate::output_line(&outs[0])).unwrap();
    assert_eq!(line["value"]["data"]["reason"], "not_json");
    assert_eq!(line["value"]["data"]["payload"], "{oops");
    assert_eq!(line["value"]["id"], "dlq:line-1:0");
    let outs = h.sim.process(&[0xc3, 0x28], "line-2");
    assert!(switchboard::tools::simulate::output_line(&outs[0]).contains("payloadBase64"));
}

#[test]
fn senders_and_named_users_must_belong_to_the_organization_or_an_ancestor() {
    let mut h = H::new();
    let c = h.open(1);
    h.cmd(&c, OLAF, "/join").rejected("forbidden");
    h.cmd(&c, NOBODY, "/join").rejected("forbidden");
    h.cmd_user(&c, ADA, "/join", OLAF).rejected("forbidden");
    h.cmd(&c, GINA, "/join").applied(); // a user of the parent organization
    h.agent_chat(&c, OLAF, "let me in").rejected("forbidden");
}

#[test]
fn commands_from_the_contact_are_forbidden() {
    let mut h = H::new();
    let c = h.open(1);
    h.send(json!({"conversation": c, "type": "command", "role": "contact", "text": "/close"}))
        .rejected("forbidden");
    assert_eq!(h.state(&c).status, Status::Queued);
}

#[test]
fn other_platform_types_are_stored_and_inert() {
    let mut h = H::new();
    let c = h.open(1);
    let before = h.state(&c);
    let out =
        h.send(json!({"conversation": c, "type": "image", "role": "contact", "text": "cat.png"}));
    out.applied();
    assert_eq!(out.records.len(), 1, "only the result");
    let after = h.state(&c);
    assert_eq!(after.version, before.version + 1);
    assert_eq!(after.status, before.status);
    assert_eq!(h.messages(&c)[1].kind, "image");
}

#[test]
fn unknown_and_non_commands() {
    let mut h = H::new();
    let c = h.open(1);
    h.cmd(&c, ADA, "/frobnicate").rejected("unknown_command");
    h.cmd(&c, ADA, "/Notify").rejected("unknown_command");
    h.cmd(&c, ADA, "/").rejected("unknown_command");
    h.cmd(&c, ADA, "notify").rejected("not_a_command");
    h.cmd(&c, ADA, "").rejected("not_a_command");
    h.cmd(&c, ADA, "   /join  ").applied();
}

#[test]
fn bot_commands_are_stored_ignored_and_forwarded() {
    let mut h = H::new();
    let c = h.open(1);
    let out = h.cmd(&c, ADA, " >onboard now ");
    out.ignored("bot_command");
    let fwd = out.on(Topic::BotCommands);
    assert_eq!(fwd.len(), 1);
    assert_eq!(fwd[0]["text"], ">onboard now");
    assert_eq!(fwd[0]["message"], out.id.as_str());
    assert_eq!(h.state(&c).version, 1, "ignored adds no version");
    assert_eq!(h.messages(&c).last().unwrap().text, " >onboard now ");
}

#[test]
fn every_event_is_a_cloudevent_with_deterministic_ids() {
    let mut h = H::new();
    let c = conv(1);
    let out = h.contact(&c, "hello");
    for (i, r) in out.records.iter().enumerate() {
        let v = &r["value"];
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], format!("{}:{i}", out.id));
        assert_eq!(v["subject"], c.as_str());
        assert_eq!(v["time"], time(1));
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(r["key"], c.as_str());
    }
    assert_eq!(
        out.records.last().unwrap()["value"]["type"],
        "chat.command.result"
    );
}

#[test]
fn rejected_messages_leave_state_unchanged() {
    let mut h = H::new();
    let c = h.accepted(1, ADA);
    let before = (h.state(&c), h.messages(&c));
    h.cmd(&c, ADA, "/notify").rejected("already_active");
    h.cmd(&c, ADA, "/set @category Boats")
        .rejected("invalid_category");
    h.cmd(&c, BEN, "/leave").rejected("not_a_participant");
    h.cmd_meta(&c, ADA, "/action like", json!({"message": NOBODY}))
        .rejected("unknown_message");
    assert_eq!((h.state(&c), h.messages(&c)), before);
}
