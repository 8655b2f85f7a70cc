//! `alertflow bench push`: push ingest over loopback HTTP, as Prometheus drives it.
//!
//! The run (`alertflow run`, a child process) has two HTTP sources on its serving port and
//! the window and alert pipelines behind them. The bench process first builds every request
//! body in memory (not timed): remote_write requests of 1,000 samples each (10,000 series of
//! 10 jobs, one sample per series per 10 s scrape round, the way Prometheus's shards batch
//! them), and Alertmanager v2 bodies of 64 alerts each (Prometheus's batch size) over 10,000
//! distinct alerts. Then 4 client threads, each on its own keep-alive connection, post their
//! share back to back: first every sample body, then every alert body. Reported per phase:
//! records/s and body bytes/s from the first request until the first operator behind the
//! source (the window; dedup) has received every record, read from the run's `/metrics` — not
//! merely until the last acknowledgement (a 2xx is sent once the records are in the dataflow,
//! and the dataflow may still be working through them). SIGTERM then ends the run normally,
//! and the scenario fails unless the run's summary counts every record pushed.
//!
//! `push-wal` is the same with checkpoints on (`state_dir`): a push is answered only once it is
//! in the worker's write-ahead log, synced; its figures run until the source has taken (and
//! logged) every record, as the window holds records until the watermark passes them. Its run is then ended with `kill -9` — a stop would
//! wait for a checkpoint, which the bench's two sources, far apart in event time, do not reach —
//! so its counts and peak RSS are read from `/metrics` and `/proc` first.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use alertflow_model::decode::remote_write::encode::{TimeSeries, body};

use super::load::{Conn, free_port};
use super::{BenchResult, RunFlags, scaled};

/// Client threads (connections).
const CLIENTS: usize = 4;
/// Samples per remote_write request (the issue's batch size; Prometheus sends up to
/// `max_samples_per_send`, 2,000 by default).
const SAMPLES_PER_REQUEST: usize = 1_000;
/// Alerts per Alertmanager request (Prometheus's notifier batch).
const ALERTS_PER_REQUEST: usize = 64;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

const PIPELINE: &str = r#"
[engine]
epoch = "1s"

[[source]]
type = "http"
name = "remote_write"
records = "metrics"
# The clients push 2,000 s of event time in about a second, and each runs at its own speed:
# in event time they drift far apart (live Prometheus shards stay within seconds). The bench
# measures ingest, so nothing may be late (the scenario checks it).
max_out_of_orderness = "1h"
# The samples are in January: the watermark must not jump to the wall clock between phases.
idle_timeout = "1h"
max_pending = 2000000

[[source]]
type = "http"
name = "alertmanager"
records = "alerts"

[[aggregate]]
name = "per_minute"
input = "remote_write"
window = { type = "tumbling", size = "1m" }
group_by = ["job"]
functions = ["count", "sum", "max"]

[correlate]
group_by = ["job"]

[output]
path = "out"
"#;

