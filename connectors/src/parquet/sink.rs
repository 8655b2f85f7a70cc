//! The Parquet sink operator.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use alertflow_model::tables::{Partition, TableBuilder, TableRow};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::{Compression, WriterPriority};
use crate::durable::{Durability, DurableSlot};
use crate::latency::Recorder;
use crate::{Failure, Time};

/// Rows one worker's sink holds before it writes what it has of a span as a piece (a file of
/// its own): a span of a table with ever-new keys must not grow memory without bound. With
/// [`IN_FLIGHT`] pieces queued for the writer, a worker holds up to 3 × this many rows of a
/// table: at 256 Ki, 1,000,000 alerts opening within a minute kept 180 MB of `alerts` rows;
/// at 64 Ki with 4 queued, about 100 MB more peak RSS than now. 32 Ki (with 2 queued) had
/// the same peak RSS but made the benches a third slower: the worker waits on a writer
/// busy with a bigger piece (2026-11-24).
const MAX_PENDING_ROWS: usize = 16 * 1024;

/// Counters of one table's sink, shared by its workers in this process.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Rows written.
    pub rows: AtomicU64,
    /// Files written.
    pub files: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
}

impl SinkStats {
    /// The counters, in declaration order (a cluster gathers them).
    pub fn values(&self) -> [u64; 3] {
        [&self.rows, &self.files, &self.bytes].map(|a| a.load(Ordering::Relaxed))
    }

    /// Adds the first three of `deltas` (wrapping) to the counters; returns the rest.
    pub fn add_values<'d>(&self, deltas: &'d [u64]) -> &'d [u64] {
        crate::add_values(&[&self.rows, &self.files, &self.bytes], deltas)
    }
}

/// Where and how one table is written.
pub struct ParquetSink<B> {
    /// The table's name.
    pub table: String,
    /// The table's folder, `<out>/<table>`.
    pub dir: PathBuf,
    /// Builds record batches from rows.
    pub builder: B,
    /// Codec.
    pub compression: Compression,
    /// Length of the span of timely time one file covers, in ms.
    pub span: u64,
    /// Global index of this worker.
    pub worker: usize,
    /// Whether to fsync each file before renaming it into place.
    pub fsync: bool,
    /// How the writer thread is scheduled.
    pub writers: WriterPriority,
    /// Where to report how far the table is durable (and, on a resumed run, below which rows
    /// are already written), when a source commits positions.
    pub durability: Option<Arc<Durability>>,
    /// Records each row's latency when its file is in place (`alertflow bench --rate`).
    pub latency: Option<Recorder>,
}

/// Writes a stream of table rows as Parquet.
pub trait ParquetSinkExt<R> {
    /// Buffers rows by span of timely time and writes each span's files once the frontier has
    /// passed it (at once when bounded input ends).
    fn sink_parquet<B: TableBuilder<R>>(self, sink: ParquetSink<B>, stats: Arc<SinkStats>, failure: Failure);
}

/// Spans handed to the writer thread and not written yet, at most: past that the worker waits
/// (back-pressure) rather than buffer without bound.
const IN_FLIGHT: usize = 2;

/// What the worker hands its writer thread.
enum ToWriter<R> {
    /// A complete span, or (`cut`) a span's rows before a checkpoint at `cut`.
    Span { start: u64, cut: Option<Time>, rows: Vec<R> },
    /// Everything before this checkpoint is handed over: acknowledge it once written, with the
    /// files written since the previous one.
    Mark(alertflow_checkpoint::Deferred),
    /// The input has ended and everything is handed over: once written, the files since the
    /// last mark go into the next checkpoint.
    Finish(alertflow_checkpoint::Finisher),
}

/// What the worker and its writer thread share: spans in flight, and how far the worker side
/// (input frontier, spans still filling) allows the durable frontier to go.
struct Progress {
    in_flight: std::collections::VecDeque<u64>,
    worker_bound: Time,
}

impl Progress {
    /// Durable: everything before the worker's bound that is not in a span still being written.
    fn durable(&self) -> Time {
        self.in_flight.front().map_or(self.worker_bound, |&s| self.worker_bound.min(s))
    }
}

