//! The ensemble: its members (by default Holt-Winters, rolling MAD and the EWMA z-score) score
//! every point, each calibrated on its own; the point's score combines the two highest as the
//! geometric mean of their tail probabilities, `1 − √((1 − s₁)(1 − s₂))`, and its expected value
//! is that of the detector that scored highest. One model's misfit (a forecast thrown off by a
//! phase shift, a median lagging a ramp) then does not flag a point on its own: two models must
//! find it unlikely. On the NAB dev subset this beat the maximum, the mean and the
//! second-highest score (EVALUATION.md).

use super::{Detector, SavedDetector, Score};

/// The state of one series: the members'.
pub struct Ensemble {
    members: Vec<Box<dyn Detector>>,
}

impl Ensemble {
    /// An ensemble of `members` (at least one).
    pub fn new(members: Vec<Box<dyn Detector>>) -> Self {
        Ensemble { members }
    }
}

impl Detector for Ensemble {
    #[inline]
    fn score(&mut self, ts: i64, value: f64) -> Score {
        let mut best = Score { score: -1.0, expected: value };
        let mut second = -1.0f64;
        for m in &mut self.members {
            let s = m.score(ts, value);
            if s.score > best.score {
                second = best.score;
                best = s;
            } else if s.score > second {
                second = s.score;
            }
        }
        if second >= 0.0 {
            best.score = (1.0 - ((1.0 - best.score) * (1.0 - second)).sqrt()).clamp(0.0, 1.0);
        }
        best
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.members.iter().map(|m| m.memory_bytes() + 16).sum::<usize>()
    }

    fn saved(&self) -> SavedDetector<'_> {
        SavedDetector::Ensemble(self.members.iter().map(|m| m.saved()).collect())
    }
}
