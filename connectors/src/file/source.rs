//! The file source operator: reads this worker's partitions one after another, decodes them,
//! and emits records (metric points or alerts, see [`FileRecord`]) at their event-time epoch
//! and dead letters (bad and late records).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use alertflow_model::dead_letter::{DeadLetter, LATE, MAX_RAW_BYTES};
use alertflow_model::decode::{DecodeError, is_blank, trim_line};
use alertflow_model::time::{DurationMs, floor_to, wall_now};
use parquet::arrow::arrow_reader::ParquetRecordBatchReader;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};

use super::chunk::{ChunkReader, Line, count_newlines};
use super::parquet_rows::{Columns, open_row_group};
use super::records::FileRecord;
use super::{FileSource, Format, PartKind, Partition, PlannedFile, ReplayOrigin, SourceStats};
use crate::backlog::{Backlog, Pacer, released_per_worker};
use crate::time_bounds::{Rejected, drain_rejected};
use crate::{Failure, Time};

/// Lines decoded per activation before the source yields to the rest of the dataflow.
const LINES_PER_ACTIVATION: usize = 32 * 1024;
/// Read size of the chunk reader.
const READ_BLOCK: usize = 256 << 10;
/// Records buffered under one time before they are sent on.
const BATCH: usize = 1024;
/// The smallest capacity a new batch starts with.
const MIN_BATCH: usize = 16;

