//! Dedup: Alertmanager lifecycle semantics in event time, keyed by fingerprint. The first
//! firing notice opens an episode (`opened`); repeats update `last_seen` and `occurrences`
//! without a row (or a `repeated` row every `repeat_interval`); a resolved notice closes it
//! (`resolved`); no notice for `resolve_timeout` — or the sender's `endsAt` passing — closes it
//! (`expired`). More than `flap_threshold` episodes within `flap_window` flag it `flapping`.
//!
//! Notices are applied per fingerprint in event-time order (see [`crate::ordered`]), so the
//! rows are the same at any worker count. Memory is bounded: a closed episode leaves state
//! (only a short flap history stays, for `flap_window`), and each tenant holds at most
//! `max_open_per_tenant` open episodes — past that, new fingerprints are counted as overflow
//! and dropped, never a crash.

use std::collections::BTreeMap;
use std::sync::Arc;

use alertflow_model::LabelSet;
use alertflow_model::alert::{Alert, AlertEvent, EventKind, Status, revision};
use alertflow_model::time::DurationMs;
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Probe, probe::Handle as ProbeHandle};

use crate::boxed_map::{BoxedMap, Keyed};
use crate::checkpoint::Saver;
use crate::limits::{OnFull, StateConfig, StateDefaults, StateLimits};
use crate::ordered::{BUDGET, Due, Ordered, Timed};
use crate::stats::{OperatorStats, StateGauge};
use crate::{ConfigError, Time};

/// The `[dedup]` section of a pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// The alert source to read; by default every alert stream of the pipeline.
    #[serde(default)]
    pub input: Option<String>,
    /// An open alert with no notice for this long is closed (`expired`).
    #[serde(default = "default_resolve_timeout")]
    pub resolve_timeout: DurationMs,
    /// While firing, re-emit a `repeated` row this often; `0s`: never.
    #[serde(default)]
    pub repeat_interval: DurationMs,
    /// More open/close cycles than this within `flap_window` flag the alert as flapping.
    #[serde(default = "default_flap_threshold")]
    pub flap_threshold: u32,
    /// The window of the flapping rule.
    #[serde(default = "default_flap_window")]
    pub flap_window: DurationMs,
    /// The most open alerts one tenant may hold; new fingerprints past it are counted and dropped.
    #[serde(default = "default_max_open")]
    pub max_open_per_tenant: u64,
    /// Bounds on the fingerprints held (open alerts and closed ones remembered for the
    /// flapping rule) over all tenants and workers: `max_keys` (see [`STATE`]). Entries end by
    /// themselves (`resolve_timeout`, then `flap_window`), so there is no `ttl`.
    #[serde(default)]
    pub state: StateConfig,
}

/// Dedup's state bounds by default: two million fingerprints over all workers; past that,
/// new fingerprints are rejected (an open alert is never evicted: its lifecycle would be
/// lost).
pub const STATE: StateDefaults =
    StateDefaults { max_keys: 2_000_000, ttl: None, on_full: OnFull::RejectNew, policies: &[OnFull::RejectNew] };

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            input: None,
            resolve_timeout: default_resolve_timeout(),
            repeat_interval: DurationMs(0),
            flap_threshold: default_flap_threshold(),
            flap_window: default_flap_window(),
            max_open_per_tenant: default_max_open(),
            state: StateConfig::default(),
        }
    }
}

fn default_resolve_timeout() -> DurationMs {
    DurationMs(5 * 60_000)
}
fn default_flap_threshold() -> u32 {
    4
}
fn default_flap_window() -> DurationMs {
    DurationMs(30 * 60_000)
}
fn default_max_open() -> u64 {
    1_000_000
}

/// A validated dedup operator.
#[derive(Clone, Debug)]
pub struct Dedup {
    resolve_timeout: i64,
    repeat_interval: i64,
    flap_threshold: u32,
    flap_window: i64,
    max_open: u64,
    epoch: i64,
    limits: StateLimits,
}

