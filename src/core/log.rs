//! The message log as the core sees it: a read view and the writes a transition asks for.
//!
//! The core never rewrites the log to change one message: a transition returns
//! [`LogWrite::Append`] and [`LogWrite::Update`] for single messages, so a store can make each
//! one a single keyed write whatever the conversation's length. Only `/import`, which re-orders
//! and re-indexes the whole log by definition, returns [`LogWrite::Replace`].

use foldhash::HashMap;

use crate::core::id::object_id_bits;
use crate::core::state::StoredMessage;

/// Read access to a conversation's log. An adapter that keeps the log remotely pre-fetches what
/// [`crate::core::transition::needs`] names before calling the core.
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
    /// Message IDs are ObjectIds (the envelope and the ID derivation guarantee it), so they key
    /// the index as integers: no allocation per message.
    by_id: HashMap<u128, usize>,
}

impl MemoryLog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply(&mut self, writes: Vec<LogWrite>) {
        for write in writes {
            match write {
                LogWrite::Append(m) => {
                    debug_assert_eq!(m.index as usize, self.messages.len());
                    if let Some(key) = object_id_bits(&m.id) {
                        self.by_id.insert(key, self.messages.len());
                    }
                    self.messages.push(m);
                }
                LogWrite::Update(m) => {
                    let at = m.index as usize;
                    self.messages[at] = m;
                }
                LogWrite::Replace(all) => {
                    self.by_id = all
                        .iter()
                        .enumerate()
                        .filter_map(|(i, m)| object_id_bits(&m.id).map(|k| (k, i)))
                        .collect();
                    self.messages = all;
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
        let key = object_id_bits(id)?;
        self.by_id.get(&key).map(|&i| &self.messages[i])
    }

    fn all(&self) -> &[StoredMessage] {
        &self.messages
    }
}
