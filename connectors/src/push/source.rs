//! The push source operator: each worker takes queued pushes into the dataflow at their
//! event-time epoch, acknowledges them, and holds its capability at the source's watermark.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use alertflow_model::dead_letter::{DeadLetter, LATE};
use alertflow_model::time::{DurationMs, floor_to, wall_now};
use alertflow_model::{Alert, Metric};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};

use super::{Batch, PushQueue};
use crate::file::source::Work;
use crate::{Failure, Time};

/// Records taken per activation before the source yields to the rest of the dataflow.
const RECORDS_PER_ACTIVATION: usize = 64 * 1024;
/// How often a worker wakes without pushes (to move the watermark with the wall clock).
const IDLE_WAKE: Duration = Duration::from_millis(100);

/// What a push source emits.
pub trait PushRecord: Clone + Send + 'static {
    /// Stamped with its receive time (alerts), rather than carrying its own (samples).
    const STAMPED: bool;
    /// Event time.
    fn ts(&self) -> i64;
    /// Moves a stamped record's event time (to the worker's capability, if it passed it).
    fn set_ts(&mut self, ts: i64);
    /// Marks a record accepted late (policy `update`).
    fn mark_late(&mut self);
    /// Where the record came from in its push.
    fn pos(&self) -> u64;
    /// The record as text, for a dead letter.
    fn raw(&self) -> Vec<u8>;
}

impl PushRecord for Alert {
    const STAMPED: bool = true;
    fn ts(&self) -> i64 {
        self.ts
    }
    fn set_ts(&mut self, ts: i64) {
        self.ts = ts;
    }
    fn mark_late(&mut self) {}
    fn pos(&self) -> u64 {
        self.pos
    }
    fn raw(&self) -> Vec<u8> {
        self.labels.to_json().into_bytes()
    }
}

impl PushRecord for Metric {
    const STAMPED: bool = false;
    fn ts(&self) -> i64 {
        self.ts
    }
    fn set_ts(&mut self, ts: i64) {
        self.ts = ts;
    }
    fn mark_late(&mut self) {
        self.late = true;
    }
    fn pos(&self) -> u64 {
        self.pos
    }
    fn raw(&self) -> Vec<u8> {
        format!("{}{} {} @{}", self.series.name(), self.series.labels_json(), self.value, self.ts).into_bytes()
    }
}

/// Builds the push source on this worker: the records and the dead letters.
pub fn push_source<'s, R: PushRecord>(
    scope: Scope<'s, Time>,
    queue: Arc<PushQueue<R>>,
    epoch: DurationMs,
    failure: Failure,
) -> (Stream<'s, Time, Vec<R>>, Stream<'s, Time, Vec<DeadLetter>>) {
    let mut builder = OperatorBuilder::new(format!("source:{}", queue.source.name), scope);
    let info = builder.operator_info();
    let activator = scope.activator_for(info.address.clone());
    queue.register(scope.worker().sync_activator_for(info.address.to_vec()));
    let (records_out, records) = builder.new_output::<Vec<R>>();
    let (dead_out, dead) = builder.new_output::<Vec<DeadLetter>>();
    let mut records_out = OutputBuilder::<Time, CapacityContainerBuilder<Vec<R>>>::from(records_out);
    let mut dead_out = OutputBuilder::<Time, CapacityContainerBuilder<Vec<DeadLetter>>>::from(dead_out);
    let epoch = epoch.millis().max(1) as i64;

    builder.build(move |mut caps| {
        let mut dead_cap = caps.pop();
        let mut records_cap = caps.pop();
        let mut batches: Vec<Batch<R>> = Vec::new();
        move |_frontiers| {
            let (Some(rcap), Some(dcap)) = (records_cap.as_mut(), dead_cap.as_mut()) else {
                return;
            };
            if failure.is_set() {
                queue.abandon();
                records_cap = None;
                dead_cap = None;
                return;
            }
            let src = queue.source.clone();
            queue.take(RECORDS_PER_ACTIVATION, &mut batches);
            let mut work = Work::<R>::default();
            let cap_ms = *rcap.time() as i64;
            for b in batches.iter_mut() {
                work.records += b.received;
                work.bytes += b.bytes;
                work.bad += b.dead.len() as u64;
                work.dead.append(&mut b.dead);
                if R::STAMPED {
                    for mut r in b.records.drain(..) {
                        // Stamped at receive time; a worker that has moved on since takes it
                        // at its own time (a few milliseconds later at most).
                        let ts = r.ts().max(cap_ms);
                        r.set_ts(ts);
                        work.emitted += 1;
                        work.push(floor_to(ts, epoch) as Time, r);
                    }
                    continue;
                }
                // One watermark for the whole request: remote_write orders it by series.
                let wm = queue.watermark();
                let mut newest = None;
                for mut r in b.records.drain(..) {
                    let ts = r.ts();
                    if ts >= wm {
                        newest = newest.max(Some(ts));
                        work.emitted += 1;
                        work.push(floor_to(ts, epoch) as Time, r);
                    } else if src.allowed_lateness.is_some_and(|keep| wm - ts <= keep) {
                        // A revision: stamped at the watermark's epoch, which the capability allows.
                        r.mark_late();
                        work.emitted += 1;
                        work.push(floor_to(wm.max(0), epoch) as Time, r);
                    } else {
                        work.late += 1;
                        work.dead.push(DeadLetter::new(&src.name, &src.display, r.pos(), LATE.to_string(), &r.raw(), Some(ts)));
                    }
                }
                if let Some(n) = newest {
                    queue.raise_watermark(n - src.out_of_orderness);
                }
            }
            {
                let mut out = records_out.activate();
                for (t, batch) in work.points.iter_mut() {
                    if !batch.is_empty() {
                        let cap: Capability<Time> = rcap.delayed(t);
                        out.session(&cap).give_container(batch);
                    }
                }
            }
            if !work.dead.is_empty() {
                let mut out = dead_out.activate();
                out.session(&*dcap).give_iterator(work.dead.drain(..));
            }
            let stats = &queue.stats;
            stats.records.fetch_add(work.records, Ordering::Relaxed);
            stats.emitted.fetch_add(work.emitted, Ordering::Relaxed);
            stats.dead_letters.fetch_add(work.bad, Ordering::Relaxed);
            stats.late.fetch_add(work.late, Ordering::Relaxed);
            stats.bytes.fetch_add(work.bytes, Ordering::Relaxed);
            // In the dataflow (and counted) now: the pushers may hear so.
            for mut b in batches.drain(..) {
                b.acknowledge();
            }

            let empty = queue.is_empty();
            if queue.is_closed() && empty {
                records_cap = None;
                dead_cap = None;
                return;
            }
            let hold = if R::STAMPED {
                queue.oldest_queued().unwrap_or(i64::MAX).min(wall_now())
            } else {
                if empty && queue.idle() {
                    queue.raise_watermark(wall_now() - src.out_of_orderness);
                }
                queue.watermark()
            };
            let t = floor_to(hold.max(0), epoch) as Time;
            if t > *rcap.time() {
                rcap.downgrade(&t);
                dcap.downgrade(&t);
            }
            if empty { activator.activate_after(IDLE_WAKE) } else { activator.activate() }
        }
    });
    (records, dead)
}
