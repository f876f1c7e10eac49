//! Shared by the schema and property tests: the published schemas as validators, and a
//! generator of random but plausible message sequences over the example directory.
#![allow(dead_code)]

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::{json, Value};

#[path = "../core/common.rs"]
pub mod common;
use common::*;

/// Every schema in `schemas/`, compiled (draft 2020-12, formats checked).
pub struct Schemas {
    by_name: HashMap<String, jsonschema::Validator>,
}

impl Schemas {
    pub fn load() -> Self {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let mut by_name = HashMap::new();
        let mut paths: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.extend(
            std::fs::read_dir(root.join("events"))
                .unwrap()
                .map(|e| e.unwrap().path()),
        );
        for path in paths
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
        {
            let schema: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            jsonschema::draft202012::meta::validate(&schema)
                .unwrap_or_else(|e| panic!("{} is not a valid schema: {e}", path.display()));
            let validator = jsonschema::draft202012::options()
                .should_validate_formats(true)
                .build(&schema)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches(".schema.json")
                .to_string();
            by_name.insert(name, validator);
        }
        Schemas { by_name }
    }

    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    /// The errors of `instance` against the schema `name` (empty: valid).
    pub fn errors(&self, name: &str, instance: &Value) -> Vec<String> {
        let v = self
            .by_name
            .get(name)
            .unwrap_or_else(|| panic!("no schema {name}"));
        v.iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect()
    }

    /// Validates one `{"topic", "key", "value"}` output line by its type.
    pub fn check_output(&self, line: &Value) {
        let value = &line["value"];
        let name = if line["topic"] == "conversation.messages" {
            "message".to_string()
        } else {
            value["type"]
                .as_str()
                .expect("an event has a type")
                .to_string()
        };
        let errors = self.errors(&name, value);
        assert!(
            errors.is_empty(),
            "{name} does not match its schema: {errors:#?}\n{value:#}"
        );
    }

    pub fn check_state(&self, doc: &Value) {
        let errors = self.errors("conversation", doc);
        assert!(
            errors.is_empty(),
            "state does not match its schema: {errors:#?}\n{doc:#}"
        );
    }
}

const USERS: [&str; 6] = [ADA, BEN, GINA, BOT, OLAF, NOBODY];
const TEXTS: [&str; 5] = [
    "hello",
    "this is urgent",
    "I have a complaint",
    "thanks",
    "",
];
const TOUCHPOINTS: [Option<&str>; 5] = [Some("web"), Some("sms"), Some("email"), None, None];

fn pick<'a>(items: &[&'a str], n: u8) -> &'a str {
    items[usize::from(n) % items.len()]
}

/// One generated message, as a handful of small numbers mapped onto the universe.
pub type Spec = (u8, u8, u8, u8, u8);

pub fn specs(max: usize) -> impl Strategy<Value = Vec<Spec>> {
    prop::collection::vec(
        (0u8..16, any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()),
        1..max,
    )
}

/// Turns specs into JSON-lines input: three conversations, commands of every family, valid and
/// invalid arguments, references to earlier messages, now and then equal timestamps.
pub fn build(specs: &[Spec]) -> Vec<String> {
    let mut lines = Vec::with_capacity(specs.len());
    let mut seconds = 0u64;
    for (i, &(kind, a, b, c, d)) in specs.iter().enumerate() {
        let id = format!("{:024x}", 0x5000 + i);
        let conversation = conv(1 + u32::from(a % 3));
        if d % 5 != 0 {
            seconds += 1;
        }
        let sender = USERS[usize::from(b) % USERS.len()];
        let earlier = format!("{:024x}", 0x5000 + usize::from(c) % (i + 1));
        let mut m = json!({"id": id, "conversation": conversation, "createdAt": time(seconds), "role": "agent",
            "sender": sender});
        if c % 3 != 0 {
            m["organization"] = json!(if d % 11 == 0 { OTHER_ORG } else { ORG });
        }
        if d % 13 == 0 {
            m["conversationType"] = json!("agent");
        }
        let command = |text: &str| json!({"type": "command", "text": text});
        let body = match kind {
            0..=2 => {
                let mut x = json!({"type": "chat", "role": "contact", "text": TEXTS[usize::from(b) % TEXTS.len()]});
                if let Some(tp) = TOUCHPOINTS[usize::from(c) % TOUCHPOINTS.len()] {
                    x["touchpoint"] = json!(tp);
                }
                if d % 2 == 0 {
                    x["contact"] = json!({"ip": format!("198.51.100.{}", d % 3)});
                }
                x
            }
            3 => json!({"type": "chat", "text": "agent reply", "isBackchannel": d % 4 == 0}),
            4 => json!({"type": "chat", "role": "bot", "text": "bot says"}),
            5 => command(
                [
                    "/notify",
                    "/notify 0000000000000000000000c1",
                    "/notify 0000000000000000000000ee",
                    "/notify x",
                ][usize::from(c) % 4],
            ),
            6 => command(
                [
                    "/accept",
                    "/join",
                    "/leave",
                    "/close",
                    "/follow",
                    "/unfollow",
                ][usize::from(c) % 6],
            ),
            7 => command(&format!("/assign {}", USERS[usize::from(c) % USERS.len()])),
            8 => command(
                [
                    "/set @name Renamed",
                    "/set @category 1",
                    "/set @category Boats",
                    "/set @language de",
                    "/set @touchpoint web",
                    "/set @context ctx",
                    "/set level 3",
                    "/set _sys 1",
                    "/set",
                    "/set @colour x",
                ][usize::from(c) % 10],
            ),
            9 => json!({"type": "command",
                "text": pick(&["/action like", "/action comment nice", "/action comment", "/action poke"], d),
                "meta": {"message": earlier}}),
            10 => {
                json!({"type": "form", "text": pick(&["+Trade-in", "-Trade-in", "+Test drive", "+Nope"], c),
                "meta": {"form": pick(&[F1, F1, F2, NOBODY], c)}})
            }
            11 => {
                json!({"type": "field", "text": pick(&[".make VW", ".model Golf", ".date fri", ".colour red"], c),
                "meta": {"form": if c % 4 == 2 { F2 } else { F1 }}})
            }
            12 => command(["/send", "/block", ">crm", "/frobnicate", "notify"][usize::from(c) % 5]),
            13 => command(&format!("/import {}", conv(1 + u32::from(c % 4)))),
            14 => json!({"type": "mention", "text": "@you",
                "meta": if c % 2 == 0 { json!({"targetUser": USERS[usize::from(d) % USERS.len()]}) } else { json!({"targetOrganization": PARENT}) }}),
            _ => {
                json!({"type": pick(&["image", "chat"], c), "role": pick(&["contact", "ghost"], d)})
            }
        };
        for (k, v) in body.as_object().unwrap() {
            m[k] = v.clone();
        }
        if kind == 6 && d % 3 == 0 {
            m["user"] = json!(USERS[usize::from(d) % USERS.len()]);
        }
        if m["role"] == "contact" {
            m.as_object_mut().unwrap().remove("sender");
        }
        lines.push(m.to_string());
    }
    lines
}
