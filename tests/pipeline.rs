//! The batch logic of the stream runtime, against the in-memory and the Redis store: the
//! simulator is the oracle, and replays must repeat outputs byte for byte without re-applying.

use switchboard::core::directory::MemoryDirectory;
use switchboard::core::event::Topic;
use switchboard::core::Dialect;
use switchboard::runtime::pipeline::headers::{self, STRUCTURED_JSON};
use switchboard::runtime::pipeline::{
    prepare_batch_at, process_batch, GroupOffsets, Header, Headers, InputRecord, Limits,
    PipelineError,
};
use switchboard::runtime::store::{MemoryStore, OutRecord, RedisStore, StateStore, Watermark};
use switchboard::tools::simulate::{inspect_document, output_line, Simulator};

/// The default limits (`config/default.toml`), which `Simulator::new` applies too.
const MAX: Limits = Limits {
    max_record_bytes: 1 << 20,
    max_output_bytes: 1_000_000,
    import_timeout_ms: 86_400_000,
};

fn directory() -> MemoryDirectory {
    switchboard::directory_file::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/directory.yaml"
    )))
    .unwrap()
}

fn trace() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/trace.jsonl")).unwrap()
}

async fn redis(test: &str) -> RedisStore {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379/".into());
    RedisStore::connect(&url, &format!("sbpipe:{}:{test}", std::process::id()))
        .await
        .unwrap_or_else(|e| panic!("Redis at {url}: {e}; start it with deploy/local/redis start"))
}

/// A record keyed as the platform keys it, by `conversation`, with a trace context of its own
/// (so replays must reproduce each output's headers).
fn record(offset: i64, line: &str) -> InputRecord {
    let key = serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v["conversation"].as_str().map(|c| c.as_bytes().to_vec()));
    InputRecord {
        partition: 0,
        offset,
        key,
        payload: line.as_bytes().to_vec(),
        headers: Headers::new(vec![Header::new("traceparent", traceparent(offset))]),
        topic: "conversation.messages".into(),
        ..InputRecord::default()
    }
}

fn traceparent(offset: i64) -> String {
    format!("00-{:032x}-{:016x}-01", offset + 1, offset + 1)
}

/// The example trace as records of partition 0, line N at offset N - 1.
fn trace_records() -> Vec<InputRecord> {
    trace()
        .lines()
        .enumerate()
        .map(|(i, l)| record(i as i64, l))
        .collect()
}

/// The simulator's outputs as `(topic, key, value)`.
fn oracle() -> (Vec<(Topic, String, String)>, serde_json::Value) {
    let mut sim = Simulator::new(directory(), Dialect::Web1on1);
    let outs = sim.run_trace(&trace());
    let lines = outs
        .iter()
        .map(|o| {
            let v: serde_json::Value = serde_json::from_str(&output_line(o)).unwrap();
            (o.topic, o.key.clone(), v["value"].to_string())
        })
        .collect();
    (lines, sim.state_document())
}

/// The pipeline's outputs as `(topic, key, value)`. Dead letters are named by their source:
/// `partition/offset` on the stream, `line-N` in a trace; the tests feed line N as partition 0,
/// offset N - 1, and map the one onto the other.
fn as_triples(outputs: &[OutRecord]) -> Vec<(Topic, String, String)> {
    outputs
        .iter()
        .map(|o| {
            let mut v: serde_json::Value = serde_json::from_str(&o.value).unwrap();
            if o.topic == Topic::DeadLetters {
                let id = v["id"].as_str().unwrap().to_string();
                let offset: i64 = id
                    .trim_start_matches("dlq:0/")
                    .trim_end_matches(":0")
                    .parse()
                    .unwrap();
                v["id"] = format!("dlq:line-{}:0", offset + 1).into();
            }
            (o.topic, o.key.clone(), v.to_string())
        })
        .collect()
}

/// Feeds the trace through `process_batch` in batches of `size`, appending relay records to the
/// end of the input as the input topic would; returns every output in order.
async fn run(store: &impl StateStore, size: usize) -> Vec<OutRecord> {
    run_with(store, &directory(), size).await
}

async fn run_with(
    store: &impl StateStore,
    dir: &impl switchboard::runtime::store::DirectorySource,
    size: usize,
) -> Vec<OutRecord> {
    let mut input: Vec<InputRecord> = trace_records();
    let mut all = Vec::new();
    let mut next = 0;
    while next < input.len() {
        let end = (next + size).min(input.len());
        let batch = input[next..end].to_vec();
        next = end;
        let out = process_batch(store, dir, Dialect::Web1on1, MAX, batch)
            .await
            .unwrap();
        for o in &out.outputs {
            if o.topic == Topic::Input {
                let offset = input.len() as i64;
                input.push(relay(offset, o));
            }
        }
        all.extend(out.outputs);
    }
    all
}

/// A relay record as the input topic gives it back: with the headers it was produced with.
fn relay(offset: i64, o: &OutRecord) -> InputRecord {
    InputRecord {
        headers: o.headers.clone(),
        ..record(offset, &o.value)
    }
}

/// Equal sequences, reporting the first difference rather than both whole lists.
fn same(got: &[(Topic, String, String)], expected: &[(Topic, String, String)], what: &str) {
    if let Some(i) = (0..got.len().min(expected.len())).find(|&i| got[i] != expected[i]) {
        panic!(
            "{what}: output {i} differs:\n got      {:?}\n expected {:?}",
            got[i], expected[i]
        );
    }
    assert_eq!(got.len(), expected.len(), "{what}: number of outputs");
}

async fn final_state(store: &impl StateStore, expected: &serde_json::Value) {
    for (id, doc) in expected.as_object().unwrap() {
        let (header, log) = switchboard::runtime::store::document(store, id, true)
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(&inspect_document(&header, log.as_deref()), doc, "{id}");
    }
}

#[tokio::test]
async fn batches_of_any_size_give_the_simulators_outputs_and_state() {
    let (expected, state) = oracle();
    for size in [1, 7, 1000] {
        let store = MemoryStore::new();
        same(
            &as_triples(&run(&store, size).await),
            &expected,
            &format!("batch size {size}"),
        );
        final_state(&store, &state).await;
    }
    let store = redis("oracle").await;
    same(&as_triples(&run(&store, 5).await), &expected, "redis");
    final_state(&store, &state).await;
}

