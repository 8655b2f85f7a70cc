//! Rules: threshold conditions over an aggregate's windows that raise and resolve alerts in
//! event time, as Prometheus alerting rules do over evaluations.
//!
//! A rule judges each window of each group (tenant, metric, `group_by` labels) when it closes,
//! in window order; the window's end is the evaluation time. As in Prometheus:
//! - the first window where the condition holds makes the group *pending*, active from that
//!   window's end;
//! - once it has held for `for` (window end − active ≥ `for`; at once for `for = 0s`), a firing
//!   alert is sent (`startsAt` = active), and sent again at every later window it holds, with
//!   `endsAt` four windows ahead, so dedup keeps it open (Prometheus re-sends the same way);
//! - the first window where it does not hold resolves it (`endsAt` = that window's end); a
//!   pending group just goes back to inactive.
//!
//! A group without points in a window has no row for it; that counts as "does not hold" (a
//! series that disappears resolves in Prometheus too), judged by an event-time timer at the
//! missing window's end. So at the end of the input a firing group resolves at the end of the
//! window after its last one. Under the late policy `update`, a window is judged once, on its
//! first row: revisions do not re-judge it (an alert already sent cannot be taken back).
//!
//! Groups are exchanged by their key and judged in window order, timers interleaved (see
//! [`crate::ordered`]), so the alerts are the same at any worker count. Only pending and
//! firing groups hold state.

pub mod when;

use std::collections::BTreeMap;
use std::sync::Arc;

use alertflow_model::LabelSet;
use alertflow_model::alert::{Alert, Status};
use alertflow_model::time::DurationMs;
use alertflow_model::window::{AggFn, GroupKey, WindowRow};
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

pub use self::when::Cond;
use crate::aggregate::{Aggregate, Shape};
use crate::checkpoint::Saver;
use crate::ordered::{Due, Ordered, Timed};
use crate::stats::{OperatorStats, StateGauge};
use crate::{ConfigError, Time};

/// The `[[rule]]` section of a pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The alert's name (its `alertname` label).
    pub name: String,
    /// The aggregate (tumbling or hopping) whose windows are judged.
    pub input: String,
    /// Metric names to judge; empty or absent: every metric of the aggregate.
    #[serde(default)]
    pub metrics: Vec<String>,
    /// The condition, e.g. `avg > 90 and count >= 3` (see [`when`]).
    pub when: String,
    /// How long the condition must hold before the alert fires.
    #[serde(default, rename = "for")]
    pub for_duration: DurationMs,
    /// The `severity` label.
    #[serde(default = "default_severity")]
    pub severity: String,
    /// Extra labels of the alert (part of its identity).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations (`summary`, `runbook_url`, …).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

fn default_severity() -> String {
    "warning".into()
}

/// Labels a rule sets itself.
const RESERVED: [&str; 3] = ["alertname", "severity", "metric"];

/// A validated rule, ready to build.
#[derive(Clone, Debug)]
pub struct Rule {
    name: Arc<str>,
    when: Arc<str>,
    cond: Cond,
    reads: Vec<AggFn>,
    metrics: Vec<String>,
    for_ms: i64,
    severity: Arc<str>,
    group_by: Vec<String>,
    labels: Vec<(String, String)>,
    annotations: Vec<(String, String)>,
    /// Distance between window ends.
    step: i64,
    epoch: i64,
    /// The partition its alerts carry: `u32::MAX − rule index`, apart from every source's.
    part: u32,
    /// Counters of all workers' instances.
    stats: Arc<OperatorStats>,
}

