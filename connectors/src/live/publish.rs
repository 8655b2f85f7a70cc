//! The live-table sink: keeps the latest row per key of a table-row stream and publishes it as
//! Arrow snapshots into a [`LiveTable`] at the snapshot points the workers agree on (see the
//! module above).
//!
//! Rows are exchanged by key, so all rows of a key meet on one worker, and applied in time
//! order up to the snapshot point once the frontier has passed it: a snapshot at `S` is a
//! function of the rows of times before `S` only, whatever the batching or the worker count.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use alertflow_model::tables::TableBuilder;
use arrow::record_batch::RecordBatch;
use hashbrown::HashMap;
use std::time::{Duration, Instant};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::Operator;

use super::{COMPLETE, LiveTable, Report};
use crate::{Failure, Time};

/// Rows per record batch of a snapshot.
const SNAPSHOT_BATCH_ROWS: usize = 64 * 1024;

/// How rows of one table map to live-table keys.
pub struct LatestBy<R, K> {
    /// The key: the live table holds one row per key.
    pub key: fn(&R) -> K,
    /// A stable hash of the key (rows are exchanged by it, so it must agree across processes).
    pub hash: fn(&R) -> u64,
    /// Whether `new` replaces `current` (same key). It should be a total order on the rows of
    /// a key (`>=` on a sequence number, say): the rows of one time arrive in an order that
    /// depends on the worker count, and only a total order makes the result independent of it.
    pub replaces: fn(new: &R, current: &R) -> bool,
    /// Whether a row closes its key: the key leaves the table (a resolved alert, say).
    pub closes: fn(&R) -> bool,
}

impl<R, K> Clone for LatestBy<R, K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<R, K> Copy for LatestBy<R, K> {}

/// Counters of one live table's sink, shared by its workers in this process.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Rows received.
    pub rows_in: AtomicU64,
    /// Keys held (the table's rows), all workers together.
    pub keys: AtomicI64,
    /// Snapshots built (by this process's workers).
    pub snapshots: AtomicU64,
}

/// Publishes a stream of table rows as a live table.
pub trait PublishExt<R> {
    /// Keeps the latest row per key (as `by` says) and publishes snapshots of it into `table`
    /// at the snapshot points the workers agree on.
    fn publish_latest<K, B>(self, table: Arc<LiveTable>, builder: B, by: LatestBy<R, K>, stats: Arc<LiveStats>, failure: Failure)
    where
        K: Hash + Eq + Send + 'static,
        B: TableBuilder<R>;
}

/// The latest row per key, in a vector ready to be built into batches.
struct Latest<R, K> {
    rows: Vec<R>,
    index: HashMap<K, usize>,
}

impl<R, K: Hash + Eq> Latest<R, K> {
    /// Applies the winning row of one time for `key`; returns the change in the number of keys.
    fn apply(&mut self, key: K, row: R, by: &LatestBy<R, K>) -> i64 {
        match self.index.get(&key) {
            Some(&i) => {
                if !(by.replaces)(&row, &self.rows[i]) {
                    0
                } else if (by.closes)(&row) {
                    self.index.remove(&key);
                    self.rows.swap_remove(i);
                    if let Some(moved) = self.rows.get(i) {
                        self.index.insert((by.key)(moved), i);
                    }
                    -1
                } else {
                    self.rows[i] = row;
                    0
                }
            }
            None if (by.closes)(&row) => 0,
            None => {
                self.index.insert(key, self.rows.len());
                self.rows.push(row);
                1
            }
        }
    }
}