async fn replays_repeat_outputs_without_reapplying(store: &impl StateStore) {
    let lines: Vec<InputRecord> = trace_records();
    let dir = directory();
    let first = process_batch(store, &dir, Dialect::Web1on1, MAX, lines[..30].to_vec())
        .await
        .unwrap();
    assert_eq!(first.replayed, 0);
    // The commit "failed": the same records come again, plus some new ones, cut differently.
    let dir2 = directory();
    let again = process_batch(store, &dir2, Dialect::Web1on1, MAX, lines[..12].to_vec())
        .await
        .unwrap();
    let rest = process_batch(store, &dir2, Dialect::Web1on1, MAX, lines[12..40].to_vec())
        .await
        .unwrap();
    let replayed: Vec<OutRecord> = again.outputs.iter().chain(&rest.outputs).cloned().collect();
    assert_eq!(
        replayed[..first.outputs.len()],
        first.outputs[..],
        "byte-identical outputs"
    );
    assert!(
        again.replayed > 0 && again.applied == 0,
        "replayed {} applied {}",
        again.replayed,
        again.applied
    );
    assert!(rest.applied > 0, "records 30.. are new");
    // The same records once, straight through, give the same outputs.
    let fresh = MemoryStore::new();
    let dir3 = directory();
    let straight = process_batch(&fresh, &dir3, Dialect::Web1on1, MAX, lines[..40].to_vec())
        .await
        .unwrap();
    assert_eq!(straight.outputs, replayed);
}

#[tokio::test]
async fn replays_from_the_memory_store() {
    replays_repeat_outputs_without_reapplying(&MemoryStore::new()).await;
}

#[tokio::test]
async fn replays_from_redis() {
    replays_repeat_outputs_without_reapplying(&redis("replay").await).await;
}

#[tokio::test]
async fn oversized_and_unreadable_records_go_to_the_dead_letter_topic() {
    let store = MemoryStore::new();
    let dir = directory();
    let big = format!(
        "{{\"id\":\"000000000000000000000001\",\"conversation\":\"00000000000000000000d001\",\"type\":\"chat\",\"text\":\"{}\"}}",
        "x".repeat(2 << 20)
    );
    let records = vec![
        record(0, &big),
        InputRecord {
            partition: 3,
            offset: 7,
            key: None,
            payload: b"{}".to_vec(),
            timestamp: Some("2024-05-01T00:00:00Z".into()),
            ..InputRecord::default()
        },
        record(1, "not json"),
    ];
    let out = process_batch(&store, &dir, Dialect::Web1on1, MAX, records)
        .await
        .unwrap();
    assert_eq!(out.outputs.len(), 3);
    let reasons: Vec<String> = out
        .outputs
        .iter()
        .map(|o| {
            assert_eq!(o.topic, Topic::DeadLetters);
            serde_json::from_str::<serde_json::Value>(&o.value).unwrap()["data"]["reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // Partition 0's two records keep their order; partition 3's may come anywhere.
    let position = |r: &str| reasons.iter().position(|x| x == r).unwrap();
    assert!(position("too_large") < position("not_json"), "{reasons:?}");
    assert!(reasons.contains(&"no_key".to_string()));
    assert!(
        out.outputs[0].value.len() < 10_000,
        "the DLQ keeps a bounded prefix"
    );
    assert_eq!(out.next_offsets.get(&0), Some(&2));
    assert_eq!(out.next_offsets.get(&3), Some(&8));
}

/// A store whose conversation writes fail while `dead` is set: the process died after the
/// batch's block lists were written and before its conversations were.
struct DiesBeforeWriting {
    inner: MemoryStore,
    dead: std::sync::atomic::AtomicBool,
}

impl StateStore for DiesBeforeWriting {
    async fn load(
        &self,
        ids: &[String],
    ) -> Result<
        Vec<Option<switchboard::runtime::store::Record>>,
        switchboard::runtime::store::StoreError,
    > {
        self.inner.load(ids).await
    }
    async fn messages(
        &self,
        wanted: &[(String, Vec<String>)],
    ) -> Result<
        Vec<Vec<switchboard::core::state::StoredMessage>>,
        switchboard::runtime::store::StoreError,
    > {
        self.inner.messages(wanted).await
    }
    async fn outboxes(
        &self,
        ids: &[String],
    ) -> Result<
        Vec<Vec<switchboard::runtime::store::Pending>>,
        switchboard::runtime::store::StoreError,
    > {
        self.inner.outboxes(ids).await
    }
    async fn log(
        &self,
        conversation: &str,
    ) -> Result<Vec<switchboard::core::state::StoredMessage>, switchboard::runtime::store::StoreError>
    {
        self.inner.log(conversation).await
    }
    async fn write(
        &self,
        writes: Vec<switchboard::runtime::store::Write>,
        marks: &[switchboard::runtime::store::Mark],
    ) -> Result<
        Vec<switchboard::runtime::store::WriteOutcome>,
        switchboard::runtime::store::StoreError,
    > {
        if self.dead.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(redis::RedisError::from(std::io::Error::other("killed")).into());
        }
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
        blocks: &[switchboard::core::directory::Block],
    ) -> Result<(), switchboard::runtime::store::StoreError> {
        self.inner.block(blocks).await
    }
    async fn blocked_since(
        &self,
        candidates: &[(String, String)],
    ) -> Result<Vec<Option<i64>>, switchboard::runtime::store::StoreError> {
        self.inner.blocked_since(candidates).await
    }
    async fn results(
        &self,
        conversation: &str,
    ) -> Result<Vec<switchboard::core::state::FormResult>, switchboard::runtime::store::StoreError>
    {
        self.inner.results(conversation).await
    }
}

/// The bug that broke exactly-once under SIGKILL: `/block` in d002 reached the block list, the
/// process died before d002 itself was written, and the replay then refused d002's first
/// message, sent before the block, as blocked, so the whole conversation went missing.
#[tokio::test]
async fn a_block_left_by_a_crashed_attempt_does_not_reach_back_in_time() {
    let (expected, state) = oracle();
    let store = DiesBeforeWriting {
        inner: MemoryStore::new(),
        dead: true.into(),
    };
    let dir = directory();
    let input: Vec<InputRecord> = trace_records();
    let failed = process_batch(&store, &dir, Dialect::Web1on1, MAX, input.clone()).await;
    assert!(failed.is_err(), "the first attempt dies before writing");
    store.dead.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut outputs = Vec::new();
    let mut pending = input;
    while !pending.is_empty() {
        let out = process_batch(&store, &dir, Dialect::Web1on1, MAX, pending)
            .await
            .unwrap();
        let next = 1000 + outputs.len() as i64;
        pending = out
            .outputs
            .iter()
            .filter(|o| o.topic == Topic::Input)
            .enumerate()
            .map(|(i, o)| record(next + i as i64, &o.value))
            .collect();
        outputs.extend(out.outputs);
    }
    same(&as_triples(&outputs), &expected, "after the crash");
    final_state(&store.inner, &state).await;
}

/// The directory read from Redis through a cache far smaller than one batch needs: entries are
/// evicted while the batch still runs, and the outputs must still be the simulator's.
#[tokio::test]
async fn the_directory_from_redis_through_a_tiny_cache_gives_the_simulators_outputs() {
    use switchboard::runtime::store::directory::CacheSettings;
    use switchboard::runtime::store::{DirectorySource, RedisDirectory};

    let (expected, state) = oracle();
    let store = redis("redis-directory").await;
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379/".into());
    let prefix = format!("sbpipe:{}:redis-directory", std::process::id());
    for (capacity, size) in [(2, 1000), (10_000, 7)] {
        let dir = RedisDirectory::connect(
            &url,
            &prefix,
            CacheSettings {
                capacity,
                ttl: std::time::Duration::from_secs(60),
                version_check: std::time::Duration::ZERO,
            },
        )
        .await
        .unwrap();
        let file = switchboard::directory_file::read(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/directory.yaml"
        )))
        .unwrap();
        dir.load_file(&file, &store).await.unwrap();
        // A fresh store prefix per round: the state must be built from scratch.
        let store = redis(&format!("redis-directory-{capacity}")).await;
        same(
            &as_triples(&run_with(&store, &dir, size).await),
            &expected,
            &format!("cache of {capacity}, batches of {size}"),
        );
        final_state(&store, &state).await;
        assert!(dir.take_misses().is_empty());
    }
}

