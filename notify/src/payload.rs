//! What a notification says, and its wire formats: the Alertmanager webhook payload (version 4,
//! so that existing webhook consumers work unchanged), a Slack incoming-webhook message and a
//! PagerDuty Events API v2 event.
//!
//! A [`Message`] is one group's notification with everything a receiver may show: the alerts
//! with their labels and annotations, and the labels the group is keyed by. Its [`id`] names it
//! across restarts and replays (it depends only on the group, the event time of the tick that
//! sent it and the receiver), and goes out as the idempotency key.
//!
//! [`id`]: Message::id

use std::collections::BTreeMap;

use alertflow_model::time::{Millis, format_rfc3339};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One alert of a notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertInfo {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing.
    pub starts_at: Millis,
    /// When it was resolved; `None` while it fires.
    pub ends_at: Option<Millis>,
    /// The sender's link.
    pub generator_url: String,
    /// Its fingerprint.
    pub fingerprint: u64,
}

impl AlertInfo {
    /// `firing` or `resolved`.
    pub fn status(&self) -> &'static str {
        if self.ends_at.is_some() { "resolved" } else { "firing" }
    }
}

/// One group's notification to one receiver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The receiver's name.
    pub receiver: String,
    /// The group's key (Alertmanager's `groupKey`: the route and the grouping labels).
    pub group_key: String,
    /// The values of the route's `group_by` labels.
    pub group_labels: BTreeMap<String, String>,
    /// The event time of the tick that sent it.
    pub at: Millis,
    /// The alerts, firing first, each part in fingerprint order.
    pub alerts: Vec<AlertInfo>,
    /// Alerts left out to keep the message within the receiver's `max_alerts` (0: none).
    pub truncated_alerts: u64,
    /// The link back to alertflow (Alertmanager's `externalURL`).
    pub external_url: String,
}

impl Message {
    /// `firing` while any alert fires, else `resolved`.
    pub fn status(&self) -> &'static str {
        if self.alerts.iter().any(|a| a.ends_at.is_none()) { "firing" } else { "resolved" }
    }

    /// The notification's id: XXH3-64 of receiver, group key and tick time, as 16 hex digits.
    /// The same notification gets the same id in every run, so a receiver that honours it as
    /// an idempotency key sees each notification once even when it is sent again after a
    /// crash.
    pub fn id(&self) -> String {
        let mut b = Vec::with_capacity(self.receiver.len() + self.group_key.len() + 10);
        b.extend_from_slice(self.receiver.as_bytes());
        b.push(0);
        b.extend_from_slice(self.group_key.as_bytes());
        b.push(0);
        b.extend_from_slice(&self.at.to_le_bytes());
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&b))
    }

    /// The alerts that fire.
    pub fn firing(&self) -> impl Iterator<Item = &AlertInfo> {
        self.alerts.iter().filter(|a| a.ends_at.is_none())
    }

    /// The alerts that are resolved.
    pub fn resolved(&self) -> impl Iterator<Item = &AlertInfo> {
        self.alerts.iter().filter(|a| a.ends_at.is_some())
    }

    /// The labels every alert has with the same value (Alertmanager's `commonLabels`).
    pub fn common_labels(&self) -> BTreeMap<String, String> {
        common(self.alerts.iter().map(|a| &a.labels))
    }

    /// The annotations every alert has with the same value.
    pub fn common_annotations(&self) -> BTreeMap<String, String> {
        common(self.alerts.iter().map(|a| &a.annotations))
    }

    /// The Alertmanager webhook payload, version 4 (`notify/webhook`): what its consumers
    /// parse. A firing alert's `endsAt` is the zero time, as Alertmanager sends it.
    pub fn webhook_v4(&self) -> Value {
        json!({
            "version": "4",
            "groupKey": self.group_key,
            "truncatedAlerts": self.truncated_alerts,
            "status": self.status(),
            "receiver": self.receiver,
            "groupLabels": self.group_labels,
            "commonLabels": self.common_labels(),
            "commonAnnotations": self.common_annotations(),
            "externalURL": self.external_url,
            "alerts": self.alerts.iter().map(|a| json!({
                "status": a.status(),
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": format_rfc3339(a.starts_at),
                "endsAt": a.ends_at.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), format_rfc3339),
                "generatorURL": a.generator_url,
                "fingerprint": format!("{:016x}", a.fingerprint),
            })).collect::<Vec<_>>(),
        })
    }

    /// What templates see: the webhook payload's fields in snake case, with the alerts split
    /// into `firing` and `resolved` as well.
    pub fn template_context(&self) -> Value {
        let alert = |a: &AlertInfo| {
            json!({
                "status": a.status(),
                "labels": a.labels,
                "annotations": a.annotations,
                "starts_at": format_rfc3339(a.starts_at),
                "ends_at": a.ends_at.map(format_rfc3339),
                "generator_url": a.generator_url,
                "fingerprint": format!("{:016x}", a.fingerprint),
            })
        };
        json!({
            "id": self.id(),
            "receiver": self.receiver,
            "status": self.status(),
            "group_key": self.group_key,
            "group_labels": self.group_labels,
            "common_labels": self.common_labels(),
            "common_annotations": self.common_annotations(),
            "external_url": self.external_url,
            "truncated_alerts": self.truncated_alerts,
            "alerts": self.alerts.iter().map(alert).collect::<Vec<_>>(),
            "firing": self.firing().map(alert).collect::<Vec<_>>(),
            "resolved": self.resolved().map(alert).collect::<Vec<_>>(),
            "at": format_rfc3339(self.at),
        })
    }
}

