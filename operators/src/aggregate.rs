//! Window aggregate: tumbling windows in event time, grouped by tenant, metric name and chosen
//! labels, emitting one row per window and group once the frontier passes the window's end.
//!
//! Two stages. **Pre-aggregation** runs on the worker that decoded the points (no exchange):
//! it folds points into one accumulator per (window, series, input partition), keyed by the
//! interned series' address, so the per-point cost is two small map probes and no allocation.
//! When the frontier passes a window it ships those partials, projected onto the group key, to
//! the worker that owns the group. **Merge** folds the partials of a group in the canonical
//! order (partition, first position): the order does not depend on the worker count or on
//! batching, so neither do the floating-point sums.

use std::collections::BTreeMap;

use alertflow_model::time::{DurationMs, floor_to};
use alertflow_model::window::{Acc, AggFn, GroupKey, WindowRow};
use alertflow_model::{Metric, Series};
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::{ConfigError, Time};

/// The `[[aggregate]]` section of a pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// The output table's name.
    pub name: String,
    /// The source (metric stream) to aggregate.
    pub input: String,
    /// The window: `{ type = "tumbling", size = "1m" }`.
    pub window: WindowSpec,
    /// Labels to group by; tenant and metric name are always keys.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Aggregate functions, each a column: count, sum, min, max, avg.
    #[serde(default = "default_functions")]
    pub functions: Vec<AggFn>,
}

fn default_functions() -> Vec<AggFn> {
    AggFn::ALL.to_vec()
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
}

/// A validated window aggregate, ready to build.
#[derive(Clone, Debug)]
pub struct Aggregate {
    name: String,
    size: i64,
    epoch: i64,
    group_by: Vec<String>,
    functions: Vec<AggFn>,
}

impl Aggregate {
    /// Validates a config for a pipeline whose timely epoch is `epoch`.
    pub fn with_config(cfg: &AggregateConfig, epoch: DurationMs) -> Result<Aggregate, Vec<ConfigError>> {
        let mut errs = Vec::new();
        let WindowSpec::Tumbling { size } = cfg.window;
        if size.millis() == 0 {
            errs.push(ConfigError::new("window.size", "must be greater than 0"));
        }
        if size.millis() > 366 * 86_400_000 {
            errs.push(ConfigError::new("window.size", "must be at most 366d"));
        }
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
            errs.push(ConfigError::new("functions", "list at least one function: count, sum, min, max, avg"));
        }
        for (i, f) in cfg.functions.iter().enumerate() {
            if cfg.functions[..i].contains(f) {
                errs.push(ConfigError::new(format!("functions[{i}]"), format!("`{f}` is listed twice")));
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Aggregate {
            name: cfg.name.clone(),
            size: size.millis() as i64,
            epoch: epoch.millis().max(1) as i64,
            group_by: cfg.group_by.clone(),
            functions: cfg.functions.clone(),
        })
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
    /// The window start of an event time.
    #[inline]
    fn window_start(&self, ts: i64) -> i64 {
        floor_to(ts, self.size)
    }
    /// The timely time at which a window can close: the epoch of its last millisecond. Points
    /// of the window carry times at or before it, so once the frontier passes it the window is
    /// complete.
    #[inline]
    fn close_time(&self, start: i64) -> Time {
        floor_to(start + self.size - 1, self.epoch) as Time
    }
}

/// A partial accumulator of one window, group and input partition, shipped from
/// pre-aggregation to the merge.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Partial {
    key: GroupKey,
    start: i64,
    part: u32,
    /// Position of the first point folded in: with `part`, a canonical merge order.
    first_pos: u64,
    acc: Acc,
}

/// Builds window aggregates on metric streams.
pub trait AggregateExt<'s> {
    /// One [`WindowRow`] per window and group, at the window's close time.
    fn aggregate(self, op: &Aggregate) -> Stream<'s, Time, Vec<WindowRow>>;
}

/// Partials of one window before the exchange: (series address, partition) → (series, first
/// position, accumulator).
type SeriesPartials = HashMap<(usize, u32), (Series, u64, Acc)>;

struct PreWindow {
    cap: Capability<Time>,
    series: SeriesPartials,
}

