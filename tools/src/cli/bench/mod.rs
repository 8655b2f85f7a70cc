//! `alertflow bench`: the engine's throughput on generated data, as a user would measure it.
//!
//! Each scenario writes its data and pipeline into a scratch folder first (not timed; the files
//! are read once so they sit in the page cache), then runs the pipeline as `alertflow run
//! PIPELINE --json` in a child process — so that each scenario's peak RSS is its own, not the
//! high-water mark of the generators and earlier scenarios, which the allocator keeps — and
//! reports the run's records/s, input bytes/s, peak RSS and the host's steal meanwhile (see
//! [`host`]). Every figure is for the Parquet
//! sink: a run ends when every table's files are written.
//!
//! Scenarios (sizes at `--scale 1`):
//! - `metrics`: W1 — 2,000,000 points of 10,000 series, ±2 s disorder — through the 1-minute
//!   tumbling window by host (count, sum, min, max, avg) of `examples/pipeline.toml`.
//! - `alerts`: a storm-heavy alert stream (64 incidents, storms of 20,000 distinct alerts,
//!   re-sent every 30 s: about 3 M notices) through dedup, suppress and correlate.
//! - `anomaly`: 1,000,000 points of 1,000 series through the zscore, mad and holt_winters
//!   detectors (three `[[detect]]` tables).
//! - `end-to-end`: the alert stream and 1,000,000 points of 2,000 series (3 hosts running hot
//!   for 15 minutes) together: windows with p99, a detector raising alerts, a rule, and the
//!   alert chain.
//! - `kafka`: W1 from a 16-partition topic of librdkafka's mock cluster, a real Kafka protocol
//!   server inside the `bench` process (the run's child process reads it over loopback; the
//!   broker shares the cores and is not in the run's RSS). The mock keeps at most 5 MiB of
//!   record batches per partition (older ones are deleted, as retention would), so the topic
//!   has 16 partitions and lz4-compressed batches, and the scenario fails if the run did not
//!   read every point.
//!
//! - `push`: 2,000,000 remote_write samples (requests of 1,000) then 200,000 alerts
//!   (Alertmanager bodies of 64) pushed by 4 keep-alive clients into the run's HTTP sources
//!   over loopback (see [`push`]); one figure per phase.
//! - `push-wal`: `push` with checkpoints on, so through the HTTP sources' write-ahead logs.
//!
//! With `--rate R` every scenario but `kafka`, `push` and `push-wal` runs in a fixed-rate mode instead: `R × D`
//! records (`--duration D`, default 30 s) replayed at R records/s with event time in step with
//! the wall clock, and processing latency percentiles reported per table and sink (see
//! [`paced`]).

mod host;
mod load;
mod paced;
mod push;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alertflow_tools::alertgen::{AlertFormat, AlertGen};
use alertflow_tools::datagen::{Incident, MetricsGen, generate_metrics};
use alertflow_tools::kafka_lines::KafkaLines;
use serde::Serialize;

use super::run::{Writers, thousands};
use super::{BAD_CONFIG, FAILED, OK};

/// A benchmark scenario.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Window aggregation of W1.
    Metrics,
    /// Dedup, suppress and correlate on a storm-heavy alert stream.
    Alerts,
    /// The streaming anomaly detectors.
    Anomaly,
    /// Metrics and alerts through every operator at once.
    EndToEnd,
    /// W1 from Kafka (librdkafka's in-process mock cluster, 16 partitions).
    Kafka,
    /// remote_write and Alertmanager pushes over loopback HTTP (the run's HTTP sources).
    Push,
    /// `push` with checkpoints on: every push is in the write-ahead log before it is answered.
    PushWal,
}

impl Scenario {
    const ALL: [Scenario; 7] =
        [Scenario::Metrics, Scenario::Alerts, Scenario::Anomaly, Scenario::EndToEnd, Scenario::Kafka, Scenario::Push, Scenario::PushWal];

    fn name(self) -> &'static str {
        match self {
            Scenario::Metrics => "metrics",
            Scenario::Alerts => "alerts",
            Scenario::Anomaly => "anomaly",
            Scenario::EndToEnd => "end-to-end",
            Scenario::Kafka => "kafka",
            Scenario::Push => "push",
            Scenario::PushWal => "push-wal",
        }
    }
}

