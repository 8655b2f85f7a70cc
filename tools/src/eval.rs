//! Scores a correlation run against the generator's truth: `alertflow eval correlation`.
//!
//! **Elements** are output alert episodes: `(tenant, fingerprint, starts_at)` of the `alerts`
//! table. An episode's predicted cluster is the `incident_id` of its row with the highest
//! `revision` (an episode without one is its own singleton). Its truth cluster is the
//! `incident` of the truth episode of the same tenant and fingerprint whose
//! `[first_ts, last_ts + 10 min]` holds `starts_at`, else the nearest one (counted as
//! `nearest`); episodes whose fingerprint the truth does not know are left out (counted as
//! `unmatched`). Scoring output episodes (rather than truth episodes) scores what the user sees:
//! an alert that dedup split in two counts twice, in whichever incidents they landed.
//!
//! **Alert events** — the denominator of noise reduction, `1 − incidents / alert events` — are
//! the input notifications that reached dedup: the sum over output episodes of their
//! `occurrences` (the largest on any of the episode's rows). **Incidents** are the distinct
//! predicted clusters.
//!
//! Metrics (all pure functions over two labelings, [`scores`]): pairwise precision/recall/F1
//! over pairs of elements in one cluster; B-cubed precision/recall/F1 (per element, the share
//! of its predicted cluster that shares its truth cluster, and vice versa, averaged over
//! elements); the adjusted Rand index (Hubert & Arabie 1985); and root-cause top-1 accuracy:
//! per truth incident that is not noise, the predicted incident holding most of its elements;
//! a hit when that incident's latest `root_cause` equals the truth root service.
//!
//! The **baseline** is Alertmanager-style grouping: within a tenant, episodes with equal values
//! of the `group_by` labels whose time spans (`starts_at` to `ends_at`, or `last_seen` while
//! open) overlap, transitively, form one group. Its root cause is the service of the group's
//! earliest episode (Alertmanager has none; this is the obvious heuristic).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::SessionContext;
use serde_json::{Value, json};

/// How far past its last notice a truth episode still matches an output episode's start.
pub const MATCH_SLACK_MS: i64 = 10 * 60_000;

/// Errors of the evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The truth file cannot be read.
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    /// A line of the truth file is malformed.
    #[error("{file}:{line}: {msg}")]
    Truth {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// A table is missing or has an unexpected shape.
    #[error("{0}")]
    Data(String),
    /// A query failed.
    #[error("query failed: {0}")]
    Query(String),
}

/// One row of `truth.csv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruthRow {
    /// Tenant.
    pub tenant: String,
    /// 16 hex digits.
    pub fingerprint: String,
    /// First notice (ms).
    pub first_ts: i64,
    /// Last notice (ms).
    pub last_ts: i64,
    /// Truth incident id (`noise-…` for noise singletons).
    pub incident: String,
    /// The incident's root service.
    pub root_service: String,
}

/// The header `truth.csv` must have.
pub const TRUTH_HEADER: &str = "tenant,fingerprint,first_ts,last_ts,incident,root_service";

/// Parses a truth file's text (`file` names it in errors).
pub fn parse_truth(file: &str, text: &str) -> Result<Vec<TruthRow>, EvalError> {
    let err = |line: usize, msg: String| EvalError::Truth { file: file.to_string(), line, msg };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim_end() == TRUTH_HEADER => {}
        Some((_, h)) => return Err(err(1, format!("expected the header `{TRUTH_HEADER}`, found `{}`", clip(h)))),
        None => return Err(err(1, format!("empty file (expected the header `{TRUTH_HEADER}`)"))),
    }
    let mut out = Vec::new();
    for (i, l) in lines {
        let n = i + 1;
        let l = l.trim_end_matches('\r');
        if l.is_empty() {
            continue;
        }
        let f: Vec<&str> = l.split(',').collect();
        if f.len() != 6 {
            return Err(err(n, format!("expected 6 fields, found {}", f.len())));
        }
        if f[0].is_empty() {
            return Err(err(n, "empty tenant".into()));
        }
        if f[1].len() != 16 || !f[1].bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(err(n, format!("fingerprint `{}` is not 16 hex digits", clip(f[1]))));
        }
        let ts =
            |k: usize, name: &str| f[k].parse::<i64>().map_err(|_| err(n, format!("{name} `{}` is not integer milliseconds", clip(f[k]))));
        let (first_ts, last_ts) = (ts(2, "first_ts")?, ts(3, "last_ts")?);
        if last_ts < first_ts {
            return Err(err(n, format!("last_ts {last_ts} is before first_ts {first_ts}")));
        }
        if f[4].is_empty() {
            return Err(err(n, "empty incident".into()));
        }
        out.push(TruthRow {
            tenant: f[0].to_string(),
            fingerprint: f[1].to_ascii_lowercase(),
            first_ts,
            last_ts,
            incident: f[4].to_string(),
            root_service: f[5].to_string(),
        });
    }
    Ok(out)
}

