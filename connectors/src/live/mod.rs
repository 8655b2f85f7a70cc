//! Live tables: the current state of the running dataflow, readable by SQL while it runs
//! (DESIGN §6).
//!
//! Worker state is not `Sync`, so workers do not share it: each **publishes immutable Arrow
//! snapshots** of its part of a table into a [`LiveTable`], each tagged with the timely time it
//! is valid from. A reader takes one snapshot per worker **at one frontier**: `F`, the least
//! frontier any worker has reported, and from each worker the newest snapshot valid at `F`.
//! Every worker's state at `F` holds exactly the rows of times before `F`, so the parts fit
//! together into the state of the whole table at `F`: a consistent cut, never one worker's
//! newer rows beside another's older ones.
//!
//! Snapshots are versioned by the time of the rows they contain: after applying the rows of
//! time `t` a worker's state is valid from `t + 1`, until the next time it has rows for. A
//! worker whose frontier moved from 8 to 12 with rows at 9 and 11 publishes versions tagged 10
//! and 12, so a reader at `F = 10` (another worker still at 10) finds the right one. Versions
//! that no reader can need any more (older than the newest one at or before the least
//! frontier) are dropped on every publish, so a table holds one version per worker plus those
//! of workers that are ahead.
//!
//! [`publish`] is the dataflow operator that keeps the latest row per key of any table-row
//! stream and publishes it here.

pub mod publish;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

pub use publish::{LatestBy, LiveStats, PublishExt};

use crate::Time;

/// The frontier of a worker that has finished: every time is complete.
pub const COMPLETE: Time = Time::MAX;

/// One table of live state, shared by the workers that publish it and the queries that read it.
#[derive(Debug)]
pub struct LiveTable {
    name: String,
    schema: SchemaRef,
    workers: Mutex<Vec<WorkerSnapshots>>,
}

#[derive(Debug, Default)]
struct WorkerSnapshots {
    /// Every time before it is complete on this worker (0 until the worker first reports).
    frontier: Time,
    /// Versions by ascending tag; the first may be older than the read frontier.
    versions: VecDeque<Version>,
}

#[derive(Debug, Clone)]
struct Version {
    /// The least frontier at which the version is this worker's state.
    tag: Time,
    batches: Arc<[RecordBatch]>,
    rows: usize,
}

/// What a reader sees: every worker's part of the table at one frontier.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The frontier the parts were read at: they hold the rows of every time before it
    /// ([`COMPLETE`] once every worker has finished).
    pub frontier: Time,
    /// One list of batches per worker.
    pub parts: Vec<Arc<[RecordBatch]>>,
    /// Rows in all parts.
    pub rows: usize,
}

impl LiveTable {
    /// An empty table published by `workers` workers (global worker count).
    pub fn new(name: impl Into<String>, schema: SchemaRef, workers: usize) -> Self {
        let workers = (0..workers.max(1)).map(|_| WorkerSnapshots::default()).collect();
        LiveTable { name: name.into(), schema, workers: Mutex::new(workers) }
    }

    /// The table's SQL name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema of every batch.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Publishes worker `worker`'s progress: its frontier, and the versions of its state made
    /// since its last publication (tags ascending, each at most `frontier`).
    ///
    /// Panics if `worker` is out of range (a bug in the dataflow's construction).
    pub fn publish(&self, worker: usize, frontier: Time, versions: Vec<(Time, Vec<RecordBatch>)>) {
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        let w = &mut workers[worker];
        w.frontier = w.frontier.max(frontier);
        for (tag, batches) in versions {
            debug_assert!(tag <= frontier, "a version cannot be valid beyond its worker's frontier");
            let rows = batches.iter().map(|b| b.num_rows()).sum();
            // Two versions with one tag (a republication): the later one wins.
            if w.versions.back().is_some_and(|v| v.tag >= tag) {
                w.versions.pop_back();
            }
            w.versions.push_back(Version { tag, batches: batches.into(), rows });
        }
        let read_at = workers.iter().map(|w| w.frontier).min().unwrap_or(0);
        for w in workers.iter_mut() {
            // Keep the newest version valid at `read_at` and everything newer.
            while w.versions.len() >= 2 && w.versions[1].tag <= read_at {
                w.versions.pop_front();
            }
        }
    }

    /// The table at the least frontier of its workers.
    pub fn read(&self) -> Snapshot {
        let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        let frontier = workers.iter().map(|w| w.frontier).min().unwrap_or(0);
        let mut parts = Vec::with_capacity(workers.len());
        let mut rows = 0;
        for w in workers.iter() {
            match w.versions.iter().rev().find(|v| v.tag <= frontier) {
                Some(v) => {
                    rows += v.rows;
                    parts.push(v.batches.clone());
                }
                None => parts.push(Arc::from(Vec::new())),
            }
        }
        Snapshot { frontier, parts, rows }
    }

    /// Versions held in all (a measure of how far apart the workers are).
    pub fn versions_held(&self) -> usize {
        self.workers.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|w| w.versions.len()).sum()
    }
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
    fn reads_every_worker_at_the_least_frontier() {
        let t = LiveTable::new("x", schema(), 2);
        // Nothing until every worker has reported.
        t.publish(0, 5, vec![(3, batch(&[1]))]);
        let s = t.read();
        assert_eq!((s.frontier, s.rows), (0, 0));
        // Worker 1 at 4: worker 0's version of tag 3 is its state at 4.
        t.publish(1, 4, vec![]);
        let s = t.read();
        assert_eq!(s.frontier, 4);
        assert_eq!(values(&s), vec![vec![1], vec![]]);
        // Worker 0 runs ahead to 12 with rows at 9 and 11: a reader at 10 must see the
        // version of time 9 (tag 10), not the newer one.
        t.publish(0, 12, vec![(10, batch(&[1, 9])), (12, batch(&[1, 9, 11]))]);
        t.publish(1, 10, vec![(7, batch(&[6]))]);
        let s = t.read();
        assert_eq!(s.frontier, 10);
        assert_eq!(values(&s), vec![vec![1, 9], vec![6]]);
        // Versions no reader can need are gone: worker 0 keeps tags 10 and 12, worker 1 tag 7.
        assert_eq!(t.versions_held(), 3);
        t.publish(1, COMPLETE, vec![]);
        t.publish(0, COMPLETE, vec![]);
        let s = t.read();
        assert_eq!(s.frontier, COMPLETE);
        assert_eq!(values(&s), vec![vec![1, 9, 11], vec![6]]);
        assert_eq!(t.versions_held(), 2);
    }

    #[test]
    fn a_republished_tag_replaces_the_version() {
        let t = LiveTable::new("x", schema(), 1);
        t.publish(0, 3, vec![(3, batch(&[1]))]);
        t.publish(0, 3, vec![(3, batch(&[2]))]);
        assert_eq!(values(&t.read()), vec![vec![2]]);
    }
}
