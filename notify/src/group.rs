//! An aggregation group's notification timing, in event time, as Alertmanager's dispatcher
//! (`dispatch/dispatch.go`, `aggrGroup`) and dedup stage (`notify.DedupStage`) do it.
//!
//! - The group is created by its first alert at `t0`; its first check ("tick") is at
//!   `t0 + group_wait`. An alert that arrives before the first tick and started more than
//!   `group_wait` ago moves the first tick to its arrival (Alertmanager's `insert`: there is
//!   no point waiting for a batch that is already over).
//! - After each tick at `n` the next is at `n + group_interval`. At a tick the group looks at
//!   its alerts: an alert is resolved when its `ends_at` is at or before the tick.
//! - It notifies (the whole group, firing and resolved) when, compared with the last
//!   notification: a firing alert is new; or nothing fires any more but something did; or an
//!   alert is newly resolved. Otherwise it repeats the last notification at the first tick at
//!   or after `last + repeat_interval`. A group that has never notified does not notify
//!   for resolved alerts alone: the receiver never heard of them.
//! - After every tick the resolved alerts are dropped, whether a notification went out or was
//!   deduplicated: each resolution is reported at most once. A group with no alerts left has
//!   nothing due and is to be removed by its owner.
//!
//! The whole state is serde-serializable: it is checkpointed with the operator.

use std::collections::{BTreeMap, BTreeSet};

use alertflow_model::time::Millis;
use serde::{Deserialize, Serialize};

use crate::route::Timings;

/// What is known of one alert in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertState {
    /// When the alert started firing.
    pub starts_at: Millis,
    /// When it ends: `None` while firing with no known end. An alert whose `ends_at` is at or
    /// before a tick is resolved at that tick (so an alert not refreshed past its announced
    /// end resolves by itself, as in Alertmanager).
    pub ends_at: Option<Millis>,
}

impl AlertState {
    /// Firing since `starts_at`.
    pub fn firing(starts_at: Millis) -> Self {
        AlertState { starts_at, ends_at: None }
    }
    /// Resolved at `ends_at`.
    pub fn resolved(starts_at: Millis, ends_at: Millis) -> Self {
        AlertState { starts_at, ends_at: Some(ends_at) }
    }
    /// Whether the alert is resolved at `t`.
    pub fn is_resolved_at(&self, t: Millis) -> bool {
        self.ends_at.is_some_and(|e| e <= t)
    }
}

/// One alert in a notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifiedAlert {
    /// The alert's fingerprint.
    pub fingerprint: u64,
    /// When it started.
    pub starts_at: Millis,
    /// When it ended; `None` for firing alerts (a future end is not announced, as in
    /// Alertmanager's flush).
    pub ends_at: Option<Millis>,
}

/// Why a notification is sent (Alertmanager's `NotifyReason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotifyReason {
    /// The first notification of the group (or the first since everything resolved).
    First,
    /// A firing alert the last notification did not have.
    NewAlerts,
    /// An alert resolved since the last notification, while others still fire.
    NewResolved,
    /// Nothing fires any more.
    AllResolved,
    /// Nothing changed, and `repeat_interval` has passed since the last notification.
    Repeat,
}

/// A notification to send for a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The group's key.
    pub group_key: String,
    /// The event time of the tick that sent it.
    pub at: Millis,
    /// The firing alerts, by fingerprint.
    pub firing: Vec<NotifiedAlert>,
    /// The resolved alerts, by fingerprint.
    pub resolved: Vec<NotifiedAlert>,
    /// Why it is sent.
    pub reason: NotifyReason,
}

impl Notification {
    /// Whether it repeats the previous notification unchanged.
    pub fn is_repeat(&self) -> bool {
        self.reason == NotifyReason::Repeat
    }
}

/// What the last notification said: Alertmanager's notification-log entry for the group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Sent {
    at: Millis,
    firing: BTreeSet<u64>,
    resolved: BTreeSet<u64>,
}

/// One aggregation group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    key: String,
    /// As milliseconds in checkpoints: `DurationMs` reads text or numbers (`deserialize_any`),
    /// which bincode cannot.
    #[serde(with = "timings_ms")]
    timings: Timings,
    /// The next tick (kept while the group is empty, as Alertmanager's timer keeps running).
    next_tick: Millis,
    /// Whether a tick happened: only before the first may a late-arriving alert advance it.
    has_flushed: bool,
    alerts: BTreeMap<u64, AlertState>,
    last: Option<Sent>,
}

