//! The pipeline file (TOML) and its validation. Every problem is reported with the path of the
//! field it is in (`source[0].max_out_of_orderness: …`), all of them at once, before anything
//! starts.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use alertflow_connectors::file::{FileSource, FileSourceConfig, Records};
use alertflow_connectors::kafka::{KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig};
use alertflow_connectors::parquet::{Compression, WriterPriority};
use alertflow_connectors::push::{PushSource, PushSourceConfig};
use alertflow_connectors::topology::TopologyFile;
use alertflow_model::tables::{ALERTS, DEAD_LETTERS, INCIDENTS, NOTIFICATIONS, STORMS};
use alertflow_model::time::DurationMs;
use alertflow_notify::{NotifyConfig, NotifyPlan, Receiver, ReceiverConfig};
use alertflow_operators::Notify;
use alertflow_operators::dedup::{Dedup, DedupConfig};
use alertflow_operators::suppress::{Suppress, SuppressConfig};
use alertflow_operators::{Aggregate, AggregateConfig, ConfigError, Correlate, CorrelateConfig, Detect, DetectConfig, Rule, RuleConfig};
use serde::{Deserialize, Serialize};

use crate::serve_config::{ServePlan, ServeSection, live_table_names};

/// The `[engine]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Worker threads; by default one per core. `--workers` overrides it.
    #[serde(default)]
    pub workers: Option<usize>,
    /// The granularity of timely time: event time is rounded down to it. Larger epochs mean
    /// fewer progress messages; windows still use exact event times.
    #[serde(default = "default_epoch")]
    pub epoch: DurationMs,
    /// What happens to a metric point older than its partition's watermark: `drop` (a dead
    /// letter with reason `late`) or `update` (within `allowed_lateness` it is kept, and the
    /// windows it falls in are emitted again with `revision` + 1).
    #[serde(default)]
    pub late: LatePolicy,
    /// Under `late = "update"`: how far behind its partition's watermark a point may be and
    /// still revise its windows (older ones are dead letters). Default 1m.
    #[serde(default)]
    pub allowed_lateness: Option<DurationMs>,
    /// Checkpoints (DESIGN §9): the folder they are written to, relative to the pipeline file.
    /// Unset: no checkpoints, and a run starts afresh every time.
    #[serde(default)]
    pub state_dir: Option<String>,
    /// Event time between checkpoints (a multiple of `epoch`). Default 10s.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: DurationMs,
    /// Wall time at least between two checkpoints, so a fast replay does not checkpoint
    /// hundreds of times a second. Default 1s.
    #[serde(default = "default_checkpoint_min_wall")]
    pub checkpoint_min_wall_interval: DurationMs,
    /// Cluster mode (DESIGN §9): how many processes run this pipeline together (default 1).
    /// `--processes` overrides it.
    #[serde(default)]
    pub processes: Option<usize>,
    /// This process's index in the cluster, `0..processes` (`--process-id`).
    #[serde(default)]
    pub process_id: Option<usize>,
    /// The cluster's addresses, one `host:port` per line, line `i` for process `i`, relative
    /// to the pipeline file (`--hostfile`, relative to the working folder).
    #[serde(default)]
    pub hostfile: Option<String>,
    /// How long a process waits for its peers at start-up before it gives up. Default 60s.
    #[serde(default = "default_peer_timeout")]
    pub peer_timeout: DurationMs,
    /// Pin each worker thread to a CPU of its own: the process's allowed CPUs in order, by
    /// global worker index (so a one-host cluster's processes take different ones). Cuts the
    /// wake-up delays of workers the scheduler stacks on one core; off by default because
    /// two runs sharing a host would pin to the same CPUs (give each its own set with
    /// `taskset`). Ignored, with a warning, when a process has more workers than CPUs.
    /// `--pin-workers` turns it on.
    #[serde(default)]
    pub pin_workers: bool,
}

fn default_peer_timeout() -> DurationMs {
    DurationMs::from_secs(60)
}

fn default_checkpoint_interval() -> DurationMs {
    DurationMs::from_secs(10)
}

fn default_checkpoint_min_wall() -> DurationMs {
    DurationMs::from_secs(1)
}

/// The late policy of a pipeline (DESIGN §2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatePolicy {
    /// Late points are dead letters (reason `late`).
    #[default]
    Drop,
    /// Late points within `allowed_lateness` revise their windows.
    Update,
}

impl EngineConfig {
    /// `allowed_lateness` in ms under `late = "update"`, `None` under `drop`.
    pub fn kept_lateness(&self) -> Option<DurationMs> {
        match self.late {
            LatePolicy::Drop => None,
            LatePolicy::Update => Some(self.allowed_lateness.unwrap_or(DurationMs::from_secs(60))),
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: None,
            epoch: default_epoch(),
            late: LatePolicy::Drop,
            allowed_lateness: None,
            state_dir: None,
            checkpoint_interval: default_checkpoint_interval(),
            checkpoint_min_wall_interval: default_checkpoint_min_wall(),
            processes: None,
            process_id: None,
            hostfile: None,
            peer_timeout: default_peer_timeout(),
            pin_workers: false,
        }
    }
}

fn default_epoch() -> DurationMs {
    DurationMs::from_secs(1)
}

/// The `[output]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// The folder tables are written under (`<path>/<table>/…`), relative to the pipeline file.
    pub path: String,
    /// Parquet codec: `zstd` (default), `lz4`, `snappy` or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// How much event time one file covers (per worker and partition).
    #[serde(default = "default_file_span")]
    pub file_span: DurationMs,
    /// Whether each file is fsynced before it is renamed into place.
    #[serde(default = "default_true")]
    pub fsync: bool,
    /// The priority of the threads that encode and write files: `low` (default: nice +10) or
    /// `idle` (`SCHED_IDLE`: only CPU nothing else wants; for a host the pipeline has to itself).
    #[serde(default)]
    pub writers: WriterPriority,
}

fn default_file_span() -> DurationMs {
    DurationMs(3_600_000)
}

fn default_true() -> bool {
    true
}

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: `source[0].path`, or empty for the whole file.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.field, self.message) }
    }
}

/// A pipeline file that cannot run; it lists every problem found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors {
    /// The problems, in file order.
    pub problems: Vec<ConfigProblem>,
}

