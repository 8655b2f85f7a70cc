//! Checkpoints (DESIGN §9): consistent snapshots of a running pipeline, from which a restarted
//! run resumes with nothing lost and nothing doubled.
//!
//! **What a checkpoint at `B` is.** Timely times are event-time epochs, and every stateful
//! operator handles its input in event-time order once the frontier has passed it (see
//! `alertflow_operators::ordered`). A checkpoint at a time `B` (a multiple of
//! `checkpoint_interval`) holds, from every participant on every worker:
//! - each stateful operator's state after it handled every epoch before `B` and nothing later
//!   (records of later epochs it holds are not saved: the sources replay them);
//! - each source's *replay position*: the first input line (in its read order) from which it
//!   emitted anything at a time `≥ B`, with the watermark state before that line. A restored
//!   source reads on from there and drops what it would emit before `B` (that is in the
//!   operators' state and the written output already);
//! - each sink's files: a sink writes what it holds before `B` when its frontier passes `B`
//!   (the Flink way: files roll at checkpoints), and the checkpoint lists those files.
//!
//! **When.** Sources publish their capability before they downgrade it ([`Participant::advance`]);
//! a checkpoint is decided at the least multiple of the interval at or after the least
//! published capability, so no operator's frontier has passed it yet, and no operator's
//! frontier can pass it before some source publishes past it — after the decision. One
//! checkpoint is in flight at a time, and a new one is decided only `checkpoint_min_wall_interval`
//! after the previous one committed, so a fast replay does not checkpoint hundreds of times a
//! second.
//!
//! **Commit.** When every participant has saved its part, a committer thread writes the parts
//! (bincode, lz4) and a manifest to `chk-<B>.tmp/`, fsyncs, renames it to `chk-<B>/`, appends
//! the sinks' files to `files.log`, and switches `CURRENT` to it (write, fsync, rename): a
//! checkpoint counts only once `CURRENT` names it. See [`store`] for the layout.
//!
//! **In a cluster** the processes agree on each checkpoint through process 0 (see [`cluster`]):
//! sources hold their capabilities within a *horizon* that process 0 moves forward, so that it
//! can decide a checkpoint that no operator anywhere has passed and every process learns of it
//! before any source passes it; the commit has two phases.

mod cluster;
mod store;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use cluster::ClusterLink;
pub use store::{Manifest, PartEntry, Resumed};

/// Timely time: event-time epochs in ms.
pub type Time = u64;

/// Something went wrong with the state folder.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The state folder could not be read or written.
    #[error("state_dir {0}: {1}")]
    Io(String, std::io::Error),
    /// A file in the state folder is not what this version writes.
    #[error("state_dir {0}: {1}")]
    Corrupt(String, String),
    /// The checkpoint belongs to another pipeline or another worker count.
    #[error("state_dir {0}: {1}")]
    Mismatch(String, String),
    /// The processes of a cluster could not agree on where to resume, or lost each other.
    #[error("{0}")]
    Cluster(String),
}

/// How a run checkpoints.
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    /// The state folder.
    pub dir: PathBuf,
    /// Event time between checkpoints (ms); a multiple of the pipeline's epoch.
    pub interval: Time,
    /// Wall time at least between the commit of one checkpoint and the decision of the next.
    pub min_wall: Duration,
    /// A digest of everything in the pipeline that shapes its state: a checkpoint of another
    /// pipeline is refused.
    pub digest: String,
    /// Worker threads (of this process): state is split by key over workers, so a restart must
    /// use as many.
    pub workers: usize,
    /// Processes of the cluster (1: a single process); each has `workers` threads and its own
    /// state folder, and a restart must use as many.
    pub processes: usize,
    /// Whether to fsync the state files (off only in tests that kill processes, never the OS).
    pub fsync: bool,
}