impl<R: TableRow> ParquetSinkExt<R> for Stream<'_, Time, Vec<R>> {
    fn sink_parquet<B: TableBuilder<R>>(self, sink: ParquetSink<B>, stats: Arc<SinkStats>, failure: Failure) {
        let name = format!("sink:{}", sink.table);
        let table = sink.table.clone();
        let span = sink.span.max(1);
        let durability = sink.durability.clone();
        let slot = durability.as_ref().map(|d| d.slot());
        let progress = Arc::new(Mutex::new(Progress { in_flight: Default::default(), worker_bound: 0 }));
        // Encoding, compressing and fsyncing a span's files runs on a writer thread of its own
        // (started with the first span), not on the worker: a worker that wrote inline stalled
        // every operator it runs for as long as the write took — at 100,000 alerts/s, the
        // incidents table's fingerprint lists took a worker away for 100–300 ms each second.
        let mut ckpt = alertflow_checkpoint::register(&format!("sink:{}", sink.table), sink.worker);
        // Rows wait by span start, or with checkpoints by their own time: a checkpoint inside
        // a span cuts it there.
        let keyed_by_time = ckpt.is_some();
        let mut writer = Some((sink, stats, failure.clone(), progress.clone(), slot.clone()));
        let mut to_writer: Option<WriterThread<R>> = None;
        let mut pending: BTreeMap<u64, Vec<R>> = BTreeMap::new();
        // Rows in `pending`, and the name of the last piece written early (see below).
        let mut pending_rows = 0usize;
        let mut last_piece: Option<u64> = None;
        self.sink(Pipeline, &name, move |(input, frontier)| {
            let floor = durability.as_ref().map_or(0, |d| d.resume_floor());
            input.for_each_stamp(|cap, data| {
                let Some(t) = cap.least().copied() else { return };
                if t < floor {
                    return; // written by the run this one resumes (whole spans: see `Durability`)
                }
                let rows = pending.entry(if keyed_by_time { t } else { t - t % span }).or_default();
                for batch in data {
                    pending_rows += batch.len();
                    rows.append(batch);
                }
            });
            let mut send = |to_writer: &mut Option<WriterThread<R>>, msg: ToWriter<R>, start: Option<u64>| {
                if to_writer.is_none()
                    && let Some(w) = writer.take()
                {
                    *to_writer = Some(spawn_writer(w));
                }
                if let Some(tx) = to_writer.as_ref().and_then(|w| w.tx.as_ref()) {
                    if let Some(start) = start {
                        lock(&progress).in_flight.push_back(start);
                    }
                    // Fails only if the writer thread is gone, which it reports itself.
                    let _ = tx.send(msg);
                }
            };
            loop {
                // A checkpoint the frontier has passed: the files up to it are written first.
                let cut = ckpt.as_ref().and_then(|p| p.pending()).filter(|&b| frontier.frontier().iter().all(|f| *f >= b));
                // Complete spans (ending at the checkpoint at the latest: a file holding rows
                // from both sides of it would be committed with rows the restored run writes
                // again, under the same name).
                while let Some((&first, _)) = pending.first_key_value() {
                    let start = first - first % span;
                    let end = start.saturating_add(span);
                    if frontier.less_than(&end) || cut.is_some_and(|b| end > b) {
                        break;
                    }
                    let rows = take_before(&mut pending, end);
                    pending_rows -= rows.len();
                    if failure.is_set() {
                        continue; // the run is failing: drop, do not write past the fault
                    }
                    send(&mut to_writer, ToWriter::Span { start, cut: None, rows }, Some(start));
                }
                // Then what comes before the checkpoint in the span it falls in goes to a file
                // of its own, and the checkpoint is acknowledged once that (and everything
                // before) is written.
                let (Some(b), Some(p)) = (cut, ckpt.as_mut()) else { break };
                if failure.is_set() {
                    break;
                }
                let rows = take_before(&mut pending, b);
                pending_rows -= rows.len();
                if let Some(first) = rows.first().map(|_| pending_start(b, span)) {
                    send(&mut to_writer, ToWriter::Span { start: first, cut: Some(b), rows }, Some(first));
                }
                if let Some(mark) = p.hand_off(b) {
                    if to_writer.is_some() {
                        send(&mut to_writer, ToWriter::Mark(mark), None);
                    } else {
                        mark.ack(Vec::new()); // nothing was ever written
                    }
                }
            }
            // Bounded memory: a span whose rows pile up (a table with ever-new keys) is written
            // in pieces of its own rather than held whole. With checkpoints a piece holds only
            // rows before the frontier (every checkpoint still to come is at or after it, so no
            // piece straddles one) and is named by that bound; without, the span's rows so far,
            // named by a number that only grows. Not when a Kafka source resumes by whole spans
            // (`durability`): there a span must be one file.
            if pending_rows >= MAX_PENDING_ROWS
                && slot.is_none()
                && !failure.is_set()
                && let Some((&first, _)) = pending.first_key_value()
            {
                let f = frontier.frontier().iter().copied().min().unwrap_or(Time::MAX);
                let start = first - first % span;
                let name = if keyed_by_time {
                    ckpt.as_ref().and_then(|p| p.pending()).map_or(f, |b| b.min(f)).min(start.saturating_add(span))
                } else {
                    last_piece.map_or(f, |l| f.max(l + 1))
                };
                // A name is used once (a frontier that has not moved since the last piece
                // waits for the next activation).
                if last_piece.is_none_or(|l| name > l) {
                    let rows = if keyed_by_time { take_before(&mut pending, name) } else { pending.remove(&first).unwrap_or_default() };
                    pending_rows -= rows.len();
                    if !rows.is_empty() {
                        last_piece = Some(name);
                        send(&mut to_writer, ToWriter::Span { start, cut: Some(name), rows }, Some(start));
                    }
                }
            }
            let done = frontier.is_empty() && pending.is_empty();
            // The input has ended: with checkpoints, what the last files were goes into the
            // next checkpoint, and later ones count this sink as done.
            if done
                && !failure.is_set()
                && let Some(p) = ckpt.take()
            {
                match to_writer.as_ref().and_then(|w| w.tx.as_ref()) {
                    Some(tx) => {
                        let _ = tx.send(ToWriter::Finish(p.finisher()));
                    }
                    None => p.finisher().finish(Vec::new()),
                }
            }
            if done && let Some(w) = to_writer.take() {
                // The input has ended: every span is handed over; wait until it is written, so
                // the run ends with its files in place.
                if !w.join() {
                    failure.set(format!("sink `{table}`: the writer thread panicked (a bug)"));
                }
            }
            if let Some(slot) = &slot
                && !failure.is_set()
            {
                let f = frontier.frontier().iter().copied().min().unwrap_or(Time::MAX);
                let mut p = lock(&progress);
                p.worker_bound = pending.keys().next().map_or(f, |k| f.min(k - k % span));
                slot.set(p.durable());
            }
        });
    }
}

