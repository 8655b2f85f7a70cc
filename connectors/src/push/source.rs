//! The push source operator: each worker takes queued pushes into the dataflow at their
//! event-time epoch, acknowledges them, and holds its capability at the source's watermark.
//!
//! **With checkpoints** every push taken is first appended to the worker's write-ahead log
//! ([`super::wal`]) with how it was taken (the watermark its samples were judged against, the
//! worker's capability), and its pusher is answered once the log is on disk. The source's part
//! of a checkpoint at `B` is, as for a file source, its replay position: the first logged push
//! that emitted anything at a time `≥ B`, or the log's end when none has. The part is handed
//! over once the source's capability has reached `B` (no later push can emit before `B`) and
//! only after the log is on disk up to there, so a committed checkpoint never holds a push the
//! log could lose. A restarted run replays its log from that position before it takes new
//! pushes, dropping what it would emit before `B` (that is in the checkpoint); a run with no
//! checkpoint to resume from replays the whole log.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use alertflow_checkpoint::Participant;
use alertflow_model::dead_letter::{DeadLetter, LATE};
use alertflow_model::decode::{AlertDecoder, RemoteWriteDecoder};
use alertflow_model::time::{DurationMs, floor_to, wall_now};
use alertflow_model::{Alert, Metric};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};

use super::receive::{Decoded, decode_alerts, decode_write};
use super::wal::{Entry, WalPos, WalReader, WalWriter, next_segment, segments};
use super::{Batch, PushQueue, PushSource};
use crate::file::source::{Work, log_line};
use crate::{Failure, Time};

/// Records taken per activation before the source yields to the rest of the dataflow.
const RECORDS_PER_ACTIVATION: usize = 64 * 1024;
/// How often a worker wakes without pushes (to move the watermark with the wall clock).
const IDLE_WAKE: Duration = Duration::from_millis(100);

/// What a push source emits.
pub trait PushRecord: Clone + Send + 'static {
    /// Stamped with its receive time (alerts), rather than carrying its own (samples).
    const STAMPED: bool;
    /// Decodes bodies of this kind (reused: it keeps buffers and interners).
    type Decoder: Default + Send;
    /// Decodes a body received at `at` whose first record has position `pos`.
    fn decode(dec: &mut Self::Decoder, src: &PushSource, tenant: &str, body: &[u8], at: i64, pos: u64) -> Decoded<Self>;
    /// Event time.
    fn ts(&self) -> i64;
    /// Moves a stamped record's event time (to the worker's capability, if it passed it).
    fn set_ts(&mut self, ts: i64);
    /// Marks a record accepted late (policy `update`).
    fn mark_late(&mut self);
    /// Where the record came from in its push.
    fn pos(&self) -> u64;
    /// The record as text, for a dead letter.
    fn raw(&self) -> Vec<u8>;
}

impl PushRecord for Alert {
    const STAMPED: bool = true;
    type Decoder = AlertDecoder;
    fn decode(dec: &mut AlertDecoder, src: &PushSource, tenant: &str, body: &[u8], at: i64, pos: u64) -> Decoded<Self> {
        decode_alerts(dec, src, tenant, body, at, pos)
    }
    fn ts(&self) -> i64 {
        self.ts
    }
    fn set_ts(&mut self, ts: i64) {
        self.ts = ts;
    }
    fn mark_late(&mut self) {}
    fn pos(&self) -> u64 {
        self.pos
    }
    fn raw(&self) -> Vec<u8> {
        self.labels.to_json().into_bytes()
    }
}

impl PushRecord for Metric {
    const STAMPED: bool = false;
    type Decoder = RemoteWriteDecoder;
    fn decode(dec: &mut RemoteWriteDecoder, src: &PushSource, tenant: &str, body: &[u8], at: i64, pos: u64) -> Decoded<Self> {
        decode_write(dec, src, tenant, body, at, pos)
    }
    fn ts(&self) -> i64 {
        self.ts
    }
    fn set_ts(&mut self, ts: i64) {
        self.ts = ts;
    }
    fn mark_late(&mut self) {
        self.late = true;
    }
    fn pos(&self) -> u64 {
        self.pos
    }
    fn raw(&self) -> Vec<u8> {
        format!("{}{} {} @{}", self.series.name(), self.series.labels_json(), self.value, self.ts).into_bytes()
    }
}

/// How a worker took a push; its log entry keeps this, so that a replay takes it the same way.
#[derive(Clone, Copy, Debug)]
struct Taken {
    /// Samples: the watermark they are judged against.
    wm: i64,
    /// The worker's capability: the time of the push's dead letters, and the earliest of its
    /// alerts' times.
    cap: Time,
}