impl Group {
    /// A group created at `t0` by its first alert (add that with [`Group::upsert`]).
    pub fn new(key: impl Into<String>, timings: Timings, t0: Millis) -> Group {
        Group {
            key: key.into(),
            next_tick: t0.saturating_add(ms(timings.group_wait)),
            timings,
            has_flushed: false,
            alerts: BTreeMap::new(),
            last: None,
        }
    }

    /// The group key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The timings.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// Records the state of alert `fingerprint` as received at `t` (a new alert, a refresh,
    /// or its resolution): the latest state replaces the previous one.
    pub fn upsert(&mut self, fingerprint: u64, state: AlertState, t: Millis) {
        self.alerts.insert(fingerprint, state);
        // An alert that started over group_wait ago need not wait for company.
        if !self.has_flushed && state.starts_at.saturating_add(ms(self.timings.group_wait)) < t {
            self.next_tick = self.next_tick.min(t);
        }
    }

    /// Takes alert `fingerprint` out without reporting it resolved: it moved to another group
    /// (its incident merged into another), or a storm now speaks for it. Returns whether it
    /// was there.
    pub fn remove(&mut self, fingerprint: u64) -> bool {
        self.alerts.remove(&fingerprint).is_some()
    }

    /// When the next tick is due; `None` when the group holds no alerts (remove it).
    pub fn next_due(&self) -> Option<Millis> {
        (!self.alerts.is_empty()).then_some(self.next_tick)
    }

    /// Runs the tick due at or before `t` as a tick at `t` (call it with `t = next_due()` after
    /// applying the updates up to `t`; a later `t` is a late tick, and the next one is
    /// `group_interval` after it). Returns the notification to send, if any; `None` also when
    /// nothing is due.
    pub fn flush(&mut self, t: Millis) -> Option<Notification> {
        self.flush_with(t, |_| true)
    }

    /// [`flush`](Self::flush) with the alerts for which `shown` is false left out, as
    /// Alertmanager's mute stages (inhibition, silences) drop alerts before its dedup stage:
    /// they are neither in the notification nor in what it remembers as sent, and when every
    /// alert is left out nothing is sent and nothing remembered. The tick happens anyway, and
    /// resolved alerts go whether shown or not.
    pub fn flush_with(&mut self, t: Millis, shown: impl Fn(u64) -> bool) -> Option<Notification> {
        if t < self.next_tick || self.alerts.is_empty() {
            return None;
        }
        self.next_tick = t.saturating_add(ms(self.timings.group_interval));
        self.has_flushed = true;
        let (mut firing, mut resolved) = (Vec::new(), Vec::new());
        for (&fingerprint, a) in self.alerts.iter().filter(|(fp, _)| shown(**fp)) {
            if a.is_resolved_at(t) {
                resolved.push(NotifiedAlert { fingerprint, starts_at: a.starts_at, ends_at: a.ends_at });
            } else {
                firing.push(NotifiedAlert { fingerprint, starts_at: a.starts_at, ends_at: None });
            }
        }
        let firing_set: BTreeSet<u64> = firing.iter().map(|a| a.fingerprint).collect();
        let resolved_set: BTreeSet<u64> = resolved.iter().map(|a| a.fingerprint).collect();
        let all_muted = firing.is_empty() && resolved.is_empty();
        let reason = self.reason(&firing_set, &resolved_set, t);
        // Resolved alerts go after every tick, sent or deduplicated (Alertmanager deletes
        // them once the pipeline ran without error, and dedup is not an error).
        self.alerts.retain(|_, a| !a.is_resolved_at(t));
        if all_muted {
            return None;
        }
        let reason = reason?;
        self.last = Some(Sent { at: t, firing: firing_set, resolved: resolved_set });
        Some(Notification { group_key: self.key.clone(), at: t, firing, resolved, reason })
    }

    /// Alertmanager's `DedupStage.needsUpdate` with send_resolved on.
    fn reason(&self, firing: &BTreeSet<u64>, resolved: &BTreeSet<u64>, t: Millis) -> Option<NotifyReason> {
        let Some(last) = &self.last else {
            return (!firing.is_empty()).then_some(NotifyReason::First);
        };
        if !firing.is_subset(&last.firing) {
            return Some(if last.firing.is_empty() { NotifyReason::First } else { NotifyReason::NewAlerts });
        }
        if firing.is_empty() {
            return (!last.firing.is_empty()).then_some(NotifyReason::AllResolved);
        }
        if !resolved.is_subset(&last.resolved) {
            return Some(NotifyReason::NewResolved);
        }
        (t >= last.at.saturating_add(ms(self.timings.repeat_interval))).then_some(NotifyReason::Repeat)
    }

