//! The routing tree, as Alertmanager's `route:` block: which receiver an alert goes to, how its
//! notifications are grouped, and with which timings.
//!
//! Children inherit `receiver`, `group_by` and the three timings from their parent when they
//! leave them unset. An alert enters at the root and descends depth-first: at each node the
//! first matching child takes it, unless that child has `continue = true`, in which case the
//! later siblings are tried too; a node no child of which matches is itself the result
//! (Alertmanager's `dispatch/route.go`, `Route.Match`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use alertflow_model::time::DurationMs;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ConfigErrors, ConfigProblem};
use crate::labels::Labels;
use crate::matcher::{Matchers, parse_matchers};

/// One node of the routing tree as configured (TOML), before validation. Unset fields are
/// inherited from the parent node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The receiver alerts of this node are sent to; required at the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<String>,
    /// Matchers an alert must all satisfy to enter this node, each `name="value"` or a
    /// `{…}` list; the root has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matchers: Vec<String>,
    /// Labels whose values make up the group of an alert; `["..."]` groups by all labels,
    /// `[]` puts all alerts of the node in one group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<Vec<String>>,
    /// How long a new group waits for more alerts before its first notification (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_wait: Option<DurationMs>,
    /// How long a group waits after a notification before notifying of changes (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_interval: Option<DurationMs>,
    /// How long a group waits before repeating an unchanged notification (default 4h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_interval: Option<DurationMs>,
    /// Whether an alert this node takes also tries the node's later siblings.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    /// The child nodes, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
}

/// How a route groups alerts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupBy {
    /// By the values of these labels (sorted, unique). Empty: one group for the route.
    Labels(Vec<String>),
    /// By all labels (`group_by = ["..."]`): every distinct label set is its own group.
    All,
}

/// A route's notification timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// Wait before a new group's first notification.
    pub group_wait: DurationMs,
    /// Wait between a group's notifications (the tick of its checks).
    pub group_interval: DurationMs,
    /// Wait before an unchanged notification is sent again.
    pub repeat_interval: DurationMs,
}

impl Default for Timings {
    /// Alertmanager's defaults: 30s, 5m, 4h.
    fn default() -> Self {
        Timings {
            group_wait: DurationMs::from_secs(30),
            group_interval: DurationMs::from_secs(300),
            repeat_interval: DurationMs::from_secs(4 * 3600),
        }
    }
}

/// A validated node with every inherited setting resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedRoute {
    id: String,
    receiver: String,
    matchers: Matchers,
    group_by: GroupBy,
    timings: Timings,
    continue_matching: bool,
    routes: Vec<ResolvedRoute>,
}

impl ResolvedRoute {
    /// The node's stable id: its path of child positions from the root, `"0"` for the root,
    /// `"0.1.0"` for the first child of the root's second child. Part of every group key.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The receiver (inherited when unset).
    pub fn receiver(&self) -> &str {
        &self.receiver
    }
    /// The node's own matchers.
    pub fn matchers(&self) -> &Matchers {
        &self.matchers
    }
    /// The grouping (inherited when unset).
    pub fn group_by(&self) -> &GroupBy {
        &self.group_by
    }
    /// The timings (each inherited when unset).
    pub fn timings(&self) -> Timings {
        self.timings
    }
    /// Whether matching continues to later siblings after this node matched.
    pub fn continue_matching(&self) -> bool {
        self.continue_matching
    }
    /// The child nodes.
    pub fn routes(&self) -> &[ResolvedRoute] {
        &self.routes
    }

    /// Collects the nodes `labels` end at below (or at) this one; whether this node matched.
    fn collect<'a, L: Labels + ?Sized>(&'a self, labels: &L, out: &mut Vec<&'a ResolvedRoute>) -> bool {
        if !self.matchers.matches(labels) {
            return false;
        }
        let before = out.len();
        for child in &self.routes {
            if child.collect(labels, out) && !child.continue_matching {
                break;
            }
        }
        if out.len() == before {
            out.push(self);
        }
        true
    }

    fn walk<'a>(&'a self, out: &mut Vec<&'a ResolvedRoute>) {
        out.push(self);
        for c in &self.routes {
            c.walk(out);
        }
    }
}

/// A validated routing tree.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    root: ResolvedRoute,
}