/// The group's committed offset decides what was committed: a consumer that resumed behind it
/// meets records applied and committed already, and emits nothing for them; what the outbox
/// holds beyond the committed offset is replayed as usual.
#[tokio::test]
async fn records_behind_the_committed_offset_are_skipped_and_the_rest_replayed() {
    let store = MemoryStore::new();
    let dir = directory();
    let lines: Vec<InputRecord> = trace_records();
    // Lines 0..24 are all conversation d001.
    process_batch(&store, &dir, Dialect::Web1on1, MAX, lines[..10].to_vec())
        .await
        .unwrap();
    let second = process_batch(&store, &dir, Dialect::Web1on1, MAX, lines[10..20].to_vec())
        .await
        .unwrap();
    let again = prepare_batch_at(
        &store,
        &dir,
        Dialect::Web1on1,
        MAX,
        lines[..20].to_vec(),
        &committed(&[(0, 10)]),
    )
    .await
    .unwrap()
    .write(&store)
    .await
    .unwrap();
    assert_eq!((again.skipped, again.replayed, again.applied), (10, 10, 0));
    assert_eq!(again.outputs, second.outputs);
}

/// Dead letters too: one behind the committed offset was produced with its batch already.
#[tokio::test]
async fn a_dead_letter_behind_the_committed_offset_is_not_produced_again() {
    let store = MemoryStore::new();
    let dir = directory();
    let garbage = record(5, "not json at all");
    // The store has seen the partition up to offset 10.
    process_batch(
        &store,
        &dir,
        Dialect::Web1on1,
        MAX,
        vec![record(9, "nor this")],
    )
    .await
    .unwrap();
    let out = prepare_batch_at(
        &store,
        &dir,
        Dialect::Web1on1,
        MAX,
        vec![garbage.clone()],
        &committed(&[(0, 10)]),
    )
    .await
    .unwrap()
    .write(&store)
    .await
    .unwrap();
    assert_eq!((out.skipped, out.outputs.len()), (1, 0));
    // The same record where nothing was committed is a dead letter.
    let fresh = process_batch(
        &MemoryStore::new(),
        &dir,
        Dialect::Web1on1,
        MAX,
        vec![garbage],
    )
    .await
    .unwrap();
    assert_eq!(fresh.outputs[0].topic, Topic::DeadLetters);
}

/// Batch n+1 is written while batch n commits: when n's commit fails, both replay from the
/// outboxes, byte for byte, though n+1 wrote the same conversation after n.
#[tokio::test]
async fn two_batches_written_but_not_committed_both_replay_from_the_outboxes() {
    let store = MemoryStore::new();
    let dir = directory();
    let lines: Vec<InputRecord> = trace_records();
    let mut first = Vec::new();
    for range in [0..10, 10..20] {
        let out = process_batch(&store, &dir, Dialect::Web1on1, MAX, lines[range].to_vec())
            .await
            .unwrap();
        first.extend(out.outputs);
    }
    let again = process_batch(&store, &dir, Dialect::Web1on1, MAX, lines[..20].to_vec())
        .await
        .unwrap();
    assert_eq!(again.replayed, 20);
    assert_eq!(again.outputs, first);
}

