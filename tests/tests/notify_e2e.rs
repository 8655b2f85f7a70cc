//! Notifications end to end through the binary: the generator's storm scenario (cascading
//! incidents, storms of hundreds of alerts, noise) run with a `[notify]` section whose
//! webhook receiver is a local HTTP server recording every request.
//!
//! What a user would check: every request is an Alertmanager webhook payload (version 4)
//! carrying its id as idempotency key, each id arrives once; the notifications are the same
//! at 1 and 2 workers; no episode suppressed by a storm is ever named, and each storm is
//! notified through its own alert, firing then resolved; a group notifies no more often than
//! its `group_interval`, and there are no more groups than incidents; and the `notifications`
//! table records every request as delivered.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use alertflow_model::time::format_rfc3339;
use alertflow_tests::receiver::{Got, Recorder};
use alertflow_tests::{Scratch, alertflow, query_csv, run_json};

const GROUP_INTERVAL_MS: i64 = 5 * 60_000;

fn pipeline(dir: &Path, url: &str) -> std::path::PathBuf {
    let generated = std::fs::read_to_string(dir.join("pipeline.toml")).expect("the generated pipeline");
    let text = format!(
        r#"{generated}
[notify]
external_url = "http://alertflow.test:9094"
[notify.route]
receiver = "oncall"
group_by = ["incident_id"]
group_wait = "30s"
group_interval = "5m"
repeat_interval = "4h"

[[receiver]]
name = "oncall"
type = "webhook"
url = "{url}/hook"
retry_initial = "100ms"
"#
    );
    let p = dir.join("notify.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs the pipeline against a fresh recorder; returns the requests and the run summary.
fn run(dir: &Path, workers: usize) -> (Vec<Got>, serde_json::Value) {
    let rec = Recorder::start();
    let summary = run_json(&pipeline(dir, &rec.url), workers);
    (rec.got(), summary)
}

#[test]
fn the_storm_scenario_notifies_once_per_incident_and_update_never_per_suppressed_alert() {
    let s = Scratch::new("notify-e2e");
    let dir = s.join("g");
    let out = alertflow(&[
        "gen",
        "alerts",
        "--out",
        &dir.to_string_lossy(),
        "--seed",
        "1",
        "--incidents",
        "16",
        "--duration",
        "2h",
        "--storm-size",
        "300",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (got, summary) = run(&dir, 2);
    let n = got.len();
    assert!(n >= 20, "only {n} notifications");
    let counts = &summary["notifications"];
    assert_eq!(counts["sent"], n as u64, "{counts}");
    assert_eq!(counts["delivered"], n as u64, "{counts}");
    assert_eq!(counts["failed"], 0, "{counts}");
    assert_eq!(counts["undelivered"], 0, "{counts}");

    // Alertmanager's webhook payload, with its id as idempotency key, each id once.
    let mut ids = BTreeSet::new();
    for g in &got {
        assert_eq!(g.path, "/hook");
        let b = &g.body;
        assert_eq!(b["version"], "4", "{b}");
        assert_eq!(b["receiver"], "oncall");
        assert_eq!(b["externalURL"], "http://alertflow.test:9094");
        assert!(["firing", "resolved"].contains(&b["status"].as_str().unwrap()), "{b}");
        assert!(!b["alerts"].as_array().unwrap().is_empty(), "{b}");
        assert!(b["groupLabels"]["incident_id"].as_str().is_some_and(|s| s.len() == 16), "{b}");
        let id = g.headers.get("idempotency-key").expect("an idempotency key");
        assert_eq!(g.headers.get("x-alertflow-notification-id"), Some(id));
        assert!(ids.insert(id.clone()), "id {id} arrived twice");
    }

    // The same notifications at 1 worker (delivery order may differ).
    let (again, _) = run(&dir, 1);
    let by_id = |v: &[Got]| -> BTreeMap<String, serde_json::Value> {
        v.iter().map(|g| (g.headers["idempotency-key"].clone(), g.body.clone())).collect()
    };
    assert_eq!(by_id(&again), by_id(&got), "1 worker and 2 workers notified differently");

    let data = dir.join("out");
    // No episode a storm suppressed is named.
    let suppressed: BTreeSet<(String, String)> =
        query_csv(&data, "SELECT fingerprint, arrow_cast(starts_at, 'Int64') AS s FROM alerts WHERE suppressed AND event = 'opened'")
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(','))
            .map(|(f, s)| (f.to_string(), format_rfc3339(s.trim().parse().unwrap())))
            .collect();
    assert!(suppressed.len() > 50, "the scenario's storms suppressed only {} episodes", suppressed.len());
    let alerts = |g: &Got| g.body["alerts"].as_array().unwrap().clone();
    let named: usize = got.iter().map(|g| alerts(g).len()).sum();
    for g in &got {
        for a in alerts(g) {
            let key = (a["fingerprint"].as_str().unwrap().to_string(), a["startsAt"].as_str().unwrap().to_string());
            assert!(!suppressed.contains(&key), "a suppressed episode was notified: {a}");
        }
    }
    // Each storm speaks once through its own alert: firing, then resolved.
    let storms: BTreeSet<String> =
        query_csv(&data, "SELECT DISTINCT storm_id FROM storms").lines().skip(1).map(|l| l.trim().to_string()).collect();
    assert!(!storms.is_empty());
    for storm in &storms {
        let states: Vec<String> = got
            .iter()
            .flat_map(alerts)
            .filter(|a| a["labels"]["storm_id"].as_str() == Some(storm.as_str()))
            .map(|a| a["status"].as_str().unwrap().to_string())
            .collect();
        assert!(states.first().is_some_and(|s| s == "firing"), "storm {storm}: {states:?}");
        assert!(states.contains(&"resolved".to_string()), "storm {storm} never resolved: {states:?}");
    }
    // Per group: ticks no closer than group_interval, and no more groups than incidents.
    let rows = query_csv(&data, "SELECT group_key, arrow_cast(at, 'Int64') FROM notifications WHERE status = 'delivered' ORDER BY 1, 2");
    let mut per_group: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for l in rows.lines().skip(1) {
        let (k, at) = l.rsplit_once(',').unwrap();
        per_group.entry(k.to_string()).or_default().push(at.trim().parse().unwrap());
    }
    assert_eq!(per_group.values().map(Vec::len).sum::<usize>(), n, "the notifications table has every delivered request");
    for (k, ats) in &per_group {
        for w in ats.windows(2) {
            assert!(w[1] - w[0] >= GROUP_INTERVAL_MS, "group {k} notified {} ms apart", w[1] - w[0]);
        }
    }
    let incidents: usize =
        query_csv(&data, "SELECT count(DISTINCT incident_id) FROM incidents").lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(per_group.len() <= incidents, "{} groups for {incidents} incidents", per_group.len());
    let table_ids: BTreeSet<String> =
        query_csv(&data, "SELECT id FROM notifications WHERE status = 'delivered'").lines().skip(1).map(|l| l.trim().to_string()).collect();
    assert_eq!(table_ids, ids);
    let alert_episodes: usize =
        query_csv(&data, "SELECT count(*) FROM alerts WHERE event = 'opened'").lines().nth(1).unwrap().trim().parse().unwrap();
    eprintln!(
        "notify e2e: {n} notifications naming {named} alerts for {alert_episodes} opened episodes ({} suppressed), {} groups, {incidents} incidents, {} storms",
        suppressed.len(),
        per_group.len(),
        storms.len()
    );
}