fn clip(s: &str) -> String {
    if s.chars().count() > 60 { format!("{}…", s.chars().take(60).collect::<String>()) } else { s.to_string() }
}

/// Precision, recall and F1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prf {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// Harmonic mean of the two (0 when both are 0).
    pub f1: f64,
}

impl Prf {
    fn new(precision: f64, recall: f64) -> Prf {
        let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        Prf { precision, recall, f1 }
    }
    fn json(&self) -> Value {
        json!({"precision": self.precision, "recall": self.recall, "f1": self.f1})
    }
}

/// Clustering scores of a predicted labeling against a truth labeling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    /// Pairwise: over pairs of elements clustered together. With no predicted (truth) pair,
    /// precision (recall) is 1.
    pub pairwise: Prf,
    /// B-cubed: per element, averaged over elements.
    pub bcubed: Prf,
    /// Adjusted Rand index; 1 when both labelings are identical (also in degenerate cases).
    pub ari: f64,
}

fn pairs(n: u64) -> f64 {
    let n = n as f64;
    n * (n - 1.0) / 2.0
}

/// Scores `pred` against `truth` (one cluster label per element, the same length).
pub fn scores(truth: &[u32], pred: &[u32]) -> Scores {
    assert_eq!(truth.len(), pred.len(), "one truth and one predicted label per element");
    let n = truth.len();
    if n == 0 {
        return Scores { pairwise: Prf::new(1.0, 1.0), bcubed: Prf::new(1.0, 1.0), ari: 1.0 };
    }
    // Ordered maps: the floating-point sums below then add in one order, so the same
    // clustering always prints the same figures.
    let mut cont: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    let mut a: BTreeMap<u32, u64> = BTreeMap::new();
    let mut b: BTreeMap<u32, u64> = BTreeMap::new();
    for (&t, &p) in truth.iter().zip(pred) {
        *cont.entry((t, p)).or_default() += 1;
        *a.entry(t).or_default() += 1;
        *b.entry(p).or_default() += 1;
    }
    let sum_ij: f64 = cont.values().map(|&c| pairs(c)).sum();
    let sum_a: f64 = a.values().map(|&c| pairs(c)).sum();
    let sum_b: f64 = b.values().map(|&c| pairs(c)).sum();
    let pairwise = Prf::new(if sum_b > 0.0 { sum_ij / sum_b } else { 1.0 }, if sum_a > 0.0 { sum_ij / sum_a } else { 1.0 });
    let (mut bp, mut br) = (0.0, 0.0);
    for (&(t, p), &c) in &cont {
        let c = c as f64;
        bp += c * c / b[&p] as f64;
        br += c * c / a[&t] as f64;
    }
    let bcubed = Prf::new(bp / n as f64, br / n as f64);
    let expected = sum_a * sum_b / pairs(n as u64).max(1.0);
    let max = (sum_a + sum_b) / 2.0;
    let ari = if (max - expected).abs() < 1e-12 { if sum_ij == max { 1.0 } else { 0.0 } } else { (sum_ij - expected) / (max - expected) };
    Scores { pairwise, bcubed, ari }
}

/// An output alert episode, as read from the `alerts` table.
#[derive(Clone, Debug)]
pub struct OutEpisode {
    /// Tenant.
    pub tenant: String,
    /// 16 hex digits.
    pub fingerprint: String,
    /// Start (ms).
    pub starts_at: i64,
    /// End (ms): `ends_at` of the latest row, or `last_seen` while open.
    pub ends_at: i64,
    /// The latest row's `incident_id`.
    pub incident: Option<String>,
    /// The largest `occurrences` on its rows.
    pub occurrences: u64,
    /// The labels (JSON object text) of its rows.
    pub labels: String,
}

/// The evaluation of one grouping.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Input notifications (alert events).
    pub alert_events: u64,
    /// Elements scored (output episodes matched to truth).
    pub episodes: u64,
    /// Predicted incidents (distinct clusters among all output episodes).
    pub incidents: u64,
    /// `1 − incidents / alert_events`.
    pub noise_reduction: f64,
    /// The clustering scores.
    pub scores: Scores,
    /// Root-cause top-1 accuracy over the truth incidents (not noise) with elements.
    pub root_cause_top1: f64,
    /// Those truth incidents.
    pub root_cause_incidents: u64,
    /// Output episodes matched inside a truth episode's span.
    pub matched: u64,
    /// Output episodes matched to the nearest truth episode of their fingerprint.
    pub nearest: u64,
    /// Output episodes whose fingerprint the truth does not have (not scored).
    pub unmatched: u64,
    /// Truth episodes no output episode matched.
    pub truth_missed: u64,
}

