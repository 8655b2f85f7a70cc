//! Checkpoints and recovery (issue 7): a pipeline with every stateful operator — tumbling,
//! hopping and session windows, a rule, a detector raising alerts, dedup, storm suppression,
//! correlation with a topology — is cut short at random moments and restarted, again and
//! again, and must end with exactly the tables of an uninterrupted run: every row, every
//! revision, every dead letter, nothing lost and nothing doubled. At 1, 2 and 4 workers, on
//! seeded data with disorder, late and bad records.
//!
//! A cut is the run's `cancel` (in this process: every sink stops writing at once and nothing
//! more is committed, as after a crash); `tests/tests/checkpoint_kill.rs` does the same with
//! `kill -9` on the binary. A stop (`RunOptions::stop`, what SIGTERM does) ends the run at a
//! checkpoint and must resume from it just as well.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod common;

use alertflow_engine::{Pipeline, RunError, RunOptions, run};
use common::{Lcg, Table, read_table, same, temp_dir};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const METRIC_LINES: usize = 60_000;
const ALERT_LINES: usize = 20_000;

/// Metric points of 12 series over ~4 hours, a point a quarter second apart per series on
/// average, shuffled up to 3 s (within the 5 s disorder allowed), with late points (30 s
/// behind) and broken lines now and then; alerts of 40 services over the same hours, firing
/// in bursts (storms) and resolving.
fn write_inputs(dir: &Path, seed: u64) {
    let mut r = Lcg(seed);
    let mut m = String::new();
    for i in 0..METRIC_LINES {
        let base = T0 + (i as i64) * 250;
        let ts = match r.below(1000) {
            0..=4 => base - 30_000,
            _ => base + r.below(3000) as i64 - 1500,
        };
        let host = r.below(6);
        let name = if r.below(2) == 0 { "cpu" } else { "mem" };
        let spike = if r.below(500) == 0 { 400.0 } else { 0.0 };
        let v = 50.0 + 30.0 * ((i as f64) / 900.0).sin() + (r.below(1000) as f64) / 100.0 + spike;
        match r.below(2000) {
            0 => m.push_str("{\"ts\": oops\n"),
            _ => writeln!(m, r#"{{"ts":{ts},"name":"{name}","value":{v},"host":"h{host}","dc":"dc{}"}}"#, host % 2).unwrap(),
        }
    }
    std::fs::write(dir.join("metrics.ndjson"), m).unwrap();

    let mut a = String::new();
    let mut firing = [false; 120];
    for i in 0..ALERT_LINES {
        let ts = T0 + (i as i64) * 700 + r.below(2000) as i64;
        // Bursts: every ~20 minutes of event time, many services fire at once.
        let burst = (i / 200) % 9 == 0;
        let k = if burst { r.below(120) } else { r.below(30) } as usize;
        let status = if firing[k] && r.below(3) == 0 { "resolved" } else { "firing" };
        firing[k] = status == "firing";
        let service = format!("svc{}", k % 40);
        let sev = ["critical", "warning", "info"][k % 3];
        match r.below(3000) {
            0 => a.push_str("{\"alertname\":\n"),
            _ => writeln!(
                a,
                r#"{{"ts":{ts},"alertname":"Alert{}","severity":"{sev}","status":"{status}","service":"{service}","instance":"i{k}","annotations":{{"summary":"s{k}"}}}}"#,
                k % 7
            )
            .unwrap(),
        }
    }
    std::fs::write(dir.join("alerts.ndjson"), a).unwrap();

    let mut topo = String::from("service,depends_on,team,tier\n");
    for s in 0..40 {
        writeln!(topo, "svc{s},svc{},team{},{}", (s + 1) % 40, s % 5, s % 3).unwrap();
    }
    std::fs::write(dir.join("topology.csv"), topo).unwrap();
}

/// The pipeline; `rate` paces the sources (lines per second) so a run lasts long enough to
/// be cut several times.
fn pipeline_text(rate: u64) -> String {
    format!(
        r#"
[engine]
epoch = "1s"
state_dir = "state"
checkpoint_interval = "10s"
checkpoint_min_wall_interval = "10ms"

[[source]]
name = "points"
type = "file"
path = "metrics.ndjson"
records = "metrics"
chunk_size = "256KiB"
replay_rate = {rate}

[[source]]
name = "alerts"
type = "file"
path = "alerts.ndjson"
records = "alerts"
chunk_size = "128KiB"
replay_rate = {arate}

[[aggregate]]
name = "per_minute"
input = "points"
window = {{ type = "tumbling", size = "1m" }}
group_by = ["host"]
functions = ["count", "sum", "avg", "min", "max", "last", "stddev", "p95"]

[[aggregate]]
name = "hopping"
input = "points"
window = {{ type = "hopping", size = "5m", slide = "1m" }}
group_by = ["dc"]
functions = ["count", "avg", "p50"]

[[aggregate]]
name = "sessions"
input = "points"
window = {{ type = "session", gap = "2s" }}
group_by = ["host"]
functions = ["count", "max"]

[[rule]]
name = "HighCpu"
input = "per_minute"
metrics = ["cpu"]
when = "avg > 70"
for = "2m"
severity = "warning"

[[detect]]
name = "anomalies"
input = "points"
metrics = ["cpu"]
detector = "mad"
threshold = 0.99
raise_alerts = true

[suppress]
group_by = ["alertname"]
threshold = 8
window = "2m"

[correlate]
group_by = ["service"]
topology = "topology.csv"

[output]
path = "out"
file_span = "30m"
fsync = false
"#,
        arate = rate / 3
    )
}

const TABLES: [&str; 9] =
    ["per_minute", "hopping", "sessions", "anomalies", "alerts", "storms", "incidents", "dead_letters", "dead_letters"];

fn tables(dir: &Path) -> Vec<(String, Table)> {
    TABLES[..8].iter().map(|t| (t.to_string(), read_table(&dir.join("out").join(t)))).collect()
}

fn setup(name: &str, seed: u64, rate: u64) -> common::TempDir {
    let d = temp_dir(name);
    write_inputs(&d, seed);
    std::fs::write(d.join("pipeline.toml"), pipeline_text(rate)).unwrap();
    d
}

/// Runs once; `cut_after` cancels the run (as a crash) or asks it to stop (as SIGTERM).
fn run_once(dir: &Path, workers: usize, cut: Option<(Duration, bool)>) -> Result<alertflow_engine::RunSummary, RunError> {
    let pipeline = Pipeline::load(&dir.join("pipeline.toml")).unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let mut opts = RunOptions { workers: Some(workers), ..RunOptions::default() };
    if let Some((after, stop)) = cut {
        if stop {
            opts.stop = Some(flag.clone());
        } else {
            opts.cancel = Some(flag.clone());
        }
        let f = flag.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            f.store(true, Ordering::Release);
        });
    }
    run(pipeline, opts)
}

