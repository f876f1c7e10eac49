//! The ACL line `docs/operations.md` gives is enough: a Redis user created from it runs a
//! directory load, the example traffic through the batch pipeline (relays fed back), the reads
//! of `inspect` and the writes of `rebuild`, and nothing of it is refused; the state equals
//! `simulate`'s.

use switchboard::core::event::Topic;
use switchboard::core::Dialect;
use switchboard::runtime::pipeline::{process_batch, InputRecord, Limits};
use switchboard::runtime::store::directory::CacheSettings;
use switchboard::runtime::store::{document, RedisDirectory, RedisStore, StateStore};
use switchboard::tools::simulate::{inspect_document, Simulator};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379/".into())
}

/// The documented ACL line, for `user` with `password` on keys under `prefix`.
fn acl_line(user: &str, password: &str, prefix: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let block = doc.split("<!-- acl -->").nth(1).expect("the ACL block");
    let line = block
        .lines()
        .find(|l| l.starts_with("ACL SETUSER"))
        .expect("the ACL line");
    line.split_whitespace()
        .skip(2)
        .map(|w| match w {
            "switchboard" => user.to_string(),
            ">PASSWORD" => format!(">{password}"),
            "~sb:*" => format!("~{prefix}:*"),
            other => other.to_string(),
        })
        .collect()
}

fn record(offset: i64, line: &str) -> InputRecord {
    let key = serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v["conversation"].as_str().map(|c| c.as_bytes().to_vec()));
    InputRecord {
        offset,
        key,
        payload: line.as_bytes().to_vec(),
        topic: "conversation.messages".into(),
        ..InputRecord::default()
    }
}

#[tokio::test]
async fn the_documented_acl_line_is_all_switchboard_needs() {
    let (user, password) = (format!("sb-acl-{}", std::process::id()), "acl-secret");
    let prefix = format!("sbacl{}", std::process::id());
    let admin = redis::Client::open(redis_url()).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(acl_line(&user, password, &prefix))
        .query_async(&mut admin)
        .await
        .unwrap();

    // The directory, loaded by the command line as that user.
    let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/directory.yaml");
    let load = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["directory", "load", directory])
        .env("SWITCHBOARD_REDIS__URL", redis_url())
        .env("SWITCHBOARD_REDIS__USERNAME", &user)
        .env("SWITCHBOARD_REDIS__PASSWORD", password)
        .env("SWITCHBOARD_REDIS__KEY_PREFIX", &prefix)
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );

    let url = redis_url().replacen("redis://", &format!("redis://{user}:{password}@"), 1);
    let store = RedisStore::connect(&url, &prefix).await.unwrap();
    let settings = CacheSettings {
        capacity: 1_000,
        ttl: std::time::Duration::from_secs(60),
        version_check: std::time::Duration::from_secs(1),
    };
    let dir = RedisDirectory::connect(&url, &prefix, settings)
        .await
        .unwrap();
    let trace =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/trace.jsonl"))
            .unwrap();
    let mut pending: Vec<InputRecord> = trace
        .lines()
        .enumerate()
        .map(|(i, l)| record(i as i64, l))
        .collect();
    let mut next = pending.len() as i64;
    while !pending.is_empty() {
        let mut relays = Vec::new();
        for batch in pending.chunks(10) {
            let out = process_batch(
                &store,
                &dir,
                Dialect::Web1on1,
                Limits::defaults(),
                batch.to_vec(),
            )
            .await
            .unwrap();
            for o in out.outputs.iter().filter(|o| o.topic == Topic::Input) {
                relays.push(record(next, &o.value));
                next += 1;
            }
        }
        pending = relays;
    }

    let mut sim = Simulator::new(
        switchboard::directory_file::load(std::path::Path::new(directory)).unwrap(),
        Dialect::Web1on1,
    );
    sim.run_trace(&trace);
    let state = sim.state_document();
    for (id, expected) in state.as_object().unwrap() {
        let (header, log) = document(&store, id, true).await.unwrap().expect("stored");
        assert_eq!(&inspect_document(&header, log.as_deref()), expected, "{id}");
    }
    // What rebuild does besides the pipeline.
    let ids: Vec<String> = state.as_object().unwrap().keys().cloned().collect();
    assert!(store
        .stored_partitions(&ids)
        .await
        .unwrap()
        .iter()
        .all(|p| *p == Some(0)));
    store
        .forget_watermark("conversation.messages", 0)
        .await
        .unwrap();
    store.forget(&ids).await.unwrap();
    // WAIT is allowed (no replica here: too few, not refused).
    let waiting = RedisStore::connect(&url, &prefix)
        .await
        .unwrap()
        .waiting_for(1, 10);
    let refused = waiting
        .write(
            Vec::new(),
            &[switchboard::runtime::store::Mark {
                topic: "conversation.messages".into(),
                partition: 0,
                next: 1,
                committed: -1,
            }],
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(switchboard::runtime::store::StoreError::Replicas { .. })
        ),
        "{refused:?}"
    );
    let _: () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut admin)
        .await
        .unwrap();
}