impl Evaluation {
    /// As a JSON object.
    pub fn json(&self) -> Value {
        json!({
            "alert_events": self.alert_events,
            "episodes": self.episodes,
            "incidents": self.incidents,
            "noise_reduction": self.noise_reduction,
            "pairwise": self.scores.pairwise.json(),
            "bcubed": self.scores.bcubed.json(),
            "ari": self.scores.ari,
            "root_cause_top1": self.root_cause_top1,
            "root_cause_incidents": self.root_cause_incidents,
            "matched": self.matched,
            "nearest": self.nearest,
            "unmatched": self.unmatched,
            "truth_missed": self.truth_missed,
        })
    }
}

/// Matches output episodes to truth episodes: for each output episode, the index of its truth
/// row and whether it was only the nearest one.
pub fn match_episodes(truth: &[TruthRow], out: &[OutEpisode]) -> Vec<Option<(usize, bool)>> {
    let mut by_fp: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, t) in truth.iter().enumerate() {
        by_fp.entry((&t.tenant, &t.fingerprint)).or_default().push(i);
    }
    out.iter()
        .map(|e| {
            let cands = by_fp.get(&(e.tenant.as_str(), e.fingerprint.as_str()))?;
            let dist = |i: usize| {
                let t = &truth[i];
                if e.starts_at < t.first_ts {
                    t.first_ts - e.starts_at
                } else if e.starts_at > t.last_ts + MATCH_SLACK_MS {
                    e.starts_at - t.last_ts - MATCH_SLACK_MS
                } else {
                    0
                }
            };
            // Inside a span, the latest-starting one (spans with slack may overlap); else nearest.
            let best = cands.iter().copied().min_by_key(|&i| (dist(i), -truth[i].first_ts))?;
            Some((best, dist(best) > 0))
        })
        .collect()
}

/// Evaluates a predicted grouping. `pred[i]` is the predicted cluster of `out[i]` (`None`: a
/// singleton); `root[c]` is the root cause of predicted cluster `c`.
pub fn evaluate(truth: &[TruthRow], out: &[OutEpisode], pred: &[Option<String>], root: &HashMap<String, String>) -> Evaluation {
    let matches = match_episodes(truth, out);
    let mut truth_ids: HashMap<&str, u32> = HashMap::new();
    // Predicted clusters over all output episodes (singletons for episodes without one).
    let mut pred_ids: HashMap<&str, u32> = HashMap::new();
    let mut next_singleton = u32::MAX;
    let pred_label: Vec<u32> = pred
        .iter()
        .map(|p| match p {
            Some(s) => {
                let n = pred_ids.len() as u32;
                *pred_ids.entry(s.as_str()).or_insert(n)
            }
            None => {
                next_singleton -= 1;
                next_singleton
            }
        })
        .collect();
    let incidents = pred_ids.len() as u64 + (u32::MAX - next_singleton) as u64;
    let (mut t_lab, mut p_lab) = (Vec::new(), Vec::new());
    let (mut matched, mut nearest, mut unmatched) = (0, 0, 0);
    let mut hit_truth = vec![false; truth.len()];
    // Per truth incident: predicted cluster → count.
    let mut votes: BTreeMap<&str, BTreeMap<u32, u64>> = BTreeMap::new();
    for (i, m) in matches.iter().enumerate() {
        match m {
            None => unmatched += 1,
            Some((ti, near)) => {
                if *near {
                    nearest += 1
                } else {
                    matched += 1
                }
                hit_truth[*ti] = true;
                let t = &truth[*ti];
                let n = truth_ids.len() as u32;
                t_lab.push(*truth_ids.entry(t.incident.as_str()).or_insert(n));
                p_lab.push(pred_label[i]);
                if !t.incident.starts_with("noise-") {
                    *votes.entry(&t.incident).or_default().entry(pred_label[i]).or_default() += 1;
                }
            }
        }
    }
    let mut name_of: HashMap<u32, &str> = HashMap::new();
    for (s, &id) in &pred_ids {
        name_of.insert(id, s);
    }
    let truth_root: HashMap<&str, &str> = truth.iter().map(|t| (t.incident.as_str(), t.root_service.as_str())).collect();
    let mut hits = 0u64;
    for (inc, v) in &votes {
        // The cluster holding most of the incident's elements; ties to the smaller label.
        let (&best, _) = v.iter().max_by_key(|(c, n)| (**n, std::cmp::Reverse(**c))).expect("non-empty");
        let predicted = name_of.get(&best).and_then(|name| root.get(*name));
        if predicted.map(|s| s.as_str()) == truth_root.get(inc).copied() {
            hits += 1;
        }
    }
    let alert_events: u64 = out.iter().map(|e| e.occurrences).sum();
    Evaluation {
        alert_events,
        episodes: t_lab.len() as u64,
        incidents,
        noise_reduction: if alert_events > 0 { 1.0 - incidents as f64 / alert_events as f64 } else { 0.0 },
        scores: scores(&t_lab, &p_lab),
        root_cause_top1: if votes.is_empty() { 0.0 } else { hits as f64 / votes.len() as f64 },
        root_cause_incidents: votes.len() as u64,
        matched,
        nearest,
        unmatched,
        truth_missed: hit_truth.iter().filter(|h| !**h).count() as u64,
    }
}

