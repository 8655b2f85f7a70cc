//! Oracle tests: the rule over the real aggregate against a naive reference (windows computed
//! point by point, every window end of each group walked in order), on seeded random points
//! with disorder and silent stretches, over 1, 2 and 4 workers.

use std::collections::BTreeMap;

use alertflow_model::alert::{Alert, Status};
use alertflow_model::window::AggFn;
use alertflow_model::{Metric, Series};

use super::*;
use crate::aggregate::{AggregateConfig, AggregateExt, WindowSpec};
use crate::testing::{Lcg, run_metrics};
use std::sync::atomic::Ordering::Relaxed;

const T0: i64 = 1_767_225_600_000;

fn aggregate(window: WindowSpec) -> Aggregate {
    let cfg = AggregateConfig {
        name: "per_10s".into(),
        input: "points".into(),
        window,
        group_by: vec!["host".into()],
        functions: vec![AggFn::Count, AggFn::Max, AggFn::Avg],
        state: crate::StateConfig::default(),
    };
    Aggregate::with_config(&cfg, DurationMs(1000)).unwrap()
}

fn rule_config(when: &str, for_duration: &str) -> RuleConfig {
    RuleConfig {
        name: "HighCpu".into(),
        input: "per_10s".into(),
        metrics: vec!["cpu".into()],
        when: when.into(),
        for_duration: for_duration.parse().unwrap(),
        severity: "critical".into(),
        labels: BTreeMap::from([("team".to_string(), "db".to_string())]),
        annotations: BTreeMap::from([("summary".to_string(), "cpu is high".to_string())]),
    }
}

/// 12 hosts over 30 minutes (two of them `mem`, which the rule does not judge), a point every
/// ~2 s each; each host moves between normal (≈50),
/// hot (≈90, now and then a spike to 99) and silent (no points) stretches of random length.
/// Timestamps jitter by up to 3 s; partitions interleave hosts.
fn random_points(seed: u64) -> Vec<Metric> {
    let mut r = Lcg(seed);
    let mut out = Vec::new();
    for h in 0..12u32 {
        let name = if h >= 10 { "mem" } else { "cpu" };
        let series = Series::new("acme", name, &[("host", format!("h{h}").as_str())]);
        let (mut t, mut phase, mut left) = (T0, 0u64, 0i64);
        while t < T0 + 30 * 60_000 {
            if left <= 0 {
                phase = r.next() % 3;
                left = 5_000 + (r.next() % 120_000) as i64;
            }
            let step = 1_000 + (r.next() % 2_000) as i64;
            if phase != 2 {
                let base = if phase == 1 { 90.0 } else { 50.0 };
                let spike = if r.next().is_multiple_of(40) { 9.0 } else { 0.0 };
                let value = base + (r.next() % 1000) as f64 / 100.0 - 5.0 + spike;
                let ts = t + (r.next() % 3000) as i64;
                out.push(Metric { series: series.clone(), ts, value, part: 0, pos: 0, late: false });
            }
            t += step;
            left -= step;
        }
    }
    // Shuffle lightly across partitions: sort by time, then deal round-robin into 5 partitions.
    out.sort_by_key(|m| (m.ts, (r.next() % 7) as i64));
    for (i, m) in out.iter_mut().enumerate() {
        m.part = (i % 5) as u32;
        m.pos = (i / 5) as u64;
    }
    out
}

/// Comparable form of an alert: labels as text, status, startsAt, event time, endsAt, the
/// annotations as text.
type Flat = (String, String, i64, i64, Option<i64>, String);

fn flat(a: &Alert) -> Flat {
    let labels: Vec<String> = a.labels.labels().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let ann: Vec<String> = a.annotations.labels().iter().map(|(k, v)| format!("{k}={v}")).collect();
    (format!("{}/{}", a.tenant(), labels.join(",")), a.status.name().to_string(), a.starts_at, a.ts, a.ends_at, ann.join(","))
}

