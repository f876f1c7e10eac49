//! One batch of input records, applied against a [`StateStore`]: the part of the stream runtime
//! that is independent of Kafka (see `docs/architecture.md`, steps 1–3). It owns the batch's
//! reads and writes of the state store and the calls into the core; it holds no Kafka client and
//! reads no clock: the runtime consumes the records, and produces the outputs and commits the
//! offsets of a [`BatchOutput`] in its transaction.
//!
//! For every record: decode it; if its conversation's stored offset already covers it (a
//! replay after a failed or unknown commit), take its outputs from the stored outbox instead of
//! applying it again; otherwise apply it with the core. Then write every touched conversation
//! atomically, together with the outbox of the batch, and only if it is still at the offset the
//! batch read (compare-and-set).
//!
//! The stages, in order (one file each):
//! 1. decode (`decode.rs`): `decode_all` checks each record's size and decodes it, then
//!    `merge_by_time` interleaves the partitions;
//! 2. reads (`reads.rs`): `Reads::of` names the conversations and the log messages to load;
//! 3. load (`workset.rs`): `Workset::load` reads the headers and log messages in one round
//!    trip, then whole logs, the outboxes of replayed conversations and the block lists;
//! 4. decide and apply (`decide.rs`): `Workset::decide`, per record, comes to a `Disposition`
//!    (dead letter, replayed, skipped, applied with the core's `apply`, invalid), which
//!    `BatchOutput::count` counts; `Workset::into_writes` then gives the writes of a [`Prepared`];
//! 5. write (`write.rs`): [`Prepared::write`] stores the conversations, each with the blocks
//!    its records made, and the partitions' watermarks;
//! 6. produce: the runtime's, from [`BatchOutput::outputs`], each with the headers
//!    `headers.rs` gives it, and each known to fit the producer's limit (`limits.rs`: one that
//!    would not is replaced by a dead letter).
//!
//! [`prepare_batch`] runs stages 1–4 again while the directory cache lacks entries (see
//! `DirectorySource`); [`process_batch`] is [`prepare_batch`] and then [`Prepared::write`].

mod decide;
mod decode;
pub mod headers;
pub mod limits;
mod marks;
mod reads;
pub mod trace;
mod view;
mod workset;
mod write;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tracing::Instrument as _;

use crate::core::Dialect;
use crate::runtime::store::directory::{DirectorySource, Key};
use crate::runtime::store::{OutRecord, StateStore, StoreError};

pub use self::headers::{Header, Headers};
pub use self::limits::Limits;
use self::reads::Reads;
use self::workset::Workset;
pub use self::write::{note_commits, Prepared};

/// One input record as consumed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// The broker timestamp (RFC 3339), for dead letters.
    pub timestamp: Option<String>,
    /// Its headers, carried to the outputs it causes (see [`headers`]).
    pub headers: Headers,
    /// The topic it was consumed from (shared by the batch), which its dead letter names.
    pub topic: Arc<str>,
}

/// What a batch produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutput {
    /// Every output record, in input order.
    pub outputs: Vec<OutRecord>,
    /// Per partition, the offset to commit (last offset of the batch + 1).
    pub next_offsets: BTreeMap<i32, i64>,
    /// Records applied now, and records whose outputs came from the outbox.
    pub applied: usize,
    pub replayed: usize,
    /// Records already applied and committed, met again because the consumer resumed from an
    /// offset behind them: no outputs.
    pub skipped: usize,
    /// How many records of each (message type, outcome) the batch had; for metrics.
    pub kinds: HashMap<(String, &'static str), u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("conversation {0} was written by another instance meanwhile (stale write)")]
    Stale(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("directory lookups did not settle after {0} rounds of fetching")]
    DirectoryUnsettled(usize),
    /// Partitions that cannot go on as they are without losing or repeating outputs, or
    /// without diverging: the runtime stops consuming them; the other partitions go on.
    #[error("{}", Halt::list(.0))]
    Halt(Vec<Halt>),
}

/// Why a partition stopped, for the operator: what was found, and the way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halt {
    pub partition: i32,
    pub reason: String,
}

impl Halt {
    fn list(halts: &[Halt]) -> String {
        let parts: Vec<String> = halts
            .iter()
            .map(|h| format!("partition {} halted: {}", h.partition, h.reason))
            .collect();
        parts.join("; ")
    }
}

/// The offsets the consumer group has committed (the next offset to consume), for the input
/// partitions the runtime knows them of; a partition absent has nothing committed, or its
/// offset is not known. The pipeline needs them to tell records already committed from records
/// applied but not committed (see `decide.rs`), and to notice a store behind Kafka.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupOffsets(pub BTreeMap<i32, i64>);

impl GroupOffsets {
    pub fn of(&self, partition: i32) -> Option<i64> {
        self.0.get(&partition).copied()
    }
}

