//! One batch of input records, applied against a state store: the part of the stream runtime
//! that is independent of Kafka (see `docs/architecture.md`).
//!
//! For every record: decode it; if its conversation's stored offset already covers it (a
//! replay after a failed or unknown commit), take its outputs from the stored outbox instead of
//! applying it again; otherwise apply it with the core. Then write every touched conversation
//! atomically and fenced by offset, together with the outbox of the batch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::core::directory::{Block, BlockList, Channel, Directory, Form, Organization, User};
use crate::core::event::{Outcome, Output};
use crate::core::log::{Log, LogWrite};
use crate::core::message::{decode, DeadLetter, DeadReason, Decoded, KeySource, Role};
use crate::core::state::{Conversation, StoredMessage};
use crate::core::transition::{apply, invalid, needs, Env};
use crate::core::Dialect;
use crate::runtime::store::directory::{DirectorySource, Key};
use crate::runtime::store::{OutRecord, Pending, StateStore, StoreError, Write, WriteOutcome};

/// One input record as consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// The broker timestamp (RFC 3339), for dead letters.
    pub timestamp: Option<String>,
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
    #[error(
        "conversation {conversation} holds offset {stored} but no outbox entry for offset {offset}"
    )]
    MissingOutbox {
        conversation: String,
        stored: i64,
        offset: i64,
    },
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("directory lookups did not settle after {0} rounds of fetching")]
    DirectoryUnsettled(usize),
}

/// The directory as one batch sees it: the reference data, with the block lists taken from
/// the store (the source of truth, shared by every instance) and the batch's own `/block`s.
struct BatchDirectory<'a, D: Directory> {
    inner: &'a D,
    blocked: BlockList,
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
struct BatchLog {
    by_id: HashMap<String, StoredMessage>,
    all: Option<Vec<StoredMessage>>,
    len: u64,
}

