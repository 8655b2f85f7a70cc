//! A push source's write-ahead log (with checkpoints, DESIGN §8): every push a worker takes is
//! appended here, and its pusher hears 2xx only once the append is on disk, so a crash loses
//! nothing that was acknowledged.
//!
//! **What is logged.** The body as it arrived (a remote-write body stays snappy-compressed)
//! with what the worker decided when it took it: the receive time, the watermark the samples
//! were judged against and the worker's capability. Decoding is deterministic, so a replay
//! decodes the body again and gives every record the time, and every late sample the fate, it
//! had — without encoding each sample a second time on the hot path.
//!
//! **Layout.** One log per source and worker, `wal/<source>/w<worker>/<seq>.wal`, in segments
//! of [`SEGMENT_BYTES`] at most. A segment starts with [`MAGIC`]; each entry is
//! `len u32 | crc32 u32 | payload`, little-endian, the checksum over the payload. A run starts
//! a segment numbered after every existing one and never appends to an old one, so a torn
//! tail (a crash mid-append: never acknowledged) ends only its own segment.
//!
//! **Group commit.** A writer thread per log takes whatever entries the worker handed over
//! since its last sync, writes them and syncs once, then acknowledges all of them: under load
//! one `fdatasync` covers many pushes, and the worker never waits on the disk.
//!
//! **Retention.** A checkpoint records, per worker, the position from which its replay starts
//! (see `source.rs`); once it is committed the segments before that position are removed.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::Failure;

/// A segment's first bytes: the format, so a file of another kind or version is refused.
pub(crate) const MAGIC: &[u8; 8] = b"AFWAL01\n";
/// A new segment is started once an entry would take the current one past this.
pub(crate) const SEGMENT_BYTES: u64 = 64 << 20;
/// `len` and `crc`.
const FRAME: usize = 8;
/// The fixed fields of a payload: at, pos, wm, cap, tenant length.
const FIXED: usize = 8 + 8 + 8 + 8 + 2;
/// The largest payload a reader accepts: a push body is at most 32 MiB (the HTTP limit), so a
/// larger length is damage, not data.
const MAX_PAYLOAD: u32 = 64 << 20;

/// A place in a log: a segment and a byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct WalPos {
    pub(crate) seq: u64,
    pub(crate) off: u64,
}

/// One logged push: what a replay needs to take it again as it was taken.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    /// Receive time (ms since the epoch).
    pub(crate) at: i64,
    /// Position of the push's first record (dead letters name it).
    pub(crate) pos: u64,
    /// Samples: the watermark they were judged against.
    pub(crate) wm: i64,
    /// The worker's capability when it took the push: the time of its dead letters, and the
    /// earliest time of its alerts.
    pub(crate) cap: u64,
    /// The pusher's tenant.
    pub(crate) tenant: Arc<str>,
    /// The body as received.
    pub(crate) body: Bytes,
}

impl Entry {
    fn payload_len(&self) -> usize {
        FIXED + self.tenant.len() + self.body.len()
    }

    /// Bytes the entry takes in a segment.
    pub(crate) fn len(&self) -> u64 {
        (FRAME + self.payload_len()) as u64
    }

    fn fixed(&self) -> [u8; FIXED] {
        let mut h = [0u8; FIXED];
        h[0..8].copy_from_slice(&self.at.to_le_bytes());
        h[8..16].copy_from_slice(&self.pos.to_le_bytes());
        h[16..24].copy_from_slice(&self.wm.to_le_bytes());
        h[24..32].copy_from_slice(&self.cap.to_le_bytes());
        h[32..34].copy_from_slice(&(self.tenant.len() as u16).to_le_bytes());
        h
    }

    /// Writes the framed entry (the checksum is computed here, on the writer thread).
    fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let fixed = self.fixed();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&fixed);
        crc.update(self.tenant.as_bytes());
        crc.update(&self.body);
        w.write_all(&(self.payload_len() as u32).to_le_bytes())?;
        w.write_all(&crc.finalize().to_le_bytes())?;
        w.write_all(&fixed)?;
        w.write_all(self.tenant.as_bytes())?;
        w.write_all(&self.body)
    }

    fn parse(payload: Vec<u8>) -> Option<Entry> {
        if payload.len() < FIXED {
            return None;
        }
        let u = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
        let tlen = u16::from_le_bytes([payload[32], payload[33]]) as usize;
        let tenant = std::str::from_utf8(payload.get(FIXED..FIXED + tlen)?).ok()?;
        let tenant: Arc<str> = Arc::from(tenant);
        let (at, pos, wm, cap) = (u(0) as i64, u(8), u(16) as i64, u(24));
        let mut body = Bytes::from(payload);
        let body = body.split_off(FIXED + tlen);
        Some(Entry { at, pos, wm, cap, tenant, body })
    }
}

