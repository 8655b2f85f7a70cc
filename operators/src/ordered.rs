//! Event-time order for stateful operators: records are held until the frontier has passed
//! their epoch (nothing earlier can still arrive), then handed over sorted by
//! `(ts, part, pos)`, interleaved with the operator's event-time timers. The order depends
//! only on the data, never on the worker count or on batching — the basis of every
//! determinism test.
//!
//! The operator keeps one capability at the least time it may still emit at: the input
//! frontier, the earliest held record, or the earliest timer.

use std::collections::{BTreeMap, BTreeSet};

use alertflow_model::LabelSet;
use timely::dataflow::operators::Capability;
use timely::progress::frontier::MutableAntichain;

use crate::Time;

/// A record with a place in event-time order.
pub trait Timed {
    /// Event time (ms).
    fn ts(&self) -> i64;
    /// `(part, pos)`: the canonical tie-break.
    fn origin(&self) -> (u32, u64);
    /// Among records of the same event time, lower ranks come first (control records such
    /// as topology changes before data).
    fn rank(&self) -> u8 {
        1
    }
}

impl Timed for alertflow_model::Metric {
    fn ts(&self) -> i64 {
        self.ts
    }
    fn origin(&self) -> (u32, u64) {
        (self.part, self.pos)
    }
}

/// How many due timers an operator handles in one activation before it hands its output on
/// and asks to be scheduled again. Without a bound, the end of a stream (every open alert's
/// expiry timer due at once) built all its rows in one buffer before any downstream operator
/// could take them: at 1,000,000 open fingerprints, 300 MB of a 1.7 GB heap peak.
pub const BUDGET: usize = 1 << 14;

/// Sorts the records of the epoch `[start, start + len)` by `(ts, rank, origin)`, stably.
/// A counting sort by the millisecond within the epoch when the epoch has few milliseconds
/// for its records (each record moves at most once by a swap; records of one millisecond are
/// then ordered by rank and origin); else, or when a record lies outside (negative times), a
/// comparison sort.
fn sort_epoch<T: Timed>(records: &mut [T], start: i64, len: i64) {
    let n = records.len();
    let key = |a: &T| (a.ts(), a.rank(), a.origin());
    if n < 32 || len > 16 * n as i64 || records.iter().any(|r| !(start..start + len).contains(&r.ts())) {
        records.sort_by_key(key);
        return;
    }
    // Where each millisecond's records begin in the output.
    let mut at = vec![0u32; len as usize + 1];
    for r in records.iter() {
        at[(r.ts() - start) as usize + 1] += 1;
    }
    for i in 1..at.len() {
        at[i] += at[i - 1];
    }
    let bounds = at.clone();
    // Each record's place, then the records moved there by following cycles: each swap puts
    // one record in its final place, so at most `n` swaps (safe code, no second buffer).
    let mut dest: Vec<u32> = records
        .iter()
        .map(|r| {
            let i = &mut at[(r.ts() - start) as usize];
            *i += 1;
            *i - 1
        })
        .collect();
    for i in 0..n {
        while dest[i] as usize != i {
            let j = dest[i] as usize;
            records.swap(i, j);
            dest.swap(i, j);
        }
    }
    for w in bounds.windows(2) {
        if w[1] - w[0] > 1 {
            records[w[0] as usize..w[1] as usize].sort_by_key(|a| (a.rank(), a.origin()));
        }
    }
}

/// What is due next.
pub enum Due<T> {
    /// A record.
    Record(T),
    /// A timer of `key` at event time `at`.
    Timer(i64, u64),
}

/// Held records and timers of one operator instance.
pub struct Ordered<T> {
    epoch: i64,
    held: BTreeMap<Time, Vec<T>>,
    /// (event time, key): the key says what the timer is for (e.g. a fingerprint).
    timers: BTreeSet<(i64, u64)>,
    /// The capabilities (one per output), at the least time output may still be produced at;
    /// empty once nothing can be.
    caps: Vec<Capability<Time>>,
    /// Records being handled, in order.
    ready: std::collections::VecDeque<T>,
    /// The frontier's least time when handling began (`None`: empty).
    limit: Option<Time>,
    /// Timers at or after this epoch are not handed over yet (see [`Ordered::hold_timers_from`]).
    horizon: Option<Time>,
    /// Whether a timer was held back by the horizon since the last `begin_until`.
    held_back: bool,
}

