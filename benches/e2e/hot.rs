//! A hot conversation (`--hot`): the same number of messages drained uniformly spread and with
//! one conversation carrying 30% of them, in alternated pairs (target: the hot load at least
//! 0.8× the uniform one's throughput). A conversation's messages are applied in order within its
//! partition, so one hot conversation loads one partition with a third of the traffic.

use crate::run::Run;
use crate::saturation::saturate_on;
use crate::scale::{median, pair};

/// The hot conversation's share of all messages.
const HOT_SHARE: f64 = 0.3;

pub fn hot(io: &tokio::runtime::Runtime, quick: bool, pairs: usize) {
    let (conversations, messages) = crate::pair_traffic(quick);
    let uniform = crate::model(conversations, Some(messages), 1);
    let hot = switchboard::tools::loadgen::Model {
        hot: HOT_SHARE,
        ..uniform.clone()
    };
    eprintln!(
        "hot: {pairs} pairs of {messages} messages over {conversations} conversations, uniform \
         and with one conversation carrying {:.0}%",
        HOT_SHARE * 100.0
    );
    let mut ratios = Vec::new();
    for i in 0..pairs {
        let (u, h) = pair(
            i,
            || saturate_on(io, Run::new(&format!("uniform-{i}")), &uniform, 1).1,
            || saturate_on(io, Run::new(&format!("hot-{i}")), &hot, 1).1,
        );
        let ratio = h.rate / u.rate;
        eprintln!(
            "pair {i}: uniform {:.0} msg/s ({:.1} CPU s per million), hot {:.0} msg/s ({:.1}): \
             {ratio:.2}",
            u.rate, u.cpu_seconds_per_million, h.rate, h.cpu_seconds_per_million
        );
        ratios.push(ratio);
    }
    let spread = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        format!("{lo:.2}–{hi:.2}")
    };
    let m = median(ratios.clone());
    eprintln!(
        "hot/uniform throughput: median {m:.2} (pairs {}); target ≥ 0.80: {}",
        spread(&ratios),
        if m >= 0.8 { "met" } else { "not met" }
    );
}