/// The alert chain: alert sources → dedup → suppress → correlate, writing the `alerts`,
/// `storms` and `incidents` tables. It runs whenever the pipeline has an alert source or a
/// `[[detect]]` with `raise_alerts = true`; the `[dedup]`, `[suppress]` and `[correlate]`
/// sections only change the defaults.
#[derive(Debug)]
pub struct AlertChain {
    /// Indexes of the alert sources feeding it (anomaly alerts of `[[detect]]` sections with
    /// `raise_alerts` join them).
    pub inputs: Vec<usize>,
    /// Lifecycle.
    pub dedup: Dedup,
    /// Storms.
    pub suppress: Suppress,
    /// Incidents.
    pub correlate: Correlate,
    /// The topology file, read and checked at planning.
    pub topology: Option<Arc<TopologyFile>>,
}

/// The notification stage: the operator and the receivers it delivers to.
#[derive(Clone, Debug)]
pub struct NotifyStage {
    /// The notify operator (routes, inhibition, silences).
    pub op: Notify,
    /// The receivers, validated.
    pub receivers: Vec<ReceiverConfig>,
}

/// A validated pipeline, its sources planned: ready to run.
#[derive(Debug)]
pub struct Pipeline {
    /// The folder relative paths are taken from.
    pub base_dir: PathBuf,
    /// `[engine]`.
    pub engine: EngineConfig,
    /// File sources, in file order.
    pub sources: Vec<Arc<FileSource>>,
    /// Kafka sources, in file order. Their stream indexes (in `aggregates`, the alert chain's
    /// `inputs`) follow the file sources': `sources.len() + i`.
    pub kafka: Vec<Arc<KafkaSource>>,
    /// HTTP push sources (`type = "http"`), at most one for alerts and one for samples, on the
    /// `[serve]` HTTP port. Their stream indexes follow the Kafka sources'.
    pub push: Vec<Arc<PushSource>>,
    /// `[[sink]]` sections of `type = "kafka"`: tables also sent to Kafka (besides Parquet).
    pub kafka_sinks: Vec<Arc<KafkaSink>>,
    /// Aggregates with the index of their input source.
    pub aggregates: Vec<(Aggregate, usize)>,
    /// Anomaly detections with the index of their input source.
    pub detects: Vec<(Detect, usize)>,
    /// Rules with the index of their aggregate (in `aggregates`).
    pub rules: Vec<(Rule, usize)>,
    /// The alert chain, when there are alert sources (or anomaly or rule alerts).
    pub alerts: Option<AlertChain>,
    /// Notifications (`[notify]` and `[[receiver]]`), on the alert chain's rows.
    pub notify: Option<NotifyStage>,
    /// `[output]`.
    pub output: OutputConfig,
    /// The output folder, resolved.
    pub output_dir: PathBuf,
    /// `[serve]`: the running engine answers SQL.
    pub serve: Option<ServePlan>,
    /// `[engine] state_dir`, resolved: the run checkpoints there.
    pub state_dir: Option<PathBuf>,
    /// A digest of every section that shapes the pipeline's state (all but `[serve]` and the
    /// engine's worker count and checkpoint settings): a checkpoint of another pipeline is not
    /// resumed.
    pub digest: String,
}

