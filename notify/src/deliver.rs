//! Delivery: sends notifications to their receivers, off the dataflow's threads.
//!
//! Each receiver has its own thread and queue, so a slow or dead receiver delays only its own
//! notifications and never the pipeline ([`Deliverer::deliver`] only enqueues). A delivery:
//! - succeeds on a 2xx answer;
//! - is retried on a transport error (refused, reset, timed out), 408, 429 and 5xx, after
//!   `retry_initial` doubling up to `retry_max` (or the answer's `Retry-After`, within that
//!   bound), while other notifications of the receiver go ahead;
//! - fails at once on any other answer (a 4xx says the request itself is wrong: sending it
//!   again would not help), with the status and the start of the answer's body as the reason,
//!   and after `max_attempts` attempts.
//!
//! Requests to one receiver are spaced by its `rate_limit`. Every attempt is reported as an
//! [`Outcome`] (the rows of the `notifications` table), each with the notification's id,
//! which also goes out as the `Idempotency-Key` header.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::mpsc::{Receiver as Rx, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use alertflow_model::time::{Millis, wall_now};
use serde::{Deserialize, Serialize};

use crate::payload::Message;
use crate::receiver::{Receiver, Request};

/// Where a notification stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The receiver accepted it.
    Delivered,
    /// An attempt failed; another follows.
    Retrying,
    /// It will not be sent again (see the error).
    Failed,
}

impl Status {
    /// As the `notifications` table writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Delivered => "delivered",
            Status::Retrying => "retrying",
            Status::Failed => "failed",
        }
    }
}

/// One attempt's result: a row of the `notifications` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The notification's id (also its idempotency key).
    pub id: String,
    /// The receiver.
    pub receiver: String,
    /// The group.
    pub group_key: String,
    /// The event time of the tick that sent it.
    pub at: Millis,
    /// XXH3-64 of the request body, as 16 hex digits: what was sent.
    pub digest: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Where it stands.
    pub status: Status,
    /// The last answer's HTTP status, if there was an answer.
    pub http_status: Option<u16>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// Wall-clock time of the first attempt (ms since the epoch).
    pub first_attempt: Millis,
    /// Wall-clock time of this attempt.
    pub last_attempt: Millis,
}

enum Job {
    Send(Box<Message>),
    Close(Instant),
}

/// How one receiver's requests go out: HTTP by default; the engine supplies others (a Kafka
/// producer). Called from the receiver's own thread, one request at a time.
pub trait Transport: Send {
    /// Sends one request: `(status, the start of the answer's body, Retry-After in ms)`, with
    /// HTTP's meaning of the status (2xx delivered; 408, 429, 5xx retried; other 4xx failed),
    /// or a transport error (retried).
    fn send(&mut self, req: &Request) -> Result<(u16, String, Option<u64>), String>;
}

/// Makes the transport of a receiver, or `None` for HTTP.
pub type TransportFactory = dyn Fn(&Receiver) -> Result<Option<Box<dyn Transport>>, String>;

struct Http(ureq::Agent);

impl Transport for Http {
    fn send(&mut self, req: &Request) -> Result<(u16, String, Option<u64>), String> {
        send(&self.0, req)
    }
}

/// The delivery threads, one per receiver.
pub struct Deliverer {
    queues: HashMap<String, Sender<Job>>,
    threads: Vec<JoinHandle<Vec<Message>>>,
}

/// A notification for a receiver nobody configured (a bug in the caller: routes are
/// validated against the receivers).
#[derive(Debug, thiserror::Error)]
#[error("no receiver `{0}`")]
pub struct UnknownReceiver(pub String);

impl Deliverer {
    /// Starts a thread per receiver; `report` gets every attempt's outcome (from those
    /// threads).
    pub fn start(receivers: Vec<Receiver>, report: impl Fn(Outcome) + Send + Sync + 'static) -> Deliverer {
        Deliverer::start_with(receivers, report, &|_| Ok(None)).expect("HTTP transports always start")
    }

