//! What `/metrics` says, checked against what it is about: the consumer lag against the group's
//! lag as the broker reports it, lag series of revoked partitions gone, fencings counted when
//! two instances share a transactional id, producer-chosen message types kept out of the
//! labels, and the process and build series a platform's dashboards expect.
//!
//! The first test needs nothing; the others run against the real broker and Redis
//! (`deploy/local/up`), as `tests/kafka.rs` does.

mod kafka_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_support::*;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use switchboard::core::event::Topic;
use switchboard::runtime::metrics::{Committed, Metrics};

/// The labels of a series key as `metrics()` gives it (`name{a="x",b="y"}`), if it is `name`'s.
fn labels(key: &str, name: &str) -> Option<BTreeMap<String, String>> {
    let rest = key.strip_prefix(name)?;
    let inner = rest.strip_prefix('{')?.strip_suffix('}')?;
    Some(
        inner
            .split(',')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                Some((k.to_string(), v.trim_matches('"').to_string()))
            })
            .collect(),
    )
}

/// `switchboard_consumer_lag` of the instance on `port`: partition → lag, for `topic`. Series of
/// any other topic fail the test.
fn lag_series(port: u16, topic: &str) -> BTreeMap<i32, i64> {
    let mut out = BTreeMap::new();
    for (key, value) in metrics(port) {
        let Some(l) = labels(&key, "switchboard_consumer_lag") else {
            continue;
        };
        assert_eq!(l["topic"], topic, "{key}");
        out.insert(l["partition"].parse().unwrap(), value as i64);
    }
    out
}

fn counter(port: u16, name: &str) -> Option<f64> {
    metrics(port).get(name).copied()
}

/// The group's lag per partition as the broker reports it, the way `kafka-consumer-groups
/// --describe` computes it: high watermark minus the group's committed offset.
fn broker_lag(group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let consumer = consumer(group);
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(30))
        .unwrap();
    committed
        .elements()
        .iter()
        .filter_map(|e| {
            let Offset::Offset(at) = e.offset() else {
                return None;
            };
            let (_, high) = consumer
                .fetch_watermarks(topic, e.partition(), Duration::from_secs(30))
                .unwrap();
            Some((e.partition(), high - at))
        })
        .collect()
}

/// Polls `check` every 500 ms until it returns `Ok`, or panics with its last `Err` after
/// `deadline`.
fn eventually<T>(deadline: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(t) => return t,
            Err(e) if start.elapsed() > deadline => panic!("after {deadline:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

#[test]
fn the_registry_exports_process_and_build_series_that_promtool_accepts() {
    let m = Metrics::new();
    m.consumer_lag
        .assigned("conversation.messages", [(0, Committed::At(3))]);
    m.consumer_lag.ends([(0, 0, 5)]);
    m.messages.with_label_values(&["other", "applied"]).inc();
    let text = m.render();
    let build = format!(
        "switchboard_build_info{{librdkafka=\"{}\",revision=\"{}\",version=\"{}\"}} 1",
        rdkafka::util::get_rdkafka_version().1,
        option_env!("SWITCHBOARD_REVISION").unwrap_or("unknown"),
        env!("CARGO_PKG_VERSION"),
    );
    for line in [
        build.as_str(),
        "switchboard_consumer_lag{partition=\"0\",topic=\"conversation.messages\"} 2",
        "switchboard_fencings_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing:\n{text}"
        );
    }
    // Prometheus's own lint of the exposition (names, units, `_total`, help texts).
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut promtool) = promtool else {
        // scripts/deploy-tools installs it; tests/deploy.rs insists on it in CI.
        eprintln!("note: promtool is not installed; the exposition was not linted");
        return;
    };
    use std::io::Write as _;
    let mut stdin = promtool.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    drop(stdin);
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `docs/metrics.md` lists every metric the binary exports, and nothing else but the pending
/// ones it says are not exported yet.
#[test]
fn the_reference_lists_exactly_the_exported_metrics() {
    let m = Metrics::new();
    m.consumer_lag.assigned("in", [(0, Committed::At(0))]);
    m.consumer_lag.ends([(0, 0, 0)]);
    m.messages.with_label_values(&["chat", "applied"]).inc();
    m.redis_seconds.with_label_values(&["load"]).observe(0.0);
    let exported: BTreeSet<String> = m
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    // Names in backquotes, as the tables give them.
    let documented: BTreeSet<String> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            (w.starts_with("switchboard_") || w.starts_with("process_"))
                && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(String::from)
        .collect();
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/metrics.md: {undocumented:?}"
    );
    let unknown: Vec<_> = documented
        .difference(&exported)
        // The process collector reads /proc.
        .filter(|n| cfg!(target_os = "linux") || !n.starts_with("process_"))
        .collect();
    assert!(
        unknown.is_empty(),
        "documented but not exported: {unknown:?}"
    );
}