/// A record the store has applied, that the group has not committed and that no outbox holds
/// any more (a later batch was written over it, which happens only after its own commit): the
/// group's offsets went back, or Kafka lost a commit. Neither repeating its outputs nor dropping
/// them is known to be right, so its partition halts, with both offsets in the reason.
#[tokio::test]
async fn an_applied_record_neither_committed_nor_in_the_outbox_halts_its_partition() {
    let store = MemoryStore::new();
    let dir = directory();
    let lines: Vec<InputRecord> = trace_records();
    // Three writes: a conversation keeps the outboxes of its last two while the earlier is not
    // known committed, so the first batch's records are in neither.
    for range in [0..10, 10..15, 15..20] {
        process_batch(&store, &dir, Dialect::Web1on1, MAX, lines[range].to_vec())
            .await
            .unwrap();
    }
    for known in [None, Some(3)] {
        let offsets = committed(&known.map(|c| (0, c)).into_iter().collect::<Vec<_>>());
        let prepared = prepare_batch_at(
            &store,
            &dir,
            Dialect::Web1on1,
            MAX,
            lines[..20].to_vec(),
            &offsets,
        )
        .await;
        let Err(PipelineError::Halt(halts)) = prepared else {
            panic!("expected a halt with committed {known:?}, got {prepared:?}");
        };
        assert_eq!(halts.len(), 1);
        assert_eq!(halts[0].partition, 0);
        assert!(
            halts[0].reason.contains("offset 3 is behind it") || known.is_none(),
            "{}",
            halts[0].reason
        );
    }
}

/// Redis behind Kafka (review F1): the partition's watermark below the committed offset, or
/// missing while the group has committed, halts that partition — and only that one — before
/// anything is applied to the stale state.
#[tokio::test]
async fn a_store_behind_the_committed_offset_halts_the_partition_before_applying() {
    let dir = directory();
    let lines: Vec<InputRecord> = trace_records();
    let store = MemoryStore::new();
    process_batch(&store, &dir, Dialect::Web1on1, MAX, lines[..10].to_vec())
        .await
        .unwrap();
    // Partition 0 was applied up to offset 10; the group says 15 was committed: 10..15 lost.
    let mut batch = lines[15..20].to_vec();
    let mut other = lines[20].clone();
    other.partition = 1;
    batch.push(other);
    let got = prepare_batch_at(
        &store,
        &dir,
        Dialect::Web1on1,
        MAX,
        batch.clone(),
        &committed(&[(0, 15), (1, 0)]),
    )
    .await;
    let Err(PipelineError::Halt(halts)) = got else {
        panic!("expected a halt, got {got:?}");
    };
    assert_eq!(halts.len(), 1, "{halts:?}");
    assert_eq!(halts[0].partition, 0);
    assert!(
        halts[0].reason.contains("up to offset 10"),
        "{}",
        halts[0].reason
    );
    assert!(
        halts[0].reason.contains("committed 15"),
        "{}",
        halts[0].reason
    );
    assert!(
        store.conversation_ids().len() == 1,
        "nothing more was written"
    );

    // A store that lost everything: no watermark at all, while the group has committed.
    let empty = MemoryStore::new();
    let got = prepare_batch_at(
        &empty,
        &dir,
        Dialect::Web1on1,
        MAX,
        lines[10..20].to_vec(),
        &committed(&[(0, 10)]),
    )
    .await;
    let Err(PipelineError::Halt(halts)) = got else {
        panic!("expected a halt, got {got:?}");
    };
    assert!(
        halts[0].reason.contains("no watermark"),
        "{}",
        halts[0].reason
    );

    // The same batches where the store is complete go through.
    let whole = MemoryStore::new();
    let first = process_batch(&whole, &dir, Dialect::Web1on1, MAX, lines[..10].to_vec())
        .await
        .unwrap();
    assert_eq!(first.next_offsets[&0], 10);
    assert_eq!(
        whole
            .watermarks("conversation.messages", &[0, 1])
            .await
            .unwrap(),
        [
            Some(Watermark {
                next: 10,
                committed: -1
            }),
            None
        ]
    );
    prepare_batch_at(
        &whole,
        &dir,
        Dialect::Web1on1,
        MAX,
        lines[10..20].to_vec(),
        &committed(&[(0, 10)]),
    )
    .await
    .unwrap();
}

/// The watermark also records what the group had committed when it was written: a committed
/// offset below that means the offsets went back (a reset, a new group ID, expired offsets, a
/// lost commit), and the records from there were committed already — applying or replaying
/// them would repeat their outputs. The batch written but not committed still replays.
#[tokio::test]
async fn offsets_moved_back_or_forgotten_halt_instead_of_repeating_outputs() {
    let store = MemoryStore::new();
    let dir = directory();
    let lines: Vec<InputRecord> = trace_records();
    process_batch(&store, &dir, Dialect::Web1on1, MAX, lines[..10].to_vec())
        .await
        .unwrap();
    let at = |c: &[(i32, i64)], range: std::ops::Range<usize>| {
        let (store, dir, offsets) = (&store, &dir, committed(c));
        let records = lines[range].to_vec();
        async move { prepare_batch_at(store, dir, Dialect::Web1on1, MAX, records, &offsets).await }
    };
    // Written once the group had committed 10; not committed itself (yet).
    let second = at(&[(0, 10)], 10..20)
        .await
        .unwrap()
        .write(&store)
        .await
        .unwrap();
    // Its replay, from the committed offset, is no halt: the outputs come from the outbox.
    let replay = at(&[(0, 10)], 10..20).await.unwrap();
    let replay = replay.write(&store).await.unwrap();
    assert_eq!(
        (replay.replayed, replay.outputs.clone()),
        (10, second.outputs)
    );
    // The group moved back behind what it had committed when the store was written.
    let Err(PipelineError::Halt(halts)) = at(&[(0, 5)], 5..20).await else {
        panic!("offsets moved back must halt");
    };
    assert!(
        halts[0].reason.contains("moved back"),
        "{}",
        halts[0].reason
    );
    assert!(
        halts[0].reason.contains("--to-offset 20"),
        "{}",
        halts[0].reason
    );
    // A new group ID (or expired offsets): nothing committed, yet the store saw commits.
    let Err(PipelineError::Halt(halts)) = at(&[], 0..20).await else {
        panic!("a forgotten group must halt");
    };
    assert!(
        halts[0].reason.contains("committed nothing"),
        "{}",
        halts[0].reason
    );
    // Past the batch, once it committed, all goes on.
    at(&[(0, 20)], 20..24).await.unwrap();
}

