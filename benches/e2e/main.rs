//! The end-to-end benchmark: Switchboard on the real broker and Redis of this machine, against
//! the machine's own ceiling and a naive consumer, in one run (`scripts/bench`, which starts the
//! servers; or `cargo bench --bench e2e -- [--quick]` with them running).
//!
//! It measures, each on fresh topics and a fresh key prefix:
//! - saturation: a topic preloaded with loadgen traffic, drained by `switchboard run`
//!   (messages/s, CPU seconds per million messages, RSS sampled throughout);
//! - the ceiling: a passthrough with the same client settings that consumes the same input and
//!   produces, transactionally with its offsets, as many records as Switchboard did; and Redis's
//!   own pipelined throughput (`redis-benchmark`);
//! - a naive consumer: per message one GET and one SET of the conversation, a produce awaited
//!   and a synchronous offset commit;
//! - latency at half the saturation rate: `createdAt` to the result being visible to a
//!   `read_committed` consumer (after a 3 s warm-up, which the chart still shows);
//! - scale: the same traffic mix over 1,000 conversations and over 1,000,000 (100,000 with
//!   `--quick`);
//! - history: one command on a conversation of 100,000 messages against one on a fresh
//!   conversation, through the Redis store.
//!
//! `--throughput-only` runs just saturation and the passthrough; `--latency-only RATE` just the
//! latency at that rate; `--scale-out` just the Redis Cluster against one Redis and three
//! instances against one (`scale`); `--peer [--pairs N]` just Switchboard against the Kafka
//! Streams peer of `benches/peer/` (`peer`); `--hot [--pairs N]` just uniform traffic against
//! one conversation carrying 30% of it (`hot`); `--restart [--pairs N]` just N restarts of an
//! instance, each timed from its start to its first commit (`restart`); `--sweep` just latency
//! against rate for Switchboard, the passthrough and the peer (`sweep`); `--against BIN
//! [--pairs N]` just this build against another build's binary, in alternated pairs (`against`).
//!
//! It prints the figures and the targets of BENCHMARKS.md, and writes `e2e.json` and `e2e.svg`
//! (throughput and latency over time) to `target/bench/`.
//!
//! One file per measurement (`saturation`, `ceiling`, `naive`, `latency`, `history`), what a
//! running processor shows from outside (`probe`), one measurement's isolated topics and keys
//! (`run`), and the output (`report`, `chart`). Servers and processes are the real-broker
//! tests' own helpers (`tests/kafka_support/process.rs`), included by path.

#[path = "../../tests/kafka_support/process.rs"]
mod process;

mod against;
mod ceiling;
mod chart;
mod history;
mod hot;
mod latency;
mod naive;
mod peer;
mod probe;
mod report;
mod restart;
mod run;
mod saturation;
mod scale;
mod sweep;

use switchboard::tools::loadgen::Model;

use crate::ceiling::{passthrough, redis_benchmark};
use crate::history::history;
use crate::latency::latency;
use crate::naive::naive;
use crate::report::Figures;
use crate::saturation::saturate;

const PARTITIONS: i32 = 12;
const START: i64 = 1_735_689_600_000_000;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The traffic of the paired comparisons (`--peer`, `--hot`, `--against`): conversations and
/// messages, 5,000 and 150,000 with `--quick`, else 20,000 and 600,000 (the peer warms up).
fn pair_traffic(quick: bool) -> (u64, u64) {
    if quick {
        (5_000, 150_000)
    } else {
        (20_000, 600_000)
    }
}

fn model(conversations: u64, messages: Option<u64>, seed: u64) -> Model {
    Model {
        conversations,
        messages,
        rate: 1000.0,
        seed,
        hot: 0.0,
        concurrency: 1000,
        start_micros: START,
    }
}

/// What to run, from the command line.
struct Mode {
    quick: bool,
    /// `--latency-only R`: just the latency measurement, at R messages per second.
    latency_only: Option<f64>,
    /// `--throughput-only`: just saturation and the passthrough ceiling, and their ratio.
    throughput_only: bool,
    /// `--scale-out`: just one Redis against the Redis Cluster, one instance against three.
    scale_out: bool,
    /// `--hot [--pairs N]`: uniform traffic against one conversation carrying 30% of it.
    hot: Option<usize>,
    /// `--restart [--pairs N]`: N restarts of an instance, each timed to its first commit.
    restart: Option<usize>,
    /// `--sweep`: latency against rate for Switchboard, the passthrough and the peer.
    sweep: bool,
    /// `--against BIN [--pairs N]`: this build against the `switchboard` binary at BIN.
    against: Option<(String, usize)>,
    /// `--peer`: just Switchboard against the Kafka Streams peer, in `pairs` pairs
    /// (`--pairs N`; 3 with `--quick`, else 5).
    peer: Option<usize>,
}

