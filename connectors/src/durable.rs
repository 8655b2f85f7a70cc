//! How far the output is durable: every sink reports the timely time below which everything it
//! will ever receive is written (Parquet files renamed into place, Kafka deliveries confirmed),
//! and sources that commit positions (Kafka offsets) read the least of them.
//!
//! In a cluster a record read by one process may end up in a row that another process's sink
//! writes, so the frontier that offsets are committed behind is the least over every process:
//! each process reports its own sinks' frontier to the others (the engine's gathering
//! dataflow), and until every other process has reported, nothing counts as durable.

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
    /// In a cluster: the other processes' frontiers as last reported (this process's own slot
    /// is unused). Empty in a one-process run.
    remote: Mutex<Vec<Time>>,
    /// How many sources settle the resume floor (their first look at committed offsets), and
    /// how many have.
    sources: usize,
    settled: AtomicU64,
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
        Self::in_cluster(expected, span, 1, 0)
    }

    /// Tracking for a process of a cluster of `processes`, whose `sources` Kafka sources settle
    /// the resume floor: the frontier waits for every other process's report.
    pub fn in_cluster(expected: usize, span: u64, processes: usize, sources: usize) -> Arc<Self> {
        // Another process's frontier is 0 until it reports; this process's own entry, MAX.
        let remote = if processes > 1 { vec![0; processes] } else { Vec::new() };
        Arc::new(Durability {
            slots: Mutex::default(),
            expected,
            span: span.max(1),
            resume_floor: AtomicU64::new(0),
            remote: Mutex::new(remote),
            sources,
            settled: AtomicU64::new(0),
        })
    }

    /// Registers one sink on one worker.
    pub fn slot(&self) -> DurableSlot {
        let s = Arc::new(AtomicU64::new(0));
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).push(s.clone());
        DurableSlot(s)
    }

    /// The least durable frontier of all sinks of the run (in a cluster, of every process):
    /// every output row with a timely time before it is durable. 0 until every sink has
    /// registered (and every other process has reported).
    pub fn frontier(&self) -> Time {
        let remote = self.remote.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().min().unwrap_or(Time::MAX);
        self.local_frontier().min(remote)
    }

    /// The least durable frontier of this process's own sinks.
    pub fn local_frontier(&self) -> Time {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() < self.expected {
            return 0;
        }
        slots.iter().map(|s| s.load(Ordering::Acquire)).min().unwrap_or(Time::MAX)
    }

    /// Process `process` reports that its sinks are durable up to `t` (frontiers only grow).
    pub fn set_remote(&self, process: usize, own: usize, t: Time) {
        let mut remote = self.remote.lock().unwrap_or_else(|p| p.into_inner());
        if process != own
            && let Some(r) = remote.get_mut(process)
        {
            *r = (*r).max(t);
        }
        if let Some(r) = remote.get_mut(own) {
            *r = Time::MAX;
        }
    }

    /// A source has read its committed offsets (the resume floor holds its part).
    pub fn settle(&self) {
        self.settled.fetch_add(1, Ordering::AcqRel);
    }

    /// The resume floor once every source has read its committed offsets (`None` before).
    pub fn settled_floor(&self) -> Option<Time> {
        (self.settled.load(Ordering::Acquire) >= self.sources as u64).then(|| self.resume_floor())
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
        assert_eq!(d.settled_floor(), Some(3000), "no source to wait for");
        d.raise_resume_floor(1200);
        assert_eq!(d.resume_floor(), 3000);
    }

    #[test]
    fn in_a_cluster_the_frontier_waits_for_every_other_process() {
        let d = Durability::in_cluster(1, 1000, 3, 1);
        d.slot().set(9000);
        assert_eq!(d.local_frontier(), 9000);
        assert_eq!(d.frontier(), 0, "processes 0 and 2 have not reported");
        d.set_remote(0, 1, 4000);
        d.set_remote(1, 1, 1); // its own report (ignored)
        assert_eq!(d.frontier(), 0, "process 2 has not reported");
        d.set_remote(2, 1, 7000);
        assert_eq!(d.frontier(), 4000);
        d.set_remote(0, 1, 3000); // an older report arriving late never moves it back
        assert_eq!(d.frontier(), 4000);
        d.set_remote(0, 1, Time::MAX);
        d.set_remote(2, 1, Time::MAX);
        assert_eq!(d.frontier(), 9000, "the others are done: this process's own sinks decide");
        assert_eq!(d.settled_floor(), None, "its source has not read the committed offsets yet");
        d.settle();
        assert_eq!(d.settled_floor(), Some(0));
    }
}
