//! Delivery of the notify operator's notifications, and the `notifications` table.
//!
//! Every worker hands the notifications it decided to one [`Delivery`] per process: a thread
//! per receiver sends them (so the dataflow never waits on a receiver), retrying with backoff
//! (`alertflow_notify::deliver`). Every attempt's outcome is a row of the `notifications`
//! table, a delivery log written as Parquet by a thread of its own: a file every couple of
//! seconds while rows come, and the rest when the run ends. The latest row of an id is where
//! that notification stands.
//!
//! With `state_dir`, delivery is **effectively once** across crashes, through a [`Journal`]
//! in `state_dir/notify`: every notification is appended (and fsynced) to `outbox.ndjson`
//! before it is queued, and every final outcome (delivered, or failed for good) to
//! `done.log`. The deliver sink acknowledges a checkpoint only once every notification
//! before it is in the outbox, so a checkpoint never covers a notification the journal lacks.
//! A restarted run first sends again what the outbox holds and `done.log` does not (same id),
//! then skips every notification whose id the journal knows when the dataflow decides it
//! again (it replays from its checkpoint, or from the start). A receiver thus sees an id twice
//! only when it was in flight at the crash: answered, but not yet in `done.log`.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver as Rx, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use alertflow_connectors::parquet::{Compression, write_file};
use alertflow_model::tables::{NOTIFICATIONS, NotificationRow, NotificationsTable, TableBuilder};
use alertflow_notify::{Deliverer, Message, Outcome, Receiver, ReceiverConfig, ReceiverKind, Status, Transport};
use rdkafka::ClientConfig;
use rdkafka::producer::BaseProducer;
use serde::Serialize;

/// How often the delivery log is written while outcomes come in.
const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Counts of the run summary's `notifications` block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NotifySummary {
    /// Notifications the dataflow decided and handed to delivery (this process).
    pub sent: u64,
    /// Notifications an earlier run decided but did not deliver, sent again at the start.
    pub resent: u64,
    /// Notifications decided again after a restart that the journal knew: not sent again.
    pub skipped: u64,
    /// Accepted by their receiver.
    pub delivered: u64,
    /// Given up on (a 4xx answer, or `max_attempts` reached).
    pub failed: u64,
    /// Still queued or retrying when the run ended (they were not delivered).
    pub undelivered: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
}

#[derive(Default)]
struct Counts {
    resent: AtomicU64,
    skipped: AtomicU64,
    sent: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
}

/// The log writer's queue and thread.
type LogWriter = (Sender<Outcome>, JoinHandle<Result<(), String>>);

/// One process's delivery: the receivers' threads and the log writer.
pub struct Delivery {
    deliverer: Mutex<Option<Deliverer>>,
    log: Mutex<Option<LogWriter>>,
    counts: Arc<Counts>,
    /// How long the end of a run waits for queued notifications.
    drain: Duration,
    /// With `state_dir`: the journal, and every id it knows (sent before, or queued now).
    journal: Option<(Arc<Journal>, Mutex<HashSet<String>>)>,
}

/// The durable record of what was decided and what went out (see the module's docs).
pub struct Journal {
    dir: PathBuf,
    outbox: Mutex<File>,
    done: Mutex<File>,
    fsync: bool,
}

const OUTBOX: &str = "outbox.ndjson";
const DONE: &str = "done.log";

