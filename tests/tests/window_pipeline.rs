//! The foundation's pipeline contract, end to end: NDJSON file → window aggregate → Parquet,
//! checked against a naive oracle, at 1, 2 and 4 workers, with malformed lines mixed in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use alertflow_tests::{Scratch, alertflow, python, query, query_csv, run_json, workspace};
use alertflow_tools::datagen::{GenReport, MetricsGen, generate_metrics};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};

/// Copies the contract pipeline next to a generated `points.ndjson`.
fn setup(tag: &str, spec: &MetricsGen, pipeline: &str) -> (Scratch, GenReport) {
    let dir = Scratch::new(tag);
    std::fs::write(dir.join("pipeline.toml"), pipeline).unwrap();
    let f = std::fs::File::create(dir.join("points.ndjson")).unwrap();
    let report = generate_metrics(spec, std::io::BufWriter::with_capacity(1 << 20, f)).unwrap();
    (dir, report)
}

fn contract() -> String {
    std::fs::read_to_string(workspace().join("examples/pipeline.toml")).unwrap()
}

type Key = (i64, String, String, String);

/// The oracle: every well-formed line of the input, grouped naively by
/// (ts // 60000, tenant, host, name).
fn oracle(input: &Path) -> BTreeMap<Key, (i64, f64, f64, f64)> {
    let bytes = std::fs::read(input).unwrap();
    let mut m: BTreeMap<Key, (i64, f64, f64, f64)> = BTreeMap::new();
    for line in bytes.split(|&b| b == b'\n') {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
        let (Some(ts), Some(value), Some(name)) = (v["ts"].as_i64(), v["value"].as_f64(), v["name"].as_str()) else { continue };
        let tenant = v["tenant"].as_str().unwrap_or("default").to_string();
        let host = v["host"].as_str().unwrap_or("").to_string();
        let e = m.entry((ts.div_euclid(60_000), tenant, host, name.to_string())).or_insert((0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
        e.0 += 1;
        e.1 += value;
        e.2 = e.2.min(value);
        e.3 = e.3.max(value);
    }
    m
}

/// The `per_minute` table, typed.
fn per_minute(out: &Path) -> BTreeMap<Key, (i64, f64, f64, f64, f64, i64)> {
    let mut m = BTreeMap::new();
    for b in query(out, "SELECT window_start, window_end, tenant, host, name, count, sum, min, max, avg FROM per_minute") {
        let start = b.column(0).as_primitive::<TimestampMillisecondType>();
        let end = b.column(1).as_primitive::<TimestampMillisecondType>();
        let (tenant, host, name) = (b.column(2).as_string::<i32>(), b.column(3).as_string::<i32>(), b.column(4).as_string::<i32>());
        let count = b.column(5).as_primitive::<Int64Type>();
        let f = |i: usize| b.column(i).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            assert_eq!(end.value(i) - start.value(i), 60_000);
            assert!(!host.is_null(i));
            let key = (start.value(i) / 60_000, tenant.value(i).to_string(), host.value(i).to_string(), name.value(i).to_string());
            let prev = m.insert(key, (count.value(i), f(6).value(i), f(7).value(i), f(8).value(i), f(9).value(i), start.value(i)));
            assert!(prev.is_none(), "duplicate row");
        }
    }
    m
}

fn assert_matches_oracle(out: &Path, input: &Path) {
    let want = oracle(input);
    let got = per_minute(out);
    assert_eq!(got.len(), want.len(), "row count");
    for (k, (count, sum, min, max)) in &want {
        let g = got.get(k).unwrap_or_else(|| panic!("missing row {k:?}"));
        assert_eq!((g.0, g.2, g.3), (*count, *min, *max), "{k:?}");
        let tol = 1e-9 * sum.abs().max(1e-9);
        assert!((g.1 - sum).abs() <= tol, "{k:?}: sum {} vs {sum}", g.1);
        assert!((g.4 - sum / *count as f64).abs() <= tol, "{k:?}: avg");
    }
}

fn dead_letter_lines(out: &Path) -> BTreeSet<i64> {
    let mut s = BTreeSet::new();
    for b in query(out, "SELECT line, reason, source FROM dead_letters") {
        let line = b.column(0).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            assert!(!b.column(1).as_string::<i32>().value(i).is_empty());
            s.insert(line.value(i));
        }
    }
    s
}

