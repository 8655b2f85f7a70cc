//! Delivery of the notify operator's notifications, and the `notifications` table.
//!
//! Every worker hands the notifications it decided to one [`Delivery`] per process: a thread
//! per receiver sends them (so the dataflow never waits on a receiver), retrying with backoff
//! (`alertflow_notify::deliver`). Every attempt's outcome is a row of the `notifications`
//! table, a delivery log written as Parquet by a thread of its own: a file every couple of
//! seconds while rows come, and the rest when the run ends. The latest row of an id is where
//! that notification stands.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver as Rx, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use alertflow_connectors::parquet::{Compression, write_file};
use alertflow_model::tables::{NOTIFICATIONS, NotificationRow, NotificationsTable};
use alertflow_notify::{Deliverer, Message, Outcome, Receiver, ReceiverConfig, Status};
use serde::Serialize;

/// How often the delivery log is written while outcomes come in.
const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Counts of the run summary's `notifications` block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NotifySummary {
    /// Notifications the dataflow decided and handed to delivery (this process).
    pub sent: u64,
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
    ) -> Result<Delivery, String> {
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
        let deliverer = Deliverer::start(built, move |o: Outcome| {
            match o.status {
                Status::Delivered => report_counts.delivered.fetch_add(1, Ordering::Relaxed),
                Status::Failed => report_counts.failed.fetch_add(1, Ordering::Relaxed),
                Status::Retrying => report_counts.retries.fetch_add(1, Ordering::Relaxed),
            };
            if let Status::Failed = o.status {
                tracing::warn!("notification {} to `{}` failed: {}", o.id, o.receiver, o.error.as_deref().unwrap_or("?"));
            }
            let _ = report_tx.lock().unwrap_or_else(|p| p.into_inner()).send(o);
        });
        Ok(Delivery { deliverer: Mutex::new(Some(deliverer)), log: Mutex::new(Some((tx, writer))), counts, drain })
    }

    /// Queues a notification; returns at once.
    pub fn deliver(&self, msg: Message) {
        self.counts.sent.fetch_add(1, Ordering::Relaxed);
        if let Some(d) = &*lock(&self.deliverer)
            && let Err(e) = d.deliver(msg)
        {
            tracing::error!("notification dropped: {e} (a bug: routes are checked against the receivers)");
        }
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
        let c = &self.counts;
        let summary = NotifySummary {
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
        if let Err(e) = write_file(&path, &builder, std::mem::take(rows), compression, false) {
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