/// A conversation lives on the partition its first record came on; a record of it on another
/// partition (another partitioner, added partitions) is dead-lettered as misrouted, never
/// compared with offsets of another partition, and the conversation is left as it was.
#[tokio::test]
async fn a_record_on_another_partition_than_its_conversations_is_dead_lettered() {
    let store = MemoryStore::new();
    let dir = directory();
    let lines: Vec<InputRecord> = trace_records();
    process_batch(&store, &dir, Dialect::Web1on1, MAX, lines[..10].to_vec())
        .await
        .unwrap();
    let before = store
        .load(&["00000000000000000000d001".to_string()])
        .await
        .unwrap();
    assert_eq!(before[0].as_ref().map(|r| r.partition), Some(Some(0)));
    let mut stray = lines[10].clone();
    stray.partition = 3;
    // An offset the conversation's own partition has long passed: still not a replay.
    stray.offset = 2;
    let out = process_batch(&store, &dir, Dialect::Web1on1, MAX, vec![stray])
        .await
        .unwrap();
    assert_eq!(out.outputs.len(), 1);
    assert_eq!(out.outputs[0].topic, Topic::DeadLetters);
    let dead: serde_json::Value = serde_json::from_str(&out.outputs[0].value).unwrap();
    assert_eq!(dead["data"]["reason"], "misrouted");
    let detail = dead["data"]["detail"].as_str().unwrap();
    assert!(detail.contains("lives on partition 0"), "{detail}");
    assert!(detail.contains("arrived on partition 3"), "{detail}");
    assert_eq!(
        store
            .load(&["00000000000000000000d001".to_string()])
            .await
            .unwrap(),
        before
    );
}

/// Damages d001's key `part` in the store `test` with `damage` (a command taking the key), then
/// runs a batch of `d001` (partition 0) and `d002` (moved to partition 5): d001's partition, and
/// only it, must halt, naming d001.
async fn only_d001_halts(
    store: &RedisStore,
    test: &str,
    part: &str,
    damage: &[&str],
    d001: InputRecord,
    mut d002: InputRecord,
) {
    let client = redis::Client::open(
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379/".into()),
    )
    .unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!(
        "sbpipe:{}:{test}:{{00000000000000000000d001}}:{part}",
        std::process::id()
    );
    let _: () = redis::cmd(damage[0])
        .arg(&key)
        .arg(&damage[1..])
        .query_async(&mut conn)
        .await
        .unwrap();
    d002.partition = 5;
    let got = process_batch(store, &directory(), Dialect::Web1on1, MAX, vec![d001, d002]).await;
    let Err(PipelineError::Halt(halts)) = got else {
        panic!("expected a halt, got {got:?}");
    };
    assert_eq!(halts.iter().map(|h| h.partition).collect::<Vec<_>>(), [0]);
    let reason = &halts[0].reason;
    assert!(reason.contains("00000000000000000000d001"), "{reason}");
}

/// A conversation whose stored state cannot be read halts the partitions its records came on,
/// and nothing else (the runtime goes on with the others).
#[tokio::test]
async fn a_poison_conversation_halts_only_its_partitions() {
    let lines: Vec<InputRecord> = trace_records();
    let store = redis("poison").await;
    process_batch(
        &store,
        &directory(),
        Dialect::Web1on1,
        MAX,
        lines[..10].to_vec(),
    )
    .await
    .unwrap();
    let (d001, d002) = (lines[10].clone(), lines[30].clone());
    only_d001_halts(
        &store,
        "poison",
        "h",
        &["HSET", "doc", "{not json"],
        d001,
        d002,
    )
    .await;
}

/// A conversation whose keys break its write script (here its message log a string, not a
/// hash) halts its own partition; the other conversations of the batch are written (Redis ran
/// the rest of the transaction) and their partitions go on.
#[tokio::test]
async fn a_conversation_whose_write_script_fails_halts_only_its_partition() {
    let lines: Vec<InputRecord> = trace_records();
    let store = redis("script").await;
    let (d001, d002) = (lines[0].clone(), lines[24].clone());
    only_d001_halts(&store, "script", "m", &["SET", "not a hash"], d001, d002).await;
    let d002 = store
        .load(&["00000000000000000000d002".to_string()])
        .await
        .unwrap();
    assert_eq!(d002[0].as_ref().map(|r| r.partition), Some(Some(5)));
}

fn committed(offsets: &[(i32, i64)]) -> GroupOffsets {
    GroupOffsets(offsets.iter().copied().collect())
}

/// The runtime applies batch n+1 while batch n commits, relying on preparing to only read: a
/// prepared batch changes nothing until written, and writing it gives what `process_batch` does.
#[tokio::test]
async fn a_prepared_batch_changes_nothing_until_written() {
    use switchboard::runtime::pipeline::prepare_batch;
    let dir = directory();
    let lines: Vec<InputRecord> = trace_records();
    let store = MemoryStore::new();
    let prepared = prepare_batch(&store, &dir, Dialect::Web1on1, MAX, lines.clone())
        .await
        .unwrap();
    assert!(store.conversation_ids().is_empty(), "preparing wrote state");
    // The trace's /block (conversation d002, contact IP 198.51.100.23).
    let blocked_ip = [(
        "0000000000000000000000a2".to_string(),
        "198.51.100.23".to_string(),
    )];
    assert_eq!(
        store.blocked_since(&blocked_ip).await.unwrap(),
        [None],
        "preparing wrote a block list"
    );

    let out = prepared.write(&store).await.unwrap();
    assert!(!store.conversation_ids().is_empty());
    assert!(store.blocked_since(&blocked_ip).await.unwrap()[0].is_some());
    let fresh = MemoryStore::new();
    let straight = process_batch(&fresh, &dir, Dialect::Web1on1, MAX, lines)
        .await
        .unwrap();
    assert_eq!(out, straight);
    assert_eq!(store.conversation_ids(), fresh.conversation_ids());
}

