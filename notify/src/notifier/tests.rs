use std::collections::BTreeSet;

use super::*;
use crate::config::NotifyConfig;
use crate::control::{Control, SilenceSpec};
use alertflow_model::alert::Status;

const T0: Millis = 1_767_225_600_000;
const S: Millis = 1000;

fn plan(text: &str) -> Arc<NotifyPlan> {
    let cfg: NotifyConfig = toml::from_str(text).unwrap();
    Arc::new(NotifyPlan::new(&cfg, &["oncall", "pager"], &["alertname".to_string()]).unwrap())
}

fn ev(kind: EventKind, labels: &[(&str, &str)], ts: Millis, incident: u64) -> NotifyInput {
    let status = if matches!(kind, EventKind::Resolved | EventKind::Expired) { Status::Resolved } else { Status::Firing };
    NotifyInput::Event(AlertEvent {
        event: kind,
        labels: LabelSet::new("t0", labels),
        annotations: LabelSet::new("", &[("summary", "it broke")]),
        status,
        starts_at: ts,
        ends_at: (status == Status::Resolved).then_some(ts),
        last_seen: ts,
        occurrences: 1,
        revision: 0,
        ts,
        suppressed: false,
        storm_id: None,
        incident_id: Some(incident),
        team: None,
        tier: None,
        generator_url: None,
        part: 0,
        pos: ts as u64,
    })
}

fn suppressed(labels: &[(&str, &str)], ts: Millis, storm: u64, incident: u64) -> NotifyInput {
    let NotifyInput::Event(mut e) = ev(EventKind::Opened, labels, ts, incident) else { unreachable!() };
    e.suppressed = true;
    e.storm_id = Some(storm);
    NotifyInput::Event(e)
}