/// Builds the file source on this worker: the records and the dead letters.
pub fn file_source<'s, R: FileRecord>(
    scope: Scope<'s, Time>,
    source: Arc<FileSource>,
    epoch: DurationMs,
    stats: Arc<SourceStats>,
    failure: Failure,
    origin: Arc<ReplayOrigin>,
    backlog: Option<Backlog>,
) -> (Stream<'s, Time, Vec<R>>, Stream<'s, Time, Vec<DeadLetter>>) {
    let mut builder = OperatorBuilder::new(format!("source:{}", source.name), scope);
    let info = builder.operator_info();
    let activator = scope.activator_for(info.address.clone());
    let (points_out, points) = builder.new_output::<Vec<R>>();
    let (dead_out, dead) = builder.new_output::<Vec<DeadLetter>>();
    let mut points_out = OutputBuilder::<Time, CapacityContainerBuilder<Vec<R>>>::from(points_out);
    let mut dead_out = OutputBuilder::<Time, CapacityContainerBuilder<Vec<DeadLetter>>>::from(dead_out);
    let (index, peers) = (scope.index(), scope.peers());
    let epoch = epoch.millis().max(1) as i64;

    let mut ckpt = alertflow_checkpoint::register_source(&format!("source:{}", source.name), index);
    builder.build(move |mut caps| {
        let mut dead_cap = caps.pop();
        let mut points_cap = caps.pop();
        // Replay pacing: this worker's share of the rate is its share of the partitions, so
        // the whole source reads at `replay_rate` however the partitions fall on workers. The
        // clock starts at the run's replay origin (the first paced read of any source).
        let mine = (0..source.partitions.len()).filter(|k| k % peers == index).count();
        let share = mine as f64 / source.partitions.len().max(1) as f64;
        let pace = source.replay_rate.map(|r| (r as f64 * share).max(1.0));
        let mut lines_read = 0u64;
        let mut pacer = Pacer::new(backlog, released_per_worker(peers, LINES_PER_ACTIVATION as u64));
        let mut reader = WorkerReader::<R>::new(source, index, peers);
        if let Some(p) = ckpt.as_mut() {
            reader.interval = p.interval();
            match p.restore::<ReplayPos>() {
                Ok(Some(pos)) => {
                    if let Err(e) = reader.resume(pos, p.resumed_at()) {
                        p.fail(e);
                    }
                }
                Ok(None) => {}
                Err(e) => p.fail(e),
            }
        }
        move |_frontiers| {
            let (Some(pcap), Some(dcap)) = (points_cap.as_mut(), dead_cap.as_mut()) else {
                return;
            };
            if pacer.should_wait(*pcap.time()) {
                // The pipeline is behind what this source sent: read on once it has caught
                // up (see `backlog`).
                activator.activate_after(std::time::Duration::from_micros(100));
                save_position(ckpt.as_mut(), &mut reader);
                return;
            }
            let mut work = Work { floor: reader.floor, ..Work::default() };
            let mut limit = LINES_PER_ACTIVATION;
            if let Some(rate) = pace {
                let elapsed = origin.start().elapsed().as_secs_f64();
                let allowed = (elapsed * rate) as u64;
                limit = limit.min(allowed.saturating_sub(lines_read) as usize);
                if limit == 0 {
                    // Wake when the next line is due, but at most every 250 µs: a line waits
                    // at most that long past its time (the latency bench counts it).
                    let due = (lines_read + 1) as f64 / rate - elapsed;
                    let wait = std::time::Duration::from_secs_f64(due.clamp(250e-6, 5e-3));
                    activator.activate_after(wait);
                    return;
                }
            }
            let before = work.records;
            let more = if failure.is_set() { false } else { reader.step(&mut work, epoch, &failure, limit) };
            lines_read += (work.records - before).max(1);

            {
                let mut out = points_out.activate();
                for (t, batch) in work.points.iter_mut() {
                    if !batch.is_empty() {
                        pacer.sent(*t, batch.len() as u64);
                        let cap: Capability<Time> = pcap.delayed(t);
                        out.session(&cap).give_container(batch);
                    }
                }
            }
            if !work.timed_dead.is_empty() {
                let mut out = dead_out.activate();
                for (t, d) in work.timed_dead.drain(..) {
                    out.session(&dcap.delayed(&t.max(*dcap.time()))).give(d);
                }
            }
            stats.records.fetch_add(work.records, Ordering::Relaxed);
            stats.emitted.fetch_add(work.emitted, Ordering::Relaxed);
            stats.dead_letters.fetch_add(work.bad, Ordering::Relaxed);
            stats.late.fetch_add(work.late, Ordering::Relaxed);
            stats.bytes.fetch_add(work.bytes, Ordering::Relaxed);

            if more {
                // A restored source emits nothing before the checkpoint it resumes from.
                if let Some(t) = reader.hold_time(epoch).map(|t| t.max(reader.floor))
                    && t > *pcap.time()
                {
                    // Published before the downgrade: see `alertflow_checkpoint`. In a cluster
                    // the checkpoints may hold it back (at their horizon): asked again next time.
                    let t = ckpt.as_ref().map_or(t, |p| p.advance(t));
                    if t > *pcap.time() {
                        pcap.downgrade(&t);
                        dcap.downgrade(&t);
                    }
                }
                activator.activate();
            } else {
                // In a cluster, a source that is done drops its capability only once the
                // checkpoints' horizon is past the last time it emitted at (see
                // `alertflow_checkpoint`): until then it holds it as far as it may, and asks.
                let end = reader.emitted_max.saturating_add(1);
                let allowed = ckpt.as_ref().filter(|_| !failure.is_set()).map_or(end, |p| p.advance(end));
                if allowed < end {
                    if allowed > *pcap.time() {
                        pcap.downgrade(&allowed);
                        dcap.downgrade(&allowed);
                    }
                    activator.activate_after(std::time::Duration::from_millis(1));
                } else {
                    // Done (not cut short by a failure, which must not pass for the end of
                    // the input): later checkpoints get their replay positions from the log.
                    if let Some(p) = ckpt.as_mut().filter(|_| !failure.is_set()) {
                        p.source_done(reader.emitted_max);
                        p.finish(&reader.crossings, &ReplayPos::end(&reader));
                    }
                    points_cap = None;
                    dead_cap = None;
                    return;
                }
            }
            save_position(ckpt.as_mut(), &mut reader);
        }
    });
    (points, dead)
}

/// Saves the replay position of the pending checkpoint `b`, if any: the first line that
/// emitted at or after `b`. Known once a line has, or when the source is done.
fn save_position<R: FileRecord>(ckpt: Option<&mut alertflow_checkpoint::Participant>, reader: &mut WorkerReader<R>) {
    if let Some(p) = ckpt
        && let Some(b) = p.pending()
        && let Some(i) = reader.crossings.iter().position(|(hi, _)| *hi >= b)
    {
        p.save(b, &reader.crossings[i].1);
        reader.crossings.drain(..i);
    }
}

/// What one activation produced.
pub(crate) struct Work<R> {
    /// Points by timely time, in batches of at most [`BATCH`]: a few distinct times per
    /// activation. Small batches keep allocations in the allocator's reusable size classes
    /// (large fresh buffers cost page faults, which dominated an early profile).
    pub(crate) points: Vec<(Time, Vec<R>)>,
    /// Dead letters with the time of their line (the file source: a time that depends only
    /// on the data, so a restored source gives each the same time).
    pub(crate) timed_dead: Vec<(Time, DeadLetter)>,
    /// Points and dead letters before this time are dropped: a restored source's output
    /// before its checkpoint is in the operators' state and the written tables already.
    pub(crate) floor: Time,
    /// The latest time the current line emitted at (the file source's replay log).
    pub(crate) line_max: Time,
    pub(crate) records: u64,
    pub(crate) emitted: u64,
    pub(crate) bad: u64,
    pub(crate) late: u64,
    pub(crate) bytes: u64,
}

