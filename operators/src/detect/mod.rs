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

use std::fmt;

use serde::{Deserialize, Serialize};

use self::calibrate::{CalibrationSpec, Calibrator};
use self::holt_winters::{HoltWinters, HoltWintersSpec};
use self::mad::{Mad, MadSpec};
pub use self::params::{ParamReader, ParamValue, Params};
use self::rcf::{Rcf, RcfSpec};
use self::zscore::{ZScore, ZScoreSpec};
use crate::ConfigError;

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
    /// The best default: several calibrated detectors, highest score wins.
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
            DetectorKind::Ensemble => "holt_winters and mad together, highest calibrated score wins",
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
            long: r.int("long", 4000, 2, 1_000_000),
            warmup: r.int("warmup", 100, 0, 1_000_000),
            cooldown: r.int("cooldown", 100, 0, 1_000_000),
        };
        let uses = |k: DetectorKind| kind == k || (kind == DetectorKind::Ensemble && matches!(k, DetectorKind::Mad | DetectorKind::HoltWinters));
        let mut zscore = ZScoreSpec { window: 500, clip: 4.0 };
        if uses(DetectorKind::Zscore) {
            zscore.window = r.int("window", zscore.window, 2, 1_000_000);
            zscore.clip = r.float("clip", zscore.clip, 1.0, 1e6);
        }
        let mut mad = MadSpec { window: 500, stride: 50 };
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
                Box::new(Mad::new(self.mad, cal)),
            ])),
        }
    }
}