/// Review finding F5, deterministically: a batch prepared from an older state of a conversation
/// (a zombie, or a write delayed past a rebalance) is written after the new owner wrote that
/// conversation. The write must be refused as stale and change nothing; it once overwrote the
/// new owner's state and appended the `/send`'s form result a second time.
async fn a_write_prepared_from_an_older_state_is_stale(store: &impl StateStore) {
    use switchboard::runtime::pipeline::{prepare_batch, PipelineError};
    let dir = directory();
    let lines: Vec<String> = trace().lines().map(str::to_string).collect();
    let c = "00000000000000000000d001";
    // Lines 1-14 open d001 and fill its Trade-in form; line 15 `/send`s it, line 16 renames it.
    let opening: Vec<InputRecord> = trace_records()[..14].to_vec();
    process_batch(store, &dir, Dialect::Web1on1, MAX, opening)
        .await
        .unwrap();
    let send = record(240, &lines[14]);
    let rename = record(250, &lines[15]);
    let zombie = prepare_batch(
        store,
        &dir,
        Dialect::Web1on1,
        MAX,
        vec![send.clone(), rename],
    )
    .await
    .unwrap();
    process_batch(store, &dir, Dialect::Web1on1, MAX, vec![send])
        .await
        .unwrap();
    let owners = switchboard::runtime::store::document(store, c, true)
        .await
        .unwrap();
    assert_eq!(owners.as_ref().unwrap().0.results.len(), 1, "the form sent");
    let owners_outbox = store.outboxes(&[c.to_string()]).await.unwrap();

    let outcome = zombie.write(store).await.map(|out| out.applied);
    let results = store.results(c).await.unwrap().len();
    assert!(
        matches!(&outcome, Err(PipelineError::Stale(id)) if id == c),
        "the zombie's write gave {outcome:?}, and d001 now has {results} form results"
    );
    let after = switchboard::runtime::store::document(store, c, true)
        .await
        .unwrap();
    assert_eq!(after, owners, "the zombie's write changed the conversation");
    assert_eq!(
        store.outboxes(&[c.to_string()]).await.unwrap(),
        owners_outbox
    );
    let record = store.load(&[c.to_string()]).await.unwrap().remove(0);
    assert_eq!(record.unwrap().offset, 240);
}

#[tokio::test]
async fn a_stale_prepared_write_is_refused_by_the_memory_store() {
    a_write_prepared_from_an_older_state_is_stale(&MemoryStore::new()).await;
}

#[tokio::test]
async fn a_stale_prepared_write_is_refused_by_redis() {
    a_write_prepared_from_an_older_state_is_stale(&redis("stale-prepared").await).await;
}

/// Review finding F6: a `/block` applied by an attempt whose conversation write is refused (a
/// zombie, or an attempt the new owner re-decided without it) must leave no block behind: the
/// block list holds only blocks a stored, and so committed or replayable, `/block` justifies.
async fn a_refused_attempt_leaves_no_block(store: &impl StateStore) {
    use switchboard::runtime::pipeline::prepare_batch;
    let dir = directory();
    let lines = trace_records();
    // Lines 25-29 are d002's opening; line 30 is its `/block` of 198.51.100.23.
    let blocked_ip = [(
        "0000000000000000000000a2".to_string(),
        "198.51.100.23".to_string(),
    )];
    process_batch(store, &dir, Dialect::Web1on1, MAX, lines[24..26].to_vec())
        .await
        .unwrap();
    let zombie = prepare_batch(store, &dir, Dialect::Web1on1, MAX, lines[26..30].to_vec())
        .await
        .unwrap();
    // The new owner got only as far as before the `/block`.
    process_batch(store, &dir, Dialect::Web1on1, MAX, lines[26..28].to_vec())
        .await
        .unwrap();
    let refused = zombie.write(store).await;
    assert!(
        matches!(refused, Err(PipelineError::Stale(_))),
        "{refused:?}"
    );
    assert_eq!(
        store.blocked_since(&blocked_ip).await.unwrap(),
        [None],
        "a refused attempt left its block"
    );
    // Applied for real, the `/block` blocks.
    process_batch(store, &dir, Dialect::Web1on1, MAX, lines[28..30].to_vec())
        .await
        .unwrap();
    assert!(store.blocked_since(&blocked_ip).await.unwrap()[0].is_some());
}

#[tokio::test]
async fn a_refused_attempt_leaves_no_block_in_the_memory_store() {
    a_refused_attempt_leaves_no_block(&MemoryStore::new()).await;
}

#[tokio::test]
async fn a_refused_attempt_leaves_no_block_in_redis() {
    a_refused_attempt_leaves_no_block(&redis("phantom-block").await).await;
}

/// One record at a time, so that every output of a batch has the same cause: each event carries
/// the CloudEvents content type and then its input's headers, save the input's own content type
/// and binary-mode attributes; a relay record carries its input's as they were; a dead letter
/// gives them back whole, with the error's context.
#[tokio::test]
async fn every_output_carries_the_headers_of_the_record_that_caused_it() {
    let store = MemoryStore::new();
    let dir = directory();
    let mut input: Vec<InputRecord> = trace_records();
    for r in input.iter_mut().step_by(3) {
        let mut more: Vec<Header> = r.headers.iter().cloned().collect();
        more.push(Header::new("Content-Type", "application/json"));
        more.push(Header::new("ce_id", "not this event's"));
        more.push(Header::new("tracestate", "sb=1"));
        r.headers = Headers::new(more);
    }
    let mut next = 0;
    let mut seen = [0; 3];
    while next < input.len() {
        let cause = input[next].clone();
        next += 1;
        let out = process_batch(&store, &dir, Dialect::Web1on1, MAX, vec![cause.clone()])
            .await
            .unwrap();
        for o in &out.outputs {
            match o.topic {
                Topic::Input => {
                    assert_eq!(o.headers, cause.headers, "relay {}", o.value);
                    input.push(relay(input.len() as i64, o));
                    seen[0] += 1;
                }
                Topic::DeadLetters => {
                    assert_eq!(headers::original_headers(&o.headers), cause.headers);
                    let v: serde_json::Value = serde_json::from_str(&o.value).unwrap();
                    let reason = v["data"]["reason"].as_str().unwrap().as_bytes();
                    assert_eq!(o.headers.get(headers::ERROR_REASON), Some(reason));
                    let offset = cause.offset.to_string();
                    assert_eq!(
                        o.headers.get(headers::ORIGINAL_OFFSET),
                        Some(offset.as_bytes())
                    );
                    assert_eq!(o.headers.get(headers::ORIGINAL_KEY), cause.key.as_deref());
                    seen[1] += 1;
                }
                _ => {
                    let expected: Vec<Header> =
                        std::iter::once(Header::new("content-type", STRUCTURED_JSON))
                            .chain(
                                cause
                                    .headers
                                    .iter()
                                    .filter(|h| h.name != "Content-Type" && h.name != "ce_id")
                                    .cloned(),
                            )
                            .collect();
                    assert_eq!(o.headers, Headers::new(expected), "{}", o.value);
                    seen[2] += 1;
                }
            }
        }
    }
    assert!(
        seen.iter().all(|n| *n > 0),
        "relays, dead letters, events: {seen:?}"
    );
}

