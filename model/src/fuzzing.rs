//! The bodies of the `cargo fuzz` targets (`fuzz/fuzz_targets/`), one per decoder.
//!
//! They live here, not in the fuzz crate, so that the ordinary test build compiles them and a
//! unit test runs each one over the hostile corpus (`tests/corpus/`) and over seeded random
//! mutations: a fuzz target that no longer builds, or that a known input crashes, fails
//! `cargo test` on the stable toolchain, not only a nightly fuzzing session.
//!
//! Each body feeds its input to a decoder the way a connector would (split into lines, a CSV
//! header first, a remote_write body compressed or not) and then checks what came out, so a
//! fuzzer finds wrong answers and not only panics:
//! - every record a decoder accepts is valid (event time in range, finite value, a non-empty
//!   name and tenant, labels sorted, unique, non-empty and at most [`MAX_LABELS`]);
//! - a metric line the hand-written JSON decoder accepts is JSON (checked with `serde_json`),
//!   and a well-formed line is decoded to what a naive `serde_json` reading of the documented
//!   record format gives (a differential oracle for the decoder's fast path);
//! - decoding is deterministic (the same line twice gives the same series or labels);
//! - every remote_write sample accepted, written again by [`remote_write::encode`], decodes to
//!   the same samples.

use std::sync::Arc;

use crate::alert::Alert;
use crate::decode::remote_write::encode;
use crate::decode::{
    AlertDecoder, CsvAlertHeader, CsvHeader, CsvMetricDecoder, MAX_LABELS, MAX_LINE_BYTES, NdjsonMetricDecoder, RemoteWriteDecoder,
    is_blank, parse_time_field, trim_line,
};
use crate::series::{DEFAULT_TENANT, Series, SeriesInterner};
use crate::time::{MAX_EVENT_TIME, Millis};

/// The lines of `data` as a file source reads them: split at `\n`, without a trailing `\r` or
/// a leading byte order mark, blank lines skipped.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n').map(trim_line).filter(|l| !is_blank(l))
}

/// Whether `line` is JSON by the grammar (serde_json reading it without building values, so
/// without its range limit on numbers: `1e400` is JSON, a label that keeps it as text is fine).
fn is_json(line: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok()
}

/// A line for a failure message: lossy UTF-8, at most 300 bytes.
fn show(line: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(&line[..line.len().min(300)]))
}

fn check_time(what: &str, ts: Millis) {
    assert!((0..=MAX_EVENT_TIME).contains(&ts), "{what} {ts} is outside 1970–9999");
}

fn check_labels(what: &str, labels: &[(Arc<str>, Arc<str>)], max: usize) {
    assert!(labels.len() <= max, "{what}: {} labels", labels.len());
    for w in labels.windows(2) {
        assert!(w[0].0 < w[1].0, "{what}: labels not sorted and unique: {:?}", labels);
    }
    assert!(labels.iter().all(|(k, _)| !k.is_empty()), "{what}: an empty label key");
}

fn check_series(series: &Series, ts: Millis, value: f64) {
    check_time("ts", ts);
    assert!(value.is_finite(), "value {value}");
    assert!(!series.name().is_empty(), "an empty name");
    assert!(!series.tenant().is_empty(), "an empty tenant");
    check_labels("series", series.labels(), MAX_LABELS);
}

fn check_alert(a: &Alert) {
    check_time("ts", a.ts);
    check_time("starts_at", a.starts_at);
    if let Some(e) = a.ends_at {
        check_time("ends_at", e);
    }
    assert!(!a.tenant().is_empty(), "an empty tenant");
    assert!(!a.alertname().is_empty(), "an alert without alertname was accepted");
    check_labels("alert labels", a.labels.labels(), MAX_LABELS);
    check_labels("annotations", a.annotations.labels(), MAX_LABELS);
}

