//! `alertflow`: run, validate, query and benchmark observability pipelines.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;

/// Stream processing for observability data: windows, dedup, correlation, anomalies, SQL.
#[derive(Parser, Debug)]
#[command(name = "alertflow", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a pipeline file to completion.
    Run {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Worker threads (default: one per core, or `[engine] workers`).
        #[arg(long)]
        workers: Option<usize>,
        /// Print the run summary as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: cli::run::ClusterFlags,
        #[command(flatten)]
        scheduling: cli::run::SchedulingFlags,
        /// Measure processing latency of a paced replay whose event time runs from FROM to
        /// UNTIL (ms since the epoch) at the replay rate: `FROM,UNTIL`. Used by `alertflow
        /// bench --rate`, which writes such data.
        #[arg(long, hide = true, value_parser = cli::run::parse_latency_span)]
        latency: Option<(i64, i64)>,
    },
    /// Check a pipeline file without running it; every problem is listed with its field.
    Validate {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
    },
    /// Query output tables with SQL; without a query, an interactive prompt.
    Sql(cli::sql::SqlArgs),
    /// Generate test data.
    Gen(cli::gen_cmd::GenArgs),
    /// Score a pipeline's output against ground truth.
    Eval(cli::eval_cmd::EvalArgs),
    /// Score a `timestamp,value` CSV with an anomaly detector (NAB format) to stdout.
    Detect(cli::detect::DetectArgs),
    /// Generate a small data set, run a bundled pipeline on it and show example queries.
    Demo(cli::demo::DemoArgs),
    /// Measure throughput on generated data: metrics, alerts, anomaly, end-to-end, kafka.
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    cli::no_huge_pages();
    cli::init_logging();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // clap's own code: 0 for --help/--version, 2 for usage errors.
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    let code = match cli.command {
        Command::Run { pipeline, workers, json, cluster, scheduling, latency } => {
            cli::run::run(&pipeline, workers, &cluster, &scheduling, json, latency)
        }
        Command::Validate { pipeline } => cli::run::validate(&pipeline),
        Command::Sql(args) => cli::sql::sql(args),
        Command::Gen(args) => cli::gen_cmd::run(args),
        Command::Eval(args) => cli::eval_cmd::run(args),
        Command::Demo(args) => cli::demo::demo(args),
        Command::Bench(args) => cli::bench::bench(args),
        Command::Detect(args) => cli::detect::run(args),
    };
    ExitCode::from(code)
}
