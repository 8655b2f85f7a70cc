//! Window aggregate: tumbling and hopping windows in event time (session windows live in
//! [`crate::session`]), grouped by tenant, metric name and chosen labels, emitting one row per
//! window and group once the frontier passes the window's end.
//!
//! Two stages. **Pre-aggregation** runs on the worker that decoded the points (no exchange):
//! it folds points into one accumulator per (pane, series, input partition), keyed by the
//! interned series' address, so the per-point cost is two small map probes and no allocation.
//! A pane is the greatest common divisor of the window's size and slide (for tumbling windows,
//! the window itself), so every point lands in exactly one pane however many hopping windows
//! hold it. When the frontier passes a pane it ships those partials, projected onto the group
//! key, to the worker that owns the group. **Merge** folds the partials of a group in the
//! canonical order (partition, first position), then — for hopping windows — the panes of a
//! window in time order: the order depends on neither the worker count nor the batching, so
//! neither do the floating-point results.

use std::collections::BTreeMap;
use std::sync::Arc;

use alertflow_model::time::{DurationMs, floor_to};
use alertflow_model::window::{Acc, AggFn, GroupKey, Needs, WindowRow};
use alertflow_model::{Metric, Series};
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::checkpoint::{Saver, limit_of};
use crate::limits::{OnFull, StateConfig, StateDefaults, StateLimits};
use crate::stats::{OperatorStats, StateGauge};
use crate::{ConfigError, Time};

/// Most panes one hopping window may span (`size / gcd(size, slide)`): each pane of a group is
/// merged into every window that holds it.
const MAX_PANES_PER_WINDOW: i64 = 10_000;

/// The `[[aggregate]]` section of a pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// The output table's name.
    pub name: String,
    /// The source (metric stream) to aggregate.
    pub input: String,
    /// The window: `{ type = "tumbling", size = "1m" }`, `{ type = "hopping", size = "5m",
    /// slide = "1m" }` or `{ type = "session", gap = "2m" }`.
    pub window: WindowSpec,
    /// Labels to group by; tenant and metric name are always keys.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Aggregate functions, each a column: count, sum, min, max, avg, last, stddev, p50, p90,
    /// p95, p99 (default: count, sum, min, max, avg).
    #[serde(default = "default_functions")]
    pub functions: Vec<AggFn>,
    /// Bounds on the state: `max_keys` (series in open windows, or open sessions, over all
    /// workers; see [`STATE`]). Windows end by themselves, so there is no `ttl`.
    #[serde(default)]
    pub state: StateConfig,
}

/// Window state bounds by default: four million (window pane, series) entries or open sessions
/// over all workers (a few hundred bytes each); past that, points of new series are rejected
/// (evicting a partial aggregate would emit a wrong row). The open panes of a worker span the
/// event time between the slowest source worker and itself, so with ever-new series a cap
/// near one window's worth would reject points of an ordinary replay.
pub const STATE: StateDefaults =
    StateDefaults { max_keys: 4_000_000, ttl: None, on_full: OnFull::RejectNew, policies: &[OnFull::RejectNew] };

/// The most series one worker's group-key cache holds before it starts over: the cache only
/// saves projecting a series' key again, so clearing it costs a re-projection, never a result.
pub(crate) const KEY_CACHE_MAX: usize = 1 << 20;

fn default_functions() -> Vec<AggFn> {
    AggFn::DEFAULT.to_vec()
}

/// A window shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum WindowSpec {
    /// Back-to-back windows of `size`, aligned to the Unix epoch.
    Tumbling {
        /// Window length.
        size: DurationMs,
    },
    /// Windows of `size` starting every `slide` (aligned to the Unix epoch): a point belongs
    /// to `size / slide` windows.
    Hopping {
        /// Window length.
        size: DurationMs,
        /// Distance between window starts (at most `size`).
        slide: DurationMs,
    },
    /// Per group, a run of points with less than `gap` between consecutive ones; the window is
    /// `[first point, last point + gap)`.
    Session {
        /// The quiet time that ends a session.
        gap: DurationMs,
    },
}

/// The shape of a validated window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Tumbling (`slide == size`) or hopping windows, aggregated from panes of `pane` ms.
    Fixed {
        /// Window length.
        size: i64,
        /// Distance between window starts.
        slide: i64,
        /// `gcd(size, slide)`.
        pane: i64,
    },
    /// Session windows.
    Session {
        /// The quiet time that ends a session.
        gap: i64,
    },
}

/// A validated window aggregate, ready to build.
#[derive(Clone, Debug)]
pub struct Aggregate {
    pub(crate) name: String,
    pub(crate) shape: Shape,
    pub(crate) epoch: i64,
    pub(crate) group_by: Vec<String>,
    pub(crate) functions: Vec<AggFn>,
    pub(crate) needs: Needs,
    /// `allowed_lateness` in ms under the late policy `update`; `None` under `drop`.
    pub(crate) late: Option<i64>,
    pub(crate) limits: StateLimits,
    /// Counters of all workers' instances.
    pub(crate) stats: Arc<OperatorStats>,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn check_duration(errs: &mut Vec<ConfigError>, field: &str, d: DurationMs) {
    if d.millis() == 0 {
        errs.push(ConfigError::new(field, "must be greater than 0"));
    }
    if d.millis() > 366 * 86_400_000 {
        errs.push(ConfigError::new(field, "must be at most 366d"));
    }
}

impl Aggregate {
    /// Validates a config for a pipeline whose timely epoch is `epoch`.
    pub fn with_config(cfg: &AggregateConfig, epoch: DurationMs) -> Result<Aggregate, Vec<ConfigError>> {
        let mut errs = Vec::new();
        let shape = match cfg.window {
            WindowSpec::Tumbling { size } => {
                check_duration(&mut errs, "window.size", size);
                let size = size.millis() as i64;
                Shape::Fixed { size, slide: size, pane: size }
            }
            WindowSpec::Hopping { size, slide } => {
                check_duration(&mut errs, "window.size", size);
                check_duration(&mut errs, "window.slide", slide);
                let (size, slide) = (size.millis() as i64, slide.millis() as i64);
                if slide > size {
                    errs.push(ConfigError::new(
                        "window.slide",
                        "must be at most `size` (a hopping window with slide > size would skip points)",
                    ));
                }
                let pane = if size > 0 && slide > 0 { gcd(size, slide) } else { 1 };
                if size / pane > MAX_PANES_PER_WINDOW {
                    errs.push(ConfigError::new(
                        "window.slide",
                        format!(
                            "size and slide share too small a divisor: a window would span {} panes of {pane} ms (at most \
                             {MAX_PANES_PER_WINDOW}); make size a multiple of slide",
                            size / pane
                        ),
                    ));
                }
                Shape::Fixed { size, slide, pane }
            }
            WindowSpec::Session { gap } => {
                check_duration(&mut errs, "window.gap", gap);
                Shape::Session { gap: gap.millis() as i64 }
            }
        };
        let reserved: Vec<&str> = alertflow_model::tables::WINDOW_FIXED_COLUMNS
            .iter()
            .chain(alertflow_model::tables::PARTITION_COLUMNS.iter())
            .copied()
            .chain(AggFn::ALL.iter().map(|f| f.name()))
            .collect();
        for (i, g) in cfg.group_by.iter().enumerate() {
            if g.is_empty() {
                errs.push(ConfigError::new(format!("group_by[{i}]"), "a label name cannot be empty"));
            } else if alertflow_model::tables::PARTITION_COLUMNS.contains(&g.as_str()) {
                errs.push(ConfigError::new(
                    format!("group_by[{i}]"),
                    format!("`{g}` is reserved: `date` and `hour` are the Parquet partition columns"),
                ));
            } else if reserved.contains(&g.as_str()) {
                errs.push(ConfigError::new(
                    format!("group_by[{i}]"),
                    format!("`{g}` is already a column of the table (tenant and name are always keys)"),
                ));
            }
            if cfg.group_by[..i].contains(g) {
                errs.push(ConfigError::new(format!("group_by[{i}]"), format!("`{g}` is listed twice")));
            }
        }
        if cfg.functions.is_empty() {
            let names: Vec<&str> = AggFn::ALL.iter().map(|f| f.name()).collect();
            errs.push(ConfigError::new("functions", format!("list at least one function: {}", names.join(", "))));
        }
        for (i, f) in cfg.functions.iter().enumerate() {
            if cfg.functions[..i].contains(f) {
                errs.push(ConfigError::new(format!("functions[{i}]"), format!("`{f}` is listed twice")));
            }
        }
        let limits = StateLimits::new(&cfg.state, STATE).map_err(|e| errs.extend(e)).ok();
        let Some(limits) = limits.filter(|_| errs.is_empty()) else { return Err(errs) };
        Ok(Aggregate {
            name: cfg.name.clone(),
            shape,
            epoch: epoch.millis().max(1) as i64,
            group_by: cfg.group_by.clone(),
            functions: cfg.functions.clone(),
            needs: Needs::of(&cfg.functions),
            late: None,
            limits,
            stats: Arc::default(),
        })
    }

