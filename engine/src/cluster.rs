//! Cluster mode (DESIGN §9): one pipeline over several processes, connected by timely's own
//! TCP communication, not copies that each see part of the data.
//!
//! Every process builds the same dataflow; timely numbers the workers of process `p` (with `W`
//! threads each) `p·W .. (p+1)·W`, and keyed operators exchange records by key hash over all of
//! them. Sources split their partitions over the global worker indices, and sinks name their
//! files by them, so processes sharing an output folder never collide.
//!
//! What this module adds to timely:
//! - **Connecting** ([`Plan::connect`]): timely's own start-up retries an unreachable peer
//!   forever, printing to stdout. Here every process binds its address, dials the processes
//!   before it and accepts the ones after it until `peer_timeout`, and the two ends of every
//!   connection compare a hello line (pipeline digest, process count, worker count) before
//!   timely takes the sockets over, so a peer running another pipeline is named, not trusted.
//! - **A lost peer** ([`comm_error`]): when a process dies, timely's network threads in the
//!   others panic ("timely communication error"), which poisons the workers' queues so they
//!   panic too. A panic hook catches the first such error and ends the process at once with
//!   one clear error naming the peer (exit 1), never a hang (nor an abort: unwinding through
//!   the poisoned channels can panic in a destructor).
//! - **Gathering** ([`Gather`]): counters are per process; a second, small dataflow has each
//!   process send its own counters, watermarks and failure to every other process ten times
//!   a second and once when its workers are done, so `/metrics`, the run summary and failures
//!   cover the whole cluster.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use alertflow_connectors::durable::Durability;
use alertflow_connectors::file::SourceStats;
use alertflow_connectors::parquet::SinkStats;
use alertflow_connectors::push::PushIngest;
use alertflow_connectors::{Failure, Time};
use alertflow_operators::OperatorStats;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::generic::operator::source;

use crate::config::Pipeline;

/// How one process joins its cluster.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Processes in the cluster.
    pub processes: usize,
    /// This one's index.
    pub process: usize,
    /// Worker threads per process (every process must run as many).
    pub threads: usize,
    /// Each process's address, by index.
    pub addresses: Vec<String>,
    /// Where the addresses come from (for errors).
    pub hostfile: PathBuf,
    /// How long to wait for peers at start-up.
    pub timeout: Duration,
}

impl Plan {
    /// The cluster a run joins, from `[engine]` (with the command line's overrides already in
    /// it): `None` for a single process. Everything is checked before anything starts.
    pub fn of(pipeline: &Pipeline, threads: usize) -> Result<Option<Plan>, String> {
        let e = &pipeline.engine;
        let processes = e.processes.unwrap_or(1);
        if processes == 0 {
            return Err("--processes (engine.processes) must be at least 1".into());
        }
        if processes == 1 {
            return match e.process_id {
                Some(id) if id > 0 => Err(format!("--process-id {id} needs --processes {} or more", id + 1)),
                _ => Ok(None),
            };
        }
        let Some(process) = e.process_id else {
            return Err(format!(
                "--processes {processes} needs --process-id (engine.process_id): which of the {processes} processes this is, 0 to {}",
                processes - 1
            ));
        };
        if process >= processes {
            return Err(format!("--process-id {process} is out of range: with --processes {processes} it is 0 to {}", processes - 1));
        }
        let Some(file) = &e.hostfile else {
            return Err(format!(
                "--processes {processes} needs --hostfile (engine.hostfile): a file with one host:port per line, line i for process i"
            ));
        };
        let hostfile = pipeline.base_dir.join(file);
        let addresses = read_hostfile(&hostfile, processes)?;
        Ok(Some(Plan { processes, process, threads, addresses, hostfile, timeout: Duration::from_millis(e.peer_timeout.millis()) }))
    }

    /// All workers of the cluster.
    pub fn peers(&self) -> usize {
        self.processes * self.threads
    }

    /// The global indices of this process's workers.
    pub fn own_workers(&self) -> std::ops::Range<usize> {
        self.process * self.threads..(self.process + 1) * self.threads
    }

    fn hello(&self, digest: &str, control: bool) -> String {
        let channel = if control { " channel=control" } else { "" };
        format!("{HELLO} process={} processes={} workers={} pipeline={digest}{channel}\n", self.process, self.processes, self.threads)
    }