fn label_name_ok(k: &str) -> bool {
    let mut c = k.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_') && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

impl Rule {
    /// Validates the `index`th rule of a pipeline (epoch `epoch`), reading aggregate `agg`.
    pub fn with_config(cfg: &RuleConfig, agg: &Aggregate, index: usize, epoch: DurationMs) -> Result<Rule, Vec<ConfigError>> {
        let mut errs = Vec::new();
        if cfg.name.trim().is_empty() {
            errs.push(ConfigError::new("name", "the alert name cannot be empty"));
        }
        if cfg.severity.trim().is_empty() {
            errs.push(ConfigError::new("severity", "cannot be empty (default `warning`)"));
        }
        if cfg.for_duration.millis() > 366 * 86_400_000 {
            errs.push(ConfigError::new("for", "must be at most 366d"));
        }
        let step = match agg.shape() {
            Shape::Fixed { slide, .. } => slide,
            Shape::Session { .. } => {
                errs.push(ConfigError::new(
                    "input",
                    format!(
                        "`{}` has session windows; a rule needs a tumbling or hopping aggregate (windows at a fixed step, so a \
                         missing window can count as \"does not hold\")",
                        agg.name()
                    ),
                ));
                1
            }
        };
        let (cond, reads) = match Cond::parse(&cfg.when) {
            Ok(c) => {
                let reads = c.functions();
                for f in &reads {
                    if !agg.functions().contains(f) {
                        let has: Vec<&str> = agg.functions().iter().map(|f| f.name()).collect();
                        errs.push(ConfigError::new(
                            "when",
                            format!(
                                "`{f}` is not computed by aggregate `{}` (it computes {}); add it to its `functions`",
                                agg.name(),
                                has.join(", ")
                            ),
                        ));
                    }
                }
                (Some(c), reads)
            }
            Err(e) => {
                errs.push(ConfigError::new("when", format!("`{}`: {e}", cfg.when)));
                (None, Vec::new())
            }
        };
        for (i, m) in cfg.metrics.iter().enumerate() {
            if m.is_empty() {
                errs.push(ConfigError::new(format!("metrics[{i}]"), "a metric name cannot be empty"));
            } else if cfg.metrics[..i].contains(m) {
                errs.push(ConfigError::new(format!("metrics[{i}]"), format!("`{m}` is listed twice")));
            }
        }
        for k in cfg.labels.keys() {
            if RESERVED.contains(&k.as_str()) {
                errs.push(ConfigError::new(format!("labels.{k}"), "is set by the rule (alertname = name, severity, metric)"));
            } else if !label_name_ok(k) {
                errs.push(ConfigError::new(format!("labels.{k}"), "a label name is letters, digits and `_`, not starting with a digit"));
            }
        }
        match cond {
            Some(cond) if errs.is_empty() => Ok(Rule {
                name: cfg.name.as_str().into(),
                when: cfg.when.trim().into(),
                cond,
                reads,
                metrics: cfg.metrics.clone(),
                for_ms: cfg.for_duration.millis() as i64,
                severity: cfg.severity.as_str().into(),
                group_by: agg.group_by().to_vec(),
                labels: cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                annotations: cfg.annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                step,
                epoch: epoch.millis().max(1) as i64,
                part: u32::MAX - index as u32,
                stats: Arc::default(),
            }),
            _ => Err(errs),
        }
    }

    /// The counters all workers' instances report into: window rows in (revisions counted as
    /// late and dropped: a window is judged once), alerts out, groups active.
    pub fn stats(&self) -> &Arc<OperatorStats> {
        &self.stats
    }

    /// The alert name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether groups of this metric are judged.
    #[inline]
    fn judges(&self, metric: &str) -> bool {
        self.metrics.is_empty() || self.metrics.iter().any(|m| m == metric)
    }

    /// The alert of `key` with this status, sent at `ts`.
    fn alert(&self, key: &GroupKey, status: Status, active: i64, ts: i64, ends_at: i64, row: Option<&WindowRow>) -> Alert {
        let mut labels: Vec<(&str, &str)> = Vec::with_capacity(self.group_by.len() + self.labels.len() + 3);
        for (k, v) in self.group_by.iter().zip(key.values()) {
            if let Some(v) = v {
                labels.push((k, v));
            }
        }
        labels.extend(self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        // Last, so they win over group labels of the same name (`LabelSet::new` keeps the last).
        labels.extend([("metric", key.name()), ("alertname", &*self.name), ("severity", &*self.severity)]);
        let values: Vec<(&str, String)> = match row {
            Some(r) => self.reads.iter().map(|f| (f.name(), r.acc.value(*f).to_string())).collect(),
            None => Vec::new(),
        };
        let mut annotations: Vec<(&str, &str)> = self.annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        annotations.push(("when", &self.when));
        annotations.extend(values.iter().map(|(k, v)| (*k, v.as_str())));
        Alert {
            labels: LabelSet::new(key.tenant(), &labels),
            annotations: LabelSet::new("", &annotations),
            status,
            starts_at: active,
            ends_at: Some(ends_at),
            ts,
            generator_url: None,
            part: self.part,
            pos: key.stable_hash(),
        }
    }
}

/// A window row in rule order: by window end (its last millisecond, where the aggregate
/// stamps it), groups apart by their hash.
impl Timed for WindowRow {
    fn ts(&self) -> i64 {
        self.end - 1
    }
    fn origin(&self) -> (u32, u64) {
        (0, self.key.stable_hash())
    }
}

/// A group's state; inactive groups hold none.
#[derive(Serialize, Deserialize)]
struct Active {
    /// Timer id (see `ids`).
    id: u64,
    /// The end of the first window of this run of windows that held.
    since: i64,
    firing: bool,
    /// The end of the last window judged.
    last_end: i64,
}

/// A rule's part of a checkpoint: timers, active groups, timer ids, the next id, and alerts
/// not sent yet.
type Saved = (std::collections::BTreeSet<(i64, u64)>, HashMap<GroupKey, Active>, HashMap<u64, GroupKey>, u64, BTreeMap<i64, Vec<Alert>>);

/// Builds rules on window rows.
pub trait RuleExt<'s> {
    /// The alerts `op` raises and resolves over these window rows (of the aggregate it was
    /// validated with), each at its evaluation time's epoch.
    fn rule(self, op: &Rule) -> Stream<'s, Time, Vec<Alert>>;
}

impl<'s> RuleExt<'s> for Stream<'s, Time, Vec<WindowRow>> {
    fn rule(self, op: &Rule) -> Stream<'s, Time, Vec<Alert>> {
        let op = op.clone();
        let worker = self.scope().index();
        self.unary_frontier::<CapacityContainerBuilder<Vec<Alert>>, _, _, _>(
            Exchange::new(|r: &WindowRow| r.key.stable_hash()),
            &format!("rule:{}", op.name),
            move |cap, _info| {
                let mut ordered: Ordered<WindowRow> = Ordered::new(cap, op.epoch);
                let mut active: HashMap<GroupKey, Active> = HashMap::new();
                // Timer id → group: timers carry a u64, a group key does not fit.
                let mut ids: HashMap<u64, GroupKey> = HashMap::new();
                let mut next_id = 0u64;
                let mut out: BTreeMap<i64, Vec<Alert>> = BTreeMap::new();
                let mut state = StateGauge::new(op.stats.clone());
                let mut saver = Saver::register(&format!("rule:{}", op.name), worker);
                if let Some((timers, a, i, n, o)) = saver.restore::<Saved>() {
                    ordered.restore_timers(timers);
                    (active, ids, next_id, out) = (a, i, n, o);
                }
                move |(input, frontier), output| {
                    input.for_each_stamp(|_, data| {
                        for batch in data {
                            let revisions = batch.iter().filter(|r| r.revision > 0).count();
                            op.stats.add_in(batch.len());
                            op.stats.add_late(revisions);
                            op.stats.add_dropped(revisions);
                            // Revisions (late = "update") come after their window was judged.
                            for r in batch.drain(..).filter(|r| r.revision == 0 && op.judges(r.key.name())) {
                                ordered.push(r);
                            }
                        }
                    });
                    loop {
                        let until = saver.pending();
                        ordered.begin_until(frontier, until);
                        while let Some(due) = ordered.next_due() {
                            match due {
                                Due::Record(row) => {
                                    let end = row.end;
                                    let holds = op.cond.holds(&row.acc);
                                    let state = active.get_mut(&row.key);
                                    match (state, holds) {
                                        (None, false) => {}
                                        (None, true) => {
                                            let id = next_id;
                                            next_id += 1;
                                            let firing = op.for_ms == 0;
                                            if firing {
                                                let a = op.alert(&row.key, Status::Firing, end, end, end + 4 * op.step, Some(&row));
                                                out.entry(end).or_default().push(a);
                                            }
                                            ordered.set_timer(end + op.step - 1, id);
                                            ids.insert(id, row.key.clone());
                                            active.insert(row.key.clone(), Active { id, since: end, firing, last_end: end });
                                        }
                                        (Some(s), true) => {
                                            ordered.cancel_timer(s.last_end + op.step - 1, s.id);
                                            ordered.set_timer(end + op.step - 1, s.id);
                                            s.last_end = end;
                                            if s.firing || end - s.since >= op.for_ms {
                                                s.firing = true;
                                                let a = op.alert(&row.key, Status::Firing, s.since, end, end + 4 * op.step, Some(&row));
                                                out.entry(end).or_default().push(a);
                                            }
                                        }
                                        (Some(s), false) => {
                                            ordered.cancel_timer(s.last_end + op.step - 1, s.id);
                                            if s.firing {
                                                let a = op.alert(&row.key, Status::Resolved, s.since, end, end, Some(&row));
                                                out.entry(end).or_default().push(a);
                                            }
                                            ids.remove(&s.id);
                                            active.remove(&row.key);
                                        }
                                    }
                                }
                                Due::Timer(at, id) => {
                                    // No row for the window ending at `at + 1`: no points, so the
                                    // condition does not hold.
                                    let Some(key) = ids.remove(&id) else { continue };
                                    let s = active.remove(&key).expect("a timer's group is active");
                                    if s.firing {
                                        let end = at + 1;
                                        out.entry(end).or_default().push(op.alert(&key, Status::Resolved, s.since, end, end, None));
                                    }
                                }
                            }
                        }
                        // An alert is stamped with its window's end, the epoch after the row's when
                        // the end is on an epoch boundary: one at or after a pending checkpoint
                        // waits, and is saved with the state, so a restored run sends it again.
                        while let Some(entry) = out.first_entry() {
                            let ts = *entry.key();
                            if until.is_some_and(|u| ordered.epoch_of(ts) >= u) {
                                break;
                            }
                            let mut alerts = entry.remove();
                            if let Some(cap) = ordered.cap_at(ts) {
                                op.stats.add_out(alerts.len());
                                output.session(&cap).give_container(&mut alerts);
                            }
                        }
                        if !saver.save_if_passed(frontier, until, || (ordered.timer_list(), &active, &ids, next_id, &out)) {
                            break;
                        }
                    }
                    saver.finish_if_done(frontier, || (ordered.timer_list(), &active, &ids, next_id, &out));
                    ordered.settle(frontier);
                    state.set(active.len());
                }
            },
        )
    }
}

#[cfg(test)]
mod tests;
