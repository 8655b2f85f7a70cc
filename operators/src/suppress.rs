//! Suppress: storm detection per tenant and group (default `alertname`). When more than
//! `threshold` distinct fingerprints open within `window`, a storm opens: one `storms` row
//! with its count, distinct fingerprints, top label values and sample fingerprints. Member
//! alerts are marked `suppressed` (for notification; still stored) and carry the `storm_id`.
//! The storm row is updated every quarter `window` while it grows, and the storm closes, with
//! hysteresis, once the rate has stayed below `threshold / 2` for `cooldown`.
//!
//! Re-sent notices do not count (dedup absorbed them: only `opened` rows count), and events
//! are handled per group in event-time order, so storms are the same at any worker count.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use alertflow_model::LabelSet;
use alertflow_model::alert::{AlertEvent, EventKind, StormRow};
use alertflow_model::time::DurationMs;
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::Operator;

use crate::checkpoint::Saver;
use crate::ordered::{Due, Ordered, Timed};
use crate::placement;
use crate::stats::{OperatorStats, StateGauge};
use crate::{ConfigError, Time};

/// The `[suppress]` section of a pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuppressConfig {
    /// Labels whose values form a storm's group (tenant is always part of it).
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// A storm opens when more than this many distinct fingerprints open within `window`.
    #[serde(default = "default_threshold")]
    pub threshold: u64,
    /// The sliding window of the count.
    #[serde(default = "default_window")]
    pub window: DurationMs,
    /// A storm closes after its rate stayed below `threshold / 2` this long.
    #[serde(default = "default_cooldown")]
    pub cooldown: DurationMs,
}

impl Default for SuppressConfig {
    fn default() -> Self {
        SuppressConfig {
            group_by: default_group_by(),
            threshold: default_threshold(),
            window: default_window(),
            cooldown: default_cooldown(),
        }
    }
}

fn default_group_by() -> Vec<String> {
    vec!["alertname".into()]
}
fn default_threshold() -> u64 {
    100
}
fn default_window() -> DurationMs {
    DurationMs(60_000)
}
fn default_cooldown() -> DurationMs {
    DurationMs(5 * 60_000)
}

/// A validated suppress operator.
#[derive(Clone, Debug)]
pub struct Suppress {
    group_by: Vec<String>,
    threshold: u64,
    window: i64,
    cooldown: i64,
    tick: i64,
    epoch: i64,
    /// Counters of all workers' instances.
    stats: Arc<OperatorStats>,
}

impl Suppress {
    /// The counters all workers' instances report into: events in, events and storm rows out,
    /// groups held.
    pub fn stats(&self) -> &Arc<OperatorStats> {
        &self.stats
    }

    /// The labels a storm's group is keyed by (with the tenant).
    pub fn group_by(&self) -> &[String] {
        &self.group_by
    }

    /// Validates a config.
    pub fn with_config(cfg: &SuppressConfig, epoch: DurationMs) -> Result<Suppress, Vec<ConfigError>> {
        let mut errs = Vec::new();
        if cfg.threshold < 2 {
            errs.push(ConfigError::new("threshold", "must be at least 2"));
        }
        if cfg.window.millis() == 0 {
            errs.push(ConfigError::new("window", "must be greater than 0"));
        }
        for (i, g) in cfg.group_by.iter().enumerate() {
            if g.is_empty() {
                errs.push(ConfigError::new(format!("group_by[{i}]"), "a label name cannot be empty"));
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let window = cfg.window.millis() as i64;
        let epoch = epoch.millis().max(1) as i64;
        Ok(Suppress {
            group_by: cfg.group_by.clone(),
            threshold: cfg.threshold,
            window,
            cooldown: cfg.cooldown.millis() as i64,
            tick: (window / 4).max(epoch),
            epoch,
            stats: Arc::default(),
        })
    }

    /// The group of an alert: its stable hash (routing and the key of its state). Per event,
    /// so nothing is allocated.
    fn group_hash(&self, labels: &LabelSet) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3Default::new();
        h.update(labels.tenant().as_bytes());
        h.update(&[0xFF]);
        for g in &self.group_by {
            h.update(labels.get(g).map(|v| v.as_bytes()).unwrap_or_default());
            h.update(&[0xFF]);
        }
        h.digest()
    }

    /// The readable key of a group (`alertname=HighCpu`), when the group is created.
    fn group_key(&self, labels: &LabelSet) -> String {
        let mut key = String::new();
        for g in &self.group_by {
            if !key.is_empty() {
                key.push(',');
            }
            key.push_str(g);
            key.push('=');
            key.push_str(labels.get(g).map(|v| &**v).unwrap_or(""));
        }
        key
    }
}

impl Timed for AlertEvent {
    fn ts(&self) -> i64 {
        self.ts
    }
    fn origin(&self) -> (u32, u64) {
        (self.part, self.pos)
    }
}

/// Announced when a storm opens: the fingerprints already in it. Their `opened` rows went by
/// before the storm existed, so correlate learns of their membership from this.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StormMembers {
    /// The tenant.
    pub tenant: Arc<str>,
    /// The storm.
    pub storm_id: u64,
    /// Its members when it opened: (fingerprint, episode id of its latest opening), so that
    /// correlate finds their episodes without a table from fingerprint to episode.
    pub members: Vec<(u64, u64)>,
    /// When it opened.
    pub ts: i64,
}