    /// Connects to every other process: dials the processes before this one and accepts the
    /// ones after it, until the timeout. Besides timely's connections, every process has a
    /// control connection with process 0, for checkpoint coordination.
    pub fn connect(&self, digest: &str) -> Result<Connections, String> {
        let deadline = Instant::now() + self.timeout;
        let me = &self.addresses[self.process];
        let listener = TcpListener::bind(me.as_str()).map_err(|e| {
            format!("cannot listen on {me} (line {} of {}, this process's address): {e}", self.process + 1, self.hostfile.display())
        })?;
        listener.set_nonblocking(true).map_err(|e| format!("cannot listen on {me}: {e}"))?;
        let hello = self.hello(digest, false);
        let mut sockets: Vec<Option<TcpStream>> = (0..self.processes).map(|_| None).collect();
        let mut control = Vec::new();
        for (p, address) in self.addresses.iter().enumerate().take(self.process) {
            sockets[p] = Some(self.dial(p, address, digest, deadline, false)?);
        }
        if self.process > 0 {
            control.push((0, self.dial(0, &self.addresses[0], digest, deadline, true)?));
        }
        // (process, control connection?) still to accept.
        let mut waiting: Vec<(usize, bool)> = (self.process + 1..self.processes).map(|p| (p, false)).collect();
        if self.process == 0 {
            waiting.extend((1..self.processes).map(|p| (p, true)));
        }
        while !waiting.is_empty() {
            match listener.accept() {
                Ok((mut stream, from)) => {
                    let (p, theirs) = match greeted(&mut stream, Duration::from_secs(10)) {
                        Greeting::Hello(p, theirs) => (p, theirs),
                        other => {
                            tracing::warn!("cluster: ignored a connection from {from}: {}", other.describe());
                            continue;
                        }
                    };
                    // Answer first, so that the peer can tell what does not match too.
                    stream.write_all(hello.as_bytes()).map_err(|e| format!("cluster: cannot greet process {p} at {from}: {e}"))?;
                    self.compatible(p, &theirs, digest)?;
                    // Only what is still awaited: a process dialling twice, or one before this
                    // one dialling, has another's id.
                    if !waiting.contains(&(p, theirs.control)) {
                        return Err(format!(
                            "two processes call themselves process {p} (the second from {from}): give each its own --process-id"
                        ));
                    }
                    waiting.retain(|&w| w != (p, theirs.control));
                    if theirs.control {
                        control.push((p, stream));
                    } else {
                        sockets[p] = Some(stream);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let mut who: Vec<usize> = waiting.iter().map(|(p, _)| *p).collect();
                        who.dedup();
                        return Err(self.missing(&who));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("cannot accept connections on {me}: {e}")),
            }
        }
        for s in sockets.iter().flatten().chain(control.iter().map(|(_, s)| s)) {
            s.set_read_timeout(None).and_then(|_| s.set_nodelay(true)).map_err(|e| format!("cluster: socket setup: {e}"))?;
        }
        control.sort_by_key(|(p, _)| *p);
        Ok(Connections { sockets, control })
    }

    fn dial(&self, p: usize, address: &str, digest: &str, deadline: Instant, control: bool) -> Result<TcpStream, String> {
        let hello = self.hello(digest, control);
        let mut last = String::from("not reached");
        while Instant::now() < deadline {
            let addrs: Vec<_> = match address.to_socket_addrs() {
                Ok(a) => a.collect(),
                Err(e) => {
                    last = format!("cannot resolve: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            for a in addrs {
                match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
                    Ok(mut stream) => {
                        stream.write_all(hello.as_bytes()).map_err(|e| format!("cluster: cannot greet process {p} at {address}: {e}"))?;
                        // The peer answers once it is accepting: after it has dialled the
                        // processes before it, which may take until the deadline.
                        let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
                        let (q, theirs) = match greeted(&mut stream, wait) {
                            Greeting::Hello(q, theirs) => (q, theirs),
                            Greeting::Silent if Instant::now() >= deadline => {
                                last = "connected, but it did not answer (is it waiting for another process?)".into();
                                break;
                            }
                            // Nothing at all, then end of stream: the peer went away between
                            // accepting and answering, as a process killed while the cluster
                            // forms does.
                            Greeting::Closed => {
                                return Err(format!(
                                    "process {p} at {address} closed the connection at start, before answering: \
                                     it stopped or crashed (or line {} of {} names something else); start every process again",
                                    p + 1,
                                    self.hostfile.display()
                                ));
                            }
                            other => {
                                return Err(format!(
                                    "{address} (process {p} in {}) {}: is it a process of this cluster?",
                                    self.hostfile.display(),
                                    other.describe()
                                ));
                            }
                        };
                        if q != p {
                            return Err(format!(
                                "{address} answers as process {q}, but line {} of {} names it process {p}: check the hostfiles and --process-id",
                                p + 1,
                                self.hostfile.display()
                            ));
                        }
                        self.compatible(p, &theirs, digest)?;
                        return Ok(stream);
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "process {p} at {address} did not answer within {:?} ({last}): start every process of the cluster (peer_timeout)",
            self.timeout
        ))
    }

    fn compatible(&self, p: usize, theirs: &Hello, digest: &str) -> Result<(), String> {
        if theirs.processes != self.processes {
            return Err(format!(
                "process {p} runs with --processes {}, this one with {}: every process needs the same",
                theirs.processes, self.processes
            ));
        }
        if theirs.workers != self.threads {
            return Err(format!(
                "process {p} runs {} worker(s), this one {}: every process needs the same --workers",
                theirs.workers, self.threads
            ));
        }
        if theirs.pipeline != digest {
            return Err(format!(
                "process {p} runs another pipeline (digest {}, this one {digest}): every process needs the same pipeline file",
                theirs.pipeline
            ));
        }
        Ok(())
    }

    fn missing(&self, waiting: &[usize]) -> String {
        let who: Vec<String> = waiting.iter().map(|&p| format!("process {p} ({})", self.addresses[p])).collect();
        format!("{} did not connect within {:?}: start every process of the cluster (peer_timeout)", who.join(", "), self.timeout)
    }

    /// Runs `func` on this process's workers as part of the cluster, over `sockets` from
    /// [`Plan::connect`].
    pub fn execute<T, F>(&self, sockets: Vec<Option<TcpStream>>, func: F) -> Result<timely::communication::WorkerGuards<T>, String>
    where
        T: Send + 'static,
        F: Fn(&mut timely::worker::Worker) -> T + Send + Sync + 'static,
    {
        use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
        use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
        install_panic_hook(self);
        let hooks = timely::communication::Hooks::default();
        let local = ProcessBuilder::new_typed_vector(self.threads, hooks.refill.clone(), hooks.spill.clone());
        let (builders, guard) = initialize_networking_from_sockets(local, sockets, self.process, self.threads, hooks)
            .map_err(|e| format!("cannot start the cluster's communication: {e}"))?;
        let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
        timely::execute::execute_from(builders, Box::new(guard), timely::WorkerConfig::default(), func)
    }
}

const HELLO: &str = "alertflow-cluster/1";

/// What a peer said first on a new connection.
#[derive(Debug)]
enum Greeting {
    Hello(usize, Hello),
    /// It closed the connection without sending a byte.
    Closed,
    /// Nothing within the wait.
    Silent,
    /// Bytes that are not an alertflow hello.
    Stranger(String),
}

impl Greeting {
    fn describe(&self) -> String {
        match self {
            Greeting::Hello(p, _) => format!("greeted as process {p}"),
            Greeting::Closed => "closed the connection without a word".into(),
            Greeting::Silent => "said nothing".into(),
            Greeting::Stranger(why) => format!("answered without an alertflow hello ({why})"),
        }
    }
}

/// Reads the peer's hello line (byte by byte: timely's data follows it on the socket).
fn greeted(stream: &mut TcpStream, wait: Duration) -> Greeting {
    use std::io::ErrorKind;
    if let Err(e) = stream.set_nonblocking(false).and_then(|_| stream.set_read_timeout(Some(wait))) {
        return Greeting::Stranger(format!("socket setup: {e}"));
    }
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 512 {
        match stream.read_exact(&mut b) {
            Ok(()) => {}
            Err(e) if line.is_empty() && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Greeting::Silent,
            Err(e)
                if line.is_empty()
                    && matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) =>
            {
                return Greeting::Closed;
            }
            Err(e) => return Greeting::Stranger(format!("after {} byte(s): {e}", line.len())),
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    let text = String::from_utf8_lossy(&line);
    match Hello::parse(&text) {
        Some(h) => Greeting::Hello(h.process, h),
        None => Greeting::Stranger(format!("it sent {:?}", text.chars().take(40).collect::<String>())),
    }
}

/// A process's connections to the others.
#[derive(Debug)]
pub struct Connections {
    /// timely's: one per process, `None` for this one.
    pub sockets: Vec<Option<TcpStream>>,
    /// For checkpoint coordination: process 0 has one to each other process, the others one
    /// to process 0; (process, connection), by process.
    pub control: Vec<(usize, TcpStream)>,
}

/// What a process says about itself when it connects.
#[derive(Debug)]
struct Hello {
    process: usize,
    processes: usize,
    workers: usize,
    pipeline: String,
    /// The control connection (see [`Connections::control`]), not timely's.
    control: bool,
}

impl Hello {
    fn parse(line: &str) -> Option<Hello> {
        let mut words = line.split_whitespace();
        if words.next()? != HELLO {
            return None;
        }
        let (mut process, mut processes, mut workers, mut pipeline, mut control) = (None, None, None, None, false);
        for w in words {
            let (k, v) = w.split_once('=')?;
            match k {
                "process" => process = v.parse().ok(),
                "processes" => processes = v.parse().ok(),
                "workers" => workers = v.parse().ok(),
                "pipeline" => pipeline = Some(v.to_string()),
                "channel" => control = v == "control",
                _ => {}
            }
        }
        Some(Hello { process: process?, processes: processes?, workers: workers?, pipeline: pipeline?, control })
    }
}

/// Reads a hostfile: one `host:port` per line, line `i` for process `i`; blank lines and
/// `#` comments are skipped; lines after the first `processes` are ignored.
pub fn read_hostfile(path: &Path, processes: usize) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the hostfile {}: {e}", path.display()))?;
    let mut addresses = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let a = line.split('#').next().unwrap_or("").trim();
        if a.is_empty() {
            continue;
        }
        let port_ok = a.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if !port_ok || a.contains(char::is_whitespace) {
            return Err(format!("{} line {}: `{a}` is not host:port", path.display(), n + 1));
        }
        if addresses.len() < processes {
            addresses.push(a.to_string());
        }
    }
    if addresses.len() < processes {
        return Err(format!(
            "{} names {} address(es), and --processes is {processes}: one line per process",
            path.display(),
            addresses.len()
        ));
    }
    Ok(addresses)
}

/// The first error of timely's network threads in this process, as a sentence naming the peer.
static COMM_ERROR: OnceLock<String> = OnceLock::new();

/// The connection to a peer that broke, if one did: the run's error.
pub fn comm_error() -> Option<String> {
    COMM_ERROR.get().cloned()
}

/// Records timely's network failures (see the module docs) and keeps their knock-on panics
/// quiet; any other panic reaches the previous hook.
fn install_panic_hook(plan: &Plan) {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    let addresses = plan.addresses.clone();
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        if let Some(cause) = message.strip_prefix("timely communication error: ") {
            let thread = std::thread::current().name().unwrap_or("").to_string();
            let peer = thread.rsplit('-').next().and_then(|p| p.parse::<usize>().ok());
            let who = match peer {
                Some(p) => format!("process {p} ({})", addresses.get(p).map_or("?", |a| a.as_str())),
                None => "a peer".to_string(),
            };
            let error =
                format!("lost the connection to {who}: {cause}; it stopped or crashed, so the cluster stops (start every process again)");
            if COMM_ERROR.set(error.clone()).is_ok() {
                // The run cannot go on without the peer, and winding it down through timely's
                // poisoned channels can panic in a destructor while unwinding, which aborts the
                // process without a word (seen in the cluster checkpoint kill test). So it ends
                // here, as the run would: the same error, exit code 1 (what was written after
                // the last checkpoint is removed at the next start, as after a kill).
                eprintln!("error: {}", crate::RunError::Cluster(error));
                std::process::exit(1);
            }
            return;
        }
        if COMM_ERROR.get().is_some() {
            // A worker or network thread falling over because a peer is gone.
            tracing::debug!("after a lost peer: {message}");
            return;
        }
        previous(info)
    }));
}

