//! Chat messages: status rules, followers, touchpoints, delivery, auto-accept, team conversations,
//! blocking.

use serde_json::json;
use switchboard::core::event::Topic;
use switchboard::core::state::Status;

use crate::common::*;

#[test]
fn contact_chat_queues_a_closed_conversation_and_routes() {
    let mut h = H::new();
    let c = conv(1);
    let out = h.contact(&c, "hello");
    // No workflow of the organization or its parent matches: the catch-all, every channel of
    // the organization; the offline one waits without a notification.
    assert_eq!(out.notified(), [pair(C1, "message"), pair(C2, "message")]);
    let s = h.state(&c);
    assert_eq!(s.status, Status::Queued);
    assert_eq!(s.channels, [C1, C2]);
    assert_eq!(s.channels_offline, [C3]);
    assert_eq!(out.on(Topic::ChannelNotifications)[0]["organization"], ORG);
}

#[test]
fn contact_chat_renotifies_a_queued_conversation_and_spares_an_active_one() {
    let mut h = H::new();
    let c = h.open(1);
    assert_eq!(
        h.contact(&c, "anyone?").notified(),
        [pair(C1, "message"), pair(C2, "message")]
    );
    h.cmd(&c, ADA, "/accept").applied();
    let out = h.contact(&c, "thanks");
    out.applied();
    assert!(out.notified().is_empty());
    assert_eq!(h.state(&c).status, Status::Active);
}

#[test]
fn followers_who_have_not_accepted_get_an_inbox_notification() {
    let mut h = H::new();
    let c = h.open(1);
    h.cmd(&c, BEN, "/follow").applied();
    h.cmd(&c, ADA, "/follow").applied();
    h.cmd(&c, ADA, "/accept").applied();
    let out = h.contact(&c, "hello again");
    assert_eq!(out.inboxed(), [pair(BEN, "follow")]);
    assert!(h.state(&c).participant(BEN).unwrap().inbox);
    assert!(!h.state(&c).participant(ADA).unwrap().inbox);
}

#[test]
fn touchpoints_become_available_and_the_first_is_selected() {
    let mut h = H::new();
    let c = h.open(1);
    h.send(json!({"conversation": c, "type": "chat", "role": "contact", "text": "via wa", "touchpoint": "whatsapp",
        "contact": {"email": "sam@example.com"}}))
        .applied();
    let s = h.state(&c);
    assert_eq!(s.touchpoint.as_deref(), Some("web"));
    assert!(s.touchpoints["web"].selected);
    assert!(!s.touchpoints["whatsapp"].selected);
    assert_eq!(s.contact.email.as_deref(), Some("sam@example.com"));
    assert_eq!(
        s.contact.ip.as_deref(),
        Some("203.0.113.9"),
        "known details are kept"
    );
}

#[test]
fn agent_chat_is_delivered_on_the_selected_touchpoint_and_marks_the_reply() {
    let mut h = H::new();
    let c = h.open(1);
    h.cmd(&c, ADA, "/accept").applied();
    let out = h.agent_chat(&c, ADA, "Hello!");
    out.applied();
    let d = out.on(Topic::MessageDeliveries);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["touchpoint"], "web");
    assert_eq!(d[0]["message"], out.id.as_str());
    assert!(h.state(&c).replied());
}

#[test]
fn delivery_falls_back_in_order_web_facebook_email_sms() {
    let mut h = H::new();
    let c = conv(1);
    for tp in ["sms", "email", "facebook"] {
        h.send(json!({"conversation": c, "type": "chat", "role": "contact", "text": "hi", "organization": ORG,
            "touchpoint": tp}))
            .applied();
    }
    // Selected is sms (the first seen); remove it from availability by selecting another: the
    // selected touchpoint wins when present.
    assert_eq!(
        h.agent_chat(&c, ADA, "a").on(Topic::MessageDeliveries)[0]["touchpoint"],
        "sms"
    );
    h.cmd(&c, ADA, "/set @touchpoint email").applied();
    assert_eq!(
        h.agent_chat(&c, ADA, "b").on(Topic::MessageDeliveries)[0]["touchpoint"],
        "email"
    );
    // A conversation whose selected touchpoint is absent falls back in order.
    let mut s = h.state(&c);
    s.touchpoint = Some("pigeon".into());
    assert_eq!(
        switchboard::core::chat::delivery_touchpoint(&s).as_deref(),
        Some("facebook")
    );
    s.touchpoints.remove("facebook");
    assert_eq!(
        switchboard::core::chat::delivery_touchpoint(&s).as_deref(),
        Some("email")
    );
}

#[test]
fn no_touchpoint_is_rejected_but_the_message_is_stored() {
    let mut h = H::new();
    let c = conv(1);
    h.send(json!({"conversation": c, "type": "chat", "role": "contact", "text": "hi", "organization": ORG}))
        .applied();
    let out = h.agent_chat(&c, ADA, "hello?");
    out.rejected("no_touchpoint");
    assert!(out.on(Topic::MessageDeliveries).is_empty());
    assert_eq!(h.state(&c).version, 1);
    assert_eq!(h.messages(&c).len(), 2);
    assert!(!h.state(&c).replied());
}

