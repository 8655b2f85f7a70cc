//! Anomaly detection: per series (tenant, name, labels), a streaming detector with bounded
//! state scores every point in [0, 1]; points at or over the threshold become anomaly rows.
//!
//! Detectors (one file each): EWMA z-score ([`zscore`]), rolling median/MAD ([`mad`]),
//! Holt-Winters with additive seasonality ([`holt_winters`]), a robust random cut forest over
//! shingles ([`rcf`]) and an ensemble ([`ensemble`]). Every detector reduces a point to a raw
//! surprise and turns it into a score with the same calibration ([`calibrate`]), so scores
//! mean the same on every series and one threshold fits them all.

pub mod calibrate;
pub mod ensemble;
pub mod holt_winters;
pub mod mad;
pub mod params;
pub mod rcf;
pub mod zscore;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use alertflow_model::{AnomalyRow, Metric, Series};
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use self::calibrate::{CalibrationSpec, Calibrator};
use self::holt_winters::{HoltWinters, HoltWintersSpec};
use self::mad::{Mad, MadSpec};
pub use self::params::{ParamReader, ParamValue, Params};
use self::rcf::{Rcf, RcfSpec};
use self::zscore::{ZScore, ZScoreSpec};
use crate::checkpoint::Saver;
use crate::limits::{OnFull, Recency, StateConfig, StateDefaults, StateLimits};
use crate::ordered::{Due, Ordered};
use crate::stats::{OperatorStats, StateGauge};
use crate::{ConfigError, Time};

/// A point's score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// How anomalous the point is, in [0, 1]; 0 while the detector warms up, never NaN.
    pub score: f64,
    /// What the detector expected the value to be.
    pub expected: f64,
}

/// A streaming detector over one series, with bounded state.
pub trait Detector: Send {
    /// Scores the next point (points arrive in event-time order) and learns from it.
    fn score(&mut self, ts: i64, value: f64) -> Score;
    /// An estimate of the state's size in bytes (heap included).
    fn memory_bytes(&self) -> usize;
    /// The whole state, for a checkpoint: restored with [`SavedDetector::into_detector`], it
    /// scores on exactly (bit for bit) as this one would.
    fn saved(&self) -> SavedDetector<'_>;
}

/// A detector's state in a checkpoint. Saving borrows the live state (a checkpoint does not
/// copy every series' model first); restoring owns it.
#[derive(Serialize, Deserialize)]
pub enum SavedDetector<'a> {
    /// [`ZScore`].
    Zscore(Cow<'a, ZScore>),
    /// [`Mad`].
    Mad(Cow<'a, Mad>),
    /// [`HoltWinters`].
    HoltWinters(Cow<'a, HoltWinters>),
    /// [`Rcf`].
    Rcf(Cow<'a, Rcf>),
    /// [`ensemble::Ensemble`]: its members, in order.
    Ensemble(Vec<SavedDetector<'a>>),
}

impl SavedDetector<'_> {
    /// The detector again.
    pub fn into_detector(self) -> Box<dyn Detector> {
        match self {
            SavedDetector::Zscore(d) => Box::new(d.into_owned()),
            SavedDetector::Mad(d) => Box::new(d.into_owned()),
            SavedDetector::HoltWinters(d) => Box::new(d.into_owned()),
            SavedDetector::Rcf(d) => Box::new(d.into_owned()),
            SavedDetector::Ensemble(members) => Box::new(ensemble::Ensemble::new(members.into_iter().map(|m| m.into_detector()).collect())),
        }
    }
}

// So the operator's `HashMap<Series, Box<dyn Detector>>` goes into a checkpoint as it is.
impl Serialize for dyn Detector + '_ {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.saved().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Box<dyn Detector> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SavedDetector::deserialize(d).map(SavedDetector::into_detector)
    }
}

/// The detector algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// Robust EWMA z-score.
    Zscore,
    /// Rolling median / MAD.
    Mad,
    /// Holt-Winters, additive seasonality.
    HoltWinters,
    /// Robust random cut forest over shingles.
    Rcf,
    /// The best default: holt_winters, mad and zscore, the two highest scores combined.
    Ensemble,
}

impl DetectorKind {
    /// Every detector, best default first.
    pub const ALL: [DetectorKind; 5] =
        [DetectorKind::Ensemble, DetectorKind::HoltWinters, DetectorKind::Mad, DetectorKind::Zscore, DetectorKind::Rcf];