/// Naive windows: (host, end) → (count, max, sum).
fn naive_windows(points: &[Metric], size: i64, slide: i64) -> BTreeMap<(String, i64), (u64, f64, f64)> {
    let mut w: BTreeMap<(String, i64), (u64, f64, f64)> = BTreeMap::new();
    for p in points.iter().filter(|p| p.series.name() == "cpu") {
        let host = p.series.label("host").unwrap().to_string();
        // Windows [s, s + size) with s a multiple of slide and s ≤ ts < s + size.
        let mut s = p.ts - p.ts.rem_euclid(slide);
        while s > p.ts - size {
            let e = w.entry((host.clone(), s + size)).or_insert((0, f64::MIN, 0.0));
            e.0 += 1;
            e.1 = e.1.max(p.value);
            e.2 += p.value;
            s -= slide;
        }
    }
    w
}

/// The reference: every group's window ends walked one step at a time from its first to one
/// past its last; a missing window does not hold.
fn oracle(points: &[Metric], size: i64, slide: i64, for_ms: i64, reads: &[&str], holds: impl Fn(u64, f64, f64) -> bool) -> Vec<Flat> {
    let windows = naive_windows(points, size, slide);
    let mut by_host: BTreeMap<String, BTreeMap<i64, (u64, f64, f64)>> = BTreeMap::new();
    for ((h, end), v) in windows {
        by_host.entry(h).or_default().insert(end, v);
    }
    let mut out = Vec::new();
    for (host, ws) in by_host {
        let labels = format!("acme/alertname=HighCpu,host={host},metric=cpu,severity=critical,team=db");
        let (first, last) = (*ws.keys().next().unwrap(), *ws.keys().last().unwrap());
        let mut state: Option<(i64, bool)> = None; // (since, firing)
        let mut end = first;
        while end <= last + slide {
            let w = ws.get(&end);
            let ok = w.is_some_and(|&(c, max, sum)| holds(c, max, sum / c as f64));
            // Annotations sorted by key: summary, when, and the value of each function read.
            let ann = |w: Option<&(u64, f64, f64)>| {
                let mut kv = vec!["summary=cpu is high".to_string(), "when=(see rule)".to_string()];
                if let Some(&(c, max, sum)) = w {
                    for f in reads {
                        kv.push(match *f {
                            "avg" => format!("avg={}", sum / c as f64),
                            "count" => format!("count={c}"),
                            _ => format!("max={max}"),
                        });
                    }
                }
                kv.sort();
                kv.join(",")
            };
            match (state, ok) {
                (None, true) => {
                    state = Some((end, for_ms == 0));
                    if for_ms == 0 {
                        out.push((labels.clone(), "firing".into(), end, end, Some(end + 4 * slide), ann(w)));
                    }
                }
                (Some((since, firing)), true) => {
                    if firing || end - since >= for_ms {
                        state = Some((since, true));
                        out.push((labels.clone(), "firing".into(), since, end, Some(end + 4 * slide), ann(w)));
                    }
                }
                (Some((since, firing)), false) => {
                    if firing {
                        out.push((labels.clone(), "resolved".into(), since, end, Some(end), ann(w)));
                    }
                    state = None;
                }
                (None, false) => {}
            }
            end += slide;
        }
    }
    out.sort();
    out
}

/// The operator's alerts with the `when` annotation replaced (the oracle does not echo it)
/// and the values rounded as the oracle's naive sums are (avg may differ in the last bits).
fn normalise(alerts: Vec<Alert>) -> Vec<Flat> {
    let mut v: Vec<Flat> = alerts
        .iter()
        .map(|a| {
            let mut f = flat(a);
            f.5 = f.5.split(',').map(|kv| if kv.starts_with("when=") { "when=(see rule)" } else { kv }).collect::<Vec<_>>().join(",");
            f
        })
        .collect();
    v.sort();
    v
}