#[test]
fn contract_pipeline_matches_the_oracle_at_1_2_and_4_workers() {
    let spec = MetricsGen { series: 1_500, points: 300_000, seed: 11, malformed: 100, ..MetricsGen::default() };
    let (dir, report) = setup("contract", &spec, &contract());
    let out = dir.join("out");
    let mut tables = Vec::new();
    for workers in [1, 2, 4] {
        let s = run_json(&dir.join("pipeline.toml"), workers);
        assert_eq!(s["workers"], workers);
        assert_eq!(s["records_in"], report.lines);
        assert_eq!(s["dead_letters"], 100);
        assert_eq!(s["late"], 0);
        assert_matches_oracle(&out, &dir.join("points.ndjson"));
        let want: BTreeSet<i64> = report.malformed.iter().map(|m| m.line as i64).collect();
        assert_eq!(dead_letter_lines(&out), want, "dead letters name exactly the malformed lines");
        tables.push(query_csv(&out, "SELECT * FROM per_minute ORDER BY window_start, tenant, name, host"));
    }
    assert!(tables.iter().all(|t| t == &tables[0]), "1, 2 and 4 workers give the same rows, bit for bit");
    assert!(tables[0].lines().count() > 1000);
}

#[test]
fn reasons_name_the_problem() {
    let spec = MetricsGen { series: 100, points: 5_000, seed: 3, malformed: 10, ..MetricsGen::default() };
    let (dir, _) = setup("reasons", &spec, &contract());
    run_json(&dir.join("pipeline.toml"), 2);
    let csv = query_csv(&dir.join("out"), "SELECT reason FROM dead_letters ORDER BY line");
    for want in [
        "malformed JSON",
        "missing field `value`",
        "field `value` must be a number, got a string",
        "field `ts` is not a time",
        "invalid UTF-8",
    ] {
        assert!(csv.contains(want), "no reason `{want}` in\n{csv}");
    }
    // The raw bytes are kept as they were, invalid UTF-8 included.
    let input = std::fs::read(dir.join("points.ndjson")).unwrap();
    let lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let mut checked = 0;
    for b in query(&dir.join("out"), "SELECT line, raw FROM dead_letters") {
        let (line, raw) = (b.column(0).as_primitive::<Int64Type>(), b.column(1).as_binary::<i32>());
        for i in 0..b.num_rows() {
            assert_eq!(raw.value(i), lines[line.value(i) as usize - 1]);
            checked += 1;
        }
    }
    assert_eq!(checked, 10);
}

