//! Titles and bodies of notifications, from Jinja-style templates (minijinja) over a
//! message's [`template_context`](crate::payload::Message::template_context): `status`,
//! `receiver`, `group_labels`, `common_labels`, `common_annotations`, `alerts`, `firing`,
//! `resolved` (each alert with `labels`, `annotations`, `starts_at`, …), `external_url`, `id`.
//!
//! Templates are compiled when the pipeline is loaded, so a syntax error is reported with the
//! receiver and field before anything runs. A missing label renders as nothing, as in
//! Alertmanager's Go templates, rather than failing a notification at 3 a.m.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

/// Alertmanager's default title (`__subject`): `[FIRING:2] HostDown (node web)`.
pub const DEFAULT_TITLE: &str = "[{{ status | upper }}{% if status == \"firing\" %}:{{ firing | length }}{% endif %}]
{%- for k, v in group_labels | items %} {{ v }}{% endfor %}
{%- set ns = namespace(rest=[]) %}{% for k, v in common_labels | items %}{% if k not in group_labels %}{% set ns.rest = ns.rest + [v] %}{% endif %}{% endfor %}
{%- if ns.rest %} ({{ ns.rest | join(\" \") }}){% endif %}";

/// The default body: one line per alert, with its summary or description when it has one.
pub const DEFAULT_TEXT: &str = "{% for a in alerts %}{% if not loop.first %}\n{% endif %}\
- [{{ a.status }}] {{ a.labels.alertname }}{% for k, v in a.labels | items %}{% if k != \"alertname\" %} {{ k }}={{ v }}{% endif %}{% endfor %}\
{% if a.annotations.summary %}: {{ a.annotations.summary }}{% elif a.annotations.description %}: {{ a.annotations.description }}{% endif %}\
{% endfor %}";

/// A receiver's compiled templates, by field name.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Compiles `fields` (name, source). Errors name the field.
    pub fn new<'a>(fields: impl IntoIterator<Item = (&'a str, String)>) -> Result<Templates, Vec<(String, String)>> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        let mut errors = Vec::new();
        for (name, source) in fields {
            if let Err(e) = env.add_template_owned(name.to_string(), source) {
                errors.push((name.to_string(), template_error(&e)));
            }
        }
        if errors.is_empty() { Ok(Templates { env }) } else { Err(errors) }
    }

    /// Renders field `name` over `context`; the error says what failed (a bad filter argument,
    /// say) so that the notification's record can name it.
    pub fn render(&self, name: &str, context: &Value) -> Result<String, String> {
        let t = self.env.get_template(name).map_err(|e| format!("template `{name}`: {}", template_error(&e)))?;
        t.render(context).map_err(|e| format!("template `{name}`: {}", template_error(&e)))
    }
}

fn template_error(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!("{} (line {line})", e.detail().unwrap_or(&e.kind().to_string())),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx() -> Value {
        json!({
            "status": "firing",
            "group_labels": {"alertname": "HostDown"},
            "common_labels": {"alertname": "HostDown", "job": "node", "severity": "critical"},
            "firing": [{}, {}],
            "alerts": [
                {"status": "firing", "labels": {"alertname": "HostDown", "instance": "a"}, "annotations": {"summary": "a is down"}},
                {"status": "resolved", "labels": {"alertname": "HostDown", "instance": "b"}, "annotations": {}},
            ],
        })
    }

    #[test]
    fn the_defaults_render_like_alertmanagers() {
        let t = Templates::new([("title", DEFAULT_TITLE.to_string()), ("text", DEFAULT_TEXT.to_string())]).unwrap();
        assert_eq!(t.render("title", &ctx()).unwrap(), "[FIRING:2] HostDown (node critical)");
        assert_eq!(t.render("text", &ctx()).unwrap(), "- [firing] HostDown instance=a: a is down\n- [resolved] HostDown instance=b");
    }

    #[test]
    fn a_syntax_error_names_the_field_and_line_and_a_missing_label_renders_empty() {
        let e = Templates::new([("title", "ok".to_string()), ("text", "line\n{% if %}".to_string())]).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, "text");
        assert!(e[0].1.contains("line 2"), "{e:?}");
        let t = Templates::new([("t", "[{{ common_labels.team.name }}]".to_string())]).unwrap();
        assert_eq!(t.render("t", &ctx()).unwrap(), "[]");
    }
}
