//! The Kafka source operator: each worker consumes the partitions assigned to it, decodes the
//! messages with the file decoders, and emits records at their event-time epoch and dead
//! letters (bad and late records), holding its capability at the least watermark of its
//! partitions. It commits offsets once the output depending on them is durable.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use alertflow_model::dead_letter::{DeadLetter, MAX_RAW_BYTES};
use alertflow_model::decode::{is_blank, trim_line};
use alertflow_model::time::{DurationMs, floor_to, wall_now};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};

use super::{KafkaContext, KafkaShared, PartitionPlan, RateLimited};
use crate::file::SourceStats;
use crate::file::records::FileRecord;
use crate::file::source::Work;
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

    builder.build(move |mut caps| {
        let mut dead_cap = caps.pop();
        let mut points_cap = caps.pop();
        let mut reader = KafkaReader::<R>::new(shared, index, peers, epoch);
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
            if let Err(e) = reader.connect(&mut wake) {
                failure.set(e);
                points_cap = None;
                dead_cap = None;
                return;
            }
            let mut work = Work::default();
            let now = Instant::now();
            let more_now = reader.step(&mut work, epoch, *pcap.time(), *dcap.time(), now);
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
            reader.maybe_commit(now);
            match reader.hold_time(epoch, now) {
                Hold::Finished => {
                    reader.commit_at_end();
                    points_cap = None;
                    dead_cap = None;
                }
                Hold::At(t) => {
                    if t > *pcap.time() {
                        pcap.downgrade(&t);
                        dcap.downgrade(&t);
                    }
                    if more_now { activator.activate() } else { activator.activate_after(IDLE_WAKE) }
                }
            }
        }
    });
    (points, dead)
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
}

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
        }
    }

    /// Creates the consumer on first use, and assigns partitions found since the last call.
    fn connect(&mut self, wake: &mut Option<impl Fn() + Send + Sync + 'static>) -> Result<(), String> {
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
            // Not done before a fetch has confirmed the end (`confirm_end`): assigned even when
            // it starts at the listed end, an end-of-partition event or a message settles it.
            self.parts.push(Part {
                next: plan.start,
                committed: plan.start,
                plan,
                max_ts: None,
                last_seen: now,
                done: false,
                end_confirmed: false,
                prefix: VecDeque::new(),
                dead: VecDeque::new(),
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
            match decoded {
                Ok(()) if self.rejected.is_empty() => continue,
                Ok(()) => {
                    // One dead letter per late or out-of-bounds record.
                    let dead = &mut work.dead;
                    let (bad, late) = drain_rejected(&mut self.rejected, |reason, ts| {
                        dead.push(DeadLetter::new(&src.name, &p.plan.display, offset as u64, reason, raw, Some(ts)))
                    });
                    work.bad += bad;
                    work.late += late;
                }
                Err(e) => {
                    work.bad += 1;
                    work.dead.push(DeadLetter::new(&src.name, &p.plan.display, offset as u64, e.to_string(), raw, None));
                }
            }
            if commit {
                p.dead.push_back((dead_cap, offset));
            }
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
        }
    }
}
