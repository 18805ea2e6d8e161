//! Placement over a fleet of 30 nodes. Run with `cargo bench -p operator`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use operator::decide::placement::{NodeLoad, Strategy, place};

fn fleet() -> Vec<NodeLoad> {
    (0..30)
        .map(|i| NodeLoad {
            name: format!("chat-{i}"),
            free_seats: (i * 37 % 300) as i64 - 20,
            msg_rate: (i * 13 % 17) as f64,
        })
        .collect()
}

fn placement(c: &mut Criterion) {
    let nodes = fleet();
    c.bench_function("place a room over 30 nodes (least loaded)", |b| {
        b.iter(|| black_box(place(black_box(&nodes), 3, Strategy::LeastLoaded)))
    });
    c.bench_function("place a room over 30 nodes (overflow)", |b| {
        b.iter(|| black_box(place(black_box(&nodes), 1000, Strategy::LeastLoaded)))
    });
}

criterion_group!(benches, placement);
criterion_main!(benches);