/// Arguments of `alertflow bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Scenarios to run, in order (default: all).
    #[arg(value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Worker pinning and writer priority, passed to every scenario's run (as `alertflow run`
    /// takes them).
    #[command(flatten)]
    pub scheduling: crate::cli::run::SchedulingFlags,
    /// Multiplies every scenario's data size (e.g. 0.1 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Scratch folder for the data and output (default: a new folder under the system's
    /// temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Fixed-rate mode: replay at this many records per second (all sources together) and
    /// report processing latency percentiles (metrics, alerts, anomaly, end-to-end).
    #[arg(long)]
    pub rate: Option<u64>,
    /// With `--rate`: how long the replay lasts (the data holds rate × duration records;
    /// default 30s).
    #[arg(long)]
    pub duration: Option<alertflow_model::time::DurationMs>,
    /// With `--rate` (metrics, end-to-end): the run also serves its tables over HTTP, and this
    /// many concurrent clients send point queries on the live table `per_second_latest` for
    /// the whole replay; queries/s, errors and query latency are reported.
    #[arg(long)]
    pub clients: Option<usize>,
}

/// Latency of one table through one sink, in a fixed-rate run.
#[derive(Debug, Serialize)]
pub struct LatencyResult {
    /// The table.
    pub table: String,
    /// `record` (measured from the arrival of the record that caused the row) or `window`
    /// (from the moment the window became closable).
    pub output: &'static str,
    /// `memory` (the row left the dataflow) or `parquet` (its file was in place).
    pub sink: String,
    /// Rows measured.
    pub rows: u64,
    /// Percentiles and maximum, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

/// One scenario's figures.
#[derive(Debug, Serialize)]
pub struct BenchResult {
    /// The scenario.
    pub scenario: &'static str,
    /// Worker threads.
    pub workers: usize,
    /// The CPU each worker was pinned to (`--pin-workers`); empty when not pinned.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pinned_to: Vec<usize>,
    /// The writer priority asked for with `--writers` (`idle`, `low`); absent: the default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writers: Option<&'static str>,
    /// Records read.
    pub records: u64,
    /// Input bytes read.
    pub bytes: u64,
    /// Wall time of the run (data generation excluded).
    pub seconds: f64,
    /// Records per second.
    pub records_per_second: f64,
    /// Input bytes per second.
    pub bytes_per_second: f64,
    /// Peak resident set size during the run, when the system reports it.
    pub peak_rss_bytes: Option<u64>,
    /// The share of the host's CPU time the hypervisor gave elsewhere during the run (steal,
    /// percent), when the host reports it: the same build's figures vary with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_steal_percent: Option<f64>,
    /// Rows written to all tables.
    pub rows_out: u64,
    /// Where the rows went.
    pub sink: &'static str,
    /// The fixed rate asked for (records/s), in the fixed-rate mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// Processing latency by table and sink, in the fixed-rate mode.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<LatencyResult>,
    /// The query load on the running pipeline (`--clients`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_load: Option<load::QueryLoad>,
}

/// Runs `alertflow bench`.
pub fn bench(args: BenchArgs) -> u8 {
    if args.workers == Some(0) {
        eprintln!("error: --workers must be at least 1");
        return BAD_CONFIG;
    }
    if !(args.scale > 0.0 && args.scale <= 100.0) {
        eprintln!("error: --scale must be greater than 0 and at most 100, got {}", args.scale);
        return BAD_CONFIG;
    }
    let (root, remove) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("alertflow-bench-{}", std::process::id())), true),
    };
    if args.rate == Some(0) {
        eprintln!("error: --rate must be at least 1 record per second");
        return BAD_CONFIG;
    }
    let mode = match args.rate {
        None if args.duration.is_some() => {
            // The throughput mode runs fixed data sets (see --scale): a duration would be ignored.
            eprintln!("error: --duration applies to the fixed-rate mode; give --rate too (or --scale to size the throughput runs)");
            return BAD_CONFIG;
        }
        None => Mode::Throughput,
        Some(rate) => {
            let duration = args.duration.unwrap_or(alertflow_model::time::DurationMs::from_secs(30));
            let records = (rate as u128 * duration.millis() as u128 / 1000) as u64;
            if records == 0 || records > 1_000_000_000 {
                eprintln!("error: --rate × --duration must be between 1 and 1,000,000,000 records, got {records}");
                return BAD_CONFIG;
            }
            Mode::Paced { rate, records, clients: args.clients }
        }
    };
    if args.clients == Some(0) || (args.clients.is_some() && args.rate.is_none()) {
        eprintln!("error: --clients needs --rate (the load runs against a fixed-rate run) and at least 1 client");
        return BAD_CONFIG;
    }
    let scenarios: Vec<Scenario> = match (&mode, args.scenarios.is_empty()) {
        (Mode::Throughput, true) => Scenario::ALL.to_vec(),
        (Mode::Paced { .. }, true) => {
            Scenario::ALL.iter().copied().filter(|s| !matches!(s, Scenario::Kafka | Scenario::Push | Scenario::PushWal)).collect()
        }
        _ => args.scenarios.clone(),
    };
    if args.clients.is_some() && scenarios.iter().any(|s| !matches!(s, Scenario::Metrics | Scenario::EndToEnd)) {
        eprintln!("error: --clients applies to the metrics and end-to-end scenarios (their live table per_second_latest); name them");
        return BAD_CONFIG;
    }
    if matches!(mode, Mode::Paced { .. }) && scenarios.contains(&Scenario::Kafka) {
        eprintln!("error: the kafka scenario has no fixed-rate mode (its topic is read as fast as it can be); leave out --rate");
        return BAD_CONFIG;
    }
    if matches!(mode, Mode::Paced { .. }) && (scenarios.contains(&Scenario::Push) || scenarios.contains(&Scenario::PushWal)) {
        eprintln!("error: the push scenario has no fixed-rate mode (its clients push as fast as they are answered); leave out --rate");
        return BAD_CONFIG;
    }
    let flags = RunFlags { workers: args.workers, scheduling: args.scheduling.clone() };
    let mut results = Vec::new();
    let mut failed = None;
    for s in scenarios {
        let dir = root.join(s.name());
        let _ = std::fs::remove_dir_all(&dir);
        if !args.json {
            eprintln!("{}: generating data …", s.name());
        }
        let outcome = match s {
            Scenario::Push => push::run(&dir, args.scale, &flags, false),
            Scenario::PushWal => push::run(&dir, args.scale, &flags, true),
            _ => run_scenario(s, &dir, args.scale, &flags, mode).map(|r| vec![r]),
        };
        match outcome {
            Ok(rs) => {
                for mut r in rs {
                    r.writers = flags.scheduling.writers.map(Writers::name);
                    if !args.json {
                        eprintln!("{}: {} records in {:.2} s", r.scenario, thousands(r.records), r.seconds);
                    }
                    results.push(r);
                }
            }
            Err(e) => {
                failed = Some(format!("scenario `{}`: {e}", s.name()));
                break;
            }
        }
        if remove {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    if remove {
        let _ = std::fs::remove_dir_all(&root);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results).unwrap_or_default());
    } else {
        print_table(&results);
        if let Mode::Paced { rate, .. } = mode {
            print_latency(&results, rate);
        }
    }
    match failed {
        None => OK,
        Some(e) => {
            eprintln!("error: {e}");
            FAILED
        }
    }
}