    /// The name in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DetectorKind::Zscore => "zscore",
            DetectorKind::Mad => "mad",
            DetectorKind::HoltWinters => "holt_winters",
            DetectorKind::Rcf => "rcf",
            DetectorKind::Ensemble => "ensemble",
        }
    }

    /// One line on what it does.
    pub fn describe(self) -> &'static str {
        match self {
            DetectorKind::Ensemble => "holt_winters, mad and zscore; the two highest calibrated scores combined (default)",
            DetectorKind::HoltWinters => "Holt-Winters forecast error, additive seasonality (period detected)",
            DetectorKind::Mad => "distance from the rolling median in MADs",
            DetectorKind::Zscore => "distance from the EWMA mean in EWMA deviations",
            DetectorKind::Rcf => "robust random cut forest collusive displacement over shingles",
        }
    }

    /// The detector of that name.
    pub fn parse(name: &str) -> Option<DetectorKind> {
        DetectorKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A detector with validated parameters: builds one fresh state per series.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorSpec {
    kind: DetectorKind,
    cal: CalibrationSpec,
    zscore: ZScoreSpec,
    mad: MadSpec,
    hw: HoltWintersSpec,
    rcf: RcfSpec,
}

impl DetectorSpec {
    /// Validates `params` for `kind`; every error names its key (`params.window`).
    pub fn new(kind: DetectorKind, params: &Params) -> Result<DetectorSpec, Vec<ConfigError>> {
        let mut r = ParamReader::new(params);
        let cal = CalibrationSpec {
            short: r.int("short", 1, 1, calibrate::MAX_SHORT),
            long: r.int("long", 10_000, 2, 1_000_000),
            warmup: r.int("warmup", 100, 0, 1_000_000),
            cooldown: r.int("cooldown", 100, 0, 1_000_000),
            age_cap: r.int("age_cap", 100_000, 0, 1_000_000_000),
        };
        let uses = |k: DetectorKind| {
            kind == k
                || (kind == DetectorKind::Ensemble && matches!(k, DetectorKind::Mad | DetectorKind::HoltWinters | DetectorKind::Zscore))
        };
        let mut zscore = ZScoreSpec { window: 1000, clip: 4.0 };
        if uses(DetectorKind::Zscore) {
            zscore.window = r.int("window", zscore.window, 2, 1_000_000);
            zscore.clip = r.float("clip", zscore.clip, 1.0, 1e6);
        }
        let mut mad = MadSpec { window: 1000, stride: 100 };
        if uses(DetectorKind::Mad) {
            mad.window = r.int("window", mad.window, 3, 100_000);
            mad.stride = r.int("stride", (mad.window / 10).max(1), 1, 100_000);
        }
        let mut hw = HoltWintersSpec { period: 0, max_period: 1024, alpha: 0.1, beta: 0.005, gamma: 0.1, warmup: 600 };
        if uses(DetectorKind::HoltWinters) {
            hw.max_period = r.int("max_period", hw.max_period, 2, 100_000);
            hw.period = r.int("period", 0, 0, hw.max_period);
            hw.alpha = r.float("alpha", hw.alpha, 0.0, 1.0);
            hw.beta = r.float("beta", hw.beta, 0.0, 1.0);
            hw.gamma = r.float("gamma", hw.gamma, 0.0, 1.0);
            hw.warmup = r.int("hw_warmup", hw.warmup, 4, 1_000_000);
        }
        let mut rcf = RcfSpec::default();
        if uses(DetectorKind::Rcf) {
            rcf.trees = r.int("trees", rcf.trees, 1, 1000);
            rcf.tree_size = r.int("tree_size", rcf.tree_size, 4, 4096);
            rcf.shingle = r.int("shingle", rcf.shingle, 1, rcf::MAX_SHINGLE);
            rcf.seed = r.int("seed", rcf.seed as usize, 0, usize::MAX) as u64;
        }
        r.finish(kind.name())?;
        Ok(DetectorSpec { kind, cal, zscore, mad, hw, rcf })
    }

    /// The algorithm.
    pub fn kind(&self) -> DetectorKind {
        self.kind
    }

    /// A fresh state for one series.
    pub fn build(&self) -> Box<dyn Detector> {
        let cal = Calibrator::new(self.cal);
        match self.kind {
            DetectorKind::Zscore => Box::new(ZScore::new(self.zscore, cal)),
            DetectorKind::Mad => Box::new(Mad::new(self.mad, cal)),
            DetectorKind::HoltWinters => Box::new(HoltWinters::new(self.hw, cal)),
            DetectorKind::Rcf => Box::new(Rcf::new(self.rcf, cal)),
            DetectorKind::Ensemble => Box::new(ensemble::Ensemble::new(vec![
                Box::new(HoltWinters::new(self.hw, cal.clone())),
                Box::new(Mad::new(self.mad, cal.clone())),
                Box::new(ZScore::new(self.zscore, cal)),
            ])),
        }
    }
}

/// The `[[detect]]` section of a pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// The output table's name.
    pub name: String,
    /// The source (metric stream) to watch.
    pub input: String,
    /// Metric names to watch; empty or absent: every metric.
    #[serde(default)]
    pub metrics: Vec<String>,
    /// The detector: ensemble (default), holt_winters, mad, zscore or rcf.
    #[serde(default = "default_detector")]
    pub detector: DetectorKind,
    /// The detector's parameters, e.g. `{ window = 500 }` (see README, "Anomaly detection").
    #[serde(default)]
    pub params: Params,
    /// Points scoring at least this (in [0, 1]) become rows of the table.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Also raise a `MetricAnomaly` alert per row, into the alert chain (dedup → correlate).
    #[serde(default)]
    pub raise_alerts: bool,
    /// Bounds on the series models held: `ttl` (a series silent this long starts afresh),
    /// `max_keys` and `on_full` (see [`state_defaults`]).
    #[serde(default)]
    pub state: StateConfig,
}

/// Detect's state bounds by default: about 1 GiB of models at most — 100,000 series for
/// z-score, MAD, Holt-Winters and their ensemble (0.6–5 KB a model, about 8 KB the ensemble),
/// 10,000 for the forest (about 86 KiB a model, see BENCHMARKS.md) — a week's TTL, the least
/// recently seen model evicted.
pub fn state_defaults(kind: DetectorKind) -> StateDefaults {
    let max_keys = match kind {
        DetectorKind::Rcf => 10_000,
        DetectorKind::Zscore | DetectorKind::Mad | DetectorKind::HoltWinters | DetectorKind::Ensemble => 100_000,
    };
    StateDefaults {
        max_keys,
        ttl: Some(alertflow_model::DurationMs(7 * 86_400_000)),
        on_full: OnFull::EvictOldest,
        policies: &[OnFull::EvictOldest, OnFull::RejectNew],
    }
}

