//! SQL behaviour tests: the sqllogictest files in `queries/tests/slt/` run against the catalog
//! a pipeline with `[serve]` answers from — its Parquet history and its live tables — after a
//! run over a small hand-made input (two tenants, metrics and alerts, one bad line) whose
//! expected answers are worked out by hand in the files' comments.
//!
//! A file named `tenant-<name>.slt` runs as a caller bound to tenant `<name>`; the others as
//! an operator who sees every tenant. Every file runs against 1 and 2 workers: the answers must
//! not depend on the worker count.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use alertflow_engine::{Pipeline, RunOptions};
use alertflow_queries::{Access, Catalog, QueryError};
use alertflow_tests::Scratch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use sqllogictest::{DBOutput, DefaultColumnType};

/// 2026-01-01T00:00:00Z in ms.
const T: i64 = 1_767_225_600_000;

fn fixture(dir: &Path) {
    let points = [
        (10_000, "acme", "h1", 10.0),
        (20_000, "acme", "h1", 20.0),
        (30_000, "globex", "h2", 50.0),
        (70_000, "acme", "h1", 30.0),
        (90_000, "globex", "h2", 70.0),
        (180_000, "acme", "h1", 40.0),
    ];
    let mut text = String::new();
    for (i, (dt, tenant, host, v)) in points.iter().enumerate() {
        text.push_str(&format!(r#"{{"ts":{},"tenant":"{tenant}","host":"{host}","name":"cpu","value":{v}}}"#, T + dt));
        text.push('\n');
        if i == 2 {
            text.push_str("{\"ts\":\"not a time\",\"name\":\"cpu\",\"value\":1}\n");
        }
    }
    std::fs::write(dir.join("points.ndjson"), text).unwrap();
    let alert = |dt: i64, tenant: &str, name: &str, sev: &str, status: &str, host: &str| {
        format!(r#"{{"ts":{},"tenant":"{tenant}","alertname":"{name}","severity":"{sev}","status":"{status}","host":"{host}"}}"#, T + dt)
    };
    let alerts = [
        alert(5_000, "acme", "HighCpu", "critical", "firing", "h1"),
        alert(10_000, "globex", "HighCpu", "critical", "firing", "h2"),
        alert(20_000, "acme", "DiskFull", "warning", "firing", "h1"),
        alert(120_000, "globex", "HighCpu", "critical", "resolved", "h2"),
    ];
    std::fs::write(dir.join("alerts.ndjson"), alerts.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.join("pipeline.toml"),
        r#"
[engine]
epoch = "1s"

[[source]]
name = "points"
type = "file"
path = "points.ndjson"
records = "metrics"
max_out_of_orderness = "0s"

[[source]]
name = "alerts"
type = "file"
path = "alerts.ndjson"
records = "alerts"

[[aggregate]]
name = "per_minute"
input = "points"
window = { type = "tumbling", size = "1m" }
group_by = ["host"]
functions = ["count", "sum", "avg", "max"]

[correlate]
group_by = ["host"]

[output]
path = "out"

[serve]
http = "127.0.0.1:0"
"#,
    )
    .unwrap();
}

/// Runs the pipeline with `workers` workers; returns the catalog once the run has finished,
/// the flag that stops its serving, and the thread running it.
fn finished_catalog(dir: &Path, workers: usize) -> (Catalog, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let pipeline = Pipeline::load(&dir.join("pipeline.toml")).unwrap_or_else(|e| panic!("{e}"));
    let (cat_tx, cat_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let cancel = stop.clone();
    let runner = std::thread::spawn(move || {
        let opts = RunOptions {
            workers: Some(workers),
            cancel: Some(cancel),
            serving: Some(Box::new(move |c: &Catalog, _, _| {
                let _ = cat_tx.send(c.clone());
            })),
            finished: Some(Box::new(move |s| {
                let _ = done_tx.send(s.records_in);
            })),
            ..Default::default()
        };
        alertflow_engine::run(pipeline, opts).unwrap_or_else(|e| panic!("the run failed: {e}"));
    });
    let catalog = cat_rx.recv().expect("the run starts serving");
    let records = done_rx.recv().expect("the run finishes");
    assert_eq!(records, 11, "6 points, 1 bad line, 4 alerts");
    (catalog, stop, runner)
}

struct Db {
    catalog: Catalog,
    access: Access,
}

#[derive(Debug)]
struct DbError(QueryError);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbError {}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let (schema, batches) = self.catalog.query(&self.access, sql).await.map_err(DbError)?;
        let types = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                t if t.is_integer() => DefaultColumnType::Integer,
                DataType::Float16 | DataType::Float32 | DataType::Float64 => DefaultColumnType::FloatingPoint,
                _ => DefaultColumnType::Text,
            })
            .collect();
        let opts = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for b in &batches {
            let cols: Vec<ArrayFormatter> = b
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
                .collect::<Result<_, _>>()
                .map_err(|e| DbError(QueryError::Output(e.to_string())))?;
            for r in 0..b.num_rows() {
                rows.push(
                    cols.iter()
                        .map(|c| {
                            let v = c.value(r).to_string();
                            if v.is_empty() { "(empty)".to_string() } else { v }
                        })
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "alertflow"
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../queries/tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "the SQL behaviour files are missing from {}", dir.display());
    files
}

#[test]
fn sql_behaviour_files() {
    let files = slt_files();
    for workers in [1, 2] {
        let scratch = Scratch::new("slt");
        fixture(&scratch.0);
        let (catalog, stop, runner) = finished_catalog(&scratch.0, workers);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut failures = Vec::new();
        for file in &files {
            let stem = file.file_stem().unwrap().to_string_lossy().to_string();
            let access = match stem.strip_prefix("tenant-") {
                Some(t) => Access::Tenant(Arc::from(t)),
                None => Access::All,
            };
            let catalog = catalog.clone();
            let mut runner = sqllogictest::Runner::new(move || {
                let db = Db { catalog: catalog.clone(), access: access.clone() };
                async move { Ok::<_, DbError>(db) }
            });
            if let Err(e) = rt.block_on(runner.run_file_async(file)) {
                failures.push(format!("{} ({workers} worker(s)):\n{e}", file.display()));
            }
        }
        stop.store(true, Ordering::Release);
        runner.join().expect("the run ends when stopped");
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }
}
