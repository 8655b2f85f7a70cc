//! Processing latency of a paced replay, for `alertflow bench --rate`.
//!
//! In a fixed-rate run the input's event time runs with the wall clock: the bench writes data
//! whose event time starts at `from_ts` and advances evenly at the replay rate, and every file
//! source paces itself from one shared origin (the moment the first source starts reading).
//! So the record of event time `t` is due to arrive at `origin + (t − from_ts)`, and a row
//! *decided* at event time `t` (see [`TableRow::decided_at`]: the notice that caused an
//! alert change, the end of a window) could at the earliest have been known then. A row's
//! latency is the wall time from that moment to the moment it leaves a sink:
//!
//! - record-driven rows (alerts, storms, incidents, anomalies): from the arrival of the record
//!   that caused them — measured from the first record of its millisecond, so the figure may
//!   overstate by up to 1 ms, never understate;
//! - windowed rows: from the moment the window became closable, when the first record at or
//!   after its end arrived and moved the watermark past it (with `max_out_of_orderness = 0`).
//!
//! Measured from the schedule, not from when the source got round to reading a record, so a
//! source that falls behind shows up in the figures (no coordinated omission). Rows decided
//! after the last record's time (closed by the end of the input, not by time) are not counted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use alertflow_model::tables::TableRow;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::file::ReplayOrigin;

/// Where a latency is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// When the row leaves the dataflow's last operator (an in-memory sink would have it).
    Memory,
    /// When the Parquet file holding the row is complete and renamed into place.
    Parquet,
}

/// The shared clock and histograms of one run.
#[derive(Debug)]
pub struct LatencyProbe {
    origin: Arc<ReplayOrigin>,
    from_ts: i64,
    until_ts: i64,
    merged: Mutex<BTreeMap<(String, SinkKind), Histogram<u64>>>,
}

/// Largest latency recorded exactly (larger values are clamped): one hour, in µs.
const MAX_MICROS: u64 = 3_600_000_000;

impl LatencyProbe {
    /// A probe for a replay from `origin` of input whose event time starts at `from_ts` and
    /// ends at `until_ts` (ms).
    pub fn new(origin: Arc<ReplayOrigin>, from_ts: i64, until_ts: i64) -> Arc<Self> {
        Arc::new(LatencyProbe { origin, from_ts, until_ts, merged: Mutex::default() })
    }

    /// A recorder for one table and sink on one worker; merged into the probe when dropped.
    pub fn recorder(self: &Arc<Self>, table: &str, sink: SinkKind) -> Recorder {
        Recorder { probe: self.clone(), table: table.to_string(), sink, hist: new_histogram() }
    }

    /// The figures so far, by table and sink.
    pub fn report(&self) -> Vec<LatencyReport> {
        let merged = self.merged.lock().unwrap_or_else(|e| e.into_inner());
        merged
            .iter()
            .map(|((table, sink), h)| {
                let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
                LatencyReport {
                    table: table.clone(),
                    sink: *sink,
                    rows: h.len(),
                    p50_ms: ms(0.5),
                    p90_ms: ms(0.9),
                    p99_ms: ms(0.99),
                    p999_ms: ms(0.999),
                    max_ms: h.max() as f64 / 1000.0,
                }
            })
            .collect()
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// One table's latency through one sink.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyReport {
    /// The table.
    pub table: String,
    /// Where the latency was taken.
    pub sink: SinkKind,
    /// Rows measured.
    pub rows: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

/// A worker-local histogram of one table and sink (no locking per row).
pub struct Recorder {
    probe: Arc<LatencyProbe>,
    table: String,
    sink: SinkKind,
    hist: Histogram<u64>,
}

impl Recorder {
    /// Records the rows that left the sink at `now`.
    pub fn record<R: TableRow>(&mut self, now: Instant, rows: &[R]) {
        let Some(origin) = self.probe.origin.started() else { return };
        let since_origin = now.saturating_duration_since(origin).as_micros() as i64;
        for r in rows {
            let Some(t) = r.decided_at() else { continue };
            if t < self.probe.from_ts || t > self.probe.until_ts {
                continue;
            }
            let due = (t - self.probe.from_ts).saturating_mul(1000);
            // A row can leave before its due time only through clock jitter (it cannot be
            // decided before its record arrives): count it as 1 µs.
            let micros = (since_origin - due).max(1) as u64;
            self.hist.saturating_record(micros.min(MAX_MICROS));
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let mut merged = self.probe.merged.lock().unwrap_or_else(|e| e.into_inner());
        let h = merged.entry((std::mem::take(&mut self.table), self.sink)).or_insert_with(new_histogram);
        // Same bounds on both sides: adding cannot fail.
        let _ = h.add(&self.hist);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alertflow_model::tables::Partition;

    #[derive(Clone)]
    struct Row(Option<i64>);
    impl TableRow for Row {
        fn partition(&self) -> Partition {
            Partition::Hour(0)
        }
        fn decided_at(&self) -> Option<i64> {
            self.0
        }
    }

    #[test]
    fn latency_is_taken_from_the_rows_due_time_and_merged_across_recorders() {
        let replay = Arc::new(ReplayOrigin::default());
        let origin = replay.start();
        let probe = LatencyProbe::new(replay, 1_000, 10_000);
        let at = |ms: u64| origin + std::time::Duration::from_millis(ms);
        {
            let mut a = probe.recorder("t", SinkKind::Memory);
            // Decided at 1,500 (due 500 ms after the origin), left at 503 ms: 3 ms.
            a.record(at(503), &[Row(Some(1_500))]);
            let mut b = probe.recorder("t", SinkKind::Memory);
            // 2,000 → due at 1,000 ms, left at 1,010 ms: 10 ms; a row without a time and rows
            // outside the input's span are not counted.
            b.record(at(1_010), &[Row(Some(2_000)), Row(None), Row(Some(999)), Row(Some(10_001))]);
        }
        let r = probe.report();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].table.as_str(), r[0].sink, r[0].rows), ("t", SinkKind::Memory, 2));
        assert!((r[0].p50_ms - 3.0).abs() < 0.01, "{r:?}");
        assert!((r[0].max_ms - 10.0).abs() < 0.02, "{r:?}");
    }

    #[test]
    fn nothing_is_recorded_before_the_replay_starts() {
        let probe = LatencyProbe::new(Arc::default(), 0, 10);
        {
            let mut a = probe.recorder("t", SinkKind::Parquet);
            a.record(Instant::now(), &[Row(Some(5))]);
        }
        assert_eq!(probe.report()[0].rows, 0);
    }
}
