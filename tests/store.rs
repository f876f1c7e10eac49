//! The Redis state store against a real Redis (`deploy/local/redis start`; `REDIS_URL`
//! overrides `redis://127.0.0.1:16379/`). The in-memory store is held to the same behaviour.

use std::collections::{HashMap, VecDeque};

use switchboard::core::directory::{Block, MemoryDirectory};
use switchboard::core::event::Topic;
use switchboard::core::log::{LogWrite, MemoryLog};
use switchboard::core::message::{decode, Decoded, KeySource};
use switchboard::core::state::{Conversation, StoredMessage};
use switchboard::core::transition::{apply, Env};
use switchboard::core::Dialect;
use switchboard::runtime::pipeline::{Header, Headers};
use switchboard::runtime::store::{
    MemoryStore, OutRecord, Pending, RedisStore, StateStore, StoreError, Write, WriteOutcome,
};
use switchboard::tools::simulate::{inspect_document, Simulator};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379/".into())
}

/// A store under a prefix of its own, so tests never see each other's keys.
async fn redis(test: &str) -> RedisStore {
    let prefix = format!("sbtest:{}:{test}", std::process::id());
    RedisStore::connect(&redis_url(), &prefix)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis at {} is not reachable ({e}); start it with deploy/local/redis start",
                redis_url()
            )
        })
}

fn directory() -> MemoryDirectory {
    switchboard::directory_file::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/directory.yaml"
    )))
    .unwrap()
}

fn conversation(id: &str) -> Conversation {
    Conversation::new(
        id,
        "0000000000000000000000a2",
        "contact",
        "2024-05-01T09:00:00Z",
    )
}

fn message(index: u64, id: &str, text: &str) -> StoredMessage {
    let mut m = StoredMessage::placeholder();
    m.index = index;
    m.id = id.into();
    m.kind = "chat".into();
    m.text = text.into();
    m.created_at = "2024-05-01T09:00:00Z".into();
    m
}

/// Outputs with headers as a record may carry them: text, bytes that are not UTF-8, and none.
fn pending(offset: i64) -> Pending {
    let headers = Headers::new(vec![
        Header::new(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        ),
        Header::new(
            "traceparent",
            format!("00-{offset:032x}-00f067aa0ba902b7-01"),
        ),
        Header::new("bytes", [0xff, 0x00, 0xfe]),
        Header {
            name: "nothing".into(),
            value: None,
        },
    ]);
    Pending {
        offset,
        outputs: vec![OutRecord {
            topic: Topic::CommandResults,
            key: "k".into(),
            value: format!("{{\"o\":{offset}}}").into(),
            headers,
        }],
    }
}

