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
//!
//! And effectively once: `kill -9` while notifications are being delivered (mid-run, and while
//! the run drains its queue at the end), then a restart: the receiver misses no notification,
//! gets no other, and sees an id twice only for the one request in flight at the kill.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use alertflow_model::time::format_rfc3339;
use alertflow_tests::receiver::{Got, Recorder};
use alertflow_tests::{Scratch, alertflow, query_csv, run_json};

const GROUP_INTERVAL_MS: i64 = 5 * 60_000;

fn pipeline(dir: &Path, url: &str) -> std::path::PathBuf {
    with_notify(dir, url, "", "notify.toml")
}

/// The generated pipeline with a `[notify]` section sending to `url`; `engine` adds an
/// `[engine]` section and `replay_rate` paces the source.
fn with_notify(dir: &Path, url: &str, engine: &str, name: &str) -> std::path::PathBuf {
    let mut generated = std::fs::read_to_string(dir.join("pipeline.toml")).expect("the generated pipeline");
    if let Some(rate) = engine.lines().find_map(|l| l.strip_prefix("# replay_rate ")) {
        generated = generated.replace("records = \"alerts\"", &format!("records = \"alerts\"\nreplay_rate = {rate}"));
    }
    let text = format!(
        r#"{generated}
{engine}
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
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs the pipeline against a fresh recorder; returns the requests and the run summary.
fn run(dir: &Path, workers: usize) -> (Vec<Got>, serde_json::Value) {
    let rec = Recorder::start();
    let summary = run_json(&pipeline(dir, &rec.url), workers);
    (rec.got(), summary)
}

fn generate(dir: &Path) {
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
}

#[test]
fn the_storm_scenario_notifies_once_per_incident_and_update_never_per_suppressed_alert() {
    let s = Scratch::new("notify-e2e");
    let dir = s.join("g");
    generate(&dir);

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

#[test]
fn a_kill_during_delivery_loses_no_notification_and_repeats_only_the_one_in_flight() {
    let s = Scratch::new("notify-kill");
    let dir = s.join("g");
    generate(&dir);
    let (reference, _) = run(&dir, 2);
    let reference: BTreeMap<String, serde_json::Value> =
        reference.iter().map(|g| (g.headers["idempotency-key"].clone(), g.body.clone())).collect();

    // Kill 1.5 s in (the dataflow is still reading: checkpoints are being taken) and 8 s in
    // (it has finished and the run is draining its queue to a slow receiver).
    for (cut, kill_after) in [(0, 1500), (1, 8000)] {
        let rec = Recorder::start();
        rec.delay_ms.store(60, std::sync::atomic::Ordering::Relaxed);
        let engine = "[engine]\nstate_dir = \"state\"\ncheckpoint_min_wall_interval = \"200ms\"\n# replay_rate 4000\n";
        let name = format!("kill-{cut}.toml");
        let p = with_notify(&dir, &rec.url, engine, &name);
        let _ = std::fs::remove_dir_all(dir.join("state"));
        let mut child = std::process::Command::new(alertflow_tests::bin())
            .args(["run", &p.to_string_lossy(), "--workers", "2"])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(kill_after));
        let running = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(running, "cut {cut}: the run ended before the kill at {kill_after} ms");
        let before = rec.got().len();
        assert!(before > 0 && before < reference.len(), "cut {cut}: {before} of {} went out before the kill", reference.len());
        assert!(dir.join("state/notify").exists(), "cut {cut}: no journal");

        rec.delay_ms.store(0, std::sync::atomic::Ordering::Relaxed);
        let summary = run_json(&p, 2);
        let got = rec.got();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for g in &got {
            let id = g.headers["idempotency-key"].clone();
            assert_eq!(reference.get(&id), Some(&g.body), "cut {cut}: {id} is not a notification of the uninterrupted run");
            *seen.entry(id).or_default() += 1;
        }
        let missing: Vec<&String> = reference.keys().filter(|id| !seen.contains_key(*id)).collect();
        assert!(missing.is_empty(), "cut {cut}: {} notification(s) never arrived, e.g. {:?}", missing.len(), missing.first());
        let twice: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.len() <= 1, "cut {cut}: sent again although answered: {twice:?}");
        assert!(twice.iter().all(|(_, n)| **n == 2), "{twice:?}");
        assert_eq!(summary["notifications"]["undelivered"], 0);
        assert!(!dir.join("state/notify").exists(), "cut {cut}: the journal outlived a run with nothing pending");
        eprintln!(
            "notify kill {cut} at {kill_after} ms: {before} before the kill, {} after ({} resent, {} skipped), {} twice",
            got.len() - before,
            summary["notifications"]["resent"],
            summary["notifications"]["skipped"],
            twice.len()
        );
    }
}

/// A silence of every `severity=warning` alert over all of the generated stream's time.
const WARNING_SILENCE: &str = r#"{"matchers": [{"name": "severity", "value": "warning", "isRegex": false, "isEqual": true}],
    "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2026-01-02T00:00:00Z", "createdBy": "ann", "comment": "noisy"}"#;

