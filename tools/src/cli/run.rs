//! `alertflow run` and `alertflow validate`.

use std::io::IsTerminal;
use std::path::Path;

use alertflow_connectors::parquet::WriterPriority;
use alertflow_engine::{Pipeline, RunOptions, RunSummary};

use super::{BAD_CONFIG, FAILED, OK};

/// Loads a pipeline, printing every problem when it is not valid.
pub fn load(path: &Path) -> Result<Pipeline, u8> {
    Pipeline::load(path).map_err(|e| {
        eprintln!("error: {} is not a valid pipeline:", path.display());
        for p in &e.problems {
            eprintln!("  {p}");
        }
        BAD_CONFIG
    })
}

/// `alertflow validate PIPELINE`.
pub fn validate(path: &Path) -> u8 {
    match load(path) {
        Ok(p) => {
            let mut sources: Vec<String> =
                p.sources.iter().map(|s| format!("{} ({} file(s), {} partition(s))", s.name, s.files.len(), s.partitions.len())).collect();
            sources.extend(p.kafka.iter().map(|k| format!("{} (kafka {}: {})", k.name, k.brokers, k.topics.join(", "))));
            println!("ok: {} is valid", path.display());
            println!("  sources: {}", sources.join(", "));
            println!("  tables:  {}", p.table_names().join(", "));
            println!("  output:  {}", p.output_dir.display());
            OK
        }
        Err(code) => code,
    }
}

/// The hidden `--latency FROM,UNTIL` of `alertflow run`.
pub fn parse_latency_span(s: &str) -> Result<(i64, i64), String> {
    let bad = || format!("expected FROM,UNTIL (ms since the epoch, FROM ≤ UNTIL), got `{s}`");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    let (a, b): (i64, i64) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    if a > b {
        return Err(bad());
    }
    Ok((a, b))
}

/// Cluster mode (`alertflow run … --processes N --process-id I --hostfile FILE`): each
/// overrides its `[engine]` key.
#[derive(clap::Args, Debug, Default)]
pub struct ClusterFlags {
    /// Run as one of N processes of a cluster (timely's TCP communication between them).
    #[arg(long, value_name = "N")]
    pub processes: Option<usize>,
    /// This process's index in the cluster, 0 to N-1.
    #[arg(long, value_name = "I")]
    pub process_id: Option<usize>,
    /// The cluster's addresses: one host:port per line, line i for process i.
    #[arg(long, value_name = "FILE")]
    pub hostfile: Option<std::path::PathBuf>,
}

impl ClusterFlags {
    /// Puts the flags into the pipeline's `[engine]` (a hostfile given here is relative to
    /// the working folder, not to the pipeline file).
    pub fn apply(&self, pipeline: &mut Pipeline) {
        if let Some(n) = self.processes {
            pipeline.engine.processes = Some(n);
        }
        if let Some(i) = self.process_id {
            pipeline.engine.process_id = Some(i);
        }
        if let Some(h) = &self.hostfile {
            let abs = std::env::current_dir().map(|d| d.join(h)).unwrap_or_else(|_| h.clone());
            pipeline.engine.hostfile = Some(abs.to_string_lossy().into_owned());
        }
    }
}

/// How the threads of a run are placed and scheduled, from the command line of `alertflow run`
/// and `alertflow bench` (overriding the pipeline file's settings).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SchedulingFlags {
    /// Pin each worker thread to a CPU of its own (as `[engine] pin_workers = true`).
    #[arg(long)]
    pub pin_workers: bool,
    /// Priority of the Parquet writer threads (as `[output] writers`): `low` (nice +10, the
    /// default) or `idle` (`SCHED_IDLE`, only for a host the pipeline has to itself).
    #[arg(long, value_enum, value_name = "PRIORITY")]
    pub writers: Option<Writers>,
}

/// `--writers`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writers {
    /// `SCHED_IDLE`.
    Idle,
    /// nice +10.
    Low,
}

impl Writers {
    /// The value as written on the command line and in `[output] writers`.
    pub fn name(self) -> &'static str {
        match self {
            Writers::Idle => "idle",
            Writers::Low => "low",
        }
    }
}

impl SchedulingFlags {
    /// Puts the flags into the pipeline's `[engine]` and `[output]`.
    pub fn apply(&self, pipeline: &mut Pipeline) {
        pipeline.engine.pin_workers |= self.pin_workers;
        if let Some(w) = self.writers {
            pipeline.output.writers = match w {
                Writers::Idle => WriterPriority::Idle,
                Writers::Low => WriterPriority::Low,
            };
        }
    }

