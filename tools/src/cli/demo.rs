//! `alertflow demo`: the embedded default. Generates a small, realistic metric stream (with a
//! few malformed lines), runs the bundled pipeline on it into `./alertflow-demo/`, and prints
//! the answers of three example queries. No service, no network.

use std::path::PathBuf;

use alertflow_queries::{OutputFormat, context_for_dir, render};
use alertflow_tools::datagen::{MetricsGen, generate_metrics};

use super::{FAILED, OK};

/// The bundled pipeline.
pub const DEMO_PIPELINE: &str = include_str!("../../../examples/demo.toml");

/// Arguments of `alertflow demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where the data, the pipeline and its output go.
    #[arg(long, default_value = "alertflow-demo")]
    pub dir: PathBuf,
    /// Series in the generated stream.
    #[arg(long, default_value_t = 2_000)]
    pub series: usize,
    /// Points in the generated stream.
    #[arg(long, default_value_t = 400_000)]
    pub points: u64,
    /// Worker threads.
    #[arg(long)]
    pub workers: Option<usize>,
}

const QUERIES: [(&str, &str); 3] = [
    (
        "Hosts with the highest average CPU",
        "SELECT host, round(sum(sum) / sum(count), 2) AS avg_cpu, max(max) AS peak, sum(count) AS points \
         FROM per_minute WHERE name = 'cpu' GROUP BY host ORDER BY avg_cpu DESC LIMIT 5",
    ),
    (
        "Points per tenant and metric in each 5-minute window (first windows)",
        "SELECT window_start, tenant, name, count, round(avg, 2) AS avg FROM per_tenant_5m \
         ORDER BY window_start, tenant, name LIMIT 8",
    ),
    (
        "Dead letters by reason",
        "SELECT reason, count(*) AS n, min(line) AS first_line FROM dead_letters GROUP BY reason ORDER BY n DESC, reason",
    ),
];

/// Runs the demo.
pub fn demo(args: DemoArgs) -> u8 {
    match demo_inner(&args) {
        Ok(()) => OK,
        Err(e) => {
            eprintln!("error: {e}");
            FAILED
        }
    }
}

fn demo_inner(args: &DemoArgs) -> Result<(), String> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let data = dir.join("points.ndjson");
    let cfg = MetricsGen { series: args.series, points: args.points, malformed: 25, ..MetricsGen::default() };
    let t = std::time::Instant::now();
    let file = std::fs::File::create(&data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
    let report = generate_metrics(&cfg, std::io::BufWriter::with_capacity(1 << 20, file))
        .map_err(|e| format!("cannot write {}: {e}", data.display()))?;
    println!(
        "generated {} points from {} series (+{} malformed lines) into {} in {:.2} s",
        super::run::thousands(report.good),
        args.series,
        report.malformed.len(),
        data.display(),
        t.elapsed().as_secs_f64()
    );
    let pipeline_path = dir.join("pipeline.toml");
    std::fs::write(&pipeline_path, DEMO_PIPELINE).map_err(|e| format!("cannot write {}: {e}", pipeline_path.display()))?;
    println!("running {}\n", pipeline_path.display());
    let pipeline = super::run::load(&pipeline_path).map_err(|_| "the bundled pipeline is invalid (a bug)".to_string())?;
    let summary = super::run::run_pipeline(pipeline, args.workers, None).map_err(|e| e.to_string())?;
    super::run::print_summary(&summary);

    let out = dir.join("out");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (ctx, _) = context_for_dir(&out).await.map_err(|e| e.to_string())?;
        for (title, q) in QUERIES {
            println!("\n{title}:\n  {q}");
            let batches = ctx.sql(q).await.map_err(|e| e.to_string())?.collect().await.map_err(|e| e.to_string())?;
            println!("{}", render(&batches, OutputFormat::Table).map_err(|e| e.to_string())?);
        }
        Ok::<(), String>(())
    })?;
    println!("\nQuery the tables yourself, for example:\n  alertflow sql --data {} \"SELECT * FROM per_minute LIMIT 5\"", out.display());
    println!(
        "or open the Parquet files with DuckDB:\n  SELECT * FROM read_parquet('{}/per_minute/**/*.parquet', hive_partitioning = true) LIMIT 5;",
        out.display()
    );
    Ok(())
}