/// Messages of a known conversation with producer-chosen types, after the trace.
fn random_types(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let kind = format!("attacker-type-{}", fastrand::u32(..));
            let line = serde_json::json!({
                "id": format!("{:024x}", 0xf00 + i),
                "conversation": "00000000000000000000d001",
                "type": kind,
                "role": "bot",
                "sender": "0000000000000000000000b1",
                "text": "hello",
                "createdAt": "2024-05-01T12:00:00Z",
            });
            (kind, line.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lag_is_the_groups_lag_on_the_broker_and_input_types_stay_bounded() {
    let setup = Setup::create("lag").await;
    let trace = scaled_trace("lag", 1);
    let extra = random_types(3);
    let mut lines = std::fs::read_to_string(&trace).unwrap();
    for (_, line) in &extra {
        lines.push_str(line);
        lines.push('\n');
    }
    std::fs::write(&trace, lines).unwrap();
    setup.produce_trace(&trace);
    let port = free_port();
    let child = setup.spawn_with("1", &format!("127.0.0.1:{port}"));
    // Every input record and the two /import relay records, counted.
    let records = 67 + 2 + extra.len();
    eventually(Duration::from_secs(120), || {
        let counted: f64 = metrics(port)
            .iter()
            .filter(|(k, _)| k.starts_with("switchboard_messages_total{"))
            .map(|(_, v)| v)
            .sum();
        (counted as usize == records)
            .then_some(())
            .ok_or(format!("{counted} of {records} records counted"))
    });

    let input = setup.topic(Topic::Input);
    let group = format!("sb-{}", setup.name);
    // The statistics come every 5 s: wait for the ones after the last commit.
    let (ours, broker) = eventually(Duration::from_secs(30), || {
        let ours = lag_series(port, &input);
        let broker = broker_lag(&group, &input);
        if ours.len() == PARTITIONS as usize && ours == broker {
            Ok((ours, broker))
        } else {
            Err(format!("/metrics {ours:?}, broker {broker:?}"))
        }
    });
    // Caught up: nothing left, or the marker of the last relay transaction on the partition
    // (it takes an offset, and the broker counts it too).
    assert!(broker.values().all(|lag| *lag <= 1), "{broker:?}");
    eprintln!("lag per partition, /metrics and broker alike: {ours:?}");

    let counted: BTreeMap<String, f64> = metrics(port)
        .into_iter()
        .filter(|(k, _)| k.starts_with("switchboard_messages_total{"))
        .collect();
    let other: f64 = counted
        .iter()
        .filter(|(k, _)| {
            labels(k, "switchboard_messages_total").is_some_and(|l| l["type"] == "other")
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(other as usize, extra.len(), "{counted:#?}");
    for (kind, _) in &extra {
        assert!(
            !counted.keys().any(|k| k.contains(kind.as_str())),
            "{kind} became a label: {counted:#?}"
        );
    }
    terminate(child);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_partitions_lag_series_disappears() {
    let setup = Setup::create("revoke").await;
    let trace = scaled_trace("revoke", 1);
    setup.produce_trace(&trace);
    let input = setup.topic(Topic::Input);
    let (pa, pb) = (free_port(), free_port());
    let a = setup.spawn_with("a", &format!("127.0.0.1:{pa}"));
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    eventually(Duration::from_secs(60), || {
        let series: BTreeSet<i32> = lag_series(pa, &input).into_keys().collect();
        (series == all)
            .then_some(())
            .ok_or(format!("a alone has series for {series:?}"))
    });
    let b = setup.spawn_with("b", &format!("127.0.0.1:{pb}"));
    // Once the group has settled, each instance has series for exactly the partitions it holds.
    let (sa, sb) = eventually(Duration::from_secs(60), || {
        let sa: BTreeSet<i32> = lag_series(pa, &input).into_keys().collect();
        let sb: BTreeSet<i32> = lag_series(pb, &input).into_keys().collect();
        let held = |port| counter(port, "switchboard_assigned_partitions").unwrap_or(-1.0) as usize;
        let settled = !sa.is_empty()
            && !sb.is_empty()
            && sa.len() == held(pa)
            && sb.len() == held(pb)
            && sa.is_disjoint(&sb)
            && sa.union(&sb).copied().collect::<BTreeSet<_>>() == all;
        if settled {
            Ok((sa, sb))
        } else {
            Err(format!(
                "a {sa:?} (holds {}), b {sb:?} (holds {})",
                held(pa),
                held(pb)
            ))
        }
    });
    eprintln!("after b joined: a has lag series for {sa:?}, b for {sb:?}");
    terminate(b);
    terminate(a);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_sharing_a_transactional_id_count_their_fencings() {
    let setup = Setup::create("fenced").await;
    let (pa, pb) = (free_port(), free_port());
    // The same instance name: the same transactional id. Each is given a group.instance.id of
    // its own: with the default, the transactional id, the broker fences the older consumer
    // first and it exits (tests/scale.rs); here it is the producers' fencing that is counted.
    let spawn = |port: u16, member: &str| {
        Proc::spawn(
            setup
                .instance_command("same", &format!("127.0.0.1:{port}"))
                .env(
                    "SWITCHBOARD_KAFKA__CONSUMER_PROPERTIES__GROUP_INSTANCE_ID",
                    member,
                ),
        )
    };
    let _a = spawn(pa, "a");
    eventually(Duration::from_secs(60), || {
        let held = counter(pa, "switchboard_assigned_partitions").unwrap_or(0.0);
        (held == PARTITIONS as f64)
            .then_some(())
            .ok_or(format!("a holds {held}"))
    });
    assert_eq!(counter(pa, "switchboard_fencings_total"), Some(0.0));
    // b initialises its transactions (bumping the epoch: a is fenced) before it joins the group.
    let _b = spawn(pb, "b");
    eventually(Duration::from_secs(60), || {
        let held = counter(pb, "switchboard_assigned_partitions").unwrap_or(0.0);
        (held > 0.0).then_some(()).ok_or(format!("b holds {held}"))
    });
    // a's next transaction finds it fenced; its replacement producer fences b in turn. Either
    // may exit after too many; the most each was seen to count is kept.
    setup.produce_trace(&scaled_trace("fenced", 1));
    let mut seen = [0.0f64; 2];
    eventually(Duration::from_secs(60), || {
        for (i, port) in [pa, pb].into_iter().enumerate() {
            if let Some(n) = counter(port, "switchboard_fencings_total") {
                seen[i] = seen[i].max(n);
            }
        }
        (seen[0] >= 1.0)
            .then_some(())
            .ok_or(format!("fencings counted by a and b: {seen:?}"))
    });
    eprintln!("fencings counted by a and b: {seen:?}");
}
