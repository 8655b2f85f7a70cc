//! Session windows: per group (tenant, metric name, `group_by` labels), a run of points with
//! less than `gap` between consecutive ones. The window is `[first point, last point + gap)`,
//! emitted once the frontier passes its end (no later point can extend it).
//!
//! Sessions depend on every point of a group in event-time order, so there is no
//! pre-aggregation: points go to the group's worker (the key is projected once per series and
//! cached) and are handled in `(ts, part, pos)` order by [`Ordered`], with a timer at each open
//! session's end. The accumulator folds points in that order, so results are bit-identical
//! whatever the worker count or batching. It is configured by [`crate::Aggregate`] with
//! `window = { type = "session", gap = "…" }`.

use std::collections::BTreeMap;

use alertflow_model::window::{Acc, GroupKey, WindowRow};
use alertflow_model::{Metric, Series};
use hashbrown::HashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;

use crate::Time;
use crate::aggregate::{Aggregate, Shape, key_of};
use crate::checkpoint::Saver;
use crate::ordered::{Due, Ordered, Timed};
use crate::stats::StateGauge;

/// A point with its group key, on its way to the group's worker.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct KeyedPoint {
    key: GroupKey,
    point: Metric,
}

impl Timed for KeyedPoint {
    fn ts(&self) -> i64 {
        self.point.ts
    }
    fn origin(&self) -> (u32, u64) {
        (self.point.part, self.point.pos)
    }
}

/// An open session of one group.
#[derive(serde::Serialize, serde::Deserialize)]
struct Open {
    key: GroupKey,
    start: i64,
    last: i64,
    acc: Acc,
}

/// A session operator's part of a checkpoint: timers, slots by group, slots, free slots.
type Saved = (std::collections::BTreeSet<(i64, u64)>, HashMap<GroupKey, u64>, Vec<Option<Open>>, Vec<u64>);

/// Builds session windows (called by [`crate::AggregateExt::aggregate`]).
pub(crate) fn sessions<'s>(points: Stream<'s, Time, Vec<Metric>>, op: &Aggregate) -> Stream<'s, Time, Vec<WindowRow>> {
    let Shape::Session { gap } = op.shape else { unreachable!("sessions() is called for session windows only") };
    let group_by = op.group_by.clone();
    let keyed = points.unary::<CapacityContainerBuilder<Vec<KeyedPoint>>, _, _, _>(
        Pipeline,
        &format!("aggregate:{}:key", op.name),
        move |_cap, _info| {
            // Series → group key, computed once per series (holding the series, so its address
            // cannot be reused while cached; bounded, see `key_of`).
            let mut keys: HashMap<usize, (Series, GroupKey)> = HashMap::new();
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut session = output.session(&cap);
                    for point in data.drain(..) {
                        let key = key_of(&mut keys, &point.series, &group_by).clone();
                        session.give(KeyedPoint { key, point });
                    }
                });
            }
        },
    );

    let (epoch, needs, stats) = (op.epoch, op.needs, op.stats.clone());
    let (worker, name) = (keyed.scope().index(), format!("aggregate:{}:session", op.name));
    let max_keys = op.limits.per_worker(keyed.scope().peers());
    keyed.unary_frontier::<CapacityContainerBuilder<Vec<WindowRow>>, _, _, _>(
        Exchange::new(|p: &KeyedPoint| p.key.stable_hash()),
        &format!("aggregate:{}:session", op.name),
        move |cap, _info| {
            let mut ordered: Ordered<KeyedPoint> = Ordered::new(cap, epoch);
            // Group → slot of its open session; the slot is the timer key.
            let mut slot_of: HashMap<GroupKey, u64> = HashMap::new();
            let mut slots: Vec<Option<Open>> = Vec::new();
            let mut free: Vec<u64> = Vec::new();
            let mut out: BTreeMap<i64, Vec<WindowRow>> = BTreeMap::new();
            let mut state = StateGauge::new(stats.clone());
            let mut saver = Saver::register(&name, worker);
            if let Some((timers, so, sl, fr)) = saver.restore::<Saved>() {
                ordered.restore_timers(timers);
                (slot_of, slots, free) = (so, sl, fr);
            }
            move |(input, frontier), output| {
                input.for_each(|_cap, data| {
                    stats.add_in(data.len());
                    stats.add_late(data.iter().filter(|p| p.point.late).count());
                    for p in data.drain(..) {
                        ordered.push(p);
                    }
                });
                loop {
                    let until = saver.pending();
                    ordered.begin_until(frontier, until);
                    while let Some(due) = ordered.next_due() {
                        match due {
                            Due::Record(KeyedPoint { key, point: m }) => {
                                // At the cap, a group with no open session is rejected (points
                                // come in event-time order, so which ones is deterministic).
                                if slot_of.len() >= max_keys && !slot_of.contains_key(&key) {
                                    stats.add_rejected(1);
                                    continue;
                                }
                                let slot = *slot_of.entry(key.clone()).or_insert_with(|| match free.pop() {
                                    Some(s) => s,
                                    None => {
                                        slots.push(None);
                                        slots.len() as u64 - 1
                                    }
                                });
                                let s = &mut slots[slot as usize];
                                match s {
                                    Some(open) if m.ts < open.last + gap => {
                                        ordered.cancel_timer(open.last + gap, slot);
                                        open.acc.add_point(m.value, m.ts, m.part, m.pos);
                                        open.last = open.last.max(m.ts);
                                        ordered.set_timer(open.last + gap, slot);
                                    }
                                    _ => {
                                        // A point at or after the end of the open session starts a
                                        // new one (the old one's timer is due at this very instant,
                                        // after the records of the instant).
                                        if let Some(old) = s.take() {
                                            ordered.cancel_timer(old.last + gap, slot);
                                            let end = old.last + gap;
                                            out.entry(end).or_default().push(WindowRow {
                                                start: old.start,
                                                end,
                                                key: old.key,
                                                acc: old.acc,
                                                revision: 0,
                                            });
                                        }
                                        let acc = Acc::start(needs, m.value, m.ts, m.part, m.pos);
                                        *s = Some(Open { key, start: m.ts, last: m.ts, acc });
                                        ordered.set_timer(m.ts + gap, slot);
                                    }
                                }
                            }
                            Due::Timer(at, slot) => {
                                if let Some(old) = slots[slot as usize].take() {
                                    debug_assert_eq!(at, old.last + gap);
                                    slot_of.remove(&old.key);
                                    free.push(slot);
                                    out.entry(at).or_default().push(WindowRow {
                                        start: old.start,
                                        end: at,
                                        key: old.key,
                                        acc: old.acc,
                                        revision: 0,
                                    });
                                }
                            }
                        }
                    }
                    for (end, mut rows) in std::mem::take(&mut out) {
                        // Emitted at the epoch of the session's last millisecond, like fixed windows.
                        if let Some(cap) = ordered.cap_at(end - 1) {
                            stats.add_out(rows.len());
                            output.session(&cap).give_container(&mut rows);
                        }
                    }
                    if !saver.save_if_passed(frontier, until, || (ordered.timer_list(), &slot_of, &slots, &free)) {
                        break;
                    }
                }
                saver.finish_if_done(frontier, || (ordered.timer_list(), &slot_of, &slots, &free));
                ordered.settle(frontier);
                state.set(slot_of.len());
            }
        },
    )
}
