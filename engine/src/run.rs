//! Running a pipeline: prepare the output folder, build the dataflow on every worker, report
//! progress while it runs, and sum up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alertflow_checkpoint::{CheckpointConfig, Checkpoints, ClusterLink};
use alertflow_connectors::Failure;
use alertflow_connectors::backlog::Backlog;
use alertflow_connectors::durable::Durability;
use alertflow_connectors::file::{Records, ReplayOrigin, SourceStats, file_source};
use alertflow_connectors::kafka::{KafkaShared, KafkaSinkExt, kafka_source};
use alertflow_connectors::latency::{LatencyProbe, LatencyReport, SinkKind};
use alertflow_connectors::parquet::{
    ParquetSink, ParquetSinkExt, SinkStats, clear_table, clear_table_except, clear_table_of, write_schema_file,
};
use alertflow_connectors::push::{PushIngest, PushQueue, check_log, push_source};
use alertflow_connectors::topology::topology_source;
use alertflow_model::tables::{
    ALERTS, AlertsTable, AnomaliesTable, DEAD_LETTERS, DeadLetterTable, INCIDENTS, IncidentsTable, NOTIFICATIONS, NotificationsTable,
    STORMS, StormsTable, TableBuilder, TableRow, WindowTable,
};
use alertflow_model::{Alert, Metric};
use alertflow_operators::checkpoint::Saver;
use alertflow_operators::{
    AggregateExt, CorrelateExt, DedupExt, DetectExt, EnrichExt, NotifyExt, OperatorStats, RuleExt, SuppressExt, Time,
};
use serde::Serialize;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline as Pipelined;
use timely::dataflow::operators::Concatenate;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::generic::operator::empty;
use timely::dataflow::operators::vec::Map;

use crate::cluster::{Gather, Plan, SourceLinks};
use crate::config::Pipeline;
use crate::control::{ControlDesk, control_source};
use crate::live::Live;
use crate::notifications::{Delivery, NotifySummary};
use crate::serve_config::ServePlan;
use crate::serving::{Serving, Telemetry};
use alertflow_notify::SilenceSpec;
use alertflow_serve::NotifyHandle;

/// A progress callback.
pub type ProgressFn = Box<dyn Fn(&Progress)>;

/// How to run.
#[derive(Default)]
pub struct RunOptions {
    /// Worker threads (overrides `[engine] workers`).
    pub workers: Option<usize>,
    /// Called about ten times a second while the pipeline runs.
    pub progress: Option<ProgressFn>,
    /// Set to stop the run (checked about ten times a second): sources stop reading, nothing
    /// more is written or committed, and the run ends with an error, as after a crash.
    pub cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Set to end the run normally (checked about ten times a second), as SIGINT or SIGTERM
    /// do when the pipeline has HTTP sources: they stop taking pushes (503), what they have
    /// acknowledged is processed, every window and table is flushed, and the run returns its
    /// summary. Bounded sources are not cut short.
    pub stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Measure processing latency of a paced replay (`alertflow bench --rate`): the input's
    /// event time runs from the first to the second value (ms) at the replay rate, in step
    /// with the wall clock (see `alertflow_connectors::latency`).
    pub latency: Option<(i64, i64)>,
    /// Called with the summary as soon as the pipeline has finished. With `[serve]` the run
    /// then keeps serving its tables until SIGINT/SIGTERM (or `cancel`) before it returns, so
    /// this is where a caller reports the outcome.
    pub finished: Option<FinishedFn>,
    /// With `[serve]`: called once the servers listen, before any worker starts, with the
    /// catalog they answer from and the bound HTTP and PostgreSQL addresses.
    pub serving: Option<ServingFn>,
}

/// See [`RunOptions::finished`].
pub type FinishedFn = Box<dyn FnOnce(&RunSummary)>;

/// See [`RunOptions::serving`].
pub type ServingFn = Box<dyn FnOnce(&alertflow_queries::Catalog, Option<SocketAddr>, Option<SocketAddr>)>;

/// A snapshot of a running pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Bytes read from sources.
    pub bytes: u64,
    /// Bytes the sources hold in all.
    pub total_bytes: u64,
    /// Records read.
    pub records: u64,
    /// Time since the start.
    pub elapsed: Duration,
}

/// What one table received.
#[derive(Debug, Clone, Serialize)]
pub struct TableSummary {
    /// Table name.
    pub table: String,
    /// Rows written.
    pub rows: u64,
    /// Parquet files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Worker threads used.
    pub workers: usize,
    /// Records read from all sources (good, bad and late).
    pub records_in: u64,
    /// Rows written to the result tables (dead letters not counted).
    pub records_out: u64,
    /// Records that could not be decoded (in `dead_letters`).
    pub dead_letters: u64,
    /// Records older than their partition's watermark (in `dead_letters`, reason `late`).
    pub late: u64,
    /// Bytes read from sources.
    pub bytes_in: u64,
    /// Wall time in seconds.
    pub wall_seconds: f64,
    /// `records_in` per second of wall time.
    pub records_per_second: f64,
    /// The alert chain's counters, when it ran.
    pub alerts: Option<AlertSummary>,
    /// Per table.
    pub tables: Vec<TableSummary>,
    /// Where the tables are.
    pub output: String,
    /// The process's peak resident set size so far (Linux `VmHWM`; `None` elsewhere): for a
    /// process that runs one pipeline, the run's.
    pub peak_rss_bytes: Option<u64>,
    /// Processing latency by table and sink, when measured (`RunOptions::latency`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<LatencyReport>,
    /// In cluster mode: the cluster and this process's place in it. Every figure of the
    /// summary covers the whole cluster (the processes gather their counters), except
    /// `peak_rss_bytes` and `wall_seconds`, which are this process's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSummary>,
    /// With `[engine] pin_workers`: the CPU each of this process's workers was pinned to, in
    /// worker order (empty when they were not pinned; a worker the system refused to pin is
    /// warned about in the log).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pinned_to: Vec<usize>,
    /// Checkpoints taken, when the pipeline has a `state_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<CheckpointSummary>,
    /// Per stateful operator whose state bounds acted (keys expired, evicted or rejected).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub state_bounds: Vec<StateBoundsSummary>,
    /// Notifications handed to delivery and how they fared (this process), with `[notify]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notifications: Option<NotifySummary>,
}

