//! Group timing against an oracle: a naive simulation of Alertmanager's dispatcher that steps
//! a clock one second at a time — alerts arrive, every group's timer is checked, due groups
//! flush through a literal transcription of `DedupStage.needsUpdate` against a notification
//! log that outlives the groups, and empty groups are collected — compared with the
//! event-driven [`Group`] on seeded random alert updates, with checkpoints (serde round trips)
//! in between.

use std::collections::{BTreeMap, BTreeSet};

use alertflow_model::labels::LabelSet;
use alertflow_model::time::Millis;
use alertflow_notify::{AlertState, Group, Route, group_key};

const S: Millis = 1000;

/// SplitMix64: small, seedable, good enough to drive a test.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Three routes with different grouping and timings; `db` continues to the regex route.
const TREE: &str = r#"
receiver = "default"
group_by = ["alertname"]
group_wait = "3s"
group_interval = "5s"
repeat_interval = "20s"

[[routes]]
matchers = ['team="db"']
receiver = "db"
group_by = ["alertname", "cluster"]
group_wait = "0s"
group_interval = "4s"
repeat_interval = "7s"
continue = true

[[routes]]
matchers = ['alertname=~"A|B"']
receiver = "ab"
group_by = ["..."]
group_wait = "2s"
group_interval = "3s"
repeat_interval = "9s"
"#;

struct Update {
    t: Millis,
    labels: LabelSet,
    state: AlertState,
}

fn updates(seed: u64, n: usize) -> Vec<Update> {
    let mut rng = Prng(seed);
    let mut pool = Vec::new();
    for name in ["A", "B", "C"] {
        for cluster in ["c1", "c2"] {
            for team in ["db", "web"] {
                pool.push(LabelSet::new("t", &[("alertname", name), ("cluster", cluster), ("team", team), ("instance", "i1")]));
            }
        }
    }
    let mut t = 0;
    (0..n)
        .map(|_| {
            t += rng.below(4) as Millis * S;
            let labels = pool[rng.below(pool.len() as u64) as usize].clone();
            let state = match rng.below(10) {
                // Firing, sometimes with a start older than group_wait.
                0..5 => AlertState::firing(t - rng.below(8) as Millis * S),
                // Firing with an announced end, Prometheus style: it resolves by itself.
                5..7 => AlertState { starts_at: t - rng.below(5) as Millis * S, ends_at: Some(t + (1 + rng.below(10) as Millis) * S) },
                // Resolved (now or a moment ago).
                _ => AlertState::resolved(t - rng.below(20) as Millis * S, t - rng.below(2) as Millis * S),
            };
            Update { t, labels, state }
        })
        .collect()
}

/// (time, group key, reason, firing, resolved) with alerts as (fingerprint, starts_at, ends_at).
type Note = (Millis, String, String, Vec<(u64, Millis, Option<Millis>)>, Vec<(u64, Millis, Option<Millis>)>);

