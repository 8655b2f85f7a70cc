//! How far the output is durable: every sink reports the timely time below which everything it
//! will ever receive is written (Parquet files renamed into place, Kafka deliveries confirmed),
//! and sources that commit positions (Kafka offsets) read the least of them.
//!
//! The frontier is per process: a source commits its partitions' offsets from what the sinks of
//! its own process wrote, which covers everything in a one-process run (a cluster run would need
//! the minimum over processes; see the Kafka connector's documentation).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::Time;

/// The durable frontier of one process's sinks.
#[derive(Debug)]
pub struct Durability {
    slots: Mutex<Vec<Arc<AtomicU64>>>,
    /// How many slots the run registers (sinks × local workers): until all have registered,
    /// nothing counts as durable.
    expected: usize,
    /// `[output] file_span` in ms: a sink writes whole spans, so a resumed run can only skip
    /// whole spans.
    span: u64,
    /// On a resumed run, the durable frontier recorded with the committed offsets: rows before
    /// it are already in the output, and sinks drop them rather than overwrite complete files
    /// with partial ones.
    resume_floor: AtomicU64,
}

/// One sink on one worker: its durable frontier.
#[derive(Debug, Clone)]
pub struct DurableSlot(Arc<AtomicU64>);

impl DurableSlot {
    /// Everything before `t` that this sink will receive is durable.
    pub fn set(&self, t: Time) {
        self.0.fetch_max(t, Ordering::AcqRel);
    }
}

impl Durability {
    /// Tracking for `expected` sink slots whose files cover `span` ms of timely time each.
    pub fn new(expected: usize, span: u64) -> Arc<Self> {
        Arc::new(Durability { slots: Mutex::default(), expected, span: span.max(1), resume_floor: AtomicU64::new(0) })
    }

    /// Registers one sink on one worker.
    pub fn slot(&self) -> DurableSlot {
        let s = Arc::new(AtomicU64::new(0));
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).push(s.clone());
        DurableSlot(s)
    }

    /// The least durable frontier of all sinks: every output row with a timely time before it
    /// is durable. 0 until every sink has registered.
    pub fn frontier(&self) -> Time {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() < self.expected {
            return 0;
        }
        slots.iter().map(|s| s.load(Ordering::Acquire)).min().unwrap_or(Time::MAX)
    }

    /// The file span in ms.
    pub fn span(&self) -> u64 {
        self.span
    }

    /// The durable frontier rounded down to a file span boundary: rows from it on are in spans
    /// that a replay rewrites whole.
    pub fn span_frontier(&self) -> Time {
        let f = self.frontier();
        if f == Time::MAX { f } else { f - f % self.span }
    }

    /// Rows before this time are already durable from an earlier run (0 on a fresh run).
    pub fn resume_floor(&self) -> Time {
        self.resume_floor.load(Ordering::Acquire)
    }

    /// Raises the resume floor (read from committed offsets' metadata).
    pub fn raise_resume_floor(&self, t: Time) {
        let t = t - t % self.span;
        self.resume_floor.fetch_max(t, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frontier_is_the_least_slot_once_all_registered() {
        let d = Durability::new(2, 1000);
        let a = d.slot();
        a.set(5000);
        assert_eq!(d.frontier(), 0, "one slot still missing");
        let b = d.slot();
        b.set(2500);
        assert_eq!(d.frontier(), 2500);
        assert_eq!(d.span_frontier(), 2000);
        b.set(1000); // never moves back
        assert_eq!(d.frontier(), 2500);
        b.set(Time::MAX);
        a.set(Time::MAX);
        assert_eq!(d.span_frontier(), Time::MAX);
        d.raise_resume_floor(3700);
        d.raise_resume_floor(1200);
        assert_eq!(d.resume_floor(), 3000);
    }
}
