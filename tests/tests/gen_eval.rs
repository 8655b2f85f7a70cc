//! Ground truth end to end: `alertflow gen alerts` → `alertflow run` → `alertflow eval correlation`.

use std::path::Path;

use alertflow_tests::{Scratch, alertflow};

fn ok(args: &[&str]) -> (String, String) {
    let out = alertflow(args);
    let (so, se) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(out.status.success(), "alertflow {args:?}: {:?}\n{so}\n{se}", out.status.code());
    (so, se)
}

fn gen_alerts(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["gen", "alerts", "--out", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(&args).1
}

/// The number after `(` in "wrote N lines (M alert notices, …".
fn notices_in(summary: &str) -> u64 {
    let s = summary.split(" lines (").nth(1).expect(summary);
    s.split(' ').next().unwrap().parse().expect(summary)
}

#[test]
fn generated_files_are_deterministic_and_complete() {
    let dir = Scratch::new("gen-alerts");
    for f in ["ndjson", "alertmanager", "csv"] {
        let (a, b) = (dir.join(&format!("{f}-a")), dir.join(&format!("{f}-b")));
        let sa = gen_alerts(&a, &["--seed", "3", "--format", f, "--incidents", "8", "--duration", "2h"]);
        gen_alerts(&b, &["--seed", "3", "--format", f, "--incidents", "8", "--duration", "2h"]);
        let file = match f {
            "ndjson" => "alerts.ndjson",
            "alertmanager" => "alerts.json",
            _ => "alerts.csv",
        };
        for name in [file, "truth.csv", "topology.csv", "pipeline.toml"] {
            let x = std::fs::read(a.join(name)).unwrap();
            assert!(!x.is_empty(), "{name}");
            assert_eq!(x, std::fs::read(b.join(name)).unwrap(), "{f}: {name} differs between two runs with one seed");
        }
        let pipeline = std::fs::read_to_string(a.join("pipeline.toml")).unwrap();
        assert!(pipeline.contains(&format!("path = \"{file}\"")) && pipeline.contains(&format!("format = \"{f}\"")), "{pipeline}");
        assert!(notices_in(&sa) > 1_000, "{sa}");
    }
    // Bad arguments: exit 2 with the flag named.
    let out = alertflow(&["gen", "alerts", "--out", dir.join("x").to_str().unwrap(), "--format", "xml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format"));
    let out = alertflow(&["gen", "alerts", "--out", dir.join("x").to_str().unwrap(), "--tenants", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn eval_rejects_a_bad_truth_file_and_missing_tables() {
    let dir = Scratch::new("eval-bad");
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let truth = dir.join("truth.csv");
    std::fs::write(
        &truth,
        "tenant,fingerprint,first_ts,last_ts,incident,root_service\nacme,00000000000000ff,1,2,inc-1,db\nacme,zz,1,2,inc-1,db\n",
    )
    .unwrap();
    let out = alertflow(&["eval", "correlation", "--truth", truth.to_str().unwrap(), "--data", dir.join("out").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("truth.csv:3: fingerprint `zz` is not 16 hex digits"), "{err}");
    std::fs::write(&truth, "tenant,fingerprint,first_ts,last_ts,incident,root_service\n").unwrap();
    let out = alertflow(&["eval", "correlation", "--truth", truth.to_str().unwrap(), "--data", dir.join("out").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no `alerts` table"), "{err}");
}

/// The acceptance figures on the default scenario (seed 1), and the baseline below them.
#[test]
fn default_scenario_meets_the_acceptance_figures() {
    let dir = Scratch::new("gen-eval");
    let g = dir.join("g");
    let summary = gen_alerts(&g, &["--seed", "1"]);
    let notices = notices_in(&summary);
    let pipeline = g.join("pipeline.toml");
    ok(&["run", pipeline.to_str().unwrap(), "--workers", "2", "--json"]);
    let (so, _) = ok(&[
        "eval",
        "correlation",
        "--truth",
        g.join("truth.csv").to_str().unwrap(),
        "--data",
        g.join("out").to_str().unwrap(),
        "--json",
        "--baseline",
        "alertname,cluster",
    ]);
    let v: serde_json::Value = serde_json::from_str(so.trim()).expect(&so);
    let f = |p: &str| v.pointer(p).and_then(|x| x.as_f64()).unwrap_or_else(|| panic!("no {p} in {v}"));
    // Every notice reached dedup, and every episode is known to the truth and seen.
    assert_eq!(f("/alert_events") as u64, notices, "{v}");
    assert_eq!((f("/unmatched"), f("/truth_missed")), (0.0, 0.0), "{v}");
    assert!(f("/bcubed/f1") >= 0.90, "B-cubed F1 {v}");
    assert!(f("/pairwise/f1") >= 0.90, "pairwise F1 {v}");
    assert!(f("/noise_reduction") >= 0.95, "noise reduction {v}");
    assert!(f("/root_cause_top1") >= 0.8, "root cause {v}");
    assert!(f("/baseline/bcubed/f1") < f("/bcubed/f1"), "{v}");
    // The table form prints the same figures.
    let (table, _) =
        ok(&["eval", "correlation", "--truth", g.join("truth.csv").to_str().unwrap(), "--data", g.join("out").to_str().unwrap()]);
    for want in ["noise reduction", "B-cubed F1", "adjusted Rand index", "root-cause top-1"] {
        assert!(table.contains(want), "{table}");
    }
}

/// The README's worked example: one database failing, 10,000 distinct alerts (plus background
/// noise) become one incident whose root cause is that database.
#[test]
fn a_storm_of_10000_alerts_is_one_incident_rooted_at_the_database() {
    let dir = Scratch::new("gen-storm");
    let g = dir.join("storm");
    gen_alerts(&g, &["--incidents", "1", "--storm-size", "10000", "--tenants", "1", "--seed", "4"]);
    let truth = std::fs::read_to_string(g.join("truth.csv")).unwrap();
    let root = truth.lines().find(|l| l.contains(",inc-")).and_then(|l| l.rsplit(',').next()).unwrap().to_string();
    assert!(root.ends_with("-db"), "the failing store of seed 4 is a database: {root}");
    ok(&["run", g.join("pipeline.toml").to_str().unwrap(), "--workers", "2"]);
    let top = alertflow_tests::query_csv(
        &g.join("out"),
        "SELECT alert_count, root_cause FROM (SELECT *, row_number() OVER (PARTITION BY incident_id ORDER BY revision DESC) AS k FROM incidents) \
         WHERE k = 1 AND status <> 'merged' ORDER BY alert_count DESC LIMIT 2",
    );
    let rows: Vec<Vec<&str>> = top.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let count: u64 = rows[0][0].parse().unwrap();
    assert!((10_000..10_200).contains(&count), "one incident holds the storm: {top}");
    assert_eq!(rows[0][1], root, "{top}");
    assert!(rows[1][0].parse::<u64>().unwrap() < 10, "the rest are small noise incidents: {top}");
}
