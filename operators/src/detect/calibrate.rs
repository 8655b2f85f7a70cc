//! Calibration: a detector's raw surprise (|residual| in units of its own scale) becomes a score
//! in [0, 1] that means the same on every series, so one threshold fits a whole fleet.
//!
//! Raw surprises are heavy-tailed, and how heavy differs from series to series (a bursty
//! series sees 6-sigma residuals every day, a smooth one never). So the score is a tail
//! probability against the series' *own* recent history of surprises: `u = ln(1 + z)`
//! (averaged over the last `short` points) goes into an exponentially decaying histogram
//! (horizon about `long` points); the score of a point is `1 − P(U ≥ u)` under that history.
//! Beyond the highest surprise seen, the tail is extrapolated exponentially in `u` (a Pareto
//! tail in `z`) with the mean excess of the history's top decile as its scale, so a point far
//! beyond anything recent still ranks above one just beyond. A surprise the series produced
//! recently is therefore not news: repeated bursts score lower than the first, the way an
//! alert that is already firing is not raised again.
//!
//! **Age**: a long series produces rare surprises by sheer length — at one tail probability
//! `q`, a series of 16,000 points flags four times as many points as one of 4,000, while its
//! anomalies are no more frequent. So the score is `(1 − q)^f`, `f` the series' age in units
//! of [`AGE_REF`] points (at least 1, at most `age_cap / AGE_REF`): the chance that none of
//! `f` independent draws is this surprising (Šidák's correction; ≈ `1 − q·f` where it
//! matters). A surprise must therefore grow rarer as its series grows older to score as
//! high, and a series' flags grow with its distinct episodes, not with its length. Past
//! `age_cap` the factor stays put, so a series running for months still flags.
//!
//! Optional **cooldown**: a score that does not beat the highest score of the last `cooldown`
//! points is halved.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Calibrator settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationSpec {
    /// Points averaged into the short-term surprise.
    pub short: usize,
    /// Horizon (points) of the history.
    pub long: usize,
    /// Points scored 0 at the start while the history fills.
    pub warmup: usize,
    /// Points during which a score must beat the recent peak to count fully (0: off).
    pub cooldown: usize,
    /// The age (points) past which the age correction stops growing (0: no age correction).
    pub age_cap: usize,
}

/// The age (the default warm-up) up to which a score is `1 − q`; later it is
/// `(1 − q)^(age / AGE_REF)`. With the default threshold of 0.999 a point must be rarer than
/// one in 1,000 at age 100, one in 100,000 at age 10,000, one in a million from the default
/// `age_cap` of 100,000 points on.
pub const AGE_REF: f64 = 100.0;

/// Longest short-term average.
pub const MAX_SHORT: usize = 16;
/// Histogram bins over `u = ln(1 + z)`, each `BIN` wide: `u` up to 12 (`z` ≈ 160,000).
const BINS: usize = 96;
const BIN: f64 = 0.125;

/// The calibration state of one series: about 530 bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Calibrator {
    spec: CalibrationSpec,
    /// Growth of a new point's weight (`1 / (1 − 1/long)`): old weights decay relatively.
    growth: f64,
    weight: f64,
    total: f64,
    #[serde(serialize_with = "save_hist", deserialize_with = "restore_hist")]
    hist: [f32; BINS],
    /// The highest bin ever filled: the tail sums stop there.
    top: usize,
    seen: u64,
    ring: [f32; MAX_SHORT],
    idx: usize,
    sum: f64,
    /// The highest score of the last `cooldown` points and its age.
    peak: f64,
    peak_age: usize,
}

// serde derives arrays only up to 32 elements: the histogram goes as a sequence.
fn save_hist<S: Serializer>(hist: &[f32; BINS], s: S) -> Result<S::Ok, S::Error> {
    hist.as_slice().serialize(s)
}

fn restore_hist<'de, D: Deserializer<'de>>(d: D) -> Result<[f32; BINS], D::Error> {
    let v = Vec::<f32>::deserialize(d)?;
    let n = v.len();
    v.try_into().map_err(|_| serde::de::Error::invalid_length(n, &format!("{BINS} histogram bins").as_str()))
}

impl Calibrator {
    /// A fresh calibrator.
    pub fn new(spec: CalibrationSpec) -> Self {
        let short = spec.short.clamp(1, MAX_SHORT);
        Calibrator {
            spec: CalibrationSpec { short, ..spec },
            growth: 1.0 / (1.0 - 1.0 / spec.long.max(2) as f64),
            weight: 1.0,
            total: 0.0,
            hist: [0.0; BINS],
            top: 0,
            seen: 0,
            ring: [0.0; MAX_SHORT],
            idx: 0,
            sum: 0.0,
            peak: 0.0,
            peak_age: 0,
        }
    }

    /// The score of a point whose raw surprise is `z` (its sign is ignored; NaN counts as
    /// huge).
    #[inline]
    pub fn score(&mut self, z: f64) -> f64 {
        let z = if z.is_nan() { 1e12 } else { z.abs().min(1e12) };
        let k = self.spec.short;
        let u = if k == 1 {
            z.ln_1p()
        } else {
            let u = z.ln_1p();
            self.sum += u - self.ring[self.idx] as f64;
            self.ring[self.idx] = u as f32;
            self.idx = if self.idx + 1 == k { 0 } else { self.idx + 1 };
            (self.sum / (self.seen as usize + 1).min(k) as f64).max(0.0)
        };
        self.seen += 1;
        // f32 bins against an f64 total can overshoot by a rounding error: clamp.
        let s = if (self.seen as usize) <= self.spec.warmup.max(1) {
            0.0
        } else {
            (self.age_factor() * (-self.tail(u).min(1.0)).ln_1p()).exp().clamp(0.0, 1.0)
        };
        self.learn(u);
        self.novel(s)
    }