/// Runs the scenario (`logged`: with checkpoints, so through the write-ahead log): one result
/// per phase (samples, alerts).
pub fn run(dir: &Path, scale: f64, flags: &RunFlags, logged: bool) -> Result<Vec<BenchResult>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let samples = scaled(2_000_000, scale).max(SAMPLES_PER_REQUEST as u64) as usize;
    let alerts = scaled(200_000, scale).max(ALERTS_PER_REQUEST as u64) as usize;
    let write_bodies = sample_bodies(samples);
    let alert_bodies = alert_bodies(alerts);

    let port = free_port()?;
    let path = dir.join("pipeline.toml");
    let engine = if logged { "[engine]\nstate_dir = \"state\"\n" } else { "[engine]\n" };
    std::fs::write(&path, format!("{}\n[serve]\nhttp = \"127.0.0.1:{port}\"\n", PIPELINE.replacen("[engine]\n", engine, 1)))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the alertflow binary: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("run").arg(&path).arg("--json").stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::inherit());
    flags.apply(&mut cmd);
    let steal = super::host::Stopwatch::start();
    let child = cmd.spawn().map_err(|e| format!("cannot start `alertflow run`: {e}"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let phases = (|| {
        let up = Instant::now();
        while Conn::open(addr).is_err() {
            if up.elapsed() > Duration::from_secs(60) {
                return Err(format!("the run did not start serving at {addr} within 60 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let start = Instant::now();
        let (_, w_bytes) =
            post_all(addr, "/api/v1/write", "Content-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\n", &write_bodies, 204)?;
        // With checkpoints the window holds records until the watermark passes them (an hour
        // behind here), so push-wal counts what the source took: logged and acknowledged.
        let (w_metric, a_metric) = if logged {
            (r#"alertflow_source_records_total{source="remote_write"}"#, r#"alertflow_source_records_total{source="alertmanager"}"#)
        } else {
            (
                r#"alertflow_operator_records_in_total{operator="aggregate",name="per_minute"}"#,
                r#"alertflow_operator_records_in_total{operator="dedup",name="dedup"}"#,
            )
        };
        processed(addr, w_metric, samples)?;
        let w = (start.elapsed().as_secs_f64(), w_bytes);
        let start = Instant::now();
        let (_, a_bytes) = post_all(addr, "/api/v2/alerts", "Content-Type: application/json\r\n", &alert_bodies, 200)?;
        processed(addr, a_metric, alerts)?;
        let a = (start.elapsed().as_secs_f64(), a_bytes);
        // The run's default worker count is the machine's (`alertflow run` without --workers).
        let n = flags.worker_count();
        let counted = if logged { Some(counted(addr, child.id(), n)?) } else { None };
        Ok((w, a, counted))
    })();
    let summary = if logged {
        let _ = std::process::Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
        let _ = child.wait_with_output();
        None
    } else {
        // A normal stop: SIGTERM, then the summary.
        let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("`alertflow run {}` failed after SIGTERM ({})", path.display(), out.status));
        }
        Some(
            serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .map_err(|e| format!("`alertflow run --json` printed no summary: {e}"))?,
        )
    };
    let host_steal_percent = steal.stop();
    let ((w_secs, w_bytes), (a_secs, a_bytes), counted) = phases?;
    // What a summary says, or (push-wal) what `/metrics` and `/proc` said before the kill.
    let summary = match (summary, counted) {
        (Some(s), _) => s,
        (None, Some(c)) => c,
        (None, None) => return Err("no counts".into()),
    };
    let taken = summary["records_in"].as_u64().unwrap_or(0);
    if taken != (samples + alerts) as u64 {
        return Err(format!("the run took {taken} records of the {} pushed", samples + alerts));
    }
    let (late, dead) = (summary["late"].as_u64().unwrap_or(0), summary["dead_letters"].as_u64().unwrap_or(0));
    if late + dead > 0 {
        return Err(format!("{late} late and {dead} bad records: the figures would not be of the whole stream"));
    }
    let workers = summary["workers"].as_u64().unwrap_or(0) as usize;
    let rows_out = summary["tables"].as_array().map_or(0, |t| t.iter().filter_map(|t| t["rows"].as_u64()).sum());
    let pinned = super::pinned_to(&summary);
    let result = |scenario, records: usize, secs: f64, bytes: u64| BenchResult {
        scenario,
        workers,
        pinned_to: pinned.clone(),
        writers: None,
        records: records as u64,
        bytes,
        seconds: secs,
        records_per_second: records as f64 / secs.max(1e-9),
        bytes_per_second: bytes as f64 / secs.max(1e-9),
        peak_rss_bytes: summary["peak_rss_bytes"].as_u64(),
        host_steal_percent,
        rows_out,
        sink: "parquet",
        rate: None,
        latency: Vec::new(),
        query_load: None,
    };
    let name = if logged { ["push-wal:remote_write", "push-wal:alerts"] } else { ["push:remote_write", "push:alerts"] };
    Ok(vec![result(name[0], samples, w_secs, w_bytes), result(name[1], alerts, a_secs, a_bytes)])
}

/// The run's counts as its summary would give them, read from `/metrics`, and its peak RSS
/// from `/proc` (`rows_out` stays unknown: tables are written at checkpoints).
fn counted(addr: SocketAddr, pid: u32, workers: usize) -> Result<serde_json::Value, String> {
    let mut conn = Conn::open(addr)?;
    let (_, page) = conn.request("GET", "/metrics", "", b"")?;
    let page = String::from_utf8_lossy(&page);
    let sum = |family: &str| -> u64 {
        page.lines()
            .filter(|l| l.starts_with(family) && l[family.len()..].starts_with('{'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let peak = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()))
        .map(|kb| kb * 1024);
    Ok(serde_json::json!({
        "records_in": sum("alertflow_source_records_total"),
        "late": sum("alertflow_source_late_total"),
        "dead_letters": sum("alertflow_source_dead_letters_total"),
        "peak_rss_bytes": peak,
        "workers": workers,
        "tables": [],
    }))
}

/// Waits until the counter `metric` of the run's `/metrics` reaches `n`.
fn processed(addr: SocketAddr, metric: &str, n: usize) -> Result<(), String> {
    let mut conn = Conn::open(addr)?;
    let until = Instant::now() + Duration::from_secs(600);
    loop {
        let (_, page) = conn.request("GET", "/metrics", "", b"")?;
        let page = String::from_utf8_lossy(&page);
        let got = page.lines().find_map(|l| l.strip_prefix(metric)).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0);
        if got >= n as f64 {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!("{metric} reached {got} of {n} in 10 minutes"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Posts `bodies` over [`CLIENTS`] keep-alive connections, each taking every `CLIENTS`-th body
/// in order; returns the wall time until the last answer and the bytes sent.
fn post_all(addr: SocketAddr, path: &'static str, headers: &'static str, bodies: &[Vec<u8>], ok: u16) -> Result<(f64, u64), String> {
    let start = Instant::now();
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                s.spawn(move || {
                    let mut conn = Conn::open(addr)?;
                    for b in bodies.iter().skip(c).step_by(CLIENTS) {
                        // Back-pressure (503 + Retry-After) is waited out, as Prometheus does.
                        loop {
                            let (status, answer) = conn.post(path, headers, b)?;
                            match status {
                                s if s == ok => break,
                                503 => std::thread::sleep(Duration::from_millis(50)),
                                s => return Err(format!("{path}: HTTP {s}: {}", String::from_utf8_lossy(&answer).trim())),
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a client thread panicked".into()))).collect()
    });
    let secs = start.elapsed().as_secs_f64();
    results.into_iter().collect::<Result<Vec<()>, String>>()?;
    Ok((secs, bodies.iter().map(|b| b.len() as u64).sum()))
}

/// remote_write bodies of `samples` samples: 10,000 series (`job` j0…j9, `instance` i0000…),
/// one sample per series per 10 s round, [`SAMPLES_PER_REQUEST`] per request.
fn sample_bodies(samples: usize) -> Vec<Vec<u8>> {
    let names: Vec<(String, String)> = (0..10_000).map(|i| (format!("j{}", i % 10), format!("i{i:04}"))).collect();
    let mut bodies = Vec::new();
    let mut k = 0usize;
    while k < samples {
        let n = SAMPLES_PER_REQUEST.min(samples - k);
        let series: Vec<TimeSeries<'_>> = (k..k + n)
            .map(|i| {
                let (job, instance) = &names[i % names.len()];
                let round = (i / names.len()) as i64;
                TimeSeries {
                    labels: vec![("__name__", "http_requests_total"), ("instance", instance), ("job", job)],
                    samples: vec![(T0 + round * 10_000, (round * 7 + (i % 13) as i64) as f64)],
                }
            })
            .collect();
        bodies.push(body(&series));
        k += n;
    }
    bodies
}

/// Alertmanager v2 bodies of `alerts` alerts over 10,000 distinct alerts (50 alert names ×
/// 200 instances), [`ALERTS_PER_REQUEST`] per request.
fn alert_bodies(alerts: usize) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let mut k = 0usize;
    while k < alerts {
        let n = ALERTS_PER_REQUEST.min(alerts - k);
        let items: Vec<String> = (k..k + n)
            .map(|i| {
                let d = i % 10_000;
                format!(
                    r#"{{"labels":{{"alertname":"Push{}","instance":"i{:03}","job":"j{}","severity":"warning"}},"annotations":{{"summary":"pushed"}},"startsAt":"2026-01-01T00:00:00Z","endsAt":"2999-01-01T00:00:00Z","generatorURL":"http://prometheus/graph"}}"#,
                    d % 50,
                    d / 50,
                    d % 10
                )
            })
            .collect();
        bodies.push(format!("[{}]", items.join(",")).into_bytes());
        k += n;
    }
    bodies
}