/// How many times a batch is run again for directory entries its cache lacked. Each round
/// fetches every entry the previous one asked for, so more than a few means the lookups do not
/// settle (an organization lineage deeper than this).
const DIRECTORY_ROUNDS: usize = 16;

/// Applies one batch and writes its state. `records` are in consumption order (each
/// partition's in offset order).
pub async fn process_batch<S, D>(
    store: &S,
    directory: &D,
    dialect: Dialect,
    limits: Limits,
    records: Vec<InputRecord>,
) -> Result<BatchOutput, PipelineError>
where
    S: StateStore,
    D: DirectorySource,
{
    prepare_batch(store, directory, dialect, limits, records)
        .await?
        .write(store)
        .await
}

/// Applies one batch against the store's state without writing anything (see [`Prepared`]),
/// with no committed offsets known (a replay of records the store has applied must then find
/// them in the outbox).
pub async fn prepare_batch<S, D>(
    store: &S,
    directory: &D,
    dialect: Dialect,
    limits: Limits,
    records: Vec<InputRecord>,
) -> Result<Prepared, PipelineError>
where
    S: StateStore,
    D: DirectorySource,
{
    let none = GroupOffsets::default();
    prepare_batch_at(store, directory, dialect, limits, records, &none).await
}

/// [`prepare_batch`], knowing what the group has committed.
pub async fn prepare_batch_at<S, D>(
    store: &S,
    directory: &D,
    dialect: Dialect,
    limits: Limits,
    records: Vec<InputRecord>,
    committed: &GroupOffsets,
) -> Result<Prepared, PipelineError>
where
    S: StateStore,
    D: DirectorySource,
{
    let span = tracing::trace_span!(target: trace::TARGET, "batch", records = records.len());
    async {
        directory.refresh().await?;
        let mut records = records;
        for _ in 0..DIRECTORY_ROUNDS {
            let attempted = attempt(store, directory, dialect, limits, records, committed);
            match attempted.await? {
                Attempt::Done(prepared) => return Ok(prepared),
                Attempt::Incomplete {
                    records: back,
                    missing,
                } => {
                    directory.resolve(missing).await?;
                    records = back;
                }
            }
        }
        Err(PipelineError::DirectoryUnsettled(DIRECTORY_ROUNDS))
    }
    .instrument(span)
    .await
}

enum Attempt {
    Done(Prepared),
    /// The directory cache lacked these entries: run the batch again.
    Incomplete {
        records: Vec<InputRecord>,
        missing: Vec<Key>,
    },
}

/// Stages 1–4 once: decode, read, load, then decide and apply record by record.
async fn attempt<S, D>(
    store: &S,
    directory: &D,
    dialect: Dialect,
    limits: Limits,
    records: Vec<InputRecord>,
    committed: &GroupOffsets,
) -> Result<Attempt, PipelineError>
where
    S: StateStore,
    D: DirectorySource,
{
    directory.take_misses();
    let mut out = BatchOutput {
        next_offsets: next_offsets(&records),
        ..BatchOutput::default()
    };
    let topic = records.first().map(|r| Arc::clone(&r.topic));
    let decoded = decode::merge_by_time(decode::decode_all(records, limits.max_record_bytes));
    let reads = Reads::of(&decoded);
    let marks = marks::Marks::new(topic, &out.next_offsets);
    let mut ws = Workset::load(store, directory, limits, &reads, &decoded, &marks)
        .await
        .map_err(|e| marks::poisoned(e, &decoded))?;
    marks.check(&ws.marks, committed)?;
    let mut used: Vec<InputRecord> = Vec::with_capacity(decoded.len());
    for (record, d) in decoded {
        let span = trace::message_span(&record);
        let disposition =
            span.in_scope(|| ws.decide(&record, d, dialect, committed, &mut out.outputs))?;
        trace::record_disposition(&span, &disposition);
        out.count(disposition);
        used.push(record);
    }

    let missing = directory.take_misses();
    if !missing.is_empty() {
        return Ok(Attempt::Incomplete {
            records: used,
            missing,
        });
    }
    // Every output, dead letters and replayed ones too, is known to fit before it is produced.
    limits::fit(&mut out.outputs, limits.max_output_bytes);
    let writes = ws.into_writes();
    Ok(Attempt::Done(Prepared {
        out,
        writes,
        marks,
        committed: committed.clone(),
        notes: Vec::new(),
    }))
}

/// Per partition, the offset to commit: the batch's last offset + 1.
fn next_offsets(records: &[InputRecord]) -> BTreeMap<i32, i64> {
    let mut next_offsets = BTreeMap::new();
    for r in records {
        let next = next_offsets.entry(r.partition).or_insert(r.offset + 1);
        *next = (*next).max(r.offset + 1);
    }
    next_offsets
}
