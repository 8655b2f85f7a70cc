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
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};

use super::chunk::{ChunkReader, Line, count_newlines};
use super::parquet_rows::{Columns, open_row_group};
use super::records::FileRecord;
use super::{FileSource, Format, PartKind, Partition, PlannedFile, ReplayOrigin, SourceStats};
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
        let mut reader = WorkerReader::<R>::new(source, index, peers);
        move |_frontiers| {
            let (Some(pcap), Some(dcap)) = (points_cap.as_mut(), dead_cap.as_mut()) else {
                return;
            };
            let mut work = Work::default();
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
                        let cap: Capability<Time> = pcap.delayed(t);
                        out.session(&cap).give_container(batch);
                    }
                }
            }
            if !work.dead.is_empty() {
                let mut out = dead_out.activate();
                out.session(&*dcap).give_iterator(work.dead.drain(..));
            }
            stats.records.fetch_add(work.records, Ordering::Relaxed);
            stats.emitted.fetch_add(work.emitted, Ordering::Relaxed);
            stats.dead_letters.fetch_add(work.bad, Ordering::Relaxed);
            stats.late.fetch_add(work.late, Ordering::Relaxed);
            stats.bytes.fetch_add(work.bytes, Ordering::Relaxed);

            if more {
                if let Some(t) = reader.hold_time(epoch)
                    && t > *pcap.time()
                {
                    pcap.downgrade(&t);
                    dcap.downgrade(&t);
                }
                activator.activate();
            } else {
                points_cap = None;
                dead_cap = None;
            }
        }
    });
    (points, dead)
}

/// What one activation produced.
pub(crate) struct Work<R> {
    /// Points by timely time, in batches of at most [`BATCH`]: a few distinct times per
    /// activation. Small batches keep allocations in the allocator's reusable size classes
    /// (large fresh buffers cost page faults, which dominated an early profile).
    pub(crate) points: Vec<(Time, Vec<R>)>,
    pub(crate) dead: Vec<DeadLetter>,
    pub(crate) records: u64,
    pub(crate) emitted: u64,
    pub(crate) bad: u64,
    pub(crate) late: u64,
    pub(crate) bytes: u64,
}

impl<R> Default for Work<R> {
    fn default() -> Self {
        Work { points: Vec::new(), dead: Vec::new(), records: 0, emitted: 0, bad: 0, late: 0, bytes: 0 }
    }
}

impl<R> Work<R> {
    #[inline]
    pub(crate) fn push(&mut self, t: Time, m: R) {
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

/// The partition being read.
struct Active {
    part: Partition,
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
}

impl<R: FileRecord> WorkerReader<R> {
    fn new(source: Arc<FileSource>, index: usize, peers: usize) -> Self {
        let queue = source.partitions.iter().enumerate().filter(|(k, _)| k % peers == index).map(|(_, p)| (p.clone(), 0)).collect();
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
        }
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
                let Some((part, low)) = self.queue.pop_front() else { return false };
                match self.open(part, low) {
                    Ok(a) => self.active = Some(a),
                    Err(e) => {
                        failure.set(e);
                        return false;
                    }
                }
            }
            let done = self.read_some(work, epoch, &mut budget);
            if done {
                // The partition is finished; keep its read buffer for the next one.
                if let Some(Active { input: Input::Lines { reader, .. }, .. }) = self.active.take() {
                    self.spare = Some(reader.into_buffer());
                }
            }
        }
        self.active.is_some() || !self.queue.is_empty()
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
        Ok(Active { part, input, low, max_ts: None, pos: 0, lines_before: None })
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
        let Some(a) = self.active.as_mut() else { return true };
        let src = &self.source;
        let rejected = &mut self.rejected;
        let ooo = src.out_of_orderness;
        let keep_late = src.allowed_lateness;
        let (bounds, upper) = (src.time_bounds, src.time_bounds.upper(wall_now()));
        match &mut a.input {
            Input::Unreadable(e) => {
                work.dead.push(DeadLetter::new(&src.name, &a.part.file.display, 0, e.clone(), &[], None));
                work.bad += 1;
                work.records += 1;
                true
            }
            Input::Lines { reader, format, csv, skip_header, last_pos } => {
                let mut done = false;
                while *budget > 0 {
                    let line = match reader.next_line() {
                        Ok(Some(l)) => l,
                        Ok(None) => {
                            done = true;
                            break;
                        }
                        Err(e) => {
                            let reason = format!("cannot read the file after byte {}: {e}", reader.position());
                            work.dead.push(DeadLetter::new(&src.name, &a.part.file.display, 0, reason, &[], None));
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
                                    work.dead.push(DeadLetter::new(&src.name, &a.part.file.display, 1, e.to_string(), t, None));
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
                        let line_no = line_number(&mut self.line_marks, &a.part, reader, &mut a.lines_before, pos);
                        match error {
                            Some(reason) => {
                                work.bad += 1;
                                work.dead.push(DeadLetter::new(&src.name, &a.part.file.display, line_no, reason, &raw, None));
                            }
                            // One dead letter per late or out-of-bounds record (a line may hold
                            // several alerts).
                            None => {
                                let dead = &mut work.dead;
                                let (bad, late) = drain_rejected(rejected, |reason, ts| {
                                    dead.push(DeadLetter::new(&src.name, &a.part.file.display, line_no, reason, &raw, Some(ts)))
                                });
                                work.bad += bad;
                                work.late += late;
                            }
                        }
                    }
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
                        work.dead.push(DeadLetter::new(&src.name, &a.part.file.display, *first_row + a.pos + 1, reason, &[], None));
                        work.bad += 1;
                        return true;
                    }
                };
                let cols = Columns::new(batch);
                *budget = budget.saturating_sub(cols.len());
                for i in 0..cols.len() {
                    let pos = a.pos;
                    a.pos += 1;
                    work.records += 1;
                    let row_no = *first_row + pos + 1;
                    match R::parquet_row(&mut self.dec, &cols, i, a.part.id, pos) {
                        Ok((ts, record)) => {
                            if let Some(why) = src.time_bounds.reject(ts, upper) {
                                work.dead.push(DeadLetter::new(&src.name, &a.part.file.display, row_no, why, &cols.raw(i), Some(ts)));
                                work.bad += 1;
                            } else if let Some(l) = lateness(a.max_ts, ooo, ts)
                                && keep_late.is_some_and(|keep| l <= keep)
                            {
                                work.push_late(a.max_ts, a.low, ooo, epoch, record);
                            } else if lateness(a.max_ts, ooo, ts).is_some() {
                                work.dead.push(DeadLetter::new(
                                    &src.name,
                                    &a.part.file.display,
                                    row_no,
                                    LATE.to_string(),
                                    &cols.raw(i),
                                    Some(ts),
                                ));
                                work.late += 1;
                            } else {
                                a.max_ts = Some(a.max_ts.map_or(ts, |m| m.max(ts)));
                                work.emitted += 1;
                                work.push(floor_to(ts, epoch) as Time, record);
                            }
                        }
                        Err(e) => {
                            work.dead.push(DeadLetter::new(&src.name, &a.part.file.display, row_no, e.to_string(), &cols.raw(i), None));
                            work.bad += 1;
                        }
                    }
                }
                false
            }
        }
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
