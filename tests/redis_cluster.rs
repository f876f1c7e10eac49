//! Switchboard on a Redis Cluster (`redis.cluster_nodes`): a real 6-node cluster, 3 primaries
//! each with a replica, started by `deploy/local/redis-cluster start` (scripts/test does).
//! - the store: a batch spread over every primary, blocks whose list lives on another node than
//!   their conversation, compare-and-set and watermarks, all as on one node;
//! - three instances on the real broker, compared with `simulate`;
//! - a primary killed mid-stream (with `redis.wait_replicas = 1`): its replica takes over, and
//!   the run still ends exactly as `simulate` says.

mod kafka_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use switchboard::core::directory::Block;
use switchboard::core::state::Conversation;
use switchboard::runtime::store::{Mark, RedisStore, StateStore, Target, Write, WriteOutcome};

use kafka_support::*;

/// Held by the tests that kill a primary or move slots, one at a time: each picks its primaries
/// from the topology as it finds it, which another such test must not change meanwhile.
static TOPOLOGY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster's seed nodes: `REDIS_CLUSTER_NODES`, else deploy/local/redis-cluster's.
fn nodes() -> String {
    std::env::var("REDIS_CLUSTER_NODES").unwrap_or_else(|_| {
        (17000..17006)
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    })
}

fn target() -> Target {
    Target::cluster(nodes().split(',').map(|n| format!("redis://{n}")).collect())
}

async fn store(prefix: &str) -> RedisStore {
    RedisStore::connect(target(), prefix).await.unwrap_or_else(|e| {
        panic!(
            "the Redis Cluster at {} is not reachable ({e}); start it with deploy/local/redis-cluster start",
            nodes()
        )
    })
}

/// `CLUSTER NODES`, as (port, is a primary with slots) per node.
fn topology() -> Vec<(u16, bool)> {
    for node in nodes().split(',') {
        let Ok(client) = redis::Client::open(format!("redis://{node}")) else {
            continue;
        };
        let Ok(mut conn) = client.get_connection() else {
            continue;
        };
        let Ok(text) = redis::cmd("CLUSTER")
            .arg("NODES")
            .query::<String>(&mut conn)
        else {
            continue;
        };
        return text
            .lines()
            .filter(|l| !l.contains("fail"))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let port = f[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
                (port, f[2].contains("master") && f.len() > 8)
            })
            .collect();
    }
    panic!("no node of {} answers", nodes());
}

fn primaries() -> Vec<u16> {
    topology()
        .into_iter()
        .filter(|(_, primary)| *primary)
        .map(|(p, _)| p)
        .collect()
}

/// How many keys under `prefix` each primary holds.
fn keys_per_primary(prefix: &str) -> BTreeMap<u16, usize> {
    primaries()
        .into_iter()
        .map(|port| {
            let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                .unwrap()
                .get_connection()
                .unwrap();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}:*"))
                .query(&mut conn)
                .unwrap();
            (port, keys.len())
        })
        .collect()
}

fn write(id: &str, base: Option<i64>, offset: i64, blocks: Vec<Block>) -> Write {
    Write {
        committed: -1,
        conversation: Conversation::new(id, "org", "chat", "2026-01-01T00:00:00Z"),
        base,
        offset,
        partition: 0,
        log: Vec::new(),
        outbox: Vec::new(),
        blocks,
    }
}

