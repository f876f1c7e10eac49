//! Stage 3: the workset, everything the batch reads from the store and then changes: each
//! conversation's header, log and outboxes, and the block lists. Loading it is the batch's only
//! reading of the store; [`Workset::into_writes`] turns what the records changed into writes.

use std::collections::HashMap;

use crate::core::directory::{Block, BlockList, Directory};
use crate::core::log::LogWrite;
use crate::core::message::Decoded;
use crate::core::state::Conversation;
use crate::runtime::store::{Pending, Record, StateStore, Watermark, Write};

use super::limits::Limits;
use super::marks::Marks;
use super::reads::{block_candidates, replaying, Reads};
use super::view::{BatchDirectory, BatchLog};
use super::{InputRecord, PipelineError};

/// One conversation of the batch: as stored, and what the batch did to it so far.
#[derive(Debug, Default)]
pub(super) struct Work {
    pub(super) conversation: Option<Conversation>,
    /// The conversation was stored when the batch read it.
    pub(super) existed: bool,
    /// Its offset as read (-1 if it was not stored): what the write is conditional on.
    pub(super) stored_offset: i64,
    /// The input partition it was stored with, if any.
    pub(super) partition: Option<i32>,
    pub(super) stored_outbox: Vec<Pending>,
    pub(super) log: BatchLog,
    pub(super) writes: Vec<LogWrite>,
    pub(super) outbox: Vec<Pending>,
    /// The IPs its records blocked, stored with it.
    pub(super) blocks: Vec<Block>,
    pub(super) last_offset: i64,
    /// Something was applied now (not replayed): the conversation must be written.
    pub(super) dirty: bool,
}

impl Work {
    fn stored(record: Option<Record>) -> Work {
        let mut w = Work {
            stored_offset: -1,
            ..Work::default()
        };
        if let Some(r) = record {
            w.log.len = r.conversation.message_count;
            w.existed = true;
            w.stored_offset = r.offset;
            w.partition = r.partition;
            w.conversation = Some(r.conversation);
        }
        w
    }
}

/// The batch's conversations by ID, and the directory it applies them against.
pub(super) struct Workset<'a, D: Directory> {
    /// The record limits; the core reads the relay records' from them.
    pub(super) limits: Limits,
    pub(super) work: HashMap<String, Work>,
    pub(super) view: BatchDirectory<'a, D>,
    /// The stored watermarks of the batch's partitions, in the order of `Marks::partitions`.
    pub(super) marks: Vec<Option<Watermark>>,
}

impl<'a, D: Directory> Workset<'a, D> {
    /// Reads, in order: headers and log messages, whole logs, outboxes, block lists.
    pub(super) async fn load<S: StateStore>(
        store: &S,
        directory: &'a D,
        limits: Limits,
        reads: &Reads,
        decoded: &[(InputRecord, Decoded)],
        marks: &Marks,
    ) -> Result<Workset<'a, D>, PipelineError> {
        let (mut work, marks) = tokio::try_join!(conversations(store, reads), async {
            Ok(store.watermarks(marks.topic(), &marks.partitions).await?)
        })?;
        let replaying = replaying(decoded, &work);
        for (id, outbox) in replaying.iter().zip(store.outboxes(&replaying).await?) {
            work.get_mut(id).expect("loaded above").stored_outbox = outbox;
        }
        let blocked = block_lists(store, block_candidates(decoded, &work)).await?;
        Ok(Workset {
            limits,
            work,
            view: BatchDirectory {
                inner: directory,
                blocked,
            },
            marks,
        })
    }

    /// A write for every conversation something was applied to.
    pub(super) fn into_writes(self) -> Vec<Write> {
        self.work
            .into_values()
            .filter(|w| w.dirty)
            .filter_map(|w| {
                Some(Write {
                    committed: -1,
                    base: w.existed.then_some(w.stored_offset),
                    partition: w.partition?,
                    conversation: w.conversation?,
                    offset: w.last_offset,
                    log: w.writes,
                    outbox: w.outbox,
                    blocks: w.blocks,
                })
            })
            .collect()
    }
}

/// The batch's conversations as stored, with the parts of their logs the records need.
async fn conversations<S: StateStore>(
    store: &S,
    reads: &Reads,
) -> Result<HashMap<String, Work>, PipelineError> {
    // Headers and the log messages commands refer to, in one round trip: the IDs come from the
    // messages themselves, not from the stored state.
    let (loaded, found) = tokio::try_join!(
        store.load(&reads.conversations),
        store.messages(&reads.messages)
    )?;
    let mut work: HashMap<String, Work> = reads
        .conversations
        .iter()
        .cloned()
        .zip(loaded.into_iter().map(Work::stored))
        .collect();
    for id in &reads.whole_logs {
        let log = store.log(id).await?;
        work.get_mut(id).expect("loaded above").log.whole(log);
    }
    for ((id, _), messages) in reads.messages.iter().zip(found) {
        work.get_mut(id).expect("loaded above").log.found(messages);
    }
    Ok(work)
}

/// When each candidate (organization, IP) was blocked, for those that are.
async fn block_lists<S: StateStore>(
    store: &S,
    candidates: Vec<(String, String)>,
) -> Result<BlockList, PipelineError> {
    let found = store.blocked_since(&candidates).await?;
    let mut blocked = BlockList::default();
    for ((organization, ip), since) in candidates.into_iter().zip(found) {
        if let Some(since) = since {
            blocked.insert(&Block {
                organization,
                ip,
                since,
            });
        }
    }
    Ok(blocked)
}
