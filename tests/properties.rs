//! Properties of the transition function over random message sequences: no panics, exact
//! version accounting, determinism, invariants after every step, one result per message.

mod support;

use std::collections::{HashMap, VecDeque};

use proptest::prelude::*;
use serde_json::Value;
use support::common::*;
use support::{build, specs};
use switchboard::core::command::action::{MAX_COMMENTS, MAX_LIKES};
use switchboard::core::event::Topic;
use switchboard::core::state::{Conversation, Status, StoredMessage};
use switchboard::core::Dialect;
use switchboard::tools::simulate::{output_line, Simulator};

type Snapshot = Option<(Conversation, Vec<StoredMessage>)>;

fn snapshot(sim: &Simulator, conversation: &str) -> Snapshot {
    sim.conversation(conversation)
        .map(|(c, m)| (c.clone(), m.to_vec()))
}

fn version(s: &Snapshot) -> u64 {
    s.as_ref().map_or(0, |(c, _)| c.version)
}

fn check_invariants(s: &Snapshot) {
    let Some((c, log)) = s else { return };
    if c.status != Status::Queued {
        assert!(
            c.channels.is_empty() && c.channels_offline.is_empty(),
            "channels while {:?}",
            c.status
        );
    }
    assert_eq!(c.message_count as usize, log.len());
    for (i, m) in log.iter().enumerate() {
        assert_eq!(m.index as usize, i, "indices are contiguous from 0");
        assert!(m.likes.len() <= MAX_LIKES && m.comments.len() <= MAX_COMMENTS);
        let mut likes = m.likes.clone();
        likes.sort();
        likes.dedup();
        assert_eq!(likes.len(), m.likes.len(), "a user likes a message once");
    }
    for p in &c.participants {
        assert!(p.has_any_flag(), "a participant with no flag is removed");
        assert_eq!(
            c.participants.iter().filter(|q| q.user == p.user).count(),
            1
        );
    }
}

/// Runs `lines` through the core one record at a time, relays included, checking every step.
/// Returns the printed output and the final state, for determinism checks.
fn run_checked(lines: &[String], dialect: Dialect) -> (Vec<String>, String) {
    let mut sim = Simulator::new(directory(), dialect);
    let mut queue: VecDeque<(String, bool)> = lines.iter().map(|l| (l.clone(), false)).collect();
    let mut results: HashMap<String, usize> = HashMap::new();
    let mut printed = Vec::new();
    while let Some((line, relay)) = queue.pop_front() {
        let msg: Value = serde_json::from_str(&line).unwrap();
        let id = msg["id"].as_str().unwrap().to_string();
        let conversation = msg["conversation"].as_str().unwrap().to_string();
        let before = snapshot(&sim, &conversation);
        let outputs = sim.process(line.as_bytes(), "p");
        let after = snapshot(&sim, &conversation);
        check_invariants(&after);

        let mut own_result = None;
        for o in &outputs {
            let l = output_line(o);
            let v: Value = serde_json::from_str(&l).unwrap();
            printed.push(l);
            match o.topic {
                Topic::Input => queue.push_back((v["value"].to_string(), true)),
                Topic::CommandResults => {
                    let data = &v["value"]["data"];
                    let about = data["message"].as_str().unwrap().to_string();
                    *results.entry(about.clone()).or_default() += 1;
                    if about == id || relay {
                        own_result = Some((
                            data["outcome"].as_str().unwrap().to_string(),
                            data["code"].as_str().unwrap_or_default().to_string(),
                        ));
                    }
                }
                _ => {}
            }
        }
        if before
            .as_ref()
            .is_some_and(|(c, _)| c.status == Status::Archived)
        {
            assert_eq!(after, before, "an archived conversation never changes");
        }
        let delta = version(&after) as i64 - version(&before) as i64;
        match &own_result {
            Some((outcome, _)) if outcome == "applied" => {
                assert_eq!(delta, 1, "applied adds exactly one: {line}")
            }
            Some(_) => assert_eq!(delta, 0, "ignored and rejected add nothing: {line}"),
            None if relay => {
                // The origin step: +1 exactly when it archived the origin.
                let archived = after
                    .as_ref()
                    .is_some_and(|(c, _)| c.status == Status::Archived)
                    && before
                        .as_ref()
                        .is_some_and(|(c, _)| c.status != Status::Archived);
                assert_eq!(delta, i64::from(archived), "{line}");
            }
            None => {
                // Only a deferred /import has no result yet, and it changes no version.
                assert!(
                    msg["text"]
                        .as_str()
                        .unwrap_or_default()
                        .trim()
                        .starts_with("/import"),
                    "no result for {line}"
                );
                assert_eq!(delta, 0);
            }
        }
        if let Some((outcome, code)) = &own_result {
            let storing = ["no_touchpoint", "bot_command"].contains(&code.as_str());
            if outcome != "applied" && !storing && !relay {
                assert_eq!(
                    after, before,
                    "refused messages leave state unchanged: {line}"
                );
            }
        }
    }
    for line in lines {
        let id = serde_json::from_str::<Value>(line).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(results.get(&id), Some(&1), "exactly one result for {line}");
    }
    (printed, sim.state_document().to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_step_keeps_the_invariants(s in specs(80), chatshipper in any::<bool>()) {
        let dialect = if chatshipper { Dialect::Chatshipper } else { Dialect::Web1on1 };
        run_checked(&build(&s), dialect);
    }

    #[test]
    fn the_same_input_gives_byte_identical_events_and_state(s in specs(60)) {
        let lines = build(&s);
        let first = run_checked(&lines, Dialect::Web1on1);
        let second = run_checked(&lines, Dialect::Web1on1);
        prop_assert_eq!(first, second);
    }

    #[test]
    fn arbitrary_bytes_give_exactly_one_clear_answer(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut sim = Simulator::new(directory(), Dialect::Web1on1);
        let outputs = sim.process(&bytes, "fuzz");
        prop_assert_eq!(outputs.len(), 1);
        prop_assert!(matches!(outputs[0].topic, Topic::DeadLetters | Topic::CommandResults));
    }

    #[test]
    fn corrupted_messages_give_exactly_one_clear_answer(
        s in specs(2),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = build(&s)[0].clone().into_bytes();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        // A corrupted byte can turn the message into a valid `/import`, whose answer comes back
        // with the relay: deliver relay records as the stream would, then count.
        let mut sim = Simulator::new(directory(), Dialect::Web1on1);
        let mut queue = std::collections::VecDeque::from([bytes]);
        let mut answers = 0;
        while let Some(record) = queue.pop_front() {
            for o in sim.process(&record, "fuzz") {
                match o.topic {
                    Topic::DeadLetters | Topic::CommandResults => answers += 1,
                    Topic::Input => queue.push_back(serde_json::to_vec(&o.value).unwrap()),
                    _ => {}
                }
            }
        }
        prop_assert_eq!(answers, 1);
    }
}
