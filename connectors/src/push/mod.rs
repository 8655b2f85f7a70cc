//! Push sources (`type = "http"`): records clients push over HTTP — alerts as an Alertmanager
//! receives them, samples as a Prometheus remote-write receiver does (DESIGN §8).
//!
//! The HTTP handlers decode a body on the serving runtime ([`receive`]) and offer the records
//! to the source's [`PushQueue`]; a worker's source operator ([`push_source`]) takes them into
//! the dataflow and only then acknowledges, so a push answered 2xx is in the dataflow (nothing
//! acknowledged is lost on a normal shutdown). With checkpoints (`state_dir`) the worker also
//! appends the push to its write-ahead log ([`wal`]) first, and the answer waits until the
//! log is on disk (one sync for every push taken meanwhile): a crash loses nothing that was
//! acknowledged either, as the restarted run replays the log from its checkpoint. The queue is
//! bounded: a full queue answers 503 with `Retry-After` instead of growing.
//!
//! **Event time.** A pushed alert's event time is its receive time (Prometheus re-sends a
//! firing alert with its original `startsAt`; that and `endsAt` stay data). A sample's event
//! time is its own timestamp. The source is one partition: its watermark is the newest sample
//! time taken minus `max_out_of_orderness`, and a sample older than the watermark when its
//! request is taken is late (a dead letter, or a revision within `allowed_lateness`). A whole
//! request is judged against one watermark, because remote_write orders a request by series,
//! not by time. When nothing has been pushed for `idle_timeout` the watermark follows the wall
//! clock, so windows close and timeouts fire on a quiet system; alerts' watermark is the wall
//! clock (or the oldest alert still queued).
//!
//! Arrival order, and so batching, is the network's: unlike a file or a Kafka partition a push
//! cannot be replayed, and results are deterministic only up to what arrived when.

mod receive;
mod source;
mod wal;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alertflow_model::dead_letter::DeadLetter;
use alertflow_model::time::{DurationMs, wall_now};
use serde::{Deserialize, Serialize};
use timely::scheduling::SyncActivator;

pub use receive::{PushIngest, PushOutcome};
pub use source::{check_log, push_source};

use crate::file::{Records, SourceStats};
use crate::time_bounds::TimeBounds;

/// The `[[source]]` section of `type = "http"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSourceConfig {
    /// The source's name.
    pub name: String,
    /// `alerts` (served at `POST /api/v2/alerts`) or `metrics` (`POST /api/v1/write`).
    pub records: Records,
    /// How far a sample may be older than the newest one taken and still be on time.
    #[serde(default = "default_out_of_orderness")]
    pub max_out_of_orderness: DurationMs,
    /// Wall time without pushes after which the watermark follows the wall clock.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: DurationMs,
    /// Records accepted but not yet taken into the dataflow, at most; beyond, pushes get 503.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// The earliest sample time accepted (RFC 3339 or integer ms; default 2000-01-01): older
    /// samples are rejected (400) and become dead letters (see [`crate::time_bounds`]).
    #[serde(default)]
    pub min_event_time: Option<String>,
    /// How far ahead of the wall clock a sample time may be (default `1d`).
    #[serde(default = "crate::time_bounds::default_max_future")]
    pub max_future: DurationMs,
    /// `HOST:PORT` to receive on, instead of the `[serve]` HTTP port.
    #[serde(default)]
    pub listen: Option<String>,
}

/// 30 s: Prometheus's remote-write shards send concurrently, each holding samples up to its
/// `batch_send_deadline` (5 s by default) and retrying with backoff, so a tighter bound would
/// turn routine shard skew into late samples.
fn default_out_of_orderness() -> DurationMs {
    DurationMs::from_secs(30)
}

fn default_idle_timeout() -> DurationMs {
    DurationMs::from_secs(10)
}

fn default_max_pending() -> usize {
    1_000_000
}