/// One process's counters, sent to another process.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Report {
    to: usize,
    from: usize,
    counters: Vec<u64>,
    watermarks: Vec<u64>,
    failure: Option<String>,
    /// With Kafka sources: how far this process's own sinks are durable, and the resume floor
    /// its sources settled on (once they have read the committed offsets).
    durable: Option<u64>,
    resume_floor: Option<u64>,
    /// With HTTP sources: the sample source's watermark, and whether this process stopped
    /// taking pushes (a signal): every process's sources then end.
    push: Option<(Option<i64>, bool)>,
    last: bool,
}

/// What the processes' sources share through the reports besides counters.
#[derive(Default)]
pub struct SourceLinks {
    /// With Kafka sources: the sinks' durable frontier.
    pub durability: Option<Arc<Durability>>,
    /// With HTTP sources: their queues.
    pub ingest: Option<Arc<PushIngest>>,
}

/// How often a process reports while it runs.
const EVERY: Duration = Duration::from_millis(100);

/// The counters of a run gathered over the cluster: each process adds the others' to its
/// own, so everything that reads them (`/metrics`, the summary) covers the cluster.
pub struct Gather {
    plan: Plan,
    sources: Arc<Vec<Arc<SourceStats>>>,
    sinks: Arc<Vec<Arc<SinkStats>>>,
    operators: Vec<Arc<OperatorStats>>,
    /// Per global worker (the others' as last reported).
    watermarks: Arc<Vec<AtomicU64>>,
    failure: Failure,
    /// With Kafka sources: the sinks' durable frontier (the others' reports feed it).
    durability: Option<Arc<Durability>>,
    /// With HTTP sources: their queues (only process 0 receives pushes).
    ingest: Option<Arc<PushIngest>>,
    /// Set when the failure came from another process (it is not reported back).
    failure_is_remote: AtomicBool,
    /// Per process: its counters as last applied here; and their sum over the other processes.
    applied: Mutex<(Vec<Vec<u64>>, Vec<u64>)>,
    /// This process's workers whose pipeline dataflow has finished.
    done: AtomicUsize,
    /// Processes whose final report arrived here.
    finished: AtomicUsize,
}