    /// The same flags on another `alertflow run` command line.
    pub fn args(&self) -> Vec<&'static str> {
        let mut a = Vec::new();
        if self.pin_workers {
            a.push("--pin-workers");
        }
        if let Some(w) = self.writers {
            a.extend(["--writers", w.name()]);
        }
        a
    }
}

/// `alertflow run PIPELINE [--workers N] [--pin-workers] [--writers P] [--json] [--processes N --process-id I --hostfile FILE]`.
pub fn run(
    path: &Path,
    workers: Option<usize>,
    cluster: &ClusterFlags,
    scheduling: &SchedulingFlags,
    json: bool,
    latency: Option<(i64, i64)>,
) -> u8 {
    if workers == Some(0) {
        eprintln!("error: --workers must be at least 1");
        return BAD_CONFIG;
    }
    let mut pipeline = match load(path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    cluster.apply(&mut pipeline);
    scheduling.apply(&mut pipeline);
    // The summary is printed as soon as the pipeline finishes: with `[serve]` the run then
    // keeps serving its tables until stopped.
    let report = move |s: &RunSummary| {
        if json {
            println!("{}", serde_json::to_string_pretty(s).unwrap_or_default());
        } else {
            print_summary(s);
        }
        // Whoever reads a piped stdout gets the summary now, not when serving stops.
        let _ = std::io::Write::flush(&mut std::io::stdout());
    };
    match run_pipeline_with(pipeline, workers, latency, Some(Box::new(report))) {
        Ok(_) => OK,
        // Bad cluster flags are bad arguments (exit 2, as a bad pipeline file), found before
        // anything starts.
        Err(e @ alertflow_engine::RunError::ClusterConfig(_)) => {
            eprintln!("error: {e}");
            BAD_CONFIG
        }
        Err(alertflow_engine::RunError::Stopped(m)) => {
            eprintln!("{m}");
            OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            FAILED
        }
    }
}

/// Runs a pipeline with a progress bar on stderr when it is a terminal.
pub fn run_pipeline(
    pipeline: Pipeline,
    workers: Option<usize>,
    latency: Option<(i64, i64)>,
) -> Result<RunSummary, alertflow_engine::RunError> {
    run_pipeline_with(pipeline, workers, latency, None)
}

/// [`run_pipeline`], calling `finished` with the summary as soon as the pipeline finishes.
pub fn run_pipeline_with(
    pipeline: Pipeline,
    workers: Option<usize>,
    latency: Option<(i64, i64)>,
    finished: Option<alertflow_engine::FinishedFn>,
) -> Result<RunSummary, alertflow_engine::RunError> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let total: u64 = pipeline.sources.iter().map(|s| s.total_bytes).sum();
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {percent:>3}% {bytes}/{total_bytes} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    let progress: Option<alertflow_engine::ProgressFn> = bar.clone().map(|bar| {
        Box::new(move |p: &alertflow_engine::Progress| {
            bar.set_position(p.bytes.min(p.total_bytes));
            let secs = p.elapsed.as_secs_f64().max(1e-3);
            bar.set_message(format!("{} records, {}/s", thousands(p.records), thousands((p.records as f64 / secs) as u64)));
        }) as alertflow_engine::ProgressFn
    });
    let bar2 = bar.clone();
    let finished = finished.map(|f| {
        Box::new(move |s: &RunSummary| {
            if let Some(bar) = &bar2 {
                bar.finish_and_clear();
            }
            f(s)
        }) as alertflow_engine::FinishedFn
    });
    // With `[serve]`: say where, whatever the log level.
    let serving: alertflow_engine::ServingFn = Box::new(|_, http, pg| {
        if let Some(a) = http {
            eprintln!("serving SQL over HTTP at http://{a} (POST /sql, GET /tables, /metrics, /health)");
        }
        if let Some(a) = pg {
            eprintln!("serving the PostgreSQL protocol at {a}: psql \"host={} port={} dbname=alertflow\"", a.ip(), a.port());
        }
    });
    let r =
        alertflow_engine::run(pipeline, RunOptions { workers, progress, latency, finished, serving: Some(serving), ..Default::default() });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    r
}