    /// Whether the group holds no alerts.
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }

    /// How many alerts the group holds (firing, or resolved and not yet reported).
    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    /// The alerts held, by fingerprint.
    pub fn alerts(&self) -> impl Iterator<Item = (u64, AlertState)> + '_ {
        self.alerts.iter().map(|(&k, &v)| (k, v))
    }
}

mod timings_ms {
    use alertflow_model::time::DurationMs;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::route::Timings;

    pub fn serialize<S: Serializer>(t: &Timings, s: S) -> Result<S::Ok, S::Error> {
        [t.group_wait.millis(), t.group_interval.millis(), t.repeat_interval.millis()].serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timings, D::Error> {
        let [w, i, r] = <[u64; 3]>::deserialize(d)?;
        Ok(Timings { group_wait: DurationMs(w), group_interval: DurationMs(i), repeat_interval: DurationMs(r) })
    }
}

fn ms(d: alertflow_model::time::DurationMs) -> Millis {
    d.millis().min(Millis::MAX as u64) as Millis
}

#[cfg(test)]
mod tests {
    use super::*;
    use alertflow_model::time::DurationMs;

    const S: Millis = 1000;

    fn timings(gw: u64, gi: u64, ri: u64) -> Timings {
        Timings {
            group_wait: DurationMs::from_secs(gw),
            group_interval: DurationMs::from_secs(gi),
            repeat_interval: DurationMs::from_secs(ri),
        }
    }

    fn fps(v: &[NotifiedAlert]) -> Vec<u64> {
        v.iter().map(|a| a.fingerprint).collect()
    }

    /// (reason, firing, resolved) of a flush.
    fn outcome(n: Option<Notification>) -> Option<(NotifyReason, Vec<u64>, Vec<u64>)> {
        n.map(|n| (n.reason, fps(&n.firing), fps(&n.resolved)))
    }

    /// The life of a group under Alertmanager's defaults, every time worked out by hand from
    /// the documented rules (group_wait 30s, group_interval 5m, repeat_interval 4h).
    #[test]
    fn default_timings_life_cycle() {
        use NotifyReason::*;
        let mut g = Group::new("0:{}", Timings::default(), 0);
        g.upsert(1, AlertState::firing(0), 0);
        assert_eq!(g.next_due(), Some(30 * S));
        assert_eq!(g.flush(29 * S), None, "not due yet");
        assert_eq!(outcome(g.flush(30 * S)), Some((First, vec![1], vec![])));
        assert_eq!(g.next_due(), Some(330 * S));
        g.upsert(2, AlertState::firing(100 * S), 100 * S);
        assert_eq!(g.next_due(), Some(330 * S), "after the first tick a new alert waits for the next tick");
        assert_eq!(outcome(g.flush(330 * S)), Some((NewAlerts, vec![1, 2], vec![])));
        assert_eq!(g.flush(630 * S), None, "nothing changed");
        g.upsert(1, AlertState::resolved(0, 700 * S), 700 * S);
        assert_eq!(outcome(g.flush(930 * S)), Some((NewResolved, vec![2], vec![1])));
        assert_eq!(g.len(), 1, "the resolved alert is dropped once reported");
        // Repeat: at the first tick at or after 930 + 4h = 15330 (ticks are 930 + 300k).
        let mut t = 1230 * S;
        while t < 15330 * S {
            assert_eq!(g.flush(t), None, "{t}");
            t += 300 * S;
        }
        let n = g.flush(15330 * S).unwrap();
        assert!(n.is_repeat());
        assert_eq!((fps(&n.firing), fps(&n.resolved)), (vec![2], vec![]));
        g.upsert(2, AlertState::resolved(100 * S, 15400 * S), 15400 * S);
        assert_eq!(outcome(g.flush(15630 * S)), Some((AllResolved, vec![], vec![2])));
        assert!(g.is_empty());
        assert_eq!(g.next_due(), None);
    }