impl<R> Default for Work<R> {
    fn default() -> Self {
        Work { points: Vec::new(), timed_dead: Vec::new(), floor: 0, line_max: 0, records: 0, emitted: 0, bad: 0, late: 0, bytes: 0 }
    }
}

impl<R> Work<R> {
    #[inline]
    pub(crate) fn push(&mut self, t: Time, m: R) {
        self.line_max = self.line_max.max(t);
        if t < self.floor {
            return;
        }
        // Look from the newest batch back: consecutive points share an epoch.
        for (bt, b) in self.points.iter_mut().rev() {
            if *bt == t {
                if b.len() < BATCH {
                    b.push(m);
                    return;
                }
                break;
            }
        }
        // Sized like the newest batch (the stream's density per epoch), not a full BATCH: sparse
        // data spread over many epochs (a few points a second over hours) would otherwise hold
        // a mostly empty 48 KiB batch per epoch — hundreds of MiB for a 1.5 MB file.
        let hint = self.points.last().map_or(MIN_BATCH, |(_, b)| b.len());
        let mut b = Vec::with_capacity(hint.clamp(MIN_BATCH, BATCH));
        b.push(m);
        self.points.push((t, b));
    }
}

impl<R> Work<R> {
    /// A dead letter of a line whose emissions may start at `t`.
    pub(crate) fn dead_at(&mut self, t: Time, d: DeadLetter) {
        self.line_max = self.line_max.max(t);
        if t >= self.floor {
            self.timed_dead.push((t, d));
        }
    }
}

impl<R: FileRecord> Work<R> {
    /// Sends a record accepted late (policy `update`) at the epoch of its partition's
    /// watermark — the earliest time the partition can still emit at, so the source's
    /// capability allows it, and a time that depends only on the partition's data.
    pub(crate) fn push_late(&mut self, max_ts: Option<i64>, low: i64, ooo: i64, epoch: i64, mut r: R) {
        let wm = max_ts.map_or(low, |m| (m - ooo).max(low));
        r.mark_late();
        self.emitted += 1;
        self.push(floor_to(wm.max(0), epoch) as Time, r);
    }
}

/// Where a restored source starts reading again (a source's part of a checkpoint): the line
/// from which it emitted at or after the checkpoint first, with the partition's watermark state
/// before that line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ReplayPos {
    /// Index of the partition among this worker's, in read order (all of them: done).
    next: usize,
    /// Its id, to check the input was planned the same way.
    part: Option<u32>,
    /// Where in it (`None`: from its start).
    at: Option<At>,
    /// The latest time the worker had emitted at before.
    emitted_max: Time,
}

/// A line inside a partition, with the partition's state before it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct At {
    /// File offset of the line (lines; unused for Parquet rows).
    offset: u64,
    /// Index of the line or row in the partition.
    pos: u64,
    max_ts: Option<i64>,
    low: i64,
}

impl ReplayPos {
    fn end<R: FileRecord>(r: &WorkerReader<R>) -> ReplayPos {
        ReplayPos { next: r.total, part: None, at: None, emitted_max: r.emitted_max }
    }
}

/// The partition being read.
struct Active {
    part: Partition,
    /// Its index among this worker's partitions.
    index: usize,
    /// Index of the reader's first line in the partition (a restored partition starts inside).
    pos_base: u64,
    /// Rows to skip first (a restored Parquet row group).
    skip_to: u64,
    input: Input,
    /// The least event time the partition may still emit, from before it started (see
    /// [`WorkerReader::peek_low`]).
    low: i64,
    /// Largest event time seen in the partition.
    max_ts: Option<i64>,
    /// Index of the next line/row inside the partition.
    pos: u64,
    /// Lines of the file before the chunk's first line, once counted (for dead letters).
    lines_before: Option<u64>,
}

enum Input {
    Lines { reader: ChunkReader, format: Format, csv: Option<usize>, skip_header: bool, last_pos: u64 },
    Parquet { reader: ParquetRecordBatchReader, first_row: u64, bytes: u64 },
    Unreadable(String),
}

