//! Conversation state storage for the stream runtime (see `docs/architecture.md`).
//!
//! A store holds, per conversation, the header, the input offset of the last applied message,
//! the outbox of outputs not yet known to be committed to Kafka, and the message log. Writes
//! are atomic per conversation and compare-and-set on the offset: a write lands only if the
//! conversation is still at the offset the batch read ([`Write::base`]) and its own offset is
//! above it; otherwise it changes nothing and is reported [`WriteOutcome::Stale`].
//!
//! This folder owns the storage formats and keys (Redis hashes, the outbox encoding, the
//! directory's keys and cache); it may not decide anything a command means (that is the core's)
//! nor touch Kafka (the runtime's).

pub mod directory;
mod memory;
mod redis;

use serde::{Deserialize, Serialize};

pub use self::directory::{DirectorySource, RedisDirectory};
pub use self::memory::MemoryStore;
pub use self::redis::{RedisStore, Target, TlsFiles};

use crate::core::directory::Block;
use crate::core::log::LogWrite;
use crate::core::state::{Conversation, FormResult, StoredMessage};

/// How long a Redis reply may take unless configured (`redis.response_timeout_ms`). The redis
/// crate's own default, 500 ms, fails a whole batch's pipelined write on a loaded machine, and
/// the retry repeats the work.
pub const DEFAULT_RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// An output record as it will be produced: its topic (by role), key, serialised value and
/// headers. The outbox keeps all four, so a replay produces the same record byte for byte.
/// The batch's outputs and the outbox share one copy of each value (serialised as a string all
/// the same): copying them was a tenth of a profile's `memmove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutRecord {
    pub topic: crate::core::event::Topic,
    pub key: String,
    pub value: std::sync::Arc<String>,
    pub headers: crate::runtime::pipeline::Headers,
}

/// The outputs of one applied input message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub offset: i64,
    pub outputs: Vec<OutRecord>,
}

/// What the store holds for a conversation, besides its log and its outbox.
///
/// The outbox is read only when a batch meets records the conversation has already applied
/// (a replay, rare): loading it with every header would read and decode every output of the
/// last batch again each time ([`StateStore::outboxes`]).
///
/// The conversation's `results` (forms processed by `/send`) are not part of it: they only ever
/// grow and the core only appends to them, so the store keeps them in a list of their own, and a
/// write appends whichever `results` of the written conversation it does not hold yet (by their
/// `message` ID, so a result written twice is kept once). Loading and writing a
/// header therefore costs the same however many forms the conversation has sent;
/// [`StateStore::results`] (or [`document`]) reads them back for display.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub conversation: Conversation,
    /// Input offset of the last message applied to this conversation.
    pub offset: i64,
    /// The input partition its messages arrive on (`None`: written before Switchboard stored
    /// it). Offsets compare only within one partition, so a record of this conversation on
    /// another partition is misrouted, never compared with `offset`.
    pub partition: Option<i32>,
}

/// One conversation's changes from one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub conversation: Conversation,
    /// The stored offset the batch read and applied its records to (`None`: the conversation
    /// was not stored). The write lands only if the conversation is still there.
    pub base: Option<i64>,
    /// Input offset of the last message of the batch applied to this conversation.
    pub offset: i64,
    /// The input partition of that message (see [`Record::partition`]).
    pub partition: i32,
    /// The log changes, in order.
    pub log: Vec<LogWrite>,
    /// The outbox to keep: the batch's outputs for this conversation.
    pub outbox: Vec<Pending>,
    /// The group's committed offset on `partition` when the batch is written (-1: none known).
    /// The outbox stored before is kept beside the new one if the write that stored it is not
    /// below it: a batch is written while the one before it still commits, so a replay may need
    /// the outputs of two writes (see [`StateStore::outboxes`]).
    pub committed: i64,
    /// The IPs its `/block` commands blocked: stored with it, and only if it is (review F6), so
    /// that no attempt whose conversation write was refused leaves a block behind.
    pub blocks: Vec<Block>,
}

/// A partition's watermark, as a written batch moves it: both offsets only ever forward, written
/// atomically with the batch's conversations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub topic: String,
    pub partition: i32,
    /// The offset after the last record of the partition the batch applied (or dead-lettered);
    /// -1 leaves it as it is.
    pub next: i64,
    /// The group's committed offset on the partition when the batch was written (-1: none).
    pub committed: i64,
}

