//! The Kafka connector (rdkafka, librdkafka built from the crate): a partitioned source and a
//! JSON sink.
//!
//! **Source.** Partitions are assigned to workers by index (`assign`, no group rebalancing: a
//! timely cluster is fixed): partition `p` of the `t`-th topic goes to worker `(t + p) mod
//! workers`, so it is the same on every run with the same worker count, and partitions added
//! while running (found by a periodic metadata refresh) land on a fixed worker too. Each
//! partition has its own watermark (max event time − `max_out_of_orderness`), against which its
//! records are judged late; the source's watermark is their minimum. A partition that has not
//! delivered anything for `idle_timeout` stops holding the watermark back, and when every
//! partition is idle the watermark follows the wall clock (DESIGN §2). A record's `part` is
//! `first_part + t · 65536 + p` and its `pos` the message offset, so output does not depend on
//! the worker count; the message timestamp is the event time of a record that has none.
//!
//! **Offsets are committed only after durable output.** Every sink reports a durable frontier
//! `F` (see [`crate::durable`]). Rounded down to a file span, every window row before `F` is
//! written, and one at or after it needs the records with `ts ≥ K = F − horizon`, the horizon
//! being the largest window size reading the source. Per partition the source keeps the
//! prefix maxima of `(ts, offset)` and commits the offset of the first record with `ts ≥ K`
//! (and no later than a dead letter that is not yet durable), with `F` and `K` in the commit's
//! metadata. A run that resumes from committed offsets drops records with `ts < K` (their
//! windows are written) and its sinks drop rows before `F` (whole spans already on disk); spans
//! from `F` on are recomputed from complete input and overwrite the files of the same name.
//! See the README ("From Kafka") for what is not guaranteed yet.
//!
//! **In a cluster** partitions are spread over the workers of every process (the worker index
//! is global), each process commits the offsets of the partitions its workers read, and `F` is
//! the least durable frontier over every process's sinks (each reports its own to the others),
//! since a record read here may land in a row another process writes. Every process reads the
//! committed offsets of *all* partitions at start, so all of them skip the same spans; the
//! engine checks that they agree (a broker that drops commit metadata leaves only the journal
//! in the output folder, which processes on different machines do not share). End offsets are
//! committed only once every process has reported all its output durable.
//!
//! **With checkpoints** (`engine.state_dir`) a source resumes from the checkpoint instead: its
//! part of a checkpoint holds, per partition, the offset to read again and the partition's state
//! before it (see [`source`]). The offsets of each committed checkpoint are committed to the
//! group too (metadata `alertflow:checkpoint=B`), so consumer-lag tools see the progress, and
//! the end offsets when a `stop_at_end` run completes (it leaves no checkpoint to resume from).

mod context;
pub mod journal;
pub mod sink;
pub mod source;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use alertflow_model::time::DurationMs;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

pub use context::{KafkaContext, RateLimited};
pub use sink::{KafkaSink, KafkaSinkConfig, KafkaSinkExt};
pub use source::kafka_source;

use crate::durable::Durability;
use crate::file::{Format, Records};
use crate::kafka::journal::CommitJournal;
use crate::time_bounds::TimeBounds;

/// Partition ids reserved per topic: a record's `part` is `first_part + topic · 65536 + partition`.
pub const PARTS_PER_TOPIC: u32 = 1 << 16;

/// Where a source starts reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// The consumer group's committed offsets (the earliest offset where there is none).
    #[default]
    Committed,
    /// The earliest offset still in the topic.
    Earliest,
    /// The end of each partition at start: only new messages.
    Latest,
}

