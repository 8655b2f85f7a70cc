//! Checkpoints in a cluster: the processes agree on every checkpoint through process 0.
//!
//! In one process a checkpoint is decided under a lock that every source takes before it
//! downgrades its capability, so no source passes the decided time before every operator can
//! see it. Between processes there is no such lock: a source of process 1 could pass the time
//! process 0 just decided while the decision is on its way, and an operator of process 2 could
//! then see its frontier pass a checkpoint it never heard of. So:
//!
//! - **Horizon.** Sources hold their capabilities at or before a *horizon* `H` (they keep
//!   reading and emitting records at later times; only their frontier waits), and a source
//!   that is done drops its capability only once `H` is past its last time. Process 0 moves
//!   `H` forward when sources ask, ahead of them by a distance that doubles each time they
//!   catch up before the next checkpoint is due, so that they seldom wait for it.
//! - **Decision.** When a checkpoint is due, process 0 decides it at `B ≥ H` (a multiple of the
//!   interval): no source anywhere is past `H`, so no operator anywhere has passed `B`. It
//!   tells every process (`decide`), each opens the checkpoint and answers (`ack`), and only
//!   when all have does process 0 move `H` past `B`: every process knows of `B` before any
//!   frontier can pass it.
//! - **Commit, in two phases.** Each process writes its own workers' parts to its own state
//!   folder without moving `CURRENT` (`prepared`); when every process has, process 0 moves its
//!   `CURRENT` — the cluster's commit point — and tells the others (`commit`), which move theirs.
//! - **Resume.** At start process 0 tells every process the checkpoint it committed last; each
//!   loads that one, adopting it if it was prepared but its commit never arrived (see
//!   [`store::adopt`]). A process that cannot resume from it fails every process's start.
//!
//! The messages are JSON lines on a connection of their own between process 0 and each other
//! process (made beside timely's), read and written by threads of their own, so they never
//! wait for a worker to be scheduled.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{CheckpointConfig, CheckpointError, Checkpoints, State, Time, lock, store};

/// How long start-up waits for the other processes to load their state.
const HANDSHAKE: Duration = Duration::from_secs(120);
/// How often process 0 looks whether a checkpoint is due when nothing else wakes it.
const TICK: Duration = Duration::from_millis(5);

/// This process's connections for checkpoint coordination.
pub enum ClusterLink {
    /// Process 0: one connection to each other process, with its index.
    Coordinator {
        /// (process index, connection).
        followers: Vec<(usize, TcpStream)>,
    },
    /// Any other process: its connection to process 0.
    Follower {
        /// This process's index.
        process: usize,
        /// The connection to process 0.
        coordinator: TcpStream,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "m", rename_all = "snake_case")]
enum Msg {
    /// 0 → p at start: resume from the checkpoint at `at` (0: start afresh).
    Resume { at: Time },
    /// p → 0 at start: loaded it (or why not).
    Ready { error: Option<String> },
    /// 0 → p at start: every process is ready.
    Go,
    /// p → 0: every worker of p has built its dataflow.
    Built,
    /// p → 0: p's sources ask for `t`; `done`: every source of p is done.
    Want { t: Time, done: bool },
    /// 0 → p: the checkpoint at `at` is decided.
    Decide { at: Time },
    /// p → 0: p knows of it.
    Ack { at: Time },
    /// 0 → p: sources may hold capabilities up to `h`.
    Horizon { h: Time },
    /// p → 0: p's share of `at` is written.
    Prepared { at: Time },
    /// 0 → p: `at` is committed.
    Commit { at: Time },
    /// p → 0: a stop wants a checkpoint soon.
    Hurry,
    /// Either way: this side failed (at start: the cluster cannot resume).
    Failed { error: String },
    /// Either way: this side's run is over; the connection closes next.
    Bye,
}

/// A process's view of checkpointing in the cluster (in [`State`], under its lock).
pub(crate) enum Role {
    Coordinator(Coordinator),
    Follower(Follower),
}

pub(crate) struct Coordinator {
    peers: Vec<Peer>,
    /// Processes that have not acknowledged the checkpoint in flight.
    acks_missing: usize,
    /// Whether the horizon moved past the checkpoint in flight.
    raised: bool,
    /// This process's share of the checkpoint in flight is written: (at, decided, its files).
    local: Option<(Time, Instant, Vec<String>)>,
    /// The commit of the checkpoint in flight has begun.
    finalizing: bool,
    /// How far past what the sources ask the horizon moves (event time, ms; see
    /// [`Link::extend`]).
    ahead: Time,
    /// When the horizon moved last.
    moved: Option<Instant>,
}

