//! The in-memory store: the demo's, and the reference the Redis store is tested against.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use super::{
    flatten, Mark, Pending, Record, StateStore, StoreError, Watermark, Write, WriteOutcome,
};
use crate::core::directory::{Block, BlockList};
use crate::core::state::{FormResult, StoredMessage};

#[derive(Debug, Default)]
struct Entry {
    record: Option<Record>,
    outbox: Vec<Pending>,
    /// The outbox of the write before, while that write is not known to be committed.
    prior: Vec<Pending>,
    log: BTreeMap<u64, StoredMessage>,
    results: Vec<FormResult>,
    /// The IDs of `results`, so that a result written again is kept once.
    result_ids: HashSet<String>,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    conversations: Mutex<std::collections::HashMap<String, Entry>>,
    blocked: Mutex<BlockList>,
    /// Watermarks by (topic, partition).
    marks: Mutex<std::collections::HashMap<(String, i32), Watermark>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every stored conversation's ID, sorted.
    pub fn conversation_ids(&self) -> Vec<String> {
        let map = self.conversations.lock().expect("store lock");
        let mut ids: Vec<String> = map
            .iter()
            .filter(|(_, e)| e.record.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        ids.sort();
        ids
    }
}

impl StateStore for MemoryStore {
    async fn load(&self, conversations: &[String]) -> Result<Vec<Option<Record>>, StoreError> {
        let map = self.conversations.lock().expect("store lock");
        Ok(conversations
            .iter()
            .map(|id| map.get(id).and_then(|e| e.record.clone()))
            .collect())
    }

    async fn messages(
        &self,
        wanted: &[(String, Vec<String>)],
    ) -> Result<Vec<Vec<StoredMessage>>, StoreError> {
        let map = self.conversations.lock().expect("store lock");
        Ok(wanted
            .iter()
            .map(|(conversation, ids)| {
                map.get(conversation)
                    .map(|e| {
                        e.log
                            .values()
                            .filter(|m| ids.contains(&m.id))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect())
    }

    async fn outboxes(&self, conversations: &[String]) -> Result<Vec<Vec<Pending>>, StoreError> {
        let map = self.conversations.lock().expect("store lock");
        Ok(conversations
            .iter()
            .map(|id| {
                map.get(id)
                    .map(|e| [e.prior.as_slice(), e.outbox.as_slice()].concat())
                    .unwrap_or_default()
            })
            .collect())
    }

    async fn log(&self, conversation: &str) -> Result<Vec<StoredMessage>, StoreError> {
        let map = self.conversations.lock().expect("store lock");
        Ok(map
            .get(conversation)
            .map(|e| e.log.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn results(&self, conversation: &str) -> Result<Vec<FormResult>, StoreError> {
        let map = self.conversations.lock().expect("store lock");
        Ok(map
            .get(conversation)
            .map(|e| e.results.clone())
            .unwrap_or_default())
    }

    async fn write(
        &self,
        writes: Vec<Write>,
        marks: &[Mark],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut map = self.conversations.lock().expect("store lock");
        let mut stored_marks = self.marks.lock().expect("store lock");
        let mut blocked = self.blocked.lock().expect("store lock");
        for m in marks {
            let at = stored_marks
                .entry((m.topic.clone(), m.partition))
                .or_insert(Watermark {
                    next: -1,
                    committed: -1,
                });
            at.next = at.next.max(m.next);
            at.committed = at.committed.max(m.committed);
        }
        Ok(writes
            .into_iter()
            .map(|mut w| {
                let entry = map.entry(w.conversation.id.clone()).or_default();
                // As the Redis script: only on the state read, and only forward.
                let stored = entry.record.as_ref().map(|r| r.offset);
                if stored != w.base || stored.is_some_and(|s| s >= w.offset) {
                    return WriteOutcome::Stale;
                }
                let (replace, changed) = flatten(&w.log);
                if replace {
                    entry.log.clear();
                }
                for m in changed {
                    entry.log.insert(m.index, m.clone());
                }
                for r in std::mem::take(&mut w.conversation.results) {
                    if entry.result_ids.insert(r.message.clone()) {
                        entry.results.push(r);
                    }
                }
                entry.record = Some(Record {
                    conversation: w.conversation,
                    offset: w.offset,
                    partition: Some(w.partition),
                });
                // As the Redis script: the outbox of a write not known to be committed stays.
                entry.prior = match stored {
                    Some(s) if s >= w.committed => std::mem::take(&mut entry.outbox),
                    _ => Vec::new(),
                };
                entry.outbox = w.outbox;
                for b in &w.blocks {
                    blocked.insert(b);
                }
                WriteOutcome::Written
            })
            .collect())
    }

    async fn watermarks(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<Option<Watermark>>, StoreError> {
        let marks = self.marks.lock().expect("store lock");
        Ok(partitions
            .iter()
            .map(|p| {
                marks
                    .get(&(topic.to_string(), *p))
                    .copied()
                    .filter(|m| m.next >= 0)
            })
            .collect())
    }

    async fn block(&self, blocks: &[Block]) -> Result<(), StoreError> {
        let mut list = self.blocked.lock().expect("store lock");
        for b in blocks {
            list.insert(b);
        }
        Ok(())
    }

    async fn blocked_since(
        &self,
        candidates: &[(String, String)],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let list = self.blocked.lock().expect("store lock");
        Ok(candidates.iter().map(|(o, ip)| list.since(o, ip)).collect())
    }
}