struct MergeWindow {
    cap: Capability<Time>,
    groups: HashMap<GroupKey, Parts>,
}

/// The partials of one group: nearly always one or two, so the first lives inline.
struct Parts {
    first: (u32, u64, Acc),
    rest: Vec<(u32, u64, Acc)>,
}

impl<'s> AggregateExt<'s> for Stream<'s, Time, Vec<Metric>> {
    fn aggregate(self, op: &Aggregate) -> Stream<'s, Time, Vec<WindowRow>> {
        let pre_op = op.clone();
        let partials = self.unary_frontier::<CapacityContainerBuilder<Vec<Partial>>, _, _, _>(
            Pipeline,
            &format!("aggregate:{}:pre", op.name),
            move |_cap, _info| {
                let op = pre_op;
                let mut windows: BTreeMap<i64, PreWindow> = BTreeMap::new();
                // Maps of flushed windows, kept with their capacity for the next windows:
                // growing fresh maps window after window cost page faults and rehashing.
                let mut spare: Vec<SeriesPartials> = Vec::new();
                // Series → group key, computed once per series (and holding the series, so
                // its address cannot be reused while cached).
                let mut keys: HashMap<usize, (Series, GroupKey)> = HashMap::new();
                move |(input, frontier), output| {
                    let port = output.output_index();
                    input.for_each_stamp(|cap, data| {
                        for batch in data {
                            // Consecutive points nearly always share a window: look it up once
                            // per run of equal window starts.
                            let mut current: Option<(i64, &mut PreWindow)> = None;
                            for m in batch.drain(..) {
                                let start = op.window_start(m.ts);
                                let w = match current {
                                    Some((s, w)) if s == start => w,
                                    _ => windows.entry(start).or_insert_with(|| PreWindow {
                                        cap: cap.delayed(&op.close_time(start), port),
                                        series: spare.pop().unwrap_or_default(),
                                    }),
                                };
                                w.series
                                    .entry((m.series.addr(), m.part))
                                    .and_modify(|e| e.2.add(m.value))
                                    .or_insert_with(|| (m.series, m.pos, Acc::of(m.value)));
                                current = Some((start, w));
                            }
                        }
                    });
                    while let Some(entry) = windows.first_entry() {
                        if frontier.less_equal(&op.close_time(*entry.key())) {
                            break;
                        }
                        let start = *entry.key();
                        let mut w = entry.remove();
                        let mut session = output.session(&w.cap);
                        for ((addr, part), (series, first_pos, acc)) in w.series.drain() {
                            let key = &keys
                                .entry(addr)
                                .or_insert_with(|| {
                                    let k = GroupKey::project(&series, &op.group_by);
                                    (series, k)
                                })
                                .1;
                            session.give(Partial { key: key.clone(), start, part, first_pos, acc });
                        }
                        spare.push(w.series);
                    }
                }
            },
        );

        let merge_op = op.clone();
        partials.unary_frontier::<CapacityContainerBuilder<Vec<WindowRow>>, _, _, _>(
            Exchange::new(|p: &Partial| p.key.stable_hash()),
            &format!("aggregate:{}:merge", op.name),
            move |_cap, _info| {
                let op = merge_op;
                let mut windows: BTreeMap<i64, MergeWindow> = BTreeMap::new();
                let mut spare: Vec<HashMap<GroupKey, Parts>> = Vec::new();
                move |(input, frontier), output| {
                    let port = output.output_index();
                    input.for_each_stamp(|cap, data| {
                        for batch in data {
                            for p in batch.drain(..) {
                                let w = windows.entry(p.start).or_insert_with(|| MergeWindow {
                                    cap: cap.delayed(&op.close_time(p.start), port),
                                    groups: spare.pop().unwrap_or_default(),
                                });
                                let part = (p.part, p.first_pos, p.acc);
                                match w.groups.entry(p.key) {
                                    hashbrown::hash_map::Entry::Occupied(mut e) => e.get_mut().rest.push(part),
                                    hashbrown::hash_map::Entry::Vacant(e) => {
                                        e.insert(Parts { first: part, rest: Vec::new() });
                                    }
                                }
                            }
                        }
                    });
                    while let Some(entry) = windows.first_entry() {
                        if frontier.less_equal(&op.close_time(*entry.key())) {
                            break;
                        }
                        let start = *entry.key();
                        let mut w = entry.remove();
                        let mut session = output.session(&w.cap);
                        for (key, Parts { first, mut rest }) in w.groups.drain() {
                            let acc = if rest.is_empty() {
                                first.2
                            } else {
                                rest.push(first);
                                rest.sort_unstable_by_key(|&(part, pos, _)| (part, pos));
                                let mut acc = rest[0].2;
                                for (_, _, a) in &rest[1..] {
                                    acc.merge(a);
                                }
                                acc
                            };
                            session.give(WindowRow { start, end: start + op.size, key, acc });
                        }
                        spare.push(w.groups);
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Lcg, run_metrics};
    use std::collections::BTreeMap as Map;

    fn config(size: &str, group_by: &[&str]) -> AggregateConfig {
        AggregateConfig {
            name: "w".into(),
            input: "points".into(),
            window: WindowSpec::Tumbling { size: size.parse().unwrap() },
            group_by: group_by.iter().map(|s| s.to_string()).collect(),
            functions: AggFn::ALL.to_vec(),
        }
    }

    /// The oracle: every point of the input, grouped naively.
    fn oracle(points: &[Metric], size: i64, group_by: &[String]) -> Map<(i64, GroupKey), (u64, f64, f64, f64)> {
        let mut m: Map<(i64, GroupKey), Vec<f64>> = Map::new();
        for p in points {
            let k = GroupKey::project(&p.series, group_by);
            m.entry((floor_to(p.ts, size), k)).or_default().push(p.value);
        }
        m.into_iter()
            .map(|(k, v)| {
                let sum: f64 = v.iter().sum();
                let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
                let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                (k, (v.len() as u64, sum, min, max))
            })
            .collect()
    }

    fn random_points(seed: u64, n: usize) -> Vec<Metric> {
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
                let base = 1_767_225_600_000 + (i as i64) * 50;
                // up to 3 s of disorder
                let ts = base + (r.next() % 6000) as i64 - 3000;
                Metric {
                    series: series[(r.next() % 200) as usize].clone(),
                    ts,
                    value: (r.next() % 100_000) as f64 / 7.0 - 5000.0,
                    part: (i / 997) as u32,
                    pos: (i % 997) as u64,
                }
            })
            .collect()
    }

    #[test]
    fn matches_the_oracle_at_any_worker_count() {
        for (seed, size, group_by) in
            [(1, "1m", vec!["host"]), (2, "10s", vec![]), (3, "1m", vec!["zone", "host"]), (4, "7s", vec!["zone"])]
        {
            let cfg = config(size, &group_by);
            let points = random_points(seed, 20_000);
            let op = Aggregate::with_config(&cfg, "1s".parse().unwrap()).unwrap();
            let want = oracle(&points, op.size, &op.group_by);
            let mut first: Option<Vec<WindowRow>> = None;
            for workers in [1, 2, 4] {
                let op2 = op.clone();
                let mut rows = run_metrics(workers, points.clone(), 5000, move |s| s.aggregate(&op2));
                rows.sort_by(|a, b| (a.start, &a.key).cmp(&(b.start, &b.key)));
                assert_eq!(rows.len(), want.len(), "seed {seed}, {workers} workers");
                for r in &rows {
                    let (count, sum, min, max) = want[&(r.start, r.key.clone())];
                    assert_eq!(r.end - r.start, op.size);
                    assert_eq!((r.acc.count, r.acc.min, r.acc.max), (count, min, max));
                    assert!((r.acc.sum() - sum).abs() <= 1e-9 * sum.abs().max(1.0), "{} vs {sum}", r.acc.sum());
                }
                // Bit-identical whatever the worker count.
                match &first {
                    None => first = Some(rows),
                    Some(f) => assert!(f == &rows, "seed {seed}: {workers} workers differ from 1"),
                }
            }
        }
    }

    #[test]
    fn rejects_bad_configs() {
        let mut c = config("0s", &["date", "host", "host", "count"]);
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
    }
}
