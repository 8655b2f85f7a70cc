//! Test harness: runs an operator on 1..n workers over a fixed input, fed the way the file
//! source feeds it (partitions spread over workers by index, each in order, the input's time
//! held back behind the data's watermark).

use std::sync::{Arc, Mutex};

use alertflow_model::Metric;
use timely::container::CapacityContainerBuilder;

use crate::ordered::Timed;
use timely::dataflow::operators::{Input, Inspect, Probe};
use timely::dataflow::{InputHandle, Stream};

use crate::Time;

/// A small deterministic generator (SplitMix64).
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// [`run_records`] for metric points.
pub fn run_metrics<R, F>(workers: usize, points: Vec<Metric>, batch: usize, build: F) -> Vec<R>
where
    R: Clone + Send + 'static,
    F: for<'s> Fn(Stream<'s, Time, Vec<Metric>>) -> Stream<'s, Time, Vec<R>> + Send + Sync + 'static,
{
    run_records(workers, points, batch, build)
}

/// Runs `build` on `workers` threads over `records` and returns every output record.
/// Partition `p` goes to worker `p % workers`; after every `batch` records a worker advances
/// its input to its watermark (max event time seen − 6 s, rounded to the 1 s epoch): inputs may
/// hold up to 6 s of disorder.
pub fn run_records<T, R, F>(workers: usize, records: Vec<T>, batch: usize, build: F) -> Vec<R>
where
    T: Timed + Clone + Send + Sync + 'static,
    R: Clone + Send + 'static,
    F: for<'s> Fn(Stream<'s, Time, Vec<T>>) -> Stream<'s, Time, Vec<R>> + Send + Sync + 'static,
{
    run_fed(workers, records, build, move |mine| {
        // Each record goes at the time the input had reached when it was sent.
        let (mut now, mut max_seen) = (0 as Time, 0i64);
        let mut timed = Vec::with_capacity(mine.len());
        for chunk in mine.chunks(batch.max(1)) {
            for m in chunk {
                max_seen = max_seen.max(m.ts());
                timed.push((now, *m));
            }
            let t = (max_seen - 6000).max(0);
            now = now.max((t - t % 1000) as Time);
        }
        timed
    })
}

/// Runs `build` on `workers` threads over records with explicit timely times (as a source
/// stamps them: late records at their partition's watermark). Partition `p` goes to worker
/// `p % workers`, which sends its records in time order.
pub fn run_stamped<R, F>(workers: usize, records: Vec<(Time, Metric)>, build: F) -> Vec<R>
where
    R: Clone + Send + 'static,
    F: for<'s> Fn(Stream<'s, Time, Vec<Metric>>) -> Stream<'s, Time, Vec<R>> + Send + Sync + 'static,
{
    let (times, records): (Vec<Time>, Vec<Metric>) = records.into_iter().unzip();
    let at: std::collections::HashMap<(u32, u64), Time> = records.iter().zip(times).map(|(m, t)| ((m.part, m.pos), t)).collect();
    run_fed(workers, records, build, move |mine| {
        let mut timed: Vec<(Time, &Metric)> = mine.iter().map(|m| (at[&(m.part, m.pos)], *m)).collect();
        timed.sort_by_key(|(t, _)| *t);
        timed
    })
}