async fn round_trip_and_fencing(store: &impl StateStore) {
    // A batch of dead letters only asks for nothing; that must not fail.
    assert!(store.load(&[]).await.unwrap().is_empty());
    assert!(store.outboxes(&[]).await.unwrap().is_empty());
    assert!(store.messages(&[]).await.unwrap().is_empty());
    assert!(store.write(Vec::new(), &[]).await.unwrap().is_empty());
    let c = "00000000000000000000c001".to_string();
    let mut conv = conversation(&c);
    conv.version = 1;
    let first = Write {
        committed: -1,
        conversation: conv.clone(),
        base: None,
        partition: 0,
        blocks: Vec::new(),
        offset: 5,
        log: vec![LogWrite::Append(message(
            0,
            "0000000000000000000000a0",
            "hello",
        ))],
        outbox: vec![pending(5)],
    };
    assert_eq!(
        store.write(vec![first.clone()], &[]).await.unwrap(),
        [WriteOutcome::Written]
    );
    let loaded = store
        .load(&[c.clone(), "00000000000000000000c0ff".into()])
        .await
        .unwrap();
    let record = loaded[0].clone().expect("written");
    assert_eq!(
        (record.conversation.clone(), record.offset),
        (conv.clone(), 5)
    );
    assert!(loaded[1].is_none());
    assert_eq!(
        store
            .outboxes(&[c.clone(), "00000000000000000000c0ff".into()])
            .await
            .unwrap(),
        [vec![pending(5)], vec![]]
    );

    // The same offset again, or an older one: nothing changes, even from the right base.
    let mut zombie = first.clone();
    zombie.base = Some(5);
    zombie.conversation.name = "Zombie".into();
    assert_eq!(
        store.write(vec![zombie.clone()], &[]).await.unwrap(),
        [WriteOutcome::Stale]
    );
    zombie.offset = 3;
    assert_eq!(
        store.write(vec![zombie], &[]).await.unwrap(),
        [WriteOutcome::Stale]
    );
    assert_eq!(
        store.load(std::slice::from_ref(&c)).await.unwrap()[0]
            .as_ref()
            .unwrap()
            .conversation
            .name,
        conv.name
    );

    // A later batch: an update of message 0 and an append, in one atomic write.
    let mut liked = message(0, "0000000000000000000000a0", "hello");
    liked.likes.push("0000000000000000000000e1".into());
    liked.version = 1;
    conv.version = 3;
    let second = Write {
        // The first write (offset 5) committed: its outbox goes.
        committed: 6,
        conversation: conv.clone(),
        base: Some(5),
        partition: 0,
        blocks: Vec::new(),
        offset: 9,
        log: vec![
            LogWrite::Update(liked.clone()),
            LogWrite::Append(message(1, "0000000000000000000000a1", "again")),
        ],
        outbox: vec![pending(8), pending(9)],
    };
    assert_eq!(
        store.write(vec![second], &[]).await.unwrap(),
        [WriteOutcome::Written]
    );
    let log = store.log(&c).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0], liked);
    let found = store
        .messages(&[
            (
                c.clone(),
                vec![
                    "0000000000000000000000a1".into(),
                    "0000000000000000000000ff".into(),
                ],
            ),
            (
                "00000000000000000000c0ff".into(),
                vec!["0000000000000000000000a1".into()],
            ),
            (c.clone(), vec!["0000000000000000000000a0".into()]),
        ])
        .await
        .unwrap();
    assert_eq!(found.len(), 3);
    assert_eq!(
        found[0].iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["again"]
    );
    assert!(found[1].is_empty());
    assert_eq!(found[2], [liked.clone()]);
    assert_eq!(
        store.outboxes(std::slice::from_ref(&c)).await.unwrap()[0],
        [pending(8), pending(9)]
    );

    // A replace (what /import does) drops everything not in it.
    let third = Write {
        committed: -1,
        conversation: conv,
        base: Some(9),
        partition: 0,
        blocks: Vec::new(),
        offset: 10,
        log: vec![
            LogWrite::Replace(vec![message(0, "0000000000000000000000b0", "merged")]),
            LogWrite::Append(message(1, "0000000000000000000000b1", "after")),
        ],
        outbox: Vec::new(),
    };
    assert_eq!(
        store.write(vec![third], &[]).await.unwrap(),
        [WriteOutcome::Written]
    );
    let texts: Vec<String> = store
        .log(&c)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["merged", "after"]);
    assert_eq!(
        store
            .messages(&[(c.clone(), vec!["0000000000000000000000a1".into()])])
            .await
            .unwrap(),
        [Vec::<StoredMessage>::new()]
    );

    // A write larger than one command's worth of arguments (the script sends fields in chunks):
    // a replaced log of 2,500 messages and 1,100 results at once.
    let mut big = conversation(&c);
    big.results = (0..1_100)
        .map(|i| switchboard::core::state::FormResult {
            form: format!("{i:024x}"),
            name: format!("form {i}"),
            category_index: 0,
            fields: Default::default(),
            message: format!("{i:024x}"),
            sent_at: "2024-05-01T09:00:00Z".into(),
        })
        .collect();
    let log: Vec<StoredMessage> = (0..2_500)
        .map(|i| message(i, &format!("{:024x}", 0xb000 + i), &format!("m{i}")))
        .collect();
    assert_eq!(
        store
            .write(
                vec![Write {
                    committed: -1,
                    conversation: big.clone(),
                    base: Some(10),
                    partition: 0,
                    blocks: Vec::new(),
                    offset: 11,
                    log: vec![LogWrite::Replace(log.clone())],
                    outbox: Vec::new(),
                }],
                &[]
            )
            .await
            .unwrap(),
        [WriteOutcome::Written]
    );
    assert_eq!(store.log(&c).await.unwrap(), log);
    assert_eq!(store.results(&c).await.unwrap(), big.results);
    assert_eq!(
        store
            .messages(&[(c.clone(), vec![format!("{:024x}", 0xb000 + 2_499)])])
            .await
            .unwrap(),
        [vec![log[2_499].clone()]]
    );

    // Block lists: the earliest time wins whatever the order of arrival; a directory-file
    // block (forever) survives the round trip; lookups answer in the order asked.
    let org = "0000000000000000000000a2";
    let block = |ip: &str, since: i64| Block {
        organization: org.into(),
        ip: ip.into(),
        since,
    };
    let asked = [
        (org.to_string(), "203.0.113.9".to_string()),
        (org.to_string(), "203.0.113.10".to_string()),
        (
            "0000000000000000000000a3".to_string(),
            "203.0.113.9".to_string(),
        ),
        (org.to_string(), "203.0.113.11".to_string()),
    ];
    assert_eq!(
        store.blocked_since(&asked).await.unwrap(),
        [None, None, None, None]
    );
    let late = 1_714_554_000_123_456; // 2024-05-01, in microseconds
    store
        .block(&[block("203.0.113.9", late), block("203.0.113.10", late)])
        .await
        .unwrap();
    store
        .block(&[
            block("203.0.113.9", late - 1),
            block("203.0.113.10", late + 1),
            block("203.0.113.11", i64::MIN),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.blocked_since(&asked).await.unwrap(),
        [Some(late - 1), Some(late), None, Some(i64::MIN)]
    );
}

