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
pub struct BoxedMap<V>(HashTable<Box<V>>);

impl<V> Default for BoxedMap<V> {
    fn default() -> Self {
        BoxedMap(HashTable::new())
    }
}

impl<V: Keyed> BoxedMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value with key `k`.
    pub fn get(&self, k: &u64) -> Option<&V> {
        self.0.find(*k, |v| v.key() == *k).map(|b| &**b)
    }

    /// The value with key `k`, to change (not its key).
    pub fn get_mut(&mut self, k: &u64) -> Option<&mut V> {
        self.0.find_mut(*k, |v| v.key() == *k).map(|b| &mut **b)
    }

    /// Whether a value has key `k`.
    pub fn contains_key(&self, k: &u64) -> bool {
        self.get(k).is_some()
    }

    /// Adds `v`, replacing and returning the value with its key if there was one.
    pub fn insert(&mut self, v: Box<V>) -> Option<Box<V>> {
        let k = v.key();
        match self.0.find_mut(k, |x| x.key() == k) {
            Some(slot) => Some(std::mem::replace(slot, v)),
            None => {
                self.0.insert_unique(k, v, |x| x.key());
                None
            }
        }
    }

    /// Removes and returns the value with key `k`.
    pub fn remove(&mut self, k: &u64) -> Option<Box<V>> {
        self.0.find_entry(*k, |v| v.key() == *k).ok().map(|e| e.remove().0)
    }

    /// How many values are held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|b| &**b)
    }

    /// The values, to change (not their keys), in no particular order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.0.iter_mut().map(|b| &mut **b)
    }

    /// The keys, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().map(|b| b.key())
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
        s.collect_seq(self.0.iter())
    }
}

impl<'de, V: Keyed + Deserialize<'de>> Deserialize<'de> for BoxedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let values: Vec<Box<V>> = Deserialize::deserialize(d)?;
        let mut m = BoxedMap(HashTable::with_capacity(values.len()));
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
}
