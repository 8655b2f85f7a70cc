//! Holt-Winters with additive seasonality: level, trend and one seasonal offset per phase,
//! each exponentially smoothed; the surprise is the one-step forecast error in units of its
//! smoothed absolute size.
//!
//! The error scale is the mean of an overall and a per-phase smoothed absolute error, so a
//! series' daily rhythm of volatility is expected too. Both average errors clipped at 4
//! scales (a spike must not drag the scale up with it), and on a series that is flat but for
//! rare spikes that lets the scale decay towards zero, as the z-score's variance would: so
//! the scale is floored at [`GUARD`] times the unclipped mean absolute error over about 1,000
//! points.
//!
//! The period is configured or detected once from a warm-up buffer: the candidates are the
//! daily and weekly cycles implied by the median sampling interval of the timestamps and the
//! strongest autocorrelation peak of the values; the candidate with the highest
//! autocorrelation wins if it exceeds 0.3 (else the series is treated as non-seasonal). The
//! warm-up points are then replayed through the model (scored, so the calibration settles too).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::calibrate::Calibrator;
use super::zscore::{GUARD, scale_floor};
use super::{Detector, SavedDetector, Score};

/// Parameters of [`HoltWinters`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HoltWintersSpec {
    /// Season length in points; 0 = detect.
    pub period: usize,
    /// Longest period considered (and allowed).
    pub max_period: usize,
    /// Level smoothing.
    pub alpha: f64,
    /// Trend smoothing.
    pub beta: f64,
    /// Seasonal smoothing.
    pub gamma: f64,
    /// Most points buffered to detect the period (and to initialise the model): fewer when
    /// the sampling interval shows two days fit in fewer.
    pub warmup: usize,
}

/// The state of one series: `8 × period` bytes plus about 750 (plus the warm-up buffer, `12
/// × warmup` bytes, until the period is known).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HoltWinters {
    spec: HoltWintersSpec,
    buffer: Vec<(i64, f64)>,
    need: usize,
    ready: bool,
    level: f64,
    trend: f64,
    season: Vec<f32>,
    /// Smoothed absolute error per phase: how noisy the series is at that point of its cycle.
    season_err: Vec<f32>,
    phase: usize,
    abs_err: f64,
    /// Smoothed absolute error, unclipped and slower (the floor of the error scale).
    raw_err: f64,
    seen: u64,
    cal: Calibrator,
}

impl HoltWinters {
    /// A fresh detector.
    pub fn new(spec: HoltWintersSpec, cal: Calibrator) -> Self {
        HoltWinters {
            spec,
            buffer: Vec::new(),
            need: spec.warmup,
            ready: false,
            level: 0.0,
            trend: 0.0,
            season: Vec::new(),
            season_err: Vec::new(),
            phase: 0,
            abs_err: 0.0,
            raw_err: 0.0,
            seen: 0,
            cal,
        }
    }

    /// The season length in use (1: none), once known.
    pub fn period(&self) -> Option<usize> {
        self.ready.then_some(self.season.len())
    }

    fn start(&mut self) {
        let values: Vec<f64> = self.buffer.iter().map(|p| p.1).collect();
        let period = if self.spec.period > 0 { self.spec.period } else { detect_period(&self.buffer, &values, self.spec.max_period) };
        let p = period.max(1);
        let n = values.len();
        let cycles = (n / p).max(1);
        let first: f64 = values[..p.min(n)].iter().sum::<f64>() / p.min(n) as f64;
        self.level = first;
        self.trend = 0.0;
        self.season = vec![0.0; p];
        if p > 1 {
            for c in 0..cycles {
                let chunk = &values[c * p..((c + 1) * p).min(n)];
                let mean = chunk.iter().sum::<f64>() / chunk.len() as f64;
                for (i, v) in chunk.iter().enumerate() {
                    self.season[i] += ((v - mean) / cycles as f64) as f32;
                }
            }
        }
        self.ready = true;
        self.abs_err = values.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / n.max(2) as f64;
        self.season_err = vec![self.abs_err as f32; p];
        self.raw_err = self.abs_err;
        let buffered = std::mem::take(&mut self.buffer);
        for (_, v) in buffered {
            self.step(v);
        }
    }

    #[inline]
    fn step(&mut self, value: f64) -> Score {
        let s = self.season[self.phase] as f64;
        let expected = self.level + self.trend + s;
        let err = value - expected;
        // The error scale is half seasonal: a series is often noisier at some hours than
        // at others (traffic by day, tweets by day), and a night-time spike should count more.
        let local = 0.5 * (self.season_err[self.phase] as f64 + self.abs_err);
        let scale = (1.2533 * local).max(GUARD * self.raw_err).max(scale_floor(self.level));
        let score = self.cal.score(err / scale);
        let HoltWintersSpec { alpha, beta, gamma, .. } = self.spec;
        // Outliers update the state as if they were 4 scales off, so a spike does not drag the
        // level and season with it.
        let errc = err.clamp(-4.0 * scale, 4.0 * scale);
        let vc = expected + errc;
        let prev_level = self.level;
        self.level = alpha * (vc - s) + (1.0 - alpha) * (self.level + self.trend);
        self.trend = beta * (self.level - prev_level) + (1.0 - beta) * self.trend;
        if self.season.len() > 1 {
            self.season[self.phase] = (gamma * (vc - self.level) + (1.0 - gamma) * s) as f32;
        }
        let se = &mut self.season_err[self.phase];
        *se += (gamma * (errc.abs() - *se as f64)) as f32;
        self.phase = if self.phase + 1 == self.season.len() { 0 } else { self.phase + 1 };
        self.abs_err += 0.02 * (errc.abs() - self.abs_err);
        self.raw_err += RAW_RATE * (err.abs() - self.raw_err);
        Score { score, expected }
    }
}