/// A generated stream whose paced run serves HTTP on a free port, notifies `oncall` and
/// escalates to `lead` after 10 minutes; `engine` adds to the `[engine]` section.
struct Escalating {
    _scratch: Scratch,
    dir: std::path::PathBuf,
    oncall: Recorder,
    lead: Recorder,
    pipeline: std::path::PathBuf,
    addr: std::net::SocketAddr,
}

impl Escalating {
    fn new(name: &str, engine: &str) -> Escalating {
        let s = Scratch::new(name);
        let dir = s.join("g");
        generate(&dir);
        let (oncall, lead) = (Recorder::start(), Recorder::start());
        let port = alertflow_tests::free_port();
        let engine = format!(
            "{engine}[serve]\nhttp = \"127.0.0.1:{port}\"\n[[receiver]]\nname = \"lead\"\ntype = \"webhook\"\nurl = \"{}/lead\"\n\
             [[notify.escalation]]\nafter = \"10m\"\nreceiver = \"lead\"\n# replay_rate 2000\n",
            lead.url
        );
        let pipeline = with_notify(&dir, &oncall.url, &engine, &format!("{name}.toml"));
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        Escalating { _scratch: s, dir, oncall, lead, pipeline, addr }
    }
}

/// Silences and incident actions over HTTP while a paced run routes: an acknowledged
/// incident escalates no further, a silence mutes its alerts from the time the notifier took
/// it until it is expired, and `GET /silences` shows both states.
#[test]
fn silences_and_acknowledgements_over_http_act_from_the_event_time_they_entered() {
    use alertflow_tests::{Running, http, wait_until};
    // `_scratch` bound, not left to `..`: the folder lives until the test ends.
    let Escalating { _scratch, dir, oncall, lead, pipeline: p, addr } = Escalating::new("notify-api", "");
    let run = Running::start(&p, 2);
    let wait = |what: &str, f: &mut dyn FnMut() -> bool| wait_until(what, std::time::Duration::from_secs(60), f);
    wait("the first notification", &mut || !oncall.got().is_empty());
    let incident = oncall.got()[0].body["groupLabels"]["incident_id"].as_str().unwrap().to_string();

    // Bad requests are named.
    assert_eq!(http(addr, "POST", "/incidents/zz/ack", None, "").0, 400);
    assert_eq!(http(addr, "DELETE", "/silences/nope", None, "").0, 404);
    let (code, body) = http(addr, "POST", "/silences", None, r#"{"matchers": [], "startsAt": "x", "endsAt": "y"}"#);
    assert_eq!(code, 400, "{body}");

    let (code, body) = http(addr, "POST", &format!("/incidents/{incident}/ack"), None, r#"{"by": "ann"}"#);
    assert_eq!(code, 200, "{body}");
    let acked_at = serde_json::from_str::<serde_json::Value>(&body).unwrap()["at"].as_str().unwrap().to_string();
    let (code, body) = http(addr, "POST", "/api/v2/silences", None, WARNING_SILENCE);
    assert_eq!(code, 200, "{body}");
    let added: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = added["silenceID"].as_str().unwrap().to_string();
    let (code, list) = http(addr, "GET", "/silences", None, "");
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["status"]["state"], "active", "{list}");
    assert_eq!(list[0]["matchers"][0]["name"], "severity");
    // Expire it after a while of event time.
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert_eq!(http(addr, "DELETE", &format!("/api/v2/silence/{id}"), None, "").0, 200);
    let (_, list) = http(addr, "GET", "/silences", None, "");
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["status"]["state"], "expired", "{list}");
    let expired_at = list[0]["endsAt"].as_str().unwrap().to_string();

    wait("the end of the run", &mut || http(addr, "GET", "/health", None, "").1.contains("\"running\":false"));
    drop(run);

    // Escalations: some incident was escalated; the acknowledged one not after its ack.
    let data = dir.join("out");
    let rows = query_csv(
        &data,
        "SELECT id, receiver, group_key, arrow_cast(at, 'Int64') FROM notifications WHERE status = 'delivered' ORDER BY 4",
    );
    let at_of: BTreeMap<String, (String, String, i64)> = rows
        .lines()
        .skip(1)
        .map(|l| {
            let (id, rest) = l.split_once(',').unwrap();
            let (receiver, rest) = rest.split_once(',').unwrap();
            let (key, at) = rest.rsplit_once(',').unwrap();
            (id.to_string(), (receiver.to_string(), key.to_string(), at.trim().parse().unwrap()))
        })
        .collect();
    let ack = alertflow_model::time::parse_time_text(&acked_at).unwrap();
    let escalated: Vec<&(String, String, i64)> = at_of.values().filter(|(r, _, _)| r == "lead").collect();
    assert!(!escalated.is_empty(), "nothing escalated");
    for (_, key, at) in &escalated {
        assert!(!(key.contains(&incident) && *at > ack), "incident {incident} escalated at {at} after its ack at {ack}");
    }
    assert_eq!(lead.got().len(), escalated.len());
    // The silence: from the event time it entered until it expired, no notification names a
    // warning alert.
    let from = alertflow_model::time::parse_time_text(added["at"].as_str().unwrap()).unwrap();
    let until = alertflow_model::time::parse_time_text(&expired_at).unwrap();
    assert!(until > from, "the silence ended at {until}, before it started at {from}");
    let mut muted_ticks = 0;
    for g in oncall.got() {
        let (_, _, at) = &at_of[&g.headers["idempotency-key"]];
        if (from..until).contains(at) {
            muted_ticks += 1;
            for a in g.body["alerts"].as_array().unwrap() {
                assert_ne!(a["labels"]["severity"], "warning", "a silenced alert was notified at {at}: {a}");
            }
        }
    }
    assert!(muted_ticks > 0, "no notification fell while the silence was on: the test checked nothing");
    eprintln!("notify api: {} escalations, {muted_ticks} notifications while silenced, ack at {acked_at}", escalated.len());
}

