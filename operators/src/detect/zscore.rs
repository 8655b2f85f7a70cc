//! EWMA z-score: the distance of a point from an exponentially weighted mean, in units of the
//! exponentially weighted standard deviation. Residuals are clipped at `clip` deviations
//! before they update the moments, so one outlier does not blind the detector for a window.
//!
//! Clipping alone lets the deviation collapse on a series that is mostly flat with rare
//! spikes (a load balancer's error rate: zero, then a burst every few hours): each spike is
//! clipped to `clip` deviations while every flat point shrinks the variance, so once spikes
//! are rarer than one in `clip²` points the deviation decays towards zero and every later
//! spike scores as unheard of. So the deviation is floored at [`GUARD`] times the unclipped
//! mean absolute deviation, which spikes do keep up (linearly: a 100-deviation outlier moves
//! it by `100 α`, not `10,000 α`).

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

/// The state of one series: about 610 bytes (most of it the calibrator).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ZScore {
    alpha: f64,
    clip: f64,
    seen: u64,
    mean: f64,
    var: f64,
    /// Exponentially weighted mean absolute deviation, unclipped: the floor of the deviation.
    abs_dev: f64,
    cal: Calibrator,
}

impl ZScore {
    /// A fresh detector.
    pub fn new(spec: ZScoreSpec, cal: Calibrator) -> Self {
        ZScore { alpha: 2.0 / (spec.window as f64 + 1.0), clip: spec.clip, seen: 0, mean: 0.0, var: 0.0, abs_dev: 0.0, cal }
    }
}

/// Points that only set the moments before scoring starts.
const MIN_POINTS: u64 = 10;

/// The deviation's floor as a multiple of the unclipped mean absolute deviation (Holt-Winters
/// floors its error scale the same way). A normal series' deviation is 1.25 times its mean
/// absolute deviation, so the floor acts only once clipping has shrunk the deviation about
/// five-fold: on the NAB dev subset it changes the scores of the spiky and flat series alone,
/// the same for any factor from 0.05 to 0.4.
pub(crate) const GUARD: f64 = 0.25;

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
        let sd = self.var.sqrt().max(GUARD * self.abs_dev).max(scale_floor(self.mean));
        let d = value - self.mean;
        // The first points only set the moments: their deviations would teach the calibration
        // that huge surprises are normal.
        let score = if self.seen > MIN_POINTS { self.cal.score(d / sd) } else { 0.0 };
        // Warm-up: plain averages until the window has been seen once.
        let a = if (self.seen as f64) < 1.0 / self.alpha { 1.0 / self.seen as f64 } else { self.alpha };
        let dc = if self.seen > MIN_POINTS { d.clamp(-self.clip * sd, self.clip * sd) } else { d };
        self.mean += a * dc;
        self.var = (1.0 - a) * (self.var + a * dc * dc);
        self.abs_dev += a * (d.abs() - self.abs_dev);
        Score { score, expected }
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }

    fn saved(&self) -> SavedDetector<'_> {
        SavedDetector::Zscore(Cow::Borrowed(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::calibrate::CalibrationSpec;

    #[test]
    fn rare_spikes_do_not_collapse_the_deviation() {
        // Zero, with a spike of 1 every 150 points (rarer than one in clip² = 16): clipped
        // spikes cannot keep the variance up, the unclipped mean absolute deviation can.
        let cal = Calibrator::new(CalibrationSpec { short: 1, long: 10_000, warmup: 100, cooldown: 0, age_cap: 0 });
        let mut z = ZScore::new(ZScoreSpec { window: 1000, clip: 4.0 }, cal);
        let mut spikes = Vec::new();
        for i in 0..20_000i64 {
            let s = z.score(i, if i % 150 == 0 { 1.0 } else { 0.0 });
            if i % 150 == 0 {
                spikes.push(s.score);
            }
        }
        assert!(GUARD * z.abs_dev > z.var.sqrt(), "the floor holds the deviation up ({} vs {})", GUARD * z.abs_dev, z.var.sqrt());
        // The mean absolute deviation is about 1/150 (a spike is 1 off): the floor keeps a
        // spike about 600 deviations off, not 10⁹.
        let sd = GUARD * z.abs_dev;
        assert!((0.001..0.003).contains(&sd), "deviation {sd}");
        // So a spike like the hundred before it scores like one in 150 points (1 − 1/256 with
        // the interpolation), not as unheard of (1 − 10⁻¹⁵ without the floor).
        for s in &spikes[spikes.len() - 10..] {
            assert!((0.99..0.998).contains(s), "a late spike scores {s}");
        }
    }
}