/// A file and what its CSV header told (or why it is unusable).
type CsvHeaderOf<R> = (Arc<PlannedFile>, Result<<R as FileRecord>::CsvHeader, DecodeError>);

/// Per-worker state of the source.
struct WorkerReader<R: FileRecord> {
    source: Arc<FileSource>,
    /// Partitions not started yet, with the least event time each may emit (once peeked).
    queue: VecDeque<(Partition, i64)>,
    peeked: bool,
    active: Option<Active>,
    dec: R::Decoder,
    /// CSV headers by file.
    csv: Vec<CsvHeaderOf<R>>,
    /// A line's late (`None`) and out-of-bounds (the reason) records: (event time, reason).
    rejected: Rejected,
    /// Newline counts known so far per file: (offset, newlines before it).
    line_marks: HashMap<usize, (u64, u64)>,
    /// The read buffer, handed from chunk to chunk.
    spare: Option<Vec<u8>>,
    /// This worker's partitions in all, and how many were taken from the queue.
    total: usize,
    taken: usize,
    /// Checkpoints: their interval (0: none), the latest time emitted at, and the replay
    /// position of each interval boundary crossed: `(hi, pos)` is where the emitted time first
    /// reached the boundaries up to `hi`.
    pub(crate) interval: Time,
    emitted_max: Time,
    pub(crate) crossings: Vec<(Time, ReplayPos)>,
    /// Emissions before this time are dropped (see [`Work::floor`]).
    pub(crate) floor: Time,
    /// A restored partition to open first, with where to start in it.
    resume_at: Option<(Partition, At)>,
}

impl<R: FileRecord> WorkerReader<R> {
    fn new(source: Arc<FileSource>, index: usize, peers: usize) -> Self {
        let queue: VecDeque<(Partition, i64)> =
            source.partitions.iter().enumerate().filter(|(k, _)| k % peers == index).map(|(_, p)| (p.clone(), 0)).collect();
        let total = queue.len();
        WorkerReader {
            source,
            queue,
            peeked: false,
            active: None,
            dec: R::decoder(),
            csv: Vec::new(),
            rejected: Vec::new(),
            line_marks: HashMap::new(),
            spare: None,
            total,
            taken: 0,
            interval: 0,
            emitted_max: 0,
            crossings: Vec::new(),
            floor: 0,
            resume_at: None,
        }
    }

    /// Restores a checkpoint's replay position (`at` is the checkpoint's time).
    fn resume(&mut self, pos: ReplayPos, at: Time) -> Result<(), String> {
        if pos.next > self.total {
            return Err(format!(
                "source `{}`: the checkpoint resumes at partition {} of {} on this worker: the input files changed",
                self.source.name, pos.next, self.total
            ));
        }
        self.queue.drain(..pos.next);
        self.taken = pos.next;
        self.floor = at;
        self.emitted_max = pos.emitted_max;
        if let Some(a) = pos.at {
            let Some((part, _)) = self.queue.pop_front() else { unreachable!("checked above") };
            if pos.part != Some(part.id) {
                return Err(format!(
                    "source `{}`: the checkpoint's partition is not this run's: the input files changed",
                    self.source.name
                ));
            }
            self.resume_at = Some((part, a));
        }
        Ok(())
    }

    /// The time the source must still hold: the epoch of the least event time any of its
    /// unfinished partitions may still emit. `None` when none may emit a point any more (what
    /// remains can only be dead letters, sent at the current capability).
    fn hold_time(&self, epoch: i64) -> Option<Time> {
        let mut low = self.queue.iter().map(|(_, l)| *l).min().unwrap_or(i64::MAX);
        if let Some(a) = &self.active {
            let wm = a.max_ts.map_or(i64::MIN, |m| m - self.source.out_of_orderness);
            low = low.min(a.low.max(wm));
        }
        (low != i64::MAX).then(|| floor_to(low.max(0), epoch) as Time)
    }