/// What one operator's state bounds (`state = { ttl, max_keys, on_full }`) did in a run.
#[derive(Debug, Clone, Serialize)]
pub struct StateBoundsSummary {
    /// The operator kind (`detect`, `aggregate`, `dedup`, …).
    pub operator: String,
    /// Its name (the table it feeds).
    pub name: String,
    /// Keys forgotten after their TTL.
    pub expired: u64,
    /// Keys evicted at the cap (`evict_oldest`).
    pub evicted: u64,
    /// Records of new keys rejected at the cap (`reject_new`).
    pub rejected: u64,
}

/// A cluster run's shape.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSummary {
    /// Processes in the cluster.
    pub processes: usize,
    /// This process's index.
    pub process_id: usize,
    /// Workers of all processes (`workers` is per process).
    pub workers_total: usize,
}

/// What checkpointing did in a run.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointSummary {
    /// The checkpoint the run resumed from (event time, ms; 0: it started afresh).
    pub resumed_from: u64,
    /// Checkpoints committed.
    pub committed: u64,
    /// The latest committed (event time, ms).
    pub latest: u64,
    /// Its size (compressed state).
    pub latest_bytes: u64,
    /// Mean wall time from decision to commit, in ms.
    pub mean_ms: f64,
}

impl CheckpointSummary {
    fn of(c: &Checkpoints) -> Self {
        let n = c.stats.committed.load(Ordering::Relaxed);
        CheckpointSummary {
            resumed_from: c.resumed_at(),
            committed: n,
            latest: c.stats.latest.load(Ordering::Relaxed),
            latest_bytes: c.stats.latest_bytes.load(Ordering::Relaxed),
            mean_ms: c.stats.total_micros.load(Ordering::Relaxed) as f64 / 1e3 / n.max(1) as f64,
        }
    }
}

/// How long a stop waits for its checkpoint before it ends the run at the previous one.
const STOP_WAIT: Duration = Duration::from_secs(30);
/// The failure a stop sets to end the run (reported as [`RunError::Stopped`] instead).
const STOPPED: &str = "stopped at a checkpoint";

/// What the alert chain did.
#[derive(Debug, Clone, Serialize)]
pub struct AlertSummary {
    /// Alert notices that reached dedup.
    pub notices: u64,
    /// Lifecycle rows dedup emitted (before correlate adds `regrouped` rows).
    pub lifecycle_rows: u64,
    /// New fingerprints dropped because their tenant held `max_open_per_tenant` open alerts.
    pub overflow: u64,
}

/// A run that failed after it started.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The output folder could not be prepared.
    #[error("cannot prepare the output folder {0}: {1}")]
    Output(String, std::io::Error),
    /// An operator or connector failed (the first failure is reported).
    #[error("{0}")]
    Failed(String),
    /// `[serve]` could not start (an address in use, say); nothing ran.
    #[error("cannot serve: {0}")]
    Serve(String),
    /// A signal (or `RunOptions::stop`) ended a checkpointing run at a checkpoint: not a
    /// failure, the next run resumes from it.
    #[error("{0}")]
    Stopped(String),
    /// The cluster settings (`--processes`, `--process-id`, `--hostfile` or their `[engine]`
    /// keys) are not valid, or ask for what cluster mode does not do; nothing was touched.
    #[error("cluster: {0}")]
    ClusterConfig(String),
    /// The cluster could not form (a peer unreachable or mismatched) or lost a process.
    #[error("cluster: {0}")]
    Cluster(String),
    /// Timely could not start or a worker panicked (a bug).
    #[error("internal error (a bug): {0}")]
    Internal(String),
}

/// How long the end of a run waits for queued notifications to go out.
const NOTIFY_DRAIN: Duration = Duration::from_secs(30);