/// Alertmanager-style groups: per tenant and values of `group_by`, episodes whose spans
/// overlap (transitively) share a group. Returns each episode's group name and each group's
/// root cause (the service, under `service_label`, of its earliest episode).
pub fn baseline_groups(out: &[OutEpisode], group_by: &[String], service_label: &str) -> (Vec<Option<String>>, HashMap<String, String>) {
    let mut keyed: BTreeMap<(String, Vec<Option<String>>), Vec<usize>> = BTreeMap::new();
    let parsed: Vec<Option<serde_json::Map<String, Value>>> = out
        .iter()
        .map(|e| match serde_json::from_str::<Value>(&e.labels) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        })
        .collect();
    for (i, e) in out.iter().enumerate() {
        let vals =
            group_by.iter().map(|k| parsed[i].as_ref().and_then(|m| m.get(k)).and_then(|v| v.as_str()).map(str::to_string)).collect();
        keyed.entry((e.tenant.clone(), vals)).or_default().push(i);
    }
    let mut group = vec![None; out.len()];
    let mut roots = HashMap::new();
    let mut n = 0u64;
    for (_, mut members) in keyed {
        members.sort_by_key(|&i| (out[i].starts_at, i));
        let mut end = i64::MIN;
        let mut name = String::new();
        for i in members {
            if out[i].starts_at > end {
                n += 1;
                name = format!("baseline-{n}");
                let svc = parsed[i].as_ref().and_then(|m| m.get(service_label)).and_then(|v| v.as_str()).unwrap_or("").to_string();
                roots.insert(name.clone(), svc);
                end = out[i].ends_at;
            }
            end = end.max(out[i].ends_at);
            group[i] = Some(name.clone());
        }
    }
    (group, roots)
}

/// What a pipeline wrote: output episodes and each incident's latest root cause.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// Output episodes.
    pub episodes: Vec<OutEpisode>,
    /// Incident id → latest `root_cause` (tenant-qualified: `tenant/id`).
    pub roots: HashMap<String, String>,
}

impl Output {
    /// The predicted clusters (tenant-qualified incident ids).
    pub fn predicted(&self) -> Vec<Option<String>> {
        self.episodes.iter().map(|e| e.incident.as_ref().map(|i| format!("{}/{i}", e.tenant))).collect()
    }
}

fn col_i64(b: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>, EvalError> {
    let c = b.column_by_name(name).ok_or_else(|| EvalError::Data(format!("no column `{name}`")))?;
    let c = match c.data_type() {
        DataType::Timestamp(..) | DataType::Int64 | DataType::Int32 | DataType::UInt64 => cast(c, &DataType::Int64),
        t => return Err(EvalError::Data(format!("column `{name}` has type {t}, expected a timestamp or an integer"))),
    }
    .map_err(|e| EvalError::Data(e.to_string()))?;
    let a = c.as_primitive::<Int64Type>();
    Ok((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))).collect())
}

fn col_str(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>, EvalError> {
    let c = b.column_by_name(name).ok_or_else(|| EvalError::Data(format!("no column `{name}`")))?;
    let c = cast(c, &DataType::Utf8).map_err(|e| EvalError::Data(format!("column `{name}`: {e}")))?;
    let a = c.as_string::<i32>();
    Ok((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_string())).collect())
}