    /// The least event time partition `part` may emit, read before it starts.
    ///
    /// A partition's watermark starts at its first valid record: every later record that is
    /// not late has `ts ≥ first − max_out_of_orderness`. So that is a sound bound, and holding
    /// the capability there instead of at 0 lets windows close while a large file is still
    /// being read (state stays a few chunks deep instead of the whole file). Lateness itself is
    /// unchanged, so the output is too. Gives 0 (no bound) when nothing valid shows up in the
    /// first MiB, and `i64::MAX` for a partition with no valid record at all.
    fn peek_low(&mut self, part: &Partition) -> i64 {
        const PEEK_BYTES: u64 = 1 << 20;
        let PartKind::Chunk { start, end } = &part.kind else {
            // Parquet row groups: no peek yet (0 is always sound). Unreadable files emit
            // nothing but a dead letter.
            return if matches!(part.kind, PartKind::Unreadable(_)) { i64::MAX } else { 0 };
        };
        let Ok(file) = File::open(&part.file.path) else { return 0 };
        let csv = if part.file.format == Format::Csv { Some(self.csv_decoder(&part.file)) } else { None };
        let mut reader = ChunkReader::new(file, *start, *end, part.file.len, 64 * 1024);
        let mut first = true;
        loop {
            let line = match reader.next_line() {
                Ok(Some(Line::Text(t))) => trim_line(t),
                Ok(Some(Line::TooLong(..))) => continue,
                Ok(None) => return i64::MAX,
                Err(_) => return 0,
            };
            let header = first && *start == 0 && csv.is_some();
            first = false;
            if header || is_blank(line) {
                continue;
            }
            let header = match csv {
                None => None,
                Some(i) => match &mut self.csv[i].1 {
                    Ok(h) => Some(h),
                    Err(_) => return i64::MAX,
                },
            };
            let mut first_ts = None;
            if R::decode_line(&mut self.dec, part.file.format, header, line, part.id, 0, |ts, _| first_ts = Some(ts)).is_ok()
                && let Some(ts) = first_ts
            {
                return ts - self.source.out_of_orderness;
            }
            if reader.position() - start > PEEK_BYTES {
                return 0;
            }
        }
    }

    /// Reads up to one activation's worth. Returns whether anything is left.
    fn step(&mut self, work: &mut Work<R>, epoch: i64, failure: &Failure, limit: usize) -> bool {
        if !self.peeked {
            self.peeked = true;
            let mut queue = std::mem::take(&mut self.queue);
            for (part, low) in queue.iter_mut() {
                *low = self.peek_low(part);
            }
            self.queue = queue;
        }
        let mut budget = limit;
        while budget > 0 {
            if self.active.is_none() {
                let opened = if let Some((part, at)) = self.resume_at.take() {
                    self.open_at(part, at)
                } else {
                    let Some((part, low)) = self.queue.pop_front() else { return false };
                    self.open(part, low)
                };
                match opened {
                    Ok(a) => self.active = Some(a),
                    Err(e) => {
                        failure.set(e);
                        return false;
                    }
                }
                self.taken += 1;
            }
            let done = self.read_some(work, epoch, &mut budget);
            if done {
                // The partition is finished; keep its read buffer for the next one.
                if let Some(Active { input: Input::Lines { reader, .. }, .. }) = self.active.take() {
                    self.spare = Some(reader.into_buffer());
                }
            }
        }
        self.active.is_some() || !self.queue.is_empty() || self.resume_at.is_some()
    }

    /// Opens a restored partition at a line (or row) inside it.
    fn open_at(&mut self, part: Partition, at: At) -> Result<Active, String> {
        let mut a = match &part.kind {
            PartKind::Chunk { end, .. } if at.pos > 0 => {
                let file = File::open(&part.file.path)
                    .map_err(|e| format!("source `{}`: cannot open {}: {e}", self.source.name, part.file.display))?;
                let csv = if part.file.format == Format::Csv { Some(self.csv_decoder(&part.file)) } else { None };
                let reader =
                    ChunkReader::with_buffer(file, at.offset, *end, part.file.len, READ_BLOCK, self.spare.take().unwrap_or_default());
                let input = Input::Lines { reader, format: part.file.format, csv, skip_header: false, last_pos: at.offset };
                Active {
                    part,
                    index: self.taken,
                    pos_base: at.pos,
                    skip_to: 0,
                    input,
                    low: at.low,
                    max_ts: None,
                    pos: at.pos,
                    lines_before: None,
                }
            }
            _ => {
                let mut a = self.open(part, at.low)?;
                a.skip_to = at.pos;
                a
            }
        };
        a.max_ts = at.max_ts;
        Ok(a)
    }

