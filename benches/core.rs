//! Decode + apply per message, on a realistic mix of conversation lifecycles, one core.
//!
//! `cargo bench --bench core` — prints messages per second (criterion's "thrpt").

// The same allocator as the binary, so the figure is the one users get.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use switchboard::core::Dialect;
use switchboard::tools::simulate::Simulator;

mod workload;
use workload::{directory, workload};

fn bench(c: &mut Criterion) {
    let records = workload(1_000);
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.sample_size(20);
    group.bench_function("decode+apply, 1000 lifecycles", |b| {
        b.iter_batched(
            || Simulator::new(directory(), Dialect::Web1on1),
            |mut sim| {
                let mut outputs = 0usize;
                for (i, r) in records.iter().enumerate() {
                    outputs += sim.process(r, &i.to_string()).len();
                }
                assert!(outputs >= records.len());
                sim
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
