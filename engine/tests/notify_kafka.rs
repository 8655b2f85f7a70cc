//! The `kafka` notification receiver against a real Kafka protocol server (librdkafka's mock
//! cluster in this process): every notification arrives as one message on the topic, keyed by
//! its group, carrying the webhook payload and the idempotency key as a header, and the run's
//! counts match what the topic holds.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use alertflow_engine::{Pipeline, RunOptions, run};
use common::temp_dir;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;

const T0: i64 = 1_767_225_600_000;

#[test]
fn notifications_reach_a_kafka_topic_keyed_by_group_with_their_id() {
    let m = MockCluster::new(1).unwrap();
    m.create_topic("notes", 2, 1).unwrap();
    let brokers = m.bootstrap_servers();
    let dir = temp_dir("notify-kafka");
    // Three services alerting over an hour, two of them resolving.
    let mut lines = String::new();
    for (i, svc) in ["db", "api", "web"].iter().enumerate() {
        let start = T0 + i as i64 * 600_000;
        for k in 0..40 {
            let ts = start + k * 30_000;
            writeln!(lines, r#"{{"ts":{ts},"alertname":"Down","service":"{svc}","severity":"critical","status":"firing"}}"#).unwrap();
        }
        if i < 2 {
            let ts = start + 40 * 30_000;
            writeln!(lines, r#"{{"ts":{ts},"alertname":"Down","service":"{svc}","severity":"critical","status":"resolved"}}"#).unwrap();
        }
    }
    std::fs::write(dir.join("alerts.ndjson"), lines).unwrap();
    let text = format!(
        r#"
[[source]]
name = "alerts"
type = "file"
path = "alerts.ndjson"
records = "alerts"

[notify.route]
receiver = "bus"
group_by = ["service"]
group_wait = "10s"
group_interval = "1m"

[[receiver]]
name = "bus"
type = "kafka"
brokers = "{brokers}"
topic = "notes"

[output]
path = "out"
"#
    );
    std::fs::write(dir.join("p.toml"), text).unwrap();
    let p = Pipeline::load(&dir.join("p.toml")).unwrap();
    let summary = run(p, RunOptions { workers: Some(2), ..Default::default() }).unwrap();
    let counts = summary.notifications.expect("the notifications block");
    assert!(counts.sent >= 5, "{counts:?}");
    assert_eq!((counts.delivered, counts.failed, counts.undelivered), (counts.sent, 0, 0), "{counts:?}");

    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "check")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&["notes"]).unwrap();
    let (mut got, mut ids) = (Vec::new(), BTreeSet::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (got.len() as u64) < counts.sent && std::time::Instant::now() < deadline {
        let Some(msg) = c.poll(Duration::from_millis(200)) else { continue };
        let msg = msg.unwrap();
        let body: serde_json::Value = serde_json::from_slice(msg.payload().unwrap()).unwrap();
        assert_eq!(body["version"], "4");
        assert_eq!(msg.key().map(|k| String::from_utf8_lossy(k).into_owned()), body["groupKey"].as_str().map(str::to_string));
        let headers = msg.headers().expect("headers");
        let id = headers.iter().find(|h| h.key == "Idempotency-Key").and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned());
        assert!(ids.insert(id.expect("an idempotency key")), "an id twice");
        got.push(body);
    }
    assert_eq!(got.len() as u64, counts.sent, "the topic holds every notification, and nothing else");
    // Two services resolved, and the third expired when the input ended (dedup's
    // resolve_timeout): each group's last message says so, once.
    let resolved: Vec<&str> =
        got.iter().filter(|b| b["status"] == "resolved").map(|b| b["groupLabels"]["service"].as_str().unwrap()).collect();
    let mut sorted = resolved.clone();
    sorted.sort();
    assert_eq!(sorted, ["api", "db", "web"], "{got:#?}");
}
