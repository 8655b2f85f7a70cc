//! Shared inputs of the criterion benches (`cargo bench -p alertflow-benches`).

use alertflow_model::{Metric, Series};

/// W1-shaped points: `series` series reporting every 10 s from 2026-01-01, in rounds, with up
/// to ±2 s of disorder; `per_part` points per input partition.
pub fn w1_points(series: usize, points: usize, per_part: usize) -> Vec<Metric> {
    let all: Vec<Series> = (0..series)
        .map(|i| Series::new(&format!("t{}", i % 4), ["cpu", "mem", "disk", "net"][i % 4], &[("host", &format!("h{i:05}"))]))
        .collect();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..points)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let round = (i / series) as i64;
            let s = i % series;
            Metric {
                series: all[s].clone(),
                ts: 1_767_225_600_000 + round * 10_000 + (s as i64 * 10_000 / series as i64) + (x % 4001) as i64 - 2000,
                value: (x % 100_000) as f64 / 1000.0,
                part: (i / per_part) as u32,
                pos: (i % per_part) as u64,
                late: false,
            }
        })
        .collect()
}

/// Helpers of the operator benches: one worker on this thread, inputs fed the way the file
/// source feeds them, and a storm-heavy alert stream from the generator.
pub mod harness {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::Arc;
    use std::time::Instant;

    use alertflow_model::alert::AlertEvent;
    use alertflow_model::decode::AlertDecoder;
    use alertflow_model::topology::{Topology, TopologyChange};
    use alertflow_model::{Alert, DurationMs};
    use alertflow_operators::{Dedup, DedupConfig, DedupExt, StormMembers, Suppress, SuppressConfig, SuppressExt, Time};
    use alertflow_tools::alertgen::{AlertFormat, AlertGen, Scenario, scenario};
    use timely::communication::Allocator;
    use timely::communication::allocator::thread::Thread;
    use timely::container::CapacityContainerBuilder;
    use timely::dataflow::operators::{Input, Inspect};
    use timely::dataflow::{InputHandle, ProbeHandle, Stream};

    /// A timely worker on this thread.
    pub type Worker = timely::worker::Worker;

    /// An input of vectors of `T`.
    pub type In<T> = InputHandle<Time, CapacityContainerBuilder<Vec<T>>>;

    /// The pipeline epoch of every bench (the engine's default).
    pub const EPOCH: i64 = 1000;

    /// One worker, alone (no exchange with other threads).
    /// Benchmarks one steady-state operator: `feed` runs one iteration on the long-lived
    /// worker and returns its time, `elements` records per iteration; ten flat samples.
    pub fn steady_state(
        c: &mut criterion::Criterion,
        group: &str,
        id: String,
        elements: u64,
        mut feed: impl FnMut() -> std::time::Duration,
    ) {
        let mut g = c.benchmark_group(group);
        g.throughput(criterion::Throughput::Elements(elements));
        g.sample_size(10);
        g.sampling_mode(criterion::SamplingMode::Flat);
        g.measurement_time(std::time::Duration::from_secs(10));
        g.bench_function(id, |b| b.iter_custom(|iters| (0..iters).map(|_| feed()).sum()));
        g.finish();
    }

    pub fn worker() -> Worker {
        Worker::new(timely::WorkerConfig::default(), Allocator::Thread(Thread::default()), Some(Instant::now()))
    }

    /// The epoch (timely time) of event time `ts`.
    pub fn epoch(ts: i64) -> Time {
        let ts = ts.max(0);
        (ts - ts % EPOCH) as Time
    }

    /// `records` (in input order) cut into batches of `size`, each with the time to send it at:
    /// the epoch of the least event time of this batch and every later one, so the input never
    /// moves past a record it has yet to send (as the file source holds its watermark).
    pub fn schedule<T>(records: Vec<T>, size: usize, ts: impl Fn(&T) -> i64) -> Vec<(Time, Vec<T>)> {
        let mut batches: Vec<(Time, Vec<T>)> = Vec::new();
        let mut it = records.into_iter().peekable();
        while it.peek().is_some() {
            let b: Vec<T> = it.by_ref().take(size).collect();
            let low = b.iter().map(&ts).min().unwrap_or(0);
            batches.push((low as Time, b));
        }
        let mut min = i64::MAX;
        for (t, _) in batches.iter_mut().rev() {
            min = min.min(*t as i64);
            *t = epoch(min);
        }
        batches
    }