    /// The power of `1 − q`: `age / AGE_REF`, from 1 (a young series' scores are never raised
    /// by its youth) to `age_cap / AGE_REF`.
    #[inline]
    fn age_factor(&self) -> f64 {
        if self.spec.age_cap == 0 {
            return 1.0;
        }
        (self.seen.min(self.spec.age_cap as u64) as f64 / AGE_REF).max(1.0)
    }

    /// `P(U ≥ u)` under the history.
    #[inline]
    fn tail(&self, u: f64) -> f64 {
        if self.total <= 0.0 {
            return 1.0;
        }
        let pos = u / BIN;
        let b = (pos as usize).min(BINS - 1);
        let frac = (pos - b as f64).min(1.0);
        let mut above = 0.0f64;
        let mut top = 0;
        for j in b + 1..=self.top.max(b) {
            let h = self.hist[j];
            above += h as f64;
            if h > 0.0 {
                top = j;
            }
        }
        if above > 0.0 {
            return (above + self.hist[b] as f64 * (1.0 - frac)) / self.total;
        }
        // At or past the highest occupied bin: interpolate, floored by the exponential tail.
        let top = if self.hist[b] > 0.0 { b } else { (0..b).rev().find(|&j| self.hist[j] > 0.0).unwrap_or(top) };
        let h_top = self.hist[top] as f64;
        let inside = if top == b { h_top * (1.0 - frac) } else { 0.0 };
        let ext = h_top * (-(u - top as f64 * BIN).max(0.0) / self.excess_scale()).exp();
        inside.max(ext) / self.total
    }

    /// The mean excess of the history's top decile over the decile's lower edge (at least half
    /// a bin): the scale of the exponential tail.
    fn excess_scale(&self) -> f64 {
        let limit = 0.1 * self.total;
        let (mut w, mut wx) = (0.0f64, 0.0f64);
        let mut edge = 0.0;
        for j in (0..=self.top).rev() {
            let h = self.hist[j] as f64;
            if h == 0.0 {
                continue;
            }
            edge = j as f64 * BIN;
            w += h;
            wx += h * (j as f64 + 0.5) * BIN;
            if w >= limit {
                break;
            }
        }
        if w <= 0.0 { BIN } else { (wx / w - edge).max(BIN * 0.5) }
    }

    #[inline]
    fn learn(&mut self, u: f64) {
        let b = ((u / BIN) as usize).min(BINS - 1);
        self.hist[b] += self.weight as f32;
        self.top = self.top.max(b);
        self.total += self.weight;
        self.weight *= self.growth;
        if self.weight > 1e20 {
            // Rescale so the newest weight is 1 again (f32 bins keep ~7 digits).
            let f = 1.0 / self.weight;
            for h in &mut self.hist {
                *h = (*h as f64 * f) as f32;
            }
            self.total *= f;
            self.weight = 1.0;
        }
    }

    /// Halves a score that does not beat the peak of the last `cooldown` points.
    #[inline]
    fn novel(&mut self, s: f64) -> f64 {
        if self.spec.cooldown == 0 {
            return s;
        }
        self.peak_age += 1;
        if self.peak_age > self.spec.cooldown {
            self.peak = 0.0;
        }
        if s > self.peak {
            self.peak = s;
            self.peak_age = 0;
            s
        } else {
            s * 0.5
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_scores_high_and_noise_does_not() {
        let spec = CalibrationSpec { short: 1, long: 500, warmup: 50, cooldown: 0, age_cap: 0 };
        let mut c = Calibrator::new(spec);
        let mut r = crate::testing::Lcg(7);
        let mut high = 0;
        for _ in 0..5000 {
            let z = (r.next() % 1000) as f64 / 500.0; // |z| up to 2
            let s = c.score(z);
            assert!((0.0..=1.0).contains(&s));
            high += (s > 0.999) as usize;
        }
        assert!(high < 10, "{high} noise points over 0.999");
        assert!(c.score(40.0) > 0.999);
    }

    #[test]
    fn an_older_series_needs_a_rarer_surprise_to_score_as_high() {
        // The same history (noise up to z = 2) scored with and without the age factor: past
        // AGE_REF points the tail probability grows with the age, until `age_cap`.
        let spec = CalibrationSpec { short: 1, long: 500, warmup: 50, cooldown: 0, age_cap: 0 };
        let aged = CalibrationSpec { age_cap: 2_000, ..spec };
        let (mut plain, mut old) = (Calibrator::new(spec), Calibrator::new(aged));
        let mut r = crate::testing::Lcg(11);
        for _ in 0..AGE_REF as usize {
            let z = (r.next() % 1000) as f64 / 500.0;
            assert_eq!(plain.score(z), old.score(z), "no age factor up to AGE_REF points");
        }
        // Age 1,000 and 3,000 (past the cap of 2,000): (1 − q)^10 and (1 − q)^20.
        for (age, factor) in [(1_000usize, 10.0), (3_000, 20.0)] {
            let mut r2 = crate::testing::Lcg(age as u64);
            while (old.seen as usize) < age - 1 {
                let z = (r2.next() % 1000) as f64 / 500.0;
                plain.score(z);
                old.score(z);
            }
            // Šidák: ln(score) is `factor` times ln(1 − q).
            let (p, o) = (plain.clone().score(3.0), old.clone().score(3.0));
            assert!(p < 1.0 && (o.ln() / p.ln() - factor).abs() < 1e-6, "age {age}: score {p} became {o}, not ^{factor}");
        }
    }
}
