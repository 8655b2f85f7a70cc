//! The one thing matchers, routes and inhibition need from an alert's labels: a lookup by name
//! (and, for `group_by = ["..."]`, a walk over all of them).

use std::collections::{BTreeMap, HashMap};

use alertflow_model::labels::LabelSet;

/// Read access to a set of labels.
///
/// Alertmanager's data model has no difference between a missing label and one with an empty
/// value; callers of [`Labels::get`] treat `None` as `""` where that matters (matchers,
/// `equal` of inhibit rules).
pub trait Labels {
    /// The value of label `name`, if present.
    fn get(&self, name: &str) -> Option<&str>;
    /// Calls `f` with every `(name, value)` pair, each name once.
    fn for_each_label(&self, f: &mut dyn FnMut(&str, &str));
}

impl Labels for LabelSet {
    fn get(&self, name: &str) -> Option<&str> {
        LabelSet::get(self, name).map(|v| &**v)
    }
    fn for_each_label(&self, f: &mut dyn FnMut(&str, &str)) {
        for (k, v) in self.labels() {
            f(k, v);
        }
    }
}

impl Labels for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
    fn for_each_label(&self, f: &mut dyn FnMut(&str, &str)) {
        for (k, v) in self {
            f(k, v);
        }
    }
}

impl<S: std::hash::BuildHasher> Labels for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
    fn for_each_label(&self, f: &mut dyn FnMut(&str, &str)) {
        for (k, v) in self {
            f(k, v);
        }
    }
}

/// Pairs in any order. As in [`LabelSet::new`], the last of duplicate names wins.
impl<K: AsRef<str>, V: AsRef<str>> Labels for [(K, V)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter().rev().find(|(k, _)| k.as_ref() == name).map(|(_, v)| v.as_ref())
    }
    fn for_each_label(&self, f: &mut dyn FnMut(&str, &str)) {
        for (i, (k, v)) in self.iter().enumerate() {
            // Skip a pair shadowed by a later one of the same name: each name once.
            if !self[i + 1..].iter().any(|(k2, _)| k2.as_ref() == k.as_ref()) {
                f(k.as_ref(), v.as_ref());
            }
        }
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Labels for Vec<(K, V)> {
    fn get(&self, name: &str) -> Option<&str> {
        Labels::get(self.as_slice(), name)
    }
    fn for_each_label(&self, f: &mut dyn FnMut(&str, &str)) {
        self.as_slice().for_each_label(f)
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> Labels for [(K, V); N] {
    fn get(&self, name: &str) -> Option<&str> {
        Labels::get(self.as_slice(), name)
    }
    fn for_each_label(&self, f: &mut dyn FnMut(&str, &str)) {
        self.as_slice().for_each_label(f)
    }
}

impl<T: Labels + ?Sized> Labels for &T {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }
    fn for_each_label(&self, f: &mut dyn FnMut(&str, &str)) {
        (**self).for_each_label(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<L: Labels + ?Sized>(l: &L) {
        assert_eq!(l.get("a"), Some("1"));
        assert_eq!(l.get("b"), Some("3"), "the last duplicate wins, as in LabelSet::new");
        assert_eq!(l.get("c"), None);
        let mut v = Vec::new();
        l.for_each_label(&mut |k, val| v.push((k.to_string(), val.to_string())));
        v.sort();
        assert_eq!(v, vec![("a".to_string(), "1".to_string()), ("b".to_string(), "3".to_string())]);
    }

    #[test]
    fn every_implementation_agrees() {
        let pairs = [("b", "2"), ("a", "1"), ("b", "3")];
        let set = LabelSet::new("t", &pairs);
        let map: BTreeMap<String, String> = [("a", "1"), ("b", "3")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let owned: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        check(&set);
        check(&map);
        check(&owned);
        check(&pairs);
        check(pairs.as_slice());
        check(&&set);
    }
}
