//! Growing a per-alert table (dedup's and correlate's `BoxedMap`) to 1,000,000 values of
//! 128 bytes, as with 1,000,000 open alerts: the whole fill, and the slowest single insert.
//!
//! hashbrown grows a table in one call, rehashing every value into one twice the size; a
//! `BoxedMap` reads each key through the value's box, a cache miss each, so that one call
//! stalled the worker for tens of milliseconds. `BoxedMap` now grows a few buckets per change.
//! Criterion times the whole fill (the throughput price of growing incrementally); the slowest
//! single insert (the latency it buys) is printed after each benchmark, since criterion
//! reports means, not maxima. The first pass is left out of that: its memory is fresh from the
//! kernel, and faulting it in (whole huge pages where they are on) decides its slowest insert
//! whatever the table does; later passes reuse the allocator's memory, as a long run does.

use std::time::{Duration, Instant};

use alertflow_operators::boxed_map::{BoxedMap, Keyed};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use hashbrown::HashTable;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const N: u64 = 1_000_000;

/// An episode-sized value that knows its key.
struct Value {
    key: u64,
    _rest: [u64; 15],
}

impl Keyed for Value {
    fn key(&self) -> u64 {
        self.key
    }
}

/// A well-mixed key, as fingerprints are (splitmix64).
fn key(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills a fresh table with `insert` and returns the fill's time and its slowest insert. The
/// boxes are made before the clock starts.
fn fill<T>(mut table: T, mut insert: impl FnMut(&mut T, Box<Value>)) -> (Duration, Duration) {
    let values: Vec<Box<Value>> = (0..N).map(|i| Box::new(Value { key: key(i), _rest: [i; 15] })).collect();
    let (mut total, mut slowest) = (Duration::ZERO, Duration::ZERO);
    for v in values {
        let start = Instant::now();
        insert(&mut table, v);
        let took = start.elapsed();
        total += took;
        slowest = slowest.max(took);
    }
    std::hint::black_box(&table);
    (total, slowest)
}

/// Benches `one` fill of a fresh table, and prints the slowest insert after the first pass.
fn bench_fill(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, mut one: impl FnMut() -> (Duration, Duration)) {
    let (mut slowest, mut passes) = (Duration::ZERO, 0);
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (t, s) = one();
                total += t;
                if passes > 0 {
                    slowest = slowest.max(s);
                }
                passes += 1;
            }
            total
        })
    });
    println!("table_growth/{name}: slowest single insert {slowest:?}");
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("table_growth");
    g.sample_size(10);
    bench_fill(&mut g, "boxed_map_1m_inserts", || {
        fill(BoxedMap::<Value>::new(), |m, v| {
            m.insert(v);
        })
    });
    bench_fill(&mut g, "hashtable_one_call_growth_1m_inserts", || {
        fill(HashTable::<Box<Value>>::new(), |m, v| {
            m.insert_unique(v.key, v, |x| x.key);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
