//! What the store has applied of each input partition (its watermark, see
//! [`crate::runtime::store::Mark`]) against what the consumer group has committed, and the
//! partitions that must halt because of what a batch found: a store behind Kafka (review F1), or
//! a conversation whose stored state cannot be read (a poison conversation, which stops its
//! partition only).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::core::message::Decoded;
use crate::runtime::store::{Mark, StoreError};

use super::{GroupOffsets, Halt, InputRecord, PipelineError};

/// The batch's partitions of its input topic.
pub(super) struct Marks {
    topic: Option<Arc<str>>,
    pub(super) partitions: Vec<i32>,
}

impl Marks {
    pub(super) fn new(topic: Option<Arc<str>>, next_offsets: &BTreeMap<i32, i64>) -> Marks {
        Marks {
            topic,
            partitions: next_offsets.keys().copied().collect(),
        }
    }

    pub(super) fn topic(&self) -> &str {
        self.topic.as_deref().unwrap_or_default()
    }

    /// Halts every partition whose stored watermark is behind what the group committed: the
    /// store lost writes that Kafka acknowledged, and applying on would diverge silently.
    /// `stored` is in the order of `partitions`.
    pub(super) fn check(
        &self,
        stored: &[Option<i64>],
        committed: &GroupOffsets,
    ) -> Result<(), PipelineError> {
        let topic = self.topic();
        let halts: Vec<Halt> = self
            .partitions
            .iter()
            .zip(stored)
            .filter_map(|(&partition, &mark)| {
                let committed = committed.of(partition)?;
                let reason = match mark {
                    Some(mark) if mark >= committed => return None,
                    Some(mark) => format!(
                        "the state store has applied `{topic}` partition {partition} up to offset \
                         {mark}, but the group has committed {committed}: Redis lost writes that \
                         Kafka had acknowledged (a failover to a lagging replica, `appendfsync \
                         everysec`, a restore from a backup), and going on would diverge. \
                         Rebuild the partition's state from the topic with `switchboard rebuild \
                         --partition {partition}`, then restart"
                    ),
                    // Nothing stored at all is the same loss, or a store written before
                    // Switchboard kept watermarks; only the operator can tell which.
                    None if committed > 0 => format!(
                        "the state store has no watermark for `{topic}` partition {partition}, \
                         but the group has committed offset {committed}: Redis lost this \
                         partition's state (flushed, restored, replaced), or it was written by a \
                         Switchboard that kept no watermarks. Rebuild it from the topic with \
                         `switchboard rebuild --partition {partition}`, or, if the store is known \
                         to be complete, accept it with `switchboard rebuild --partition \
                         {partition} --accept-store`; then restart"
                    ),
                    None => return None,
                };
                Some(Halt { partition, reason })
            })
            .collect();
        if halts.is_empty() {
            Ok(())
        } else {
            Err(PipelineError::Halt(halts))
        }
    }

    /// The watermarks a written batch moves forward: every partition it consumed, dead letters
    /// included, so that a batch that changed no conversation still counts as applied.
    pub(super) fn to_write(&self, next_offsets: &BTreeMap<i32, i64>) -> Vec<Mark> {
        next_offsets
            .iter()
            .map(|(&partition, &next)| Mark {
                topic: self.topic().to_string(),
                partition,
                next,
            })
            .collect()
    }
}

/// A stored conversation that cannot be read halts the partitions its records came on, and
/// nothing else; any other error is the batch's.
pub(super) fn poisoned(e: PipelineError, decoded: &[(InputRecord, Decoded)]) -> PipelineError {
    let conversation = match &e {
        PipelineError::Store(
            StoreError::Corrupt { conversation, .. }
            | StoreError::CorruptOutbox { conversation, .. },
        ) => conversation.clone(),
        _ => return e,
    };
    halt_conversation(&conversation, &e.to_string(), decoded)
}

/// Halts the partitions that carried records of `conversation`, for `why`.
pub(super) fn halt_conversation(
    conversation: &str,
    why: &str,
    decoded: &[(InputRecord, Decoded)],
) -> PipelineError {
    let mut partitions: Vec<i32> = decoded
        .iter()
        .filter(|(_, d)| d.conversation().is_some_and(|c| c == conversation))
        .map(|(r, _)| r.partition)
        .collect();
    partitions.sort_unstable();
    partitions.dedup();
    PipelineError::Halt(
        partitions
            .into_iter()
            .map(|partition| Halt {
                partition,
                reason: format!(
                    "{why}. `switchboard inspect {conversation}` shows what is stored; repair \
                     or delete it, or rebuild the partition's state with `switchboard rebuild \
                     --partition {partition}`, then restart"
                ),
            })
            .collect(),
    )
}