/// What every scenario's `alertflow run` is given from the command line.
pub struct RunFlags {
    /// `--workers`.
    pub workers: Option<usize>,
    /// `--pin-workers`, `--writers`.
    pub scheduling: crate::cli::run::SchedulingFlags,
}

impl RunFlags {
    /// Adds the flags to an `alertflow run` command.
    pub fn apply(&self, cmd: &mut std::process::Command) {
        if let Some(w) = self.workers {
            cmd.args(["--workers", &w.to_string()]);
        }
        cmd.args(self.scheduling.args());
    }

    /// The run's worker count: `--workers`, or one per core as `alertflow run` takes it.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

/// The CPUs a run's summary says its workers were pinned to.
pub fn pinned_to(summary: &serde_json::Value) -> Vec<usize> {
    summary["pinned_to"].as_array().map_or_else(Vec::new, |a| a.iter().filter_map(|c| c.as_u64().map(|c| c as usize)).collect())
}

fn scaled(n: u64, scale: f64) -> u64 {
    ((n as f64 * scale).round() as u64).max(1)
}

/// Throughput (as fast as it goes) or a fixed rate.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Throughput,
    Paced { rate: u64, records: u64, clients: Option<usize> },
}

fn run_scenario(s: Scenario, dir: &Path, scale: f64, flags: &RunFlags, mode: Mode) -> Result<BenchResult, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Kept alive until the run has ended.
    let mut _broker = None;
    // Records the run must read (the Kafka scenario: what the topic was filled with).
    let mut expect = None;
    // The fixed-rate mode: the event-time span to measure latency over.
    let mut latency_span = None;
    // `--clients`: where the run serves, how many clients, and the replay's length (ms).
    let mut serving: Option<(SocketAddr, usize, u64)> = None;
    let pipeline = match (s, mode) {
        (_, Mode::Paced { rate, records, clients }) => {
            let files = flags.worker_count();
            let p = paced::prepare(s, dir, rate, records, files)?.ok_or("no fixed-rate mode")?;
            latency_span = Some((paced::T0, p.until));
            expect = Some(p.records);
            match clients {
                Some(n) => {
                    let port = load::free_port()?;
                    serving = Some((SocketAddr::from(([127, 0, 0, 1], port)), n, (p.until - paced::T0).max(0) as u64));
                    format!("{}\n[serve]\nhttp = \"127.0.0.1:{port}\"\n", p.pipeline)
                }
                None => p.pipeline,
            }
        }
        (s, Mode::Throughput) => match s {
            Scenario::Metrics => {
                metrics_file(dir, &w1(scale))?;
                METRICS_PIPELINE.to_string()
            }
            Scenario::Alerts => {
                alerts_file(dir, scale)?;
                format!("{}\n{ALERT_CHAIN}\n[output]\npath = \"out\"\n", alert_source())
            }
            Scenario::Anomaly => {
                let g = MetricsGen {
                    series: scaled(1_000, scale.min(1.0)) as usize,
                    points: scaled(1_000_000, scale),
                    ..MetricsGen::default()
                };
                metrics_file(dir, &g)?;
                ANOMALY_PIPELINE.to_string()
            }
            Scenario::EndToEnd => {
                alerts_file(dir, scale)?;
                // 500 rounds of 10 s whatever the scale, with 3 hosts running hot for 15 minutes
                // (the rule fires on them).
                let g = MetricsGen {
                    series: scaled(2_000, scale.min(1.0)) as usize,
                    points: scaled(1_000_000, scale),
                    incident: Some(Incident { at_ms: 20 * 60_000, duration_ms: 15 * 60_000, hosts: 3 }),
                    ..MetricsGen::default()
                };
                metrics_file(dir, &g)?;
                format!("{}\n{END_TO_END}\n{ALERT_CHAIN}\n[output]\npath = \"out\"\n", alert_source())
            }
            Scenario::Push | Scenario::PushWal => return Err("the push scenarios run through `push::run`".into()),
            Scenario::Kafka => {
                let (broker, text) = kafka_topic(&w1(scale))?;
                _broker = Some(broker);
                expect = Some(w1(scale).points);
                text
            }
        },
    };
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, &pipeline).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    warm(dir);
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the alertflow binary: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("run").arg(&path).arg("--json").stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::inherit());
    flags.apply(&mut cmd);
    if let Some((from, until)) = latency_span {
        cmd.arg(format!("--latency={from},{until}"));
    }
    let steal = host::Stopwatch::start();
    let (summary, query_load): (serde_json::Value, _) = match serving {
        None => {
            let out = cmd.output().map_err(|e| format!("cannot start `alertflow run`: {e}"))?;
            if !out.status.success() {
                return Err(format!("`alertflow run {}` failed ({})", path.display(), out.status));
            }
            (serde_json::from_slice(&out.stdout).map_err(|e| format!("`alertflow run --json` printed no summary: {e}"))?, None)
        }
        Some((addr, clients, replay_ms)) => {
            // The run serves on after its input ends: the summary is read as soon as it is
            // printed, then the run is stopped.
            let mut child = cmd.spawn().map_err(|e| format!("cannot start `alertflow run`: {e}"))?;
            let stdout = child.stdout.take().ok_or("no stdout of `alertflow run`")?;
            let hosts = if s == Scenario::Metrics { 10_000 } else { 1_000 };
            let until = std::time::Instant::now() + std::time::Duration::from_millis(replay_ms);
            let load = load::run(addr, clients, hosts, until);
            let summary = serde_json::Deserializer::from_reader(stdout).into_iter::<serde_json::Value>().next();
            let _ = child.kill();
            let status = child.wait().map_err(|e| e.to_string())?;
            let summary = match summary {
                Some(Ok(v)) => v,
                _ => return Err(format!("`alertflow run {}` printed no summary ({status})", path.display())),
            };
            (summary, Some(load?))
        }
    };
    let mut r = result(s, &summary).ok_or_else(|| format!("`alertflow run --json` printed an incomplete summary: {summary}"))?;
    r.query_load = query_load;
    r.host_steal_percent = steal.stop();
    if let Mode::Paced { rate, .. } = mode {
        r.rate = Some(rate);
        r.latency = latency(&summary).ok_or_else(|| format!("`alertflow run --json` reported no latency: {summary}"))?;
    }
    match expect {
        Some(n) if r.records != n => Err(format!("the run read {} of the {n} records it was given", r.records)),
        _ => Ok(r),
    }
}

