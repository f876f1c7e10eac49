//! Reading through a write in flight. The runtime prepares batch n+1 while batch n's write is
//! being stored (see `docs/architecture.md`), so n+1 must read the state n's write leaves,
//! whether or not it has landed yet: [`ReadThrough`] answers from [`Overlay`], n's writes, what
//! they decide (the headers, the log messages they wrote), and waits for the write to land
//! before reading what they do not (outboxes, whole logs, block lists: rare reads).
//!
//! If the write fails, what was read through it is wrong; the runtime then drops batch n+1
//! with n and replays both.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

use super::{
    flatten, Mark, Pending, Record, StateStore, StoreError, Watermark, Write, WriteOutcome,
};
use crate::core::directory::Block;
use crate::core::state::{FormResult, StoredMessage};

/// What a batch's writes leave, as the next batch reads it: the writes themselves, shared with
/// the write in flight, answered from only where the next batch asks (a copy of every header and
/// message written, made up front, cost about a microsecond a message).
#[derive(Debug)]
pub struct Overlay {
    writes: Arc<Vec<Write>>,
    /// Each written conversation's position in `writes`.
    by_id: HashMap<String, usize>,
    /// Some write adds to a block list.
    blocks: bool,
    /// Set once the write has ended, landed or failed.
    landed: watch::Receiver<bool>,
}

impl Overlay {
    /// The state `writes` leave; `landed` turns true once they have been stored (or failed).
    pub fn of(writes: Arc<Vec<Write>>, landed: watch::Receiver<bool>) -> Overlay {
        let by_id = writes
            .iter()
            .enumerate()
            .map(|(i, w)| (w.conversation.id.clone(), i))
            .collect();
        Overlay {
            blocks: writes.iter().any(|w| !w.blocks.is_empty()),
            writes,
            by_id,
            landed,
        }
    }

    fn get(&self, conversation: &str) -> Option<&Write> {
        self.by_id.get(conversation).map(|&i| &self.writes[i])
    }

    fn has(&self, conversation: &str) -> bool {
        self.by_id.contains_key(conversation)
    }

    /// The header as a load reads it once the write has landed: the results live beside it
    /// (see `Record`).
    fn record(w: &Write) -> Record {
        let mut conversation = w.conversation.clone();
        conversation.results = Vec::new();
        Record {
            conversation,
            offset: w.offset,
            partition: Some(w.partition),
        }
    }

    async fn landed(&self) {
        // The sender gone means the write ended too (its task is over).
        let _ = self.landed.clone().wait_for(|landed| *landed).await;
    }
}

/// A store read through the overlay of a write in flight, if there is one.
pub struct ReadThrough<'a, S> {
    pub inner: &'a S,
    pub overlay: Option<&'a Overlay>,
}

impl<S: StateStore> ReadThrough<'_, S> {
    /// Waits for the write in flight if it touches any of these conversations.
    async fn landed_if_any(&self, conversations: &[String]) {
        if let Some(o) = self.overlay {
            if conversations.iter().any(|c| o.has(c)) {
                o.landed().await;
            }
        }
    }
}

impl<S: StateStore> StateStore for ReadThrough<'_, S> {
    async fn load(&self, conversations: &[String]) -> Result<Vec<Option<Record>>, StoreError> {
        let Some(o) = self.overlay else {
            return self.inner.load(conversations).await;
        };
        let rest: Vec<String> = conversations
            .iter()
            .filter(|c| !o.has(c))
            .cloned()
            .collect();
        let mut stored = self.inner.load(&rest).await?.into_iter();
        Ok(conversations
            .iter()
            .map(|c| match o.get(c) {
                Some(w) => Some(Overlay::record(w)),
                None => stored.next().flatten(),
            })
            .collect())
    }

    async fn messages(
        &self,
        wanted: &[(String, Vec<String>)],
    ) -> Result<Vec<Vec<StoredMessage>>, StoreError> {
        let mut found = self.inner.messages(wanted).await?;
        let Some(o) = self.overlay else {
            return Ok(found);
        };
        for ((conversation, ids), found) in wanted.iter().zip(&mut found) {
            let Some(w) = o.get(conversation).filter(|w| !w.log.is_empty()) else {
                continue;
            };
            let (replace, written) = flatten(&w.log);
            if replace {
                found.clear();
            }
            // Whether the write had landed when the store was read or not, the written message
            // is the one at its index.
            for m in written.iter().filter(|m| ids.contains(&m.id)) {
                found.retain(|f| f.index != m.index);
                found.push(m.clone());
            }
            found.sort_by_key(|m| m.index);
        }
        Ok(found)
    }

    async fn outboxes(&self, conversations: &[String]) -> Result<Vec<Vec<Pending>>, StoreError> {
        self.landed_if_any(conversations).await;
        self.inner.outboxes(conversations).await
    }

    async fn log(&self, conversation: &str) -> Result<Vec<StoredMessage>, StoreError> {
        self.landed_if_any(&[conversation.to_string()]).await;
        self.inner.log(conversation).await
    }

    async fn results(&self, conversation: &str) -> Result<Vec<FormResult>, StoreError> {
        self.landed_if_any(&[conversation.to_string()]).await;
        self.inner.results(conversation).await
    }

    async fn write(
        &self,
        writes: &[Write],
        marks: &[Mark],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        if let Some(o) = self.overlay {
            o.landed().await;
        }
        self.inner.write(writes, marks).await
    }

    async fn watermarks(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<Option<Watermark>>, StoreError> {
        // A watermark read before the write lands is the one before: behind the write, never
        // behind the group's commits, which wait for the write.
        self.inner.watermarks(topic, partitions).await
    }

    async fn block(&self, blocks: &[Block]) -> Result<(), StoreError> {
        self.inner.block(blocks).await
    }

    async fn blocked_since(
        &self,
        candidates: &[(String, String)],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        if let Some(o) = self.overlay.filter(|o| o.blocks && !candidates.is_empty()) {
            o.landed().await;
        }
        self.inner.blocked_since(candidates).await
    }
}
