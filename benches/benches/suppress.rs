//! Suppress alone, on one worker, in steady state: the lifecycle rows dedup makes of a
//! storm-heavy alert stream (16 incidents in 3 tenants over 2 h, 2 of them storms of 10,000
//! distinct alerts; ≈ 0.4 M notices) through storm detection per tenant and `alertname`
//! (threshold 100 in 1 m, cooldown 5 m), exchange included, every row, storm row and storm
//! membership emitted. Compared with the alert chain's target: 1 M alerts/s end to end on 2
//! cores (≥ 0.5 M notices/s per worker for the whole chain); the figure is given both per
//! lifecycle row in and per notice of the stream the rows came from.
//!
//! One worker and one dataflow live across iterations; each iteration feeds all the rows again,
//! later in event time than the last, and is timed from the first row in until the last output
//! is out (every storm closed: the input moves 1 h past the last row). Running dedup to make
//! the rows and building the batches is not timed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use alertflow_benches::harness::{
    In, dedup_events, epoch, run, schedule, shift_event, shift_for, span, steady_state, storm_alerts, storm_scenario, worker,
};
use alertflow_model::alert::AlertEvent;
use alertflow_operators::{Suppress, SuppressConfig, SuppressExt, Time};
use criterion::{Criterion, criterion_group, criterion_main};
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::{Input, Inspect, Probe};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let alerts = storm_alerts(&storm_scenario());
    let notices = alerts.len();
    let events = dedup_events(alerts);
    let n = events.len();
    let span = span(&events, |e| e.ts);
    let slack = 3_600_000;
    let shift = shift_for(span, slack);
    let op = Suppress::with_config(&SuppressConfig::default(), "1s".parse().unwrap()).unwrap();

    let mut worker = worker();
    let mut input = In::<AlertEvent>::new();
    let probe = ProbeHandle::new();
    let (rows, storms) = (Rc::new(Cell::new(0usize)), Rc::new(Cell::new(0usize)));
    let (r, s) = (rows.clone(), storms.clone());
    worker.dataflow::<Time, _, _>(|scope| {
        let out = scope.input_from(&mut input).suppress(&op);
        out.events.inspect(move |e| r.set(r.get() + e.suppressed as usize)).probe_with(&probe);
        out.storms.inspect(move |_| s.set(s.get() + 1)).probe_with(&probe);
        out.members.probe_with(&probe);
    });

    let mut round = 0i64;
    let mut feed = |worker: &mut _| -> Duration {
        // Untimed: this iteration's rows, moved later in event time.
        let offset = round * shift;
        round += 1;
        let batches = schedule(events.iter().map(|e| shift_event(e, offset)).collect(), 8192, |e: &AlertEvent| e.ts);
        let end = epoch(span.1 + offset + slack);
        let start = Instant::now();
        run(worker, &mut input, batches, end, &probe, |_| {});
        start.elapsed()
    };
    feed(&mut worker);
    eprintln!("suppress: {notices} notices → {n} lifecycle rows in, {} suppressed, {} storm rows per iteration", rows.get(), storms.get());
    assert!(rows.get() > 1_000 && storms.get() > 0, "storms were found");

    steady_state(c, "suppress", format!("storm_{}k_rows_of_{}k_notices", n / 1000, notices / 1000), n as u64, || feed(&mut worker));
}

criterion_group!(benches, bench);
criterion_main!(benches);
