//! Label sets: sorted `(key, value)` pairs with a stable hash, interned per worker like series.
//!
//! The **fingerprint** of an alert is the hash of its tenant and label set:
//! XXH3-64 (seed 0) over `tenant 0xFF (key 0xFE value 0xFF)*`, labels sorted by key bytewise,
//! `alertname` and `severity` included as labels. 0xFE and 0xFF never occur in UTF-8, so the
//! encoding is injective; the function is fixed across runs, processes and versions. In tables
//! it is written as 16 lower-case hex digits.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashbrown::HashTable;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::series::StrInterner;

/// How many records ahead [`LabelSet::prefetch_ahead`] hints a label set.
pub const HINT_AHEAD: usize = 8;

/// An interned, sorted label set of one tenant. Cheap to clone.
#[derive(Clone)]
pub struct LabelSet(Arc<LabelSetInner>);

struct LabelSetInner {
    /// The tenant, shared by every set of the interner with that tenant. A thin pointer (to
    /// the shared `Arc<str>`) rather than the `Arc<str>` itself: 8 bytes instead of 16 keep
    /// this allocation in the allocator's 56-byte size class with `check` added, which is
    /// 8 MB at 1,000,000 open alerts.
    tenant: Arc<Arc<str>>,
    labels: Box<[(Arc<str>, Arc<str>)]>,
    /// The fingerprint: XXH3-64 of the canonical encoding (see [`encode`]).
    hash: u64,
    /// A second, independent hash of the same encoding (XXH3-64 with [`CHECK_SEED`]): with
    /// the fingerprint, 128 bits that identify the set in the interner. The encoding itself is
    /// not kept (1,000,000 distinct alerts held 73 MB of encodings), and confirming a match on
    /// the labels read the labels slice and every key and value (a cache miss and a `memcmp`
    /// each); this field sits in the allocation a hit touches anyway (to count the new
    /// reference), so a hit reads only the table and this allocation.
    /// Two distinct sets agree on all 128 bits with probability 2^-128, so a lookup among the
    /// at most 2^20 sets an interner holds finds a wrong one with probability under 2^-108.
    check: u64,
}

/// The seed of [`LabelSetInner::check`]; any fixed value other than the fingerprint's 0.
const CHECK_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// The canonical encoding (see the module documentation) into `buf`.
fn encode<'a>(buf: &mut Vec<u8>, tenant: &[u8], n: usize, label: impl Fn(usize) -> (&'a [u8], &'a [u8])) {
    buf.clear();
    buf.extend_from_slice(tenant);
    buf.push(0xFF);
    for i in 0..n {
        let (k, v) = label(i);
        buf.extend_from_slice(k);
        buf.push(0xFE);
        buf.extend_from_slice(v);
        buf.push(0xFF);
    }
}