/// The latency figures of a run summary.
fn latency(r: &serde_json::Value) -> Option<Vec<LatencyResult>> {
    r["latency"]
        .as_array()?
        .iter()
        .map(|l| {
            let table = l["table"].as_str()?.to_string();
            let f = |k: &str| l[k].as_f64();
            Some(LatencyResult {
                // Every aggregate of the bench's pipelines is named `per_…`.
                output: if table.starts_with("per_") { "window" } else { "record" },
                table,
                sink: l["sink"].as_str()?.to_string(),
                rows: l["rows"].as_u64()?,
                p50_ms: f("p50_ms")?,
                p90_ms: f("p90_ms")?,
                p99_ms: f("p99_ms")?,
                p999_ms: f("p999_ms")?,
                max_ms: f("max_ms")?,
            })
        })
        .collect()
}

fn result(s: Scenario, r: &serde_json::Value) -> Option<BenchResult> {
    let records = r["records_in"].as_u64()?;
    let bytes = r["bytes_in"].as_u64()?;
    let seconds = r["wall_seconds"].as_f64()?;
    let secs = seconds.max(1e-9);
    Some(BenchResult {
        scenario: s.name(),
        workers: r["workers"].as_u64()? as usize,
        pinned_to: pinned_to(r),
        writers: None,
        records,
        bytes,
        seconds,
        records_per_second: records as f64 / secs,
        bytes_per_second: bytes as f64 / secs,
        peak_rss_bytes: r["peak_rss_bytes"].as_u64(),
        host_steal_percent: None,
        rows_out: r["tables"].as_array()?.iter().map(|t| t["rows"].as_u64()).sum::<Option<u64>>()?,
        sink: "parquet",
        rate: None,
        latency: Vec::new(),
        query_load: None,
    })
}