impl BatchLog {
    fn apply(&mut self, writes: &[LogWrite]) {
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

#[derive(Debug, Default)]
struct Work {
    conversation: Option<Conversation>,
    stored_offset: i64,
    stored_outbox: Vec<Pending>,
    log: BatchLog,
    writes: Vec<LogWrite>,
    outbox: Vec<Pending>,
    last_offset: i64,
    /// Something was applied now (not replayed): the conversation must be written.
    dirty: bool,
}

fn serialise(outputs: Vec<Output>) -> Vec<OutRecord> {
    outputs
        .into_iter()
        .map(|o| OutRecord {
            topic: o.topic,
            value: serde_json::to_string(&o.value).expect("outputs serialise"),
            key: o.key,
        })
        .collect()
}

/// Interleaves the batch's partitions by message time, keeping each partition in offset order.
///
/// Nothing orders conversations of different partitions, but some effects cross them (an IP
/// blocked by one conversation is refused in another): applying a batch in message time makes
/// those follow what happened first, as far as one batch sees. Records that are not messages
/// go first; they affect no other conversation.
fn merge_by_time(decoded: Vec<(InputRecord, Decoded)>) -> Vec<(InputRecord, Decoded)> {
    let time = |d: &Decoded| match d {
        Decoded::Message(m) => m.created_at_nanos,
        _ => i64::MIN,
    };
    let total = decoded.len();
    let mut queues: BTreeMap<i32, std::collections::VecDeque<(InputRecord, Decoded)>> =
        BTreeMap::new();
    for (r, d) in decoded {
        queues.entry(r.partition).or_default().push_back((r, d));
    }
    let mut merged = Vec::with_capacity(total);
    while let Some((_, partition)) = queues
        .iter()
        .filter_map(|(p, q)| q.front().map(|(_, d)| (time(d), *p)))
        .min()
    {
        merged.extend(queues.get_mut(&partition).and_then(|q| q.pop_front()));
    }
    merged
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
    max_record_bytes: usize,
    records: Vec<InputRecord>,
) -> Result<BatchOutput, PipelineError>
where
    S: StateStore,
    D: DirectorySource,
{
    prepare_batch(store, directory, dialect, max_record_bytes, records)
        .await?
        .write(store)
        .await
}

/// A batch applied but not yet written: its outputs, and the state writes that must be stored
/// before they may be produced.
///
/// Preparing only reads the store, so a runtime may prepare batch n+1 while batch n's outputs
/// are still being committed, as long as it writes n+1 only once n is committed (the outbox
/// holds one batch: a conversation's records older than its outbox must be committed ones).
#[derive(Debug)]
pub struct Prepared {
    out: BatchOutput,
    blocks: Vec<Block>,
    writes: Vec<Write>,
}

impl Prepared {
    /// Writes the batch's block lists and conversations; fails if another instance wrote one of
    /// them meanwhile.
    pub async fn write<S: StateStore>(self, store: &S) -> Result<BatchOutput, PipelineError> {
        store.block(&self.blocks).await?;
        let names: Vec<String> = self
            .writes
            .iter()
            .map(|w| w.conversation.id.clone())
            .collect();
        for (id, outcome) in names.into_iter().zip(store.write(self.writes).await?) {
            if outcome == WriteOutcome::Stale {
                return Err(PipelineError::Stale(id));
            }
        }
        Ok(self.out)
    }
}

/// Applies one batch against the store's state without writing anything (see [`Prepared`]).
pub async fn prepare_batch<S, D>(
    store: &S,
    directory: &D,
    dialect: Dialect,
    max_record_bytes: usize,
    records: Vec<InputRecord>,
) -> Result<Prepared, PipelineError>
where
    S: StateStore,
    D: DirectorySource,
{
    directory.refresh().await?;
    let mut records = records;
    for _ in 0..DIRECTORY_ROUNDS {
        match attempt(store, directory, dialect, max_record_bytes, records).await? {
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

enum Attempt {
    Done(Prepared),
    /// The directory cache lacked these entries: run the batch again.
    Incomplete {
        records: Vec<InputRecord>,
        missing: Vec<Key>,
    },
}

async fn attempt<S, D>(
    store: &S,
    directory: &D,
    dialect: Dialect,
    max_record_bytes: usize,
    records: Vec<InputRecord>,
) -> Result<Attempt, PipelineError>
where
    S: StateStore,
    D: DirectorySource,
{
    directory.take_misses();
    let mut out = BatchOutput::default();
    for r in &records {
        let next = out.next_offsets.entry(r.partition).or_insert(r.offset + 1);
        *next = (*next).max(r.offset + 1);
    }

    // Decode everything first, to know which conversations and log messages to load.
    let decoded: Vec<(InputRecord, Decoded)> = records
        .into_iter()
        .map(|r| {
            let d = if r.payload.len() > max_record_bytes {
                Decoded::Dead(DeadLetter {
                    reason: DeadReason::TooLarge,
                    detail: format!(
                        "record of {} bytes exceeds the limit of {max_record_bytes}",
                        r.payload.len()
                    ),
                    key: r.key.clone(),
                    // The DLQ keeps a bounded prefix: the point is to say what it was.
                    payload: r.payload[..max_record_bytes.min(r.payload.len()).min(4096)].to_vec(),
                })
            } else {
                decode(KeySource::Record(r.key.as_deref()), &r.payload)
            };
            (r, d)
        })
        .collect();

    let decoded = merge_by_time(decoded);

    let mut ids: Vec<String> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut wanted: HashMap<String, (Vec<String>, bool)> = HashMap::new();
    for (_, d) in &decoded {
        if let Decoded::Message(m) = d {
            let n = needs(m);
            if n.message.is_some() || n.all {
                let entry = wanted.entry(m.conversation.clone()).or_default();
                entry.0.extend(n.message);
                entry.1 |= n.all;
            }
        }
        if let Some(conversation) = d.conversation() {
            if seen.insert(conversation) {
                ids.push(conversation.clone());
            }
        }
    }
    // Headers and the log messages commands refer to, in one round trip: the IDs come from the
    // messages themselves, not from the stored state.
    let by_id: Vec<(String, Vec<String>)> = ids
        .iter()
        .filter_map(|id| {
            let (messages, all) = wanted.get(id)?;
            (!*all && !messages.is_empty()).then(|| (id.clone(), messages.clone()))
        })
        .collect();
    let (loaded, found) = tokio::try_join!(store.load(&ids), store.messages(&by_id))?;
    let mut work: HashMap<String, Work> = HashMap::with_capacity(ids.len());
    for (id, record) in ids.iter().zip(loaded) {
        let mut w = Work {
            stored_offset: -1,
            ..Work::default()
        };
        if let Some(r) = record {
            w.log.len = r.conversation.message_count;
            w.stored_offset = r.offset;
            w.conversation = Some(r.conversation);
        }
        if wanted.get(id).is_some_and(|(_, all)| *all) {
            let log = store.log(id).await?;
            w.log.by_id = log.iter().map(|m| (m.id.clone(), m.clone())).collect();
            w.log.all = Some(log);
        }
        work.insert(id.clone(), w);
    }
    for ((id, _), messages) in by_id.iter().zip(found) {
        let w = work.get_mut(id).expect("loaded above");
        for m in messages {
            w.log.by_id.insert(m.id.clone(), m);
        }
    }
    // Outboxes only where the batch meets records already applied (a replay).
    let mut replaying: Vec<String> = Vec::new();
    for (r, d) in &decoded {
        let Some(conversation) = d.conversation() else {
            continue;
        };
        if r.offset <= work[conversation].stored_offset && !replaying.contains(conversation) {
            replaying.push(conversation.clone());
        }
    }
    for (id, outbox) in replaying.iter().zip(store.outboxes(&replaying).await?) {
        work.get_mut(id).expect("loaded above").stored_outbox = outbox;
    }

    // Block lists live in the store: look up every (organization, IP) a contact message of the
    // batch may be checked against.
    let mut candidates: HashSet<(String, String)> = HashSet::new();
    for (_, d) in &decoded {
        let Decoded::Message(m) = d else { continue };
        if m.role != Role::Contact {
            continue;
        }
        let known = work
            .get(&m.conversation)
            .and_then(|w| w.conversation.as_ref());
        let Some(organization) = known.map(|c| &c.organization).or(m.organization.as_ref()) else {
            continue;
        };
        let ips = m
            .contact
            .as_ref()
            .and_then(|c| c.ip.as_ref())
            .into_iter()
            .chain(known.and_then(|c| c.contact.ip.as_ref()));
        for ip in ips {
            candidates.insert((organization.clone(), ip.clone()));
        }
    }
    let candidates: Vec<(String, String)> = candidates.into_iter().collect();
    let mut view = BatchDirectory {
        inner: directory,
        blocked: BlockList::default(),
    };
    let found = store.blocked_since(&candidates).await?;
    for ((organization, ip), since) in candidates.into_iter().zip(found) {
        if let Some(since) = since {
            view.blocked.insert(&Block {
                organization,
                ip,
                since,
            });
        }
    }

    let mut blocks: Vec<Block> = Vec::new();
    let mut used: Vec<InputRecord> = Vec::with_capacity(decoded.len());
    for (record, d) in decoded {
        'record: {
            let locator = format!("{}/{}", record.partition, record.offset);
            let conversation = match &d {
                Decoded::Message(m) => m.conversation.clone(),
                Decoded::Invalid(i) => i.conversation.clone(),
                Decoded::Dead(dead) => {
                    out.outputs.extend(serialise(vec![Output::dead_letter(
                        dead,
                        &locator,
                        record.timestamp.as_deref(),
                    )]));
                    *out.kinds
                        .entry(("unreadable".into(), "dead_letter"))
                        .or_default() += 1;
                    break 'record;
                }
            };
            let w = work.get_mut(&conversation).expect("loaded above");
            if record.offset <= w.stored_offset {
                // Applied by an earlier attempt whose commit did not happen: same outputs again.
                let Some(p) = w.stored_outbox.iter().find(|p| p.offset == record.offset) else {
                    // Older than the whole outbox: the batch that wrote it ran only after the
                    // batches before it had committed, so this record's outputs are committed
                    // already and the consumer offset we resumed from lags behind them (seen once
                    // after a broker restart). Emitting nothing is what exactly-once asks.
                    let oldest = w.stored_outbox.iter().map(|p| p.offset).min();
                    if oldest.is_none_or(|o| record.offset < o) {
                        tracing::warn!(
                            conversation = %conversation,
                            offset = record.offset,
                            stored = w.stored_offset,
                            "record already applied and committed; skipped"
                        );
                        out.skipped += 1;
                        *out.kinds
                            .entry(("committed".into(), "skipped"))
                            .or_default() += 1;
                        break 'record;
                    }
                    return Err(PipelineError::MissingOutbox {
                        conversation,
                        stored: w.stored_offset,
                        offset: record.offset,
                    });
                };
                out.outputs.extend(p.outputs.iter().cloned());
                w.outbox.push(p.clone());
                out.replayed += 1;
                *out.kinds
                    .entry(("replayed".into(), "replayed"))
                    .or_default() += 1;
                break 'record;
            }
            let outputs = match d {
                Decoded::Message(m) => {
                    let type_name = m.type_name.clone();
                    let env = Env {
                        directory: &view,
                        dialect,
                    };
                    let t = apply(w.conversation.take(), &w.log, m, &env);
                    w.log.apply(&t.log);
                    w.writes.extend(t.log);
                    w.conversation = t.conversation;
                    for b in t.blocks {
                        view.blocked.insert(&b);
                        blocks.push(b);
                    }
                    let outcome = match t.outcome {
                        Some(Outcome::Applied) => "applied",
                        Some(Outcome::Ignored) => "ignored",
                        Some(Outcome::Rejected) => "rejected",
                        // Relay records to an origin report nothing themselves; the /import's result
                        // comes with the transfer.
                        None if type_name == crate::core::message::IMPORT_REQUEST => "relayed",
                        None => "deferred",
                    };
                    *out.kinds.entry((type_name, outcome)).or_default() += 1;
                    t.outputs
                }
                Decoded::Invalid(i) => {
                    *out.kinds.entry(("invalid".into(), "rejected")).or_default() += 1;
                    vec![invalid(w.conversation.as_ref(), &i, &locator)]
                }
                Decoded::Dead(_) => unreachable!("handled above"),
            };
            let outputs = serialise(outputs);
            out.outputs.extend(outputs.iter().cloned());
            w.outbox.push(Pending {
                offset: record.offset,
                outputs,
            });
            w.last_offset = record.offset;
            w.dirty = true;
            out.applied += 1;
        }
        used.push(record);
    }

    let missing = directory.take_misses();
    if !missing.is_empty() {
        return Ok(Attempt::Incomplete {
            records: used,
            missing,
        });
    }

    let writes = work
        .into_values()
        .filter(|w| w.dirty)
        .filter_map(|w| {
            Some(Write {
                conversation: w.conversation?,
                offset: w.last_offset,
                log: w.writes,
                outbox: w.outbox,
            })
        })
        .collect();
    Ok(Attempt::Done(Prepared {
        out,
        blocks,
        writes,
    }))
}
