//! `switchboard loadgen`'s model and `replay`'s pure parts: determinism, shape, budgets, and
//! traffic that the core mostly applies (a load test of refusals would measure little).

mod support;

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use switchboard::core::directory::MemoryDirectory;
use switchboard::core::event::Topic;
use switchboard::core::Dialect;
use switchboard::tools::loadgen::{directory, Generator, Model};
use switchboard::tools::replay::{due, Pace, Remap};
use switchboard::tools::simulate::Simulator;

fn model(conversations: u64, messages: Option<u64>, seed: u64) -> Model {
    Model {
        conversations,
        messages,
        rate: 500.0,
        seed,
        hot: 0.0,
        concurrency: 100,
        start_micros: 1_735_689_600_000_000,
    }
}

fn lines(m: &Model) -> Vec<Value> {
    Generator::new(m.clone()).collect()
}

/// A hot conversation carries its share of the traffic, spread over the whole run, and the
/// others share the rest; the total stays the model's.
#[test]
fn a_hot_conversation_carries_its_share_throughout() {
    let mut m = model(200, Some(20_000), 3);
    m.hot = 0.3;
    let all = lines(&m);
    assert_eq!(all.len(), 20_000);
    assert_eq!(all, lines(&m), "seeded");
    let mut per: HashMap<String, usize> = HashMap::new();
    for v in &all {
        *per.entry(v["conversation"].to_string()).or_default() += 1;
    }
    let (hot, n) = per.iter().max_by_key(|(_, n)| **n).unwrap();
    assert_eq!(*n, 6_000, "the hot conversation's share of 20,000");
    assert!(per.len() >= 200, "every conversation writes");
    // Its share holds early and late in the run, not only overall.
    for part in [&all[..2_000], &all[14_000..16_000]] {
        let share = part
            .iter()
            .filter(|v| &v["conversation"].to_string() == hot)
            .count();
        assert!((450..=750).contains(&share), "{share} of 2,000");
    }
    let uniform = lines(&model(200, Some(20_000), 3));
    let most = uniform
        .iter()
        .fold(HashMap::<String, usize>::new(), |mut m, v| {
            *m.entry(v["conversation"].to_string()).or_default() += 1;
            m
        });
    assert!(
        most.values().all(|n| *n <= 101),
        "without a hot share, 100 each"
    );
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_another_seed_other_ids() {
    let a = lines(&model(300, None, 1));
    assert_eq!(a, lines(&model(300, None, 1)));
    let b = lines(&model(300, None, 2));
    assert_ne!(a, b);
    let ids = |v: &[Value]| -> HashSet<String> {
        v.iter()
            .flat_map(|m| [m["id"].to_string(), m["conversation"].to_string()])
            .collect()
    };
    assert!(ids(&a).is_disjoint(&ids(&b)), "seeds must not collide");
    assert_ne!(
        directory(&model(300, None, 1)),
        directory(&model(300, None, 2))
    );
}

#[test]
fn messages_are_valid_ordered_in_time_and_paced_by_the_rate() {
    let schemas = support::Schemas::load();
    let m = model(400, None, 3);
    let all = lines(&m);
    let mut last: HashMap<String, String> = HashMap::new();
    let mut ids = HashSet::new();
    for (k, msg) in all.iter().enumerate() {
        assert_eq!(
            schemas.errors("message", msg),
            Vec::<String>::new(),
            "{msg}"
        );
        assert!(ids.insert(msg["id"].to_string()), "duplicate id {msg}");
        let created = msg["createdAt"].as_str().unwrap().to_string();
        let micros = chrono::DateTime::parse_from_rfc3339(&created)
            .unwrap()
            .timestamp_micros();
        assert_eq!(micros, m.start_micros + (k as i64 * 2000), "message {k}");
        let conversation = msg["conversation"].as_str().unwrap().to_string();
        if let Some(before) = last.insert(conversation, created.clone()) {
            assert!(before < created);
        }
    }
    assert_eq!(last.len(), 400, "every conversation appears");
}

#[test]
fn a_message_budget_is_met_exactly_and_spread_over_the_conversations() {
    let all = lines(&model(30, Some(3007), 4));
    assert_eq!(all.len(), 3007);
    let mut per: HashMap<String, usize> = HashMap::new();
    for m in &all {
        *per.entry(m["conversation"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per.len(), 30);
    assert!(per.values().all(|n| *n == 100 || *n == 101), "{per:?}");
    // One conversation with a long history: the shape the "100,000 messages" target needs.
    assert_eq!(lines(&model(1, Some(5000), 5)).len(), 5000);
}

#[test]
fn the_core_applies_the_traffic_against_its_directory() {
    for (m, what) in [
        (model(1500, None, 6), "one lifecycle each"),
        (model(20, Some(4000), 7), "many episodes each"),
    ] {
        let dir = MemoryDirectory::from_file(directory(&m)).unwrap();
        let mut sim = Simulator::new(dir, Dialect::Web1on1);
        let trace: String = lines(&m).iter().map(|l| format!("{l}\n")).collect();
        let mut outcomes: HashMap<(String, String), usize> = HashMap::new();
        let mut commands: HashSet<String> = HashSet::new();
        for l in trace.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            if let Some(word) = v["text"].as_str().and_then(|t| t.split(' ').next()) {
                if word.starts_with('/') {
                    commands.insert(word.to_string());
                }
            }
        }
        for o in sim.run_trace(&trace) {
            if o.topic == Topic::CommandResults {
                let line: Value =
                    serde_json::from_str(&switchboard::tools::simulate::output_line(&o)).unwrap();
                let d = &line["value"]["data"];
                let key = (
                    d["outcome"].as_str().unwrap().to_string(),
                    d["code"].as_str().unwrap_or("").to_string(),
                );
                *outcomes.entry(key).or_default() += 1;
            }
        }
        let total: usize = outcomes.values().sum();
        let applied = outcomes
            .get(&("applied".to_string(), String::new()))
            .copied()
            .unwrap_or(0);
        assert!(
            applied * 100 >= total * 95,
            "{what}: only {applied} of {total} applied: {outcomes:?}"
        );
        for needed in ["/notify", "/accept", "/leave", "/set", "/action", "/send"] {
            assert!(commands.contains(needed), "{what}: no {needed}");
        }
        if what == "one lifecycle each" {
            for needed in ["/assign", "/follow", "/block", "/import"] {
                assert!(commands.contains(needed), "{what}: no {needed}");
            }
        }
    }
}

#[test]
fn replay_paces_by_recorded_time_and_remaps_ids_consistently() {
    assert_eq!(
        due(Pace::Recorded { speed: 2.0 }, 1_000_000, 3_000_000),
        std::time::Duration::from_secs(1)
    );
    assert_eq!(due(Pace::Fastest, 0, 9_000_000), std::time::Duration::ZERO);
    assert_eq!(
        due(Pace::Recorded { speed: 1.0 }, 5_000_000, 1_000_000),
        std::time::Duration::ZERO,
        "a record older than the first is due at once"
    );

    let org = "0000000000000000000000a2";
    let mut first: Value = serde_json::json!({"id": "000000000000000000000001",
        "conversation": "00000000000000000000d004", "organization": org, "text": "hi"});
    let mut import: Value = serde_json::json!({"id": "000000000000000000000002",
        "conversation": "00000000000000000000d005", "sender": "0000000000000000000000e1",
        "text": "/import 00000000000000000000d004", "meta": {"message": "000000000000000000000001"}});
    let mut r = Remap::new("copy-1");
    r.apply(&mut first);
    r.apply(&mut import);
    let origin = first["conversation"].as_str().unwrap();
    assert_ne!(origin, "00000000000000000000d004");
    assert!(switchboard::core::id::is_object_id(origin));
    assert_eq!(import["text"], format!("/import {origin}"));
    assert_eq!(import["meta"]["message"], first["id"]);
    assert_eq!(first["organization"], org, "directory IDs stay");
    assert_eq!(import["sender"], "0000000000000000000000e1");
    // Another salt, other IDs; the same salt, the same ones.
    let mut again = serde_json::json!({"id": "000000000000000000000001", "conversation": "00000000000000000000d004"});
    Remap::new("copy-2").apply(&mut again);
    assert_ne!(again["conversation"], first["conversation"]);
    let mut same = serde_json::json!({"id": "000000000000000000000001", "conversation": "00000000000000000000d004"});
    Remap::new("copy-1").apply(&mut same);
    assert_eq!(same["conversation"], first["conversation"]);
}