/// Counters for `/metrics`, the run summary and the checkpoint benchmark.
#[derive(Debug, Default)]
pub struct CheckpointStats {
    /// Checkpoints committed by this run.
    pub committed: AtomicU64,
    /// The time of the latest committed checkpoint (0: none).
    pub latest: AtomicU64,
    /// Bytes (compressed) of the latest checkpoint's parts.
    pub latest_bytes: AtomicU64,
    /// Wall time from decision to commit of the latest checkpoint, in µs.
    pub latest_micros: AtomicU64,
    /// Sum of that over all checkpoints, in µs.
    pub total_micros: AtomicU64,
}

/// The checkpoints of one run, shared by its workers.
pub struct Checkpoints {
    cfg: CheckpointConfig,
    /// The decided checkpoint not committed yet (0: none). Read by every participant on every
    /// activation, hence an atomic beside the mutex.
    pending: AtomicU64,
    state: Mutex<State>,
    resumed: Option<Resumed>,
    committer: Mutex<Option<(Sender<Commit>, JoinHandle<()>)>>,
    /// The first error of the committer (the run fails with it).
    error: Mutex<Option<String>>,
    /// The connections to the other processes of a cluster.
    link: Option<cluster::Link>,
    /// Counters.
    pub stats: CheckpointStats,
}

struct State {
    /// Registered participants: (name, worker).
    participants: Vec<(String, usize)>,
    /// Published capabilities of the source participants, by source slot (a finished
    /// source's: just after the last time it emitted at).
    sources: Vec<Time>,
    /// Which sources are done.
    sources_done: Vec<bool>,
    /// Each source slot's source (one timely operator, an instance per worker).
    source_names: Vec<String>,
    /// Workers that have built their dataflow: until all have, no participant list is complete.
    built: usize,
    /// Wall time of the latest commit (or of the start).
    last_commit: Instant,
    /// The latest committed checkpoint (or the one resumed from; 0: none).
    committed: Time,
    in_flight: Option<InFlight>,
    /// Decide the next checkpoint without waiting for `min_wall` (a stop was asked for).
    hurry: bool,
    /// Participants that are done (not scheduled any more): (participant, replay log, final
    /// part), encoded; see [`Participant::finish`].
    finished: Vec<Finished>,
    /// Output files a finished sink wrote after its last checkpoint: the next checkpoint lists them.
    late_files: Vec<String>,
    /// Sources hold their capabilities at or before this time ([`Participant::advance`]):
    /// `Time::MAX` in a single process; in a cluster, process 0 moves it (see [`cluster`]).
    horizon: Time,
    /// The furthest time a source of this process asked for.
    want: Time,
    /// A cluster's coordination state.
    cluster: Option<cluster::Role>,
}

struct InFlight {
    at: Time,
    decided: Instant,
    parts: Vec<Option<Vec<u8>>>,
    files: Vec<String>,
    missing: usize,
    /// Handed to the committer (every part is in).
    sent: bool,
}

/// A participant that is done: (participant, replay log `(hi, part)`, final part), encoded.
type Finished = (usize, Vec<(Time, Vec<u8>)>, Vec<u8>);