/// NDJSON metric lines: validity, determinism, and the `serde_json` oracle.
pub fn metrics_ndjson(data: &[u8]) {
    let mut decoder = NdjsonMetricDecoder::new();
    let mut interner = SeriesInterner::default();
    for line in lines(data) {
        let got = decoder.decode(line, &mut interner);
        if let Ok((series, ts, value)) = &got {
            check_series(series, *ts, *value);
            let again = decoder.decode(line, &mut interner).expect("the same line decodes twice");
            assert!(Series::ptr_eq(series, &again.0) && again.1 == *ts && again.2.to_bits() == value.to_bits(), "not deterministic");
            assert!(is_json(line), "accepted a line that is not JSON: {}", show(line));
        }
        if let Some(want) = reference_metric(line) {
            match (&got, want) {
                (Ok((series, ts, value)), Ok(want)) => want.same(series, *ts, *value, line),
                (Err(_), Err(())) => {}
                (Ok(_), Err(())) => panic!("accepted a line the record format rejects: {}", show(line)),
                (Err(e), Ok(_)) => panic!("rejected a valid line ({e}): {}", show(line)),
            }
        }
    }
}

/// CSV metric lines under the first line as header.
pub fn metrics_csv(data: &[u8]) {
    let mut it = lines(data);
    let Some(Ok(header)) = it.next().map(CsvHeader::parse) else { return };
    let mut decoder = CsvMetricDecoder::new(header);
    let mut interner = SeriesInterner::default();
    for line in it {
        if let Ok((series, ts, value)) = decoder.decode(line, &mut interner) {
            check_series(&series, ts, value);
            let again = decoder.decode(line, &mut interner).expect("the same line decodes twice");
            assert!(Series::ptr_eq(&series, &again.0) && again.1 == ts && again.2.to_bits() == value.to_bits(), "not deterministic");
        }
    }
}

/// NDJSON alert lines, and the same input as a CSV alert file.
pub fn alerts(data: &[u8]) {
    let mut decoder = AlertDecoder::new();
    for (pos, line) in lines(data).enumerate() {
        if let Ok(a) = decoder.ndjson(line, 0, pos as u64) {
            check_alert(&a);
            let again = decoder.ndjson(line, 0, pos as u64).expect("the same line decodes twice");
            assert_eq!(a.labels.fingerprint(), again.labels.fingerprint(), "not deterministic");
            assert!(is_json(line), "accepted a line that is not JSON: {}", show(line));
        }
    }
    let mut it = lines(data);
    let Some(Ok(header)) = it.next().map(CsvAlertHeader::parse) else { return };
    for (pos, line) in it.enumerate() {
        if let Ok(a) = decoder.csv(&header, line, 0, pos as u64) {
            check_alert(&a);
        }
    }
}

/// Alertmanager JSON: each line as a file's line, and the whole input as a pushed body.
pub fn alertmanager(data: &[u8]) {
    let mut decoder = AlertDecoder::new();
    let mut out = Vec::new();
    for (pos, line) in lines(data).enumerate() {
        out.clear();
        if decoder.alertmanager(line, 0, pos as u64, &mut out).is_ok() {
            out.iter().for_each(check_alert);
            assert!(is_json(line), "accepted a line that is not JSON: {}", show(line));
        }
    }
    out.clear();
    let mut bad = Vec::new();
    let received = 1_767_225_600_000;
    match decoder.pushed(data, "t", received, 0, 0, &mut out, &mut bad) {
        Ok(()) => {
            for a in &out {
                check_alert(a);
                assert_eq!((a.ts, a.tenant()), (received, "t"), "a pushed alert keeps the receive time and the pusher's tenant");
            }
            let mut index: Vec<usize> = bad.iter().map(|b| b.0).collect();
            index.dedup();
            assert_eq!(index.len(), bad.len(), "one reason per rejected alert");
        }
        Err(_) => assert!(out.is_empty(), "a rejected body left alerts behind"),
    }
}

/// A remote_write body: as sent (snappy), and compressed here so the fuzzer's bytes also reach
/// the protobuf reader; what is accepted must survive being written and read again.
pub fn remote_write(data: &[u8]) {
    let mut decoder = RemoteWriteDecoder::new();
    remote_write_body(&mut decoder, data);
    remote_write_body(&mut decoder, &encode::snappy(data));
}