/// The harness under [`run_records`] and [`run_stamped`]: each worker takes the records of
/// its partitions (`part % workers`), `schedule` gives each the time to send it at
/// (non-decreasing), and every output record is collected.
fn run_fed<T, R, F, S>(workers: usize, records: Vec<T>, build: F, schedule: S) -> Vec<R>
where
    T: Timed + Clone + Send + Sync + 'static,
    R: Clone + Send + 'static,
    F: for<'s> Fn(Stream<'s, Time, Vec<T>>) -> Stream<'s, Time, Vec<R>> + Send + Sync + 'static,
    S: for<'a> Fn(&[&'a T]) -> Vec<(Time, &'a T)> + Send + Sync + 'static,
{
    let records = Arc::new(records);
    let out = Arc::new(Mutex::new(Vec::new()));
    let out2 = out.clone();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut input = InputHandle::<Time, CapacityContainerBuilder<Vec<T>>>::new();
        let out = out2.clone();
        worker.dataflow::<Time, _, _>(|scope| {
            let s = scope.input_from(&mut input);
            build(s).inspect(move |r: &R| out.lock().expect("poisoned").push(r.clone()));
        });
        let mine: Vec<&T> = records.iter().filter(|m| m.origin().0 as usize % peers == index).collect();
        for (i, (t, m)) in schedule(&mine).into_iter().enumerate() {
            if t > *input.time() {
                input.advance_to(t);
            }
            input.send(m.clone());
            if i % 1000 == 999 {
                worker.step();
            }
        }
        drop(input);
        while worker.has_dataflows() {
            worker.step_or_park(None);
        }
    })
    .expect("timely failed to start");
    drop(guards.join());
    std::mem::take(&mut *out.lock().expect("poisoned"))
}

/// What the alert chain produced.
#[derive(Default, Clone)]
pub struct AlertOutputs {
    /// Rows of the `alerts` table (after correlate).
    pub alerts: Vec<alertflow_model::alert::AlertEvent>,
    /// What correlate received (after suppress), for oracles.
    pub suppressed: Vec<alertflow_model::alert::AlertEvent>,
    /// Storm rows.
    pub storms: Vec<alertflow_model::alert::StormRow>,
    /// Incident rows.
    pub incidents: Vec<alertflow_model::alert::IncidentRow>,
    /// Notifications (with [`run_alert_chain_with`] and a notify operator).
    pub notifications: Vec<alertflow_notify::Message>,
    /// Dedup's counters (suppress and correlate keep theirs in their configs).
    pub dedup_stats: Arc<crate::OperatorStats>,
    /// The state sizes of dedup, suppress and correlate once the input's last watermark was
    /// processed, before the input closed (the largest any worker saw).
    pub peak_state: [u64; 3],
}

/// Runs dedup → suppress → correlate on `workers` threads. Alerts are fed like
/// [`run_records`] feeds records; topology changes are fed by worker 0 once the alert input's
/// watermark reaches their time (the initial topology at time 0).
pub fn run_alert_chain(
    workers: usize,
    alerts: Vec<alertflow_model::Alert>,
    topology: Vec<crate::correlate::TopologyChange>,
    dedup: crate::dedup::Dedup,
    suppress: crate::suppress::Suppress,
    correlate: crate::correlate::Correlate,
) -> AlertOutputs {
    run_alert_chain_with(workers, alerts, topology, dedup, suppress, correlate, None)
}

