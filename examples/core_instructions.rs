//! A fixed run of the benchmark workload, for instruction counts that do not depend on what
//! else the machine is doing:
//!
//!     cargo build --release --example core_instructions
//!     valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out target/release/examples/core_instructions
//!
//! callgrind's "Collected" total divided by the messages printed here is instructions per
//! message (setup included, which is small next to 18,000 messages).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../benches/workload.rs"]
mod workload;

fn main() {
    let records = workload::workload(1_000);
    let mut sim =
        switchboard::simulate::Simulator::new(workload::directory(), switchboard::Dialect::Web1on1);
    let mut outputs = 0usize;
    for (i, r) in records.iter().enumerate() {
        outputs += sim.process(r, &i.to_string()).len();
    }
    println!("messages {} outputs {outputs}", records.len());
}