/// Runs a validated pipeline to completion (bounded sources).
pub fn run(pipeline: Pipeline, opts: RunOptions) -> Result<RunSummary, RunError> {
    let start = Instant::now();
    let workers = opts
        .workers
        .or(pipeline.engine.workers)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
        .max(1);
    // Cluster mode: checked before anything is touched.
    let cluster = Plan::of(&pipeline, workers).map_err(RunError::ClusterConfig)?;
    let peers = cluster.as_ref().map_or(workers, |c| c.peers());

    // The output folder belongs to the pipeline: a new run replaces the tables' data files.
    let out = pipeline.output_dir.clone();
    let out_err = |e| RunError::Output(out.display().to_string(), e);
    std::fs::create_dir_all(&out).map_err(out_err)?;
    let mut table_schemas = Vec::new();
    for (agg, _) in &pipeline.aggregates {
        table_schemas.push((agg.name().to_string(), WindowTable::with_revisions(agg.group_by(), agg.functions(), agg.revises()).schema()));
    }
    for (det, _) in &pipeline.detects {
        table_schemas.push((det.name().to_string(), AnomaliesTable::default().schema()));
    }
    if pipeline.alerts.is_some() {
        table_schemas.push((ALERTS.to_string(), AlertsTable::default().schema()));
        table_schemas.push((STORMS.to_string(), StormsTable::default().schema()));
        table_schemas.push((INCIDENTS.to_string(), IncidentsTable::default().schema()));
    }
    table_schemas.push((DEAD_LETTERS.to_string(), DeadLetterTable::default().schema()));
    let resumes = pipeline.resumes();
    if resumes {
        tracing::info!("resuming from committed Kafka offsets: keeping the data files in {}", out.display());
    }
    // A cluster: the connections to the other processes, before the state folder is opened
    // (the processes agree on the checkpoint they resume from) and the tables are touched.
    let connections = match &cluster {
        Some(c) => {
            tracing::info!("cluster: process {} of {}, waiting for the others (up to {:?})", c.process, c.processes, c.timeout);
            let s = c.connect(&pipeline.digest).map_err(RunError::Cluster)?;
            tracing::info!("cluster: connected to {} other process(es)", c.processes - 1);
            Some(s)
        }
        None => None,
    };
    let (sockets, control) = match connections {
        Some(c) => (Some(c.sockets), c.control),
        None => (None, Vec::new()),
    };
    // Checkpoints: opened before the tables are touched, so a state folder that cannot be
    // resumed (another pipeline, another worker count) fails the run with the output intact.
    // In a cluster every process keeps its own share in `state_dir/process-<id>` (processes on
    // one machine may share the folder).
    let checkpoints = match &pipeline.state_dir {
        None => None,
        Some(dir) => {
            let mut cfg = CheckpointConfig {
                dir: dir.clone(),
                interval: pipeline.engine.checkpoint_interval.millis(),
                min_wall: Duration::from_millis(pipeline.engine.checkpoint_min_wall_interval.millis()),
                digest: pipeline.digest.clone(),
                workers,
                processes: 1,
                fsync: pipeline.output.fsync,
            };
            let opened = match &cluster {
                None => Checkpoints::open(cfg),
                Some(c) => {
                    cfg.dir = dir.join(format!("process-{}", c.process));
                    cfg.processes = c.processes;
                    let link = if c.process == 0 {
                        ClusterLink::Coordinator { followers: control }
                    } else {
                        let coordinator = control
                            .into_iter()
                            .next()
                            .map(|(_, s)| s)
                            .ok_or_else(|| RunError::Internal("no control connection to process 0".into()))?;
                        ClusterLink::Follower { process: c.process, coordinator }
                    };
                    Checkpoints::open_cluster(cfg, link)
                }
            };
            Some(opened.map_err(|e| RunError::Failed(e.to_string()))?)
        }
    };
    // Push sources' logs of workers this run lacks cannot be replayed: refused before anything starts.
    if let Some(c) = &checkpoints {
        for s in &pipeline.push {
            check_log(&c.wal_dir(), &s.name, workers).map_err(RunError::Failed)?;
        }
    }
    let committed_files = checkpoints.as_ref().and_then(|c| c.committed_files());
    if let Some(c) = checkpoints.as_ref().filter(|c| c.resumed_at() > 0) {
        tracing::info!(
            "resuming from the checkpoint at event time {} ({}): keeping the {} file(s) it covers",
            c.resumed_at(),
            alertflow_model::time::format_rfc3339(c.resumed_at() as i64),
            committed_files.map_or(0, |f| f.len())
        );
    }
    for (name, schema) in &table_schemas {
        let dir = out.join(name);
        let removed = match committed_files {
            _ if resumes => 0,
            // A cluster's processes share the folder: each replaces its own workers' files (but
            // those of the epochs the checkpoint it resumes from covers).
            _ if cluster.is_some() => {
                clear_table_of(&dir, name, cluster.as_ref().map_or(0..0, |c| c.own_workers()), committed_files).map_err(out_err)?
            }
            // Files of epochs no checkpoint committed: the run writes them again.
            Some(keep) => clear_table_except(&dir, name, keep).map_err(out_err)?,
            None => clear_table(&dir).map_err(out_err)?,
        };
        if removed > 0 {
            tracing::info!("table `{name}`: replacing {removed} file(s) of an earlier run");
        }
        write_schema_file(&dir, schema).map_err(out_err)?;
    }
    // Notifications: a delivery log outside the dataflow (no sink of its own), kept when the
    // run continues an earlier one.
    let delivery = match &pipeline.notify {
        None => None,
        Some(n) => {
            let dir = out.join(NOTIFICATIONS);
            let continues = resumes || checkpoints.as_ref().is_some_and(|c| c.resumed_at() > 0);
            let process = cluster.as_ref().map_or(0, |c| c.process);
            if !continues {
                // Each process its own files (`part-<process>-…`, and its leftover
                // temporaries): a cluster's processes share the folder.
                clear_table_of(&dir, NOTIFICATIONS, process..process + 1, None).map_err(out_err)?;
            }
            write_schema_file(&dir, &NotificationsTable::default().schema()).map_err(out_err)?;
            let journal = checkpoints.as_ref().map(|c| (c.notify_dir(), pipeline.output.fsync));
            let d = Delivery::start(&n.receivers, dir, process, pipeline.output.compression, NOTIFY_DRAIN, journal)
                .map_err(RunError::Failed)?;
            Some(Arc::new(d))
        }
    };
    let desk = pipeline.notify.as_ref().map(|n| {
        let configured = n.op.plan().silences.iter().map(SilenceSpec::of).collect();
        let journal = checkpoints.as_ref().map(|c| c.notify_dir().join("control.ndjson"));
        ControlDesk::new(configured, journal, pipeline.output.fsync)
    });

    let source_stats: Arc<Vec<Arc<SourceStats>>> =
        Arc::new((0..pipeline.sources.len() + pipeline.kafka.len() + pipeline.push.len()).map(|_| Arc::default()).collect());
    // HTTP push sources: their queues, fed by the serving runtime's handlers.
    let ingest = (!pipeline.push.is_empty()).then(|| {
        let first = pipeline.sources.len() + pipeline.kafka.len();
        let (mut alerts, mut metrics) = (None, None);
        for (j, s) in pipeline.push.iter().enumerate() {
            let stats = source_stats[first + j].clone();
            match s.records {
                Records::Alerts => alerts = Some(Arc::new(PushQueue::new(s.clone(), stats))),
                Records::Metrics => metrics = Some(Arc::new(PushQueue::new(s.clone(), stats))),
            }
        }
        Arc::new(PushIngest::new(alerts, metrics))
    });
    // Set by SIGINT/SIGTERM while HTTP sources run: end the run normally.
    let signalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Kafka: the sinks' durable frontier (offsets are committed behind it) and each source's
    // metadata/commit thread.
    // In a cluster the frontier is the least over every process (they report theirs).
    // With checkpoints the sources resume from them instead: no sink reports a frontier (the
    // sources get one that nothing reports to, and commit what checkpoints cover).
    let frontier = || {
        Durability::in_cluster(
            (table_schemas.len() + pipeline.kafka_sinks.len()) * workers,
            pipeline.output.file_span.millis(),
            cluster.as_ref().map_or(1, |c| c.processes),
            pipeline.kafka.len(),
        )
    };
    let durability = (!pipeline.kafka.is_empty() && checkpoints.is_none()).then(frontier);
    let kafka: Arc<Vec<Arc<KafkaShared>>> = Arc::new({
        let n = pipeline.sources.len();
        let journal = pipeline.output_dir.join("_kafka");
        let d = durability.clone().unwrap_or_else(|| Durability::new(0, pipeline.output.file_span.millis()));
        let checkpointed = checkpoints.is_some();
        pipeline
            .kafka
            .iter()
            .enumerate()
            .map(|(j, k)| KafkaShared::start(k.clone(), d.clone(), pipeline.horizon(n + j), &journal, checkpointed))
            .collect()
    });
    let sink_stats: Arc<Vec<Arc<SinkStats>>> = Arc::new(table_schemas.iter().map(|_| Arc::default()).collect());
    let dedup_stats: Arc<OperatorStats> = Arc::default();
    let failure = Failure::new();
    let total_bytes: u64 = pipeline.sources.iter().map(|s| s.total_bytes).sum();
    tracing::info!(
        "running with {workers} worker(s): {} source(s), {} partition(s), {} MiB",
        pipeline.sources.len(),
        pipeline.sources.iter().map(|s| s.partitions.len()).sum::<usize>(),
        total_bytes >> 20
    );

    // Paced sources count from one origin; with a latency probe, so does the probe.
    let origin: Arc<ReplayOrigin> = Arc::default();
    let probe = opts.latency.map(|(from, until)| LatencyProbe::new(origin.clone(), from, until));
    // A paced replay starts once every worker has built its dataflow, so that no worker's
    // share of the schedule is already overdue when it starts.
    let paced = pipeline.sources.iter().any(|s| s.replay_rate.is_some());
    let built = Arc::new(std::sync::Barrier::new(workers));

    // `[serve]`: live tables, the catalog and the servers, all bound before any worker starts.
    // Per global worker: in a cluster, the others' as gathered.
    let watermarks: Arc<Vec<AtomicU64>> = Arc::new((0..peers).map(|_| AtomicU64::new(0)).collect());
    // Every process of a cluster builds the live tables' operators (all build one dataflow),
    // and the first process's workers publish them: it serves them, and `/metrics`, for the
    // whole cluster. The others serve nothing.
    let live = pipeline.serve.as_ref().map(|s| Live::new(&pipeline, workers, s.live_refresh));
    let serves = cluster.as_ref().is_none_or(|c| c.process == 0);
    // HTTP sources with a `listen` of their own are served without `[serve]` too (nothing
    // else is then: no SQL, no live tables).
    let push_only =
        (pipeline.serve.is_none() && pipeline.push.iter().any(|s| s.listen.is_some())).then(|| (ServePlan::push_only(), Live::none()));
    let served = match (&pipeline.serve, &live) {
        _ if !serves => None,
        (Some(plan), Some(live)) => Some((plan, live)),
        _ => push_only.as_ref().map(|(plan, live)| (plan, live)),
    };
    let serving = match served {
        Some((plan, live)) => {
            let mut source_names: Vec<String> = pipeline.sources.iter().map(|s| s.name.to_string()).collect();
            source_names.extend(pipeline.kafka.iter().map(|k| k.name.to_string()));
            source_names.extend(pipeline.push.iter().map(|k| k.name.to_string()));
            let telemetry = Telemetry {
                source_names,
                sources: &source_stats,
                table_names: table_schemas.iter().map(|(n, _)| n.clone()).collect(),
                sinks: &sink_stats,
                operators: operator_stats(&pipeline, &dedup_stats),
                watermarks: &watermarks,
                checkpoints: checkpoints.clone(),
            };
            let notify = desk.as_ref().map(|d| NotifyHandle(Arc::new(crate::control::Api(d.clone()))));
            let serving = Serving::start(plan, &pipeline.output_dir, live, telemetry, ingest.clone(), notify)?;
            if ingest.is_some() || checkpoints.is_some() {
                // Push sources never end by themselves: a signal ends the run normally. With
                // checkpoints, a signal ends the run at the next checkpoint.
                serving.on_signal(signalled.clone(), checkpoints.is_some());
            }
            if let Some(f) = opts.serving {
                let (http, pg) = serving.addresses();
                f(&serving.catalog, http, pg);
            }
            Some(serving)
        }
        None => None,
    };

    // A process that does not serve (a cluster's others, or a run without `[serve]`) listens
    // for signals itself: with checkpoints a signal stops at the next one; with HTTP sources
    // (in a cluster) it ends their intake on every process.
    if (checkpoints.is_some() || ingest.is_some()) && serving.is_none() {
        crate::serving::on_signal_thread(signalled.clone(), checkpoints.is_some());
    }

    // A cluster: counters gathered from every process.
    let gather = cluster.as_ref().map(|c| {
        let ops = operator_stats(&pipeline, &dedup_stats).into_iter().map(|(_, _, s)| s).collect();
        Gather::new(
            c.clone(),
            source_stats.clone(),
            sink_stats.clone(),
            ops,
            watermarks.clone(),
            failure.clone(),
            SourceLinks { durability: durability.clone(), ingest: ingest.clone() },
        )
    });

    // `[engine] pin_workers`: the CPUs, read once before any worker starts.
    let pin_cpus: Option<Arc<Vec<usize>>> = pipeline.engine.pin_workers.then(|| crate::affinity::plan(workers)).flatten().map(Arc::new);
    let pipeline = Arc::new(pipeline);
    let guards = {
        let (pipeline, source_stats, sink_stats, failure) = (pipeline.clone(), source_stats.clone(), sink_stats.clone(), failure.clone());
        let (dedup_stats, kafka, durability) = (dedup_stats.clone(), kafka.clone(), durability.clone());
        let (origin, probe, live, watermarks) = (origin.clone(), probe.clone(), live.clone(), watermarks.clone());
        let ingest = ingest.clone();
        let delivery = delivery.clone();
        let desk = desk.clone();
        let resumed_at = checkpoints.as_ref().map_or(0, |c| c.resumed_at());
        let checkpoints = checkpoints.clone();
        let gather = gather.clone();
        let pin_cpus = pin_cpus.clone();
        let work = move |worker: &mut timely::worker::Worker| {
            let index = worker.index();
            if let Some(cpus) = &pin_cpus {
                crate::affinity::pin_worker(index, cpus);
            }
            let main = worker.next_dataflow_index();
            let stats = Stats { sources: &source_stats, watermarks: &watermarks, sinks: &sink_stats, dedup: &dedup_stats };
            let kafka = KafkaParts {
                shared: &kafka,
                durability: durability.as_ref(),
                push: ingest.as_deref(),
                delivery: delivery.as_ref(),
                control: desk.as_ref().map(|d| (d, resumed_at)),
            };
            let replay = Replay { origin: &origin, probe: probe.as_ref() };
            alertflow_checkpoint::building(checkpoints.as_ref(), || {
                build_dataflow(worker, &pipeline, stats, kafka, replay, live.as_ref(), &failure, index)
            });
            if let Some(g) = &gather {
                g.dataflow(worker);
            }
            if paced {
                built.wait();
            }
            let mut main_done = false;
            while worker.has_dataflows() {
                // In a cluster, wake now and then even when idle: a lost peer is noticed by
                // the workers only when they look at its (poisoned) queues.
                worker.step_or_park(gather.as_ref().map(|_| Duration::from_millis(500)));
                if !main_done && !worker.installed_dataflows().contains(&main) {
                    main_done = true;
                    if let Some(g) = &gather {
                        g.worker_done();
                    }
                }
            }
        };
        match (&cluster, sockets) {
            (Some(c), Some(sockets)) => c.execute(sockets, work).map_err(RunError::Cluster)?,
            _ => timely::execute(timely::Config::process(workers), work).map_err(RunError::Internal)?,
        }
    };

    // Join on another thread so this one can report progress.
    let (tx, rx) = std::sync::mpsc::channel();
    let joiner = std::thread::spawn(move || {
        let r = guards.join();
        let _ = tx.send(());
        r
    });
    let progress = |_: ()| {
        if let Some(p) = &opts.progress {
            p(&Progress {
                bytes: source_stats.iter().map(|s| s.bytes.load(Ordering::Relaxed)).sum(),
                total_bytes,
                records: source_stats.iter().map(|s| s.records.load(Ordering::Relaxed)).sum(),
                elapsed: start.elapsed(),
            })
        }
    };
    // With checkpoints, a stop (signal or `stop`) waits for a checkpoint taken after it, then
    // ends the run there: (latest checkpoint when asked, when).
    let mut stopping: Option<(u64, Instant)> = None;
    let mut stopped_at: Option<u64> = None;
    // In a cluster a stop of one process (a signal to it) stops them all at the same
    // checkpoint: the others hear of it as that process's failure.
    let peer_stopped =
        || cluster.is_some() && failure.get().is_some_and(|f| f.starts_with("process ") && f.ends_with(&format!(": {STOPPED}")));
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_millis(100)) {
        progress(());
        if opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Acquire)) {
            failure.set("the run was cancelled".into());
        }
        let stop_asked = signalled.load(Ordering::Acquire) || opts.stop.as_ref().is_some_and(|s| s.load(Ordering::Acquire));
        if let Some(c) = &checkpoints {
            if let Some(e) = c.error() {
                failure.set(format!("checkpoint: {e}"));
            }
            // HTTP sources keep taking (and logging) pushes until the checkpoint: what they
            // acknowledge after it is replayed from their logs by the next run.
            if stop_asked && stopping.is_none() {
                tracing::info!("stopping: taking a checkpoint, then the run ends there (the next run resumes from it)");
                stopping = Some((c.hurry(), Instant::now()));
            }
            if let Some((before, since)) = stopping
                && stopped_at.is_none()
                && (c.committed() > before || c.is_current() || since.elapsed() > STOP_WAIT)
            {
                if c.committed() == before && !c.is_current() {
                    tracing::warn!("no checkpoint within {STOP_WAIT:?}: stopping at the previous one");
                }
                stopped_at = Some(c.committed());
                failure.set(STOPPED.into());
            }
            if stopped_at.is_none() && peer_stopped() {
                stopped_at = Some(c.committed());
            }
        }
        // Without checkpoints a stop ends the HTTP sources: what they acknowledged is processed
        // to the end (windows close, open alerts expire), as at the end of a file.
        if let Some(ingest) = ingest.as_ref().filter(|_| checkpoints.is_none())
            && stop_asked
            && !ingest.is_closed()
        {
            tracing::info!("stopping: the HTTP sources take no more pushes; processing what they acknowledged");
            ingest.close();
        }
    }
    progress(());
    // The peer's stop may have ended this process's workers (so the loop) before the loop saw
    // it: a run that both processes were asked to stop then still ends at its checkpoint, not
    // with the peer's stop as an error (seen in CI: SIGTERM to both, one committed first).
    if let Some(c) = &checkpoints
        && stopped_at.is_none()
        && peer_stopped()
    {
        stopped_at = Some(c.committed());
    }
    let results = joiner.join().map_err(|_| RunError::Internal("the worker joiner panicked".into()));
    // A lost peer: the workers' failures and the joiner's are its consequences.
    if let Some(e) = crate::cluster::comm_error() {
        return Err(RunError::Cluster(e));
    }
    // Every sink has finished: commit the Kafka sources' end offsets if the run ended well (in
    // a cluster: once every process has reported all its output durable).
    let ended_well = results.as_ref().is_ok_and(|r| r.iter().all(|r| r.is_ok())) && !failure.is_set();
    let all_durable = cluster.is_none() || durability.as_ref().is_none_or(|d| d.frontier() == alertflow_connectors::Time::MAX);
    if ended_well && !all_durable {
        tracing::warn!(
            "cluster: not every process reported its output durable; the end offsets are not committed (the next run \
             re-reads from the offsets committed while running)"
        );
    }
    for k in kafka.iter() {
        k.finish(ended_well && all_durable);
    }
    // A completed run leaves nothing to resume; any other keeps its last checkpoint.
    let checkpoint_summary = checkpoints.as_ref().map(|c| CheckpointSummary::of(c));
    if let Some(c) = &checkpoints
        && let Err(e) = c.finish(ended_well)
        && ended_well
    {
        return Err(RunError::Failed(e.to_string()));
    }
    if let Some(at) = stopped_at {
        return Err(RunError::Stopped(match at {
            0 => "stopped before the first checkpoint: the next run starts afresh".to_string(),
            at => format!(
                "stopped at the checkpoint at event time {at} ({}): the next run resumes from it",
                alertflow_model::time::format_rfc3339(at as i64)
            ),
        }));
    }
    for r in results? {
        if let Err(e) = r {
            return Err(RunError::Internal(format!("a worker failed: {e}")));
        }
    }
    if let Some(e) = failure.get() {
        return Err(RunError::Failed(e));
    }

    // Notifications: what did not go out within the drain time is counted (and named in the
    // log); the next run does not send it again on its own.
    let notify_summary = match &delivery {
        Some(d) => {
            let (summary, left, written) = d.close();
            if !left.is_empty() {
                tracing::warn!("{} notification(s) were not delivered before the run ended (receiver down or slow)", left.len());
            }
            written.map_err(RunError::Failed)?;
            Some(summary)
        }
        None => None,
    };
    let table_names: Vec<String> = table_schemas.iter().map(|(n, _)| n.clone()).collect();
    let mut summary = summarize(&pipeline, workers, start, &source_stats, &table_names, &sink_stats, &dedup_stats, probe);
    summary.checkpoints = checkpoint_summary;
    summary.notifications = notify_summary;
    summary.cluster = cluster.as_ref().map(|c| ClusterSummary { processes: c.processes, process_id: c.process, workers_total: c.peers() });
    if let Some(cpus) = &pin_cpus {
        let own = cluster.as_ref().map_or(0..workers, |c| c.own_workers());
        summary.pinned_to = own.filter_map(|g| crate::affinity::cpu_of(g, 1, cpus)).collect();
    }
    if gather.as_ref().is_some_and(|g| !g.complete()) {
        tracing::warn!("cluster: not every process's final counters arrived; the summary covers part of the cluster");
    }
    summary.state_bounds = operator_stats(&pipeline, &dedup_stats)
        .into_iter()
        .map(|(kind, name, s)| StateBoundsSummary {
            operator: kind.to_string(),
            name,
            expired: s.expired.load(Ordering::Relaxed),
            evicted: s.evicted.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
        })
        .filter(|b| b.expired + b.evicted + b.rejected > 0)
        .collect();
    if let Some(f) = opts.finished {
        f(&summary);
    }
    if let Some(serving) = serving {
        // HTTP sources end only when asked to stop (here, or in a cluster at another process).
        let stopped_intake = ingest.as_ref().is_some_and(|i| i.is_closed());
        if signalled.load(Ordering::Acquire) || opts.stop.as_ref().is_some_and(|s| s.load(Ordering::Acquire)) || stopped_intake {
            // The signal (or stop) that ended the pipeline ends serving too.
            serving.stop();
        } else {
            serving.serve_until_stopped(opts.cancel.as_ref());
        }
    }
    Ok(summary)
}