impl<R: timely::ExchangeData> PublishExt<R> for Stream<'_, Time, Vec<R>> {
    fn publish_latest<K, B>(self, table: Arc<LiveTable>, builder: B, by: LatestBy<R, K>, stats: Arc<LiveStats>, failure: Failure)
    where
        K: Hash + Eq + Send + 'static,
        B: TableBuilder<R>,
    {
        let scope = self.scope();
        let worker = scope.index();
        let name = format!("live:{}", table.name());
        let mut state = Latest { rows: Vec::new(), index: HashMap::new() };
        let mut pending: BTreeMap<Time, Vec<R>> = BTreeMap::new();
        let mut winners: HashMap<K, R> = HashMap::new();
        // Rows go to the publishing workers only: in a cluster, the serving process's (global
        // indices 0..publishers); the others' instances receive nothing and leave at once.
        let publishers = table.publishers() as u64;
        let publishes = worker < table.publishers();
        let hash = by.hash;
        let route = move |r: &R| hash(r) % publishers;
        self.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Exchange::new(route), &name, |cap, info| {
            if publishes {
                table.register(worker, scope.worker().sync_activator_for(info.address.to_vec()));
            }
            let wake = scope.activator_for(info.address.clone());
            // Held until this worker has built the final snapshot: without it the worker
            // could leave the dataflow before the others finish, and the last snapshot
            // (every worker's part at `COMPLETE`) would never be agreed.
            let mut keep_alive = Some(cap).filter(|_| publishes);
            move |(input, frontier), _output| {
                if !publishes {
                    input.for_each(|_, _| {});
                    return;
                }
                input.for_each_stamp(|cap, data| {
                    let Some(t) = cap.least().copied() else { return };
                    let rows = pending.entry(t).or_default();
                    for batch in data {
                        stats.rows_in.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        rows.append(batch);
                    }
                });
                let now = frontier.frontier().iter().copied().min().unwrap_or(COMPLETE);
                loop {
                    match table.report(worker, now, Instant::now()) {
                        Report::Build(target) => {
                            // Only the rows of times before the snapshot point: later ones
                            // belong to the next snapshot.
                            while let Some(entry) = pending.first_entry() {
                                if *entry.key() >= target {
                                    break;
                                }
                                // Of the rows of one time, only each key's greatest (by
                                // `replaces`) counts: applying them one by one would let
                                // arrival order decide around a close.
                                for row in entry.remove() {
                                    match winners.entry((by.key)(&row)) {
                                        hashbrown::hash_map::Entry::Occupied(mut e) => {
                                            if (by.replaces)(&row, e.get()) {
                                                e.insert(row);
                                            }
                                        }
                                        hashbrown::hash_map::Entry::Vacant(e) => {
                                            e.insert(row);
                                        }
                                    }
                                }
                                let mut delta = 0;
                                for (key, row) in winners.drain() {
                                    delta += state.apply(key, row, &by);
                                }
                                stats.keys.fetch_add(delta, Ordering::Relaxed);
                            }
                            let batches = match build(&builder, &state.rows) {
                                Ok(b) => b,
                                Err(e) => {
                                    failure.set(format!("live table `{}`: cannot build a snapshot (a bug): {e}", table.name()));
                                    Vec::new()
                                }
                            };
                            stats.snapshots.fetch_add(1, Ordering::Relaxed);
                            table.publish(worker, target, batches, Instant::now());
                            if target == COMPLETE {
                                keep_alive = None;
                            }
                        }
                        Report::WakeIn(d) => {
                            wake.activate_after(d.max(Duration::from_millis(1)));
                            break;
                        }
                        Report::Idle => break,
                    }
                }
                if keep_alive.is_some() && now == COMPLETE && table.read().frontier == COMPLETE {
                    keep_alive = None;
                }
            }
        });
    }
}