impl Gather {
    /// Gathers these counters (the same list, in the same order, on every process).
    pub fn new(
        plan: Plan,
        sources: Arc<Vec<Arc<SourceStats>>>,
        sinks: Arc<Vec<Arc<SinkStats>>>,
        operators: Vec<Arc<OperatorStats>>,
        watermarks: Arc<Vec<AtomicU64>>,
        failure: Failure,
        links: SourceLinks,
    ) -> Arc<Gather> {
        let SourceLinks { durability, ingest } = links;
        let mut g = Gather {
            plan,
            sources,
            sinks,
            operators,
            watermarks,
            failure,
            durability,
            ingest,
            failure_is_remote: AtomicBool::new(false),
            applied: Mutex::new((Vec::new(), Vec::new())),
            done: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        };
        let n = g.values().len();
        g.applied = Mutex::new((vec![vec![0; n]; g.plan.processes], vec![0; n]));
        Arc::new(g)
    }

    /// Every counter, in one fixed order.
    fn values(&self) -> Vec<u64> {
        let mut v = Vec::new();
        for s in self.sources.iter() {
            v.extend(s.values());
        }
        for s in self.sinks.iter() {
            v.extend(s.values());
        }
        for s in &self.operators {
            v.extend(s.values());
        }
        v
    }

