//! Anomaly detectors alone, per worker (one thread): points/s of `Detector::score` over many
//! series in steady state, and the memory of 100,000 series' state.
//! Targets: z-score and MAD ≥ 5 M points/s, random cut forest ≥ 200 K points/s per worker;
//! 100,000 series of z-score, MAD or Holt-Winters state in ≤ 1 GiB; the forest's memory per
//! series documented (aim ≤ 100 KiB).
//!
//! Each series is a daily wave plus noise, one point every 5 minutes, with a spike now and
//! then; the series' states are warmed up (Holt-Winters has found its period) before timing.
//! One iteration scores 100,000 points, round-robin over the series (each point touches a
//! different state, as a worker serving many series does).

use std::time::{Duration, Instant};

use alertflow_operators::detect::{Detector, DetectorKind, DetectorSpec, Params};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const STEP: i64 = 300_000;

fn value(series: usize, i: i64) -> f64 {
    let phase = (i % 288) as f64 / 288.0 * std::f64::consts::TAU;
    let noise = ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ series as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 40;
    let spike = if (i as usize + series).is_multiple_of(997) { 50.0 } else { 0.0 };
    50.0 + 20.0 * phase.sin() + noise as f64 / (1u64 << 24) as f64 * 5.0 + spike
}

/// `n` warmed-up states and the next point index.
fn warmed(kind: DetectorKind, n: usize, points_each: i64) -> Vec<Box<dyn Detector>> {
    let spec = DetectorSpec::new(kind, &Params::new()).unwrap();
    let mut states: Vec<Box<dyn Detector>> = (0..n).map(|_| spec.build()).collect();
    for i in 0..points_each {
        for (s, d) in states.iter_mut().enumerate() {
            d.score(i * STEP, value(s, i));
        }
    }
    states
}

fn bench(c: &mut Criterion) {
    const PER_ITER: u64 = 100_000;
    let mut g = c.benchmark_group("detect");
    g.throughput(Throughput::Elements(PER_ITER));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    for (kind, series) in [
        (DetectorKind::Zscore, 1_000),
        (DetectorKind::Mad, 1_000),
        (DetectorKind::HoltWinters, 1_000),
        (DetectorKind::Ensemble, 100),
        (DetectorKind::Rcf, 100),
    ] {
        let warm = 1_000;
        let mut states = warmed(kind, series, warm);
        let mut i = warm;
        g.bench_function(format!("{kind}/{series}_series"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let mut acc = 0.0;
                    let rounds = PER_ITER as usize / series;
                    for _ in 0..rounds {
                        for (s, d) in states.iter_mut().enumerate() {
                            acc += d.score(i * STEP, value(s, i)).score;
                        }
                        i += 1;
                    }
                    std::hint::black_box(acc);
                    total += start.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

/// Resident memory (bytes) of this process, from /proc/self/statm.
fn rss() -> usize {
    let text = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    text.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()).unwrap_or(0) * 4096
}

/// Not timed: prints the state of 100,000 series (1,000 for the forest and the ensemble that
/// holds one), by `memory_bytes()` and by the growth of the resident set (only meaningful for
/// the first kind: the allocator keeps what the previous kind freed).
///
/// Skipped when a filter that does not mention `memory` is given (`cargo bench --bench detect
/// -- rcf/`): warming 100,000 ensembles takes minutes and 12 GiB.
fn memory(_c: &mut Criterion) {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| f.contains("memory")) {
        return;
    }
    for (kind, n) in [
        (DetectorKind::Zscore, 100_000),
        (DetectorKind::Mad, 100_000),
        (DetectorKind::HoltWinters, 100_000),
        (DetectorKind::Ensemble, 100_000),
        (DetectorKind::Rcf, 1_000),
    ] {
        let before = rss();
        let states = warmed(kind, n, 700);
        let after = rss();
        let estimate: usize = states.iter().map(|d| d.memory_bytes()).sum();
        println!(
            "memory {kind}: {n} series, estimate {:.1} MiB ({} B/series), RSS growth {:.1} MiB ({} B/series)",
            estimate as f64 / 1048576.0,
            estimate / n,
            after.saturating_sub(before) as f64 / 1048576.0,
            after.saturating_sub(before) / n
        );
        drop(states);
    }
}

criterion_group!(benches, bench, memory);
criterion_main!(benches);
