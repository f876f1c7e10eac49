//! What the store has applied of each input partition (its watermark, see
//! [`crate::runtime::store::Mark`]) against what the consumer group has committed, and the
//! partitions that must halt because of what a batch found: a store behind Kafka (review F1), or
//! a conversation whose stored state cannot be read (a poison conversation, which stops its
//! partition only).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::core::message::Decoded;
use crate::runtime::store::{Mark, StoreError, Watermark};

use super::{GroupOffsets, Halt, InputRecord, PipelineError};

/// The batch's partitions of its input topic.
#[derive(Debug)]
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

    /// Halts every partition whose stored watermark says the store and the group's committed
    /// offsets disagree (see [`Watermark`]): the store behind, or the offsets moved back.
    /// `stored` is in the order of `partitions`.
    pub(super) fn check(
        &self,
        stored: &[Option<Watermark>],
        committed: &GroupOffsets,
    ) -> Result<(), PipelineError> {
        let halts: Vec<Halt> = self
            .partitions
            .iter()
            .zip(stored)
            .filter_map(|(&partition, &mark)| {
                let reason = self.disagreement(partition, mark, committed.of(partition))?;
                Some(Halt { partition, reason })
            })
            .collect();
        if halts.is_empty() {
            Ok(())
        } else {
            Err(PipelineError::Halt(halts))
        }
    }

    /// Why the store's watermark and the group's committed offset disagree, if they do.
    fn disagreement(
        &self,
        partition: i32,
        mark: Option<Watermark>,
        committed: Option<i64>,
    ) -> Option<String> {
        let topic = self.topic();
        let way_back = |mark: Watermark| {
            format!(
                "Applying from there would repeat outputs already committed. If the offsets were \
                 moved back, set them to the watermark again (`kafka-consumer-groups \
                 --reset-offsets --to-offset {next} --topic {topic}:{partition}`); if Kafka lost \
                 commits it had acknowledged, the outputs of the lost transactions are gone: set \
                 the offsets so and re-drive what is missing with `switchboard replay`. Then \
                 restart",
                next = mark.next
            )
        };
        match (mark, committed) {
            (Some(mark), Some(c)) if mark.next < c => Some(format!(
                "the state store has applied `{topic}` partition {partition} up to offset {next}, \
                 but the group has committed {c}: Redis lost writes that Kafka had acknowledged \
                 (a failover to a lagging replica, `appendfsync everysec`, a restore from a \
                 backup), and going on would diverge. Rebuild the partition's state from the \
                 topic with `switchboard rebuild --partition {partition}`, then restart",
                next = mark.next
            )),
            (Some(mark), Some(c)) if c < mark.committed => Some(format!(
                "the group's committed offset on `{topic}` partition {partition} is {c}, but the \
                 store was written there after the group had committed {was} (applied up to \
                 {next}): the group's offsets were moved back, or Kafka lost commits. {}",
                way_back(mark),
                was = mark.committed,
                next = mark.next
            )),
            (Some(_), Some(_)) => None,
            // Nothing stored at all, while the group has committed: the same loss, or a store
            // written before Switchboard kept watermarks; only the operator can tell which.
            (None, Some(c)) if c > 0 => Some(format!(
                "the state store has no watermark for `{topic}` partition {partition}, but the \
                 group has committed offset {c}: Redis lost this partition's state (flushed, \
                 restored, replaced), or it was written by a Switchboard that kept no watermarks. \
                 Rebuild it from the topic with `switchboard rebuild --partition {partition}`, \
                 or, if the store is known to be complete, accept it with `switchboard rebuild \
                 --partition {partition} --accept-store`; then restart"
            )),
            (Some(mark), None) if mark.committed >= 0 => Some(format!(
                "the group has committed nothing on `{topic}` partition {partition}, but the \
                 store was written there after a commit at {was} (applied up to {next}): a new \
                 group ID, or committed offsets that expired (`offsets.retention.minutes`). {}",
                way_back(mark),
                was = mark.committed,
                next = mark.next
            )),
            _ => None,
        }
    }

    /// The watermarks a written batch moves forward: every partition it consumed, dead letters
    /// included, so that a batch that changed no conversation still counts as applied.
    /// `committed`: the group's committed offsets when the batch is written.
    pub(super) fn to_write(
        &self,
        next_offsets: &BTreeMap<i32, i64>,
        committed: &GroupOffsets,
    ) -> Vec<Mark> {
        next_offsets
            .iter()
            .map(|(&partition, &next)| Mark {
                topic: self.topic().to_string(),
                partition,
                next,
                committed: committed.of(partition).unwrap_or(-1),
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
            | StoreError::CorruptOutbox { conversation, .. }
            | StoreError::Script { conversation, .. },
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
            .map(|partition| poison(conversation, why, partition))
            .collect(),
    )
}

/// The halt of `partition` for a conversation of it whose stored state is unusable.
pub(super) fn poison(conversation: &str, why: &str, partition: i32) -> Halt {
    Halt {
        partition,
        reason: format!(
            "{why}. `switchboard inspect {conversation}` shows what is stored; repair or delete \
             it, or rebuild the partition's state with `switchboard rebuild --partition \
             {partition}`, then restart"
        ),
    }
}