/// Takes one push into `work`; returns its newest on-time sample time (samples).
fn take<R: PushRecord>(work: &mut Work<R>, src: &PushSource, records: Vec<R>, dead: Vec<DeadLetter>, t: Taken, epoch: i64) -> Option<i64> {
    work.bad += dead.len() as u64;
    for d in dead {
        work.dead_at(t.cap, d);
    }
    if R::STAMPED {
        for mut r in records {
            // Stamped at receive time; a worker that has moved on since takes it at its own
            // time (a few milliseconds later at most).
            let ts = r.ts().max(t.cap as i64);
            r.set_ts(ts);
            work.emitted += 1;
            work.push(floor_to(ts, epoch) as Time, r);
        }
        return None;
    }
    // One watermark for the whole request: remote_write orders it by series.
    let wm = t.wm;
    let mut newest = None;
    for mut r in records {
        let ts = r.ts();
        if ts >= wm {
            newest = newest.max(Some(ts));
            work.emitted += 1;
            work.push(floor_to(ts, epoch) as Time, r);
        } else if src.allowed_lateness.is_some_and(|keep| wm - ts <= keep) {
            // A revision: stamped at the watermark's epoch, which the capability allows.
            r.mark_late();
            work.emitted += 1;
            work.push(floor_to(wm.max(0), epoch) as Time, r);
        } else {
            work.late += 1;
            work.dead_at(t.cap, DeadLetter::new(&src.name, &src.display, r.pos(), LATE.to_string(), &r.raw(), Some(ts)));
        }
    }
    newest
}

