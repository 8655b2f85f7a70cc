//! Receiving pushes: decode a body on the caller's (HTTP) thread, offer the records to the
//! source's queue, and wait until a worker has taken them into the dataflow.

use std::sync::{Arc, Mutex};

use alertflow_model::dead_letter::DeadLetter;
use alertflow_model::decode::{AlertDecoder, DecodeError, RemoteWriteDecoder};
use alertflow_model::{Alert, Metric};
use bytes::Bytes;

use super::source::PushRecord;
use super::{PushQueue, PushSource, Raw, Refused};

/// Decoders kept for reuse (each holds a label or series interner); more are made while
/// more requests run at once, and the pool keeps this many.
const POOL: usize = 4;
/// Problems listed in one answer; the dead letters hold them all.
const MAX_LISTED: usize = 5;

/// What became of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Every record is in the dataflow.
    Taken,
    /// The body (or some of its records) was unusable; the usable records are in the dataflow
    /// and the unusable ones in `dead_letters`.
    Rejected(String),
    /// Nothing was taken: the queue is full (`busy`) or the source has stopped.
    Refused {
        /// Why.
        message: String,
        /// Full rather than stopped.
        busy: bool,
    },
}

/// The push sources of a pipeline: at most one for alerts and one for samples.
#[derive(Default)]
pub struct PushIngest {
    /// The alert source's queue.
    pub alerts: Option<Arc<PushQueue<Alert>>>,
    /// The sample source's queue.
    pub metrics: Option<Arc<PushQueue<Metric>>>,
    alert_decoders: Mutex<Vec<AlertDecoder>>,
    write_decoders: Mutex<Vec<RemoteWriteDecoder>>,
}

impl PushIngest {
    /// Receives for these queues.
    pub fn new(alerts: Option<Arc<PushQueue<Alert>>>, metrics: Option<Arc<PushQueue<Metric>>>) -> Self {
        PushIngest { alerts, metrics, ..Default::default() }
    }

    /// Stops every source taking pushes (a normal shutdown): queued pushes are still taken.
    pub fn close(&self) {
        if let Some(q) = &self.alerts {
            q.close();
        }
        if let Some(q) = &self.metrics {
            q.close();
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.alerts.as_ref().is_some_and(|q| q.is_closed()) || self.metrics.as_ref().is_some_and(|q| q.is_closed())
    }

    /// The sample source's watermark (ms), if there is one.
    pub fn samples_watermark(&self) -> Option<i64> {
        self.metrics.as_ref().map(|q| q.watermark())
    }

    /// Raises the sample source's watermark to `wm`: in a cluster, the processes that receive
    /// no pushes follow the one that does, so their (empty) sources hold the cluster's
    /// frontier where that one's does, not at the wall clock.
    pub fn follow_samples_watermark(&self, wm: i64) {
        if let Some(q) = &self.metrics {
            q.raise_watermark(wm);
        }
    }

    /// An Alertmanager `POST /api/v2/alerts` body.
    pub async fn alerts(&self, tenant: Arc<str>, body: Bytes) -> PushOutcome {
        let Some(q) = &self.alerts else { return refused(Refused::Closed, "no source takes alerts") };
        push(q, &self.alert_decoders, tenant, body).await
    }

    /// A remote_write 1.0 body.
    pub async fn write(&self, tenant: Arc<str>, body: Bytes) -> PushOutcome {
        let Some(q) = &self.metrics else { return refused(Refused::Closed, "no source takes samples") };
        push(q, &self.write_decoders, tenant, body).await
    }
}

/// What a push body holds, decoded: the same from the HTTP handler and from a replay of the
/// write-ahead log, given the same receive time and position.
pub struct Decoded<R> {
    /// The usable records.
    pub(crate) records: Vec<R>,
    /// The unusable ones (and the whole body, when it is unreadable).
    pub(crate) dead: Vec<DeadLetter>,
    /// Records received, usable or not.
    pub(crate) received: u64,
    /// What the pusher hears when something was unusable (400).
    pub(crate) rejected: Option<String>,
}

/// Decodes an Alertmanager v2 body: see [`PushIngest::alerts`].
pub(crate) fn decode_alerts(dec: &mut AlertDecoder, src: &PushSource, tenant: &str, body: &[u8], at: i64, pos: u64) -> Decoded<Alert> {
    let (mut records, mut bad) = (Vec::new(), Vec::new());
    if let Err(e) = dec.pushed(body, tenant, at, src.part, pos, &mut records, &mut bad) {
        // Nothing usable: the whole body is one dead letter.
        return Decoded {
            records: Vec::new(),
            dead: vec![DeadLetter::new(&src.name, &src.display, pos, e.to_string(), body, None)],
            received: 1,
            rejected: Some(format!("the body is not an Alertmanager v2 alert array: {e}")),
        };
    }
    let received = (records.len() + bad.len()) as u64;
    let listed: Vec<String> = bad.iter().take(MAX_LISTED).map(|(i, e)| format!("alert {i}: {e}")).collect();
    let nbad = bad.len();
    let texts = alert_texts(body, &bad);
    let dead = bad
        .into_iter()
        .zip(texts)
        .map(|((i, e), text)| DeadLetter::new(&src.name, &src.display, pos + i as u64, e.to_string(), &text, Some(at)))
        .collect();
    let rejected = (nbad > 0).then(|| format!("{nbad} of {received} alerts rejected: {}", listed.join("; ")));
    Decoded { records, dead, received, rejected }
}

/// Decodes a remote_write 1.0 body: see [`PushIngest::write`]. Samples outside the source's
/// event-time bounds (judged at the receive time `at`) are unusable.
pub(crate) fn decode_write(
    dec: &mut RemoteWriteDecoder,
    src: &PushSource,
    tenant: &str,
    body: &[u8],
    at: i64,
    pos: u64,
) -> Decoded<Metric> {
    let (mut records, mut dead, mut listed) = (Vec::new(), Vec::new(), Vec::new());
    // Samples outside the source's event-time bounds: (position, reason, text, ts).
    let mut outside = Vec::new();
    let upper = src.time_bounds.upper(at);
    let summary = {
        // Positions in request order, good and bad samples alike.
        let i = std::cell::Cell::new(0u64);
        let next = || {
            i.set(i.get() + 1);
            pos + i.get() - 1
        };
        dec.decode(
            body,
            tenant,
            |series, ts, value| match src.time_bounds.reject(ts, upper) {
                None => records.push(Metric { series: series.clone(), ts, value, part: src.part, pos: next(), late: false }),
                Some(why) => outside.push((next(), why, format!("{}{} {value} @{ts}", series.name(), series.labels_json()), ts)),
            },
            |b| {
                if listed.len() < MAX_LISTED {
                    listed.push(format!("series {}: {}", b.index, b.reason));
                }
                dead.push(DeadLetter::new(&src.name, &src.display, next(), b.reason, b.text.as_bytes(), b.ts));
            },
        )
    };
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            return Decoded {
                records: Vec::new(),
                dead: vec![DeadLetter::new(&src.name, &src.display, pos, e.to_string(), body, None)],
                received: 1,
                rejected: Some(format!("the body is not a remote_write request: {e}")),
            };
        }
    };
    let received = (summary.samples + summary.bad) as u64;
    let nbad = summary.bad + outside.len();
    for (at_pos, why, text, ts) in outside {
        if listed.len() < MAX_LISTED {
            listed.push(format!("sample {text}: {why}"));
        }
        dead.push(DeadLetter::new(&src.name, &src.display, at_pos, why, text.as_bytes(), Some(ts)));
    }
    let rejected =
        (nbad > 0).then(|| format!("{nbad} of {received} samples or series rejected (the rest were taken): {}", listed.join("; ")));
    Decoded { records, dead, received, rejected }
}