#[tokio::test]
async fn a_batch_across_every_primary_writes_as_on_one_node() {
    let prefix = format!("sbcluster:{}:store", std::process::id());
    let store = store(&prefix).await;
    let ids: Vec<String> = (0..60).map(|i| format!("conv-{i}")).collect();
    // Every fifth conversation blocks an IP of an organization of its own: their lists land on
    // every node, most of them not their conversation's.
    let writes: Vec<Write> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let blocks = if i % 5 == 0 {
                vec![Block {
                    organization: format!("org-{i}"),
                    ip: format!("10.0.0.{i}"),
                    since: 1_000 + i as i64,
                }]
            } else {
                Vec::new()
            };
            write(id, None, 10, blocks)
        })
        .collect();
    let mark = Mark {
        topic: "in".into(),
        partition: 0,
        next: 11,
        committed: 5,
    };
    let outcomes = store.write(writes, &[mark]).await.unwrap();
    assert_eq!(outcomes, vec![WriteOutcome::Written; ids.len()]);
    let spread = keys_per_primary(&prefix);
    assert!(
        spread.values().all(|&n| n > 0),
        "every primary holds some of the batch: {spread:?}"
    );
    let loaded = store.load(&ids).await.unwrap();
    assert!(loaded
        .iter()
        .all(|r| r.as_ref().map(|r| r.offset) == Some(10)));
    let candidates: Vec<(String, String)> = (0..60)
        .step_by(5)
        .map(|i| (format!("org-{i}"), format!("10.0.0.{i}")))
        .collect();
    let since = store.blocked_since(&candidates).await.unwrap();
    let want: Vec<Option<i64>> = (0..60).step_by(5).map(|i| Some(1_000 + i)).collect();
    assert_eq!(since, want);
    let marks = store.watermarks("in", &[0, 1]).await.unwrap();
    assert_eq!(marks[0].map(|m| (m.next, m.committed)), Some((11, 5)));
    assert_eq!(marks[1], None);
    // Compare and set holds per conversation: only the writes on the stored offset land.
    let again = vec![
        write(&ids[0], Some(10), 12, vec![]),
        write(&ids[1], None, 12, vec![]),
    ];
    let outcomes = store.write(again, &[]).await.unwrap();
    assert_eq!(outcomes, vec![WriteOutcome::Written, WriteOutcome::Stale]);
}

/// A cluster-configured command of `setup`.
fn on_cluster(mut cmd: std::process::Command) -> std::process::Command {
    cmd.env("SWITCHBOARD_REDIS__CLUSTER_NODES", nodes());
    cmd
}

fn load_directory(setup: &Setup) {
    let out = on_cluster(setup.command(&["directory", "load", DIR]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "directory load on the cluster: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn three_instances_on_a_redis_cluster_match_simulate() {
    let setup = Setup::create("rcluster").await;
    load_directory(&setup);
    let trace = scaled_trace("rcluster", 6);
    setup.produce_trace(&trace);
    let instances: Vec<Proc> = ["a", "b", "c"]
        .iter()
        .map(|i| Proc::spawn(&mut on_cluster(setup.instance_command(i, "127.0.0.1:0"))))
        .collect();
    wait_for_results(&setup, expected_results(&trace), Duration::from_secs(180));
    for proc in instances {
        terminate(proc);
    }
    let prefix = format!("sbk:{}", setup.name);
    let spread = keys_per_primary(&prefix);
    assert!(
        spread.values().filter(|&&n| n > 0).count() >= 3,
        "the state is spread over the primaries: {spread:?}"
    );
    assert_matches_oracle_in(&setup, &trace, &store(&prefix).await).await;
    // `inspect` reads the Cluster too: the document `simulate` ends with, for one conversation.
    let (_, state) = oracle(&trace);
    let (id, doc) = state.as_object().unwrap().iter().next().unwrap();
    let out = on_cluster(setup.command(&["inspect", id]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["id"], doc["id"], "{shown}");
    assert_eq!(shown["status"], doc["status"], "{shown}");
}

fn redis_cluster(args: &[&str]) -> bool {
    std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/local/redis-cluster"
    ))
    .args(args)
    .status()
    .map(|s| s.success())
    .unwrap_or(false)
}

#[tokio::test]
async fn a_primary_killed_mid_stream_ends_exact() {
    let _topology = TOPOLOGY.lock().await;
    let (setup, trace, expected, proc, seen) = replicated_run("rfailover", on_cluster).await;
    let victim = primaries()[0];
    assert!(redis_cluster(&["kill", &victim.to_string()]));
    let killed = Instant::now();
    // The failover takes a few seconds (cluster-node-timeout 2 s); meanwhile the batches on
    // the victim's slots fail and are retried. Then the victim comes back as a replica, and
    // WAIT 1 can be met again on its slots.
    let deadline = Instant::now() + Duration::from_secs(60);
    while primaries().contains(&victim) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!primaries().contains(&victim), "a replica took over");
    let failover = killed.elapsed();
    assert!(redis_cluster(&["revive", &victim.to_string()]));
    wait_for_results(&setup, expected, Duration::from_secs(240));
    eprintln!("primary {victim} killed after {seen} results; replica promoted after {failover:?}");
    terminate(proc);
    let prefix = format!("sbk:{}", setup.name);
    assert_matches_oracle_in(&setup, &trace, &store(&prefix).await).await;
}

