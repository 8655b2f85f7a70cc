//! Bounded state (issue 7, item 3) through whole runs: a stream where every point is of a new
//! series, so nothing ever repeats.
//!
//! - A Parquet sink holding more rows of one span than its bound writes them in pieces, and
//!   the table still has every row exactly once — without checkpoints and with them (where a
//!   piece must not straddle a checkpoint), and the checkpointed run cut short and resumed ends
//!   with the same table.
//! - Caps act and are counted in the run summary: the detector's `evict_oldest` and the
//!   window's `reject_new`, and a rejected point is missing from exactly its window.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod common;

use alertflow_engine::{Pipeline, RunError, RunOptions, RunSummary, run};
use common::{read_table, same, temp_dir};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
/// Points, each of its own series, within one hour (one file span): more than two workers'
/// sinks hold before they write pieces (256 Ki rows each).
const POINTS: usize = 700_000;

fn write_points(dir: &Path) {
    let mut m = String::with_capacity(POINTS * 64);
    for i in 0..POINTS {
        // Spread over 50 minutes, in order but for a little disorder.
        let ts = T0 + (i as i64 * 3_000_000) / POINTS as i64 + (i % 7) as i64 * 100;
        writeln!(m, r#"{{"ts":{ts},"name":"cpu","value":{},"host":"h{i}"}}"#, (i % 1000) as f64 / 10.0).unwrap();
    }
    std::fs::write(dir.join("points.ndjson"), m).unwrap();
}

fn pipeline(engine: &str, extra: &str) -> String {
    format!(
        r#"
[engine]
epoch = "1s"
{engine}

[[source]]
name = "points"
type = "file"
path = "points.ndjson"
records = "metrics"
chunk_size = "1MiB"

[[aggregate]]
name = "per_minute"
input = "points"
window = {{ type = "tumbling", size = "1m" }}
group_by = ["host"]
functions = ["count", "avg"]
{extra}

[output]
path = "out"
fsync = false
"#
    )
}

fn run_in(dir: &Path, text: &str, workers: usize, cancel_after: Option<Duration>) -> Result<RunSummary, RunError> {
    std::fs::write(dir.join("pipeline.toml"), text).unwrap();
    let pipeline = Pipeline::load(&dir.join("pipeline.toml")).unwrap();
    let mut opts = RunOptions { workers: Some(workers), ..RunOptions::default() };
    if let Some(after) = cancel_after {
        let flag = Arc::new(AtomicBool::new(false));
        opts.cancel = Some(flag.clone());
        std::thread::spawn(move || {
            std::thread::sleep(after);
            flag.store(true, Ordering::Release);
        });
    }
    run(pipeline, opts)
}

fn files(dir: &Path) -> usize {
    fn walk(d: &Path) -> usize {
        std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| if e.path().is_dir() { walk(&e.path()) } else { usize::from(e.file_name().to_string_lossy().starts_with("part-")) })
            .sum()
    }
    walk(dir)
}

#[test]
fn a_span_with_ever_new_keys_is_written_in_pieces_and_every_row_once() {
    let dir = temp_dir("bounded-pieces");
    write_points(&dir);
    // The expected table: one row per point (each its own series and window).
    let plain = run_in(&dir, &pipeline("", ""), 2, None).unwrap();
    let table = dir.join("out/per_minute");
    let want = read_table(&table);
    assert_eq!(want.len(), POINTS, "one row per series");
    assert!(plain.state_bounds.is_empty(), "nothing bounded by default: {:?}", plain.state_bounds);
    // One hour span per worker (and partition) would be 2 files; pieces make more.
    assert!(files(&table) > 2, "no pieces: {} files", files(&table));

    // With checkpoints: the same table, also when cut short and resumed.
    let ckpt = r#"state_dir = "state"
checkpoint_interval = "10s"
checkpoint_min_wall_interval = "10ms""#;
    let s = run_in(&dir, &pipeline(ckpt, ""), 2, None).unwrap();
    assert!(s.checkpoints.as_ref().is_some_and(|c| c.committed > 0), "{:?}", s.checkpoints);
    same(&read_table(&table), &want, "checkpointed run");
    assert!(files(&table) > 2);
    // Each attempt resumes from the last checkpoint and runs longer than the one before
    // (geometrically, so that a debug build, ten times slower, gets there too).
    for attempt in 0.. {
        assert!(attempt < 30, "the run never completed");
        let after = Duration::from_millis((150.0 * 1.5f64.powi(attempt)) as u64);
        match run_in(&dir, &pipeline(ckpt, ""), 2, Some(after)) {
            Ok(_) => break,
            Err(RunError::Failed(m)) => assert!(m.contains("cancelled"), "{m}"),
            Err(e) => panic!("{e}"),
        }
    }
    same(&read_table(&table), &want, "checkpointed run cut short and resumed");
}

#[test]
fn caps_act_and_are_counted_in_the_summary() {
    let dir = temp_dir("bounded-caps");
    write_points(&dir);
    let extra = r#"state = { max_keys = 5000 }

[[detect]]
name = "anomalies"
input = "points"
detector = "zscore"
state = { max_keys = 1000 }"#;
    let s = run_in(&dir, &pipeline("", extra), 2, None).unwrap();
    let bound = |op: &str| s.state_bounds.iter().find(|b| b.operator == op).unwrap_or_else(|| panic!("no {op} in {:?}", s.state_bounds));
    let (agg, det) = (bound("aggregate"), bound("detect"));
    // Every series is new: the detector holds 1,000 and evicts the rest, one by one.
    assert_eq!((det.evicted, det.rejected, det.expired), (POINTS as u64 - 1000, 0, 0), "{det:?}");
    // A window holds 5,000 series (2,500 per worker): the rest of each minute is rejected,
    // and every point is either a row or counted as rejected.
    let rows = read_table(&dir.join("out/per_minute")).len() as u64;
    assert!(agg.rejected > 0 && agg.evicted == 0, "{agg:?}");
    assert_eq!(rows + agg.rejected, POINTS as u64, "{agg:?}, {rows} rows");
}