/// Every stateful operator's counters, as (kind, name, counters), for `/metrics`. Dedup's
/// belong to the run (its summary reads them); the others live in the operators' configs.
fn operator_stats(pipeline: &Pipeline, dedup: &Arc<OperatorStats>) -> Vec<(&'static str, String, Arc<OperatorStats>)> {
    let mut ops = Vec::new();
    for (agg, _) in &pipeline.aggregates {
        ops.push(("aggregate", agg.name().to_string(), agg.stats().clone()));
    }
    for (rule, _) in &pipeline.rules {
        ops.push(("rule", rule.name().to_string(), rule.stats().clone()));
    }
    for (det, _) in &pipeline.detects {
        ops.push(("detect", det.name().to_string(), det.stats().clone()));
    }
    if let Some(chain) = &pipeline.alerts {
        ops.push(("dedup", "dedup".to_string(), dedup.clone()));
        ops.push(("suppress", "suppress".to_string(), chain.suppress.stats().clone()));
        ops.push(("correlate", "correlate".to_string(), chain.correlate.stats().clone()));
    }
    if let Some(n) = &pipeline.notify {
        ops.push(("notify", "notify".to_string(), n.op.stats().clone()));
    }
    ops
}

/// The run's figures, read from the shared counters once every worker has finished.
#[allow(clippy::too_many_arguments)]
fn summarize(
    pipeline: &Pipeline,
    workers: usize,
    start: Instant,
    source_stats: &[Arc<SourceStats>],
    table_names: &[String],
    sink_stats: &[Arc<SinkStats>],
    dedup_stats: &OperatorStats,
    probe: Option<Arc<LatencyProbe>>,
) -> RunSummary {
    let wall = start.elapsed().as_secs_f64();
    let sum = |f: fn(&SourceStats) -> u64| source_stats.iter().map(|s| f(s)).sum::<u64>();
    let records_in = sum(|s| s.records.load(Ordering::Relaxed));
    let tables: Vec<TableSummary> = table_names
        .iter()
        .zip(sink_stats.iter())
        .map(|(name, s)| TableSummary {
            table: name.clone(),
            rows: s.rows.load(Ordering::Relaxed),
            files: s.files.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
        })
        .collect();
    RunSummary {
        workers,
        records_in,
        records_out: tables.iter().filter(|t| t.table != DEAD_LETTERS).map(|t| t.rows).sum(),
        dead_letters: sum(|s| s.dead_letters.load(Ordering::Relaxed)),
        late: sum(|s| s.late.load(Ordering::Relaxed)),
        bytes_in: sum(|s| s.bytes.load(Ordering::Relaxed)),
        wall_seconds: wall,
        records_per_second: if wall > 0.0 { records_in as f64 / wall } else { 0.0 },
        alerts: pipeline.alerts.as_ref().map(|_| AlertSummary {
            notices: dedup_stats.records_in.load(Ordering::Relaxed),
            lifecycle_rows: dedup_stats.records_out.load(Ordering::Relaxed),
            overflow: dedup_stats.dropped.load(Ordering::Relaxed),
        }),
        tables,
        output: pipeline.output_dir.display().to_string(),
        peak_rss_bytes: peak_rss(),
        latency: probe.map(|p| p.report()).unwrap_or_default(),
        checkpoints: None,
        cluster: None,
        pinned_to: Vec::new(),
        state_bounds: Vec::new(),
        notifications: None,
    }
}