/// The `[[source]]` section of `type = "kafka"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// The stream's name: operators name it in `input`, dead letters in `source`.
    pub name: String,
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic to read (or `topics`).
    #[serde(default)]
    pub topic: Option<String>,
    /// Several topics to read (or `topic`).
    #[serde(default)]
    pub topics: Vec<String>,
    /// The consumer group that holds the committed offsets.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Message encoding: `ndjson` (default), `csv` (one line per message, under `csv_header`)
    /// or `alertmanager`.
    #[serde(default = "default_format")]
    pub format: Format,
    /// The CSV header the messages' lines follow (`format = "csv"`), e.g. `"ts,host,name,value"`.
    #[serde(default)]
    pub csv_header: Option<String>,
    /// Metric records: the message key becomes this label when the record has no label of
    /// that name (a producer that keys by host need not repeat it in the payload).
    #[serde(default)]
    pub key_label: Option<String>,
    /// What the records are: `metrics` or `alerts`.
    #[serde(default)]
    pub records: Records,
    /// How far behind the newest event time of its partition a record may be and still count.
    #[serde(default = "default_out_of_orderness")]
    pub max_out_of_orderness: DurationMs,
    /// Wall time without messages after which a partition stops holding the watermark back.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: DurationMs,
    /// Where to start: `committed` (default), `earliest` or `latest`.
    #[serde(default)]
    pub start: Start,
    /// Stop once every partition has reached the end it had when it was found.
    #[serde(default)]
    pub stop_at_end: bool,
    /// How often the topics' partitions are looked up again (partitions added while running).
    #[serde(default = "default_refresh")]
    pub metadata_refresh: DurationMs,
    /// How often each worker considers committing offsets (behind the durable output).
    #[serde(default = "default_commit_interval")]
    pub commit_interval: DurationMs,
    /// librdkafka properties (security, fetch sizes …), passed through.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// The earliest event time accepted (RFC 3339 or integer ms; default 2000-01-01): older
    /// records are dead letters (see [`crate::time_bounds`]).
    #[serde(default)]
    pub min_event_time: Option<String>,
    /// How far ahead of the wall clock an event time may be (default `1d`).
    #[serde(default = "crate::time_bounds::default_max_future")]
    pub max_future: DurationMs,
}

fn default_group() -> String {
    "alertflow".into()
}

fn default_format() -> Format {
    Format::Ndjson
}

fn default_out_of_orderness() -> DurationMs {
    DurationMs::from_secs(5)
}

fn default_idle_timeout() -> DurationMs {
    DurationMs::from_secs(30)
}

fn default_commit_interval() -> DurationMs {
    DurationMs::from_secs(1)
}

fn default_refresh() -> DurationMs {
    DurationMs::from_secs(10)
}

/// Properties alertflow sets itself: an `options` key among these is refused.
const OWN_PROPERTIES: [(&str, &str); 5] = [
    ("bootstrap.servers", "set `brokers`"),
    ("metadata.broker.list", "set `brokers`"),
    ("group.id", "set `group_id`"),
    ("enable.auto.commit", "offsets are committed after durable output"),
    ("enable.auto.offset.store", "offsets are committed after durable output"),
];

/// A validated Kafka source.
#[derive(Debug)]
pub struct KafkaSource {
    /// The source's name.
    pub name: Arc<str>,
    /// Bootstrap brokers.
    pub brokers: String,
    /// Topics, in the order written.
    pub topics: Vec<Arc<str>>,
    /// Consumer group.
    pub group_id: String,
    /// Message encoding.
    pub format: Format,
    /// The CSV header line, for `format = "csv"`.
    pub csv_header: Option<String>,
    /// The label the message key becomes (metric records).
    pub key_label: Option<Box<[u8]>>,
    /// What the records are.
    pub records: Records,
    /// Allowed disorder in ms.
    pub out_of_orderness: i64,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Where to start.
    pub start: Start,
    /// Whether to stop at the end.
    pub stop_at_end: bool,
    /// Metadata refresh period.
    pub metadata_refresh: Duration,
    /// Commit period.
    pub commit_interval: Duration,
    /// librdkafka properties.
    pub options: BTreeMap<String, String>,
    /// The `part` of partition 0 of the first topic.
    pub first_part: u32,
    /// Late records at most this much older than their partition's watermark (ms) are kept and
    /// marked late (the engine sets it for metric sources under the late policy `update`).
    pub allowed_lateness: Option<i64>,
    /// The event times accepted.
    pub time_bounds: TimeBounds,
}

