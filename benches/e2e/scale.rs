//! Scale-out (`--scale-out`): the same preloaded traffic drained with the state on one Redis
//! and on the Redis Cluster of `deploy/local/redis-cluster` (`REDIS_CLUSTER_NODES` to point
//! elsewhere), and by one instance and by three of one group, in alternated pairs. Prints each
//! pair, the medians and their ratios: the Cluster's throughput against one node's (target:
//! within 20%), three instances' CPU per message against one's (target: within 10%).

use crate::run::Run;
use crate::saturation::saturate_on;

fn cluster_nodes() -> String {
    std::env::var("REDIS_CLUSTER_NODES").unwrap_or_else(|_| {
        (17000..17006)
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    })
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One alternated pair: `a` then `b` on even pairs, `b` then `a` on odd ones, so that neither
/// always runs on the warmer machine.
pub fn pair<A, B>(i: usize, a: impl FnOnce() -> A, b: impl FnOnce() -> B) -> (A, B) {
    if i.is_multiple_of(2) {
        let x = a();
        (x, b())
    } else {
        let y = b();
        (a(), y)
    }
}

pub fn scale_out(io: &tokio::runtime::Runtime, quick: bool) {
    let (conversations, messages, pairs) = if quick {
        (5_000, 150_000, 3)
    } else {
        (20_000, 600_000, 5)
    };
    let model = crate::model(conversations, Some(messages), 1);
    let nodes = cluster_nodes();
    eprintln!("scale-out: {pairs} pairs of {messages} messages over {conversations} conversations");
    let mut ratio_store = Vec::new();
    let (mut single, mut cluster) = (Vec::new(), Vec::new());
    for i in 0..pairs {
        let (s, c) = pair(
            i,
            || saturate_on(io, Run::new(&format!("single-{i}")), &model, 1).1,
            || {
                saturate_on(
                    io,
                    Run::on_cluster(&format!("cluster-{i}"), &nodes),
                    &model,
                    1,
                )
                .1
            },
        );
        println!(
            "pair {i}: one Redis {:.0} msg/s ({:.1} Redis CPU s per million) · Redis Cluster {:.0} msg/s ({:.1}, every node) · {:.2}",
            s.rate,
            s.redis_cpu_seconds_per_million,
            c.rate,
            c.redis_cpu_seconds_per_million,
            c.rate / s.rate
        );
        ratio_store.push(c.rate / s.rate);
        single.push(s.rate);
        cluster.push(c.rate);
    }
    let mut ratio_cpu = Vec::new();
    let (mut one, mut three) = (Vec::new(), Vec::new());
    for i in 0..pairs {
        let (x, y) = pair(
            i,
            || saturate_on(io, Run::new(&format!("one-{i}")), &model, 1).1,
            || saturate_on(io, Run::new(&format!("three-{i}")), &model, 3).1,
        );
        println!(
            "pair {i}: one instance {:.1} CPU s per million ({:.0} msg/s) · three {:.1} ({:.0} msg/s) · {:.2}",
            x.cpu_seconds_per_million,
            x.rate,
            y.cpu_seconds_per_million,
            y.rate,
            y.cpu_seconds_per_million / x.cpu_seconds_per_million
        );
        ratio_cpu.push(y.cpu_seconds_per_million / x.cpu_seconds_per_million);
        one.push(x.cpu_seconds_per_million);
        three.push(y.cpu_seconds_per_million);
    }
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.2}–{hi:.2}")
    };
    println!(
        "Redis Cluster / one Redis, throughput: median {:.2} (pairs {}); medians {:.0} / {:.0} msg/s; target ≥ 0.80",
        median(ratio_store.clone()),
        spread(&ratio_store),
        median(cluster),
        median(single)
    );
    println!(
        "three instances / one, CPU per message: median {:.2} (pairs {}); medians {:.1} / {:.1} CPU s per million; target ≤ 1.10",
        median(ratio_cpu.clone()),
        spread(&ratio_cpu),
        median(three),
        median(one)
    );
}