    /// Applies the late policy `update`: closed windows are kept for `allowed_lateness`, and a
    /// window that late points (see [`Metric::late`]) reach is emitted again with `revision`
    /// one higher. Session windows do not support it (a late point can join two sessions,
    /// which a revision of one row cannot say).
    pub fn with_late_updates(mut self, allowed_lateness: DurationMs) -> Result<Aggregate, ConfigError> {
        if let Shape::Session { .. } = self.shape {
            return Err(ConfigError::new(
                "window",
                "session windows do not support the late policy `update` (a late point may merge two sessions); use \
                 tumbling or hopping windows, or `late = \"drop\"`",
            ));
        }
        self.late = Some(allowed_lateness.millis() as i64);
        Ok(self)
    }

    /// Whether rows carry revisions (late policy `update`).
    pub fn revises(&self) -> bool {
        self.late.is_some()
    }

    /// The counters all workers' instances report into.
    pub fn stats(&self) -> &Arc<OperatorStats> {
        &self.stats
    }

    /// The output table's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The `group_by` labels.
    pub fn group_by(&self) -> &[String] {
        &self.group_by
    }
    /// The functions, in column order.
    pub fn functions(&self) -> &[AggFn] {
        &self.functions
    }
    /// The window's shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }
    /// How much event time one output row depends on, in ms: a row (or a revision of it) whose
    /// window ends at `e` needs the records with `ts ≥ e − horizon` (the window size, plus
    /// `allowed_lateness` under the `update` policy). `None` for session windows: a session has
    /// no bound. What a Kafka source may commit depends on it.
    pub fn horizon(&self) -> Option<i64> {
        match self.shape {
            Shape::Fixed { size, .. } => Some(size + self.late.unwrap_or(0)),
            Shape::Session { .. } => None,
        }
    }
}

/// The pane arithmetic of tumbling and hopping windows.
#[derive(Clone, Copy, Default)]
struct Panes {
    size: i64,
    slide: i64,
    pane: i64,
    epoch: i64,
}

impl Panes {
    #[inline]
    fn pane_start(&self, ts: i64) -> i64 {
        floor_to(ts, self.pane)
    }
    /// The timely time at which a span ending (exclusively) at `end` can close: the epoch of
    /// its last millisecond. Points of the span carry times at or before it, so once the
    /// frontier passes it the span is complete.
    #[inline]
    fn close_time(&self, end: i64) -> Time {
        floor_to(end - 1, self.epoch) as Time
    }
    fn tumbling(&self) -> bool {
        self.slide == self.size
    }
    /// The ends of the windows that hold the pane starting at `start`, ascending.
    fn window_ends(&self, start: i64) -> impl Iterator<Item = i64> + use<> {
        // Window starts s = k·slide with s ≤ start < s + size.
        let (size, slide) = (self.size, self.slide);
        let first = floor_to(start - size, slide) + slide;
        (0..).map(move |k| first + k * slide).take_while(move |&s| s <= start).map(move |s| s + size)
    }
}

/// A partial accumulator of one pane, group and input partition, shipped from pre-aggregation
/// to the merge.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Partial {
    key: GroupKey,
    start: i64,
    part: u32,
    /// Position of the first point folded in: with `part`, a canonical merge order.
    first_pos: u64,
    acc: Acc,
    /// One late point whose pane had closed when it came (late policy `update`): it travels
    /// at its own time and revises the pane.
    late: bool,
}

/// Builds window aggregates on metric streams.
pub trait AggregateExt<'s> {
    /// One [`WindowRow`] per window and group, at the window's close time.
    fn aggregate(self, op: &Aggregate) -> Stream<'s, Time, Vec<WindowRow>>;
}

/// Partials of one pane before the exchange: (series address, partition) → (series, first
/// position, accumulator).
type SeriesPartials = HashMap<(usize, u32), (Series, u64, Acc)>;

struct PrePane {
    cap: Capability<Time>,
    series: SeriesPartials,
    /// Accumulators restored from a checkpoint, by series value (the series' address, the
    /// key of `series`, is new in a restarted run); empty otherwise.
    restored: HashMap<(Series, u32), (u64, Acc)>,
}

struct MergePane {
    cap: Capability<Time>,
    /// (pane start, group) → partials.
    groups: HashMap<(i64, GroupKey), Parts>,
}

/// The partials of one group: nearly always one or two, so the first lives inline.
#[derive(Clone, Serialize, Deserialize)]
struct Parts {
    first: (u32, u64, Acc),
    rest: Vec<(u32, u64, Acc)>,
}

impl Parts {
    /// The group's accumulator: the partials merged in canonical order.
    fn merged(self) -> Acc {
        let Parts { first, mut rest } = self;
        if rest.is_empty() {
            return first.2;
        }
        rest.push(first);
        rest.sort_unstable_by_key(|&(part, pos, _)| (part, pos));
        let mut it = rest.into_iter();
        let mut acc = it.next().map(|p| p.2).expect("non-empty");
        for (_, _, a) in it {
            acc.merge(&a);
        }
        acc
    }
}