    /// Sends the scheduled `batches`, stepping the worker after each; `also(t)` is called before
    /// the input advances to `t`, to feed or advance other inputs. Then every input moves to
    /// `end` and the worker steps until `probe` has passed it.
    pub fn run<T: Clone + 'static>(
        worker: &mut Worker,
        input: &mut In<T>,
        batches: Vec<(Time, Vec<T>)>,
        end: Time,
        probe: &ProbeHandle<Time>,
        mut also: impl FnMut(Time),
    ) {
        for (t, mut b) in batches {
            if t > *input.time() {
                also(t);
                input.advance_to(t);
            }
            input.send_batch(&mut b);
            worker.step();
        }
        also(end);
        input.advance_to(end);
        while probe.less_than(&end) {
            worker.step();
        }
    }

    /// Runs a dataflow over `records` once, to the end (untimed set-up: the inputs of operators
    /// that sit behind others in the pipeline). `build` collects what it needs.
    pub fn run_once<T: Clone + 'static>(records: Vec<T>, ts: impl Fn(&T) -> i64, build: impl for<'s> FnOnce(Stream<'s, Time, Vec<T>>)) {
        let mut worker = worker();
        let mut input = In::<T>::new();
        worker.dataflow::<Time, _, _>(|scope| build(scope.input_from(&mut input)));
        for (t, mut b) in schedule(records, 8192, ts) {
            if t > *input.time() {
                input.advance_to(t);
            }
            input.send_batch(&mut b);
            worker.step();
        }
        drop(input);
        while worker.step_or_park(None) {}
    }

    /// The storm-heavy alert scenario of the alert operator benches: 16 incidents in 3 tenants
    /// over 2 hours, 2 of them storms of 10,000 distinct alerts (every pod of every service
    /// depending on a failing data store), re-sent every 30 s, plus flapping, expiry and
    /// background noise.
    pub fn storm_scenario() -> Scenario {
        let cfg = AlertGen { incidents: 16, storm_size: Some(10_000), duration_ms: 2 * 3_600_000, ..AlertGen::default() };
        scenario(&cfg).expect("valid scenario")
    }

    /// The scenario's alert file in `format`.
    pub fn alert_file(s: &Scenario, format: AlertFormat) -> Vec<u8> {
        let mut buf = Vec::new();
        s.write_alerts(format, &mut buf).expect("in memory");
        buf
    }

    /// The scenario's notices, decoded from NDJSON in arrival order (one partition).
    pub fn storm_alerts(s: &Scenario) -> Vec<Alert> {
        let file = alert_file(s, AlertFormat::Ndjson);
        let mut dec = AlertDecoder::new();
        file.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
            .map(|(i, l)| dec.ndjson(l, 0, i as u64).expect("generated lines decode"))
            .collect()
    }

    /// The scenario's topology, every row an insertion at time 0.
    pub fn topology(s: &Scenario) -> Vec<TopologyChange> {
        let mut csv = Vec::new();
        s.topology.write_csv(&mut csv).expect("in memory");
        Topology::parse_csv(std::str::from_utf8(&csv).expect("UTF-8")).expect("generated topology parses").changes(0)
    }

    /// `a`, `offset` ms later in event time.
    pub fn shift_alert(a: &Alert, offset: i64) -> Alert {
        Alert { ts: a.ts + offset, starts_at: a.starts_at + offset, ends_at: a.ends_at.map(|e| e + offset), ..a.clone() }
    }

    /// `e`, `offset` ms later in event time (its revision moved along with its start).
    pub fn shift_event(e: &AlertEvent, offset: i64) -> AlertEvent {
        AlertEvent {
            ts: e.ts + offset,
            starts_at: e.starts_at + offset,
            ends_at: e.ends_at.map(|t| t + offset),
            last_seen: e.last_seen + offset,
            revision: e.revision + offset.max(0) as u64 * 1000,
            ..e.clone()
        }
    }

    /// Event-time span of an input: (least, greatest).
    pub fn span<T>(records: &[T], ts: impl Fn(&T) -> i64) -> (i64, i64) {
        records.iter().fold((i64::MAX, i64::MIN), |(lo, hi), r| (lo.min(ts(r)), hi.max(ts(r))))
    }

    /// How far each iteration moves its input: past `end_slack` after the input's span, in
    /// whole minutes, so every iteration starts after the last one has closed everything.
    pub fn shift_for(span: (i64, i64), end_slack: i64) -> i64 {
        ((span.1 - span.0 + end_slack) / 60_000 + 2) * 60_000
    }

    /// Dedup's lifecycle rows for `alerts` (default config), in event-time order: the input of
    /// the operators after dedup.
    pub fn dedup_events(alerts: Vec<Alert>) -> Vec<AlertEvent> {
        let out = Rc::new(RefCell::new(Vec::new()));
        let o = out.clone();
        run_once(
            alerts,
            |a| a.ts,
            move |s| {
                let op = Dedup::with_config(&DedupConfig::default(), DurationMs(EPOCH as u64)).expect("valid");
                s.dedup(&op, Arc::default()).inspect(move |e| o.borrow_mut().push(e.clone()));
            },
        );
        let mut v = std::mem::take(&mut *out.borrow_mut());
        v.sort_by_key(|e| e.ts);
        v
    }

    /// Suppress's outputs for `alerts` after dedup (default configs), in event-time order: the
    /// lifecycle rows (with `suppressed`, `storm_id`) and the storm memberships, correlate's
    /// inputs.
    pub fn suppressed_events(alerts: Vec<Alert>) -> (Vec<AlertEvent>, Vec<StormMembers>) {
        let events = Rc::new(RefCell::new(Vec::new()));
        let members = Rc::new(RefCell::new(Vec::new()));
        let (e2, m2) = (events.clone(), members.clone());
        run_once(
            alerts,
            |a| a.ts,
            move |s| {
                let epoch = DurationMs(EPOCH as u64);
                let dedup = Dedup::with_config(&DedupConfig::default(), epoch).expect("valid");
                let suppress = Suppress::with_config(&SuppressConfig::default(), epoch).expect("valid");
                let out = s.dedup(&dedup, Arc::default()).suppress(&suppress);
                out.events.inspect(move |e| e2.borrow_mut().push(e.clone()));
                out.members.inspect(move |m| m2.borrow_mut().push(m.clone()));
            },
        );
        let mut e = std::mem::take(&mut *events.borrow_mut());
        let mut m = std::mem::take(&mut *members.borrow_mut());
        e.sort_by_key(|e| e.ts);
        m.sort_by_key(|m| m.ts);
        (e, m)
    }
}
