//! Bounds on keyed state (DESIGN §4, "Bounded state"): a time-to-live in event time and a cap
//! on the keys one operator holds, with a policy for a full state.
//!
//! The TTL is part of an operator's semantics and is deterministic: a key with no record for
//! longer than `ttl` of event time starts afresh on its next record, whenever the sweep that
//! frees its memory happens to run (the sweep only removes keys that the rule would reset
//! anyway: their last record plus `ttl` lies before every record still to come).
//!
//! The cap is a safety net against unbounded key cardinality, not a semantic: it is split
//! evenly over the workers (keys are spread by hash), so which key is evicted or rejected
//! depends on the worker count once a cap is hit. Every eviction, rejection and expiry is
//! counted ([`crate::OperatorStats`]) and reported in `/metrics` and the run summary.

use std::collections::BTreeSet;

use alertflow_model::DurationMs;
use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// What a full state does with a record of a new key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Evict the key seen least recently (in event time), then admit the new one.
    EvictOldest,
    /// Drop the new key's record (counted as rejected).
    RejectNew,
}

impl OnFull {
    fn name(self) -> &'static str {
        match self {
            OnFull::EvictOldest => "evict_oldest",
            OnFull::RejectNew => "reject_new",
        }
    }
}

/// The `state = { … }` table of an operator's section. Absent fields take the operator's
/// defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// The most keys the operator holds, over all workers.
    #[serde(default)]
    pub max_keys: Option<u64>,
    /// A key with no record for this long (event time) is forgotten.
    #[serde(default)]
    pub ttl: Option<DurationMs>,
    /// The policy once `max_keys` is reached.
    #[serde(default)]
    pub on_full: Option<OnFull>,
}

/// What an operator's state supports, and its defaults.
#[derive(Clone, Copy, Debug)]
pub struct StateDefaults {
    /// The default cap (all workers).
    pub max_keys: u64,
    /// The default TTL; `None`: the operator's state ends by itself (windows close, sessions
    /// end after their gap), and a `ttl` is refused.
    pub ttl: Option<DurationMs>,
    /// The default policy.
    pub on_full: OnFull,
    /// The policies the operator offers (evicting a window's partial aggregate would emit a
    /// wrong row, so windows only reject).
    pub policies: &'static [OnFull],
}

/// Validated bounds of one operator (all workers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StateLimits {
    /// The cap over all workers.
    pub max_keys: u64,
    /// TTL in ms, when the operator has one.
    pub ttl: Option<i64>,
    /// The policy at the cap.
    pub on_full: OnFull,
}

impl StateLimits {
    /// Validates `cfg` against what the operator supports; errors name `state.<field>`.
    pub fn new(cfg: &StateConfig, d: StateDefaults) -> Result<StateLimits, Vec<ConfigError>> {
        let mut errs = Vec::new();
        let max_keys = cfg.max_keys.unwrap_or(d.max_keys);
        if max_keys == 0 {
            errs.push(ConfigError::new("state.max_keys", "must be at least 1"));
        }
        let ttl = match (cfg.ttl, d.ttl) {
            (Some(_), None) => {
                errs.push(ConfigError::new(
                    "state.ttl",
                    "this operator's state ends by itself (windows close, sessions end); it takes no ttl",
                ));
                None
            }
            (Some(t), Some(_)) if t.millis() == 0 => {
                errs.push(ConfigError::new("state.ttl", "must be longer than 0s"));
                None
            }
            (t, default) => t.or(default).map(|t| t.millis().min(i64::MAX as u64) as i64),
        };
        let on_full = cfg.on_full.unwrap_or(d.on_full);
        if !d.policies.contains(&on_full) {
            let offered: Vec<&str> = d.policies.iter().map(|p| p.name()).collect();
            errs.push(ConfigError::new("state.on_full", format!("`{}` is not offered here; use {}", on_full.name(), offered.join(" or "))));
        }
        if errs.is_empty() { Ok(StateLimits { max_keys, ttl, on_full }) } else { Err(errs) }
    }

    /// One worker's share of the cap (at least 1).
    pub fn per_worker(&self, workers: usize) -> usize {
        let w = workers.max(1) as u64;
        (self.max_keys.div_ceil(w)).min(usize::MAX as u64).max(1) as usize
    }

    /// Whether a key last seen at `last` has expired for a record at `ts`.
    #[inline]
    pub fn expired(&self, last: i64, ts: i64) -> bool {
        self.ttl.is_some_and(|ttl| ts.saturating_sub(last) > ttl)
    }
}

/// The keys of a state ordered by when they were last seen, kept lazily: a key is queued at
/// the time it was last seen *when queued*, and its map keeps the true time. A key seen again
/// is not re-queued (that would cost a tree update per record); when it reaches the front, it
/// is re-queued at its true time. The front key whose queued time is its true time is then the
/// least recently seen one (ties by key), whatever the order of updates: a state rebuilt from
/// a checkpoint picks the same victims.
#[derive(Debug)]
pub struct Recency<K> {
    queue: BTreeSet<(i64, K)>,
}