/// The process's peak RSS (Linux `VmHWM` in /proc/self/status).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The shared counters a worker's dataflow reports into.
#[derive(Clone, Copy)]
struct Stats<'a> {
    sources: &'a [Arc<SourceStats>],
    /// Per worker: the least event time (ms) its sources may still emit (`u64::MAX` once done).
    watermarks: &'a Arc<Vec<AtomicU64>>,
    /// In the order of the tables: aggregates, anomaly tables, the alert tables, dead letters.
    sinks: &'a [Arc<SinkStats>],
    dedup: &'a Arc<OperatorStats>,
}

/// The replay clock of paced sources, and the latency probe when latency is measured.
#[derive(Clone, Copy)]
struct Replay<'a> {
    origin: &'a Arc<ReplayOrigin>,
    probe: Option<&'a Arc<LatencyProbe>>,
}

impl Replay<'_> {
    /// Records the latency of `table`'s rows as they leave the dataflow (the "memory" sink):
    /// a pass-through in front of the table's consumers. Not a consumer of its own: that would
    /// clone every row for the measurement alone (15,000 rows of one incident merge took
    /// milliseconds more to reach the sinks), a cost no run without `--latency` has.
    fn measure<'s, R: TableRow + 'static>(&self, rows: Stream<'s, Time, Vec<R>>, table: &str) -> Stream<'s, Time, Vec<R>> {
        let Some(probe) = self.probe else { return rows };
        let mut rec = probe.recorder(table, SinkKind::Memory);
        rows.unary::<timely::container::CapacityContainerBuilder<Vec<R>>, _, _, _>(Pipelined, &format!("latency:{table}"), move |_, _| {
            move |input, output| {
                let now = Instant::now();
                input.for_each(|time, data| {
                    rec.record(now, data);
                    output.session(&time).give_container(data);
                });
            }
        })
    }
}

