//! Stage 4: what each record comes to, in the batch's order. A dead letter is produced as
//! such, and so is a record on another partition than its conversation's (misrouted); a record
//! behind the group's committed offset is skipped; one its conversation's stored offset covers
//! is replayed from the outbox (or, missing there, halts its partition); any other is applied
//! with the core and its outputs kept in the new outbox.

use crate::core::directory::Directory;
use crate::core::event::{Outcome, Output, Topic};
use crate::core::message::{
    DeadLetter, DeadReason, Decoded, Invalid, Message, IMPORT_CANCEL, IMPORT_REQUEST,
    IMPORT_TRANSFER,
};
use crate::core::transition::{apply, invalid, Env};
use crate::core::Dialect;
use crate::runtime::store::{OutRecord, Pending};

use super::headers::{self, Headers};
use super::limits::Limits;
use super::view::BatchDirectory;
use super::workset::{Work, Workset};
use super::{BatchOutput, GroupOffsets, Halt, InputRecord, PipelineError};

/// What one record came to.
#[derive(Debug)]
pub(super) enum Disposition {
    /// Unreadable, or too large: a dead letter.
    DeadLetter,
    /// Applied by an earlier attempt whose commit did not happen: its outputs again.
    Replayed,
    /// Behind the group's committed offset: applied and committed already, no outputs.
    Skipped,
    /// Applied now by the core; `kind` is the message type.
    Applied {
        kind: String,
        outcome: Option<Outcome>,
    },
    /// Readable, but breaking a rule of the input: a rejected result.
    Invalid,
}

/// The message types counted under their own name: SPEC section 2's, and the `/import` relay
/// records Switchboard writes itself. Any other `type` is the producer's to choose, so as a
/// label it would make one series per value sent: it is counted as `other`.
const COUNTED_TYPES: [&str; 8] = [
    "chat",
    "command",
    "form",
    "field",
    "mention",
    IMPORT_REQUEST,
    IMPORT_TRANSFER,
    IMPORT_CANCEL,
];

impl Disposition {
    /// The (message type, outcome) pair it is counted under in [`BatchOutput::kinds`]: both
    /// from fixed lists (`switchboard_messages_total`'s labels).
    fn into_label(self) -> (String, &'static str) {
        let (kind, outcome) = match self {
            Disposition::DeadLetter => ("unreadable", "dead_letter"),
            Disposition::Replayed => ("replayed", "replayed"),
            Disposition::Skipped => ("committed", "skipped"),
            Disposition::Invalid => ("invalid", "rejected"),
            Disposition::Applied { kind, outcome } => {
                let outcome = match outcome {
                    Some(Outcome::Applied) => "applied",
                    Some(Outcome::Ignored) => "ignored",
                    Some(Outcome::Rejected) => "rejected",
                    // Relay records to an origin report nothing themselves; the /import's result
                    // comes with the transfer, or with its timeout.
                    None if kind == IMPORT_REQUEST || kind == IMPORT_CANCEL => "relayed",
                    None => "deferred",
                };
                let kind = COUNTED_TYPES
                    .into_iter()
                    .find(|t| *t == kind)
                    .unwrap_or("other");
                (kind, outcome)
            }
        };
        (kind.to_string(), outcome)
    }
}

impl BatchOutput {
    pub(super) fn count(&mut self, disposition: Disposition) {
        match disposition {
            Disposition::Applied { .. } | Disposition::Invalid => self.applied += 1,
            Disposition::Replayed => self.replayed += 1,
            Disposition::Skipped => self.skipped += 1,
            Disposition::DeadLetter => {}
        }
        *self.kinds.entry(disposition.into_label()).or_default() += 1;
    }
}