/// What people said survives a crash: a silence and an acknowledgement posted to a run that
/// is then killed are replayed by the restarted run at the event times they first entered,
/// so no silenced alert and no escalation of the acknowledged incident goes out after them,
/// before the kill or after the restart.
#[test]
fn silences_and_acks_are_replayed_after_a_kill_at_the_times_they_entered() {
    use alertflow_tests::{Running, http, wait_until};
    let Escalating { _scratch, dir, oncall, lead, pipeline: p, addr } =
        Escalating::new("notify-replay", "[engine]\nstate_dir = \"state\"\ncheckpoint_min_wall_interval = \"200ms\"\n");
    // Killed when dropped, also when the test fails.
    let start = || Running::start(&p, 2);
    let up = || std::net::TcpStream::connect(addr).is_ok();
    let wait = |what: &str, f: &mut dyn FnMut() -> bool| wait_until(what, std::time::Duration::from_secs(60), f);
    let mut run = start();
    wait("the first notification", &mut || !oncall.got().is_empty());
    let incident = oncall.got()[0].body["groupLabels"]["incident_id"].as_str().unwrap().to_string();
    let (code, body) = http(addr, "POST", &format!("/incidents/{incident}/ack"), None, "");
    assert_eq!(code, 200, "{body}");
    let ack = serde_json::from_str::<serde_json::Value>(&body).unwrap()["at"].as_str().unwrap().to_string();
    let (code, body) = http(addr, "POST", "/silences", None, WARNING_SILENCE);
    assert_eq!(code, 200, "{body}");
    let added: serde_json::Value = serde_json::from_str(&body).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    run.0.kill().unwrap();
    run.0.wait().unwrap();
    assert!(dir.join("state/notify/control.ndjson").exists(), "the controls were not journalled");

    let run = start();
    wait("the restarted run to serve", &mut || up());
    // The restarted run lists the silence it replayed.
    wait("the replayed silence", &mut || {
        let (code, list) = http(addr, "GET", "/silences", None, "");
        code == 200 && list.contains(added["silenceID"].as_str().unwrap())
    });
    wait("the end of the run", &mut || http(addr, "GET", "/health", None, "").1.contains("\"running\":false"));
    drop(run);

    // Each request says when it was decided (the tick's event time).
    let at_of = |g: &Got| alertflow_model::time::parse_time_text(&g.headers["x-alertflow-notification-at"]).unwrap();
    let from = alertflow_model::time::parse_time_text(added["at"].as_str().unwrap()).unwrap();
    let ack = alertflow_model::time::parse_time_text(&ack).unwrap();
    let mut after = 0;
    for g in oncall.got() {
        let at = at_of(&g);
        if at >= from {
            after += 1;
            for a in g.body["alerts"].as_array().unwrap() {
                assert_ne!(a["labels"]["severity"], "warning", "a silenced alert was notified at {at}: {a}");
            }
        }
    }
    for g in lead.got() {
        let at = at_of(&g);
        let key = g.body["groupKey"].as_str().unwrap();
        assert!(!(key.contains(&incident) && at > ack), "incident {incident} escalated at {at} after its ack at {ack}");
    }
    assert!(after > 10, "only {after} notifications after the silence: the test did not cover the restart");
    eprintln!("notify replay: {} notifications, {after} after the silence, {} escalations", oncall.got().len(), lead.got().len());
}