impl Pipeline {
    /// Reads and validates a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| one("", format!("cannot read {}: {e}", path.display())))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        Pipeline::parse(&text, &base)
    }

    /// Validates pipeline text whose relative paths are relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Pipeline, ConfigErrors> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| one("", format!("not valid TOML: {}", e.to_string().trim())))?;
        let mut p = Vec::new();
        let mut engine = EngineConfig::default();
        let mut source_cfgs: Vec<(usize, FileSourceConfig)> = Vec::new();
        let mut kafka_cfgs: Vec<(usize, KafkaSourceConfig)> = Vec::new();
        let mut push_cfgs: Vec<(usize, PushSourceConfig)> = Vec::new();
        let mut sink_cfgs: Vec<(usize, KafkaSinkConfig)> = Vec::new();
        let mut aggregate_cfgs: Vec<(usize, AggregateConfig)> = Vec::new();
        let mut detect_cfgs: Vec<(usize, DetectConfig)> = Vec::new();
        let mut rule_cfgs: Vec<(usize, RuleConfig)> = Vec::new();
        let mut output: Option<OutputConfig> = None;
        let mut dedup_cfg: Option<DedupConfig> = None;
        let mut suppress_cfg: Option<SuppressConfig> = None;
        let mut correlate_cfg: Option<CorrelateConfig> = None;
        let mut serve_cfg: Option<ServeSection> = None;
        let mut notify_cfg: Option<NotifyConfig> = None;
        let mut receiver_cfgs: Vec<(usize, ReceiverConfig)> = Vec::new();
        // Source names as written, even of sources that fail to parse (for better messages).
        let mut declared: Vec<String> = Vec::new();

        for (key, value) in &table {
            match key.as_str() {
                "engine" => {
                    if let Some(e) = section::<EngineConfig>("engine", value, &mut p) {
                        if e.late == LatePolicy::Drop && e.allowed_lateness.is_some() {
                            p.push(problem("engine.allowed_lateness", "applies only with `late = \"update\"` (late points are dropped)"));
                        }
                        engine = e;
                    }
                }
                "output" => output = section::<OutputConfig>("output", value, &mut p),
                "source" => {
                    for (i, v) in array("source", value, &mut p).iter().enumerate() {
                        let at = format!("source[{i}]");
                        let Some(t) = v.as_table() else {
                            p.push(problem(&at, "must be a table: write it as [[source]]"));
                            continue;
                        };
                        let mut t = t.clone();
                        if let Some(toml::Value::String(n)) = t.get("name") {
                            declared.push(n.clone());
                        }
                        match t.remove("type") {
                            None => p.push(problem(&format!("{at}.type"), "missing: set type = \"file\", \"kafka\" or \"http\"")),
                            Some(toml::Value::String(s)) if s == "file" => {
                                if let Some(c) = section::<FileSourceConfig>(&at, &toml::Value::Table(t), &mut p) {
                                    source_cfgs.push((i, c));
                                }
                            }
                            Some(toml::Value::String(s)) if s == "kafka" => {
                                if let Some(c) = section::<KafkaSourceConfig>(&at, &toml::Value::Table(t), &mut p) {
                                    kafka_cfgs.push((i, c));
                                }
                            }
                            Some(toml::Value::String(s)) if s == "http" => {
                                if let Some(c) = section::<PushSourceConfig>(&at, &toml::Value::Table(t), &mut p) {
                                    push_cfgs.push((i, c));
                                }
                            }
                            Some(other) => p.push(problem(
                                &format!("{at}.type"),
                                format!("unknown source type {other}; supported: \"file\", \"kafka\", \"http\""),
                            )),
                        }
                    }
                }
                "sink" => {
                    for (i, v) in array("sink", value, &mut p).iter().enumerate() {
                        let at = format!("sink[{i}]");
                        let mut t = v.as_table().cloned().unwrap_or_default();
                        match t.remove("type") {
                            Some(toml::Value::String(s)) if s == "kafka" => {
                                if let Some(c) = section::<KafkaSinkConfig>(&at, &toml::Value::Table(t), &mut p) {
                                    sink_cfgs.push((i, c));
                                }
                            }
                            None => p.push(problem(&format!("{at}.type"), "missing: set type = \"kafka\"")),
                            Some(other) => {
                                p.push(problem(&format!("{at}.type"), format!("unknown sink type {other}; supported: \"kafka\"")))
                            }
                        }
                    }
                }
                "aggregate" => {
                    for (i, v) in array("aggregate", value, &mut p).iter().enumerate() {
                        if let Some(c) = section::<AggregateConfig>(&format!("aggregate[{i}]"), v, &mut p) {
                            aggregate_cfgs.push((i, c));
                        }
                    }
                }
                "detect" => {
                    for (i, v) in array("detect", value, &mut p).iter().enumerate() {
                        if let Some(c) = section::<DetectConfig>(&format!("detect[{i}]"), v, &mut p) {
                            detect_cfgs.push((i, c));
                        }
                    }
                }
                "rule" => {
                    for (i, v) in array("rule", value, &mut p).iter().enumerate() {
                        if let Some(c) = section::<RuleConfig>(&format!("rule[{i}]"), v, &mut p) {
                            rule_cfgs.push((i, c));
                        }
                    }
                }
                "dedup" => dedup_cfg = section::<DedupConfig>("dedup", value, &mut p),
                "suppress" => suppress_cfg = section::<SuppressConfig>("suppress", value, &mut p),
                "correlate" => correlate_cfg = section::<CorrelateConfig>("correlate", value, &mut p),
                "serve" => serve_cfg = section::<ServeSection>("serve", value, &mut p),
                "notify" => notify_cfg = section::<NotifyConfig>("notify", value, &mut p),
                "receiver" => {
                    for (i, v) in array("receiver", value, &mut p).iter().enumerate() {
                        if let Some(c) = section::<ReceiverConfig>(&format!("receiver[{i}]"), v, &mut p) {
                            receiver_cfgs.push((i, c));
                        }
                    }
                }
                other => p.push(problem(
                    other,
                    "unknown section; expected one of engine, source, aggregate, detect, rule, dedup, suppress, correlate, \
                     notify, receiver, sink, output, serve",
                )),
            }
        }

        if engine.epoch.millis() == 0 {
            p.push(problem("engine.epoch", "must be greater than 0"));
        }
        if engine.workers == Some(0) {
            p.push(problem("engine.workers", "must be at least 1"));
        }
        if engine.processes == Some(0) {
            p.push(problem("engine.processes", "must be at least 1"));
        }
        if source_cfgs.is_empty() && kafka_cfgs.is_empty() && push_cfgs.is_empty() && !table.contains_key("source") {
            p.push(problem("source", "no [[source]]: a pipeline needs at least one"));
        }
        let output = match output {
            Some(o) => Some(o),
            None if !table.contains_key("output") => {
                p.push(problem("output", "missing: add [output] with path = \"out\""));
                None
            }
            None => None,
        };
        if let Some(o) = &output {
            if o.path.trim().is_empty() {
                p.push(problem("output.path", "must not be empty"));
            }
            if o.file_span.millis() == 0 {
                p.push(problem("output.file_span", "must be greater than 0"));
            }
        }

        // Sources: names, then planning (the files must exist).
        let mut names = HashSet::new();
        let mut sources = Vec::new();
        let mut source_index = std::collections::HashMap::new();
        let mut next_part = 0u32;
        for (i, c) in &source_cfgs {
            let at = format!("source[{i}]");
            check_source_name(&at, &c.name, &mut names, &mut p);
            match FileSource::plan(c, base, next_part) {
                Ok(mut s) => {
                    // Only metric points can be revised: late alerts stay dead letters.
                    if c.records == Records::Metrics {
                        s.allowed_lateness = engine.kept_lateness().map(|d| d.millis() as i64);
                    }
                    next_part += s.partitions.len() as u32;
                    source_index.insert(c.name.clone(), (sources.len(), c.records));
                    sources.push(Arc::new(s));
                }
                Err(e) => {
                    let msg = e.to_string();
                    let (field, rest) = msg.split_once(": ").unwrap_or(("", &msg));
                    p.push(problem(&format!("{at}.{field}"), rest.to_string()));
                }
            }
        }

        // Kafka sources: their stream indexes follow the file sources'.
        let mut kafka = Vec::new();
        for (i, c) in &kafka_cfgs {
            let at = format!("source[{i}]");
            check_source_name(&at, &c.name, &mut names, &mut p);
            match KafkaSource::plan(c, next_part) {
                Ok(mut s) => {
                    if c.records == Records::Metrics {
                        s.allowed_lateness = engine.kept_lateness().map(|d| d.millis() as i64);
                    }
                    next_part = next_part.saturating_add(s.part_ids());
                    source_index.insert(c.name.clone(), (sources.len() + kafka.len(), c.records));
                    kafka.push(Arc::new(s));
                }
                Err(es) => p.extend(es.into_iter().map(|(field, msg)| problem(&format!("{at}.{field}"), msg))),
            }
        }

        // HTTP push sources: their stream indexes follow the Kafka sources'.
        let mut push = Vec::new();
        for (i, c) in &push_cfgs {
            let at = format!("source[{i}]");
            check_source_name(&at, &c.name, &mut names, &mut p);
            if let Some((j, _)) = push_cfgs.iter().find(|(j, o)| j < i && o.records == c.records) {
                let route = if c.records == Records::Alerts { "POST /api/v2/alerts" } else { "POST /api/v1/write" };
                p.push(problem(
                    &format!("{at}.records"),
                    format!("source[{j}] already receives {route}: one HTTP source per kind of record"),
                ));
            }
            let serve_http = table.get("serve").and_then(|s| s.as_table()).and_then(|s| s.get("http")).and_then(|h| h.as_str());
            match (&c.listen, serve_http) {
                (None, None) => p.push(problem(
                    &at,
                    "an HTTP source receives on the [serve] HTTP port, or on its own `listen` address: \
                     add [serve] with http = \"127.0.0.1:9094\", or listen = \"127.0.0.1:9093\" (say)",
                )),
                (Some(l), Some(h)) if l.trim() == h.trim() && !l.trim().ends_with(":0") => p.push(problem(
                    &format!("{at}.listen"),
                    format!("the same address as serve.http ({h}): leave `listen` out to receive on the [serve] HTTP port"),
                )),
                _ => {}
            }
            match PushSource::plan(c, next_part) {
                Ok(mut s) => {
                    if c.records == Records::Metrics {
                        s.allowed_lateness = engine.kept_lateness().map(|d| d.millis() as i64);
                    }
                    next_part = next_part.saturating_add(1);
                    source_index.insert(c.name.clone(), (sources.len() + kafka.len() + push.len(), c.records));
                    push.push(Arc::new(s));
                }
                Err(es) => p.extend(es.into_iter().map(|(field, msg)| problem(&format!("{at}.{field}"), msg))),
            }
        }

        let mut tables = HashSet::new();
        let mut aggregates = Vec::new();
        for (i, c) in &aggregate_cfgs {
            let at = format!("aggregate[{i}]");
            check_table_name(&at, &c.name, &mut tables, &mut p);
            let input = metric_input(&at, "aggregates read", &c.input, &source_index, &declared, &mut p);
            match Aggregate::with_config(c, engine.epoch) {
                Ok(op) => {
                    let op = match engine.kept_lateness() {
                        None => Ok(op),
                        Some(l) => op.with_late_updates(l),
                    };
                    match (op, input) {
                        (Ok(op), Some(idx)) => aggregates.push((op, idx)),
                        (Ok(_), None) => {}
                        (Err(e), _) => p.push(problem(&format!("{at}.{}", e.field), e.message)),
                    }
                }
                Err(errs) => {
                    for e in errs {
                        p.push(problem(&format!("{at}.{}", e.field), e.message));
                    }
                }
            }
        }

        let detects = detect_sections(&detect_cfgs, &engine, &source_index, &declared, &mut tables, &mut p);
        let names: Vec<&str> = aggregate_cfgs.iter().map(|(_, c)| c.name.as_str()).collect();
        let rules = rule_sections(&rule_cfgs, &engine, &aggregates, &names, &mut p);
        let derived_alerts = detects.iter().any(|(d, _)| d.raise_alerts()) || !rules.is_empty();

        let alerts = alert_chain(
            base,
            &engine,
            &table,
            &source_index,
            &declared,
            (dedup_cfg, suppress_cfg, correlate_cfg),
            source_cfgs.len() + kafka_cfgs.len() + push_cfgs.len() == table.get("source").and_then(|v| v.as_array()).map_or(0, |a| a.len()),
            derived_alerts,
            &mut p,
        );

        let notify = notify_stage(notify_cfg.as_ref(), &receiver_cfgs, alerts.as_ref(), &engine, &mut p);

        let mut kafka_sinks = Vec::new();
        let mut all_tables: Vec<String> = aggregate_cfgs.iter().map(|(_, c)| c.name.clone()).collect();
        all_tables.extend(detects.iter().map(|(d, _)| d.name().to_string()));
        if alerts.is_some() {
            all_tables.extend([ALERTS, STORMS, INCIDENTS].map(String::from));
        }
        all_tables.push(DEAD_LETTERS.to_string());
        for (i, c) in &sink_cfgs {
            let at = format!("sink[{i}]");
            if !all_tables.contains(&c.table) {
                p.push(problem(&format!("{at}.table"), format!("no table `{}` (tables: {})", c.table, all_tables.join(", "))));
            }
            match KafkaSink::plan(c) {
                Ok(s) => kafka_sinks.push(Arc::new(s)),
                Err(es) => p.extend(es.into_iter().map(|(field, msg)| problem(&format!("{at}.{field}"), msg))),
            }
        }

        if engine.state_dir.is_some() {
            checkpoint_problems(&engine, &mut p);
        }

        let serve = serve_cfg.and_then(|c| c.plan(&mut p));
        if serve.is_some() {
            // A live table must not take the name of a Parquet table: one catalog holds both.
            let aggs: Vec<&str> = aggregate_cfgs.iter().map(|(_, c)| c.name.as_str()).collect();
            for live in live_table_names(&aggs, alerts.is_some()) {
                if all_tables.contains(&live) {
                    p.push(problem(
                        "serve",
                        format!("table `{live}` would be both a written table and a live table: rename the section that writes it"),
                    ));
                }
            }
        }

        if !p.is_empty() {
            return Err(ConfigErrors { problems: p });
        }
        let output = output.expect("checked above");
        let output_dir = base.join(&output.path);
        let state_dir = engine.state_dir.as_ref().map(|d| base.join(d));
        let digest = digest(&table);
        Ok(Pipeline {
            base_dir: base.to_path_buf(),
            engine,
            sources,
            kafka,
            push,
            kafka_sinks,
            aggregates,
            detects,
            rules,
            alerts,
            notify,
            output,
            output_dir,
            serve,
            state_dir,
            digest,
        })
    }

    /// The event-time span an output row of stream `input` depends on (the largest window,
    /// with its allowed lateness, reading it), or `None` when the stream feeds state without a
    /// time bound (the alert chain, anomaly detectors, rules, session windows): what a Kafka
    /// source may commit (see `alertflow_connectors::kafka`).
    pub fn horizon(&self, input: usize) -> Option<i64> {
        let ruled = self.rules.iter().any(|(_, a)| self.aggregates[*a].1 == input);
        if self.alerts.as_ref().is_some_and(|c| c.inputs.contains(&input)) || self.detects.iter().any(|(_, i)| *i == input) || ruled {
            return None;
        }
        self.aggregates.iter().filter(|(_, i)| *i == input).try_fold(0, |h, (a, _)| Some(h.max(a.horizon()?)))
    }

    /// Whether a run continues from an earlier one (a Kafka source starts from committed
    /// offsets): the output folder's data files are then kept, not replaced.
    pub fn resumes(&self) -> bool {
        self.kafka.iter().any(|k| k.start == alertflow_connectors::kafka::Start::Committed)
    }

    /// The names of the tables this pipeline writes.
    pub fn table_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.aggregates.iter().map(|(a, _)| a.name().to_string()).collect();
        v.extend(self.detects.iter().map(|(d, _)| d.name().to_string()));
        if self.alerts.is_some() {
            v.extend([ALERTS, STORMS, INCIDENTS].map(String::from));
        }
        if self.notify.is_some() {
            v.push(NOTIFICATIONS.to_string());
        }
        v.push(DEAD_LETTERS.to_string());
        v
    }
}