impl LabelSet {
    /// A label set outside any interner; labels need not be sorted (the last of duplicate
    /// keys wins).
    pub fn new(tenant: &str, labels: &[(&str, &str)]) -> LabelSet {
        let mut v: Vec<(&str, &str)> = Vec::with_capacity(labels.len());
        for &(k, val) in labels {
            match v.iter_mut().find(|(kk, _)| *kk == k) {
                Some(slot) => slot.1 = val,
                None => v.push((k, val)),
            }
        }
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut buf = Vec::new();
        encode(&mut buf, tenant.as_bytes(), v.len(), |i| (v[i].0.as_bytes(), v[i].1.as_bytes()));
        LabelSet(Arc::new(LabelSetInner {
            tenant: Arc::new(tenant.into()),
            labels: v.iter().map(|(k, v)| (Arc::<str>::from(*k), Arc::<str>::from(*v))).collect(),
            hash: xxhash_rust::xxh3::xxh3_64(&buf),
            check: xxhash_rust::xxh3::xxh3_64_with_seed(&buf, CHECK_SEED),
        }))
    }
    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.0.tenant
    }
    /// The tenant, shared.
    pub fn tenant_arc(&self) -> &Arc<str> {
        &self.0.tenant
    }
    /// Labels sorted by key, keys unique.
    pub fn labels(&self) -> &[(Arc<str>, Arc<str>)] {
        &self.0.labels
    }
    /// The value of label `key`.
    pub fn get(&self, key: &str) -> Option<&Arc<str>> {
        self.0.labels.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &self.0.labels[i].1)
    }
    /// The fingerprint (see the module documentation).
    pub fn fingerprint(&self) -> u64 {
        self.0.hash
    }
    /// Starts bringing this set's allocation into the cache without waiting: the line of its
    /// reference count for writing, and the line of its fingerprint. The allocation (56 bytes)
    /// spans at most two lines; these are they.
    ///
    /// For writing because every caller then changes the count — dedup drops a re-sent
    /// notice's set (or keeps it), correlate clones it into its episode, the `alerts` writer
    /// drops its rows — with a locked instruction, and the count was often last changed on the
    /// other worker's core (the decoder's shape cache clones a set on whichever worker read
    /// the line). A write hint takes the line over while the loop works on; after a read hint
    /// the locked instruction still waited for the other core to give its copy up. A small
    /// gain on the storm-heavy bench: 24 of 37 runs by turns faster, the medians of four series
    /// 1.2–7 % lower (BENCHMARKS.md, "Alert chain end to end", 2026-11-26).
    #[inline]
    pub fn prefetch(&self) {
        // The reference counts sit just before the value in `Arc`'s allocation (two words);
        // a wrong guess costs a wasted hint, never a wrong result.
        let value = Arc::as_ptr(&self.0).cast::<u8>();
        crate::prefetch::prefetch_write(value.wrapping_sub(2 * std::mem::size_of::<usize>()));
        crate::prefetch::prefetch(&self.0.hash);
    }
    /// Starts bringing this set's labels — the slice [`get`](Self::get) searches, an
    /// allocation of its own — into the cache without waiting (its first four lines: eight
    /// labels). Finding the slice reads the set's allocation: hint that with
    /// [`prefetch`](Self::prefetch) a few records earlier, or this waits for it.
    #[inline]
    pub fn prefetch_labels(&self) {
        let labels = &self.0.labels;
        let (p, bytes) = (labels.as_ptr().cast::<u8>(), std::mem::size_of_val::<[(Arc<str>, Arc<str>)]>(labels));
        for off in (0..bytes.min(256)).step_by(64) {
            crate::prefetch::prefetch(p.wrapping_add(off));
        }
    }
    /// Hints the label sets of the records ahead of a loop into the cache: `at(k)` is the set
    /// of the record `k` places ahead, if any. The set's allocation is hinted
    /// [`HINT_AHEAD`] records ahead and its labels slice half as far, by when the set is in
    /// the cache and the slice is found without waiting.
    #[inline]
    pub fn prefetch_ahead<'a>(at: impl Fn(usize) -> Option<&'a LabelSet>) {
        if let Some(l) = at(HINT_AHEAD) {
            l.prefetch();
        }
        if let Some(l) = at(HINT_AHEAD / 2) {
            l.prefetch_labels();
        }
    }
    /// The labels as a JSON object text with sorted keys.
    pub fn to_json(&self) -> String {
        labels_json(self.labels())
    }
    /// [`to_json`](Self::to_json), appended to `out`.
    pub fn write_json(&self, out: &mut String) {
        write_labels_json(out, self.labels().iter().map(|(k, v)| (&**k, &**v)));
    }
    /// Whether two handles share one allocation.
    pub fn ptr_eq(a: &LabelSet, b: &LabelSet) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

/// Sorted labels as a JSON object text.
pub fn labels_json(labels: &[(Arc<str>, Arc<str>)]) -> String {
    let mut out = String::new();
    write_labels_json(&mut out, labels.iter().map(|(k, v)| (&**k, &**v)));
    out
}

/// Appends labels **sorted by key, keys unique** as a compact JSON object text to `out`: the
/// text `serde_json` writes for the same map. Written directly because table writers call this
/// for every row, and going through a `serde_json::Map` allocated every key and value twice.
pub fn write_labels_json<'a>(out: &mut String, labels: impl Iterator<Item = (&'a str, &'a str)>) {
    out.push('{');
    for (i, (k, v)) in labels.enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, k);
        out.push(':');
        json_str(out, v);
    }
    out.push('}');
}

