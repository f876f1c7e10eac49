//! Stage 2: what a batch must read from the store. The first reads follow from the decoded
//! records alone; which outboxes and block lists to read then follows from the stored headers.

use std::collections::{HashMap, HashSet};

use crate::core::message::{Decoded, Role};
use crate::core::transition::needs;

use super::workset::Work;
use super::InputRecord;

/// The reads that follow from the records themselves.
#[derive(Debug, Default)]
pub(super) struct Reads {
    /// Every conversation of the batch, in order of first appearance: their headers.
    pub(super) conversations: Vec<String>,
    /// The log messages commands refer to (`/action`), by conversation.
    pub(super) messages: Vec<(String, Vec<String>)>,
    /// The conversations whose whole log a record needs (an import), in the same order.
    pub(super) whole_logs: Vec<String>,
}

impl Reads {
    pub(super) fn of(decoded: &[(InputRecord, Decoded)]) -> Reads {
        let mut conversations: Vec<String> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut wanted: HashMap<&str, (Vec<String>, bool)> = HashMap::new();
        for (_, d) in decoded {
            if let Decoded::Message(m) = d {
                let n = needs(m);
                if n.message.is_some() || n.all {
                    let entry = wanted.entry(&m.conversation).or_default();
                    entry.0.extend(n.message);
                    entry.1 |= n.all;
                }
            }
            if let Some(conversation) = d.conversation() {
                if seen.insert(conversation) {
                    conversations.push(conversation.clone());
                }
            }
        }
        let mut reads = Reads {
            conversations,
            ..Reads::default()
        };
        for id in &reads.conversations {
            match wanted.remove(id.as_str()) {
                Some((_, true)) => reads.whole_logs.push(id.clone()),
                Some((messages, false)) if !messages.is_empty() => {
                    reads.messages.push((id.clone(), messages));
                }
                _ => {}
            }
        }
        reads
    }
}

/// Outboxes only where the batch meets records already applied (a replay).
pub(super) fn replaying(
    decoded: &[(InputRecord, Decoded)],
    work: &HashMap<String, Work>,
) -> Vec<String> {
    let mut replaying: Vec<String> = Vec::new();
    for (r, d) in decoded {
        let Some(conversation) = d.conversation() else {
            continue;
        };
        if r.offset <= work[conversation].stored_offset && !replaying.contains(conversation) {
            replaying.push(conversation.clone());
        }
    }
    replaying
}

/// Block lists live in the store: look up every (organization, IP) a contact message of the
/// batch may be checked against.
pub(super) fn block_candidates(
    decoded: &[(InputRecord, Decoded)],
    work: &HashMap<String, Work>,
) -> Vec<(String, String)> {
    let mut candidates: HashSet<(String, String)> = HashSet::new();
    for (_, d) in decoded {
        let Decoded::Message(m) = d else { continue };
        if m.role != Role::Contact {
            continue;
        }
        let known = work
            .get(&m.conversation)
            .and_then(|w| w.conversation.as_ref());
        let Some(organization) = known.map(|c| &c.organization).or(m.organization.as_ref()) else {
            continue;
        };
        let ips = m
            .contact
            .as_ref()
            .and_then(|c| c.ip.as_ref())
            .into_iter()
            .chain(known.and_then(|c| c.contact.ip.as_ref()));
        for ip in ips {
            candidates.insert((organization.clone(), ip.clone()));
        }
    }
    candidates.into_iter().collect()
}