/// A complete checkpoint on its way to disk.
struct Commit {
    at: Time,
    decided: Instant,
    parts: Vec<((String, usize), Vec<u8>)>,
    files: Vec<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Checkpoints {
    /// Opens the state folder: loads the latest committed checkpoint (the run resumes from it)
    /// and removes what an interrupted commit left.
    pub fn open(cfg: CheckpointConfig) -> Result<Arc<Self>, CheckpointError> {
        let resumed = store::load(&cfg)?;
        Self::assemble(cfg, resumed, None)
    }

    /// [`open`](Self::open) for one process of a cluster, over its connections to the others
    /// (see [`cluster`]): the processes agree on the checkpoint they resume from (process 0's
    /// latest) before anything else happens, and a process that cannot resume from it fails
    /// every process's start.
    pub fn open_cluster(cfg: CheckpointConfig, link: ClusterLink) -> Result<Arc<Self>, CheckpointError> {
        cluster::open(cfg, link)
    }

    fn assemble(cfg: CheckpointConfig, resumed: Option<Resumed>, link: Option<cluster::Link>) -> Result<Arc<Self>, CheckpointError> {
        let committed = resumed.as_ref().map_or(0, |r| r.manifest.at);
        let this = Arc::new(Checkpoints {
            pending: AtomicU64::new(0),
            state: Mutex::new(State {
                participants: Vec::new(),
                sources: Vec::new(),
                sources_done: Vec::new(),
                source_names: Vec::new(),
                built: 0,
                last_commit: Instant::now(),
                committed,
                in_flight: None,
                hurry: false,
                finished: Vec::new(),
                late_files: Vec::new(),
                horizon: if link.is_some() { committed } else { Time::MAX },
                want: 0,
                cluster: link.as_ref().map(|l| l.role()),
            }),
            resumed,
            committer: Mutex::new(None),
            error: Mutex::new(None),
            link,
            stats: CheckpointStats::default(),
            cfg,
        });
        this.stats.latest.store(committed, Ordering::Relaxed);
        let (tx, rx) = channel::<Commit>();
        let weak = Arc::downgrade(&this);
        let handle = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                for c in rx {
                    let Some(this) = weak.upgrade() else { return };
                    this.commit(c);
                }
            })
            .map_err(|e| CheckpointError::Io("(committer thread)".into(), e))?;
        *lock(&this.committer) = Some((tx, handle));
        Ok(this)
    }

    /// The configuration.
    pub fn config(&self) -> &CheckpointConfig {
        &self.cfg
    }

    /// The checkpoint this run resumes from, if any.
    pub fn resumed(&self) -> Option<&Resumed> {
        self.resumed.as_ref()
    }

    /// The time the run resumes at (0: a fresh run).
    pub fn resumed_at(&self) -> Time {
        self.resumed.as_ref().map_or(0, |r| r.manifest.at)
    }

    /// Output files (relative to the output folder) that committed checkpoints cover; `None`
    /// on a fresh run. Every other data file in the tables is from an epoch no checkpoint
    /// committed, and is removed before the run resumes.
    pub fn committed_files(&self) -> Option<&HashSet<String>> {
        self.resumed.as_ref().map(|r| &r.files)
    }

    /// Registers a participant: every participant saves (or acknowledges) every checkpoint.
    /// Called while the dataflow is built, before [`built`](Self::built).
    pub fn participant(self: &Arc<Self>, name: &str, worker: usize) -> Participant {
        let mut s = lock(&self.state);
        let id = s.participants.len();
        s.participants.push((name.to_string(), worker));
        let restore = self.resumed.as_ref().and_then(|r| r.parts.get(&(name.to_string(), worker)).cloned());
        Participant { shared: self.clone(), id, source: None, saved: self.resumed_at(), restore, name: name.to_string() }
    }

    /// Registers a source participant: it also publishes its capability.
    pub fn source(self: &Arc<Self>, name: &str, worker: usize) -> Participant {
        let mut p = self.participant(name, worker);
        let mut s = lock(&self.state);
        p.source = Some(s.sources.len());
        s.sources.push(0);
        s.sources_done.push(false);
        s.source_names.push(name.to_string());
        drop(s);
        p
    }

    /// One worker has built its dataflow (registered all its participants).
    pub fn built(&self) {
        let mut s = lock(&self.state);
        s.built += 1;
        if s.built == self.cfg.workers
            && let Some(link) = &self.link
        {
            link.built(self, &mut s);
        }
    }

    /// Asks for a checkpoint as soon as possible (shutdown): the next decision does not wait
    /// for `checkpoint_min_wall_interval`. Returns the latest committed checkpoint, so the
    /// caller can wait for a later one with [`committed`](Self::committed).
    pub fn hurry(&self) -> Time {
        let mut s = lock(&self.state);
        s.hurry = true;
        if let Some(link) = &self.link {
            link.hurry(self, &mut s);
        }
        s.committed
    }

    /// The latest committed checkpoint (0: none).
    pub fn committed(&self) -> Time {
        lock(&self.state).committed
    }

    /// Whether the latest committed checkpoint is at or after every running source's
    /// capability: a later one would have to wait for event time to move (idle push sources),
    /// and stopping at this one loses nothing (what the sources emitted at or after it is
    /// replayed from their input).
    pub fn is_current(&self) -> bool {
        let s = lock(&self.state);
        // (A cluster has no push sources, and one process cannot tell for the others.)
        s.cluster.is_none() && s.committed > 0 && s.sources.iter().zip(&s.sources_done).all(|(&t, &done)| done || t <= s.committed)
    }

    /// The committer's first error.
    pub fn error(&self) -> Option<String> {
        lock(&self.error).clone()
    }

    /// Ends the run's checkpointing: stops the committer after what it has in hand. When the
    /// run completed (`completed`), its checkpoints are removed: there is nothing to resume,
    /// and the next run starts afresh.
    pub fn finish(&self, completed: bool) -> Result<(), CheckpointError> {
        if let Some(link) = &self.link {
            link.close();
        }
        let committer = lock(&self.committer).take();
        if let Some((tx, handle)) = committer {
            drop(tx);
            let _ = handle.join();
        }
        if !completed {
            return Ok(());
        }
        store::clear(&self.cfg.dir)?;
        // The push sources' logs hold nothing a later run needs either.
        match std::fs::remove_dir_all(self.wal_dir()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CheckpointError::Io(self.wal_dir().display().to_string(), e)),
            _ => Ok(()),
        }
    }

    /// Where the push sources keep their write-ahead logs (`state_dir/wal`). Unlike the
    /// checkpoints, a log outlives a run that committed none: what it holds was acknowledged,
    /// and the next run replays it.
    pub fn wal_dir(&self) -> PathBuf {
        self.cfg.dir.join(store::WAL)
    }

    /// Where notification delivery keeps its journal (`state_dir/notify`): like the push
    /// logs it outlives the checkpoints, and the notify stage clears it itself once nothing
    /// in it is pending.
    pub fn notify_dir(&self) -> PathBuf {
        self.cfg.dir.join("notify")
    }

    fn set_error(&self, e: String) {
        let mut err = lock(&self.error);
        if err.is_none() {
            tracing::error!("checkpoint failed: {e}");
            *err = Some(e);
        }
    }

    /// Decides the next checkpoint if it is time (called with the state locked). A decision
    /// made as a source advances is followed by that source's downgrade, which schedules every
    /// operator downstream of it to look at the pending checkpoint. One made without
    /// (`polled`: an idle source asking) is followed by no frontier change, so it must lie
    /// beyond every running source's capability: each then moves past it, and everything
    /// downstream is scheduled then.
    fn maybe_decide(&self, s: &mut State, polled: bool) {
        if let Some(link) = &self.link {
            return link.coordinate(self, s);
        }
        if s.built < self.cfg.workers || s.in_flight.is_some() || s.sources.is_empty() {
            return;
        }
        if !s.hurry && s.last_commit.elapsed() < self.cfg.min_wall {
            return;
        }
        if s.sources_done.iter().all(|d| *d) {
            return; // every source is done: the run is ending
        }
        // Timely tracks progress per operator, over all workers: an operator's frontier is at
        // most the least capability of every source operator upstream of it (over its
        // workers), and what a finished source's operators handled is at most its last time.
        // At or after the greatest of these bounds, nothing has been handled anywhere.
        let mut bound: std::collections::HashMap<&str, (Option<Time>, Time)> = std::collections::HashMap::new();
        for (i, &t) in s.sources.iter().enumerate() {
            let e = bound.entry(s.source_names[i].as_str()).or_insert((None, 0));
            if s.sources_done[i] {
                e.1 = e.1.max(t);
            } else {
                e.0 = Some(e.0.map_or(t, |m: Time| m.min(t)));
            }
        }
        let high = bound.values().map(|(running, done)| running.unwrap_or(*done)).max().unwrap_or(0);
        let i = self.cfg.interval.max(1);
        // After the latest committed one; never 0 (0 means "none" in `pending`).
        let mut at = high.div_ceil(i).saturating_mul(i).max(s.committed.saturating_add(i)).max(i);
        if polled {
            let top = s.sources.iter().zip(&s.sources_done).filter(|(_, done)| !**done).map(|(t, _)| *t).max().unwrap_or(0);
            if at <= top {
                at = (top / i).saturating_add(1).saturating_mul(i);
            }
        }
        s.hurry = false;
        self.open_in_flight(s, at);
    }

    /// Makes `at` the checkpoint in flight: every participant saves its part for it.
    fn open_in_flight(&self, s: &mut State, at: Time) {
        s.in_flight = Some(InFlight {
            at,
            decided: Instant::now(),
            parts: vec![None; s.participants.len()],
            files: Vec::new(),
            missing: s.participants.len(),
            sent: false,
        });
        self.pending.store(at, Ordering::Release);
        tracing::debug!("checkpoint at {at} decided");
        // Sources that are done are not scheduled any more: their parts come from their logs.
        let done: Vec<(usize, Vec<u8>)> = s.finished.iter().map(|(id, log, end)| (*id, pick(log, end, at))).collect();
        let files = std::mem::take(&mut s.late_files);
        let f = s.in_flight.as_mut().expect("just decided");
        f.files.extend(files);
        for (id, part) in done {
            // A participant is in `finished` once; guard anyway, the count must stay exact.
            if f.parts[id].is_none() {
                f.parts[id] = Some(part);
                f.missing -= 1;
            }
        }
        // (A single process whose every participant is done decides nothing: its sources are
        // all done. A cluster's process told of a checkpoint then has it complete at once.)
        self.dispatch_if_complete(s);
    }

    /// The part of a finished source for checkpoint `at`.
    fn finished_part(&self, id: usize, at: Time) -> Vec<u8> {
        let s = lock(&self.state);
        s.finished.iter().find(|(i, _, _)| *i == id).map(|(_, log, end)| pick(log, end, at)).unwrap_or_default()
    }

    fn deliver(&self, id: usize, at: Time, part: Vec<u8>, files: Vec<String>) {
        let mut s = lock(&self.state);
        // Once handed to the committer (`sent`), the parts are taken and read `None` again, so
        // `sent` is what says a late delivery has nothing to fill. (A sink's `Finisher` that
        // had acknowledged this checkpoint used to count twice here.)
        let Some(f) = s.in_flight.as_mut().filter(|f| f.at == at && !f.sent) else { return };
        if f.parts[id].is_some() {
            return;
        }
        debug_assert!(f.missing > 0, "checkpoint {at}: part {id} delivered with none missing");
        f.parts[id] = Some(part);
        f.files.extend(files);
        f.missing -= 1;
        self.dispatch_if_complete(&mut s);
    }

    /// Hands the checkpoint in flight to the committer once every part is in.
    fn dispatch_if_complete(&self, s: &mut State) {
        let State { participants, in_flight, .. } = s;
        let Some(f) = in_flight.as_mut().filter(|f| f.missing == 0 && !f.sent) else { return };
        f.sent = true;
        let parts = participants.iter().cloned().zip(f.parts.iter_mut().map(|p| p.take().unwrap_or_default())).collect();
        let commit = Commit { at: f.at, decided: f.decided, parts, files: std::mem::take(&mut f.files) };
        if let Some((tx, _)) = lock(&self.committer).as_ref() {
            let _ = tx.send(commit);
        }
    }

    /// Writes a complete checkpoint (on the committer thread); in a cluster, prepares this
    /// process's share of it (the commit follows when every process has, see [`cluster`]).
    fn commit(&self, c: Commit) {
        if lock(&self.error).is_some() {
            return;
        }
        let bytes: u64 = c.parts.iter().map(|(_, p)| p.len() as u64).sum();
        let manifest = Manifest {
            version: store::VERSION,
            at: c.at,
            workers: self.cfg.workers,
            processes: self.cfg.processes,
            digest: self.cfg.digest.clone(),
            parts: Vec::new(),
            files: c.files.len(),
        };
        if let Some(link) = &self.link {
            if let Err(e) = store::prepare(&self.cfg, manifest, c.parts, &c.files) {
                self.set_error(e.to_string());
                return;
            }
            self.stats.latest_bytes.store(bytes, Ordering::Relaxed);
            link.prepared(self, c.at, c.decided, c.files);
            return;
        }
        if let Err(e) = store::write(&self.cfg, manifest, c.parts, &c.files) {
            self.set_error(e.to_string());
            return;
        }
        self.stats.latest_bytes.store(bytes, Ordering::Relaxed);
        self.committed_at(c.at, c.decided);
    }

    /// Checkpoint `at` (decided at `decided`) is committed.
    fn committed_at(&self, at: Time, decided: Instant) {
        let micros = decided.elapsed().as_micros() as u64;
        self.stats.committed.fetch_add(1, Ordering::Relaxed);
        self.stats.latest.store(at, Ordering::Release);
        self.stats.latest_micros.store(micros, Ordering::Relaxed);
        self.stats.total_micros.fetch_add(micros, Ordering::Relaxed);
        tracing::debug!("checkpoint at {at} committed: {micros} µs");
        let mut s = lock(&self.state);
        s.committed = at;
        s.in_flight = None;
        s.last_commit = Instant::now();
        self.pending.store(0, Ordering::Release);
    }
}

