//! Counters of one stateful operator, shared by all its workers and read by the engine's
//! `/metrics` (records in and out, late and dropped records, state size).
//!
//! Every operator config ([`crate::Aggregate`], [`crate::Suppress`], …) holds one
//! `Arc<OperatorStats>`, made when the config is validated: all workers of a run build their
//! instance from the same config, so they report into the same counters without any wiring.
//! Workers add per batch and per activation, never per record.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counters of one operator (all workers together).
#[derive(Debug, Default)]
pub struct OperatorStats {
    /// Records received.
    pub records_in: AtomicU64,
    /// Rows emitted.
    pub records_out: AtomicU64,
    /// Late records received (behind their partition's watermark): folded in as revisions by
    /// windows under the late policy `update`, skipped by detectors.
    pub late: AtomicU64,
    /// Records received but not used (a detector's late points, dedup's overflow).
    pub dropped: AtomicU64,
    /// Keys forgotten because they had no record for their TTL (see [`crate::limits`]).
    pub expired: AtomicU64,
    /// Keys evicted to make room at the state's cap (policy `evict_oldest`).
    pub evicted: AtomicU64,
    /// Records of new keys dropped at the state's cap (policy `reject_new`).
    pub rejected: AtomicU64,
    /// Entries held in state, summed over workers (see [`StateGauge`]).
    state: AtomicI64,
}

impl OperatorStats {
    /// The counters, in declaration order, the state gauge last as its two's complement (a
    /// cluster gathers them; see `alertflow_engine::cluster`).
    pub fn values(&self) -> [u64; 8] {
        let c = [&self.records_in, &self.records_out, &self.late, &self.dropped, &self.expired, &self.evicted, &self.rejected];
        let mut v = [0; 8];
        for (v, c) in v.iter_mut().zip(c) {
            *v = c.load(Ordering::Relaxed);
        }
        v[7] = self.state.load(Ordering::Relaxed) as u64;
        v
    }

    /// Adds the first eight of `deltas` (wrapping) to the counters, in
    /// [`OperatorStats::values`]' order; returns the rest.
    pub fn add_values<'d>(&self, deltas: &'d [u64]) -> &'d [u64] {
        let (mine, rest) = deltas.split_at(deltas.len().min(8));
        let c = [&self.records_in, &self.records_out, &self.late, &self.dropped, &self.expired, &self.evicted, &self.rejected];
        for (c, d) in c.iter().zip(mine) {
            c.fetch_add(*d, Ordering::Relaxed);
        }
        if let Some(d) = mine.get(7) {
            self.state.fetch_add(*d as i64, Ordering::Relaxed);
        }
        rest
    }

    /// Entries held in state by all workers.
    pub fn state(&self) -> u64 {
        self.state.load(Ordering::Relaxed).max(0) as u64
    }

    /// Adds `n` records received.
    #[inline]
    pub fn add_in(&self, n: usize) {
        add(&self.records_in, n);
    }

    /// Adds `n` rows emitted.
    #[inline]
    pub fn add_out(&self, n: usize) {
        add(&self.records_out, n);
    }

    /// Adds `n` late records received.
    #[inline]
    pub fn add_late(&self, n: usize) {
        add(&self.late, n);
    }

    /// Adds `n` records dropped.
    #[inline]
    pub fn add_dropped(&self, n: usize) {
        add(&self.dropped, n);
    }

    /// Adds `n` keys expired.
    #[inline]
    pub fn add_expired(&self, n: usize) {
        add(&self.expired, n);
    }

    /// Adds `n` keys evicted.
    #[inline]
    pub fn add_evicted(&self, n: usize) {
        add(&self.evicted, n);
    }

    /// Adds `n` records rejected.
    #[inline]
    pub fn add_rejected(&self, n: usize) {
        add(&self.rejected, n);
    }
}

/// Adds `n` unless it is 0 (an empty batch touches no shared cache line).
#[inline]
fn add(counter: &AtomicU64, n: usize) {
    if n > 0 {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// One worker's share of an operator's state size. Each worker reports only the change since
/// its last report, so the shared total is the sum over workers without a slot per worker; on
/// drop (the dataflow ends) it takes its share back out.
#[derive(Debug)]
pub struct StateGauge {
    stats: Arc<OperatorStats>,
    last: i64,
}

impl StateGauge {
    /// A worker's gauge, at 0.
    pub fn new(stats: Arc<OperatorStats>) -> StateGauge {
        StateGauge { stats, last: 0 }
    }

    /// This worker now holds `n` entries.
    #[inline]
    pub fn set(&mut self, n: usize) {
        let n = n as i64;
        if n != self.last {
            self.stats.state.fetch_add(n - self.last, Ordering::Relaxed);
            self.last = n;
        }
    }
}

impl Drop for StateGauge {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_the_sum_of_the_workers_shares_and_drops_back_to_zero() {
        let stats = Arc::new(OperatorStats::default());
        let mut a = StateGauge::new(stats.clone());
        let mut b = StateGauge::new(stats.clone());
        a.set(10);
        b.set(5);
        assert_eq!(stats.state(), 15);
        a.set(3);
        assert_eq!(stats.state(), 8);
        drop(b);
        assert_eq!(stats.state(), 3);
        drop(a);
        assert_eq!(stats.state(), 0);
    }
}
