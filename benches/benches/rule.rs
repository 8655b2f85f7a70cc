//! A rule alone, on one worker, in steady state: the rows of W1's per-minute aggregate (10,000
//! hosts, 1-minute tumbling windows of count, max and avg; ≈ 0.17 M rows per 1 M points) judged
//! by `avg > 60 and count >= 3` for 1 m, so about a fifth of the windows hold and groups keep
//! moving between inactive, pending and firing: exchange, event-time ordering per group, the
//! missing-window timers and every firing and resolved alert emitted. Compared with the window
//! target (≥ 10 M points/s per worker): at ≈ 6 points per row, a rule keeps up with the window
//! aggregate at ≥ 1.7 M rows/s.
//!
//! One worker and one dataflow live across iterations; each iteration feeds the rows again,
//! later in event time than the last, and is timed from the first row in until the last alert
//! is out (every group resolved). Running the aggregate to make the rows and building the
//! batches is not timed.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use alertflow_benches::harness::{In, epoch, run, run_once, schedule, shift_for, span, steady_state, worker};
use alertflow_benches::w1_points;
use alertflow_model::Status;
use alertflow_model::window::{AggFn, WindowRow};
use alertflow_operators::{Aggregate, AggregateConfig, AggregateExt, Rule, RuleConfig, RuleExt, Time, WindowSpec};
use criterion::{Criterion, criterion_group, criterion_main};
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::{Input, Inspect, Probe};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let cfg = AggregateConfig {
        name: "per_minute".into(),
        input: "points".into(),
        window: WindowSpec::Tumbling { size: "1m".parse().unwrap() },
        group_by: vec!["host".into()],
        functions: vec![AggFn::Count, AggFn::Max, AggFn::Avg],
        state: alertflow_operators::StateConfig::default(),
    };
    let agg = Aggregate::with_config(&cfg, "1s".parse().unwrap()).unwrap();
    let rule = Rule::with_config(
        &RuleConfig {
            name: "HighLoad".into(),
            input: "per_minute".into(),
            metrics: Vec::new(),
            when: "avg > 60 and count >= 3".into(),
            for_duration: "1m".parse().unwrap(),
            severity: "warning".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::from([("summary".to_string(), "load is high".to_string())]),
        },
        &agg,
        0,
        "1s".parse().unwrap(),
    )
    .unwrap();

    // Untimed: the window rows, in window order.
    let collected = Rc::new(RefCell::new(Vec::new()));
    let o = collected.clone();
    let a = agg.clone();
    run_once(
        w1_points(10_000, 1_000_000, 100_000),
        |m| m.ts,
        move |s| {
            s.aggregate(&a).inspect(move |r: &WindowRow| o.borrow_mut().push(r.clone()));
        },
    );
    let mut rows = std::mem::take(&mut *collected.borrow_mut());
    rows.sort_by_key(|r| r.end);
    let n = rows.len();
    let span = span(&rows, |r| r.end - 1);
    // Every group resolves at the end of the window after its last one.
    let slack = 3 * 60_000;
    let shift = shift_for(span, slack);

    let mut worker = worker();
    let mut input = In::<WindowRow>::new();
    let probe = ProbeHandle::new();
    let (firing, resolved) = (Rc::new(Cell::new(0usize)), Rc::new(Cell::new(0usize)));
    let (f, r) = (firing.clone(), resolved.clone());
    worker.dataflow::<Time, _, _>(|scope| {
        scope
            .input_from(&mut input)
            .rule(&rule)
            .inspect(move |a| match a.status {
                Status::Firing => f.set(f.get() + 1),
                Status::Resolved => r.set(r.get() + 1),
            })
            .probe_with(&probe);
    });

    let mut round = 0i64;
    let mut feed = |worker: &mut _| -> Duration {
        // Untimed: this iteration's rows, moved later in event time.
        let offset = round * shift;
        round += 1;
        let moved = rows.iter().map(|r| WindowRow { start: r.start + offset, end: r.end + offset, ..r.clone() }).collect();
        let batches = schedule(moved, 8192, |r: &WindowRow| r.end - 1);
        let end = epoch(span.1 + offset + slack);
        let start = Instant::now();
        run(worker, &mut input, batches, end, &probe, |_| {});
        start.elapsed()
    };
    feed(&mut worker);
    eprintln!("rule: {n} window rows → {} firing and {} resolved alerts per iteration", firing.get(), resolved.get());
    assert!(firing.get() > 1_000 && resolved.get() > 1_000, "alerts were raised");

    steady_state(c, "rule", format!("avg_gt_60_for_1m_{}k_rows", n / 1000), n as u64, || feed(&mut worker));
}

criterion_group!(benches, bench);
criterion_main!(benches);