fn default_detector() -> DetectorKind {
    DetectorKind::Ensemble
}

fn default_threshold() -> f64 {
    0.999
}

/// A validated `[[detect]]` section, ready to build.
#[derive(Clone, Debug)]
pub struct Detect {
    name: String,
    metrics: Vec<String>,
    spec: DetectorSpec,
    detector: std::sync::Arc<str>,
    threshold: f64,
    raise_alerts: bool,
    epoch: i64,
    limits: StateLimits,
    /// Counters of all workers' instances.
    stats: std::sync::Arc<OperatorStats>,
}

impl Detect {
    /// Validates a config for a pipeline whose timely epoch is `epoch`.
    pub fn with_config(cfg: &DetectConfig, epoch: alertflow_model::DurationMs) -> Result<Detect, Vec<ConfigError>> {
        let mut errs = Vec::new();
        let spec = match DetectorSpec::new(cfg.detector, &cfg.params) {
            Ok(s) => Some(s),
            Err(e) => {
                errs.extend(e);
                None
            }
        };
        if !(0.0..=1.0).contains(&cfg.threshold) {
            errs.push(ConfigError::new("threshold", format!("must be in [0, 1] (scores are), not {}", cfg.threshold)));
        }
        for (i, m) in cfg.metrics.iter().enumerate() {
            if m.is_empty() {
                errs.push(ConfigError::new(format!("metrics[{i}]"), "a metric name cannot be empty"));
            } else if cfg.metrics[..i].contains(m) {
                errs.push(ConfigError::new(format!("metrics[{i}]"), format!("`{m}` is listed twice")));
            }
        }
        let limits = StateLimits::new(&cfg.state, state_defaults(cfg.detector)).map_err(|e| errs.extend(e)).ok();
        match (spec, limits) {
            (Some(spec), Some(limits)) if errs.is_empty() => Ok(Detect {
                name: cfg.name.clone(),
                metrics: cfg.metrics.clone(),
                detector: cfg.detector.name().into(),
                spec,
                threshold: cfg.threshold,
                raise_alerts: cfg.raise_alerts,
                epoch: epoch.millis().max(1) as i64,
                limits,
                stats: Default::default(),
            }),
            _ => Err(errs),
        }
    }

    /// The output table's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The counters all workers' instances report into: points in (late ones also counted as
    /// dropped: they are not scored), anomaly rows out, series models held.
    pub fn stats(&self) -> &std::sync::Arc<OperatorStats> {
        &self.stats
    }
    /// Whether rows also become alerts.
    pub fn raise_alerts(&self) -> bool {
        self.raise_alerts
    }
    /// The detector with its parameters.
    pub fn spec(&self) -> &DetectorSpec {
        &self.spec
    }
    /// Whether points of this metric are watched.
    #[inline]
    fn watches(&self, name: &str) -> bool {
        self.metrics.is_empty() || self.metrics.iter().any(|m| m == name)
    }
}

/// Builds anomaly detection on metric streams.
pub trait DetectExt<'s> {
    /// One [`AnomalyRow`] per point scoring at least the threshold, at the point's epoch.
    /// Points are exchanged by series and scored per series in event-time order (ties by
    /// `(part, pos)`) once the frontier has passed their epoch, so the rows are the same at
    /// any worker count. Late points (flagged under `late = "update"`) are not scored.
    fn detect(self, op: &Detect) -> Stream<'s, Time, Vec<AnomalyRow>>;
}

impl<'s> DetectExt<'s> for Stream<'s, Time, Vec<Metric>> {
    fn detect(self, op: &Detect) -> Stream<'s, Time, Vec<AnomalyRow>> {
        let op = op.clone();
        let (worker, workers) = (self.scope().index(), self.scope().peers());
        self.unary_frontier::<CapacityContainerBuilder<Vec<AnomalyRow>>, _, _, _>(
            Exchange::new(|m: &Metric| m.series.stable_hash()),
            &format!("detect:{}", op.name),
            move |cap, _info| {
                let mut ordered: Ordered<Metric> = Ordered::new(cap, op.epoch);
                let mut models = Models::new(op.limits, workers);
                let mut out: BTreeMap<Time, Vec<AnomalyRow>> = BTreeMap::new();
                let mut held = StateGauge::new(op.stats.clone());
                let mut saver = Saver::register(&format!("detect:{}", op.name), worker);
                if let Some(s) = saver.restore::<HashMap<Series, Model>>() {
                    models.restore(s);
                }
                move |(input, frontier), output| {
                    input.for_each_stamp(|_, data| {
                        for batch in data {
                            let late = batch.iter().filter(|m| m.late).count();
                            op.stats.add_in(batch.len());
                            op.stats.add_late(late);
                            op.stats.add_dropped(late);
                            for m in batch.drain(..) {
                                // A late point (late = "update") arrives after its series moved
                                // on; a streaming detector cannot rewind its state, so it is
                                // left to the windowed aggregates, which revise.
                                if !m.late && op.watches(m.series.name()) {
                                    ordered.push(m);
                                }
                            }
                        }
                    });
                    loop {
                        let until = saver.pending();
                        ordered.begin_until(frontier, until);
                        while let Some(due) = ordered.next_due() {
                            let Due::Record(m) = due else { continue };
                            let Some(s) = models.score(&m, &op) else { continue };
                            if s.score >= op.threshold {
                                out.entry(ordered.epoch_of(m.ts)).or_default().push(AnomalyRow {
                                    ts: m.ts,
                                    value: m.value,
                                    expected: s.expected,
                                    score: s.score,
                                    detector: op.detector.clone(),
                                    part: m.part,
                                    pos: m.pos,
                                    series: m.series,
                                });
                            }
                        }
                        if let Some(limit) = ordered.limit() {
                            models.sweep(limit as i64, &op.stats);
                        }
                        for (t, mut rows) in std::mem::take(&mut out) {
                            if let Some(cap) = ordered.cap_at(t as i64) {
                                op.stats.add_out(rows.len());
                                output.session(&cap).give_container(&mut rows);
                            }
                        }
                        // Only the models are saved: detect sets no timers, and a row is at its
                        // point's epoch (before the checkpoint), so it has been sent already.
                        if !saver.save_if_passed(frontier, until, || &models.map) {
                            break;
                        }
                    }
                    saver.finish_if_done(frontier, || &models.map);
                    ordered.settle(frontier);
                    held.set(models.map.len());
                }
            },
        )
    }
}