/// Prints a run summary as an aligned block.
pub fn print_summary(s: &RunSummary) {
    let tables: Vec<String> = s.tables.iter().map(|t| format!("{} {}", t.table, thousands(t.rows))).collect();
    match s.pinned_to.as_slice() {
        [] => println!("{:<14} {}", "workers", s.workers),
        cpus => println!(
            "{:<14} {} (pinned to CPUs {})",
            "workers",
            s.workers,
            cpus.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
    if let Some(c) = &s.cluster {
        println!(
            "{:<14} process {} of {} ({} workers in all; figures cover the cluster)",
            "cluster", c.process_id, c.processes, c.workers_total
        );
    }
    println!("{:<14} {}", "records in", thousands(s.records_in));
    println!("{:<14} {}  ({})", "records out", thousands(s.records_out), tables.join(", "));
    println!("{:<14} {}  (late {})", "dead letters", thousands(s.dead_letters + s.late), thousands(s.late));
    if let Some(a) = &s.alerts {
        let overflow = if a.overflow > 0 { format!(", {} dropped over max_open_per_tenant", thousands(a.overflow)) } else { String::new() };
        println!("{:<14} {} notices → {} lifecycle rows{overflow}", "alerts", thousands(a.notices), thousands(a.lifecycle_rows));
    }
    if let Some(n) = &s.notifications {
        println!(
            "{:<14} {} sent: {} delivered, {} failed, {} undelivered ({} retries)",
            "notifications",
            thousands(n.sent),
            thousands(n.delivered),
            thousands(n.failed),
            thousands(n.undelivered),
            thousands(n.retries)
        );
        if n.resent + n.skipped > 0 {
            println!(
                "{:<14} {} sent again from an interrupted run, {} decided again and skipped (already sent)",
                "",
                thousands(n.resent),
                thousands(n.skipped)
            );
        }
    }
    for b in &s.state_bounds {
        println!(
            "{:<14} {} {}: {} expired, {} evicted, {} rejected at the cap",
            "state bounds",
            b.operator,
            b.name,
            thousands(b.expired),
            thousands(b.evicted),
            thousands(b.rejected)
        );
    }
    println!("{:<14} {:.3} s", "wall time", s.wall_seconds);
    println!("{:<14} {} records/s", "throughput", thousands(s.records_per_second as u64));
    if let Some(b) = s.peak_rss_bytes {
        println!("{:<14} {} MiB", "peak RSS", b >> 20);
    }
    for l in &s.latency {
        println!(
            "{:<14} {} via {:?}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} rows)",
            "latency",
            l.table,
            l.sink,
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            thousands(l.rows)
        );
    }
    println!("{:<14} {}", "output", s.output);
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        scheduling: SchedulingFlags,
    }

    fn flags(args: &[&str]) -> Result<SchedulingFlags, clap::Error> {
        Line::try_parse_from(std::iter::once("alertflow").chain(args.iter().copied())).map(|l| l.scheduling)
    }

    #[test]
    fn scheduling_flags_override_the_pipeline_and_pass_on_unchanged() {
        let d = std::env::temp_dir().join(format!("af-sched-flags-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("points.ndjson"), "").unwrap();
        let text = "[[source]]\nname = \"p\"\ntype = \"file\"\npath = \"points.ndjson\"\n[output]\npath = \"out\"\nwriters = \"idle\"\n";
        let parse = || Pipeline::parse(text, &d).unwrap();

        // Nothing given: the file's settings stay.
        let none = flags(&[]).unwrap();
        let mut p = parse();
        none.apply(&mut p);
        assert_eq!((p.engine.pin_workers, p.output.writers), (false, WriterPriority::Idle));
        assert!(none.args().is_empty());

        let both = flags(&["--pin-workers", "--writers", "low"]).unwrap();
        let mut p = parse();
        both.apply(&mut p);
        assert_eq!((p.engine.pin_workers, p.output.writers), (true, WriterPriority::Low));
        // What the bench hands each scenario's run parses back to the same flags.
        let again = flags(&both.args()).unwrap();
        assert_eq!((again.pin_workers, again.writers), (true, Some(Writers::Low)));
        assert_eq!(flags(&["--writers", "idle"]).unwrap().args(), ["--writers", "idle"]);

        let bad = flags(&["--writers", "high"]).unwrap_err().to_string();
        assert!(bad.contains("high") && bad.contains("idle") && bad.contains("low"), "{bad}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
