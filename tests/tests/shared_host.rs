//! A run on a host that other processes keep busy: one busy loop per CPU beside W1 (2,000,000
//! points, file → 1-minute window → Parquet, 2 workers, default settings). It gets a fair
//! share of the cores and finishes in a few seconds. When the Parquet writers ran under
//! `SCHED_IDLE` by default they got almost no CPU beside the loops, back-pressure held the
//! workers to their pace, and the same run took 68.6 s instead of 2.8 s on 2 cores
//! (BENCHMARKS, "Writers under load"); in CI it made the Kafka cluster test's kill land after
//! the run had ended.
//!
//! The bound is loose on purpose (about 9× the loaded run here): it tells a fair share from
//! starvation, not a fast machine from a slow one.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alertflow_tests::cluster::finish;
use alertflow_tests::{Scratch, bin, workspace};
use alertflow_tools::datagen::{MetricsGen, generate_metrics};

/// Busy loops in processes of their own, killed when dropped.
struct BusyLoops(Vec<Child>);

impl BusyLoops {
    fn one_per_cpu() -> BusyLoops {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        BusyLoops((0..n).map(|_| Command::new("sh").args(["-c", "while :; do :; done"]).spawn().expect("start sh")).collect())
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_run_beside_busy_processes_gets_its_share_of_the_cores() {
    let dir = Scratch::new("shared-host");
    std::fs::copy(workspace().join("examples/pipeline.toml"), dir.join("pipeline.toml")).unwrap();
    let spec = MetricsGen { series: 10_000, points: 2_000_000, seed: 1, disorder_ms: 2_000, ..MetricsGen::default() };
    generate_metrics(&spec, std::fs::File::create(dir.join("points.ndjson")).unwrap()).unwrap();
    let pipeline = dir.join("pipeline.toml");

    let _loops = BusyLoops::one_per_cpu();
    let t = Instant::now();
    let child = Command::new(bin())
        .args(["run", &pipeline.to_string_lossy(), "--workers", "2", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (ok, out, err) = finish(child, Duration::from_secs(25), "W1 beside one busy loop per CPU (starved?)");
    assert!(ok, "the run failed:\n{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["records_in"], 2_000_000);
    assert!(s["tables"][0]["rows"].as_u64().unwrap() > 0, "{out}");
    eprintln!("W1 beside busy loops: {:.2} s", t.elapsed().as_secs_f64());
}