    fn open(&mut self, part: Partition, low: i64) -> Result<Active, String> {
        let input = match &part.kind {
            PartKind::Chunk { start, end } => {
                let file = File::open(&part.file.path)
                    .map_err(|e| format!("source `{}`: cannot open {}: {e}", self.source.name, part.file.display))?;
                let csv = if part.file.format == Format::Csv { Some(self.csv_decoder(&part.file)) } else { None };
                Input::Lines {
                    reader: ChunkReader::with_buffer(file, *start, *end, part.file.len, READ_BLOCK, self.spare.take().unwrap_or_default()),
                    format: part.file.format,
                    csv,
                    skip_header: *start == 0 && csv.is_some(),
                    last_pos: *start,
                }
            }
            PartKind::RowGroup { index, first_row, bytes } => match open_row_group(&part.file.path, *index) {
                Ok(reader) => Input::Parquet { reader, first_row: *first_row, bytes: *bytes },
                Err(e) => Input::Unreadable(format!("cannot read Parquet row group {index}: {e}")),
            },
            PartKind::Unreadable(e) => Input::Unreadable(e.clone()),
        };
        Ok(Active { part, index: self.taken, pos_base: 0, skip_to: 0, input, low, max_ts: None, pos: 0, lines_before: None })
    }

    /// The CSV header of a file, reading it on first use.
    fn csv_decoder(&mut self, file: &Arc<PlannedFile>) -> usize {
        if let Some(i) = self.csv.iter().position(|(f, _)| Arc::ptr_eq(f, file)) {
            return i;
        }
        let header = read_first_line(file)
            .map_err(|e| DecodeError::CsvHeader(format!("cannot read the header: {e}")))
            .and_then(|l| R::csv_header(&l));
        self.csv.push((file.clone(), header));
        self.csv.len() - 1
    }