type AlertSections = (Option<DedupConfig>, Option<SuppressConfig>, Option<CorrelateConfig>);

/// A source's name must be an identifier and unique among the sources.
fn check_source_name(at: &str, name: &str, names: &mut HashSet<String>, p: &mut Vec<ConfigProblem>) {
    if !is_identifier(name) {
        p.push(problem(&format!("{at}.name"), format!("`{name}` is not a valid name: use letters, digits, `_` and `-`")));
    } else if !names.insert(name.to_string()) {
        p.push(problem(&format!("{at}.name"), format!("another source is already named `{name}`")));
    }
}

/// Validates the alert chain's sections (with defaults for the missing ones) and reads the
/// topology file. `sources_ok` says whether every source parsed (otherwise a missing alert
/// source may just be a broken one, already reported); `derived_alerts` whether a `[[detect]]`
/// or a `[[rule]]` feeds the chain (then it runs without an alert source too).
/// `[notify]` and `[[receiver]]`: receivers validated one by one (names unique), then the
/// routes against their names. Notifications need the alert chain.
fn notify_stage(
    cfg: Option<&NotifyConfig>,
    receivers: &[(usize, ReceiverConfig)],
    alerts: Option<&AlertChain>,
    engine: &EngineConfig,
    p: &mut Vec<ConfigProblem>,
) -> Option<NotifyStage> {
    let mut names: Vec<&str> = Vec::new();
    let mut ok = true;
    for (i, r) in receivers {
        if let Err(errs) = Receiver::new(r.clone()) {
            ok = false;
            for (field, msg) in errs {
                p.push(problem(&format!("receiver[{i}].{field}"), msg));
            }
        }
        if names.contains(&r.name.as_str()) {
            ok = false;
            p.push(problem(&format!("receiver[{i}].name"), format!("`{}` is declared twice", r.name)));
        }
        names.push(&r.name);
    }
    let Some(cfg) = cfg else {
        if !receivers.is_empty() {
            p.push(problem("receiver", "no [notify] section routes alerts to these receivers: add [notify.route]"));
        }
        return None;
    };
    let Some(chain) = alerts else {
        p.push(problem(
            "notify",
            "notifications are about alerts: add an alert source (records = \"alerts\"), a [[rule]], or a [[detect]] with raise_alerts",
        ));
        return None;
    };
    match NotifyPlan::new(cfg, &names, chain.suppress.group_by()) {
        Ok(plan) if ok => {
            Some(NotifyStage { op: Notify::new(plan, engine.epoch), receivers: receivers.iter().map(|(_, r)| r.clone()).collect() })
        }
        Ok(_) => None,
        Err(errs) => {
            for (field, msg) in errs {
                p.push(problem(&format!("notify.{field}"), msg));
            }
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn alert_chain(
    base: &Path,
    engine: &EngineConfig,
    table: &toml::Table,
    source_index: &std::collections::HashMap<String, (usize, Records)>,
    declared: &[String],
    (dedup, suppress, correlate): AlertSections,
    sources_ok: bool,
    derived_alerts: bool,
    p: &mut Vec<ConfigProblem>,
) -> Option<AlertChain> {
    let mut alert_sources: Vec<(usize, &String)> =
        source_index.iter().filter(|(_, (_, r))| *r == Records::Alerts).map(|(n, (i, _))| (*i, n)).collect();
    alert_sources.sort();
    let sections: Vec<&str> = ["dedup", "suppress", "correlate"].into_iter().filter(|s| table.contains_key(*s)).collect();
    if alert_sources.is_empty() && !derived_alerts {
        if sources_ok && let Some(s) = sections.first() {
            p.push(problem(s, "no alert source: add a [[source]] with records = \"alerts\" for the alert chain to read"));
        }
        return None;
    }
    let (dedup, suppress, correlate) = (dedup.unwrap_or_default(), suppress.unwrap_or_default(), correlate.unwrap_or_default());
    let d = op_problems("dedup", Dedup::with_config(&dedup, engine.epoch), p);
    let s = op_problems("suppress", Suppress::with_config(&suppress, engine.epoch), p);
    let c = op_problems("correlate", Correlate::with_config(&correlate, engine.epoch), p);
    let inputs = match &dedup.input {
        None => alert_sources.iter().map(|(i, _)| *i).collect(),
        Some(name) => match source_index.get(name) {
            Some(&(i, Records::Alerts)) => vec![i],
            Some(_) => {
                p.push(problem("dedup.input", format!("`{name}` is a metric source; dedup reads alert sources (records = \"alerts\")")));
                vec![]
            }
            None => {
                if !declared.contains(name) {
                    p.push(problem("dedup.input", format!("no source named `{name}` (sources: {})", declared.join(", "))));
                }
                vec![]
            }
        },
    };
    let topology = match &correlate.topology {
        None => None,
        Some(t) => match TopologyFile::load(base.join(t), t.clone()) {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => {
                p.push(problem("correlate.topology", e));
                None
            }
        },
    };
    Some(AlertChain { inputs, dedup: d?, suppress: s?, correlate: c?, topology })
}

/// An operator, or its config errors as problems under `at`.
fn op_problems<T>(at: &str, r: Result<T, Vec<ConfigError>>, p: &mut Vec<ConfigProblem>) -> Option<T> {
    r.map_err(|es| {
        for e in es {
            p.push(problem(&format!("{at}.{}", e.field), e.message));
        }
    })
    .ok()
}

fn one(field: &str, message: String) -> ConfigErrors {
    ConfigErrors { problems: vec![problem(field, message)] }
}

fn problem(field: &str, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem { field: field.to_string(), message: message.into() }
}

/// Deserializes one section, reporting errors with their path under `at`.
fn section<T: serde::de::DeserializeOwned>(at: &str, value: &toml::Value, p: &mut Vec<ConfigProblem>) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let msg = e.into_inner().to_string();
            // The TOML deserializer appends "in `key`" lines: the path already says where.
            let msg = msg.lines().next().unwrap_or_default().trim().to_string();
            // "unknown field `x`, expected one of …": the path already ends at `x`.
            let msg = match msg.strip_prefix("unknown field `").and_then(|r| r.split_once('`')) {
                Some((_, rest)) => format!("unknown key; {}", rest.trim_start_matches(',').trim()),
                None => msg,
            };
            p.push(problem(&join(at, &inner), msg));
            None
        }
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty() || b == ".") {
        (_, true) => a.to_string(),
        (true, false) => b.to_string(),
        (false, false) if b.starts_with('[') => format!("{a}{b}"),
        _ => format!("{a}.{b}"),
    }
}

