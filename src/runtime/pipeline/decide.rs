//! Stage 4: what each record comes to, in the batch's order. A dead letter is produced as
//! such; a record its conversation's stored offset already covers is replayed from the outbox
//! or skipped; any other is applied with the core and its outputs kept in the new outbox.

use crate::core::directory::{Block, Directory};
use crate::core::event::{Outcome, Output, Topic};
use crate::core::message::{
    DeadLetter, Decoded, Invalid, Message, IMPORT_REQUEST, IMPORT_TRANSFER,
};
use crate::core::transition::{apply, invalid, Env};
use crate::core::Dialect;
use crate::runtime::store::{OutRecord, Pending};

use super::headers::{self, Headers};
use super::view::BatchDirectory;
use super::workset::{Work, Workset};
use super::{BatchOutput, InputRecord, PipelineError};

/// What one record came to.
#[derive(Debug)]
pub(super) enum Disposition {
    /// Unreadable, or too large: a dead letter.
    DeadLetter,
    /// Applied by an earlier attempt whose commit did not happen: its outputs again.
    Replayed,
    /// Applied and committed already: no outputs.
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
const COUNTED_TYPES: [&str; 7] = [
    "chat",
    "command",
    "form",
    "field",
    "mention",
    IMPORT_REQUEST,
    IMPORT_TRANSFER,
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
                    // comes with the transfer.
                    None if kind == IMPORT_REQUEST => "relayed",
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
        outputs: &mut Vec<OutRecord>,
    ) -> Result<Disposition, PipelineError> {
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
        if record.offset <= w.stored_offset {
            return w.replay(conversation, record.offset, outputs);
        }
        let (disposition, produced) = match readable {
            Ok(m) => apply_message(w, &mut self.view, &mut self.blocks, m, dialect),
            Err(i) => {
                let result = invalid(w.conversation.as_ref(), &i, &locator(record));
                (Disposition::Invalid, vec![result])
            }
        };
        w.keep(record, produced, outputs);
        Ok(disposition)
    }
}

/// Applies a fresh message with the core: the conversation, its log and the batch's block
/// lists change.
fn apply_message<D: Directory>(
    w: &mut Work,
    view: &mut BatchDirectory<'_, D>,
    blocks: &mut Vec<Block>,
    m: Message,
    dialect: Dialect,
) -> (Disposition, Vec<Output>) {
    let kind = m.type_name.clone();
    let env = Env {
        directory: view,
        dialect,
    };
    let t = apply(w.conversation.take(), &w.log, m, &env);
    w.log.apply(&t.log);
    w.writes.extend(t.log);
    w.conversation = t.conversation;
    for b in t.blocks {
        view.blocked.insert(&b);
        blocks.push(b);
    }
    let outcome = t.outcome;
    (Disposition::Applied { kind, outcome }, t.outputs)
}

impl Work {
    /// Takes a record the stored offset covers from the stored outbox.
    fn replay(
        &mut self,
        conversation: &str,
        offset: i64,
        outputs: &mut Vec<OutRecord>,
    ) -> Result<Disposition, PipelineError> {
        // Applied by an earlier attempt whose commit did not happen: same outputs again.
        if let Some(p) = self.stored_outbox.iter().find(|p| p.offset == offset) {
            outputs.extend(p.outputs.iter().cloned());
            self.outbox.push(p.clone());
            return Ok(Disposition::Replayed);
        }
        // Older than the whole outbox: the batch that wrote it ran only after the batches
        // before it had committed, so this record's outputs are committed already and the
        // consumer offset we resumed from lags behind them (seen once after a broker restart).
        // Emitting nothing is what exactly-once asks.
        let oldest = self.stored_outbox.iter().map(|p| p.offset).min();
        if oldest.is_none_or(|o| offset < o) {
            tracing::warn!(
                conversation = %conversation,
                offset,
                stored = self.stored_offset,
                "record already applied and committed; skipped"
            );
            return Ok(Disposition::Skipped);
        }
        Err(PipelineError::MissingOutbox {
            conversation: conversation.to_string(),
            stored: self.stored_offset,
            offset,
        })
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
        self.dirty = true;
    }
}

/// Where a record came from, naming dead letters and results of records without an ID.
fn locator(record: &InputRecord) -> String {
    format!("{}/{}", record.partition, record.offset)
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
        value: serde_json::to_string(&o.value).expect("outputs serialise"),
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