impl Dedup {
    /// Validates a config for a pipeline whose timely epoch is `epoch`.
    pub fn with_config(cfg: &DedupConfig, epoch: DurationMs) -> Result<Dedup, Vec<ConfigError>> {
        let mut errs = Vec::new();
        if cfg.resolve_timeout.millis() == 0 {
            errs.push(ConfigError::new("resolve_timeout", "must be greater than 0"));
        }
        if cfg.flap_threshold == 0 {
            errs.push(ConfigError::new("flap_threshold", "must be at least 1"));
        }
        if cfg.flap_window.millis() == 0 {
            errs.push(ConfigError::new("flap_window", "must be greater than 0"));
        }
        if cfg.max_open_per_tenant == 0 {
            errs.push(ConfigError::new("max_open_per_tenant", "must be at least 1"));
        }
        let limits = StateLimits::new(&cfg.state, STATE).map_err(|e| errs.extend(e)).ok();
        let Some(limits) = limits.filter(|_| errs.is_empty()) else { return Err(errs) };
        Ok(Dedup {
            resolve_timeout: cfg.resolve_timeout.millis() as i64,
            repeat_interval: cfg.repeat_interval.millis() as i64,
            flap_threshold: cfg.flap_threshold,
            flap_window: cfg.flap_window.millis() as i64,
            max_open: cfg.max_open_per_tenant,
            epoch: epoch.millis().max(1) as i64,
            limits,
        })
    }
}

impl Timed for Alert {
    fn ts(&self) -> i64 {
        self.ts
    }
    fn origin(&self) -> (u32, u64) {
        (self.part, self.pos)
    }
}

/// The state of one fingerprint. Held boxed: the map then costs 8 bytes a slot (a
/// [`BoxedMap`]: the key is the label set's fingerprint), and a table
/// that has just doubled (half its slots empty) wastes little — with `Entry` inline, 1,000,000
/// open alerts on two workers took 340 MB of tables, 170 MB of them empty slots. At most 128
/// bytes (the allocator's next size class is 160): see the test `entry_is_128_bytes`.
#[derive(Serialize, Deserialize)]
struct Entry {
    /// The fingerprint, beside the state: a lookup compares it without reading the label set
    /// (often another allocation than the notice's own: each worker interns its own copy).
    fp: u64,
    labels: LabelSet,
    annotations: LabelSet,
    generator_url: Option<Arc<str>>,
    open: bool,
    starts_at: i64,
    last_seen: i64,
    ends_at: Option<i64>,
    /// Notices of the current episode (saturating: 4 billion re-sends is beyond any episode;
    /// 32 bits keep the entry at 128 bytes with `fp`).
    occurrences: u32,
    /// Rows of the current episode.
    seq: u32,
    last_row: i64,
    /// Start times of the recent episodes (within `flap_window`), at most `flap_threshold + 1`
    /// of them: only whether there are more than `flap_threshold` matters.
    episodes: Starts,
    flapping: bool,
    /// The deadline: expiry while open, eviction once closed. A timer is armed at or before
    /// it (timers move lazily, see `notice`).
    timer: i64,
    /// Canonical position of the notice behind the latest change: partition and position.
    part: u32,
    pos: u64,
}

/// Start times of an alert's recent episodes, oldest first. Inline while there is one (most
/// alerts), boxed past that: 16 bytes in the entry and no allocation of its own for most,
/// where a `Vec` took 24 and an allocation for every alert.
#[derive(Default, Serialize, Deserialize)]
enum Starts {
    #[default]
    Empty,
    One(i64),
    // A thin pointer: `Box<[i64]>` or a bare `Vec` would make the enum 24 bytes.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<i64>>),
}

impl Starts {
    fn as_slice(&self) -> &[i64] {
        match self {
            Starts::Empty => &[],
            Starts::One(s) => std::slice::from_ref(s),
            Starts::Many(v) => v,
        }
    }

    fn last(&self) -> Option<i64> {
        self.as_slice().last().copied()
    }

    /// Appends `ts` after dropping the starts at or before `since` and then the oldest, so
    /// that at most `max` (≥ 1: the threshold plus one) remain.
    fn push_within(&mut self, ts: i64, since: i64, max: usize) {
        let s = self.as_slice();
        let keep = s.partition_point(|&x| x <= since);
        let excess = (s.len() - keep + 1).saturating_sub(max);
        let kept = &s[keep + excess..];
        *self = if kept.is_empty() {
            Starts::One(ts)
        } else {
            let mut v = Vec::with_capacity(kept.len() + 1);
            v.extend_from_slice(kept);
            v.push(ts);
            Starts::Many(Box::new(v))
        };
    }
}

impl Keyed for Entry {
    fn key(&self) -> u64 {
        self.fp
    }
}