impl<K> Default for Recency<K> {
    fn default() -> Self {
        Recency { queue: BTreeSet::new() }
    }
}

impl<K: Ord + Clone> Recency<K> {
    /// Queues a new key, last seen at `at`.
    pub fn insert(&mut self, at: i64, key: K) {
        self.queue.insert((at, key));
    }

    /// Rebuilds the queue from a restored state.
    pub fn rebuild(entries: impl IntoIterator<Item = (i64, K)>) -> Self {
        Recency { queue: entries.into_iter().collect() }
    }

    /// Removes and returns the least recently seen key, given each key's true last time
    /// (`None`: the key left the state otherwise).
    pub fn pop_oldest(&mut self, last_of: impl Fn(&K) -> Option<i64>) -> Option<K> {
        while let Some((at, key)) = self.queue.pop_first() {
            match last_of(&key) {
                Some(last) if last == at => return Some(key),
                Some(last) => {
                    self.queue.insert((last, key));
                }
                None => {}
            }
        }
        None
    }

    /// Removes and returns every key last seen before `before`.
    pub fn pop_before(&mut self, before: i64, last_of: impl Fn(&K) -> Option<i64>) -> Vec<K> {
        let mut gone = Vec::new();
        while let Some((at, _)) = self.queue.first() {
            if *at >= before {
                break;
            }
            let (_, key) = self.queue.pop_first().expect("non-empty");
            match last_of(&key) {
                Some(last) if last < before => gone.push(key),
                Some(last) => {
                    self.queue.insert((last, key));
                }
                None => {}
            }
        }
        gone
    }

    /// Keys queued (at least the keys held).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const DETECT: StateDefaults = StateDefaults {
        max_keys: 10,
        ttl: Some(DurationMs(1000)),
        on_full: OnFull::EvictOldest,
        policies: &[OnFull::EvictOldest, OnFull::RejectNew],
    };
    const WINDOWS: StateDefaults = StateDefaults { max_keys: 10, ttl: None, on_full: OnFull::RejectNew, policies: &[OnFull::RejectNew] };

    #[test]
    fn config_errors_name_the_field() {
        let bad = StateConfig { max_keys: Some(0), ttl: Some(DurationMs(5)), on_full: Some(OnFull::EvictOldest) };
        let errs: Vec<String> = StateLimits::new(&bad, WINDOWS).unwrap_err().iter().map(|e| e.to_string()).collect();
        let all = errs.join("\n");
        for want in [
            "state.max_keys: must be at least 1",
            "state.ttl: this operator's state ends by itself",
            "state.on_full: `evict_oldest` is not offered here; use reject_new",
        ] {
            assert!(all.contains(want), "missing `{want}` in\n{all}");
        }
        let zero = StateConfig { ttl: Some(DurationMs(0)), ..Default::default() };
        assert!(StateLimits::new(&zero, DETECT).unwrap_err()[0].to_string().contains("state.ttl: must be longer than 0s"));
        let ok = StateLimits::new(&StateConfig::default(), DETECT).unwrap();
        assert_eq!(ok, StateLimits { max_keys: 10, ttl: Some(1000), on_full: OnFull::EvictOldest });
        assert_eq!(ok.per_worker(3), 4);
        assert!(ok.expired(0, 1001) && !ok.expired(0, 1000));
    }

    /// The lazy queue against a naive one: a map of last times, the victim its least (time,
    /// key), over random touches; expiry sweeps return exactly the keys last seen before.
    #[test]
    fn lazy_queue_picks_the_least_recently_seen_key() {
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        let mut last: BTreeMap<u32, i64> = BTreeMap::new();
        let mut q: Recency<u32> = Recency::default();
        let mut now = 0i64;
        for step in 0..20_000 {
            now += (next() % 3) as i64;
            let k = (next() % 50) as u32;
            match last.get_mut(&k) {
                Some(t) => *t = (*t).max(now),
                None => {
                    last.insert(k, now);
                    q.insert(now, k);
                }
            }
            if step % 97 == 0 && !last.is_empty() {
                let want = last.iter().map(|(k, t)| (*t, *k)).min().map(|(_, k)| k);
                let got = q.pop_oldest(|k| last.get(k).copied());
                assert_eq!(got, want, "step {step}");
                last.remove(&got.unwrap());
            }
            if step % 331 == 0 {
                let before = now - 20;
                let mut want: Vec<u32> = last.iter().filter(|(_, t)| **t < before).map(|(k, _)| *k).collect();
                let mut got = q.pop_before(before, |k| last.get(k).copied());
                want.sort();
                got.sort();
                assert_eq!(got, want, "step {step}");
                for k in got {
                    last.remove(&k);
                }
            }
        }
        // A rebuilt queue picks the same victim.
        let mut rebuilt = Recency::rebuild(last.iter().map(|(k, t)| (*t, *k)));
        let a = rebuilt.pop_oldest(|k| last.get(k).copied());
        let b = q.pop_oldest(|k| last.get(k).copied());
        assert_eq!(a, b);
    }
}