/// Most distinct `(label, value)` pairs counted per storm for `top_labels`.
const MAX_LABEL_PAIRS: usize = 4096;

#[derive(Serialize, Deserialize)]
struct Storm {
    id: u64,
    opened_at: i64,
    members: HashSet<u64>,
    alert_count: u64,
    labels: HashMap<(Arc<str>, Arc<str>), u64>,
    samples: Vec<u64>,
    revision: u64,
    below_since: Option<i64>,
    dirty: bool,
}

#[derive(Serialize, Deserialize)]
struct Group {
    tenant: Arc<str>,
    key: Arc<str>,
    /// Openings within the window: (time, episode id, labels).
    recent: VecDeque<(i64, u64, LabelSet)>,
    /// Openings per fingerprint within the window.
    counts: HashMap<u64, u32>,
    storm: Option<Storm>,
    timer: Option<i64>,
    /// Members of this group's storms whose episode is still open: they keep their storm
    /// (and stay suppressed) until the episode ends, even when the storm closed first.
    sticky: HashMap<u64, u64>,
}

impl Group {
    fn evict(&mut self, before_or_at: i64) {
        while let Some((t, _, l)) = self.recent.front() {
            if *t > before_or_at {
                break;
            }
            let fp = l.fingerprint();
            if let Some(c) = self.counts.get_mut(&fp) {
                *c -= 1;
                if *c == 0 {
                    self.counts.remove(&fp);
                }
            }
            self.recent.pop_front();
        }
    }
}

/// A borrowed `(label, value)` key of [`Storm::labels`]: looks a pair up without cloning its
/// two `Arc`s (four atomic operations per label of every storm member). Hashes as the tuple.
#[derive(Hash)]
struct PairRef<'a>(&'a str, &'a str);

impl hashbrown::Equivalent<(Arc<str>, Arc<str>)> for PairRef<'_> {
    fn equivalent(&self, key: &(Arc<str>, Arc<str>)) -> bool {
        self.0 == &*key.0 && self.1 == &*key.1
    }
}

impl Storm {
    fn add(&mut self, labels: &LabelSet, group_by: &[String]) {
        let fp = labels.fingerprint();
        self.alert_count += 1;
        if self.members.insert(fp) && self.samples.len() < 10 {
            self.samples.push(fp);
        }
        for (k, v) in labels.labels() {
            if group_by.iter().any(|g| **g == **k) || &**k == "alertname" {
                continue;
            }
            let full = self.labels.len() >= MAX_LABEL_PAIRS;
            match self.labels.get_mut(&PairRef(k, v)) {
                Some(n) => *n += 1,
                None if !full => {
                    self.labels.insert((k.clone(), v.clone()), 1);
                }
                None => {}
            }
        }
        self.dirty = true;
    }

