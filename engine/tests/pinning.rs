//! `[engine] pin_workers`: while a run is going, each timely worker thread may run on exactly
//! one CPU, a different one per worker, the first of the process's allowed CPUs in worker
//! order; the run's summary says so; and the tables are those of the same run unpinned.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

mod common;

use alertflow_engine::{Pipeline, RunOptions, run};
use common::{read_table, same, temp_dir, write_paced_points};

/// The points `write_paced_points` writes.
const POINTS: usize = 5_000;

/// The tests look at every `timely:work-N` thread of the process: one run at a time.
static ONE_RUN: Mutex<()> = Mutex::new(());

/// A CPU list as the kernel writes it (`0-3,6,8-9`).
fn parse_cpu_list(s: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// The CPUs each live `timely:work-N` thread of this process may run on, by worker index.
fn worker_masks() -> BTreeMap<usize, Vec<usize>> {
    let mut out = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let Some(index) = comm.trim().strip_prefix("timely:work-") else { continue };
        // The thread may have ended between the two reads.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        if let Some(list) = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")) {
            out.insert(index.parse().unwrap(), parse_cpu_list(list));
        }
    }
    out
}

fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    parse_cpu_list(status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap())
}

fn write_inputs(dir: &Path, pin: bool) {
    write_paced_points(dir, &format!("pin_workers = {pin}"), "");
}

/// Runs the pipeline in `dir`, looking at the worker threads' masks while it runs.
fn run_watched(dir: &Path, workers: usize) -> (alertflow_engine::RunSummary, BTreeMap<usize, Vec<Vec<usize>>>) {
    let seen: Arc<Mutex<BTreeMap<usize, Vec<Vec<usize>>>>> = Arc::default();
    let s2 = seen.clone();
    let progress: alertflow_engine::ProgressFn = Box::new(move |_| {
        let mut seen = s2.lock().unwrap();
        for (w, mask) in worker_masks() {
            seen.entry(w).or_default().push(mask);
        }
    });
    let pipeline = Pipeline::load(&dir.join("pipeline.toml")).unwrap();
    let summary = run(pipeline, RunOptions { workers: Some(workers), progress: Some(progress), ..Default::default() }).unwrap();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    (summary, seen)
}

#[test]
fn pinned_workers_run_each_on_a_cpu_of_its_own_and_give_the_same_tables() {
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let cpus = allowed_cpus();
    // Two workers where the machine allows two CPUs (CI's has two), else one.
    let workers = cpus.len().min(2);

    let pinned = temp_dir("pin-on");
    write_inputs(&pinned, true);
    let (summary, seen) = run_watched(&pinned, workers);
    assert_eq!(summary.pinned_to, cpus[..workers].to_vec(), "worker i on the i-th allowed CPU");
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), (0..workers).collect::<Vec<_>>(), "every worker was looked at while it ran");
    for (w, masks) in &seen {
        for mask in masks {
            assert_eq!(mask, &vec![cpus[*w]], "worker {w} may run only on CPU {}", cpus[*w]);
        }
    }
    // This thread was not pinned by the run.
    assert_eq!(allowed_cpus(), cpus);

    let free = temp_dir("pin-off");
    write_inputs(&free, false);
    let (summary2, seen2) = run_watched(&free, workers);
    assert!(summary2.pinned_to.is_empty());
    assert_eq!(seen2.keys().copied().collect::<Vec<_>>(), (0..workers).collect::<Vec<_>>(), "every worker was looked at while it ran");
    assert!(seen2.values().flatten().all(|mask| mask == &cpus), "unpinned workers keep the process's whole set");

    let want = read_table(&free.join("out/per_second"));
    assert_eq!(want.len(), 100 * 13, "100 one-second windows of 13 hosts");
    same(&read_table(&pinned.join("out/per_second")), &want, "per_second, pinned against not");
}

#[test]
fn more_workers_than_cpus_are_not_pinned_and_the_run_goes_on() {
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let cpus = allowed_cpus();
    let dir = temp_dir("pin-over");
    write_inputs(&dir, true);
    let (summary, seen) = run_watched(&dir, cpus.len() + 1);
    assert!(summary.pinned_to.is_empty(), "{:?}", summary.pinned_to);
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..cpus.len() + 1).collect::<Vec<_>>(),
        "every worker was looked at while it ran"
    );
    assert!(seen.values().flatten().all(|mask| mask == &cpus));
    assert_eq!(summary.records_in, POINTS as u64);
}
