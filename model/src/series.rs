//! Series identity (`tenant`, `name`, sorted labels), interned per worker so that the hot path
//! allocates nothing for a series it has seen before.
//!
//! The **series hash** is XXH3-64 (seed 0) over the canonical encoding
//! `tenant 0xFF name 0xFF (key 0xFE value 0xFF)*` with labels sorted by key. 0xFE and 0xFF never
//! occur in UTF-8, so the encoding is injective. The hash is stable across runs, processes and
//! versions: it routes records between workers and must agree everywhere.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashbrown::HashTable;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The tenant of records that do not name one.
pub const DEFAULT_TENANT: &str = "default";

/// The identity of a metric series. Cheap to clone (one reference count).
#[derive(Clone)]
pub struct Series(Arc<SeriesInner>);

struct SeriesInner {
    tenant: Arc<str>,
    name: Arc<str>,
    labels: Box<[(Arc<str>, Arc<str>)]>,
    hash: u64,
    /// The canonical encoding: an interner hit is one hash and one `memcmp` against it.
    canon: Box<[u8]>,
}

impl Series {
    /// Builds a series outside any interner (tests, deserialization). Labels need not be sorted;
    /// duplicate keys keep the last value.
    pub fn new(tenant: &str, name: &str, labels: &[(&str, &str)]) -> Series {
        let mut v: Vec<(&str, &str)> = Vec::with_capacity(labels.len());
        for &(k, val) in labels {
            if let Some(slot) = v.iter_mut().find(|(kk, _)| *kk == k) {
                slot.1 = val;
            } else {
                v.push((k, val));
            }
        }
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut buf = Vec::new();
        let hash = series_hash(&mut buf, tenant.as_bytes(), name.as_bytes(), v.len(), |i| (v[i].0.as_bytes(), v[i].1.as_bytes()));
        Series(Arc::new(SeriesInner {
            tenant: tenant.into(),
            name: name.into(),
            labels: v.iter().map(|(k, v)| (Arc::<str>::from(*k), Arc::<str>::from(*v))).collect(),
            hash,
            canon: buf.into_boxed_slice(),
        }))
    }
    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.0.tenant
    }
    /// The metric name.
    pub fn name(&self) -> &str {
        &self.0.name
    }
    /// The tenant as a shared string.
    pub fn tenant_arc(&self) -> &Arc<str> {
        &self.0.tenant
    }
    /// The metric name as a shared string.
    pub fn name_arc(&self) -> &Arc<str> {
        &self.0.name
    }
    /// Labels sorted by key, keys unique.
    pub fn labels(&self) -> &[(Arc<str>, Arc<str>)] {
        &self.0.labels
    }
    /// The value of label `key`, if the series has it.
    pub fn label(&self, key: &str) -> Option<&Arc<str>> {
        self.0.labels.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &self.0.labels[i].1)
    }
    /// The stable content hash (see the module documentation).
    pub fn stable_hash(&self) -> u64 {
        self.0.hash
    }
    /// Whether two handles point at the same interned series (a cheap identity test).
    pub fn ptr_eq(a: &Series, b: &Series) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
    /// The address of the interned series: an identity key for per-worker maps, valid while a
    /// handle is held.
    pub fn addr(&self) -> usize {
        Arc::as_ptr(&self.0) as *const u8 as usize
    }
    /// The labels as a JSON object text with sorted keys.
    pub fn labels_json(&self) -> String {
        let mut out = String::new();
        self.write_labels_json(&mut out);
        out
    }
    /// [`labels_json`](Self::labels_json), appended to `out`.
    pub fn write_labels_json(&self, out: &mut String) {
        crate::labels::write_labels_json(out, self.labels().iter().map(|(k, v)| (&**k, &**v)));
    }
}

/// Writes the canonical encoding into `buf` and returns its XXH3-64.
pub fn series_hash<'a>(buf: &mut Vec<u8>, tenant: &[u8], name: &[u8], n: usize, label: impl Fn(usize) -> (&'a [u8], &'a [u8])) -> u64 {
    buf.clear();
    buf.extend_from_slice(tenant);
    buf.push(0xFF);
    buf.extend_from_slice(name);
    buf.push(0xFF);
    for i in 0..n {
        let (k, v) = label(i);
        buf.extend_from_slice(k);
        buf.push(0xFE);
        buf.extend_from_slice(v);
        buf.push(0xFF);
    }
    xxhash_rust::xxh3::xxh3_64(buf)
}