/// The group key of a series, projected once per series. The cache holds the series, so its
/// address (the cache key) cannot be reused by another series while cached.
#[inline]
pub(crate) fn key_of<'k>(keys: &'k mut HashMap<usize, (Series, GroupKey)>, series: &Series, group_by: &[String]) -> &'k GroupKey {
    if keys.len() >= KEY_CACHE_MAX && !keys.contains_key(&series.addr()) {
        keys.clear();
    }
    &keys.entry(series.addr()).or_insert_with(|| (series.clone(), GroupKey::project(series, group_by))).1
}

impl<'s> AggregateExt<'s> for Stream<'s, Time, Vec<Metric>> {
    fn aggregate(self, op: &Aggregate) -> Stream<'s, Time, Vec<WindowRow>> {
        let (size, slide, pane) = match op.shape {
            Shape::Fixed { size, slide, pane } => (size, slide, pane),
            Shape::Session { .. } => return crate::session::sessions(self, op),
        };
        let panes = Panes { size, slide, pane, epoch: op.epoch };
        let pre_op = op.clone();
        let (worker, workers) = (self.scope().index(), self.scope().peers());
        let partials = self.unary_frontier::<CapacityContainerBuilder<Vec<Partial>>, _, _, _>(
            Pipeline,
            &format!("aggregate:{}:pre", op.name),
            move |init, _info| {
                let op = pre_op;
                let mut pre = Pre {
                    op: op.clone(),
                    panes,
                    open: BTreeMap::new(),
                    spare: Vec::new(),
                    keys: HashMap::new(),
                    late: Vec::new(),
                    held: 0,
                    cap: op.limits.per_worker(workers),
                };
                let mut saver = Saver::register(&format!("aggregate:{}:pre", op.name), worker);
                if let Some(saved) = saver.restore::<Vec<SavedPrePane>>() {
                    for (start, entries) in saved {
                        let cap = init.delayed(&panes.close_time(start + pane));
                        let restored = entries.into_iter().map(|(series, part, first, acc)| ((series, part), (first, acc))).collect();
                        pre.open.insert(start, PrePane { cap, series: HashMap::new(), restored });
                    }
                    pre.count_held();
                }
                drop(init);
                // With checkpoints, points wait for the frontier to pass their epoch before
                // they are folded (see `Stash`).
                let mut stash = saver.active().then(Stash::<Metric>::default);
                let mut state = StateGauge::new(op.stats.clone());
                move |(input, frontier), output| {
                    let port = output.output_index();
                    input.for_each_stamp(|cap, data| {
                        // Timely time is totally ordered: a stamp is one time.
                        let Some(now) = cap.least().copied() else { return };
                        if let Some(stash) = stash.as_mut() {
                            stash.push(now, || cap.delayed(&now, port), data);
                            return;
                        }
                        for batch in data {
                            pre.fold(now, &|t| cap.delayed(&t, port), batch);
                        }
                        if !pre.late.is_empty() {
                            output.session(&cap.delayed(&now, port)).give_iterator(pre.late.drain(..));
                        }
                    });
                    loop {
                        let until = saver.pending();
                        let limit = limit_of(frontier, until);
                        if let Some(stash) = stash.as_mut() {
                            while let Some((now, cap, batches)) = stash.pop_before(limit) {
                                for mut batch in batches {
                                    pre.fold(now, &|t| cap.delayed(&t), &mut batch);
                                }
                                if !pre.late.is_empty() {
                                    output.session(&cap).give_iterator(pre.late.drain(..));
                                }
                            }
                        }
                        while let Some(entry) = pre.open.first_entry() {
                            let close = panes.close_time(*entry.key() + pane);
                            if limit.is_some_and(|l| close >= l) {
                                break;
                            }
                            let start = *entry.key();
                            let mut w = entry.remove();
                            let mut session = output.session(&w.cap);
                            for ((_, part), (series, first_pos, acc)) in w.series.drain() {
                                let key = key_of(&mut pre.keys, &series, &op.group_by).clone();
                                session.give(Partial { key, start, part, first_pos, acc, late: false });
                            }
                            for ((series, part), (first_pos, acc)) in w.restored.drain() {
                                let key = key_of(&mut pre.keys, &series, &op.group_by).clone();
                                session.give(Partial { key, start, part, first_pos, acc, late: false });
                            }
                            pre.spare.push(w.series);
                        }
                        if !saver.save_if_passed(frontier, until, || pre.saved()) {
                            break;
                        }
                    }
                    saver.finish_if_done(frontier, || pre.saved());
                    state.set(pre.count_held());
                }
            },
        );

        let lateness = op.late;
        let stats = op.stats.clone();
        let merge_name = format!("aggregate:{}:merge", op.name);
        partials.unary_frontier::<CapacityContainerBuilder<Vec<WindowRow>>, _, _, _>(
            Exchange::new(|p: &Partial| p.key.stable_hash()),
            &merge_name.clone(),
            move |init, _info| {
                let mut merge = Merge { panes, lateness, ..Merge::default() };
                let mut saver = Saver::register(&merge_name, worker);
                if let Some(saved) = saver.restore::<SavedMerge>() {
                    merge.restore(saved, &init);
                }
                drop(init);
                let mut stash = saver.active().then(Stash::<Partial>::default);
                let mut state = StateGauge::new(stats.clone());
                move |(input, frontier), output| {
                    let port = output.output_index();
                    input.for_each_stamp(|cap, data| {
                        let Some(now) = cap.least().copied() else { return };
                        if let Some(stash) = stash.as_mut() {
                            stash.push(now, || cap.delayed(&now, port), data);
                            return;
                        }
                        for batch in data {
                            merge.take(now, &|t| cap.delayed(&t, port), batch);
                        }
                    });
                    loop {
                        let until = saver.pending();
                        if let Some(stash) = stash.as_mut() {
                            while let Some((now, cap, batches)) = stash.pop_before(limit_of(frontier, until)) {
                                for mut batch in batches {
                                    merge.take(now, &|t| cap.delayed(&t), &mut batch);
                                }
                            }
                        }
                        merge.advance(frontier, until, |cap, rows| {
                            stats.add_out(rows.len());
                            output.session(cap).give_container(rows)
                        });
                        if !saver.save_if_passed(frontier, until, || merge.saved()) {
                            break;
                        }
                    }
                    saver.finish_if_done(frontier, || merge.saved());
                    state.set(merge.groups());
                }
            },
        )
    }
}

/// Batches held by time until the frontier passes it. Without checkpoints the stages fold
/// what comes at once; with them, a stage's state must hold exactly the epochs before a
/// checkpoint, and a checkpoint may be decided after later epochs have arrived, so nothing is
/// folded before the frontier (capped at the pending checkpoint) has passed its time. Folding
/// in time order also makes the order independent of where checkpoints fell, so a restored run
/// folds exactly as an uninterrupted one.
struct Stash<T> {
    held: BTreeMap<Time, (Capability<Time>, Vec<Vec<T>>)>,
}

impl<T> Default for Stash<T> {
    fn default() -> Self {
        Stash { held: BTreeMap::new() }
    }
}