fn w1(scale: f64) -> MetricsGen {
    MetricsGen { points: scaled(2_000_000, scale), ..MetricsGen::default() }
}

fn metrics_file(dir: &Path, g: &MetricsGen) -> Result<(), String> {
    let path = dir.join("points.ndjson");
    let f = std::fs::File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    generate_metrics(g, std::io::BufWriter::with_capacity(1 << 20, f)).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// The storm-heavy stream of the alert throughput figure in `BENCHMARKS.md` (64 incidents,
/// storms of 20,000 alerts), incidents and storm sizes scaled.
fn alerts_file(dir: &Path, scale: f64) -> Result<(), String> {
    let cfg = AlertGen {
        incidents: scaled(64, scale) as usize,
        storm_size: Some(scaled(20_000, scale.min(1.0)).max(200) as usize),
        seed: 1,
        ..AlertGen::default()
    };
    alertflow_tools::alertgen::write_files(&cfg, AlertFormat::Ndjson, dir).map_err(|e| format!("cannot write the alert stream: {e}"))?;
    Ok(())
}

fn alert_source() -> String {
    format!(
        "[[source]]\nname = \"alerts\"\ntype = \"file\"\npath = \"{}\"\nformat = \"ndjson\"\nrecords = \"alerts\"\nmax_out_of_orderness = \"10s\"\n",
        AlertFormat::Ndjson.file_name()
    )
}

/// Flushes every file of `dir` to disk (so that the kernel's write-back of the fresh data does
/// not compete with the run) and reads it once, so that the run reads from the page cache.
fn warm(dir: &Path) {
    let mut buf = vec![0u8; 1 << 20];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Ok(mut f) = std::fs::File::open(e.path()) {
            let _ = f.sync_all();
            while matches!(std::io::Read::read(&mut f, &mut buf), Ok(n) if n > 0) {}
        }
    }
}

const METRICS_PIPELINE: &str = include_str!("../../../../examples/pipeline.toml");

