//! The notifier: alert lifecycle rows and storm rows in, notifications out, in event time.
//!
//! It is what Alertmanager's dispatcher and notification pipeline do, fed by alertflow's
//! alert chain instead of by Prometheus:
//!
//! - every non-suppressed alert is routed with its labels plus alertflow's own: `tenant`,
//!   `incident_id` (16 hex digits, as in the `incidents` table), and `team` and `tier` when
//!   enrichment set them (an alert's own label of the same name wins). So
//!   `group_by = ["incident_id"]` notifies per incident;
//! - an alert that was suppressed when it opened never notifies: its **storm** does, as one
//!   alert of its own (labels: the storm's group labels, the labels all its members share,
//!   `storm_id`, and `alertname = "AlertStorm"` when the group has none), firing while the
//!   storm is open. The storm follows the incident of its first member. An episode notified
//!   before its storm opened stays in its group until it resolves;
//! - when an alert's incident changes (its incident merged into another), it leaves its old
//!   group without being reported resolved and joins the new one, which reports it as new;
//! - at a group's tick, alerts that are silenced, or inhibited by an alert firing then, are
//!   left out (Alertmanager's mute stages), then the group decides what to send
//!   ([`Group::flush_with`]).
//!
//! The caller hands over rows in event-time order and runs the ticks the notifier asks for
//! (the [`TimerChange`]s) in the same order, after the rows of the same instant. Everything
//! is keyed by tenant, so one notifier per tenant gives the same notifications as one for
//! all. The state is serde: it is checkpointed; inhibition indexes are rebuilt on restore.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use alertflow_model::LabelSet;
use alertflow_model::alert::{AlertEvent, EventKind, StormRow};
use alertflow_model::labels::fingerprint_hex;
use alertflow_model::time::Millis;
use serde::{Deserialize, Serialize};

use crate::config::NotifyPlan;
use crate::control::{Control, SilenceSpec};
use crate::group::{AlertState, Group, Notification, NotifiedAlert};
use crate::inhibit::Inhibitor;
use crate::payload::{AlertInfo, Message};
use crate::route::{GroupBy, ResolvedRoute, group_key};
use crate::silence::Silences;

/// What the notifier reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum NotifyInput {
    /// A lifecycle row of the `alerts` table.
    Event(AlertEvent),
    /// A row of the `storms` table.
    Storm(StormRow),
    /// A control record for one worker (every worker gets its own copy): `seq` orders the
    /// records of one instant.
    Control {
        /// The worker it is for.
        worker: u32,
        /// Its event time.
        ts: Millis,
        /// Its place among the control records.
        seq: u64,
        /// What it says.
        control: Control,
    },
}

impl NotifyInput {
    /// The tenant: everything the notifier does stays within one.
    pub fn tenant(&self) -> &str {
        match self {
            NotifyInput::Event(e) => e.tenant(),
            NotifyInput::Storm(s) => &s.tenant,
            NotifyInput::Control { .. } => "",
        }
    }
    /// Its event time.
    pub fn ts(&self) -> Millis {
        match self {
            NotifyInput::Event(e) => e.ts,
            NotifyInput::Storm(s) => s.updated_at,
            NotifyInput::Control { ts, .. } => *ts,
        }
    }
}

/// A group's timer moved: `(group, old, new)`; the caller cancels `old` and sets `new`.
pub type TimerChange = (u64, Option<Millis>, Option<Millis>);