fn remote_write_body(decoder: &mut RemoteWriteDecoder, body: &[u8]) {
    let mut got: Vec<(Series, Millis, f64)> = Vec::new();
    let mut bad = 0;
    let Ok(summary) = decoder.decode(body, "t", |s, ts, v| got.push((s.clone(), ts, v)), |_| bad += 1) else {
        assert!(got.is_empty() && bad == 0, "a rejected request handed out samples");
        return;
    };
    assert_eq!((summary.samples, summary.bad), (got.len(), bad), "summary disagrees with the callbacks");
    assert!(summary.series >= got.iter().map(|g| g.0.addr()).collect::<std::collections::HashSet<_>>().len());
    for (s, ts, v) in &got {
        check_series(s, *ts, *v);
        assert_eq!(s.tenant(), "t");
    }
    // Write the accepted samples again (one series per sample) and read them back.
    let series: Vec<encode::TimeSeries<'_>> = got
        .iter()
        .map(|(s, ts, v)| encode::TimeSeries {
            labels: std::iter::once(("__name__", s.name())).chain(s.labels().iter().map(|(k, v)| (&**k, &**v))).collect(),
            samples: vec![(*ts, *v)],
        })
        .collect();
    let mut again = Vec::new();
    let mut fresh = RemoteWriteDecoder::new();
    let summary = fresh
        .decode(&encode::body(&series), "t", |s, ts, v| again.push((s.clone(), ts, v)), |b| panic!("re-encoded sample rejected: {b:?}"))
        .expect("re-encoded request decodes");
    assert_eq!(summary.samples, got.len());
    for ((a, ta, va), (b, tb, vb)) in got.iter().zip(&again) {
        assert!(a == b && ta == tb && va.to_bits() == vb.to_bits(), "round trip changed {a:?} {ta} {va} into {b:?} {tb} {vb}");
    }
}

/// What the record format (the NDJSON module docs) makes of a line, read naively with
/// `serde_json`: `None` when the line is outside what the oracle models (not an object,
/// duplicate keys, numbers serde_json cannot hold exactly), else the decoded record or `Err`
/// when the format rejects it.
fn reference_metric(line: &[u8]) -> Option<Result<Want, ()>> {
    if line.len() > MAX_LINE_BYTES {
        return Some(Err(()));
    }
    let Entries(members) = serde_json::from_slice(line).ok()?;
    let mut seen = std::collections::HashSet::new();
    if !members.iter().all(|(k, _)| seen.insert(k.as_str())) {
        return None; // duplicate keys: serde_json's reading is not the format's
    }
    use serde_json::Value as V;
    let (mut ts, mut value, mut tenant, mut name) = (None, None, None, None);
    // Label key -> value; `None` for a number, whose JSON text serde_json does not keep.
    let mut labels: Vec<(String, Option<String>)> = Vec::new();
    let label = |labels: &mut Vec<(String, Option<String>)>, k: &str, v: &V| -> Result<(), ()> {
        match v {
            V::String(s) => labels.push((k.to_string(), Some(s.clone()))),
            V::Number(_) => labels.push((k.to_string(), None)),
            V::Bool(b) => labels.push((k.to_string(), Some(b.to_string()))),
            V::Null => {}
            V::Object(_) | V::Array(_) => return Err(()),
        }
        Ok(())
    };
    let result = (|| -> Result<(), ()> {
        for (k, v) in &members {
            match (k.as_str(), v) {
                // Integer milliseconds, or a number with an integral value (`1.7672256e12`).
                ("ts", V::Number(n)) => {
                    let t = n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64));
                    ts = Some(t.filter(|t| (0..=MAX_EVENT_TIME).contains(t)).ok_or(())?)
                }
                ("ts", V::String(s)) => ts = Some(parse_time_field("ts", s).map_err(|_| ())?),
                ("ts", _) => return Err(()),
                ("value", V::Number(n)) => value = Some(n.as_f64().filter(|v| v.is_finite()).ok_or(())?),
                ("value", _) => return Err(()),
                ("tenant", V::String(s)) => tenant = Some(s.clone()),
                ("name", V::String(s)) => name = Some(s.clone()),
                ("tenant" | "name", _) => return Err(()),
                ("annotations", V::Object(_)) => {}
                ("labels", V::Object(inner)) => {
                    for (k2, v2) in inner {
                        label(&mut labels, k2, v2)?;
                    }
                }
                (k, v) => label(&mut labels, k, v)?,
            }
        }
        Ok(())
    })();
    if result.is_err() {
        return Some(Err(()));
    }
    let (Some(ts), Some(value), Some(name)) = (ts, value, name) else { return Some(Err(())) };
    let tenant = tenant.unwrap_or_else(|| DEFAULT_TENANT.to_string());
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    let dup = labels.windows(2).any(|w| w[0].0 == w[1].0);
    if name.is_empty() || tenant.is_empty() || dup || labels.len() > MAX_LABELS || labels.iter().any(|(k, _)| k.is_empty()) {
        return Some(Err(()));
    }
    // A `labels` member that is not an object is a label named `labels`; such nesting rules
    // are the decoder's, and the oracle reads them the same way above.
    Some(Ok(Want { tenant, name, labels, ts, value }))
}

