//! Forms (`form` and `field` messages) and `/send`.

use serde_json::{json, Value};
use switchboard::core::event::Topic;

use crate::common::*;

fn form_msg(h: &mut H, c: &str, text: &str, meta: Value) -> Out {
    h.send(json!({"conversation": c, "type": "form", "role": "agent", "sender": ADA, "text": text, "meta": meta}))
}

fn field(h: &mut H, c: &str, text: &str, form: &str) -> Out {
    h.send(
        json!({"conversation": c, "type": "field", "role": "agent", "sender": ADA, "text": text,
        "meta": {"form": form}}),
    )
}

/// An open conversation in the Used Car category (slot 1: Trade-in and Test drive).
fn used_car(h: &mut H) -> String {
    let c = h.open(1);
    h.cmd(&c, ADA, "/set @category 1").applied();
    c
}

#[test]
fn activate_a_form_in_the_active_category() {
    let mut h = H::new();
    let c = used_car(&mut h);
    form_msg(&mut h, &c, "+Trade-in", json!({"form": F1})).applied();
    let s = h.state(&c);
    assert_eq!(s.forms.len(), 1);
    assert_eq!(
        (
            s.forms[0].form.as_str(),
            s.forms[0].name.as_str(),
            s.forms[0].category_index
        ),
        (F1, "Trade-in", 1)
    );
    form_msg(&mut h, &c, "+Trade-in", json!({"form": F1})).ignored("no_change");
}

#[test]
fn activate_by_name_or_in_an_explicit_category() {
    let mut h = H::new();
    let c = used_car(&mut h);
    form_msg(&mut h, &c, "+Test drive", json!({})).applied();
    form_msg(
        &mut h,
        &c,
        "+Test drive",
        json!({"form": F2, "categoryIndex": 0}),
    )
    .applied();
    form_msg(
        &mut h,
        &c,
        "+Trade-in",
        json!({"form": F1, "category": "New Car"}),
    )
    .rejected("form_not_in_category");
    let forms: Vec<(String, u8)> = h
        .state(&c)
        .forms
        .iter()
        .map(|f| (f.form.clone(), f.category_index))
        .collect();
    assert_eq!(forms, [(F2.to_string(), 1), (F2.to_string(), 0)]);
}

#[test]
fn form_errors() {
    let mut h = H::new();
    let c = h.open(1);
    form_msg(&mut h, &c, "+Trade-in", json!({"form": F1})).rejected("form_not_in_category");
    h.cmd(&c, ADA, "/set @category 0").applied();
    form_msg(&mut h, &c, "+Trade-in", json!({"form": F1})).rejected("form_not_in_category");
    form_msg(&mut h, &c, "+Nope", json!({})).rejected("unknown_form");
    form_msg(&mut h, &c, "+Nope", json!({"form": NOBODY})).rejected("unknown_form");
    form_msg(&mut h, &c, "Trade-in", json!({"form": F1})).rejected("invalid_argument");
    form_msg(
        &mut h,
        &c,
        "+Test drive",
        json!({"form": F2, "categoryIndex": 5}),
    )
    .rejected("invalid_category");
    form_msg(&mut h, &c, "-Test drive", json!({"form": F2})).rejected("form_not_active");
    h.send(json!({"conversation": c, "type": "form", "role": "contact", "text": "+Test drive"}))
        .rejected("forbidden");
}

#[test]
fn remove_a_form() {
    let mut h = H::new();
    let c = used_car(&mut h);
    form_msg(&mut h, &c, "+Trade-in", json!({"form": F1})).applied();
    form_msg(&mut h, &c, "-Trade-in", json!({"form": F1})).applied();
    assert!(h.state(&c).forms.is_empty());
}

#[test]
fn fields_of_an_active_form() {
    let mut h = H::new();
    let c = used_car(&mut h);
    field(&mut h, &c, ".make VW", F1).rejected("form_not_active");
    form_msg(&mut h, &c, "+Trade-in", json!({"form": F1})).applied();
    field(&mut h, &c, ".make Volkswagen Group", F1).applied();
    assert_eq!(h.state(&c).forms[0].fields["make"], "Volkswagen Group");
    field(&mut h, &c, ".make Volkswagen Group", F1).ignored("no_change");
    field(&mut h, &c, ".colour red", F1).rejected("unknown_field");
    field(&mut h, &c, "make VW", F1).rejected("invalid_argument");
    field(&mut h, &c, ". VW", F1).rejected("missing_argument");
    h.send(json!({"conversation": c, "type": "field", "role": "agent", "sender": ADA, "text": ".make VW"}))
        .rejected("missing_argument");
}

