//! A mergeable quantile sketch with a relative-error guarantee (the DDSketch construction of
//! Masson, Rim and Lee, VLDB 2019).
//!
//! Values are counted in logarithmic bins: bin `i` holds the values in `(γ^(i-1), γ^i]` with
//! `γ = (1 + α) / (1 − α)`, and reports `2γ^i / (γ + 1)`, which is within a factor `1 ± α` of
//! every value of the bin. So the quantile it returns is within **relative error α = 1 %** of
//! the exact quantile by the nearest-rank method, `sorted[⌈q·n⌉ − 1]` (as `quantile_disc` in
//! DuckDB and `percentile_disc` in PostgreSQL) — for any input distribution, any number of
//! merges, and in any merge order (the bins are integer counts, so merging is exact and
//! commutative; results are bit-identical whatever the worker count).
//!
//! Values whose magnitude is below [`MIN_MAGNITUDE`] are counted as 0 (and reported as 0).
//! The bins of a sketch cover only the range of values it has seen, in one dense array per
//! sign: a series whose values stay within a factor of 10 needs about 115 bins (≈ 1 KiB).

use serde::{Deserialize, Serialize};

/// The relative accuracy of every quantile.
pub const RELATIVE_ERROR: f64 = 0.01;
/// Magnitudes below this count as zero.
pub const MIN_MAGNITUDE: f64 = 1e-9;

const GAMMA: f64 = (1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR);

/// `1 / ln γ`, so a bin index is one `ln` and one multiplication.
#[inline]
fn inv_ln_gamma() -> f64 {
    1.0 / GAMMA.ln()
}

#[inline]
fn bin_of(magnitude: f64) -> i32 {
    // Magnitudes are ≥ MIN_MAGNITUDE (bin ≥ −1046) and ≤ f64::MAX (bin ≤ 35_000): an i32 holds
    // them all.
    (magnitude.ln() * inv_ln_gamma()).ceil() as i32
}

#[inline]
fn value_of(bin: i32) -> f64 {
    2.0 * GAMMA.powi(bin) / (GAMMA + 1.0)
}

/// The counts of one sign: bin `offset + k` has `counts[k]` values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Store {
    offset: i32,
    counts: Vec<u64>,
}

impl Store {
    #[inline]
    fn add(&mut self, bin: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = bin;
            self.counts.push(n);
            return;
        }
        if bin < self.offset {
            // Grow downwards: shift the counts up.
            let grow = (self.offset - bin) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = bin;
        }
        let k = (bin - self.offset) as usize;
        if k >= self.counts.len() {
            self.counts.resize(k + 1, 0);
        }
        self.counts[k] += n;
    }

    /// Adds every count of `o`. The union of both ranges is made once and the counts added
    /// slice to slice: hopping windows merge every pane's sketch into each of their windows,
    /// and adding `o`'s bins one `add` at a time (a bounds check and a possible grow per bin)
    /// was a fifth of a hopping window's time with quantiles.
    fn merge(&mut self, o: &Store) {
        if o.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            self.offset = o.offset;
            self.counts.extend_from_slice(&o.counts);
            return;
        }
        if o.offset < self.offset {
            let grow = (self.offset - o.offset) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = o.offset;
        }
        let start = (o.offset - self.offset) as usize;
        let end = start + o.counts.len();
        if self.counts.len() < end {
            self.counts.resize(end, 0);
        }
        for (a, b) in self.counts[start..end].iter_mut().zip(&o.counts) {
            *a += b;
        }
    }

    fn bytes(&self) -> usize {
        self.counts.capacity() * 8
    }
}

/// A quantile sketch (see the module docs for its guarantee).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    pos: Store,
    neg: Store,
    zero: u64,
    count: u64,
}

impl Sketch {
    /// An empty sketch.
    pub fn new() -> Sketch {
        Sketch::default()
    }

    /// Counts one value. NaN counts as zero (decoders reject it before it gets here).
    #[inline]
    pub fn add(&mut self, v: f64) {
        self.count += 1;
        if v > MIN_MAGNITUDE {
            self.pos.add(bin_of(v), 1);
        } else if v < -MIN_MAGNITUDE {
            self.neg.add(bin_of(-v), 1);
        } else {
            self.zero += 1;
        }
    }

