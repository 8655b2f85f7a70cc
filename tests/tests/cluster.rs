//! Cluster mode (issue 8) on the binary: the metric and alert pipelines run as 2 and 3
//! processes on 127.0.0.1 (one worker each, timely's TCP between them) write exactly the
//! tables of one process with as many worker threads; the first process serves live tables
//! and `/metrics` for the whole cluster; a killed process stops the others with a clear error
//! (never a hang); a missing or mismatched peer fails start-up clearly, and a bad cluster
//! configuration touches nothing; HTTP pushes to the first process reach every worker, and a
//! signal to either process stops both; a cluster killed at random moments resumes from its
//! checkpoints. (Kafka in a cluster: `kafka_e2e`.)

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use alertflow_tests::cluster::{finish, hostfile, start};
use alertflow_tests::{Lcg, PUSHED_SAMPLES, Running, Scratch, alertflow, free_port, http, query_csv, run_json, sorted_tables};

const METRIC_TABLES: [&str; 5] = ["per_minute", "hopping", "sessions", "anomalies", "dead_letters"];
const ALERT_TABLES: [&str; 4] = ["alerts", "storms", "incidents", "dead_letters"];

const METRICS: &str = r#"
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
functions = ["count", "sum", "avg", "max", "p99", "last"]

[[aggregate]]
name = "hopping"
input = "points"
window = { type = "hopping", size = "5m", slide = "1m" }
functions = ["count", "avg", "p50"]

[[aggregate]]
name = "sessions"
input = "points"
window = { type = "session", gap = "2m" }
group_by = ["host"]
functions = ["count", "max"]

[[detect]]
name = "anomalies"
input = "points"
metrics = ["cpu"]
detector = "zscore"
threshold = 0.99
"#;

const ALERTS: &str = r#"
[[source]]
name = "alerts"
type = "file"
path = "../gen/alerts.ndjson"
records = "alerts"

[suppress]
threshold = 20

[correlate]
topology = "../gen/topology.csv"
"#;

/// Writes `dir/pipeline.toml`: `body` with an output folder and `extra` sections.
fn pipeline(dir: &Path, body: &str, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, format!("{extra}\n{body}\n[output]\npath = \"out\"\nfile_span = \"30m\"\nfsync = false\n")).unwrap();
    p
}

/// Runs a pipeline as a cluster of `n` one-worker processes; returns each process's summary.
fn run_cluster(dir: &Path, body: &str, n: usize) -> Vec<serde_json::Value> {
    let p = pipeline(dir, body, "");
    let hosts = hostfile(dir, n);
    // Started in reverse, so that the later processes wait for the earlier ones to listen.
    let children: Vec<Child> = (0..n).rev().map(|i| start(&p, &hosts, n, i, 1)).collect();
    let mut summaries: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| {
            let (ok, out, err) = finish(c, Duration::from_secs(600), "a cluster process");
            assert!(ok, "a process of {n} failed:\nstdout: {out}\nstderr: {err}");
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("summary: {e}: {out}"))
        })
        .collect();
    summaries.reverse();
    summaries
}

