//! A map of boxed values keyed by a hash each value knows: 8-byte slots.
//!
//! Operators keep one entry per open alert, boxed so that a half-empty table costs little.
//! A `HashMap<u64, Box<V>>` slot is 16 bytes: the key beside the pointer. Here the key is
//! read from the value instead, so a slot is the pointer alone. At 500,000 alerts on a worker
//! (just past the 458,752 that fit 2^19 slots, so the table has 2^20) that is 9 MB rather than
//! 17 MB, for one more pointer read on a lookup that finds its value, which the caller reads
//! anyway. Keys are hashes already (fingerprints), so they are their own hash.

use std::ops::Index;

use hashbrown::HashTable;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that knows its key. The key must not change while the value is in a map.
pub trait Keyed {
    /// The key: a well-mixed 64-bit hash (its bits pick the slot).
    fn key(&self) -> u64;
}

/// Boxed values by their [`Keyed::key`].
///
/// A large table grows incrementally. hashbrown grows a table by rehashing every value into
/// one twice the size, in one call: here that reads every value's key, a cache miss each, and
/// at 917,504 values it stalled the insert (and every record queued behind it on the worker)
/// for 35–61 ms (`benches/benches/table_growth.rs`). From [`INCREMENTAL_FROM`] values on, a
/// full table is instead set aside as `old` beside a fresh one of twice the capacity, and
/// every later change moves the next [`STEP`] buckets of `old` across: the slowest insert on
/// the way to 1,000,000 values took 1–3 ms in most runs (once 16 ms, not traced), for about
/// 130 ns more per insert overall.
pub struct BoxedMap<V> {
    /// Where values are added.
    table: HashTable<Box<V>>,
    /// The table before the last growth, moved into `table` a few buckets per change. Empty
    /// (and without memory) when no move is under way.
    old: HashTable<Box<V>>,
    /// The first bucket of `old` not moved yet.
    cursor: usize,
}

/// Tables smaller than this grow in one call (quick at this size).
const INCREMENTAL_FROM: usize = 16_384;

/// Buckets of `old` moved per change: every change adds at most one value and moves `STEP`
/// buckets, so `table` (room for `old`'s values and one per bucket of `old` / `STEP`) never
/// fills before `old` is empty.
const STEP: usize = 16;

impl<V> Default for BoxedMap<V> {
    fn default() -> Self {
        BoxedMap { table: HashTable::new(), old: HashTable::new(), cursor: 0 }
    }
}

impl<V: Keyed> BoxedMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value with key `k`.
    pub fn get(&self, k: &u64) -> Option<&V> {
        match self.table.find(*k, |v| v.key() == *k) {
            Some(b) => Some(&**b),
            None if self.old.is_empty() => None,
            None => self.old.find(*k, |v| v.key() == *k).map(|b| &**b),
        }
    }

    /// The value with key `k`, to change (not its key).
    pub fn get_mut(&mut self, k: &u64) -> Option<&mut V> {
        self.step();
        if let Some(b) = self.table.find_mut(*k, |v| v.key() == *k) {
            return Some(&mut **b);
        }
        self.old.find_mut(*k, |v| v.key() == *k).map(|b| &mut **b)
    }

    /// Whether a value has key `k`.
    pub fn contains_key(&self, k: &u64) -> bool {
        self.get(k).is_some()
    }

    /// Adds `v`, replacing and returning the value with its key if there was one.
    pub fn insert(&mut self, v: Box<V>) -> Option<Box<V>> {
        self.step();
        let k = v.key();
        if let Some(slot) = self.table.find_mut(k, |x| x.key() == k) {
            return Some(std::mem::replace(slot, v));
        }
        if let Some(slot) = self.old.find_mut(k, |x| x.key() == k) {
            return Some(std::mem::replace(slot, v));
        }
        self.push(v);
        None
    }

    /// Adds `v`, whose key the caller has just looked up and not found, and returns it: one
    /// probe for a new alert instead of an insert's two and a lookup's one.
    pub fn insert_new(&mut self, v: Box<V>) -> &mut V {
        debug_assert!(!self.contains_key(&v.key()), "insert_new of a key already present");
        self.step();
        self.push(v)
    }

    /// Adds `v`, whose key is in neither table, growing first when `table` is full.
    fn push(&mut self, v: Box<V>) -> &mut V {
        if self.table.len() == self.table.capacity() && self.table.capacity() >= INCREMENTAL_FROM {
            self.grow();
        }
        let k = v.key();
        self.table.insert_unique(k, v, |x| x.key()).into_mut()
    }

    /// Removes and returns the value with key `k`.
    pub fn remove(&mut self, k: &u64) -> Option<Box<V>> {
        self.step();
        if let Ok(e) = self.table.find_entry(*k, |v| v.key() == *k) {
            return Some(e.remove().0);
        }
        self.old.find_entry(*k, |v| v.key() == *k).ok().map(|e| e.remove().0)
    }

    /// How many values are held.
    pub fn len(&self) -> usize {
        self.table.len() + self.old.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.table.iter().chain(self.old.iter()).map(|b| &**b)
    }

    /// The values, to change (not their keys), in no particular order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.table.iter_mut().chain(self.old.iter_mut()).map(|b| &mut **b)
    }

    /// The keys, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.values().map(|v| v.key())
    }

    /// Sets the full `table` aside as `old` and starts a twice as large one.
    fn grow(&mut self) {
        // Cannot happen at the rate `step` moves (see `STEP`); if it did, finishing the move
        // first keeps the map correct at the cost of one long call.
        while !self.old.is_empty() {
            self.step();
        }
        // Room for the values moved plus one per change while they move (`num_buckets / STEP`
        // changes at most); twice the values when, as usual, the buckets are 8/7 of them.
        let len = self.table.len();
        let capacity = len + len.max(self.table.num_buckets() / STEP);
        self.old = std::mem::replace(&mut self.table, HashTable::with_capacity(capacity));
        self.cursor = 0;
    }

    /// Moves the next [`STEP`] buckets of `old` into `table`, and frees `old` once it is empty.
    fn step(&mut self) {
        if self.old.is_empty() {
            if self.old.capacity() > 0 {
                self.old = HashTable::new();
            }
            return;
        }
        let end = (self.cursor + STEP).min(self.old.num_buckets());
        for i in self.cursor..end {
            // Removing from `old` only marks the bucket: the indices of the others stay.
            if let Ok(e) = self.old.get_bucket_entry(i) {
                let (v, _) = e.remove();
                // `table` has room (see `STEP`): no growth, no rehash.
                self.table.insert_unique(v.key(), v, |x| x.key());
            }
        }
        self.cursor = end;
        if self.old.is_empty() {
            self.old = HashTable::new();
        }
    }
}

