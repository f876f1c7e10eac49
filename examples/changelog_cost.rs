//! What a Kafka changelog of the state would carry, against what the Redis outbox carries today
//! (`docs/decisions.md`, "Where durability lives"): the benchmark workload through the batch
//! pipeline on the memory store, in batches of 1,000, measuring every batch's writes.
//!
//!     cargo run --release --example changelog_cost
//!
//! Per message it prints: the output records' bytes (what the transaction produces today); the
//! outbox as Redis stores it (postcard, LZ4); and a changelog as the design note sketches it, one
//! record per changed conversation header and one per changed log entry, as JSON with its key,
//! raw and LZ4-compressed per batch (Kafka compresses record batches).

use std::sync::atomic::{AtomicU64, Ordering};

#[path = "../benches/workload.rs"]
mod workload;

use switchboard::core::log::LogWrite;
use switchboard::core::Dialect;
use switchboard::runtime::pipeline::{process_batch, InputRecord, Limits};
use switchboard::runtime::store::{Mark, MemoryStore, StateStore, Write};

/// The memory store, measuring what each write would cost in either design.
#[derive(Default)]
struct Measured {
    inner: MemoryStore,
    outbox: AtomicU64,
    changelog: AtomicU64,
    changelog_lz4: AtomicU64,
    records: AtomicU64,
}

impl Measured {
    fn measure(&self, writes: &[Write]) {
        let mut batch = Vec::new();
        for w in writes {
            let outbox = postcard::to_allocvec(&w.outbox).unwrap();
            let stored = lz4_flex::compress_prepend_size(&outbox).len() + 1;
            self.outbox.fetch_add(stored as u64, Ordering::Relaxed);
            let id = &w.conversation.id;
            let mut entry = |key: String, value: String| {
                batch.extend_from_slice(key.as_bytes());
                batch.extend_from_slice(value.as_bytes());
                self.records.fetch_add(1, Ordering::Relaxed);
            };
            entry(id.clone(), serde_json::to_string(&w.conversation).unwrap());
            for l in &w.log {
                let changed: Vec<_> = match l {
                    LogWrite::Append(m) | LogWrite::Update(m) => vec![m],
                    LogWrite::Replace(all) => all.iter().collect(),
                };
                for m in changed {
                    entry(
                        format!("{id}/{}", m.index),
                        serde_json::to_string(m).unwrap(),
                    );
                }
            }
        }
        self.changelog
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.changelog_lz4.fetch_add(
            lz4_flex::compress_prepend_size(&batch).len() as u64,
            Ordering::Relaxed,
        );
    }
}

impl StateStore for Measured {
    async fn load(
        &self,
        c: &[String],
    ) -> Result<
        Vec<Option<switchboard::runtime::store::Record>>,
        switchboard::runtime::store::StoreError,
    > {
        self.inner.load(c).await
    }
    async fn messages(
        &self,
        w: &[(String, Vec<String>)],
    ) -> Result<
        Vec<Vec<switchboard::core::state::StoredMessage>>,
        switchboard::runtime::store::StoreError,
    > {
        self.inner.messages(w).await
    }
    async fn outboxes(
        &self,
        c: &[String],
    ) -> Result<
        Vec<Vec<switchboard::runtime::store::Pending>>,
        switchboard::runtime::store::StoreError,
    > {
        self.inner.outboxes(c).await
    }
    async fn log(
        &self,
        c: &str,
    ) -> Result<Vec<switchboard::core::state::StoredMessage>, switchboard::runtime::store::StoreError>
    {
        self.inner.log(c).await
    }
    async fn results(
        &self,
        c: &str,
    ) -> Result<Vec<switchboard::core::state::FormResult>, switchboard::runtime::store::StoreError>
    {
        self.inner.results(c).await
    }
    async fn write(
        &self,
        writes: Vec<Write>,
        marks: &[Mark],
    ) -> Result<
        Vec<switchboard::runtime::store::WriteOutcome>,
        switchboard::runtime::store::StoreError,
    > {
        self.measure(&writes);
        self.inner.write(writes, marks).await
    }
    async fn watermarks(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<
        Vec<Option<switchboard::runtime::store::Watermark>>,
        switchboard::runtime::store::StoreError,
    > {
        self.inner.watermarks(topic, partitions).await
    }
    async fn block(
        &self,
        b: &[switchboard::core::directory::Block],
    ) -> Result<(), switchboard::runtime::store::StoreError> {
        self.inner.block(b).await
    }
    async fn blocked_since(
        &self,
        c: &[(String, String)],
    ) -> Result<Vec<Option<i64>>, switchboard::runtime::store::StoreError> {
        self.inner.blocked_since(c).await
    }
}

fn main() {
    let payloads = workload::workload(1_000);
    let directory = workload::directory();
    let store = Measured::default();
    let io = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (mut outputs, mut dead) = (0u64, 0u64);
    let n = payloads.len();
    for (b, chunk) in payloads.chunks(1_000).enumerate() {
        let records: Vec<InputRecord> = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| InputRecord {
                partition: 0,
                offset: (b * 1_000 + i) as i64,
                payload: p.clone(),
                key: serde_json::from_slice::<serde_json::Value>(p)
                    .ok()
                    .and_then(|v| v["conversation"].as_str().map(|c| c.as_bytes().to_vec())),
                topic: "in".into(),
                ..InputRecord::default()
            })
            .collect();
        let out = io
            .block_on(process_batch(
                &store,
                &directory,
                Dialect::Web1on1,
                Limits::defaults(),
                records,
            ))
            .unwrap();
        dead += out
            .kinds
            .iter()
            .filter(|((_, o), _)| *o == "dead_letter")
            .map(|(_, n)| n)
            .sum::<u64>();
        outputs += out
            .outputs
            .iter()
            .map(|o| (o.key.len() + o.value.len()) as u64)
            .sum::<u64>();
    }
    let per = |x: u64| x as f64 / n as f64;
    println!("{n} messages ({dead} dead letters), batches of 1,000; bytes per message:");
    println!("  output records (key + value)        {:8.0}", per(outputs));
    println!(
        "  outbox, as stored (postcard + LZ4)  {:8.0}",
        per(store.outbox.load(Ordering::Relaxed))
    );
    println!(
        "  changelog, raw JSON + keys          {:8.0}  ({:.2} records per message)",
        per(store.changelog.load(Ordering::Relaxed)),
        per(store.records.load(Ordering::Relaxed))
    );
    println!(
        "  changelog, LZ4 per batch            {:8.0}",
        per(store.changelog_lz4.load(Ordering::Relaxed))
    );
}
