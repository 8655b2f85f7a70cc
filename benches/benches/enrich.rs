//! Enrich alone, on one worker, in steady state: the lifecycle rows dedup makes of a
//! storm-heavy alert stream (16 incidents in 3 tenants over 2 h, 2 of them storms of 10,000
//! distinct alerts; ≈ 0.4 M notices) joined with the generator's topology (team and tier of
//! each row's service), exchange and the topology broadcast included, every row emitted.
//! Compared with the alert chain's target: 1 M alerts/s end to end on 2 cores (≥ 0.5 M
//! notices/s per worker for the whole chain); the figure is given both per lifecycle row in and
//! per notice of the stream the rows came from.
//!
//! One worker and one dataflow live across iterations (the topology is sent once, before the
//! first); each iteration feeds all the rows again, later in event time than the last, and is
//! timed from the first row in until the last row is out. Running dedup to make the rows and
//! building the batches is not timed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use alertflow_benches::harness::{
    EPOCH, In, dedup_events, epoch, run, schedule, shift_event, shift_for, span, steady_state, storm_alerts, storm_scenario, topology,
    worker,
};
use alertflow_model::alert::AlertEvent;
use alertflow_operators::{EnrichExt, Time, TopologyChange};
use criterion::{Criterion, criterion_group, criterion_main};
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::{Input, Inspect, Probe};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let scenario = storm_scenario();
    let topo = topology(&scenario);
    let alerts = storm_alerts(&scenario);
    let notices = alerts.len();
    let events = dedup_events(alerts);
    let n = events.len();
    let span = span(&events, |e| e.ts);
    let slack = 60_000;
    let shift = shift_for(span, slack);

    let mut worker = worker();
    let mut input = In::<AlertEvent>::new();
    let mut topo_in = In::<TopologyChange>::new();
    let probe = ProbeHandle::new();
    let teams = Rc::new(Cell::new(0usize));
    let t = teams.clone();
    worker.dataflow::<Time, _, _>(|scope| {
        let topology = scope.input_from(&mut topo_in);
        scope
            .input_from(&mut input)
            .enrich("service", topology, EPOCH)
            .inspect(move |e| t.set(t.get() + e.team.is_some() as usize))
            .probe_with(&probe);
    });
    topo_in.send_batch(&mut topo.clone());

    let mut round = 0i64;
    let mut feed = |worker: &mut _| -> Duration {
        // Untimed: this iteration's rows, moved later in event time.
        let offset = round * shift;
        round += 1;
        let batches = schedule(events.iter().map(|e| shift_event(e, offset)).collect(), 8192, |e: &AlertEvent| e.ts);
        let end = epoch(span.1 + offset + slack);
        let start = Instant::now();
        run(worker, &mut input, batches, end, &probe, |t| topo_in.advance_to(t));
        start.elapsed()
    };
    feed(&mut worker);
    eprintln!("enrich: {notices} notices → {n} lifecycle rows in, {} with a team, per iteration", teams.get());
    assert!(teams.get() > n / 2, "rows were enriched");

    steady_state(c, "enrich", format!("storm_{}k_rows_of_{}k_notices", n / 1000, notices / 1000), n as u64, || feed(&mut worker));
}

criterion_group!(benches, bench);
criterion_main!(benches);