    #[test]
    fn repeat_at_the_first_tick_at_or_after_repeat_interval() {
        let mut g = Group::new("k", timings(30, 300, 720), 0);
        g.upsert(7, AlertState::firing(0), 0);
        assert!(g.flush(30 * S).is_some());
        let mut repeats = Vec::new();
        let mut t = 30 * S;
        while t <= 2500 * S {
            t = g.next_due().unwrap();
            if let Some(n) = g.flush(t) {
                assert!(n.is_repeat());
                repeats.push(t / S);
            }
        }
        // 30 + 720 = 750: ticks 330, 630, 930 → 930; 930 + 720 = 1650: 1830; then 2730.
        assert_eq!(repeats, [930, 1830, 2730]);
    }

    #[test]
    fn fired_and_resolved_within_group_wait_is_never_notified() {
        let mut g = Group::new("k", Timings::default(), 0);
        g.upsert(1, AlertState::firing(0), 0);
        g.upsert(1, AlertState::resolved(0, 10 * S), 10 * S);
        assert_eq!(g.flush(30 * S), None);
        assert!(g.is_empty());
    }

    #[test]
    fn an_old_alert_flushes_at_once_before_the_first_tick_only() {
        let mut g = Group::new("k", Timings::default(), 3600 * S);
        g.upsert(1, AlertState::firing(0), 3600 * S);
        assert_eq!(g.next_due(), Some(3600 * S), "started an hour ago: no group_wait");
        assert!(g.flush(3600 * S).is_some());
        g.upsert(2, AlertState::firing(0), 3700 * S);
        assert_eq!(g.next_due(), Some(3900 * S), "after the first tick old alerts wait for the tick");
        // Just within group_wait: waits.
        let mut h = Group::new("k", Timings::default(), 100 * S);
        h.upsert(1, AlertState::firing(70 * S), 100 * S);
        assert_eq!(h.next_due(), Some(130 * S));
    }

    #[test]
    fn a_future_end_resolves_by_itself() {
        let mut g = Group::new("k", Timings::default(), 0);
        g.upsert(1, AlertState { starts_at: 0, ends_at: Some(400 * S) }, 0);
        let first = g.flush(30 * S).unwrap();
        assert_eq!(first.firing, [NotifiedAlert { fingerprint: 1, starts_at: 0, ends_at: None }], "a future end is not announced");
        assert_eq!(g.flush(330 * S), None, "still firing at 330s");
        let last = g.flush(630 * S).unwrap();
        assert_eq!(last.reason, NotifyReason::AllResolved);
        assert_eq!(last.resolved, [NotifiedAlert { fingerprint: 1, starts_at: 0, ends_at: Some(400 * S) }]);
    }

    #[test]
    fn resolved_and_refired_between_ticks_is_no_change() {
        let mut g = Group::new("k", Timings::default(), 0);
        g.upsert(1, AlertState::firing(0), 0);
        assert!(g.flush(30 * S).is_some());
        g.upsert(1, AlertState::resolved(0, 100 * S), 100 * S);
        g.upsert(1, AlertState::firing(200 * S), 200 * S);
        assert_eq!(g.flush(330 * S), None, "the same alert fires at the tick, as it did before");
    }

    #[test]
    fn only_resolved_alerts_at_the_first_tick_send_nothing_and_a_late_tick_shifts_the_cadence() {
        let mut g = Group::new("k", timings(10, 60, 3600), 0);
        g.upsert(1, AlertState::firing(0), 0);
        g.upsert(2, AlertState::resolved(0, 5 * S), 5 * S);
        assert_eq!(outcome(g.flush(25 * S)), Some((NotifyReason::First, vec![1], vec![2])), "resolved alerts ride along");
        assert_eq!(g.next_due(), Some(85 * S), "a late tick at 25s: the next is 60s after it");
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn checkpoint_round_trip_keeps_behaviour() {
        let mut g = Group::new("0.1:{a=\"b\"}", Timings::default(), 0);
        g.upsert(u64::MAX, AlertState::firing(0), 0);
        g.upsert(3, AlertState::firing(0), 0);
        assert!(g.flush(30 * S).is_some());
        g.upsert(3, AlertState::resolved(0, 40 * S), 40 * S);
        let json = serde_json::to_string(&g).unwrap();
        let mut back: Group = serde_json::from_str(&json).unwrap();
        assert_eq!(back, g);
        assert_eq!(back.flush(330 * S), g.flush(330 * S));
        assert_eq!(back, g);
    }
}
