//! The `[notify]` section of a pipeline: the routing tree, inhibition rules and silences, as
//! an `alertmanager.yml` holds them (in TOML), validated into a [`NotifyPlan`].
//!
//! ```toml
//! [notify]
//! external_url = "http://alertflow.example:9094"
//! [notify.route]
//! receiver = "oncall"
//! group_by = ["alertname", "cluster"]
//! [[notify.route.routes]]
//! matchers = ['severity="critical"']
//! receiver = "pager"
//! [[notify.inhibit_rules]]
//! source_matchers = ['severity="critical"']
//! target_matchers = ['severity="warning"']
//! equal = ["alertname"]
//! [[notify.silences]]
//! matchers = ['alertname="Maintenance"']
//! starts_at = "2026-01-01T00:00:00Z"
//! ends_at = "2026-01-01T02:00:00Z"
//! ```

use alertflow_model::time::{Millis, parse_time_text};
use serde::{Deserialize, Serialize};

use crate::inhibit::{InhibitRule, InhibitRuleConfig};
use crate::matcher::Matchers;
use crate::route::{Route, RouteConfig};
use crate::silence::{Silence, Silences};

/// The `[notify]` section as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// The routing tree (required).
    #[serde(default)]
    pub route: Option<RouteConfig>,
    /// Inhibition rules, as Alertmanager's `inhibit_rules`.
    #[serde(default)]
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    /// Silences known from the start (more come through `POST /silences`).
    #[serde(default)]
    pub silences: Vec<SilenceConfig>,
    /// The link back to alertflow in payloads (Alertmanager's `externalURL`).
    #[serde(default)]
    pub external_url: Option<String>,
    /// Escalation levels: a group still firing and not acknowledged `after` its first
    /// notification is sent to the level's receiver too.
    #[serde(default)]
    pub escalation: Vec<EscalationConfig>,
}

/// One escalation level as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationConfig {
    /// How long after a group's first notification (event time).
    pub after: alertflow_model::time::DurationMs,
    /// Who is told then.
    pub receiver: String,
    /// Which groups: matchers on the labels all their firing alerts share (none: every group).
    #[serde(default)]
    pub matchers: Vec<String>,
}

/// A validated escalation level.
#[derive(Clone, Debug)]
pub struct Escalation {
    /// After this long (ms).
    pub after: Millis,
    /// To this receiver.
    pub receiver: String,
    /// For groups whose common labels match.
    pub matchers: Matchers,
}

/// One silence as written: times as RFC 3339 text.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceConfig {
    /// Its id (default `silence-<n>`, its position).
    #[serde(default)]
    pub id: Option<String>,
    /// Matchers, each `name="value"` (or `=~`, `!=`, `!~`) or a `{…}` list.
    pub matchers: Vec<String>,
    /// When it starts muting (event time, RFC 3339).
    pub starts_at: String,
    /// When it stops muting (event time, RFC 3339; exclusive).
    pub ends_at: String,
    /// Who made it.
    #[serde(default)]
    pub created_by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
}

/// What routing needs, validated: shared by every worker's notify operator.
#[derive(Clone, Debug)]
pub struct NotifyPlan {
    /// The routing tree.
    pub route: Route,
    /// The inhibition rules.
    pub rules: Vec<InhibitRule>,
    /// The configured silences.
    pub silences: Silences,
    /// `externalURL` of payloads.
    pub external_url: String,
    /// The storm operator's `group_by`: the labels a storm's own alert carries.
    pub storm_group_by: Vec<String>,
    /// Escalation levels, by `after`.
    pub escalation: Vec<Escalation>,
}

