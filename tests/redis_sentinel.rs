//! Switchboard on a Sentinel-managed Redis (`redis.sentinel_nodes`): a primary, a replica and
//! three Sentinels, started by `deploy/local/redis-sentinel start` (scripts/test does). The
//! primary is killed mid-stream; the Sentinels promote the replica, Switchboard follows, and with
//! `redis.wait_replicas = 1` the run ends exactly as `simulate` says.

mod kafka_support;

use std::time::{Duration, Instant};

use switchboard::runtime::store::{RedisStore, Target};

use kafka_support::*;

const SERVICE: &str = "switchboard";

fn sentinel_script(args: &[&str]) -> String {
    let out = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/local/redis-sentinel"
    ))
    .args(args)
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "deploy/local/redis-sentinel {args:?}: {} (start it with deploy/local/redis-sentinel start)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn sentinels() -> String {
    std::env::var("REDIS_SENTINEL_NODES").unwrap_or_else(|_| sentinel_script(&["sentinels"]))
}

fn on_sentinel(mut cmd: std::process::Command) -> std::process::Command {
    cmd.env("SWITCHBOARD_REDIS__SENTINEL_NODES", sentinels())
        .env("SWITCHBOARD_REDIS__SENTINEL_SERVICE", SERVICE);
    cmd
}

#[tokio::test]
async fn a_sentinel_failover_mid_stream_ends_exact() {
    let (setup, trace, expected, proc, seen) = replicated_run("rsentinel", on_sentinel).await;
    let old = sentinel_script(&["primary"]);
    sentinel_script(&["kill", &old]);
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(60);
    while sentinel_script(&["primary"]) == old {
        assert!(
            Instant::now() < deadline,
            "the Sentinels promoted no replica"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let failover = killed.elapsed();
    // Back as a replica of the new primary: WAIT 1 can be met again.
    sentinel_script(&["revive", &old]);
    wait_for_results(&setup, expected, Duration::from_secs(240));
    eprintln!(
        "primary {old} killed after {seen} results; the Sentinels promoted {} after {failover:?}",
        sentinel_script(&["primary"])
    );
    terminate(proc);
    let sentinels = sentinels()
        .split(',')
        .map(|s| format!("redis://{s}"))
        .collect();
    let target = Target::sentinel(sentinels, SERVICE, "redis://127.0.0.1:0/");
    let store = RedisStore::connect(target, &format!("sbk:{}", setup.name))
        .await
        .unwrap();
    assert_matches_oracle_in(&setup, &trace, &store).await;
}