impl Route {
    /// Validates a configured tree, reporting every error with its path (`route.routes[1].
    /// matchers[0]: …`). The root must have a receiver and no matchers.
    pub fn new(config: &RouteConfig) -> Result<Route, ConfigErrors> {
        let mut errors = Vec::new();
        if config.receiver.as_deref().is_none_or(str::is_empty) {
            errors.push(ConfigError::new("route.receiver", ConfigProblem::RootWithoutReceiver));
        }
        if !config.matchers.is_empty() {
            errors.push(ConfigError::new("route.matchers", ConfigProblem::RootWithMatchers));
        }
        let inherited = ResolvedRoute {
            id: String::new(),
            receiver: String::new(),
            matchers: Matchers::default(),
            group_by: GroupBy::Labels(Vec::new()),
            timings: Timings::default(),
            continue_matching: false,
            routes: Vec::new(),
        };
        let root = resolve(config, &inherited, "0".into(), "route", &mut errors);
        ConfigErrors::check(errors, Route { root })
    }

    /// The root node.
    pub fn root(&self) -> &ResolvedRoute {
        &self.root
    }

    /// The nodes an alert with these labels is dispatched to, in tree order (never empty: the
    /// root takes what no child does).
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> Vec<&ResolvedRoute> {
        let mut out = Vec::new();
        self.root.collect(labels, &mut out);
        out
    }

    /// Every node, depth-first in configuration order.
    pub fn walk(&self) -> Vec<&ResolvedRoute> {
        let mut out = Vec::new();
        self.root.walk(&mut out);
        out
    }

    /// The node with this id.
    pub fn get(&self, id: &str) -> Option<&ResolvedRoute> {
        let mut parts = id.split('.');
        if parts.next() != Some("0") {
            return None;
        }
        let mut node = &self.root;
        for p in parts {
            node = node.routes.get(p.parse::<usize>().ok()?)?;
        }
        Some(node)
    }
}

impl TryFrom<RouteConfig> for Route {
    type Error = ConfigErrors;
    fn try_from(c: RouteConfig) -> Result<Route, ConfigErrors> {
        Route::new(&c)
    }
}

