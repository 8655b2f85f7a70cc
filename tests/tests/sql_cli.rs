//! `alertflow sql` as a user runs it: formats, Parquet export, Hive partition columns, errors.

use alertflow_tests::{Scratch, alertflow, query_csv, run_json, workspace};
use alertflow_tools::datagen::{MetricsGen, generate_metrics};

fn prepared() -> Scratch {
    let dir = Scratch::new("sql");
    std::fs::write(dir.join("pipeline.toml"), std::fs::read_to_string(workspace().join("examples/pipeline.toml")).unwrap()).unwrap();
    let spec = MetricsGen { series: 50, points: 50 * 400, seed: 2, malformed: 3, ..MetricsGen::default() };
    generate_metrics(&spec, std::fs::File::create(dir.join("points.ndjson")).unwrap()).unwrap();
    run_json(&dir.join("pipeline.toml"), 2);
    dir
}

fn sql(dir: &Scratch, args: &[&str]) -> (i32, String, String) {
    let data = dir.join("out");
    let mut all = vec!["sql", "--data", data.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = alertflow(&all);
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string())
}

#[test]
fn formats_export_and_errors() {
    let dir = prepared();
    let q = "SELECT date, hour, count(*) AS n FROM per_minute GROUP BY date, hour ORDER BY date, hour";

    let (code, csv, err) = sql(&dir, &[q, "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    // 400 rounds of 10 s from 2026-01-01T00:00 (±2 s): the last points fall in hour 01.
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "date,hour,n");
    assert!(lines[1].starts_with("2025-12-31,23,") || lines[1].starts_with("2026-01-01,0,"), "{csv}");
    assert!(lines.iter().any(|l| l.starts_with("2026-01-01,1,")), "{csv}");

    let (code, json, _) = sql(&dir, &["SELECT count(*) AS n FROM dead_letters", "--format", "json"]);
    assert_eq!(code, 0);
    assert_eq!(json.trim(), r#"[{"n":3}]"#);

    let (code, table, _) = sql(&dir, &["SELECT 1 AS one"]);
    assert_eq!(code, 0);
    assert!(table.contains("| one |") && table.contains("| 1   |"), "{table}");

    let export = dir.join("export.parquet");
    let (code, _, err) =
        sql(&dir, &["SELECT * FROM per_minute WHERE host = 'h00007'", "--format", "parquet", "--output", export.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let want = query_csv(&dir.join("out"), "SELECT count(*) AS n FROM per_minute WHERE host = 'h00007'");
    let want: u64 = want.lines().nth(1).unwrap().parse().unwrap();
    assert!(want > 60);
    assert!(err.contains(&format!("wrote {want} row(s)")), "{err}");
    // The export is a plain Parquet file any engine reads; read it back through DataFusion.
    let back = Scratch::new("sql-export");
    std::fs::create_dir_all(back.join("exported")).unwrap();
    std::fs::copy(&export, back.join("exported/x.parquet")).unwrap();
    let n = query_csv(&back.0, "SELECT count(*) AS n, min(host) AS h FROM exported");
    assert!(n.contains(",h00007"), "{n}");

    let (code, _, err) = sql(&dir, &["SELECT * FROM nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("table 'alertflow.public.nope' not found"), "{err}");
    let (code, _, err) = sql(&dir, &["SELEKT 1"]);
    assert_eq!(code, 1);
    assert!(err.to_lowercase().contains("sql error"), "{err}");
    let (code, _, err) = sql(&dir, &["SELECT 1", "--format", "xml"]);
    assert_eq!(code, 2, "{err}");
    let o = alertflow(&["sql", "--data", "/nonexistent/folder", "SELECT 1"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn partition_filters_and_types() {
    let dir = prepared();
    let (code, out, err) = sql(
        &dir,
        &[
            "SELECT arrow_typeof(window_start) AS t, arrow_typeof(date) AS d, arrow_typeof(hour) AS h FROM per_minute LIMIT 1",
            "--format",
            "csv",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let row = out.lines().nth(1).unwrap();
    assert!(row.starts_with("\"Timestamp(") && row.contains("UTC") && row.ends_with(",Date32,Int32"), "{out}");
    let (code, out, _) = sql(
        &dir,
        &[
            "SELECT count(*) AS n FROM per_minute WHERE date = DATE '2026-01-01' AND hour = 1 AND date_trunc('hour', window_start) <> TIMESTAMP '2026-01-01T01:00:00Z'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(out, "n\n0\n", "every row of hour=01 starts in that hour");
}

#[test]
fn the_prompt_reads_statements_from_stdin() {
    use std::io::Write;
    let dir = prepared();
    let mut child = std::process::Command::new(alertflow_tests::bin())
        .args(["sql", "--data", dir.join("out").to_str().unwrap(), "--format", "csv"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"\\d\nSELECT count(*) AS n\n  FROM dead_letters;\nSELECT nope;\nSELECT 2 AS two;\n\\q\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("per_minute") && stdout.contains("dead_letters"), "\\d lists tables:\n{stdout}");
    assert!(stdout.contains("n\n3\n"), "a statement over two lines runs:\n{stdout}");
    assert!(stderr.contains("error:") && stderr.contains("nope"), "an error is reported and the prompt goes on:\n{stderr}");
    assert!(stdout.contains("two\n2\n"), "{stdout}");
}