/// A planned push source.
#[derive(Debug)]
pub struct PushSource {
    /// The source's name.
    pub name: Arc<str>,
    /// What it takes.
    pub records: Records,
    /// Its partition id (global across the pipeline's sources).
    pub part: u32,
    /// Where its records come from, for dead letters: the route.
    pub display: Arc<str>,
    /// `max_out_of_orderness` in ms.
    pub out_of_orderness: i64,
    /// `idle_timeout`.
    pub idle_timeout: Duration,
    /// Late samples kept as revisions within this many ms of the watermark (policy `update`).
    pub allowed_lateness: Option<i64>,
    /// `max_pending`.
    pub max_pending: usize,
    /// The sample times accepted (pushed alerts take the receive time, always inside).
    pub time_bounds: TimeBounds,
    /// Its own listen address (`listen`); none: the `[serve]` HTTP port.
    pub listen: Option<std::net::SocketAddr>,
}

impl PushSource {
    /// Checks a section; errors name the field.
    pub fn plan(c: &PushSourceConfig, part: u32) -> Result<PushSource, Vec<(String, String)>> {
        let mut errs = Vec::new();
        if c.max_pending == 0 {
            errs.push(("max_pending".to_string(), "must be at least 1".to_string()));
        }
        if c.idle_timeout.millis() == 0 {
            errs.push(("idle_timeout".to_string(), "must be greater than 0".to_string()));
        }
        let time_bounds = TimeBounds::from_config(c.min_event_time.as_deref(), c.max_future).unwrap_or_else(|(field, why)| {
            errs.push((field.to_string(), why));
            TimeBounds::default()
        });
        let listen = c.listen.as_ref().and_then(|v| match v.parse::<std::net::SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errs.push(("listen".to_string(), format!("`{v}` is not an address: write HOST:PORT with an IP, e.g. \"127.0.0.1:9093\"")));
                None
            }
        });
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(PushSource {
            listen,
            name: Arc::from(c.name.as_str()),
            records: c.records,
            part,
            display: Arc::from(match c.records {
                Records::Alerts => "POST /api/v2/alerts",
                Records::Metrics => "POST /api/v1/write",
            }),
            out_of_orderness: c.max_out_of_orderness.millis() as i64,
            idle_timeout: Duration::from_millis(c.idle_timeout.millis()),
            allowed_lateness: None,
            max_pending: c.max_pending,
            time_bounds,
        })
    }
}

/// A push as it arrived: what the write-ahead log keeps of it.
#[derive(Clone, Debug)]
pub struct Raw {
    /// The pusher's tenant.
    pub tenant: Arc<str>,
    /// The body.
    pub body: bytes::Bytes,
}