impl Journal {
    /// Opens (or creates) the journal in `dir`; returns it with the notifications still to be
    /// sent and every id it knows. The outbox is rewritten with only the pending ones, so it
    /// does not grow across restarts. A torn last line (a crash while appending) is dropped:
    /// its notification was not queued, and its checkpoint not acknowledged.
    pub fn open(dir: PathBuf, fsync: bool) -> Result<(Journal, Vec<Message>, HashSet<String>), String> {
        let err = |what: &str, e: std::io::Error| format!("notification journal {}: {what}: {e}", dir.display());
        std::fs::create_dir_all(&dir).map_err(|e| err("cannot create it", e))?;
        let read = |name: &str| match std::fs::read_to_string(dir.join(name)) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(err(&format!("cannot read {name}"), e)),
        };
        let done: HashSet<String> = read(DONE)?.lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
        let mut known = done.clone();
        let mut pending = Vec::new();
        for line in read(OUTBOX)?.lines() {
            let Ok(m) = serde_json::from_str::<Message>(line) else { continue };
            let id = m.id();
            if known.insert(id) {
                pending.push(m);
            }
        }
        let tmp = dir.join(format!(".{OUTBOX}.tmp"));
        {
            let mut f = File::create(&tmp).map_err(|e| err("cannot rewrite the outbox", e))?;
            for m in &pending {
                let line = serde_json::to_string(m).map_err(|e| format!("notification journal: {e}"))?;
                writeln!(f, "{line}").map_err(|e| err("cannot rewrite the outbox", e))?;
            }
            if fsync {
                f.sync_all().map_err(|e| err("cannot sync the outbox", e))?;
            }
        }
        std::fs::rename(&tmp, dir.join(OUTBOX)).map_err(|e| err("cannot replace the outbox", e))?;
        let append = |name: &str| {
            std::fs::OpenOptions::new().create(true).append(true).open(dir.join(name)).map_err(|e| err(&format!("cannot open {name}"), e))
        };
        let journal = Journal { outbox: Mutex::new(append(OUTBOX)?), done: Mutex::new(append(DONE)?), dir: dir.clone(), fsync };
        Ok((journal, pending, known))
    }

    /// Appends notifications to the outbox, durably, before they are queued.
    fn record(&self, msgs: &[Message]) -> Result<(), String> {
        let mut text = String::new();
        for m in msgs {
            text.push_str(&serde_json::to_string(m).map_err(|e| format!("notification journal: {e}"))?);
            text.push('\n');
        }
        let mut f = lock(&self.outbox);
        let e = |e: std::io::Error| format!("notification journal {}: cannot append to the outbox: {e}", self.dir.display());
        f.write_all(text.as_bytes()).map_err(e)?;
        if self.fsync {
            f.sync_data().map_err(e)?;
        }
        Ok(())
    }

    /// Records a final outcome.
    fn done(&self, id: &str) {
        let mut f = lock(&self.done);
        let written = writeln!(f, "{id}").and_then(|()| if self.fsync { f.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // The notification went out; at worst a restart sends it again (same id).
            tracing::warn!("notification journal {}: cannot record {id} as done: {e}", self.dir.display());
        }
    }

    /// Removes the journal: nothing in it is pending.
    fn clear(&self) -> Result<(), String> {
        std::fs::remove_dir_all(&self.dir).map_err(|e| format!("cannot remove the notification journal {}: {e}", self.dir.display()))
    }
}

impl Delivery {
    /// Starts the receivers' threads and the log writer of `table_dir` (files named after
    /// `process`).
    pub fn start(
        receivers: &[ReceiverConfig],
        table_dir: PathBuf,
        process: usize,
        compression: Compression,
        drain: Duration,
        journal: Option<(PathBuf, bool)>,
    ) -> Result<Delivery, String> {
        let journal = match journal {
            None => None,
            Some((dir, fsync)) => Some(Journal::open(dir, fsync)?),
        };
        let mut built = Vec::new();
        for r in receivers {
            // Validated with the pipeline: an error here is a bug, but say which receiver.
            built.push(Receiver::new(r.clone()).map_err(|e| format!("receiver `{}`: {e:?}", r.name))?);
        }
        let (tx, rx) = channel::<Outcome>();
        let counts: Arc<Counts> = Arc::default();
        let writer = std::thread::Builder::new()
            .name("notifications-log".into())
            .spawn(move || write_log(rx, table_dir, process, compression))
            .map_err(|e| format!("cannot start the notifications log writer: {e}"))?;
        let (report_tx, report_counts) = (std::sync::Mutex::new(tx.clone()), counts.clone());
        let (journal, pending, known) = match journal {
            Some((j, pending, known)) => (Some(Arc::new(j)), pending, known),
            None => (None, Vec::new(), HashSet::new()),
        };
        let report_journal = journal.clone();
        let deliverer = Deliverer::start_with(
            built,
            move |o: Outcome| {
                if let (Some(j), Status::Delivered | Status::Failed) = (&report_journal, o.status) {
                    j.done(&o.id);
                }
                match o.status {
                    Status::Delivered => report_counts.delivered.fetch_add(1, Ordering::Relaxed),
                    Status::Failed => report_counts.failed.fetch_add(1, Ordering::Relaxed),
                    Status::Retrying => report_counts.retries.fetch_add(1, Ordering::Relaxed),
                };
                if let Status::Failed = o.status {
                    tracing::warn!("notification {} to `{}` failed: {}", o.id, o.receiver, o.error.as_deref().unwrap_or("?"));
                }
                let _ = report_tx.lock().unwrap_or_else(|p| p.into_inner()).send(o);
            },
            &kafka_transport,
        )?;
        if !pending.is_empty() {
            tracing::info!("sending again {} notification(s) an earlier run decided but did not deliver", pending.len());
        }
        counts.resent.store(pending.len() as u64, Ordering::Relaxed);
        for m in pending {
            if let Err(e) = deliverer.deliver(m) {
                tracing::warn!("a journalled notification for a receiver no longer configured is dropped: {e}");
            }
        }
        Ok(Delivery {
            deliverer: Mutex::new(Some(deliverer)),
            log: Mutex::new(Some((tx, writer))),
            counts,
            drain,
            journal: journal.map(|j| (j, Mutex::new(known))),
        })
    }