impl<T: Timed> Ordered<T> {
    /// Holds nothing; `cap` is the operator's initial capability.
    pub fn new(cap: Capability<Time>, epoch: i64) -> Self {
        Self::with_outputs(vec![cap], epoch)
    }

    /// Like [`Ordered::new`], for an operator with several outputs: `caps` are their initial
    /// capabilities, moved together.
    pub fn with_outputs(caps: Vec<Capability<Time>>, epoch: i64) -> Self {
        Ordered {
            epoch: epoch.max(1),
            held: BTreeMap::new(),
            timers: BTreeSet::new(),
            caps,
            ready: Default::default(),
            limit: Some(0),
            horizon: None,
            held_back: false,
        }
    }

    /// Holds timers at or after epoch `h` back (and every record after them, so the order
    /// stays): an operator whose timers all fall due at once (the end of the input) uses it to
    /// stay near its slowest peer instead of emitting rows that downstream must hold until that
    /// peer catches up. `None` lifts it.
    pub fn hold_timers_from(&mut self, h: Option<Time>) {
        self.horizon = h;
    }

    /// Whether [`next_due`](Self::next_due) stopped at the horizon since the last
    /// [`begin_until`](Self::begin_until): more is due once the horizon moves.
    pub fn held_back(&self) -> bool {
        self.held_back
    }

    /// The epoch of an event time.
    #[inline]
    pub fn epoch_of(&self, ts: i64) -> Time {
        (ts.max(0) - ts.max(0) % self.epoch) as Time
    }

    /// Holds a record until its epoch is complete.
    #[inline]
    pub fn push(&mut self, r: T) {
        let t = self.epoch_of(r.ts());
        self.held.entry(t).or_default().push(r);
    }

    /// Holds a batch of records, leaving `batch` empty. A batch whose records share an epoch
    /// (as nearly all do: a message carries one timely time) moves into it whole — the vector
    /// itself when the epoch holds nothing yet and the vector is mostly full — instead of
    /// record by record.
    pub fn push_batch(&mut self, batch: &mut Vec<T>) {
        let Some(first) = batch.first() else { return };
        let t = self.epoch_of(first.ts());
        if batch.iter().all(|r| self.epoch_of(r.ts()) == t) {
            let held = self.held.entry(t).or_default();
            // Taken whole only while mostly full: a held epoch keeps the vector's capacity
            // until it is handed over, and a small message in a large buffer would hold it all.
            if held.is_empty() && batch.len() * 2 >= batch.capacity() {
                std::mem::swap(held, batch);
            } else {
                held.append(batch);
            }
            return;
        }
        for r in batch.drain(..) {
            self.push(r);
        }
    }

    /// Sets a timer of `key` at event time `at`.
    pub fn set_timer(&mut self, at: i64, key: u64) {
        self.timers.insert((at, key));
    }

    /// Cancels a timer.
    pub fn cancel_timer(&mut self, at: i64, key: u64) {
        self.timers.remove(&(at, key));
    }

    /// After [`begin_until`](Self::begin_until) and handling: every record still to come is
    /// at this time or later (`None`: none is). State whose expiry lies before it can go.
    pub fn limit(&self) -> Option<Time> {
        self.limit
    }

    /// Whether records are held or being handled: with an empty frontier and none left, no
    /// record will ever come again (only timers remain).
    pub fn has_records(&self) -> bool {
        !self.ready.is_empty() || !self.held.is_empty()
    }

    /// Pending timers.
    pub fn timers(&self) -> usize {
        self.timers.len()
    }

    /// The pending timers, for a checkpoint (held records are not saved: sources replay them).
    pub fn timer_list(&self) -> &BTreeSet<(i64, u64)> {
        &self.timers
    }

    /// Restores the timers of a checkpoint.
    pub fn restore_timers(&mut self, timers: BTreeSet<(i64, u64)>) {
        self.timers = timers;
    }

