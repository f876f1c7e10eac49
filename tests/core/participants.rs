//! `/assign`, `/follow`, `/unfollow`, `/join`, `/accept`, `/leave` and `/close`.

use serde_json::json;
use switchboard::core::state::Status;
use switchboard::core::Dialect;

use crate::common::*;

#[test]
fn assign_flags_each_users_inbox() {
    let mut h = H::new();
    let c = h.open(1);
    let out = h.cmd_meta(&c, ADA, &format!("/assign {GINA}"), json!({"users": [BEN]}));
    out.applied();
    assert_eq!(out.inboxed(), [pair(BEN, "assign"), pair(GINA, "assign")]);
    let s = h.state(&c);
    assert!(s.participant(BEN).unwrap().inbox && s.participant(GINA).unwrap().inbox);
    assert_eq!(s.status, Status::Queued, "status unchanged");
}

#[test]
fn assign_needs_authorised_users() {
    let mut h = H::new();
    let c = h.open(1);
    h.cmd(&c, ADA, "/assign").rejected("missing_argument");
    h.cmd_meta(&c, ADA, "/assign", json!({"users": []}))
        .rejected("missing_argument");
    h.cmd_meta(&c, ADA, "/assign", json!({"users": [BEN, OLAF]}))
        .rejected("forbidden");
    h.cmd(&c, ADA, "/assign ben").rejected("invalid_id");
    assert!(h.state(&c).participants.is_empty(), "all or nothing");
}

#[test]
fn follow_and_unfollow() {
    let mut h = H::new();
    let c = h.open(1);
    h.cmd(&c, ADA, "/follow").applied();
    assert!(h.state(&c).participant(ADA).unwrap().follow);
    h.cmd(&c, ADA, "/follow").ignored("no_change");
    h.cmd_user(&c, ADA, "/follow", BEN).applied();
    assert!(h.state(&c).participant(BEN).unwrap().follow);

    h.cmd_user(&c, ADA, "/unfollow", BEN).applied();
    assert!(
        h.state(&c).participant(BEN).is_none(),
        "no flag left: removed"
    );
    h.cmd_user(&c, ADA, "/unfollow", BEN)
        .rejected("not_a_participant");
    h.cmd(&c, ADA, "/join").applied();
    h.cmd(&c, ADA, "/unfollow").applied();
    assert!(
        h.state(&c).participant(ADA).unwrap().active,
        "kept: still active"
    );
    h.cmd(&c, ADA, "/unfollow").ignored("no_change");
}

#[test]
fn join_adds_a_passive_participant_and_keeps_the_status() {
    let mut h = H::new();
    let c = h.open(1);
    h.cmd_user(&c, ADA, "/join", GINA).applied();
    let s = h.state(&c);
    let p = s.participant(GINA).unwrap();
    assert!(p.active && !p.accepted);
    assert_eq!(s.status, Status::Queued);
    // Still queued: a new contact message notifies the channels.
    assert_eq!(h.contact(&c, "hello?").notified().len(), 2);
    h.cmd_user(&c, ADA, "/join", GINA).ignored("no_change");
}

#[test]
fn accept_makes_the_conversation_active_and_dequeues() {
    let mut h = H::new();
    let c = h.open(1);
    h.cmd_meta(&c, ADA, "/assign", json!({"users": [BEN]}))
        .applied();
    let out = h.cmd_user(&c, ADA, "/accept", BEN);
    out.applied();
    assert_eq!(
        out.dequeued(),
        [pair(C1, "accept"), pair(C2, "accept"), pair(C3, "accept")]
    );
    let s = h.state(&c);
    assert_eq!(s.status, Status::Active);
    let p = s.participant(BEN).unwrap();
    assert!(
        p.active && p.accepted && !p.inbox,
        "inbox cleared on accept"
    );
    // Several may accept; the second dequeues nothing.
    let out = h.cmd(&c, ADA, "/accept");
    out.applied();
    assert!(out.dequeued().is_empty());
    h.cmd(&c, ADA, "/accept").ignored("no_change");
}

#[test]
fn accept_a_closed_conversation() {
    let mut h = H::new();
    let c = h.accepted(1, ADA);
    h.cmd(&c, ADA, "/leave").applied();
    assert_eq!(h.state(&c).status, Status::Closed);
    let out = h.cmd(&c, ADA, "/accept");
    out.applied();
    assert!(out.dequeued().is_empty());
    assert_eq!(h.state(&c).status, Status::Active);
}

#[test]
fn leave_after_a_reply_closes() {
    let mut h = H::new();
    let c = h.accepted(1, ADA);
    let out = h.cmd(&c, ADA, "/leave");
    out.applied();
    assert!(out.notified().is_empty());
    let s = h.state(&c);
    assert_eq!(s.status, Status::Closed);
    assert!(s.participant(ADA).is_none());
}

#[test]
fn leave_without_a_reply_requeues_and_routes() {
    let mut h = H::new();
    let c = h.open(1);
    h.cmd(&c, ADA, "/accept").applied();
    let out = h.cmd(&c, ADA, "/close");
    out.applied();
    assert_eq!(out.notified(), [pair(C1, "leave"), pair(C2, "leave")]);
    let s = h.state(&c);
    assert_eq!(s.status, Status::Queued);
    assert_eq!(s.channels_offline, [C3]);
}

#[test]
fn leave_keeps_the_conversation_active_while_another_has_accepted() {
    let mut h = H::new();
    let c = h.accepted(1, ADA);
    h.cmd(&c, BEN, "/accept").applied();
    let out = h.cmd(&c, ADA, "/leave");
    out.applied();
    assert!(out.notified().is_empty() && out.dequeued().is_empty());
    assert_eq!(h.state(&c).status, Status::Active);
    h.cmd(&c, BEN, "/leave").applied();
    assert_eq!(h.state(&c).status, Status::Closed);
}

#[test]
fn leave_keeps_a_follower_as_participant() {
    let mut h = H::new();
    let c = h.accepted(1, ADA);
    h.cmd(&c, ADA, "/follow").applied();
    h.cmd(&c, ADA, "/leave").applied();
    let s = h.state(&c);
    let p = s.participant(ADA).unwrap();
    assert!(p.follow && !p.active && !p.accepted && !p.inbox);
    // Nothing left to leave in a closed, replied conversation.
    h.cmd(&c, ADA, "/leave").ignored("no_change");
    h.cmd(&c, BEN, "/leave").rejected("not_a_participant");
}

#[test]
fn web1on1_leave_closes_only_if_accepted_since_queued() {
    for (dialect, expected) in [
        (Dialect::Web1on1, Status::Queued),
        (Dialect::Chatshipper, Status::Closed),
    ] {
        let mut h = H::with_dialect(dialect);
        let c = h.open(1);
        h.cmd(&c, ADA, "/join").applied();
        // ADA is a participant already: replying does not accept.
        h.agent_chat(&c, ADA, "hi there").applied();
        assert!(h.state(&c).replied());
        assert!(!h.state(&c).accepted_since_queued);
        h.cmd(&c, ADA, "/leave").applied();
        assert_eq!(h.state(&c).status, expected, "{dialect:?}");
    }
}
