//! The Kafka source operator: each worker consumes the partitions assigned to it, decodes the
//! messages with the file decoders, and emits records at their event-time epoch and dead
//! letters (bad and late records), holding its capability at the least watermark of its
//! partitions. It commits offsets once the output depending on them is durable.
//!
//! **With checkpoints** a worker's part of a checkpoint at `B` is, per partition, a replay
//! position as a file source keeps one per worker: the first message from which the partition
//! emitted anything at a time `≥ B` (its *crossing* of `B`), with the partition's state before
//! it; or, when none has yet, the next offset. A message's dead letters are timed at its
//! partition's watermark epoch (at least the capability), which depends only on the partition's
//! data while the partition is not idle. The part also says where the partition was when the
//! source's capability passed `B` (`before_cap`): the messages from the replay position up to
//! there were taken while the capability was before `B`, so what they emitted before `B` is in
//! the checkpoint — a restored source drops it (records before `B` that were on time for their
//! partition, dead letters timed before `B`) — while a message after it was judged against a
//! capability at or after `B`, as the restored source judges it. The part is saved once the
//! capability has passed `B`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use alertflow_checkpoint::Participant;
use alertflow_model::dead_letter::{DeadLetter, MAX_RAW_BYTES};
use alertflow_model::decode::{is_blank, trim_line};
use alertflow_model::time::{DurationMs, floor_to, wall_now};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};

use super::{KafkaContext, KafkaShared, PartitionPlan, RateLimited};
use crate::backlog::{Backlog, Pacer, released_per_worker};
use crate::file::SourceStats;
use crate::file::records::FileRecord;
use crate::file::source::{Work, log_line};
use crate::time_bounds::{Rejected, drain_rejected};
use crate::{Failure, Time};

/// Messages decoded per activation before the source yields to the rest of the dataflow.
const MESSAGES_PER_ACTIVATION: usize = 32 * 1024;
/// How often a worker with nothing to read wakes up (idle partitions, new partitions, commits).
const IDLE_WAKE: Duration = Duration::from_millis(50);