/// [`run_alert_chain`], then the notify operator on the alerts and storm rows when given.
pub fn run_alert_chain_with(
    workers: usize,
    alerts: Vec<alertflow_model::Alert>,
    topology: Vec<crate::correlate::TopologyChange>,
    dedup: crate::dedup::Dedup,
    suppress: crate::suppress::Suppress,
    correlate: crate::correlate::Correlate,
    notify: Option<crate::notify::Notify>,
) -> AlertOutputs {
    use crate::correlate::CorrelateExt;
    use crate::dedup::DedupExt;
    use crate::notify::NotifyExt;
    use crate::suppress::SuppressExt;
    let alerts = Arc::new(alerts);
    let topology = Arc::new(topology);
    let out = Arc::new(Mutex::new(AlertOutputs::default()));
    let dedup_stats = out.lock().expect("poisoned").dedup_stats.clone();
    let out2 = out.clone();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut input = InputHandle::<Time, CapacityContainerBuilder<Vec<alertflow_model::Alert>>>::new();
        let mut topo_in = InputHandle::<Time, CapacityContainerBuilder<Vec<crate::correlate::TopologyChange>>>::new();
        let probe = timely::dataflow::ProbeHandle::new();
        let (o1, o2, o3, o4, o5) = (out2.clone(), out2.clone(), out2.clone(), out2.clone(), out2.clone());
        let (dedup, suppress, correlate, notify) = (dedup.clone(), suppress.clone(), correlate.clone(), notify.clone());
        let held = [dedup_stats.clone(), suppress.stats().clone(), correlate.stats().clone()];
        worker.dataflow::<Time, _, _>(|scope| {
            let a = scope.input_from(&mut input);
            let t = scope.input_from(&mut topo_in);
            let events = a.dedup(&dedup, dedup_stats.clone());
            let s = events.suppress(&suppress);
            let storms = s.storms.inspect(move |r| o3.lock().expect("poisoned").storms.push(r.clone()));
            let sup = s.events.inspect(move |r| o2.lock().expect("poisoned").suppressed.push(r.clone()));
            let c = sup.correlate(&correlate, s.members, t);
            let events = c.events.inspect(move |r| o1.lock().expect("poisoned").alerts.push(r.clone())).probe_with(&probe);
            c.incidents.inspect(move |r| o4.lock().expect("poisoned").incidents.push(r.clone()));
            if let Some(notify) = &notify {
                let none = timely::dataflow::operators::generic::operator::empty(scope);
                events.notify(storms, none, notify).inspect(move |m| o5.lock().expect("poisoned").notifications.push(m.clone()));
            }
        });
        let mine: Vec<&alertflow_model::Alert> = alerts.iter().filter(|a| a.part as usize % peers == index).collect();
        let mut pending_topo: std::collections::VecDeque<&crate::correlate::TopologyChange> =
            if index == 0 { topology.iter().collect() } else { Default::default() };
        let mut max_seen = 0i64;
        let mut feed_topo = |topo_in: &mut InputHandle<Time, CapacityContainerBuilder<Vec<crate::correlate::TopologyChange>>>,
                             upto: i64| {
            while pending_topo.front().is_some_and(|c| c.ts <= upto) {
                let c = pending_topo.pop_front().expect("checked");
                let t = (c.ts.max(0) - c.ts.max(0) % 1000) as Time;
                if t > *topo_in.time() {
                    topo_in.advance_to(t);
                }
                topo_in.send(c.clone());
            }
        };
        // The least event time still to be sent from each position on: the input never moves
        // past a record it has yet to send (a record stamped later than its own epoch would be
        // handled out of event-time order; the engine's source makes such records dead letters).
        let mut unsent_min = vec![i64::MAX; mine.len() + 1];
        for i in (0..mine.len()).rev() {
            unsent_min[i] = unsent_min[i + 1].min(mine[i].ts);
        }
        for (c, chunk) in mine.chunks(300).enumerate() {
            for a in chunk {
                max_seen = max_seen.max(a.ts);
                input.send((*a).clone());
            }
            let t = (max_seen - 6000).max(0).min(unsent_min[((c + 1) * 300).min(mine.len())].max(0));
            let t = (t - t % 1000) as Time;
            feed_topo(&mut topo_in, t as i64);
            if t > *input.time() {
                input.advance_to(t);
            }
            if t > *topo_in.time() {
                topo_in.advance_to(t);
            }
            worker.step();
        }
        feed_topo(&mut topo_in, i64::MAX);
        // Everything up to the last watermark processed on every worker, the rest still held:
        // the operators' state now is what they keep while running.
        while probe.less_than(input.time()) {
            worker.step();
        }
        {
            let mut o = out2.lock().expect("poisoned");
            for (peak, stats) in o.peak_state.iter_mut().zip(&held) {
                *peak = (*peak).max(stats.state());
            }
        }
        drop(input);
        drop(topo_in);
        while worker.has_dataflows() {
            worker.step_or_park(None);
        }
    })
    .expect("timely failed to start");
    drop(guards.join());
    std::mem::take(&mut *out.lock().expect("poisoned"))
}

/// A firing-or-resolved test alert of tenant `t0` with `labels`, its event time also its
/// start, at input position (`part`, `pos`).
pub fn alert(labels: &[(&str, &str)], ts: i64, status: alertflow_model::Status, part: u32, pos: u64) -> alertflow_model::Alert {
    alertflow_model::Alert {
        labels: alertflow_model::LabelSet::new("t0", labels),
        annotations: alertflow_model::LabelSet::new("", &[]),
        status,
        starts_at: ts,
        ends_at: None,
        ts,
        generator_url: None,
        part,
        pos,
    }
}
