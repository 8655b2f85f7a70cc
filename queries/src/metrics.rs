//! A small metrics registry (counters, gauges, latency histograms) rendered in the Prometheus
//! text exposition format (version 0.0.4) at `GET /metrics`.
//!
//! Values are read when rendered: the engine registers closures over the counters its
//! sources, operators and sinks already keep (atomics shared with the workers), so the hot
//! path pays nothing for being observed. Latencies go into an HDR histogram (3 significant
//! digits) and are exposed as a Prometheus histogram with fixed buckets.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the exposed latency buckets.
pub const LATENCY_BUCKETS: [f64; 15] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// What a metric family is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// A latency histogram (seconds).
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

type ValueFn = Box<dyn Fn() -> f64 + Send + Sync>;

enum Value {
    Read(ValueFn),
    Histogram(Arc<Histogram>),
}

struct Series {
    labels: Vec<(String, String)>,
    value: Value,
}

struct Family {
    name: String,
    help: String,
    kind: Kind,
    series: Vec<Series>,
}

/// The registry. Families render in the order they were first registered.
#[derive(Default)]
pub struct Metrics {
    families: Mutex<Vec<Family>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&self, name: &str, help: &str, kind: Kind, labels: &[(&str, &str)], value: Value) {
        debug_assert!(valid_name(name), "bad metric name {name}");
        debug_assert!(kind != Kind::Counter || name.ends_with("_total"), "counter {name} must end in _total");
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let i = match families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                families.push(Family { name: name.into(), help: help.into(), kind, series: Vec::new() });
                families.len() - 1
            }
        };
        debug_assert_eq!(families[i].kind, kind, "{name} registered as two kinds");
        families[i].series.push(Series { labels, value });
    }

    /// A counter whose value `read` returns when rendered.
    pub fn counter_fn(&self, name: &str, help: &str, labels: &[(&str, &str)], read: impl Fn() -> f64 + Send + Sync + 'static) {
        self.add(name, help, Kind::Counter, labels, Value::Read(Box::new(read)));
    }

    /// A gauge whose value `read` returns when rendered.
    pub fn gauge_fn(&self, name: &str, help: &str, labels: &[(&str, &str)], read: impl Fn() -> f64 + Send + Sync + 'static) {
        self.add(name, help, Kind::Gauge, labels, Value::Read(Box::new(read)));
    }

    /// A counter owned by the registry; returns the handle to increment.
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<AtomicU64> {
        let c = Arc::new(AtomicU64::new(0));
        let r = c.clone();
        self.counter_fn(name, help, labels, move || r.load(Ordering::Relaxed) as f64);
        c
    }

    /// A latency histogram; returns the handle to record into.
    pub fn histogram(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<Histogram> {
        let h = Arc::new(Histogram::new());
        self.add(name, help, Kind::Histogram, labels, Value::Histogram(h.clone()));
        h
    }

    /// Every family in the Prometheus text format.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(8192);
        for f in families.iter() {
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.name());
            for s in &f.series {
                match &s.value {
                    Value::Read(read) => {
                        let _ = writeln!(out, "{}{} {}", f.name, labels(&s.labels, None), number(read()));
                    }
                    Value::Histogram(h) => h.render(&mut out, &f.name, &s.labels),
                }
            }
        }
        out
    }
}

/// A latency histogram (microsecond resolution, 3 significant digits, up to an hour).
pub struct Histogram {
    hdr: Mutex<hdrhistogram::Histogram<u64>>,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        let hdr = hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        Histogram { hdr: Mutex::new(hdr), sum_micros: AtomicU64::new(0) }
    }

    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        self.sum_micros.fetch_add(us, Ordering::Relaxed);
        self.hdr.lock().unwrap_or_else(|p| p.into_inner()).saturating_record(us);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.hdr.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The duration at quantile `q` (0..=1).
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.hdr.lock().unwrap_or_else(|p| p.into_inner()).value_at_quantile(q))
    }

    fn render(&self, out: &mut String, name: &str, base: &[(String, String)]) {
        let hdr = self.hdr.lock().unwrap_or_else(|p| p.into_inner());
        for le in LATENCY_BUCKETS {
            let n = hdr.count_between(0, (le * 1e6) as u64);
            let _ = writeln!(out, "{name}_bucket{} {n}", labels(base, Some(&number(le))));
        }
        let _ = writeln!(out, "{name}_bucket{} {}", labels(base, Some("+Inf")), hdr.len());
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{} {}", labels(base, None), number(sum));
        let _ = writeln!(out, "{name}_count{} {}", labels(base, None), hdr.len());
    }
}