thread_local! {
    /// The run's checkpoints while this worker thread builds its dataflow (see [`building`]).
    static BUILDING: std::cell::RefCell<Option<Arc<Checkpoints>>> = const { std::cell::RefCell::new(None) };
}

/// Builds a worker's dataflow with `checkpoints` active: operators built inside `f` register
/// with [`register`] / [`register_source`] on their own, so an operator's signature does not
/// change with checkpointing. Then counts the worker as built.
pub fn building<R>(checkpoints: Option<&Arc<Checkpoints>>, f: impl FnOnce() -> R) -> R {
    BUILDING.with(|b| *b.borrow_mut() = checkpoints.cloned());
    let r = f();
    BUILDING.with(|b| b.borrow_mut().take());
    if let Some(c) = checkpoints {
        c.built();
    }
    r
}

/// Registers a stateful operator (or sink) named `name` on worker `worker`, when the dataflow
/// being built on this thread checkpoints. Call it while building the operator.
pub fn register(name: &str, worker: usize) -> Option<Participant> {
    BUILDING.with(|b| b.borrow().as_ref().map(|c| c.participant(name, worker)))
}

/// [`register`] for a source.
pub fn register_source(name: &str, worker: usize) -> Option<Participant> {
    BUILDING.with(|b| b.borrow().as_ref().map(|c| c.source(name, worker)))
}

