//! The ensemble: several detectors score every point; the point's score is the highest of
//! theirs, its expected value that of the detector that scored highest. Each member is
//! calibrated on its own, so their scores are comparable and the maximum means "at least one
//! model of the series finds this point as unlikely as that".

use super::{Detector, Score};

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
        for m in &mut self.members {
            let s = m.score(ts, value);
            if s.score > best.score {
                best = s;
            }
        }
        best
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.members.iter().map(|m| m.memory_bytes() + 16).sum::<usize>()
    }
}