impl<T> Stash<T> {
    fn push<'a>(&mut self, now: Time, cap: impl FnOnce() -> Capability<Time>, data: impl IntoIterator<Item = &'a mut Vec<T>>)
    where
        T: 'a,
    {
        let e = self.held.entry(now).or_insert_with(|| (cap(), Vec::new()));
        e.1.extend(data.into_iter().map(std::mem::take));
    }

    /// The earliest held time before `limit` (`None`: no limit), with its batches.
    fn pop_before(&mut self, limit: Option<Time>) -> Option<(Time, Capability<Time>, Vec<Vec<T>>)> {
        let (&t, _) = self.held.first_key_value()?;
        if limit.is_some_and(|l| t >= l) {
            return None;
        }
        let (t, (cap, batches)) = self.held.pop_first()?;
        Some((t, cap, batches))
    }
}

/// A pre-aggregation pane's part of a checkpoint: (start, [(series, partition, first
/// position, accumulator)]).
type SavedPrePane = (i64, Vec<(Series, u32, u64, Acc)>);

/// The pre-aggregation stage on one worker.
struct Pre {
    op: Aggregate,
    panes: Panes,
    open: BTreeMap<i64, PrePane>,
    /// Maps of flushed panes, kept with their capacity for the next panes: growing fresh maps
    /// pane after pane cost page faults and rehashing.
    spare: Vec<SeriesPartials>,
    /// Series → group key, computed once per series (and holding the series, so its address
    /// cannot be reused while cached).
    keys: HashMap<usize, (Series, GroupKey)>,
    /// Late points (policy `update`) whose pane had closed, to send on at their own time.
    late: Vec<Partial>,
    /// (pane, series) entries held in the open panes.
    held: usize,
    /// This worker's share of `state.max_keys`: past it, points of series new to their pane
    /// are rejected.
    cap: usize,
}

impl Pre {
    /// Folds one batch that came at `now`; `cap` makes a capability for a time at or after it.
    fn fold(&mut self, now: Time, cap: &dyn Fn(Time) -> Capability<Time>, batch: &mut Vec<Metric>) {
        let (op, panes, needs) = (&self.op, self.panes, self.op.needs);
        let pane = panes.pane;
        op.stats.add_in(batch.len());
        // Consecutive points nearly always share a pane: look it up once per run of equal
        // pane starts.
        let mut current: Option<(i64, &mut PrePane)> = None;
        let (mut late_points, mut rejected) = (0, 0);
        for m in batch.drain(..) {
            let start = panes.pane_start(m.ts);
            late_points += usize::from(m.late);
            if m.late && now > panes.close_time(start + pane) {
                // Its pane has closed: it goes on alone, at its own time.
                let key = key_of(&mut self.keys, &m.series, &op.group_by).clone();
                let acc = Acc::start(needs, m.value, m.ts, m.part, m.pos);
                self.late.push(Partial { key, start, part: m.part, first_pos: m.pos, acc, late: true });
                continue;
            }
            let w = match current {
                Some((s, w)) if s == start => w,
                _ => self.open.entry(start).or_insert_with(|| PrePane {
                    cap: cap(panes.close_time(start + pane)),
                    series: self.spare.pop().unwrap_or_default(),
                    restored: HashMap::new(),
                }),
            };
            match w.series.entry((m.series.addr(), m.part)) {
                hashbrown::hash_map::Entry::Occupied(mut e) => e.get_mut().2.add_point(m.value, m.ts, m.part, m.pos),
                hashbrown::hash_map::Entry::Vacant(_) if self.held >= self.cap && !w.restored.contains_key(&(m.series.clone(), m.part)) => {
                    rejected += 1;
                }
                hashbrown::hash_map::Entry::Vacant(e) => {
                    // A pane restored from a checkpoint holds its series by value: the first
                    // point of such a series continues its accumulator.
                    let restored = if w.restored.is_empty() { None } else { w.restored.remove(&(m.series.clone(), m.part)) };
                    self.held += usize::from(restored.is_none());
                    let v = match restored {
                        Some((first, mut acc)) => {
                            acc.add_point(m.value, m.ts, m.part, m.pos);
                            (m.series, first, acc)
                        }
                        None => (m.series, m.pos, Acc::start(needs, m.value, m.ts, m.part, m.pos)),
                    };
                    e.insert(v);
                }
            }
            current = Some((start, w));
        }
        op.stats.add_late(late_points);
        op.stats.add_rejected(rejected);
    }

    /// Recounts the entries held (after panes were flushed or restored).
    fn count_held(&mut self) -> usize {
        self.held = self.open.values().map(|w| w.series.len() + w.restored.len()).sum();
        self.held
    }

    /// The open panes, for a checkpoint.
    fn saved(&self) -> Vec<SavedPrePane> {
        self.open
            .iter()
            .map(|(&start, w)| {
                let live = w.series.iter().map(|((_, part), (s, first, acc))| (s.clone(), *part, *first, acc.clone()));
                let restored = w.restored.iter().map(|((s, part), (first, acc))| (s.clone(), *part, *first, acc.clone()));
                (start, live.chain(restored).collect())
            })
            .collect()
    }
}

/// The merge stage's state on one worker.
#[derive(Default)]
struct Merge {
    panes: Panes,
    lateness: Option<i64>,
    /// Panes still receiving partials, by start.
    open: BTreeMap<i64, MergePane>,
    /// Late partials (policy `update`) by the time they came at.
    late: BTreeMap<Time, MergePane>,
    /// Maps of flushed panes, kept with their capacity.
    spare: Vec<HashMap<(i64, GroupKey), Parts>>,
    /// Closed panes still needed by a window (hopping windows, or any window while it may be
    /// revised), by start.
    closed: BTreeMap<i64, HashMap<GroupKey, Acc>>,
    /// A capability for each window end that holds data and has not been emitted.
    ends: BTreeMap<i64, Capability<Time>>,
    /// Under `update`: the last revision emitted per window end and group, while revisable.
    revisions: BTreeMap<i64, HashMap<GroupKey, u32>>,
}

/// The merge stage's part of a checkpoint: open panes, late panes, closed panes, window ends
/// not emitted, revisions.
type SavedMerge = (
    Vec<(i64, Vec<((i64, GroupKey), Parts)>)>,
    Vec<(Time, Vec<((i64, GroupKey), Parts)>)>,
    Vec<(i64, Vec<(GroupKey, Acc)>)>,
    Vec<i64>,
    Vec<(i64, Vec<(GroupKey, u32)>)>,
);

impl Merge {
    /// Takes one batch of partials that came at `now`.
    fn take(&mut self, now: Time, cap: &dyn Fn(Time) -> Capability<Time>, batch: &mut Vec<Partial>) {
        let panes = self.panes;
        for p in batch.drain(..) {
            let pane = if p.late {
                self.late.entry(now).or_insert_with(|| MergePane { cap: cap(now), groups: HashMap::new() })
            } else {
                self.open.entry(p.start).or_insert_with(|| MergePane {
                    cap: cap(panes.close_time(p.start + panes.pane)),
                    groups: self.spare.pop().unwrap_or_default(),
                })
            };
            // Late partials of different panes share a batch: key them by pane too (on-time
            // panes hold one start).
            let part = (p.part, p.first_pos, p.acc);
            match pane.groups.entry((p.start, p.key)) {
                hashbrown::hash_map::Entry::Occupied(mut e) => e.get_mut().rest.push(part),
                hashbrown::hash_map::Entry::Vacant(e) => {
                    e.insert(Parts { first: part, rest: Vec::new() });
                }
            }
        }
    }