/// One series' model and when it last had a point (event time).
#[derive(Serialize, Deserialize)]
struct Model {
    detector: Box<dyn Detector>,
    last: i64,
}

/// One worker's series models, bounded by the operator's [`StateLimits`].
struct Models {
    map: HashMap<Series, Model>,
    recency: Recency<Series>,
    limits: StateLimits,
    cap: usize,
}

impl Models {
    fn new(limits: StateLimits, workers: usize) -> Self {
        Models { map: HashMap::new(), recency: Recency::default(), limits, cap: limits.per_worker(workers) }
    }

    fn restore(&mut self, map: HashMap<Series, Model>) {
        self.recency = Recency::rebuild(map.iter().map(|(s, m)| (m.last, s.clone())));
        self.map = map;
    }

    /// Scores a point with its series' model: a fresh one if the series is new or its model
    /// expired; `None` (not scored) if the state is full and the policy rejects new series.
    /// One map lookup for a known series.
    fn score(&mut self, p: &Metric, op: &Detect) -> Option<Score> {
        let m = match self.map.get_mut(&p.series) {
            Some(m) => {
                if self.limits.expired(m.last, p.ts) {
                    op.stats.add_expired(1);
                    m.detector = op.spec.build();
                }
                m.last = m.last.max(p.ts);
                m
            }
            None => {
                if self.map.len() >= self.cap {
                    match self.limits.on_full {
                        OnFull::RejectNew => {
                            op.stats.add_rejected(1);
                            return None;
                        }
                        OnFull::EvictOldest => {
                            let map = &self.map;
                            if let Some(victim) = self.recency.pop_oldest(|s| map.get(s).map(|m| m.last)) {
                                self.map.remove(&victim);
                                op.stats.add_evicted(1);
                            }
                        }
                    }
                }
                self.recency.insert(p.ts, p.series.clone());
                self.map.entry(p.series.clone()).or_insert(Model { detector: op.spec.build(), last: p.ts })
            }
        };
        Some(m.detector.score(p.ts, p.value))
    }

