//! Anomaly detection end to end: `[[detect]]` in a pipeline (the `anomalies` table, the same at
//! 1, 2 and 4 workers; anomaly alerts reaching `alerts` and `incidents` with no alert source),
//! and `alertflow detect` on a NAB-style CSV.

use std::fmt::Write as _;
use std::path::Path;

use alertflow_tests::{Scratch, alertflow, query_csv, run_json};

const START: i64 = 1_767_225_600_000;
/// The injected spikes: (host, minute). One per host: a second spike of the same size on the
/// same short series is, by the calibration's design, less news than the first.
const SPIKES: [(&str, i64); 3] = [("h1", 200), ("h2", 290), ("h3", 330)];

/// Three hosts' `cpu` (watched) and `mem` (not), one point a minute for 6 h with a slow wave
/// and noise, spikes at [`SPIKES`]; lines shuffled by up to 20 s.
fn metrics(dir: &Path) {
    let mut s = 42u64;
    let mut next = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as f64 / (1u64 << 31) as f64
    };
    let mut lines = Vec::new();
    for minute in 0..360i64 {
        for host in ["h1", "h2", "h3"] {
            for name in ["cpu", "mem"] {
                let spike = if name == "cpu" && SPIKES.contains(&(host, minute)) { 60.0 } else { 0.0 };
                let v = 40.0 + 2.0 * (minute as f64 / 30.0).sin() + 3.0 * next() + spike;
                let ts = START + minute * 60_000 + (next() * 1000.0) as i64;
                lines.push((ts + (next() * 20_000.0) as i64, format!(r#"{{"ts":{ts},"name":"{name}","host":"{host}","value":{v}}}"#)));
            }
        }
    }
    lines.sort();
    let mut text = String::new();
    for (_, l) in lines {
        writeln!(text, "{l}").unwrap();
    }
    std::fs::write(dir.join("points.ndjson"), text).unwrap();
}

const PIPELINE: &str = r#"
[[source]]
name = "points"
type = "file"
path = "points.ndjson"
records = "metrics"
max_out_of_orderness = "30s"
chunk_size = "16KiB"

[[detect]]
name = "anomalies"
input = "points"
metrics = ["cpu"]
detector = "mad"
params = { window = 60 }
threshold = 0.999
raise_alerts = true

[output]
path = "out"
"#;

#[test]
fn anomalies_and_their_alerts_are_the_same_on_1_2_and_4_workers() {
    let dir = Scratch::new("detect-workers");
    metrics(&dir.0);
    std::fs::write(dir.join("pipeline.toml"), PIPELINE).unwrap();
    let out = dir.join("out");
    let mut first: Option<[String; 3]> = None;
    for workers in [1, 2, 4] {
        run_json(&dir.join("pipeline.toml"), workers);
        let t = [
            query_csv(&out, "SELECT * FROM anomalies ORDER BY ts, labels"),
            query_csv(
                &out,
                "SELECT tenant, fingerprint, alertname, severity, labels, event, starts_at FROM alerts ORDER BY tenant, fingerprint, revision, event",
            ),
            query_csv(
                &out,
                "SELECT tenant, incident_id, alert_count, fingerprints, max_severity FROM incidents ORDER BY tenant, incident_id, revision",
            ),
        ];
        match &first {
            None => first = Some(t),
            Some(f) => assert!(f == &t, "{workers} workers differ from 1"),
        }
    }
    // Every injected spike is found, at its own point, on its own host; `mem` is not watched.
    let rows = query_csv(
        &out,
        "SELECT labels, CAST(ts AS BIGINT) AS ts, score, detector, name, value > expected + 30 AS up FROM anomalies ORDER BY ts",
    );
    for (host, minute) in SPIKES {
        let hit = rows.lines().any(|l| {
            let ts: i64 = l.split(',').nth(1).and_then(|t| t.parse().ok()).unwrap_or(0);
            l.contains(&format!("\"\"host\"\":\"\"{host}\"\"")) && (ts - START) / 60_000 == minute && l.ends_with(",mad,cpu,true")
        });
        assert!(hit, "no anomaly row for {host} at minute {minute} in\n{rows}");
    }
    assert!(rows.lines().count() - 1 <= 3 * SPIKES.len(), "too many anomalies for three spikes:\n{rows}");
    let names = query_csv(&out, "SELECT DISTINCT name FROM anomalies");
    assert_eq!(names, "name\ncpu\n");
    // The anomalies became alerts with no alert source: opened in `alerts`, grouped in
    // `incidents`.
    let alerts = query_csv(
        &out,
        "SELECT count(*) AS n FROM alerts WHERE alertname = 'MetricAnomaly' AND event = 'opened' AND labels LIKE '%\"metric\":\"cpu\"%'",
    );
    let n: usize = alerts.lines().nth(1).unwrap().parse().unwrap();
    assert!(n >= 2, "anomaly alerts opened: {alerts}");
    let incidents = query_csv(&out, "SELECT count(DISTINCT incident_id) AS n FROM incidents");
    assert_ne!(incidents.trim(), "n\n0", "no incident from anomaly alerts");
}

#[test]
fn detect_cli_scores_a_nab_csv() {
    let dir = Scratch::new("detect-cli");
    let mut csv = String::from("timestamp,value\r\n");
    for i in 0..2000 {
        let v = if i == 1500 { 500.0 } else { 100.0 + (i % 7) as f64 };
        writeln!(csv, "2014-07-01 {:02}:{:02}:00,{v}\r", (i / 60) % 24, i % 60).unwrap();
    }
    let input = dir.join("in.csv");
    std::fs::write(&input, csv).unwrap();
    for det in ["ensemble", "holt_winters", "mad", "zscore", "rcf"] {
        let out = alertflow(&["detect", "--detector", det, input.to_str().unwrap()]);
        assert!(out.status.success(), "{det}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("timestamp,value,anomaly_score"));
        let rows: Vec<(String, f64)> = lines
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].to_string(), f[2].parse::<f64>().unwrap())
            })
            .collect();
        assert_eq!(rows.len(), 2000, "{det}: one row per input row");
        assert_eq!(rows[1].0, "2014-07-01 00:01:00", "timestamps copied as they came");
        assert!(rows.iter().all(|r| (0.0..=1.0).contains(&r.1)), "{det}: a score outside [0, 1]");
        assert_eq!(rows[0].1, 0.0, "{det}: warming up");
        let spike = rows[1500].1;
        let others = rows[600..].iter().enumerate().filter(|(i, _)| *i + 600 != 1500).map(|(_, r)| r.1).fold(0.0, f64::max);
        assert!(spike > others, "{det}: spike {spike} not above the rest ({others})");
    }
    let list = alertflow(&["detect", "--list"]);
    let names: Vec<String> = String::from_utf8(list.stdout).unwrap().lines().map(|l| l.split('\t').next().unwrap().to_string()).collect();
    assert_eq!(names, ["ensemble", "holt_winters", "mad", "zscore", "rcf"]);
    let bad = alertflow(&["detect", "--detector", "mad", "--param", "window=1", input.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("params.window"), "{}", String::from_utf8_lossy(&bad.stderr));
    std::fs::write(dir.join("bad.csv"), "timestamp,value\n2014-07-01 00:00:00,1\n2014-07-01 00:05:00,x\n").unwrap();
    let bad = alertflow(&["detect", dir.join("bad.csv").to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("bad.csv:3: `x` is not a finite number"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
