//! EWMA z-score: the distance of a point from an exponentially weighted mean, in units of the
//! exponentially weighted standard deviation. Residuals are clipped at `clip` deviations
//! before they update the moments, so one outlier does not blind the detector for a window.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::calibrate::Calibrator;
use super::{Detector, SavedDetector, Score};

/// Parameters of [`ZScore`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZScoreSpec {
    /// Effective window (points): the weight of the newest point is `2 / (window + 1)`.
    pub window: usize,
    /// Residuals beyond this many deviations update the moments as if they were this far.
    pub clip: f64,
}

/// The state of one series: about 160 bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ZScore {
    alpha: f64,
    clip: f64,
    seen: u64,
    mean: f64,
    var: f64,
    cal: Calibrator,
}

impl ZScore {
    /// A fresh detector.
    pub fn new(spec: ZScoreSpec, cal: Calibrator) -> Self {
        ZScore { alpha: 2.0 / (spec.window as f64 + 1.0), clip: spec.clip, seen: 0, mean: 0.0, var: 0.0, cal }
    }
}

/// Points that only set the moments before scoring starts.
const MIN_POINTS: u64 = 10;

/// The smallest scale: a series that has been constant so far turns any change into a large,
/// finite surprise instead of a division by zero.
#[inline]
pub(crate) fn scale_floor(level: f64) -> f64 {
    1e-9 * level.abs().max(1.0)
}

impl Detector for ZScore {
    #[inline]
    fn score(&mut self, _ts: i64, value: f64) -> Score {
        self.seen += 1;
        if self.seen == 1 {
            self.mean = value;
            return Score { score: self.cal.score(0.0), expected: value };
        }
        let expected = self.mean;
        let sd = self.var.sqrt().max(scale_floor(self.mean));
        let d = value - self.mean;
        // The first points only set the moments: their deviations would teach the calibration
        // that huge surprises are normal.
        let score = if self.seen > MIN_POINTS { self.cal.score(d / sd) } else { 0.0 };
        // Warm-up: plain averages until the window has been seen once.
        let a = if (self.seen as f64) < 1.0 / self.alpha { 1.0 / self.seen as f64 } else { self.alpha };
        let dc = if self.seen > MIN_POINTS { d.clamp(-self.clip * sd, self.clip * sd) } else { d };
        self.mean += a * dc;
        self.var = (1.0 - a) * (self.var + a * dc * dc);
        Score { score, expected }
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }

    fn saved(&self) -> SavedDetector<'_> {
        SavedDetector::Zscore(Cow::Borrowed(self))
    }
}