fn storm(id: u64, open: bool, opened_at: Millis, at: Millis, count: u64) -> NotifyInput {
    NotifyInput::Storm(StormRow {
        storm_id: id,
        tenant: "t0".into(),
        group_key: "alertname=HostDown".into(),
        open,
        opened_at,
        updated_at: at,
        closed_at: (!open).then_some(at),
        alert_count: count,
        distinct_fingerprints: count,
        top_labels: format!(r#"{{"severity":[["critical",{count}]],"host":[["a",1],["b",1]]}}"#),
        sample_fingerprints: vec![],
        revision: 1,
    })
}

/// Feeds rows (already in event-time order) to a notifier and runs the ticks they ask for, in
/// order, a tick at an instant after its rows.
struct Driver {
    timers: BTreeSet<(Millis, u64)>,
    changes: Vec<TimerChange>,
    out: Vec<Message>,
}

impl Driver {
    /// Starting from the notifier's (restored) timers.
    fn of(n: &Notifier) -> Driver {
        Driver { timers: n.state().timers().collect(), changes: Vec::new(), out: Vec::new() }
    }

    fn settle(&mut self) {
        for (g, old, new) in self.changes.drain(..) {
            if let Some(o) = old {
                self.timers.remove(&(o, g));
            }
            if let Some(t) = new {
                self.timers.insert((t, g));
            }
        }
    }

    /// The ticks before `r`, then `r`.
    fn row(&mut self, n: &mut Notifier, r: &NotifyInput) {
        while let Some(&(at, g)) = self.timers.first().filter(|(at, _)| *at < r.ts()) {
            self.timers.pop_first();
            n.tick(at, g, false, &mut self.out, &mut self.changes);
            self.settle();
        }
        n.apply(r, &mut self.changes);
        self.settle();
    }

    /// The input ended: every tick left.
    fn finish(mut self, n: &mut Notifier) -> Vec<Message> {
        while let Some((at, g)) = self.timers.pop_first() {
            n.tick(at, g, true, &mut self.out, &mut self.changes);
            self.settle();
        }
        self.out
    }
}

/// Runs rows to the end of the input.
fn run(n: &mut Notifier, rows: &[NotifyInput]) -> Vec<Message> {
    let mut d = Driver::of(n);
    for r in rows {
        d.row(n, r);
    }
    d.finish(n)
}

/// A notification as the tests compare it: (seconds after T0, group label, names).
type Sent = (Millis, String, Vec<(String, &'static str)>);

/// (host, status) of a message's alerts, sorted (firing before resolved).
fn names(m: &Message) -> Vec<(String, &'static str)> {
    let mut v: Vec<(String, &'static str)> = m.alerts.iter().map(|a| (a.labels["host"].clone(), a.status())).collect();
    v.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    v
}

const BY_INCIDENT: &str = r#"
    [route]
    receiver = "oncall"
    group_by = ["incident_id"]
    group_wait = "30s"
    group_interval = "5m"
    repeat_interval = "4h"
"#;

#[test]
fn alerts_of_one_incident_notify_together_after_group_wait_then_resolve() {
    let mut n = Notifier::new(plan(BY_INCIDENT));
    let rows = [
        ev(EventKind::Opened, &[("alertname", "Down"), ("host", "a")], T0, 7),
        ev(EventKind::Opened, &[("alertname", "Slow"), ("host", "b")], T0 + 10 * S, 7),
        ev(EventKind::Opened, &[("alertname", "Down"), ("host", "c")], T0 + 12 * S, 8),
        ev(EventKind::Resolved, &[("alertname", "Down"), ("host", "a")], T0 + 100 * S, 7),
        ev(EventKind::Resolved, &[("alertname", "Slow"), ("host", "b")], T0 + 100 * S, 7),
    ];
    let out = run(&mut n, &rows);
    let of7: Vec<&Message> = out.iter().filter(|m| m.group_labels["incident_id"] == fingerprint_hex(7)).collect();
    assert_eq!(of7.len(), 2, "{out:#?}");
    assert_eq!(of7[0].at, T0 + 30 * S);
    assert_eq!(names(of7[0]), [("a".to_string(), "firing"), ("b".to_string(), "firing")]);
    // The next tick after the resolution: group_interval after the first.
    assert_eq!(of7[1].at, T0 + 330 * S);
    assert_eq!(of7[1].status(), "resolved");
    assert_eq!(of7[0].alerts[0].labels["tenant"], "t0");
    // Incident 8 fires on: its first notification, then (input ended) no repeats for ever.
    let of8: Vec<&Message> = out.iter().filter(|m| m.group_labels["incident_id"] == fingerprint_hex(8)).collect();
    assert_eq!(of8.len(), 1);
    assert_eq!(of8[0].at, T0 + 42 * S);
    assert_eq!(n.size(), 2, "the firing alert and its group stay");
}

#[test]
fn a_regrouped_alert_moves_to_its_new_incident_without_a_resolution() {
    let mut n = Notifier::new(plan(BY_INCIDENT));
    let rows = [
        ev(EventKind::Opened, &[("alertname", "Down"), ("host", "a")], T0, 7),
        ev(EventKind::Opened, &[("alertname", "Slow"), ("host", "b")], T0, 9),
        ev(EventKind::Regrouped, &[("alertname", "Slow"), ("host", "b")], T0 + 60 * S, 7),
        ev(EventKind::Resolved, &[("alertname", "Down"), ("host", "a")], T0 + 3600 * S, 7),
        ev(EventKind::Resolved, &[("alertname", "Slow"), ("host", "b")], T0 + 3600 * S, 7),
    ];
    let out = run(&mut n, &rows);
    let mut by: Vec<Sent> = out.iter().map(|m| ((m.at - T0) / S, m.group_labels["incident_id"].clone(), names(m))).collect();
    by.sort();
    let (i7, i9) = (fingerprint_hex(7), fingerprint_hex(9));
    let fire = |h: &str| (h.to_string(), "firing");
    let gone = |h: &str| (h.to_string(), "resolved");
    assert_eq!(
        by,
        [
            (30, i7.clone(), vec![fire("a")]),
            (30, i9, vec![fire("b")]),
            // b joined 7 at 60 s: reported as new at 7's next tick; 9 went quietly.
            (330, i7.clone(), vec![fire("a"), fire("b")]),
            (3630, i7, vec![gone("a"), gone("b")]),
        ]
    );
    assert_eq!(n.size(), 0);
}

#[test]
fn a_storm_notifies_once_for_its_suppressed_members() {
    let mut n = Notifier::new(plan(BY_INCIDENT));
    let mut rows = vec![ev(EventKind::Opened, &[("alertname", "HostDown"), ("host", "first")], T0, 5)];
    rows.push(storm(42, true, T0 + 5 * S, T0 + 5 * S, 101));
    for i in 0..200 {
        rows.push(suppressed(&[("alertname", "HostDown"), ("host", &format!("h{i}"))], T0 + 5 * S + i, 42, 5));
    }
    rows.push(storm(42, false, T0 + 5 * S, T0 + 900 * S, 301));
    rows.push(ev(EventKind::Resolved, &[("alertname", "HostDown"), ("host", "first")], T0 + 900 * S, 5));
    let out = run(&mut n, &rows);
    assert_eq!(out.len(), 2, "{out:#?}");
    let storm_alert = out[0].alerts.iter().find(|a| a.labels.contains_key("storm_id")).expect("the storm's alert");
    assert_eq!(storm_alert.labels["storm_id"], fingerprint_hex(42));
    assert_eq!(storm_alert.labels["alertname"], "HostDown");
    assert_eq!(storm_alert.labels["severity"], "critical", "shared by every member");
    assert!(!storm_alert.labels.contains_key("host"), "not shared");
    assert_eq!(storm_alert.labels["incident_id"], fingerprint_hex(5));
    assert_eq!(out[0].alerts.len(), 2, "the alert notified before the storm, and the storm");
    assert_eq!(out[1].status(), "resolved");
    let closed = out[1].alerts.iter().find(|a| a.labels.contains_key("storm_id")).expect("the storm's alert");
    assert!(closed.annotations["summary"].contains("301 alerts"), "{closed:?}");
    assert_eq!(n.size(), 0);
}

#[test]
fn silences_and_inhibition_mute_at_the_tick() {
    let p = plan(
        r#"
        [route]
        receiver = "oncall"
        group_by = ["alertname"]
        group_wait = "10s"
        group_interval = "1m"
        [[inhibit_rules]]
        source_matchers = ['severity="critical"']
        target_matchers = ['severity="warning"']
        equal = ["cluster"]
        [[silences]]
        matchers = ['alertname="Maint"']
        starts_at = "2026-01-01T00:00:00Z"
        ends_at = "2026-01-01T00:05:00Z"
        "#,
    );
    let mut n = Notifier::new(p);
    let rows = [
        ev(EventKind::Opened, &[("alertname", "Maint"), ("host", "m")], T0, 1),
        ev(EventKind::Opened, &[("alertname", "Disk"), ("severity", "warning"), ("cluster", "eu"), ("host", "w")], T0, 2),
        ev(EventKind::Opened, &[("alertname", "Down"), ("severity", "critical"), ("cluster", "eu"), ("host", "c")], T0 + 5 * S, 3),
        ev(EventKind::Resolved, &[("alertname", "Down"), ("severity", "critical"), ("cluster", "eu"), ("host", "c")], T0 + 200 * S, 3),
        ev(EventKind::Resolved, &[("alertname", "Maint"), ("host", "m")], T0 + 900 * S, 1),
        ev(EventKind::Resolved, &[("alertname", "Disk"), ("severity", "warning"), ("cluster", "eu"), ("host", "w")], T0 + 900 * S, 2),
    ];
    let out = run(&mut n, &rows);
    let mut by: Vec<Sent> = out.iter().map(|m| ((m.at - T0) / S, m.group_labels["alertname"].clone(), names(m))).collect();
    by.sort();
    assert_eq!(
        by,
        [
            // Disk is inhibited by Down from its first tick on; Maint is silenced until 300 s.
            (15, "Down".into(), vec![("c".into(), "firing")]),
            // Down resolved at 200 s: Disk's next tick shows it.
            (250, "Disk".into(), vec![("w".into(), "firing")]),
            (255, "Down".into(), vec![("c".into(), "resolved")]),
            // The silence ended at 300 s.
            (310, "Maint".into(), vec![("m".into(), "firing")]),
            (910, "Disk".into(), vec![("w".into(), "resolved")]),
            (910, "Maint".into(), vec![("m".into(), "resolved")]),
        ]
    );
}

#[test]
fn a_restored_state_goes_on_exactly_as_the_original() {
    let p = plan(
        r#"
        [route]
        receiver = "oncall"
        group_by = ["incident_id"]
        group_wait = "10s"
        group_interval = "1m"
        repeat_interval = "10m"
        [[inhibit_rules]]
        source_matchers = ['alertname="Down"']
        target_matchers = ['alertname="Slow"']
        equal = ["incident_id"]
        "#,
    );
    let mut rows = Vec::new();
    for i in 0..40i64 {
        let host = format!("h{}", i % 7);
        let name = if i % 3 == 0 { "Down" } else { "Slow" };
        let kind = if i % 5 == 4 { EventKind::Resolved } else { EventKind::Opened };
        rows.push(ev(kind, &[("alertname", name), ("host", &host)], T0 + i * 40 * S, (i % 4) as u64));
    }
    let whole = run(&mut Notifier::new(p.clone()), &rows);
    // Cut between rows, through serde as a checkpoint does, at every position.
    for cut in [1, 9, 20, 33] {
        let mut first = Notifier::new(p.clone());
        let mut d = Driver::of(&first);
        for r in &rows[..cut] {
            d.row(&mut first, r);
        }
        let mut out = d.out;
        // bincode, as checkpoints encode it.
        let saved = bincode::serialize(first.state()).unwrap();
        let mut second = Notifier::restore(p.clone(), bincode::deserialize(&saved).unwrap());
        // The restored timers are the state's; rows from the cut on, ticks before the next row.
        let mut rest = run(&mut second, &rows[cut..]);
        out.append(&mut rest);
        assert_eq!(out, whole, "cut at {cut}");
    }
}

fn control(ts: Millis, c: Control) -> NotifyInput {
    NotifyInput::Control { worker: 0, ts, seq: ts as u64, control: c }
}

const ESCALATING: &str = r#"
    [route]
    receiver = "oncall"
    group_by = ["incident_id"]
    group_wait = "30s"
    group_interval = "5m"
    repeat_interval = "4h"
    [[escalation]]
    after = "30m"
    receiver = "pager"
    matchers = ['severity="critical"']
    [[escalation]]
    after = "10m"
    receiver = "pager"
"#;

#[test]
fn an_unacknowledged_incident_escalates_level_by_level_and_an_ack_stops_it() {
    let rows = |ack: Option<Millis>| {
        let mut v = vec![
            ev(EventKind::Opened, &[("alertname", "Down"), ("host", "a"), ("severity", "critical")], T0, 7),
            ev(EventKind::Opened, &[("alertname", "Down"), ("host", "b"), ("severity", "warning")], T0, 8),
        ];
        if let Some(at) = ack {
            v.push(control(at, Control::Ack { incident: fingerprint_hex(7), by: "ann".into() }));
        }
        v.push(ev(EventKind::Resolved, &[("alertname", "Down"), ("host", "a"), ("severity", "critical")], T0 + 3600 * S, 7));
        v.push(ev(EventKind::Resolved, &[("alertname", "Down"), ("host", "b"), ("severity", "warning")], T0 + 3600 * S, 8));
        v
    };
    let pages = |out: &[Message]| -> Vec<(Millis, String)> {
        let mut v: Vec<(Millis, String)> =
            out.iter().filter(|m| m.receiver == "pager").map(|m| ((m.at - T0) / S, m.group_labels["incident_id"].clone())).collect();
        v.sort();
        v
    };
    let (i7, i8) = (fingerprint_hex(7), fingerprint_hex(8));
    // First notifications at 30 s; ticks every 5 min: 10 min passed at 630 s, 30 min at 1830 s.
    // The second level matches critical groups only.
    let out = run(&mut Notifier::new(plan(ESCALATING)), &rows(None));
    assert_eq!(pages(&out), [(630, i7.clone()), (630, i8.clone()), (1830, i7.clone())]);
    let paged = out.iter().find(|m| m.receiver == "pager").unwrap();
    assert!(paged.alerts.iter().all(|a| a.ends_at.is_none()), "an escalation names the firing alerts");
    // Acknowledged at 20 min: incident 7 stops after its first level.
    let out = run(&mut Notifier::new(plan(ESCALATING)), &rows(Some(T0 + 1200 * S)));
    assert_eq!(pages(&out), [(630, i7.clone()), (630, i8.clone())]);
    // Acknowledged before the first level: never paged.
    let out = run(&mut Notifier::new(plan(ESCALATING)), &rows(Some(T0 + 60 * S)));
    assert_eq!(pages(&out), [(630, i8)]);
}

#[test]
fn silences_added_and_expired_while_running_mute_from_their_time_on() {
    let p = plan(
        r#"
        [route]
        receiver = "oncall"
        group_by = ["alertname"]
        group_wait = "10s"
        group_interval = "1m"
        "#,
    );
    let spec = SilenceSpec {
        id: "s1".into(),
        matchers: vec!["alertname=\"Disk\"".into()],
        starts_at: T0,
        ends_at: T0 + 3600 * S,
        created_by: "ann".into(),
        comment: "maintenance".into(),
    };
    let rows = [
        control(T0, Control::AddSilence(spec)),
        ev(EventKind::Opened, &[("alertname", "Disk"), ("host", "a")], T0 + S, 1),
        control(T0 + 300 * S, Control::ExpireSilence("s1".into())),
        ev(EventKind::Resolved, &[("alertname", "Disk"), ("host", "a")], T0 + 900 * S, 1),
    ];
    let mut n = Notifier::new(p.clone());
    let out = run(&mut n, &rows);
    let at: Vec<Millis> = out.iter().map(|m| (m.at - T0) / S).collect();
    // Muted at 11 s … 251 s; the silence ended at 300 s: the tick at 311 s notifies.
    assert_eq!(at, [311, 911]);
    // The state keeps the silence, ended: a restore mutes exactly as before.
    let back: NotifyState = bincode::deserialize(&bincode::serialize(n.state()).unwrap()).unwrap();
    assert_eq!(back.silences["s1"].ends_at, T0 + 300 * S);
}

#[test]
fn an_incident_resolved_by_hand_reports_its_alerts_resolved_and_ignores_their_episode_after() {
    let mut n = Notifier::new(plan(BY_INCIDENT));
    let rows = [
        ev(EventKind::Opened, &[("alertname", "Down"), ("host", "a")], T0, 7),
        control(T0 + 100 * S, Control::Resolve { incident: fingerprint_hex(7), by: "ann".into() }),
        // The source still says it fires (same episode): ignored.
        ev(EventKind::Repeated, &[("alertname", "Down"), ("host", "a")], T0, 7),
        // A new episode later notifies again.
        ev(EventKind::Opened, &[("alertname", "Down"), ("host", "a")], T0 + 2000 * S, 7),
    ];
    let out = run(&mut n, &rows);
    let seen: Vec<(Millis, &str)> = out.iter().map(|m| ((m.at - T0) / S, m.status())).collect();
    assert_eq!(seen, [(30, "firing"), (330, "resolved"), (2030, "firing")]);
}

#[test]
fn a_storm_resolved_by_hand_stays_resolved_until_it_closes() {
    let mut n = Notifier::new(plan(BY_INCIDENT));
    let rows = [
        storm(42, true, T0, T0, 101),
        suppressed(&[("alertname", "HostDown"), ("host", "h1")], T0, 42, 5),
        control(T0 + 100 * S, Control::Resolve { incident: fingerprint_hex(5), by: "ann".into() }),
        storm(42, true, T0, T0 + 400 * S, 180),
        storm(42, false, T0, T0 + 900 * S, 200),
    ];
    let out = run(&mut n, &rows);
    let seen: Vec<(Millis, &str)> = out.iter().map(|m| ((m.at - T0) / S, m.status())).collect();
    assert_eq!(seen, [(30, "firing"), (330, "resolved")]);
    assert_eq!(n.size(), 0);
}
