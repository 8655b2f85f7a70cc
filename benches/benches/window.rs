//! The window aggregate alone, on one worker, in steady state: W1-shaped points (10,000
//! series every 10 s, ±2 s of disorder) through a 1-minute tumbling window grouped by host,
//! pre-aggregation, exchange and merge included, every window closed and emitted.
//! Target: ≥ 10 M points/s per worker.
//!
//! One worker and one dataflow live across iterations (as in a running pipeline); each
//! iteration feeds 1 M new points, later in event time than the last, and is timed from the
//! first point in to the last window row out. Building the input batches is not timed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use alertflow_benches::w1_points;
use alertflow_model::Metric;
use alertflow_operators::{Aggregate, AggregateConfig, AggregateExt, Time, WindowSpec};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use timely::communication::Allocator;
use timely::communication::allocator::thread::Thread;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::{Input, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn aggregate() -> Aggregate {
    let cfg = AggregateConfig {
        name: "per_minute".into(),
        input: "points".into(),
        window: WindowSpec::Tumbling { size: "1m".parse().unwrap() },
        group_by: vec!["host".into()],
        functions: alertflow_model::window::AggFn::ALL.to_vec(),
        state: alertflow_operators::StateConfig::default(),
    };
    Aggregate::with_config(&cfg, "1s".parse().unwrap()).unwrap()
}

fn bench(c: &mut Criterion) {
    const N: usize = 1_000_000;
    let points = w1_points(10_000, N, 100_000);
    let span = points.iter().map(|m| m.ts).max().unwrap() - points.iter().map(|m| m.ts).min().unwrap();
    let shift = (span / 60_000 + 2) * 60_000;
    let op = aggregate();

    let mut worker =
        timely::worker::Worker::new(timely::WorkerConfig::default(), Allocator::Thread(Thread::default()), Some(Instant::now()));
    let mut input = InputHandle::<Time, CapacityContainerBuilder<Vec<Metric>>>::new();
    let probe = ProbeHandle::new();
    let rows = Rc::new(Cell::new(0usize));
    let r = rows.clone();
    worker.dataflow::<Time, _, _>(|scope| {
        scope.input_from(&mut input).aggregate(&op).inspect(move |_| r.set(r.get() + 1)).probe_with(&probe);
    });

    let mut round = 0i64;
    let mut feed = |worker: &mut timely::worker::Worker| -> Duration {
        // Untimed: this iteration's points, moved later in event time.
        let offset = round * shift;
        round += 1;
        let batches: Vec<Vec<Metric>> =
            points.chunks(8192).map(|c| c.iter().map(|m| Metric { ts: m.ts + offset, series: m.series.clone(), ..*m }).collect()).collect();
        let start = Instant::now();
        let mut max_ts = 0;
        for mut b in batches {
            // Hold the input at the batch's watermark, as the file source does.
            let low = b.iter().map(|m| m.ts).min().unwrap_or(0) as u64;
            max_ts = max_ts.max(b.iter().map(|m| m.ts).max().unwrap_or(0));
            let t = low - low % 1000;
            if t > *input.time() {
                input.advance_to(t);
            }
            input.send_batch(&mut b);
            worker.step();
        }
        // Close every window of this iteration and wait for its rows.
        let end = (max_ts as u64 / 60_000 + 1) * 60_000;
        input.advance_to(end);
        while probe.less_than(&end) {
            worker.step();
        }
        start.elapsed()
    };
    feed(&mut worker);
    assert!(rows.get() > 150_000, "windows were emitted");

    let mut g = c.benchmark_group("window");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(20);
    g.bench_function("tumbling_1m_by_host_1M_points", |b| b.iter_custom(|iters| (0..iters).map(|_| feed(&mut worker)).sum()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
