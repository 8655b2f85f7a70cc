//! Silences: matchers that mute the alerts they match over an event-time interval
//! `[starts_at, ends_at)`.
//!
//! Validation follows Alertmanager (`silence/silence.go`, `api/v2`): an id, at least one
//! matcher, not only matchers that match the empty string (such a silence would mute every
//! alert), and an end after the start. Expiring a silence ends it at the given time; a silence
//! that has not started yet is ended before it begins.

use std::collections::BTreeMap;

use alertflow_model::time::Millis;
use serde::{Deserialize, Serialize};

use crate::labels::Labels;
use crate::matcher::Matchers;

/// Why a silence is refused or cannot be changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SilenceError {
    /// The id is empty.
    #[error("a silence needs an id")]
    MissingId,
    /// No matchers.
    #[error("silence `{0}` needs at least one matcher")]
    NoMatchers(String),
    /// Every matcher matches the empty string, so the silence would mute every alert.
    #[error("silence `{0}`: at least one matcher must not match the empty string")]
    OnlyEmptyMatchers(String),
    /// `ends_at` is not after `starts_at`.
    #[error("silence `{id}`: ends_at ({ends_at}) must be after starts_at ({starts_at})")]
    EndsBeforeStart {
        /// The silence.
        id: String,
        /// Its start.
        starts_at: Millis,
        /// Its end.
        ends_at: Millis,
    },
    /// A silence with this id exists already.
    #[error("silence `{0}` exists already")]
    Duplicate(String),
    /// No silence has this id.
    #[error("no silence `{0}`")]
    NotFound(String),
    /// The silence had already ended at the expiry time.
    #[error("silence `{0}` has already expired")]
    AlreadyExpired(String),
}

/// Where a silence stands at some time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SilenceState {
    /// Not started yet (`t < starts_at`).
    Pending,
    /// Muting (`starts_at <= t < ends_at`).
    Active,
    /// Over (`t >= ends_at`).
    Expired,
}

/// One silence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Silence {
    /// Unique id.
    pub id: String,
    /// Alerts matching all of these are muted while the silence is active.
    pub matchers: Matchers,
    /// Event time the silence starts muting (inclusive, ms).
    pub starts_at: Millis,
    /// Event time the silence stops muting (exclusive, ms).
    pub ends_at: Millis,
    /// Who created it.
    #[serde(default)]
    pub created_by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
}

impl Silence {
    /// Checks the silence as Alertmanager does before accepting it.
    pub fn validate(&self) -> Result<(), SilenceError> {
        if self.id.is_empty() {
            return Err(SilenceError::MissingId);
        }
        if self.matchers.is_empty() {
            return Err(SilenceError::NoMatchers(self.id.clone()));
        }
        if self.matchers.all_match_empty() {
            return Err(SilenceError::OnlyEmptyMatchers(self.id.clone()));
        }
        if self.ends_at <= self.starts_at {
            return Err(SilenceError::EndsBeforeStart { id: self.id.clone(), starts_at: self.starts_at, ends_at: self.ends_at });
        }
        Ok(())
    }

    /// The silence's state at `t`.
    pub fn state_at(&self, t: Millis) -> SilenceState {
        if t < self.starts_at {
            SilenceState::Pending
        } else if t < self.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }

    /// Whether the silence mutes an alert with these labels at `t`.
    pub fn mutes<L: Labels + ?Sized>(&self, labels: &L, t: Millis) -> bool {
        self.state_at(t) == SilenceState::Active && self.matchers.matches(labels)
    }
}

/// A set of silences by id. Serializable, for checkpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Silences {
    by_id: BTreeMap<String, Silence>,
}

impl Silences {
    /// No silences.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a valid silence with a new id.
    pub fn add(&mut self, s: Silence) -> Result<(), SilenceError> {
        s.validate()?;
        if self.by_id.contains_key(&s.id) {
            return Err(SilenceError::Duplicate(s.id));
        }
        self.by_id.insert(s.id.clone(), s);
        Ok(())
    }

    /// Ends silence `id` at `t`: an active one gets `ends_at = t`, a pending one is ended
    /// before it starts (`starts_at = ends_at = t`, as Alertmanager does). An expired one is
    /// an error.
    pub fn expire(&mut self, id: &str, t: Millis) -> Result<(), SilenceError> {
        let s = self.by_id.get_mut(id).ok_or_else(|| SilenceError::NotFound(id.to_string()))?;
        match s.state_at(t) {
            SilenceState::Expired => return Err(SilenceError::AlreadyExpired(id.to_string())),
            SilenceState::Pending => s.starts_at = t,
            SilenceState::Active => {}
        }
        s.ends_at = t;
        Ok(())
    }

    /// The silence with this id.
    pub fn get(&self, id: &str) -> Option<&Silence> {
        self.by_id.get(id)
    }