/// A JSON string literal, escaped as `serde_json` does: `"`, `\\` and control characters only
/// (short forms where JSON has them, else `\u00XX`).
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    // Nearly every label needs no escape: one scan, one copy.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0C => "\\f",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(&s[from..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xF) as usize] as char);
        } else {
            out.push_str(esc);
        }
        from = i + 1;
    }
    out.push_str(&s[from..]);
    out.push('"');
}

/// A fingerprint as written in tables: 16 lower-case hex digits.
pub fn fingerprint_hex(fp: u64) -> String {
    // Not `format!`: incident and storm rows carry up to 1,000 fingerprints each, and the
    // formatting machinery was a visible share of writing them.
    let b = fingerprint_hex_bytes(fp);
    b.iter().map(|&c| c as char).collect()
}

/// [`fingerprint_hex`] into a stack buffer.
#[inline]
pub fn fingerprint_hex_bytes(fp: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = DIGITS[((fp >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

impl PartialEq for LabelSet {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0) || (self.0.hash == o.0.hash && self.0.tenant == o.0.tenant && self.0.labels == o.0.labels)
    }
}
impl Eq for LabelSet {}
impl Hash for LabelSet {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(self.0.hash)
    }
}
impl PartialOrd for LabelSet {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for LabelSet {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.tenant(), self.labels()).cmp(&(o.tenant(), o.labels()))
    }
}
impl fmt::Debug for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{{", self.tenant())?;
        for (i, (k, v)) in self.labels().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v:?}")?;
        }
        f.write_str("}")
    }
}
impl Serialize for LabelSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.tenant(), self.labels()).serialize(s)
    }
}
impl<'de> Deserialize<'de> for LabelSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (t, l): (String, Vec<(String, String)>) = Deserialize::deserialize(d)?;
        let pairs: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Ok(LabelSet::new(&t, &pairs))
    }
}

/// A per-worker table of label sets.
#[derive(Default)]
pub struct LabelInterner {
    table: HashTable<LabelSet>,
    strings: StrInterner,
    /// Tenants, shared by the sets (see [`LabelSetInner::tenant`]).
    tenants: StrInterner<Arc<Arc<str>>>,
    buf: Vec<u8>,
}

impl LabelInterner {
    /// A new, empty interner.
    pub fn new() -> Self {
        Self::default()
    }

