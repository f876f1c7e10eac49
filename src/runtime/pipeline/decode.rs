//! Stage 1: every record of the batch decoded, and the partitions merged by message time.

use std::collections::{BTreeMap, VecDeque};

use crate::core::message::{decode, DeadLetter, DeadReason, Decoded, KeySource};

use super::InputRecord;

/// Decodes every record, a record over `max_record_bytes` as a dead letter. Everything is
/// decoded first, to know which conversations and log messages to load.
pub(super) fn decode_all(
    records: Vec<InputRecord>,
    max_record_bytes: usize,
) -> Vec<(InputRecord, Decoded)> {
    records
        .into_iter()
        .map(|r| {
            let d = decode_one(&r, max_record_bytes);
            (r, d)
        })
        .collect()
}

fn decode_one(r: &InputRecord, max_record_bytes: usize) -> Decoded {
    if r.payload.len() <= max_record_bytes {
        return decode(KeySource::Record(r.key.as_deref()), &r.payload);
    }
    Decoded::Dead(DeadLetter {
        reason: DeadReason::TooLarge,
        detail: format!(
            "record of {} bytes exceeds the limit of {max_record_bytes}",
            r.payload.len()
        ),
        key: r.key.clone(),
        // The DLQ keeps a bounded prefix: the point is to say what it was.
        payload: r.payload[..max_record_bytes.min(r.payload.len()).min(4096)].to_vec(),
    })
}

/// Interleaves the batch's partitions by message time, keeping each partition in offset order.
///
/// Nothing orders conversations of different partitions, but some effects cross them (an IP
/// blocked by one conversation is refused in another): applying a batch in message time makes
/// those follow what happened first, as far as one batch sees. Records that are not messages
/// go first; they affect no other conversation.
pub(super) fn merge_by_time(decoded: Vec<(InputRecord, Decoded)>) -> Vec<(InputRecord, Decoded)> {
    let time = |d: &Decoded| match d {
        Decoded::Message(m) => m.created_at_nanos,
        _ => i64::MIN,
    };
    let total = decoded.len();
    let mut queues: BTreeMap<i32, VecDeque<(InputRecord, Decoded)>> = BTreeMap::new();
    for (r, d) in decoded {
        queues.entry(r.partition).or_default().push_back((r, d));
    }
    let mut merged = Vec::with_capacity(total);
    while let Some((_, partition)) = queues
        .iter()
        .filter_map(|(p, q)| q.front().map(|(_, d)| (time(d), *p)))
        .min()
    {
        merged.extend(queues.get_mut(&partition).and_then(|q| q.pop_front()));
    }
    merged
}