struct Peer {
    process: usize,
    built: bool,
    want: Time,
    done: bool,
    acked: Time,
    prepared: Time,
}

pub(crate) struct Follower {
    /// The furthest time asked for so far.
    asked: Time,
    told_done: bool,
    /// This process's share of the checkpoint in flight is written: (at, decided, its files).
    prepared: Option<(Time, Instant, Vec<String>)>,
}

/// The connections of a process of a cluster.
pub(crate) struct Link {
    coordinator: bool,
    /// Queues to the writer thread of each connection: (process, queue).
    peers: Mutex<Vec<(usize, Sender<Msg>)>>,
    /// The writer threads: joined at the end, so that `bye` is out before the process exits.
    writers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Set when this run is over: a connection closing then is no loss.
    closing: Arc<AtomicBool>,
}

fn round_up(t: Time, i: Time) -> Time {
    t.div_ceil(i).saturating_mul(i)
}

fn send_line(stream: &mut TcpStream, m: &Msg) -> std::io::Result<()> {
    let mut line = serde_json::to_string(m).map_err(std::io::Error::other)?;
    line.push('\n');
    stream.write_all(line.as_bytes())
}

fn read_msg(reader: &mut BufReader<TcpStream>) -> Result<Msg, String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err("closed the connection".into()),
        Ok(_) => serde_json::from_str(line.trim_end()).map_err(|e| format!("sent something else than a checkpoint message ({e})")),
        Err(e) => Err(format!("did not answer ({e})")),
    }
}