    /// [`start`](Self::start) with transports of the caller's for the receivers `transport`
    /// makes one for (the others use HTTP). Fails when a transport cannot be made.
    pub fn start_with(
        receivers: Vec<Receiver>,
        report: impl Fn(Outcome) + Send + Sync + 'static,
        transport: &TransportFactory,
    ) -> Result<Deliverer, String> {
        let report: Arc<dyn Fn(Outcome) + Send + Sync> = Arc::new(report);
        let mut queues = HashMap::new();
        let mut threads = Vec::new();
        for r in receivers {
            let t = match transport(&r)? {
                Some(t) => t,
                None => Box::new(Http(http_agent(&r))),
            };
            let (tx, rx) = channel();
            queues.insert(r.name().to_string(), tx);
            let report = report.clone();
            let name = format!("notify-{}", r.name());
            let t = std::thread::Builder::new()
                .name(name)
                .spawn(move || Worker::new(r, t, report).run(rx))
                .map_err(|e| format!("cannot start a delivery thread: {e}"))?;
            threads.push(t);
        }
        Ok(Deliverer { queues, threads })
    }

    /// Queues `msg` for its receiver; returns at once.
    pub fn deliver(&self, msg: Message) -> Result<(), UnknownReceiver> {
        let q = self.queues.get(&msg.receiver).ok_or_else(|| UnknownReceiver(msg.receiver.clone()))?;
        // A thread that ended already (it does only when closed) drops it: `close` returns
        // what was not delivered.
        let _ = q.send(Job::Send(Box::new(msg)));
        Ok(())
    }

    /// Stops taking notifications and gives the queued ones until `wait` to go out; returns
    /// those that did not (to be sent by the next run).
    pub fn close(self, wait: Duration) -> Vec<Message> {
        let deadline = Instant::now() + wait;
        for q in self.queues.values() {
            let _ = q.send(Job::Close(deadline));
        }
        drop(self.queues);
        self.threads.into_iter().flat_map(|t| t.join().unwrap_or_default()).collect()
    }
}

struct Pending {
    msg: Message,
    request: Request,
    digest: String,
    attempts: u32,
    first: Millis,
}

struct Worker {
    receiver: Receiver,
    transport: Box<dyn Transport>,
    report: Arc<dyn Fn(Outcome) + Send + Sync>,
    /// Due time, sequence number (FIFO among equals).
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Pending>,
    seq: u64,
    /// The earliest the next request may start (`rate_limit`).
    next_allowed: Instant,
}

fn http_agent(receiver: &Receiver) -> ureq::Agent {
    let timeout = Duration::from_millis(receiver.config.timeout.millis());
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        // Statuses are classified here; a redirect of a POST is not followed (the receiver's
        // URL is wrong: it fails with the status).
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent("alertflow")
        .build()
        .into()
}

impl Worker {
    fn new(receiver: Receiver, transport: Box<dyn Transport>, report: Arc<dyn Fn(Outcome) + Send + Sync>) -> Worker {
        Worker { receiver, transport, report, due: BinaryHeap::new(), pending: HashMap::new(), seq: 0, next_allowed: Instant::now() }
    }

    fn run(mut self, rx: Rx<Job>) -> Vec<Message> {
        let mut closing: Option<Instant> = None;
        loop {
            let now = Instant::now();
            // Wait for new work until the next due attempt (rate limit included).
            let next = self.due.peek().map(|Reverse((t, _))| (*t).max(self.next_allowed));
            if closing.is_some_and(|deadline| next.is_none() || now >= deadline) {
                return self.pending.into_values().map(|p| p.msg).collect();
            }
            let job = match (closing, next) {
                (_, Some(t)) if t <= now => None,
                // Closing: nothing more can arrive (the queue's sender is gone), so wait for
                // the next retry or the deadline without the queue.
                (Some(deadline), Some(t)) => {
                    std::thread::sleep(t.min(deadline) - now);
                    None
                }
                (None, Some(t)) => recv(&rx, t - now),
                // (Closing with nothing due returned above.)
                (_, None) => rx.recv().ok().or(Some(Job::Close(now))),
            };
            match job {
                Some(Job::Send(m)) => self.enqueue(*m),
                Some(Job::Close(deadline)) => closing = Some(deadline),
                None => {}
            }
            let now = Instant::now();
            if let Some(Reverse((t, seq))) = self.due.peek().copied()
                && t <= now
                && self.next_allowed <= now
            {
                self.due.pop();
                self.attempt(seq);
            }
        }
    }