    /// Adds every value of another sketch.
    pub fn merge(&mut self, o: &Sketch) {
        self.pos.merge(&o.pos);
        self.neg.merge(&o.neg);
        self.zero += o.zero;
        self.count += o.count;
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q`-quantile (`q` in [0, 1]): within relative error [`RELATIVE_ERROR`] of the value
    /// of 0-based rank `⌈q·n⌉ − 1` in sorted order (the nearest-rank method). NaN when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return f64::NAN;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).clamp(1, self.count) - 1;
        // Ascending order: negative values from the largest magnitude down, zeros, positives.
        let mut seen = 0u64;
        for (k, &n) in self.neg.counts.iter().enumerate().rev() {
            seen += n;
            if seen > rank {
                return -value_of(self.neg.offset + k as i32);
            }
        }
        seen += self.zero;
        if seen > rank {
            return 0.0;
        }
        for (k, &n) in self.pos.counts.iter().enumerate() {
            seen += n;
            if seen > rank {
                return value_of(self.pos.offset + k as i32);
            }
        }
        // Unreachable while the counts add up; the largest bin is the honest answer.
        self.pos.counts.len().checked_sub(1).map_or(0.0, |k| value_of(self.pos.offset + k as i32))
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.pos.bytes() + self.neg.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(sorted: &[f64], q: f64) -> f64 {
        let n = sorted.len();
        sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
    }

    fn check(values: &[f64]) {
        let mut s = Sketch::new();
        for &v in values {
            s.add(v);
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let (got, want) = (s.quantile(q), exact(&sorted, q));
            let bound = RELATIVE_ERROR * want.abs() * (1.0 + 1e-12) + if want.abs() < MIN_MAGNITUDE { MIN_MAGNITUDE } else { 0.0 };
            assert!((got - want).abs() <= bound, "q {q}: got {got}, exact {want}");
        }
    }

    #[test]
    fn quantiles_are_within_the_relative_error_bound() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        // Uniform, heavy-tailed, mixed-sign with zeros, and a narrow range.
        let uniform: Vec<f64> = (0..10_000).map(|_| next() * 100.0).collect();
        let pareto: Vec<f64> = (0..10_000).map(|_| 1.0 / (1.0 - next()).powf(0.7)).collect();
        let mixed: Vec<f64> = (0..10_000).map(|i| if i % 17 == 0 { 0.0 } else { (next() - 0.5) * 1e6 }).collect();
        let narrow: Vec<f64> = (0..10_000).map(|_| 1000.0 + next()).collect();
        for v in [&uniform, &pareto, &mixed, &narrow] {
            check(v);
        }
        check(&[42.0]);
        check(&[-3.0, -3.0, 7.5]);
    }

    #[test]
    fn merging_equals_adding_in_any_order() {
        let values: Vec<f64> = (0..5000).map(|i| ((i * 7919) % 1000) as f64 - 300.0).collect();
        let mut whole = Sketch::new();
        values.iter().for_each(|&v| whole.add(v));
        let mut parts: Vec<Sketch> = values
            .chunks(333)
            .map(|c| {
                let mut s = Sketch::new();
                c.iter().for_each(|&v| s.add(v));
                s
            })
            .collect();
        let mut forward = Sketch::new();
        parts.iter().for_each(|p| forward.merge(p));
        parts.reverse();
        let mut backward = Sketch::new();
        parts.iter().for_each(|p| backward.merge(p));
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(forward.quantile(q), whole.quantile(q));
            assert_eq!(backward.quantile(q), whole.quantile(q));
        }
        assert_eq!(forward.count(), 5000);
        assert!(Sketch::new().quantile(0.5).is_nan());
        // The bins themselves, also for parts whose ranges are disjoint, nested or overlap,
        // merged upwards and downwards (the store grows at either end).
        assert!(forward == whole && backward == whole);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let mut ranges: Vec<Sketch> = sorted
            .chunks(700)
            .chain([&sorted[1000..4000], &sorted[2500..2600]])
            .map(|c| {
                let mut s = Sketch::new();
                c.iter().for_each(|&v| s.add(v));
                s
            })
            .collect();
        let mut want = Sketch::new();
        sorted.iter().chain(&sorted[1000..4000]).chain(&sorted[2500..2600]).for_each(|&v| want.add(v));
        for _ in 0..2 {
            let mut got = Sketch::new();
            ranges.iter().for_each(|p| got.merge(p));
            assert!(got == want, "merged bins differ from the bins of adding every value");
            ranges.reverse();
        }
    }
}