/// One problem with a Kafka section: the field (relative to the section) and the message.
pub type FieldProblem = (String, String);

impl KafkaSource {
    /// Validates `cfg`, numbering its partitions from `first_part`. librdkafka checks every
    /// `options` property (name and value) and a client is created with the whole configuration
    /// (and dropped at once; it logs nothing, and nothing waits for a broker).
    pub fn plan(cfg: &KafkaSourceConfig, first_part: u32) -> Result<KafkaSource, Vec<FieldProblem>> {
        let mut p: Vec<FieldProblem> = Vec::new();
        let mut bad = |f: &str, m: String| p.push((f.to_string(), m));
        if cfg.brokers.trim().is_empty() {
            bad("brokers", "must not be empty: `host:port[,host:port…]`".into());
        }
        let topics: Vec<Arc<str>> = match (&cfg.topic, cfg.topics.is_empty()) {
            (Some(t), true) => vec![t.as_str().into()],
            (None, false) => cfg.topics.iter().map(|t| t.as_str().into()).collect(),
            (Some(_), false) => {
                bad("topics", "set either `topic` or `topics`, not both".into());
                vec![]
            }
            (None, true) => {
                bad("topic", "missing: set topic = \"…\" or topics = [\"…\"]".into());
                vec![]
            }
        };
        for (i, t) in topics.iter().enumerate() {
            if t.is_empty() || t.len() > 249 || !t.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c)) {
                let f = if cfg.topic.is_some() { "topic".to_string() } else { format!("topics[{i}]") };
                bad(&f, format!("`{t}` is not a valid topic name (letters, digits, `.`, `_`, `-`; at most 249)"));
            }
        }
        if topics.len() > 1024 {
            bad("topics", "at most 1024 topics per source".into());
        }
        if cfg.group_id.is_empty() {
            bad("group_id", "must not be empty".into());
        }
        match (cfg.format, cfg.records, &cfg.csv_header) {
            (Format::Parquet, ..) => bad("format", "Kafka messages are ndjson, csv or alertmanager, not parquet".into()),
            (Format::Alertmanager, Records::Metrics, _) => bad("format", "`alertmanager` holds alerts: set records = \"alerts\"".into()),
            (Format::Csv, _, None) => bad("csv_header", "missing: CSV messages need the header line they follow".into()),
            (Format::Csv, Records::Alerts, Some(_)) => {
                bad("format", "CSV alerts are read from files only; use ndjson or alertmanager".into())
            }
            (f, _, Some(_)) if f != Format::Csv => bad("csv_header", "only for format = \"csv\"".into()),
            _ => {}
        }
        if let Some(k) = &cfg.key_label {
            if cfg.records != Records::Metrics {
                bad("key_label", "only metric records take the message key as a label".into());
            } else if k.is_empty() {
                bad("key_label", "must not be empty".into());
            } else if ["ts", "timestamp", "tenant", "name", "value", "labels", "annotations"].contains(&k.as_str()) {
                bad("key_label", format!("`{k}` is a field of the record, not a label; choose another name"));
            }
        }
        if cfg.metadata_refresh.millis() < 100 {
            bad("metadata_refresh", "must be at least 100ms".into());
        }
        if cfg.idle_timeout.millis() == 0 {
            bad("idle_timeout", "must be greater than 0".into());
        }
        let time_bounds = TimeBounds::from_config(cfg.min_event_time.as_deref(), cfg.max_future).unwrap_or_else(|(field, why)| {
            bad(field, why);
            TimeBounds::default()
        });
        for (k, v) in &cfg.options {
            let field = format!("options.{}", quote_key(k));
            if let Some((_, why)) = OWN_PROPERTIES.iter().find(|(o, _)| o == k) {
                bad(&field, format!("set by alertflow ({why})"));
                continue;
            }
            let mut one = ClientConfig::new();
            one.set(k, v);
            if let Err(e) = one.create_native_config() {
                bad(&field, librdkafka_message(&e));
            }
        }
        let source = KafkaSource {
            name: cfg.name.as_str().into(),
            brokers: cfg.brokers.clone(),
            topics,
            group_id: cfg.group_id.clone(),
            format: cfg.format,
            csv_header: cfg.csv_header.clone(),
            key_label: cfg.key_label.as_ref().map(|k| k.as_bytes().into()),
            records: cfg.records,
            out_of_orderness: cfg.max_out_of_orderness.millis() as i64,
            idle_timeout: Duration::from_millis(cfg.idle_timeout.millis()),
            start: cfg.start,
            stop_at_end: cfg.stop_at_end,
            metadata_refresh: Duration::from_millis(cfg.metadata_refresh.millis().max(100)),
            commit_interval: Duration::from_millis(cfg.commit_interval.millis()),
            options: cfg.options.clone(),
            first_part,
            allowed_lateness: None,
            time_bounds,
        };
        if p.is_empty() {
            // The whole configuration, as the run will use it (catches conflicting properties).
            if let Err(e) = source.client_config().create_with_context::<_, BaseConsumer<KafkaContext>>(KafkaContext::quiet(&source.name)) {
                p.push(("options".into(), librdkafka_message(&e)));
            }
        }
        if p.is_empty() { Ok(source) } else { Err(p) }
    }

    /// How many `part` ids the source reserves.
    pub fn part_ids(&self) -> u32 {
        self.topics.len() as u32 * PARTS_PER_TOPIC
    }

    /// The consumer configuration: the user's options, then what alertflow needs.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        // Throughput defaults a user's `options` may override.
        c.set("fetch.min.bytes", "1").set("queued.min.messages", "200000").set("fetch.wait.max.ms", "100");
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // With `stop_at_end`, reaching the end is also reported (an end offset may never be
            // reached by a message: transaction markers and compaction leave gaps).
            .set("enable.partition.eof", if self.stop_at_end { "true" } else { "false" });
        c
    }

    fn part_of(&self, topic: usize, partition: i32) -> u32 {
        self.first_part + topic as u32 * PARTS_PER_TOPIC + partition as u32
    }
}