/// A checkpoint a sink acknowledges once its files are written (see [`Participant::hand_off`]),
/// or a push source once its log is durable (see [`Participant::hand_off_state`]).
pub struct Deferred {
    shared: Arc<Checkpoints>,
    id: usize,
    at: Time,
    part: Vec<u8>,
}

impl Deferred {
    /// The checkpoint.
    pub fn at(&self) -> Time {
        self.at
    }

    /// Acknowledges it, listing the output files (relative to the output folder) written since
    /// the previous checkpoint.
    pub fn ack(self, files: Vec<String>) {
        self.shared.deliver(self.id, self.at, self.part, files);
    }
}

/// Finishes a sink once its last files are written (see [`Participant::finisher`]).
pub struct Finisher {
    shared: Arc<Checkpoints>,
    id: usize,
}

impl Finisher {
    /// The sink is done: `files` (written since its last checkpoint) go into the next
    /// checkpoint, and every later checkpoint counts it as acknowledged.
    pub fn finish(self, files: Vec<String>) {
        let mut s = lock(&self.shared.state);
        s.finished.push((self.id, Vec::new(), Vec::new()));
        s.late_files.extend(files);
        // A checkpoint in flight that this sink had not acknowledged yet takes them now.
        let files = std::mem::take(&mut s.late_files);
        let pending = s.in_flight.as_ref().filter(|f| !f.sent && f.parts[self.id].is_none()).map(|f| f.at);
        match pending {
            Some(at) => {
                drop(s);
                self.shared.deliver(self.id, at, Vec::new(), files);
            }
            None => s.late_files = files,
        }
    }
}