/// The segments of a log folder, by number.
pub(crate) fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let name = e.file_name();
        let Some(seq) = name.to_str().and_then(|n| n.strip_suffix(".wal")).and_then(|n| n.parse::<u64>().ok()) else { continue };
        out.push((seq, e.path()));
    }
    out.sort();
    Ok(out)
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.wal"))
}

/// What the worker hands the writer thread.
enum Job {
    /// Entries (each in the segment numbered with it) and the pushers to answer once they are on disk.
    Append(Vec<(u64, Entry)>, Vec<tokio::sync::oneshot::Sender<()>>),
    /// Runs once everything handed over before it is on disk (a checkpoint's part).
    Then(Box<dyn FnOnce() + Send>),
    /// Segments before this number are not needed any more.
    Truncate(u64),
    /// Answers once everything handed over before it is on disk.
    Sync(Sender<()>),
}

/// The appending end of a log, owned by the worker's source operator.
pub(crate) struct WalWriter {
    next: WalPos,
    pending: Vec<(u64, Entry)>,
    tx: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl WalWriter {
    /// Starts a log in `dir` at segment `first` (greater than any there); `fsync` off only in
    /// tests that kill processes, never the machine. A write error fails the run.
    pub(crate) fn open(dir: &Path, first: u64, fsync: bool, failure: Failure) -> std::io::Result<WalWriter> {
        fs::create_dir_all(dir)?;
        let (tx, rx) = channel();
        let dir = dir.to_path_buf();
        let thread = std::thread::Builder::new().name("push-wal".into()).spawn(move || {
            let mut w = Writer { dir, fsync, seq: None, file: None };
            w.run(rx, &failure)
        })?;
        Ok(WalWriter { next: WalPos { seq: first, off: MAGIC.len() as u64 }, pending: Vec::new(), tx: Some(tx), thread: Some(thread) })
    }

    /// Where the next entry starts (or the end of the current segment, if it will not fit).
    pub(crate) fn next(&self) -> WalPos {
        self.next
    }

    /// Appends `e` (handed over at the next [`submit`](Self::submit)); returns where it starts.
    pub(crate) fn append(&mut self, e: Entry) -> WalPos {
        let len = e.len();
        if self.next.off > MAGIC.len() as u64 && self.next.off + len > SEGMENT_BYTES {
            self.next = WalPos { seq: self.next.seq + 1, off: MAGIC.len() as u64 };
        }
        let at = self.next;
        self.next.off += len;
        self.pending.push((at.seq, e));
        at
    }

    /// Hands the appended entries to the writer; `acks` are answered once they are on disk.
    pub(crate) fn submit(&mut self, acks: Vec<tokio::sync::oneshot::Sender<()>>) {
        if self.pending.is_empty() && acks.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.pending);
        self.send(Job::Append(entries, acks));
    }

    /// Runs `f` once everything submitted so far is on disk.
    pub(crate) fn then(&self, f: impl FnOnce() + Send + 'static) {
        self.send(Job::Then(Box::new(f)));
    }

    /// Removes the segments before `seq`.
    pub(crate) fn truncate_before(&self, seq: u64) {
        self.send(Job::Truncate(seq));
    }

    /// Waits until everything submitted so far is on disk (or the writer has failed).
    pub(crate) fn sync(&self) {
        let (tx, rx) = channel();
        self.send(Job::Sync(tx));
        let _ = rx.recv();
    }

    fn send(&self, job: Job) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(job);
        }
    }
}