/// A metric record as the oracle reads it.
struct Want {
    tenant: String,
    name: String,
    labels: Vec<(String, Option<String>)>,
    ts: Millis,
    value: f64,
}

impl Want {
    fn same(&self, series: &Series, ts: Millis, value: f64, line: &[u8]) {
        let line = show(line);
        assert_eq!(series.tenant(), self.tenant, "{line}");
        assert_eq!(series.name(), self.name, "{line}");
        assert_eq!(ts, self.ts, "{line}");
        // serde_json's float parsing may be off by an ulp (without its `float_roundtrip`
        // feature); the decoder's is correctly rounded.
        assert!(
            value == self.value || (value - self.value).abs() <= self.value.abs() * 4.0 * f64::EPSILON,
            "value {value} vs {}: {line}",
            self.value
        );
        let got: Vec<(&str, &str)> = series.labels().iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(got.len(), self.labels.len(), "labels {got:?} vs {:?}: {line}", self.labels);
        for ((gk, gv), (wk, wv)) in got.iter().zip(&self.labels) {
            assert_eq!(gk, wk, "{line}");
            if let Some(wv) = wv {
                assert_eq!(gv, wv, "label {gk}: {line}");
            }
        }
    }
}

/// A JSON object's members in order, duplicates kept (a `serde_json::Value` map drops them).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Entries, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = m.next_entry()? {
                    v.push(e);
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// A fuzz body: any bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every fuzz body by name, for the tests and the `fuzz` crate's documentation.
pub const TARGETS: &[(&str, Target)] = &[
    ("metrics_ndjson", metrics_ndjson),
    ("metrics_csv", metrics_csv),
    ("alerts", alerts),
    ("alertmanager", alertmanager),
    ("remote_write", remote_write),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A seeded xorshift, so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Bytes the mutation test inserts: JSON, CSV and line structure, and a byte never UTF-8.
    const ALPHABET: &[u8] = b"{}[]\",:\\0123456789.eE-+ntfu\n\r\xff";

    /// Valid inputs for each target, the seeds of the mutation test.
    fn seeds() -> BTreeMap<&'static str, Vec<Vec<u8>>> {
        let mut m = BTreeMap::new();
        m.insert(
            "metrics_ndjson",
            vec![
                br#"{"ts":1767225600000,"tenant":"t0","name":"cpu","value":54.5,"host":"h1","up":true,"n":3,"labels":{"dc":"eu"},"annotations":{"a":1}}"#.to_vec(),
                br#"{"ts":"2026-01-01T00:00:00Z","name":"m\u00e9m","value":-1e3,"x":null,"s":"a\"b\\c"}"#.to_vec(),
            ],
        );
        m.insert(
            "metrics_csv",
            vec![b"ts,tenant,name,value,host\n1767225600000,t0,cpu,54.5,h1\n2026-01-01T00:00:01Z,t1,cpu,1,\"h,2\"\n".to_vec()],
        );
        m.insert(
            "alerts",
            vec![
                br#"{"ts":1767225600000,"alertname":"HighCPU","severity":"page","status":"firing","host":"h1","annotations":{"summary":"s"}}"#.to_vec(),
                b"ts,alertname,severity,status,host,annotation.summary\n1767225600000,HighCPU,page,firing,h1,hot\n".to_vec(),
            ],
        );
        m.insert(
            "alertmanager",
            vec![br#"[{"labels":{"alertname":"Down","job":"api"},"annotations":{"summary":"x"},"startsAt":"2026-01-01T00:00:00Z","endsAt":"2026-01-01T00:05:00Z","generatorURL":"http://p/graph"}]"#.to_vec()],
        );
        let series = [
            encode::TimeSeries {
                labels: vec![("__name__", "up"), ("job", "api")],
                samples: vec![(1_767_225_600_000, 1.0), (1_767_225_615_000, 0.0)],
            },
            encode::TimeSeries { labels: vec![("job", "nameless")], samples: vec![(1_767_225_600_000, 1.0)] },
        ];
        m.insert("remote_write", vec![encode::body(&series), encode::write_request(&series)]);
        m
    }

    /// Every target over its seeds and 20,000 seeded mutations of them (bytes flipped,
    /// inserted, removed, chunks repeated): no panic, so no broken invariant.
    #[test]
    fn fuzz_bodies_survive_seeded_mutations() {
        let seeds = seeds();
        for (name, target) in TARGETS {
            let mut rng = Rng(0x5EED ^ name.len() as u64);
            for seed in &seeds[name] {
                target(seed);
                for _ in 0..4_000 {
                    let mut d = seed.clone();
                    for _ in 0..1 + rng.next() % 4 {
                        let at = (rng.next() as usize) % (d.len() + 1);
                        match rng.next() % 4 {
                            0 if at < d.len() => d[at] ^= 1 << (rng.next() % 8),
                            1 => d.insert(at, ALPHABET[(rng.next() % ALPHABET.len() as u64) as usize]),
                            2 if at < d.len() => {
                                d.remove(at);
                            }
                            _ => {
                                let end = (at + (rng.next() as usize % 16)).min(d.len());
                                let chunk = d[at..end].to_vec();
                                d.splice(at..at, chunk);
                            }
                        }
                    }
                    target(&d);
                }
            }
        }
    }

    /// Every target over every file of the hostile corpus (`tests/corpus/`).
    #[test]
    fn fuzz_bodies_survive_the_hostile_corpus() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
        let mut files = 0;
        for kind in ["metrics", "alerts"] {
            for e in std::fs::read_dir(root.join(kind)).unwrap() {
                let data = std::fs::read(e.unwrap().path()).unwrap();
                for (_, target) in TARGETS {
                    target(&data);
                }
                files += 1;
            }
        }
        assert!(files >= 20, "the corpus has {files} files");
    }

    /// The oracle agrees with the decoder on lines the format spells out.
    #[test]
    fn oracle_reads_the_documented_format() {
        for (line, ok) in [
            (r#"{"ts":1,"name":"a","value":1}"#, true),
            (r#"{"ts":1,"name":"a","value":1,"labels":{"k":"v"},"k2":false}"#, true),
            (r#"{"ts":1,"name":"a","value":"1"}"#, false),
            (r#"{"ts":1,"name":"","value":1}"#, false),
            (r#"{"ts":1,"name":"a","value":1,"tenant":""}"#, false),
            (r#"{"ts":1,"name":"a","value":1,"k":{"x":1}}"#, false),
            (r#"{"ts":-1,"name":"a","value":1}"#, false),
            (r#"{"ts":1,"name":"a","value":1,"k":"v","labels":{"k":"w"}}"#, false),
        ] {
            assert_eq!(reference_metric(line.as_bytes()).map(|r| r.is_ok()), Some(ok), "{line}");
            metrics_ndjson(line.as_bytes()); // and the decoder agrees
        }
    }
}
