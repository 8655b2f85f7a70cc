//! Rolling median / MAD: the distance of a point from the median of the last `window` points,
//! in units of their median absolute deviation (× 1.4826, the normal-consistent factor).
//!
//! The median and MAD are recomputed every `stride` points (two selections over the window,
//! O(window)), not at every point: over a window of hundreds of points they move by a
//! fraction of a point's worth in between, and recomputing at every point would cost O(window)
//! per point. State: the window of values as `f32` plus a few numbers.

use std::borrow::Cow;
use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use super::calibrate::Calibrator;
use super::zscore::scale_floor;
use super::{Detector, SavedDetector, Score};

/// Parameters of [`Mad`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MadSpec {
    /// Points in the rolling window.
    pub window: usize,
    /// Points between recomputations of the median and MAD.
    pub stride: usize,
}

/// The state of one series: `4 × window` bytes plus about 630 (most of it the calibrator).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mad {
    spec: MadSpec,
    ring: Vec<f32>,
    idx: usize,
    since: usize,
    median: f64,
    scale: f64,
    cal: Calibrator,
}

/// Points in the window before scoring starts.
const MIN_POINTS: usize = 30;

thread_local! {
    /// Scratch space for the selections, shared by every series of a worker thread.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl Mad {
    /// A fresh detector.
    pub fn new(spec: MadSpec, cal: Calibrator) -> Self {
        Mad { spec, ring: Vec::with_capacity(spec.window.min(64)), idx: 0, since: 0, median: 0.0, scale: 0.0, cal }
    }

    fn refresh(&mut self) {
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            s.clear();
            s.extend_from_slice(&self.ring);
            let (med, scale) = median_mad(&mut s);
            self.median = med;
            self.scale = scale;
        });
    }
}

/// The median and robust scale of `v` (reordered): 1.4826 × MAD, or when more than half the
/// values equal the median, 1.2533 × the mean absolute deviation (so a mostly constant series
/// still has a scale from its rare changes).
pub(crate) fn median_mad(v: &mut [f32]) -> (f64, f64) {
    let n = v.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mid = n / 2;
    let med = *v.select_nth_unstable_by(mid, f32::total_cmp).1 as f64;
    let mut sum_abs = 0.0f64;
    for x in v.iter_mut() {
        let d = (*x as f64 - med).abs();
        sum_abs += d;
        *x = d as f32;
    }
    let mad = *v.select_nth_unstable_by(mid, f32::total_cmp).1 as f64;
    let scale = if mad > 0.0 { 1.4826 * mad } else { 1.2533 * sum_abs / n as f64 };
    (med, scale)
}

impl Detector for Mad {
    #[inline]
    fn score(&mut self, _ts: i64, value: f64) -> Score {
        let w = self.spec.window;
        if self.ring.len() < w {
            self.ring.push(value as f32);
        } else {
            // Judge the point against the window before it enters.
            let z = (value - self.median) / self.scale.max(scale_floor(self.median));
            let expected = self.median;
            let score = self.cal.score(z);
            self.ring[self.idx] = value as f32;
            self.idx = if self.idx + 1 == w { 0 } else { self.idx + 1 };
            self.since += 1;
            if self.since >= self.spec.stride {
                self.since = 0;
                self.refresh();
            }
            return Score { score, expected };
        }
        // Filling: judged against what there is once that is at least `MIN_POINTS` (a median
        // and MAD of a handful of points would teach the calibration that huge surprises are
        // normal), refreshed often while the window is young.
        let n = self.ring.len();
        let expected = if n > 1 { self.median } else { value };
        let score =
            if n > MIN_POINTS.min(w) { self.cal.score((value - self.median) / self.scale.max(scale_floor(self.median))) } else { 0.0 };
        if n < 32 || n.is_multiple_of(self.spec.stride.min(n / 8).max(1)) || n == w {
            self.refresh();
        }
        Score { score, expected }
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.ring.capacity() * 4
    }

    fn saved(&self) -> SavedDetector<'_> {
        SavedDetector::Mad(Cow::Borrowed(self))
    }
}
