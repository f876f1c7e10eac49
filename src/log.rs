//! The message log as the core sees it: a read view and the writes a transition asks for.
//!
//! The core never rewrites the log to change one message: a transition returns
//! [`LogWrite::Append`] and [`LogWrite::Update`] for single messages, so a store can make each
//! one a single keyed write whatever the conversation's length. Only `/import`, which re-orders
//! and re-indexes the whole log by definition, returns [`LogWrite::Replace`].

use std::collections::HashMap;

use crate::state::StoredMessage;

/// Read access to a conversation's log. An adapter that keeps the log remotely pre-fetches what
/// [`crate::transition::needs`] names before calling the core.
pub trait Log {
    /// How many messages the log holds.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The message with this ID, if it is in the log.
    fn get(&self, id: &str) -> Option<&StoredMessage>;
    /// The whole log in index order (only asked for by `/import`).
    fn all(&self) -> &[StoredMessage];
}

/// A change to the log.
#[derive(Debug, Clone, PartialEq)]
pub enum LogWrite {
    /// A new message at index `message.index`, which is the old length.
    Append(StoredMessage),
    /// The message at `message.index` changed (likes, comments, meta).
    Update(StoredMessage),
    /// The log is now exactly these messages.
    Replace(Vec<StoredMessage>),
}

/// A log held in memory: the simulator's, the demo's and the tests'.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryLog {
    messages: Vec<StoredMessage>,
    by_id: HashMap<String, usize>,
}

impl MemoryLog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply(&mut self, writes: &[LogWrite]) {
        for write in writes {
            match write {
                LogWrite::Append(m) => {
                    debug_assert_eq!(m.index as usize, self.messages.len());
                    self.by_id.insert(m.id.clone(), self.messages.len());
                    self.messages.push(m.clone());
                }
                LogWrite::Update(m) => {
                    self.messages[m.index as usize] = m.clone();
                }
                LogWrite::Replace(all) => {
                    self.messages = all.clone();
                    self.by_id = all
                        .iter()
                        .enumerate()
                        .map(|(i, m)| (m.id.clone(), i))
                        .collect();
                }
            }
        }
    }

    pub fn messages(&self) -> &[StoredMessage] {
        &self.messages
    }
}

impl Log for MemoryLog {
    fn len(&self) -> u64 {
        self.messages.len() as u64
    }

    fn get(&self, id: &str) -> Option<&StoredMessage> {
        self.by_id.get(id).map(|&i| &self.messages[i])
    }

    fn all(&self) -> &[StoredMessage] {
        &self.messages
    }
}