/// An alert the notifier routes.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Tracked {
    tenant: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    generator_url: String,
    state: AlertState,
    /// The groups it is in (by key hash).
    groups: Vec<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct GroupEntry {
    group: Group,
    receiver: String,
    group_labels: BTreeMap<String, String>,
    timer: Option<Millis>,
    /// The first notification while something fires: escalation counts from it.
    first_notified: Option<Millis>,
    /// Escalation levels passed since.
    escalated: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StormTrack {
    /// The storm alert's fingerprint.
    fingerprint: u64,
    tenant: String,
    /// Its labels but `incident_id`.
    labels: BTreeMap<String, String>,
    /// The member whose incident the storm follows: the first seen after it opened.
    lead: Option<u64>,
    incident: Option<u64>,
}

/// Everything the notifier remembers (checkpointed).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NotifyState {
    alerts: BTreeMap<u64, Tracked>,
    groups: BTreeMap<u64, GroupEntry>,
    storms: BTreeMap<u64, StormTrack>,
    /// Firing alerts that match an inhibition rule's source side (tenant, labels): the
    /// inhibitors' index is rebuilt from these on restore.
    sources: BTreeMap<u64, (String, BTreeMap<String, String>)>,
    /// Silences, configured and added since (by id).
    silences: BTreeMap<String, SilenceSpec>,
    /// Incidents acknowledged (16 hex digits): they escalate no further.
    acked: BTreeSet<String>,
    /// Episodes `(fingerprint, starts_at)` resolved by hand: their rows are ignored until
    /// the sources end them too.
    manual: BTreeSet<(u64, Millis)>,
}

impl NotifyState {
    /// The pending group timers, `(at, group)`.
    pub fn timers(&self) -> impl Iterator<Item = (Millis, u64)> + '_ {
        self.groups.iter().filter_map(|(&h, g)| g.timer.map(|t| (t, h)))
    }
}

/// One notifier (of one worker: the tenants routed to it).
pub struct Notifier {
    plan: Arc<NotifyPlan>,
    state: NotifyState,
    inhibitors: HashMap<String, Inhibitor>,
    /// `state.silences`, parsed.
    silences: Silences,
}

impl Notifier {
    /// An empty notifier.
    pub fn new(plan: Arc<NotifyPlan>) -> Notifier {
        let silences = plan.silences.iter().map(|s| (s.id.clone(), SilenceSpec::of(s))).collect();
        Notifier::restore(plan, NotifyState { silences, ..NotifyState::default() })
    }

    /// A notifier continuing from a checkpointed state.
    pub fn restore(plan: Arc<NotifyPlan>, state: NotifyState) -> Notifier {
        let mut n = Notifier { plan, state: NotifyState::default(), inhibitors: HashMap::new(), silences: Silences::new() };
        for (fp, (tenant, labels)) in &state.sources {
            n.inhibitor(tenant).set_firing(*fp, labels, true);
        }
        for spec in state.silences.values() {
            // Validated when they came in.
            if let Ok(s) = spec.to_silence() {
                let _ = n.silences.add(s);
            }
        }
        n.state = state;
        n
    }

    /// The state, for a checkpoint.
    pub fn state(&self) -> &NotifyState {
        &self.state
    }

    /// Alerts and groups held: the operator's state size.
    pub fn size(&self) -> usize {
        self.state.alerts.len() + self.state.groups.len()
    }

    fn inhibitor(&mut self, tenant: &str) -> &mut Inhibitor {
        if !self.inhibitors.contains_key(tenant) {
            self.inhibitors.insert(tenant.to_string(), Inhibitor::new(self.plan.rules.clone()));
        }
        self.inhibitors.get_mut(tenant).expect("inserted")
    }

    /// Applies one row (in event-time order); group timers that move go to `timers`.
    pub fn apply(&mut self, input: &NotifyInput, timers: &mut Vec<TimerChange>) {
        match input {
            NotifyInput::Event(e) => self.event(e, timers),
            NotifyInput::Storm(s) => self.storm(s, timers),
            NotifyInput::Control { ts, control, .. } => self.control(control, *ts, timers),
        }
    }