    /// Forgets the models whose TTL ends before `limit` (no point still to come is earlier):
    /// their next point would start afresh anyway.
    fn sweep(&mut self, limit: i64, stats: &OperatorStats) {
        let Some(ttl) = self.limits.ttl else { return };
        let map = &self.map;
        let gone = self.recency.pop_before(limit.saturating_sub(ttl), |s| map.get(s).map(|m| m.last));
        stats.add_expired(gone.len());
        for s in gone {
            self.map.remove(&s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Lcg, run_metrics};

    fn config(detector: DetectorKind, threshold: f64) -> DetectConfig {
        DetectConfig {
            name: "anomalies".into(),
            input: "points".into(),
            metrics: vec!["cpu".into(), "mem".into()],
            detector,
            params: Params::new(),
            threshold,
            raise_alerts: false,
            state: StateConfig::default(),
        }
    }

    /// Random walks with spikes over 30 series (a third of them `disk`, not watched), up to 3 s
    /// of disorder, duplicate timestamps across partitions.
    fn random_points(seed: u64, n: usize) -> Vec<Metric> {
        let mut r = Lcg(seed);
        let series: Vec<Series> =
            (0..30).map(|i| Series::new("t", ["cpu", "mem", "disk"][i % 3], &[("host", format!("h{i}").as_str())])).collect();
        let mut level = vec![50.0f64; series.len()];
        (0..n)
            .map(|i| {
                let k = (r.next() % series.len() as u64) as usize;
                level[k] += (r.next() % 1000) as f64 / 500.0 - 1.0;
                let spike = if r.next().is_multiple_of(200) { 40.0 } else { 0.0 };
                let ts = 1_767_225_600_000 + (i as i64 / 2) * 100 + (r.next() % 6000) as i64 - 3000;
                Metric {
                    series: series[k].clone(),
                    ts,
                    value: level[k] + spike,
                    part: (i / 1009) as u32,
                    pos: (i % 1009) as u64,
                    late: false,
                }
            })
            .collect()
    }

    /// The oracle without bounds (none of the defaults acts on these inputs): every watched
    /// point scored naively in (ts, part, pos) order, see [`bounded_oracle`].
    fn oracle(points: &[Metric], op: &Detect) -> Vec<AnomalyRow> {
        bounded_oracle(points, op).0
    }

    fn key(r: &AnomalyRow) -> (i64, Series, u32, u64) {
        (r.ts, r.series.clone(), r.part, r.pos)
    }

    #[test]
    fn matches_the_oracle_at_any_worker_count() {
        use std::sync::atomic::Ordering::Relaxed;
        for (seed, kind) in [(1, DetectorKind::Mad), (2, DetectorKind::Zscore), (3, DetectorKind::Ensemble), (4, DetectorKind::Rcf)] {
            let op = Detect::with_config(&config(kind, 0.99), "1s".parse().unwrap()).unwrap();
            let points = random_points(seed, 30_000);
            let mut want = oracle(&points, &op);
            want.sort_by_key(key);
            assert!(want.len() > 20, "{kind}: the input should hold anomalies, found {}", want.len());
            assert!(want.iter().all(|r| r.series.name() != "disk"), "unwatched metric scored");
            for workers in [1, 2, 4] {
                let op2 = op.clone();
                // The counters (all workers into one set, shared by the clones) move by exactly
                // the points fed and the rows emitted; no series model outlives the dataflow.
                let st = op.stats();
                let (in0, out0) = (st.records_in.load(Relaxed), st.records_out.load(Relaxed));
                let mut rows = run_metrics(workers, points.clone(), 3000, move |s| s.detect(&op2));
                assert_eq!(st.records_in.load(Relaxed) - in0, points.len() as u64, "{kind}, {workers} workers");
                assert_eq!(st.records_out.load(Relaxed) - out0, rows.len() as u64, "{kind}, {workers} workers");
                assert_eq!(st.state(), 0, "{kind}, {workers} workers");
                rows.sort_by_key(key);
                assert!(rows == want, "{kind}, {workers} workers: {} rows, oracle {}", rows.len(), want.len());
            }
        }
    }

    /// The oracle under state bounds: every watched point in (ts, part, pos) order through one
    /// map of models, a model reset when its series was silent for longer than the TTL, and at
    /// the cap the least recently seen series (ties: the least series) evicted, or the new one
    /// rejected.
    fn bounded_oracle(points: &[Metric], op: &Detect) -> (Vec<AnomalyRow>, u64) {
        let mut ps: Vec<&Metric> = points.iter().filter(|p| op.watches(p.series.name())).collect();
        ps.sort_by_key(|p| (p.ts, p.part, p.pos));
        let mut models: BTreeMap<Series, (Box<dyn Detector>, i64)> = BTreeMap::new();
        let (mut rows, mut rejected) = (Vec::new(), 0);
        for p in ps {
            if let Some((d, last)) = models.get_mut(&p.series) {
                if op.limits.expired(*last, p.ts) {
                    *d = op.spec.build();
                }
                *last = (*last).max(p.ts);
            } else {
                if models.len() as u64 >= op.limits.max_keys {
                    if op.limits.on_full == OnFull::RejectNew {
                        rejected += 1;
                        continue;
                    }
                    let victim = models.iter().map(|(s, (_, last))| (*last, s.clone())).min().expect("full").1;
                    models.remove(&victim);
                }
                models.insert(p.series.clone(), (op.spec.build(), p.ts));
            }
            let s = models.get_mut(&p.series).expect("held").0.score(p.ts, p.value);
            assert!((0.0..=1.0).contains(&s.score), "score {} out of range", s.score);
            if s.score >= op.threshold {
                rows.push(AnomalyRow {
                    series: p.series.clone(),
                    ts: p.ts,
                    value: p.value,
                    expected: s.expected,
                    score: s.score,
                    detector: op.detector.clone(),
                    part: p.part,
                    pos: p.pos,
                });
            }
        }
        rows.sort_by_key(key);
        (rows, rejected)
    }

    /// Points of 40 series, each silent now and then for 2–8 s (so a 4 s TTL resets some
    /// models and not others), with up to 3 s of disorder.
    fn gappy_points(seed: u64, n: usize) -> Vec<Metric> {
        let mut r = Lcg(seed);
        let series: Vec<Series> = (0..40).map(|i| Series::new("t", ["cpu", "mem"][i % 2], &[("host", format!("h{i}").as_str())])).collect();
        let mut quiet_until = vec![0i64; series.len()];
        let mut out = Vec::with_capacity(n);
        let mut i = 0usize;
        while out.len() < n {
            i += 1;
            let now = 1_767_225_600_000 + i as i64 * 50;
            let k = (r.next() % series.len() as u64) as usize;
            if now < quiet_until[k] {
                continue;
            }
            if r.next().is_multiple_of(60) {
                quiet_until[k] = now + 2000 + (r.next() % 6000) as i64;
            }
            let value = 50.0 + (r.next() % 1000) as f64 / 100.0 + if r.next().is_multiple_of(150) { 60.0 } else { 0.0 };
            let ts = now + (r.next() % 3000) as i64 - 1500;
            out.push(Metric {
                series: series[k].clone(),
                ts,
                value,
                part: (out.len() / 997) as u32,
                pos: (out.len() % 997) as u64,
                late: false,
            });
        }
        out
    }

    /// A TTL resets a silent series' model exactly like the oracle at 1, 2 and 4 workers (the
    /// sweep frees only what the next point would reset anyway); a cap evicts the least
    /// recently seen model, or rejects new series, exactly like the oracle at 1 worker; at more
    /// workers it still evicts (or, rejecting, never scores more series than the cap).
    #[test]
    fn state_bounds_match_the_oracle() {
        use std::sync::atomic::Ordering::Relaxed;
        let points = gappy_points(11, 20_000);
        let with = |state: StateConfig| {
            let mut c = config(DetectorKind::Zscore, 0.98);
            c.params.insert("warmup".into(), ParamValue::Int(5));
            c.state = state;
            Detect::with_config(&c, "1s".parse().unwrap()).unwrap()
        };
        let ttl = with(StateConfig { ttl: Some("4s".parse().unwrap()), ..Default::default() });
        let (want, _) = bounded_oracle(&points, &ttl);
        let (unbounded, _) = bounded_oracle(&points, &with(StateConfig::default()));
        assert!(want.len() > 20 && want != unbounded, "the TTL should change the rows: {} vs {}", want.len(), unbounded.len());
        for workers in [1, 2, 4] {
            let op = ttl.clone();
            let expired0 = ttl.stats().expired.load(Relaxed);
            let mut rows = run_metrics(workers, points.clone(), 700, move |s| s.detect(&op));
            rows.sort_by_key(key);
            assert!(rows == want, "ttl, {workers} workers: {} rows, oracle {}", rows.len(), want.len());
            assert!(ttl.stats().expired.load(Relaxed) > expired0, "ttl, {workers} workers: nothing counted as expired");
        }
        for policy in [OnFull::EvictOldest, OnFull::RejectNew] {
            let op = with(StateConfig { max_keys: Some(12), on_full: Some(policy), ttl: None });
            let (want, rejected) = bounded_oracle(&points, &op);
            let op1 = op.clone();
            let mut rows = run_metrics(1, points.clone(), 700, move |s| s.detect(&op1));
            rows.sort_by_key(key);
            assert!(rows == want, "{policy:?}, 1 worker: {} rows, oracle {}", rows.len(), want.len());
            assert_eq!(op.stats().rejected.load(Relaxed), rejected, "{policy:?}");
            match policy {
                OnFull::EvictOldest => assert!(op.stats().evicted.load(Relaxed) > 100, "{policy:?}: evictions"),
                OnFull::RejectNew => assert!(rejected > 1000 && op.stats().evicted.load(Relaxed) == 0, "{policy:?}: {rejected} rejected"),
            }
            let mut evicted1 = op.stats().evicted.load(Relaxed);
            for workers in [2, 4] {
                let opw = op.clone();
                let rows = run_metrics(workers, points.clone(), 700, move |s| s.detect(&opw));
                // A worker holds at most its share: at most 12 series are ever scored at once,
                // so with rejection no more than 12 distinct series get rows.
                if policy == OnFull::RejectNew {
                    let series: std::collections::BTreeSet<&Series> = rows.iter().map(|r| &r.series).collect();
                    assert!(series.len() <= 12, "{workers} workers: {} series scored", series.len());
                } else {
                    let evicted = op.stats().evicted.load(Relaxed);
                    assert!(evicted > evicted1, "{workers} workers: nothing evicted");
                    evicted1 = evicted;
                }
                assert!(rows.iter().all(|r| (0.0..=1.0).contains(&r.score)));
            }
        }
    }

    #[test]
    fn rejects_bad_configs_naming_the_key() {
        let mut c = config(DetectorKind::Mad, 1.5);
        c.params.insert("window".into(), ParamValue::Int(1));
        c.params.insert("windw".into(), ParamValue::Int(10));
        c.metrics = vec!["cpu".into(), "cpu".into()];
        let errs = Detect::with_config(&c, "1s".parse().unwrap()).unwrap_err();
        let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let all = all.join("\n");
        for want in [
            "params.window: must be an integer from 3",
            "params.windw: `mad` has no parameter `windw`",
            "threshold: must be in [0, 1]",
            "metrics[1]: `cpu` is listed twice",
        ] {
            assert!(all.contains(want), "missing `{want}` in\n{all}");
        }
    }

    #[test]
    fn config_parses_from_toml_shape() {
        let c: DetectConfig = serde_json::from_str(
            r#"{"name":"anomalies","input":"points","metrics":["cpu"],"detector":"holt_winters","params":{"period":24,"alpha":0.2},"threshold":0.9,"raise_alerts":true}"#,
        )
        .unwrap();
        assert_eq!(c.detector, DetectorKind::HoltWinters);
        assert_eq!(c.params["period"], ParamValue::Int(24));
        assert!(Detect::with_config(&c, "1s".parse().unwrap()).is_ok());
        let bad = serde_json::from_str::<DetectConfig>(r#"{"name":"x","input":"p","detector":"lstm"}"#);
        assert!(bad.unwrap_err().to_string().contains("unknown variant `lstm`"));
    }

    /// A seeded series of one-minute points: a daily-ish cycle (96 points), noise, a few spikes
    /// and a level shift, so every detector has warmed up, calibrated and flagged by the end.
    fn spiky_series(seed: u64, n: usize) -> Vec<(i64, f64)> {
        let mut r = Lcg(seed);
        (0..n)
            .map(|i| {
                let mut v = 10.0 + 3.0 * (i as f64 * std::f64::consts::TAU / 96.0).sin() + (r.next() % 1000) as f64 / 1000.0;
                if r.next().is_multiple_of(250) {
                    v += 25.0;
                }
                if i > 2200 {
                    v += 6.0;
                }
                // Now and then two points share a timestamp, as points of two partitions can.
                let ts = i as i64 * 60_000 - (r.next().is_multiple_of(50) as i64) * 60_000;
                (ts, v)
            })
            .collect()
    }

    /// What a checkpoint does to a detector: bincode out and back.
    fn round_trip(d: &dyn Detector) -> Box<dyn Detector> {
        let bytes = bincode::serialize(d).expect("serialize");
        bincode::deserialize::<Box<dyn Detector>>(&bytes).expect("deserialize")
    }

    fn spec(kind: DetectorKind, params: &[(&str, i64)]) -> DetectorSpec {
        let params: Params = params.iter().map(|(k, v)| (k.to_string(), ParamValue::Int(*v))).collect();
        DetectorSpec::new(kind, &params).unwrap()
    }

    /// Every detector saved mid-stream and restored scores on bit for bit as the uninterrupted
    /// one: at point 1234, and in the warm-ups (the Holt-Winters buffer before the period is
    /// known, the forest before its window fills). Besides the defaults, a short-term average
    /// with a fast history (its weights rescale within the run), no cooldown, a configured
    /// season and a small MAD window with an odd stride, so every piece of state is live at
    /// some cut.
    #[test]
    fn every_detector_restored_from_a_checkpoint_scores_on_bit_for_bit() {
        const CUTS: [usize; 5] = [1, 9, 40, 300, 1234];
        let mut specs: Vec<(String, DetectorSpec)> = DetectorKind::ALL.into_iter().map(|k| (k.name().to_string(), spec(k, &[]))).collect();
        for k in DetectorKind::ALL {
            let cal = [("short", 4), ("long", 50), ("warmup", 20), ("cooldown", 0)];
            specs.push((format!("{k} (short 4, long 50, no cooldown)"), spec(k, &cal)));
        }
        specs.push(("holt_winters (period 96)".into(), spec(DetectorKind::HoltWinters, &[("period", 96)])));
        specs.push(("mad (window 50, stride 7)".into(), spec(DetectorKind::Mad, &[("window", 50), ("stride", 7)])));
        specs.push(("rcf (3 trees of 16, shingle 1)".into(), spec(DetectorKind::Rcf, &[("trees", 3), ("tree_size", 16), ("shingle", 1)])));
        let points = spiky_series(5, 3000);
        for (name, spec) in specs {
            let mut a = spec.build();
            let mut restored: Vec<(usize, Box<dyn Detector>)> = Vec::new();
            let (mut flagged, mut scored) = (0, 0);
            for (i, &(ts, v)) in points.iter().enumerate() {
                if CUTS.contains(&i) {
                    restored.push((i, round_trip(&*a)));
                }
                let want = a.score(ts, v);
                scored += (want.score > 0.0) as usize;
                flagged += (want.score > 0.9) as usize;
                for (cut, b) in &mut restored {
                    let got = b.score(ts, v);
                    assert!(
                        got.score.to_bits() == want.score.to_bits() && got.expected.to_bits() == want.expected.to_bits(),
                        "{name}, restored at point {cut}: point {i} scores {got:?}, the uninterrupted detector {want:?}"
                    );
                }
            }
            // The comparison means something only if the detector scored (and flagged) points.
            assert!(scored > 1000 && flagged > 3, "{name}: {scored} points scored, {flagged} flagged");
            let end = bincode::serialize(&*a).unwrap();
            for (cut, b) in &restored {
                assert!(bincode::serialize(&**b).unwrap() == end, "{name}, restored at point {cut}: the final states differ");
            }
        }
    }

    /// Runs detect on `workers` threads with checkpoints `c`, fed the way `run_metrics` feeds
    /// it (batches of 500 points per worker, the input's time behind the watermark). With
    /// `hurry_at`, the input is a checkpoint source that saves at every checkpoint it passes,
    /// and one is asked for once every worker has fed that share of its points: asked for
    /// earlier, it could fall before the data of a worker that has not advanced yet.
    fn run_checkpointed(
        workers: usize,
        points: Vec<Metric>,
        op: &Detect,
        c: &std::sync::Arc<alertflow_checkpoint::Checkpoints>,
        hurry_at: Option<f64>,
    ) -> Vec<AnomalyRow> {
        use std::sync::{Arc, Mutex};
        use timely::dataflow::InputHandle;
        use timely::dataflow::operators::{Input, Inspect};
        let (points, op, c) = (Arc::new(points), op.clone(), c.clone());
        let out = Arc::new(Mutex::new(Vec::new()));
        let out2 = out.clone();
        let past_share = Arc::new(std::sync::Barrier::new(workers));
        let guards = timely::execute(timely::Config::process(workers), move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            let mut input = InputHandle::<Time, CapacityContainerBuilder<Vec<Metric>>>::new();
            let out = out2.clone();
            let mut source = alertflow_checkpoint::building(Some(&c), || {
                worker.dataflow::<Time, _, _>(|scope| {
                    scope.input_from(&mut input).detect(&op).inspect(move |r| out.lock().expect("poisoned").push(r.clone()));
                });
                hurry_at.and_then(|_| alertflow_checkpoint::register_source("source:points", index))
            });
            let mine: Vec<&Metric> = points.iter().filter(|m| m.part as usize % peers == index).collect();
            let chunks = mine.len().div_ceil(500);
            let hurry_chunk = hurry_at.map(|f| (chunks as f64 * f) as usize);
            let mut max_seen = 0i64;
            for (k, chunk) in mine.chunks(500).enumerate() {
                // Every worker reaches its share before the checkpoint is asked for: it is
                // decided at or after the furthest worker's time, which then lies mid-stream.
                if hurry_chunk == Some(k) && past_share.wait().is_leader() {
                    c.hurry();
                }
                for m in chunk {
                    max_seen = max_seen.max(m.ts);
                    input.send((*m).clone());
                }
                let t = (max_seen - 6000).max(0);
                let t = (t - t % 1000) as Time;
                if t > *input.time() {
                    if let Some(s) = source.as_mut() {
                        // The replay below starts at the checkpoint's epoch: the position is moot.
                        s.advance(t);
                        if let Some(b) = s.pending().filter(|&b| t >= b) {
                            s.save(b, &());
                        }
                    }
                    input.advance_to(t);
                }
                worker.step();
            }
            // A source done early still saves a checkpoint the others decide later; the last
            // look after the dataflow ends sees even one decided while this worker was parked.
            let save_pending = |source: &mut Option<alertflow_checkpoint::Participant>| {
                if let Some(s) = source.as_mut()
                    && let Some(b) = s.pending()
                {
                    s.save(b, &());
                }
            };
            if let Some(s) = source.as_ref() {
                // Points went out at the input's time at the latest.
                s.source_done(*input.time());
            }
            drop(input);
            while worker.has_dataflows() {
                save_pending(&mut source);
                worker.step_or_park(None);
            }
            save_pending(&mut source);
        })
        .expect("timely failed to start");
        drop(guards.join());
        std::mem::take(&mut *out.lock().expect("poisoned"))
    }

    /// A run checkpointed halfway and a restarted run fed the points from the checkpoint's
    /// epoch on emit, together, exactly the rows of an uninterrupted run: the restored models
    /// carry on where the saved ones were (fresh ones would still be warming up).
    #[test]
    fn a_run_restored_from_a_checkpoint_emits_the_rows_of_an_uninterrupted_one() {
        use alertflow_checkpoint::{CheckpointConfig, Checkpoints};
        for workers in [1, 3] {
            let dir = std::env::temp_dir().join(format!("alertflow-detect-ckpt-{workers}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let cfg = CheckpointConfig {
                dir: dir.clone(),
                interval: 10_000,
                // Only the checkpoint asked for (`hurry`) is taken.
                min_wall: std::time::Duration::from_secs(3600),
                digest: "detect-test".into(),
                workers,
                processes: 1,
                fsync: false,
            };
            let op = Detect::with_config(&config(DetectorKind::Ensemble, 0.9), "1s".parse().unwrap()).unwrap();
            let points = random_points(7, 20_000);
            let mut want = oracle(&points, &op);
            want.sort_by_key(key);

            let c = Checkpoints::open(cfg.clone()).unwrap();
            let mut first = run_checkpointed(workers, points.clone(), &op, &c, Some(0.3));
            c.finish(false).unwrap();
            first.sort_by_key(key);
            assert!(first == want, "{workers} workers: the checkpointed run differs from the oracle");
            let at = c.committed();
            assert!(at > 0, "{workers} workers: no checkpoint committed: {:?}", c.error());

            let c = Checkpoints::open(cfg).unwrap();
            assert_eq!(c.resumed_at(), at);
            let replay: Vec<Metric> = points.iter().filter(|m| m.ts >= at as i64).cloned().collect();
            let mut rows = run_checkpointed(workers, replay.clone(), &op, &c, None);
            c.finish(true).unwrap();
            rows.sort_by_key(key);
            let after: Vec<AnomalyRow> = want.iter().filter(|r| r.ts >= at as i64).cloned().collect();
            let before = want.len() - after.len();
            // Where the checkpoint falls depends on how far each worker had got (its
            // published capability) when it was asked for; the teeth are the fresh-model
            // check below, these only rule out a checkpoint at either end.
            assert!(
                before > 0 && after.len() > 20,
                "{workers} workers: checkpoint at {at} leaves {before} rows before, {} after",
                after.len()
            );
            assert!(rows == after, "{workers} workers, resumed at {at}: {} rows, the uninterrupted run {}", rows.len(), after.len());
            let mut fresh = oracle(&replay, &op);
            fresh.sort_by_key(key);
            assert!(fresh != after, "fresh models on the replay give the same rows: the test proves nothing");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// Every detector: scores in [0, 1], never NaN, 0 during warm-up; a level shift and a spike
    /// after a quiet stretch score higher than any quiet point.
    #[test]
    fn every_detector_flags_a_spike_after_a_quiet_stretch() {
        for kind in DetectorKind::ALL {
            let spec = DetectorSpec::new(kind, &Params::new()).unwrap();
            let mut d = spec.build();
            let mut r = Lcg(11);
            let mut quiet_max = 0.0f64;
            let first = d.score(0, 10.0).score;
            assert_eq!(first, 0.0, "{kind}: warm-up scores 0");
            for i in 1..3000i64 {
                let v = 10.0 + (i as f64 / 20.0).sin() + (r.next() % 100) as f64 / 100.0;
                let s = d.score(i * 60_000, v).score;
                assert!((0.0..=1.0).contains(&s), "{kind}: {s}");
                if i > 1500 {
                    quiet_max = quiet_max.max(s);
                }
            }
            let spike = d.score(3000 * 60_000, 40.0);
            assert!(spike.score > quiet_max && spike.score > 0.99, "{kind}: spike {} vs quiet max {quiet_max}", spike.score);
            assert!(spike.expected > 5.0 && spike.expected < 15.0, "{kind}: expected {}", spike.expected);
            assert!(d.memory_bytes() > 0);
        }
    }
}