impl Entry {
    fn row(&mut self, event: EventKind, ts: i64) -> AlertEvent {
        self.seq = self.seq.saturating_add(1);
        self.last_row = ts;
        AlertEvent {
            event,
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            status: if self.open { Status::Firing } else { Status::Resolved },
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            last_seen: self.last_seen,
            occurrences: u64::from(self.occurrences),
            revision: revision(self.starts_at, self.seq.into()),
            ts,
            suppressed: false,
            storm_id: None,
            incident_id: None,
            team: None,
            tier: None,
            generator_url: self.generator_url.clone(),
            part: self.part,
            pos: self.pos,
        }
    }
}

/// Builds dedup on alert streams.
pub trait DedupExt<'s> {
    /// Lifecycle rows of the alerts, at the epoch of their event time.
    fn dedup(self, op: &Dedup, stats: Arc<OperatorStats>) -> Stream<'s, Time, Vec<AlertEvent>>;
}

impl<'s> DedupExt<'s> for Stream<'s, Time, Vec<Alert>> {
    fn dedup(self, op: &Dedup, stats: Arc<OperatorStats>) -> Stream<'s, Time, Vec<AlertEvent>> {
        let op = op.clone();
        let (worker, max_keys) = (self.scope().index(), op.limits.per_worker(self.scope().peers()));
        let scope = self.scope();
        // Dedup's output frontier over every worker: how far the slowest dedup has come.
        let probe = ProbeHandle::<Time>::new();
        let behind = probe.clone();
        self.unary_frontier::<CapacityContainerBuilder<Vec<AlertEvent>>, _, _, _>(
            Exchange::new(|a: &Alert| a.fingerprint()),
            "dedup",
            move |cap, info| {
                let activator = scope.activator_for(info.address.clone());
                let mut ordered: Ordered<Alert> = Ordered::new(cap, op.epoch);
                let mut state: BoxedMap<Entry> = BoxedMap::new();
                let mut open_per_tenant: HashMap<Arc<str>, u64> = HashMap::new();
                let mut saver = Saver::register("dedup", worker);
                if let Some((timers, s, o)) = saver.restore::<Saved>() {
                    ordered.restore_timers(timers);
                    (state, open_per_tenant) = (s, o);
                }
                let mut out: BTreeMap<Time, Vec<AlertEvent>> = BTreeMap::new();
                let mut held = StateGauge::new(stats.clone());
                move |(input, frontier), output| {
                    input.for_each_stamp(|_cap, data| {
                        for batch in data {
                            stats.add_in(batch.len());
                            ordered.push_batch(batch);
                        }
                    });
                    let mut yielded = false;
                    loop {
                        let until = saver.pending();
                        ordered.begin_until(frontier, until);
                        // When the input ends, every open alert's expiry is due at once. A
                        // worker still busy with records holds downstream's frontier back, so
                        // rows a faster worker emits far past it wait there: at 1,000,000 open
                        // alerts, 300,000 rows (150 MB) sat in suppress. Then timers stay within
                        // a few epochs of the slowest worker (which is never held back: its own
                        // capability is the frontier). Only then: while input flows, timers are
                        // due as the frontier moves, and waiting for the probe (a step behind)
                        // made a test four times slower.
                        let slowest = behind.with_frontier(|f| f.iter().next().copied());
                        let ended = frontier.frontier().is_empty();
                        ordered.hold_timers_from(slowest.filter(|_| ended).map(|t| t.saturating_add(HORIZON_EPOCHS * op.epoch as Time)));
                        let mut budget = BUDGET;
                        while budget > 0
                            && let Some(due) = ordered.next_due()
                        {
                            let (row, timer) = match due {
                                Due::Record(a) => {
                                    prefetch(&state, ordered.ahead(LOOKAHEAD), ordered.ahead(2 * LOOKAHEAD));
                                    notice(&op, max_keys, &mut state, &mut open_per_tenant, a, &stats)
                                }
                                Due::Timer(at, fp) => {
                                    budget -= 1;
                                    timeout(&op, &mut state, &mut open_per_tenant, at, fp)
                                }
                            };
                            if let Some((old, new, fp)) = timer {
                                if let Some(old) = old {
                                    ordered.cancel_timer(old, fp);
                                }
                                if let Some(new) = new {
                                    ordered.set_timer(new, fp);
                                }
                            }
                            for r in row {
                                out.entry(ordered.epoch_of(r.ts)).or_default().push(r);
                            }
                        }
                        for (t, mut rows) in std::mem::take(&mut out) {
                            stats.add_out(rows.len());
                            if let Some(cap) = ordered.cap_at(t as i64) {
                                output.session(&cap).give_container(&mut rows);
                            }
                        }
                        if budget == 0 || ordered.held_back() {
                            // More timers may be due: let downstream take these rows first. The
                            // state is not saved now — it does not yet hold everything before
                            // `until`. Only timers count: records come at the pace the sources
                            // read them, and an operator that yielded to them let the sources
                            // read on and pile records up (a third more memory and time on the
                            // storm-heavy bench).
                            yielded = true;
                            if ordered.held_back() {
                                // Waiting for a peer: let this worker's thread park meanwhile
                                // (with more workers than cores, spinning took the slow one's
                                // core).
                                activator.activate_after(std::time::Duration::from_micros(200));
                            } else {
                                activator.activate();
                            }
                            break;
                        }
                        if !saver.save_if_passed(frontier, until, || (ordered.timer_list(), &state, &open_per_tenant)) {
                            break;
                        }
                    }
                    if !yielded {
                        saver.finish_if_done(frontier, || (ordered.timer_list(), &state, &open_per_tenant));
                    }
                    held.set(state.len());
                    ordered.settle(frontier);
                }
            },
        )
        .probe_with(&probe)
    }
}