impl NotifyPlan {
    /// Validates the section. `receivers` are the declared receiver names every route must
    /// name one of; `storm_group_by` is the suppress operator's grouping. Problems come back
    /// as `(field path below [notify], message)`, all of them.
    pub fn new(cfg: &NotifyConfig, receivers: &[&str], storm_group_by: &[String]) -> Result<NotifyPlan, Vec<(String, String)>> {
        let mut errs: Vec<(String, String)> = Vec::new();
        let route = match &cfg.route {
            None => {
                errs.push(("route".into(), "missing: add [notify.route] with receiver = \"<a [[receiver]] name>\"".into()));
                None
            }
            Some(r) => match Route::new(r) {
                Ok(route) => Some(route),
                Err(e) => {
                    errs.extend(e.0.into_iter().map(|e| (e.path, e.problem.to_string())));
                    None
                }
            },
        };
        if let (Some(route), Some(rc)) = (&route, &cfg.route) {
            for (node, path) in route.walk().into_iter().zip(route_paths(rc)) {
                if !receivers.contains(&node.receiver()) {
                    let known =
                        if receivers.is_empty() { "none is declared: add a [[receiver]]".to_string() } else { receivers.join(", ") };
                    errs.push((format!("{path}.receiver"), format!("no receiver `{}` (receivers: {known})", node.receiver())));
                }
            }
        }
        let mut rules = Vec::new();
        for (i, r) in cfg.inhibit_rules.iter().enumerate() {
            match InhibitRule::new(r, &format!("inhibit_rules[{i}]")) {
                Ok(r) => rules.push(r),
                Err(e) => errs.extend(e.0.into_iter().map(|e| (e.path, e.problem.to_string()))),
            }
        }
        let mut silences = Silences::new();
        for (i, s) in cfg.silences.iter().enumerate() {
            let at = format!("silences[{i}]");
            match silence(s, i) {
                Ok(s) => {
                    if let Err(e) = silences.add(s) {
                        errs.push((at, e.to_string()));
                    }
                }
                Err((field, msg)) => errs.push((format!("{at}.{field}"), msg)),
            }
        }
        let mut escalation = Vec::new();
        for (i, e) in cfg.escalation.iter().enumerate() {
            let at = format!("escalation[{i}]");
            if !receivers.contains(&e.receiver.as_str()) {
                errs.push((format!("{at}.receiver"), format!("no receiver `{}` (receivers: {})", e.receiver, receivers.join(", "))));
            }
            if e.after.millis() == 0 {
                errs.push((format!("{at}.after"), "must be greater than 0".into()));
            }
            let mut matchers = Vec::new();
            for (j, m) in e.matchers.iter().enumerate() {
                match m.parse::<Matchers>() {
                    Ok(p) => matchers.extend(p.0),
                    Err(err) => errs.push((format!("{at}.matchers[{j}]"), err.to_string())),
                }
            }
            escalation.push(Escalation { after: e.after.millis() as Millis, receiver: e.receiver.clone(), matchers: Matchers(matchers) });
        }
        escalation.sort_by_key(|e| e.after);
        if let Some(u) = &cfg.external_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            errs.push(("external_url".into(), format!("`{u}` is not an http:// or https:// URL")));
        }
        match route {
            Some(route) if errs.is_empty() => Ok(NotifyPlan {
                route,
                rules,
                silences,
                external_url: cfg.external_url.clone().unwrap_or_default(),
                storm_group_by: storm_group_by.to_vec(),
                escalation,
            }),
            _ => Err(errs),
        }
    }
}

/// The path of every node of a configured tree, in [`Route::walk`]'s order.
fn route_paths(root: &RouteConfig) -> Vec<String> {
    fn walk(c: &RouteConfig, path: String, out: &mut Vec<String>) {
        for (i, child) in c.routes.iter().enumerate() {
            let p = format!("{path}.routes[{i}]");
            out.push(p.clone());
            walk(child, p, out);
        }
    }
    let mut out = vec!["route".to_string()];
    walk(root, "route".into(), &mut out);
    out
}

