//! `alertflow detect`: runs one anomaly detector over a `timestamp,value` CSV (the Numenta
//! Anomaly Benchmark's format) and writes `timestamp,value,anomaly_score` to stdout — the same
//! detector code the `[[detect]]` pipeline operator runs per series.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use alertflow_model::time::parse_time_text;
use alertflow_operators::detect::{DetectorKind, DetectorSpec, ParamValue, Params};

use super::{BAD_CONFIG, FAILED, OK};

/// `alertflow detect …`
#[derive(clap::Args, Debug)]
pub struct DetectArgs {
    /// The detector (see `--list`).
    #[arg(long, default_value = "ensemble")]
    pub detector: String,
    /// A detector parameter, `key=value` (repeatable), as in a `[[detect]]` section's `params`.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Print the detectors, one per line, best default first, and exit.
    #[arg(long)]
    pub list: bool,
    /// The input: CSV with `timestamp,value` columns (a header row, then one point per row).
    #[arg(required_unless_present = "list")]
    pub input: Option<PathBuf>,
}

/// Runs `alertflow detect`; 0 ok, 1 unreadable or bad input, 2 bad arguments.
pub fn run(args: DetectArgs) -> u8 {
    if args.list {
        let mut out = std::io::stdout().lock();
        for k in DetectorKind::ALL {
            let _ = writeln!(out, "{}\t{}", k.name(), k.describe());
        }
        return OK;
    }
    let Some(kind) = DetectorKind::parse(&args.detector) else {
        let names: Vec<&str> = DetectorKind::ALL.iter().map(|k| k.name()).collect();
        eprintln!("error: --detector: unknown detector `{}` (known: {})", args.detector, names.join(", "));
        return BAD_CONFIG;
    };
    let mut params = Params::new();
    for p in &args.params {
        let Some((k, v)) = p.split_once('=') else {
            eprintln!("error: --param `{p}`: write it as key=value");
            return BAD_CONFIG;
        };
        params.insert(k.trim().to_string(), ParamValue::parse_cli(v.trim()));
    }
    let spec = match DetectorSpec::new(kind, &params) {
        Ok(s) => s,
        Err(errs) => {
            for e in errs {
                eprintln!("error: --param {e}");
            }
            return BAD_CONFIG;
        }
    };
    let input = args.input.expect("clap requires INPUT without --list");
    match score_file(&input, &spec) {
        Ok(()) => OK,
        Err(e) => {
            eprintln!("error: {e}");
            FAILED
        }
    }
}

/// Scores every row of `path` in file order and writes the result CSV to stdout.
fn score_file(path: &Path, spec: &DetectorSpec) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let reader = std::io::BufReader::new(file);
    let mut out = BufWriter::new(std::io::stdout().lock());
    writeln!(out, "timestamp,value,anomaly_score")?;
    let mut detector = spec.build();
    // Column indices of timestamp and value, from the header (NAB: `timestamp,value`).
    let mut cols: Option<(usize, usize)> = None;
    let mut line = String::new();
    let mut reader = reader;
    let mut number = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))? == 0 {
            break;
        }
        number += 1;
        let row = line.trim_end_matches(['\n', '\r']);
        if row.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        let Some((ti, vi)) = cols else {
            let find = |name: &str| fields.iter().position(|f| f.trim_matches('"').eq_ignore_ascii_case(name));
            match (find("timestamp"), find("value")) {
                (Some(t), Some(v)) => cols = Some((t, v)),
                _ => anyhow::bail!("{}:{number}: the header must name `timestamp` and `value` columns, found `{row}`", path.display()),
            }
            continue;
        };
        let (Some(t), Some(v)) = (fields.get(ti), fields.get(vi)) else {
            anyhow::bail!("{}:{number}: expected {} columns, found {}", path.display(), ti.max(vi) + 1, fields.len());
        };
        let ts = parse_time_text(t.trim_matches('"'))
            .ok_or_else(|| anyhow::anyhow!("{}:{number}: `{t}` is not a time (e.g. 2014-07-01 00:00:00)", path.display()))?;
        let value: f64 = match v.parse::<f64>() {
            Ok(x) if x.is_finite() => x,
            _ => anyhow::bail!("{}:{number}: `{v}` is not a finite number", path.display()),
        };
        let s = detector.score(ts, value);
        writeln!(out, "{t},{v},{}", s.score)?;
    }
    if cols.is_none() {
        anyhow::bail!("{}: empty file (expected a `timestamp,value` header)", path.display());
    }
    out.flush()?;
    Ok(())
}
