//! The hostile-input corpus (`tests/corpus/`, described in its `MANIFEST.toml`): every file
//! is run through a real pipeline, and each must end exactly as the manifest says: its good
//! records counted and aggregated, each bad one a dead letter at its line with a reason that
//! names the problem, and nothing else lost; or, for a file nothing can be read from, a clear
//! error. Never a panic, never a hang.
//!
//! The files are cut into 1 KiB chunks read by two workers, so line numbers and long lines
//! are also checked across chunk boundaries.

use std::path::{Path, PathBuf};

mod common;

use alertflow_engine::{Pipeline, RunOptions, run};
use arrow::array::AsArray;
use arrow::datatypes::{DataType, Int64Type};
use common::temp_dir;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    case: Vec<Case>,
}

/// One corpus file and what it must produce.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// Relative to `tests/corpus/`.
    file: String,
    /// `metrics` or `alerts`.
    records: String,
    /// A `format` for the source, when the extension does not say.
    #[serde(default)]
    format: Option<String>,
    /// Records that must get through.
    #[serde(default)]
    good: u64,
    /// Every dead letter: (line, a piece of its reason), in line order.
    #[serde(default)]
    dead: Vec<(u64, String)>,
    /// Why the file is in the corpus (documentation only).
    #[allow(dead_code)]
    why: String,
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus")
}

/// (line, reason, raw) of every dead letter under `out`, sorted by line.
fn dead_letters(out: &Path) -> Vec<(u64, String, Vec<u8>)> {
    let mut rows = Vec::new();
    for f in parquet_files(&out.join("dead_letters")) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap()).unwrap().build().unwrap();
        for batch in reader {
            let b = batch.unwrap();
            let line = b.column_by_name("line").unwrap().as_primitive::<Int64Type>();
            let reason = b.column_by_name("reason").unwrap().as_string::<i32>();
            let raw = b.column_by_name("raw").unwrap().as_binary::<i32>();
            for i in 0..b.num_rows() {
                rows.push((line.value(i) as u64, reason.value(i).to_string(), raw.value(i).to_vec()));
            }
        }
    }
    rows.sort();
    rows
}

/// The sum of the `count` column of a window table: the records it aggregated.
fn counted(dir: &Path) -> i64 {
    let mut n = 0;
    for f in parquet_files(dir) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap()).unwrap().build().unwrap();
        for batch in reader {
            let b = batch.unwrap();
            let c = arrow::compute::cast(b.column_by_name("count").unwrap(), &DataType::Int64).unwrap();
            n += c.as_primitive::<Int64Type>().iter().flatten().sum::<i64>();
        }
    }
    n
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap().to_string_lossy().starts_with("part-") {
                out.push(p);
            }
        }
    }
    out
}

fn pipeline(case: &Case, dir: &Path) -> Pipeline {
    let file = corpus().join(&case.file);
    let format = case.format.as_ref().map(|f| format!("format = \"{f}\"")).unwrap_or_default();
    let body = match case.records.as_str() {
        "metrics" => {
            "[[aggregate]]\nname = \"per_minute\"\ninput = \"in\"\nwindow = { type = \"tumbling\", size = \"1m\" }\ngroup_by = [\"host\"]\nfunctions = [\"count\"]\n"
        }
        "alerts" => "[dedup]\nresolve_timeout = \"5m\"\n",
        other => panic!("{}: records = {other}", case.file),
    };
    let text = format!(
        "[[source]]\nname = \"in\"\ntype = \"file\"\npath = {:?}\nrecords = \"{}\"\nchunk_size = \"1KiB\"\n{format}\n\n{body}\n[output]\npath = \"out\"\n",
        file.display().to_string(),
        case.records
    );
    Pipeline::parse(&text, dir).unwrap_or_else(|e| panic!("{}: {e}", case.file))
}

#[test]
fn every_corpus_file_ends_as_its_manifest_says() {
    let manifest: Manifest = toml::from_str(&std::fs::read_to_string(corpus().join("MANIFEST.toml")).unwrap()).unwrap();
    // Every file of the corpus is in the manifest, and every entry is a file.
    let mut on_disk = Vec::new();
    for kind in ["metrics", "alerts"] {
        for e in std::fs::read_dir(corpus().join(kind)).unwrap() {
            on_disk.push(format!("{kind}/{}", e.unwrap().file_name().to_string_lossy()));
        }
    }
    on_disk.sort();
    let mut listed: Vec<String> = manifest.case.iter().map(|c| c.file.clone()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "tests/corpus/MANIFEST.toml must list every corpus file once");

    let mut failures = Vec::new();
    for case in &manifest.case {
        let dir = temp_dir("hostile");
        let summary = match run(pipeline(case, &dir), RunOptions { workers: Some(2), ..RunOptions::default() }) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{}: the run failed: {e}", case.file));
                continue;
            }
        };
        let dead = dead_letters(&dir.join("out"));
        let good = summary.records_in - summary.dead_letters - summary.late;
        let mut problems = Vec::new();
        if good != case.good {
            problems.push(format!("{good} good records, want {}", case.good));
        }
        if case.records == "metrics" && counted(&dir.join("out/per_minute")) != case.good as i64 {
            problems.push(format!("the window table counted {} records, want {}", counted(&dir.join("out/per_minute")), case.good));
        }
        let got: Vec<(u64, &str)> = dead.iter().map(|(l, r, _)| (*l, r.as_str())).collect();
        let matches =
            got.len() == case.dead.len() && got.iter().zip(&case.dead).all(|((gl, gr), (wl, wr))| gl == wl && gr.contains(wr.as_str()));
        if !matches {
            problems.push(format!("dead letters {got:#?}\nwant {:#?}", case.dead));
        }
        if summary.dead_letters + summary.late != dead.len() as u64 {
            problems.push(format!(
                "the summary counts {} dead letters, the table holds {}",
                summary.dead_letters + summary.late,
                dead.len()
            ));
        }
        // A dead letter keeps the record (up to its limit) unless the whole file was unreadable.
        if let Some((l, r, _)) = dead.iter().find(|(l, _, raw)| *l > 0 && raw.is_empty() && !case.file.ends_with(".parquet")) {
            problems.push(format!("the dead letter of line {l} ({r}) kept no bytes of the record"));
        }
        if !problems.is_empty() {
            failures.push(format!("{}:\n  {}", case.file, problems.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "{} of {} corpus files went wrong:\n{}", failures.len(), manifest.case.len(), failures.join("\n\n"));
}
