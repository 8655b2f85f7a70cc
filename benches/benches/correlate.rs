//! Correlate alone, on one worker, in steady state: suppress's output for a storm-heavy alert
//! stream (16 incidents in 3 tenants over 2 h, 2 of them storms of 10,000 distinct alerts;
//! ≈ 0.4 M notices) — the lifecycle rows and the storm memberships — linked into incidents
//! with the generator's topology (storm, same-or-adjacent service and start-time links, default
//! config), exchange and the topology broadcast included, every row, `regrouped` row and
//! incident row emitted. Compared with the alert chain's target: 1 M alerts/s end to end on 2
//! cores (≥ 0.5 M notices/s per worker for the whole chain); the figure is given both per
//! lifecycle row in and per notice of the stream the rows came from.
//!
//! One worker and one dataflow live across iterations (the topology is sent once, before the
//! first); each iteration feeds all the rows and memberships again, later in event time than
//! the last, and is timed from the first row in until the last output is out (every incident
//! closed: the input moves 1 h past the last row). Running dedup and suppress to make the input
//! and building the batches is not timed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use alertflow_benches::harness::{
    In, epoch, run, schedule, shift_event, shift_for, span, steady_state, storm_alerts, storm_scenario, suppressed_events, topology, worker,
};
use alertflow_model::alert::AlertEvent;
use alertflow_operators::{Correlate, CorrelateConfig, CorrelateExt, StormMembers, Time, TopologyChange};
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
    let (events, members) = suppressed_events(alerts);
    let n = events.len();
    let span = span(&events, |e| e.ts);
    let slack = 3_600_000;
    let shift = shift_for(span, slack);
    let op = Correlate::with_config(&CorrelateConfig::default(), "1s".parse().unwrap()).unwrap();

    let mut worker = worker();
    let mut input = In::<AlertEvent>::new();
    let mut storm_in = In::<StormMembers>::new();
    let mut topo_in = In::<TopologyChange>::new();
    let probe = ProbeHandle::new();
    let (regrouped, incidents) = (Rc::new(Cell::new(0usize)), Rc::new(Cell::new(0usize)));
    let (r, i) = (regrouped.clone(), incidents.clone());
    worker.dataflow::<Time, _, _>(|scope| {
        let storms = scope.input_from(&mut storm_in);
        let topology = scope.input_from(&mut topo_in);
        let out = scope.input_from(&mut input).correlate(&op, storms, topology);
        out.events.inspect(move |e| r.set(r.get() + (e.event == alertflow_model::alert::EventKind::Regrouped) as usize)).probe_with(&probe);
        out.incidents.inspect(move |_| i.set(i.get() + 1)).probe_with(&probe);
    });
    topo_in.send_batch(&mut topo.clone());

    let mut round = 0i64;
    let mut feed = |worker: &mut _| -> Duration {
        // Untimed: this iteration's rows and memberships, moved later in event time.
        let offset = round * shift;
        round += 1;
        let batches = schedule(events.iter().map(|e| shift_event(e, offset)).collect(), 8192, |e: &AlertEvent| e.ts);
        let mut storms: std::collections::VecDeque<StormMembers> =
            members.iter().map(|m| StormMembers { ts: m.ts + offset, ..m.clone() }).collect();
        let end = epoch(span.1 + offset + slack);
        let start = Instant::now();
        // Memberships go in at their epoch, the topology input moves along.
        let mut also = |t: Time| {
            while storms.front().is_some_and(|m| epoch(m.ts) < t) {
                let m = storms.pop_front().expect("checked");
                if epoch(m.ts) > *storm_in.time() {
                    storm_in.advance_to(epoch(m.ts));
                }
                storm_in.send(m);
            }
            storm_in.advance_to(t);
            topo_in.advance_to(t);
        };
        run(worker, &mut input, batches, end, &probe, &mut also);
        start.elapsed()
    };
    feed(&mut worker);
    eprintln!(
        "correlate: {notices} notices → {n} lifecycle rows and {} storm memberships in, {} regrouped rows, {} incident rows per iteration",
        members.len(),
        regrouped.get(),
        incidents.get()
    );
    assert!(incidents.get() > 10, "incidents were formed");

    steady_state(c, "correlate", format!("storm_{}k_rows_of_{}k_notices", n / 1000, notices / 1000), n as u64, || feed(&mut worker));
}

criterion_group!(benches, bench);
criterion_main!(benches);
