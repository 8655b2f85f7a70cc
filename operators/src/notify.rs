//! Notify: the alert chain's lifecycle rows and storm rows become notifications, routed,
//! grouped, inhibited and silenced as Alertmanager does it, but in event time
//! ([`alertflow_notify::notifier`] holds the logic; this file is its place in the dataflow).
//!
//! Rows go to a worker by tenant (inhibition and groups never cross tenants), are handled in
//! event-time order with storm rows before alert rows of the same instant, and a group's tick
//! at `t` runs once the frontier has passed `t`, after every row at `t`. So the notifications
//! depend only on the data: the same on replay, after a restore, and at any worker count.
//! A notification is emitted at the epoch of its tick.

use std::collections::BTreeMap;
use std::sync::Arc;

use alertflow_model::alert::{AlertEvent, StormRow};
use alertflow_model::time::DurationMs;
use alertflow_notify::{Message, Notifier, NotifyInput, NotifyPlan, NotifyState};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;

use crate::Time;
use crate::checkpoint::Saver;
use crate::ordered::{Due, Ordered, Timed};
use crate::placement;
use crate::stats::{OperatorStats, StateGauge};

/// A validated notify operator.
#[derive(Clone, Debug)]
pub struct Notify {
    plan: Arc<NotifyPlan>,
    epoch: i64,
    /// Counters of all workers' instances: rows in, notifications out, alerts and groups held.
    stats: Arc<OperatorStats>,
}

impl Notify {
    /// The operator of a validated `[notify]` section.
    pub fn new(plan: NotifyPlan, epoch: DurationMs) -> Notify {
        Notify { plan: Arc::new(plan), epoch: epoch.millis().max(1) as i64, stats: Arc::default() }
    }

    /// The counters all workers' instances report into.
    pub fn stats(&self) -> &Arc<OperatorStats> {
        &self.stats
    }

    /// The validated section.
    pub fn plan(&self) -> &NotifyPlan {
        &self.plan
    }
}

impl Timed for NotifyInput {
    fn ts(&self) -> i64 {
        NotifyInput::ts(self)
    }
    fn origin(&self) -> (u32, u64) {
        match self {
            NotifyInput::Event(e) => (e.part, e.pos),
            NotifyInput::Storm(s) => (u32::MAX, s.storm_id),
            NotifyInput::Control { seq, .. } => (u32::MAX - 1, *seq),
        }
    }
    /// Control records first, then a storm's row before the alert rows of its instant (the
    /// member row that opened it then finds it).
    fn rank(&self) -> u8 {
        match self {
            NotifyInput::Control { .. } => 0,
            NotifyInput::Storm(_) => 1,
            NotifyInput::Event(_) => 2,
        }
    }
}

/// Builds the notify operator.
pub trait NotifyExt<'s> {
    /// The notifications of lifecycle rows (after correlate) and storm rows. `controls` are
    /// [`NotifyInput::Control`] records, one copy per worker (each goes to its `worker`).
    fn notify(
        self,
        storms: Stream<'s, Time, Vec<StormRow>>,
        controls: Stream<'s, Time, Vec<NotifyInput>>,
        op: &Notify,
    ) -> Stream<'s, Time, Vec<Message>>;
}

