//! Dedup alone, on one worker, in steady state: a storm-heavy alert stream from the generator
//! (16 incidents in 3 tenants over 2 h, 2 of them storms of 10,000 distinct alerts, every
//! firing alert re-sent every 30 s, ≈ 0.4 M notices) through Alertmanager lifecycle dedup,
//! exchange included, every episode opened, resolved or expired and every row emitted.
//! Compared with the alert chain's target: 1 M alerts/s end to end on 2 cores, so
//! ≥ 0.5 M notices/s per worker for decode + dedup + suppress + correlate + sinks together.
//!
//! One worker and one dataflow live across iterations; each iteration feeds the whole stream
//! again, later in event time than the last, and is timed from the first notice in until the
//! last row is out (every timer fired: the input moves 1 h past the last notice). Decoding the
//! notices and building the batches is not timed.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alertflow_benches::harness::{In, run, schedule, shift_alert, shift_for, span, steady_state, storm_alerts, storm_scenario, worker};
use alertflow_model::Alert;
use alertflow_operators::{Dedup, DedupConfig, DedupExt, Time};
use criterion::{Criterion, criterion_group, criterion_main};
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::{Input, Inspect, Probe};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let alerts = storm_alerts(&storm_scenario());
    let n = alerts.len();
    let span = span(&alerts, |a| a.ts);
    let slack = 3_600_000;
    let shift = shift_for(span, slack);
    let op = Dedup::with_config(&DedupConfig::default(), "1s".parse().unwrap()).unwrap();

    let mut worker = worker();
    let mut input = In::<Alert>::new();
    let probe = ProbeHandle::new();
    let rows = Rc::new(Cell::new(0usize));
    let r = rows.clone();
    worker.dataflow::<Time, _, _>(|scope| {
        scope.input_from(&mut input).dedup(&op, Arc::default()).inspect(move |_| r.set(r.get() + 1)).probe_with(&probe);
    });

    let mut round = 0i64;
    let mut feed = |worker: &mut _| -> Duration {
        // Untimed: this iteration's notices, moved later in event time.
        let offset = round * shift;
        round += 1;
        let batches = schedule(alerts.iter().map(|a| shift_alert(a, offset)).collect(), 8192, |a: &Alert| a.ts);
        let end = alertflow_benches::harness::epoch(span.1 + offset + slack);
        let start = Instant::now();
        run(worker, &mut input, batches, end, &probe, |_| {});
        start.elapsed()
    };
    feed(&mut worker);
    let per_round = rows.get();
    eprintln!("dedup: {n} notices → {per_round} lifecycle rows per iteration");
    assert!(per_round > 10_000, "rows were emitted");

    steady_state(c, "dedup", format!("storm_{}k_notices", n / 1000), n as u64, || feed(&mut worker));
}

criterion_group!(benches, bench);
criterion_main!(benches);