fn array<'a>(at: &str, value: &'a toml::Value, p: &mut Vec<ConfigProblem>) -> &'a [toml::Value] {
    match value.as_array() {
        Some(a) => a,
        None => {
            p.push(problem(at, format!("must be a list of tables: write each as [[{at}]]")));
            &[]
        }
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

fn is_table_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(b'a'..=b'z')) && s.len() <= 128 && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// Checks a table's name: valid, not a built-in table's, not taken (`tables` gains it).
fn check_table_name(at: &str, name: &str, tables: &mut HashSet<String>, p: &mut Vec<ConfigProblem>) {
    if !is_table_name(name) {
        p.push(problem(
            &format!("{at}.name"),
            format!("`{name}` is not a valid table name: use lower-case letters, digits and `_`, starting with a letter"),
        ));
    } else if [DEAD_LETTERS, ALERTS, STORMS, INCIDENTS].contains(&name) {
        p.push(problem(&format!("{at}.name"), format!("`{name}` is the name of a built-in table; choose another")));
    } else if !tables.insert(name.to_string()) {
        p.push(problem(&format!("{at}.name"), format!("another table is already named `{name}`")));
    }
}

/// The stream index of metric source `input` read by section `at`, or a problem: an alert
/// source (`who` names the reader, e.g. "aggregates read"), or no such source (unless it was
/// declared and is broken, which is reported already).
fn metric_input(
    at: &str,
    who: &str,
    input: &str,
    source_index: &std::collections::HashMap<String, (usize, Records)>,
    declared: &[String],
    p: &mut Vec<ConfigProblem>,
) -> Option<usize> {
    match source_index.get(input) {
        Some(&(idx, Records::Metrics)) => Some(idx),
        Some(&(_, Records::Alerts)) => {
            p.push(problem(&format!("{at}.input"), format!("`{input}` is an alert source; {who} metric sources")));
            None
        }
        None => {
            if !declared.iter().any(|d| d == input) {
                p.push(problem(&format!("{at}.input"), format!("no source named `{input}` (sources: {})", declared.join(", "))));
            }
            None
        }
    }
}