    /// Adds `deltas` (wrapping: a gauge may go down) to the counters, in [`Gather::values`]' order.
    fn add(&self, deltas: &[u64]) {
        let mut d = deltas;
        for s in self.sources.iter() {
            d = s.add_values(d);
        }
        for s in self.sinks.iter() {
            d = s.add_values(d);
        }
        for s in &self.operators {
            d = s.add_values(d);
        }
    }

    /// A worker's pipeline dataflow has finished.
    pub fn worker_done(&self) {
        self.done.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether every other process's final report has arrived (the gathered counters are final).
    pub fn complete(&self) -> bool {
        self.finished.load(Ordering::Acquire) + 1 >= self.plan.processes
    }

    fn own_report(&self, to: usize, last: bool) -> Report {
        let lock = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let counters = self.values().iter().zip(&lock.1).map(|(v, r)| v.wrapping_sub(*r)).collect();
        drop(lock);
        let watermarks = self.plan.own_workers().map(|w| self.watermarks[w].load(Ordering::Relaxed)).collect();
        let failure = self.failure.get().filter(|_| !self.failure_is_remote.load(Ordering::Acquire));
        let durable = self.durability.as_ref().map(|d| d.local_frontier());
        let resume_floor = self.durability.as_ref().and_then(|d| d.settled_floor());
        let push = self.ingest.as_ref().map(|i| (i.samples_watermark(), i.is_closed()));
        Report { to, from: self.plan.process, counters, watermarks, failure, durable, resume_floor, push, last }
    }

    fn apply(&self, r: Report) {
        let mut lock = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let (applied, remote) = &mut *lock;
        let old = &mut applied[r.from];
        if r.counters.len() != old.len() {
            self.failure.set(format!("process {} reports {} counters, this one has {} (a bug)", r.from, r.counters.len(), old.len()));
            return;
        }
        let deltas: Vec<u64> = r.counters.iter().zip(old.iter()).map(|(n, o)| n.wrapping_sub(*o)).collect();
        for (sum, d) in remote.iter_mut().zip(&deltas) {
            *sum = sum.wrapping_add(*d);
        }
        *old = r.counters;
        self.add(&deltas);
        drop(lock);
        for (j, w) in r.watermarks.iter().enumerate() {
            if let Some(slot) = self.watermarks.get(r.from * self.plan.threads + j) {
                slot.store(*w, Ordering::Relaxed);
            }
        }
        if let Some(d) = &self.durability {
            if let Some(t) = r.durable {
                d.set_remote(r.from, self.plan.process, t);
            }
            // Spans the processes skip must be the same everywhere, or one process would
            // rewrite (with part of their input) files that another's skip kept.
            if let (Some(theirs), Some(ours)) = (r.resume_floor, d.settled_floor())
                && theirs != ours
                && !self.failure.is_set()
            {
                let at = |t: u64| if t == 0 { "the start".to_string() } else { alertflow_model::time::format_rfc3339(t as i64) };
                self.failure.set(format!(
                    "the processes disagree on where the output resumes from the committed Kafka offsets (process {}: {}, \
                     process {}: {}): a process did not find the commit metadata of every partition. The broker keeps none, \
                     and the journal in the output folder's `_kafka` is not shared between the processes: share the output \
                     folder, or use a broker that keeps commit metadata",
                    r.from,
                    at(theirs),
                    self.plan.process,
                    at(ours)
                ));
            }
        }
        if let (Some(ingest), Some((wm, closed))) = (&self.ingest, r.push) {
            if let Some(wm) = wm {
                ingest.follow_samples_watermark(wm);
            }
            if closed && !ingest.is_closed() {
                tracing::info!("cluster: process {} stopped taking pushes; so does this one", r.from);
                ingest.close();
            }
        }
        if let Some(e) = r.failure
            && !self.failure.is_set()
        {
            self.failure_is_remote.store(true, Ordering::Release);
            self.failure.set(format!("process {}: {e}", r.from));
        }
        if r.last {
            self.finished.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Builds the gathering dataflow on `worker` (after the pipeline's, on every worker). The
    /// first worker of each process reports; the first worker of each process applies what
    /// the others report.
    pub fn dataflow(self: &Arc<Self>, worker: &mut timely::worker::Worker) {
        let threads = self.plan.threads;
        let reporter = worker.index().is_multiple_of(threads);
        let gather = self.clone();
        let applier = self.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let reports = source(scope, "cluster:report", move |cap, info| {
                let activator = scope.activator_for(info.address.clone());
                let mut cap = Some(cap).filter(|_| reporter);
                let mut sent: Option<Instant> = None;
                move |output| {
                    let Some(c) = cap.as_mut() else { return };
                    // The last report, once this process's pipeline has finished on every worker
                    // (and, with Kafka sources, its sinks are all durable, so the others may
                    // commit their end offsets).
                    let last = gather.done.load(Ordering::Acquire) >= threads
                        && gather.durability.as_ref().is_none_or(|d| d.local_frontier() == Time::MAX || gather.failure.is_set());
                    if last || sent.is_none_or(|s| s.elapsed() >= EVERY) {
                        sent = Some(Instant::now());
                        let mut session = output.session(&*c);
                        for to in (0..gather.plan.processes).filter(|&p| p != gather.plan.process) {
                            session.give(gather.own_report(to, last));
                        }
                        drop(session);
                        let next = *c.time() + 1;
                        c.downgrade(&next);
                    }
                    if last {
                        cap = None;
                    } else {
                        activator.activate_after(EVERY);
                    }
                }
            });
            reports.sink(Exchange::new(move |r: &Report| (r.to * threads) as u64), "cluster:gather", move |(input, _)| {
                input.for_each(|_, data| {
                    for r in data.drain(..) {
                        applier.apply(r);
                    }
                });
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(processes: usize, process: usize, addresses: Vec<String>, timeout_ms: u64) -> Plan {
        Plan { processes, process, threads: 1, addresses, hostfile: PathBuf::from("hosts.txt"), timeout: Duration::from_millis(timeout_ms) }
    }

    fn loopback(n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                format!("127.0.0.1:{}", l.local_addr().unwrap().port())
            })
            .collect()
    }

    #[test]
    fn a_hostfile_skips_comments_and_blank_lines_and_names_bad_lines() {
        let dir = std::env::temp_dir().join(format!("alertflow-hostfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("hosts.txt");
        std::fs::write(&f, "# cluster\n\nhost-a:2101  # first\n[::1]:2102\nhost-c:2103\n").unwrap();
        assert_eq!(read_hostfile(&f, 2).unwrap(), vec!["host-a:2101", "[::1]:2102"]);
        assert_eq!(read_hostfile(&f, 3).unwrap().len(), 3);
        let e = read_hostfile(&f, 4).unwrap_err();
        assert!(e.contains("names 3 address(es), and --processes is 4"), "{e}");
        std::fs::write(&f, "host-a:2101\nhost-b\n").unwrap();
        let e = read_hostfile(&f, 2).unwrap_err();
        assert!(e.contains("line 2: `host-b` is not host:port"), "{e}");
        std::fs::write(&f, "host-a:0\n").unwrap();
        assert!(read_hostfile(&f, 1).is_err());
        let e = read_hostfile(&dir.join("missing.txt"), 1).unwrap_err();
        assert!(e.contains("cannot read the hostfile"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hello_lines_round_trip_and_strangers_are_not_hellos() {
        let p = plan(3, 2, loopback(3), 100);
        let line = p.hello("abc123", false);
        let h = Hello::parse(line.trim_end()).unwrap();
        assert_eq!((h.process, h.processes, h.workers, h.pipeline.as_str(), h.control), (2, 3, 1, "abc123", false));
        assert!(Hello::parse(p.hello("abc123", true).trim_end()).unwrap().control);
        assert!(Hello::parse("GET / HTTP/1.1").is_none());
        assert!(Hello::parse(&format!("{HELLO} process=1")).is_none());
    }

    #[test]
    fn three_processes_connect_and_mismatches_are_named_on_both_sides() {
        let addresses = loopback(3);
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let a = addresses.clone();
                std::thread::spawn(move || plan(3, i, a, 10_000).connect("d1"))
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let c = h.join().unwrap().unwrap_or_else(|e| panic!("process {i}: {e}"));
            assert_eq!(c.sockets.iter().map(Option::is_some).collect::<Vec<_>>(), (0..3).map(|p| p != i).collect::<Vec<_>>());
            // Control connections: process 0 to each other, each other to process 0.
            let control: Vec<usize> = c.control.iter().map(|(p, _)| *p).collect();
            assert_eq!(control, if i == 0 { vec![1, 2] } else { vec![0] });
        }

        // Another pipeline: both ends say so.
        let addresses = loopback(2);
        let a = addresses.clone();
        let first = std::thread::spawn(move || plan(2, 0, a, 5_000).connect("d1"));
        let second = plan(2, 1, addresses, 5_000).connect("d2").unwrap_err();
        let first = first.join().unwrap().unwrap_err();
        assert!(first.contains("process 1 runs another pipeline (digest d2, this one d1)"), "{first}");
        assert!(second.contains("process 0 runs another pipeline (digest d1, this one d2)"), "{second}");
    }

    #[test]
    fn a_missing_peer_is_named_after_the_timeout() {
        let addresses = loopback(2);
        let t = Instant::now();
        let e = plan(2, 0, addresses.clone(), 300).connect("d").unwrap_err();
        assert!(e.contains(&format!("process 1 ({}) did not connect within", addresses[1])), "{e}");
        let e = plan(2, 1, addresses.clone(), 300).connect("d").unwrap_err();
        assert!(e.contains(&format!("process 0 at {} did not answer within", addresses[0])), "{e}");
        assert!(t.elapsed() >= Duration::from_millis(600));
        // A busy address of its own is named with its hostfile line.
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = vec![format!("127.0.0.1:{}", busy.local_addr().unwrap().port()), addresses[1].clone()];
        let e = plan(2, 0, taken, 300).connect("d").unwrap_err();
        assert!(e.contains("cannot listen on") && e.contains("line 1 of hosts.txt"), "{e}");
    }

    #[test]
    fn a_peer_that_goes_away_while_answering_is_named_apart_from_a_stranger() {
        // Accepts, reads the hello, and closes without a word: a process killed while the
        // cluster forms.
        let gone = TcpListener::bind("127.0.0.1:0").unwrap();
        let stranger = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = |l: &TcpListener| format!("127.0.0.1:{}", l.local_addr().unwrap().port());
        let (a_gone, a_stranger) = (addr(&gone), addr(&stranger));
        let t = std::thread::spawn(move || {
            let (mut s, _) = gone.accept().unwrap();
            let mut b = [0u8; 16];
            let _ = s.read(&mut b);
            drop(s);
            let (mut s, _) = stranger.accept().unwrap();
            let _ = s.read(&mut b);
            s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
        });
        let e = plan(2, 1, vec![a_gone.clone(), loopback(1).remove(0)], 5_000).connect("d").unwrap_err();
        assert!(e.contains(&format!("process 0 at {a_gone} closed the connection at start")) && e.contains("line 1 of hosts.txt"), "{e}");
        let e = plan(2, 1, vec![a_stranger.clone(), loopback(1).remove(0)], 5_000).connect("d").unwrap_err();
        assert!(e.contains(&format!("{a_stranger} (process 0 in hosts.txt) answered without an alertflow hello")), "{e}");
        assert!(e.contains("HTTP/1.1 400"), "{e}");
        t.join().unwrap();
    }

    fn gather(processes: usize, process: usize) -> Arc<Gather> {
        let sources: Arc<Vec<Arc<SourceStats>>> = Arc::new(vec![Arc::default()]);
        let sinks: Arc<Vec<Arc<SinkStats>>> = Arc::new(vec![Arc::default(), Arc::default()]);
        let watermarks = Arc::new((0..processes).map(|_| AtomicU64::new(0)).collect());
        Gather::new(
            plan(processes, process, loopback(processes), 100),
            sources,
            sinks,
            vec![Arc::default()],
            watermarks,
            Failure::new(),
            SourceLinks::default(),
        )
    }

    #[test]
    fn gathered_counters_add_the_others_deltas_and_reports_carry_only_a_process_own() {
        let g = gather(3, 0);
        let n = g.values().len();
        assert_eq!(n, 5 + 2 * 3 + 8);
        g.sources[0].records.fetch_add(10, Ordering::Relaxed);
        let mut from1 = vec![0; n];
        from1[1] = 100; // records
        from1[5] = 7; // rows of the first sink
        g.apply(Report {
            to: 0,
            from: 1,
            counters: from1.clone(),
            watermarks: vec![42],
            failure: None,
            durable: None,
            resume_floor: None,
            push: None,
            last: false,
        });
        assert_eq!(g.sources[0].records.load(Ordering::Relaxed), 110);
        assert_eq!(g.sinks[0].rows.load(Ordering::Relaxed), 7);
        assert_eq!(g.watermarks[1].load(Ordering::Relaxed), 42);
        // A later report adds only what changed; a gauge may go down (the operator's state).
        from1[1] = 150;
        from1[n - 1] = 5;
        g.apply(Report {
            to: 0,
            from: 1,
            counters: from1.clone(),
            watermarks: vec![43],
            failure: None,
            durable: None,
            resume_floor: None,
            push: None,
            last: false,
        });
        from1[n - 1] = 2;
        g.apply(Report {
            to: 0,
            from: 1,
            counters: from1.clone(),
            watermarks: vec![44],
            failure: None,
            durable: None,
            resume_floor: None,
            push: None,
            last: false,
        });
        assert_eq!(g.sources[0].records.load(Ordering::Relaxed), 160);
        assert_eq!(g.operators[0].state(), 2);
        let mut from2 = vec![0; n];
        from2[1] = 1;
        g.apply(Report {
            to: 0,
            from: 2,
            counters: from2,
            watermarks: vec![u64::MAX],
            failure: None,
            durable: None,
            resume_floor: None,
            push: None,
            last: true,
        });
        assert_eq!(g.sources[0].records.load(Ordering::Relaxed), 161);
        // What this process reports is its own share only.
        let own = g.own_report(1, false);
        assert_eq!(own.counters[1], 10);
        assert_eq!(own.counters[n - 1], 0);
        assert_eq!((own.from, own.to), (0, 1));
        assert!(!g.complete());
        g.apply(Report {
            to: 0,
            from: 1,
            counters: from1,
            watermarks: vec![u64::MAX],
            failure: None,
            durable: None,
            resume_floor: None,
            push: None,
            last: true,
        });
        assert!(g.complete());
    }

    #[test]
    fn a_failure_anywhere_fails_every_process_and_is_not_echoed_back() {
        let g = gather(2, 0);
        let n = g.values().len();
        g.apply(Report {
            to: 0,
            from: 1,
            counters: vec![0; n],
            watermarks: vec![0],
            failure: Some("sink `x`: disk full".into()),
            durable: None,
            resume_floor: None,
            push: None,
            last: false,
        });
        assert_eq!(g.failure.get().as_deref(), Some("process 1: sink `x`: disk full"));
        assert_eq!(g.own_report(1, false).failure, None);
        let h = gather(2, 1);
        h.failure.set("cannot write".into());
        assert_eq!(h.own_report(0, false).failure.as_deref(), Some("cannot write"));
        // A report of another shape (another build) fails the run instead of mixing counters.
        let k = gather(2, 0);
        k.apply(Report {
            to: 0,
            from: 1,
            counters: vec![1; 3],
            watermarks: vec![],
            failure: None,
            durable: None,
            resume_floor: None,
            push: None,
            last: false,
        });
        assert!(k.failure.get().unwrap().contains("reports 3 counters"));
    }

    #[test]
    fn kafka_commits_wait_for_every_process_and_the_resume_floors_must_agree() {
        let with_kafka = |process: usize| {
            let d = Durability::in_cluster(1, 1000, 2, 1);
            let mut g = Arc::into_inner(gather(2, process)).unwrap();
            g.durability = Some(d.clone());
            (Arc::new(g), d)
        };
        let (g, d) = with_kafka(0);
        let n = g.values().len();
        let report = |durable, resume_floor, last| Report {
            to: 0,
            from: 1,
            counters: vec![0; n],
            watermarks: vec![0],
            failure: None,
            durable,
            resume_floor,
            push: None,
            last,
        };
        d.slot().set(8000);
        let own = g.own_report(1, false);
        assert_eq!((own.durable, own.resume_floor), (Some(8000), None), "the floor is reported once the source settled it");
        assert_eq!(d.frontier(), 0, "process 1 has not reported");
        g.apply(report(Some(5000), None, false));
        assert_eq!(d.frontier(), 5000, "the least over both processes");
        d.settle();
        d.raise_resume_floor(3000);
        g.apply(report(Some(6000), Some(3000), false));
        assert!(!g.failure.is_set());
        assert_eq!(d.frontier(), 6000);
        // A process that found other commit metadata would skip other spans: the run fails.
        g.apply(report(Some(6000), Some(0), false));
        let e = g.failure.get().unwrap();
        assert!(e.contains("disagree") && e.contains("process 1: the start") && e.contains("share the output folder"), "{e}");
        g.apply(report(Some(Time::MAX), Some(0), true));
        assert_eq!(d.frontier(), 8000, "process 1 is all durable: this process's sinks decide");
    }
}