    /// The label set with these parts; `label(i)` yields `n` labels **sorted by key, keys
    /// unique**. `None` if a part is not UTF-8. Allocates only for a new set.
    ///
    /// A held set is found by its 128 bits of hash (fingerprint and check, see
    /// [`LabelSetInner::check`]), not by comparing its labels.
    pub fn intern_bytes<'a>(&mut self, tenant: &[u8], n: usize, label: impl Fn(usize) -> (&'a [u8], &'a [u8])) -> Option<LabelSet> {
        encode(&mut self.buf, tenant, n, &label);
        let hash = xxhash_rust::xxh3::xxh3_64(&self.buf);
        let check = xxhash_rust::xxh3::xxh3_64_with_seed(&self.buf, CHECK_SEED);
        if let Some(s) = self.table.find(hash, |s: &LabelSet| s.0.hash == hash && s.0.check == check) {
            debug_assert!(
                s.0.tenant.as_bytes() == tenant
                    && s.0.labels.len() == n
                    && s.0.labels.iter().enumerate().all(|(i, (k, v))| (k.as_bytes(), v.as_bytes()) == label(i)),
                "128-bit label-set hash collision"
            );
            return Some(s.clone());
        }
        let text = |b: &'a [u8]| std::str::from_utf8(b).ok();
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let (k, v) = label(i);
            labels.push((self.strings.intern(text(k)?), self.strings.intern(text(v)?)));
        }
        if self.table.len() >= crate::series::INTERNER_MAX {
            self.table.clear();
        }
        let tenant = self.tenants.intern(std::str::from_utf8(tenant).ok()?);
        let s = LabelSet(Arc::new(LabelSetInner { tenant, labels: labels.into_boxed_slice(), hash, check }));
        self.table.insert_unique(hash, s.clone(), |s| s.0.hash);
        Some(s)
    }

    /// Interns strings that repeat (label values of alerts repeat a lot: services, clusters).
    pub fn string(&mut self, s: &str) -> Arc<str> {
        self.strings.intern(s)
    }

    /// How many label sets are held.
    pub fn len(&self) -> usize {
        self.table.len()
    }
    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_set_stays_in_the_56_byte_size_class() {
        // With Arc's two counts: 56 bytes. One more field moves every set of every open alert
        // up a size class of the allocator (see `LabelSetInner::tenant`).
        assert_eq!(std::mem::size_of::<LabelSetInner>() + 16, 56);
        let mut i = LabelInterner::new();
        let a = i.intern_bytes(b"t0", 1, |_| (b"alertname" as &[u8], b"A" as &[u8])).unwrap();
        let b = i.intern_bytes(b"t0", 1, |_| (b"alertname" as &[u8], b"B" as &[u8])).unwrap();
        assert!(Arc::ptr_eq(a.tenant_arc(), b.tenant_arc()), "sets of one tenant share it");
        assert_eq!((a.tenant(), b.tenant()), ("t0", "t0"));
    }

    #[test]
    fn labels_json_is_the_text_serde_json_writes() {
        let tricky =
            ["", "plain", "q\"uote", "back\\slash", "nl\nret\rtab\t", "\u{8}\u{c}\u{0}\u{1f}\u{7f}", "é ✓ 😀", "</script>", "a\\\"b"];
        for (i, k) in tricky.iter().enumerate() {
            for v in tricky {
                let labels: Vec<(Arc<str>, Arc<str>)> = vec![(format!("{i}{k}").into(), v.into()), ("z".into(), (*k).into())];
                let mut m = serde_json::Map::new();
                for (k, v) in &labels {
                    m.insert(k.to_string(), serde_json::Value::String(v.to_string()));
                }
                let want = serde_json::Value::Object(m).to_string();
                assert_eq!(labels_json(&labels), want);
                let back: serde_json::Value = serde_json::from_str(&labels_json(&labels)).unwrap();
                assert_eq!(back[format!("{i}{k}")], serde_json::Value::String(v.to_string()));
            }
        }
        assert_eq!(labels_json(&[]), "{}");
    }

    #[test]
    fn fingerprints_are_pinned_and_order_free() {
        let a = LabelSet::new("t0", &[("alertname", "HighCpu"), ("severity", "critical"), ("host", "h1")]);
        let b = LabelSet::new("t0", &[("host", "h1"), ("severity", "critical"), ("alertname", "HighCpu")]);
        assert_eq!(a, b);
        assert_eq!(a.fingerprint(), b.fingerprint());
        // Pinned: a change here re-keys every alert of every user.
        let want = xxhash_rust::xxh3::xxh3_64(b"t0\xffalertname\xfeHighCpu\xffhost\xfeh1\xffseverity\xfecritical\xff");
        assert_eq!(a.fingerprint(), want);
        assert_eq!(fingerprint_hex(0xab), "00000000000000ab");
        assert_eq!(fingerprint_hex(0x0123_4567_89ab_cdef), format!("{:016x}", 0x0123_4567_89ab_cdefu64));
        assert_eq!(fingerprint_hex(u64::MAX), "ffffffffffffffff");
        assert_ne!(
            LabelSet::new("t1", &[("alertname", "HighCpu")]).fingerprint(),
            LabelSet::new("t0", &[("alertname", "HighCpu")]).fingerprint()
        );
        let mut i = LabelInterner::new();
        let c = i
            .intern_bytes(b"t0", 3, |k| [(b"alertname" as &[u8], b"HighCpu" as &[u8]), (b"host", b"h1"), (b"severity", b"critical")][k])
            .unwrap();
        assert_eq!(c, a);
        let d = i
            .intern_bytes(b"t0", 3, |k| [(b"alertname" as &[u8], b"HighCpu" as &[u8]), (b"host", b"h1"), (b"severity", b"critical")][k])
            .unwrap();
        assert!(LabelSet::ptr_eq(&c, &d));
        assert_eq!(a.to_json(), r#"{"alertname":"HighCpu","host":"h1","severity":"critical"}"#);
    }
}