/// Opens this process's state folder in agreement with the others (see the module docs).
pub(crate) fn open(cfg: CheckpointConfig, link: ClusterLink) -> Result<Arc<Checkpoints>, CheckpointError> {
    let io = |what: String| move |e: std::io::Error| CheckpointError::Cluster(format!("{what}: {e}"));
    let mut conns: Vec<(usize, BufReader<TcpStream>, TcpStream)> = Vec::new();
    let streams = match link {
        ClusterLink::Coordinator { followers } => followers,
        ClusterLink::Follower { coordinator, .. } => vec![(0, coordinator)],
    };
    let coordinator = streams.iter().all(|(p, _)| *p != 0);
    for (p, s) in streams {
        s.set_read_timeout(Some(HANDSHAKE)).map_err(io(format!("process {p}")))?;
        let reader = BufReader::new(s.try_clone().map_err(io(format!("process {p}")))?);
        conns.push((p, reader, s));
    }
    let resumed = if coordinator {
        let resumed = store::load(&cfg);
        let first = match &resumed {
            Ok(r) => Msg::Resume { at: r.as_ref().map_or(0, |r| r.manifest.at) },
            Err(e) => Msg::Failed { error: format!("process 0: {e}") },
        };
        for (p, _, s) in &mut conns {
            send_line(s, &first)
                .map_err(io(format!("lost the connection to process {p} at start, while agreeing on the checkpoint to resume from")))?;
        }
        let resumed = resumed?;
        let mut errors = Vec::new();
        for (p, r, _) in &mut conns {
            match read_msg(r) {
                Ok(Msg::Ready { error: None }) => {}
                Ok(Msg::Ready { error: Some(e) }) => errors.push(format!("process {p}: {e}")),
                Ok(m) => errors.push(format!("process {p} answered {m:?} at start (a bug)")),
                Err(e) => errors.push(format!("process {p} {e} while loading its state folder")),
            }
        }
        let last = if errors.is_empty() { Msg::Go } else { Msg::Failed { error: errors.join("; ") } };
        for (_, _, s) in &mut conns {
            let _ = send_line(s, &last);
        }
        if !errors.is_empty() {
            return Err(CheckpointError::Cluster(format!("the cluster cannot resume: {}", errors.join("; "))));
        }
        resumed
    } else {
        let (_, r, s) = &mut conns[0];
        let at = match read_msg(r) {
            Ok(Msg::Resume { at }) => at,
            Ok(Msg::Failed { error }) => return Err(CheckpointError::Cluster(format!("the cluster cannot resume: {error}"))),
            Ok(m) => return Err(CheckpointError::Cluster(format!("process 0 said {m:?} at start (a bug)"))),
            Err(e) => return Err(CheckpointError::Cluster(format!("process 0 {e} at start"))),
        };
        let resumed = store::adopt(&cfg, at);
        send_line(s, &Msg::Ready { error: resumed.as_ref().err().map(|e| e.to_string()) })
            .map_err(io("lost the connection to process 0 at start, while agreeing on the checkpoint to resume from".into()))?;
        let resumed = resumed?;
        match read_msg(r) {
            Ok(Msg::Go) => {}
            Ok(Msg::Failed { error }) => return Err(CheckpointError::Cluster(format!("the cluster cannot resume: {error}"))),
            Ok(m) => return Err(CheckpointError::Cluster(format!("process 0 said {m:?} at start (a bug)"))),
            Err(e) => return Err(CheckpointError::Cluster(format!("process 0 {e} at start"))),
        }
        resumed
    };

    let closing = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for (p, r, s) in conns {
        s.set_read_timeout(None).map_err(io(format!("process {p}")))?;
        let (tx, rx) = channel();
        writers.push(spawn(&format!("checkpoint-send-{p}"), move || write_loop(s, rx))?);
        senders.push((p, tx));
        readers.push((p, r));
    }
    let link = Link { coordinator, peers: Mutex::new(senders), writers: Mutex::new(writers), closing: closing.clone() };
    let this = Checkpoints::assemble(cfg, resumed, Some(link))?;
    for (p, r) in readers {
        let (weak, closing) = (Arc::downgrade(&this), closing.clone());
        spawn(&format!("checkpoint-recv-{p}"), move || read_loop(weak, p, r, closing))?;
    }
    if coordinator {
        let (weak, closing) = (Arc::downgrade(&this), closing.clone());
        spawn("checkpoint-tick", move || {
            while !closing.load(Ordering::Acquire) {
                std::thread::sleep(TICK);
                let Some(this) = weak.upgrade() else { return };
                let mut s = lock(&this.state);
                if let Some(link) = &this.link {
                    link.coordinate(&this, &mut s);
                }
            }
        })?;
    }
    Ok(this)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<std::thread::JoinHandle<()>, CheckpointError> {
    std::thread::Builder::new().name(name.into()).spawn(f).map_err(|e| CheckpointError::Cluster(format!("cannot start thread {name}: {e}")))
}

fn write_loop(mut stream: TcpStream, rx: Receiver<Msg>) {
    for m in rx {
        if send_line(&mut stream, &m).is_err() {
            return; // the reader of this connection reports the loss
        }
    }
}

fn read_loop(weak: Weak<Checkpoints>, from: usize, mut reader: BufReader<TcpStream>, closing: Arc<AtomicBool>) {
    let lost = loop {
        let m = read_msg(&mut reader);
        let Some(this) = weak.upgrade() else { return };
        match m {
            Ok(Msg::Bye) => return,
            Ok(m) => {
                if let Some(link) = &this.link {
                    link.on_message(&this, from, m);
                }
            }
            Err(e) => break e,
        }
    };
    if !closing.load(Ordering::Acquire)
        && let Some(this) = weak.upgrade()
    {
        this.set_error(format!(
            "process {from} {lost} (checkpoint coordination): it stopped or crashed, so the cluster stops (start every process again; they resume from the last checkpoint)"
        ));
    }
}

impl Link {
    pub(crate) fn role(&self) -> Role {
        if self.coordinator {
            let peers = lock(&self.peers)
                .iter()
                .map(|(p, _)| Peer { process: *p, built: false, want: 0, done: false, acked: 0, prepared: 0 })
                .collect();
            Role::Coordinator(Coordinator { peers, acks_missing: 0, raised: false, local: None, finalizing: false, ahead: 0, moved: None })
        } else {
            Role::Follower(Follower { asked: 0, told_done: false, prepared: None })
        }
    }

    fn send(&self, m: Msg) {
        for (_, tx) in lock(&self.peers).iter() {
            let _ = tx.send(m.clone());
        }
    }

    /// This run is over: the others are told, and the connections close.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.send(Msg::Bye);
        lock(&self.peers).clear();
        for w in std::mem::take(&mut *lock(&self.writers)) {
            let _ = w.join();
        }
    }

    /// Every worker of this process has built its dataflow.
    pub(crate) fn built(&self, cp: &Checkpoints, s: &mut State) {
        if self.coordinator {
            self.coordinate(cp, s);
        } else {
            self.send(Msg::Built);
        }
    }

    /// A stop asks for a checkpoint soon.
    pub(crate) fn hurry(&self, cp: &Checkpoints, s: &mut State) {
        if self.coordinator {
            self.coordinate(cp, s);
        } else {
            self.send(Msg::Hurry);
        }
    }

    /// Whatever changed (a source asked, a message came, time passed): process 0 decides
    /// checkpoints and moves the horizon; the others ask it to move the horizon.
    pub(crate) fn coordinate(&self, cp: &Checkpoints, s: &mut State) {
        let Some(mut role) = s.cluster.take() else { return };
        match &mut role {
            Role::Coordinator(c) => self.lead(cp, s, c),
            Role::Follower(f) => {
                let done = !s.sources.is_empty() && s.sources_done.iter().all(|d| *d);
                if (s.want > s.horizon && f.asked <= s.horizon) || (done && !f.told_done) {
                    f.asked = s.want;
                    f.told_done = done;
                    self.send(Msg::Want { t: s.want, done });
                }
            }
        }
        s.cluster = Some(role);
    }

    fn lead(&self, cp: &Checkpoints, s: &mut State, c: &mut Coordinator) {
        let i = cp.cfg.interval.max(1);
        let all_done = !s.sources.is_empty() && s.sources_done.iter().all(|d| *d) && c.peers.iter().all(|p| p.done);
        if all_done {
            // Nothing moves any more: the run is ending, every source may drop its capability.
            if s.horizon != Time::MAX {
                s.horizon = Time::MAX;
                self.send(Msg::Horizon { h: Time::MAX });
            }
            return;
        }
        let want = c.peers.iter().map(|p| p.want).fold(s.want, Time::max);
        match s.in_flight.as_ref().map(|f| f.at) {
            None => {
                let built = s.built >= cp.cfg.workers && c.peers.iter().all(|p| p.built) && !s.sources.is_empty();
                // (Not while no source has asked past the latest checkpoint: nothing is new.)
                let due = s.last_commit.elapsed() >= cp.cfg.min_wall && want > s.committed;
                if built && (s.hurry || due) {
                    // No source anywhere holds a capability past the horizon, and none that is
                    // done dropped it before the horizon passed its end: no frontier has passed
                    // `at`, and none will before every process knows of it (see the module docs).
                    let at = round_up(s.horizon, i).max(s.committed.saturating_add(i)).max(i);
                    s.hurry = false;
                    c.acks_missing = c.peers.len();
                    c.raised = false;
                    c.local = None;
                    c.finalizing = false;
                    c.ahead /= 4;
                    cp.open_in_flight(s, at);
                    self.send(Msg::Decide { at });
                } else if want > s.horizon {
                    self.extend(cp, s, c, want, false);
                }
            }
            Some(at) => {
                if c.acks_missing == 0 && (!c.raised || want > s.horizon) {
                    c.raised = true;
                    self.extend(cp, s, c, want.max(at), true);
                }
            }
        }
    }

    /// Moves the horizon past `want`, and further: when the sources used up the previous
    /// move in less than half the wall time left until the next checkpoint is due, twice as
    /// far ahead as then, so that a fast replay soon asks seldom; a decision cuts the distance
    /// to a quarter. So the next checkpoint lies at most about one move past where the sources
    /// are when it is due. (Not a pace estimate: event time jumps — a gap in the data, the
    /// first record after the start — would throw that far ahead, and the checkpoint with it.)
    fn extend(&self, cp: &Checkpoints, s: &mut State, c: &mut Coordinator, want: Time, in_flight: bool) {
        let i = cp.cfg.interval.max(1);
        let until_due = if in_flight { cp.cfg.min_wall } else { cp.cfg.min_wall.saturating_sub(s.last_commit.elapsed()) };
        if c.moved.is_some_and(|m| m.elapsed() * 2 < until_due) {
            c.ahead = c.ahead.max(i).saturating_mul(2);
        }
        c.moved = Some(Instant::now());
        let ahead = c.ahead.max(i);
        let h = round_up(want.saturating_add(ahead), i);
        if h > s.horizon {
            tracing::trace!("horizon {h} (sources ask {want}, {ahead} ms ahead)");
            s.horizon = h;
            self.send(Msg::Horizon { h });
        }
    }

    /// This process's share of checkpoint `at` is written (on the committer thread).
    pub(crate) fn prepared(&self, cp: &Checkpoints, at: Time, decided: Instant, files: Vec<String>) {
        let mut s = lock(&cp.state);
        match s.cluster.as_mut() {
            Some(Role::Coordinator(c)) => {
                c.local = Some((at, decided, files));
                let ready = self.ready_to_commit(&s);
                drop(s);
                if let Some(r) = ready {
                    self.commit(cp, r);
                }
            }
            Some(Role::Follower(f)) => {
                f.prepared = Some((at, decided, files));
                drop(s);
                self.send(Msg::Prepared { at });
            }
            None => {}
        }
    }

    /// Process 0: the checkpoint in flight, once every process has prepared it (and its commit
    /// has not begun).
    fn ready_to_commit(&self, s: &State) -> Option<(Time, Instant, Vec<String>)> {
        let at = s.in_flight.as_ref()?.at;
        let Some(Role::Coordinator(c)) = &s.cluster else { return None };
        let (local_at, decided, files) = c.local.as_ref()?;
        (*local_at == at && !c.finalizing && c.peers.iter().all(|p| p.prepared == at)).then(|| (at, *decided, files.clone()))
    }

    /// Process 0 commits: its `CURRENT` is the cluster's commit point; then the others follow.
    fn commit(&self, cp: &Checkpoints, (at, decided, files): (Time, Instant, Vec<String>)) {
        if let Some(Role::Coordinator(c)) = lock(&cp.state).cluster.as_mut() {
            if c.finalizing {
                return;
            }
            c.finalizing = true;
        }
        if let Err(e) = store::make_current(&cp.cfg, at, &files) {
            cp.set_error(e.to_string());
            return;
        }
        self.send(Msg::Commit { at });
        cp.committed_at(at, decided);
    }

    fn on_message(&self, cp: &Checkpoints, from: usize, m: Msg) {
        let mut s = lock(&cp.state);
        let in_flight = s.in_flight.as_ref().map(|f| f.at);
        match (s.cluster.as_mut(), m) {
            (_, Msg::Failed { error }) => {
                drop(s);
                cp.set_error(format!("process {from}: {error}"));
            }
            (Some(Role::Coordinator(c)), m) => {
                let Some(peer) = c.peers.iter_mut().find(|p| p.process == from) else { return };
                match m {
                    Msg::Built => peer.built = true,
                    Msg::Want { t, done } => {
                        peer.want = peer.want.max(t);
                        peer.done = done;
                    }
                    Msg::Ack { at } => {
                        if peer.acked < at && in_flight == Some(at) {
                            peer.acked = at;
                            c.acks_missing = c.acks_missing.saturating_sub(1);
                        }
                    }
                    Msg::Prepared { at } => {
                        peer.prepared = at;
                        let ready = self.ready_to_commit(&s);
                        drop(s);
                        if let Some(r) = ready {
                            self.commit(cp, r);
                        }
                        return;
                    }
                    Msg::Hurry => s.hurry = true,
                    m => {
                        drop(s);
                        cp.set_error(format!("process {from} sent {m:?} to process 0 (a bug)"));
                        return;
                    }
                }
                self.coordinate(cp, &mut s);
            }
            (Some(Role::Follower(f)), m) => match m {
                Msg::Decide { at } => {
                    if let Some(other) = in_flight {
                        drop(s);
                        cp.set_error(format!("process 0 decided the checkpoint at {at} while {other} was in flight (a bug)"));
                        return;
                    }
                    // Acknowledged under the lock: before the committer (which takes it) can
                    // say `prepared`, should every part here be in at once.
                    self.send(Msg::Ack { at });
                    cp.open_in_flight(&mut s, at);
                }
                Msg::Horizon { h } => {
                    s.horizon = s.horizon.max(h);
                    self.coordinate(cp, &mut s);
                }
                Msg::Commit { at } => {
                    let Some((p_at, decided, files)) = f.prepared.take().filter(|(p, _, _)| *p == at) else {
                        drop(s);
                        cp.set_error(format!("process 0 committed the checkpoint at {at}, which this process did not prepare (a bug)"));
                        return;
                    };
                    drop(s);
                    if let Err(e) = store::make_current(&cp.cfg, p_at, &files) {
                        cp.set_error(e.to_string());
                        return;
                    }
                    cp.committed_at(at, decided);
                }
                m => {
                    drop(s);
                    cp.set_error(format!("process 0 sent {m:?} (a bug)"));
                }
            },
            (None, _) => {}
        }
    }
}