/// How many epochs past the slowest worker's dedup a worker's timers may run (see `dedup`).
const HORIZON_EPOCHS: Time = 8;

/// Dedup's part of a checkpoint: timers, entries by fingerprint, open alerts per tenant.
type Saved = (std::collections::BTreeSet<(i64, u64)>, BoxedMap<Entry>, HashMap<Arc<str>, u64>);

/// A timer change: (old time, new time, fingerprint).
type TimerChange = Option<(Option<i64>, Option<i64>, u64)>;

/// How far ahead of the notice at hand [`prefetch`] reads the entry; it hints the label sets
/// twice as far ahead.
const LOOKAHEAD: usize = 6;

/// Reads the entry of the notice `near` (a few places ahead), so that its cache misses (the
/// table's slot, the boxed entry) overlap with the work on the notices before it instead of
/// stalling the worker when its turn comes; and hints the label sets of the notice `far`
/// (twice as far ahead) into the cache.
///
/// Finding the entry needs the notice's fingerprint, which lives in its label set: an
/// allocation the decoding worker last touched (counting a reference), often on the other core.
/// Read as part of the lookup, that load headed a chain of dependent misses and was a third
/// of the look-ahead's stalls (3.4 % of all samples on the storm-heavy bench, `perf annotate`).
/// A hint does not wait, so by the time the notice is `near` its fingerprint is in the cache;
/// so is the reference count that dropping the notice changes, for the annotations too.
#[inline]
fn prefetch(state: &BoxedMap<Entry>, near: Option<&Alert>, far: Option<&Alert>) {
    if let Some(a) = far {
        a.labels.prefetch();
        a.annotations.prefetch();
    }
    if let Some(a) = near
        && let Some(e) = state.get(&a.fingerprint())
    {
        // Both cache lines of the 128-byte entry; the values are not used.
        std::hint::black_box((e.last_seen, e.pos, e.timer));
    }
}

