//! Hot-path cost of reading the live knobs: `LiveConfig::load` (an owned
//! `Arc` snapshot, what a worker keeps for a unit of work) and `peek` (a
//! borrowed guard), alone and while another thread swaps snapshots.
//! Target: load <= 50 ns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use freshet::knobs::{Change, Knobs};
use freshet::live::LiveConfig;

fn bench_live(c: &mut Criterion) {
    let live = LiveConfig::new(Knobs::default()).expect("defaults are valid");
    c.bench_function("live_load", |b| {
        b.iter(|| black_box(live.load().knobs.extract.slots))
    });
    c.bench_function("live_peek", |b| {
        b.iter(|| black_box(live.peek().knobs.extract.slots))
    });

    // The same loads while a writer swaps as fast as it can.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let live = live.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 1u32;
            while !stop.load(Ordering::Relaxed) {
                n = n % 64 + 1;
                live.patch(&[Change::new("extract.slots", n)], None)
                    .expect("valid patch");
            }
        })
    };
    c.bench_function("live_load_while_swapping", |b| {
        b.iter(|| black_box(live.load().knobs.extract.slots))
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread");
}

criterion_group!(benches, bench_live);
criterion_main!(benches);
