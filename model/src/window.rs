//! Window results: the group key, the accumulator of the aggregate functions, and the row that
//! an aggregate emits once per window and group.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::series::Series;
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
}

impl AggFn {
    /// Every function, in column order.
    pub const ALL: [AggFn; 5] = [AggFn::Count, AggFn::Sum, AggFn::Min, AggFn::Max, AggFn::Avg];
    /// The function's name, which is also its column name.
    pub fn name(self) -> &'static str {
        match self {
            AggFn::Count => "count",
            AggFn::Sum => "sum",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::Avg => "avg",
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

/// The accumulator of one window and group: count, compensated sum, min, max.
///
/// The sum uses Neumaier's compensated summation, so it stays within an ulp or two of the exact
/// sum; partial accumulators are merged in a canonical order (input partition order), so the
/// result is also bit-identical whatever the worker count.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Acc {
    /// Number of points.
    pub count: u64,
    sum: f64,
    comp: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Acc {
    /// An accumulator holding one value.
    #[inline]
    pub fn of(v: f64) -> Acc {
        Acc { count: 1, sum: v, comp: 0.0, min: v, max: v }
    }

    /// Adds one value.
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

    /// The value of one function.
    pub fn value(&self, f: AggFn) -> f64 {
        match f {
            AggFn::Count => self.count as f64,
            AggFn::Sum => self.sum(),
            AggFn::Min => self.min,
            AggFn::Max => self.max,
            AggFn::Avg => self.avg(),
        }
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