const ANOMALY_PIPELINE: &str = r#"
[[source]]
name = "points"
type = "file"
path = "points.ndjson"
max_out_of_orderness = "5s"

[[detect]]
name = "zscore"
input = "points"
detector = "zscore"

[[detect]]
name = "mad"
input = "points"
detector = "mad"

[[detect]]
name = "holt_winters"
input = "points"
detector = "holt_winters"

[output]
path = "out"
"#;

const END_TO_END: &str = r#"
[[source]]
name = "points"
type = "file"
path = "points.ndjson"
max_out_of_orderness = "5s"

[[aggregate]]
name = "per_minute"
input = "points"
window = { type = "tumbling", size = "1m" }
group_by = ["host"]
functions = ["count", "avg", "max", "p99"]

[[aggregate]]
name = "per_tenant_5m"
input = "points"
window = { type = "hopping", size = "5m", slide = "1m" }
functions = ["count", "avg", "p50", "p99"]

[[detect]]
name = "anomalies"
input = "points"
detector = "zscore"
threshold = 0.999
raise_alerts = true

[[rule]]
name = "HostCpuHigh"
input = "per_minute"
when = "avg > 90 and count >= 3"
for = "3m"
severity = "warning"
"#;

const ALERT_CHAIN: &str = r#"
[dedup]

[suppress]

[correlate]
topology = "topology.csv"
service_label = "service"
"#;

/// Pre-fills a 16-partition topic of a new mock cluster with `g`'s points (keyed by series,
/// so a series stays in one partition, in order; lz4 batches, to stay under the mock's 5 MiB
/// per partition) and returns the cluster with a pipeline reading it to its end.
fn kafka_topic(
    g: &MetricsGen,
) -> Result<(rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>, String), String> {
    let mock = rdkafka::mocking::MockCluster::new(1).map_err(|e| format!("cannot start the mock cluster: {e}"))?;
    mock.create_topic("w1", 16, 1).map_err(|e| format!("cannot create the topic: {e}"))?;
    let brokers = mock.bootstrap_servers();
    let mut w = KafkaLines::new(&brokers, "w1").map_err(|e| format!("cannot create a producer: {e}"))?;
    generate_metrics(g, &mut w).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    let text = format!(
        "[[source]]\nname = \"points\"\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"w1\"\ngroup_id = \"bench\"\n\
         start = \"earliest\"\nstop_at_end = true\nmax_out_of_orderness = \"5s\"\n\n\
         [[aggregate]]\nname = \"per_minute\"\ninput = \"points\"\nwindow = {{ type = \"tumbling\", size = \"1m\" }}\n\
         group_by = [\"host\"]\nfunctions = [\"count\", \"sum\", \"min\", \"max\", \"avg\"]\n\n[output]\npath = \"out\"\n"
    );
    Ok((mock, text))
}

/// The fixed-rate report: one aligned row per scenario, table and sink.
fn print_latency(rs: &[BenchResult], rate: u64) {
    println!();
    println!("processing latency at {} records/s (ms):", thousands(rate));
    let ms = |v: f64| format!("{v:.2}");
    let rows: Vec<Vec<String>> = rs
        .iter()
        .flat_map(|r| {
            r.latency.iter().map(|l| {
                vec![
                    r.scenario.to_string(),
                    l.table.clone(),
                    l.output.to_string(),
                    l.sink.clone(),
                    thousands(l.rows),
                    ms(l.p50_ms),
                    ms(l.p90_ms),
                    ms(l.p99_ms),
                    ms(l.p999_ms),
                    ms(l.max_ms),
                ]
            })
        })
        .collect();
    let head = ["scenario", "table", "output", "sink", "rows", "p50", "p90", "p99", "p99.9", "max"].map(String::from).to_vec();
    aligned(&head, &rows, &[0, 1, 2, 3]);
    for r in rs {
        let replay = r.records as f64 / rate as f64;
        if fell_behind(r.seconds, replay) {
            println!(
                "note: {} took {:.2} s for a {:.2} s replay ({} records/s on average): the engine fell behind the rate",
                r.scenario,
                r.seconds,
                replay,
                thousands(r.records_per_second as u64)
            );
        }
    }
    for r in rs {
        if let Some(q) = &r.query_load {
            println!();
            println!(
                "{}: {} clients, `{}`: {} queries ({:.0}/s), {} errors, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                r.scenario,
                q.clients,
                q.query,
                thousands(q.queries),
                q.queries_per_second,
                thousands(q.errors),
                q.p50_ms,
                q.p99_ms,
                q.max_ms
            );
            if let Some(e) = &q.first_error {
                println!("first error: {e}");
            }
        }
    }
}

