//! Live tables: the current state of the running dataflow, readable by SQL while it runs
//! (DESIGN §6).
//!
//! Worker state is not `Sync`, so workers do not share it: each **publishes immutable Arrow
//! snapshots** of its part of a table into a [`LiveTable`]. A reader must see every worker's
//! part **at one frontier** `S` (each part holding exactly the rows of the times before `S`),
//! never one worker's newer rows beside another's older ones.
//!
//! Building a snapshot costs time in the number of rows a worker holds, so it cannot happen
//! at every change of the frontier (every millisecond under a 1 ms epoch). The workers agree
//! on **snapshot points** instead:
//! - the table holds a `target` time; every worker, once its frontier has passed it, applies
//!   its pending rows of the times before it (no later ones: those wait), builds its part and
//!   publishes it;
//! - when every worker has published the target, those parts become the table's readable
//!   snapshot, and, once `refresh` has passed since the previous one, the next target is set
//!   to the least frontier of all workers (so every worker can build it at once) and every
//!   worker is activated to build it;
//! - when every worker has finished, the target is [`COMPLETE`]: the final state.
//!
//! So a snapshot is built once per `refresh` per worker whatever the epoch, and readers never
//! wait: they read the last agreed snapshot. Rows of times at or after the target wait in the
//! publisher until the next target (at most `refresh` worth of rows).
//!
//! [`publish`] is the dataflow operator that keeps the latest row per key of any table-row
//! stream and publishes it here.

pub mod publish;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use timely::scheduling::SyncActivator;

pub use publish::{LatestBy, LiveStats, PublishExt};

use crate::Time;

/// The frontier of a worker that has finished: every time is complete.
pub const COMPLETE: Time = Time::MAX;

/// One table of live state, shared by the workers that publish it and the queries that read it.
#[derive(Debug)]
pub struct LiveTable {
    name: String,
    schema: SchemaRef,
    refresh: Duration,
    /// Workers `0..publishers` publish (in a cluster, the serving process's).
    publishers: usize,
    state: Mutex<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Per worker: every time before it is complete there (0 until the worker reports).
    frontiers: Vec<Time>,
    /// The snapshot point being built (0: none yet).
    target: Time,
    /// Per worker, its part at `target` once built.
    built: Vec<Option<Arc<[RecordBatch]>>>,
    /// The readable snapshot.
    agreed: Snapshot,
    /// When `agreed` was last replaced.
    agreed_at: Instant,
    /// Wakes each worker's publisher when a new target is set.
    activators: Vec<Option<SyncActivator>>,
}

/// What a reader sees: every worker's part of the table at one frontier.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The frontier the parts were built at: they hold the rows of every time before it
    /// ([`COMPLETE`] once every worker has finished; 0 before the first snapshot).
    pub frontier: Time,
    /// One list of batches per worker.
    pub parts: Vec<Arc<[RecordBatch]>>,
    /// Rows in all parts.
    pub rows: usize,
}

impl LiveTable {
    /// An empty table published by workers `0..workers` (global indices: all workers of a
    /// single process, the first process's in a cluster, see [`crate::live::PublishExt`]),
    /// snapshot at most once per `refresh`.
    pub fn new(name: impl Into<String>, schema: SchemaRef, workers: usize, refresh: Duration) -> Self {
        let workers = workers.max(1);
        let agreed = Snapshot { frontier: 0, parts: vec![Arc::from(Vec::new()); workers], rows: 0 };
        let state = Shared {
            frontiers: vec![0; workers],
            target: 0,
            built: vec![None; workers],
            agreed,
            // The first snapshot is due as soon as every worker has progressed.
            agreed_at: Instant::now().checked_sub(refresh).unwrap_or_else(Instant::now),
            activators: vec![None; workers],
        };
        LiveTable { name: name.into(), schema, refresh, publishers: workers, state: Mutex::new(state) }
    }

    /// A table whose state is `batches`, complete (one publisher, already finished): for
    /// tests and for tables that do not change.
    pub fn fixed(name: impl Into<String>, schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        let t = LiveTable::new(name, schema, 1, Duration::ZERO);
        let now = Instant::now();
        let report = t.report(0, COMPLETE, now);
        debug_assert_eq!(report, Report::Build(COMPLETE));
        t.publish(0, COMPLETE, batches, now);
        t
    }

    /// How many workers publish it (global indices `0..publishers`).
    pub fn publishers(&self) -> usize {
        self.publishers
    }

    /// The table's SQL name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema of every batch.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the activator of worker `worker`'s publisher.
    pub fn register(&self, worker: usize, activator: SyncActivator) {
        self.lock().activators[worker] = Some(activator);
    }

    /// Worker `worker` reports its frontier; returns the snapshot point it should build now
    /// (its frontier has passed it and it has not built it yet), if any, and otherwise how
    /// long until a snapshot may be due (to be woken then), if one may be.
    ///
    /// Panics if `worker` is out of range (a bug in the dataflow's construction).
    pub fn report(&self, worker: usize, frontier: Time, now: Instant) -> Report {
        let mut s = self.lock();
        s.frontiers[worker] = s.frontiers[worker].max(frontier);
        self.maybe_advance(&mut s, now);
        let f = s.frontiers[worker];
        if s.target > s.agreed.frontier && s.built[worker].is_none() && f >= s.target {
            return Report::Build(s.target);
        }
        let least = s.frontiers.iter().copied().min().unwrap_or(0);
        if s.target == s.agreed.frontier && least > s.target {
            // A snapshot is only waiting for `refresh` to pass.
            return Report::WakeIn(self.refresh.saturating_sub(now.saturating_duration_since(s.agreed_at)));
        }
        Report::Idle
    }