/// Validates the `[[detect]]` sections: table names (shared with the aggregates' `tables`),
/// metric-source inputs, and each detector's config.
fn detect_sections(
    cfgs: &[(usize, DetectConfig)],
    engine: &EngineConfig,
    source_index: &std::collections::HashMap<String, (usize, Records)>,
    declared: &[String],
    tables: &mut HashSet<String>,
    p: &mut Vec<ConfigProblem>,
) -> Vec<(Detect, usize)> {
    let mut detects = Vec::new();
    for (i, c) in cfgs {
        let at = format!("detect[{i}]");
        check_table_name(&at, &c.name, tables, p);
        let input = metric_input(&at, "detect reads", &c.input, source_index, declared, p);
        if let (Some(op), Some(idx)) = (op_problems(&at, Detect::with_config(c, engine.epoch), p), input) {
            detects.push((op, idx));
        }
    }
    detects
}

/// Validates the `[[rule]]` sections: each reads a valid aggregate (`names`: every declared
/// aggregate, so one that failed its own checks is not reported twice).
fn rule_sections(
    cfgs: &[(usize, RuleConfig)],
    engine: &EngineConfig,
    aggregates: &[(Aggregate, usize)],
    names: &[&str],
    p: &mut Vec<ConfigProblem>,
) -> Vec<(Rule, usize)> {
    let mut rules = Vec::new();
    for (i, c) in cfgs {
        let at = format!("rule[{i}]");
        let Some(idx) = aggregates.iter().position(|(a, _)| a.name() == c.input) else {
            if !names.contains(&c.input.as_str()) {
                let list = if names.is_empty() { "none; add an [[aggregate]]".to_string() } else { names.join(", ") };
                p.push(problem(&format!("{at}.input"), format!("no aggregate named `{}` (aggregates: {list})", c.input)));
            }
            continue;
        };
        if let Some(op) = op_problems(&at, Rule::with_config(c, &aggregates[idx].0, *i, engine.epoch), p) {
            rules.push((op, idx));
        }
    }
    rules
}

/// What checkpoints need of the pipeline.
fn checkpoint_problems(engine: &EngineConfig, p: &mut Vec<ConfigProblem>) {
    let (interval, epoch) = (engine.checkpoint_interval.millis(), engine.epoch.millis().max(1));
    if interval == 0 || interval % epoch != 0 {
        p.push(problem(
            "engine.checkpoint_interval",
            format!("must be a positive multiple of engine.epoch ({epoch} ms), not {interval} ms: a checkpoint falls between epochs"),
        ));
    }
}