/// Builds the Kafka source on this worker: the records and the dead letters.
pub fn kafka_source<'s, R: FileRecord>(
    scope: Scope<'s, Time>,
    shared: Arc<KafkaShared>,
    epoch: DurationMs,
    stats: Arc<SourceStats>,
    failure: Failure,
    backlog: Option<Backlog>,
) -> (Stream<'s, Time, Vec<R>>, Stream<'s, Time, Vec<DeadLetter>>) {
    let mut builder = OperatorBuilder::new(format!("source:{}", shared.source.name), scope);
    let info = builder.operator_info();
    let activator = scope.activator_for(info.address.clone());
    let sync_activator = scope.worker().sync_activator_for(info.address.to_vec());
    let (points_out, points) = builder.new_output::<Vec<R>>();
    let (dead_out, dead) = builder.new_output::<Vec<DeadLetter>>();
    let mut points_out = OutputBuilder::<Time, CapacityContainerBuilder<Vec<R>>>::from(points_out);
    let mut dead_out = OutputBuilder::<Time, CapacityContainerBuilder<Vec<DeadLetter>>>::from(dead_out);
    let (index, peers) = (scope.index(), scope.peers());
    let epoch = epoch.millis().max(1) as i64;
    let mut ckpt =
        if shared.checkpointed { alertflow_checkpoint::register_source(&format!("source:{}", shared.source.name), index) } else { None };

    builder.build(move |mut caps| {
        let mut dead_cap = caps.pop();
        let mut points_cap = caps.pop();
        let mut reader = KafkaReader::<R>::new(shared, index, peers, epoch);
        // A topic's backlog (a consumer starting from `earliest`, or catching up after a stop)
        // is read no further ahead of the sinks than a file is (see `backlog`); librdkafka
        // keeps what it has fetched meanwhile in its own bounded queue.
        let mut pacer = Pacer::new(backlog, released_per_worker(peers, MESSAGES_PER_ACTIVATION as u64));
        if let Some(p) = ckpt.as_mut() {
            reader.interval = p.interval();
            reader.floor = p.resumed_at();
            match p.restore::<Vec<PartResume>>() {
                Ok(Some(parts)) => reader.restored = parts,
                Ok(None) => {}
                Err(e) => p.fail(e),
            }
        }
        // Wake the worker when messages arrive for an empty queue.
        let wake = std::sync::Mutex::new(sync_activator);
        let mut wake = Some(move || {
            let _ = wake.lock().map(|a| a.activate());
        });
        move |_frontiers| {
            let (Some(pcap), Some(dcap)) = (points_cap.as_mut(), dead_cap.as_mut()) else {
                return;
            };
            if failure.is_set() {
                points_cap = None;
                dead_cap = None;
                return;
            }
            if let Err(e) = reader.connect(&mut wake, *pcap.time()) {
                failure.set(e);
                points_cap = None;
                dead_cap = None;
                return;
            }
            if pacer.should_wait(*pcap.time()) {
                // The pipeline is behind what this source sent: read on once it has caught
                // up. Commits and checkpoints go on meanwhile.
                reader.maybe_commit(Instant::now());
                if let Some(p) = ckpt.as_mut() {
                    reader.checkpoint(p, *pcap.time());
                }
                activator.activate_after(Duration::from_micros(100));
                return;
            }
            let mut work = Work { floor: reader.floor, ..Work::default() };
            let now = Instant::now();
            let more_now = reader.step(&mut work, epoch, *pcap.time(), *dcap.time(), now);
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
            reader.maybe_commit(now);
            let hold = match reader.hold_time(epoch, now) {
                Hold::At(t) => t.max(reader.floor),
                Hold::Finished => {
                    // In a cluster, a source that is done drops its capability only once the
                    // checkpoints' horizon is past the last time it emitted at (see
                    // `alertflow_checkpoint`): until then it holds it as far as it may.
                    let end = reader.emitted_max().saturating_add(1).max(*pcap.time());
                    let allowed = ckpt.as_ref().map_or(end, |p| p.advance(end));
                    if allowed >= end {
                        if let Some(p) = ckpt.as_mut() {
                            reader.checkpoint(p, *pcap.time());
                            p.source_done(reader.emitted_max());
                            let (log, last) = reader.final_log();
                            p.finish(&log, &last);
                        }
                        reader.commit_at_end();
                        points_cap = None;
                        dead_cap = None;
                        return;
                    }
                    allowed
                }
            };
            if hold > *pcap.time() {
                // Published before the downgrade: see `alertflow_checkpoint`. In a cluster the
                // checkpoints may hold it back (at their horizon): asked again next time.
                let t = ckpt.as_ref().map_or(hold, |p| p.advance(hold));
                if t > *pcap.time() {
                    reader.mark_cap(*pcap.time(), t);
                    pcap.downgrade(&t);
                    dcap.downgrade(&t);
                }
            }
            if let Some(p) = ckpt.as_mut() {
                reader.checkpoint(p, *pcap.time());
            }
            if more_now {
                activator.activate()
            } else if hold > *pcap.time() {
                activator.activate_after(Duration::from_millis(1)) // held at the horizon: ask again
            } else {
                activator.activate_after(IDLE_WAKE)
            }
        }
    });
    (points, dead)
}

/// A partition's part of a checkpoint (see the module documentation).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PartResume {
    topic: String,
    partition: i32,
    /// The offset to read again from.
    offset: i64,
    /// The partition's newest event time before it.
    max_ts: Option<i64>,
    /// The latest time the partition had emitted at before it.
    emitted_max: Time,
    /// The next offset when the source's capability passed the checkpoint: messages before it
    /// were taken while the capability was before the checkpoint.
    before_cap: i64,
}

/// Where a partition stood before a message that emitted past a multiple of the checkpoint
/// interval.
#[derive(Clone, Copy, Debug)]
struct Crossing {
    offset: i64,
    max_ts: Option<i64>,
    emitted_max: Time,
}