impl PartialEq for Series {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || (self.0.hash == other.0.hash && self.0.canon == other.0.canon)
    }
}
impl Eq for Series {}
impl Hash for Series {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash)
    }
}
impl PartialOrd for Series {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Series {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.tenant(), self.name(), self.labels()).cmp(&(other.tenant(), other.name(), other.labels()))
    }
}

impl fmt::Debug for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{{", self.tenant(), self.name())?;
        for (i, (k, v)) in self.labels().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v:?}")?;
        }
        f.write_str("}")
    }
}

impl Serialize for Series {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.tenant(), self.name(), self.labels()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Series {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (tenant, name, labels): (String, String, Vec<(String, String)>) = Deserialize::deserialize(d)?;
        let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Ok(Series::new(&tenant, &name, &pairs))
    }
}

/// The most entries an interner (series, label sets, strings) holds before it starts over.
/// Interning only saves allocations and lets caches key by address; a stream of ever-new
/// series (unbounded label cardinality) must not grow it without end, so at this size it is
/// cleared and fills again with what comes next. Handles already given out stay valid.
pub const INTERNER_MAX: usize = 1 << 20;

/// The most strings a [`StrInterner`] holds before it starts over: far fewer than the other
/// interners. A string that repeats (a service, a cluster, a label key) is found again soon
/// after a clear; an ever-new one (an instance, a pod) only fills the table — at 1,000,000
/// distinct alerts, 36 MB of table slots held strings never seen twice.
pub const STRINGS_MAX: usize = 1 << 16;

/// A shared handle to a string, as an interner hands it out.
pub trait SharedStr: Clone {
    /// A new handle holding `s`.
    fn make(s: &str) -> Self;
    /// The text.
    fn text(&self) -> &str;
}

impl SharedStr for Arc<str> {
    fn make(s: &str) -> Self {
        Arc::from(s)
    }
    fn text(&self) -> &str {
        self
    }
}

/// A thin pointer to a shared `Arc<str>` (8 bytes where it is a field: label sets' tenants).
impl SharedStr for Arc<Arc<str>> {
    fn make(s: &str) -> Self {
        Arc::new(Arc::from(s))
    }
    fn text(&self) -> &str {
        self
    }
}

/// Interns strings that repeat across series (tenants, names, label keys).
pub struct StrInterner<H = Arc<str>> {
    table: HashTable<H>,
}

impl<H> Default for StrInterner<H> {
    fn default() -> Self {
        StrInterner { table: HashTable::new() }
    }
}

impl<H: SharedStr> StrInterner<H> {
    /// The shared copy of `s`.
    pub fn intern(&mut self, s: &str) -> H {
        let h = xxhash_rust::xxh3::xxh3_64(s.as_bytes());
        if self.table.len() >= STRINGS_MAX && self.table.find(h, |v| v.text() == s).is_none() {
            self.table.clear();
        }
        self.table
            .entry(h, |v| v.text() == s, |v| xxhash_rust::xxh3::xxh3_64(v.text().as_bytes()))
            .or_insert_with(|| H::make(s))
            .get()
            .clone()
    }
    /// How many distinct strings are held.
    pub fn len(&self) -> usize {
        self.table.len()
    }
    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// A per-worker table of the series seen so far.
#[derive(Default)]
pub struct SeriesInterner {
    table: HashTable<Series>,
    strings: StrInterner,
    buf: Vec<u8>,
}

impl SeriesInterner {
    /// A new, empty interner.
    pub fn new() -> Self {
        Self::default()
    }

    /// The series with these parts. `label(i)` yields the `n` labels **sorted by key, keys
    /// unique**; on a hit nothing is allocated.
    pub fn intern<'a>(&mut self, tenant: &str, name: &str, n: usize, label: impl Fn(usize) -> (&'a str, &'a str)) -> Series {
        self.intern_bytes(tenant.as_bytes(), name.as_bytes(), n, |i| {
            let (k, v) = label(i);
            (k.as_bytes(), v.as_bytes())
        })
        .expect("str parts are UTF-8")
    }