    /// Reads from the active partition; returns true when it is exhausted.
    fn read_some(&mut self, work: &mut Work<R>, epoch: i64, budget: &mut usize) -> bool {
        let queue_low = self.queue.iter().map(|(_, l)| *l).min().unwrap_or(i64::MAX);
        let Some(a) = self.active.as_mut() else { return true };
        let src = &self.source;
        let rejected = &mut self.rejected;
        let ooo = src.out_of_orderness;
        let keep_late = src.allowed_lateness;
        let (bounds, upper) = (src.time_bounds, src.time_bounds.upper(wall_now()));
        let (interval, emitted_max, crossings) = (self.interval, &mut self.emitted_max, &mut self.crossings);
        match &mut a.input {
            Input::Unreadable(e) => {
                let t = dead_time(queue_low, a.low, a.max_ts, ooo, epoch, *emitted_max);
                work.dead_at(t, DeadLetter::new(&src.name, &a.part.file.display, 0, e.clone(), &[], None));
                work.bad += 1;
                work.records += 1;
                true
            }
            Input::Lines { reader, format, csv, skip_header, last_pos } => {
                let mut done = false;
                while *budget > 0 {
                    let line_start = reader.position();
                    let (max_before, emitted_before) = (a.max_ts, *emitted_max);
                    let t_dead = dead_time(queue_low, a.low, max_before, ooo, epoch, emitted_before);
                    work.line_max = 0;
                    let (line, next) = match reader.next_line_peek() {
                        Ok(Some(l)) => l,
                        Ok(None) => {
                            done = true;
                            break;
                        }
                        Err(e) => {
                            let reason = format!("cannot read the file after byte {}: {e}", reader.position());
                            work.dead_at(t_dead, DeadLetter::new(&src.name, &a.part.file.display, 0, reason, &[], None));
                            work.bad += 1;
                            done = true;
                            break;
                        }
                    };
                    *budget -= 1;
                    let pos = a.pos;
                    a.pos += 1;
                    // Decode while the line is borrowed from the reader; a bad record leaves
                    // the borrow as owned bytes, so its line number can be counted afterwards.
                    rejected.clear();
                    // (raw bytes, the decoding error; `None`: the line decoded but records in it were late or
                    // out of bounds, listed in `rejected`).
                    let bad: Option<(Vec<u8>, Option<String>)> = match line {
                        Line::TooLong(n, raw) => {
                            work.records += 1;
                            Some((raw, Some(DecodeError::TooLong(n).to_string())))
                        }
                        Line::Text(t) => {
                            let t = trim_line(t);
                            if *skip_header && pos == 0 {
                                // The header of a CSV file: report it once if it is unusable.
                                if let Some(Err(e)) = csv.map(|i| &self.csv[i].1) {
                                    work.records += 1;
                                    work.bad += 1;
                                    work.dead_at(t_dead, DeadLetter::new(&src.name, &a.part.file.display, 1, e.to_string(), t, None));
                                }
                                continue;
                            }
                            if is_blank(t) {
                                continue;
                            }
                            work.records += 1;
                            let header = match csv {
                                None => Ok(None),
                                Some(i) => match &mut self.csv[*i].1 {
                                    Ok(h) => Ok(Some(h)),
                                    Err(e) => Err(DecodeError::BadFileHeader(e.to_string())),
                                },
                            };
                            let (max_ts, part, low) = (&mut a.max_ts, a.part.id, a.low);
                            if let Some(n) = next {
                                // The reader hands `n` over next, at position `pos + 1`.
                                R::read_ahead(&mut self.dec, *format, csv.is_some(), trim_line(n), part, pos + 1);
                            }
                            let decoded = header.and_then(|h| {
                                R::decode_line(&mut self.dec, *format, h, t, part, pos, |ts, r| {
                                    if let Some(why) = bounds.reject(ts, upper) {
                                        return rejected.push((ts, Some(why)));
                                    }
                                    match lateness(*max_ts, ooo, ts) {
                                        None => {
                                            *max_ts = Some(max_ts.map_or(ts, |m| m.max(ts)));
                                            work.emitted += 1;
                                            work.push(floor_to(ts, epoch) as Time, r);
                                        }
                                        Some(l) => match keep_late {
                                            Some(keep) if l <= keep => work.push_late(*max_ts, low, ooo, epoch, r),
                                            _ => rejected.push((ts, None)),
                                        },
                                    }
                                })
                            });
                            match decoded {
                                Ok(()) if rejected.is_empty() => None,
                                Ok(()) => Some((t[..t.len().min(MAX_RAW_BYTES)].to_vec(), None)),
                                Err(e) => Some((t[..t.len().min(MAX_RAW_BYTES)].to_vec(), Some(e.to_string()))),
                            }
                        }
                    };
                    if let Some((raw, error)) = bad {
                        let line_no = line_number(&mut self.line_marks, &a.part, reader, &mut a.lines_before, pos - a.pos_base);
                        match error {
                            Some(reason) => {
                                work.bad += 1;
                                work.dead_at(t_dead, DeadLetter::new(&src.name, &a.part.file.display, line_no, reason, &raw, None));
                            }
                            // One dead letter per late or out-of-bounds record (a line may hold
                            // several alerts).
                            None => {
                                let mut dead = Vec::new();
                                let (bad, late) = drain_rejected(rejected, |reason, ts| {
                                    dead.push(DeadLetter::new(&src.name, &a.part.file.display, line_no, reason, &raw, Some(ts)))
                                });
                                for d in dead {
                                    work.dead_at(t_dead, d);
                                }
                                work.bad += bad;
                                work.late += late;
                            }
                        }
                    }
                    log_line(interval, emitted_max, crossings, work.line_max, || ReplayPos {
                        next: a.index,
                        part: Some(a.part.id),
                        at: (pos > 0).then_some(At { offset: line_start, pos, max_ts: max_before, low: a.low }),
                        emitted_max: emitted_before,
                    });
                }
                let p = reader.position();
                work.bytes += p.saturating_sub(*last_pos);
                *last_pos = p;
                done
            }
            Input::Parquet { reader, first_row, bytes } => {
                let Some(batch) = reader.next() else {
                    work.bytes += *bytes;
                    return true;
                };
                let batch = match batch {
                    Ok(b) => b,
                    Err(e) => {
                        let reason = format!("cannot read Parquet rows after row {}: {e}", *first_row + a.pos);
                        let t = dead_time(queue_low, a.low, a.max_ts, ooo, epoch, *emitted_max);
                        work.dead_at(t, DeadLetter::new(&src.name, &a.part.file.display, *first_row + a.pos + 1, reason, &[], None));
                        work.bad += 1;
                        return true;
                    }
                };
                let cols = Columns::new(batch);
                *budget = budget.saturating_sub(cols.len());
                for i in 0..cols.len() {
                    let pos = a.pos;
                    a.pos += 1;
                    if pos < a.skip_to {
                        continue; // before a restored row group's replay position
                    }
                    work.records += 1;
                    let row_no = *first_row + pos + 1;
                    let (max_before, emitted_before) = (a.max_ts, *emitted_max);
                    let t_dead = dead_time(queue_low, a.low, max_before, ooo, epoch, emitted_before);
                    work.line_max = 0;
                    match R::parquet_row(&mut self.dec, &cols, i, a.part.id, pos) {
                        Ok((ts, record)) => {
                            if let Some(why) = src.time_bounds.reject(ts, upper) {
                                work.dead_at(t_dead, DeadLetter::new(&src.name, &a.part.file.display, row_no, why, &cols.raw(i), Some(ts)));
                                work.bad += 1;
                            } else if let Some(l) = lateness(a.max_ts, ooo, ts)
                                && keep_late.is_some_and(|keep| l <= keep)
                            {
                                work.push_late(a.max_ts, a.low, ooo, epoch, record);
                            } else if lateness(a.max_ts, ooo, ts).is_some() {
                                work.dead_at(
                                    t_dead,
                                    DeadLetter::new(&src.name, &a.part.file.display, row_no, LATE.to_string(), &cols.raw(i), Some(ts)),
                                );
                                work.late += 1;
                            } else {
                                a.max_ts = Some(a.max_ts.map_or(ts, |m| m.max(ts)));
                                work.emitted += 1;
                                work.push(floor_to(ts, epoch) as Time, record);
                            }
                        }
                        Err(e) => {
                            work.dead_at(
                                t_dead,
                                DeadLetter::new(&src.name, &a.part.file.display, row_no, e.to_string(), &cols.raw(i), None),
                            );
                            work.bad += 1;
                        }
                    }
                    log_line(interval, emitted_max, crossings, work.line_max, || ReplayPos {
                        next: a.index,
                        part: Some(a.part.id),
                        at: (pos > 0).then_some(At { offset: 0, pos, max_ts: max_before, low: a.low }),
                        emitted_max: emitted_before,
                    });
                }
                false
            }
        }
    }
}

