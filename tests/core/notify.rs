//! `/notify`, routing (scope, order, `when`, `stop`, catch-all, offline channels) and mentions.

use serde_json::json;
use switchboard::core::state::Status;

use crate::common::*;

/// A conversation created by a bot command, so it is still closed.
fn closed(h: &mut H, n: u32) -> String {
    let c = conv(n);
    h.send(json!({"conversation": c, "type": "command", "role": "bot", "sender": BOT, "text": "/set topic cars",
        "organization": ORG}))
        .applied();
    assert_eq!(h.state(&c).status, Status::Closed);
    c
}

#[test]
fn notify_queues_and_runs_the_workflows() {
    let mut h = H::new();
    let c = closed(&mut h, 1);
    h.cmd(&c, ADA, "/set @category 1").applied();
    let out = h.cmd(&c, ADA, "/notify");
    out.applied();
    // The "used cars" workflow: c1 online, c3 offline.
    assert_eq!(out.notified(), [pair(C1, "notify")]);
    let s = h.state(&c);
    assert_eq!(s.status, Status::Queued);
    assert_eq!(s.channels, [C1]);
    assert_eq!(s.channels_offline, [C3]);
}

#[test]
fn notify_on_active_or_archived_is_rejected() {
    let mut h = H::new();
    let c = h.accepted(1, ADA);
    h.cmd(&c, ADA, "/notify").rejected("already_active");
}

#[test]
fn a_stop_workflow_that_notified_ends_the_evaluation() {
    let mut h = H::new();
    let c = conv(1);
    // "urgent" matches the first workflow (stop) and "complaint" the parent's: only c2.
    let out = h.contact(&c, "URGENT complaint!");
    assert_eq!(out.notified(), [pair(C2, "message")]);
}

#[test]
fn ancestors_workflows_run_after_the_organizations_own() {
    let mut h = H::new();
    let c = conv(1);
    let out = h.contact(&c, "I have a complaint");
    // Nothing of a2 matches; the parent's escalation desk does, so no catch-all.
    assert_eq!(out.notified(), [pair(C4, "message")]);
    assert!(h.state(&c).channels_offline.is_empty());
}

#[test]
fn when_conditions_must_all_hold() {
    let mut h = H::new();
    let c = closed(&mut h, 1);
    h.bot_cmd(&c, "/set @language de", json!({})).applied();
    // language alone is not enough: meta.region must be north too.
    assert_eq!(
        h.cmd(&c, ADA, "/notify").notified(),
        [pair(C1, "notify"), pair(C2, "notify")]
    );
    let c = closed(&mut h, 2);
    h.bot_cmd(&c, "/set @language de", json!({"region": "north"}))
        .applied();
    assert_eq!(h.cmd(&c, ADA, "/notify").notified(), [pair(C2, "notify")]);
}

#[test]
fn notify_named_channels_bypasses_workflows() {
    let mut h = H::new();
    let c = closed(&mut h, 1);
    h.cmd(&c, ADA, "/set @category 1").applied();
    let out = h.cmd_meta(
        &c,
        ADA,
        &format!("/notify {C5}"),
        json!({"channels": [C4, C3]}),
    );
    out.applied();
    assert_eq!(out.notified(), [pair(C4, "notify"), pair(C5, "notify")]);
    let s = h.state(&c);
    assert_eq!(s.channels, [C4, C5]);
    assert_eq!(s.channels_offline, [C3]);
}

#[test]
fn notify_rejects_unknown_or_malformed_channels() {
    let mut h = H::new();
    let c = closed(&mut h, 1);
    h.cmd(&c, ADA, &format!("/notify {NOBODY}"))
        .rejected("unknown_channel");
    h.cmd(&c, ADA, "/notify channel-1").rejected("invalid_id");
    h.cmd_meta(&c, ADA, "/notify", json!({"channels": "c1"}))
        .rejected("invalid_argument");
    assert_eq!(h.state(&c).status, Status::Closed);
}

#[test]
fn notify_over_named_organizations_only() {
    let mut h = H::new();
    let c = closed(&mut h, 1);
    h.cmd(&c, ADA, "/set @category 1").applied();
    // Only the parent's workflows: none matches, so the catch-all of the conversation's own
    // organization applies; the used-car workflow of a2 is not consulted.
    let out = h.cmd_meta(&c, ADA, "/notify", json!({"organizations": [PARENT]}));
    assert_eq!(out.notified(), [pair(C1, "notify"), pair(C2, "notify")]);
    h.cmd_meta(&c, ADA, "/notify", json!({"organizations": [NOBODY]}))
        .rejected("unknown_organization");
}

#[test]
fn renotify_while_queued_adds_channels_of_the_period() {
    let mut h = H::new();
    let c = conv(1);
    h.contact(&c, "urgent please").applied();
    assert_eq!(h.state(&c).channels, [C2]);
    h.cmd(&c, ADA, "/set @category 1").applied();
    let out = h.cmd(&c, ADA, "/notify");
    // "urgent" still matches the stop workflow first.
    assert_eq!(out.notified(), [pair(C2, "notify")]);
    let out = h.cmd_meta(&c, ADA, "/notify", json!({"channels": [C1]}));
    assert_eq!(out.notified(), [pair(C1, "notify")]);
    assert_eq!(h.state(&c).channels, [C2, C1]);
    // Accepting dequeues every channel of the period, offline ones too.
    let out = h.cmd(&c, ADA, "/accept");
    assert_eq!(out.dequeued(), [pair(C2, "accept"), pair(C1, "accept")]);
}

#[test]
fn mention_of_a_user_sets_its_inbox() {
    let mut h = H::new();
    let c = h.open(1);
    let out = h.send(json!({"conversation": c, "type": "mention", "role": "agent", "sender": ADA, "text": "@gina",
        "meta": {"targetUser": GINA}}));
    out.applied();
    assert_eq!(out.inboxed(), [pair(GINA, "mention")]);
    assert!(h.state(&c).participant(GINA).unwrap().inbox);
    h.send(json!({"conversation": c, "type": "mention", "role": "agent", "sender": ADA, "meta": {"targetUser": OLAF}}))
        .rejected("forbidden");
    h.send(
        json!({"conversation": c, "type": "mention", "role": "agent", "sender": ADA, "meta": {}}),
    )
    .rejected("missing_argument");
    h.send(
        json!({"conversation": c, "type": "mention", "role": "agent", "sender": ADA,
        "meta": {"targetOrganization": NOBODY}}),
    )
    .rejected("unknown_organization");
}

#[test]
fn mention_of_an_organization_routes_over_it() {
    let mut h = H::new();
    let c = conv(1);
    h.contact(&c, "I have a complaint").applied();
    h.cmd(&c, ADA, "/accept").applied();
    h.agent_chat(&c, ADA, "sorry to hear").applied();
    h.cmd(&c, ADA, "/leave").applied();
    assert_eq!(h.state(&c).status, Status::Closed);
    let out = h.send(
        json!({"conversation": c, "type": "mention", "role": "agent", "sender": ADA,
        "meta": {"targetOrganization": PARENT}}),
    );
    // The contact's last message still says "complaint": the parent's desk.
    assert_eq!(out.notified(), [pair(C4, "mention")]);
    assert_eq!(h.state(&c).status, Status::Queued);
    // An active conversation gets no channel notification.
    h.cmd(&c, ADA, "/accept").applied();
    let out = h.send(
        json!({"conversation": c, "type": "mention", "role": "agent", "sender": ADA,
        "meta": {"targetOrganization": PARENT}}),
    );
    out.applied();
    assert!(out.notified().is_empty());
}
