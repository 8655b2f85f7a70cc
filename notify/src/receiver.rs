//! Receivers: where notifications go and in which format, as configured (`[[receiver]]`), and
//! the HTTP request each notification becomes.
//!
//! - `webhook`: the Alertmanager webhook payload, version 4 (existing consumers work
//!   unchanged), with the notification id in `Idempotency-Key`;
//! - `slack`: a Slack incoming-webhook message (title and text from templates);
//! - `pagerduty`: a PagerDuty Events API v2 event (summary from a template).
//!
//! Every request carries the notification's id in the `Idempotency-Key` and
//! `X-Alertflow-Notification-Id` headers, so a receiver that honours the key sees a
//! notification once even when it is sent again.

use std::collections::BTreeMap;

use alertflow_model::time::DurationMs;
use serde::{Deserialize, Serialize};

use crate::payload::{Message, pagerduty, slack};
use crate::template::{DEFAULT_TEXT, DEFAULT_TITLE, Templates};

/// The receiver kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverKind {
    /// Alertmanager's webhook payload, version 4.
    Webhook,
    /// A Slack incoming webhook.
    Slack,
    /// PagerDuty's Events API v2.
    Pagerduty,
    /// A Kafka topic: the webhook payload as the message, keyed by group (the engine supplies
    /// the producer: see [`crate::deliver::Transport`]).
    Kafka,
}

/// The PagerDuty Events API v2 endpoint.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// One `[[receiver]]` as configured, before validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// The name routes refer to.
    pub name: String,
    /// `webhook`, `slack` or `pagerduty`.
    #[serde(rename = "type")]
    pub kind: ReceiverKind,
    /// Where to send: required for `webhook` and `slack`; `pagerduty` defaults to
    /// [`PAGERDUTY_URL`].
    #[serde(default)]
    pub url: Option<String>,
    /// Extra HTTP headers (an `Authorization`, say).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Title template (`slack`, and the `pagerduty` summary); Alertmanager's default subject.
    #[serde(default)]
    pub title: Option<String>,
    /// Body template (`slack`); one line per alert by default.
    #[serde(default)]
    pub text: Option<String>,
    /// `slack`: the channel to post to, overriding the webhook's.
    #[serde(default)]
    pub channel: Option<String>,
    /// `slack`: the user name to post as.
    #[serde(default)]
    pub username: Option<String>,
    /// `kafka`: the bootstrap servers (required).
    #[serde(default)]
    pub brokers: Option<String>,
    /// `kafka`: the topic (required).
    #[serde(default)]
    pub topic: Option<String>,
    /// `pagerduty`: the integration's routing key (required).
    #[serde(default)]
    pub routing_key: Option<String>,
    /// `pagerduty`: severity template (`critical`, `error`, `warning` or `info` once
    /// rendered); the alerts' common `severity` label, else `critical`.
    #[serde(default)]
    pub severity: Option<String>,
    /// At most this many alerts per message (0: all); the rest are counted in
    /// `truncatedAlerts`.
    #[serde(default)]
    pub max_alerts: usize,
    /// At most this many requests per second to this receiver (0: no limit).
    #[serde(default)]
    pub rate_limit: f64,
    /// How long one request may take.
    #[serde(default = "default_timeout")]
    pub timeout: DurationMs,
    /// The first retry's delay; each later one doubles it, up to `retry_max`.
    #[serde(default = "default_retry_initial")]
    pub retry_initial: DurationMs,
    /// The longest delay between retries.
    #[serde(default = "default_retry_max")]
    pub retry_max: DurationMs,
    /// Give up (status `failed`) after this many attempts.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_timeout() -> DurationMs {
    DurationMs(10_000)
}
fn default_retry_initial() -> DurationMs {
    DurationMs(1_000)
}
fn default_retry_max() -> DurationMs {
    DurationMs(300_000)
}
fn default_max_attempts() -> u32 {
    10
}

/// A validated receiver.
#[derive(Debug)]
pub struct Receiver {
    /// Its configuration.
    pub config: ReceiverConfig,
    url: String,
    templates: Templates,
}

