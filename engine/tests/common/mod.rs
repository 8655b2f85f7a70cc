//! Helpers the engine's integration tests share: scratch folders, and tables read back from
//! their Parquet files.

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// A scratch folder, removed when dropped (kept when the test panics, for inspection): the
/// tests leave nothing behind in the temp folder of a CI machine that runs them again and again.
pub struct TempDir(pub PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn temp_dir(name: &str) -> TempDir {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!("af-{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

/// A table's rows as sorted CSV-like lines (times as integer milliseconds).
pub type Table = Vec<String>;

/// A table as sorted lines (one per row, every column), read from all its Parquet files under `dir`.
pub fn read_table(dir: &Path) -> Table {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.file_name().unwrap().to_string_lossy().starts_with("part-") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    let mut rows = Vec::new();
    for f in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap()).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let opts = FormatOptions::default();
            // Times as integers (formatting a "UTC" zone needs chrono-tz).
            let cols: Vec<_> = batch
                .columns()
                .iter()
                .map(|c| match c.data_type() {
                    DataType::Timestamp(..) => arrow::compute::cast(c, &DataType::Int64).unwrap(),
                    _ => c.clone(),
                })
                .collect();
            let cols: Vec<_> = cols.iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap()).collect();
            for i in 0..batch.num_rows() {
                rows.push(cols.iter().map(|c| c.value(i).to_string()).collect::<Vec<_>>().join(","));
            }
        }
    }
    rows.sort();
    rows
}

/// Asserts equal tables, showing the sizes and a few rows only one side has.
pub fn same(got: &Table, want: &Table, what: &str) {
    if got == want {
        return;
    }
    let only = |a: &Table, b: &Table| a.iter().filter(|r| b.binary_search(r).is_err()).take(5).cloned().collect::<Vec<_>>();
    panic!(
        "{what}: {} rows, want {}\nonly in the result: {:#?}\nonly in the expected: {:#?}",
        got.len(),
        want.len(),
        only(got, want),
        only(want, got)
    );
}

/// A seeded generator (a 64-bit LCG, the high bits): the same inputs for a seed on every run.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next value (31 bits).
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// A value below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 5,000 points of 13 hosts, 20 ms apart from 2026-01-01T00:00:00Z, and a pipeline that
/// replays them over about a second into 1-second windows (`per_second`: 100 windows × 13
/// hosts): long enough for a test to look at the run's threads while it goes. `engine` and
/// `output` are extra lines for those sections.
pub fn write_paced_points(dir: &Path, engine: &str, output: &str) {
    use std::fmt::Write as _;
    const T0: i64 = 1_767_225_600_000;
    let mut m = String::new();
    for i in 0..5_000 {
        let ts = T0 + i as i64 * 20;
        writeln!(m, r#"{{"ts":{ts},"name":"cpu","value":{},"host":"h{}"}}"#, i % 100, i % 13).unwrap();
    }
    std::fs::write(dir.join("points.ndjson"), m).unwrap();
    let text = format!(
        r#"
[engine]
{engine}

[[source]]
name = "points"
type = "file"
path = "points.ndjson"
records = "metrics"
chunk_size = "16KiB"
replay_rate = 5000

[[aggregate]]
name = "per_second"
input = "points"
window = {{ type = "tumbling", size = "1s" }}
group_by = ["host"]
functions = ["count", "avg", "max"]

[output]
path = "out"
fsync = false
{output}
"#
    );
    std::fs::write(dir.join("pipeline.toml"), text).unwrap();
}