#[test]
fn send_one_completed_form_of_the_active_category() {
    let mut h = H::new();
    let c = used_car(&mut h);
    form_msg(&mut h, &c, "+Trade-in", json!({"form": F1})).applied();
    form_msg(&mut h, &c, "+Test drive", json!({"form": F2})).applied();
    field(&mut h, &c, ".make VW", F1).applied();
    h.cmd_meta(&c, ADA, "/send", json!({"form": F1}))
        .rejected("form_incomplete");
    field(&mut h, &c, ".model Golf", F1).applied();
    field(&mut h, &c, ".date friday", F2).applied();
    let before = h.messages(&c).len();
    let out = h.cmd_meta(&c, ADA, "/send", json!({"form": F1}));
    out.applied();
    let emails = out.on(Topic::EmailNotifications);
    assert_eq!(emails.len(), 1);
    assert_eq!(
        emails[0]["to"],
        json!(["tradein@north.dealer.example"]),
        "the form's own recipients"
    );
    assert_eq!(emails[0]["form"], F1);
    assert_eq!(emails[0]["fields"], json!({"make": "VW", "model": "Golf"}));
    let s = h.state(&c);
    assert_eq!(s.forms.len(), 1, "the test drive stays");
    assert_eq!(s.results.len(), 1);
    let log = h.messages(&c);
    assert_eq!(log.len(), before + 2, "the command and one results message");
    let results = log.last().unwrap();
    assert_eq!(results.kind, "results");
    assert_eq!(results.id, s.results[0].message);
    assert_eq!(
        results.meta["fields"],
        json!({"make": "VW", "model": "Golf"})
    );
    assert_eq!(
        s.version as usize,
        log.len() - 1,
        "one version for /send, none for the results message"
    );
}

#[test]
fn send_checks_the_named_form() {
    let mut h = H::new();
    let c = used_car(&mut h);
    h.cmd_meta(&c, ADA, "/send", json!({"form": F2}))
        .rejected("form_not_active");
    form_msg(&mut h, &c, "+Test drive", json!({"form": F2})).applied();
    field(&mut h, &c, ".date friday", F2).applied();
    h.cmd(&c, ADA, "/set @category 0").applied();
    h.cmd_meta(&c, ADA, "/send", json!({"form": F2}))
        .rejected("form_not_in_category");
}

#[test]
fn send_everything_completed_across_categories() {
    let mut h = H::new();
    let c = used_car(&mut h);
    h.cmd(&c, ADA, "/send").rejected("nothing_to_send");
    form_msg(&mut h, &c, "+Trade-in", json!({"form": F1})).applied();
    form_msg(&mut h, &c, "+Test drive", json!({"form": F2})).applied();
    form_msg(
        &mut h,
        &c,
        "+Test drive",
        json!({"form": F2, "categoryIndex": 0}),
    )
    .applied();
    h.send(json!({"conversation": c, "type": "field", "role": "agent", "sender": ADA, "text": ".date mon",
        "meta": {"form": F2, "categoryIndex": 0}}))
        .applied();
    field(&mut h, &c, ".date tue", F2).applied();
    let out = h.cmd(&c, ADA, "/send");
    out.applied();
    // The trade-in is incomplete and stays; both test drives go, to the organization's
    // recipients since the form has none of its own.
    let emails = out.on(Topic::EmailNotifications);
    assert_eq!(emails.len(), 2);
    assert_eq!(emails[0]["to"], json!(["sales@north.dealer.example"]));
    let s = h.state(&c);
    assert_eq!(s.forms.len(), 1);
    assert_eq!(s.forms[0].form, F1);
    let sent: Vec<u8> = s.results.iter().map(|r| r.category_index).collect();
    assert_eq!(sent, [1, 0]);
    assert_eq!(
        h.messages(&c)
            .iter()
            .filter(|m| m.kind == "results")
            .count(),
        2
    );
    h.cmd(&c, ADA, "/send").rejected("nothing_to_send");
}