/// The digest of the sections that shape a pipeline's state (see [`Pipeline::digest`]).
fn digest(table: &toml::Table) -> String {
    let mut t = table.clone();
    t.remove("serve");
    if let Some(toml::Value::Table(e)) = t.get_mut("engine") {
        // Nor does where or as which process of a cluster it runs: the processes of one cluster
        // compare digests when they connect.
        for k in [
            "workers",
            "state_dir",
            "checkpoint_interval",
            "checkpoint_min_wall_interval",
            "processes",
            "process_id",
            "hostfile",
            "peer_timeout",
            "pin_workers",
        ] {
            e.remove(k);
        }
    }
    // `toml::Table` keeps keys sorted: the same sections give the same text.
    let text = toml::to_string(&t).unwrap_or_default();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch folder holding an empty `points.ndjson`, removed when dropped (kept when the
    /// test panics, for inspection).
    struct Scratch(PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn dir_with_points() -> Scratch {
        let d = std::env::temp_dir().join(format!("af-cfg-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("points.ndjson"), "").unwrap();
        Scratch(d)
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    const CONTRACT: &str = include_str!("../../examples/pipeline.toml");

    #[test]
    fn the_contract_pipeline_validates() {
        let d = dir_with_points();
        let p = Pipeline::parse(CONTRACT, &d).unwrap();
        assert_eq!(p.table_names(), vec!["per_minute", "dead_letters"]);
        assert_eq!(p.sources[0].out_of_orderness, 5000);
    }

    #[test]
    fn notify_sections_validate_and_report_every_problem_with_its_path() {
        let d = dir_with_points();
        std::fs::write(d.join("alerts.ndjson"), "").unwrap();
        let alerts =
            "[[source]]\nname = \"a\"\ntype = \"file\"\npath = \"alerts.ndjson\"\nrecords = \"alerts\"\n[output]\npath = \"out\"\n";
        let ok = format!(
            "{alerts}[notify.route]\nreceiver = \"oncall\"\ngroup_by = [\"incident_id\"]\n\
             [[receiver]]\nname = \"oncall\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n"
        );
        let p = Pipeline::parse(&ok, &d).unwrap();
        assert_eq!(p.notify.as_ref().unwrap().receivers.len(), 1);
        assert!(p.table_names().contains(&NOTIFICATIONS.to_string()));

        let bad = format!(
            "{alerts}[notify.route]\nreceiver = \"nobody\"\n\
             [[notify.silences]]\nmatchers = ['a=\"b\"']\nstarts_at = \"soon\"\nends_at = \"2026-01-01T00:00:00Z\"\n\
             [[receiver]]\nname = \"oncall\"\ntype = \"webhook\"\nurl = \"ftp://x\"\n\
             [[receiver]]\nname = \"oncall\"\ntype = \"pagerduty\"\n"
        );
        let e = Pipeline::parse(&bad, &d).unwrap_err();
        let fields: Vec<&str> = e.problems.iter().map(|p| p.field.as_str()).collect();
        for f in ["notify.route.receiver", "notify.silences[0].starts_at", "receiver[0].url", "receiver[1].name", "receiver[1].routing_key"]
        {
            assert!(fields.contains(&f), "{f} missing from {e}");
        }

        // Notifications need alerts; receivers need routes.
        let points = "[[source]]\nname = \"p\"\ntype = \"file\"\npath = \"points.ndjson\"\n[output]\npath = \"out\"\n";
        let e = Pipeline::parse(&format!("{points}[notify.route]\nreceiver = \"x\"\n"), &d).unwrap_err();
        assert_eq!(e.problems[0].field, "notify", "{e}");
        let e = Pipeline::parse(&format!("{alerts}[[receiver]]\nname = \"x\"\ntype = \"slack\"\nurl = \"http://s\"\n"), &d).unwrap_err();
        assert_eq!(e.problems[0].field, "receiver", "{e}");
    }

    #[test]
    fn output_writers_default_to_low_and_take_idle() {
        let d = dir_with_points();
        let src = "[[source]]\nname = \"p\"\ntype = \"file\"\npath = \"points.ndjson\"\n[output]\npath = \"out\"\n";
        assert_eq!(Pipeline::parse(src, &d).unwrap().output.writers, WriterPriority::Low);
        assert_eq!(Pipeline::parse(&format!("{src}writers = \"idle\"\n"), &d).unwrap().output.writers, WriterPriority::Idle);
        let all = Pipeline::parse(&format!("{src}writers = \"high\"\n"), &d).unwrap_err().to_string();
        assert!(all.contains("output.writers") && all.contains("`idle`") && all.contains("`low`"), "{all}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let d = dir_with_points();
        let text = r#"
[engine]
epoch = "fast"

[[source]]
name = "points"
type = "file"
path = "points.ndjson"
max_out_of_orderness = "5 s"
colour = "blue"

[[source]]
name = "more"
type = "kinesis"

[[aggregate]]
name = "per_minute"
input = "pts"
window = { type = "tumbling", size = "1m" }
group_by = ["date"]

[output]
path = "out"
"#;
        let errs = Pipeline::parse(text, &d).unwrap_err();
        let all = errs.to_string();
        for want in [
            "engine.epoch: invalid duration `fast`",
            "source[0].colour: unknown key",
            "source[1].type: unknown source type \"kinesis\"",
            "aggregate[0].input: no source named `pts`",
            "aggregate[0].group_by[0]: `date` is reserved",
        ] {
            assert!(all.contains(want), "missing `{want}` in:\n{all}");
        }
    }

    #[test]
    fn pin_workers_is_off_by_default_and_not_part_of_the_digest() {
        let d = dir_with_points();
        let with = |v: &str| format!("[engine]\nepoch = \"1s\"\n{v}\n{CONTRACT}");
        let plain = Pipeline::parse(&with(""), &d).unwrap();
        assert!(!plain.engine.pin_workers);
        let with = |v: &str| with(&format!("pin_workers = {v}"));
        let pinned = Pipeline::parse(&with("true"), &d).unwrap();
        assert!(pinned.engine.pin_workers);
        // Where the workers run is not what the state is: a checkpoint resumes either way.
        assert_eq!(pinned.digest, plain.digest);
        let all = Pipeline::parse(&with("\"yes\""), &d).unwrap_err().to_string();
        assert!(all.contains("engine.pin_workers"), "{all}");
    }

    #[test]
    fn http_sources_receive_on_the_serving_port_or_their_own() {
        let d = dir_with_points();
        let source =
            |records: &str, listen: &str| format!("[[source]]\nname = \"{records}\"\ntype = \"http\"\nrecords = \"{records}\"\n{listen}\n");
        let out = "[output]\npath = \"out\"\n";
        let all = Pipeline::parse(&format!("{}{out}", source("metrics", "")), &d).unwrap_err().to_string();
        assert!(all.contains("source[0]: an HTTP source receives on the [serve] HTTP port, or on its own `listen` address"), "{all}");
        let serve = "[serve]\nhttp = \"127.0.0.1:9094\"\n";
        let text = format!("{}{}{out}{serve}", source("metrics", "listen = \"127.0.0.1:9094\""), source("alerts", "listen = \"nowhere\""));
        let all = Pipeline::parse(&text, &d).unwrap_err().to_string();
        assert!(all.contains("source[0].listen: the same address as serve.http (127.0.0.1:9094)"), "{all}");
        assert!(all.contains("source[1].listen: `nowhere` is not an address"), "{all}");
        // Its own address: no [serve] needed, and checkpoints cover it (its write-ahead log).
        let text = format!("[engine]\nstate_dir = \"state\"\n{}{out}", source("metrics", "listen = \"127.0.0.1:9093\""));
        let p = Pipeline::parse(&text, &d).unwrap();
        assert_eq!(p.push[0].listen, Some("127.0.0.1:9093".parse().unwrap()));
        assert!(p.serve.is_none() && p.state_dir.is_some());
    }

    #[test]
    fn bad_duration_and_missing_files_name_the_field() {
        let d = dir_with_points();
        let bad = CONTRACT.replace("\"5s\"", "\"5 parsecs\"");
        let all = Pipeline::parse(&bad, &d).unwrap_err().to_string();
        assert!(all.starts_with("source[0].max_out_of_orderness: invalid duration `5 parsecs`"), "{all}");
        let missing = CONTRACT.replace("points.ndjson", "nope-*.ndjson");
        let all = Pipeline::parse(&missing, &d).unwrap_err().to_string();
        assert!(all.contains("source[0].path: no file matches `nope-*.ndjson`"), "{all}");
        let all = Pipeline::parse("[[source]]\nname=1", &d).unwrap_err().to_string();
        assert!(all.contains("output: missing"), "{all}");
        let all = Pipeline::parse("this is not toml", &d).unwrap_err().to_string();
        assert!(all.starts_with("not valid TOML"), "{all}");
    }

    #[test]
    fn rules_are_validated_and_start_the_alert_chain() {
        let d = dir_with_points();
        let good = format!("{CONTRACT}\n[[rule]]\nname = \"HighCpu\"\ninput = \"per_minute\"\nwhen = \"avg > 90\"\nfor = \"5m\"\n");
        let p = Pipeline::parse(&good, &d).unwrap();
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.table_names(), vec!["per_minute", "alerts", "storms", "incidents", "dead_letters"], "rule alerts need the chain");
        let bad = format!(
            "{CONTRACT}\n[[rule]]\nname = \"A\"\ninput = \"per_hour\"\nwhen = \"avg > 1\"\n\
             [[rule]]\nname = \"B\"\ninput = \"per_minute\"\nwhen = \"p99 > 1 or\"\n\
             [[rule]]\nname = \"C\"\ninput = \"per_minute\"\nwhen = \"p99 > 1\"\nfour = \"1m\"\n"
        );
        let all = Pipeline::parse(&bad, &d).unwrap_err().to_string();
        for want in [
            "rule[0].input: no aggregate named `per_hour` (aggregates: per_minute)",
            "rule[1].when: `p99 > 1 or`: column 11: expected a function name or a number, found the end",
            "rule[2].four: unknown key",
        ] {
            assert!(all.contains(want), "missing `{want}` in:\n{all}");
        }
    }

    #[test]
    fn alert_sections_are_validated_with_their_paths() {
        let d = dir_with_points();
        std::fs::write(d.join("alerts.ndjson"), "").unwrap();
        std::fs::write(d.join("topology.csv"), "service,depends_on\napi,db\n,db\n").unwrap();
        let text = r#"
[[source]]
name = "points"
type = "file"
path = "points.ndjson"

[[source]]
name = "alerts"
type = "file"
path = "alerts.ndjson"
records = "alerts"

[[aggregate]]
name = "incidents"
input = "alerts"
window = { type = "tumbling", size = "1m" }

[dedup]
input = "points"
resolve_timeout = "0s"

[suppress]
threshold = 0
colour = "red"

[correlate]
topology = "topology.csv"
similarity_threshold = 1.5

[output]
path = "out"
"#;
        let all = Pipeline::parse(text, &d).unwrap_err().to_string();
        for want in [
            "aggregate[0].name: `incidents` is the name of a built-in table",
            "aggregate[0].input: `alerts` is an alert source; aggregates read metric sources",
            "dedup.input: `points` is a metric source",
            "suppress.colour: unknown key",
            "correlate.similarity_threshold: must be in (0, 1]",
            "correlate.topology: topology.csv line 3: the `service` cell is empty",
        ] {
            assert!(all.contains(want), "missing `{want}` in:\n{all}");
        }
        let no_alerts = "[[source]]\nname = \"p\"\ntype = \"file\"\npath = \"points.ndjson\"\n[dedup]\n[output]\npath = \"o\"\n";
        let all = Pipeline::parse(no_alerts, &d).unwrap_err().to_string();
        assert!(all.contains("dedup: no alert source"), "{all}");
        let am_metrics =
            "[[source]]\nname = \"p\"\ntype = \"file\"\npath = \"points.ndjson\"\nformat = \"alertmanager\"\n[output]\npath = \"o\"\n";
        let all = Pipeline::parse(am_metrics, &d).unwrap_err().to_string();
        assert!(all.contains("source[0].format: `alertmanager` holds alerts"), "{all}");
        // The defaults alone make a working alert pipeline with all the alert tables.
        let minimal = "[[source]]\nname = \"a\"\ntype = \"file\"\npath = \"alerts.ndjson\"\nrecords = \"alerts\"\n[output]\npath = \"o\"\n";
        let p = Pipeline::parse(minimal, &d).unwrap();
        assert_eq!(p.table_names(), vec!["alerts", "storms", "incidents", "dead_letters"]);
        assert_eq!(p.alerts.as_ref().unwrap().inputs, vec![0]);
    }
}