    fn control(&mut self, c: &Control, ts: Millis, timers: &mut Vec<TimerChange>) {
        match c {
            Control::AddSilence(spec) => {
                if let Ok(s) = spec.to_silence()
                    && self.silences.add(s).is_ok()
                {
                    self.state.silences.insert(spec.id.clone(), spec.clone());
                }
            }
            Control::ExpireSilence(id) => {
                if self.silences.expire(id, ts).is_ok()
                    && let Some(s) = self.silences.get(id)
                {
                    self.state.silences.insert(id.clone(), SilenceSpec::of(s));
                }
            }
            Control::Ack { incident, .. } => {
                self.state.acked.insert(incident.clone());
            }
            Control::Resolve { incident, .. } => {
                let firing: Vec<u64> = self
                    .state
                    .alerts
                    .iter()
                    .filter(|(_, a)| a.labels.get("incident_id") == Some(incident) && a.state.ends_at.is_none())
                    .map(|(fp, _)| *fp)
                    .collect();
                for fp in firing {
                    let a = self.state.alerts[&fp].clone();
                    self.state.manual.insert((fp, a.state.starts_at));
                    self.set_source(fp, &a.tenant, &a.labels, false);
                    let state = AlertState::resolved(a.state.starts_at, ts);
                    self.place(fp, &a.tenant, a.labels, a.annotations, a.generator_url, state, ts, timers);
                }
            }
        }
    }

    fn event(&mut self, e: &AlertEvent, timers: &mut Vec<TimerChange>) {
        let fp = e.fingerprint();
        let ended = matches!(e.event, EventKind::Resolved | EventKind::Expired);
        // An episode resolved by hand stays so; the sources' own end of it closes the matter.
        if self.state.manual.contains(&(fp, e.starts_at)) {
            if ended {
                self.state.manual.remove(&(fp, e.starts_at));
            }
            return;
        }
        if let Some(s) = e.storm_id {
            self.follow_storm(s, fp, e.incident_id, e.ts, timers);
        }
        let known = self.state.alerts.get(&fp).map(|a| a.state);
        let state = match (e.event, known) {
            // A storm speaks for an episode suppressed when it opened (a suppressed row of an
            // episode notified before its storm opened goes on as usual); a regrouped alert
            // not held any more was reported resolved already.
            (_, None) if e.suppressed || e.event == EventKind::Regrouped => None,
            (_, Some(s)) if e.suppressed && s.starts_at != e.starts_at => None,
            (EventKind::Regrouped, Some(s)) => Some(s),
            (EventKind::Resolved | EventKind::Expired, _) => Some(AlertState::resolved(e.starts_at, e.ends_at.unwrap_or(e.ts))),
            _ => Some(AlertState::firing(e.starts_at)),
        };
        // Every alert can inhibit, suppressed or not: a storm of outages still mutes what its
        // rules say it mutes. The labels are built only when something needs them (a storm's
        // members are thousands of rows that route nowhere).
        let source = !self.plan.rules.is_empty() && (e.event != EventKind::Regrouped || self.state.sources.contains_key(&fp));
        if !source && state.is_none() {
            return;
        }
        let labels = route_labels(e);
        if source {
            self.set_source(fp, e.tenant(), &labels, !ended);
        }
        let Some(state) = state else { return };
        let annotations = e.annotations.labels().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let url = e.generator_url.as_deref().unwrap_or("").to_string();
        self.place(fp, e.tenant(), labels, annotations, url, state, e.ts, timers);
    }

    fn storm(&mut self, r: &StormRow, timers: &mut Vec<TimerChange>) {
        if !self.state.storms.contains_key(&r.storm_id) {
            if !r.open {
                return;
            }
            let labels = storm_labels(r, &self.plan.storm_group_by);
            let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let fingerprint = LabelSet::new(&r.tenant, &pairs).fingerprint();
            let track = StormTrack { fingerprint, tenant: r.tenant.to_string(), labels, lead: None, incident: None };
            self.state.storms.insert(r.storm_id, track);
        }
        let t = &self.state.storms[&r.storm_id];
        let (fp, tenant, labels) = (t.fingerprint, t.tenant.clone(), with_incident(&t.labels, t.incident));
        // A storm resolved by hand stays so until it closes.
        if self.state.manual.contains(&(fp, r.opened_at)) {
            if !r.open {
                self.state.manual.remove(&(fp, r.opened_at));
                self.state.storms.remove(&r.storm_id);
            }
            return;
        }
        let state =
            if r.open { AlertState::firing(r.opened_at) } else { AlertState::resolved(r.opened_at, r.closed_at.unwrap_or(r.updated_at)) };
        self.set_source(fp, &tenant, &labels, r.open);
        self.place(fp, &tenant, labels, storm_annotations(r), String::new(), state, r.updated_at, timers);
        if !r.open {
            self.state.storms.remove(&r.storm_id);
        }
    }