fn round_avg(v: Vec<Flat>) -> Vec<Flat> {
    v.into_iter()
        .map(|mut f| {
            f.5 =
                f.5.split(',')
                    .map(|kv| match kv.strip_prefix("avg=") {
                        Some(x) => format!("avg={:.6}", x.parse::<f64>().unwrap()),
                        None => kv.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(",");
            f
        })
        .collect()
}

fn check(window: WindowSpec, size: i64, slide: i64, when: &str, for_d: &str, reads: &[&str], holds: fn(u64, f64, f64) -> bool) {
    let agg = aggregate(window);
    let cfg = rule_config(when, for_d);
    let rule = Rule::with_config(&cfg, &agg, 0, DurationMs(1000)).unwrap();
    let for_ms = cfg.for_duration.millis() as i64;
    for seed in [3, 11] {
        let points = random_points(seed);
        let expected = round_avg(oracle(&points, size, slide, for_ms, reads, holds));
        let fired = expected.iter().filter(|f| f.1 == "firing").count();
        let resolved = expected.iter().filter(|f| f.1 == "resolved").count();
        assert!(fired > 20 && resolved > 5, "the data must exercise the rule: {fired} firing, {resolved} resolved");
        for workers in [1, 2, 4] {
            let (a, r) = (agg.clone(), rule.clone());
            // The rule's counters move by the window rows it got and the alerts it raised.
            let (rs, ws) = (rule.stats(), agg.stats());
            let (in0, out0, win0) = (rs.records_in.load(Relaxed), rs.records_out.load(Relaxed), ws.records_out.load(Relaxed));
            let raw = run_metrics(workers, points.clone(), 700, move |s| s.aggregate(&a).rule(&r));
            assert_eq!(rs.records_in.load(Relaxed) - in0, ws.records_out.load(Relaxed) - win0, "seed {seed}, {workers} workers");
            assert_eq!(rs.records_out.load(Relaxed) - out0, raw.len() as u64, "seed {seed}, {workers} workers");
            assert_eq!(rs.state(), 0, "seed {seed}, {workers} workers");
            let got = round_avg(normalise(raw));
            assert_eq!(got.len(), expected.len(), "seed {seed}, {workers} workers, `{when}` for {for_d}");
            for (g, e) in got.iter().zip(&expected) {
                assert_eq!(g, e, "seed {seed}, {workers} workers, `{when}` for {for_d}");
            }
        }
    }
}

#[test]
fn tumbling_rule_matches_the_oracle() {
    let tumbling = || WindowSpec::Tumbling { size: DurationMs(10_000) };
    check(tumbling(), 10_000, 10_000, "avg > 80 and count >= 2", "30s", &["avg", "count"], |c, _, avg| avg > 80.0 && c >= 2);
    check(tumbling(), 10_000, 10_000, "max >= 97 or (avg > 85 and not count < 3)", "0s", &["max", "avg", "count"], |c, max, avg| {
        max >= 97.0 || (avg > 85.0 && c >= 3)
    });
}

#[test]
fn hopping_rule_matches_the_oracle() {
    let hopping = WindowSpec::Hopping { size: DurationMs(30_000), slide: DurationMs(10_000) };
    check(hopping, 30_000, 10_000, "avg > 75", "1m", &["avg"], |_, _, avg| avg > 75.0);
}

/// A hand-checked run: one host hot for 40 s, `for = 20s` over 10 s windows.
#[test]
fn pending_firing_resolved_by_hand() {
    let agg = aggregate(WindowSpec::Tumbling { size: DurationMs(10_000) });
    let rule = Rule::with_config(&rule_config("avg > 80", "20s"), &agg, 2, DurationMs(1000)).unwrap();
    let s = Series::new("acme", "cpu", &[("host", "db1")]);
    // Windows ending at +10 s … +80 s: values 50, 90, 90, 90, 90, 50, (none), 90.
    let values = [(5_000, 50.0), (15_000, 90.0), (25_000, 90.0), (35_000, 90.0), (45_000, 90.0), (55_000, 50.0), (75_000, 90.0)];
    let points: Vec<Metric> = values
        .iter()
        .enumerate()
        .map(|(i, &(dt, value))| Metric { series: s.clone(), ts: T0 + dt, value, part: 0, pos: i as u64, late: false })
        .collect();
    let r = rule.clone();
    let mut got = run_metrics(1, points, 100, move |st| st.aggregate(&agg).rule(&r));
    got.sort_by_key(|a| a.ts);
    let brief: Vec<(Status, i64, i64, Option<i64>)> =
        got.iter().map(|a| (a.status, a.starts_at - T0, a.ts - T0, a.ends_at.map(|e| e - T0))).collect();
    // Active from +20 s (first hot window's end); fires at +40 s (held 20 s), again at +50 s;
    // resolves at +60 s. The hot window ending at +80 s makes it pending only; the missing
    // window ending at +90 s (end of input) drops that silently.
    assert_eq!(
        brief,
        vec![
            (Status::Firing, 20_000, 40_000, Some(80_000)),
            (Status::Firing, 20_000, 50_000, Some(90_000)),
            (Status::Resolved, 20_000, 60_000, Some(60_000)),
        ]
    );
    let a = &got[0];
    assert_eq!(a.alertname(), "HighCpu");
    assert_eq!(a.labels.get("host").map(|v| &**v), Some("db1"));
    assert_eq!(a.labels.get("metric").map(|v| &**v), Some("cpu"));
    assert_eq!(a.labels.get("team").map(|v| &**v), Some("db"));
    assert_eq!(a.annotations.get("avg").map(|v| &**v), Some("90"));
    assert_eq!(a.annotations.get("when").map(|v| &**v), Some("avg > 80"));
    assert_eq!(a.annotations.get("summary").map(|v| &**v), Some("cpu is high"));
    assert_eq!(a.part, u32::MAX - 2);
    // The same fingerprint throughout: dedup sees one alert opening and closing.
    assert!(got.iter().all(|x| x.labels == a.labels));
}

/// A firing group whose points stop resolves at the end of the first window without points.
#[test]
fn silence_resolves_a_firing_alert() {
    let agg = aggregate(WindowSpec::Tumbling { size: DurationMs(10_000) });
    let rule = Rule::with_config(&rule_config("avg > 80", "0s"), &agg, 0, DurationMs(1000)).unwrap();
    let s = Series::new("acme", "cpu", &[("host", "db1")]);
    let other = Series::new("acme", "cpu", &[("host", "web")]);
    let mut points = vec![Metric { series: s, ts: T0 + 5_000, value: 95.0, part: 0, pos: 0, late: false }];
    // Another host keeps time moving well past the silence.
    for i in 0..10 {
        points.push(Metric { series: other.clone(), ts: T0 + i * 10_000 + 1, value: 10.0, part: 1, pos: i as u64, late: false });
    }
    let mut got = run_metrics(2, points, 3, move |st| st.aggregate(&agg).rule(&rule));
    got.sort_by_key(|a| a.ts);
    let brief: Vec<(Status, i64)> = got.iter().map(|a| (a.status, a.ts - T0)).collect();
    assert_eq!(brief, vec![(Status::Firing, 10_000), (Status::Resolved, 20_000)]);
    assert_eq!(got[1].annotations.get("avg"), None, "a missing window has no values");
}

#[test]
fn config_errors_name_the_field() {
    let agg = aggregate(WindowSpec::Tumbling { size: DurationMs(10_000) });
    let errs = |c: RuleConfig| Rule::with_config(&c, &agg, 0, DurationMs(1000)).unwrap_err();
    let e = errs(rule_config("p99 > 2", "0s"));
    assert_eq!(e[0].field, "when");
    assert!(e[0].message.contains("`p99` is not computed by aggregate `per_10s` (it computes count, max, avg)"), "{}", e[0].message);
    let e = errs(rule_config("avg >> 2", "0s"));
    assert!(e[0].message.contains("column 6"), "{}", e[0].message);
    let mut c = rule_config("avg > 2", "0s");
    c.labels.insert("severity".into(), "x".into());
    c.labels.insert("9lives".into(), "x".into());
    c.name = " ".into();
    let e = errs(c);
    let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, vec!["name", "labels.9lives", "labels.severity"]);
    let session = aggregate(WindowSpec::Session { gap: DurationMs(60_000) });
    let e = Rule::with_config(&rule_config("avg > 2", "0s"), &session, 0, DurationMs(1000)).unwrap_err();
    assert_eq!(e[0].field, "input");
    assert!(e[0].message.contains("session windows"));
    let parsed: RuleConfig =
        serde_json::from_str(r#"{"name":"HighCpu","input":"per_minute","when":"avg > 90","for":"5m","severity":"critical"}"#).unwrap();
    assert_eq!(parsed.for_duration, DurationMs(300_000));
    let typo = serde_json::from_str::<RuleConfig>(r#"{"name":"x","input":"y","when":"avg > 1","four":"5m"}"#);
    assert!(typo.unwrap_err().to_string().contains("unknown field `four`"));
}