/// Applies one notice.
fn notice(
    op: &Dedup,
    max_keys: usize,
    state: &mut BoxedMap<Entry>,
    open: &mut HashMap<Arc<str>, u64>,
    a: Alert,
    stats: &OperatorStats,
) -> (Vec<AlertEvent>, TimerChange) {
    let fp = a.fingerprint();
    let ts = a.ts;
    let mut rows = Vec::new();
    let entry = match state.get_mut(&fp) {
        Some(e) => e,
        None => {
            if a.status == Status::Resolved {
                return (rows, None); // resolving what was never open: nothing to do
            }
            if state.len() >= max_keys {
                stats.add_rejected(1);
                return (rows, None);
            }
            let n = open.entry(a.labels.tenant_arc().clone()).or_insert(0);
            if *n >= op.max_open {
                stats.add_dropped(1);
                return (rows, None);
            }
            state.insert_new(Box::new(Entry {
                fp,
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                generator_url: a.generator_url.clone(),
                open: false,
                starts_at: a.starts_at,
                last_seen: ts,
                ends_at: None,
                occurrences: 0,
                seq: 0,
                last_row: ts,
                episodes: Starts::Empty,
                flapping: false,
                timer: i64::MIN,
                part: a.part,
                pos: a.pos,
            }))
        }
    };
    let old_timer = (entry.timer != i64::MIN).then_some(entry.timer);
    (entry.part, entry.pos) = (a.part, a.pos);
    entry.annotations = a.annotations;
    if a.generator_url.is_some() {
        entry.generator_url = a.generator_url;
    }
    match (entry.open, a.status) {
        (false, Status::Firing) => {
            // A new episode.
            if let Some(n) = open.get_mut(entry.labels.tenant_arc()) {
                *n += 1;
            } else {
                open.insert(entry.labels.tenant_arc().clone(), 1);
            }
            entry.open = true;
            entry.starts_at = a.starts_at.min(ts);
            entry.last_seen = ts;
            entry.ends_at = a.ends_at.filter(|&e| e > ts);
            entry.occurrences = 1;
            entry.seq = 0;
            rows.push(entry.row(EventKind::Opened, ts));
            entry.episodes.push_within(ts, ts - op.flap_window, op.flap_threshold as usize + 1);
            let flapping = entry.episodes.as_slice().len() as u32 > op.flap_threshold;
            if flapping && !entry.flapping {
                rows.push(entry.row(EventKind::Flapping, ts));
            }
            entry.flapping = flapping;
        }
        (true, Status::Firing) => {
            entry.last_seen = ts;
            entry.occurrences = entry.occurrences.saturating_add(1);
            entry.ends_at = a.ends_at.filter(|&e| e > ts);
            if op.repeat_interval > 0 && ts - entry.last_row >= op.repeat_interval {
                rows.push(entry.row(EventKind::Repeated, ts));
            }
        }
        (true, Status::Resolved) => {
            entry.last_seen = ts;
            entry.occurrences = entry.occurrences.saturating_add(1);
            entry.ends_at = Some(a.ends_at.filter(|&e| e <= ts).unwrap_or(ts));
            close(entry, open);
            rows.push(entry.row(EventKind::Resolved, ts));
        }
        (false, Status::Resolved) => {}
    }
    let new_timer = if entry.open {
        // Alertmanager: an alert with an `endsAt` expires then; without, after
        // resolve_timeout of silence.
        entry.ends_at.unwrap_or(entry.last_seen + op.resolve_timeout)
    } else {
        // Closed: keep the flap history for flap_window, then forget the fingerprint.
        entry.episodes.last().unwrap_or(ts) + op.flap_window
    };
    entry.timer = new_timer;
    // Timers move lazily: a deadline that moved later keeps the armed timer, which re-arms at
    // the new deadline when it fires (see `timeout`). A re-sent notice of a firing alert — most
    // of a stream — then touches no timer: moving one cost a removal and an insertion in the
    // operator's timer set per notice. Only a deadline that moved earlier arms a new timer.
    let change = match old_timer {
        Some(old) if new_timer >= old => None,
        old => Some((old, Some(new_timer), fp)),
    };
    (rows, change)
}

fn close(entry: &mut Entry, open: &mut HashMap<Arc<str>, u64>) {
    entry.open = false;
    if let Some(n) = open.get_mut(entry.labels.tenant_arc()) {
        *n = n.saturating_sub(1);
        // A tenant with nothing open leaves the map: tenants may be ever new too.
        if *n == 0 {
            open.remove(entry.labels.tenant_arc());
        }
    }
}