/// Feeds `lines` through `process_batch` under `limits` in batches of `size`, appending relay
/// records to the end of the input as the input topic would; returns every output in order.
async fn feed(
    store: &impl StateStore,
    limits: Limits,
    lines: &[String],
    size: usize,
) -> Vec<OutRecord> {
    let dir = directory();
    let mut input: Vec<InputRecord> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| record(i as i64, l))
        .collect();
    let (mut all, mut next) = (Vec::new(), 0);
    while next < input.len() {
        let batch = input[next..(next + size).min(input.len())].to_vec();
        next += batch.len();
        let out = process_batch(store, &dir, Dialect::Web1on1, limits, batch)
            .await
            .unwrap();
        for o in out.outputs.iter().filter(|o| o.topic == Topic::Input) {
            input.push(relay(input.len() as i64, o));
        }
        all.extend(out.outputs);
    }
    all
}

/// A conversation `d0a1` with many long messages (its log far over `max_record_bytes`), a
/// target `d0a2`, then `/import d0a1` into the target, and a message after it.
fn long_import_trace() -> Vec<String> {
    let line = |id: u32, conv: &str, extra: &str| {
        format!(
            r#"{{"id":"{id:024x}","conversation":"00000000000000000000{conv}","createdAt":"2024-05-01T10:{:02}:{:02}Z",{extra}}}"#,
            id / 60,
            id % 60
        )
    };
    let contact = r#""type":"chat","role":"contact","organization":"0000000000000000000000a2","touchpoint":"web""#;
    let agent = r#""type":"command","role":"agent","sender":"0000000000000000000000e1""#;
    let mut lines = vec![line(1, "d0a1", &format!(r#"{contact},"text":"hello""#))];
    for i in 2..40 {
        let text = format!("message {i} {}", "blah ".repeat(60));
        lines.push(line(i, "d0a1", &format!(r#"{contact},"text":"{text}""#)));
    }
    lines.push(line(
        40,
        "d0a2",
        &format!(r#"{contact},"text":"the target""#),
    ));
    let import = r#""text":"/import 00000000000000000000d0a1""#;
    lines.push(line(41, "d0a2", &format!("{agent},{import}")));
    lines.push(line(
        42,
        "d0a2",
        &format!(r#"{contact},"text":"after the import""#),
    ));
    lines
}

fn simulated(sim: &mut Simulator, trace: &str) -> Vec<(Topic, String, String)> {
    sim.run_trace(trace)
        .iter()
        .map(|o| {
            let v: serde_json::Value = serde_json::from_str(&output_line(o)).unwrap();
            (o.topic, o.key.clone(), v["value"].to_string())
        })
        .collect()
}

#[tokio::test]
async fn an_origin_longer_than_a_record_is_imported_in_parts_as_simulate_does() {
    let limits = Limits {
        max_record_bytes: 4096,
        max_output_bytes: 16384,
        ..MAX
    };
    let lines = long_import_trace();
    let origin_bytes: usize = lines[..39].iter().map(String::len).sum();
    assert!(origin_bytes > 4 * limits.max_record_bytes, "{origin_bytes}");
    let store = MemoryStore::new();
    let all = feed(&store, limits, &lines, 5).await;
    let transfers: Vec<&OutRecord> = all
        .iter()
        .filter(|o| o.value.contains(r#""type":"import.transfer""#))
        .collect();
    assert!(transfers.len() >= 4, "{} transfer records", transfers.len());
    for t in &transfers {
        assert!(
            t.value.len() <= limits.relay_bytes(),
            "{} bytes",
            t.value.len()
        );
    }
    assert!(all.iter().all(|o| o.topic != Topic::DeadLetters));

    let trace = lines.join("\n");
    let mut sim =
        Simulator::new(directory(), Dialect::Web1on1).with_max_relay_bytes(limits.relay_bytes());
    same(
        &as_triples(&all),
        &simulated(&mut sim, &trace),
        "import in parts",
    );
    final_state(&store, &sim.state_document()).await;
    // The parts come to what one record carrying the whole transfer gives, result included.
    let mut whole = Simulator::new(directory(), Dialect::Web1on1);
    let whole_outputs = simulated(&mut whole, &trace);
    assert_eq!(sim.state_document(), whole.state_document());
    let results = |outputs: Vec<(Topic, String, String)>| -> Vec<String> {
        outputs
            .into_iter()
            .filter(|o| o.0 == Topic::CommandResults)
            .map(|o| o.2)
            .collect()
    };
    assert_eq!(results(as_triples(&all)), results(whole_outputs));
}

/// Limits of 3,000 bytes per output, and the example trace with its `>crm-sync` bot command
/// (line `at`) made about 4,000 bytes long, so that its event is too large to produce.
fn oversize_bot_command() -> (Limits, Vec<String>, usize) {
    let limits = Limits {
        max_output_bytes: 3000,
        ..MAX
    };
    let mut lines: Vec<String> = trace().lines().map(str::to_string).collect();
    let at = lines.iter().position(|l| l.contains(">crm-sync")).unwrap();
    lines[at] = lines[at].replace(">crm-sync", &format!(">crm-sync {}", "x".repeat(4000)));
    (limits, lines, at)
}

#[tokio::test]
async fn an_output_over_the_producer_limit_is_dead_lettered_and_the_stream_goes_on() {
    use switchboard::runtime::pipeline::limits::wire_size;
    let (limits, lines, _) = oversize_bot_command();

    let store = MemoryStore::new();
    let got = feed(&store, limits, &lines, 7).await;
    let unlimited = MemoryStore::new();
    let expected = feed(&unlimited, MAX, &lines, 7).await;
    assert!(got.iter().all(|o| wire_size(o) <= limits.max_output_bytes));
    assert_eq!(got.len(), expected.len(), "one output for one");
    let differ: Vec<usize> = (0..got.len()).filter(|&i| got[i] != expected[i]).collect();
    assert_eq!(differ.len(), 1, "only the bot command's event: {differ:?}");
    let (dead, original) = (&got[differ[0]], &expected[differ[0]]);
    assert_eq!(
        (original.topic, dead.topic),
        (Topic::BotCommands, Topic::DeadLetters)
    );
    assert!(wire_size(original) > limits.max_output_bytes);
    let v: serde_json::Value = serde_json::from_str(&dead.value).unwrap();
    assert_eq!(v["data"]["reason"], "too_large");
    let detail = v["data"]["detail"].as_str().unwrap();
    let size = wire_size(original).to_string();
    for part in ["BotCommands", "bot.commands", size.as_str(), "3000"] {
        assert!(detail.contains(part), "{detail} names {part}");
    }
    assert_eq!(
        dead.headers.get(headers::ERROR_REASON),
        Some(&b"too_large"[..])
    );
    assert_eq!(dead.key, original.key);
    // The state is as if nothing had been too large: only an output was.
    let ids: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["conversation"].as_str().map(str::to_string))
        .collect();
    for id in ids {
        let a = switchboard::runtime::store::document(&store, &id, true)
            .await
            .unwrap();
        let b = switchboard::runtime::store::document(&unlimited, &id, true)
            .await
            .unwrap();
        assert_eq!(a.map(|d| d.0), b.map(|d| d.0), "{id}");
    }
}

#[tokio::test]
async fn a_replay_produces_the_same_dead_letter_for_an_oversize_output() {
    let (limits, lines, at) = oversize_bot_command();
    let input: Vec<InputRecord> = lines[..=at]
        .iter()
        .enumerate()
        .map(|(i, l)| record(i as i64, l))
        .collect();
    let store = MemoryStore::new();
    let dir = directory();
    let first = process_batch(&store, &dir, Dialect::Web1on1, limits, input.clone())
        .await
        .unwrap();
    assert!(first.outputs.iter().any(|o| o.topic == Topic::DeadLetters));
    // Its commit did not happen: the same records again come from the outbox.
    let again = process_batch(&store, &dir, Dialect::Web1on1, limits, input.clone())
        .await
        .unwrap();
    assert_eq!(again.replayed, input.len());
    assert_eq!(again.outputs, first.outputs);
}

/// An `/import` whose request is still in the input topic when a message reaches its target
/// past `imports.timeout_ms`: the limit reaches the core through `Limits`, and the stream fails
/// the import, undoes the origin's archiving and refuses the late transfer, as `simulate` does.
#[tokio::test]
async fn an_import_timed_out_in_the_stream_ends_as_simulate_ends_it() {
    let line = |id: u32, conv: &str, at: &str, rest: &str| {
        format!(
            r#"{{"id":"{id:024x}","conversation":"00000000000000000000{conv}","createdAt":"2024-05-01T10:{at}Z",{rest}}}"#
        )
    };
    let contact = r#""type":"chat","role":"contact","organization":"0000000000000000000000a2","touchpoint":"web","text":"hi""#;
    let import = r#""type":"command","role":"agent","sender":"0000000000000000000000e1","text":"/import 00000000000000000000d0c1""#;
    let lines = vec![
        line(1, "d0c1", "00:01", contact),
        line(2, "d0c2", "00:02", contact),
        line(3, "d0c2", "00:03", import),
        // 61 s after the /import, before its request (appended to the input) is read.
        line(4, "d0c2", "01:04", contact),
    ];
    let results_for = |all: &[OutRecord], id: &str| -> Vec<serde_json::Value> {
        all.iter()
            .filter(|o| o.topic == Topic::CommandResults)
            .map(|o| serde_json::from_str::<serde_json::Value>(&o.value).unwrap()["data"].clone())
            .filter(|d| d["message"] == id)
            .collect()
    };
    let command = format!("{:024x}", 3);
    let limits = Limits {
        import_timeout_ms: 60_000,
        ..MAX
    };
    let store = MemoryStore::new();
    let all = feed(&store, limits, &lines, 4).await;
    let types: Vec<String> = all
        .iter()
        .filter(|o| o.topic == Topic::Input)
        .map(|o| serde_json::from_str::<serde_json::Value>(&o.value).unwrap()["type"].to_string())
        .collect();
    assert_eq!(
        types,
        [
            r#""import.request""#,
            r#""import.cancel""#,
            r#""import.transfer""#
        ]
    );
    let result = results_for(&all, &command);
    assert_eq!(result.len(), 1, "one result for the /import");
    assert_eq!(result[0]["code"], "import_timed_out");
    let mut sim = Simulator::new(directory(), Dialect::Web1on1).with_import_timeout_ms(60_000);
    same(
        &as_triples(&all),
        &simulated(&mut sim, &lines.join("\n")),
        "timed out",
    );
    final_state(&store, &sim.state_document()).await;
    let origin = &sim.state_document()["00000000000000000000d0c1"];
    assert_eq!(origin["status"], "queued");
    assert_ne!(origin["name"], "TRANSFERRED");
    assert_eq!(origin.get("transferred"), None);

    // Under the default limit the same records import.
    let all = feed(&MemoryStore::new(), MAX, &lines, 4).await;
    assert_eq!(results_for(&all, &command)[0]["outcome"], "applied");
}