/// Review F1 on a Cluster: one primary loses writes Kafka committed (restored from a backup of
/// its own) while the others keep theirs. Its copies of the watermarks fall back with its
/// conversations, so the partitions halt instead of diverging, and `rebuild` on the Cluster
/// brings them back to exactly what `simulate` computes.
#[tokio::test(flavor = "multi_thread")]
async fn one_primary_losing_writes_halts_until_rebuilt() {
    let _topology = TOPOLOGY.lock().await;
    let setup = Setup::create("rlost").await;
    load_directory(&setup);
    let prefix = format!("sbk:{}", setup.name);
    let trace = scaled_trace("rlost", 6);
    let total = std::fs::read_to_string(&trace).unwrap().lines().count();
    let (a, b) = (total / 3, 2 * total / 3);
    let phase = |from, to, n| slice(&trace, from, to, &format!("rlost-phase{n}"));
    let upto = |to, n| slice(&trace, 0, to, &format!("rlost-upto{n}"));
    let spawn = |http: &str| Proc::spawn(&mut on_cluster(setup.instance_command("1", http)));

    setup.produce_trace(&phase(0, a, 1));
    let child = spawn("127.0.0.1:0");
    wait_for_results(
        &setup,
        expected_results(&upto(a, 1)),
        Duration::from_secs(120),
    );
    terminate(child);
    let victim = primaries()[1];
    let node = format!("redis://127.0.0.1:{victim}");
    let old = backup(&node, &prefix);
    setup.produce_trace(&phase(a, b, 2));
    let child = spawn("127.0.0.1:0");
    wait_for_results(
        &setup,
        expected_results(&upto(b, 2)),
        Duration::from_secs(120),
    );
    terminate(child);
    restore(&node, &prefix, &old);

    setup.produce_trace(&phase(b, total, 3));
    let port = free_http_port();
    let child = spawn(&format!("127.0.0.1:{port}"));
    let halted = halted_partitions(port, "Redis lost writes", Duration::from_secs(90));
    assert!(!halted.is_empty());
    terminate(child);

    for p in &halted {
        let out = on_cluster(setup.command(&["rebuild", "--partition", &p.to_string()]))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("records applied"),
            "rebuild on the cluster: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let child = spawn("127.0.0.1:0");
    wait_for_results(&setup, expected_results(&trace), Duration::from_secs(120));
    terminate(child);
    assert_matches_oracle_in(&setup, &trace, &store(&prefix).await).await;
}

/// Slots moved between primaries mid-stream (`redis-cli --cluster reshard`, keys migrated one
/// by one): writes meeting a moved or migrating slot fail their batch, the slot map is fetched
/// again and the batch is retried, and the run ends exactly as `simulate` says.
#[tokio::test]
async fn a_resharding_mid_stream_ends_exact() {
    let _topology = TOPOLOGY.lock().await;
    let setup = Setup::create("rreshard").await;
    load_directory(&setup);
    let trace = scaled_trace("rreshard", 8);
    let expected = expected_results(&trace);
    setup.produce_trace(&trace);
    let proc = Proc::spawn(&mut on_cluster(setup.instance_command("a", "127.0.0.1:0")));
    setup.wait_for_progress(expected / 5, Duration::from_secs(120));
    let p = primaries();
    let moved = Instant::now();
    assert!(redis_cluster(&[
        "reshard",
        &p[0].to_string(),
        &p[1].to_string(),
        "2000"
    ]));
    eprintln!("2000 slots moved in {:?}", moved.elapsed());
    wait_for_results(&setup, expected, Duration::from_secs(240));
    terminate(proc);
    // Back as they were, for the next run on this cluster.
    assert!(redis_cluster(&[
        "reshard",
        &p[1].to_string(),
        &p[0].to_string(),
        "2000"
    ]));
    let prefix = format!("sbk:{}", setup.name);
    assert_matches_oracle_in(&setup, &trace, &store(&prefix).await).await;
}
