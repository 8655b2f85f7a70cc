//! The foundation's acceptance run at full size: 2,000,000 points (10,000 series every 10 s,
//! up to 2 s of disorder) plus 100 malformed lines, at 1, 2 and 4 workers; DuckDB computes the
//! expected table straight from the NDJSON and reads our Parquet, pyarrow reads it too.

use alertflow_tests::{Scratch, python, query_csv, run_json, workspace};
use alertflow_tools::datagen::{MetricsGen, generate_metrics};

#[test]
fn two_million_points_match_duckdb_at_1_2_and_4_workers() {
    let dir = Scratch::new("w1");
    std::fs::copy(workspace().join("examples/pipeline.toml"), dir.join("pipeline.toml")).unwrap();
    let spec = MetricsGen { series: 10_000, points: 2_000_000, seed: 1, disorder_ms: 2_000, malformed: 100, ..MetricsGen::default() };
    let report = generate_metrics(&spec, std::fs::File::create(dir.join("points.ndjson")).unwrap()).unwrap();
    let log: String = report.malformed.iter().map(|m| format!("{{\"line\":{},\"kind\":\"{}\"}}\n", m.line, m.kind)).collect();
    std::fs::write(dir.join("malformed.jsonl"), log).unwrap();
    let py = python();
    let mut first: Option<String> = None;
    for workers in [1, 2, 4] {
        let s = run_json(&dir.join("pipeline.toml"), workers);
        assert_eq!(s["records_in"], 2_000_100);
        assert_eq!(s["dead_letters"], 100);
        assert_eq!(s["late"], 0);
        if let Some(py) = &py {
            let out = std::process::Command::new(py)
                .arg(workspace().join("tests/python/check_window.py"))
                .args([dir.join("points.ndjson"), dir.join("out")])
                .arg("per_minute")
                .arg("--dead-letters")
                .arg(dir.join("malformed.jsonl"))
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{workers} workers: DuckDB check failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        }
        let table = query_csv(&dir.join("out"), "SELECT * FROM per_minute ORDER BY window_start, tenant, name, host");
        assert_eq!(table.lines().count(), 1 + s["tables"][0]["rows"].as_u64().unwrap() as usize);
        match &first {
            None => first = Some(table),
            Some(f) => assert!(f == &table, "{workers} workers differ from 1 worker"),
        }
    }
}
