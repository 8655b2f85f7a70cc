//! The fixed-rate mode of `alertflow bench` (`--rate R --duration D`): data whose event time
//! runs with the wall clock, replayed at R records/s, with processing latency measured.
//!
//! Each scenario's stream is generated as in the throughput mode (the same generators), put in
//! event-time order and *re-timed*: the k-th record gets `ts = T0 + ⌊k·1000/R⌋` ms, so event
//! time advances evenly at R records per second — a live stream whose records carry their
//! arrival time. The records are dealt round-robin into one file per worker, each replayed at
//! its share of R (`replay_rate`) from one origin, so every worker's event time keeps pace with
//! the wall clock and the frontier (their minimum) too. With `max_out_of_orderness = 0` and a
//! 1 ms epoch, a record's effect can be final 1 ms after it arrives; the engine's latency probe
//! (`alertflow run --latency T0,TEND`, see `alertflow_connectors::latency`) measures the rest.
//!
//! Pipelines differ from the throughput mode where time scales would leave nothing to measure
//! in a short run: windows are 1 s (a 1-minute window would close once or not at all in 30 s),
//! Parquet files cover 1 s of event time (rows leave the Parquet sink when their file is
//! written, so the file span bounds that figure from below), and detectors run on 1,000
//! series (each sees enough points in 30 s to be past its warm-up).

use std::io::Write;
use std::path::Path;

use alertflow_tools::alertgen::{AlertFormat, AlertGen};
use alertflow_tools::datagen::{MetricsGen, generate_metrics};

use super::{ALERT_CHAIN, Scenario};

/// Event time of the first record of every paced stream (2026-01-01T00:00:00Z).
pub const T0: i64 = 1_767_225_600_000;

/// A paced scenario's data on disk and its pipeline.
pub struct Paced {
    /// The pipeline text.
    pub pipeline: String,
    /// Records in all sources.
    pub records: u64,
    /// Event time of the last record (ms).
    pub until: i64,
}

/// Writes `s`'s data for `records` records in all at `rate` records/s in all, dealt over
/// `files` files per source, and returns its pipeline. `None` for a scenario without a
/// fixed-rate mode.
pub fn prepare(s: Scenario, dir: &Path, rate: u64, records: u64, files: usize) -> Result<Option<Paced>, String> {
    let (pipeline, until) = match s {
        Scenario::Metrics => {
            let until = points(dir, 10_000, records, rate, files)?;
            (format!("{ENGINE}{}{PER_SECOND}{OUTPUT}", source("points", "points-*.ndjson", "metrics", rate)), until)
        }
        Scenario::Alerts => {
            let until = alerts(dir, records, rate, files)?;
            (format!("{ENGINE}{}{ALERT_CHAIN}{OUTPUT}", source("alerts", "alerts-*.ndjson", "alerts", rate)), until)
        }
        Scenario::Anomaly => {
            let until = points(dir, 1_000, records, rate, files)?;
            (format!("{ENGINE}{}{DETECTORS}{OUTPUT}", source("points", "points-*.ndjson", "metrics", rate)), until)
        }
        Scenario::EndToEnd => {
            // Half the rate each: metric points and alerts, on the same clock.
            let (p, a) = (records / 2, records - records / 2);
            let (rp, ra) = ((rate / 2).max(1), (rate - rate / 2).max(1));
            let until = points(dir, 1_000, p, rp, files)?.max(alerts(dir, a, ra, files)?);
            let sources =
                format!("{}{}", source("points", "points-*.ndjson", "metrics", rp), source("alerts", "alerts-*.ndjson", "alerts", ra));
            (format!("{ENGINE}{sources}{PER_SECOND}{END_TO_END}{ALERT_CHAIN}{OUTPUT}"), until)
        }
        Scenario::Kafka | Scenario::Push | Scenario::PushWal => return Ok(None),
    };
    Ok(Some(Paced { pipeline, records, until }))
}

/// The event time of the `k`-th record of a stream at `rate` records/s.
fn retime(k: u64, rate: u64) -> i64 {
    T0 + (k as u128 * 1000 / rate as u128) as i64
}

/// Metric points of `series` series (W1's generator, no disorder), re-timed. Returns the
/// last event time.
fn points(dir: &Path, series: usize, records: u64, rate: u64, files: usize) -> Result<i64, String> {
    // One round of every series per `series / rate` seconds: the generator's order is then
    // already close to the re-timed one.
    let interval_ms = (series as u64 * 1000 / rate).max(1);
    let g = MetricsGen { series, points: records, disorder_ms: 0, interval_ms, start_ms: T0, ..MetricsGen::default() };
    let mut buf = Vec::with_capacity(records as usize * 96);
    generate_metrics(&g, &mut buf).map_err(|e| format!("cannot generate points: {e}"))?;
    deal(dir, "points", &buf, rate, files)
}