impl<D: Directory> Workset<'_, D> {
    /// Decides what the record comes to and does it, adding its outputs to `outputs`.
    pub(super) fn decide(
        &mut self,
        record: &InputRecord,
        decoded: Decoded,
        dialect: Dialect,
        committed: &GroupOffsets,
        outputs: &mut Vec<OutRecord>,
    ) -> Result<Disposition, PipelineError> {
        // Behind the group's committed offset: done and committed already, outputs and dead
        // letters included (a consumer that resumed behind its commit). Emitting nothing is exact.
        if committed
            .of(record.partition)
            .is_some_and(|c| record.offset < c)
        {
            return Ok(Disposition::Skipped);
        }
        let readable: Result<Message, Invalid> = match decoded {
            Decoded::Message(m) => Ok(m),
            Decoded::Invalid(i) => Err(i),
            Decoded::Dead(dead) => {
                outputs.push(dead_letter(&dead, record));
                return Ok(Disposition::DeadLetter);
            }
        };
        let conversation = match &readable {
            Ok(m) => &m.conversation,
            Err(i) => &i.conversation,
        };
        let w = self.work.get_mut(conversation).expect("loaded above");
        // Offsets compare within one partition only: a record on another partition than its
        // conversation's was sent by a producer with another partitioner, or after partitions
        // were added. Applying it could reorder the conversation; skipping it by its offset
        // would lose it. It goes to the DLQ, where it can be re-driven (`switchboard replay`).
        if let Some(home) = w.partition.filter(|p| *p != record.partition) {
            outputs.push(dead_letter(&misrouted(conversation, home, record), record));
            return Ok(Disposition::DeadLetter);
        }
        if record.offset <= w.stored_offset {
            return w.replay(conversation, record, committed, outputs);
        }
        let (disposition, produced) = match readable {
            Ok(m) => apply_message(w, &mut self.view, m, dialect, &self.limits),
            Err(i) => {
                let result = invalid(w.conversation.as_ref(), &i, &locator(record));
                (Disposition::Invalid, vec![result])
            }
        };
        w.keep(record, produced, outputs);
        Ok(disposition)
    }
}

/// Applies a fresh message with the core: the conversation, its log and its blocks change.
fn apply_message<D: Directory>(
    w: &mut Work,
    view: &mut BatchDirectory<'_, D>,
    m: Message,
    dialect: Dialect,
    limits: &Limits,
) -> (Disposition, Vec<Output>) {
    let kind = m.type_name.clone();
    let env = Env {
        directory: view,
        dialect,
        max_relay_bytes: limits.relay_bytes(),
        import_timeout_ms: limits.import_timeout_ms,
    };
    let t = apply(w.conversation.take(), &w.log, m, &env);
    w.log.apply(&t.log);
    w.writes.extend(t.log);
    w.conversation = t.conversation;
    for b in t.blocks {
        view.blocked.insert(&b);
        w.blocks.push(b);
    }
    let outcome = t.outcome;
    (Disposition::Applied { kind, outcome }, t.outputs)
}

impl Work {
    /// Takes a record the stored offset covers, and the group has not committed, from the
    /// stored outbox: the outbox holds every record applied but not known to be committed,
    /// because a batch is written only once the one two before it has committed, and a
    /// conversation keeps its last two outboxes while the earlier is not known committed.
    fn replay(
        &mut self,
        conversation: &str,
        record: &InputRecord,
        committed: &GroupOffsets,
        outputs: &mut Vec<OutRecord>,
    ) -> Result<Disposition, PipelineError> {
        if let Some(p) = self
            .stored_outbox
            .iter()
            .find(|p| p.offset == record.offset)
        {
            outputs.extend(p.outputs.iter().cloned());
            self.outbox.push(p.clone());
            return Ok(Disposition::Replayed);
        }
        // Not in the outbox, so two later batches of this conversation were written, which
        // happens only after this record's batch committed: yet the group's offset is behind it. Either
        // the offsets were moved back (a reset, a new group ID, expired offsets), or Kafka lost
        // a commit it had acknowledged, and with it this record's outputs. Applying it again
        // would repeat its outputs, skipping it could lose them: only the operator can say.
        let partition = record.partition;
        let reason = match committed.of(partition) {
            Some(c) => format!("the group's committed offset {c}"),
            None => "the group's committed offset (none)".to_string(),
        };
        Err(PipelineError::Halt(vec![Halt {
            partition,
            reason: format!(
                "conversation {conversation} has applied offset {stored} of partition \
                 {partition}, but offset {offset} is behind it and yet not committed by \
                 {reason}: the group's offsets were moved back (a reset, a new group ID, expired \
                 offsets) or Kafka lost a commit it had acknowledged. If the offsets were moved \
                 back, move them forward to the partition's watermark (`switchboard rebuild \
                 --partition {partition} --show` prints it) with `kafka-consumer-groups \
                 --reset-offsets --to-offset`; if Kafka \
                 lost a commit, the outputs of the lost transactions are gone: re-drive them from \
                 the input with `switchboard replay`. Then restart",
                stored = self.stored_offset,
                offset = record.offset,
            ),
        }]))
    }

