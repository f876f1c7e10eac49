//! Reading through a write in flight. The runtime prepares batch n+1 while batch n's write is
//! being stored (see `docs/architecture.md`), so n+1 must read the state n's write leaves,
//! whether or not it has landed yet: [`ReadThrough`] answers from [`Overlay`], n's writes, what
//! they decide (the headers, the log messages they wrote), and waits for the write to land
//! before reading what they do not (outboxes, whole logs, block lists: rare reads).
//!
//! If the write fails, what was read through it is wrong; the runtime then drops batch n+1
//! with n and replays both.

use std::collections::HashMap;

use tokio::sync::watch;

use super::{
    flatten, Mark, Pending, Record, StateStore, StoreError, Watermark, Write, WriteOutcome,
};
use crate::core::directory::Block;
use crate::core::state::{FormResult, StoredMessage};

/// What a batch's writes leave, as the next batch reads it.
#[derive(Debug)]
pub struct Overlay {
    /// The headers as a load would read them once the write landed.
    records: HashMap<String, Record>,
    /// The log messages written, by conversation.
    logs: HashMap<String, WrittenLog>,
    /// Some write adds to a block list.
    blocks: bool,
    /// Set once the write has ended, landed or failed.
    landed: watch::Receiver<bool>,
}

#[derive(Debug)]
struct WrittenLog {
    /// The log was replaced: nothing of the stored one is left.
    replace: bool,
    messages: Vec<StoredMessage>,
}

impl Overlay {
    /// The state `writes` leave; `landed` turns true once they have been stored (or failed).
    pub fn of(writes: &[Write], landed: watch::Receiver<bool>) -> Overlay {
        let mut records = HashMap::with_capacity(writes.len());
        let mut logs = HashMap::new();
        for w in writes {
            let id = w.conversation.id.clone();
            if !w.log.is_empty() {
                let (replace, messages) = flatten(&w.log);
                logs.insert(id.clone(), WrittenLog { replace, messages });
            }
            // As stored: the results live beside the header (see `Record`).
            let mut conversation = w.conversation.clone();
            conversation.results = Vec::new();
            records.insert(
                id,
                Record {
                    conversation,
                    offset: w.offset,
                    partition: Some(w.partition),
                },
            );
        }
        Overlay {
            records,
            logs,
            blocks: writes.iter().any(|w| !w.blocks.is_empty()),
            landed,
        }
    }

    fn has(&self, conversation: &str) -> bool {
        self.records.contains_key(conversation)
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
            .map(|c| match o.records.get(c) {
                Some(record) => Some(record.clone()),
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
            let Some(log) = o.logs.get(conversation) else {
                continue;
            };
            if log.replace {
                found.clear();
            }
            // Whether the write had landed when the store was read or not, the written message
            // is the one at its index.
            for m in log.messages.iter().filter(|m| ids.contains(&m.id)) {
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
        writes: Vec<Write>,
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