/// Whether a run of `seconds` did not hold the pace of a `replay` seconds long: more than 10 %
/// over it, plus half a second for starting and for the last files (which a short replay would
/// otherwise be blamed for).
fn fell_behind(seconds: f64, replay: f64) -> bool {
    seconds > replay * 1.1 + 0.5
}

/// Prints `rows` under `head`: the columns listed in `left` left-aligned, the rest right-aligned.
fn aligned(head: &[String], rows: &[Vec<String>], left: &[usize]) {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&width)
            .enumerate()
            .map(|(i, (c, &w))| if left.contains(&i) { format!("{c:<w$}") } else { format!("{c:>w$}") })
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(head);
    for row in rows {
        line(row);
    }
}

/// The workers column: the count, whether they were pinned, and a writer priority asked for.
fn workers_cell(r: &BenchResult) -> String {
    let mut cell = r.workers.to_string();
    if !r.pinned_to.is_empty() {
        cell.push_str(" pinned");
    }
    if let Some(w) = r.writers {
        cell.push_str(&format!(", {w} writers"));
    }
    cell
}

/// The human report: one aligned row per scenario.
fn print_table(rs: &[BenchResult]) {
    let rows: Vec<Vec<String>> = rs
        .iter()
        .map(|r| {
            vec![
                r.scenario.to_string(),
                workers_cell(r),
                thousands(r.records),
                format!("{:.2} s", r.seconds),
                thousands(r.records_per_second as u64),
                format!("{:.1}", r.bytes_per_second / 1e6),
                r.peak_rss_bytes.map_or("—".into(), |b| format!("{} MiB", b >> 20)),
                r.host_steal_percent.map_or("—".into(), |s| format!("{s:.1} %")),
                r.sink.to_string(),
            ]
        })
        .collect();
    let head = ["scenario", "workers", "records", "wall", "records/s", "MB/s", "peak RSS", "steal", "sink"].map(String::from).to_vec();
    aligned(&head, &rows, &[0, 8]);
    for note in steal_notes(rs) {
        println!("{note}");
    }
}

/// A note for each scenario whose run had enough steal to move its figures: from 2 % (this
/// project's quiet runs had a few ticks of steal, well under 1 %; its noisy hours 4–14 %,
/// BENCHMARKS.md, "Pinned workers").
fn steal_notes(rs: &[BenchResult]) -> Vec<String> {
    rs.iter()
        .filter_map(|r| {
            let s = r.host_steal_percent.filter(|&s| s >= 2.0)?;
            Some(format!(
                "note: during {} the hypervisor gave {s:.1} % of this machine's CPU time to other guests (steal): \
                 a virtual machine's figures vary with its neighbours; compare runs with little steal",
                r.scenario
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{BenchResult, fell_behind, steal_notes};

    #[test]
    fn scenarios_with_two_percent_steal_or_more_get_a_note_naming_them() {
        let run = |scenario, steal| BenchResult {
            scenario,
            workers: 2,
            pinned_to: Vec::new(),
            writers: None,
            records: 1,
            bytes: 1,
            seconds: 1.0,
            records_per_second: 1.0,
            bytes_per_second: 1.0,
            peak_rss_bytes: None,
            host_steal_percent: steal,
            rows_out: 0,
            sink: "parquet",
            rate: None,
            latency: Vec::new(),
            query_load: None,
        };
        let rs = [
            run("metrics", Some(0.0)),
            run("alerts", Some(6.31)),
            run("anomaly", Some(1.99)),
            run("kafka", None),
            run("end-to-end", Some(2.0)),
        ];
        let notes = steal_notes(&rs);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with("note: during alerts the hypervisor gave 6.3 % "), "{}", notes[0]);
        assert!(notes[1].starts_with("note: during end-to-end the hypervisor gave 2.0 % "), "{}", notes[1]);
    }

    #[test]
    fn a_run_fell_behind_only_well_past_its_replay() {
        assert!(!fell_behind(30.9, 30.0), "3 % over a 30 s replay holds the rate");
        assert!(!fell_behind(1.4, 1.0), "start-up and the last files on a short replay");
        assert!(fell_behind(34.0, 30.0));
        assert!(fell_behind(0.7, 0.05));
    }
}