/// A part as stored: bincode, lz4.
fn enc<X: Serialize + ?Sized>(x: &X) -> bincode::Result<Vec<u8>> {
    bincode::serialize(x).map(|raw| lz4_flex::compress_prepend_size(&raw))
}

/// The first logged position covering `at`, else the end.
fn pick(log: &[(Time, Vec<u8>)], end: &[u8], at: Time) -> Vec<u8> {
    log.iter().find(|(hi, _)| *hi >= at).map_or(end, |(_, p)| p.as_slice()).to_vec()
}

/// One operator, source or sink on one worker.
pub struct Participant {
    shared: Arc<Checkpoints>,
    id: usize,
    /// Its slot among the sources, if it is one.
    source: Option<usize>,
    /// The latest checkpoint it saved (or resumed from).
    saved: Time,
    /// Its part of the checkpoint the run resumes from.
    restore: Option<Vec<u8>>,
    name: String,
}

impl Participant {
    /// The time the run resumes at (0: a fresh run): the state restored is that before it.
    pub fn resumed_at(&self) -> Time {
        self.shared.resumed_at()
    }

    /// Takes this participant's restored state, if the run resumes.
    pub fn restore<T: DeserializeOwned>(&mut self) -> Result<Option<T>, String> {
        let Some(bytes) = self.restore.take() else { return Ok(None) };
        let raw = lz4_flex::decompress_size_prepended(&bytes).map_err(|e| format!("checkpoint part of `{}` is damaged: {e}", self.name))?;
        bincode::deserialize(&raw).map(Some).map_err(|e| format!("checkpoint part of `{}` cannot be read: {e}", self.name))
    }

