//! `/set` (properties and metadata) and `/action like|comment`.

use serde_json::json;
use switchboard::core::Dialect;

use crate::common::*;

#[test]
fn set_name_context_language() {
    let mut h = H::new();
    let c = h.open(1);
    h.cmd(&c, ADA, "/set @name  Account Review ").applied();
    h.cmd(&c, ADA, "/set @context Trade-in valuation").applied();
    h.cmd(&c, ADA, "/set @language zh-CN").applied();
    let s = h.state(&c);
    assert_eq!(s.name, "Account Review");
    assert_eq!(s.context.as_deref(), Some("Trade-in valuation"));
    assert_eq!(s.language.as_deref(), Some("zh-CN"));
    h.cmd(&c, ADA, "/set @name Account Review")
        .ignored("no_change");
    h.cmd(&c, ADA, "/set @name").rejected("missing_argument");
    h.cmd(&c, ADA, "/set @language German")
        .rejected("invalid_language");
    h.cmd(&c, ADA, "/set @language DE")
        .rejected("invalid_language");
    h.cmd(&c, ADA, "/set @colour blue")
        .rejected("unknown_property");
}

#[test]
fn context_is_web1on1_only() {
    let mut h = H::with_dialect(Dialect::Chatshipper);
    let c = h.open(1);
    h.cmd(&c, ADA, "/set @context x")
        .rejected("unknown_property");
}

#[test]
fn set_category_by_name_or_index() {
    let mut h = H::new();
    let c = h.open(1);
    h.cmd(&c, ADA, "/set @category Used Car").applied();
    assert_eq!(
        (h.state(&c).category_index, h.state(&c).category.as_deref()),
        (Some(1), Some("Used Car"))
    );
    h.cmd(&c, ADA, "/set @category 0").applied();
    assert_eq!(
        (h.state(&c).category_index, h.state(&c).category.as_deref()),
        (Some(0), Some("New Car"))
    );
    h.cmd(&c, ADA, "/set @category 0").ignored("no_change");
    h.cmd(&c, ADA, "/set @category 7")
        .rejected("invalid_category");
    h.cmd(&c, ADA, "/set @category 12")
        .rejected("invalid_category");
    h.cmd(&c, ADA, "/set @category used car")
        .rejected("invalid_category");
}

#[test]
fn set_touchpoint_must_be_available() {
    let mut h = H::new();
    let c = h.open(1);
    h.send(json!({"conversation": c, "type": "chat", "role": "contact", "text": "x", "touchpoint": "sms"})).applied();
    h.cmd(&c, ADA, "/set @touchpoint email")
        .rejected("invalid_touchpoint");
    h.cmd(&c, ADA, "/set @touchpoint sms").applied();
    let s = h.state(&c);
    assert_eq!(s.touchpoint.as_deref(), Some("sms"));
    assert!(s.touchpoints["sms"].selected && !s.touchpoints["web"].selected);
}

#[test]
fn set_meta_pair_and_object() {
    let mut h = H::new();
    let c = h.open(1);
    h.cmd(&c, ADA, "/set engagement very high").applied();
    assert_eq!(h.state(&c).meta["engagement"], "very high");
    h.cmd(&c, ADA, "/set engagement very high")
        .ignored("no_change");
    h.cmd_meta(
        &c,
        ADA,
        "/set",
        json!({"scores": [8, 7, 6.5], "tier": "gold"}),
    )
    .applied();
    h.cmd_meta(&c, ADA, "/set source web", json!({"tier": null}))
        .applied();
    let meta = h.state(&c).meta;
    assert_eq!(meta["scores"], json!([8, 7, 6.5]));
    assert_eq!(meta["source"], "web");
    assert!(!meta.contains_key("tier"), "null deletes");
    h.cmd_meta(&c, ADA, "/set", json!({"missing": null}))
        .ignored("no_change");
    h.cmd(&c, ADA, "/set").rejected("missing_argument");
    h.cmd(&c, ADA, "/set lonely").rejected("missing_argument");
}

