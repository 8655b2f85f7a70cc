//! Window results: the group key, the accumulator of the aggregate functions, and the row that
//! an aggregate emits once per window and group.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::series::Series;
use crate::sketch::Sketch;
use crate::time::Millis;

/// An aggregate function of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AggFn {
    /// Number of points.
    Count,
    /// Sum of values (compensated summation).
    Sum,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Mean value.
    Avg,
    /// The value of the latest point (by event time; ties by input partition and position).
    Last,
    /// Population standard deviation (as Prometheus' `stddev_over_time`), by Welford's method.
    Stddev,
    /// Median, from the window's [`Sketch`] (relative error ≤ 1 %).
    P50,
    /// 90th percentile, from the sketch.
    P90,
    /// 95th percentile, from the sketch.
    P95,
    /// 99th percentile, from the sketch.
    P99,
}

impl AggFn {
    /// Every function, in column order.
    pub const ALL: [AggFn; 11] = [
        AggFn::Count,
        AggFn::Sum,
        AggFn::Min,
        AggFn::Max,
        AggFn::Avg,
        AggFn::Last,
        AggFn::Stddev,
        AggFn::P50,
        AggFn::P90,
        AggFn::P95,
        AggFn::P99,
    ];
    /// The functions an aggregate computes when it lists none.
    pub const DEFAULT: [AggFn; 5] = [AggFn::Count, AggFn::Sum, AggFn::Min, AggFn::Max, AggFn::Avg];
    /// The function's name, which is also its column name.
    pub fn name(self) -> &'static str {
        match self {
            AggFn::Count => "count",
            AggFn::Sum => "sum",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::Avg => "avg",
            AggFn::Last => "last",
            AggFn::Stddev => "stddev",
            AggFn::P50 => "p50",
            AggFn::P90 => "p90",
            AggFn::P95 => "p95",
            AggFn::P99 => "p99",
        }
    }
    /// The quantile a percentile function reads from the sketch.
    pub fn quantile(self) -> Option<f64> {
        match self {
            AggFn::P50 => Some(0.5),
            AggFn::P90 => Some(0.9),
            AggFn::P95 => Some(0.95),
            AggFn::P99 => Some(0.99),
            _ => None,
        }
    }
}

impl FromStr for AggFn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AggFn::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<&str> = AggFn::ALL.iter().map(|f| f.name()).collect();
            format!("unknown function `{s}`; expected one of {}", names.join(", "))
        })
    }
}

impl fmt::Display for AggFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for AggFn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}
impl<'de> Deserialize<'de> for AggFn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which statistics beyond count, sum, min and max an accumulator keeps: only what the
/// aggregate's functions need, so the common case stays a small copyable record with no heap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// `last` and `stddev` (cheap: a few words per accumulator).
    pub moments: bool,
    /// The quantile sketch (a heap array of bins).
    pub sketch: bool,
}

impl Needs {
    /// What these functions need.
    pub fn of(functions: &[AggFn]) -> Needs {
        Needs {
            moments: functions.iter().any(|f| matches!(f, AggFn::Last | AggFn::Stddev)),
            sketch: functions.iter().any(|f| f.quantile().is_some()),
        }
    }
}

/// The accumulator of one window and group: count, compensated sum, min, max, and — when the
/// functions need them — the latest point, Welford's moments and a quantile sketch.
///
/// The sum uses Neumaier's compensated summation, so it stays within an ulp or two of the exact
/// sum; partial accumulators are merged in a canonical order (input partition order, then
/// time), so the result is also bit-identical whatever the worker count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Acc {
    /// Number of points.
    pub count: u64,
    sum: f64,
    comp: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    extra: Option<Box<Extra>>,
}

/// The optional part of an accumulator (boxed: most aggregates never need it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Extra {
    /// `(ts, part, pos)` of the latest point and its value.
    last: ((i64, u32, u64), f64),
    /// Welford's running mean and sum of squared deviations.
    mean: f64,
    m2: f64,
    sketch: Option<Sketch>,
}

impl Acc {
    /// An accumulator holding one value (count, sum, min and max only).
    #[inline]
    pub fn of(v: f64) -> Acc {
        Acc { count: 1, sum: v, comp: 0.0, min: v, max: v, extra: None }
    }