    /// The decided checkpoint this participant has not saved yet. Stateful operators handle
    /// records only up to it, and save once their frontier has passed it.
    #[inline]
    pub fn pending(&self) -> Option<Time> {
        let p = self.shared.pending.load(Ordering::Acquire);
        (p > self.saved).then_some(p)
    }

    /// Saves this participant's state for checkpoint `at`.
    pub fn save<T: Serialize + ?Sized>(&mut self, at: Time, state: &T) {
        match enc(state) {
            Ok(part) => self.deliver(at, part, Vec::new()),
            Err(e) => self.shared.set_error(format!("cannot save the state of `{}` (a bug): {e}", self.name)),
        }
    }

    /// Marks checkpoint `at` as handled here and returns what acknowledges it later, from
    /// another thread (a sink whose files for it are still being written). `None` if it was.
    pub fn hand_off(&mut self, at: Time) -> Option<Deferred> {
        if at <= self.saved {
            return None;
        }
        self.saved = at;
        Some(Deferred { shared: self.shared.clone(), id: self.id, at, part: Vec::new() })
    }

    /// Marks checkpoint `at` as handled here with `state` as this participant's part, and
    /// returns what delivers it later, from another thread: a push source, whose part may count
    /// only once its log is durable up to where the part says. `None` if it was handled.
    pub fn hand_off_state<T: Serialize + ?Sized>(&mut self, at: Time, state: &T) -> Option<Deferred> {
        let part = match enc(state) {
            Ok(p) => p,
            Err(e) => {
                self.shared.set_error(format!("cannot save the state of `{}` (a bug): {e}", self.name));
                return None;
            }
        };
        let mut d = self.hand_off(at)?;
        d.part = part;
        Some(d)
    }

    /// The latest committed checkpoint (or the one resumed from; 0: none).
    pub fn committed(&self) -> Time {
        self.shared.stats.latest.load(Ordering::Acquire)
    }

    /// See [`Checkpoints::wal_dir`].
    pub fn wal_dir(&self) -> PathBuf {
        self.shared.wal_dir()
    }