fn common<'a>(mut sets: impl Iterator<Item = &'a BTreeMap<String, String>>) -> BTreeMap<String, String> {
    let Some(first) = sets.next() else { return BTreeMap::new() };
    let mut out = first.clone();
    for s in sets {
        out.retain(|k, v| s.get(k) == Some(v));
    }
    out
}

/// A Slack incoming-webhook message: the title as fallback text, one attachment coloured by
/// status (`danger` firing, `good` resolved), as Alertmanager's Slack notifier sends it.
pub fn slack(msg: &Message, title: &str, text: &str, channel: Option<&str>, username: Option<&str>) -> Value {
    let mut v = json!({
        "text": title,
        "attachments": [{
            "color": if msg.status() == "firing" { "danger" } else { "good" },
            "title": title,
            "title_link": msg.external_url,
            "text": text,
            "fallback": title,
            "mrkdwn_in": ["text"],
        }],
    });
    if let Some(c) = channel {
        v["channel"] = json!(c);
    }
    if let Some(u) = username {
        v["username"] = json!(u);
    }
    v
}

/// A PagerDuty Events API v2 event: `trigger` while anything fires, `resolve` once nothing
/// does, deduplicated by PagerDuty on the group (`dedup_key`: XXH3-64 of the group key, as
/// Alertmanager keys it by the group).
pub fn pagerduty(msg: &Message, routing_key: &str, summary: &str, severity: &str, source: &str) -> Value {
    let firing = msg.status() == "firing";
    let mut details = serde_json::Map::new();
    details.insert("firing".into(), json!(msg.firing().count()));
    details.insert("resolved".into(), json!(msg.resolved().count()));
    details.insert("num_firing".into(), json!(msg.firing().count()));
    details.insert("group_labels".into(), json!(msg.group_labels));
    details.insert("notification_id".into(), json!(msg.id()));
    let mut v = json!({
        "routing_key": routing_key,
        "event_action": if firing { "trigger" } else { "resolve" },
        "dedup_key": format!("{:016x}", xxhash_rust::xxh3::xxh3_64(msg.group_key.as_bytes())),
        "client": "alertflow",
        "client_url": msg.external_url,
    });
    if firing {
        // PagerDuty limits the summary to 1024 characters.
        let summary: String = summary.chars().take(1024).collect();
        v["payload"] = json!({
            "summary": summary,
            "source": source,
            "severity": severity,
            "timestamp": format_rfc3339(msg.at),
            "custom_details": details,
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str, inst: &str, starts: Millis, ends: Option<Millis>) -> AlertInfo {
        AlertInfo {
            labels: [("alertname", name), ("instance", inst), ("job", "node")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: [("summary".to_string(), format!("{name} on {inst}"))].into_iter().collect(),
            starts_at: starts,
            ends_at: ends,
            generator_url: "http://prom/graph".into(),
            fingerprint: 0xab,
        }
    }

    fn message() -> Message {
        Message {
            receiver: "team-x".into(),
            group_key: "{}:{alertname=\"Down\"}".into(),
            group_labels: [("alertname".to_string(), "Down".to_string())].into_iter().collect(),
            at: 1_767_225_630_000,
            alerts: vec![alert("Down", "a", 1_767_225_600_000, None), alert("Down", "b", 1_767_225_500_000, Some(1_767_225_620_000))],
            truncated_alerts: 0,
            external_url: "http://alertflow:8080".into(),
        }
    }

    #[test]
    fn the_webhook_payload_has_every_field_of_alertmanagers_version_4() {
        let v = message().webhook_v4();
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["receiver"], "team-x");
        assert_eq!(v["groupKey"], "{}:{alertname=\"Down\"}");
        assert_eq!(v["truncatedAlerts"], 0);
        assert_eq!(v["groupLabels"], json!({"alertname": "Down"}));
        assert_eq!(v["commonLabels"], json!({"alertname": "Down", "job": "node"}), "instance differs");
        assert_eq!(v["commonAnnotations"], json!({}));
        assert_eq!(v["externalURL"], "http://alertflow:8080");
        let a = &v["alerts"][0];
        assert_eq!(a["status"], "firing");
        assert_eq!(a["startsAt"], "2026-01-01T00:00:00.000Z");
        assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(a["fingerprint"], "00000000000000ab");
        assert_eq!(a["generatorURL"], "http://prom/graph");
        assert_eq!(v["alerts"][1]["status"], "resolved");
        assert_eq!(v["alerts"][1]["endsAt"], "2026-01-01T00:00:20.000Z");
    }

    #[test]
    fn the_id_depends_on_receiver_group_and_tick_only() {
        let m = message();
        let mut other = m.clone();
        other.alerts.pop();
        assert_eq!(m.id(), other.id(), "the alerts do not change the id");
        other.at += 1;
        assert_ne!(m.id(), other.id());
        let mut r = m.clone();
        r.receiver = "team-y".into();
        assert_ne!(m.id(), r.id());
        assert_eq!(m.id().len(), 16);
    }

    #[test]
    fn pagerduty_triggers_while_firing_and_resolves_after() {
        let m = message();
        let v = pagerduty(&m, "key", &"x".repeat(2000), "critical", "alertflow");
        assert_eq!(v["event_action"], "trigger");
        assert_eq!(v["payload"]["summary"].as_str().unwrap().len(), 1024);
        assert_eq!(v["payload"]["severity"], "critical");
        let mut r = m.clone();
        r.alerts.retain(|a| a.ends_at.is_some());
        let v2 = pagerduty(&r, "key", "s", "critical", "alertflow");
        assert_eq!(v2["event_action"], "resolve");
        assert!(v2.get("payload").is_none());
        assert_eq!(v["dedup_key"], v2["dedup_key"], "one PagerDuty incident per group");
    }

    #[test]
    fn slack_colours_by_status() {
        let m = message();
        let v = slack(&m, "t", "b", Some("#ops"), None);
        assert_eq!(v["attachments"][0]["color"], "danger");
        assert_eq!(v["channel"], "#ops");
        assert!(v.get("username").is_none());
    }
}