/// Records of one push, offered as a unit.
pub struct Batch<R> {
    /// The usable records.
    pub records: Vec<R>,
    /// The unusable ones.
    pub dead: Vec<DeadLetter>,
    /// Records received (usable or not), for the source's counters.
    pub received: u64,
    /// The push as it arrived.
    pub raw: Raw,
    /// The receive time (ms), for alerts.
    pub at: i64,
    /// The position of its first record.
    pub pos: u64,
    /// Tells the pusher its records are in (sent once they are, and logged if need be).
    ack: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Why an offer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_pending` records are waiting.
    Full,
    /// The source has stopped (shutdown or failure).
    Closed,
}

struct Pending<R> {
    batches: VecDeque<Batch<R>>,
    records: usize,
}

/// Between the HTTP handlers and the source operators of every worker.
pub struct PushQueue<R> {
    /// The source.
    pub source: Arc<PushSource>,
    /// The source's counters (read by `/metrics` and the run summary).
    pub stats: Arc<SourceStats>,
    pending: Mutex<Pending<R>>,
    closed: AtomicBool,
    /// Samples: the partition's watermark (ms); only rises.
    watermark: AtomicI64,
    /// Wall time (ms since the start) of the last push.
    last_push: AtomicU64,
    started: Instant,
    /// Receive times handed out (ms since the epoch); only rises, so alerts stamped later are
    /// never older than the wall clock a worker has already moved to.
    clock: AtomicI64,
    /// Request numbers: positions of records are `request << 24 | index`.
    requests: AtomicU64,
    wakers: Mutex<Vec<SyncActivator>>,
}

impl<R> PushQueue<R> {
    /// An open, empty queue.
    pub fn new(source: Arc<PushSource>, stats: Arc<SourceStats>) -> Self {
        PushQueue {
            source,
            stats,
            pending: Mutex::new(Pending { batches: VecDeque::new(), records: 0 }),
            closed: AtomicBool::new(false),
            watermark: AtomicI64::new(0),
            last_push: AtomicU64::new(0),
            started: Instant::now(),
            clock: AtomicI64::new(0),
            requests: AtomicU64::new(0),
            wakers: Mutex::new(Vec::new()),
        }
    }

    /// A receive time (ms since the epoch, never less than one handed out before) and the
    /// position of the request's first record.
    pub fn stamp(&self) -> (i64, u64) {
        let now = wall_now();
        let prev = self.clock.fetch_max(now, Ordering::AcqRel);
        (now.max(prev), self.requests.fetch_add(1, Ordering::Relaxed) << 24)
    }

    /// Queues `records` and `dead`, decoded from `raw` received at `at` (as stamped with the
    /// position of its first record, `pos`); the receiver resolves once a worker has taken them
    /// into the dataflow — and, with checkpoints, into its write-ahead log — and errs if the
    /// pipeline stops first.
    pub fn offer(
        &self,
        records: Vec<R>,
        dead: Vec<DeadLetter>,
        received: u64,
        raw: Raw,
        (at, pos): (i64, u64),
    ) -> Result<tokio::sync::oneshot::Receiver<()>, Refused> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Refused::Closed);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            // One push larger than the whole bound still goes in when nothing waits, or it
            // could never be taken.
            if p.records > 0 && p.records + records.len() > self.source.max_pending {
                return Err(Refused::Full);
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(Refused::Closed);
            }
            p.records += records.len();
            p.batches.push_back(Batch { records, dead, received, raw, at, pos, ack: Some(tx) });
        }
        self.last_push.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.wake();
        Ok(rx)
    }

    /// Stops taking pushes: what is queued is still taken, then the source ends.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Takes queued batches holding about `budget` records at most (at least one batch).
    pub(crate) fn take(&self, budget: usize, into: &mut Vec<Batch<R>>) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        while n < budget {
            let Some(b) = p.batches.pop_front() else { break };
            n += b.records.len().max(1);
            p.records -= b.records.len();
            into.push(b);
        }
    }

    /// Drops what is queued (the pipeline failed): the pushers get 503.
    pub(crate) fn abandon(&self) {
        self.closed.store(true, Ordering::Release);
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.batches.clear();
        p.records = 0;
    }

    /// The receive time of the oldest queued batch, if any.
    pub(crate) fn oldest_queued(&self) -> Option<i64> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).batches.front().map(|b| b.at)
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).batches.is_empty()
    }

    /// Whether nothing has been pushed for `idle_timeout`.
    pub(crate) fn idle(&self) -> bool {
        let last = Duration::from_millis(self.last_push.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last) >= self.source.idle_timeout
    }

    /// The samples' watermark.
    pub(crate) fn watermark(&self) -> i64 {
        self.watermark.load(Ordering::Acquire)
    }

    /// Raises the samples' watermark to `wm` (never lowers it); returns the new value.
    pub(crate) fn raise_watermark(&self, wm: i64) -> i64 {
        self.watermark.fetch_max(wm, Ordering::AcqRel).max(wm)
    }

    /// The next request number.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Makes later stamps number their requests after `n` (a restored source's last).
    pub(crate) fn requests_after(&self, n: u64) {
        self.requests.fetch_max(n + 1, Ordering::Relaxed);
    }

    /// Registers a worker to wake when something is pushed.
    pub(crate) fn register(&self, a: SyncActivator) {
        self.wakers.lock().unwrap_or_else(|e| e.into_inner()).push(a);
    }

    fn wake(&self) {
        for a in self.wakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = a.activate();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> Raw {
        Raw { tenant: Arc::from("default"), body: bytes::Bytes::from_static(b"body") }
    }

    fn queue(max_pending: usize) -> PushQueue<u32> {
        let c = PushSourceConfig {
            name: "p".into(),
            records: Records::Metrics,
            max_out_of_orderness: DurationMs::from_secs(5),
            idle_timeout: DurationMs::from_secs(10),
            max_pending,
            min_event_time: None,
            max_future: crate::time_bounds::default_max_future(),
            listen: None,
        };
        PushQueue::new(Arc::new(PushSource::plan(&c, 3).unwrap()), Arc::default())
    }

    #[test]
    fn a_full_queue_refuses_and_a_closed_one_drains_then_refuses() {
        let q = queue(10);
        let mut first = q.offer((0..8).collect(), vec![], 8, raw(), (0, 0)).unwrap();
        assert_eq!(q.offer((0..3).collect(), vec![], 3, raw(), (0, 0)).unwrap_err(), Refused::Full, "8 + 3 > 10");
        let _second = q.offer((0..2).collect(), vec![], 2, raw(), (0, 0)).unwrap();
        let mut taken = Vec::new();
        q.take(5, &mut taken);
        assert_eq!(taken.len(), 1, "a budget of 5 takes the first batch (8) only");
        assert!(first.try_recv().is_err(), "not acknowledged before it is in the dataflow");
        taken[0].ack.take().unwrap().send(()).unwrap();
        assert!(first.try_recv().is_ok());
        // Room again: 2 waiting, 8 more fit.
        let _third = q.offer((0..8).collect(), vec![], 8, raw(), (0, 0)).unwrap();
        q.close();
        assert_eq!(q.offer(vec![1], vec![], 1, raw(), (0, 0)).unwrap_err(), Refused::Closed);
        assert!(!q.is_empty(), "what was queued before the close is still taken");
        q.take(100, &mut taken);
        assert!(q.is_empty());
        // One push larger than the bound still goes in when nothing waits.
        let big = queue(4);
        big.offer((0..9).collect(), vec![], 9, raw(), (0, 0)).unwrap();
        // The pushers of an abandoned queue hear nothing: their receivers err.
        let q = queue(10);
        let mut rx = q.offer(vec![1], vec![], 1, raw(), (0, 0)).unwrap();
        q.abandon();
        assert!(matches!(rx.try_recv(), Err(tokio::sync::oneshot::error::TryRecvError::Closed)));
    }

    #[test]
    fn stamps_never_go_back_and_positions_are_per_request() {
        let q = queue(10);
        let (a, pa) = q.stamp();
        q.clock.store(a + 60_000, Ordering::Release); // as if the wall clock had stepped back a minute
        let (b, pb) = q.stamp();
        assert_eq!(b, a + 60_000);
        assert_eq!(pb - pa, 1 << 24);
        assert_eq!(q.raise_watermark(100), 100);
        assert_eq!(q.raise_watermark(50), 100, "the watermark never falls");
    }

    #[test]
    fn bad_sections_are_refused_with_their_field() {
        let c = PushSourceConfig {
            name: "p".into(),
            records: Records::Alerts,
            max_out_of_orderness: DurationMs::from_secs(0),
            idle_timeout: DurationMs::from_secs(0),
            max_pending: 0,
            min_event_time: Some("last tuesday".into()),
            max_future: DurationMs(0),
            listen: Some("localhost:9093".into()),
        };
        let e = PushSource::plan(&c, 0).unwrap_err();
        assert_eq!(e.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), ["max_pending", "idle_timeout", "min_event_time", "listen"]);
    }
}