    fn row(&mut self, g: &Group, at: i64, open: bool) -> StormRow {
        self.revision += 1;
        self.dirty = false;
        // Top three values per label, by count then value. Selected in one pass, not sorted:
        // a storm counts up to 4,096 pairs, and a row goes out every tick the storm changed —
        // sorting them all per row was 3 % of the storm-heavy bench.
        let mut by_key: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
        let before = |a: &(&str, u64), b: &(&str, u64)| b.1.cmp(&a.1).then(a.0.cmp(b.0)).is_lt();
        for ((k, v), n) in &self.labels {
            let top = by_key.entry(k).or_default();
            let pair = (&**v, *n);
            if top.len() == 3 && !before(&pair, &top[2]) {
                continue;
            }
            let at = top.iter().position(|t| before(&pair, t)).unwrap_or(top.len());
            top.insert(at, pair);
            top.truncate(3);
        }
        let mut top = serde_json::Map::new();
        for (k, vs) in by_key {
            top.insert(k.to_string(), serde_json::Value::Array(vs.into_iter().map(|(v, n)| serde_json::json!([v, n])).collect()));
        }
        StormRow {
            storm_id: self.id,
            tenant: g.tenant.clone(),
            group_key: g.key.clone(),
            open,
            opened_at: self.opened_at,
            updated_at: at,
            closed_at: (!open).then_some(at),
            alert_count: self.alert_count,
            distinct_fingerprints: self.members.len() as u64,
            top_labels: serde_json::Value::Object(top).to_string(),
            sample_fingerprints: self.samples.clone(),
            revision: self.revision,
        }
    }
}

/// Builds storm suppression on lifecycle streams.
pub trait SuppressExt<'s> {
    /// The events, annotated with `suppressed`/`storm_id`; the storm rows; and, for correlate,
    /// the members of each storm when it opened.
    fn suppress(self, op: &Suppress) -> Suppressed<'s>;
}

/// The outputs of [`SuppressExt::suppress`].
pub struct Suppressed<'s> {
    /// Lifecycle rows, annotated.
    pub events: Stream<'s, Time, Vec<AlertEvent>>,
    /// Storm rows.
    pub storms: Stream<'s, Time, Vec<StormRow>>,
    /// Storm memberships at opening.
    pub members: Stream<'s, Time, Vec<StormMembers>>,
}

enum Out {
    Event(AlertEvent),
    Storm(StormRow),
    Members(StormMembers),
}

impl<'s> SuppressExt<'s> for Stream<'s, Time, Vec<AlertEvent>> {
    fn suppress(self, op: &Suppress) -> Suppressed<'s> {
        let op = op.clone();
        let route = op.clone();
        let worker = self.scope().index();
        let peers = self.scope().peers();
        let both = self.unary_frontier::<CapacityContainerBuilder<Vec<Out>>, _, _, _>(
            // Never on the tenant's correlate worker: see `placement`.
            Exchange::new(move |e: &AlertEvent| placement::group_worker(route.group_hash(&e.labels), e.tenant(), peers)),
            "suppress",
            move |cap, _info| {
                let mut ordered: Ordered<AlertEvent> = Ordered::new(cap, op.epoch);
                let mut groups: HashMap<u64, Group> = HashMap::new();
                let mut saver = Saver::register("suppress", worker);
                if let Some((timers, g)) = saver.restore::<(BTreeSet<(i64, u64)>, HashMap<u64, Group>)>() {
                    ordered.restore_timers(timers);
                    groups = g;
                }
                let mut out: BTreeMap<Time, Vec<Out>> = BTreeMap::new();
                let mut state = StateGauge::new(op.stats.clone());
                move |(input, frontier), output| {
                    input.for_each_stamp(|_cap, data| {
                        for batch in data {
                            op.stats.add_in(batch.len());
                            ordered.push_batch(batch);
                        }
                    });
                    loop {
                        let until = saver.pending();
                        ordered.begin_until(frontier, until);
                        while let Some(due) = ordered.next_due() {
                            ordered.prefetch_labels(|e| Some(&e.labels));
                            let mut emit = |at: i64, o: Out| out.entry(ordered_epoch(at, op.epoch)).or_default().push(o);
                            let timer = match due {
                                Due::Record(e) => event(&op, &mut groups, e, &mut emit),
                                Due::Timer(at, key) => tick(&op, &mut groups, at, key, &mut emit),
                            };
                            if let Some((key, old, new)) = timer {
                                if let Some(old) = old {
                                    ordered.cancel_timer(old, key);
                                }
                                if let Some(new) = new {
                                    ordered.set_timer(new, key);
                                }
                            }
                        }
                        for (t, mut rows) in std::mem::take(&mut out) {
                            if let Some(cap) = ordered.cap_at(t as i64) {
                                op.stats.add_out(rows.iter().filter(|o| !matches!(o, Out::Members(_))).count());
                                output.session(&cap).give_container(&mut rows);
                            }
                        }
                        if !saver.save_if_passed(frontier, until, || (ordered.timer_list(), &groups)) {
                            break;
                        }
                    }
                    saver.finish_if_done(frontier, || (ordered.timer_list(), &groups));
                    ordered.settle(frontier);
                    state.set(groups.len());
                }
            },
        );
        // `Result` is only the routing tag of `ok_err` (see correlate.rs).
        #[allow(clippy::result_large_err)]
        let (events, rest): (Stream<'s, Time, Vec<AlertEvent>>, Stream<'s, Time, Vec<Out>>) = both.ok_err(|o| match o {
            Out::Event(e) => Ok(e),
            other => Err(other),
        });
        let (storms, members) = rest.ok_err(|o| match o {
            Out::Storm(s) => Ok(s),
            Out::Members(m) => Err(m),
            Out::Event(_) => unreachable!("events were split off"),
        });
        Suppressed { events, storms, members }
    }
}

