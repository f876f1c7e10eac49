//! This build against another (`--against BIN`): the same saturation and latency runs, each
//! pair alternated, the other build's `switchboard` binary spawned in place of this one's.
//! What a change to the runtime is measured with before it is kept: ratios from one run on one
//! machine, not figures from runs hours apart.

use crate::latency::{latency_in, start_switchboard, Latency};
use crate::run::Run;
use crate::saturation::{saturate_on, Saturation};
use crate::scale::{median, pair};

/// Messages per second of the latency runs: the rate the p99 target is stated at.
const LATENCY_RATE: f64 = 1000.0;

pub fn against(io: &tokio::runtime::Runtime, other: &str, quick: bool, pairs: usize, seconds: f64) {
    let (conversations, messages) = crate::pair_traffic(quick);
    let model = crate::model(conversations, Some(messages), 1);
    eprintln!(
        "against {other}: {pairs} pairs of {messages} messages over {conversations} conversations, \
         and of {seconds} s at {LATENCY_RATE}/s"
    );
    let (mut throughput, mut p99) = (Vec::new(), Vec::new());
    for i in 0..pairs {
        let (this, that): (Saturation, Saturation) = pair(
            i,
            || saturate_on(io, Run::new(&format!("this-{i}")), &model, 1).1,
            || {
                saturate_on(
                    io,
                    Run::new(&format!("that-{i}")).with_binary(Some(other)),
                    &model,
                    1,
                )
                .1
            },
        );
        let latency = |run: Run| latency_in(io, run, LATENCY_RATE, seconds, start_switchboard);
        let (this_latency, that_latency): (Latency, Latency) = pair(
            i,
            || latency(Run::new(&format!("this-latency-{i}"))),
            || latency(Run::new(&format!("that-latency-{i}")).with_binary(Some(other))),
        );
        println!(
            "pair {i}: this {:.0} msg/s ({:.1} CPU s/M), p50 {:.1} p99 {:.1} ms; other {:.0} msg/s \
             ({:.1}), p50 {:.1} p99 {:.1} ms",
            this.rate,
            this.cpu_seconds_per_million,
            this_latency.p50_ms,
            this_latency.p99_ms,
            that.rate,
            that.cpu_seconds_per_million,
            that_latency.p50_ms,
            that_latency.p99_ms
        );
        throughput.push(this.rate / that.rate);
        p99.push(this_latency.p99_ms / that_latency.p99_ms);
    }
    let spread = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        format!("median {:.2} (pairs {lo:.2}–{hi:.2})", median(v.to_vec()))
    };
    println!(
        "this/other: throughput {}; p99 at {LATENCY_RATE}/s {}",
        spread(&throughput),
        spread(&p99)
    );
}