impl Mode {
    /// The arguments; anything unknown ends the bench with exit code 2.
    fn from_args() -> Mode {
        let args: Vec<String> = std::env::args().collect();
        // cargo bench passes --bench; anything else we do not know is an error.
        let quick = args.iter().any(|a| a == "--quick");
        let latency_only: Option<f64> = args.iter().position(|a| a == "--latency-only").map(|i| {
            args.get(i + 1)
                .and_then(|r| r.parse().ok())
                .unwrap_or_else(|| {
                    eprintln!("e2e: --latency-only needs a rate (messages per second)");
                    std::process::exit(2)
                })
        });
        let throughput_only = args.iter().any(|a| a == "--throughput-only");
        let scale_out = args.iter().any(|a| a == "--scale-out");
        let hot = args.iter().any(|a| a == "--hot");
        let restart = args.iter().any(|a| a == "--restart");
        let sweep = args.iter().any(|a| a == "--sweep");
        let against: Option<String> = args.iter().position(|a| a == "--against").map(|i| {
            args.get(i + 1).cloned().unwrap_or_else(|| {
                eprintln!("e2e: --against needs the path of another build's switchboard binary");
                std::process::exit(2)
            })
        });
        let pairs: usize = match args.iter().position(|a| a == "--pairs") {
            Some(i) => args
                .get(i + 1)
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0)
                .unwrap_or_else(|| {
                    eprintln!("e2e: --pairs needs a number of pairs");
                    std::process::exit(2)
                }),
            None if quick => 3,
            None => 5,
        };
        let peer = args.iter().any(|a| a == "--peer").then_some(pairs);
        let known = |a: &str| {
            matches!(
                a,
                "--quick"
                    | "--bench"
                    | "--latency-only"
                    | "--throughput-only"
                    | "--scale-out"
                    | "--hot"
                    | "--restart"
                    | "--sweep"
                    | "--against"
                    | "--peer"
                    | "--pairs"
            ) || a.parse::<f64>().is_ok()
        };
        let operand = |i: usize| i > 0 && args[i - 1] == "--against";
        if let Some((_, bad)) = args
            .iter()
            .enumerate()
            .skip(1)
            .find(|(i, a)| !known(a) && !operand(*i))
        {
            eprintln!(
                "e2e: unknown argument {bad:?} (known: --quick, --latency-only RATE, --throughput-only, --scale-out, --hot, --restart, --sweep, --against BIN, --peer [--pairs N])"
            );
            std::process::exit(2);
        }
        Mode {
            quick,
            latency_only,
            throughput_only,
            scale_out,
            hot: hot.then_some(pairs),
            restart: restart.then_some(pairs),
            sweep,
            against: against.map(|bin| (bin, pairs)),
            peer,
        }
    }

    /// Seconds of latency traffic.
    fn latency_seconds(&self) -> f64 {
        if self.quick {
            20.0
        } else {
            60.0
        }
    }
}

fn main() {
    let mode = Mode::from_args();
    let quick = mode.quick;
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (main_convs, main_msgs, many) = if quick {
        (5_000, 150_000, 100_000)
    } else {
        (20_000, 600_000, 1_000_000)
    };
    if mode.scale_out {
        scale::scale_out(&io, quick);
        return;
    }
    if let Some(pairs) = mode.hot {
        hot::hot(&io, quick, pairs);
        return;
    }
    if let Some(restarts) = mode.restart {
        restart::restart(&io, restarts);
        return;
    }
    if let Some((other, pairs)) = &mode.against {
        against::against(&io, other, quick, *pairs, mode.latency_seconds());
        return;
    }
    if mode.sweep {
        sweep::sweep(&io, quick, if quick { 15.0 } else { 30.0 });
        return;
    }
    if let Some(pairs) = mode.peer {
        peer::peer(&io, quick, pairs, mode.latency_seconds());
        return;
    }
    if let Some(rate) = mode.latency_only {
        let lat = latency(&io, rate, mode.latency_seconds());
        println!("{}", serde_json::to_string_pretty(&lat).unwrap());
        return;
    }
    eprintln!("e2e benchmark ({}):", if quick { "quick" } else { "full" });
    let redis = redis_benchmark();
    // Its topics and keys stay until the end, for the naive consumer to read the same input.
    let (run, sat) = saturate(&io, "saturation", &model(main_convs, Some(main_msgs), 1));
    let (ceiling, ceiling_cpu) = passthrough(&run, sat.messages, sat.outputs);
    if mode.throughput_only {
        println!(
            "Switchboard {:.0} msg/s · passthrough {ceiling:.0} msg/s · {:.0}% · {:.1} CPU s per \
             million · passthrough {ceiling_cpu:.1} · CPU ratio {:.2}",
            sat.rate,
            sat.rate / ceiling * 100.0,
            sat.cpu_seconds_per_million,
            sat.cpu_seconds_per_million / ceiling_cpu
        );
        return;
    }
    let naive_rate = naive(
        &run,
        &model(main_convs, Some(main_msgs), 1),
        if quick { 2_000 } else { 5_000 },
    );
    let lat = latency(&io, (sat.rate / 2.0).floor(), mode.latency_seconds());
    // The same traffic mix in both: one lifecycle per conversation for the many, ten for each
    // of the few (a conversation's later lifecycles lack only /block and /import).
    let (_, few) = saturate(&io, "few-conversations", &model(1_000, Some(150_000), 2));
    let (_, lots) = saturate(&io, "many-conversations", &model(many, None, 3));
    let hist = history(&io, 100_000);
    Figures {
        quick,
        redis,
        sat,
        ceiling,
        naive_rate,
        lat,
        few,
        lots,
        many,
        hist,
    }
    .report();
    drop(run);
}