fn check_same(got: &[(String, Table)], want: &[(String, Table)], what: &str) {
    for ((name, g), (_, w)) in got.iter().zip(want) {
        same(g, w, &format!("{what}: table `{name}`"));
    }
}

/// Cuts runs short at seeded random moments until one completes; returns (cuts, resumes).
fn cut_until_done(dir: &Path, workers: usize, seed: u64, stop: bool) -> (usize, usize) {
    let mut r = Lcg(seed);
    let (mut cuts, mut resumes) = (0, 0);
    for attempt in 0.. {
        assert!(attempt < 40, "the run never completed");
        let resuming = dir.join("state/CURRENT").exists();
        // The first cuts early, later ones anywhere in a run (about 1.5 s unpaced by cuts).
        let after = Duration::from_millis(50 + r.below(if attempt < 2 { 300 } else { 1200 }));
        match run_once(dir, workers, Some((after, stop))) {
            Ok(s) => {
                let c = s.checkpoints.expect("a run with state_dir reports checkpoints");
                assert!(c.committed > 0 || c.resumed_from > 0, "no checkpoint in a whole run: {c:?}");
                assert!(!dir.join("state/CURRENT").exists(), "a completed run leaves nothing to resume");
                return (cuts, resumes);
            }
            Err(RunError::Stopped(m)) if stop => assert!(m.contains("checkpoint"), "{m}"),
            Err(RunError::Failed(m)) if !stop => assert!(m.contains("cancelled"), "{m}"),
            Err(e) => panic!("attempt {attempt}: {e}"),
        }
        cuts += 1;
        resumes += usize::from(resuming);
    }
    unreachable!()
}

#[test]
fn runs_cut_short_and_resumed_end_with_the_tables_of_an_uninterrupted_run() {
    for (workers, seed) in [(1, 11), (2, 22), (4, 44)] {
        let reference = setup("ckpt-ref", seed, 60_000);
        let s = run_once(&reference, workers, None).unwrap();
        let c = s.checkpoints.clone().unwrap();
        assert!(c.committed >= 1, "{workers} worker(s): the uninterrupted run took no checkpoint");
        assert!(s.records_out > 0 && s.dead_letters > 0 && s.late > 0, "{s:?}");
        let want = tables(&reference);
        for (name, t) in &want {
            assert!(!t.is_empty(), "{workers} worker(s): table `{name}` is empty: the test would prove little");
        }

        let cut = setup("ckpt-cut", seed, 60_000);
        let (cuts, resumes) = cut_until_done(&cut, workers, seed * 7, false);
        assert!(cuts >= 2 && resumes >= 1, "{workers} worker(s): {cuts} cut(s), {resumes} resumed: too few to prove anything");
        check_same(&tables(&cut), &want, &format!("{workers} worker(s), {cuts} cut(s), {resumes} resumed"));
    }
}

#[test]
fn a_stop_ends_the_run_at_a_checkpoint_and_the_next_run_resumes_from_it() {
    let reference = setup("ckpt-stop-ref", 5, 60_000);
    run_once(&reference, 2, None).unwrap();
    let want = tables(&reference);
    let d = setup("ckpt-stop", 5, 60_000);
    let (stops, resumes) = cut_until_done(&d, 2, 99, true);
    assert!(stops >= 1 && resumes >= 1, "{stops} stop(s), {resumes} resumed");
    check_same(&tables(&d), &want, &format!("{stops} stop(s)"));
}

#[test]
fn a_checkpoint_of_another_worker_count_or_pipeline_is_refused_and_the_output_kept() {
    let d = setup("ckpt-refuse", 3, 30_000);
    let e = run_once(&d, 2, Some((Duration::from_millis(900), true))).unwrap_err();
    assert!(matches!(e, RunError::Stopped(_)), "{e}");
    assert!(d.join("state/CURRENT").exists(), "the stop left no checkpoint");
    let before = read_table(&d.join("out/per_minute"));
    let e = run_once(&d, 3, None).unwrap_err().to_string();
    assert!(e.contains("2 worker(s)") && e.contains("--workers 2"), "{e}");
    // Another pipeline: a different window.
    let text = std::fs::read_to_string(d.join("pipeline.toml")).unwrap().replace("size = \"1m\"", "size = \"2m\"");
    std::fs::write(d.join("pipeline.toml"), text).unwrap();
    let e = run_once(&d, 2, None).unwrap_err().to_string();
    assert!(e.contains("different pipeline"), "{e}");
    assert_eq!(read_table(&d.join("out/per_minute")), before, "a refused resume must not touch the output");
}
