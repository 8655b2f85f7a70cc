//! `alertflow gen`: writes test data (see `alertflow_tools::datagen` for the exact format).
//! (`gen` is a reserved word in Rust 2024, hence the module names.)

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use alertflow_model::time::DurationMs;
use alertflow_tools::alertgen::{AlertFormat, AlertGen, write_files};
use alertflow_tools::datagen::{GenReport, Incident, MetricsGen, generate_metrics};

use super::{BAD_CONFIG, FAILED, OK};

/// `alertflow gen …`
#[derive(clap::Args, Debug)]
pub struct GenArgs {
    /// What to generate.
    #[command(subcommand)]
    pub what: GenWhat,
}

/// The generators.
#[derive(clap::Subcommand, Debug)]
pub enum GenWhat {
    /// Metric points as NDJSON
    ///
    /// One line per point, e.g.
    /// {"ts":1767225598647,"tenant":"t0","host":"h00000","name":"cpu","value":54.525}.
    /// Every series reports once per interval; lines are in nominal time order and each `ts`
    /// is moved by up to ±disorder. The same arguments always give the same bytes.
    Metrics {
        /// Number of series (hosts h00000, h00001, …; names cycle over cpu, mem, disk, net).
        #[arg(long, default_value_t = 10_000)]
        series: usize,
        /// Total number of good points written.
        #[arg(long, default_value_t = 2_000_000)]
        points: u64,
        /// Random seed: the same seed gives a byte-identical file.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Largest event-time disorder of a point (a duration: "2s", "500ms", "0").
        #[arg(long, default_value = "2s")]
        disorder: String,
        /// Reporting interval of every series (a duration).
        #[arg(long, default_value = "10s")]
        interval: String,
        /// Number of tenants (t0, t1, …).
        #[arg(long, default_value_t = 4)]
        tenants: usize,
        /// Extra malformed lines inserted at random positions (bad JSON, missing value, …).
        #[arg(long, default_value_t = 0)]
        malformed: u64,
        /// where the line numbers and kinds of malformed lines are written (JSON lines)
        #[arg(long)]
        malformed_log: Option<PathBuf>,
        /// Output file ("-" for standard output).
        #[arg(long, required_unless_present = "kafka")]
        out: Option<PathBuf>,
        /// Send the lines to Kafka instead, one message per line keyed by tenant/host/name
        /// (brokers `host:port[,…]`; with --topic).
        #[arg(long, requires = "topic", conflicts_with = "out")]
        kafka: Option<String>,
        /// The topic for --kafka.
        #[arg(long, requires = "kafka")]
        topic: Option<String>,
        /// Inject an incident this long after the start (a duration): the first
        /// --incident-hosts cpu series of tenant t0 read ≈ 96 for --incident-for.
        #[arg(long)]
        incident_at: Option<String>,
        /// How long the injected incident lasts.
        #[arg(long, default_value = "10m", requires = "incident_at")]
        incident_for: String,
        /// How many cpu series the injected incident heats.
        #[arg(long, default_value_t = 3, requires = "incident_at")]
        incident_hosts: usize,
    },
    /// A realistic alert stream with ground truth, its topology and a ready pipeline
    ///
    /// Writes into --out: alerts.ndjson (alerts.json for alertmanager, alerts.csv for csv),
    /// topology.csv (service,depends_on,team,tier), truth.csv
    /// (tenant,fingerprint,first_ts,last_ts,incident,root_service: one row per alert episode)
    /// and pipeline.toml. Faults cascade upstream through a generated service topology; a few
    /// incidents are storms; background noise alerts are their own singleton incidents. The
    /// same arguments always give the same bytes.
    Alerts {
        /// The folder to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Random seed: the same seed gives byte-identical files.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Number of tenants (acme, globex, initech, …).
        #[arg(long, default_value_t = 3)]
        tenants: usize,
        /// Number of services of the generated topology (at least 8).
        #[arg(long, default_value_t = 60)]
        services: usize,
        /// Incidents in all (spread over the tenants); about one in eight is a storm.
        #[arg(long, default_value_t = 40)]
        incidents: usize,
        /// Length of the stream in event time (a duration: "6h", "90m").
        #[arg(long, default_value = "6h")]
        duration: String,
        /// Background noise: isolated alert episodes per hour and tenant.
        #[arg(long, default_value_t = 20.0)]
        noise_rate: f64,
        /// `ndjson`, `alertmanager` (Alertmanager v2 JSON arrays, one per line) or `csv`.
        #[arg(long, default_value = "ndjson")]
        format: String,
        /// Distinct alerts of every storm (default: random sizes from 200 to 1,500).
        #[arg(long)]
        storm_size: Option<usize>,
        /// Largest ingestion delay of a notice: lines are out of event-time order by less.
        #[arg(long, default_value = "3s")]
        disorder: String,
    },
}