fn build<R, B: TableBuilder<R>>(builder: &B, rows: &[R]) -> Result<Vec<RecordBatch>, arrow::error::ArrowError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    rows.chunks(SNAPSHOT_BATCH_ROWS).map(|c| builder.build(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alertflow_model::tables::TableBuilder;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
    use std::collections::BTreeMap as Map;
    use std::sync::Mutex;
    use timely::container::CapacityContainerBuilder;
    use timely::dataflow::operators::core::UnorderedInput;

    /// A test row: key, an ordering value, a value, and whether it closes the key.
    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Row {
        key: u32,
        seq: i64,
        value: i64,
        close: bool,
    }

    struct Rows(SchemaRef);
    impl TableBuilder<Row> for Rows {
        fn schema(&self) -> SchemaRef {
            self.0.clone()
        }
        fn sort(&self, rows: &mut [Row]) {
            rows.sort_by_key(|r| r.key);
        }
        fn build(&self, rows: &[Row]) -> Result<RecordBatch, arrow::error::ArrowError> {
            RecordBatch::try_new(
                self.0.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.key as i64))),
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.seq))),
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.value))),
                ],
            )
        }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("key", DataType::Int64, false),
            Field::new("seq", DataType::Int64, false),
            Field::new("value", DataType::Int64, false),
        ]))
    }

    const BY: LatestBy<Row, u32> = LatestBy {
        key: |r| r.key,
        hash: |r| (r.key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        replaces: |new, cur| (new.seq, new.value, new.close) >= (cur.seq, cur.value, cur.close),
        closes: |r| r.close,
    };

    /// The oracle: every row of times before `upto`, applied naively one by one in (time, seq,
    /// value, close) order.
    fn oracle(input: &[(Time, Row)], upto: Time) -> Map<u32, (i64, i64)> {
        let mut rows: Vec<&(Time, Row)> = input.iter().filter(|(t, _)| *t < upto).collect();
        rows.sort_by_key(|(t, r)| (*t, r.seq, r.value, r.close));
        let mut m = Map::new();
        for (_, r) in rows {
            let replaces = m.get(&r.key).is_none_or(|&(s, v)| (r.seq, r.value, r.close) >= (s, v, false));
            if replaces {
                if r.close {
                    m.remove(&r.key);
                } else {
                    m.insert(r.key, (r.seq, r.value));
                }
            }
        }
        m
    }

    fn table_rows(s: &super::super::Snapshot) -> Map<u32, (i64, i64)> {
        let mut m = Map::new();
        for part in &s.parts {
            for b in part.iter() {
                let (k, seq, v) = (
                    b.column(0).as_primitive::<Int64Type>(),
                    b.column(1).as_primitive::<Int64Type>(),
                    b.column(2).as_primitive::<Int64Type>(),
                );
                for i in 0..b.num_rows() {
                    assert!(m.insert(k.value(i) as u32, (seq.value(i), v.value(i))).is_none(), "a key on two workers");
                }
            }
        }
        m
    }

    fn random_input(seed: u64, n: usize) -> Vec<(Time, Row)> {
        let mut x = seed;
        let mut next = move || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        (0..n)
            .map(|i| {
                // Times mostly rising, with disorder: rows may arrive for earlier times.
                let t = (i as u64 / 50 + next() % 7).saturating_sub(3);
                let row =
                    Row { key: (next() % 97) as u32, seq: (next() % 40) as i64, value: (next() % 1000) as i64, close: next() % 11 == 0 };
                (t, row)
            })
            .collect()
    }

    /// Runs the sink on `workers` workers; worker `w` feeds rows `i` with `i % workers == w`,
    /// holding its input at the least time it may still send. Every time the table's read
    /// frontier moves, the snapshot read there is recorded.
    fn run(workers: usize, input: Vec<(Time, Row)>, refresh: Duration) -> (Arc<LiveTable>, Vec<super::super::Snapshot>) {
        let table = Arc::new(LiveTable::new("t", schema(), workers, refresh));
        let reads = Arc::new(Mutex::new(Vec::new()));
        let input = Arc::new(input);
        let (t2, r2) = (table.clone(), reads.clone());
        timely::execute(timely::Config::process(workers), move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            let table = t2.clone();
            let (mut handle, mut cap) = worker.dataflow::<Time, _, _>(|scope| {
                let (input, stream) = scope.new_unordered_input::<CapacityContainerBuilder<Vec<Row>>>();
                stream.publish_latest(table.clone(), Rows(schema()), BY, Arc::default(), Failure::new());
                input
            });
            let mine: Vec<&(Time, Row)> = input.iter().enumerate().filter(|(i, _)| i % peers == index).map(|(_, r)| r).collect();
            for (k, chunk) in mine.chunks(40).enumerate() {
                // Everything this worker still has to send is at or after `low`.
                let low = mine[k * 40..].iter().map(|(t, _)| *t).min().unwrap_or(0);
                if low > *cap.time() {
                    cap = cap.delayed(&low);
                }
                for (t, r) in chunk {
                    handle.activate().session(&cap.delayed(t)).give(r.clone());
                }
                // Let progress go round (bounded), so snapshots are agreed while input remains.
                let waited = std::time::Instant::now();
                while table.read().frontier < low && waited.elapsed() < Duration::from_millis(20) {
                    worker.step_or_park(Some(Duration::from_micros(200)));
                }
                if index == 0 {
                    let s = table.read();
                    let mut reads = r2.lock().unwrap();
                    if reads.last().is_none_or(|l: &super::super::Snapshot| l.frontier != s.frontier) {
                        reads.push(s);
                    }
                }
            }
            drop((handle, cap));
            while worker.has_dataflows() {
                worker.step_or_park(None);
            }
        })
        .unwrap()
        .join()
        .into_iter()
        .for_each(|r| r.unwrap());
        let reads = std::mem::take(&mut *reads.lock().unwrap());
        (table, reads)
    }

    #[test]
    fn matches_the_oracle_at_every_frontier_and_worker_count() {
        for (seed, refresh) in [(1, Duration::ZERO), (2, Duration::ZERO), (3, Duration::from_micros(300))] {
            let input = random_input(seed, 4000);
            let mut finals = Vec::new();
            for workers in [1, 2, 4] {
                let (table, reads) = run(workers, input.clone(), refresh);
                let last = table.read();
                assert_eq!(last.frontier, COMPLETE);
                let got = table_rows(&last);
                assert_eq!(got, oracle(&input, COMPLETE), "seed {seed}, {workers} workers: final state");
                assert!(
                    reads.len() > 3,
                    "seed {seed}, {workers} workers: the snapshot moved while the input was read ({} reads)",
                    reads.len()
                );
                // Every intermediate read is the state at its frontier: a consistent cut.
                for s in &reads {
                    assert_eq!(table_rows(s), oracle(&input, s.frontier), "seed {seed}, {workers} workers, frontier {}", s.frontier);
                }
                finals.push(got);
            }
            assert!(finals.windows(2).all(|w| w[0] == w[1]));
        }
    }
}