/// Decodes a push on the caller's thread, offers it, and waits until a worker has taken it
/// (and, with checkpoints, logged it).
async fn push<R: PushRecord>(q: &PushQueue<R>, pool: &Mutex<Vec<R::Decoder>>, tenant: Arc<str>, body: Bytes) -> PushOutcome {
    let (at, pos) = q.stamp();
    let mut dec = take(pool);
    let d = R::decode(&mut dec, &q.source, &tenant, &body, at, pos);
    put(pool, dec);
    if d.records.is_empty() && d.dead.is_empty() {
        return PushOutcome::Taken; // an empty push: nothing to take or log
    }
    let rx = match q.offer(d.records, d.dead, d.received, Raw { tenant, body }, (at, pos)) {
        Ok(rx) => rx,
        Err(r) => return refused(r, &q.source.name),
    };
    match rx.await {
        Err(_) => refused(Refused::Closed, &q.source.name),
        Ok(()) => d.rejected.map_or(PushOutcome::Taken, PushOutcome::Rejected),
    }
}

fn refused(r: Refused, source: &str) -> PushOutcome {
    match r {
        Refused::Full => PushOutcome::Refused {
            message: format!("source `{source}`: too many records are waiting to enter the dataflow (max_pending); retry later"),
            busy: true,
        },
        Refused::Closed => {
            PushOutcome::Refused { message: format!("source `{source}`: the pipeline is stopping or has stopped"), busy: false }
        }
    }
}

fn take<D: Default>(pool: &Mutex<Vec<D>>) -> D {
    pool.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default()
}

fn put<D>(pool: &Mutex<Vec<D>>, d: D) {
    let mut p = pool.lock().unwrap_or_else(|e| e.into_inner());
    if p.len() < POOL {
        p.push(d);
    }
}

/// The text of each rejected alert of a JSON array body, for its dead letter (the whole body
/// when it cannot be found, which the dead letter then cuts to its limit). The body is parsed
/// once, and only when some alert was rejected.
fn alert_texts(body: &[u8], bad: &[(usize, DecodeError)]) -> Vec<Vec<u8>> {
    if bad.is_empty() {
        return Vec::new();
    }
    let v = serde_json::from_slice::<serde_json::Value>(body).ok();
    bad.iter().map(|(i, _)| v.as_ref().and_then(|v| v.get(*i)).map_or_else(|| body.to_vec(), |a| a.to_string().into_bytes())).collect()
}