fn quote_key(k: &str) -> String {
    if k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-') { k.to_string() } else { format!("\"{k}\"") }
}

/// librdkafka's message without the crate's wrapping ("Client config error: … key value").
fn librdkafka_message(e: &rdkafka::error::KafkaError) -> String {
    match e {
        rdkafka::error::KafkaError::ClientConfig(_, msg, ..) => format!("librdkafka: {msg}"),
        other => format!("librdkafka: {other}"),
    }
}

/// A partition found by the metadata refresh, with where to read it.
#[derive(Debug, Clone)]
pub struct PartitionPlan {
    /// Index of its topic in the source's list.
    pub topic_index: usize,
    /// Its topic.
    pub topic: Arc<str>,
    /// Its number.
    pub partition: i32,
    /// Its `part` id.
    pub part: u32,
    /// `topic/partition`, how dead letters name it.
    pub display: Arc<str>,
    /// First offset to read.
    pub start: i64,
    /// The partition's first offset when it was found (its low watermark).
    pub low: i64,
    /// With `stop_at_end`: the offset to stop before.
    pub end: Option<i64>,
    /// On a resumed run: records with an event time before this are already in durable output.
    pub resume_k: Option<i64>,
}

impl PartitionPlan {
    /// The worker (of `peers`) that reads it.
    pub fn worker(&self, peers: usize) -> usize {
        (self.topic_index + self.partition as usize) % peers.max(1)
    }
}

