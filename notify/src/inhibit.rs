//! Inhibition: a firing *source* alert mutes the *target* alerts that agree with it on the
//! rule's `equal` labels (Alertmanager's `inhibit_rules`).
//!
//! Semantics, from Alertmanager's documentation and `inhibit/inhibit.go`:
//! - a target is inhibited when some rule's `target_matchers` match it and a firing alert
//!   matching the rule's `source_matchers` has the same value for every `equal` label, a
//!   missing label counting as the empty string (so absent equals absent);
//! - "to prevent an alert from inhibiting itself, an alert that matches both the target and
//!   the source side of a rule cannot be inhibited by alerts for which the same is true
//!   (including itself)".
//!
//! [`Inhibitor`] is incremental: callers report alerts starting and stopping to fire, and each
//! rule indexes its firing sources by their `equal` values, so a check looks up one bucket per
//! rule instead of scanning every firing alert.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ConfigErrors, ConfigProblem};
use crate::labels::Labels;
use crate::matcher::{Matchers, parse_matchers};

/// One inhibition rule as configured (TOML).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    /// Matchers the inhibiting (source) alert must satisfy.
    #[serde(default)]
    pub source_matchers: Vec<String>,
    /// Matchers the inhibited (target) alert must satisfy.
    #[serde(default)]
    pub target_matchers: Vec<String>,
    /// Labels whose values must be equal on source and target (a missing label equals an
    /// empty or missing one).
    #[serde(default)]
    pub equal: Vec<String>,
}

/// A validated inhibition rule.
#[derive(Clone, Debug, PartialEq)]
pub struct InhibitRule {
    source: Matchers,
    target: Matchers,
    /// Sorted and unique: the order of the index key.
    equal: Vec<String>,
}

impl InhibitRule {
    /// Validates one rule; error paths start with `path` (e.g. `inhibit_rules[0]`).
    pub fn new(c: &InhibitRuleConfig, path: &str) -> Result<InhibitRule, ConfigErrors> {
        let mut errors = Vec::new();
        let mut side = |field: &str, lines: &[String]| {
            let mut out = Vec::new();
            for (i, l) in lines.iter().enumerate() {
                match parse_matchers(l) {
                    Ok(ms) => out.extend(ms),
                    Err(e) => errors.push(ConfigError::new(format!("{path}.{field}[{i}]"), e)),
                }
            }
            Matchers(out)
        };
        let source = side("source_matchers", &c.source_matchers);
        let target = side("target_matchers", &c.target_matchers);
        let mut equal: Vec<String> = Vec::with_capacity(c.equal.len());
        for (i, l) in c.equal.iter().enumerate() {
            if l.is_empty() {
                errors.push(ConfigError::new(format!("{path}.equal[{i}]"), ConfigProblem::EmptyLabelName));
            } else if equal.contains(l) {
                errors.push(ConfigError::new(format!("{path}.equal[{i}]"), ConfigProblem::DuplicateLabel(l.clone())));
            } else {
                equal.push(l.clone());
            }
        }
        equal.sort();
        ConfigErrors::check(errors, InhibitRule { source, target, equal })
    }

    /// The source matchers.
    pub fn source_matchers(&self) -> &Matchers {
        &self.source
    }
    /// The target matchers.
    pub fn target_matchers(&self) -> &Matchers {
        &self.target
    }
    /// The `equal` labels, sorted.
    pub fn equal(&self) -> &[String] {
        &self.equal
    }

    /// The index key of an alert: its `equal` values in label order, missing as `""`.
    fn key<L: Labels + ?Sized>(&self, labels: &L) -> EqualKey {
        self.equal.iter().map(|n| labels.get(n).unwrap_or("").to_string()).collect()
    }
}

/// An alert's `equal` label values under one rule, in label order, missing as `""`.
type EqualKey = Box<[String]>;

/// The firing sources of one rule with one `equal` key.
#[derive(Default, Debug)]
struct Bucket {
    /// Sources that match only the source side.
    source_only: BTreeSet<u64>,
    /// Sources that match both sides: they cannot inhibit targets that match both sides too.
    both_sides: BTreeSet<u64>,
}

/// Inhibition rules with an index of the firing alerts that match their source side.
#[derive(Debug)]
pub struct Inhibitor {
    rules: Vec<InhibitRule>,
    /// Per rule: firing sources by `equal` key.
    index: Vec<HashMap<EqualKey, Bucket>>,
    /// Per firing source alert: the (rule, key) buckets it is in, to take it out again.
    entries: HashMap<u64, Vec<(usize, EqualKey)>>,
}