/// The oracle.
fn reference(route: &Route, ups: &[Update], horizon: Millis) -> Vec<Note> {
    struct RefGroup {
        timer: Millis,
        has_flushed: bool,
        group_wait: Millis,
        group_interval: Millis,
        repeat_interval: Millis,
        alerts: BTreeMap<u64, AlertState>,
    }
    struct Entry {
        timestamp: Millis,
        firing: BTreeSet<u64>,
        resolved: BTreeSet<u64>,
    }
    let mut groups: BTreeMap<String, RefGroup> = BTreeMap::new();
    // The notification log: kept when groups go, as Alertmanager's nflog is.
    let mut nflog: BTreeMap<String, Entry> = BTreeMap::new();
    let mut out = Vec::new();
    let mut next = 0;
    let mut now = 0;
    while now <= horizon {
        // Alerts arriving this second.
        while next < ups.len() && ups[next].t == now {
            let u = &ups[next];
            for r in route.matches(&u.labels) {
                let tm = r.timings();
                let g = groups.entry(group_key(r, &u.labels)).or_insert_with(|| RefGroup {
                    timer: now + tm.group_wait.millis() as Millis,
                    has_flushed: false,
                    group_wait: tm.group_wait.millis() as Millis,
                    group_interval: tm.group_interval.millis() as Millis,
                    repeat_interval: tm.repeat_interval.millis() as Millis,
                    alerts: BTreeMap::new(),
                });
                g.alerts.insert(u.labels.fingerprint(), u.state);
                // aggrGroup.insert: `if !hasFlushed && StartsAt.Add(GroupWait).Before(now) { next.Reset(0) }`.
                if !g.has_flushed && u.state.starts_at + g.group_wait < now {
                    g.timer = now;
                }
            }
            next += 1;
        }
        // Timers that fire this second.
        for (key, g) in groups.iter_mut() {
            if g.timer > now {
                continue;
            }
            g.timer = now + g.group_interval;
            g.has_flushed = true;
            if g.alerts.is_empty() {
                continue;
            }
            let resolved_at = |a: &AlertState| matches!(a.ends_at, Some(e) if e <= now);
            let firing: BTreeSet<u64> = g.alerts.iter().filter(|(_, a)| !resolved_at(a)).map(|(f, _)| *f).collect();
            let resolved: BTreeSet<u64> = g.alerts.iter().filter(|(_, a)| resolved_at(a)).map(|(f, _)| *f).collect();
            // DedupStage.needsUpdate, transcribed (send_resolved on; the repeat is due at or
            // after the interval).
            let reason = match nflog.get(key) {
                None => (!firing.is_empty()).then_some("First"),
                Some(e) => {
                    if !firing.iter().all(|f| e.firing.contains(f)) {
                        Some(if e.firing.is_empty() { "First" } else { "NewAlerts" })
                    } else if firing.is_empty() {
                        (!e.firing.is_empty()).then_some("AllResolved")
                    } else if !resolved.iter().all(|f| e.resolved.contains(f)) {
                        Some("NewResolved")
                    } else {
                        (e.timestamp + g.repeat_interval <= now).then_some("Repeat")
                    }
                }
            };
            if let Some(reason) = reason {
                let list = |set: &BTreeSet<u64>, keep_end: bool| {
                    set.iter().map(|f| (*f, g.alerts[f].starts_at, if keep_end { g.alerts[f].ends_at } else { None })).collect::<Vec<_>>()
                };
                out.push((now, key.clone(), reason.to_string(), list(&firing, false), list(&resolved, true)));
                nflog.insert(key.clone(), Entry { timestamp: now, firing, resolved });
            }
            g.alerts.retain(|_, a| !resolved_at(a));
        }
        // Maintenance: empty groups go.
        groups.retain(|_, g| !g.alerts.is_empty());
        now += S;
    }
    out
}

/// The implementation, driven event by event: ticks before each update, updates, checkpoints.
fn actual(route: &Route, ups: &[Update], horizon: Millis) -> Vec<Note> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut out = Vec::new();
    // Runs every tick due before `t`, removing the groups left empty.
    let run_until = |groups: &mut BTreeMap<String, Group>, t: Millis, out: &mut Vec<Note>| {
        for g in groups.values_mut() {
            while let Some(due) = g.next_due().filter(|&d| d < t) {
                if let Some(n) = g.flush(due) {
                    let list = |v: &[alertflow_notify::NotifiedAlert]| {
                        v.iter().map(|a| (a.fingerprint, a.starts_at, a.ends_at)).collect::<Vec<_>>()
                    };
                    out.push((n.at, n.group_key.clone(), format!("{:?}", n.reason), list(&n.firing), list(&n.resolved)));
                }
            }
        }
        groups.retain(|_, g| !g.is_empty());
    };
    for (i, u) in ups.iter().enumerate() {
        run_until(&mut groups, u.t, &mut out);
        for r in route.matches(&u.labels) {
            let key = group_key(r, &u.labels);
            groups.entry(key.clone()).or_insert_with(|| Group::new(key, r.timings(), u.t)).upsert(u.labels.fingerprint(), u.state, u.t);
        }
        if i % 17 == 0 {
            let json = serde_json::to_string(&groups).unwrap();
            let back: BTreeMap<String, Group> = serde_json::from_str(&json).unwrap();
            assert_eq!(back, groups, "checkpoint round trip");
            groups = back;
        }
    }
    run_until(&mut groups, horizon + 1, &mut out);
    out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    out
}

#[test]
fn group_timing_matches_the_tick_loop_oracle() {
    let route: Route = toml::from_str(TREE).unwrap();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    for seed in 0..200 {
        let ups = updates(seed, 120);
        let horizon = ups.last().unwrap().t + 60 * S;
        let want = reference(&route, &ups, horizon);
        let got = actual(&route, &ups, horizon);
        if got != want {
            let first = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
            panic!(
                "seed {seed}: first difference at notification {first}\n  got:  {:?}\n  want: {:?}\n({} vs {} notifications)",
                got.get(first),
                want.get(first),
                got.len(),
                want.len()
            );
        }
        for n in &want {
            *reasons.entry(n.2.clone()).or_default() += 1;
        }
        total += want.len();
    }
    // The generator must reach every kind of notification, or the comparison proves little.
    for r in ["First", "NewAlerts", "NewResolved", "AllResolved", "Repeat"] {
        assert!(reasons.get(r).copied().unwrap_or(0) >= 20, "too few {r}: {reasons:?}");
    }
    assert!(total > 5_000, "{total}");
}