#[test]
fn system_keys_are_for_bots() {
    let mut h = H::new();
    let c = h.open(1);
    h.cmd(&c, ADA, "/set _title Hello").rejected("reserved_key");
    h.cmd_meta(&c, ADA, "/set", json!({"_url": "https://x"}))
        .rejected("reserved_key");
    h.bot_cmd(&c, "/set _title Hello", json!({"_url": "https://x"}))
        .applied();
    let meta = h.state(&c).meta;
    assert_eq!(
        (meta["_title"].as_str(), meta["_url"].as_str()),
        (Some("Hello"), Some("https://x"))
    );
}

#[test]
fn like_once_per_user() {
    let mut h = H::new();
    let c = conv(1);
    let first = h.contact(&c, "hello").id;
    let out = h.cmd_meta(&c, ADA, "/action like", json!({"message": first}));
    out.applied();
    h.cmd_meta(&c, BEN, "/action like", json!({"message": first}))
        .applied();
    h.cmd_meta(&c, ADA, "/action like", json!({"message": first}))
        .ignored("already_liked");
    let m = &h.messages(&c)[0];
    assert_eq!(m.likes, [ADA, BEN]);
    assert_eq!(m.version, 2);
    assert_eq!(h.state(&c).version, 3);
}

#[test]
fn a_message_holds_at_most_100_likes() {
    let (dir, agents) = directory_with_agents(101);
    let mut h = H::with_directory(dir, Dialect::Web1on1);
    let c = conv(1);
    let first = h.contact(&c, "hello").id;
    for a in &agents[..100] {
        h.cmd_meta(&c, a, "/action like", json!({"message": first}))
            .applied();
    }
    h.cmd_meta(&c, &agents[100], "/action like", json!({"message": first}))
        .rejected("limit_reached");
    assert_eq!(h.messages(&c)[0].likes.len(), 100);
}

#[test]
fn comments_reference_the_command_and_stop_at_10() {
    let mut h = H::new();
    let c = conv(1);
    let first = h.contact(&c, "hello").id;
    let out = h.cmd_meta(
        &c,
        BEN,
        "/action comment  Good lead ",
        json!({"message": first}),
    );
    out.applied();
    let m = &h.messages(&c)[0];
    assert_eq!(m.comments.len(), 1);
    assert_eq!(
        (m.comments[0].user.as_str(), m.comments[0].message.as_str()),
        (BEN, out.id.as_str())
    );
    assert_eq!(m.comments[0].text, "Good lead");
    for _ in 1..10 {
        h.cmd_meta(&c, ADA, "/action comment again", json!({"message": first}))
            .applied();
    }
    h.cmd_meta(
        &c,
        ADA,
        "/action comment one more",
        json!({"message": first}),
    )
    .rejected("limit_reached");
    assert_eq!(h.messages(&c)[0].comments.len(), 10);
}

#[test]
fn action_argument_errors() {
    let mut h = H::new();
    let c = conv(1);
    let first = h.contact(&c, "hello").id;
    h.cmd_meta(&c, ADA, "/action comment", json!({"message": first}))
        .rejected("missing_argument");
    h.cmd(&c, ADA, "/action like").rejected("missing_argument");
    h.cmd(&c, ADA, "/action").rejected("missing_argument");
    h.cmd_meta(&c, ADA, "/action share", json!({"message": first}))
        .rejected("unknown_action");
    h.cmd_meta(&c, ADA, "/action like", json!({"message": NOBODY}))
        .rejected("unknown_message");
    h.cmd_meta(&c, ADA, "/action like", json!({"message": 7}))
        .rejected("invalid_argument");
    // A message of another conversation is unknown here.
    let other = h.contact(&conv(2), "elsewhere").id;
    h.cmd_meta(&c, ADA, "/action like", json!({"message": other}))
        .rejected("unknown_message");
}
