//! Push ingest with a real Prometheus server (Debian's `prometheus`, installed by
//! `scripts/test.sh`), configured the way a team points an existing Prometheus at alertflow:
//! it scrapes alertflow's own `/metrics`, evaluates an alerting rule that fires, sends the
//! alert to alertflow as its Alertmanager (`POST /api/v2/alerts`), and remote-writes every
//! sample it scrapes (`POST /api/v1/write`), both to the HTTP sources' own `listen` address.
//! The test then finds the samples in a window table and the alert in `alerts`,
//! `active_alerts` and `open_incidents` through SQL. The run checkpoints (so its pushes go
//! through the write-ahead log): SIGTERM ends it at a checkpoint (exit 0), and a restart, while
//! Prometheus keeps retrying and re-sending, carries on — the alert is still the one opened
//! before, and no window is written twice. Skipped with a reason when Prometheus is missing,
//! except in CI where it fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alertflow_serve::client::{query, request};
use alertflow_tests::{Running, Scratch, free_port, in_ci, query_csv};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// `$ALERTFLOW_PROMETHEUS`, else `prometheus` on the PATH.
fn prometheus() -> Option<PathBuf> {
    let cand = std::env::var("ALERTFLOW_PROMETHEUS").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("prometheus"));
    match Command::new(&cand).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => Some(cand),
        _ => {
            assert!(!in_ci(), "Prometheus ({}) is not installed: in CI this test must run (scripts/test.sh installs it)", cand.display());
            eprintln!("SKIPPED the Prometheus end-to-end test: no `prometheus` (scripts/test.sh installs Debian's package)");
            None
        }
    }
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A query's rows as comma-joined text.
fn rows(url: &str, sql: &str) -> Vec<String> {
    let (_, batches) = match query(url, None, sql) {
        Ok(r) => r,
        Err(e) => panic!("{sql}: {e}"),
    };
    let mut out = Vec::new();
    for b in &batches {
        let opts = FormatOptions::default();
        let cols: Vec<_> = b.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap()).collect();
        for i in 0..b.num_rows() {
            out.push(cols.iter().map(|c| c.value(i).to_string()).collect::<Vec<_>>().join(","));
        }
    }
    out
}