    /// [`intern`](Self::intern) from bytes, for decoders: the parts are only checked to be
    /// UTF-8 when the series is new. `None` if they are not.
    #[inline]
    pub fn intern_bytes<'a>(
        &mut self,
        tenant: &[u8],
        name: &[u8],
        n: usize,
        label: impl Fn(usize) -> (&'a [u8], &'a [u8]),
    ) -> Option<Series> {
        let hash = series_hash(&mut self.buf, tenant, name, n, &label);
        let buf = &self.buf;
        if let Some(s) = self.table.find(hash, |s| s.0.hash == hash && *s.0.canon == **buf) {
            return Some(s.clone());
        }
        let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let (k, v) = label(i);
            labels.push((self.strings.intern(&text(k)?), Arc::<str>::from(text(v)?)));
        }
        if self.table.len() >= INTERNER_MAX {
            self.table.clear();
        }
        let s = Series(Arc::new(SeriesInner {
            tenant: self.strings.intern(&text(tenant)?),
            name: self.strings.intern(&text(name)?),
            labels: labels.into_boxed_slice(),
            hash,
            canon: self.buf.clone().into_boxed_slice(),
        }));
        self.table.insert_unique(hash, s.clone(), |s| s.0.hash);
        Some(s)
    }

    /// How many distinct series are held.
    pub fn len(&self) -> usize {
        self.table.len()
    }
    /// Whether no series is held.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_returns_the_same_series() {
        let mut i = SeriesInterner::new();
        let l = [("host", "h1"), ("zone", "a")];
        let a = i.intern("t0", "cpu", 2, |k| l[k]);
        let b = i.intern("t0", "cpu", 2, |k| l[k]);
        assert!(Series::ptr_eq(&a, &b));
        let c = i.intern("t0", "cpu", 1, |k| l[k]);
        assert!(!Series::ptr_eq(&a, &c));
        assert_eq!(i.len(), 2);
        assert_eq!(a, Series::new("t0", "cpu", &[("zone", "a"), ("host", "h1")]));
        assert_eq!(a.stable_hash(), Series::new("t0", "cpu", &[("zone", "a"), ("host", "h1")]).stable_hash());
        assert_eq!(a.label("zone").map(|v| &**v), Some("a"));
        assert_eq!(a.label("nope"), None);
    }

    /// The string table starts over at its own, smaller bound; a string that repeats is
    /// shared again right after.
    #[test]
    fn strings_are_bounded() {
        let mut i: StrInterner = StrInterner::default();
        for n in 0..STRINGS_MAX + 10 {
            i.intern(&format!("host-{n}"));
            assert!(i.len() <= STRINGS_MAX);
        }
        assert!(i.len() < 20, "cleared at the bound: {}", i.len());
        let (a, b) = (i.intern("svc"), i.intern("svc"));
        assert!(Arc::ptr_eq(&a, &b));
    }

    /// Ever-new series do not grow the interner without end: it starts over at its bound, and
    /// a handle given out before still equals (by value) the same series interned after.
    #[test]
    fn interner_is_bounded() {
        let mut i = SeriesInterner::new();
        let first = i.intern("t0", "cpu", 1, |_| ("host", "h0"));
        for n in 1..INTERNER_MAX + 10 {
            let host = format!("h{n}");
            i.intern("t0", "cpu", 1, |_| ("host", host.as_str()));
            assert!(i.len() <= INTERNER_MAX);
        }
        assert!(i.len() < 20, "cleared at the bound: {}", i.len());
        let again = i.intern("t0", "cpu", 1, |_| ("host", "h0"));
        assert!(!Series::ptr_eq(&first, &again) && first == again && first.stable_hash() == again.stable_hash());
        assert!(i.strings.len() <= INTERNER_MAX);
    }

    #[test]
    fn hash_is_stable() {
        // Pinned: changing the series hash would re-route records between versions.
        let s = Series::new("t0", "cpu", &[("host", "h00000")]);
        assert_eq!(s.stable_hash(), {
            let mut b = Vec::new();
            b.extend_from_slice(b"t0\xffcpu\xffhost\xfeh00000\xff");
            xxhash_rust::xxh3::xxh3_64(&b)
        });
        // The separator bytes make these two different.
        assert_ne!(Series::new("t", "0cpu", &[]).stable_hash(), Series::new("t0", "cpu", &[]).stable_hash());
    }

    #[test]
    fn serde_round_trip() {
        let s = Series::new("t0", "cpu", &[("host", "h1")]);
        let j = serde_json::to_string(&s).unwrap();
        let back: Series = serde_json::from_str(&j).unwrap();
        assert_eq!(s, back);
        assert_eq!(s.labels_json(), r#"{"host":"h1"}"#);
    }
}