/// The time of a dead letter of a line: the worker's hold time before the line (the least
/// event time its unfinished partitions may still emit, as [`WorkerReader::hold_time`]), which
/// depends only on the data read, so a restored source gives it the same time; the latest time
/// emitted when no partition may emit any more.
#[inline]
fn dead_time(queue_low: i64, low: i64, max_ts: Option<i64>, ooo: i64, epoch: i64, emitted_max: Time) -> Time {
    let wm = max_ts.map_or(i64::MIN, |m| m - ooo);
    let hold = queue_low.min(low.max(wm));
    if hold == i64::MAX { emitted_max } else { floor_to(hold.max(0), epoch) as Time }
}

/// Logs a replay position if a line (or a logged push) emitted past an interval boundary
/// (`before` is the position of the line, with the state before it).
#[inline]
pub(crate) fn log_line<P>(
    interval: Time,
    emitted_max: &mut Time,
    crossings: &mut Vec<(Time, P)>,
    line_max: Time,
    before: impl FnOnce() -> P,
) {
    if line_max > *emitted_max {
        if interval > 0 && line_max / interval > *emitted_max / interval {
            crossings.push((line_max, before()));
        }
        *emitted_max = line_max;
    }
}

/// How late `ts` is against the partition's watermark (max event time − allowed disorder).
#[inline]
fn lateness(max_ts: Option<i64>, ooo: i64, ts: i64) -> Option<i64> {
    let wm = max_ts? - ooo;
    if ts < wm { Some(wm - ts) } else { None }
}

/// The 1-based line number of line `pos` of the active chunk, counting the lines before the
/// chunk on first need (dead letters are rare; the count is cached per file).
fn line_number(
    marks: &mut HashMap<usize, (u64, u64)>,
    part: &Partition,
    reader: &ChunkReader,
    lines_before: &mut Option<u64>,
    pos: u64,
) -> u64 {
    if let Some(b) = *lines_before {
        return b + pos + 1;
    }
    let Some(first) = reader.first_line_offset() else { return pos + 1 };
    let key = Arc::as_ptr(&part.file) as usize;
    let (from, base) = match marks.get(&key) {
        Some(&(o, c)) if o <= first => (o, c),
        _ => (0, 0),
    };
    let counted = File::open(&part.file.path).and_then(|f| count_newlines(&f, from, first)).unwrap_or(0);
    let before = base + counted;
    marks.insert(key, (first, before));
    *lines_before = Some(before);
    before + pos + 1
}

fn read_first_line(file: &PlannedFile) -> std::io::Result<Vec<u8>> {
    let f = File::open(&file.path)?;
    let mut r = ChunkReader::new(f, 0, 1, file.len, 64 * 1024);
    match r.next_line()? {
        Some(Line::Text(t)) => Ok(t.to_vec()),
        Some(Line::TooLong(..)) => Err(std::io::Error::other("the header line is too long")),
        None => Ok(Vec::new()),
    }
}