    /// The ids of the silences muting an alert with these labels at `t`, sorted.
    pub fn silenced_by<L: Labels + ?Sized>(&self, labels: &L, t: Millis) -> Vec<&str> {
        // A scan: silences are few (tens to hundreds) next to alerts, and an index by matcher
        // would have to handle regex and negative matchers anyway.
        self.by_id.values().filter(|s| s.mutes(labels, t)).map(|s| s.id.as_str()).collect()
    }

    /// Whether any silence mutes an alert with these labels at `t`.
    pub fn is_silenced<L: Labels + ?Sized>(&self, labels: &L, t: Millis) -> bool {
        self.by_id.values().any(|s| s.mutes(labels, t))
    }

    /// Forgets silences that ended at or before `t`; returns how many.
    pub fn remove_ended(&mut self, t: Millis) -> usize {
        let before = self.by_id.len();
        self.by_id.retain(|_, s| s.ends_at > t);
        before - self.by_id.len()
    }

    /// All silences, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Silence> {
        self.by_id.values()
    }

    /// How many silences are held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silence(id: &str, matchers: &str, starts_at: Millis, ends_at: Millis) -> Silence {
        Silence {
            id: id.into(),
            matchers: matchers.parse().unwrap(),
            starts_at,
            ends_at,
            created_by: "ops".into(),
            comment: "maintenance".into(),
        }
    }

    #[test]
    fn validation_follows_alertmanager() {
        assert_eq!(silence("", "a=b", 0, 1).validate(), Err(SilenceError::MissingId));
        assert_eq!(silence("s", "{}", 0, 1).validate(), Err(SilenceError::NoMatchers("s".into())));
        for only_empty in [r#"a="""#, r#"a=~".*""#, r#"a!="x""#, r#"{a="", b=~"x|"}"#, r#"a!~".+""#] {
            assert_eq!(silence("s", only_empty, 0, 1).validate(), Err(SilenceError::OnlyEmptyMatchers("s".into())), "{only_empty}");
        }
        assert_eq!(silence("s", r#"{a="", b="x"}"#, 0, 1).validate(), Ok(()), "one non-empty matcher suffices");
        assert_eq!(silence("s", r#"a!="""#, 0, 1).validate(), Ok(()));
        assert!(matches!(silence("s", "a=b", 5, 5).validate(), Err(SilenceError::EndsBeforeStart { .. })));
        assert!(matches!(silence("s", "a=b", 5, 4).validate(), Err(SilenceError::EndsBeforeStart { .. })));
    }

    #[test]
    fn active_over_a_half_open_interval() {
        let mut s = Silences::new();
        s.add(silence("db", r#"team="db""#, 100, 200)).unwrap();
        s.add(silence("page", r#"severity=~"page|critical""#, 150, 300)).unwrap();
        assert_eq!(s.add(silence("db", "a=b", 0, 1)), Err(SilenceError::Duplicate("db".into())));
        let alert = [("team", "db"), ("severity", "critical")];
        let at = |t| s.silenced_by(&alert, t);
        assert_eq!(at(99), Vec::<&str>::new());
        assert_eq!(at(100), ["db"]);
        assert_eq!(at(150), ["db", "page"]);
        assert_eq!(at(199), ["db", "page"]);
        assert_eq!(at(200), ["page"], "ends_at is exclusive");
        assert_eq!(at(300), Vec::<&str>::new());
        assert!(s.silenced_by(&[("team", "web")], 150).is_empty());
        assert_eq!(s.get("db").unwrap().state_at(50), SilenceState::Pending);
    }

    #[test]
    fn expiring() {
        let mut s = Silences::new();
        s.add(silence("a", "x=1", 100, 200)).unwrap();
        s.add(silence("b", "x=1", 500, 600)).unwrap();
        s.expire("a", 150).unwrap();
        assert_eq!(s.get("a").map(|a| (a.starts_at, a.ends_at)), Some((100, 150)));
        assert_eq!(s.silenced_by(&[("x", "1")], 149), ["a"]);
        assert!(!s.is_silenced(&[("x", "1")], 150), "expired at 150 stops muting at 150");
        assert_eq!(s.expire("a", 160), Err(SilenceError::AlreadyExpired("a".into())));
        s.expire("b", 160).unwrap();
        assert_eq!(s.get("b").map(|b| (b.starts_at, b.ends_at)), Some((160, 160)), "a pending silence never starts");
        assert!(!s.is_silenced(&[("x", "1")], 550));
        assert_eq!(s.expire("zz", 0), Err(SilenceError::NotFound("zz".into())));
        assert_eq!(s.remove_ended(160), 2);
        assert!(s.is_empty());
    }

    #[test]
    fn serde_round_trip() {
        let mut s = Silences::new();
        s.add(silence("a", r#"{team=~"db|infra", env!="dev"}"#, 1, 2)).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        let back: Silences = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let from_toml: Silence = toml::from_str(
            r#"
            id = "x"
            matchers = ['team=~"db|infra"', 'env!="dev"']
            starts_at = 1
            ends_at = 2
            created_by = "ops"
            comment = "maintenance"
            "#,
        )
        .unwrap();
        assert_eq!(&from_toml.matchers, &s.get("a").unwrap().matchers);
    }
}
