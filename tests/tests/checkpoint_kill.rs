//! The acceptance test of checkpoints (issue 7), on the release binary: the metric and alert
//! pipelines, each over its own large generated file, `kill -9` at 20 seeded random moments
//! (10 each; half of them just after a run's own checkpoint commit) over many runs,
//! each restart resuming from the last checkpoint, and then SIGTERM several times (each must
//! exit 0 within a bounded time at a checkpoint); the final tables must be identical — every
//! row, every revision — to an uninterrupted run's.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alertflow_tests::{Lcg, Scratch, alertflow, bin, run_json, sorted_tables};

const METRIC_TABLES: [&str; 4] = ["per_minute", "hopping", "anomalies", "dead_letters"];
const ALERT_TABLES: [&str; 4] = ["alerts", "storms", "incidents", "dead_letters"];

/// The metric pipeline (windows, a detector) or the alert pipeline (dedup, storms,
/// incidents with a topology), each over its own large file.
fn pipeline(dir: &Path, alerts: bool) {
    let head = r#"
[engine]
state_dir = "state"
checkpoint_interval = "10s"
checkpoint_min_wall_interval = "100ms"

[output]
path = "out"
file_span = "30m"
fsync = false
"#;
    let body = if alerts {
        r#"
[[source]]
name = "alerts"
type = "file"
path = "../gen/alerts.ndjson"
records = "alerts"

[suppress]
threshold = 20

[correlate]
topology = "../gen/topology.csv"
"#
    } else {
        r#"
[[source]]
name = "points"
type = "file"
path = "../points.ndjson"
records = "metrics"

[[aggregate]]
name = "per_minute"
input = "points"
window = { type = "tumbling", size = "1m" }
group_by = ["host"]
functions = ["count", "sum", "avg", "max", "p99"]

[[aggregate]]
name = "hopping"
input = "points"
window = { type = "hopping", size = "5m", slide = "1m" }
functions = ["count", "avg", "p50"]

[[detect]]
name = "anomalies"
input = "points"
metrics = ["cpu"]
detector = "zscore"
threshold = 0.999
"#
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("pipeline.toml"), format!("{head}{body}")).unwrap();
}