/// A configured silence, validated; errors are `(field, message)`.
pub fn silence(s: &SilenceConfig, position: usize) -> Result<Silence, (String, String)> {
    let mut matchers = Vec::new();
    for (j, m) in s.matchers.iter().enumerate() {
        let parsed: Matchers = m.parse().map_err(|e: crate::matcher::MatcherError| (format!("matchers[{j}]"), e.to_string()))?;
        matchers.extend(parsed.iter().cloned());
    }
    let time = |field: &str, text: &str| -> Result<Millis, (String, String)> {
        parse_time_text(text).ok_or_else(|| (field.to_string(), format!("`{text}` is not an RFC 3339 time (2026-01-01T00:00:00Z)")))
    };
    let silence = Silence {
        id: s.id.clone().unwrap_or_else(|| format!("silence-{position}")),
        matchers: Matchers(matchers),
        starts_at: time("starts_at", &s.starts_at)?,
        ends_at: time("ends_at", &s.ends_at)?,
        created_by: s.created_by.clone(),
        comment: s.comment.clone(),
    };
    silence.validate().map_err(|e| ("matchers".to_string(), e.to_string()))?;
    Ok(silence)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Result<NotifyPlan, Vec<(String, String)>> {
        let cfg: NotifyConfig = toml::from_str(text).unwrap();
        NotifyPlan::new(&cfg, &["oncall", "pager"], &["alertname".to_string()])
    }

    #[test]
    fn a_full_section_validates() {
        let p = plan(
            r#"
            external_url = "http://af:9094"
            [route]
            receiver = "oncall"
            group_by = ["alertname"]
            [[route.routes]]
            matchers = ['severity="critical"']
            receiver = "pager"
            [[inhibit_rules]]
            source_matchers = ['severity="critical"']
            target_matchers = ['severity="warning"']
            equal = ["alertname"]
            [[silences]]
            matchers = ['alertname="Maintenance"']
            starts_at = "2026-01-01T00:00:00Z"
            ends_at = "2026-01-01T02:00:00Z"
            "#,
        )
        .unwrap();
        assert_eq!(p.route.walk().len(), 2);
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.silences.get("silence-0").unwrap().ends_at - p.silences.get("silence-0").unwrap().starts_at, 7_200_000);
    }

    #[test]
    fn every_problem_is_named_with_its_path() {
        let e = plan(
            r#"
            external_url = "af:9094"
            [route]
            receiver = "oncall"
            [[route.routes]]
            matchers = ['severity="critical"']
            receiver = "nobody"
            [[inhibit_rules]]
            source_matchers = ['severity=~"(']
            [[silences]]
            matchers = ['a="b"']
            starts_at = "yesterday"
            ends_at = "2026-01-01T02:00:00Z"
            [[silences]]
            matchers = ['a=~".*"']
            starts_at = "2026-01-01T00:00:00Z"
            ends_at = "2026-01-01T02:00:00Z"
            "#,
        )
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        assert!(fields.contains(&"route.routes[0].receiver"), "{e:?}");
        assert!(fields.iter().any(|f| f.starts_with("inhibit_rules[0]")), "{e:?}");
        assert!(fields.contains(&"silences[0].starts_at"), "{e:?}");
        assert!(fields.contains(&"silences[1].matchers"), "{e:?}");
        assert!(fields.contains(&"external_url"), "{e:?}");
        let nobody = e.iter().find(|(f, _)| f == "route.routes[0].receiver").unwrap();
        assert!(nobody.1.contains("no receiver `nobody`") && nobody.1.contains("oncall, pager"), "{nobody:?}");
    }

    #[test]
    fn a_bad_matcher_deep_in_the_tree_is_named() {
        let e = plan(
            r#"
            [route]
            receiver = "oncall"
            [[route.routes]]
            receiver = "pager"
            [[route.routes.routes]]
            matchers = ['team=~"("']
            "#,
        )
        .unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].0, "route.routes[0].routes[0].matchers[0]");
    }

    #[test]
    fn a_missing_route_is_named() {
        let e = plan("").unwrap_err();
        assert_eq!(e[0].0, "route");
    }
}