impl<'s> NotifyExt<'s> for Stream<'s, Time, Vec<AlertEvent>> {
    fn notify(
        self,
        storms: Stream<'s, Time, Vec<StormRow>>,
        controls: Stream<'s, Time, Vec<NotifyInput>>,
        op: &Notify,
    ) -> Stream<'s, Time, Vec<Message>> {
        let op = op.clone();
        let worker = self.scope().index();
        let peers = self.scope().peers();
        let rows = self.map(NotifyInput::Event).concat(storms.map(NotifyInput::Storm)).concat(controls);
        rows.unary_frontier::<CapacityContainerBuilder<Vec<Message>>, _, _, _>(
            // By tenant, on the tenant's worker (`placement`); a control record to the worker
            // it names (the exchange takes a key below the worker count as the worker's index).
            Exchange::new(move |r: &NotifyInput| match r {
                NotifyInput::Control { worker, .. } => *worker as u64,
                _ => placement::tenant_worker(r.tenant(), peers),
            }),
            "notify",
            move |cap, _info| {
                let mut ordered: Ordered<NotifyInput> = Ordered::new(cap, op.epoch);
                let mut saver = Saver::register("notify", worker);
                let mut notifier = match saver.restore::<NotifyState>() {
                    Some(state) => {
                        ordered.restore_timers(state.timers().collect());
                        Notifier::restore(op.plan.clone(), state)
                    }
                    None => Notifier::new(op.plan.clone()),
                };
                let mut out: BTreeMap<Time, Vec<Message>> = BTreeMap::new();
                let (mut changes, mut sent) = (Vec::new(), Vec::new());
                let mut state = StateGauge::new(op.stats.clone());
                move |(input, frontier), output| {
                    input.for_each_stamp(|_cap, data| {
                        for batch in data {
                            op.stats.add_in(batch.len());
                            for r in batch.drain(..) {
                                ordered.push(r);
                            }
                        }
                    });
                    loop {
                        let until = saver.pending();
                        ordered.begin_until(frontier, until);
                        let input_done = ordered.limit().is_none();
                        while let Some(due) = ordered.next_due() {
                            match due {
                                Due::Record(r) => notifier.apply(&r, &mut changes),
                                Due::Timer(at, group) => {
                                    // Ended: the input is over and its last rows are handled.
                                    let ended = input_done && !ordered.has_records();
                                    notifier.tick(at, group, ended, &mut sent, &mut changes)
                                }
                            }
                            for (group, old, new) in changes.drain(..) {
                                if let Some(old) = old {
                                    ordered.cancel_timer(old, group);
                                }
                                if let Some(new) = new {
                                    ordered.set_timer(new, group);
                                }
                            }
                            for m in sent.drain(..) {
                                out.entry(ordered.epoch_of(m.at)).or_default().push(m);
                            }
                        }
                        for (t, mut msgs) in std::mem::take(&mut out) {
                            if let Some(cap) = ordered.cap_at(t as i64) {
                                op.stats.add_out(msgs.len());
                                output.session(&cap).give_container(&mut msgs);
                            }
                        }
                        if !saver.save_if_passed(frontier, until, || notifier.state()) {
                            break;
                        }
                    }
                    saver.finish_if_done(frontier, || notifier.state());
                    ordered.settle(frontier);
                    state.set(notifier.size());
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::correlate::{Correlate, CorrelateConfig};
    use crate::dedup::{Dedup, DedupConfig};
    use crate::suppress::{Suppress, SuppressConfig};
    use crate::testing::{Lcg, run_alert_chain_with};
    use alertflow_model::alert::{Alert, Status};
    use alertflow_notify::{NotifyConfig, TimerChange};

    const T0: i64 = 1_767_225_600_000;

    fn plan() -> NotifyPlan {
        let cfg: NotifyConfig = toml::from_str(
            r#"
            [route]
            receiver = "oncall"
            group_by = ["incident_id"]
            group_wait = "20s"
            group_interval = "2m"
            repeat_interval = "30m"
            [[route.routes]]
            matchers = ['severity="critical"']
            receiver = "pager"
            group_by = ["alertname", "cluster"]
            group_wait = "5s"
            group_interval = "1m"
            repeat_interval = "10m"
            continue = true
            [[inhibit_rules]]
            source_matchers = ['severity="critical"']
            target_matchers = ['severity="warning"']
            equal = ["cluster"]
            [[silences]]
            matchers = ['host="h3"']
            starts_at = "2026-01-01T00:10:00Z"
            ends_at = "2026-01-01T00:40:00Z"
            "#,
        )
        .unwrap();
        NotifyPlan::new(&cfg, &["oncall", "pager"], &["alertname".to_string()]).unwrap()
    }

    /// Seeded alerts over an hour with disorder (and late ones), flapping, two tenants, and
    /// one storm of `HostDown`.
    fn alerts(seed: u64) -> Vec<Alert> {
        let mut r = Lcg(seed);
        let mut v = Vec::new();
        let names = ["HostDown", "DiskFull", "Latency", "Errors"];
        let sev = ["critical", "warning", "info"];
        for i in 0..3000u64 {
            let ts = T0 + (r.next() % 3_600_000) as i64;
            let host = format!("h{}", r.next() % 12);
            let name = names[(r.next() % 4) as usize];
            let cluster = ["eu", "us"][(r.next() % 2) as usize];
            let status = if r.next().is_multiple_of(5) { Status::Resolved } else { Status::Firing };
            let mut a = crate::testing::alert(
                &[("alertname", name), ("host", &host), ("cluster", cluster), ("severity", sev[(r.next() % 3) as usize])],
                ts,
                status,
                (i % 4) as u32,
                i,
            );
            if r.next().is_multiple_of(3) {
                a.labels = alertflow_model::LabelSet::new("t1", &a.labels.labels().iter().map(|(k, v)| (&**k, &**v)).collect::<Vec<_>>());
            }
            v.push(a);
        }
        // The storm: 150 distinct hosts down within 20 s.
        for i in 0..150u64 {
            let ts = T0 + 1_800_000 + (r.next() % 20_000) as i64;
            v.push(crate::testing::alert(
                &[("alertname", "HostDown"), ("host", &format!("s{i}")), ("cluster", "eu"), ("severity", "critical")],
                ts,
                Status::Firing,
                (i % 4) as u32,
                10_000 + i,
            ));
        }
        // Arrival order: event time give or take 4 s, per partition (the harness feeds each
        // partition in order and holds its watermark 6 s back).
        v.sort_by_key(|a| a.ts + (Lcg(a.pos).next() % 4000) as i64);
        for (i, a) in v.iter_mut().enumerate() {
            a.pos = i as u64;
        }
        v
    }

    fn chain(workers: usize, seed: u64) -> (Vec<Message>, crate::testing::AlertOutputs) {
        let e = DurationMs(1000);
        let dedup = Dedup::with_config(&DedupConfig::default(), e).unwrap();
        let suppress = Suppress::with_config(&SuppressConfig::default(), e).unwrap();
        let correlate = Correlate::with_config(&CorrelateConfig::default(), e).unwrap();
        let out = run_alert_chain_with(workers, alerts(seed), vec![], dedup, suppress, correlate, Some(Notify::new(plan(), e)));
        let mut msgs = out.notifications.clone();
        msgs.sort_by(|a, b| (a.at, &a.group_key).cmp(&(b.at, &b.group_key)));
        (msgs, out)
    }

    /// The reference: the chain's rows sorted by event time (storms first at an instant), fed
    /// one by one to one notifier, the due ticks run between them by scanning for the
    /// earliest; then, the input over, every tick left.
    fn reference(out: &crate::testing::AlertOutputs) -> Vec<Message> {
        let mut rows: Vec<NotifyInput> = out.storms.iter().cloned().map(NotifyInput::Storm).collect();
        rows.extend(out.alerts.iter().cloned().map(NotifyInput::Event));
        rows.sort_by_key(|r| (r.ts(), r.rank(), r.origin()));
        let mut n = Notifier::new(Arc::new(plan()));
        let mut timers: BTreeSet<(i64, u64)> = BTreeSet::new();
        let mut msgs = Vec::new();
        let mut changes: Vec<TimerChange> = Vec::new();
        let apply = |timers: &mut BTreeSet<(i64, u64)>, changes: &mut Vec<TimerChange>| {
            for (g, old, new) in changes.drain(..) {
                old.map(|o| timers.remove(&(o, g)));
                new.map(|t| timers.insert((t, g)));
            }
        };
        for r in &rows {
            while let Some(&(at, g)) = timers.iter().find(|(at, _)| *at < r.ts()) {
                timers.remove(&(at, g));
                n.tick(at, g, false, &mut msgs, &mut changes);
                apply(&mut timers, &mut changes);
            }
            n.apply(r, &mut changes);
            apply(&mut timers, &mut changes);
        }
        while let Some((at, g)) = timers.pop_first() {
            n.tick(at, g, true, &mut msgs, &mut changes);
            apply(&mut timers, &mut changes);
        }
        msgs.sort_by(|a, b| (a.at, &a.group_key).cmp(&(b.at, &b.group_key)));
        msgs
    }

    /// Equal, or a panic naming the first difference (the whole lists are too long to read).
    fn same(a: &[Message], b: &[Message], what: &str) {
        if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
            panic!("{what}: notification {i} of {}/{} differs:\n{:?}\n{:?}", a.len(), b.len(), a[i], b[i]);
        }
        assert_eq!(a.len(), b.len(), "{what}: counts differ");
    }

    #[test]
    fn notifications_equal_a_sequential_reference_at_1_2_and_4_workers() {
        for seed in [1, 2, 3] {
            let (one, out) = chain(1, seed);
            same(&one, &reference(&out), &format!("seed {seed}: 1 worker against the reference"));
            assert!(one.len() > 50, "seed {seed}: only {} notifications", one.len());
            // The storm spoke once for its members: no notification names a suppressed one.
            let suppressed: BTreeSet<(u64, i64)> = out
                .alerts
                .iter()
                .filter(|e| e.suppressed && e.event == alertflow_model::alert::EventKind::Opened)
                .map(|e| (e.fingerprint(), e.starts_at))
                .collect();
            assert!(suppressed.len() >= 40 && !out.storms.is_empty(), "seed {seed}: no storm ({} suppressed)", suppressed.len());
            for a in one.iter().flat_map(|m| &m.alerts) {
                assert!(!suppressed.contains(&(a.fingerprint, a.starts_at)), "seed {seed}: a suppressed episode notified: {a:?}");
            }
            assert!(one.iter().flat_map(|m| &m.alerts).any(|a| a.labels.contains_key("storm_id")), "seed {seed}: the storm's alert");
            assert!(one.iter().any(|m| m.receiver == "pager") && one.iter().any(|m| m.receiver == "oncall"));
            for workers in [2, 4] {
                same(&chain(workers, seed).0, &one, &format!("seed {seed}: {workers} workers against 1"));
            }
        }
    }
}