    /// The state, for a checkpoint.
    fn saved(&self) -> SavedMerge {
        let pane = |w: &MergePane| w.groups.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>();
        (
            self.open.iter().map(|(&s, w)| (s, pane(w))).collect(),
            self.late.iter().map(|(&t, w)| (t, pane(w))).collect(),
            self.closed.iter().map(|(&s, g)| (s, g.iter().map(|(k, a)| (k.clone(), a.clone())).collect())).collect(),
            self.ends.keys().copied().collect(),
            self.revisions.iter().map(|(&e, g)| (e, g.iter().map(|(k, r)| (k.clone(), *r)).collect())).collect(),
        )
    }

    /// Restores a checkpoint's state; `init` makes the capabilities it holds.
    fn restore(&mut self, (open, late, closed, ends, revisions): SavedMerge, init: &Capability<Time>) {
        let p = self.panes;
        for (start, groups) in open {
            let cap = init.delayed(&p.close_time(start + p.pane));
            self.open.insert(start, MergePane { cap, groups: groups.into_iter().collect() });
        }
        for (t, groups) in late {
            self.late.insert(t, MergePane { cap: init.delayed(&t), groups: groups.into_iter().collect() });
        }
        self.closed = closed.into_iter().map(|(s, g)| (s, g.into_iter().collect())).collect();
        self.ends = ends.into_iter().map(|e| (e, init.delayed(&p.close_time(e)))).collect();
        self.revisions = revisions.into_iter().map(|(e, g)| (e, g.into_iter().collect())).collect();
    }

    /// Groups held (open, late and closed panes): the stage's state size.
    fn groups(&self) -> usize {
        let panes = self.open.values().chain(self.late.values()).map(|p| p.groups.len()).sum::<usize>();
        panes + self.closed.values().map(HashMap::len).sum::<usize>()
    }

    /// Handles everything the frontier has passed, in timely-time order: pane closes, then
    /// late batches, then window emissions of the same time (a window closing at `t` holds
    /// every point that came at or before `t`, late ones included).
    ///
    /// Nothing at or after `until` (a pending checkpoint) is handled.
    fn advance(
        &mut self,
        frontier: &timely::progress::frontier::MutableAntichain<Time>,
        until: Option<Time>,
        mut emit: impl FnMut(&Capability<Time>, &mut Vec<WindowRow>),
    ) {
        let p = self.panes;
        let passed = |t: Time| !frontier.less_equal(&t) && until.is_none_or(|u| t < u);
        let mut rows = Vec::new();
        loop {
            let t_pane = self.open.first_key_value().map(|(&s, _)| p.close_time(s + p.pane)).filter(|&t| passed(t));
            let t_late = self.late.first_key_value().map(|(&t, _)| t).filter(|&t| passed(t));
            let t_end = self.ends.first_key_value().map(|(&e, _)| p.close_time(e)).filter(|&t| passed(t));
            let Some(t) = [t_pane, t_late, t_end].into_iter().flatten().min() else { break };
            if t_pane == Some(t) {
                let (start, mut w) = self.open.pop_first().expect("non-empty");
                if p.tumbling() && self.lateness.is_none() {
                    // The common case: the pane is the window, nothing is kept.
                    for ((_, key), parts) in w.groups.drain() {
                        rows.push(WindowRow { start, end: start + p.size, key, acc: parts.merged(), revision: 0 });
                    }
                    emit(&w.cap, &mut rows);
                } else {
                    for end in p.window_ends(start) {
                        self.ends.entry(end).or_insert_with(|| w.cap.delayed(&p.close_time(end)));
                    }
                    self.closed.insert(start, w.groups.drain().map(|((_, k), parts)| (k, parts.merged())).collect());
                }
                self.spare.push(w.groups);
            } else if t_late == Some(t) {
                let (_, mut w) = self.late.pop_first().expect("non-empty");
                self.revise(t, &mut w, &mut rows);
                emit(&w.cap, &mut rows);
            } else {
                let (end, cap) = self.ends.pop_first().expect("non-empty");
                let mut groups: HashMap<GroupKey, Acc> = HashMap::new();
                // Panes no later window needs (without revisions: later windows start at
                // `end + slide - size` or after) are moved in rather than cloned: the oldest
                // pane's accumulators become the window's. Panes are folded in order of start
                // either way, so sums are the same to the bit.
                let revisable = self.lateness.is_some();
                let kept = if revisable { end - p.size } else { end + p.slide - p.size };
                while let Some(entry) = self.closed.first_entry().filter(|e| !revisable && *e.key() < kept) {
                    let start = *entry.key();
                    let pane_groups = entry.remove();
                    if start < end - p.size {
                        continue;
                    }
                    for (key, acc) in pane_groups {
                        match groups.get_mut(&key) {
                            Some(a) => a.merge(&acc),
                            None => {
                                groups.insert(key, acc);
                            }
                        }
                    }
                }
                for (_, pane_groups) in self.closed.range(kept.max(end - p.size)..end) {
                    for (key, acc) in pane_groups {
                        match groups.get_mut(key) {
                            Some(a) => a.merge(acc),
                            None => {
                                groups.insert(key.clone(), acc.clone());
                            }
                        }
                    }
                }
                if self.lateness.is_some() {
                    self.revisions.insert(end, groups.keys().map(|k| (k.clone(), 0)).collect());
                }
                rows.extend(groups.into_iter().map(|(key, acc)| WindowRow { start: end - p.size, end, key, acc, revision: 0 }));
                emit(&cap, &mut rows);
            }
        }
        if let Some(lateness) = self.lateness {
            // A late point of pane `s` comes at the latest at the epoch of `s + pane − 1 +
            // lateness`, and revises windows ending at most at `s + size`: once the frontier
            // has passed both, the pane is done with. A window end likewise.
            while self.closed.first_key_value().is_some_and(|(&s, _)| passed(p.close_time(s + p.size + lateness))) {
                self.closed.pop_first();
            }
            while self.revisions.first_key_value().is_some_and(|(&e, _)| passed(p.close_time(e + lateness))) {
                self.revisions.pop_first();
            }
        }
    }