    /// Whether the state folder's files are fsynced (see [`CheckpointConfig::fsync`]).
    pub fn fsync(&self) -> bool {
        self.shared.cfg.fsync
    }

    /// Acknowledges checkpoint `at` without state, listing the output files (relative to the
    /// output folder) written since the previous one: a sink.
    pub fn ack(&mut self, at: Time, files: Vec<String>) {
        self.deliver(at, Vec::new(), files);
    }

    fn deliver(&mut self, at: Time, part: Vec<u8>, files: Vec<String>) {
        if at <= self.saved {
            return;
        }
        self.saved = at;
        self.shared.deliver(self.id, at, part, files);
    }

    /// The checkpoint interval (event time, ms).
    pub fn interval(&self) -> Time {
        self.shared.cfg.interval
    }

    /// A participant that is done — an operator whose input has ended, a source that has read
    /// everything — is not scheduled any more, so it hands over what every later checkpoint
    /// takes as its part: `last`, its final state, or for a source its replay log, `(hi,
    /// position)` in read order (`position` replays every checkpoint up to `hi` not covered by
    /// an earlier entry), and `last` for the checkpoints after that.
    pub fn finish<L: Serialize, T: Serialize + ?Sized>(&mut self, log: &[(Time, L)], last: &T) {
        let log: Result<Vec<(Time, Vec<u8>)>, _> = log.iter().map(|(hi, t)| enc(t).map(|b| (*hi, b))).collect();
        let (log, end) = match (log, enc(last)) {
            (Ok(l), Ok(e)) => (l, e),
            (Err(e), _) | (_, Err(e)) => return self.shared.set_error(format!("cannot save the state of `{}` (a bug): {e}", self.name)),
        };
        let mut s = lock(&self.shared.state);
        s.finished.push((self.id, log, end));
        let pending = s.in_flight.as_ref().map(|f| f.at).filter(|&at| at > self.saved);
        drop(s);
        if let Some(at) = pending {
            self.saved = at;
            let part = self.shared.finished_part(self.id, at);
            self.shared.deliver(self.id, at, part, Vec::new());
        }
    }

    /// Fails the run with `error` (a part that cannot be restored, say).
    pub fn fail(&self, error: String) {
        self.shared.set_error(error);
    }

    /// A source asks to hold its capability at `t` (or, once done, to drop it: `t` just
    /// after the last time it emitted at), and gets the time it may hold it at: `t`, or in a
    /// cluster at most the horizon (see [`cluster`]), which the source asks again to pass.
    /// The answer is published before the source downgrades to it.
    pub fn advance(&self, t: Time) -> Time {
        let Some(slot) = self.source else { return t };
        let mut s = lock(&self.shared.state);
        if s.sources[slot] >= t && self.shared.link.is_none() {
            return t;
        }
        s.want = s.want.max(t);
        let allowed = t.min(s.horizon);
        if s.sources[slot] < allowed {
            s.sources[slot] = allowed;
        }
        self.shared.maybe_decide(&mut s, false);
        allowed
    }

    /// A source with nothing to take asks whether a checkpoint is due: decisions are otherwise
    /// made only when some source advances, and an idle push source may not for a long while.
    pub fn poll(&self) {
        if self.source.is_none() {
            return;
        }
        let mut s = lock(&self.shared.state);
        self.shared.maybe_decide(&mut s, true);
    }

    /// A source is done; `last` is the latest time it emitted at (operators downstream of it
    /// handle everything up to there).
    pub fn source_done(&self, last: Time) {
        let Some(slot) = self.source else { return };
        let mut s = lock(&self.shared.state);
        s.sources[slot] = s.sources[slot].max(last.saturating_add(1));
        s.sources_done[slot] = true;
        if let Some(link) = &self.shared.link {
            link.coordinate(&self.shared, &mut s);
        }
    }

    /// For a sink: what finishes it from its writer thread once its last files are written.
    pub fn finisher(&self) -> Finisher {
        Finisher { shared: self.shared.clone(), id: self.id }
    }
}

#[cfg(test)]
mod tests;