/// Runs `alertflow gen`; returns the exit code: 0 ok, 1 I/O failure, 2 bad arguments.
pub fn run(args: GenArgs) -> u8 {
    match args.what {
        GenWhat::Metrics {
            series,
            points,
            seed,
            disorder,
            interval,
            tenants,
            malformed,
            malformed_log,
            out,
            kafka,
            topic,
            incident_at,
            incident_for,
            incident_hosts,
        } => {
            let disorder_ms = match parse_duration("--disorder", &disorder) {
                Ok(d) => d,
                Err(code) => return code,
            };
            let interval_ms = match parse_duration("--interval", &interval) {
                Ok(d) => d,
                Err(code) => return code,
            };
            let problems = [
                (series == 0 && (points > 0 || malformed > 0), "--series must be at least 1"),
                (tenants == 0, "--tenants must be at least 1"),
                (interval_ms == 0, "--interval must be longer than 0"),
            ];
            if let Some((_, msg)) = problems.iter().find(|(bad, _)| *bad) {
                eprintln!("error: {msg}");
                return BAD_CONFIG;
            }
            let incident = match incident_at {
                None => None,
                Some(at) => {
                    let (at_ms, duration_ms) = match (parse_duration("--incident-at", &at), parse_duration("--incident-for", &incident_for))
                    {
                        (Ok(a), Ok(d)) => (a, d),
                        (Err(code), _) | (_, Err(code)) => return code,
                    };
                    let clamp = |ms: u64| ms.min(i64::MAX as u64 / 4) as i64;
                    Some(Incident { at_ms: clamp(at_ms), duration_ms: clamp(duration_ms), hosts: incident_hosts })
                }
            };
            let cfg = MetricsGen { series, points, seed, disorder_ms, interval_ms, tenants, malformed, incident, ..MetricsGen::default() };
            match (out, kafka, topic) {
                (_, Some(brokers), Some(topic)) => metrics_to_kafka(&cfg, &brokers, &topic),
                (Some(out), ..) => metrics(&cfg, &out, malformed_log.as_deref()),
                _ => {
                    eprintln!("error: give --out FILE or --kafka BROKERS --topic T");
                    BAD_CONFIG
                }
            }
        }
        GenWhat::Alerts { out, seed, tenants, services, incidents, duration, noise_rate, format, storm_size, disorder } => {
            let duration_ms = match parse_duration("--duration", &duration) {
                Ok(d) => d,
                Err(code) => return code,
            };
            let disorder_ms = match parse_duration("--disorder", &disorder) {
                Ok(d) => d,
                Err(code) => return code,
            };
            let format: AlertFormat = match format.parse() {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("error: --format: {e}");
                    return BAD_CONFIG;
                }
            };
            let cfg = AlertGen {
                seed,
                tenants,
                services,
                incidents,
                duration_ms: duration_ms.min(i64::MAX as u64 / 4) as i64,
                noise_rate,
                storm_size,
                disorder_ms: disorder_ms.min(i64::MAX as u64 / 4) as i64,
                ..AlertGen::default()
            };
            if let Err(e) = cfg.check() {
                eprintln!("error: {e}");
                return BAD_CONFIG;
            }
            alerts(&cfg, format, &out)
        }
    }
}