/// An HTTP request to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Where (HTTP receivers).
    pub url: String,
    /// The group's key: the message key of a `kafka` receiver.
    pub key: String,
    /// Headers, besides `Content-Type: application/json`.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
}

impl Receiver {
    /// Validates a receiver; errors are `(field, problem)`, every one of them.
    pub fn new(config: ReceiverConfig) -> Result<Receiver, Vec<(String, String)>> {
        let mut errors = Vec::new();
        if config.name.trim().is_empty() {
            errors.push(("name".into(), "must not be empty".into()));
        }
        if config.kind == ReceiverKind::Kafka {
            for (field, v) in [("brokers", &config.brokers), ("topic", &config.topic)] {
                if v.as_deref().is_none_or(|v| v.trim().is_empty()) {
                    errors.push((field.into(), "is required for kafka".into()));
                }
            }
            if config.url.is_some() {
                errors.push(("url".into(), "a kafka receiver has brokers and a topic, not a url".into()));
            }
        }
        let url = match (config.kind, &config.url) {
            (ReceiverKind::Kafka, _) => String::new(),
            (_, Some(u)) => u.clone(),
            (ReceiverKind::Pagerduty, None) => PAGERDUTY_URL.to_string(),
            (_, None) => {
                errors.push(("url".into(), "is required for this type".into()));
                String::new()
            }
        };
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            errors.push(("url".into(), format!("`{url}` is not an http:// or https:// URL")));
        }
        if config.kind == ReceiverKind::Pagerduty && config.routing_key.as_deref().is_none_or(str::is_empty) {
            errors.push(("routing_key".into(), "is required for pagerduty".into()));
        }
        if !(config.rate_limit >= 0.0 && config.rate_limit.is_finite()) {
            errors.push(("rate_limit".into(), "must be a number ≥ 0".into()));
        }
        if config.max_attempts == 0 {
            errors.push(("max_attempts".into(), "must be at least 1".into()));
        }
        if config.retry_initial.millis() == 0 || config.retry_max.millis() < config.retry_initial.millis() {
            errors.push(("retry_initial".into(), "must be > 0 and at most retry_max".into()));
        }
        if config.timeout.millis() == 0 {
            errors.push(("timeout".into(), "must be > 0".into()));
        }
        for (k, v) in &config.headers {
            if k.is_empty() || k.bytes().any(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_')) {
                errors.push((format!("headers.{k}"), "is not a valid header name".into()));
            }
            if v.bytes().any(|b| b == b'\r' || b == b'\n') {
                errors.push((format!("headers.{k}"), "must not contain a line break".into()));
            }
        }
        let severity = "{% if common_labels.severity in [\"critical\", \"error\", \"warning\", \"info\"] %}{{ common_labels.severity }}{% else %}critical{% endif %}";
        let templates = Templates::new([
            ("title", config.title.clone().unwrap_or_else(|| DEFAULT_TITLE.to_string())),
            ("text", config.text.clone().unwrap_or_else(|| DEFAULT_TEXT.to_string())),
            ("severity", config.severity.clone().unwrap_or_else(|| severity.to_string())),
        ]);
        let templates = match templates {
            Ok(t) => Some(t),
            Err(e) => {
                errors.extend(e);
                None
            }
        };
        match templates {
            Some(templates) if errors.is_empty() => Ok(Receiver { config, url, templates }),
            _ => Err(errors),
        }
    }

    /// The receiver's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The request that sends `msg` (its alerts cut to `max_alerts`). Fails only when a
    /// template fails to render: the notification is then recorded as failed with the reason.
    pub fn request(&self, msg: &Message) -> Result<Request, String> {
        let mut msg = std::borrow::Cow::Borrowed(msg);
        let max = self.config.max_alerts;
        if max > 0 && msg.alerts.len() > max {
            let m = msg.to_mut();
            m.truncated_alerts += (m.alerts.len() - max) as u64;
            m.alerts.truncate(max);
        }
        let body = match self.config.kind {
            ReceiverKind::Webhook | ReceiverKind::Kafka => msg.webhook_v4(),
            ReceiverKind::Slack => {
                let ctx = msg.template_context();
                let title = self.templates.render("title", &ctx)?;
                let text = self.templates.render("text", &ctx)?;
                slack(&msg, &title, &text, self.config.channel.as_deref(), self.config.username.as_deref())
            }
            ReceiverKind::Pagerduty => {
                let ctx = msg.template_context();
                let title = self.templates.render("title", &ctx)?;
                let severity = self.templates.render("severity", &ctx)?;
                let severity = severity.trim();
                if !["critical", "error", "warning", "info"].contains(&severity) {
                    return Err(format!("template `severity` gave `{severity}`, not critical, error, warning or info"));
                }
                pagerduty(&msg, self.config.routing_key.as_deref().unwrap_or_default(), &title, severity, "alertflow")
            }
        };
        let id = msg.id();
        let mut headers: Vec<(String, String)> = self.config.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        headers.push(("Idempotency-Key".into(), id.clone()));
        headers.push(("X-Alertflow-Notification-Id".into(), id));
        // The event time of the tick that decided it (not in Alertmanager's payload).
        headers.push(("X-Alertflow-Notification-At".into(), alertflow_model::time::format_rfc3339(msg.at)));
        Ok(Request {
            url: self.url.clone(),
            key: msg.group_key.clone(),
            headers,
            body: serde_json::to_vec(&body).expect("JSON values serialize"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> ReceiverConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let e = Receiver::new(cfg(r#"
name = ""
type = "pagerduty"
url = "ftp://x"
rate_limit = -1.0
max_attempts = 0
title = "{{ oops"
headers = { "Bad Name" = "v" }
"#))
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        for f in ["name", "url", "routing_key", "rate_limit", "max_attempts", "title", "headers.Bad Name"] {
            assert!(fields.contains(&f), "{f} missing from {e:?}");
        }
        let unknown = toml::from_str::<ReceiverConfig>("name = \"x\"\ntype = \"webhook\"\nurl = \"http://x\"\nurll = 1\n").unwrap_err();
        assert!(unknown.to_string().contains("urll"), "{unknown}");
    }

    #[test]
    fn a_kafka_receiver_needs_brokers_and_a_topic_and_no_url() {
        let e = Receiver::new(cfg("name = \"k\"\ntype = \"kafka\"\nurl = \"http://x\"\n")).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["brokers", "topic", "url"], "{e:?}");
        let r = Receiver::new(cfg("name = \"k\"\ntype = \"kafka\"\nbrokers = \"b:9092\"\ntopic = \"t\"\n")).unwrap();
        let msg = Message {
            receiver: "k".into(),
            group_key: "t0/0:{}".into(),
            group_labels: BTreeMap::new(),
            at: 0,
            alerts: vec![],
            truncated_alerts: 0,
            external_url: String::new(),
        };
        let req = r.request(&msg).unwrap();
        assert_eq!(req.key, "t0/0:{}");
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(v["version"], "4");
    }

    #[test]
    fn pagerduty_defaults_its_url_and_takes_the_severity_label() {
        let r = Receiver::new(cfg("name = \"pd\"\ntype = \"pagerduty\"\nrouting_key = \"k\"\n")).unwrap();
        let msg = Message {
            receiver: "pd".into(),
            group_key: "g".into(),
            group_labels: BTreeMap::new(),
            at: 0,
            alerts: vec![crate::payload::AlertInfo {
                labels: [("alertname".to_string(), "Down".to_string()), ("severity".to_string(), "warning".to_string())].into(),
                annotations: BTreeMap::new(),
                starts_at: 0,
                ends_at: None,
                generator_url: String::new(),
                fingerprint: 1,
            }],
            truncated_alerts: 0,
            external_url: String::new(),
        };
        let req = r.request(&msg).unwrap();
        assert_eq!(req.url, PAGERDUTY_URL);
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(v["payload"]["severity"], "warning");
        assert_eq!(v["payload"]["summary"], "[FIRING:1] (Down warning)");
        assert!(req.headers.contains(&("Idempotency-Key".to_string(), msg.id())));
    }
}