/// An offset to commit: (topic index, partition) → (offset, metadata).
/// Offsets to commit, with the durable frontier `F` and event-time bound `K` behind them.
type Commits = HashMap<(usize, i32), (i64, (u64, i64))>;

#[derive(Default)]
struct SharedState {
    partitions: Vec<PartitionPlan>,
    /// Commits requested by workers while running (output up to them is durable).
    pending: Commits,
    /// Commits for when the run has ended and every sink has finished.
    finals: Commits,
    /// A problem that stops the run (the consumer could not be created).
    fatal: Option<String>,
}

/// A Kafka source's state shared by the workers of one process: the partitions found so far
/// (a background thread refreshes the topics' metadata and resolves start and end offsets) and
/// the offsets to commit (the same thread commits them).
pub struct KafkaShared {
    /// The source.
    pub source: Arc<KafkaSource>,
    /// The sinks' durable frontier.
    pub durability: Arc<Durability>,
    /// The event-time span a window row depends on (largest window size), or `None` when no
    /// offset can be justified (the source feeds state without a time bound: the alert chain).
    pub horizon: Option<i64>,
    /// The run checkpoints: the source resumes from its checkpoint parts, and commits the
    /// offsets of committed checkpoints (no `F`, `K`, journal or resume floor).
    pub checkpointed: bool,
    /// Where every commit's `F` and `K` are also written (see [`journal`]).
    journal: CommitJournal,
    state: Mutex<SharedState>,
    generation: AtomicU64,
    ready: AtomicBool,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    missing_log: RateLimited,
}

impl std::fmt::Debug for KafkaShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaShared").field("source", &self.source.name).finish()
    }
}

impl KafkaShared {
    /// Starts the metadata/commit thread of `source`; `journal_root` is where commits are
    /// journalled (the output folder's `_kafka`). `checkpointed`: the run checkpoints (then
    /// `horizon` is not used).
    pub fn start(
        source: Arc<KafkaSource>,
        durability: Arc<Durability>,
        horizon: Option<i64>,
        journal_root: &std::path::Path,
        checkpointed: bool,
    ) -> Arc<Self> {
        let horizon = horizon.filter(|_| !checkpointed);
        if horizon.is_none() && !checkpointed {
            tracing::warn!(
                "source `{}`: offsets are not committed: its records feed state without a time bound (the alert chain, session windows) \
                 (committing needs checkpoints); a restart re-reads from `start`",
                source.name
            );
        }
        let shared = Arc::new(KafkaShared {
            journal: CommitJournal::new(journal_root, &source.group_id),
            checkpointed,
            source,
            durability,
            horizon,
            state: Mutex::default(),
            generation: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
            missing_log: RateLimited::new(Duration::from_secs(30)),
        });
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("kafka-meta-{}", shared.source.name))
            .spawn(move || s.run())
            .map_err(|e| shared.lock().fatal = Some(format!("source `{}`: cannot start a thread: {e}", shared.source.name)))
            .ok();
        *shared.thread.lock().unwrap_or_else(|p| p.into_inner()) = handle;
        shared
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the first metadata lookup (partitions, start and end offsets) has completed.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Changes whenever partitions are added.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The partitions found so far.
    pub fn partitions(&self) -> Vec<PartitionPlan> {
        self.lock().partitions.clone()
    }

    /// A fatal problem of the background thread.
    pub fn fatal(&self) -> Option<String> {
        self.lock().fatal.clone()
    }

    /// Asks for `offset` to be committed (output before it is durable).
    pub fn commit(&self, topic: usize, partition: i32, offset: i64, fk: (u64, i64)) {
        self.lock().pending.insert((topic, partition), (offset, fk));
    }

    /// Records what to commit once the run has ended well (every sink finished).
    pub fn commit_at_end(&self, topic: usize, partition: i32, offset: i64, fk: (u64, i64)) {
        self.lock().finals.insert((topic, partition), (offset, fk));
    }