/// The Kafka sources' shared state and the sinks' durable frontier, when there are Kafka
/// sources; the HTTP sources' queues, when there are HTTP sources.
#[derive(Clone, Copy)]
struct KafkaParts<'a> {
    shared: &'a [Arc<KafkaShared>],
    durability: Option<&'a Arc<Durability>>,
    push: Option<&'a PushIngest>,
    /// The process's notification delivery, with `[notify]`.
    delivery: Option<&'a Arc<Delivery>>,
    /// The notify stage's control desk, and the time the run resumes at.
    control: Option<(&'a Arc<ControlDesk>, Time)>,
}

#[allow(clippy::too_many_arguments)]
fn build_dataflow(
    worker: &mut timely::worker::Worker,
    pipeline: &Pipeline,
    stats: Stats<'_>,
    kafka: KafkaParts<'_>,
    replay: Replay<'_>,
    live: Option<&Live>,
    failure: &Failure,
    index: usize,
) {
    // The sinks' inputs, watched: a file source waits while the pipeline is behind it.
    let backlog = Backlog::new();
    let sink = |table: &str| Sink {
        pipeline,
        table: table.to_string(),
        worker: index,
        durability: kafka.durability.cloned(),
        // Dead letters have no event time to measure from.
        latency: replay.probe.filter(|_| table != DEAD_LETTERS).map(|p| p.recorder(table, SinkKind::Parquet)),
    };
    worker.dataflow::<Time, _, _>(|scope| {
        let epoch = pipeline.engine.epoch;
        let mut points = Vec::new();
        let mut alerts = Vec::new();
        let mut dead = Vec::new();
        for (i, src) in pipeline.sources.iter().enumerate() {
            let (st, f) = (stats.sources[i].clone(), failure.clone());
            let d = match src.records {
                Records::Metrics => {
                    let (p, d) = file_source::<Metric>(scope, src.clone(), epoch, st, f, replay.origin.clone(), Some(backlog.clone()));
                    points.push(Some(p));
                    alerts.push(None);
                    d
                }
                Records::Alerts => {
                    let (a, d) = file_source::<Alert>(scope, src.clone(), epoch, st, f, replay.origin.clone(), Some(backlog.clone()));
                    points.push(None);
                    alerts.push(Some(a));
                    d
                }
            };
            dead.push(d);
        }
        // Kafka sources: stream indexes after the file sources'.
        for (j, shared) in kafka.shared.iter().enumerate() {
            let (st, f) = (stats.sources[pipeline.sources.len() + j].clone(), failure.clone());
            let d = match shared.source.records {
                Records::Metrics => {
                    let (p, d) = kafka_source::<Metric>(scope, shared.clone(), epoch, st, f, Some(backlog.clone()));
                    points.push(Some(p));
                    alerts.push(None);
                    d
                }
                Records::Alerts => {
                    let (a, d) = kafka_source::<Alert>(scope, shared.clone(), epoch, st, f, Some(backlog.clone()));
                    points.push(None);
                    alerts.push(Some(a));
                    d
                }
            };
            dead.push(d);
        }
        // HTTP sources: stream indexes after the Kafka sources'.
        for src in &pipeline.push {
            let ingest = kafka.push.expect("HTTP sources have queues");
            let d = match src.records {
                Records::Metrics => {
                    let q = ingest.metrics.clone().expect("the metric HTTP source's queue");
                    let (p, d) = push_source::<Metric>(scope, q, epoch, failure.clone());
                    points.push(Some(p));
                    alerts.push(None);
                    d
                }
                Records::Alerts => {
                    let q = ingest.alerts.clone().expect("the alert HTTP source's queue");
                    let (a, d) = push_source::<Alert>(scope, q, epoch, failure.clone());
                    points.push(None);
                    alerts.push(Some(a));
                    d
                }
            };
            dead.push(d);
        }
        let mut sink_index = 0;
        let mut next_sink = || {
            sink_index += 1;
            stats.sinks[sink_index - 1].clone()
        };
        let mut windows = Vec::new();
        for (agg, input) in &pipeline.aggregates {
            let s = sink(agg.name()).with(WindowTable::with_revisions(agg.group_by(), agg.functions(), agg.revises()));
            let p = points[*input].clone().expect("validated: aggregates read metric sources");
            let rows = replay.measure(p.aggregate(agg), agg.name());
            windows.push(rows.clone());
            to_kafka(
                pipeline,
                kafka,
                agg.name(),
                &rows,
                || WindowTable::with_revisions(agg.group_by(), agg.functions(), agg.revises()),
                failure,
            );
            if let Some(live) = live {
                live.windows(agg.name(), &rows, WindowTable::with_revisions(agg.group_by(), agg.functions(), agg.revises()), failure);
            }
            backlog.watch(rows).sink_parquet(s, next_sink(), failure.clone());
        }
        // Anomaly detection: rows to their table; with `raise_alerts`, alerts into the chain
        // (and the metric source's progress into the topology's frontier). Rules likewise.
        let mut derived_alerts = Vec::new();
        let mut derived_feeds = Vec::new();
        for (rule, a) in &pipeline.rules {
            derived_alerts.push(windows[*a].clone().rule(rule));
            derived_feeds.push(pipeline.aggregates[*a].1);
        }
        for (det, input) in &pipeline.detects {
            let p = points[*input].clone().expect("validated: detect reads metric sources");
            let rows = replay.measure(p.detect(det), det.name());
            if det.raise_alerts() {
                derived_alerts.push(rows.clone().map(|r| r.to_alert()));
                derived_feeds.push(*input);
            }
            to_kafka(pipeline, kafka, det.name(), &rows, AnomaliesTable::default, failure);
            backlog.watch(rows).sink_parquet(sink(det.name()).with(AnomaliesTable::default()), next_sink(), failure.clone());
        }
        if let Some(chain) = &pipeline.alerts {
            let sources = chain.inputs.iter().map(|&i| alerts[i].clone().expect("validated: dedup reads alert sources"));
            let input = scope.concatenate(sources.chain(derived_alerts));
            let events = input.dedup(&chain.dedup, stats.dedup.clone());
            let (events, topology) = match &chain.topology {
                Some(file) => {
                    // The dead-letter streams of the alert sources move with their data's frontier.
                    let frontier = scope.concatenate(chain.inputs.iter().chain(&derived_feeds).map(|&i| dead[i].clone()));
                    let topology = topology_source(scope, file.clone(), frontier);
                    let epoch = pipeline.engine.epoch.millis().max(1) as i64;
                    (events.enrich(chain.correlate.service_label(), topology.clone(), epoch), topology)
                }
                None => (events, empty(scope)),
            };
            let suppressed = events.suppress(&chain.suppress);
            let mut correlated = suppressed.events.correlate(&chain.correlate, suppressed.members, topology);
            correlated.events = replay.measure(correlated.events, ALERTS);
            correlated.incidents = replay.measure(correlated.incidents, INCIDENTS);
            let storms = replay.measure(suppressed.storms, STORMS);
            to_kafka(pipeline, kafka, ALERTS, &correlated.events, AlertsTable::default, failure);
            to_kafka(pipeline, kafka, STORMS, &storms, StormsTable::default, failure);
            to_kafka(pipeline, kafka, INCIDENTS, &correlated.incidents, IncidentsTable::default, failure);
            if let Some(live) = live {
                live.alerts(&correlated.events, &correlated.incidents, &storms, failure);
            }
            if let (Some(n), Some(delivery)) = (&pipeline.notify, kafka.delivery) {
                let (delivery, failure) = (delivery.clone(), failure.clone());
                // A checkpoint is acknowledged once every notification before it is journalled.
                let mut saver = Saver::register("deliver", index);
                let controls = match kafka.control {
                    Some((desk, resumed_at)) => {
                        let frontier = scope.concatenate(chain.inputs.iter().chain(&derived_feeds).map(|&i| dead[i].clone()));
                        control_source(scope, desk.clone(), frontier, resumed_at)
                    }
                    None => empty(scope),
                };
                let notes = correlated.events.clone().notify(storms.clone(), controls, &n.op);
                notes.sink(Pipelined, "deliver", move |(input, frontier)| {
                    let mut batch = Vec::new();
                    input.for_each(|_, data| batch.append(data));
                    if !batch.is_empty()
                        && let Err(e) = delivery.deliver(batch)
                    {
                        failure.set(e);
                    }
                    while saver.save_if_passed(frontier, saver.pending(), || ()) {}
                    saver.finish_if_done(frontier, || ());
                });
            }
            backlog.watch(correlated.events).sink_parquet(sink(ALERTS).with(AlertsTable::default()), next_sink(), failure.clone());
            backlog.watch(storms).sink_parquet(sink(STORMS).with(StormsTable::default()), next_sink(), failure.clone());
            backlog.watch(correlated.incidents).sink_parquet(sink(INCIDENTS).with(IncidentsTable::default()), next_sink(), failure.clone());
        }
        let s = sink(DEAD_LETTERS).with(DeadLetterTable::default());
        let dead = scope.concatenate(dead);
        // The dead letters move with every source's frontier: the worker's watermark.
        let watermarks = stats.watermarks.clone();
        dead.clone().sink(Pipelined, "watermark", move |(input, frontier)| {
            input.for_each(|_, _| {});
            watermarks[index].store(frontier.frontier().iter().copied().min().unwrap_or(u64::MAX), Ordering::Relaxed);
        });
        to_kafka(pipeline, kafka, DEAD_LETTERS, &dead, DeadLetterTable::default, failure);
        backlog.watch(dead).sink_parquet(s, next_sink(), failure.clone());
    });
}