    fn enqueue(&mut self, msg: Message) {
        let first = wall_now();
        match self.receiver.request(&msg) {
            Ok(request) => {
                let digest = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&request.body));
                self.seq += 1;
                self.due.push(Reverse((Instant::now(), self.seq)));
                self.pending.insert(self.seq, Pending { msg, request, digest, attempts: 0, first });
            }
            Err(e) => {
                // A template that cannot render fails the same way every time: no retry.
                tracing::warn!("notification to `{}` not sent: {e}", msg.receiver);
                (self.report)(Outcome {
                    id: msg.id(),
                    receiver: msg.receiver.clone(),
                    group_key: msg.group_key.clone(),
                    at: msg.at,
                    digest: String::new(),
                    attempts: 0,
                    status: Status::Failed,
                    http_status: None,
                    error: Some(e),
                    first_attempt: first,
                    last_attempt: first,
                });
            }
        }
    }

    fn attempt(&mut self, seq: u64) {
        let Some(mut p) = self.pending.remove(&seq) else { return };
        let cfg = &self.receiver.config;
        if cfg.rate_limit > 0.0 {
            self.next_allowed = Instant::now() + Duration::from_secs_f64(1.0 / cfg.rate_limit);
        }
        p.attempts += 1;
        let (status, http, error, retry_after) = match self.transport.send(&p.request) {
            Ok((code, _, _)) if (200..300).contains(&code) => (Status::Delivered, Some(code), None, None),
            Ok((code, body, retry_after)) => {
                let retry = code == 408 || code == 429 || code >= 500;
                let error = format!("HTTP {code}{}{}", if body.is_empty() { "" } else { ": " }, body);
                (if retry { Status::Retrying } else { Status::Failed }, Some(code), Some(error), retry_after)
            }
            Err(e) => (Status::Retrying, None, Some(e), None),
        };
        let status = if status == Status::Retrying && p.attempts >= cfg.max_attempts { Status::Failed } else { status };
        let error = match (status, error) {
            (Status::Failed, Some(e)) if p.attempts >= cfg.max_attempts && p.attempts > 1 => {
                Some(format!("gave up after {} attempts: {e}", p.attempts))
            }
            (_, e) => e,
        };
        (self.report)(Outcome {
            id: p.msg.id(),
            receiver: p.msg.receiver.clone(),
            group_key: p.msg.group_key.clone(),
            at: p.msg.at,
            digest: p.digest.clone(),
            attempts: p.attempts,
            status,
            http_status: http,
            error,
            first_attempt: p.first,
            last_attempt: wall_now(),
        });
        if status == Status::Retrying {
            let backoff = cfg.retry_initial.millis().saturating_mul(1 << (p.attempts - 1).min(30)).min(cfg.retry_max.millis());
            let wait = retry_after.map_or(backoff, |r| r.min(cfg.retry_max.millis()));
            self.due.push(Reverse((Instant::now() + Duration::from_millis(wait), seq)));
            self.pending.insert(seq, p);
        }
    }
}

fn recv(rx: &Rx<Job>, wait: Duration) -> Option<Job> {
    match rx.recv_timeout(wait) {
        Ok(j) => Some(j),
        Err(RecvTimeoutError::Timeout) => None,
        // Every sender is gone without a close: finish now.
        Err(RecvTimeoutError::Disconnected) => Some(Job::Close(Instant::now())),
    }
}

/// Sends one request: (status, the start of the body, `Retry-After` in ms) or the transport
/// error.
fn send(agent: &ureq::Agent, req: &Request) -> Result<(u16, String, Option<u64>), String> {
    let mut r = agent.post(&req.url).header("Content-Type", "application/json");
    for (k, v) in &req.headers {
        r = r.header(k, v);
    }
    let resp = r.send(&req.body[..]).map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    let retry_after =
        resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok()).map(|s| s * 1000);
    // Enough of the body to say why; the rest is not read.
    let mut raw = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::Read::take(resp.into_body().into_reader(), 4096), &mut raw);
    let mut body = String::from_utf8_lossy(&raw).into_owned();
    if body.len() > 200 {
        let cut = (0..=200).rev().find(|&i| body.is_char_boundary(i)).unwrap_or(0);
        body.truncate(cut);
        body.push('…');
    }
    Ok((code, body.trim().to_string(), retry_after))
}