async fn query(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, EvalError> {
    let df = ctx.sql(sql).await.map_err(|e| EvalError::Query(e.to_string()))?;
    df.collect().await.map_err(|e| EvalError::Query(e.to_string()))
}

/// Reads the `alerts` and `incidents` tables of an output folder.
pub async fn read_output(dir: &Path) -> Result<Output, EvalError> {
    let (ctx, tables) = alertflow_queries::context_for_dir(dir).await.map_err(|e| EvalError::Data(e.to_string()))?;
    for want in ["alerts", "incidents"] {
        if !tables.iter().any(|t| t.name == want) {
            return Err(EvalError::Data(format!(
                "no `{want}` table under {} (found: {}); run an alert pipeline with [dedup] and [correlate] first",
                dir.display(),
                if tables.is_empty() { "none".to_string() } else { tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ") }
            )));
        }
    }
    // Per episode: the latest row, and the most occurrences of any row.
    let mut eps: BTreeMap<(String, String, i64), (i64, OutEpisode)> = BTreeMap::new();
    for b in
        query(&ctx, "SELECT tenant, fingerprint, starts_at, ends_at, last_seen, incident_id, occurrences, revision, labels FROM alerts")
            .await?
    {
        let (tenant, fp, starts, ends, seen, inc, occ, rev, labels) = (
            col_str(&b, "tenant")?,
            col_str(&b, "fingerprint")?,
            col_i64(&b, "starts_at")?,
            col_i64(&b, "ends_at")?,
            col_i64(&b, "last_seen")?,
            col_str(&b, "incident_id")?,
            col_i64(&b, "occurrences")?,
            col_i64(&b, "revision")?,
            col_str(&b, "labels")?,
        );
        for i in 0..b.num_rows() {
            let (Some(t), Some(f), Some(s)) = (&tenant[i], &fp[i], starts[i]) else {
                return Err(EvalError::Data("alerts: a row without tenant, fingerprint or starts_at".into()));
            };
            let rev = rev[i].unwrap_or(0);
            let occ = occ[i].unwrap_or(0).max(0) as u64;
            let end = ends[i].or(seen[i]).unwrap_or(s);
            let row = OutEpisode {
                tenant: t.clone(),
                fingerprint: f.clone(),
                starts_at: s,
                ends_at: end,
                incident: inc[i].clone(),
                occurrences: occ,
                labels: labels[i].clone().unwrap_or_default(),
            };
            match eps.entry((t.clone(), f.clone(), s)) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert((rev, row));
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let (r, e) = o.get_mut();
                    let most = e.occurrences.max(occ);
                    if rev >= *r {
                        *r = rev;
                        *e = row;
                    }
                    e.occurrences = most;
                }
            }
        }
    }
    let mut roots: HashMap<String, (i64, String)> = HashMap::new();
    for b in query(&ctx, "SELECT tenant, incident_id, root_cause, revision FROM incidents").await? {
        let (tenant, id, root, rev) =
            (col_str(&b, "tenant")?, col_str(&b, "incident_id")?, col_str(&b, "root_cause")?, col_i64(&b, "revision")?);
        for i in 0..b.num_rows() {
            let (Some(t), Some(id)) = (&tenant[i], &id[i]) else { continue };
            let rev = rev[i].unwrap_or(0);
            let e = roots.entry(format!("{t}/{id}")).or_insert((i64::MIN, String::new()));
            if rev >= e.0 {
                *e = (rev, root[i].clone().unwrap_or_default());
            }
        }
    }
    Ok(Output { episodes: eps.into_values().map(|(_, e)| e).collect(), roots: roots.into_iter().map(|(k, (_, r))| (k, r)).collect() })
}