impl Drop for WalWriter {
    /// Lets the writer finish what it was handed (those pushers are still answered), then
    /// joins it.
    fn drop(&mut self) {
        self.submit(Vec::new());
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread's side.
struct Writer {
    dir: PathBuf,
    fsync: bool,
    seq: Option<u64>,
    file: Option<BufWriter<File>>,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Job>, failure: &Failure) {
        let mut broken: Option<String> = None;
        while let Ok(first) = rx.recv() {
            // Group commit: everything handed over while the last sync ran goes in one.
            let mut jobs = vec![first];
            jobs.extend(rx.try_iter());
            let mut acks = Vec::new();
            let mut after: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
            for job in jobs {
                match job {
                    Job::Append(entries, a) => {
                        acks.extend(a);
                        if broken.is_none()
                            && let Err(e) = entries.iter().try_for_each(|(seq, e)| self.write(*seq, e))
                        {
                            broken = Some(e);
                        }
                    }
                    Job::Then(f) => after.push(f),
                    Job::Sync(tx) => after.push(Box::new(move || {
                        let _ = tx.send(());
                    })),
                    Job::Truncate(seq) => self.truncate(seq),
                }
            }
            if broken.is_none()
                && let Err(e) = self.sync()
            {
                broken = Some(e);
            }
            if let Some(e) = &broken {
                // Nothing after the failure is acknowledged: the pushers get 503 and retry.
                failure.set(format!("write-ahead log: {e}"));
                drop(acks);
                drop(after);
                continue;
            }
            for a in acks {
                let _ = a.send(());
            }
            for f in after {
                f();
            }
        }
        let _ = self.sync();
    }

    fn write(&mut self, seq: u64, e: &Entry) -> Result<(), String> {
        if self.seq != Some(seq) {
            self.sync()?;
            let path = segment_path(&self.dir, seq);
            let f = OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut f = BufWriter::with_capacity(1 << 20, f);
            f.write_all(MAGIC).map_err(|e| format!("{}: {e}", path.display()))?;
            if self.fsync {
                // The new file's name must survive a crash too.
                File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| format!("{}: {e}", self.dir.display()))?;
            }
            self.file = Some(f);
            self.seq = Some(seq);
        }
        let f = self.file.as_mut().expect("opened above");
        e.write_to(f).map_err(|err| format!("{}: {err}", segment_path(&self.dir, seq).display()))
    }

    fn sync(&mut self) -> Result<(), String> {
        let (Some(f), Some(seq)) = (self.file.as_mut(), self.seq) else { return Ok(()) };
        let path = || segment_path(&self.dir, seq).display().to_string();
        f.flush().map_err(|e| format!("{}: {e}", path()))?;
        if self.fsync {
            f.get_ref().sync_data().map_err(|e| format!("{}: {e}", path()))?;
        }
        Ok(())
    }

    fn truncate(&mut self, before: u64) {
        let Ok(segs) = segments(&self.dir) else { return };
        for (seq, path) in segs {
            if seq < before
                && Some(seq) != self.seq
                && let Err(e) = fs::remove_file(&path)
            {
                tracing::warn!("cannot remove the write-ahead log segment {}: {e}", path.display());
            }
        }
    }
}

/// Reads a log from a position, in order, for a replay.
pub(crate) struct WalReader {
    segments: std::vec::IntoIter<(u64, PathBuf)>,
    cur: Option<(u64, PathBuf, BufReader<File>)>,
    off: u64,
}

impl WalReader {
    /// The log in `dir` from `from` (its start when `None`). Fails when the segment `from`
    /// points into is gone although entries were written there, or a segment is not a log.
    pub(crate) fn open(dir: &Path, from: Option<WalPos>) -> Result<WalReader, String> {
        let all = segments(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let from = from.unwrap_or(WalPos { seq: 0, off: MAGIC.len() as u64 });
        if from.off > MAGIC.len() as u64 && !all.iter().any(|(s, _)| *s == from.seq) {
            return Err(format!(
                "{}: the checkpoint replays from segment {} at byte {}, and that segment is gone: \
                 pushes acknowledged after the checkpoint cannot be replayed (remove the state folder to start afresh)",
                dir.display(),
                segment_path(dir, from.seq).display(),
                from.off
            ));
        }
        let keep: Vec<(u64, PathBuf)> = all.into_iter().filter(|(s, _)| *s >= from.seq).collect();
        let mut r = WalReader { segments: keep.into_iter(), cur: None, off: 0 };
        if let Some((seq, path)) = r.segments.next() {
            r.open_segment(seq, path, if seq == from.seq { from.off } else { MAGIC.len() as u64 })?;
        }
        Ok(r)
    }

    fn open_segment(&mut self, seq: u64, path: PathBuf, off: u64) -> Result<(), String> {
        let shown = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let mut f = BufReader::with_capacity(1 << 20, File::open(&path).map_err(|e| shown(&e))?);
        let mut magic = [0u8; MAGIC.len()];
        match f.read_exact(&mut magic) {
            Ok(()) if &magic == MAGIC => {}
            // Created but cut before its first bytes: empty.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.cur = None;
                return Ok(());
            }
            Ok(()) => return Err(shown(&"not an alertflow write-ahead log segment (or of another version)")),
            Err(e) => return Err(shown(&e)),
        }
        // (A position inside the magic would be damage: read from the first entry.)
        let skip = off.saturating_sub(MAGIC.len() as u64);
        if std::io::copy(&mut (&mut f).take(skip), &mut std::io::sink()).map_err(|e| shown(&e))? < skip {
            return Err(shown(&format_args!(
                "shorter than the checkpoint's replay position (byte {off}): the log lost acknowledged pushes"
            )));
        }
        self.cur = Some((seq, path, f));
        self.off = MAGIC.len() as u64 + skip;
        Ok(())
    }