    /// Keeps a fresh record's outputs in the new outbox, as well as in the batch's, each with
    /// its headers: one set for the record's events, its own for its relay records.
    fn keep(&mut self, record: &InputRecord, produced: Vec<Output>, outputs: &mut Vec<OutRecord>) {
        let mut events: Option<Headers> = None;
        let produced: Vec<OutRecord> = produced
            .into_iter()
            .map(|o| {
                let headers = match o.topic {
                    Topic::Input => record.headers.clone(),
                    _ => events
                        .get_or_insert_with(|| headers::for_events(&record.headers))
                        .clone(),
                };
                out_record(o, headers)
            })
            .collect();
        outputs.extend(produced.iter().cloned());
        self.outbox.push(Pending {
            offset: record.offset,
            outputs: produced,
        });
        self.last_offset = record.offset;
        self.partition = Some(record.partition);
        self.dirty = true;
    }
}

/// Where a record came from, naming dead letters and results of records without an ID.
fn locator(record: &InputRecord) -> String {
    format!("{}/{}", record.partition, record.offset)
}

/// The dead letter of a record that arrived on another partition than its conversation's.
fn misrouted(conversation: &str, home: i32, record: &InputRecord) -> DeadLetter {
    DeadLetter {
        reason: DeadReason::Misrouted,
        detail: format!(
            "conversation {conversation} lives on partition {home}, but this record arrived on \
             partition {}: the producer's partitioner differs from `kafka.partitioner`, or the \
             topic's partitions changed",
            record.partition
        ),
        key: record.key.clone(),
        payload: record.payload.clone(),
    }
}

fn dead_letter(dead: &DeadLetter, record: &InputRecord) -> OutRecord {
    out_record(
        Output::dead_letter(dead, &locator(record), record.timestamp.as_deref()),
        headers::for_dead_letter(record, dead),
    )
}

fn out_record(o: Output, headers: Headers) -> OutRecord {
    OutRecord {
        topic: o.topic,
        value: serde_json::to_string(&o.value)
            .expect("outputs serialise")
            .into(),
        key: o.key,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(kind: &str) -> (String, &'static str) {
        Disposition::Applied {
            kind: kind.to_string(),
            outcome: Some(Outcome::Applied),
        }
        .into_label()
    }

    #[test]
    fn message_types_are_counted_under_a_fixed_list_of_labels() {
        for known in COUNTED_TYPES {
            assert_eq!(applied(known).0, known);
        }
        for unknown in [
            "attacker-type-15738",
            "",
            "Chat",
            "chat ",
            "conversation.status",
        ] {
            assert_eq!(applied(unknown), ("other".to_string(), "applied"));
        }
        let relay = Disposition::Applied {
            kind: IMPORT_REQUEST.to_string(),
            outcome: None,
        };
        assert_eq!(relay.into_label(), (IMPORT_REQUEST.to_string(), "relayed"));
    }
}
