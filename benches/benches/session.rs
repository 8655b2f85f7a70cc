//! Session windows alone, on one worker, in steady state: W1-shaped points (10,000 series
//! every 10 s, ±2 s of disorder) of which half the series fall silent every other minute, so
//! they make sessions of about a minute (the other half one long session per iteration),
//! through session windows (gap 30 s) grouped by host with every function (as
//! `window/tumbling_1m_by_host_1M_points`): keying, exchange, event-time ordering per group
//! and every session closed and emitted. No target of its own (sessions cannot pre-aggregate,
//! every point goes through the event-time ordering); compared with the window target,
//! ≥ 10 M points/s per worker.
//!
//! One worker and one dataflow live across iterations; each iteration feeds the points again,
//! later in event time than the last, and is timed from the first point in to the last session
//! row out. Building the input batches is not timed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use alertflow_benches::harness::{In, epoch, run, schedule, shift_for, span, steady_state, worker};
use alertflow_benches::w1_points;
use alertflow_model::Metric;
use alertflow_operators::{Aggregate, AggregateConfig, AggregateExt, Time, WindowSpec};
use criterion::{Criterion, criterion_group, criterion_main};
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::{Input, Inspect, Probe};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SERIES: usize = 10_000;
const GAP: i64 = 30_000;

fn aggregate() -> Aggregate {
    let cfg = AggregateConfig {
        name: "sessions".into(),
        input: "points".into(),
        window: WindowSpec::Session { gap: alertflow_model::DurationMs(GAP as u64) },
        group_by: vec!["host".into()],
        functions: alertflow_model::window::AggFn::ALL.to_vec(),
        state: alertflow_operators::StateConfig::default(),
    };
    Aggregate::with_config(&cfg, "1s".parse().unwrap()).unwrap()
}

fn bench(c: &mut Criterion) {
    // Points i of series i % SERIES in round i / SERIES (10 s each): odd series skip odd minutes.
    let points: Vec<Metric> = w1_points(SERIES, 1_200_000, 100_000)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| (i % SERIES).is_multiple_of(2) || (i / SERIES / 6).is_multiple_of(2))
        .map(|(_, m)| m)
        .collect();
    let n = points.len();
    let span = span(&points, |m| m.ts);
    let slack = GAP + 60_000;
    let shift = shift_for(span, slack);
    let op = aggregate();

    let mut worker = worker();
    let mut input = In::<Metric>::new();
    let probe = ProbeHandle::new();
    let rows = Rc::new(Cell::new(0usize));
    let r = rows.clone();
    worker.dataflow::<Time, _, _>(|scope| {
        scope.input_from(&mut input).aggregate(&op).inspect(move |_| r.set(r.get() + 1)).probe_with(&probe);
    });

    let mut round = 0i64;
    let mut feed = |worker: &mut _| -> Duration {
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
    eprintln!("session: {n} points → {} sessions per iteration", rows.get());
    assert!(rows.get() > 50_000, "sessions were emitted");

    steady_state(c, "session", format!("session_30s_by_host_{}k_points", n / 1000), n as u64, || feed(&mut worker));
}

criterion_group!(benches, bench);
criterion_main!(benches);