    /// An accumulator holding one point, keeping what `needs` says.
    #[inline]
    pub fn start(needs: Needs, v: f64, ts: i64, part: u32, pos: u64) -> Acc {
        let mut a = Acc::of(v);
        if needs.moments || needs.sketch {
            let sketch = needs.sketch.then(|| {
                let mut s = Sketch::new();
                s.add(v);
                s
            });
            a.extra = Some(Box::new(Extra { last: ((ts, part, pos), v), mean: v, m2: 0.0, sketch }));
        }
        a
    }

    /// Adds one value (count, sum, min and max only: use [`add_point`](Self::add_point) for
    /// accumulators made by [`start`](Self::start)).
    #[inline]
    pub fn add(&mut self, v: f64) {
        self.count += 1;
        self.add_sum(v);
        if v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
    }

    /// Adds one point.
    #[inline]
    pub fn add_point(&mut self, v: f64, ts: i64, part: u32, pos: u64) {
        self.add(v);
        if let Some(x) = self.extra.as_mut() {
            if (ts, part, pos) > x.last.0 {
                x.last = ((ts, part, pos), v);
            }
            let delta = v - x.mean;
            x.mean += delta / self.count as f64;
            x.m2 += delta * (v - x.mean);
            if let Some(s) = x.sketch.as_mut() {
                s.add(v);
            }
        }
    }

    #[inline]
    fn add_sum(&mut self, v: f64) {
        let t = self.sum + v;
        if self.sum.abs() >= v.abs() {
            self.comp += (self.sum - t) + v;
        } else {
            self.comp += (v - t) + self.sum;
        }
        self.sum = t;
    }

    /// Merges another accumulator into this one.
    #[inline]
    pub fn merge(&mut self, o: &Acc) {
        if let (Some(x), Some(y)) = (self.extra.as_mut(), o.extra.as_ref()) {
            if y.last.0 > x.last.0 {
                x.last = y.last;
            }
            // Chan et al.'s pairwise update of the mean and the squared deviations.
            let (na, nb) = (self.count as f64, o.count as f64);
            let n = na + nb;
            let delta = y.mean - x.mean;
            x.mean += delta * nb / n;
            x.m2 += y.m2 + delta * delta * na * nb / n;
            if let (Some(s), Some(t)) = (x.sketch.as_mut(), y.sketch.as_ref()) {
                s.merge(t);
            }
        }
        self.count += o.count;
        self.add_sum(o.sum);
        self.comp += o.comp;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    /// The sum of the values.
    #[inline]
    pub fn sum(&self) -> f64 {
        self.sum + self.comp
    }

    /// The mean of the values.
    #[inline]
    pub fn avg(&self) -> f64 {
        self.sum() / self.count as f64
    }

    /// The value of one function (NaN for a function the accumulator was not made for).
    pub fn value(&self, f: AggFn) -> f64 {
        match f {
            AggFn::Count => self.count as f64,
            AggFn::Sum => self.sum(),
            AggFn::Min => self.min,
            AggFn::Max => self.max,
            AggFn::Avg => self.avg(),
            AggFn::Last => self.extra.as_ref().map_or(f64::NAN, |x| x.last.1),
            AggFn::Stddev => self.extra.as_ref().map_or(f64::NAN, |x| (x.m2.max(0.0) / self.count as f64).sqrt()),
            q => {
                let sketch = self.extra.as_ref().and_then(|x| x.sketch.as_ref());
                sketch.map_or(f64::NAN, |s| s.quantile(q.quantile().unwrap_or(0.5)))
            }
        }
    }

    /// Heap bytes held (the boxed extra statistics and the sketch's bins).
    pub fn heap_bytes(&self) -> usize {
        self.extra.as_ref().map_or(0, |x| std::mem::size_of::<Extra>() + x.sketch.as_ref().map_or(0, Sketch::heap_bytes))
    }
}

/// What a window groups by: tenant, metric name, and the values of the `group_by` labels
/// (`None` where a series lacks the label). Cheap to clone; hashed by content with a stable
/// hash, so equal keys from different workers meet on the same worker.
#[derive(Clone)]
pub struct GroupKey(Arc<GroupKeyInner>);

struct GroupKeyInner {
    tenant: Arc<str>,
    name: Arc<str>,
    values: Box<[Option<Arc<str>>]>,
    hash: u64,
}

impl GroupKey {
    /// Projects a series onto the `group_by` labels.
    pub fn project(series: &Series, group_by: &[String]) -> GroupKey {
        let values: Box<[Option<Arc<str>>]> = group_by.iter().map(|k| series.label(k).cloned()).collect();
        GroupKey::from_parts(series.tenant_arc().clone(), series.name_arc().clone(), values)
    }

