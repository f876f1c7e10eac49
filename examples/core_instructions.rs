//! The benchmark workload run directly, for two figures criterion cannot give on a noisy
//! shared machine:
//!
//! - best and median wall-clock throughput over 15 fresh runs (noise only ever slows a run,
//!   so the best run is the fairest estimate of the code on an unloaded core):
//!
//!       cargo run --release --example core_instructions
//!
//! - instructions per message, which do not depend on the machine's load:
//!
//!       cargo build --release --example core_instructions
//!       valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!           target/release/examples/core_instructions --once
//!       callgrind_annotate --inclusive=yes /tmp/cg.out | grep Simulator::process
//!
//!   (the `process` total divided by 18,000 messages).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../benches/workload.rs"]
mod workload;

use switchboard::tools::simulate::Simulator;

fn run(records: &[Vec<u8>]) -> (std::time::Duration, usize) {
    let mut sim = Simulator::new(workload::directory(), switchboard::core::Dialect::Web1on1);
    let mut outputs = 0usize;
    let started = std::time::Instant::now();
    for (i, r) in records.iter().enumerate() {
        outputs += sim.process(r, &i.to_string()).len();
    }
    (started.elapsed(), outputs)
}

fn main() {
    let records = workload::workload(1_000);
    let runs = if std::env::args().any(|a| a == "--once") {
        1
    } else {
        15
    };
    let mut rates: Vec<f64> = (0..runs)
        .map(|_| {
            let (elapsed, _) = run(&records);
            records.len() as f64 / elapsed.as_secs_f64()
        })
        .collect();
    rates.sort_by(|a, b| b.total_cmp(a));
    println!(
        "{} messages per run, {runs} runs: best {:.0} messages/s, median {:.0} messages/s",
        records.len(),
        rates[0],
        rates[rates.len() / 2]
    );
}