    /// A member row of storm `storm`: the storm follows its lead member's incident.
    fn follow_storm(&mut self, storm: u64, member: u64, incident: Option<u64>, ts: Millis, timers: &mut Vec<TimerChange>) {
        let Some(t) = self.state.storms.get_mut(&storm) else { return };
        let lead = *t.lead.get_or_insert(member);
        if lead != member || incident.is_none() || t.incident == incident {
            return;
        }
        t.incident = incident;
        let (fp, tenant, labels) = (t.fingerprint, t.tenant.clone(), with_incident(&t.labels, incident));
        let Some(a) = self.state.alerts.get(&fp) else { return };
        let (annotations, url, state) = (a.annotations.clone(), a.generator_url.clone(), a.state);
        if state.ends_at.is_none() {
            self.set_source(fp, &tenant, &labels, true);
        }
        self.place(fp, &tenant, labels, annotations, url, state, ts, timers);
    }

    fn set_source(&mut self, fp: u64, tenant: &str, labels: &BTreeMap<String, String>, firing: bool) {
        if self.plan.rules.is_empty() {
            return;
        }
        self.inhibitor(tenant).set_firing(fp, labels, firing);
        if firing && self.plan.rules.iter().any(|r| r.source_matchers().matches(labels)) {
            self.state.sources.insert(fp, (tenant.to_string(), labels.clone()));
        } else {
            self.state.sources.remove(&fp);
        }
    }