fn ordered_epoch(ts: i64, epoch: i64) -> Time {
    (ts.max(0) - ts.max(0) % epoch) as Time
}

/// (group, old timer, new timer).
type TimerChange = Option<(u64, Option<i64>, Option<i64>)>;

fn event(op: &Suppress, groups: &mut HashMap<u64, Group>, mut e: AlertEvent, emit: &mut impl FnMut(i64, Out)) -> TimerChange {
    let gh = op.group_hash(&e.labels);
    let ts = e.ts;
    let g = groups.entry(gh).or_insert_with(|| Group {
        tenant: e.labels.tenant_arc().clone(),
        key: op.group_key(&e.labels).into(),
        recent: VecDeque::new(),
        counts: HashMap::new(),
        storm: None,
        timer: None,
        sticky: HashMap::new(),
    });
    g.evict(ts - op.window);
    let fp = e.fingerprint();
    let mut storm_opened = false;
    if e.event == EventKind::Opened {
        g.recent.push_back((ts, e.episode(), e.labels.clone()));
        *g.counts.entry(fp).or_insert(0) += 1;
        if let Some(s) = g.storm.as_mut() {
            s.add(&e.labels, &op.group_by);
        } else if g.counts.len() as u64 > op.threshold {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&gh.to_le_bytes());
            b[8..].copy_from_slice(&ts.to_le_bytes());
            let mut s = Storm {
                id: xxhash_rust::xxh3::xxh3_64(&b),
                opened_at: ts,
                members: HashSet::new(),
                alert_count: 0,
                labels: HashMap::new(),
                samples: Vec::new(),
                revision: 0,
                below_since: None,
                dirty: false,
            };
            for (_, _, l) in &g.recent {
                s.add(l, &op.group_by);
                g.sticky.insert(l.fingerprint(), s.id);
            }
            emit(ts, Out::Storm(s.row(g, ts, true)));
            // Each member with the episode of its latest opening (the one still open).
            let mut latest: HashMap<u64, u64> = HashMap::with_capacity(s.members.len());
            for (_, ep, l) in &g.recent {
                latest.insert(l.fingerprint(), *ep);
            }
            let mut members: Vec<(u64, u64)> = latest.into_iter().collect();
            members.sort_unstable();
            emit(ts, Out::Members(StormMembers { tenant: g.tenant.clone(), storm_id: s.id, members, ts }));
            g.storm = Some(s);
            storm_opened = true;
        }
    }
    if let Some(s) = &g.storm
        && s.members.contains(&fp)
    {
        g.sticky.insert(fp, s.id);
    }
    if let Some(&id) = g.sticky.get(&fp) {
        e.suppressed = true;
        e.storm_id = Some(id);
        if matches!(e.event, EventKind::Resolved | EventKind::Expired) {
            g.sticky.remove(&fp);
        }
    }
    emit(ts, Out::Event(e));
    // The group's next timer: storm ticks while a storm is open, else forgetting the group
    // once its window is empty.
    let want = match &g.storm {
        Some(_) => g.timer.filter(|&t| t > ts && !storm_opened).unwrap_or((ts / op.tick + 1) * op.tick),
        None => g.recent.back().map_or(ts, |(t, _, _)| *t) + op.window,
    };
    let old = g.timer.replace(want);
    (old != Some(want)).then_some((gh, old, Some(want)))
}