fn start(dir: &Path) -> std::process::Child {
    Command::new(bin())
        .args(["run", &dir.join("pipeline.toml").to_string_lossy(), "--workers", "2", "--json"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Kills per pipeline: 20 over the two.
const KILLS: usize = 10;

#[test]
fn kill_9_and_sigterm_at_random_moments_end_with_the_tables_of_an_uninterrupted_run() {
    let dir = Scratch::new("checkpoint-kill");
    let out = alertflow(&[
        "gen",
        "metrics",
        "--series",
        "3000",
        "--points",
        "1500000",
        "--seed",
        "3",
        "--malformed",
        "40",
        "--out",
        &dir.join("points.ndjson").to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = alertflow(&["gen", "alerts", "--out", &dir.join("gen").to_string_lossy(), "--incidents", "400", "--duration", "12h"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    for (kind, alerts, names) in [("metrics", false, &METRIC_TABLES[..]), ("alerts", true, &ALERT_TABLES[..])] {
        kill_and_resume(&dir, kind, alerts, names);
    }
}

fn kill_and_resume(dir: &Scratch, kind: &str, alerts: bool, names: &[&str]) {
    let reference = dir.join(&format!("{kind}-ref"));
    pipeline(&reference, alerts);
    let t = Instant::now();
    let s = run_json(&reference.join("pipeline.toml"), 2);
    let full = t.elapsed();
    assert!(s["checkpoints"]["committed"].as_u64().unwrap() >= 1, "{kind}: {s}");
    let want = sorted_tables(&reference, names);
    for (name, rows) in &want {
        // (The generated alerts have no bad lines.)
        assert!(!rows.is_empty() || (alerts && name == "dead_letters"), "table `{name}` is empty: the test would prove little");
    }

    let d = dir.join(&format!("{kind}-killed"));
    pipeline(&d, alerts);
    let mut r = Lcg(2026);
    let (mut kills, mut resumed, mut runs) = (0, 0, 0);
    // 10 kills at random moments of a run (the uninterrupted one took `full`).
    while kills < KILLS {
        assert!(runs < 60, "after {runs} runs only {kills} kills: the runs end too soon");
        runs += 1;
        if d.join("state/CURRENT").exists() {
            resumed += 1;
        }
        let before = std::fs::read(d.join("state/CURRENT")).ok();
        let mut child = start(&d);
        if r.below(2) == 0 {
            // Anywhere in a run: often before its first checkpoint.
            std::thread::sleep(Duration::from_millis(100 + r.below(full.as_millis().max(200) as u64)));
        } else {
            // Just after this run committed a checkpoint of its own, so that the next run
            // resumes from it whatever this machine's fsync costs (a CI disk made the first
            // commit come late enough that random moments all fell before it).
            let t = Instant::now();
            while std::fs::read(d.join("state/CURRENT")).ok() == before && child.try_wait().unwrap().is_none() {
                assert!(t.elapsed() < Duration::from_secs(120), "no checkpoint committed in 120 s");
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(r.below(200)));
        }
        if child.try_wait().unwrap().is_some() {
            // It finished before the kill: start over so every kill lands in a run.
            std::fs::remove_dir_all(d.join("state")).ok();
            continue;
        }
        assert!(Command::new("kill").args(["-9", &child.id().to_string()]).status().unwrap().success());
        let _ = child.wait();
        kills += 1;
    }
    assert!(resumed >= 3, "only {resumed} of {runs} runs resumed from a checkpoint");

    // SIGTERM: each run exits 0 within a bounded time, at a checkpoint.
    let mut terms = 0;
    loop {
        assert!(runs < 80, "after {runs} runs only {terms} SIGTERM: the runs end too soon");
        runs += 1;
        let mut child = start(&d);
        std::thread::sleep(Duration::from_millis(200 + r.below((full.as_millis() as u64 / 2).clamp(100, 700))));
        if child.try_wait().unwrap().is_some() || terms == 3 {
            let status = child.wait().unwrap();
            assert!(status.success(), "the last run failed: {status}");
            if terms == 3 {
                break;
            }
            // Too little was left for a SIGTERM to land in a run: start over (the output of
            // a run from scratch replaces what is there, as after a kill before a checkpoint).
            std::fs::remove_dir_all(d.join("state")).ok();
            continue;
        }
        assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
        let t = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(t.elapsed() < Duration::from_secs(40), "SIGTERM: still running after 40 s");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(status.success(), "SIGTERM must exit 0, got {status}: {err}");
        if !err.contains("stopping") && !d.join("state/CURRENT").exists() {
            // The run completed between the look and the signal (a completed run removes its
            // checkpoints, and the signal found no handler any more): start over, as above.
            std::fs::remove_dir_all(d.join("state")).ok();
            continue;
        }
        assert!(err.contains("checkpoint"), "SIGTERM: {err}");
        terms += 1;
    }
    assert!(!d.join("state/CURRENT").exists(), "a completed run leaves nothing to resume");
    let got = sorted_tables(&d, names);
    for ((name, g), (_, w)) in got.iter().zip(&want) {
        let only = |a: &Vec<String>, b: &Vec<String>| a.iter().filter(|x| b.binary_search(x).is_err()).take(3).cloned().collect::<Vec<_>>();
        assert!(
            g == w,
            "{kind}: table `{name}`: {} rows, want {}; only got: {:?}; only want: {:?}",
            g.len(),
            w.len(),
            only(g, w),
            only(w, g)
        );
    }
    eprintln!("{kind}: {kills} kill -9 and {terms} SIGTERM over {runs} runs ({resumed} resumed); an uninterrupted run took {full:?}");
}