fn alerts(cfg: &AlertGen, format: AlertFormat, dir: &Path) -> u8 {
    let started = Instant::now();
    match write_files(cfg, format, dir) {
        Ok(r) => {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "wrote {} lines ({} alert notices, {} episodes, {} distinct alerts) to {} in {secs:.2} s",
                r.lines,
                r.notices,
                r.episodes,
                r.fingerprints,
                dir.join(format.file_name()).display()
            );
            eprintln!(
                "truth: {} incidents ({} storms) and {} noise episodes in {}",
                r.incidents,
                r.storms,
                r.noise,
                dir.join("truth.csv").display()
            );
            eprintln!("run it: alertflow run {}", dir.join("pipeline.toml").display());
            OK
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            eprintln!("error: {e}");
            BAD_CONFIG
        }
        Err(e) => {
            eprintln!("error: writing into {}: {e}", dir.display());
            FAILED
        }
    }
}

fn parse_duration(flag: &str, text: &str) -> Result<u64, u8> {
    match text.parse::<DurationMs>() {
        Ok(d) => Ok(d.millis()),
        Err(e) => {
            eprintln!("error: {flag}: {e}");
            Err(BAD_CONFIG)
        }
    }
}

fn metrics(cfg: &MetricsGen, out: &Path, malformed_log: Option<&Path>) -> u8 {
    let started = Instant::now();
    let to_stdout = out.as_os_str() == "-";
    let result = if to_stdout {
        generate_metrics(cfg, io::stdout().lock())
    } else {
        match File::create(out) {
            Ok(f) => generate_metrics(cfg, f),
            Err(e) => {
                eprintln!("error: cannot create {}: {e}", out.display());
                return FAILED;
            }
        }
    };
    let report = match result {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            eprintln!("error: {e}");
            return BAD_CONFIG;
        }
        Err(e) => {
            eprintln!("error: writing {}: {e}", out.display());
            return FAILED;
        }
    };
    if let Some(log) = malformed_log
        && let Err(e) = write_malformed_log(log, &report)
    {
        eprintln!("error: writing {}: {e}", log.display());
        return FAILED;
    }
    let secs = started.elapsed().as_secs_f64();
    let extra = if cfg.malformed > 0 { format!(" (+{} malformed lines)", report.malformed.len()) } else { String::new() };
    let target = if to_stdout { "stdout".to_string() } else { out.display().to_string() };
    eprintln!("wrote {} points{extra} to {target} in {secs:.2} s", report.good);
    OK
}

fn metrics_to_kafka(cfg: &MetricsGen, brokers: &str, topic: &str) -> u8 {
    let started = Instant::now();
    let mut w = match alertflow_tools::kafka_lines::KafkaLines::new(brokers, topic) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: --kafka: {e}");
            return BAD_CONFIG;
        }
    };
    let sent = generate_metrics(cfg, &mut w).and_then(|_| w.finish());
    match sent {
        Ok(n) => {
            eprintln!("sent {n} messages to {topic} at {brokers} in {:.2} s", started.elapsed().as_secs_f64());
            OK
        }
        Err(e) => {
            eprintln!("error: sending to {topic} at {brokers}: {e}");
            FAILED
        }
    }
}

fn write_malformed_log(path: &Path, report: &GenReport) -> io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    for m in &report.malformed {
        // Written by hand to keep the documented key order: {"line":123,"kind":"bad_json"}.
        writeln!(w, "{{\"line\":{},\"kind\":{}}}", m.line, serde_json::Value::from(m.kind))?;
    }
    w.flush()
}