    /// Puts alert `fp` in the groups of the routes its labels take, and out of any other
    /// group it was in (silently: it moved).
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        fp: u64,
        tenant: &str,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
        generator_url: String,
        state: AlertState,
        ts: Millis,
        timers: &mut Vec<TimerChange>,
    ) {
        let mut keys = Vec::new();
        for r in self.plan.route.matches(&labels) {
            let key = format!("{tenant}/{}", group_key(r, &labels));
            let h = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
            keys.push(h);
            let entry = self.state.groups.entry(h).or_insert_with(|| GroupEntry {
                group: Group::new(key, r.timings(), ts),
                receiver: r.receiver().to_string(),
                group_labels: group_labels(r, &labels),
                timer: None,
                first_notified: None,
                escalated: 0,
            });
            entry.group.upsert(fp, state, ts);
            reschedule(h, entry, timers);
        }
        let old = self.state.alerts.get(&fp).map(|a| a.groups.clone()).unwrap_or_default();
        for h in old.into_iter().filter(|h| !keys.contains(h)) {
            if let Some(entry) = self.state.groups.get_mut(&h) {
                entry.group.remove(fp);
                if entry.group.is_empty() {
                    timers.push((h, entry.timer, None));
                    self.state.groups.remove(&h);
                }
            }
        }
        let tracked = Tracked { tenant: tenant.to_string(), labels, annotations, generator_url, state, groups: keys };
        self.state.alerts.insert(fp, tracked);
    }

    /// Runs group `group`'s tick at `at`, if it is still due then; a notification goes to
    /// `out`. `input_ended`: no row will come any more, so a group whose alerts can no longer
    /// change is not ticked again (it would repeat itself for ever).
    pub fn tick(&mut self, at: Millis, group: u64, input_ended: bool, out: &mut Vec<Message>, timers: &mut Vec<TimerChange>) {
        let Some(entry) = self.state.groups.get_mut(&group) else { return };
        if entry.timer != Some(at) {
            return;
        }
        entry.timer = None;
        let resolved: Vec<u64> = entry.group.alerts().filter(|(_, s)| s.is_resolved_at(at)).map(|(fp, _)| fp).collect();
        let (alerts, inhibitors, silences) = (&self.state.alerts, &self.inhibitors, &self.silences);
        let shown = |fp: u64| {
            alerts.get(&fp).is_none_or(|a| {
                !(silences.is_silenced(&a.labels, at) || inhibitors.get(&a.tenant).is_some_and(|i| i.is_inhibited(fp, &a.labels)))
            })
        };
        // What still fires and shows, before the flush drops the resolved (escalation only).
        let firing: Vec<NotifiedAlert> = if self.plan.escalation.is_empty() {
            Vec::new()
        } else {
            entry
                .group
                .alerts()
                .filter(|(fp, s)| !s.is_resolved_at(at) && shown(*fp))
                .map(|(fingerprint, s)| NotifiedAlert { fingerprint, starts_at: s.starts_at, ends_at: None })
                .collect()
        };
        if let Some(n) = entry.group.flush_with(at, shown) {
            if entry.first_notified.is_none() && !n.firing.is_empty() {
                entry.first_notified = Some(at);
            }
            out.push(message(&self.plan, entry, &n, alerts));
        }
        // Escalation: still firing, not acknowledged, and a level's time has come.
        if firing.is_empty() {
            (entry.first_notified, entry.escalated) = (None, 0);
        } else if let Some(first) = entry.first_notified {
            let incident = |a: &Tracked| a.labels.get("incident_id").is_some_and(|i| self.state.acked.contains(i));
            let acked = entry.group_labels.get("incident_id").is_some_and(|i| self.state.acked.contains(i))
                || firing.iter().all(|f| alerts.get(&f.fingerprint).is_some_and(incident));
            let mut common = None;
            while !acked
                && let Some(level) = self.plan.escalation.get(entry.escalated)
                && first.saturating_add(level.after) <= at
            {
                entry.escalated += 1;
                let common = common.get_or_insert_with(|| common_labels(firing.iter().filter_map(|f| alerts.get(&f.fingerprint))));
                if level.matchers.matches(&*common) {
                    let n = Notification {
                        group_key: entry.group.key().to_string(),
                        at,
                        firing: firing.clone(),
                        resolved: Vec::new(),
                        reason: crate::group::NotifyReason::Repeat,
                    };
                    let mut m = message(&self.plan, entry, &n, alerts);
                    m.receiver = level.receiver.clone();
                    out.push(m);
                }
            }
        }
        for fp in resolved {
            if let Some(a) = self.state.alerts.get_mut(&fp) {
                a.groups.retain(|g| *g != group);
                if a.groups.is_empty() {
                    self.state.alerts.remove(&fp);
                }
            }
        }
        if entry.group.is_empty() {
            self.state.groups.remove(&group);
            return;
        }
        let settled = input_ended && entry.group.alerts().all(|(_, s)| s.ends_at.is_none());
        if !settled {
            reschedule(group, entry, timers);
        }
    }
}

/// The labels every alert has with the same value.
fn common_labels<'a>(mut alerts: impl Iterator<Item = &'a Tracked>) -> BTreeMap<String, String> {
    let Some(first) = alerts.next() else { return BTreeMap::new() };
    let mut common = first.labels.clone();
    for a in alerts {
        common.retain(|k, v| a.labels.get(k) == Some(v));
    }
    common
}

fn reschedule(h: u64, entry: &mut GroupEntry, timers: &mut Vec<TimerChange>) {
    let want = entry.group.next_due();
    if want != entry.timer {
        timers.push((h, entry.timer, want));
        entry.timer = want;
    }
}

