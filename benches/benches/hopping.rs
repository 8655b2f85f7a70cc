//! The hopping window aggregate alone, on one worker, in steady state: W1-shaped points
//! (10,000 series every 10 s, ±2 s of disorder) through 5-minute windows every minute grouped
//! by host, pre-aggregation into 1-minute panes, exchange and merge of five panes per window
//! included, every window closed and emitted. Twice: with every function (count, sum, min,
//! max, avg, first, last, stddev and p50–p99 from a quantile sketch, as
//! `window/tumbling_1m_by_host_1M_points`), and with W1's five (count, sum, min, max, avg).
//! Target: hopping 5m/1m ≥ 1 M points/s per worker.
//!
//! One worker and one dataflow live across iterations; each iteration feeds 1 M new points,
//! later in event time than the last, and is timed from the first point in to the last window
//! row out. Building the input batches is not timed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use alertflow_benches::harness::{In, epoch, run, schedule, shift_for, span, worker};
use alertflow_benches::w1_points;
use alertflow_model::Metric;
use alertflow_model::window::AggFn;
use alertflow_operators::{Aggregate, AggregateConfig, AggregateExt, Time, WindowSpec};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::{Input, Inspect, Probe};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn aggregate(functions: &[AggFn]) -> Aggregate {
    let cfg = AggregateConfig {
        name: "per_5m_every_1m".into(),
        input: "points".into(),
        window: WindowSpec::Hopping { size: "5m".parse().unwrap(), slide: "1m".parse().unwrap() },
        group_by: vec!["host".into()],
        functions: functions.to_vec(),
        state: alertflow_operators::StateConfig::default(),
    };
    Aggregate::with_config(&cfg, "1s".parse().unwrap()).unwrap()
}

const N: usize = 1_000_000;

fn bench(c: &mut Criterion) {
    let points = w1_points(10_000, N, 100_000);
    let mut g = c.benchmark_group("hopping");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(Duration::from_secs(15));
    let w1 = [AggFn::Count, AggFn::Sum, AggFn::Min, AggFn::Max, AggFn::Avg];
    for (name, functions) in [("all_functions", &AggFn::ALL[..]), ("w1_functions", &w1[..])] {
        let mut feed = feeder(&points, aggregate(functions));
        g.bench_function(format!("hopping_5m_1m_by_host_1M_points/{name}"), |b| b.iter_custom(|iters| (0..iters).map(|_| feed()).sum()));
    }
    g.finish();
}

/// A worker running `op`, and a function that feeds it one iteration and returns its time.
fn feeder(points: &[Metric], op: Aggregate) -> impl FnMut() -> Duration {
    let span = span(points, |m| m.ts);
    // The last window holding a point ends within 5 minutes of it.
    let slack = 6 * 60_000;
    let shift = shift_for(span, slack);

    let mut worker = worker();
    let mut input = In::<Metric>::new();
    let probe = ProbeHandle::new();
    let rows = Rc::new(Cell::new(0usize));
    let r = rows.clone();
    worker.dataflow::<Time, _, _>(|scope| {
        scope.input_from(&mut input).aggregate(&op).inspect(move |_| r.set(r.get() + 1)).probe_with(&probe);
    });

    let mut round = 0i64;
    let mut feed = move |worker: &mut _| -> Duration {
        // Untimed: this iteration's points, moved later in event time.
        let offset = round * shift;
        round += 1;
        let moved = points.iter().map(|m| Metric { ts: m.ts + offset, series: m.series.clone(), ..*m }).collect();
        let batches = schedule(moved, 8192, |m: &Metric| m.ts);
        let end = epoch(span.1 + offset + slack);
        let start = Instant::now();
        run(worker, &mut input, batches, end, &probe, |_| {});
        start.elapsed()
    };
    feed(&mut worker);
    eprintln!("hopping: {N} points → {} window rows per iteration", rows.get());
    assert!(rows.get() > 150_000, "windows were emitted");
    move || feed(&mut worker)
}

criterion_group!(benches, bench);
criterion_main!(benches);