/// The storm-heavy alert stream of the throughput mode (as many incidents as it takes to have
/// `records` notices), in event-time order, re-timed. Returns the last event time.
fn alerts(dir: &Path, records: u64, rate: u64, files: usize) -> Result<i64, String> {
    // About 47,000 notices per incident with storms of 20,000 alerts (3 M for 64 incidents).
    let cfg = AlertGen { incidents: (records.div_ceil(40_000) as usize).max(8), storm_size: Some(20_000), seed: 1, ..AlertGen::default() };
    alertflow_tools::alertgen::write_files(&cfg, AlertFormat::Ndjson, dir).map_err(|e| format!("cannot write the alert stream: {e}"))?;
    let path = dir.join(AlertFormat::Ndjson.file_name());
    let text = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let _ = std::fs::remove_file(&path);
    let mut lines: Vec<(i64, &[u8])> = Vec::new();
    for l in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        lines.push((leading_ts(l).ok_or("an alert line does not start with its `ts`")?.0, l));
    }
    // Event-time order (stable: equal times keep the generator's order).
    lines.sort_by_key(|(t, _)| *t);
    if (lines.len() as u64) < records {
        return Err(format!("the alert generator wrote {} notices, fewer than the {records} needed", lines.len()));
    }
    let mut joined = Vec::with_capacity(text.len());
    for (_, l) in &lines[..records as usize] {
        joined.extend_from_slice(l);
        joined.push(b'\n');
    }
    deal(dir, "alerts", &joined, rate, files)
}

/// `{"ts":<digits>` at the start of a line: the time and the rest of the line after it.
fn leading_ts(line: &[u8]) -> Option<(i64, &[u8])> {
    let rest = line.strip_prefix(b"{\"ts\":")?;
    let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let ts = std::str::from_utf8(&rest[..n]).ok()?.parse().ok()?;
    Some((ts, &rest[n..]))
}

/// Re-times the lines of `text` (one record per line, in order) and deals them round-robin
/// into `<stem>-<i>.ndjson`, `i < files`. Returns the last event time.
fn deal(dir: &Path, stem: &str, text: &[u8], rate: u64, files: usize) -> Result<i64, String> {
    let mut outs = Vec::new();
    for i in 0..files {
        let path = dir.join(format!("{stem}-{i}.ndjson"));
        let f = std::fs::File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        outs.push((path, std::io::BufWriter::with_capacity(1 << 20, f)));
    }
    let mut last = T0;
    for (k, line) in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        let (_, rest) = leading_ts(line).ok_or_else(|| format!("line {} of the {stem} stream does not start with its `ts`", k + 1))?;
        last = retime(k as u64, rate);
        let (path, w) = &mut outs[k % files];
        write!(w, "{{\"ts\":{last}")
            .and_then(|_| w.write_all(rest))
            .and_then(|_| w.write_all(b"\n"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    for (path, mut w) in outs {
        w.flush().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(last)
}

fn source(name: &str, path: &str, records: &str, rate: u64) -> String {
    // One partition per file (no chunking), so each worker starts its file at once and the
    // frontier moves from the first record on.
    format!(
        "[[source]]\nname = \"{name}\"\ntype = \"file\"\npath = \"{path}\"\nformat = \"ndjson\"\nrecords = \"{records}\"\n\
         max_out_of_orderness = \"0s\"\nreplay_rate = {rate}\nchunk_size = \"1024GiB\"\n\n"
    )
}

const ENGINE: &str = "[engine]\nepoch = \"1ms\"\n\n";

const OUTPUT: &str = "[output]\npath = \"out\"\nfile_span = \"1s\"\n";

const PER_SECOND: &str = r#"[[aggregate]]
name = "per_second"
input = "points"
window = { type = "tumbling", size = "1s" }
group_by = ["host"]
functions = ["count", "sum", "min", "max", "avg"]

"#;

const DETECTORS: &str = r#"[[detect]]
name = "zscore"
input = "points"
detector = "zscore"
threshold = 0.5

[[detect]]
name = "mad"
input = "points"
detector = "mad"
threshold = 0.5

[[detect]]
name = "holt_winters"
input = "points"
detector = "holt_winters"
threshold = 0.5

"#;

const END_TO_END: &str = r#"[[detect]]
name = "anomalies"
input = "points"
detector = "zscore"
threshold = 0.99
raise_alerts = true

"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retimed_streams_advance_evenly_and_are_dealt_round_robin() {
        let dir = std::env::temp_dir().join(format!("alertflow-paced-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let text = b"{\"ts\":5,\"a\":1}\n{\"ts\":9,\"a\":2}\n{\"ts\":9,\"a\":3}\n";
        let last = deal(&dir, "x", text, 2, 2).unwrap();
        assert_eq!(last, T0 + 1000);
        let f0 = std::fs::read_to_string(dir.join("x-0.ndjson")).unwrap();
        let f1 = std::fs::read_to_string(dir.join("x-1.ndjson")).unwrap();
        assert_eq!(f0, format!("{{\"ts\":{T0},\"a\":1}}\n{{\"ts\":{},\"a\":3}}\n", T0 + 1000));
        assert_eq!(f1, format!("{{\"ts\":{},\"a\":2}}\n", T0 + 500));
        assert!(deal(&dir, "y", b"{\"t\":1}\n", 2, 1).unwrap_err().contains("line 1"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