/// A batch is written while the one before it commits: a conversation keeps the outbox of its
/// write before while that write is not known committed (its offset not below the group's
/// committed offset given with the next write), and forgets it once it is.
async fn outboxes_of_uncommitted_writes(store: &impl StateStore) {
    let c = "00000000000000000000c0b1".to_string();
    let write = |base: Option<i64>, offset: i64, committed: i64| Write {
        conversation: conversation(&c),
        base,
        offset,
        partition: 0,
        log: Vec::new(),
        outbox: vec![pending(offset)],
        blocks: Vec::new(),
        committed,
    };
    let outboxes = || async { store.outboxes(std::slice::from_ref(&c)).await.unwrap() };
    store.write(vec![write(None, 5, -1)], &[]).await.unwrap();
    // Offset 5 committed by nobody yet: both outboxes.
    store.write(vec![write(Some(5), 9, 3)], &[]).await.unwrap();
    assert_eq!(outboxes().await, [vec![pending(5), pending(9)]]);
    // 5 not committed yet, 9 neither: only the last two writes' are kept.
    store.write(vec![write(Some(9), 12, 6)], &[]).await.unwrap();
    assert_eq!(outboxes().await, [vec![pending(9), pending(12)]]);
    // The group has committed past 12: the earlier outbox goes.
    store
        .write(vec![write(Some(12), 20, 13)], &[])
        .await
        .unwrap();
    assert_eq!(outboxes().await, [vec![pending(20)]]);
}

#[tokio::test]
async fn redis_keeps_the_outboxes_of_uncommitted_writes() {
    outboxes_of_uncommitted_writes(&redis("prior").await).await;
}

#[tokio::test]
async fn memory_store_keeps_the_outboxes_of_uncommitted_writes() {
    outboxes_of_uncommitted_writes(&MemoryStore::new()).await;
}

#[tokio::test]
async fn redis_round_trip_fencing_and_replace() {
    round_trip_and_fencing(&redis("basics").await).await;
}

#[tokio::test]
async fn memory_store_behaves_the_same() {
    round_trip_and_fencing(&MemoryStore::new()).await;
}

fn result(id: &str) -> switchboard::core::state::FormResult {
    switchboard::core::state::FormResult {
        form: "0000000000000000000000f1".into(),
        name: "Trade-in".into(),
        category_index: 0,
        fields: [("make".to_string(), "Volkswagen".to_string())].into(),
        message: id.into(),
        sent_at: "2024-05-01T09:07:30Z".into(),
    }
}