    /// Starts handling: takes the held records whose epoch the frontier has passed (all when
    /// it is empty), sorted. Then call [`next`](Self::next) until it returns `None`.
    pub fn begin(&mut self, frontier: &MutableAntichain<Time>) {
        self.begin_until(frontier, None);
    }

    /// [`begin`](Self::begin), handling nothing at or after `until` (a pending checkpoint: the
    /// state saved for it holds exactly the epochs before it).
    pub fn begin_until(&mut self, frontier: &MutableAntichain<Time>, until: Option<Time>) {
        self.limit = crate::checkpoint::limit_of(frontier, until);
        self.held_back = false;
        // Each epoch's records sorted on their own: an epoch's records all lie within it, so
        // epochs in order, each sorted, are sorted — and a whole-batch sort moved every
        // record (80–170 bytes) log n times, and copied them all into one buffer first.
        let mut epochs: Vec<Vec<T>> = Vec::new();
        while let Some(e) = self.held.first_entry() {
            if self.limit.is_some_and(|l| *e.key() >= l) {
                break;
            }
            let start = *e.key() as i64;
            let mut records = e.remove();
            sort_epoch(&mut records, start, self.epoch);
            epochs.push(records);
        }
        if epochs.is_empty() {
            // Nothing new: what is left over from a yield stays sorted as it is (an operator
            // waiting for a peer begins again every few hundred microseconds).
            return;
        }
        // Records left over from a yield came before, unless a record arrived for an epoch
        // already handed over (a late record a source let through): then all of them are
        // sorted together, as they would have been.
        let key = |a: &T| (a.ts(), a.rank(), a.origin());
        if let (Some(last), Some(first)) = (self.ready.back(), epochs[0].first())
            && key(last) > key(first)
        {
            let mut records: Vec<T> = self.ready.drain(..).collect();
            for e in epochs {
                records.extend(e);
            }
            records.sort_by_key(key);
            self.ready = records.into();
            return;
        }
        if self.ready.is_empty() && epochs.len() == 1 {
            self.ready = epochs.pop().unwrap_or_default().into();
            return;
        }
        // A fresh buffer of the size needed rather than `ready` grown: a `VecDeque` never
        // shrinks, and one burst (the end of an input) would keep its size for the whole run.
        let mut records = Vec::with_capacity(self.ready.len() + epochs.iter().map(Vec::len).sum::<usize>());
        records.extend(self.ready.drain(..));
        for e in epochs {
            records.extend(e);
        }
        self.ready = records.into();
    }

    /// The record `k` places after the next one to be handed over, if one is ready: an
    /// operator reads ahead to start the cache misses of its state lookups early.
    #[inline]
    pub fn ahead(&self, k: usize) -> Option<&T> {
        self.ready.get(k)
    }

    /// Hints the label sets of the records ahead into the cache, before the next one is
    /// handed over (see [`LabelSet::prefetch_ahead`]).
    ///
    /// The operators after dedup (suppress, correlate, enrich) read a few labels of every
    /// row (its group key, its service, its alertname) on another core than the one that
    /// decoded it or dedup's: each read waited for the set, then for its labels slice
    /// (`LabelSet::get`, 4.8 % of all samples of the storm-heavy bench, 81 % of it on the
    /// slice's first load).
    ///
    /// [`LabelSet::prefetch_ahead`]: alertflow_model::LabelSet::prefetch_ahead
    #[inline]
    pub fn prefetch_labels(&self, labels: impl Fn(&T) -> Option<&LabelSet>) {
        LabelSet::prefetch_ahead(|k| self.ready.get(k).and_then(&labels));
    }