impl Inhibitor {
    /// An inhibitor of validated rules.
    pub fn new(rules: Vec<InhibitRule>) -> Inhibitor {
        let index = rules.iter().map(|_| HashMap::new()).collect();
        Inhibitor { rules, index, entries: HashMap::new() }
    }

    /// Validates configured rules (paths `inhibit_rules[i]…`), reporting every error.
    pub fn from_config(rules: &[InhibitRuleConfig]) -> Result<Inhibitor, ConfigErrors> {
        let mut ok = Vec::with_capacity(rules.len());
        let mut errors = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            match InhibitRule::new(r, &format!("inhibit_rules[{i}]")) {
                Ok(r) => ok.push(r),
                Err(e) => errors.extend(e.0),
            }
        }
        ConfigErrors::check(errors, ()).map(|()| Inhibitor::new(ok))
    }

    /// The rules.
    pub fn rules(&self) -> &[InhibitRule] {
        &self.rules
    }

    /// Records whether the alert `fingerprint` (with these labels) is firing. Call it whenever
    /// an alert starts firing, resolves, or changes labels; an alert that resolves can no
    /// longer inhibit.
    pub fn set_firing<L: Labels + ?Sized>(&mut self, fingerprint: u64, labels: &L, firing: bool) {
        if let Some(old) = self.entries.remove(&fingerprint) {
            for (rule, key) in old {
                let map = &mut self.index[rule];
                if let Some(b) = map.get_mut(&key) {
                    b.source_only.remove(&fingerprint);
                    b.both_sides.remove(&fingerprint);
                    if b.source_only.is_empty() && b.both_sides.is_empty() {
                        map.remove(&key);
                    }
                }
            }
        }
        if !firing {
            return;
        }
        let mut mine = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.source.matches(labels) {
                continue;
            }
            let key = rule.key(labels);
            let bucket = self.index[i].entry(key.clone()).or_default();
            if rule.target.matches(labels) { &mut bucket.both_sides } else { &mut bucket.source_only }.insert(fingerprint);
            mine.push((i, key));
        }
        if !mine.is_empty() {
            self.entries.insert(fingerprint, mine);
        }
    }

    /// Whether the alert is inhibited by a firing alert.
    pub fn is_inhibited<L: Labels + ?Sized>(&self, fingerprint: u64, labels: &L) -> bool {
        self.inhibited_by(fingerprint, labels).is_some()
    }

    /// A firing alert that inhibits this one: of the first rule that inhibits it, the smallest
    /// fingerprint (so the answer is deterministic).
    pub fn inhibited_by<L: Labels + ?Sized>(&self, fingerprint: u64, labels: &L) -> Option<u64> {
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.target.matches(labels) {
                continue;
            }
            let Some(bucket) = self.index[i].get(&rule.key(labels)) else { continue };
            // A target that matches the source side too is not inhibited by sources for
            // which the same is true, itself included.
            let exclude_both = rule.source.matches(labels);
            let other = |set: &BTreeSet<u64>| set.iter().copied().find(|&fp| fp != fingerprint);
            let a = other(&bucket.source_only);
            let b = if exclude_both { None } else { other(&bucket.both_sides) };
            if let Some(fp) = a.into_iter().chain(b).min() {
                return Some(fp);
            }
        }
        None
    }

    /// How many alerts are indexed as firing sources.
    pub fn firing_sources(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(source: &str, target: &str, equal: &[&str]) -> InhibitRuleConfig {
        InhibitRuleConfig {
            source_matchers: vec![source.into()],
            target_matchers: vec![target.into()],
            equal: equal.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Alertmanager's `TestInhibitRuleMatches` (inhibit/inhibit_test.go).
    #[test]
    fn alertmanager_rule_matches() {
        let mut ih = Inhibitor::from_config(&[rule("s1=1", "t1=1", &["e"]), rule("s2=1", "t2=1", &["e"])]).unwrap();
        // Active alert that matches the source filter of rule1.
        ih.set_firing(1, &[("s1", "1"), ("t1", "2"), ("e", "1")], true);
        // Active alert that matches the source filter _and_ the target filter of rule2.
        ih.set_firing(2, &[("s2", "1"), ("t2", "1"), ("e", "1")], true);
        let cases: [(&[(&str, &str)], bool); 8] = [
            (&[("t1", "1"), ("e", "1")], true),
            (&[("t2", "1"), ("e", "1")], true),
            (&[("t1", "1"), ("t3", "1"), ("e", "1")], true),
            (&[("t1", "1"), ("t2", "1"), ("e", "1")], true),
            (&[("t1", "0"), ("e", "1")], false),
            // Both sides of rule1: inhibited, since alert 1 matches only the source side.
            (&[("s1", "1"), ("t1", "1"), ("e", "1")], true),
            // Both sides of rule2: not inhibited, since alert 2 matches both sides too.
            (&[("s2", "1"), ("t2", "1"), ("e", "1")], false),
            (&[("t1", "1"), ("e", "0")], false),
        ];
        for (target, want) in cases {
            assert_eq!(ih.is_inhibited(100, target), want, "{target:?}");
        }
    }

    /// Alertmanager's `TestInhibitRuleMatchers`: the same with `!=` target matchers.
    #[test]
    fn alertmanager_rule_matchers() {
        let mut ih = Inhibitor::from_config(&[rule("s1=1", "t1!=1", &["e"]), rule("s2=1", "t2=1", &["e"])]).unwrap();
        ih.set_firing(1, &[("s1", "1"), ("t1", "2"), ("e", "1")], true);
        ih.set_firing(2, &[("s2", "1"), ("t2", "1"), ("e", "1")], true);
        let cases: [(&[(&str, &str)], bool); 8] = [
            (&[("t1", "1"), ("e", "1")], false),
            (&[("t2", "1"), ("e", "1")], true),
            (&[("t1", "1"), ("t3", "1"), ("e", "1")], false),
            (&[("t1", "1"), ("t2", "1"), ("e", "1")], true),
            (&[("t1", "0"), ("e", "1")], true),
            (&[("s1", "1"), ("t1", "1"), ("e", "1")], false),
            (&[("s2", "1"), ("t2", "1"), ("e", "1")], true),
            (&[("t1", "1"), ("e", "0")], false),
        ];
        for (target, want) in cases {
            assert_eq!(ih.is_inhibited(100, target), want, "{target:?}");
        }
    }

    /// Alertmanager's `TestInhibit`: a source inhibits only while it fires.
    #[test]
    fn only_firing_sources_inhibit() {
        let mut ih = Inhibitor::from_config(&[rule("s=1", "t=1", &["e"])]).unwrap();
        let one = [("t", "1"), ("e", "f")];
        let two = [("s", "1"), ("e", "f")];
        assert!(!ih.is_inhibited(1, &one));
        ih.set_firing(2, &two, true);
        assert_eq!(ih.inhibited_by(1, &one), Some(2));
        assert!(!ih.is_inhibited(2, &two));
        ih.set_firing(2, &two, false);
        assert!(!ih.is_inhibited(1, &one));
        assert_eq!(ih.firing_sources(), 0);
        assert!(ih.index[0].is_empty(), "empty buckets are dropped");
    }

    #[test]
    fn an_alert_matching_both_sides_does_not_inhibit_itself() {
        // Everything inhibits everything else of the same cluster.
        let mut ih = Inhibitor::from_config(&[rule("{}", "{}", &["cluster"])]).unwrap();
        let a = [("alertname", "A"), ("cluster", "c1")];
        ih.set_firing(1, &a, true);
        assert!(!ih.is_inhibited(1, &a), "alone, it does not inhibit itself");
        ih.set_firing(2, &[("alertname", "B"), ("cluster", "c1")], true);
        assert!(!ih.is_inhibited(1, &a), "nor do others that match both sides");
        assert!(!ih.is_inhibited(3, &[("cluster", "c1"), ("x", "y")]), "a target matching both sides is never inhibited here");
    }

    #[test]
    fn relabelled_alerts_move_buckets() {
        let mut ih = Inhibitor::from_config(&[rule("severity=critical", "severity=warning", &["cluster"])]).unwrap();
        ih.set_firing(1, &[("severity", "critical"), ("cluster", "a")], true);
        ih.set_firing(1, &[("severity", "critical"), ("cluster", "b")], true);
        assert!(!ih.is_inhibited(9, &[("severity", "warning"), ("cluster", "a")]));
        assert!(ih.is_inhibited(9, &[("severity", "warning"), ("cluster", "b")]));
    }

    #[test]
    fn config_errors_name_the_rule() {
        let bad = [
            rule("a=1", "b=1", &["x"]),
            InhibitRuleConfig { source_matchers: vec!["a=".into()], target_matchers: vec![], equal: vec!["x".into(), "x".into()] },
        ];
        let errs: Vec<String> = Inhibitor::from_config(&bad).unwrap_err().0.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 2);
        assert!(errs[0].starts_with("inhibit_rules[1].source_matchers[0]: "), "{}", errs[0]);
        assert_eq!(errs[1], "inhibit_rules[1].equal[1]: label `x` is listed twice");
    }
}