#[test]
fn agent_chat_from_a_non_participant_accepts_the_conversation() {
    let mut h = H::new();
    let c = h.open(1);
    let out = h.agent_chat(&c, BEN, "I'll take this");
    assert_eq!(
        out.dequeued(),
        [pair(C1, "accept"), pair(C2, "accept"), pair(C3, "accept")]
    );
    let s = h.state(&c);
    assert_eq!(s.status, Status::Active);
    let p = s.participant(BEN).unwrap();
    assert!(p.active && p.accepted && !p.inbox);
    assert!(s.channels.is_empty() && s.channels_offline.is_empty());
}

#[test]
fn backchannel_is_not_delivered_and_is_not_a_reply() {
    let mut h = H::new();
    let c = h.open(1);
    h.cmd(&c, ADA, "/accept").applied();
    let out = h.send(
        json!({"conversation": c, "type": "chat", "role": "agent", "sender": ADA,
        "text": "note to self", "isBackchannel": true}),
    );
    out.applied();
    assert!(out.on(Topic::MessageDeliveries).is_empty());
    assert!(!h.state(&c).replied());
    // Not replied: leaving re-queues rather than closes.
    h.cmd(&c, ADA, "/leave").applied();
    assert_eq!(h.state(&c).status, Status::Queued);
}

#[test]
fn team_conversations_flag_every_inactive_participant_but_the_sender() {
    let mut h = H::new();
    let c = conv(1);
    h.send(json!({"conversation": c, "type": "chat", "role": "bot", "sender": BOT, "text": "standup in 5",
        "organization": ORG, "conversationType": "agent"}))
        .applied();
    assert_eq!(h.state(&c).kind, "agent");
    h.cmd_meta(&c, BOT, "/assign", json!({"users": [ADA, BEN]}))
        .applied();
    h.cmd(&c, ADA, "/join").applied();
    let out = h.send(
        json!({"conversation": c, "type": "chat", "role": "bot", "sender": BOT, "text": "now"}),
    );
    assert_eq!(out.inboxed(), [pair(BEN, "team")]);
    let out = h.agent_chat(&c, BEN, "coming");
    assert!(
        out.inboxed().is_empty(),
        "the sender is excepted, ADA is active"
    );
    assert!(
        out.on(Topic::MessageDeliveries).is_empty(),
        "no consumer to deliver to"
    );
    h.send(json!({"conversation": c, "type": "chat", "role": "contact", "text": "hi"}))
        .rejected("no_contact");
}

#[test]
fn block_blocks_the_ip_in_the_organization_and_closes() {
    let mut h = H::new();
    let c = h.open(1);
    let out = h.cmd(&c, ADA, "/block");
    out.applied();
    assert_eq!(
        out.dequeued(),
        [pair(C1, "block"), pair(C2, "block"), pair(C3, "block")]
    );
    assert_eq!(out.on(Topic::ChannelDequeues)[0]["user"], ADA);
    let s = h.state(&c);
    assert!(s.blocked);
    assert_eq!(s.status, Status::Closed);

    let stored = h.messages(&c).len();
    h.contact(&c, "let me back").rejected("blocked");
    assert_eq!(h.messages(&c).len(), stored, "not stored");
    // Same IP, another conversation of the organization.
    h.contact(&conv(2), "new me").rejected("blocked");
    assert!(!h.exists(&conv(2)));
    // Same IP in another organization is not blocked.
    h.send(
        json!({"conversation": conv(3), "type": "chat", "role": "contact", "text": "hi",
        "organization": OTHER_ORG, "contact": {"ip": "203.0.113.9"}}),
    )
    .applied();
    h.cmd(&c, ADA, "/block").ignored("no_change");
}

#[test]
fn block_without_a_known_ip_still_blocks_the_conversation() {
    let mut h = H::new();
    let c = conv(1);
    h.send(json!({"conversation": c, "type": "chat", "role": "contact", "text": "hi", "organization": ORG}))
        .applied();
    h.cmd(&c, ADA, "/block").applied();
    h.send(json!({"conversation": c, "type": "chat", "role": "contact", "text": "again"}))
        .rejected("blocked");
}

#[test]
fn a_block_holds_from_its_own_time_on_not_for_messages_sent_before_it() {
    let mut h = H::new();
    let c = h.open(1);
    h.cmd(&c, ADA, "/block").applied();
    let blocked_at = h.state(&c).updated_at.clone();
    // Sent before the block, from the same IP, but arriving after it (a lagging partition, a
    // replay): the block does not reach back.
    let early = |text: &str, at: &str| {
        json!({"conversation": conv(2), "type": "chat", "role": "contact", "text": text,
        "organization": ORG, "touchpoint": "web", "contact": {"ip": "203.0.113.9"},
        "createdAt": at})
    };
    h.send(early("sent before", &time(1))).applied();
    // At the block's own instant, and after it, it holds.
    h.send(early("same instant", &blocked_at))
        .rejected("blocked");
}
