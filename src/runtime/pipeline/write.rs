//! Stage 5: a prepared batch, and writing it: every touched conversation atomically and only on
//! the state the batch read, together with its outbox and its blocks, and the partitions'
//! watermarks, in one transaction.

use tracing::Instrument as _;

use crate::runtime::store::{Mark, StateStore, StoreError, Write, WriteOutcome};

use super::marks::{poison, Marks};
use super::{BatchOutput, GroupOffsets, PipelineError};

/// A batch applied but not yet written: its outputs, and the state writes that must be stored
/// before they may be produced.
///
/// Preparing only reads the store, so a runtime may prepare batch n+1 while batch n's outputs
/// are still being committed, and write it too, as long as batch n-1 has committed: a
/// conversation keeps the outboxes of its last two writes while the earlier one is not known to
/// be committed (see [`crate::runtime::store::Write::committed`]), so its records older than
/// both must be committed ones.
#[derive(Debug)]
pub struct Prepared {
    pub(super) out: BatchOutput,
    pub(super) writes: Vec<Write>,
    /// The batch's partitions, whose watermarks are written with its conversations.
    pub(super) marks: Marks,
    /// The group's committed offsets, as known when the batch was prepared.
    pub(super) committed: GroupOffsets,
    pub(super) notes: Vec<Mark>,
}

impl Prepared {
    /// What the group has committed since the batch was prepared (the batch before it, which was
    /// committing meanwhile): the watermarks record the offsets committed when the batch is
    /// written.
    pub fn after_commits(mut self, committed: &GroupOffsets) -> Self {
        self.committed = committed.clone();
        self
    }

    /// Watermarks to write with the batch's own: what the group committed on partitions the
    /// batch has no records of (see [`note_commits`]).
    pub fn noting(mut self, notes: Vec<Mark>) -> Self {
        self.notes = notes;
        self
    }

    /// Writes the batch's conversations and watermarks; fails if one of them is no longer at
    /// the offset the batch read (another instance wrote it meanwhile).
    pub async fn write<S: StateStore>(self, store: &S) -> Result<BatchOutput, PipelineError> {
        let span = tracing::trace_span!(
            target: super::trace::TARGET,
            "write",
            conversations = self.writes.len()
        );
        async {
            let mut marks = self.marks.to_write(&self.out.next_offsets, &self.committed);
            marks.extend(
                self.notes
                    .into_iter()
                    .filter(|n| !self.out.next_offsets.contains_key(&n.partition)),
            );
            let names: Vec<(String, i32)> = self
                .writes
                .iter()
                .map(|w| (w.conversation.id.clone(), w.partition))
                .collect();
            let mut writes = self.writes;
            for w in &mut writes {
                w.committed = self.committed.of(w.partition).unwrap_or(-1);
            }
            let outcomes = store
                .write(writes, &marks)
                .await
                .map_err(|e| poisoned(e, &names))?;
            for ((id, _), outcome) in names.into_iter().zip(outcomes) {
                if outcome == WriteOutcome::Stale {
                    return Err(PipelineError::Stale(id));
                }
            }
            Ok(self.out)
        }
        .instrument(span)
        .await
    }
}

/// One conversation's data broke its write script: its partition halts, not the rest.
/// `names`: the batch's conversations with their partitions.
fn poisoned(e: StoreError, names: &[(String, i32)]) -> PipelineError {
    if let StoreError::Script { conversation, .. } = &e {
        if let Some((_, partition)) = names.iter().find(|(id, _)| id == conversation) {
            return PipelineError::Halt(vec![poison(conversation, &e.to_string(), *partition)]);
        }
    }
    e.into()
}

/// Tells the store what the group has committed (but not the offsets `noted`, which it was told
/// last), as watermarks that move only the committed offset (`next` -1 moves nothing: a store
/// that lost writes must still show it). Without it the store would learn of a batch's commit only with the partition's next
/// batch, and the group's offsets moved back into the last batch's span would look like that
/// batch not committed yet, and replay its outputs again.
pub fn note_commits(topic: &str, committed: &GroupOffsets, noted: &GroupOffsets) -> Vec<Mark> {
    committed
        .0
        .iter()
        .filter(|(p, c)| noted.of(**p) != Some(**c))
        .map(|(&partition, &c)| Mark {
            topic: topic.to_string(),
            partition,
            next: -1,
            committed: c,
        })
        .collect()
}