/// Polls `sql` until `ok` holds for its rows, or fails after `limit` with what it last saw.
fn wait_for(url: &str, sql: &str, limit: Duration, prom_log: &std::path::Path, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
    let start = Instant::now();
    loop {
        let r = rows(url, sql);
        if ok(&r) {
            return r;
        }
        if start.elapsed() > limit {
            let log = std::fs::read_to_string(prom_log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!("{sql}: still {r:?} after {limit:?}; Prometheus's log ends:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_real_prometheus_scrapes_alerts_and_remote_writes_into_alertflow() {
    let Some(prom) = prometheus() else { return };
    let scratch = Scratch::new("prometheus");
    let (port, push_port, prom_port) = (free_port(), free_port(), free_port());
    std::fs::write(
        scratch.join("pipeline.toml"),
        format!(
            r#"
[engine]
epoch = "1s"
state_dir = "state"

# Pushes on an address of their own; [serve] answers SQL and /metrics.
[[source]]
type = "http"
name = "prom_alerts"
records = "alerts"
listen = "127.0.0.1:{push_port}"

[[source]]
type = "http"
name = "prom_samples"
records = "metrics"
max_out_of_orderness = "5s"
idle_timeout = "5s"
listen = "127.0.0.1:{push_port}"

[[aggregate]]
name = "samples_10s"
input = "prom_samples"
window = {{ type = "tumbling", size = "10s" }}
group_by = ["job", "source"]
functions = ["count", "last"]

[correlate]
group_by = ["job"]

[output]
path = "out"
file_span = "10s"

[serve]
http = "127.0.0.1:{port}"
live_refresh = "200ms"
"#
        ),
    )
    .unwrap();
    std::fs::write(
        scratch.join("prometheus.yml"),
        format!(
            r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
  external_labels:
    cluster: e2e
scrape_configs:
  - job_name: alertflow
    static_configs:
      - targets: ["127.0.0.1:{port}"]
rule_files: ["rules.yml"]
alerting:
  alertmanagers:
    - api_version: v2
      static_configs:
        - targets: ["127.0.0.1:{push_port}"]
remote_write:
  - url: http://127.0.0.1:{push_port}/api/v1/write
    queue_config:
      batch_send_deadline: 1s
      max_samples_per_send: 500
"#
        ),
    )
    .unwrap();
    std::fs::write(
        scratch.join("rules.yml"),
        r#"
groups:
  - name: alertflow
    rules:
      # Firing once alertflow has been scraped, and still firing while it restarts: with
      # `up == 1` a scrape that failed during the restart resolved the alert and Prometheus
      # fired a new one (a new startsAt), which alertflow rightly opened again (seen in CI).
      - alert: AlertflowScraped
        expr: max_over_time(up{job="alertflow"}[10m]) == 1
        labels:
          severity: page
        annotations:
          summary: "alertflow at {{ $labels.instance }} is being scraped"
"#,
    )
    .unwrap();

    let mut run = Running::start(&scratch.join("pipeline.toml"), 2);
    let url = format!("http://127.0.0.1:{port}");
    let up = Instant::now();
    while request("GET", &url, "/health", &[], b"").is_err() {
        assert!(up.elapsed() < Duration::from_secs(30), "alertflow did not start serving");
        std::thread::sleep(Duration::from_millis(50));
    }
    let prom_log = scratch.join("prometheus.log");
    let log = std::fs::File::create(&prom_log).unwrap();
    let _prometheus = Proc(
        Command::new(&prom)
            .current_dir(&scratch.0)
            .args([
                "--config.file=prometheus.yml".to_string(),
                format!("--storage.tsdb.path={}", scratch.join("tsdb").display()),
                format!("--web.listen-address=127.0.0.1:{prom_port}"),
                // Firing alerts re-sent every few seconds (not every minute): the restart below
                // must see re-sends reach a restored dedup. Prometheus sends an alert valid for
                // 4 x max(resend delay, evaluation interval) and re-sends it on the first
                // evaluation strictly after the delay: at 1 s that is every 2 s valid for 4 s, and
                // one send refused during the restart let the alert expire 3 ms before the next
                // arrived (seen in CI: an `expired` row, then a second `opened`). At 3 s: every
                // 4 s, valid for 12 s, so a restart may miss two sends.
                "--rules.alert.resend-delay=3s".to_string(),
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );

    let limit = Duration::from_secs(120);
    // Remote-written samples in the live window table: `up` of the scrape, and alertflow's
    // own counter of the samples it received, labelled with the pushing source.
    let got = wait_for(
        &url,
        "SELECT name, job, count FROM samples_10s_latest WHERE name = 'up' OR (name = 'alertflow_source_records_total' AND source = 'prom_samples')",
        limit,
        &prom_log,
        |r| {
            r.iter().any(|l| l.starts_with("up,alertflow,")) && r.iter().any(|l| l.starts_with("alertflow_source_records_total,alertflow,"))
        },
    );
    // One scrape a second: a closed 10 s window holds up to 10 points per series.
    assert!(got.iter().all(|l| l.rsplit(',').next().unwrap().parse::<u64>().unwrap() <= 11), "{got:?}");
    // The alert Prometheus sent, live and as history, with its labels and the firing status.
    let active = wait_for(
        &url,
        "SELECT tenant, alertname, severity, status, labels FROM active_alerts WHERE alertname = 'AlertflowScraped'",
        limit,
        &prom_log,
        |r| !r.is_empty(),
    );
    assert!(active[0].starts_with("default,AlertflowScraped,page,firing,"), "{active:?}");
    assert!(active[0].contains(r#""cluster":"e2e""#) && active[0].contains(r#""job":"alertflow""#), "{active:?}");
    wait_for(&url, "SELECT count(*) FROM open_incidents", limit, &prom_log, |r| r.first().is_some_and(|c| c != "0"));
    // The history: the window rows in Parquet (once a 10 s span has closed), the alert's
    // `opened` row.
    wait_for(&url, "SELECT count(*) FROM samples_10s WHERE name = 'up' AND job = 'alertflow'", limit, &prom_log, |r| {
        r.first().is_some_and(|c| c != "0")
    });
    wait_for(&url, "SELECT event FROM alerts WHERE alertname = 'AlertflowScraped' AND event = 'opened'", limit, &prom_log, |r| {
        !r.is_empty()
    });
    wait_for(&url, "SELECT count(*) FROM incidents WHERE status = 'open'", limit, &prom_log, |r| r.first().is_some_and(|c| c != "0"));
    // What alertflow counted: pushes taken, nothing dead.
    let metrics = request("GET", &url, "/metrics", &[], b"").unwrap().text();
    let dead = metrics.lines().find(|l| l.starts_with(r#"alertflow_source_dead_letters_total{source="prom_samples"}"#)).unwrap();
    assert!(dead.ends_with(" 0"), "{dead}");

    // SIGTERM with checkpoints: the run takes (and logs) pushes until its next checkpoint, ends
    // there and exits 0.
    stop(&mut run.0);
    drop(run);
    let out = scratch.join("out");
    let windows = |dir: &std::path::Path| -> u64 {
        let csv = query_csv(dir, "SELECT count(*) FROM samples_10s WHERE name = 'up' AND job = 'alertflow'");
        csv.lines().nth(1).unwrap().trim().parse().unwrap()
    };
    let before = windows(&out);
    assert!(before > 0);

    // Restart: it resumes from the checkpoint and replays the pushes logged after it, while
    // Prometheus — which kept retrying its remote writes and re-sending its alert — carries on.
    let mut run = Running::start(&scratch.join("pipeline.toml"), 2);
    let up = Instant::now();
    while request("GET", &url, "/health", &[], b"").is_err() {
        assert!(up.elapsed() < Duration::from_secs(30), "alertflow did not restart");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for(&url, "SELECT count(*) FROM samples_10s WHERE name = 'up' AND job = 'alertflow'", limit, &prom_log, |r| {
        r.first().and_then(|c| c.parse::<u64>().ok()).is_some_and(|n| n >= before + 2)
    });
    // The re-sent alert reached a restored dedup: still the one alert, opened once.
    let opened =
        wait_for(&url, "SELECT count(*) FROM alerts WHERE alertname = 'AlertflowScraped' AND event = 'opened'", limit, &prom_log, |r| {
            !r.is_empty()
        });
    assert_eq!(opened, ["1"], "a restart must not open the alert again");
    // No window written twice across the restart.
    let twice = rows(
        &url,
        "SELECT count(*) FROM (SELECT window_start, name, job, source, count(*) AS c FROM samples_10s GROUP BY 1, 2, 3, 4) WHERE c > 1",
    );
    assert_eq!(twice, ["0"]);
    stop(&mut run.0);
}

/// SIGTERM; the run must exit 0 within a minute (at a checkpoint).
fn stop(run: &mut std::process::Child) {
    assert!(Command::new("kill").args(["-TERM", &run.id().to_string()]).status().unwrap().success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "alertflow did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
}