/// Raises a partition's end (`stop_at_end`) to the high watermark of the first fetch response
/// that reached it, once. The end listed at start (ListOffsets) is a lower bound, not always the
/// end: Tansu 0.6 answers ListOffsets(latest) with the base offset of the last record batch, so
/// the last batch would be left unread; its fetch responses carry the right high watermark.
/// Raised once only, so that a live producer cannot keep a `stop_at_end` run going.
fn confirm_end(consumer: &BaseConsumer<KafkaContext>, p: &mut Part) {
    if p.end_confirmed || p.plan.end.is_none() {
        return;
    }
    if let Some(high) = cached_high_watermark(consumer, &p.plan.topic, p.plan.partition) {
        p.plan.end = p.plan.end.map(|e| e.max(high));
        p.end_confirmed = true;
    }
}

/// librdkafka's cached high watermark of a partition, from its last fetch response (no request
/// is made), if a fetch has answered yet. The rdkafka crate does not wrap
/// `rd_kafka_get_watermark_offsets`, hence the one FFI call of the workspace.
#[allow(unsafe_code)]
fn cached_high_watermark(consumer: &BaseConsumer<KafkaContext>, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives (borrowed here); `topic` is a
    // NUL-terminated string that outlives the call; `low` and `high` are valid for writes.
    // librdkafka documents the function as thread-safe and non-blocking.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(consumer.client().native_ptr(), topic.as_ptr(), partition, &mut low, &mut high)
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

/// The first message of a partition read from inside (a restored position, a committed offset)
/// is checked: a broker may answer a fetch from an offset inside a record batch with the next
/// batch — Tansu 0.6 does, and the rest of the batch would be skipped without a word (seen as
/// 2,451 points missing after a restart from a checkpoint). When the first message is past
/// `next`, the consumer is sent back (4,096 offsets, then twice as far each time, never before
/// the partition's start) until a message at or before `next` arrives; the messages before
/// `next` are then skipped as usual. A gap that remains once the partition's start is reached
/// is real (compaction, transaction markers). Returns whether the consumer was sent back.
fn gap(consumer: &BaseConsumer<KafkaContext>, p: &mut Part, offset: i64, source: &str) -> bool {
    let Some(back) = p.probe else { return false };
    let from = p.next - back;
    if offset <= p.next || from <= p.plan.low {
        p.probe = None;
        return false;
    }
    let back = (back * 2).max(4096);
    let to = (p.next - back).max(p.plan.low);
    tracing::debug!(
        "source `{source}`: {}: asked for offset {from}, the broker answered from {offset}: reading from {to} (the messages before {} are skipped)",
        p.plan.display,
        p.next
    );
    if let Err(e) = consumer.seek(&p.plan.topic, p.plan.partition, Offset::Offset(to), Duration::from_secs(10)) {
        tracing::warn!("source `{source}`: {}: cannot seek to {to}: {e}; reading on from {offset}", p.plan.display);
        p.probe = None;
        return false;
    }
    p.probe = Some(p.next - to);
    true
}

/// What the source's capability should do.
enum Hold {
    /// Hold (at least) this time.
    At(Time),
    /// Every partition reached its end (`stop_at_end`): release.
    Finished,
}

/// One assigned partition.
struct Part {
    plan: PartitionPlan,
    /// Next offset to read.
    next: i64,
    /// Largest event time emitted.
    max_ts: Option<i64>,
    /// When the last message arrived (or the partition was assigned).
    last_seen: Instant,
    /// Reached its end (`stop_at_end`).
    done: bool,
    /// `plan.end` has been raised to the high watermark of a fetch response (see `confirm_end`).
    end_confirmed: bool,
    /// Prefix maxima of the emitted records' event times, with their offsets (ascending in
    /// both), kept when they enter a new epoch: the first entry with `ts ≥ K` (K a multiple of
    /// the epoch) is the first record a window not yet durable needs.
    prefix: VecDeque<(i64, i64)>,
    /// Dead letters not yet known durable: (the time they were sent at, offset).
    dead: VecDeque<(Time, i64)>,
    /// Last offset committed (or the start).
    committed: i64,
    /// Checkpoints: the latest time the partition emitted at, and where it stood before each
    /// message that emitted past a multiple of the interval (`(time emitted at, position)`).
    emitted_max: Time,
    crossings: Vec<(Time, Crossing)>,
    /// Checkpoints: `(capability, next offset)` whenever the source's capability passed a
    /// multiple of the interval (and when the partition was assigned).
    marks: VecDeque<(Time, i64)>,
    /// A restored partition's messages before this offset were taken, by the run the checkpoint
    /// is of, while its capability was before the checkpoint.
    replay_until: i64,
    /// Read from inside the partition: until a message at or before `next` arrives, how far
    /// before `next` the consumer was last sent (see [`gap`]).
    probe: Option<i64>,
}

/// Per-worker state of the source.
struct KafkaReader<R: FileRecord> {
    shared: Arc<KafkaShared>,
    index: usize,
    peers: usize,
    consumer: Option<BaseConsumer<KafkaContext>>,
    generation: u64,
    parts: Vec<Part>,
    /// The last partition looked up: (topic index, partition, index in `parts`).
    last: Option<(usize, i32, usize)>,
    dec: R::Decoder,
    csv: Option<R::CsvHeader>,
    /// A message's late (`None`) and out-of-bounds (the reason) records: (event time, reason).
    rejected: Rejected,
    last_commit: Instant,
    last_f: Time,
    errors: RateLimited,
    epoch: i64,
    /// The checkpoint interval (0: no checkpoints).
    interval: Time,
    /// The checkpoint resumed from (0: none): nothing is emitted before it.
    floor: Time,
    /// The restored parts of partitions not assigned yet.
    restored: Vec<PartResume>,
    /// Saved checkpoints whose offsets are committed to the group once they are committed:
    /// `(checkpoint, (topic index, partition, offset))`.
    handed: VecDeque<(Time, Vec<PartOffset>)>,
}

/// A partition's offset: (topic index, partition, offset).
type PartOffset = (usize, i32, i64);

impl<R: FileRecord> KafkaReader<R> {
    fn new(shared: Arc<KafkaShared>, index: usize, peers: usize, epoch: i64) -> Self {
        KafkaReader {
            shared,
            index,
            peers,
            consumer: None,
            generation: 0,
            parts: Vec::new(),
            last: None,
            dec: R::decoder(),
            csv: None,
            rejected: Vec::new(),
            last_commit: Instant::now(),
            last_f: 0,
            errors: RateLimited::new(Duration::from_secs(10)),
            epoch,
            interval: 0,
            floor: 0,
            restored: Vec::new(),
            handed: VecDeque::new(),
        }
    }

    /// Creates the consumer on first use, and assigns partitions found since the last call
    /// (`cap`: the source's capability now).
    fn connect(&mut self, wake: &mut Option<impl Fn() + Send + Sync + 'static>, cap: Time) -> Result<(), String> {
        let src = self.shared.source.clone();
        if let Some(e) = self.shared.fatal() {
            return Err(e);
        }
        if self.consumer.is_none() {
            let mut c: BaseConsumer<KafkaContext> = src
                .client_config()
                .create_with_context(KafkaContext::new(&src.name))
                .map_err(|e| format!("source `{}`: cannot create a Kafka consumer: {e}", src.name))?;
            if let Some(w) = wake.take() {
                c.set_nonempty_callback(w);
            }
            self.consumer = Some(c);
            if let Some(h) = &src.csv_header {
                self.csv = Some(R::csv_header(h.as_bytes()).map_err(|e| format!("source `{}`: csv_header: {e}", src.name))?);
            }
        }
        let generation = self.shared.generation();
        if generation == self.generation {
            return Ok(());
        }
        self.generation = generation;
        let now = Instant::now();
        let mut added = false;
        for plan in self.shared.partitions() {
            if plan.worker(self.peers) != self.index
                || self.parts.iter().any(|p| p.plan.topic_index == plan.topic_index && p.plan.partition == plan.partition)
            {
                continue;
            }
            // A restored partition reads again from its checkpoint's position.
            let restored = self.restored.iter().position(|r| *r.topic == *plan.topic && r.partition == plan.partition);
            let plan_low = plan.low;
            let (next, max_ts, emitted_max, replay_until) = match restored.map(|i| self.restored.swap_remove(i)) {
                Some(r) => (r.offset, r.max_ts, r.emitted_max, r.before_cap),
                None => (plan.start, None, 0, i64::MIN),
            };
            // Not done before a fetch has confirmed the end (`confirm_end`): assigned even when
            // it starts at the listed end, an end-of-partition event or a message settles it.
            self.parts.push(Part {
                next,
                committed: next,
                plan,
                max_ts,
                last_seen: now,
                done: false,
                end_confirmed: false,
                prefix: VecDeque::new(),
                dead: VecDeque::new(),
                emitted_max,
                crossings: Vec::new(),
                marks: VecDeque::from([(cap, next)]),
                replay_until,
                probe: (next > plan_low).then_some(0),
            });
            added = true;
        }
        if added {
            // `assign` replaces the assignment: every partition resumes at its next offset.
            let mut tpl = TopicPartitionList::with_capacity(self.parts.len());
            for p in self.parts.iter().filter(|p| !p.done) {
                tpl.add_partition_offset(&p.plan.topic, p.plan.partition, Offset::Offset(p.next))
                    .map_err(|e| format!("source `{}`: {e}", src.name))?;
            }
            if let Some(c) = &self.consumer {
                c.assign(&tpl).map_err(|e| format!("source `{}`: cannot assign partitions: {e}", src.name))?;
            }
            self.last = None;
        }
        Ok(())
    }

    fn find(&mut self, topic: &str, partition: i32) -> Option<usize> {
        if let Some((t, p, i)) = self.last
            && p == partition
            && *self.shared.source.topics[t] == *topic
        {
            return Some(i);
        }
        let i = self.parts.iter().position(|p| p.plan.partition == partition && *p.plan.topic == *topic)?;
        self.last = Some((self.parts[i].plan.topic_index, partition, i));
        Some(i)
    }

    /// Reads up to one activation's worth of messages. Returns whether more may be waiting.
    fn step(&mut self, work: &mut Work<R>, epoch: i64, cap: Time, dead_cap: Time, now: Instant) -> bool {
        if !self.shared.ready() {
            return false;
        }
        let Some(consumer) = self.consumer.take() else { return false };
        let src = self.shared.source.clone();
        let commit = self.shared.horizon.is_some();
        // A restored source judges and times everything at its checkpoint at the earliest.
        let (cap, dead_cap, floor, interval) = (cap.max(self.floor), dead_cap.max(self.floor), self.floor, self.interval);
        let ooo = src.out_of_orderness;
        let keep_late = src.allowed_lateness;
        let (bounds, upper) = (src.time_bounds, src.time_bounds.upper(wall_now()));
        let mut polled = 0;
        while polled < MESSAGES_PER_ACTIVATION {
            polled += 1;
            let m = match consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => m,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(n))) => {
                    // A fetch reached the high watermark of partition `n` (of some topic: the
                    // event does not say which): each such partition is done once its confirmed
                    // end is reached.
                    for p in self.parts.iter_mut().filter(|p| p.plan.partition == n && p.plan.end.is_some() && !p.done) {
                        confirm_end(&consumer, p);
                        if p.end_confirmed && p.plan.end.is_some_and(|e| p.next >= e) {
                            tracing::debug!(
                                "source `{}`: {} reached its end {:?} (end of partition)",
                                src.name,
                                p.plan.display,
                                p.plan.end
                            );
                            p.done = true;
                        }
                    }
                    continue;
                }
                Some(Err(e)) => {
                    self.errors.warn(|n| format!("source `{}`: {e}; librdkafka retries{n}", src.name));
                    continue;
                }
            };
            let Some(i) = self.find(m.topic(), m.partition()) else { continue };
            let offset = m.offset();
            let p = &mut self.parts[i];
            if p.probe.is_some() && gap(&consumer, p, offset, &src.name) {
                continue; // the consumer was sent back: this message comes again
            }
            if offset < p.next || p.done {
                continue; // fetched before a re-assignment, or past the end
            }
            p.next = offset + 1;
            p.last_seen = now;
            confirm_end(&consumer, p);
            if p.plan.end.is_some_and(|e| p.next >= e) {
                tracing::debug!("source `{}`: {} reached its end {:?} (message at {offset})", src.name, p.plan.display, p.plan.end);
                p.done = true;
            }
            let payload = m.payload().unwrap_or_default();
            work.bytes += payload.len() as u64;
            let line = trim_line(payload);
            if is_blank(line) {
                continue; // a tombstone or an empty message carries no record
            }
            work.records += 1;
            R::set_default_ts(&mut self.dec, self.csv.as_mut(), m.timestamp().to_millis());
            if let Some(name) = &src.key_label {
                R::set_key_label(&mut self.dec, self.csv.as_mut(), name, m.key());
            }
            self.rejected.clear();
            // Taken before the checkpoint this run resumes from, by the run it is of.
            let pre = offset < p.replay_until;
            let (max_before, emitted_before) = (p.max_ts, p.emitted_max);
            // Dead letters at the partition's watermark epoch: a time that depends only on its
            // data, so that a restored source gives them the same time (at least the
            // capability, which passes it only while the partition is idle).
            let wm_epoch = max_before.map_or(0, |m| floor_to((m - ooo).max(0), epoch) as Time);
            let t_dead = if pre { wm_epoch } else { wm_epoch.max(dead_cap) };
            work.line_max = 0;
            let (rejected, max_ts, prefix, resume_k) = (&mut self.rejected, &mut p.max_ts, &mut p.prefix, p.plan.resume_k);
            let decoded = R::decode_line(&mut self.dec, src.format, self.csv.as_mut(), line, p.plan.part, offset as u64, |ts, r| {
                if resume_k.is_some_and(|k| ts < k) {
                    return; // its windows are in the durable output of the run this one resumes
                }
                if let Some(why) = bounds.reject(ts, upper) {
                    return rejected.push((ts, Some(why)));
                }
                let t = floor_to(ts, epoch) as Time;
                let behind = max_ts.map_or(0, |m| m - ooo - ts);
                if pre && t < floor && behind <= 0 {
                    // On time for its partition: emitted before the checkpoint (or, behind an
                    // idle partition's capability, a dead letter before it) — in the checkpoint.
                    *max_ts = Some(max_ts.map_or(ts, |m| m.max(ts)));
                    return;
                }
                if behind > 0 || t < cap {
                    // Late: kept (policy `update`) within `allowed_lateness` of its partition's
                    // watermark when that still lies at or after the capability; else a dead letter.
                    let wm = max_ts.map_or(0, |m| m - ooo);
                    match keep_late {
                        Some(keep) if behind <= keep && floor_to(wm.max(0), epoch) as Time >= cap => {
                            work.push_late(*max_ts, 0, ooo, epoch, r)
                        }
                        _ => rejected.push((ts, None)),
                    }
                    return;
                }
                *max_ts = Some(max_ts.map_or(ts, |m| m.max(ts)));
                // One entry per epoch at most (the commit rounds K down to an epoch), so the
                // list stays small however fast the partition is.
                if commit && prefix.back().is_none_or(|&(m, _)| t > floor_to(m, epoch) as Time) {
                    prefix.push_back((ts, offset));
                }
                work.emitted += 1;
                work.push(t, r);
            });
            let raw = &line[..line.len().min(MAX_RAW_BYTES)];
            let had_dead = match decoded {
                Ok(()) if self.rejected.is_empty() => false,
                Ok(()) => {
                    // One dead letter per late or out-of-bounds record.
                    let mut dead = Vec::new();
                    let (bad, late) = drain_rejected(&mut self.rejected, |reason, ts| {
                        dead.push(DeadLetter::new(&src.name, &p.plan.display, offset as u64, reason, raw, Some(ts)))
                    });
                    for d in dead {
                        work.dead_at(t_dead, d);
                    }
                    work.bad += bad;
                    work.late += late;
                    true
                }
                Err(e) => {
                    work.bad += 1;
                    work.dead_at(t_dead, DeadLetter::new(&src.name, &p.plan.display, offset as u64, e.to_string(), raw, None));
                    true
                }
            };
            if had_dead && commit {
                p.dead.push_back((t_dead, offset));
            }
            log_line(interval, &mut p.emitted_max, &mut p.crossings, work.line_max, || Crossing {
                offset,
                max_ts: max_before,
                emitted_max: emitted_before,
            });
        }
        self.consumer = Some(consumer);
        // A full budget means more is probably waiting; otherwise the queue is empty and the
        // nonempty callback wakes the worker.
        polled >= MESSAGES_PER_ACTIVATION
    }

    /// The time to hold: the least watermark of the partitions that are neither done nor idle;
    /// the wall clock when all are idle; 0 until the partitions are known.
    fn hold_time(&self, epoch: i64, now: Instant) -> Hold {
        let src = &self.shared.source;
        if !self.shared.ready() {
            return Hold::At(0);
        }
        let mut low = i64::MAX;
        let mut open = 0;
        for p in self.parts.iter().filter(|p| !p.done) {
            open += 1;
            if now.duration_since(p.last_seen) >= src.idle_timeout {
                continue;
            }
            let wm = match (p.max_ts, p.plan.resume_k) {
                (Some(m), _) => m - src.out_of_orderness,
                (None, Some(k)) => k - src.out_of_orderness,
                (None, None) => 0,
            };
            low = low.min(wm);
        }
        if open == 0 && src.stop_at_end {
            return Hold::Finished;
        }
        if low == i64::MAX {
            // Every partition idle (or none assigned here): follow the wall clock.
            low = alertflow_model::time::wall_now() - src.out_of_orderness;
        }
        Hold::At(floor_to(low.max(0), epoch) as Time)
    }

    /// Commits, per partition, the offset before which nothing is needed to rebuild the output
    /// that is not yet durable.
    fn maybe_commit(&mut self, now: Instant) {
        let Some(horizon) = self.shared.horizon else { return };
        if now.duration_since(self.last_commit) < self.shared.source.commit_interval {
            return;
        }
        self.last_commit = now;
        let f = self.shared.durability.span_frontier();
        if f <= self.last_f {
            return;
        }
        self.last_f = f;
        self.commit_up_to(f, horizon, false);
    }

    /// Commits for durable frontier `f` (capped at the newest event time seen, so that the
    /// recorded frontier stays a real time: a later run with new data must rewrite the spans
    /// after it). `at_end`: after the run, when every dead letter is durable.
    fn commit_up_to(&mut self, f: Time, horizon: i64, at_end: bool) {
        let span = self.shared.durability.span();
        let newest = self.parts.iter().filter_map(|p| p.max_ts).max();
        let Some(newest) = newest else { return };
        let cap = (newest.max(0) as u64) - (newest.max(0) as u64) % span;
        let f = f.min(cap);
        let k = floor_to(f as i64 - horizon, self.epoch);
        for p in &mut self.parts {
            while p.prefix.front().is_some_and(|&(ts, _)| ts < k) {
                p.prefix.pop_front();
            }
            let mut offset = p.prefix.front().map_or(p.next, |&(_, o)| o);
            if !at_end {
                while p.dead.front().is_some_and(|&(t, _)| t < f) {
                    p.dead.pop_front();
                }
                if let Some(&(_, o)) = p.dead.front() {
                    offset = offset.min(o);
                }
            }
            if offset > p.committed {
                p.committed = offset;
                let meta = (f, k);
                if at_end {
                    self.shared.commit_at_end(p.plan.topic_index, p.plan.partition, offset, meta);
                } else {
                    self.shared.commit(p.plan.topic_index, p.plan.partition, offset, meta);
                }
            }
        }
    }

    /// The offsets to commit once the run has ended well (every sink finished its files).
    fn commit_at_end(&mut self) {
        if let Some(horizon) = self.shared.horizon {
            self.commit_up_to(Time::MAX, horizon, true);
        } else if self.shared.checkpointed {
            // Everything read is in the finished output (a completed run leaves no checkpoint).
            for p in &self.parts {
                self.shared.commit_at_end(p.plan.topic_index, p.plan.partition, p.next, (Time::MAX, 0));
            }
        }
    }

    /// The latest time any partition of this worker emitted at.
    fn emitted_max(&self) -> Time {
        self.parts.iter().map(|p| p.emitted_max).chain(self.restored.iter().map(|r| r.emitted_max)).max().unwrap_or(0)
    }

    /// The capability moves from `from` to `to`: past a multiple of the checkpoint interval,
    /// every partition notes where it is.
    fn mark_cap(&mut self, from: Time, to: Time) {
        if self.interval > 0 && to / self.interval > from / self.interval {
            for p in &mut self.parts {
                p.marks.push_back((to, p.next));
            }
        }
    }

    /// The part of checkpoint `b`, once the capability has passed it (`None` before).
    fn part_for(&self, b: Time) -> Option<Vec<PartResume>> {
        let mut out = Vec::with_capacity(self.parts.len() + self.restored.len());
        for p in &self.parts {
            let &(_, before_cap) = p.marks.iter().find(|(t, _)| *t >= b)?;
            // No crossing of `b`: nothing read so far emitted at or after it.
            let c = p
                .crossings
                .iter()
                .find(|(hi, _)| *hi >= b)
                .map_or(Crossing { offset: p.next, max_ts: p.max_ts, emitted_max: p.emitted_max }, |(_, c)| *c);
            out.push(PartResume {
                topic: p.plan.topic.to_string(),
                partition: p.plan.partition,
                offset: c.offset,
                max_ts: c.max_ts,
                emitted_max: c.emitted_max,
                before_cap: before_cap.max(c.offset),
            });
        }
        // Restored partitions not assigned again yet: read nothing since.
        out.extend(self.restored.iter().cloned());
        Some(out)
    }

    /// Saves the checkpoint decided, once the capability `cap` has passed it; commits the
    /// offsets of the checkpoints committed since the last call.
    fn checkpoint(&mut self, p: &mut Participant, cap: Time) {
        if let Some(b) = p.pending().filter(|&b| cap >= b)
            && let Some(part) = self.part_for(b)
        {
            p.save(b, &part);
            // What checkpoints after `b` will not need.
            for q in &mut self.parts {
                q.crossings.retain(|(hi, _)| *hi >= b);
                while q.marks.front().is_some_and(|(t, _)| *t < b) {
                    q.marks.pop_front();
                }
            }
            let offsets = part
                .iter()
                .filter_map(|r| {
                    let q = self.parts.iter().find(|q| *q.plan.topic == *r.topic && q.plan.partition == r.partition)?;
                    Some((q.plan.topic_index, q.plan.partition, r.offset))
                })
                .collect();
            self.handed.push_back((b, offsets));
        }
        let committed = p.committed();
        let mut latest = None;
        while self.handed.front().is_some_and(|(b, _)| *b <= committed) {
            latest = self.handed.pop_front();
        }
        if let Some((b, offsets)) = latest {
            for (topic, partition, offset) in offsets {
                self.shared.commit(topic, partition, offset, (b, 0));
            }
        }
    }

    /// A finished source's replay log for the checkpoints still to come (see
    /// [`Participant::finish`]): the part of each checkpoint at which some partition's part
    /// changes, and the part of every later one.
    fn final_log(&mut self) -> (Vec<(Time, Vec<PartResume>)>, Vec<PartResume>) {
        for p in &mut self.parts {
            p.marks.push_back((Time::MAX, p.next));
        }
        let mut at: Vec<Time> = self
            .parts
            .iter()
            .flat_map(|p| p.crossings.iter().map(|(hi, _)| *hi).chain(p.marks.iter().map(|(t, _)| *t)))
            .filter(|&t| t < Time::MAX)
            .collect();
        at.sort_unstable();
        at.dedup();
        let log = at.into_iter().filter_map(|b| self.part_for(b).map(|part| (b, part))).collect();
        let last = self.part_for(Time::MAX).unwrap_or_default();
        (log, last)
    }
}