    /// The next entry and where it starts; `None` at the end of the log. A torn or damaged
    /// entry ends its segment (a crash cut it: it was never acknowledged), with a warning.
    pub(crate) fn next_entry(&mut self) -> Result<Option<(WalPos, Entry)>, String> {
        loop {
            if let Some((seq, path, f)) = self.cur.as_mut() {
                let at = WalPos { seq: *seq, off: self.off };
                match read_entry(f) {
                    Ok(Some(e)) => {
                        self.off += e.len();
                        return Ok(Some((at, e)));
                    }
                    Ok(None) => {}
                    Err(why) => tracing::warn!(
                        "write-ahead log {} ends at byte {} with {why}: a push cut short by a crash (never acknowledged)",
                        path.display(),
                        at.off
                    ),
                }
            }
            match self.segments.next() {
                Some((seq, path)) => self.open_segment(seq, path, MAGIC.len() as u64)?,
                None => {
                    self.cur = None;
                    return Ok(None);
                }
            }
        }
    }
}

/// One entry; `Ok(None)` at a clean end of the segment, `Err` for a torn or damaged one.
fn read_entry(f: &mut impl Read) -> Result<Option<Entry>, String> {
    let mut frame = [0u8; FRAME];
    let mut got = 0;
    while got < FRAME {
        match f.read(&mut frame[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err("a partial entry header".into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let len = u32::from_le_bytes(frame[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
    if len > MAX_PAYLOAD || (len as usize) < FIXED {
        return Err(format!("an impossible entry length {len}"));
    }
    let mut payload = vec![0u8; len as usize];
    f.read_exact(&mut payload).map_err(|_| "a partial entry".to_string())?;
    if crc32fast::hash(&payload) != crc {
        return Err("an entry whose checksum does not match".into());
    }
    Entry::parse(payload).map(Some).ok_or_else(|| "an entry that cannot be read".into())
}

/// The number the next run's first segment takes: after every segment in `dir`, and after the
/// segment a checkpoint replays from (which may not exist yet).
pub(crate) fn next_segment(dir: &Path, from: Option<WalPos>) -> std::io::Result<u64> {
    let last = segments(dir)?.last().map(|(s, _)| s + 1).unwrap_or(0);
    Ok(last.max(from.map_or(0, |p| p.seq + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64, body_len: usize) -> Entry {
        Entry {
            at: 1_767_225_600_000 + i as i64,
            pos: i << 24,
            wm: -5,
            cap: i * 1000,
            tenant: Arc::from(if i.is_multiple_of(2) { "default" } else { "acme" }),
            body: Bytes::from((0..body_len).map(|k| (k as u64 * 31 + i) as u8).collect::<Vec<u8>>()),
        }
    }

    fn read_all(dir: &Path, from: Option<WalPos>) -> Vec<(WalPos, Entry)> {
        let mut r = WalReader::open(dir, from).unwrap();
        let mut out = Vec::new();
        while let Some(x) = r.next_entry().unwrap() {
            out.push(x);
        }
        out
    }

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("af-wal-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn entries_come_back_in_order_from_any_position_and_acks_follow_the_sync() {
        let dir = temp("order");
        let failure = Failure::new();
        let mut w = WalWriter::open(&dir, 3, true, failure.clone()).unwrap();
        let mut at = Vec::new();
        let mut acks = Vec::new();
        for i in 0..50 {
            at.push(w.append(entry(i, (i as usize * 7919) % 5000)));
            let (tx, rx) = tokio::sync::oneshot::channel();
            acks.push(rx);
            if i % 7 == 6 {
                w.submit(vec![tx]);
            } else {
                w.submit(Vec::new());
                drop(tx);
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        w.then(move || tx.send(()).unwrap());
        rx.recv().unwrap();
        // Answered exactly for the submissions that carried one.
        for (i, mut a) in acks.into_iter().enumerate() {
            assert_eq!(a.try_recv().is_ok(), i % 7 == 6, "push {i}");
        }
        w.sync();
        let all = read_all(&dir, None);
        assert_eq!(all.len(), 50);
        for (i, (pos, e)) in all.iter().enumerate() {
            assert_eq!(*pos, at[i], "entry {i} starts where append said");
            assert_eq!(*e, entry(i as u64, (i * 7919) % 5000));
        }
        // From the middle: exactly the rest.
        let tail = read_all(&dir, Some(at[20]));
        assert_eq!(tail.len(), 30);
        assert_eq!(tail[0].1, entry(20, (20 * 7919) % 5000));
        // From the end: nothing, and the next run's segment comes after this one.
        assert!(read_all(&dir, Some(w.next())).is_empty());
        assert_eq!(next_segment(&dir, Some(w.next())).unwrap(), 4);
        assert!(!failure.is_set());
        drop(w);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn segments_roll_and_truncation_keeps_what_a_replay_needs() {
        let dir = temp("roll");
        let mut w = WalWriter::open(&dir, 0, false, Failure::new()).unwrap();
        // 3 MiB bodies: about 21 per segment.
        let big = 3 << 20;
        let at: Vec<WalPos> = (0..50).map(|i| w.append(entry(i, big))).collect();
        w.submit(Vec::new());
        w.sync();
        let segs = segments(&dir).unwrap();
        assert_eq!(segs.len(), 3, "{segs:?}");
        assert!(at.iter().all(|p| p.off + entry(0, big).len() <= SEGMENT_BYTES));
        assert_eq!(at[49].seq, 2);
        // A checkpoint replaying from entry 30 lets the segments before its own go.
        w.truncate_before(at[30].seq);
        w.sync();
        assert_eq!(segments(&dir).unwrap().len(), 2);
        let tail = read_all(&dir, Some(at[30]));
        assert_eq!(tail.iter().map(|(_, e)| e.pos >> 24).collect::<Vec<_>>(), (30..50).collect::<Vec<_>>());
        // Replaying from a segment that was removed although written: a clear error.
        let e = WalReader::open(&dir, Some(at[5])).err().unwrap();
        assert!(e.contains("that segment is gone"), "{e}");
        drop(w);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_tail_ends_its_segment_and_later_segments_are_still_read() {
        let dir = temp("torn");
        let mut w = WalWriter::open(&dir, 0, false, Failure::new()).unwrap();
        for i in 0..5 {
            w.append(entry(i, 100));
        }
        w.submit(Vec::new());
        drop(w);
        // A crash mid-append: the last entry cut in half.
        let path = segment_path(&dir, 0);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 60).unwrap();
        // The next run starts a later segment.
        let mut w = WalWriter::open(&dir, next_segment(&dir, None).unwrap(), false, Failure::new()).unwrap();
        w.append(entry(9, 10));
        w.submit(Vec::new());
        drop(w);
        let got: Vec<u64> = read_all(&dir, None).iter().map(|(_, e)| e.pos >> 24).collect();
        assert_eq!(got, [0, 1, 2, 3, 9]);
        // A flipped bit is caught by the checksum the same way.
        let mut bytes = fs::read(&path).unwrap();
        let k = MAGIC.len() + FRAME + 40;
        bytes[k] ^= 1;
        fs::write(&path, bytes).unwrap();
        let got: Vec<u64> = read_all(&dir, None).iter().map(|(_, e)| e.pos >> 24).collect();
        assert_eq!(got, [9]);
        // Not a log at all: refused by name.
        fs::write(&path, b"hello world, not a log").unwrap();
        let e = WalReader::open(&dir, None).err().unwrap();
        assert!(e.contains("0000000000000000.wal") && e.contains("not an alertflow write-ahead log"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_error_fails_the_run_and_acknowledges_nothing() {
        let dir = temp("err");
        let failure = Failure::new();
        let mut w = WalWriter::open(&dir, 0, false, failure.clone()).unwrap();
        // Segment 0 already exists: the writer never appends to an old segment.
        fs::write(segment_path(&dir, 0), MAGIC).unwrap();
        w.append(entry(0, 10));
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        w.submit(vec![tx]);
        w.sync();
        assert!(failure.get().unwrap().contains("write-ahead log"), "{:?}", failure.get());
        assert!(matches!(rx.try_recv(), Err(tokio::sync::oneshot::error::TryRecvError::Closed)));
        drop(w);
        fs::remove_dir_all(&dir).unwrap();
    }
}