fn labels(base: &[(String, String)], le: Option<&str>) -> String {
    if base.is_empty() && le.is_none() {
        return String::new();
    }
    let mut s = String::from("{");
    let mut first = true;
    for (k, v) in base.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(le.map(|l| ("le", l))) {
        if !first {
            s.push(',');
        }
        first = false;
        let _ = write!(s, "{k}=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

fn escape_help(h: &str) -> String {
    h.replace('\\', "\\\\").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A strict reader of the text format, checking what `promtool check metrics` checks: every
    /// sample belongs to a family announced by HELP and TYPE lines before it, names and labels
    /// are well formed, counters end in `_total`, histogram buckets are cumulative and end in
    /// `+Inf` equal to `_count`.
    fn check(text: &str) -> HashMap<String, f64> {
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helped = std::collections::HashSet::new();
        let mut samples = HashMap::new();
        let mut last_bucket: Option<(String, f64)> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(valid_name(name), "{line}");
                assert!(helped.insert(name.to_string()), "HELP twice: {line}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let (name, kind) = (it.next().unwrap(), it.next().unwrap());
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{line}");
                }
                assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "TYPE twice: {line}");
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let v: f64 = match value {
                "+Inf" => f64::INFINITY,
                "NaN" => f64::NAN,
                v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
            };
            let name = series.split('{').next().unwrap();
            let family = types
                .keys()
                .find(|f| name == f.as_str() || [&"_bucket", &"_sum", &"_count"].iter().any(|s| name == format!("{f}{s}")))
                .unwrap_or_else(|| panic!("sample of no family: {line}"));
            if let Some(l) = series.strip_prefix(name)
                && !l.is_empty()
            {
                assert!(l.starts_with('{') && l.ends_with('}'), "{line}");
            }
            if name.ends_with("_bucket") {
                let (prev_series, prev) = last_bucket.clone().unwrap_or_default();
                let stem = series.split(",le=").next().unwrap().split("{le=").next().unwrap();
                if prev_series == stem {
                    assert!(v >= prev, "buckets must be cumulative: {line}");
                }
                last_bucket = Some((stem.to_string(), v));
            }
            if name.ends_with("_count") && types[family] == "histogram" {
                let inf = samples.get(&series.replace("_count", "_bucket").replace('}', ",le=\"+Inf\"}")).copied();
                let inf = inf.or_else(|| samples.get(&format!("{}_bucket{{le=\"+Inf\"}}", family)).copied());
                assert_eq!(inf, Some(v), "+Inf bucket equals _count: {line}");
            }
            samples.insert(series.to_string(), v);
        }
        samples
    }

    #[test]
    fn renders_valid_prometheus_text() {
        let m = Metrics::new();
        let c = m.counter("alertflow_queries_total", "Queries answered.", &[("interface", "http"), ("outcome", "ok")]);
        c.fetch_add(3, Ordering::Relaxed);
        m.gauge_fn("alertflow_state_keys", "Keys held.\nPer table.", &[("table", "a\"b\\c")], || 42.0);
        m.gauge_fn("alertflow_state_keys", "Keys held.\nPer table.", &[("table", "other")], || 0.5);
        let h = m.histogram("alertflow_query_duration_seconds", "Query latency.", &[("interface", "http")]);
        for ms in [1, 2, 3, 40, 900] {
            h.record(Duration::from_millis(ms));
        }
        let text = m.render();
        let s = check(&text);
        assert_eq!(s["alertflow_queries_total{interface=\"http\",outcome=\"ok\"}"], 3.0);
        assert_eq!(s["alertflow_state_keys{table=\"a\\\"b\\\\c\"}"], 42.0);
        assert_eq!(s["alertflow_state_keys{table=\"other\"}"], 0.5);
        assert_eq!(s["alertflow_query_duration_seconds_bucket{interface=\"http\",le=\"0.0025\"}"], 2.0);
        assert_eq!(s["alertflow_query_duration_seconds_bucket{interface=\"http\",le=\"0.05\"}"], 4.0);
        assert_eq!(s["alertflow_query_duration_seconds_count{interface=\"http\"}"], 5.0);
        assert!((s["alertflow_query_duration_seconds_sum{interface=\"http\"}"] - 0.946).abs() < 1e-9);
        assert!(text.contains("# HELP alertflow_state_keys Keys held.\\nPer table.\n"), "{text}");
        assert_eq!(h.count(), 5);
        assert!(h.quantile(0.5) >= Duration::from_millis(3) && h.quantile(0.5) < Duration::from_micros(3010));
    }
}