/// A sink's writer thread, joined when dropped. A run that fails or stops drops its dataflow
/// with spans still queued; the writer skips them (it sees the failure), but one may be half
/// written. Joining makes the run return only once no writer is left: otherwise a next run in
/// the same process (or its recovery, which removes uncommitted files) raced the old writer
/// for the same file names.
struct WriterThread<R> {
    tx: Option<SyncSender<ToWriter<R>>>,
    handle: Option<JoinHandle<()>>,
}

impl<R> WriterThread<R> {
    /// Closes the hand-over and waits for the thread; `false` if it panicked.
    fn join(mut self) -> bool {
        self.tx = None;
        self.handle.take().is_none_or(|h| h.join().is_ok())
    }
}

impl<R> Drop for WriterThread<R> {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Takes the pending rows before `end`, in time order.
pub(crate) fn take_before<R>(pending: &mut BTreeMap<u64, Vec<R>>, end: u64) -> Vec<R> {
    let later = pending.split_off(&end);
    let mut rows = Vec::new();
    for (_, mut r) in std::mem::replace(pending, later) {
        if rows.is_empty() {
            rows = r;
        } else {
            rows.append(&mut r);
        }
    }
    rows
}

/// The start of the span that rows just before `b` belong to.
fn pending_start(b: u64, span: u64) -> u64 {
    let t = b.saturating_sub(1);
    t - t % span
}

/// Makes the calling thread yield to the workers (see [`WriterPriority`]): files are written
/// when a core is free rather than taking one from a worker, whose stalls are every
/// operator's latency. The bounded hand-over keeps the writer from falling behind for good:
/// a worker with spans waiting blocks, and the writer runs, at nice +10 with its share of a
/// busy host, under `SCHED_IDLE` only once nothing else wants the core. (Linux only;
/// elsewhere a no-op.)
fn lower_priority(priority: WriterPriority) {
    #[cfg(target_os = "linux")]
    {
        // Per thread on Linux: the id is the thread's, not the process's. nice +10 first, so
        // that a host which refuses `SCHED_IDLE` (a seccomp profile) still gets `low`.
        let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10);
        if priority == WriterPriority::Idle {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: a system call on the calling thread (pid 0) with a valid parameter,
            // which only lowers its own priority; no memory is shared with the kernel after
            // it returns. Failure leaves the thread at nice +10.
            #[allow(unsafe_code)]
            let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = priority;
}

fn lock(p: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

type WriterParts<B> = (ParquetSink<B>, Arc<SinkStats>, Failure, Arc<Mutex<Progress>>, Option<DurableSlot>);

/// Starts the writer thread of one sink on one worker: it writes spans in the order sent.
fn spawn_writer<R: TableRow, B: TableBuilder<R>>(parts: WriterParts<B>) -> WriterThread<R> {
    let (mut sink, stats, failure, progress, slot) = parts;
    let (tx, rx) = sync_channel::<ToWriter<R>>(IN_FLIGHT);
    let handle = std::thread::Builder::new()
        .name(format!("parquet:{}:{}", sink.table, sink.worker))
        .spawn(move || {
            lower_priority(sink.writers);
            let mut latency = sink.latency.take();
            // Files written since the last checkpoint mark, relative to the output folder.
            let mut written: Vec<String> = Vec::new();
            for msg in rx {
                let (start, cut, rows) = match msg {
                    ToWriter::Span { start, cut, rows } => (start, cut, rows),
                    ToWriter::Mark(mark) => {
                        if !failure.is_set() {
                            mark.ack(std::mem::take(&mut written));
                        }
                        continue;
                    }
                    ToWriter::Finish(finisher) => {
                        if !failure.is_set() {
                            finisher.finish(std::mem::take(&mut written));
                        }
                        continue;
                    }
                };
                if failure.is_set() {
                    continue; // drop, as the worker does
                }
                if let Err(e) = write_span(&sink, start, cut, rows, &stats, latency.as_mut(), &mut written) {
                    failure.set(format!("sink `{}`: {e}", sink.table));
                    continue;
                }
                let mut p = lock(&progress);
                p.in_flight.pop_front();
                if let Some(slot) = &slot {
                    slot.set(p.durable());
                }
            }
        })
        .expect("spawn a Parquet writer thread");
    WriterThread { tx: Some(tx), handle: Some(handle) }
}

#[allow(clippy::too_many_arguments)]
fn write_span<R: TableRow, B: TableBuilder<R>>(
    sink: &ParquetSink<B>,
    span_start: u64,
    cut: Option<Time>,
    rows: Vec<R>,
    stats: &SinkStats,
    mut latency: Option<&mut Recorder>,
    files: &mut Vec<String>,
) -> Result<(), String> {
    // A span almost always lies in one partition (an hour): then its rows are written as they
    // are. Regrouping them always held a second, growing copy of the span (33 MB at 1,000,000
    // open alerts).
    let first = rows.first().map(|r| r.partition());
    let by_part: Vec<(Partition, Vec<R>)> = match first {
        None => Vec::new(),
        Some(p) if rows.iter().all(|r| r.partition() == p) => vec![(p, rows)],
        Some(_) => {
            let mut by_part: BTreeMap<Partition, Vec<R>> = BTreeMap::new();
            for r in rows {
                by_part.entry(r.partition()).or_default().push(r);
            }
            by_part.into_iter().collect()
        }
    };
    for (part, mut rows) in by_part {
        sink.builder.sort(&mut rows);
        // A span cut by a checkpoint has a file per piece: the cut names all but the last.
        let name = match cut {
            None => format!("part-{:04}-{span_start}.parquet", sink.worker),
            Some(c) => format!("part-{:04}-{span_start}-{c}.parquet", sink.worker),
        };
        let path = sink.dir.join(part.path()).join(&name);
        let len = super::write_file(&path, &sink.builder, &rows, sink.compression, sink.fsync)?;
        files.push(format!("{}/{}/{name}", sink.table, part.path()));
        stats.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
        stats.files.fetch_add(1, Ordering::Relaxed);
        stats.bytes.fetch_add(len, Ordering::Relaxed);
        if let Some(l) = latency.as_deref_mut() {
            l.record(std::time::Instant::now(), &rows);
        }
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// (policy, nice) of a fresh thread after `lower_priority`, from `/proc/thread-self/stat`
    /// (fields 41 and 19, counted from 1; fields from the third follow the `)` of the name).
    fn scheduled_as(priority: WriterPriority) -> (u32, i32) {
        std::thread::spawn(move || {
            lower_priority(priority);
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
            (fields[41 - 3].parse().unwrap(), fields[19 - 3].parse().unwrap())
        })
        .join()
        .unwrap()
    }

    #[test]
    fn writer_threads_run_idle_or_at_nice_ten_as_configured() {
        const SCHED_OTHER: u32 = 0;
        const SCHED_IDLE: u32 = 5;
        assert_eq!(scheduled_as(WriterPriority::Low), (SCHED_OTHER, 10));
        assert_eq!(scheduled_as(WriterPriority::Idle).0, SCHED_IDLE);
    }
}