/// A group without a storm: a timer when its window empties, then it is dropped — unless
/// members of its closed storm still fire (`sticky`), in which case it stays, with no timer,
/// until its next alert arms one. (It used to re-arm a timer every `window` while only sticky
/// members were left: harmless while time crept forward, but when bounded input ended and the
/// frontier emptied, those timers fired one after another forever.)
fn forget_later(op: &Suppress, groups: &mut HashMap<u64, Group>, gh: u64) -> TimerChange {
    let g = groups.get_mut(&gh)?;
    let Some(&(last, _, _)) = g.recent.back() else {
        if g.sticky.is_empty() {
            groups.remove(&gh);
        }
        return None;
    };
    let next = last + op.window;
    g.timer = Some(next);
    Some((gh, None, Some(next)))
}

fn tick(op: &Suppress, groups: &mut HashMap<u64, Group>, at: i64, gh: u64, emit: &mut impl FnMut(i64, Out)) -> TimerChange {
    let g = groups.get_mut(&gh)?;
    if g.timer != Some(at) {
        return None;
    }
    g.timer = None;
    g.evict(at - op.window);
    let Some(mut s) = g.storm.take() else {
        return forget_later(op, groups, gh);
    };
    // Hysteresis: close once the distinct count stayed below threshold / 2 for cooldown.
    if (g.counts.len() as u64) * 2 < op.threshold {
        let since = *s.below_since.get_or_insert(at);
        if at - since >= op.cooldown {
            emit(at, Out::Storm(s.row(g, at, false)));
            return forget_later(op, groups, gh);
        }
    } else {
        s.below_since = None;
    }
    if s.dirty {
        emit(at, Out::Storm(s.row(g, at, true)));
    }
    g.storm = Some(s);
    let next = at + op.tick;
    g.timer = Some(next);
    Some((gh, None, Some(next)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::{Correlate, CorrelateConfig};
    use crate::dedup::{Dedup, DedupConfig};
    use crate::testing::{AlertOutputs, Lcg, run_alert_chain};
    use alertflow_model::alert::{Alert, Status};
    use std::collections::BTreeMap as Map;

    const T0: i64 = 1_767_225_600_000;

    #[test]
    fn top_labels_are_the_three_most_counted_values_of_each_label() {
        let storm = || Storm {
            id: 1,
            opened_at: 0,
            members: HashSet::new(),
            alert_count: 0,
            labels: HashMap::new(),
            samples: vec![],
            revision: 0,
            below_since: None,
            dirty: false,
        };
        let g = Group {
            tenant: "t".into(),
            key: "k".into(),
            recent: VecDeque::new(),
            counts: HashMap::new(),
            storm: None,
            timer: None,
            sticky: HashMap::new(),
        };
        let mut s = storm();
        for (k, v, n) in [("pod", "a", 5), ("pod", "b", 5), ("pod", "c", 3), ("pod", "d", 7), ("pod", "e", 1), ("zone", "x", 2)] {
            s.labels.insert((k.into(), v.into()), n);
        }
        assert_eq!(s.row(&g, 10, true).top_labels, r#"{"pod":[["d",7],["a",5],["b",5]],"zone":[["x",2]]}"#);
        // Against sorting every value, on random counts with many ties.
        let mut rng = Lcg(7);
        for _ in 0..200 {
            let mut s = storm();
            let mut all: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
            for _ in 0..rng.next() % 60 {
                let (k, v, n) = (format!("k{}", rng.next() % 4), format!("v{}", rng.next() % 30), 1 + rng.next() % 5);
                if s.labels.insert((k.as_str().into(), v.as_str().into()), n).is_none() {
                    all.entry(k).or_default().push((v, n));
                } else {
                    all.get_mut(&k).unwrap().iter_mut().find(|(x, _)| *x == v).unwrap().1 = n;
                }
            }
            let mut want = serde_json::Map::new();
            for (k, mut vs) in all {
                vs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                vs.truncate(3);
                want.insert(k, vs.into_iter().map(|(v, n)| serde_json::json!([v, n])).collect());
            }
            assert_eq!(s.row(&g, 10, true).top_labels, serde_json::Value::Object(want).to_string());
        }
    }

    #[test]
    fn group_hash_and_pair_lookup_match_their_owned_forms() {
        // Group hashes key checkpointed state and storm ids: pinned to the one-shot hash of
        // `tenant 0xFF (value 0xFF)*`.
        let op = Suppress::with_config(
            &SuppressConfig { group_by: vec!["alertname".into(), "zone".into()], ..Default::default() },
            DurationMs(1),
        )
        .unwrap();
        let l = LabelSet::new("acme", &[("alertname", "HighCpu"), ("host", "h1")]);
        assert_eq!(op.group_hash(&l), xxhash_rust::xxh3::xxh3_64(b"acme\xffHighCpu\xff\xff"));
        assert_eq!(op.group_key(&l), "alertname=HighCpu,zone=");
        let mut m: HashMap<(Arc<str>, Arc<str>), u64> = HashMap::new();
        for i in 0..1000u64 {
            m.insert((format!("k{}", i % 7).into(), format!("v{i}").into()), i);
        }
        for i in 0..1000u64 {
            assert_eq!(m.get(&PairRef(&format!("k{}", i % 7), &format!("v{i}"))), Some(&i));
        }
        assert_eq!(m.get(&PairRef("k1", "v0")), None);
    }

    fn alert(name: &str, host: &str, ts: i64, part: u32, pos: u64) -> Alert {
        crate::testing::alert(&[("alertname", name), ("host", host), ("service", "db")], ts, Status::Firing, part, pos)
    }

    fn run(workers: usize, alerts: Vec<Alert>, cfg: SuppressConfig) -> AlertOutputs {
        let e = DurationMs(1000);
        run_alert_chain(
            workers,
            alerts,
            vec![],
            Dedup::with_config(&DedupConfig::default(), e).unwrap(),
            Suppress::with_config(&cfg, e).unwrap(),
            Correlate::with_config(&CorrelateConfig::default(), e).unwrap(),
        )
    }

    #[test]
    fn a_group_left_with_only_sticky_members_waits_without_a_timer() {
        // After its storm closed, a group whose window is empty but whose storm members still
        // fire needs no timer until its next alert. It used to re-arm one every `window`, and
        // once bounded input ended (an empty frontier fires every timer) that never stopped.
        let op = Suppress::with_config(&SuppressConfig::default(), DurationMs(1)).unwrap();
        let group = |sticky: bool| Group {
            tenant: "t".into(),
            key: "alertname=X".into(),
            recent: VecDeque::new(),
            counts: HashMap::new(),
            storm: None,
            timer: Some(T0),
            sticky: if sticky { HashMap::from([(7, 9)]) } else { HashMap::new() },
        };
        let mut groups = HashMap::from([(1, group(true)), (2, group(false))]);
        let mut emit = |_: i64, _: Out| panic!("nothing to emit");
        assert_eq!(tick(&op, &mut groups, T0, 1, &mut emit), None, "no new timer");
        assert_eq!(groups[&1].timer, None);
        assert_eq!(tick(&op, &mut groups, T0, 2, &mut emit), None);
        assert!(!groups.contains_key(&2), "a group with nothing left is dropped");
        // A group with openings in its window still forgets them on time.
        let mut g = group(false);
        g.recent.push_back((T0 - 1_000, 1, crate::testing::alert(&[("alertname", "X")], T0, Status::Firing, 0, 0).labels));
        groups.insert(3, g);
        assert_eq!(tick(&op, &mut groups, T0, 3, &mut emit), Some((3, None, Some(T0 - 1_000 + op.window))));
    }

    #[test]
    fn a_storm_opens_updates_and_closes_with_hysteresis() {
        // 150 hosts raise DiskFull over 30 s, each re-sent every 10 s for 2 minutes (re-sends do
        // not count), then everything is quiet.
        let mut a = Vec::new();
        for h in 0..150i64 {
            for k in 0..12 {
                a.push(alert("DiskFull", &format!("h{h}"), T0 + h * 200 + k * 10_000, (h % 4) as u32, (h * 100 + k) as u64));
            }
        }
        a.push(alert("Other", "x", T0, 9, 0));
        let o = run(2, a, SuppressConfig::default());
        let storms: Vec<&StormRow> = o.storms.iter().collect();
        let opened: Vec<&&StormRow> = storms.iter().filter(|s| s.revision == 1).collect();
        assert_eq!(opened.len(), 1, "one storm");
        let s = opened[0];
        // The 101st distinct host opens it.
        assert_eq!(s.opened_at, T0 + 100 * 200);
        assert_eq!(s.distinct_fingerprints, 101);
        assert_eq!(&*s.group_key, "alertname=DiskFull");
        assert!(s.top_labels.contains(r#""service":[["db",101]]"#), "{}", s.top_labels);
        let last = storms.iter().max_by_key(|s| s.revision).unwrap();
        assert!(!last.open);
        assert_eq!(last.distinct_fingerprints, 150);
        assert!(last.closed_at.unwrap() - T0 >= 5 * 60_000, "cooldown");
        // Members from the opening on are suppressed; the Other alert is not.
        let opened_rows: Vec<&AlertEvent> = o.alerts.iter().filter(|e| e.event == EventKind::Opened).collect();
        assert_eq!(opened_rows.iter().filter(|e| e.suppressed).count(), 50);
        assert!(opened_rows.iter().filter(|e| e.alertname() == "Other").all(|e| !e.suppressed && e.storm_id.is_none()));
        // Every DiskFull alert's later rows (expired) carry the storm.
        assert!(
            o.alerts
                .iter()
                .filter(|e| e.event == EventKind::Expired && e.alertname() == "DiskFull")
                .all(|e| e.storm_id == Some(s.storm_id))
        );
    }

    #[test]
    fn storms_match_a_naive_count_at_any_worker_count() {
        let mut r = Lcg(42);
        let mut a = Vec::new();
        let mut t = T0;
        for i in 0..8_000u64 {
            // Bursts of one alertname among background noise.
            t += (r.next() % 300) as i64;
            let burst = (t - T0) / 120_000 % 3 == 0;
            let name = if burst { "Burst" } else { ["A", "B", "C", "D"][(r.next() % 4) as usize] };
            let host = format!("h{}", r.next() % if burst { 2000 } else { 50 });
            a.push(alert(name, &host, t, (i / 400) as u32, i % 400));
        }
        let cfg =
            SuppressConfig { threshold: 30, window: "30s".parse().unwrap(), cooldown: "1m".parse().unwrap(), ..SuppressConfig::default() };
        let mut first: Option<Vec<String>> = None;
        for workers in [1, 2, 4] {
            let o = run(workers, a.clone(), cfg.clone());
            // Naive check of every opening: more than `threshold` distinct fingerprints opened in
            // the group within the window ending at it, and not one opening earlier since the
            // previous storm of the group closed.
            let opened: Vec<&AlertEvent> = o.suppressed.iter().filter(|e| e.event == EventKind::Opened).collect();
            let count = |name: &str, at: i64, pos: (u32, u64)| {
                opened
                    .iter()
                    .filter(|e| e.alertname() == name && e.ts > at - 30_000 && (e.ts, e.part, e.pos) <= (at, pos.0, pos.1))
                    .map(|e| e.fingerprint())
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
            };
            let starts: Vec<&StormRow> = o.storms.iter().filter(|s| s.revision == 1).collect();
            assert!(starts.len() >= 3, "storms happened: {}", starts.len());
            for s in &starts {
                let name = s.group_key.trim_start_matches("alertname=");
                let trigger = opened
                    .iter()
                    .find(|e| e.alertname() == name && e.ts == s.opened_at && e.storm_id == Some(s.storm_id))
                    .expect("the opening row");
                assert!(count(name, s.opened_at, (trigger.part, trigger.pos)) > 30);
            }
            let mut all: Vec<String> = o.storms.iter().map(|s| format!("{s:?}")).collect();
            all.extend(o.alerts.iter().map(|e| format!("{:?}", (e.ts, e.fingerprint(), e.event, e.suppressed, e.storm_id))));
            all.sort();
            match &first {
                None => first = Some(all),
                Some(f) => assert!(f == &all, "{workers} workers differ"),
            }
        }
        let _ = Map::<u8, u8>::new();
    }
}