impl<V: Keyed> Index<&u64> for BoxedMap<V> {
    type Output = V;
    fn index(&self, k: &u64) -> &V {
        self.get(k).expect("key present")
    }
}

/// Saved as the sequence of values (their keys are in them).
impl<V: Serialize> Serialize for BoxedMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.table.iter().chain(self.old.iter()))
    }
}

impl<'de, V: Keyed + Deserialize<'de>> Deserialize<'de> for BoxedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let values: Vec<Box<V>> = Deserialize::deserialize(d)?;
        let mut m = BoxedMap { table: HashTable::with_capacity(values.len()), ..BoxedMap::default() };
        for v in values {
            m.insert(v);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V(u64, String);
    impl Keyed for V {
        fn key(&self) -> u64 {
            self.0
        }
    }

    /// Against a `HashMap` over seeded random inserts, replacements and removals.
    #[test]
    fn behaves_like_a_hash_map() {
        let mut m: BoxedMap<V> = BoxedMap::new();
        let mut want: std::collections::HashMap<u64, String> = Default::default();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = xxhash_rust::xxh3::xxh3_64(&(x % 3_000).to_le_bytes());
            let tag = if i % 2 == 0 { "a" } else { "b" }.to_string();
            match x % 5 {
                0 | 1 => assert_eq!(m.insert(Box::new(V(k, tag.clone()))).map(|b| b.1), want.insert(k, tag)),
                2 => assert_eq!(m.remove(&k).map(|b| b.1), want.remove(&k)),
                _ => assert_eq!(m.get(&k).map(|v| &v.1), want.get(&k)),
            }
            assert_eq!(m.len(), want.len());
        }
        for (k, v) in &want {
            assert_eq!(m[k].1, *v);
            assert!(m.contains_key(k));
        }
        assert_eq!(m.values().count(), want.len());
        // A checkpoint round trip keeps every value under its key.
        let back: BoxedMap<V> = bincode::deserialize(&bincode::serialize(&m).unwrap()).unwrap();
        assert_eq!(back.len(), want.len());
        for (k, v) in &want {
            assert_eq!(&back[k].1, v);
        }
    }

    /// Past [`INCREMENTAL_FROM`] values the map grows a few buckets per change: against a
    /// `HashMap` over seeded inserts, removals, lookups and changes while values are being
    /// moved, and with a checkpoint taken mid-move.
    #[test]
    fn grows_incrementally_and_stays_a_map() {
        let mut m: BoxedMap<V> = BoxedMap::new();
        let mut want: std::collections::HashMap<u64, String> = Default::default();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let (mut moving, mut most_old) = (0, 0);
        for i in 0..300_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly new keys (the table grows), some old ones changed or removed.
            let k = xxhash_rust::xxh3::xxh3_64(&(x % (i + 1)).to_le_bytes());
            match x % 8 {
                0 => assert_eq!(m.remove(&k).map(|b| b.1), want.remove(&k)),
                1 => {
                    if let Some(v) = m.get_mut(&k) {
                        v.1.push('!');
                    }
                    if let Some(v) = want.get_mut(&k) {
                        v.push('!');
                    }
                }
                2 => assert_eq!(m.get(&k).map(|v| &v.1), want.get(&k)),
                // A key known to be absent goes in with one probe; `insert` replaces.
                _ if !want.contains_key(&k) => {
                    assert_eq!(m.insert_new(Box::new(V(k, i.to_string()))).1, i.to_string());
                    want.insert(k, i.to_string());
                }
                _ => assert_eq!(m.insert(Box::new(V(k, i.to_string()))).map(|b| b.1), want.insert(k, i.to_string())),
            }
            if !m.old.is_empty() {
                moving += 1;
                most_old = most_old.max(m.old.len());
                if moving == 500 {
                    let back: BoxedMap<V> = bincode::deserialize(&bincode::serialize(&m).unwrap()).unwrap();
                    assert_eq!(back.len(), want.len());
                    assert!(want.iter().all(|(k, v)| back.get(k).map(|b| &b.1) == Some(v)));
                }
            }
            assert_eq!(m.len(), want.len());
        }
        // Values were moved over many changes, not in one.
        assert!(moving > 2_000 && most_old >= INCREMENTAL_FROM, "moving {moving}, old {most_old}");
        assert!(m.table.capacity() >= m.len());
        assert_eq!(m.values().count(), want.len());
        assert_eq!(m.keys().collect::<std::collections::HashSet<_>>(), want.keys().copied().collect());
        for (k, v) in &want {
            assert_eq!(&m[k].1, v);
        }
        // A finished move gives `old`'s memory back.
        while !m.old.is_empty() {
            m.step();
        }
        m.step();
        assert_eq!(m.old.capacity(), 0);
    }
}