/// What the store says it has applied of a partition (see [`Mark`]). Against the group's
/// committed offset C: `next` below C means the store lost writes Kafka acknowledged (a failover
/// to a lagging replica, `appendfsync everysec`, a restore from backup); C below `committed`
/// means the group's offsets went back (a reset, a new group ID, expired offsets, a lost
/// commit). Between the two, the records from C to `next` are the batch written but not
/// committed, which replays from the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    pub next: i64,
    pub committed: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// The conversation is no longer at the write's base (another writer got there first), or
    /// the write's offset is not above it: nothing of the conversation changed.
    Stale,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("stored data for conversation {conversation} is not valid: {source}")]
    Corrupt {
        conversation: String,
        source: serde_json::Error,
    },
    #[error("only {acked} of the {wanted} Redis replicas `redis.wait_replicas` asks for acknowledged the write in time")]
    Replicas { acked: u32, wanted: u32 },
    #[error("cannot read the TLS file {path}: {source}")]
    TlsFile {
        path: String,
        source: std::io::Error,
    },
    #[error("Redis refused the write of conversation {conversation}: {detail}")]
    Refused {
        conversation: String,
        detail: String,
    },
    #[error("the write script failed on conversation {conversation}'s stored data: {detail}")]
    Script {
        conversation: String,
        detail: String,
    },
    #[error("the stored outbox of conversation {conversation} is not valid: {detail}")]
    CorruptOutbox {
        conversation: String,
        detail: String,
    },
}

/// Conversation storage. Implementations: [`RedisStore`] (production) and [`MemoryStore`]
/// (the demo and tests).
pub trait StateStore: Send + Sync {
    /// The records of these conversations, in the same order (`None`: no such conversation).
    fn load(
        &self,
        conversations: &[String],
    ) -> impl std::future::Future<Output = Result<Vec<Option<Record>>, StoreError>> + Send;

    /// For each `(conversation, message IDs)`, the log messages with those IDs (absent ones are
    /// left out), in one round trip.
    fn messages(
        &self,
        wanted: &[(String, Vec<String>)],
    ) -> impl std::future::Future<Output = Result<Vec<Vec<StoredMessage>>, StoreError>> + Send;

    /// The outboxes of these conversations (empty where there is none), in one round trip: the
    /// one kept from the write before (see [`Write::committed`]), then the last write's.
    fn outboxes(
        &self,
        conversations: &[String],
    ) -> impl std::future::Future<Output = Result<Vec<Vec<Pending>>, StoreError>> + Send;

    /// A conversation's whole log, in index order.
    fn log(
        &self,
        conversation: &str,
    ) -> impl std::future::Future<Output = Result<Vec<StoredMessage>, StoreError>> + Send;

    /// A conversation's processed forms, oldest first (see [`Record`]).
    fn results(
        &self,
        conversation: &str,
    ) -> impl std::future::Future<Output = Result<Vec<FormResult>, StoreError>> + Send;

    /// Applies the writes, each atomically and only on its base, and moves the watermarks
    /// forward (never back), all in one transaction; outcomes of the writes in the same order.
    /// Each write's `conversation.results` are appended to the stored ones, save those (by
    /// `message` ID) already stored.
    fn write(
        &self,
        writes: Vec<Write>,
        marks: &[Mark],
    ) -> impl std::future::Future<Output = Result<Vec<WriteOutcome>, StoreError>> + Send;

    /// The watermarks of these partitions of `topic`, in the same order (`None`: never written).
    fn watermarks(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> impl std::future::Future<Output = Result<Vec<Option<Watermark>>, StoreError>> + Send;

    /// Adds IPs to organizations' block lists. Idempotent, and an IP blocked twice keeps the
    /// earlier time, so replays and out-of-order arrivals agree.
    fn block(
        &self,
        blocks: &[Block],
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;

    /// For each `(organization, ip)`, when it was blocked (see [`Block::since`]), in one round
    /// trip.
    fn blocked_since(
        &self,
        candidates: &[(String, String)],
    ) -> impl std::future::Future<Output = Result<Vec<Option<i64>>, StoreError>> + Send;
}

/// The log after `writes`, for a store that keeps messages by index: `(replace, changed)`, where
/// `replace` says the log was replaced (so everything not in `changed` is gone).
pub(crate) fn flatten(writes: &[LogWrite]) -> (bool, Vec<&StoredMessage>) {
    let mut replace = false;
    let mut changed: Vec<&StoredMessage> = Vec::new();
    for w in writes {
        match w {
            LogWrite::Replace(all) => {
                replace = true;
                changed = all.iter().collect();
            }
            LogWrite::Append(m) | LogWrite::Update(m) => {
                match changed.iter_mut().find(|c| c.index == m.index) {
                    Some(c) => *c = m,
                    None => changed.push(m),
                }
            }
        }
    }
    (replace, changed)
}

/// A conversation as the SPEC document shows it: the header with its results, and its log when
/// asked for. `None` if it does not exist.
pub async fn document<S: StateStore>(
    store: &S,
    conversation: &str,
    with_log: bool,
) -> Result<Option<(Conversation, Option<Vec<StoredMessage>>)>, StoreError> {
    let Some(record) = store.load(&[conversation.to_string()]).await?.remove(0) else {
        return Ok(None);
    };
    let mut header = record.conversation;
    header.results = store.results(conversation).await?;
    let log = if with_log {
        Some(store.log(conversation).await?)
    } else {
        None
    };
    Ok(Some((header, log)))
}