    /// Stops the background thread; commits the end offsets when `ended_well`.
    pub fn finish(&self, ended_well: bool) {
        if !ended_well {
            self.lock().finals.clear();
        } else {
            let mut st = self.lock();
            let finals = std::mem::take(&mut st.finals);
            st.pending.extend(finals);
        }
        self.stop.store(true, Ordering::Release);
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// The background thread: metadata refresh with back-off, and commits.
    fn run(&self) {
        let src = &self.source;
        let consumer: BaseConsumer<KafkaContext> = match src.client_config().create_with_context(KafkaContext::new(&src.name)) {
            Ok(c) => c,
            Err(e) => {
                self.lock().fatal = Some(format!("source `{}`: cannot create a Kafka client: {e}", src.name));
                return;
            }
        };
        let log = RateLimited::new(Duration::from_secs(10));
        let mut next_refresh = Instant::now();
        let mut backoff = Duration::from_millis(250);
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            if !stopping && Instant::now() >= next_refresh {
                match self.refresh(&consumer) {
                    Ok(()) => {
                        if !self.ready.swap(true, Ordering::AcqRel) {
                            // The committed offsets of every partition (all of them, not only
                            // this process's: in a cluster every process must skip the same
                            // spans) have raised the resume floor.
                            self.durability.settle();
                            tracing::info!("source `{}`: {} partition(s) found", src.name, self.lock().partitions.len());
                        }
                        backoff = Duration::from_millis(250);
                        next_refresh = Instant::now() + src.metadata_refresh;
                    }
                    Err(e) => {
                        log.warn(|n| format!("source `{}`: {e}; retrying in {backoff:?}{n}", src.name));
                        next_refresh = Instant::now() + backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
            let pending = std::mem::take(&mut self.lock().pending);
            if !pending.is_empty()
                && let Err(e) = self.commit_now(&consumer, &pending)
            {
                log.warn(|n| format!("source `{}`: committing offsets failed: {e}; will retry{n}", src.name));
                let mut st = self.lock();
                for (k, v) in pending {
                    st.pending.entry(k).or_insert(v);
                }
                if stopping {
                    tracing::error!("source `{}`: the last offsets could not be committed: {e}", src.name);
                    return;
                }
            } else if stopping {
                return;
            }
            std::thread::sleep(Duration::from_millis(if stopping { 0 } else { 100 }));
        }
    }

    fn commit_now(&self, consumer: &BaseConsumer<KafkaContext>, commits: &Commits) -> Result<(), String> {
        let mut tpl = TopicPartitionList::with_capacity(commits.len());
        for (&(t, p), &(off, (f, k))) in commits {
            // Checkpointed: `f` is the checkpoint, for the record only (a restart reads the
            // checkpoint, not this).
            let meta = if self.checkpointed {
                if f == u64::MAX { "alertflow:end".to_string() } else { format!("alertflow:checkpoint={f}") }
            } else {
                // Journalled first: a broker may drop the metadata (see `journal`).
                self.journal.record(&self.source.topics[t], p, off, (f, k))?;
                commit_metadata(f, k)
            };
            tpl.add_partition_offset(&self.source.topics[t], p, Offset::Offset(off)).map_err(|e| e.to_string())?;
            if let Some(mut e) = tpl.find_partition(&self.source.topics[t], p) {
                e.set_metadata(meta);
            }
        }
        consumer.commit(&tpl, CommitMode::Sync).map_err(|e| e.to_string())?;
        tracing::debug!("source `{}`: committed {} offset(s)", self.source.name, commits.len());
        Ok(())
    }

    /// Looks up the topics' partitions and resolves where new ones start and end.
    fn refresh(&self, consumer: &BaseConsumer<KafkaContext>) -> Result<(), String> {
        let src = &self.source;
        let timeout = Duration::from_secs(5);
        let known: Vec<(usize, i32)> = self.lock().partitions.iter().map(|p| (p.topic_index, p.partition)).collect();
        let mut found = Vec::new();
        // Topics that cannot be read yet (missing, or without partitions): the others are read
        // meanwhile, these retried at each refresh.
        let mut missing = Vec::new();
        for (ti, topic) in src.topics.iter().enumerate() {
            let md = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| format!("cannot reach the brokers {}: {e}", src.brokers))?;
            let t = match md.topics().iter().find(|t| t.name() == &**topic) {
                None => {
                    missing.push(format!("topic `{topic}` is not in the metadata"));
                    continue;
                }
                Some(t) => t,
            };
            if let Some(e) = t.error() {
                missing.push(format!("topic `{topic}`: {:?}", rdkafka::error::RDKafkaErrorCode::from(e)));
                continue;
            }
            if t.partitions().is_empty() {
                missing.push(format!("topic `{topic}` has no partitions (does it exist?)"));
                continue;
            }
            let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).filter(|p| *p >= 0 && !known.contains(&(ti, *p))).collect();
            ids.sort_unstable();
            if ids.iter().any(|&p| p as u32 >= PARTS_PER_TOPIC) {
                return Err(format!("topic `{topic}` has more than {PARTS_PER_TOPIC} partitions"));
            }
            found.extend(ids.into_iter().map(|p| (ti, p)));
        }
        if !missing.is_empty() {
            self.missing_log
                .warn(|n| format!("source `{}`: {}; looking again in {:?}{n}", src.name, missing.join("; "), src.metadata_refresh));
            if known.is_empty() && found.is_empty() {
                return Err(missing.join("; "));
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        let committed = if src.start == Start::Committed {
            let mut tpl = TopicPartitionList::new();
            for &(t, p) in &found {
                tpl.add_partition(&src.topics[t], p);
            }
            let got =
                consumer.committed_offsets(tpl, Duration::from_secs(10)).map_err(|e| format!("cannot read committed offsets: {e}"))?;
            let mut m = HashMap::new();
            for e in got.elements() {
                if let Offset::Offset(o) = e.offset() {
                    if self.checkpointed {
                        // A partition the checkpoint does not know (or a run with none yet):
                        // where the group left it, nothing skipped.
                        m.insert((e.topic().to_string(), e.partition()), (o, None));
                        continue;
                    }
                    let meta = match parse_metadata(e.metadata()) {
                        Some(fk) => Some(fk),
                        // The broker kept no metadata (Tansu): the journal has it, if this
                        // output folder's run committed the offset.
                        // A journal that cannot be read stops the run (retrying cannot mend it).
                        None => self.journal.lookup(e.topic(), e.partition(), o).map_err(|err| {
                            let msg = format!("source `{}`: commit journal: {err} (remove the file to resume without it)", src.name);
                            self.lock().fatal = Some(msg.clone());
                            msg
                        })?,
                    };
                    if meta.is_none() {
                        tracing::warn!(
                            "source `{}`: {}/{}: committed offset {o} has no alertflow metadata (committed by another client, or \
                             for another output folder): reading from it, but output spans it overlaps are rewritten with only \
                             the records from it on",
                            src.name,
                            e.topic(),
                            e.partition()
                        );
                    }
                    m.insert((e.topic().to_string(), e.partition()), (o, meta));
                }
            }
            m
        } else {
            HashMap::new()
        };
        let mut plans = Vec::new();
        for (t, p) in found {
            let topic = src.topics[t].clone();
            let (low, high) =
                consumer.fetch_watermarks(&topic, p, timeout).map_err(|e| format!("cannot read the offsets of {topic}/{p}: {e}"))?;
            let (mut start, mut resume_k) = match src.start {
                Start::Earliest => (low, None),
                Start::Latest => (high, None),
                Start::Committed => match committed.get(&(topic.to_string(), p)) {
                    Some(&(o, meta)) => {
                        if let Some((f, _)) = meta {
                            self.durability.raise_resume_floor(f);
                        }
                        (o, meta.map(|(_, k)| k))
                    }
                    None => (low, None),
                },
            };
            if start < low {
                tracing::warn!("source `{}`: {topic}/{p}: offset {start} is gone from the topic; reading from {low}", src.name);
                start = low;
                resume_k = None;
            }
            plans.push(PartitionPlan {
                topic_index: t,
                part: src.part_of(t, p),
                display: format!("{topic}/{p}").into(),
                topic,
                partition: p,
                start,
                low,
                end: src.stop_at_end.then_some(high),
                resume_k,
            });
        }
        let mut st = self.lock();
        tracing::info!("source `{}`: {} new partition(s)", src.name, plans.len());
        st.partitions.extend(plans);
        st.partitions.sort_by_key(|p| (p.topic_index, p.partition));
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

/// The metadata committed with an offset: the durable frontier `F` and the event-time bound `K`.
pub fn commit_metadata(f: u64, k: i64) -> String {
    format!("alertflow:F={f},K={k}")
}

fn parse_metadata(m: &str) -> Option<(u64, i64)> {
    let rest = m.strip_prefix("alertflow:F=")?;
    let (f, k) = rest.split_once(",K=")?;
    Some((f.parse().ok()?, k.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Result<KafkaSource, Vec<FieldProblem>> {
        let text = format!("name = \"k\"\nbrokers = \"127.0.0.1:9\"\n{extra}");
        let c: KafkaSourceConfig = toml::from_str(&text).unwrap();
        KafkaSource::plan(&c, 0)
    }

    fn show(errs: &[FieldProblem]) -> String {
        errs.iter().map(|(f, m)| format!("{f}: {m}\n")).collect()
    }

    #[test]
    fn options_are_checked_by_librdkafka_and_fields_are_named() {
        let s = cfg("topic = \"m\"\noptions = { \"fetch.max.bytes\" = \"1048576\" }").unwrap();
        assert_eq!(s.topics, vec![Arc::<str>::from("m")]);
        let errs = cfg("topic = \"m\"\noptions = { \"no.such.property\" = \"1\", \"group.id\" = \"x\" }").unwrap_err();
        let all = show(&errs);
        assert!(all.contains("options.\"no.such.property\"") && all.contains("No such configuration property"), "{all}");
        assert!(all.contains("options.\"group.id\"") && all.contains("set `group_id`"), "{all}");
        let errs = cfg("topic = \"m\"\noptions = { \"fetch.max.bytes\" = \"lots\" }").unwrap_err();
        assert!(show(&errs).contains("options.\"fetch.max.bytes\": librdkafka: "), "{errs:?}");
        let errs = cfg("").unwrap_err();
        assert_eq!(errs[0].0, "topic");
        let errs = cfg("topic = \"m\"\nrecords = \"alerts\"\nformat = \"alertmanager\"\nkey_label = \"host\"").unwrap_err();
        assert_eq!(show(&errs), "key_label: only metric records take the message key as a label\n");
        let errs = cfg("topic = \"m\"\nkey_label = \"name\"").unwrap_err();
        assert_eq!(show(&errs), "key_label: `name` is a field of the record, not a label; choose another name\n");
        assert_eq!(cfg("topic = \"m\"\nkey_label = \"host\"").unwrap().key_label.as_deref(), Some(&b"host"[..]));
        let errs = cfg("topic = \"a b\"\nformat = \"csv\"").unwrap_err();
        let all = show(&errs);
        assert!(all.contains("not a valid topic name") && all.contains("csv_header"), "{all}");
    }

    #[test]
    fn commit_metadata_round_trips() {
        assert_eq!(parse_metadata(&commit_metadata(3_600_000, -60_000)), Some((3_600_000, -60_000)));
        assert_eq!(parse_metadata("someone else's"), None);
    }
}