/// Everything the store holds for a conversation: header and offset, log, results, outbox.
type Snapshot = (
    Option<switchboard::runtime::store::Record>,
    Vec<StoredMessage>,
    Vec<switchboard::core::state::FormResult>,
    Vec<Pending>,
);

async fn snapshot(store: &impl StateStore, c: &str) -> Snapshot {
    let id = [c.to_string()];
    (
        store.load(&id).await.unwrap().remove(0),
        store.log(c).await.unwrap(),
        store.results(c).await.unwrap(),
        store.outboxes(&id).await.unwrap().remove(0),
    )
}

/// A write lands only on the state it was prepared from (review finding F5): from any other base
/// it changes nothing. And a result written twice is kept once.
async fn compare_and_set_and_idempotent_results(store: &impl StateStore) {
    let c = "00000000000000000000c005".to_string();
    let mut conv = conversation(&c);
    conv.results = vec![result("0000000000000000000000r1")];
    let create = Write {
        committed: -1,
        conversation: conv.clone(),
        base: None,
        partition: 0,
        blocks: Vec::new(),
        offset: 5,
        log: vec![LogWrite::Append(message(
            0,
            "0000000000000000000000a0",
            "hi",
        ))],
        outbox: vec![pending(5)],
    };
    assert_eq!(
        store.write(vec![create.clone()], &[]).await.unwrap(),
        [WriteOutcome::Written]
    );
    let before = snapshot(store, &c).await;

    // From an absent base, an older or a newer one (-1 too: what a missing conversation loads
    // as), with a later offset: stale, and nothing of the conversation changes.
    conv.name = "Zombie".into();
    conv.results = vec![
        result("0000000000000000000000r1"),
        result("0000000000000000000000r2"),
    ];
    let zombie = |base| Write {
        committed: 6,
        conversation: conv.clone(),
        base,
        partition: 0,
        blocks: Vec::new(),
        offset: 9,
        log: vec![
            LogWrite::Update(message(0, "0000000000000000000000a0", "changed")),
            LogWrite::Append(message(1, "0000000000000000000000a1", "more")),
        ],
        outbox: vec![pending(9)],
    };
    for base in [None, Some(-1), Some(4), Some(6), Some(9)] {
        assert_eq!(
            store.write(vec![zombie(base)], &[]).await.unwrap(),
            [WriteOutcome::Stale],
            "base {base:?}"
        );
        assert_eq!(snapshot(store, &c).await, before, "base {base:?}");
    }
    // A conversation that does not exist takes only a write from an absent base.
    let other = "00000000000000000000c006";
    let mut elsewhere = create.clone();
    elsewhere.conversation = conversation(other);
    elsewhere.base = Some(-1);
    assert_eq!(
        store.write(vec![elsewhere], &[]).await.unwrap(),
        [WriteOutcome::Stale]
    );
    assert_eq!(snapshot(store, other).await, (None, vec![], vec![], vec![]));

    // From the right base it lands; r1, written again, is kept once.
    assert_eq!(
        store.write(vec![zombie(Some(5))], &[]).await.unwrap(),
        [WriteOutcome::Written]
    );
    let (record, log, results, outbox) = snapshot(store, &c).await;
    assert_eq!(
        record.map(|r| (r.conversation.name, r.offset)),
        Some(("Zombie".into(), 9))
    );
    assert_eq!(log.len(), 2);
    assert_eq!(results, conv.results);
    assert_eq!(outbox, [pending(9)]);
    // Both results again, twice in one write: still each once, in the order first written.
    conv.results = vec![
        result("0000000000000000000000r2"),
        result("0000000000000000000000r1"),
        result("0000000000000000000000r2"),
        result("0000000000000000000000r3"),
    ];
    let again = Write {
        committed: -1,
        conversation: conv,
        base: Some(9),
        partition: 0,
        blocks: Vec::new(),
        offset: 10,
        log: Vec::new(),
        outbox: Vec::new(),
    };
    assert_eq!(
        store.write(vec![again], &[]).await.unwrap(),
        [WriteOutcome::Written]
    );
    let ids: Vec<String> = store
        .results(&c)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.message)
        .collect();
    assert_eq!(
        ids,
        [
            "0000000000000000000000r1",
            "0000000000000000000000r2",
            "0000000000000000000000r3"
        ]
    );
}

