//! What the core reads during one batch: the directory with the batch's block lists, and each
//! conversation's log as far as the batch knows it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::core::directory::{BlockList, Channel, Directory, Form, Organization, User};
use crate::core::log::{Log, LogWrite};
use crate::core::state::StoredMessage;

/// The directory as one batch sees it: the reference data, with the block lists taken from
/// the store (the source of truth, shared by every instance) and the batch's own `/block`s.
pub(super) struct BatchDirectory<'a, D: Directory> {
    pub(super) inner: &'a D,
    pub(super) blocked: BlockList,
}

impl<D: Directory> Directory for BatchDirectory<'_, D> {
    fn organization(&self, id: &str) -> Option<Arc<Organization>> {
        self.inner.organization(id)
    }
    fn channel(&self, id: &str) -> Option<Arc<Channel>> {
        self.inner.channel(id)
    }
    fn user(&self, id: &str) -> Option<Arc<User>> {
        self.inner.user(id)
    }
    fn form(&self, id: &str) -> Option<Arc<Form>> {
        self.inner.form(id)
    }
    fn channels_of(&self, organization: &str) -> Vec<Arc<Channel>> {
        self.inner.channels_of(organization)
    }
    fn blocked_since(&self, organization: &str, ip: &str) -> Option<i64> {
        match (
            self.inner.blocked_since(organization, ip),
            self.blocked.since(organization, ip),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The log of one conversation as far as this batch knows it: what was prefetched for the
/// core, plus what the batch itself wrote.
#[derive(Debug, Default)]
pub(super) struct BatchLog {
    by_id: HashMap<String, StoredMessage>,
    all: Option<Vec<StoredMessage>>,
    pub(super) len: u64,
}

impl BatchLog {
    /// The whole stored log, for a record that needs all of it.
    pub(super) fn whole(&mut self, log: Vec<StoredMessage>) {
        self.by_id = log.iter().map(|m| (m.id.clone(), m.clone())).collect();
        self.all = Some(log);
    }

    /// Stored messages looked up by ID.
    pub(super) fn found(&mut self, messages: Vec<StoredMessage>) {
        for m in messages {
            self.by_id.insert(m.id.clone(), m);
        }
    }

    pub(super) fn apply(&mut self, writes: &[LogWrite]) {
        for w in writes {
            match w {
                LogWrite::Append(m) | LogWrite::Update(m) => {
                    if let Some(all) = &mut self.all {
                        let at = m.index as usize;
                        if at < all.len() {
                            all[at] = m.clone();
                        } else {
                            all.push(m.clone());
                        }
                    }
                    self.len = self.len.max(m.index + 1);
                    self.by_id.insert(m.id.clone(), m.clone());
                }
                LogWrite::Replace(all) => {
                    self.by_id = all.iter().map(|m| (m.id.clone(), m.clone())).collect();
                    self.len = all.len() as u64;
                    self.all = Some(all.clone());
                }
            }
        }
    }
}

impl Log for BatchLog {
    fn len(&self) -> u64 {
        self.len
    }
    fn get(&self, id: &str) -> Option<&StoredMessage> {
        self.by_id.get(id)
    }
    fn all(&self) -> &[StoredMessage] {
        self.all.as_deref().unwrap_or(&[])
    }
}