    /// Queues notifications (a worker's batch); returns at once, once they are journalled
    /// when there is a journal. Those the journal knows (an earlier run sent or queued them)
    /// are skipped.
    pub fn deliver(&self, mut msgs: Vec<Message>) -> Result<(), String> {
        if let Some((journal, known)) = &self.journal {
            let mut known = lock(known);
            let before = msgs.len();
            msgs.retain(|m| known.insert(m.id()));
            self.counts.skipped.fetch_add((before - msgs.len()) as u64, Ordering::Relaxed);
            drop(known);
            if !msgs.is_empty() {
                journal.record(&msgs)?;
            }
        }
        self.counts.sent.fetch_add(msgs.len() as u64, Ordering::Relaxed);
        if let Some(d) = &*lock(&self.deliverer) {
            for m in msgs {
                if let Err(e) = d.deliver(m) {
                    tracing::error!("notification dropped: {e} (a bug: routes are checked against the receivers)");
                }
            }
        }
        Ok(())
    }

    /// Gives queued notifications up to the drain time to go out, stops the receivers'
    /// threads and writes the rest of the log. Returns the counts and the notifications that
    /// did not go out.
    pub fn close(&self) -> (NotifySummary, Vec<Message>, Result<(), String>) {
        let deliverer = lock(&self.deliverer).take();
        let left = deliverer.map(|d| d.close(self.drain)).unwrap_or_default();
        let log = lock(&self.log).take();
        let written = match log {
            Some((tx, writer)) => {
                drop(tx);
                writer.join().unwrap_or_else(|_| Err("the notifications log writer panicked".into()))
            }
            None => Ok(()),
        };
        // Nothing pending: the journal has served its purpose (a completed run's checkpoints
        // go too). Anything left stays for the next run to send.
        let written = match (&self.journal, left.is_empty(), written) {
            (Some((j, _)), true, Ok(())) => j.clear(),
            (_, _, w) => w,
        };
        let c = &self.counts;
        let summary = NotifySummary {
            resent: c.resent.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            undelivered: left.len() as u64,
            retries: c.retries.load(Ordering::Relaxed),
        };
        (summary, left, written)
    }
}