/// A timer fired: an open alert expires, a closed one is forgotten.
fn timeout(op: &Dedup, state: &mut BoxedMap<Entry>, open: &mut HashMap<Arc<str>, u64>, at: i64, fp: u64) -> (Vec<AlertEvent>, TimerChange) {
    let Some(entry) = state.get_mut(&fp) else { return (Vec::new(), None) };
    if entry.timer != at {
        // Armed for a deadline that has since moved later: re-arm at the current one. Arming
        // a time already armed is a no-op of the timer set, so a superseded timer that fires
        // as well does no harm.
        return (Vec::new(), (entry.timer > at).then_some((None, Some(entry.timer), fp)));
    }
    if entry.open {
        entry.ends_at = Some(at);
        close(entry, open);
        let row = entry.row(EventKind::Expired, at);
        let evict = entry.episodes.last().unwrap_or(at) + op.flap_window;
        let evict = evict.max(at + 1);
        entry.timer = evict;
        (vec![row], Some((None, Some(evict), fp)))
    } else {
        state.remove(&fp);
        (Vec::new(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Lcg, run_records};

    const T0: i64 = 1_767_225_600_000;

    fn alert(name: &str, host: &str, ts: i64, status: Status, part: u32, pos: u64) -> Alert {
        crate::testing::alert(&[("alertname", name), ("host", host)], ts, status, part, pos)
    }

    fn op() -> Dedup {
        Dedup::with_config(&DedupConfig::default(), DurationMs(1000)).unwrap()
    }

    #[test]
    fn entry_is_128_bytes() {
        assert!(std::mem::size_of::<Entry>() <= 128, "{} bytes", std::mem::size_of::<Entry>());
    }

    /// `Starts::push_within` keeps what the plain `Vec` it replaced kept: drop the starts at
    /// or before `since`, then the oldest past `max - 1`, then append.
    #[test]
    fn starts_match_a_vec() {
        let mut r = Lcg(7);
        for max in 1..5usize {
            let (mut starts, mut v) = (Starts::Empty, Vec::<i64>::new());
            let mut ts = 0i64;
            for _ in 0..2_000 {
                ts += (r.next() % 50) as i64;
                let since = ts - (r.next() % 120) as i64;
                starts.push_within(ts, since, max);
                let keep = v.partition_point(|&s| s <= since);
                let excess = (v.len() - keep + 1).saturating_sub(max);
                v.drain(..keep + excess);
                v.push(ts);
                assert_eq!(starts.as_slice(), &v[..], "max {max}");
                assert_eq!(matches!(starts, Starts::One(_)), v.len() == 1);
            }
        }
    }

    /// A row in the oracle's form: (`alertname/host`, revision, ts, occurrences, event).
    fn oracle_row(e: AlertEvent) -> (String, u64, i64, u64, String) {
        (format!("{}/{}", e.alertname(), e.labels.get("host").unwrap()), e.revision, e.ts, e.occurrences, e.event.name().to_string())
    }

    fn rows(workers: usize, input: Vec<Alert>, op: Dedup) -> Vec<(String, u64, i64, u64, String)> {
        let mut r: Vec<_> = run_records(workers, input, 500, move |s| s.dedup(&op, Arc::default()))
            .into_iter()
            .map(|e: AlertEvent| (e.alertname().to_string(), e.revision % 1000, e.ts, e.occurrences, e.event.name().to_string()))
            .collect();
        // By alert, then time, then the change's number within its episode.
        r.sort_by(|a, b| (&a.0, a.2, a.1).cmp(&(&b.0, b.2, b.1)));
        r
    }

    #[test]
    fn alertmanager_parity_on_lifecycle() {
        // Re-sent every 30 s for an hour: one `opened`.
        let mut input: Vec<Alert> = (0..120).map(|i| alert("A", "h1", T0 + i * 30_000, Status::Firing, 0, i as u64)).collect();
        // Then resolved: one `resolved`.
        input.push(alert("A", "h1", T0 + 3_600_000, Status::Resolved, 0, 200));
        // B fires once, then silence: `expired` after resolve_timeout (5m).
        input.push(alert("B", "h1", T0, Status::Firing, 0, 300));
        let got = rows(1, input, op());
        assert_eq!(
            got,
            vec![
                ("A".into(), 1, T0, 1, "opened".into()),
                ("A".into(), 2, T0 + 3_600_000, 121, "resolved".into()),
                ("B".into(), 1, T0, 1, "opened".into()),
                ("B".into(), 2, T0 + 300_000, 1, "expired".into()),
            ]
        );
    }

    #[test]
    fn repeats_flapping_and_endsat() {
        let cfg = DedupConfig { repeat_interval: "1m".parse().unwrap(), flap_threshold: 2, ..DedupConfig::default() };
        let op = Dedup::with_config(&cfg, DurationMs(1000)).unwrap();
        let mut input: Vec<Alert> = (0..5).map(|i| alert("A", "h", T0 + i * 30_000, Status::Firing, 0, i as u64)).collect();
        // Three open/close cycles of C within flap_window: flapping on the third.
        for k in 0..3 {
            input.push(alert("C", "h", T0 + k * 60_000, Status::Firing, 1, 2 * k as u64));
            input.push(alert("C", "h", T0 + k * 60_000 + 10_000, Status::Resolved, 1, 2 * k as u64 + 1));
        }
        // D carries an endsAt 1 minute ahead: it expires then, not after 5 minutes.
        let mut d = alert("D", "h", T0, Status::Firing, 2, 0);
        d.ends_at = Some(T0 + 60_000);
        input.push(d);
        let got = rows(2, input, op);
        let events = |name: &str| got.iter().filter(|r| r.0 == name).map(|r| r.4.as_str()).collect::<Vec<_>>();
        assert_eq!(events("A"), ["opened", "repeated", "repeated", "expired"]);
        assert_eq!(events("C"), ["opened", "resolved", "opened", "resolved", "opened", "flapping", "resolved"]);
        assert_eq!(
            got.iter().filter(|r| r.0 == "D").map(|r| (r.2, r.4.as_str())).collect::<Vec<_>>(),
            [(T0, "opened"), (T0 + 60_000, "expired")]
        );
    }

    #[test]
    fn tenant_cap_is_counted_not_a_crash() {
        let cfg = DedupConfig { max_open_per_tenant: 3, ..DedupConfig::default() };
        let op = Dedup::with_config(&cfg, DurationMs(1000)).unwrap();
        let input: Vec<Alert> = (0..10).map(|i| alert("A", &format!("h{i}"), T0 + i, Status::Firing, 0, i as u64)).collect();
        let stats = Arc::new(OperatorStats::default());
        let s2 = stats.clone();
        let got = run_records(1, input, 100, move |s| s.dedup(&op, s2.clone()));
        assert_eq!(got.iter().filter(|e| e.event == EventKind::Opened).count(), 3);
        assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 7);
    }

    /// The global cap (all tenants): new fingerprints past it are rejected and counted, at any
    /// worker count never more than the cap is held; forgotten alerts leave room again.
    #[test]
    fn global_cap_rejects_new_fingerprints_and_counts_them() {
        use std::sync::atomic::Ordering::Relaxed;
        for workers in [1, 2, 4] {
            let cfg = DedupConfig { state: StateConfig { max_keys: Some(8), ..Default::default() }, ..DedupConfig::default() };
            let op = Dedup::with_config(&cfg, DurationMs(1000)).unwrap();
            // 40 fingerprints firing within 40 ms, then (after their resolve timeout and flap
            // window, when their entries are gone) 40 more: the second wave finds room again.
            let mut input: Vec<Alert> = (0..40).map(|i| alert("A", &format!("h{i}"), T0 + i, Status::Firing, 0, i as u64)).collect();
            let later = T0 + 2 * 3_600_000;
            input.extend((0..40).map(|i| alert("B", &format!("h{i}"), later + i, Status::Firing, 1, i as u64)));
            let stats = Arc::new(OperatorStats::default());
            let s2 = stats.clone();
            let got = run_records(workers, input, 100, move |s| s.dedup(&op, s2.clone()));
            let opened = |name: &str| {
                got.iter().filter(|e| e.event == EventKind::Opened && e.labels.get("alertname").map(|n| &**n) == Some(name)).count()
            };
            let (a, b) = (opened("A"), opened("B"));
            let rejected = stats.rejected.load(Relaxed) as usize;
            assert!((1..=8).contains(&a) && (1..=8).contains(&b), "{workers} workers: opened {a} then {b}");
            assert_eq!(a + b + rejected, 80, "{workers} workers: every new fingerprint opened or counted");
            if workers == 1 {
                assert_eq!((a, b), (8, 8));
            }
        }
    }

    /// The oracle: every fingerprint's notices, sorted by (ts, part, pos), through a plain
    /// sequential state machine.
    fn oracle(input: &[Alert], op: &Dedup) -> Vec<(String, u64, i64, u64, String)> {
        let mut by_fp: std::collections::BTreeMap<u64, Vec<&Alert>> = Default::default();
        for a in input {
            by_fp.entry(a.fingerprint()).or_default().push(a);
        }
        let mut out = Vec::new();
        for (_, mut v) in by_fp {
            v.sort_by_key(|a| (a.ts, a.part, a.pos));
            let name = v[0].labels.get("alertname").unwrap().to_string() + "/" + v[0].labels.get("host").unwrap();
            let (mut open, mut last, mut seq, mut occ, mut ends, mut start): (bool, i64, u64, u64, Option<i64>, i64) =
                (false, 0, 0, 0, None, 0);
            let mut flaps: Vec<i64> = Vec::new();
            let mut flapping = false;
            let emit = |seq: &mut u64, start: i64, ts: i64, occ: u64, ev: &str, out: &mut Vec<_>| {
                *seq += 1;
                out.push((name.clone(), revision(start, *seq), ts, occ, ev.to_string()));
            };
            for a in v {
                if open {
                    let expiry = ends.unwrap_or(last + op.resolve_timeout);
                    if expiry < a.ts {
                        open = false;
                        emit(&mut seq, start, expiry, occ, "expired", &mut out);
                    }
                }
                match (open, a.status) {
                    (false, Status::Firing) => {
                        open = true;
                        last = a.ts;
                        occ = 1;
                        seq = 0;
                        start = a.starts_at.min(a.ts);
                        ends = a.ends_at.filter(|&e| e > a.ts);
                        emit(&mut seq, start, a.ts, occ, "opened", &mut out);
                        flaps.retain(|&s| s > a.ts - op.flap_window);
                        flaps.push(a.ts);
                        let f = flaps.len() as u32 > op.flap_threshold;
                        if f && !flapping {
                            emit(&mut seq, start, a.ts, occ, "flapping", &mut out);
                        }
                        flapping = f;
                    }
                    (true, Status::Firing) => {
                        last = a.ts;
                        occ += 1;
                        ends = a.ends_at.filter(|&e| e > a.ts);
                    }
                    (true, Status::Resolved) => {
                        open = false;
                        occ += 1;
                        emit(&mut seq, start, a.ts, occ, "resolved", &mut out);
                    }
                    (false, Status::Resolved) => {}
                }
            }
            if open {
                emit(&mut seq, start, ends.unwrap_or(last + op.resolve_timeout), occ, "expired", &mut out);
            }
        }
        out.sort();
        out
    }

    /// More timers due than one activation's budget — every open alert expiring at the end
    /// of the input, after records released all at once — are handled over several activations
    /// (the operator yields and is scheduled again) with the same rows as the oracle's.
    #[test]
    fn work_beyond_one_activations_budget_gives_the_oracles_rows() {
        let n = 3 * BUDGET as u64 + 123;
        let mut r = Lcg(7);
        let mut input = Vec::new();
        for i in 0..n {
            // Distinct fingerprints within 20 s, so all are open when the input ends; some
            // re-sent, some resolved; up to 2 s of disorder.
            let ts = T0 + (i * 20_000 / n) as i64 - (r.next() % 2000) as i64;
            let host = format!("h{i}");
            input.push(alert("A", &host, ts, Status::Firing, (i % 5) as u32, i));
            if i % 11 == 0 {
                input.push(alert("A", &host, ts + 500, Status::Firing, (i % 5) as u32, n + i));
            }
            if i % 17 == 0 {
                input.push(alert("A", &host, ts + 900, Status::Resolved, (i % 5) as u32, 2 * n + i));
            }
        }
        let op = op();
        let want = oracle(&input, &op);
        let expired = want.iter().filter(|w| w.4 == "expired").count();
        assert!(expired > 2 * BUDGET, "{expired} expiries");
        for workers in [1, 2, 4] {
            let op2 = op.clone();
            // One batch per worker: the first frontier move releases every record at once.
            let mut got: Vec<_> = run_records(workers, input.clone(), input.len(), move |s| s.dedup(&op2, Arc::default()))
                .into_iter()
                .map(oracle_row)
                .collect();
            got.sort();
            assert_eq!(got.len(), want.len(), "{workers} workers");
            assert!(got == want, "{workers} workers: rows differ from the oracle's");
        }
    }

    #[test]
    fn matches_the_oracle_at_any_worker_count() {
        for seed in [1, 2, 3] {
            let mut r = Lcg(seed);
            let mut input = Vec::new();
            let mut t = T0;
            for i in 0..20_000u64 {
                t += (r.next() % 400) as i64;
                let host = format!("h{}", r.next() % 60);
                let name = ["A", "B", "C"][(r.next() % 3) as usize];
                let status = if r.next().is_multiple_of(7) { Status::Resolved } else { Status::Firing };
                // Up to 3 s of disorder; notices of one fingerprint spread over partitions.
                let ts = t - (r.next() % 3000) as i64;
                let mut a = alert(name, &host, ts, status, (i / 700) as u32, i % 700);
                if r.next().is_multiple_of(13) {
                    a.ends_at = Some(ts + (r.next() % 200_000) as i64);
                }
                input.push(a);
            }
            let op = Dedup::with_config(
                &DedupConfig { flap_threshold: 3, flap_window: "10m".parse().unwrap(), ..DedupConfig::default() },
                DurationMs(1000),
            )
            .unwrap();
            let want = oracle(&input, &op);
            assert!(want.len() > 1000);
            // Translate names to the oracle's `alertname/host` form.
            for workers in [1, 2, 4] {
                let op2 = op.clone();
                let mut got: Vec<_> =
                    run_records(workers, input.clone(), 300, move |s| s.dedup(&op2, Arc::default())).into_iter().map(oracle_row).collect();
                got.sort();
                if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
                    panic!(
                        "seed {seed}, {workers} workers: first difference at row {i}: got {:?}, want {:?} ({} vs {} rows)",
                        got.get(i),
                        want.get(i),
                        got.len(),
                        want.len()
                    );
                }
            }
        }
    }
}