    /// Builds a key from its parts.
    pub fn from_parts(tenant: Arc<str>, name: Arc<str>, values: Box<[Option<Arc<str>>]>) -> GroupKey {
        // Canonical encoding as for series: 0xFF ends a string, 0xFD marks a missing value.
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(tenant.as_bytes());
        buf.push(0xFF);
        buf.extend_from_slice(name.as_bytes());
        buf.push(0xFF);
        for v in values.iter() {
            match v {
                Some(v) => buf.extend_from_slice(v.as_bytes()),
                None => buf.push(0xFD),
            }
            buf.push(0xFF);
        }
        let hash = xxhash_rust::xxh3::xxh3_64(&buf);
        GroupKey(Arc::new(GroupKeyInner { tenant, name, values, hash }))
    }
    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.0.tenant
    }
    /// The metric name.
    pub fn name(&self) -> &str {
        &self.0.name
    }
    /// The `group_by` label values, in `group_by` order.
    pub fn values(&self) -> &[Option<Arc<str>>] {
        &self.0.values
    }
    /// The stable content hash.
    pub fn stable_hash(&self) -> u64 {
        self.0.hash
    }
}

impl PartialEq for GroupKey {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0)
            || (self.0.hash == o.0.hash && self.0.tenant == o.0.tenant && self.0.name == o.0.name && self.0.values == o.0.values)
    }
}
impl Eq for GroupKey {}
impl Hash for GroupKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(self.0.hash)
    }
}
impl PartialOrd for GroupKey {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for GroupKey {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.tenant(), self.name(), self.values()).cmp(&(o.tenant(), o.name(), o.values()))
    }
}
impl fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{:?}", self.tenant(), self.name(), self.values())
    }
}
impl Serialize for GroupKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&*self.0.tenant, &*self.0.name, &*self.0.values).serialize(s)
    }
}
impl<'de> Deserialize<'de> for GroupKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (t, n, v): (Arc<str>, Arc<str>, Vec<Option<Arc<str>>>) = Deserialize::deserialize(d)?;
        Ok(GroupKey::from_parts(t, n, v.into_boxed_slice()))
    }
}

/// One row of an aggregate's table: a window of one group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowRow {
    /// Inclusive window start.
    pub start: Millis,
    /// Exclusive window end.
    pub end: Millis,
    /// The group.
    pub key: GroupKey,
    /// The aggregated values.
    pub acc: Acc,
    /// 0 for the first row of a window and group; each correction under the late policy
    /// `update` counts one up (the row with the highest revision is the correct one).
    pub revision: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compensated_sum_is_accurate() {
        let mut a = Acc::of(1e16);
        for _ in 0..10 {
            a.add(1.0);
        }
        a.add(-1e16);
        assert_eq!(a.sum(), 10.0);
        assert_eq!(a.count, 12);
        let mut b = Acc::of(0.1);
        b.merge(&Acc::of(0.2));
        assert_eq!((b.min, b.max, b.count), (0.1, 0.2, 2));
    }

    #[test]
    fn group_keys_compare_by_content() {
        let s = Series::new("t0", "cpu", &[("host", "h1"), ("zone", "a")]);
        let g = vec!["host".to_string(), "dc".to_string()];
        let a = GroupKey::project(&s, &g);
        let b = GroupKey::project(&Series::new("t0", "cpu", &[("host", "h1")]), &g);
        assert_eq!(a, b);
        assert_eq!(a.stable_hash(), b.stable_hash());
        assert_eq!(a.values(), &[Some(Arc::from("h1")), None]);
        let j = serde_json::to_string(&a).unwrap();
        let back: GroupKey = serde_json::from_str(&j).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.stable_hash(), a.stable_hash());
    }
}