/// Sends `table` to the Kafka sinks that name it (`[[sink]] type = "kafka"`).
fn to_kafka<R: TableRow, B: TableBuilder<R>>(
    pipeline: &Pipeline,
    kafka: KafkaParts<'_>,
    table: &str,
    rows: &Stream<'_, Time, Vec<R>>,
    builder: impl Fn() -> B,
    failure: &Failure,
) {
    for s in pipeline.kafka_sinks.iter().filter(|s| s.table == table) {
        let span = pipeline.output.file_span.millis();
        rows.clone().sink_kafka(s.clone(), builder(), span, kafka.durability.cloned(), failure.clone());
    }
}

/// The parts of a Parquet sink every table shares.
struct Sink<'a> {
    pipeline: &'a Pipeline,
    table: String,
    worker: usize,
    durability: Option<Arc<Durability>>,
    latency: Option<alertflow_connectors::latency::Recorder>,
}

impl Sink<'_> {
    fn with<B>(self, builder: B) -> ParquetSink<B> {
        let o = &self.pipeline.output;
        ParquetSink {
            dir: self.pipeline.output_dir.join(&self.table),
            table: self.table,
            builder,
            compression: o.compression,
            span: o.file_span.millis(),
            worker: self.worker,
            fsync: o.fsync,
            writers: o.writers,
            durability: self.durability,
            latency: self.latency,
        }
    }
}