/// A `Route` deserializes from its configuration and is validated on the way.
impl<'de> Deserialize<'de> for Route {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Route::new(&RouteConfig::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

fn resolve(c: &RouteConfig, parent: &ResolvedRoute, id: String, path: &str, errors: &mut Vec<ConfigError>) -> ResolvedRoute {
    let mut matchers = Vec::new();
    for (i, text) in c.matchers.iter().enumerate() {
        match parse_matchers(text) {
            Ok(ms) => matchers.extend(ms),
            Err(e) => errors.push(ConfigError::new(format!("{path}.matchers[{i}]"), e)),
        }
    }
    let group_by = match &c.group_by {
        None => parent.group_by.clone(),
        Some(labels) => group_by(labels, path, errors),
    };
    let mut timing = |field: &str, own: Option<DurationMs>, inherited: DurationMs, may_be_zero: bool| match own {
        Some(DurationMs(0)) if !may_be_zero => {
            errors.push(ConfigError::new(format!("{path}.{field}"), ConfigProblem::ZeroInterval));
            inherited
        }
        Some(d) => d,
        None => inherited,
    };
    let timings = Timings {
        group_wait: timing("group_wait", c.group_wait, parent.timings.group_wait, true),
        group_interval: timing("group_interval", c.group_interval, parent.timings.group_interval, false),
        repeat_interval: timing("repeat_interval", c.repeat_interval, parent.timings.repeat_interval, false),
    };
    let mut node = ResolvedRoute {
        receiver: c.receiver.clone().filter(|r| !r.is_empty()).unwrap_or_else(|| parent.receiver.clone()),
        matchers: Matchers(matchers),
        group_by,
        timings,
        continue_matching: c.continue_matching,
        routes: Vec::new(),
        id,
    };
    node.routes = c
        .routes
        .iter()
        .enumerate()
        .map(|(i, child)| resolve(child, &node, format!("{}.{i}", node.id), &format!("{path}.routes[{i}]"), errors))
        .collect();
    node
}

fn group_by(labels: &[String], path: &str, errors: &mut Vec<ConfigError>) -> GroupBy {
    if labels.iter().any(|l| l == "...") {
        if labels.len() > 1 {
            errors.push(ConfigError::new(format!("{path}.group_by"), ConfigProblem::GroupByAllWithOthers));
        }
        return GroupBy::All;
    }
    let mut seen = Vec::with_capacity(labels.len());
    for (i, l) in labels.iter().enumerate() {
        let at = || format!("{path}.group_by[{i}]");
        if l.is_empty() {
            errors.push(ConfigError::new(at(), ConfigProblem::EmptyLabelName));
        } else if seen.contains(l) {
            errors.push(ConfigError::new(at(), ConfigProblem::DuplicateLabel(l.clone())));
        } else {
            seen.push(l.clone());
        }
    }
    seen.sort();
    GroupBy::Labels(seen)
}

/// The key of the aggregation group an alert with `labels` joins at `route`: the route id and
/// the grouping labels' values sorted by label name, e.g. `0.1:{alertname="Down",cluster="eu"}`.
///
/// As in Alertmanager, a grouping label the alert lacks is left out of the key, and an empty
/// value counts as lacking (Prometheus' data model has no empty-valued labels).
pub fn group_key<L: Labels + ?Sized>(route: &ResolvedRoute, labels: &L) -> String {
    let mut pairs: BTreeMap<&str, &str> = BTreeMap::new();
    match &route.group_by {
        GroupBy::Labels(names) => {
            for n in names {
                if let Some(v) = labels.get(n).filter(|v| !v.is_empty()) {
                    pairs.insert(n, v);
                }
            }
        }
        GroupBy::All => {
            let mut all: Vec<(String, String)> = Vec::new();
            labels.for_each_label(&mut |k, v| {
                if !v.is_empty() {
                    all.push((k.to_string(), v.to_string()));
                }
            });
            return key_text(&route.id, all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect());
        }
    }
    key_text(&route.id, pairs)
}

fn key_text(id: &str, pairs: BTreeMap<&str, &str>) -> String {
    let mut s = String::with_capacity(id.len() + 2 + pairs.len() * 16);
    s.push_str(id);
    s.push_str(":{");
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // Debug quoting escapes `"` and `\`, so the key is unambiguous whatever the values hold.
        let _ = write!(s, "{k}={v:?}");
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(toml_text: &str) -> Route {
        toml::from_str::<RouteConfig>(toml_text).map_err(|e| e.to_string()).and_then(|c| Route::new(&c).map_err(|e| e.to_string())).unwrap()
    }

    fn errors(toml_text: &str) -> Vec<String> {
        Route::new(&toml::from_str::<RouteConfig>(toml_text).unwrap()).unwrap_err().0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn children_inherit_unset_settings() {
        let r = route(
            r#"
            receiver = "root"
            group_by = ["alertname"]
            group_wait = "10s"
            repeat_interval = "1h"
            [[routes]]
            matchers = ['team="db"']
            group_interval = "1m"
            [[routes.routes]]
            matchers = ['severity="page"']
            receiver = "db-pager"
            group_by = []
            "#,
        );
        let root = r.root();
        assert_eq!((root.id(), root.receiver()), ("0", "root"));
        assert_eq!(root.timings().group_interval, DurationMs::from_secs(300), "default");
        let db = &root.routes()[0];
        assert_eq!((db.id(), db.receiver()), ("0.0", "root"));
        assert_eq!(db.group_by(), &GroupBy::Labels(vec!["alertname".into()]));
        let want = Timings {
            group_wait: DurationMs::from_secs(10),
            group_interval: DurationMs::from_secs(60),
            repeat_interval: DurationMs::from_secs(3600),
        };
        assert_eq!(db.timings(), want);
        let pager = &db.routes()[0];
        assert_eq!((pager.id(), pager.receiver()), ("0.0.0", "db-pager"));
        assert_eq!(pager.group_by(), &GroupBy::Labels(vec![]), "an explicit empty group_by overrides the parent's");
        assert_eq!(pager.timings(), want);
        assert_eq!(r.get("0.0.0").map(|n| n.receiver()), Some("db-pager"));
        assert_eq!(r.get("0.1"), None);
        assert_eq!(r.walk().iter().map(|n| n.id()).collect::<Vec<_>>(), ["0", "0.0", "0.0.0"]);
    }

    /// Alertmanager's `TestInheritParentGroupByAll`.
    #[test]
    fn group_by_all_is_inherited_until_overridden() {
        let r = route(
            r#"
            receiver = "r"
            [[routes]]
            matchers = ['env="parent"']
            group_by = ["..."]
            [[routes.routes]]
            matchers = ['env="child1"']
            [[routes.routes]]
            matchers = ['env="child2"']
            group_by = ["foo"]
            "#,
        );
        let parent = &r.root().routes()[0];
        assert_eq!(parent.group_by(), &GroupBy::All);
        assert_eq!(parent.routes()[0].group_by(), &GroupBy::All);
        assert_eq!(parent.routes()[1].group_by(), &GroupBy::Labels(vec!["foo".into()]));
    }

    #[test]
    fn continue_tries_later_siblings() {
        let r = route(
            r#"
            receiver = "default"
            [[routes]]
            matchers = ['team="a"']
            receiver = "a"
            continue = true
            [[routes]]
            matchers = ['severity="page"']
            receiver = "pager"
            [[routes]]
            matchers = ['team="a"']
            receiver = "a-shadowed"
            "#,
        );
        let recv = |l: &[(&str, &str)]| r.matches(l).iter().map(|n| n.receiver().to_string()).collect::<Vec<_>>();
        assert_eq!(recv(&[("team", "a")]), ["a", "a-shadowed"], "continue: the later sibling is tried too");
        assert_eq!(recv(&[("team", "a"), ("severity", "page")]), ["a", "pager"], "pager does not continue");
        assert_eq!(recv(&[("severity", "page")]), ["pager"]);
        assert_eq!(recv(&[("team", "b")]), ["default"], "no child matched: the root");
    }

    #[test]
    fn validation_reports_every_error_with_its_path() {
        let errs = errors(
            r#"
            matchers = ['a="b"']
            [[routes]]
            receiver = "x"
            [[routes]]
            matchers = ['ok="1"', 'bad=~"("']
            group_by = ["...", "alertname"]
            [[routes.routes]]
            group_by = ["a", "b", "a", ""]
            group_interval = "0"
            repeat_interval = "0s"
            "#,
        );
        assert_eq!(errs.len(), 8, "{errs:#?}");
        assert!(errs[0].starts_with("route.receiver: "), "{}", errs[0]);
        assert!(errs[1].starts_with("route.matchers: "), "{}", errs[1]);
        assert!(errs[2].starts_with(r#"route.routes[1].matchers[1]: matcher `bad=~"("` has an invalid regex"#), "{}", errs[2]);
        assert!(errs[3].starts_with("route.routes[1].group_by: "), "{}", errs[3]);
        assert_eq!(errs[4], "route.routes[1].routes[0].group_by[2]: label `a` is listed twice");
        assert_eq!(errs[5], "route.routes[1].routes[0].group_by[3]: a label name must not be empty");
        assert_eq!(errs[6], "route.routes[1].routes[0].group_interval: must not be zero");
        assert_eq!(errs[7], "route.routes[1].routes[0].repeat_interval: must not be zero");
        let bad = toml::from_str::<RouteConfig>("receiver = 'x'\ngroup_wiat = '1s'").unwrap_err().to_string();
        assert!(bad.contains("group_wiat"), "unknown fields are refused: {bad}");
        let via_serde = toml::from_str::<Route>("receiver = 'x'\n[[routes]]\nmatchers = ['a=']").unwrap_err().to_string();
        assert!(via_serde.contains("route.routes[0].matchers[0]: matcher `a=` has no value"), "{via_serde}");
    }

    /// Alertmanager's `TestGroupLabels` / `TestGroupByAllLabels`, as keys.
    #[test]
    fn group_keys() {
        let r = route(
            r#"
            receiver = "r"
            group_by = ["b", "a", "missing"]
            [[routes]]
            matchers = ['all="yes"']
            group_by = ["..."]
            "#,
        );
        let labels = [("a", "v1"), ("b", "v2"), ("c", "v3")];
        assert_eq!(group_key(r.root(), &labels), r#"0:{a="v1",b="v2"}"#);
        let all = [("c", "v3"), ("all", "yes"), ("a", "v1"), ("e", "")];
        assert_eq!(group_key(&r.root().routes()[0], &all), r#"0.0:{a="v1",all="yes",c="v3"}"#);
        let odd = [("a", "x\",b=\"y"), ("b", "")];
        assert_eq!(group_key(r.root(), &odd), r#"0:{a="x\",b=\"y"}"#, "values are quoted, empty ones left out");
    }
}
