//! `[output] writers`: while a run is going, every Parquet writer thread (`parquet:<table>:<n>`)
//! runs at nice +10 under the normal policy by default, and under `SCHED_IDLE` with
//! `writers = "idle"` (see `WriterPriority` for why `low` is the default). Read from
//! `/proc/self/task`, independently of the engine's own calls.
#![cfg(target_os = "linux")]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

mod common;

use alertflow_engine::{Pipeline, RunOptions, run};
use common::{temp_dir, write_paced_points};

const SCHED_OTHER: u32 = 0;
const SCHED_IDLE: u32 = 5;

/// The tests look at every writer thread of the process: one run at a time.
static ONE_RUN: Mutex<()> = Mutex::new(());

/// (policy, nice) of every live `parquet:` thread of this process: fields 41 and 19 of its
/// `stat` (counted from 1; the fields from the third follow the `)` closing the name).
fn writer_threads() -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("parquet:") {
            continue;
        }
        // The thread may have ended between the two reads.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        out.push((fields[38].parse().unwrap(), fields[16].parse().unwrap()));
    }
    out
}

/// A run paced over about a second, writing one-second files, so that its writer threads
/// live long enough to be looked at.
fn write_inputs(dir: &Path, writers: Option<&str>) {
    let setting = writers.map_or(String::new(), |w| format!("writers = \"{w}\""));
    write_paced_points(dir, "", &format!("file_span = \"1s\"\n{setting}"));
}

/// Runs the pipeline in `dir` on 2 workers; the (policy, nice) pairs its writers were seen with.
fn run_watched(dir: &Path) -> BTreeSet<(u32, i32)> {
    let seen: Arc<Mutex<BTreeSet<(u32, i32)>>> = Arc::default();
    let s2 = seen.clone();
    let progress: alertflow_engine::ProgressFn = Box::new(move |_| {
        s2.lock().unwrap().extend(writer_threads());
    });
    let pipeline = Pipeline::load(&dir.join("pipeline.toml")).unwrap();
    let summary = run(pipeline, RunOptions { workers: Some(2), progress: Some(progress), ..Default::default() }).unwrap();
    assert_eq!(summary.records_in, 5_000);
    std::mem::take(&mut *seen.lock().unwrap())
}

#[test]
fn writers_run_at_nice_ten_by_default_and_under_sched_idle_when_asked() {
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let d = temp_dir("writers-default");
    write_inputs(&d, None);
    assert_eq!(run_watched(&d), BTreeSet::from([(SCHED_OTHER, 10)]), "default: every writer at nice +10, normal policy");

    let d = temp_dir("writers-low");
    write_inputs(&d, Some("low"));
    assert_eq!(run_watched(&d), BTreeSet::from([(SCHED_OTHER, 10)]), "low");

    let d = temp_dir("writers-idle");
    write_inputs(&d, Some("idle"));
    // nice +10 is set first, so that a host refusing SCHED_IDLE still gets `low`.
    assert_eq!(run_watched(&d), BTreeSet::from([(SCHED_IDLE, 10)]), "idle: every writer under SCHED_IDLE");
}