/// Renders one or two evaluations as a table.
pub fn render(ours: &Evaluation, baseline: Option<(&str, &Evaluation)>) -> String {
    let mut s = String::new();
    let head = baseline.map(|(n, _)| n).unwrap_or("");
    let _ = writeln!(s, "{:<28} {:>14} {:>14}", "", "alertflow", head);
    let row = |s: &mut String, name: &str, f: &dyn Fn(&Evaluation) -> String| {
        let _ = writeln!(s, "{:<28} {:>14} {:>14}", name, f(ours), baseline.map(|(_, b)| f(b)).unwrap_or_default());
    };
    let pct = |v: f64| format!("{:.2} %", v * 100.0);
    let num = |v: f64| format!("{v:.4}");
    row(&mut s, "alert events (notifications)", &|e| e.alert_events.to_string());
    row(&mut s, "alert episodes scored", &|e| e.episodes.to_string());
    row(&mut s, "incidents", &|e| e.incidents.to_string());
    row(&mut s, "noise reduction", &|e| pct(e.noise_reduction));
    row(&mut s, "pairwise precision", &|e| num(e.scores.pairwise.precision));
    row(&mut s, "pairwise recall", &|e| num(e.scores.pairwise.recall));
    row(&mut s, "pairwise F1", &|e| num(e.scores.pairwise.f1));
    row(&mut s, "B-cubed precision", &|e| num(e.scores.bcubed.precision));
    row(&mut s, "B-cubed recall", &|e| num(e.scores.bcubed.recall));
    row(&mut s, "B-cubed F1", &|e| num(e.scores.bcubed.f1));
    row(&mut s, "adjusted Rand index", &|e| num(e.scores.ari));
    row(&mut s, "root-cause top-1", &|e| format!("{} ({})", num(e.root_cause_top1), e.root_cause_incidents));
    let _ = writeln!(
        s,
        "\nepisodes: {} matched, {} matched to the nearest truth episode, {} unknown to the truth (not scored); {} truth episodes not seen",
        ours.matched, ours.nearest, ours.unmatched, ours.truth_missed
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn perfect_clustering_scores_one_whatever_the_label_names() {
        let s = scores(&[0, 0, 1, 1, 2], &[7, 7, 3, 3, 9]);
        for v in [s.pairwise.precision, s.pairwise.recall, s.pairwise.f1, s.bcubed.precision, s.bcubed.recall, s.bcubed.f1, s.ari] {
            assert!(close(v, 1.0), "{s:?}");
        }
    }

    #[test]
    fn everything_in_one_cluster() {
        // Truth sizes 3, 2, 1: B³ precision = Σ a_i² / n² = (9 + 4 + 1) / 36; recall 1.
        let s = scores(&[0, 0, 0, 1, 1, 2], &[5; 6]);
        assert!(close(s.bcubed.precision, 14.0 / 36.0), "{s:?}");
        assert!(close(s.bcubed.recall, 1.0));
        // Pairs: 3 + 1 true of 15 predicted.
        assert!(close(s.pairwise.precision, 4.0 / 15.0) && close(s.pairwise.recall, 1.0));
        assert!(close(s.ari, 0.0), "one cluster carries no information: {}", s.ari);
    }

    #[test]
    fn known_ari_values() {
        // scikit-learn's documented examples of `adjusted_rand_score`.
        assert!(close(scores(&[0, 0, 1, 1], &[0, 0, 1, 2]).ari, 4.0 / 7.0)); // 0.5714…
        assert!(close(scores(&[0, 0, 1, 1], &[1, 1, 0, 0]).ari, 1.0));
        assert!(close(scores(&[0, 0, 0, 0], &[0, 1, 2, 3]).ari, 0.0));
        // Negative when worse than chance: [0,0,1,1] vs [0,1,0,1] is -0.5.
        assert!(close(scores(&[0, 0, 1, 1], &[0, 1, 0, 1]).ari, -0.5));
    }

    #[test]
    fn singleton_predictions() {
        // Truth {0,1,2}, {3}; prediction all singletons.
        let s = scores(&[0, 0, 0, 1], &[0, 1, 2, 3]);
        assert!(close(s.pairwise.precision, 1.0), "no predicted pair: precision 1 by convention");
        assert!(close(s.pairwise.recall, 0.0) && close(s.pairwise.f1, 0.0));
        assert!(close(s.bcubed.precision, 1.0));
        // Recall per element: 1/3, 1/3, 1/3, 1 → 2/4.
        assert!(close(s.bcubed.recall, 0.5));
        assert!(close(s.bcubed.f1, 2.0 * 0.5 / 1.5));
    }

    #[test]
    fn bcubed_weighs_every_element_the_same() {
        // A big correct cluster and two small ones wrongly merged.
        let mut truth = vec![0u32; 100];
        truth.extend([1, 1, 2, 2]);
        let mut pred = vec![0u32; 100];
        pred.extend([1, 1, 1, 1]);
        let s = scores(&truth, &pred);
        // Elements of the merged cluster: precision 2/4 each; 100 others 1 → (100 + 4·0.5)/104.
        assert!(close(s.bcubed.precision, 102.0 / 104.0), "{s:?}");
        // Pairwise: 4950 + 1 + 1 true pairs of 4950 + 6 predicted.
        assert!(close(s.pairwise.precision, 4952.0 / 4956.0));
    }

    fn truth_row(tenant: &str, fp: u64, first: i64, last: i64, inc: &str, root: &str) -> TruthRow {
        TruthRow {
            tenant: tenant.into(),
            fingerprint: format!("{fp:016x}"),
            first_ts: first,
            last_ts: last,
            incident: inc.into(),
            root_service: root.into(),
        }
    }

    fn out_ep(tenant: &str, fp: u64, start: i64, end: i64, inc: Option<&str>, labels: &str) -> OutEpisode {
        OutEpisode {
            tenant: tenant.into(),
            fingerprint: format!("{fp:016x}"),
            starts_at: start,
            ends_at: end,
            incident: inc.map(String::from),
            occurrences: 10,
            labels: labels.into(),
        }
    }

    #[test]
    fn matching_inside_nearest_and_unknown() {
        let truth = vec![truth_row("a", 1, 1_000, 60_000, "inc-1", "db"), truth_row("a", 1, 2_000_000, 2_100_000, "inc-2", "db")];
        let out = vec![
            out_ep("a", 1, 1_000, 0, None, "{}"),
            out_ep("a", 1, 60_000 + MATCH_SLACK_MS, 0, None, "{}"), // inside the slack
            out_ep("a", 1, 1_900_000, 0, None, "{}"),               // nearest: the second
            out_ep("b", 1, 1_000, 0, None, "{}"),                   // other tenant: unknown
        ];
        assert_eq!(match_episodes(&truth, &out), vec![Some((0, false)), Some((0, false)), Some((1, true)), None]);
    }

    #[test]
    fn evaluation_counts_and_root_cause() {
        let truth = vec![
            truth_row("a", 1, 0, 100, "inc-1", "db"),
            truth_row("a", 2, 10, 100, "inc-1", "db"),
            truth_row("a", 3, 20, 100, "inc-1", "db"),
            truth_row("a", 4, 0, 100, "inc-2", "cache"),
            truth_row("a", 5, 0, 100, "noise-1", "web"),
        ];
        let out: Vec<OutEpisode> = (1..=5).map(|fp| out_ep("a", fp, truth[fp as usize - 1].first_ts, 100, None, "{}")).collect();
        let pred = vec![Some("x".into()), Some("x".into()), Some("y".into()), Some("y".into()), None];
        let roots: HashMap<String, String> = [("x".to_string(), "db".to_string()), ("y".to_string(), "db".to_string())].into();
        let e = evaluate(&truth, &out, &pred, &roots);
        assert_eq!((e.alert_events, e.episodes, e.incidents, e.truth_missed, e.unmatched), (50, 5, 3, 0, 0));
        assert!(close(e.noise_reduction, 1.0 - 3.0 / 50.0));
        // inc-1 mostly in x (root db: hit); inc-2 in y (root db, truth cache: miss).
        assert_eq!(e.root_cause_incidents, 2);
        assert!(close(e.root_cause_top1, 0.5));
        let want = scores(&[0, 0, 0, 1, 2], &[0, 0, 1, 1, 2]);
        for (got, want) in [
            (e.scores.pairwise.f1, want.pairwise.f1),
            (e.scores.bcubed.precision, want.bcubed.precision),
            (e.scores.bcubed.recall, want.bcubed.recall),
            (e.scores.ari, want.ari),
        ] {
            assert!(close(got, want), "{:?} vs {want:?}", e.scores);
        }
    }

    #[test]
    fn baseline_groups_overlapping_equal_labels() {
        let l = |name: &str, cluster: &str, svc: &str| format!(r#"{{"alertname":"{name}","cluster":"{cluster}","service":"{svc}"}}"#);
        let out = vec![
            out_ep("a", 1, 0, 100, None, &l("A", "c1", "db")),
            out_ep("a", 2, 50, 200, None, &l("A", "c1", "api")),  // overlaps 1
            out_ep("a", 3, 150, 300, None, &l("A", "c1", "web")), // overlaps 2: transitively 1
            out_ep("a", 4, 400, 500, None, &l("A", "c1", "web")), // after: new group
            out_ep("a", 5, 0, 100, None, &l("A", "c2", "db")),    // other cluster
            out_ep("b", 6, 0, 100, None, &l("A", "c1", "db")),    // other tenant
        ];
        let (g, roots) = baseline_groups(&out, &["alertname".into(), "cluster".into()], "service");
        assert_eq!(g[0], g[1]);
        assert_eq!(g[1], g[2]);
        let distinct: std::collections::HashSet<_> = [&g[0], &g[3], &g[4], &g[5]].into_iter().collect();
        assert_eq!(distinct.len(), 4, "{g:?}");
        assert_eq!(roots[g[0].as_ref().unwrap()], "db");
        assert_eq!(roots[g[3].as_ref().unwrap()], "web");
    }

    #[test]
    fn truth_file_errors_name_the_line() {
        let good = format!("{TRUTH_HEADER}\nacme,00000000000000ff,1,2,inc-1,db\n");
        assert_eq!(parse_truth("t.csv", &good).unwrap().len(), 1);
        for (text, want) in [
            ("tenant,fp\n".to_string(), "t.csv:1: expected the header"),
            (String::new(), "t.csv:1: empty file"),
            (format!("{TRUTH_HEADER}\nacme,ff,1,2,inc-1,db\n"), "t.csv:2: fingerprint `ff` is not 16 hex digits"),
            (format!("{TRUTH_HEADER}\nacme,00000000000000ff,1,2,inc-1,db\nacme,00000000000000ff,x,2,inc-1,db\n"), "t.csv:3: first_ts `x`"),
            (format!("{TRUTH_HEADER}\nacme,00000000000000ff,5,2,inc-1,db\n"), "t.csv:2: last_ts 2 is before"),
            (format!("{TRUTH_HEADER}\nacme,00000000000000ff,1,2,inc-1\n"), "t.csv:2: expected 6 fields, found 5"),
        ] {
            let e = parse_truth("t.csv", &text).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    /// Writes one Parquet file of `batch` under `dir/table/`.
    fn write_table(dir: &Path, table: &str, batch: &RecordBatch) {
        let d = dir.join(table);
        std::fs::create_dir_all(&d).unwrap();
        let f = std::fs::File::create(d.join("part-0.parquet")).unwrap();
        let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn a_perfect_output_read_from_parquet_scores_one_and_the_baseline_less() {
        use alertflow_model::alert::{AlertEvent, EventKind, IncidentRow, revision};
        use alertflow_model::tables::{AlertsTable, IncidentsTable, TableBuilder};
        use alertflow_model::{LabelSet, Status};

        use crate::alertgen::{AlertGen, scenario};

        let s = scenario(&AlertGen {
            tenants: 2,
            incidents: 6,
            duration_ms: 7_200_000,
            noise_rate: 5.0,
            storm_size: Some(120),
            ..AlertGen::default()
        })
        .unwrap();
        let mut count = vec![0u64; s.episodes.len()];
        for n in &s.notices {
            count[n.episode as usize] += 1;
        }
        let id = |i: u32| 0x1000 + i as u64;
        let none = LabelSet::new("", &[]);
        let mut rows = Vec::new();
        for (k, e) in s.episodes.iter().enumerate() {
            let d = &s.defs[e.def as usize];
            let pairs: Vec<(&str, &str)> = d.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let labels = LabelSet::new(&s.tenants[d.tenant], &pairs);
            let row = |event, seq, inc, occurrences, ends_at, status| AlertEvent {
                event,
                labels: labels.clone(),
                annotations: none.clone(),
                status,
                starts_at: e.first_ts,
                ends_at,
                last_seen: e.last_ts,
                occurrences,
                revision: revision(e.first_ts, seq),
                ts: e.first_ts + seq as i64,
                suppressed: false,
                storm_id: None,
                incident_id: Some(inc),
                team: None,
                tier: None,
                generator_url: None,
                part: 0,
                pos: 0,
            };
            // The opened row names a wrong incident: only the latest row counts.
            rows.push(row(EventKind::Opened, 1, 0xbad, 1, None, Status::Firing));
            rows.push(row(EventKind::Resolved, 2, id(e.incident), count[k], Some(e.last_ts), Status::Resolved));
        }
        let mut incs = Vec::new();
        for (i, t) in s.incidents.iter().enumerate() {
            for (rev, root) in [(1, "wrong"), (2, t.root_service.as_str())] {
                incs.push(IncidentRow {
                    incident_id: id(i as u32),
                    tenant: s.tenants[t.tenant].as_str().into(),
                    status: "open".into(),
                    opened_at: 0,
                    updated_at: rev,
                    resolved_at: None,
                    alert_count: 1,
                    fingerprints: vec![],
                    services: vec![],
                    root_cause: Some(root.into()),
                    max_severity: "critical".into(),
                    title: String::new(),
                    revision: rev as u64,
                });
            }
        }
        let dir = std::env::temp_dir().join(format!("alertflow-eval-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_table(&dir, "alerts", &AlertsTable::default().build(&rows).unwrap());
        write_table(&dir, "incidents", &IncidentsTable::default().build(&incs).unwrap());
        let out = tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(read_output(&dir)).unwrap();
        let mut t = Vec::new();
        s.write_truth(&mut t).unwrap();
        let truth = parse_truth("truth.csv", &String::from_utf8(t).unwrap()).unwrap();
        let e = evaluate(&truth, &out.episodes, &out.predicted(), &out.roots);
        assert_eq!(e.alert_events, s.notices.len() as u64);
        assert_eq!(
            (e.episodes, e.matched, e.nearest, e.unmatched, e.truth_missed),
            (s.episodes.len() as u64, s.episodes.len() as u64, 0, 0, 0)
        );
        assert_eq!(e.incidents, s.incidents.len() as u64);
        assert_eq!(e.scores, Scores { pairwise: Prf::new(1.0, 1.0), bcubed: Prf::new(1.0, 1.0), ari: 1.0 });
        assert_eq!((e.root_cause_top1, e.root_cause_incidents), (1.0, 6));
        let (g, roots) = baseline_groups(&out.episodes, &["alertname".into(), "cluster".into()], "service");
        let b = evaluate(&truth, &out.episodes, &g, &roots);
        assert!(b.scores.bcubed.f1 < 0.95 && b.scores.bcubed.f1 > 0.0, "{b:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