    /// Worker `worker` publishes its part at `tag` (the target it was told to build).
    pub fn publish(&self, worker: usize, tag: Time, batches: Vec<RecordBatch>, now: Instant) {
        let mut s = self.lock();
        if tag != s.target || s.target == s.agreed.frontier {
            debug_assert!(false, "worker {worker} published {tag}, the target is {}", s.target);
            return;
        }
        s.built[worker] = Some(batches.into());
        if s.built.iter().all(Option::is_some) {
            let parts: Vec<Arc<[RecordBatch]>> = s.built.iter_mut().map(|b| b.take().unwrap_or_else(|| Arc::from(Vec::new()))).collect();
            let rows = parts.iter().flat_map(|p| p.iter()).map(|b| b.num_rows()).sum();
            s.agreed = Snapshot { frontier: tag, parts, rows };
            s.agreed_at = now;
            self.maybe_advance(&mut s, now);
        }
    }

    /// Sets the next target when the last one is agreed, progress has been made, and
    /// `refresh` has passed (at once when every worker has finished); wakes the publishers.
    fn maybe_advance(&self, s: &mut Shared, now: Instant) {
        if s.target != s.agreed.frontier {
            return; // still being built
        }
        let least = s.frontiers.iter().copied().min().unwrap_or(0);
        let due = least == COMPLETE || now.saturating_duration_since(s.agreed_at) >= self.refresh;
        if least > s.target && due {
            s.target = least;
            for a in s.activators.iter().flatten() {
                // A worker that has finished has dropped its dataflow: nothing to wake.
                let _ = a.activate();
            }
        }
    }

    /// The last agreed snapshot.
    pub fn read(&self) -> Snapshot {
        self.lock().agreed.clone()
    }
}

/// What a publisher should do after reporting its frontier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Build and publish the part at this snapshot point.
    Build(Time),
    /// Nothing now; a snapshot may be due after this long.
    WakeIn(Duration),
    /// Nothing to do until the frontier moves or another worker publishes.
    Idle,
}

/// The live tables of a pipeline, by name.
#[derive(Debug, Default, Clone)]
pub struct LiveTables {
    tables: Vec<Arc<LiveTable>>,
}

impl LiveTables {
    /// No tables.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a table; returns it.
    pub fn add(&mut self, table: LiveTable) -> Arc<LiveTable> {
        let t = Arc::new(table);
        self.tables.push(t.clone());
        t
    }
    /// The table named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<LiveTable>> {
        self.tables.iter().find(|t| t.name == name)
    }
    /// Every table, in the order added.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<LiveTable>> {
        self.tables.iter()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]))
    }

    fn batch(values: &[i64]) -> Vec<RecordBatch> {
        vec![RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()]
    }

    fn values(s: &Snapshot) -> Vec<Vec<i64>> {
        s.parts.iter().map(|p| p.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect()).collect()
    }

    #[test]
    fn snapshots_are_agreed_points_built_by_every_worker() {
        let t = LiveTable::new("x", schema(), 2, Duration::from_millis(100));
        let t0 = Instant::now();
        // Nothing until every worker has progressed.
        assert_eq!(t.report(0, 5, t0), Report::Idle);
        assert_eq!(t.read().frontier, 0);
        // Worker 1 at 4: the least frontier, 4, becomes the target; both build it.
        assert_eq!(t.report(1, 4, t0), Report::Build(4));
        assert_eq!(t.report(0, 5, t0), Report::Build(4));
        t.publish(0, 4, batch(&[1]), t0);
        assert_eq!(t.read().frontier, 0, "not agreed until every worker has published");
        // Worker 0 runs on; it must not be asked for anything before the target is agreed.
        assert_eq!(t.report(0, 12, t0), Report::Idle);
        t.publish(1, 4, batch(&[6]), t0);
        let s = t.read();
        assert_eq!((s.frontier, s.rows), (4, 2));
        assert_eq!(values(&s), vec![vec![1], vec![6]]);
        // Within `refresh` no new target, however far the workers go.
        let t1 = t0 + Duration::from_millis(30);
        assert_eq!(t.report(1, 10, t1), Report::WakeIn(Duration::from_millis(70)));
        // After it, the least frontier (10) is the next target.
        let t2 = t0 + Duration::from_millis(100);
        assert_eq!(t.report(1, 10, t2), Report::Build(10));
        assert_eq!(t.report(0, 12, t2), Report::Build(10));
        t.publish(1, 10, batch(&[6, 7]), t2);
        t.publish(0, 10, batch(&[1, 9]), t2);
        assert_eq!(values(&t.read()), vec![vec![1, 9], vec![6, 7]]);
        // Finishing is agreed at once, without waiting for `refresh`.
        assert_eq!(t.report(0, COMPLETE, t2), Report::Idle);
        assert_eq!(t.report(1, COMPLETE, t2), Report::Build(COMPLETE));
        assert_eq!(t.report(0, COMPLETE, t2), Report::Build(COMPLETE));
        t.publish(0, COMPLETE, batch(&[1, 9, 11]), t2);
        t.publish(1, COMPLETE, batch(&[]), t2);
        let s = t.read();
        assert_eq!(s.frontier, COMPLETE);
        assert_eq!(values(&s), vec![vec![1, 9, 11], vec![]]);
        assert_eq!(t.report(0, COMPLETE, t2 + Duration::from_secs(1)), Report::Idle);
    }
}