#[tokio::test]
async fn redis_writes_only_on_the_state_read_and_keeps_each_result_once() {
    compare_and_set_and_idempotent_results(&redis("cas").await).await;
}

#[tokio::test]
async fn memory_store_writes_only_on_the_state_read_and_keeps_each_result_once() {
    compare_and_set_and_idempotent_results(&MemoryStore::new()).await;
}

#[tokio::test]
async fn every_key_of_a_conversation_shares_its_hash_tag() {
    let store = redis("tags").await;
    let c = "00000000000000000000c002".to_string();
    store
        .write(
            vec![Write {
                committed: -1,
                conversation: conversation(&c),
                base: None,
                partition: 0,
                blocks: Vec::new(),
                offset: 1,
                log: vec![LogWrite::Append(message(
                    0,
                    "0000000000000000000000a0",
                    "x",
                ))],
                outbox: Vec::new(),
            }],
            &[],
        )
        .await
        .unwrap();
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pattern = format!("sbtest:{}:tags:*", std::process::id());
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for k in &keys {
        assert!(k.contains(&format!("{{{c}}}")), "{k} lacks the hash tag");
    }
}

/// A damaged outbox is reported as such, naming the conversation, rather than replayed as
/// whatever it decodes to.
#[tokio::test]
async fn a_damaged_outbox_is_reported() {
    let store = redis("damaged").await;
    let c = "00000000000000000000c003".to_string();
    store
        .write(
            vec![Write {
                committed: -1,
                conversation: conversation(&c),
                base: None,
                partition: 0,
                blocks: Vec::new(),
                offset: 4,
                log: Vec::new(),
                outbox: vec![pending(3), pending(4)],
            }],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        store.outboxes(std::slice::from_ref(&c)).await.unwrap(),
        [vec![pending(3), pending(4)]]
    );
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let header = format!("sbtest:{}:damaged:{{{c}}}:h", std::process::id());
    let stored: Vec<u8> = redis::cmd("HGET")
        .arg(&header)
        .arg("outbox")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut other_format = stored.clone();
    other_format[0] = 1;
    for (damaged, says) in [
        (stored[..stored.len() / 2].to_vec(), ""),
        (other_format, "another version"),
    ] {
        let _: () = redis::cmd("HSET")
            .arg(&header)
            .arg("outbox")
            .arg(damaged)
            .query_async(&mut conn)
            .await
            .unwrap();
        match store.outboxes(std::slice::from_ref(&c)).await {
            Err(e @ StoreError::CorruptOutbox { .. }) => {
                let e = e.to_string();
                assert!(e.contains(&c) && e.contains(says), "{e}");
            }
            other => panic!("expected a corrupt outbox, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn writes_survive_a_flushed_script_cache() {
    let store = redis("noscript").await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let c = "00000000000000000000c003".to_string();
    let w = Write {
        committed: -1,
        conversation: conversation(&c),
        base: None,
        partition: 0,
        blocks: Vec::new(),
        offset: 1,
        log: Vec::new(),
        outbox: Vec::new(),
    };
    assert_eq!(
        store.write(vec![w], &[]).await.unwrap(),
        [WriteOutcome::Written]
    );
}

/// Drives the example trace through the core, writing every transition to both stores as the
/// runtime will (offset = position in the input), and checks that both end where the
/// simulator ends.
#[tokio::test]
async fn the_example_trace_stored_in_redis_matches_the_simulator() {
    let trace =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/trace.jsonl"))
            .unwrap();
    let redis = redis("trace").await;
    let memory = MemoryStore::new();
    let mut dir = directory();
    let mut logs: HashMap<String, MemoryLog> = HashMap::new();
    let mut headers: HashMap<String, Conversation> = HashMap::new();
    let mut written_results: HashMap<String, usize> = HashMap::new();
    let mut offsets: HashMap<String, i64> = HashMap::new();
    let mut queue: VecDeque<Vec<u8>> = trace.lines().map(|l| l.as_bytes().to_vec()).collect();
    let mut offset = 0i64;
    while let Some(payload) = queue.pop_front() {
        offset += 1;
        let Decoded::Message(m) = decode(KeySource::FromConversation, &payload) else {
            continue;
        };
        let id = m.conversation.clone();
        let log = logs.entry(id.clone()).or_default();
        let env = Env {
            directory: &dir,
            dialect: Dialect::Web1on1,
            max_relay_bytes: switchboard::runtime::pipeline::Limits::defaults().relay_bytes(),
            import_timeout_ms: switchboard::runtime::pipeline::Limits::defaults().import_timeout_ms,
        };
        let t = apply(headers.remove(&id), log, m, &env);
        for o in &t.outputs {
            if o.topic == Topic::Input {
                queue.push_back(serde_json::to_vec(&o.value).unwrap());
            }
        }
        log.apply(t.log.clone());
        for b in &t.blocks {
            dir.block(b);
        }
        if let Some(c) = t.conversation {
            // A write carries the results the message added, as the pipeline's do (the stored
            // header never holds them).
            let sent = written_results.entry(id.clone()).or_insert(0);
            let mut header = c.clone();
            header.results = c.results[*sent..].to_vec();
            *sent = c.results.len();
            let w = Write {
                committed: -1,
                conversation: header,
                base: offsets.insert(id.clone(), offset),
                partition: 0,
                blocks: Vec::new(),
                offset,
                log: t.log,
                outbox: Vec::new(),
            };
            assert_eq!(
                redis.write(vec![w.clone()], &[]).await.unwrap(),
                [WriteOutcome::Written]
            );
            assert_eq!(
                memory.write(vec![w], &[]).await.unwrap(),
                [WriteOutcome::Written]
            );
            headers.insert(id, c);
        }
    }
    let mut sim = Simulator::new(directory(), Dialect::Web1on1);
    sim.run_trace(&trace);
    let expected = sim.state_document();
    let ids: Vec<String> = expected.as_object().unwrap().keys().cloned().collect();
    assert!(ids.len() >= 6);
    for store_result in [
        redis.load(&ids).await.unwrap(),
        memory.load(&ids).await.unwrap(),
    ] {
        for (id, record) in ids.iter().zip(store_result) {
            let mut record = record.expect("stored");
            assert!(
                record.conversation.results.is_empty(),
                "results are kept out of the header"
            );
            record.conversation.results = redis.results(id).await.unwrap();
            assert_eq!(
                record.conversation.results,
                memory.results(id).await.unwrap()
            );
            let log = if expected[id]["messages"].as_array().unwrap().is_empty() {
                Vec::new()
            } else {
                redis.log(id).await.unwrap()
            };
            assert_eq!(
                inspect_document(&record.conversation, Some(&log)),
                expected[id],
                "{id}"
            );
        }
    }
    for id in &ids {
        assert_eq!(
            redis.log(id).await.unwrap(),
            memory.log(id).await.unwrap(),
            "{id}"
        );
    }
}

mod directory_in_redis {
    use std::time::Duration;

    use switchboard::core::directory::{Directory, DirectoryFile, MemoryDirectory};
    use switchboard::runtime::store::directory::{CacheSettings, Key};
    use switchboard::runtime::store::{DirectorySource, RedisDirectory, StateStore};

    use super::{redis, redis_url};

    fn file() -> DirectoryFile {
        switchboard::directory_file::read(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/directory.yaml"
        )))
        .unwrap()
    }

    async fn directory(test: &str, capacity: u64) -> RedisDirectory {
        let prefix = format!("sbtest:{}:{test}", std::process::id());
        RedisDirectory::connect(
            &redis_url(),
            &prefix,
            CacheSettings {
                capacity,
                ttl: Duration::from_secs(60),
                version_check: Duration::ZERO,
            },
        )
        .await
        .unwrap()
    }

    /// Looks every entry up once (noting misses), fetches them, and looks again.
    async fn settle<T>(dir: &RedisDirectory, f: impl Fn(&RedisDirectory) -> T) -> T {
        for _ in 0..4 {
            let value = f(dir);
            let missing = dir.take_misses();
            if missing.is_empty() {
                return value;
            }
            dir.resolve(missing).await.unwrap();
        }
        panic!("lookups did not settle");
    }

    #[tokio::test]
    async fn a_loaded_directory_reads_back_entry_for_entry() {
        let store = redis("dir-roundtrip").await;
        let dir = directory("dir-roundtrip", 10_000).await;
        assert_eq!(dir.loaded_version().await.unwrap(), None);
        let mut file = file();
        file.blocked.push(switchboard::core::directory::Block {
            organization: file.organizations[0].id.clone(),
            ip: "192.0.2.66".into(),
            since: i64::MIN,
        });
        let summary = dir.load_file(&file, &store).await.unwrap();
        assert_eq!(summary.organizations, file.organizations.len());
        assert_eq!(summary.version, 1);
        dir.refresh().await.unwrap();
        let memory = MemoryDirectory::from_file(file.clone()).unwrap();

        // Cold: every lookup misses and answers absent until fetched.
        let first = &file.users[0].id;
        assert!(dir.user(first).is_none());
        assert_eq!(dir.take_misses(), [Key::User(first.clone())]);

        for o in &file.organizations {
            let got = settle(&dir, |d| d.organization(&o.id)).await;
            assert_eq!(got, memory.organization(&o.id), "{}", o.id);
            let ids = |v: Vec<std::sync::Arc<switchboard::core::directory::Channel>>| {
                v.iter().map(|c| c.id.clone()).collect::<Vec<_>>()
            };
            let got = settle(&dir, |d| ids(d.channels_of(&o.id))).await;
            assert_eq!(got, ids(memory.channels_of(&o.id)), "channels of {}", o.id);
        }
        for u in &file.users {
            assert_eq!(settle(&dir, |d| d.user(&u.id)).await, memory.user(&u.id));
        }
        for f in &file.forms {
            assert_eq!(settle(&dir, |d| d.form(&f.id)).await, memory.form(&f.id));
        }
        // Absent IDs are answered from the cache once fetched: no miss the second time.
        let nobody = "0000000000000000000000ff";
        assert!(settle(&dir, |d| d.user(nobody)).await.is_none());
        assert!(dir.user(nobody).is_none());
        assert!(dir.take_misses().is_empty());
        // The file's blocked IPs join the block lists, blocked forever.
        let asked: Vec<(String, String)> = file
            .blocked
            .iter()
            .map(|b| (b.organization.clone(), b.ip.clone()))
            .collect();
        assert!(store
            .blocked_since(&asked)
            .await
            .unwrap()
            .iter()
            .all(|s| *s == Some(i64::MIN)));
    }

    #[tokio::test]
    async fn a_reload_replaces_the_previous_one_and_running_caches_notice() {
        let store = redis("dir-reload").await;
        let dir = directory("dir-reload", 10_000).await;
        let mut file = file();
        dir.load_file(&file, &store).await.unwrap();
        dir.refresh().await.unwrap();
        let gone = file.users.pop().unwrap();
        assert!(settle(&dir, |d| d.user(&gone.id)).await.is_some());

        let summary = dir.load_file(&file, &store).await.unwrap();
        assert_eq!(summary.version, 2);
        assert_eq!(summary.removed, 1, "the dropped user's entry");
        // Still cached until the next batch checks the version...
        assert!(dir.user(&gone.id).is_some());
        dir.refresh().await.unwrap();
        // ...then gone.
        assert!(settle(&dir, |d| d.user(&gone.id)).await.is_none());
    }

    #[tokio::test]
    async fn an_invalid_file_writes_nothing() {
        let store = redis("dir-invalid").await;
        let dir = directory("dir-invalid", 10_000).await;
        let mut file = file();
        file.channels[0].organization = "0000000000000000000000ee".into();
        let err = dir.load_file(&file, &store).await.unwrap_err().to_string();
        assert!(err.contains("0000000000000000000000ee"), "{err}");
        assert_eq!(dir.loaded_version().await.unwrap(), None);
    }
}