    /// The next due item in event-time order: a ready record, or a timer before the frontier
    /// (any timer when it is empty). A timer at `t` comes after the records at or before `t`:
    /// a notice at the very instant of an expiry still counts. Timers set while handling are
    /// seen by the next call, so they fire in order too.
    pub fn next_due(&mut self) -> Option<Due<T>> {
        let limit = self.limit;
        let epoch = self.epoch;
        let timer = self.timers.first().copied().filter(|&(at, _)| limit.is_none_or(|l| ((at.max(0) - at.max(0) % epoch) as Time) < l));
        match (self.ready.front(), timer) {
            (Some(r), Some((at, _))) if r.ts() <= at => self.ready.pop_front().map(Due::Record),
            (_, Some((at, key))) => {
                if self.horizon.is_some_and(|h| self.epoch_of(at) >= h) {
                    self.held_back = true;
                    return None;
                }
                self.timers.pop_first();
                Some(Due::Timer(at, key))
            }
            (Some(_), None) => self.ready.pop_front().map(Due::Record),
            (None, None) => None,
        }
    }

    /// After handling, moves the capability to the least time output may still come at, or
    /// drops it when nothing can.
    pub fn settle(&mut self, frontier: &MutableAntichain<Time>) {
        let mut low = frontier.frontier().iter().next().copied();
        // Records left over by an operator that yielded (they are sorted: the first is least).
        if let Some(r) = self.ready.front() {
            let t = self.epoch_of(r.ts());
            low = Some(low.map_or(t, |l| l.min(t)));
        }
        if let Some((&t, _)) = self.held.first_key_value() {
            low = Some(low.map_or(t, |l| l.min(t)));
        }
        if let Some(&(at, _)) = self.timers.first() {
            let t = self.epoch_of(at);
            low = Some(low.map_or(t, |l| l.min(t)));
        }
        match low {
            None => self.caps.clear(),
            Some(t) => {
                for cap in &mut self.caps {
                    if t > *cap.time() {
                        cap.downgrade(&t);
                    }
                }
            }
        }
    }

    /// A capability for output at event time `ts` (at least the current one).
    pub fn cap_at(&self, ts: i64) -> Option<Capability<Time>> {
        self.cap_at_output(ts, 0)
    }

    /// A capability for output `port` (in the order given to [`Ordered::with_outputs`]) at
    /// event time `ts`.
    pub fn cap_at_output(&self, ts: i64, port: usize) -> Option<Capability<Time>> {
        let cap = self.caps.get(port)?;
        let t = self.epoch_of(ts).max(*cap.time());
        Some(cap.delayed(&t))
    }

    /// The held capability (of the first output).
    pub fn cap(&self) -> Option<&Capability<Time>> {
        self.caps.first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Lcg;

    #[derive(Clone, Debug, PartialEq)]
    struct R {
        ts: i64,
        rank: u8,
        part: u32,
        pos: u64,
        /// Arrival order: equal keys must keep it.
        seq: usize,
    }

    impl Timed for R {
        fn ts(&self) -> i64 {
            self.ts
        }
        fn origin(&self) -> (u32, u64) {
            (self.part, self.pos)
        }
        fn rank(&self) -> u8 {
            self.rank
        }
    }

    #[test]
    fn an_epoch_sorts_as_a_stable_sort_by_time_rank_and_origin() {
        let mut rng = Lcg(3);
        for round in 0..300 {
            let start = 1_000 * (round % 5) as i64;
            let len = [1_000, 10, 1, 60_000][round % 4];
            let n = [0, 5, 31, 32, 100, 1_000, 5_000][rng.next() as usize % 7];
            let mut v: Vec<R> = (0..n)
                .map(|seq| R {
                    // Mostly inside the epoch, now and then outside it (late, negative).
                    ts: match rng.next() % 50 {
                        0 => start - 1 - (rng.next() % 5) as i64,
                        1 => -((rng.next() % 3) as i64),
                        _ => start + (rng.next() % len as u64) as i64,
                    },
                    rank: (rng.next() % 2) as u8,
                    part: (rng.next() % 2) as u32,
                    pos: rng.next() % 8,
                    seq,
                })
                .collect();
            if round % 3 == 0 {
                v.retain(|r| (start..start + len).contains(&r.ts));
            }
            let mut want = v.clone();
            want.sort_by_key(|a| (a.ts, a.rank, (a.part, a.pos)));
            sort_epoch(&mut v, start, len);
            assert_eq!(v, want, "round {round}: {n} records, epoch {start}+{len}");
        }
    }
}