    /// Folds one batch of late partials (come at `t`) into their closed panes and re-emits
    /// every emitted window they reach, once per window and group, with the next revision.
    fn revise(&mut self, t: Time, w: &mut MergePane, rows: &mut Vec<WindowRow>) {
        let p = self.panes;
        let mut touched: hashbrown::HashSet<(i64, GroupKey)> = hashbrown::HashSet::new();
        for ((start, key), parts) in w.groups.drain() {
            let acc = parts.merged();
            match self.closed.entry(start).or_default().entry(key.clone()) {
                hashbrown::hash_map::Entry::Occupied(mut e) => e.get_mut().merge(&acc),
                hashbrown::hash_map::Entry::Vacant(e) => {
                    e.insert(acc);
                }
            }
            for end in p.window_ends(start) {
                if p.close_time(end) < t {
                    touched.insert((end, key.clone()));
                } else {
                    // Not emitted yet: it will hold the revised pane.
                    self.ends.entry(end).or_insert_with(|| w.cap.delayed(&p.close_time(end)));
                }
            }
        }
        for (end, key) in touched {
            let mut acc: Option<Acc> = None;
            for (_, pane_groups) in self.closed.range(end - p.size..end) {
                if let Some(a) = pane_groups.get(&key) {
                    match acc.as_mut() {
                        Some(x) => x.merge(a),
                        None => acc = Some(a.clone()),
                    }
                }
            }
            let Some(acc) = acc else { continue };
            let revision = match self.revisions.entry(end).or_default().entry(key.clone()) {
                hashbrown::hash_map::Entry::Occupied(mut e) => {
                    *e.get_mut() += 1;
                    *e.get()
                }
                hashbrown::hash_map::Entry::Vacant(e) => *e.insert(0),
            };
            rows.push(WindowRow { start: end - p.size, end, key, acc, revision });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Lcg, run_metrics, run_stamped};
    use alertflow_model::sketch::RELATIVE_ERROR;
    use std::collections::BTreeMap as Map;

    fn config(window: WindowSpec, group_by: &[&str], functions: &[AggFn]) -> AggregateConfig {
        AggregateConfig {
            name: "w".into(),
            input: "points".into(),
            window,
            group_by: group_by.iter().map(|s| s.to_string()).collect(),
            functions: functions.to_vec(),
            state: StateConfig::default(),
        }
    }

    /// At the cap (`state.max_keys`), points of series new to their pane (or groups with no
    /// open session) are rejected and counted, and nothing else is lost: every point is
    /// counted in its rows or as rejected, no window counts more than the oracle's, and with room for
    /// everything nothing is rejected. Tumbling, hopping and session windows, 1, 2 and 4
    /// workers.
    #[test]
    fn a_full_state_rejects_new_series_and_loses_nothing_else() {
        use std::sync::atomic::Ordering::Relaxed;
        let points = random_points(21, 20_000, 5);
        for (what, window) in [("tumbling", tumbling("10s")), ("hopping", hopping("20s", "10s")), ("session", session("2s"))] {
            for (max_keys, workers) in [(30, 1), (30, 2), (30, 4), (100_000, 2)] {
                let mut cfg = config(window.clone(), &["host", "zone"], &[AggFn::Count]);
                cfg.state.max_keys = Some(max_keys);
                let op = Aggregate::with_config(&cfg, "1s".parse().unwrap()).unwrap();
                let want = oracle_windows(&points, &op);
                let op2 = op.clone();
                let rows = run_metrics(workers, points.clone(), 500, move |s| s.aggregate(&op2));
                let rejected = op.stats.rejected.load(Relaxed);
                let what = format!("{what}, max_keys {max_keys}, {workers} workers");
                // Each point lies in size/slide windows (1 for tumbling and sessions).
                let per_point = if what.starts_with("hopping") { 2 } else { 1 };
                let counted: u64 = rows.iter().map(|r| r.acc.value(AggFn::Count) as u64).sum();
                // (A session that starts after rejected points has no oracle twin.)
                for r in rows.iter().filter(|_| !what.starts_with("session")) {
                    let oracle = want.iter().find(|((s, _, k), _)| *s == r.start && *k == r.key).map(|(_, ps)| ps.len() as u64);
                    assert!(
                        r.acc.value(AggFn::Count) as u64 <= oracle.unwrap_or(0),
                        "{what}: {:?} [{}, {}) counts more than the oracle",
                        r.key,
                        r.start,
                        r.end
                    );
                }
                if max_keys == 30 {
                    assert!(rejected > 0, "{what}: nothing rejected");
                    // A point is rejected once, in its pane, and so misses every window over it.
                    assert_eq!(
                        counted + rejected * per_point,
                        points.len() as u64 * per_point,
                        "{what}: {counted} counted, {rejected} rejected"
                    );
                } else {
                    assert_eq!((rejected, counted), (0, points.len() as u64 * per_point), "{what}");
                }
            }
        }
    }

    fn tumbling(size: &str) -> WindowSpec {
        WindowSpec::Tumbling { size: size.parse().unwrap() }
    }
    fn hopping(size: &str, slide: &str) -> WindowSpec {
        WindowSpec::Hopping { size: size.parse().unwrap(), slide: slide.parse().unwrap() }
    }
    fn session(gap: &str) -> WindowSpec {
        WindowSpec::Session { gap: gap.parse().unwrap() }
    }

    /// The oracle's windows: every (start, end, group) with its points, from the whole input
    /// at once — each point placed in every window that holds it, sessions cut naively.
    fn oracle_windows<'a>(points: &'a [Metric], op: &Aggregate) -> Map<(i64, i64, GroupKey), Vec<&'a Metric>> {
        let mut m: Map<(i64, i64, GroupKey), Vec<&'a Metric>> = Map::new();
        match op.shape {
            Shape::Fixed { size, slide, .. } => {
                for p in points {
                    let k = GroupKey::project(&p.series, &op.group_by);
                    // Every window start s = k·slide with s ≤ ts < s + size.
                    let mut s = floor_to(p.ts, slide);
                    while s > p.ts - size {
                        m.entry((s, s + size, k.clone())).or_default().push(p);
                        s -= slide;
                    }
                }
            }
            Shape::Session { gap } => {
                let mut by_group: Map<GroupKey, Vec<&Metric>> = Map::new();
                for p in points {
                    by_group.entry(GroupKey::project(&p.series, &op.group_by)).or_default().push(p);
                }
                for (k, mut ps) in by_group {
                    ps.sort_by_key(|p| (p.ts, p.part, p.pos));
                    let mut run: Vec<&Metric> = Vec::new();
                    for p in ps {
                        if let Some(last) = run.last()
                            && p.ts >= last.ts + gap
                        {
                            let w = std::mem::take(&mut run);
                            m.insert((w[0].ts, w[w.len() - 1].ts + gap, k.clone()), w);
                        }
                        run.push(p);
                    }
                    let end = run[run.len() - 1].ts + gap;
                    m.insert((run[0].ts, end, k), run);
                }
            }
        }
        m
    }

    /// Checks one row against the naive value of every function.
    fn check_row(r: &WindowRow, ps: &[&Metric], functions: &[AggFn], what: &str) {
        let mut v: Vec<f64> = ps.iter().map(|p| p.value).collect();
        let n = v.len() as f64;
        let sum: f64 = v.iter().sum();
        let mean = sum / n;
        v.sort_by(f64::total_cmp);
        for &f in functions {
            let got = r.acc.value(f);
            let want = match f {
                AggFn::Count => n,
                AggFn::Sum => sum,
                AggFn::Min => v[0],
                AggFn::Max => v[v.len() - 1],
                AggFn::Avg => mean,
                AggFn::Last => ps.iter().max_by_key(|p| (p.ts, p.part, p.pos)).unwrap().value,
                AggFn::Stddev => (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt(),
                // Nearest rank, as DuckDB's quantile_disc.
                q => v[((q.quantile().unwrap() * n).ceil() as usize).clamp(1, v.len()) - 1],
            };
            let tol = match f {
                AggFn::Count | AggFn::Min | AggFn::Max | AggFn::Last => 0.0,
                AggFn::Sum | AggFn::Avg | AggFn::Stddev => 1e-9 * want.abs().max(1.0),
                _ => RELATIVE_ERROR * want.abs() * (1.0 + 1e-12) + 1e-9,
            };
            assert!((got - want).abs() <= tol, "{what}: {f} of {:?} [{}, {}) is {got}, want {want}", r.key, r.start, r.end);
        }
    }

    fn random_points(seed: u64, n: usize, spacing: i64) -> Vec<Metric> {
        let mut r = Lcg(seed);
        let hosts: Vec<String> = (0..37).map(|i| format!("h{i}")).collect();
        let series: Vec<Series> = (0..200)
            .map(|i| {
                let zone = if i % 3 == 0 { vec![("zone", "a")] } else { vec![] };
                let mut l = vec![("host", hosts[i % hosts.len()].as_str())];
                l.extend(zone);
                Series::new(["t0", "t1"][i % 2], ["cpu", "mem", "disk"][i % 3], &l)
            })
            .collect();
        (0..n)
            .map(|i| {
                let base = 1_767_225_600_000 + (i as i64) * spacing;
                // up to 3 s of disorder
                let ts = base + (r.next() % 6000) as i64 - 3000;
                Metric {
                    series: series[(r.next() % 200) as usize].clone(),
                    ts,
                    value: (r.next() % 100_000) as f64 / 7.0 - 5000.0,
                    part: (i / 997) as u32,
                    pos: (i % 997) as u64,
                    late: false,
                }
            })
            .collect()
    }

    /// Runs `cfg` over `points` on 1, 2 and 4 workers: the rows are exactly the oracle's
    /// windows, every function within its bound, and bit-identical at every worker count.
    fn check_against_oracle(cfg: &AggregateConfig, points: &[Metric], what: &str) {
        let op = Aggregate::with_config(cfg, "1s".parse().unwrap()).unwrap();
        let want = oracle_windows(points, &op);
        let mut first: Option<Vec<WindowRow>> = None;
        for workers in [1, 2, 4] {
            let op2 = op.clone();
            let mut rows = run_metrics(workers, points.to_vec(), 5000, move |s| s.aggregate(&op2));
            rows.sort_by(|a, b| (a.start, a.end, &a.key).cmp(&(b.start, b.end, &b.key)));
            let got: Vec<(i64, i64, GroupKey)> = rows.iter().map(|r| (r.start, r.end, r.key.clone())).collect();
            let keys: Vec<(i64, i64, GroupKey)> = want.keys().cloned().collect();
            assert!(got == keys, "{what}, {workers} workers: {} rows, the oracle has {} windows", got.len(), keys.len());
            for r in &rows {
                check_row(r, &want[&(r.start, r.end, r.key.clone())], &op.functions, what);
            }
            match &first {
                None => first = Some(rows),
                Some(f) => assert!(f == &rows, "{what}: {workers} workers differ from 1"),
            }
        }
    }

    #[test]
    fn tumbling_windows_match_the_oracle_at_any_worker_count() {
        for (seed, size, group_by) in
            [(1, "1m", vec!["host"]), (2, "10s", vec![]), (3, "1m", vec!["zone", "host"]), (4, "7s", vec!["zone"])]
        {
            let cfg = config(tumbling(size), &group_by, &AggFn::DEFAULT);
            check_against_oracle(&cfg, &random_points(seed, 20_000, 50), &format!("tumbling {size}, seed {seed}"));
        }
    }

    #[test]
    fn every_function_matches_the_oracle() {
        let cfg = config(tumbling("30s"), &["zone"], &AggFn::ALL);
        check_against_oracle(&cfg, &random_points(5, 20_000, 50), "all functions");
    }

    #[test]
    fn hopping_windows_match_the_oracle_at_any_worker_count() {
        for (seed, size, slide, group_by) in
            [(6, "5m", "1m", vec!["host"]), (7, "10s", "4s", vec![]), (8, "1m", "1m", vec!["zone"]), (9, "30s", "10s", vec!["zone"])]
        {
            let cfg = config(hopping(size, slide), &group_by, &AggFn::ALL);
            check_against_oracle(&cfg, &random_points(seed, 20_000, 50), &format!("hopping {size}/{slide}, seed {seed}"));
        }
    }

    #[test]
    fn session_windows_match_the_oracle_at_any_worker_count() {
        // Sparse points (one every 400 ms over 200 series, so a series sees a point every
        // ~80 s on average) make sessions of every length for gaps of 1–5 minutes.
        for (seed, gap, group_by) in [(10, "2m", vec!["host"]), (11, "5m", vec![]), (12, "1m", vec!["zone", "host"])] {
            let cfg = config(session(gap), &group_by, &AggFn::ALL);
            check_against_oracle(&cfg, &random_points(seed, 10_000, 400), &format!("session {gap}, seed {seed}"));
        }
    }

    /// Stamps points the way the file source does under the late policy `update`: per
    /// partition in position order, a point older than the partition's watermark (max event
    /// time − `ooo`) by at most `lateness` is kept, marked late and stamped at the watermark's
    /// epoch; an older one is dropped (a dead letter).
    fn stamp_like_the_source(points: &[Metric], ooo: i64, lateness: i64) -> Vec<(Time, Metric)> {
        let mut max_ts: Map<u32, i64> = Map::new();
        let mut out = Vec::new();
        for m in points {
            let wm = max_ts.get(&m.part).map(|t| t - ooo);
            match wm {
                Some(wm) if m.ts < wm => {
                    if wm - m.ts <= lateness {
                        out.push((floor_to(wm, 1000) as Time, Metric { late: true, ..m.clone() }));
                    }
                }
                _ => {
                    max_ts.insert(m.part, max_ts.get(&m.part).map_or(m.ts, |t| (*t).max(m.ts)));
                    out.push((floor_to(m.ts, 1000) as Time, m.clone()));
                }
            }
        }
        out
    }

    /// The counters `/metrics` shows: every point in, every row out, every late point, at 1,
    /// 2 and 4 workers (all workers add into one set); the state gauge is back to 0 once the
    /// dataflow is gone. (Whether state shows while rows are emitted depends on scheduling —
    /// with 4 workers every session may close in the last activation — so it is checked where
    /// it can be sampled deterministically: the alert chain's test, at its last watermark.)
    #[test]
    fn counters_count_every_point_row_and_late_point_at_any_worker_count() {
        use std::sync::atomic::Ordering;
        let (ooo, lateness) = (1000, 2000);
        let stamped = stamp_like_the_source(&random_points(16, 20_000, 50), ooo, lateness);
        let late = stamped.iter().filter(|(_, m)| m.late).count() as u64;
        assert!(late > 500, "only {late} late points");
        // Sessions by host with a 2 s gap: a host reports every ~1.9 s, so sessions close all along.
        for (window, group_by, update) in
            [(tumbling("10s"), "zone", true), (hopping("20s", "5s"), "zone", false), (session("2s"), "host", false)]
        {
            for workers in [1, 2, 4] {
                let what = format!("{window:?}, {workers} workers");
                let mut op = Aggregate::with_config(&config(window.clone(), &[group_by], &AggFn::DEFAULT), DurationMs(1000)).unwrap();
                if update {
                    op = op.with_late_updates(DurationMs(lateness as u64)).unwrap();
                }
                // Late points reach a window only under `update` (the source drops them otherwise).
                let input: Vec<(Time, Metric)> = stamped.iter().filter(|(_, m)| update || !m.late).cloned().collect();
                let sent = input.len() as u64;
                let want_late = if update { late } else { 0 };
                let stats = op.stats().clone();
                let op2 = op.clone();
                let rows = run_stamped(workers, input, move |s| s.aggregate(&op2));
                assert_eq!(stats.records_in.load(Ordering::Relaxed), sent, "{what}");
                assert_eq!(stats.records_out.load(Ordering::Relaxed), rows.len() as u64, "{what}");
                assert_eq!(stats.late.load(Ordering::Relaxed), want_late, "{what}");
                assert_eq!(stats.state(), 0, "{what}: state left after the dataflow ended");
            }
        }
    }

    #[test]
    fn late_updates_revise_windows_like_the_oracle() {
        let (ooo, lateness) = (1000, 2000);
        for (seed, window) in [(13, tumbling("10s")), (14, hopping("20s", "5s")), (15, tumbling("1m"))] {
            let what = format!("late update, {window:?}, seed {seed}");
            let cfg = config(window, &["zone"], &AggFn::ALL);
            let op = Aggregate::with_config(&cfg, "1s".parse().unwrap()).unwrap().with_late_updates(DurationMs(lateness as u64)).unwrap();
            let stamped = stamp_like_the_source(&random_points(seed, 20_000, 50), ooo, lateness);
            let late = stamped.iter().filter(|(_, m)| m.late).count();
            assert!(late > 500, "{what}: only {late} late points");
            // The oracle: for each window and group, one row per emission time — the window's
            // close, then each later time late points of it came at — holding every point
            // that came by then.
            let accepted: Vec<Metric> = stamped.iter().map(|(_, m)| m.clone()).collect();
            let stamp_of: Map<(u32, u64), Time> = stamped.iter().map(|(t, m)| ((m.part, m.pos), *t)).collect();
            let mut want: Map<(i64, i64, GroupKey, u32), Vec<&Metric>> = Map::new();
            for ((start, end, key), ps) in oracle_windows(&accepted, &op) {
                let close = floor_to(end - 1, 1000) as Time;
                let mut times: Vec<Time> = ps.iter().map(|p| stamp_of[&(p.part, p.pos)].max(close)).collect();
                times.sort();
                times.dedup();
                for (rev, t) in times.into_iter().enumerate() {
                    let upto: Vec<&Metric> = ps.iter().copied().filter(|p| stamp_of[&(p.part, p.pos)] <= t).collect();
                    want.insert((start, end, key.clone(), rev as u32), upto);
                }
            }
            assert!(want.keys().any(|k| k.3 > 0), "{what}: no revisions");
            let mut first: Option<Vec<WindowRow>> = None;
            for workers in [1, 2, 4] {
                let op2 = op.clone();
                let mut rows = run_stamped(workers, stamped.clone(), move |s| s.aggregate(&op2));
                rows.sort_by(|a, b| (a.start, a.end, &a.key, a.revision).cmp(&(b.start, b.end, &b.key, b.revision)));
                let got: Vec<_> = rows.iter().map(|r| (r.start, r.end, r.key.clone(), r.revision)).collect();
                let keys: Vec<_> = want.keys().cloned().collect();
                assert!(got == keys, "{what}, {workers} workers: {} rows, the oracle has {}", got.len(), keys.len());
                for r in &rows {
                    check_row(r, &want[&(r.start, r.end, r.key.clone(), r.revision)], &op.functions, &what);
                }
                match &first {
                    None => first = Some(rows),
                    Some(f) => assert!(f == &rows, "{what}: {workers} workers differ from 1"),
                }
            }
        }
        let s = Aggregate::with_config(&config(session("1m"), &[], &AggFn::DEFAULT), DurationMs(1000)).unwrap();
        assert!(s.with_late_updates(DurationMs(1000)).unwrap_err().to_string().contains("session windows do not support"));
    }

    #[test]
    fn pane_arithmetic() {
        let p = Panes { size: 300, slide: 60, pane: 60, epoch: 1 };
        assert_eq!(p.window_ends(600).collect::<Vec<_>>(), [660, 720, 780, 840, 900]);
        let p = Panes { size: 10, slide: 4, pane: 2, epoch: 1 };
        // Windows [0,10) [4,14) [8,18) hold the pane [8,10).
        assert_eq!(p.window_ends(8).collect::<Vec<_>>(), [10, 14, 18]);
        // The pane [-2, 0) is in the windows [-8, 2) and [-4, 6).
        assert_eq!(p.window_ends(-2).collect::<Vec<_>>(), [2, 6]);
    }

    #[test]
    fn rejects_bad_configs() {
        let mut c = config(tumbling("0s"), &["date", "host", "host", "count"], &[]);
        c.functions = vec![];
        let errs = Aggregate::with_config(&c, DurationMs(1000)).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let all = text.join("\n");
        for want in [
            "window.size: must be greater than 0",
            "group_by[0]: `date` is reserved",
            "group_by[2]: `host` is listed twice",
            "group_by[3]: `count` is already a column",
            "functions: list at least one",
        ] {
            assert!(all.contains(want), "missing `{want}` in\n{all}");
        }
        let bad = |w: WindowSpec| {
            let e = Aggregate::with_config(&config(w, &[], &AggFn::DEFAULT), DurationMs(1000)).unwrap_err();
            e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
        };
        assert!(bad(hopping("1m", "2m")).contains("window.slide: must be at most `size`"));
        assert!(bad(hopping("1h", "0s")).contains("window.slide: must be greater than 0"));
        assert!(bad(hopping("1d", "7001ms")).contains("share too small a divisor"));
        assert!(bad(session("0s")).contains("window.gap: must be greater than 0"));
    }

    #[test]
    fn config_parses_from_toml_shape() {
        let c: AggregateConfig = serde_json::from_str(
            r#"{"name":"per_minute","input":"points","window":{"type":"tumbling","size":"1m"},"group_by":["host"],"functions":["count","sum","min","max","avg"]}"#,
        )
        .unwrap();
        assert_eq!(c.window, WindowSpec::Tumbling { size: DurationMs(60_000) });
        let bad =
            serde_json::from_str::<AggregateConfig>(r#"{"name":"x","input":"p","window":{"type":"tumbling","size":"1m","slide":"1s"}}"#);
        assert!(bad.unwrap_err().to_string().contains("unknown field `slide`"));
        let h: AggregateConfig = serde_json::from_str(
            r#"{"name":"x","input":"p","window":{"type":"hopping","size":"5m","slide":"1m"},"functions":["p99","last"]}"#,
        )
        .unwrap();
        assert_eq!(h.window, hopping("5m", "1m"));
        assert_eq!(h.functions, [AggFn::P99, AggFn::Last]);
        let s: AggregateConfig = serde_json::from_str(r#"{"name":"x","input":"p","window":{"type":"session","gap":"2m"}}"#).unwrap();
        assert_eq!(s.window, session("2m"));
        assert_eq!(s.functions, AggFn::DEFAULT);
    }
}
