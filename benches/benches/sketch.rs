//! The quantile sketch alone, one thread (DDSketch, 1 % relative error; the `p50`…`p99`
//! functions of every window): counting values into one sketch and into 10,000 sketches
//! round-robin (one per window and group, as a worker's pre-aggregation does), merging 1,000
//! sketches (the merge of panes and workers) and reading quantiles. Compared with the window
//! target, ≥ 10 M points/s per worker: every point of a window with a quantile function is
//! counted once, so adding must stay well under 100 ns.

use std::hint::black_box;

use alertflow_model::sketch::Sketch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// W1's values: uniform in [0, 100) with three decimals.
fn values(n: usize) -> Vec<f64> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 100_000) as f64 / 1000.0
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    const N: usize = 1_000_000;
    let vals = values(N);
    let mut g = c.benchmark_group("sketch");
    g.sample_size(20);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("add_1M_values_one_sketch", |b| {
        b.iter(|| {
            let mut s = Sketch::new();
            for &v in &vals {
                s.add(v);
            }
            black_box(s.count())
        })
    });
    g.bench_function("add_1M_values_10k_sketches", |b| {
        b.iter(|| {
            let mut s = vec![Sketch::new(); 10_000];
            for (i, &v) in vals.iter().enumerate() {
                s[i % 10_000].add(v);
            }
            black_box(s.len())
        })
    });
    // 1,000 sketches of 100 values each (a minute of a busy series), merged into one.
    let parts: Vec<Sketch> = vals[..100_000]
        .chunks(100)
        .map(|c| {
            let mut s = Sketch::new();
            c.iter().for_each(|&v| s.add(v));
            s
        })
        .collect();
    g.throughput(Throughput::Elements(parts.len() as u64));
    g.bench_function("merge_1k_sketches", |b| {
        b.iter(|| {
            let mut m = Sketch::new();
            for p in &parts {
                m.merge(p);
            }
            black_box(m.count())
        })
    });
    let mut whole = Sketch::new();
    parts.iter().for_each(|p| whole.merge(p));
    g.throughput(Throughput::Elements(4));
    g.bench_function("quantiles_p50_p90_p95_p99", |b| b.iter(|| [0.5, 0.9, 0.95, 0.99].map(|q| black_box(&whole).quantile(q))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