fn message(plan: &NotifyPlan, entry: &GroupEntry, n: &Notification, alerts: &BTreeMap<u64, Tracked>) -> Message {
    let info = |a: &crate::group::NotifiedAlert| {
        let t = &alerts[&a.fingerprint];
        AlertInfo {
            labels: t.labels.clone(),
            annotations: t.annotations.clone(),
            starts_at: a.starts_at,
            ends_at: a.ends_at,
            generator_url: t.generator_url.clone(),
            fingerprint: a.fingerprint,
        }
    };
    Message {
        receiver: entry.receiver.clone(),
        group_key: n.group_key.clone(),
        group_labels: entry.group_labels.clone(),
        at: n.at,
        alerts: n.firing.iter().chain(&n.resolved).map(info).collect(),
        truncated_alerts: 0,
        external_url: plan.external_url.clone(),
    }
}

/// An alert's labels plus alertflow's own (an alert's label of the same name wins).
fn route_labels(e: &AlertEvent) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = e.labels.labels().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    m.entry("tenant".into()).or_insert_with(|| e.tenant().to_string());
    if let Some(i) = e.incident_id {
        m.entry("incident_id".into()).or_insert_with(|| fingerprint_hex(i));
    }
    if let Some(t) = &e.team {
        m.entry("team".into()).or_insert_with(|| t.to_string());
    }
    if let Some(t) = &e.tier {
        m.entry("tier".into()).or_insert_with(|| t.to_string());
    }
    m
}

fn with_incident(labels: &BTreeMap<String, String>, incident: Option<u64>) -> BTreeMap<String, String> {
    let mut l = labels.clone();
    if let Some(i) = incident {
        l.entry("incident_id".into()).or_insert_with(|| fingerprint_hex(i));
    }
    l
}

/// The labels of a route's group: its `group_by` labels the alert has (all of them for
/// `"..."`), as Alertmanager's `groupLabels`.
fn group_labels(r: &ResolvedRoute, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    match r.group_by() {
        GroupBy::All => labels.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.clone(), v.clone())).collect(),
        GroupBy::Labels(names) => {
            names.iter().filter_map(|n| labels.get(n).filter(|v| !v.is_empty()).map(|v| (n.clone(), v.clone()))).collect()
        }
    }
}

/// A storm alert's labels: the storm group's labels (parsed back from its key, `a=x,b=y` in
/// `group_by` order), the labels every member had (from `top_labels`: one value, counted for
/// every alert), `tenant`, `storm_id`, and `alertname` if still missing.
fn storm_labels(r: &StormRow, group_by: &[String]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut rest = &*r.group_key;
    let mut parsed = true;
    for (i, g) in group_by.iter().enumerate() {
        let Some(after) = rest.strip_prefix(g.as_str()).and_then(|s| s.strip_prefix('=')) else {
            parsed = false;
            break;
        };
        let end = match group_by.get(i + 1) {
            Some(next) => after.find(&format!(",{next}=")).unwrap_or(after.len()),
            None => after.len(),
        };
        if !after[..end].is_empty() {
            m.insert(g.clone(), after[..end].to_string());
        }
        rest = after[end..].strip_prefix(',').unwrap_or(&after[end..]);
    }
    if !parsed {
        m.clear();
        m.insert("storm_group".into(), r.group_key.to_string());
    }
    if let Ok(serde_json::Value::Object(top)) = serde_json::from_str::<serde_json::Value>(&r.top_labels) {
        for (k, v) in top {
            if let Some([only]) = v.as_array().map(Vec::as_slice)
                && let (Some(value), Some(n)) = (only.get(0).and_then(|x| x.as_str()), only.get(1).and_then(|x| x.as_u64()))
                && n == r.alert_count
            {
                m.entry(k).or_insert_with(|| value.to_string());
            }
        }
    }
    m.entry("alertname".into()).or_insert_with(|| "AlertStorm".into());
    m.insert("tenant".into(), r.tenant.to_string());
    m.insert("storm_id".into(), fingerprint_hex(r.storm_id));
    m
}

fn storm_annotations(r: &StormRow) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("summary".into(), format!("Alert storm: {} alerts from {} sources ({})", r.alert_count, r.distinct_fingerprints, r.group_key));
    a.insert("top_labels".into(), r.top_labels.clone());
    a
}

#[cfg(test)]
mod tests;
