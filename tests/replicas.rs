//! `redis.wait_replicas`: a batch's state write counts only once the replicas asked for hold it
//! (Redis `WAIT`), so that a failover to one of them loses nothing Kafka committed. On a primary
//! and a replica of their own, started here with Debian's `redis-server` (installed by
//! `deploy/local/redis`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchboard::core::state::Conversation;
use switchboard::runtime::store::{RedisStore, StateStore, StoreError, Write, WriteOutcome};

/// A `redis-server` of this test's own, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn server(extra: &[&str]) -> Server {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("sb-replicas-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&dir)
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (deploy/local/redis install)");
    let server = Server { child, port, dir };
    wait(
        || info(&server, "server").is_some(),
        "redis-server to answer",
    );
    server
}

/// A field of `INFO <section>`, if the server answers.
fn info(server: &Server, section: &str) -> Option<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", server.port)).ok()?;
    let mut conn = client.get_connection().ok()?;
    redis::cmd("INFO").arg(section).query(&mut conn).ok()
}

fn wait(mut done: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "waited for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write(offset: i64) -> Write {
    Write {
        committed: -1,
        conversation: Conversation::new(
            "00000000000000000000c0de",
            "0000000000000000000000a2",
            "contact",
            "2024-05-01T09:00:00Z",
        ),
        base: (offset > 1).then_some(offset - 1),
        partition: 0,
        offset,
        log: Vec::new(),
        outbox: Vec::new(),
        blocks: Vec::new(),
    }
}

#[tokio::test]
async fn a_write_waits_for_the_replicas_asked_for_and_fails_without_them() {
    let primary = server(&[]);
    let replica = server(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    wait(
        // Attached, and done with its first full sync (which waits `repl-diskless-sync-delay`).
        || info(&primary, "replication").is_some_and(|i| i.contains("state=online")),
        "the replica to attach and sync",
    );
    let url = format!("redis://127.0.0.1:{}/", primary.port);
    let store = RedisStore::connect(&url, "sbrepl")
        .await
        .unwrap()
        .waiting_for(1, 2_000);
    assert_eq!(
        store.write(vec![write(1)], &[]).await.unwrap(),
        [WriteOutcome::Written]
    );
    // What the primary acknowledged, the replica holds.
    let on_replica = RedisStore::connect(&format!("redis://127.0.0.1:{}/", replica.port), "sbrepl")
        .await
        .unwrap();
    let stored = on_replica
        .load(&["00000000000000000000c0de".to_string()])
        .await
        .unwrap();
    assert_eq!(stored[0].as_ref().map(|r| r.offset), Some(1));

    // Without the replica, the write is not acknowledged as the configuration asks: the batch
    // fails (and is retried) rather than committing what a failover could lose.
    drop(replica);
    wait(
        || info(&primary, "replication").is_some_and(|i| i.contains("connected_slaves:0")),
        "the primary to notice",
    );
    match store.write(vec![write(2)], &[]).await {
        Err(StoreError::Replicas { acked, wanted }) => assert_eq!((acked, wanted), (0, 1)),
        other => panic!("expected too few replicas, got {other:?}"),
    }
    // Not waiting, the same primary takes writes.
    let plain = RedisStore::connect(&url, "sbrepl").await.unwrap();
    assert_eq!(
        plain.write(vec![write(3)], &[]).await.unwrap(),
        [WriteOutcome::Written]
    );
}