#[test]
fn late_records_are_dead_letters_with_reason_late() {
    let dir = Scratch::new("late");
    std::fs::write(dir.join("pipeline.toml"), contract()).unwrap();
    let t0 = 1_767_225_600_000i64;
    let lines = [
        format!(r#"{{"ts":{},"host":"a","name":"cpu","value":1}}"#, t0),
        format!(r#"{{"ts":{},"host":"a","name":"cpu","value":2}}"#, t0 + 20_000),
        // 20 s behind the newest with 5 s allowed: late.
        format!(r#"{{"ts":{},"host":"a","name":"cpu","value":100}}"#, t0 + 1),
        // 4 s behind: on time.
        format!(r#"{{"ts":{},"host":"a","name":"cpu","value":3}}"#, t0 + 16_000),
    ];
    std::fs::write(dir.join("points.ndjson"), lines.join("\n")).unwrap();
    let s = run_json(&dir.join("pipeline.toml"), 1);
    assert_eq!(s["late"], 1);
    let out = dir.join("out");
    assert_eq!(query_csv(&out, "SELECT count, sum, max FROM per_minute"), "count,sum,max\n3,6.0,3.0\n");
    assert_eq!(query_csv(&out, "SELECT line, reason, ts FROM dead_letters"), "line,reason,ts\n3,late,2026-01-01T00:00:00.001Z\n");
}

#[test]
fn duckdb_and_pyarrow_read_the_output_and_agree_with_duckdb_oracle() {
    let Some(py) = python() else { return };
    let spec = MetricsGen { series: 2_000, points: 400_000, seed: 5, malformed: 100, ..MetricsGen::default() };
    let (dir, report) = setup("duckdb", &spec, &contract());
    let log = dir.join("malformed.jsonl");
    let log_text: String = report.malformed.iter().map(|m| format!("{{\"line\":{},\"kind\":\"{}\"}}\n", m.line, m.kind)).collect();
    std::fs::write(&log, log_text).unwrap();
    run_json(&dir.join("pipeline.toml"), 2);
    let out = std::process::Command::new(py)
        .arg(workspace().join("tests/python/check_window.py"))
        .arg(dir.join("points.ndjson"))
        .arg(dir.join("out"))
        .arg("per_minute")
        .arg("--dead-letters")
        .arg(&log)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "checker failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\"ok\": true"), "{stdout}");
}

#[test]
fn alternate_encodings_give_the_same_table() {
    // The same points as CSV (quoted fields, a tenant column) and as Parquet (two row groups).
    let spec = MetricsGen { series: 300, points: 30_000, seed: 9, ..MetricsGen::default() };
    let (dir, _) = setup("formats", &spec, &contract());
    run_json(&dir.join("pipeline.toml"), 2);
    let want = query_csv(&dir.join("out"), "SELECT * FROM per_minute ORDER BY window_start, tenant, name, host");

    let text = std::fs::read_to_string(dir.join("points.ndjson")).unwrap();
    let rows: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut csv = String::from("ts,tenant,host,name,value\n");
    for r in &rows {
        csv.push_str(&format!(
            "{},\"{}\",{},{},{}\n",
            r["ts"],
            r["tenant"].as_str().unwrap(),
            r["host"].as_str().unwrap(),
            r["name"].as_str().unwrap(),
            r["value"]
        ));
    }
    std::fs::write(dir.join("points.csv"), csv).unwrap();
    let csv_pipeline =
        contract().replace("points.ndjson", "points.csv").replace("\"ndjson\"", "\"csv\"").replace("path = \"out\"", "path = \"out_csv\"");
    std::fs::write(dir.join("csv.toml"), csv_pipeline).unwrap();
    run_json(&dir.join("csv.toml"), 2);
    assert_eq!(query_csv(&dir.join("out_csv"), "SELECT * FROM per_minute ORDER BY window_start, tenant, name, host"), want);

    // Parquet with string tenant/host/name, int64 ts, float64 value, small row groups.
    write_parquet(&dir.join("points.parquet"), &rows);
    let pq_pipeline = contract()
        .replace("points.ndjson", "points.parquet")
        .replace("\"ndjson\"", "\"parquet\"")
        .replace("path = \"out\"", "path = \"out_pq\"");
    std::fs::write(dir.join("pq.toml"), pq_pipeline).unwrap();
    run_json(&dir.join("pq.toml"), 2);
    assert_eq!(query_csv(&dir.join("out_pq"), "SELECT * FROM per_minute ORDER BY window_start, tenant, name, host"), want);
}

fn write_parquet(path: &Path, rows: &[serde_json::Value]) {
    use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;
    use std::sync::Arc;
    let col = |k: &str| -> ArrayRef { Arc::new(rows.iter().map(|r| r[k].as_str().map(str::to_string)).collect::<StringArray>()) };
    let batch = RecordBatch::try_from_iter(vec![
        ("ts", Arc::new(rows.iter().map(|r| r["ts"].as_i64()).collect::<Int64Array>()) as ArrayRef),
        ("tenant", col("tenant")),
        ("host", col("host")),
        ("name", col("name")),
        ("value", Arc::new(rows.iter().map(|r| r["value"].as_f64()).collect::<Float64Array>()) as ArrayRef),
    ])
    .unwrap();
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(7_000)).build();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn hostile_files_become_dead_letters_not_crashes() {
    let dir = Scratch::new("hostile");
    let contract = contract();
    // An empty file, a truncated Parquet file and a CSV with a wrong header, in one glob.
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::write(dir.join("in/a-empty.ndjson"), "").unwrap();
    std::fs::write(dir.join("in/b-truncated.parquet"), b"PAR1\x00\x01garbage").unwrap();
    std::fs::write(dir.join("in/c-wrong.csv"), "time,metric,v\n1,cpu,2\n3,cpu,4\n").unwrap();
    std::fs::write(dir.join("in/d-good.ndjson"), "{\"ts\":1767225600000,\"host\":\"a\",\"name\":\"cpu\",\"value\":1}\n").unwrap();
    let p = contract.replace("path = \"points.ndjson\"", "path = \"in/*\"").replace("format = \"ndjson\"\n", "");
    std::fs::write(dir.join("pipeline.toml"), p).unwrap();
    let s = run_json(&dir.join("pipeline.toml"), 2);
    assert_eq!(s["dead_letters"], 4, "{s}");
    let out = dir.join("out");
    assert_eq!(query_csv(&out, "SELECT count FROM per_minute"), "count\n1\n");
    let dl = query_csv(&out, "SELECT file, line, reason FROM dead_letters ORDER BY file, line");
    assert!(dl.contains("in/b-truncated.parquet,0,cannot read Parquet file"), "{dl}");
    assert!(dl.contains("in/c-wrong.csv,1,\"invalid CSV header: no `ts` column (found: time, metric, v)\""), "{dl}");
    assert!(dl.contains("in/c-wrong.csv,2,\"the file's CSV header is invalid (see its line 1)"), "{dl}");
    assert!(dl.contains("in/c-wrong.csv,3,\"the file's CSV header is invalid (see its line 1)"), "{dl}");
}

#[test]
fn bad_pipelines_fail_validate_and_run_before_starting() {
    let dir = Scratch::new("badcfg");
    std::fs::write(dir.join("points.ndjson"), "").unwrap();
    let cases = [
        (contract().replace("records = \"metrics\"", "records = \"metrics\"\ncolour = \"blue\""), "source[0].colour: unknown key"),
        (contract().replace("\"5s\"", "\"5 parsecs\""), "source[0].max_out_of_orderness: invalid duration `5 parsecs`"),
        (contract().replace("size = \"1m\"", "size = \"0s\""), "aggregate[0].window.size: must be greater than 0"),
        (contract().replace("input = \"points\"", "input = \"pionts\""), "aggregate[0].input: no source named `pionts`"),
    ];
    for (text, want) in cases {
        std::fs::write(dir.join("pipeline.toml"), &text).unwrap();
        for cmd in ["validate", "run"] {
            let out = alertflow(&[cmd, &dir.join("pipeline.toml").to_string_lossy()]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
            assert!(err.contains(want), "{cmd}: want `{want}` in\n{err}");
        }
        assert!(!dir.join("out").exists(), "a bad config must not start anything");
    }
    let ok = alertflow(&["validate", &workspace().join("examples/demo.toml").to_string_lossy()]);
    // demo.toml's data is generated by the demo, so it does not validate where it lies.
    assert_eq!(ok.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&ok.stderr).contains("source[0].path: no file matches `points.ndjson`"));
}