/// The weight of a new error in the unclipped mean absolute error: a memory of about 1,000
/// points, like the z-score's and MAD's windows, so the floor outlasts the gaps between spikes
/// (the scale's own 0.02, about 50 points, would not).
const RAW_RATE: f64 = 0.002;

/// The median positive interval between consecutive timestamps (0: none).
fn median_step(points: &[(i64, f64)]) -> i64 {
    let mut deltas: Vec<i64> = points.windows(2).map(|w| w[1].0 - w[0].0).filter(|d| *d > 0).collect();
    if deltas.is_empty() {
        return 0;
    }
    let mid = deltas.len() / 2;
    *deltas.select_nth_unstable(mid).1
}

/// The season length (1: none) of a warm-up buffer.
fn detect_period(points: &[(i64, f64)], values: &[f64], max_period: usize) -> usize {
    let n = values.len();
    let mut candidates = Vec::new();
    let step = median_step(points);
    if step > 0 {
        for cycle in [86_400_000i64, 7 * 86_400_000] {
            let p = ((cycle as f64) / step as f64).round() as usize;
            if p >= 2 && p <= max_period && 2 * p <= n {
                candidates.push(p);
            }
        }
    }
    let acf = |lag: usize| -> f64 {
        let m = values.iter().sum::<f64>() / n as f64;
        let var: f64 = values.iter().map(|v| (v - m) * (v - m)).sum();
        if var <= 0.0 {
            return 0.0;
        }
        let cov: f64 = (0..n - lag).map(|i| (values[i] - m) * (values[i + lag] - m)).sum();
        cov / var
    };
    // The strongest autocorrelation peak past the first dip below zero.
    let max_lag = (n / 2).min(max_period);
    let mut dipped = false;
    let mut best: Option<(usize, f64)> = None;
    for lag in 2..=max_lag {
        let r = acf(lag);
        if r < 0.0 {
            dipped = true;
        } else if dipped && best.is_none_or(|(_, b)| r > b) {
            best = Some((lag, r));
        }
    }
    if let Some((lag, _)) = best {
        candidates.push(lag);
    }
    candidates.into_iter().map(|p| (p, acf(p))).filter(|(_, r)| *r > 0.3).max_by(|a, b| a.1.total_cmp(&b.1)).map_or(1, |(p, _)| p)
}

impl Detector for HoltWinters {
    #[inline]
    fn score(&mut self, ts: i64, value: f64) -> Score {
        self.seen += 1;
        if !self.ready {
            self.buffer.push((ts, value));
            if self.buffer.len() == 16 && self.spec.period == 0 {
                // Two days of points (and at least 100) are enough to see a daily cycle.
                let step = median_step(&self.buffer).max(1);
                let two_days = (2 * 86_400_000 / step) as usize + 8;
                self.need = self.spec.warmup.min(two_days.max(100));
            } else if self.buffer.len() == 16 {
                self.need = self.spec.warmup.max(2 * self.spec.period);
            }
            if self.buffer.len() >= self.need {
                self.start();
            }
            return Score { score: 0.0, expected: value };
        }
        self.step(value)
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + (self.season.capacity() + self.season_err.capacity()) * 4 + self.buffer.capacity() * 16
    }

    fn saved(&self) -> SavedDetector<'_> {
        SavedDetector::HoltWinters(Cow::Borrowed(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::calibrate::CalibrationSpec;

    #[test]
    fn rare_spikes_do_not_collapse_the_error_scale() {
        // Zero, with a spike of 0.5 – 3 after gaps of 50 – 250 points, no season: the clipped
        // errors cannot hold the scale up, the unclipped ones can.
        let cal = Calibrator::new(CalibrationSpec { short: 1, long: 10_000, warmup: 100, cooldown: 0, age_cap: 0 });
        let spec = HoltWintersSpec { period: 1, max_period: 1024, alpha: 0.1, beta: 0.005, gamma: 0.1, warmup: 600 };
        let mut hw = HoltWinters::new(spec, cal);
        let mut r = crate::testing::Lcg(5);
        let (mut i, mut spikes) = (0i64, Vec::new());
        while i < 20_000 {
            let gap = 50 + (r.next() % 201) as i64;
            for _ in 0..gap {
                hw.score(i * 300_000, 0.0);
                i += 1;
            }
            let s = hw.score(i * 300_000, 0.5 + (r.next() % 1000) as f64 / 400.0);
            spikes.push(s.score);
            i += 1;
        }
        let local = 1.2533 * 0.5 * (hw.season_err[0] as f64 + hw.abs_err);
        assert!(GUARD * hw.raw_err > local, "the floor {} holds the scale up ({local})", GUARD * hw.raw_err);
        assert!(GUARD * hw.raw_err > 1e-3, "the floor {} holds", GUARD * hw.raw_err);
        // A spike like the hundred before it is not unheard of (0.993 – 0.9992 here; without
        // the floor the scale is 10⁻⁹ and every spike scores 1).
        for s in &spikes[spikes.len() - 10..] {
            assert!(*s < 0.9995, "a late spike scores {s}");
        }
    }
}
