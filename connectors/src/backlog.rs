//! Back-pressure from the sinks to the sources.
//!
//! A source that decodes faster than the operators behind it can take records reads ahead
//! without bound: timely's channels queue whatever it sends, however far behind a slow
//! operator or sink (or a descheduled peer worker) is. So each sink's input is
//! watched (a [`Backlog`] probe), and a source counts the records it has released — sent at
//! times before its own capability, so nothing but the operators stands between them and
//! the sinks — that the sinks' frontier has not yet passed. Past a limit it waits.
//!
//! Waiting never blocks progress: a source only waits while the frontier is behind its own
//! capability, and everything before that capability is already sent, so the frontier gets
//! there without the source. Records at or past the capability (a partition's watermark
//! holds them) do not count: waiting cannot move them on.

use std::collections::BTreeMap;

use timely::dataflow::Stream;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::probe::Handle as ProbeHandle;

use crate::Time;

/// Records one source may have released and not yet seen pass the sinks, over all its
/// workers: each of `peers` workers gets an equal share ([`released_per_worker`]), so what a
/// process holds in flight does not grow with its worker count. At 2 workers, 128 Ki each: a
/// few activations' worth (a source reads 32 Ki lines per activation), so the operators always
/// have work queued; at a few hundred bytes per record, tens of MB per source. 32 Ki each
/// took 1,000,000 open alerts' peak RSS 50 MB lower but the benches 17–50 % slower.
pub const MAX_RELEASED: u64 = 256 * 1024;

/// One worker's share of [`MAX_RELEASED`] among `peers`, never under `floor` (what the source
/// reads in one activation: less would have it wait after every read).
pub fn released_per_worker(peers: usize, floor: u64) -> u64 {
    (MAX_RELEASED / peers.max(1) as u64).max(floor)
}

/// The sinks' input frontier on one worker (over every worker: timely's progress tracking).
#[derive(Clone, Default)]
pub struct Backlog {
    probe: ProbeHandle<Time>,
}

impl Backlog {
    /// A backlog no sink watches yet: its frontier is empty, so no source waits.
    pub fn new() -> Self {
        Self::default()
    }

    /// `rows`, watched: a pass-through (moves each batch on, copies nothing).
    pub fn watch<'s, R: 'static>(&self, rows: Stream<'s, Time, Vec<R>>) -> Stream<'s, Time, Vec<R>> {
        rows.probe_with(&self.probe)
    }

    /// The least time any watched stream may still carry; `None` once all have ended (or
    /// when none is watched).
    fn frontier(&self) -> Option<Time> {
        self.probe.with_frontier(|f| f.iter().min().copied())
    }
}

/// One source's side: the records it released by time, and whether it should wait.
pub struct Pacer {
    backlog: Option<Backlog>,
    limit: u64,
    /// Records sent, by time, at or past the sinks' frontier when last looked.
    sent: BTreeMap<Time, u64>,
}

impl Pacer {
    /// A pacer against `backlog` (none: never waits) that lets `limit` records be released.
    pub fn new(backlog: Option<Backlog>, limit: u64) -> Self {
        Pacer { backlog, limit, sent: BTreeMap::new() }
    }

    /// `n` records were sent at `time`.
    pub fn sent(&mut self, time: Time, n: u64) {
        if self.backlog.is_some() && n > 0 {
            *self.sent.entry(time).or_default() += n;
        }
    }

    /// Whether the source, holding its capability at `cap`, should wait: more than the limit
    /// of what it sent before `cap` is not past the sinks yet.
    pub fn should_wait(&mut self, cap: Time) -> bool {
        let Some(backlog) = &self.backlog else { return false };
        let Some(frontier) = backlog.frontier() else {
            self.sent.clear();
            return false;
        };
        self.sent.retain(|&t, _| t >= frontier);
        if frontier >= cap {
            return false;
        }
        let released: u64 = self.sent.range(..cap).map(|(_, n)| n).sum();
        released > self.limit
    }
}

#[cfg(test)]
mod tests {
    use timely::container::CapacityContainerBuilder;
    use timely::dataflow::InputHandle;
    use timely::dataflow::operators::Input;

    use super::*;

    /// A pacer over a watched stream waits while more than its limit is released and not
    /// through, and stops waiting as the frontier passes those records — or reaches the cap.
    #[test]
    fn waits_for_released_records_only() {
        timely::execute_directly(|worker| {
            let backlog = Backlog::new();
            let mut input = InputHandle::<Time, CapacityContainerBuilder<Vec<u64>>>::new();
            worker.dataflow::<Time, _, _>(|scope| {
                let s = scope.input_from(&mut input);
                backlog.watch(s);
            });
            let mut pacer = Pacer::new(Some(backlog.clone()), 10);
            // 8 at 1, 5 at 2: 13 released before cap 3, none through yet.
            pacer.sent(1, 8);
            pacer.sent(2, 5);
            input.advance_to(3);
            assert!(pacer.should_wait(3), "13 released > 10 while the frontier is at 0");
            worker.step();
            worker.step();
            assert_eq!(backlog.frontier(), Some(3));
            assert!(!pacer.should_wait(3), "the frontier reached the cap");
            // Records at or past the cap never count: the source cannot move them on.
            pacer.sent(3, 100);
            assert!(!pacer.should_wait(3));
            // Once the source holds its capability at 5 they are released, and not through.
            assert!(pacer.should_wait(5), "100 at 3 released before cap 5, frontier at 3");
            input.advance_to(5);
            worker.step();
            worker.step();
            assert!(!pacer.should_wait(6), "the records at 3 are through");
            drop(input);
            worker.step();
            worker.step();
            assert_eq!(backlog.frontier(), None);
            pacer.sent(7, 1_000);
            assert!(!pacer.should_wait(8), "nothing waits once the sinks are done");
        });
    }

    #[test]
    fn the_limit_is_shared_by_the_workers() {
        assert_eq!(released_per_worker(1, 32 * 1024), 256 * 1024);
        assert_eq!(released_per_worker(2, 32 * 1024), 128 * 1024);
        assert_eq!(released_per_worker(4, 32 * 1024), 64 * 1024);
        assert_eq!(released_per_worker(16, 32 * 1024), 32 * 1024, "never under one activation's reading");
        assert_eq!(released_per_worker(0, 1), 256 * 1024);
    }

    #[test]
    fn without_a_backlog_never_waits() {
        let mut pacer = Pacer::new(None, 0);
        pacer.sent(0, 1_000_000);
        assert!(!pacer.should_wait(10));
        let mut unwatched = Pacer::new(Some(Backlog::new()), 0);
        unwatched.sent(0, 1_000_000);
        assert!(!unwatched.should_wait(10), "a backlog no sink watches has an empty frontier");
    }
}