/// The worker indices in the names of a table's files (`part-<worker>-…`).
fn file_workers(table_dir: &Path) -> std::collections::BTreeSet<usize> {
    fn walk(d: &Path, out: &mut std::collections::BTreeSet<usize>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if let Some(w) = p.file_name().unwrap().to_string_lossy().strip_prefix("part-").and_then(|r| r.split('-').next()) {
                out.insert(w.parse().unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(table_dir, &mut out);
    out
}

fn generate(dir: &Scratch) {
    let out = alertflow(&[
        "gen",
        "metrics",
        "--series",
        "400",
        "--points",
        "240000",
        "--seed",
        "8",
        "--malformed",
        "30",
        "--out",
        &dir.join("points.ndjson").to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = alertflow(&["gen", "alerts", "--out", &dir.join("gen").to_string_lossy(), "--incidents", "150", "--duration", "6h"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn two_and_three_processes_write_the_tables_of_one_process_with_as_many_workers() {
    let dir = Scratch::new("cluster-tables");
    generate(&dir);
    for (kind, body, names) in [("metrics", METRICS, &METRIC_TABLES[..]), ("alerts", ALERTS, &ALERT_TABLES[..])] {
        for n in [2, 3] {
            let reference = dir.join(&format!("{kind}-ref-{n}"));
            let want_summary = run_json(&pipeline(&reference, body, ""), n);
            let want = sorted_tables(&reference, names);
            for (name, rows) in &want {
                // (The generated alerts have no bad lines.)
                assert!(!rows.is_empty() || name == "dead_letters", "{kind}: table `{name}` is empty: the test would prove little");
            }

            let c = dir.join(&format!("{kind}-cluster-{n}"));
            let summaries = run_cluster(&c, body, n);
            let got = sorted_tables(&c, names);
            for ((name, w), (_, g)) in want.iter().zip(&got) {
                assert_eq!(w.len(), g.len(), "{kind}, {n} processes: table `{name}` has {} rows, one process {}", g.len(), w.len());
                assert!(w == g, "{kind}, {n} processes: table `{name}` differs from one process with {n} workers");
            }
            // Every process wrote its own workers' files, named by global worker index.
            let workers: std::collections::BTreeSet<usize> = names.iter().flat_map(|t| file_workers(&c.join("out").join(t))).collect();
            assert_eq!(workers, (0..n).collect(), "{kind}, {n} processes: files by worker");
            // Each process's summary covers the cluster (gathered counters).
            for (i, s) in summaries.iter().enumerate() {
                assert_eq!(s["cluster"]["processes"], n, "{s}");
                assert_eq!(s["cluster"]["process_id"], i, "{s}");
                assert_eq!(s["cluster"]["workers_total"], n, "{s}");
                for k in ["records_in", "records_out", "dead_letters", "late", "bytes_in"] {
                    assert_eq!(s[k], want_summary[k], "{kind}, process {i} of {n}: `{k}` is not the cluster's");
                }
                for (t, w) in s["tables"].as_array().unwrap().iter().zip(want_summary["tables"].as_array().unwrap()) {
                    assert_eq!(t["rows"], w["rows"], "{kind}, process {i} of {n}: rows of {}", t["table"]);
                }
            }
        }
    }
}

/// The live tables' contents and the source and table counters of `/metrics`, once the
/// pipeline has finished (the live snapshot complete).
fn served(port: u16) -> (Vec<String>, Vec<String>) {
    let t = Instant::now();
    loop {
        assert!(t.elapsed() < Duration::from_secs(300), "the served pipeline did not finish");
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let (status, page) = http(([127, 0, 0, 1], port).into(), "GET", "/metrics", None, "");
            // Done: the watermark has passed everything (+Inf), and every live table's
            // snapshot with it.
            let done = |m: &str| page.lines().filter(|l| l.starts_with(m)).all(|l| l.ends_with("+Inf"));
            if status == 200
                && page.contains("alertflow_live_snapshot_watermark_seconds")
                && done("alertflow_watermark_seconds")
                && done("alertflow_live_snapshot_watermark_seconds")
            {
                let mut live = Vec::new();
                for t in ["per_minute_latest", "hopping_latest", "sessions_latest"] {
                    let (status, body) =
                        http(([127, 0, 0, 1], port).into(), "POST", "/sql?format=csv", None, &format!("SELECT * FROM {t}"));
                    assert_eq!(status, 200, "{t}: {body}");
                    let mut rows: Vec<String> = body.lines().skip(1).map(|l| format!("{t}: {l}")).collect();
                    rows.sort();
                    live.extend(rows);
                }
                let counters = page
                    .lines()
                    .filter(|l| {
                        [
                            "alertflow_source_records_total",
                            "alertflow_source_dead_letters_total",
                            "alertflow_table_rows_total",
                            "alertflow_operator_records_in_total",
                        ]
                        .iter()
                        .any(|m| l.starts_with(m))
                    })
                    .map(String::from)
                    .collect();
                return (live, counters);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_first_process_serves_live_tables_and_metrics_for_the_whole_cluster() {
    let dir = Scratch::new("cluster-serve");
    generate(&dir);
    let serve = |port: u16| format!("[serve]\nhttp = \"127.0.0.1:{port}\"\nlive_refresh = \"50ms\"\n");

    let port = free_port();
    let reference = Running::start(&pipeline(&dir.join("ref"), METRICS, &serve(port)), 2);
    let (want_live, want_metrics) = served(port);
    drop(reference);
    // (Live tables of aggregates keep every group's latest window at the end; the alert
    // chain's hold only what is still open, which at the end of a file is nothing.)
    assert!(want_live.len() > 400, "few live rows: the test would prove little: {}", want_live.len());

    let c = dir.join("cluster");
    let port = free_port();
    let p = pipeline(&c, METRICS, &serve(port));
    let hosts = hostfile(&c, 2);
    let second = start(&p, &hosts, 2, 1, 1);
    let first = Running(start(&p, &hosts, 2, 0, 1));
    // The second process serves nothing and ends with the pipeline.
    let (ok, out, err) = finish(second, Duration::from_secs(300), "process 1");
    assert!(ok, "process 1 failed:\nstdout: {out}\nstderr: {err}");
    let (live, metrics) = served(port);
    drop(first);
    assert_eq!(live, want_live, "the live tables served by process 0 differ from one process's");
    assert_eq!(metrics, want_metrics, "/metrics of process 0 does not cover the cluster");
}

#[test]
fn a_killed_process_stops_the_others_with_a_clear_error_and_no_hang() {
    let dir = Scratch::new("cluster-kill");
    generate(&dir);
    // Paced, so that the run is still going when a process is killed.
    let paced = METRICS.replace("records = \"metrics\"", "records = \"metrics\"\nreplay_rate = 40000");
    for victim in [1, 0] {
        let c = dir.join(&format!("kill-{victim}"));
        let p = pipeline(&c, &paced, "");
        let hosts = hostfile(&c, 2);
        let mut children: Vec<Option<Child>> = (0..2).map(|i| Some(start(&p, &hosts, 2, i, 1))).collect();
        std::thread::sleep(Duration::from_millis(2500));
        let mut v = children[victim].take().unwrap();
        assert!(v.try_wait().unwrap().is_none(), "process {victim} ended before the kill: the test would prove little");
        assert!(Command::new("kill").args(["-9", &v.id().to_string()]).status().unwrap().success());
        let _ = v.wait();
        let other = children[1 - victim].take().unwrap();
        let (ok, out, err) = finish(other, Duration::from_secs(30), "the surviving process");
        assert!(!ok, "the surviving process exited 0 after its peer was killed:\n{out}\n{err}");
        assert!(
            err.contains(&format!("lost the connection to process {victim}")) && err.contains("the cluster stops"),
            "the error does not name the lost peer: {err}"
        );
        assert!(!err.contains("panicked"), "a panic reached the user: {err}");
    }
}

#[test]
fn start_up_waits_for_peers_up_to_a_timeout_and_names_what_does_not_match() {
    let dir = Scratch::new("cluster-start");
    std::fs::write(dir.join("points.ndjson"), "{\"ts\":1700000000000,\"name\":\"cpu\",\"value\":1,\"host\":\"a\"}\n").unwrap();

    // A peer that never comes: the process gives up after peer_timeout, naming it.
    let c = dir.join("alone");
    let p = pipeline(&c, METRICS, "[engine]\npeer_timeout = \"2s\"\n");
    let hosts = hostfile(&c, 2);
    let t = Instant::now();
    let (ok, _, err) = finish(start(&p, &hosts, 2, 1, 1), Duration::from_secs(30), "a process without its peer");
    assert!(!ok && err.contains("process 0") && err.contains("did not answer within"), "{err}");
    assert!(t.elapsed() >= Duration::from_secs(2), "gave up before peer_timeout");
    // And the other way round: the first process waits for the second to connect.
    let (ok, _, err) = finish(start(&p, &hosts, 2, 0, 1), Duration::from_secs(30), "a process without its peer");
    assert!(!ok && err.contains("process 1") && err.contains("did not connect within"), "{err}");

    // Processes with different worker counts, or different pipelines, refuse each other.
    let hosts = hostfile(&c, 2);
    let a = start(&p, &hosts, 2, 0, 1);
    let b = start(&p, &hosts, 2, 1, 2);
    for (i, child) in [a, b].into_iter().enumerate() {
        let (ok, _, err) = finish(child, Duration::from_secs(30), "mismatched processes");
        assert!(!ok && err.contains("every process needs the same --workers"), "process {i}: {err}");
    }
    let other = pipeline(&dir.join("other"), &METRICS.replace("threshold = 0.99", "threshold = 0.98"), "[engine]\npeer_timeout = \"5s\"\n");
    let hosts = hostfile(&c, 2);
    let a = start(&p, &hosts, 2, 0, 1);
    let b = start(&other, &hosts, 2, 1, 1);
    for (i, child) in [a, b].into_iter().enumerate() {
        let (ok, _, err) = finish(child, Duration::from_secs(30), "mismatched pipelines");
        assert!(!ok && err.contains("runs another pipeline"), "process {i}: {err}");
    }

    // A bad cluster configuration fails before anything is written.
    let bad = dir.join("bad");
    let p = pipeline(&bad, METRICS, "");
    let hosts = hostfile(&bad, 2);
    let cases: [(&[&str], &str); 5] = [
        (&["--processes", "2", "--process-id", "0"], "needs --hostfile"),
        (&["--processes", "2", "--hostfile", &hosts.to_string_lossy()], "needs --process-id"),
        (&["--processes", "2", "--process-id", "2", "--hostfile", &hosts.to_string_lossy()], "out of range"),
        (&["--processes", "3", "--process-id", "0", "--hostfile", &hosts.to_string_lossy()], "names 2 address(es)"),
        (&["--process-id", "1"], "needs --processes 2 or more"),
    ];
    for (args, want) in cases {
        let mut all = vec!["run", p.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = alertflow(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code() == Some(2) && err.contains(want), "{args:?}: exit {:?}: {err}", out.status.code());
        assert!(!bad.join("out").exists(), "{args:?}: the output folder was touched");
    }
    std::fs::write(&hosts, "127.0.0.1:1\nlocalhost\n").unwrap();
    let out = alertflow(&["run", p.to_str().unwrap(), "--processes", "2", "--process-id", "0", "--hostfile", &hosts.to_string_lossy()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(2) && err.contains("line 2: `localhost` is not host:port"), "{err}");
}

/// HTTP push sources in a cluster: clients push to the first process's `listen` address, the
/// samples are exchanged by key to the workers of both processes, and a signal to either
/// process ends the intake of both (the process that receives none follows the other's
/// watermark and its stop). Every acknowledged push is in the table exactly once.
#[test]
fn pushes_to_the_first_process_reach_every_worker_and_a_signal_to_either_stops_both() {
    use alertflow_model::decode::remote_write::encode::{TimeSeries, body};
    use alertflow_serve::client::request;
    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    const N: u64 = 3_000;
    const SAMPLES: u64 = 10;
    let dir = Scratch::new("cluster-push");
    for signalled in [0usize, 1] {
        let c = dir.join(&format!("signal-{signalled}"));
        let port = free_port();
        let p = pipeline(&c, &PUSHED_SAMPLES.replace("PORT", &port.to_string()), "");
        let hosts = hostfile(&c, 2);
        let mut children: Vec<Child> = (0..2).rev().map(|i| start(&p, &hosts, 2, i, 1)).collect();
        children.reverse();
        let url = format!("http://127.0.0.1:{port}");
        let t = Instant::now();
        for i in 0..N {
            let req = i.to_string();
            let samples = (0..SAMPLES).map(|k| (T0 + i as i64 * 10 + k as i64, (i * SAMPLES + k) as f64)).collect();
            let payload = body(&[TimeSeries { labels: vec![("__name__", "push_test"), ("req", &req)], samples }]);
            loop {
                match request("POST", &url, "/api/v1/write", &[("Content-Encoding", "snappy")], &payload) {
                    Ok(r) if r.status / 100 == 2 => break,
                    Ok(r) => panic!("push {i}: {} {}", r.status, r.text()),
                    // The cluster is still forming (only before the first push is answered).
                    Err(e) => assert!(i == 0 && t.elapsed() < Duration::from_secs(60), "push {i}: {e}"),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let pid = children[signalled].id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let mut summaries = Vec::new();
        for (i, child) in children.into_iter().enumerate() {
            let (ok, out, err) = finish(child, Duration::from_secs(60), "a process after SIGTERM to one");
            assert!(ok, "signal to process {signalled}: process {i} failed:\nstdout: {out}\nstderr: {err}");
            summaries.push(serde_json::from_str::<serde_json::Value>(&out).unwrap());
        }
        for (i, s) in summaries.iter().enumerate() {
            assert_eq!(s["records_in"], N * SAMPLES, "process {i}'s summary covers the cluster");
        }
        let csv = query_csv(&c.join("out"), "SELECT req, SUM(count) AS n, SUM(sum) AS s FROM per_req GROUP BY req ORDER BY req");
        let mut seen = 0;
        for line in csv.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let i: u64 = f[0].parse().unwrap();
            let one: f64 = (0..SAMPLES).map(|k| (i * SAMPLES + k) as f64).sum();
            assert_eq!((f[1], f[2].parse::<f64>().unwrap()), ("10", one), "request {i}");
            seen += 1;
        }
        assert_eq!(seen, N, "every acknowledged push is in the table");
        assert_eq!(file_workers(&c.join("out/per_req")), [0, 1].into(), "rows were counted by the workers of both processes");
        let dead = query_csv(&c.join("out"), "SELECT COUNT(*) FROM dead_letters");
        assert_eq!(dead.lines().nth(1), Some("0"), "{dead}");
    }
}

const CHECKPOINTS: &str =
    "[engine]\nstate_dir = \"state\"\ncheckpoint_interval = \"10s\"\ncheckpoint_min_wall_interval = \"50ms\"\npeer_timeout = \"10s\"\n";

/// Checkpoints in a cluster (issue 8 with issue 7): a 2-process cluster is killed with `kill -9`
/// at seeded random moments — either process, often just after a checkpoint commit — and
/// restarted as a whole each time, resuming from the last checkpoint; then stopped with
/// SIGTERM (every process exits 0 at one checkpoint) and resumed; the final tables equal an
/// uninterrupted single process's with as many workers, row for row.
#[test]
fn a_cluster_killed_at_random_moments_resumes_from_its_checkpoints_with_the_tables_of_one_process() {
    let dir = Scratch::new("cluster-checkpoints");
    let out = alertflow(&[
        "gen",
        "metrics",
        "--series",
        "2000",
        "--points",
        "900000",
        "--seed",
        "11",
        "--malformed",
        "30",
        "--out",
        &dir.join("points.ndjson").to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = alertflow(&["gen", "alerts", "--out", &dir.join("gen").to_string_lossy(), "--incidents", "300", "--duration", "12h"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut r = Lcg(808);
    for (kind, body, names) in [("metrics", METRICS, &METRIC_TABLES[..]), ("alerts", ALERTS, &ALERT_TABLES[..])] {
        let reference = dir.join(&format!("{kind}-ref"));
        let t = Instant::now();
        run_json(&pipeline(&reference, body, CHECKPOINTS), 2);
        let full = t.elapsed();
        let want = sorted_tables(&reference, names);

        let c = dir.join(&format!("{kind}-cluster"));
        let p = pipeline(&c, body, CHECKPOINTS);
        let current = c.join("state/process-0/CURRENT");
        let (mut kills, mut resumed, mut runs) = (0, 0, 0);
        while kills < 6 {
            assert!(runs < 30, "{kind}: after {runs} runs only {kills} kills: the runs end too soon");
            runs += 1;
            if current.exists() {
                resumed += 1;
            }
            let before = std::fs::read(&current).ok();
            let hosts = hostfile(&c, 2);
            let mut children: Vec<Option<Child>> = (0..2).rev().map(|i| Some(start(&p, &hosts, 2, i, 1))).collect();
            children.reverse();
            // A third of the kills anywhere in a run (often before its first checkpoint), the
            // rest just after one of its commits (so the next run surely resumes).
            let anywhere = kills % 3 == 2;
            if anywhere {
                std::thread::sleep(Duration::from_millis(50 + r.below(full.as_millis().max(100) as u64)));
            } else {
                // Just after a checkpoint of this run, so that the next one resumes from it.
                let t = Instant::now();
                while std::fs::read(&current).ok() == before
                    && children.iter_mut().all(|c| c.as_mut().unwrap().try_wait().unwrap().is_none())
                {
                    assert!(t.elapsed() < Duration::from_secs(120), "{kind}: no checkpoint committed in 120 s");
                    std::thread::sleep(Duration::from_millis(2));
                }
                std::thread::sleep(Duration::from_millis(r.below(100)));
            }
            let victim = r.below(2) as usize;
            let mut v = children[victim].take().unwrap();
            if v.try_wait().unwrap().is_some() {
                // The run ended (or failed) before the kill: the other must end too; start over.
                let (ok, out, err) = finish(v, Duration::from_secs(5), "a process");
                let other = finish(children[1 - victim].take().unwrap(), Duration::from_secs(60), "the other process");
                assert!(ok && other.0, "{kind}: a run failed:\n{out}\n{err}\n{}\n{}", other.1, other.2);
                std::fs::remove_dir_all(c.join("state")).unwrap();
                continue;
            }
            assert!(Command::new("kill").args(["-9", &v.id().to_string()]).status().unwrap().success());
            let _ = v.wait();
            let (ok, out, err) = finish(children[1 - victim].take().unwrap(), Duration::from_secs(60), "the surviving process");
            if ok {
                // It had finished its share and its final report before the kill.
                std::fs::remove_dir_all(c.join("state")).unwrap();
                continue;
            }
            let said = err.lines().find(|l| l.starts_with("error:")).unwrap_or("").to_string();
            eprintln!(
                "{kind}: run {runs} (resumed: {}, killed {}, a checkpoint to resume from: {}): killed process {victim}; the other: {said}",
                before.is_some(),
                if anywhere { "anywhere" } else { "after a commit" },
                current.exists()
            );
            if ["did not connect within", "did not answer within", "at start", "while loading its state folder"]
                .iter()
                .any(|m| said.contains(m))
            {
                // Killed before the cluster formed: the other gave up, naming it; not a kill mid-run.
                continue;
            }
            assert!(
                said.contains(&format!("lost the connection to process {victim}"))
                    || said.contains(&format!("process {victim} closed the connection")),
                "{kind}: the survivor does not name the killed process:\n{out}\n{err}"
            );
            assert!(!err.contains("panicked"), "a panic reached the user: {err}");
            kills += 1;
        }
        assert!(resumed >= 3, "{kind}: only {resumed} of {runs} runs resumed from a checkpoint");

        // SIGTERM to every process: each exits 0 at a checkpoint; the next run resumes from it
        // and runs to the end.
        let (mut stopped, mut attempts) = (false, 0);
        loop {
            attempts += 1;
            assert!(attempts < 12, "{kind}: no SIGTERM landed in a run");
            let hosts = hostfile(&c, 2);
            let mut children: Vec<Child> = (0..2).rev().map(|i| start(&p, &hosts, 2, i, 1)).collect();
            if !stopped {
                std::thread::sleep(Duration::from_millis(300 + r.below((full.as_millis() as u64 / 2).max(50))));
                if children.iter_mut().all(|ch| ch.try_wait().unwrap().is_none()) {
                    for ch in &children {
                        assert!(Command::new("kill").args(["-TERM", &ch.id().to_string()]).status().unwrap().success());
                    }
                }
            }
            let results: Vec<_> = children.into_iter().map(|ch| finish(ch, Duration::from_secs(60), "a process after SIGTERM")).collect();
            for (ok, out, err) in &results {
                assert!(ok, "{kind}: a run (SIGTERM: {}) must exit 0:\n{out}\n{err}", !stopped);
            }
            if stopped {
                break;
            }
            stopped = results
                .iter()
                .all(|(_, _, err)| err.contains("stopped at the checkpoint") || err.contains("stopped before the first checkpoint"));
        }
        assert!(!current.exists(), "{kind}: a completed run leaves nothing to resume");

        let got = sorted_tables(&c, names);
        for ((name, w), (_, g)) in want.iter().zip(&got) {
            let only =
                |a: &Vec<String>, b: &Vec<String>| a.iter().filter(|x| b.binary_search(x).is_err()).take(3).cloned().collect::<Vec<_>>();
            assert!(
                w == g,
                "{kind}: table `{name}`: {} rows, want {}; only got: {:?}; only want: {:?}",
                g.len(),
                w.len(),
                only(g, w),
                only(w, g)
            );
        }
        eprintln!("{kind}: {kills} kill -9 over {runs} runs ({resumed} resumed), then SIGTERM; one process took {full:?}");
    }
}
