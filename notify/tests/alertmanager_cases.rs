//! Routing, grouping, inhibition and silences on configurations written as alertmanager.yml
//! would be, in TOML, with outcomes taken from Alertmanager's own tests (`dispatch/route_test.go`,
//! `dispatch/dispatch_test.go`) and worked out by hand from its documented rules.

use std::collections::BTreeMap;

use alertflow_model::labels::LabelSet;
use alertflow_model::time::DurationMs;
use alertflow_notify::{GroupBy, InhibitRuleConfig, Inhibitor, Route, Silence, Silences, Timings, group_key};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    route: Route,
    #[serde(default)]
    inhibit_rules: Vec<InhibitRuleConfig>,
    #[serde(default)]
    silences: Vec<Silence>,
}

fn config(text: &str) -> Config {
    toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
}

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    LabelSet::new("tenant", pairs)
}

fn secs(s: u64) -> DurationMs {
    DurationMs::from_secs(s)
}

fn by(names: &[&str]) -> GroupBy {
    GroupBy::Labels(names.iter().map(|s| s.to_string()).collect())
}

/// The tree of Alertmanager's `TestRouteMatchers`.
const ROUTE_MATCHERS_TREE: &str = r#"
[route]
receiver = "notify-def"

[[route.routes]]
matchers = ['{owner="team-A"}', '{level!="critical"}']
receiver = "notify-A"

[[route.routes.routes]]
matchers = ['{env="testing"}', '{baz!~".*quux"}']
receiver = "notify-testing"
group_by = ["..."]

[[route.routes.routes]]
matchers = ['{env="production"}']
receiver = "notify-productionA"
group_wait = "1m"
continue = true

[[route.routes.routes]]
matchers = ['env=~"produ.*"', 'job=~".*"']
receiver = "notify-productionB"
group_wait = "30s"
group_interval = "5m"
repeat_interval = "1h"
group_by = ["job"]

[[route.routes]]
matchers = ['owner=~"team-(B|C)"']
group_by = ["foo", "bar"]
group_wait = "2m"
receiver = "notify-BC"

[[route.routes]]
matchers = ['group_by="role"']
group_by = ["role"]

[[route.routes.routes]]
matchers = ['{env="testing"}']
receiver = "notify-testing"

[[route.routes.routes.routes]]
matchers = ['wait="long"']
group_wait = "2m"
"#;

/// Alertmanager's `TestRouteMatchers`: receivers, grouping and timings of each label set.
#[test]
fn alertmanager_route_matchers() {
    let c = config(ROUTE_MATCHERS_TREE);
    let def = Timings::default();
    let t = |gw: u64, gi: u64, ri: u64| Timings { group_wait: secs(gw), group_interval: secs(gi), repeat_interval: secs(ri) };
    // (route id, receiver, grouping, timings) of each node the labels end at.
    type Node = (&'static str, &'static str, GroupBy, Timings);
    type Pairs = &'static [(&'static str, &'static str)];
    let cases: Vec<(Pairs, Vec<Node>)> = vec![
        (&[("owner", "team-A")], vec![("0.0", "notify-A", by(&[]), def)]),
        (&[("owner", "team-A"), ("env", "unset")], vec![("0.0", "notify-A", by(&[]), def)]),
        (&[("owner", "team-C")], vec![("0.1", "notify-BC", by(&["bar", "foo"]), Timings { group_wait: secs(120), ..def })]),
        (&[("owner", "team-A"), ("env", "testing")], vec![("0.0.0", "notify-testing", GroupBy::All, def)]),
        (
            &[("owner", "team-A"), ("env", "production")],
            vec![
                ("0.0.1", "notify-productionA", by(&[]), Timings { group_wait: secs(60), ..def }),
                ("0.0.2", "notify-productionB", by(&["job"]), t(30, 300, 3600)),
            ],
        ),
        (&[("group_by", "role")], vec![("0.2", "notify-def", by(&["role"]), def)]),
        (&[("env", "testing"), ("group_by", "role")], vec![("0.2.0", "notify-testing", by(&["role"]), def)]),
        (
            &[("env", "testing"), ("group_by", "role"), ("wait", "long")],
            vec![("0.2.0.0", "notify-testing", by(&["role"]), Timings { group_wait: secs(120), ..def })],
        ),
    ];
    for (input, want) in cases {
        let got: Vec<_> =
            c.route.matches(&labels(input)).into_iter().map(|r| (r.id(), r.receiver(), r.group_by().clone(), r.timings())).collect();
        assert_eq!(got, want, "{input:?}");
    }
    // `TestRouteWalk`: depth-first, configuration order.
    let walk: Vec<&str> = c.route.walk().iter().map(|r| r.receiver()).collect();
    assert_eq!(
        walk,
        [
            "notify-def",
            "notify-A",
            "notify-testing",
            "notify-productionA",
            "notify-productionB",
            "notify-BC",
            "notify-def",
            "notify-testing",
            "notify-testing"
        ]
    );
}

