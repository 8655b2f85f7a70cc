//! The README's worked example for rules, run as written: an injected CPU incident found by a
//! `[[rule]]` and a detector, both kinds of alerts in the same incidents — the same at 1 and 4
//! workers — and the rule's alerts recomputed independently (plain Python over the raw points,
//! DuckDB over the Parquet) on the example and on other data (other seed, incident, hosts).

use std::path::Path;
use std::process::Command;

use alertflow_tests::{Scratch, alertflow, python, query_csv, run_json, workspace};

/// `alertflow gen metrics` with the worked example's arguments (and the given variations).
fn generate(dir: &Path, seed: &str, at: &str, hosts: &str) {
    let out = dir.join("points.ndjson");
    let args = ["gen", "metrics", "--series", "400", "--points", "144000", "--seed", seed, "--incident-at", at, "--incident-hosts", hosts];
    let o = alertflow(&[&args[..], &["--incident-for", "10m", "--out", &out.to_string_lossy()]].concat());
    assert!(o.status.success(), "gen failed: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::copy(workspace().join("examples/incident/pipeline.toml"), dir.join("pipeline.toml")).unwrap();
}

/// The README's query: each incident's latest row with the alert names in it.
const INCIDENTS: &str = "SELECT i.opened_at, i.status, i.alert_count, array_agg(DISTINCT a.alertname ORDER BY a.alertname) AS alertnames, \
     min(split_part(split_part(a.labels, '\"host\":\"', 2), '\"', 1)) AS host \
     FROM (SELECT *, row_number() OVER (PARTITION BY incident_id ORDER BY revision DESC) AS k FROM incidents) i \
     JOIN alerts a USING (incident_id) WHERE i.k = 1 GROUP BY 1, 2, 3 ORDER BY 1";

fn check_independently(dir: &Path) {
    let Some(py) = python() else { return };
    let script = workspace().join("tests/python/check_rule.py");
    let o = Command::new(py)
        .arg(script)
        .arg(dir.join("points.ndjson"))
        .arg(dir.join("out"))
        .args(["HighCpu", "cpu", "90", "3", "180000"])
        .output()
        .unwrap();
    assert!(o.status.success(), "check_rule.py: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let n: usize = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert!(n >= 2, "the reference must see the incident: {n} events");
}

#[test]
fn worked_example_rule_and_anomaly_alerts_form_incidents() {
    let dir = Scratch::new("rule-example");
    generate(&dir.0, "3", "30m", "3");
    let s = run_json(&dir.join("pipeline.toml"), 2);
    assert_eq!(s["records_in"], 144_000);
    let incidents = query_csv(&dir.join("out"), INCIDENTS);
    // The three hot hosts (cpu series 0, 4, 8 of tenant t0): each one incident holding its
    // anomaly alert and its HighCpu alert.
    let both: Vec<&str> = incidents.lines().filter(|l| l.contains("HighCpu") && l.contains("MetricAnomaly")).collect();
    assert_eq!(both.len(), 3, "{incidents}");
    for host in ["h00000", "h00004", "h00008"] {
        assert!(both.iter().any(|l| l.ends_with(host)), "{host} missing:\n{incidents}");
    }
    // HighCpu nowhere else; it opens after 3 minutes above 90 and resolves when the incident ends.
    let high = query_csv(
        &dir.join("out"),
        "SELECT event, count(*) AS n, min(starts_at) AS active, min(ts) AS first, max(ts) AS last FROM alerts \
         WHERE alertname = 'HighCpu' GROUP BY event ORDER BY event",
    );
    assert_eq!(
        high,
        "event,n,active,first,last\n\
         opened,3,2026-01-01T00:31:00Z,2026-01-01T00:34:00Z,2026-01-01T00:34:00Z\n\
         resolved,3,2026-01-01T00:31:00Z,2026-01-01T00:41:00Z,2026-01-01T00:41:00Z\n",
        "{high}"
    );
    check_independently(&dir.0);

    // The same tables at 1 and 4 workers.
    let tables = |d: &Path| {
        query_csv(d, "SELECT ts, event, fingerprint, starts_at, incident_id, annotations FROM alerts ORDER BY ts, fingerprint, event")
            + &query_csv(d, INCIDENTS)
    };
    let want = tables(&dir.join("out"));
    for workers in [1, 4] {
        run_json(&dir.join("pipeline.toml"), workers);
        assert!(tables(&dir.join("out")) == want, "{workers} worker(s): alerts or incidents differ");
    }
}

/// Other data: another seed, an incident at another time over five hosts.
#[test]
fn rule_alerts_match_a_reference_on_other_data() {
    let dir = Scratch::new("rule-other");
    generate(&dir.0, "17", "47m30s", "5");
    run_json(&dir.join("pipeline.toml"), 2);
    let opened = query_csv(&dir.join("out"), "SELECT count(*) AS n FROM alerts WHERE alertname = 'HighCpu' AND event = 'opened'");
    assert_eq!(opened, "n\n5\n");
    check_independently(&dir.0);
}