/// Builds the push source on this worker: the records and the dead letters.
pub fn push_source<'s, R: PushRecord>(
    scope: Scope<'s, Time>,
    queue: Arc<PushQueue<R>>,
    epoch: DurationMs,
    failure: Failure,
) -> (Stream<'s, Time, Vec<R>>, Stream<'s, Time, Vec<DeadLetter>>) {
    let mut builder = OperatorBuilder::new(format!("source:{}", queue.source.name), scope);
    let info = builder.operator_info();
    let activator = scope.activator_for(info.address.clone());
    queue.register(scope.worker().sync_activator_for(info.address.to_vec()));
    let (records_out, records) = builder.new_output::<Vec<R>>();
    let (dead_out, dead) = builder.new_output::<Vec<DeadLetter>>();
    let mut records_out = OutputBuilder::<Time, CapacityContainerBuilder<Vec<R>>>::from(records_out);
    let mut dead_out = OutputBuilder::<Time, CapacityContainerBuilder<Vec<DeadLetter>>>::from(dead_out);
    let epoch = epoch.millis().max(1) as i64;
    let index = scope.index();
    let ckpt = alertflow_checkpoint::register_source(&format!("source:{}", queue.source.name), index);

    builder.build(move |mut caps| {
        let mut dead_cap = caps.pop();
        let mut records_cap = caps.pop();
        let mut batches: Vec<Batch<R>> = Vec::new();
        let mut log = ckpt.and_then(|p| Log::open(p, &queue, index, &failure).map_err(|e| failure.set(e)).ok());
        // A restored source emits nothing before the checkpoint it resumes from.
        let floor = log.as_ref().map_or(0, |l| l.floor);
        move |_frontiers| {
            let (Some(rcap), Some(dcap)) = (records_cap.as_mut(), dead_cap.as_mut()) else {
                return;
            };
            if failure.is_set() {
                queue.abandon();
                records_cap = None;
                dead_cap = None;
                // What the log was handed is still written and its pushers answered.
                log = None;
                return;
            }
            // Held at the time the checkpoints allow (in one process, the floor itself; in a
            // cluster maybe less for now). The floor still decides what is dropped.
            let held = if floor > *rcap.time() { log.as_ref().map_or(floor, |l| l.p.advance(floor)) } else { floor };
            if held > *rcap.time() {
                rcap.downgrade(&held);
                dcap.downgrade(&held);
            }
            let src = queue.source.clone();
            let mut work = Work::<R> { floor, ..Work::default() };
            let mut acks = Vec::new();
            let replaying = match log.as_mut().filter(|l| l.replay.is_some()) {
                Some(l) => {
                    if let Err(e) = l.replay(&mut work, &queue, epoch) {
                        failure.set(e);
                    }
                    true
                }
                None => false,
            };
            if !replaying {
                queue.take(RECORDS_PER_ACTIVATION, &mut batches);
            }
            let cap = *rcap.time();
            for b in batches.drain(..) {
                // Taken apart: the records go into the dataflow, the push as it arrived into the log.
                let Batch { records, dead, received, raw, at, pos, ack } = b;
                let wm_before = queue.watermark();
                let taken = Taken { wm: wm_before.max(floor as i64), cap };
                work.records += received;
                work.bytes += raw.body.len() as u64;
                work.line_max = 0;
                if let Some(n) = take(&mut work, &src, records, dead, taken, epoch) {
                    queue.raise_watermark(n - src.out_of_orderness);
                }
                if let Some(l) = log.as_mut() {
                    let e = Entry { at, pos, wm: taken.wm, cap, tenant: raw.tenant, body: raw.body };
                    l.append(e, wm_before, work.line_max);
                }
                acks.extend(ack);
            }
            {
                let mut out = records_out.activate();
                for (t, batch) in work.points.iter_mut() {
                    if !batch.is_empty() {
                        let cap: Capability<Time> = rcap.delayed(t);
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
            let stats = &queue.stats;
            stats.records.fetch_add(work.records, Ordering::Relaxed);
            stats.emitted.fetch_add(work.emitted, Ordering::Relaxed);
            stats.dead_letters.fetch_add(work.bad, Ordering::Relaxed);
            stats.late.fetch_add(work.late, Ordering::Relaxed);
            stats.bytes.fetch_add(work.bytes, Ordering::Relaxed);
            // In the dataflow (and counted) now: the pushers may hear so — with a log, once
            // it is on disk.
            match log.as_mut() {
                Some(l) => l.wal.submit(acks),
                None => acks.into_iter().for_each(|a| {
                    let _ = a.send(());
                }),
            }
            if replaying {
                // The capability stays at the checkpoint until the log is replayed.
                activator.activate();
                return;
            }

            let empty = queue.is_empty();
            if queue.is_closed() && empty {
                if let Some(l) = log.as_mut() {
                    l.finish(&queue);
                }
                records_cap = None;
                dead_cap = None;
                return;
            }
            let hold = if R::STAMPED {
                queue.oldest_queued().unwrap_or(i64::MAX).min(wall_now())
            } else {
                if empty && queue.idle() {
                    queue.raise_watermark(wall_now() - src.out_of_orderness);
                }
                queue.watermark()
            };
            let t = (floor_to(hold.max(0), epoch) as Time).max(floor);
            // Published before the downgrade: see `alertflow_checkpoint`.
            let t = if t > *rcap.time() { log.as_ref().map_or(t, |l| l.p.advance(t)) } else { t };
            if t > *rcap.time() {
                rcap.downgrade(&t);
                dcap.downgrade(&t);
            }
            if let Some(l) = log.as_mut() {
                l.checkpoint(*rcap.time(), &queue);
                l.retain();
                if empty {
                    l.p.poll();
                }
            }
            if empty { activator.activate_after(IDLE_WAKE) } else { activator.activate() }
        }
    });
    (records, dead)
}

/// A push source's part of a checkpoint: where its replay starts, with the source's state
/// before that push.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Resume {
    from: WalPos,
    /// The samples' watermark.
    watermark: i64,
    /// The request number reached (positions of later pushes come after).
    requests: u64,
}

/// A worker's write-ahead log and its checkpoint bookkeeping.
struct Log<R: PushRecord> {
    p: Participant,
    wal: WalWriter,
    /// The log being replayed, until its end.
    replay: Option<WalReader>,
    replayed: u64,
    dec: R::Decoder,
    /// The checkpoint resumed from (0: none).
    floor: Time,
    interval: Time,
    /// The latest time emitted at, and the replay positions logged where a push emitted past
    /// a multiple of the interval (as a file source logs lines).
    emitted_max: Time,
    crossings: Vec<(Time, Resume)>,
    /// Checkpoints handed over, with the first segment their replay needs: the segments
    /// before it go once one is committed.
    handed: Vec<(Time, u64)>,
}

impl<R: PushRecord> Log<R> {
    fn open(mut p: Participant, queue: &PushQueue<R>, index: usize, failure: &Failure) -> Result<Self, String> {
        let dir = p.wal_dir().join(&*queue.source.name).join(format!("w{index}"));
        let floor = p.resumed_at();
        let resume = p.restore::<Resume>()?;
        if let Some(r) = &resume {
            queue.raise_watermark(r.watermark);
            queue.requests_after(r.requests);
        }
        let from = resume.map(|r| r.from);
        let replay = WalReader::open(&dir, from)?;
        let first = next_segment(&dir, from).map_err(|e| format!("{}: {e}", dir.display()))?;
        let wal = WalWriter::open(&dir, first, p.fsync(), failure.clone()).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Log {
            interval: p.interval(),
            p,
            wal,
            replay: Some(replay),
            replayed: 0,
            dec: R::Decoder::default(),
            floor,
            emitted_max: 0,
            crossings: Vec::new(),
            handed: Vec::new(),
        })
    }

    /// Replays logged pushes (about an activation's worth) into `work`.
    fn replay(&mut self, work: &mut Work<R>, queue: &PushQueue<R>, epoch: i64) -> Result<(), String> {
        let src = queue.source.clone();
        let mut n = 0;
        while n < RECORDS_PER_ACTIVATION {
            let Some(reader) = self.replay.as_mut() else { break };
            let Some((at, e)) = reader.next_entry()? else {
                self.replay = None;
                if self.replayed > 0 {
                    tracing::info!("source `{}`: replayed {} logged push(es)", src.name, self.replayed);
                }
                break;
            };
            self.replayed += 1;
            let d = R::decode(&mut self.dec, &src, &e.tenant, &e.body, e.at, e.pos);
            n += d.records.len().max(1);
            queue.requests_after(e.pos >> 24);
            let wm_before = queue.watermark();
            work.records += d.received;
            work.bytes += e.body.len() as u64;
            work.line_max = 0;
            if let Some(newest) = take(work, &src, d.records, d.dead, Taken { wm: e.wm, cap: e.cap }, epoch) {
                queue.raise_watermark(newest - src.out_of_orderness);
            }
            log_line(self.interval, &mut self.emitted_max, &mut self.crossings, work.line_max, || Resume {
                from: at,
                watermark: wm_before,
                requests: e.pos >> 24,
            });
        }
        Ok(())
    }

    /// Logs a push (written at the next submit).
    fn append(&mut self, e: Entry, wm_before: i64, line_max: Time) {
        let requests = e.pos >> 24;
        let at = self.wal.append(e);
        log_line(self.interval, &mut self.emitted_max, &mut self.crossings, line_max, || Resume {
            from: at,
            watermark: wm_before,
            requests,
        });
    }

    /// Hands over this worker's part of the pending checkpoint once the capability `cap` has
    /// reached it, delivered when the log is on disk up to now.
    fn checkpoint(&mut self, cap: Time, queue: &PushQueue<R>) {
        let Some(b) = self.p.pending() else { return };
        if cap < b || self.replay.is_some() {
            return;
        }
        let resume = match self.crossings.iter().position(|(hi, _)| *hi >= b) {
            Some(i) => {
                self.crossings.drain(..i);
                self.crossings[0].1.clone()
            }
            None => {
                self.crossings.clear();
                Resume { from: self.wal.next(), watermark: queue.watermark(), requests: queue.requests() }
            }
        };
        let first = resume.from.seq;
        if let Some(d) = self.p.hand_off_state(b, &resume) {
            self.handed.push((b, first));
            self.wal.then(move || d.ack(Vec::new()));
        }
    }

    /// Removes the segments no committed checkpoint needs.
    fn retain(&mut self) {
        let committed = self.p.committed();
        let mut upto = None;
        while self.handed.first().is_some_and(|(b, _)| *b <= committed) {
            upto = Some(self.handed.remove(0).1);
        }
        if let Some(seq) = upto {
            self.wal.truncate_before(seq);
        }
    }

    /// The source is done: later checkpoints take their replay positions from the log.
    fn finish(&mut self, queue: &PushQueue<R>) {
        self.wal.sync();
        let end = Resume { from: self.wal.next(), watermark: queue.watermark(), requests: queue.requests() };
        self.p.source_done(self.emitted_max);
        self.p.finish(&self.crossings, &end);
    }
}

/// Checks a push source's log before a run starts: logs of workers the run does not have
/// cannot be replayed (the pushes they hold were acknowledged), so the run is refused.
pub fn check_log(wal_dir: &Path, source: &str, workers: usize) -> Result<(), String> {
    let root = wal_dir.join(source);
    let Ok(rd) = std::fs::read_dir(&root) else { return Ok(()) };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(w) = name.strip_prefix('w').and_then(|n| n.parse::<usize>().ok()) else { continue };
        if w >= workers && segments(&e.path()).is_ok_and(|s| !s.is_empty()) {
            return Err(format!(
                "{} holds pushes acknowledged by worker {w} of an earlier run, and this run has {workers} worker(s): \
                 run with --workers {} or more to replay them (or remove the folder to drop them)",
                e.path().display(),
                w + 1
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_of_workers_a_run_lacks_are_refused_by_name() {
        let root = std::env::temp_dir().join(format!("af-wal-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        assert!(check_log(&root, "rw", 1).is_ok(), "no log: nothing to check");
        for w in 0..3 {
            std::fs::create_dir_all(root.join(format!("rw/w{w}"))).unwrap();
        }
        // Folders without segments hold nothing acknowledged.
        assert!(check_log(&root, "rw", 1).is_ok());
        std::fs::write(root.join("rw/w2/0000000000000004.wal"), super::super::wal::MAGIC).unwrap();
        let e = check_log(&root, "rw", 2).unwrap_err();
        assert!(e.contains("rw/w2") && e.contains("worker 2") && e.contains("--workers 3 or more"), "{e}");
        assert!(check_log(&root, "rw", 3).is_ok());
        assert!(check_log(&root, "am", 1).is_ok(), "another source's log");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