/// Alertmanager's `TestGroups`: which groups six alerts form, and which receivers each reaches.
#[test]
fn alertmanager_groups() {
    let c = config(
        r#"
        [route]
        group_by = ["alertname"]
        group_wait = "10ms"
        group_interval = "10ms"
        receiver = "prod"

        [[route.routes]]
        matchers = ['env="testing"']
        receiver = "testing"
        group_by = ["alertname", "service"]

        [[route.routes]]
        matchers = ['env="prod"']
        receiver = "prod"
        group_by = ["alertname", "service", "cluster"]
        continue = true

        [[route.routes]]
        matchers = ['kafka="yes"']
        receiver = "kafka"
        group_by = ["alertname", "service", "cluster"]
        "#,
    );
    let alerts = [
        labels(&[("alertname", "OtherAlert"), ("cluster", "cc"), ("service", "dd")]),
        labels(&[("env", "testing"), ("alertname", "TestingAlert"), ("service", "api"), ("instance", "inst1")]),
        labels(&[("env", "prod"), ("alertname", "HighErrorRate"), ("cluster", "aa"), ("service", "api"), ("instance", "inst1")]),
        labels(&[("env", "prod"), ("alertname", "HighErrorRate"), ("cluster", "aa"), ("service", "api"), ("instance", "inst2")]),
        labels(&[("env", "prod"), ("alertname", "HighErrorRate"), ("cluster", "bb"), ("service", "api"), ("instance", "inst1")]),
        labels(&[
            ("env", "prod"),
            ("alertname", "HighLatency"),
            ("cluster", "bb"),
            ("service", "db"),
            ("kafka", "yes"),
            ("instance", "inst3"),
        ]),
    ];
    let mut groups: BTreeMap<String, (String, Vec<usize>)> = BTreeMap::new();
    let mut receivers: Vec<Vec<String>> = vec![Vec::new(); alerts.len()];
    for (i, a) in alerts.iter().enumerate() {
        for r in c.route.matches(a) {
            groups.entry(group_key(r, a)).or_insert_with(|| (r.receiver().to_string(), Vec::new())).1.push(i);
            receivers[i].push(r.receiver().to_string());
        }
    }
    let want: BTreeMap<String, (String, Vec<usize>)> = [
        (r#"0:{alertname="OtherAlert"}"#, "prod", vec![0]),
        (r#"0.0:{alertname="TestingAlert",service="api"}"#, "testing", vec![1]),
        (r#"0.1:{alertname="HighErrorRate",cluster="aa",service="api"}"#, "prod", vec![2, 3]),
        (r#"0.1:{alertname="HighErrorRate",cluster="bb",service="api"}"#, "prod", vec![4]),
        (r#"0.2:{alertname="HighLatency",cluster="bb",service="db"}"#, "kafka", vec![5]),
        (r#"0.1:{alertname="HighLatency",cluster="bb",service="db"}"#, "prod", vec![5]),
    ]
    .into_iter()
    .map(|(k, r, v)| (k.to_string(), (r.to_string(), v)))
    .collect();
    assert_eq!(groups, want);
    let mut last = receivers[5].clone();
    last.sort();
    assert_eq!(last, ["kafka", "prod"]);
    assert!(receivers[..5].iter().all(|r| r.len() == 1));
}

/// A typical alertmanager.yml: an archive route that continues, team routes with regex
/// matchers and a pager child, owner routes with `continue`, and the documentation's
/// "critical inhibits warning" rule.
const TYPICAL: &str = r#"
[route]
receiver = "ops-mail"
group_by = ["alertname", "cluster"]
group_wait = "30s"
group_interval = "5m"
repeat_interval = "3h"

# Every named alert is archived; routing goes on to the team routes.
[[route.routes]]
matchers = ['alertname=~".+"']
receiver = "archive"
group_by = ["..."]
continue = true

[[route.routes]]
matchers = ['team=~"db|infra"']
receiver = "infra-mail"
group_by = ["alertname", "cluster", "database"]

[[route.routes.routes]]
matchers = ['severity="critical"', 'env!="dev"']
receiver = "infra-pager"
group_wait = "10s"
repeat_interval = "1h"

[[route.routes.routes]]
matchers = ['owner="team-X"']
receiver = "team-X-mail"
continue = true

[[route.routes.routes]]
matchers = ['owner=~"team-(X|Y)"']
receiver = "team-XY-mail"

[[route.routes]]
matchers = ['team="frontend"']
receiver = "frontend-pager"
group_by = ["product", "environment"]

[[inhibit_rules]]
source_matchers = ['severity="critical"']
target_matchers = ['severity="warning"']
equal = ["alertname", "cluster"]

[[silences]]
id = "db-maintenance"
matchers = ['team="db"', 'cluster=~"c1|c2"']
starts_at = 1000
ends_at = 5000
created_by = "alice"
comment = "planned failover"

[[silences]]
id = "noisy"
matchers = ['alertname="Flapping"']
starts_at = 3000
ends_at = 9000
"#;

#[test]
fn typical_config_routes() {
    let c = config(TYPICAL);
    let recv = |pairs: &[(&str, &str)]| c.route.matches(&labels(pairs)).iter().map(|r| r.receiver()).collect::<Vec<_>>();
    let disk = [("alertname", "DiskFull"), ("team", "db"), ("severity", "critical"), ("env", "prod"), ("cluster", "c1")];
    assert_eq!(recv(&disk), ["archive", "infra-pager"]);
    let disk_dev = [("alertname", "DiskFull"), ("team", "db"), ("severity", "critical"), ("env", "dev"), ("cluster", "c1")];
    assert_eq!(recv(&disk_dev), ["archive", "infra-mail"], "env!=dev fails, no other child: the team node itself");
    assert_eq!(recv(&[("alertname", "X"), ("team", "infra"), ("owner", "team-X")]), ["archive", "team-X-mail", "team-XY-mail"]);
    assert_eq!(recv(&[("alertname", "X"), ("team", "infra"), ("owner", "team-Y")]), ["archive", "team-XY-mail"]);
    assert_eq!(recv(&[("alertname", "X"), ("team", "dbx")]), ["archive"], "regexes are anchored; the archive match keeps the root out");
    assert_eq!(recv(&[("alertname", "Slow"), ("team", "frontend"), ("product", "shop")]), ["archive", "frontend-pager"]);
    assert_eq!(recv(&[("team", "frontend")]), ["frontend-pager"], "no alertname: `=~\".+\"` fails on the empty string");
    assert_eq!(recv(&[]), ["ops-mail"]);

    let routes = c.route.matches(&labels(&disk));
    let pager = routes[1];
    assert_eq!(pager.timings(), Timings { group_wait: secs(10), group_interval: secs(300), repeat_interval: secs(3600) });
    assert_eq!(pager.group_by(), &by(&["alertname", "cluster", "database"]));
    assert_eq!(group_key(pager, &labels(&disk)), r#"0.1.0:{alertname="DiskFull",cluster="c1"}"#);
    assert_eq!(group_key(routes[0], &labels(&disk)), r#"0.0:{alertname="DiskFull",cluster="c1",env="prod",severity="critical",team="db"}"#);
    let front = &c.route.matches(&labels(&[("team", "frontend"), ("environment", "prod"), ("product", "shop")]))[0];
    assert_eq!(
        group_key(front, &labels(&[("product", "shop"), ("environment", "prod"), ("team", "frontend")])),
        r#"0.2:{environment="prod",product="shop"}"#
    );
}

#[test]
fn critical_inhibits_warning_with_equal_alertname_and_cluster() {
    let c = config(TYPICAL);
    let mut ih = Inhibitor::from_config(&c.inhibit_rules).unwrap();
    let crit = labels(&[("alertname", "DiskFull"), ("cluster", "c1"), ("severity", "critical")]);
    let warn = labels(&[("alertname", "DiskFull"), ("cluster", "c1"), ("severity", "warning"), ("instance", "db-2")]);
    let other_cluster = labels(&[("alertname", "DiskFull"), ("cluster", "c2"), ("severity", "warning")]);
    let other_name = labels(&[("alertname", "DiskSlow"), ("cluster", "c1"), ("severity", "warning")]);
    let info = labels(&[("alertname", "DiskFull"), ("cluster", "c1"), ("severity", "info")]);
    let inhibited = |ih: &Inhibitor, l: &LabelSet| ih.is_inhibited(l.fingerprint(), l);

    assert!(!inhibited(&ih, &warn), "nothing fires yet");
    ih.set_firing(crit.fingerprint(), &crit, true);
    assert!(inhibited(&ih, &warn));
    assert_eq!(ih.inhibited_by(warn.fingerprint(), &warn), Some(crit.fingerprint()));
    assert!(!inhibited(&ih, &other_cluster), "cluster differs");
    assert!(!inhibited(&ih, &other_name), "alertname differs");
    assert!(!inhibited(&ih, &info), "not a target");
    assert!(!inhibited(&ih, &crit), "the source itself is not a target");

    // Absent labels: absent equals absent (and an empty value), but not a value.
    let crit_no_cluster = labels(&[("alertname", "NoCluster"), ("severity", "critical")]);
    ih.set_firing(crit_no_cluster.fingerprint(), &crit_no_cluster, true);
    assert!(inhibited(&ih, &labels(&[("alertname", "NoCluster"), ("severity", "warning")])));
    assert!(inhibited(&ih, &labels(&[("alertname", "NoCluster"), ("severity", "warning"), ("cluster", "")])));
    assert!(!inhibited(&ih, &labels(&[("alertname", "NoCluster"), ("severity", "warning"), ("cluster", "c1")])));

    // The critical alert resolves: the warning is no longer inhibited.
    ih.set_firing(crit.fingerprint(), &crit, false);
    assert!(!inhibited(&ih, &warn));
    // A firing warning does not inhibit anything under this rule.
    ih.set_firing(warn.fingerprint(), &warn, true);
    assert!(!inhibited(&ih, &warn));
}

/// "An alert that matches both the target and the source side of a rule cannot be inhibited
/// by alerts for which the same is true (including itself)" (Alertmanager's documentation).
#[test]
fn two_sided_matches_do_not_inhibit_each_other() {
    let c = config(
        r#"
        [route]
        receiver = "r"
        [[inhibit_rules]]
        source_matchers = ['severity=~"critical|warning"']
        target_matchers = ['severity=~"warning|info"']
        equal = ["alertname"]
        "#,
    );
    let mut ih = Inhibitor::from_config(&c.inhibit_rules).unwrap();
    let w1 = labels(&[("alertname", "A"), ("severity", "warning"), ("instance", "1")]);
    let w2 = labels(&[("alertname", "A"), ("severity", "warning"), ("instance", "2")]);
    let info = labels(&[("alertname", "A"), ("severity", "info")]);
    let crit = labels(&[("alertname", "A"), ("severity", "critical")]);
    let inhibited = |ih: &Inhibitor, l: &LabelSet| ih.is_inhibited(l.fingerprint(), l);
    ih.set_firing(w1.fingerprint(), &w1, true);
    assert!(!inhibited(&ih, &w1), "a warning does not inhibit itself");
    assert!(inhibited(&ih, &info), "but it inhibits an info alert (target side only)");
    ih.set_firing(w2.fingerprint(), &w2, true);
    assert!(!inhibited(&ih, &w1) && !inhibited(&ih, &w2), "two-sided alerts do not inhibit each other");
    ih.set_firing(crit.fingerprint(), &crit, true);
    assert!(inhibited(&ih, &w1) && inhibited(&ih, &w2), "a source-only critical inhibits both");
    assert!(!inhibited(&ih, &crit));
}

#[test]
fn silences_over_time() {
    let c = config(TYPICAL);
    let mut s = Silences::new();
    for sil in c.silences {
        s.add(sil).unwrap();
    }
    let db_c1 = labels(&[("alertname", "DiskFull"), ("team", "db"), ("cluster", "c1")]);
    let db_c3 = labels(&[("alertname", "DiskFull"), ("team", "db"), ("cluster", "c3")]);
    let flapping_db = labels(&[("alertname", "Flapping"), ("team", "db"), ("cluster", "c2")]);
    let expect = [
        (999, vec![], vec![], vec![]),
        (1000, vec!["db-maintenance"], vec![], vec!["db-maintenance"]),
        (2999, vec!["db-maintenance"], vec![], vec!["db-maintenance"]),
        (3000, vec!["db-maintenance"], vec![], vec!["db-maintenance", "noisy"]),
        (4999, vec!["db-maintenance"], vec![], vec!["db-maintenance", "noisy"]),
        (5000, vec![], vec![], vec!["noisy"]),
        (8999, vec![], vec![], vec!["noisy"]),
        (9000, vec![], vec![], vec![]),
    ];
    for (t, a, b, f) in expect {
        assert_eq!((s.silenced_by(&db_c1, t), s.silenced_by(&db_c3, t), s.silenced_by(&flapping_db, t)), (a, b, f), "at {t}");
    }
    s.expire("noisy", 4000).unwrap();
    assert_eq!(s.silenced_by(&flapping_db, 3999), ["db-maintenance", "noisy"]);
    assert_eq!(s.silenced_by(&flapping_db, 4000), ["db-maintenance"]);
    assert_eq!(s.silenced_by(&flapping_db, 6000), Vec::<&str>::new());
    assert_eq!(s.get("db-maintenance").map(|x| (x.created_by.as_str(), x.comment.as_str())), Some(("alice", "planned failover")));
    // Refused as Alertmanager refuses them.
    let bad: Result<Config, _> =
        toml::from_str(&TYPICAL.replace(r#"matchers = ['alertname="Flapping"']"#, r#"matchers = ['alertname=~".*"']"#));
    let mut s2 = Silences::new();
    let refused = bad.unwrap().silences.into_iter().map(|x| s2.add(x)).find(Result::is_err);
    assert!(matches!(refused, Some(Err(alertflow_notify::SilenceError::OnlyEmptyMatchers(id))) if id == "noisy"));
}

#[test]
fn config_errors_carry_paths() {
    let text = ROUTE_MATCHERS_TREE.replace("'{level!=\"critical\"}'", "'{level!=\"critical\"'").replace("receiver = \"notify-def\"", "");
    let err = toml::from_str::<Config>(&text).err().unwrap().to_string();
    assert!(err.contains("route.receiver: the root route must have a receiver"), "{err}");
    assert!(err.contains("route.routes[0].matchers[1]: matcher list `{level!=\"critical\"` has unbalanced braces"), "{err}");
}