impl Drop for Delivery {
    /// A run that failed: stop the threads without waiting for receivers.
    fn drop(&mut self) {
        if let Some(d) = lock(&self.deliverer).take() {
            d.close(Duration::ZERO);
        }
        if let Some((tx, writer)) = lock(&self.log).take() {
            drop(tx);
            let _ = writer.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn row(o: Outcome) -> NotificationRow {
    NotificationRow {
        id: o.id,
        receiver: o.receiver,
        group_key: o.group_key,
        at: o.at,
        digest: o.digest,
        attempts: o.attempts,
        status: o.status.as_str(),
        http_status: o.http_status,
        error: o.error,
        first_attempt: o.first_attempt,
        last_attempt: o.last_attempt,
    }
}

/// The log writer: a file per flush, named `part-<process>-<wall ms>-<seq>.parquet` so that
/// runs and processes sharing the folder never collide.
fn write_log(rx: Rx<Outcome>, dir: PathBuf, process: usize, compression: Compression) -> Result<(), String> {
    let builder = NotificationsTable::default();
    let started = alertflow_model::time::wall_now();
    let (mut rows, mut seq, mut first_error) = (Vec::new(), 0u64, None);
    let mut last = Instant::now();
    let mut flush = |rows: &mut Vec<NotificationRow>, seq: &mut u64| {
        if rows.is_empty() {
            return;
        }
        let path = dir.join(format!("part-{process:04}-{started}-{seq:06}.parquet"));
        *seq += 1;
        builder.sort(rows);
        let written = write_file(&path, &builder, rows, compression, false);
        rows.clear();
        if let Err(e) = written {
            tracing::error!("{NOTIFICATIONS}: {e}");
            first_error.get_or_insert(e);
        }
    };
    loop {
        match rx.recv_timeout(FLUSH_EVERY) {
            Ok(o) => rows.push(row(o)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last.elapsed() >= FLUSH_EVERY || rows.len() >= 100_000 {
            flush(&mut rows, &mut seq);
            last = Instant::now();
        }
    }
    flush(&mut rows, &mut seq);
    first_error.map_or(Ok(()), Err)
}

/// The transport of a `kafka` receiver: a producer of its own, one message at a time, each
/// waited for (the delivery thread's retries and backoff apply as to HTTP).
fn kafka_transport(r: &Receiver) -> Result<Option<Box<dyn Transport>>, String> {
    if r.config.kind != ReceiverKind::Kafka {
        return Ok(None);
    }
    let timeout = Duration::from_millis(r.config.timeout.millis().max(1));
    let producer: BaseProducer<Reports> = ClientConfig::new()
        .set("bootstrap.servers", r.config.brokers.as_deref().unwrap_or_default())
        .set("message.timeout.ms", timeout.as_millis().to_string())
        .set("acks", "all")
        .create_with_context(Reports::default())
        .map_err(|e| format!("receiver `{}`: cannot create a Kafka producer: {e}", r.name()))?;
    let topic = r.config.topic.clone().unwrap_or_default();
    Ok(Some(Box::new(KafkaTransport { producer, topic, timeout, sent: 0 })))
}

/// Delivery reports, by message number: a report for a message given up on earlier (purged
/// after a timeout) must not count for the next one.
#[derive(Default)]
struct Reports {
    last: Mutex<Option<(usize, Result<(), String>)>>,
}

impl rdkafka::ClientContext for Reports {}

impl rdkafka::producer::ProducerContext for Reports {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, n: usize) {
        *lock(&self.last) = Some((n, result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string())));
    }
}

struct KafkaTransport {
    producer: BaseProducer<Reports>,
    topic: String,
    timeout: Duration,
    sent: usize,
}

impl Transport for KafkaTransport {
    fn send(&mut self, req: &alertflow_notify::receiver::Request) -> Result<(u16, String, Option<u64>), String> {
        use rdkafka::message::{Header, OwnedHeaders};
        use rdkafka::producer::{BaseRecord, Producer};
        self.sent += 1;
        let n = self.sent;
        let mut headers = OwnedHeaders::new();
        for (k, v) in &req.headers {
            headers = headers.insert(Header { key: k, value: Some(v.as_bytes()) });
        }
        let record = BaseRecord::with_opaque_to(&self.topic, n).key(&req.key).payload(&req.body).headers(headers);
        self.producer.send(record).map_err(|(e, _)| format!("kafka: {e}"))?;
        let deadline = Instant::now() + self.timeout + Duration::from_secs(1);
        loop {
            self.producer.poll(Duration::from_millis(50));
            let report = lock(&self.producer.context().last).take_if(|(m, _)| *m == n);
            if let Some((_, r)) = report {
                return r.map(|()| (200, String::new(), None)).map_err(|e| format!("kafka: {e}"));
            }
            if Instant::now() >= deadline {
                self.producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
                return Err(format!("kafka: no delivery report within {:?}", self.timeout));
            }
        }
    }
}
