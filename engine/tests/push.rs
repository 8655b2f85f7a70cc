//! HTTP push sources (`type = "http"`) through a whole run: remote_write samples and
//! Alertmanager alerts pushed over real HTTP reach their tables exactly (an oracle computes the
//! windows from what was pushed), bad pushes are answered 400 with the reason and end in
//! `dead_letters` without losing the rest, and a normal stop processes everything acknowledged.
//! At 1, 2 and 4 workers.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use alertflow_engine::{Pipeline, RunOptions, RunSummary, run};
use alertflow_model::decode::remote_write::encode::{TimeSeries, body, snappy};
use alertflow_serve::client::{HttpResponse, request};
use common::{read_table, temp_dir};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

fn pipeline(dir: &Path, workers: usize) -> Pipeline {
    let text = format!(
        r#"
[engine]
workers = {workers}
epoch = "1s"

[[source]]
type = "http"
name = "am"
records = "alerts"

[[source]]
type = "http"
name = "rw"
records = "metrics"
max_out_of_orderness = "2s"
# The samples are from January: the watermark must not follow today's wall clock.
idle_timeout = "1h"

[[aggregate]]
name = "per_10s"
input = "rw"
window = {{ type = "tumbling", size = "10s" }}
group_by = ["job"]
functions = ["count", "sum"]

[output]
path = "out"

[serve]
http = "127.0.0.1:0"
"#
    );
    std::fs::write(dir.join("p.toml"), &text).unwrap();
    Pipeline::load(&dir.join("p.toml")).unwrap()
}

/// A run in the background: its HTTP address, and a handle that stops it normally.
struct Running {
    url: String,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<RunSummary>,
}

fn start(p: Pipeline, workers: usize) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        let serving: alertflow_engine::ServingFn = Box::new(move |_, http, _| tx.send(http.unwrap()).unwrap());
        run(p, RunOptions { workers: Some(workers), stop: Some(s), serving: Some(serving), ..Default::default() }).unwrap()
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    Running { url: format!("http://{addr}"), stop, thread }
}

fn post(url: &str, path: &str, headers: &[(&str, &str)], b: &[u8]) -> HttpResponse {
    request("POST", url, path, headers, b).unwrap()
}

fn write(url: &str, series: &[TimeSeries<'_>]) -> HttpResponse {
    post(url, "/api/v1/write", &[("Content-Encoding", "snappy"), ("Content-Type", "application/x-protobuf")], &body(series))
}

#[test]
fn pushed_samples_and_alerts_reach_their_tables_on_1_2_4_workers() {
    for workers in [1, 2, 4] {
        let dir = temp_dir("push");
        let r = start(pipeline(&dir, workers), workers);
        let url = &r.url;

        // Samples: 3 jobs, one point a second for 60 s, pushed in requests of 5 s (each
        // request holds every job's series, ordered by series as Prometheus does).
        let mut want: BTreeMap<(i64, String), (u64, f64)> = BTreeMap::new();
        for req in 0..12 {
            let mut series = Vec::new();
            for job in ["api", "db", "web"] {
                let samples: Vec<(i64, f64)> =
                    (0..5).map(|k| (T0 + (req * 5 + k) * 1000, (req * 5 + k) as f64 + job.len() as f64)).collect();
                for &(ts, v) in &samples {
                    let e = want.entry((ts - ts % 10_000, job.to_string())).or_default();
                    e.0 += 1;
                    e.1 += v;
                }
                series.push(TimeSeries { labels: vec![("__name__", "http_requests"), ("job", job)], samples });
            }
            let resp = write(url, &series);
            assert_eq!(resp.status, 204, "{}", resp.text());
        }
        // A sample 10 s behind the newest (59 s) with 2 s of out-of-orderness: late, a dead letter.
        let resp =
            write(url, &[TimeSeries { labels: vec![("__name__", "http_requests"), ("job", "api")], samples: vec![(T0 + 49_000, 1.0)] }]);
        assert_eq!(resp.status, 204, "late samples are taken (as dead letters): {}", resp.text());
        // One unusable series among good ones: 400 naming it, the good one is taken.
        let resp = write(
            url,
            &[
                TimeSeries { labels: vec![("job", "nameless")], samples: vec![(T0 + 59_000, 1.0)] },
                TimeSeries { labels: vec![("__name__", "http_requests"), ("job", "api")], samples: vec![(T0 + 59_500, 100.0)] },
            ],
        );
        assert_eq!(resp.status, 400);
        assert!(resp.text().contains("series 0: no `__name__` label"), "{}", resp.text());
        let e = want.get_mut(&(T0 + 50_000, "api".to_string())).unwrap();
        e.0 += 1;
        e.1 += 100.0;
        // Samples outside the event-time bounds (2300; seconds for milliseconds): 400 naming
        // both, dead letters, and the good sample of the request is taken.
        let resp = write(
            url,
            &[TimeSeries {
                labels: vec![("__name__", "http_requests"), ("job", "api")],
                samples: vec![(10_413_792_000_000, 1.0), (T0 / 1000, 2.0), (T0 + 59_700, 7.0)],
            }],
        );
        assert_eq!(resp.status, 400);
        let text = resp.text();
        assert!(text.contains("2 of 3 samples or series rejected"), "{text}");
        assert!(text.contains("ts 2300-01-01T00:00:00.000Z is more than max_future (1d) ahead of the wall clock"), "{text}");
        assert!(text.contains("(seconds instead of milliseconds?)"), "{text}");
        let e = want.get_mut(&(T0 + 50_000, "api".to_string())).unwrap();
        e.0 += 1;
        e.1 += 7.0;
        // Not snappy, and not protobuf: 400, nothing taken.
        let resp = post(url, "/api/v1/write", &[], b"hello");
        assert_eq!(resp.status, 400);
        assert!(resp.text().contains("not snappy-compressed"), "{}", resp.text());
        let resp = post(url, "/api/v1/write", &[], &snappy(&[0x0a, 0x05, 0x01]));
        assert_eq!(resp.status, 400);
        assert!(resp.text().contains("not a protobuf WriteRequest"), "{}", resp.text());
        let resp = post(url, "/api/v1/write", &[("Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request")], b"");
        assert_eq!(resp.status, 415);

        // Alerts, for tenant acme: one good and one without an alertname (400, the good one kept).
        let am = r#"[{"labels":{"alertname":"HighLatency","job":"api","severity":"page"},"annotations":{"summary":"slow"},"startsAt":"2026-01-01T00:00:00Z","endsAt":"2999-01-01T00:00:00Z","generatorURL":"http://prom/graph"},
                     {"labels":{"job":"db"},"startsAt":"2026-01-01T00:00:00Z"}]"#;
        let resp = post(url, "/api/v2/alerts", &[("Content-Type", "application/json"), ("X-Scope-OrgID", "acme")], am.as_bytes());
        assert_eq!(resp.status, 400);
        assert!(resp.text().contains("1 of 2 alerts rejected: alert 1: missing field `alertname`"), "{}", resp.text());
        let resp = post(
            url,
            "/api/v2/alerts",
            &[("Content-Type", "application/json")],
            br#"[{"labels":{"alertname":"Other"},"startsAt":"2026-01-01T00:00:00Z"}]"#,
        );
        assert_eq!(resp.status, 200, "{}", resp.text());
        let resp = post(url, "/api/v2/alerts", &[("X-Scope-OrgID", "a|b")], b"[]");
        assert_eq!(resp.status, 400, "{}", resp.text());
        let resp = post(url, "/api/v2/alerts", &[], b"{not json");
        assert_eq!(resp.status, 400);
        let status = request("GET", url, "/api/v2/status", &[], b"").unwrap();
        assert_eq!(status.status, 200);
        assert!(status.text().contains(r#""cluster""#), "{}", status.text());
        // The source counters are live on /metrics.
        let metrics = request("GET", url, "/metrics", &[], b"").unwrap().text();
        assert!(metrics.contains(r#"alertflow_source_records_total{source="rw"} 188"#), "{metrics}");

        // A normal stop: everything acknowledged is processed and flushed.
        r.stop.store(true, Ordering::Release);
        let summary = r.thread.join().unwrap();
        // Samples: 180 on time, 1 late, 2 in the mixed request, 3 in the out-of-bounds one, 2
        // unreadable bodies (the 2.0 body is refused before it is read). Alerts: 3, and 1
        // unreadable body.
        assert_eq!(summary.records_in, 188 + 4, "{summary:?}");

        let rows = read_table(&dir.join("out/per_10s"));
        let got: BTreeMap<(i64, String), (u64, f64)> = rows
            .iter()
            .map(|r| {
                let c: Vec<&str> = r.split(',').collect();
                // window_start, window_end, tenant, name, job, count, sum
                assert_eq!((c[2], c[3]), ("default", "http_requests"), "{r}");
                ((c[0].parse().unwrap(), c[4].to_string()), (c[5].parse().unwrap(), c[6].parse().unwrap()))
            })
            .collect();
        assert_eq!(got, want, "{workers} worker(s)");

        let dead = read_table(&dir.join("out/dead_letters"));
        let reasons: Vec<String> = dead.iter().map(|r| r.split(',').nth(2).unwrap().to_string()).collect();
        let count = |s: &str| reasons.iter().filter(|r| r.contains(s)).count();
        assert_eq!(reasons.iter().filter(|r| *r == "late").count(), 1, "{dead:#?}");
        assert_eq!(count("no `__name__` label"), 1, "{dead:#?}");
        assert_eq!(count("is more than max_future"), 1, "{dead:#?}");
        assert_eq!(count("is before min_event_time"), 1, "{dead:#?}");
        assert_eq!(count("not snappy"), 1, "{dead:#?}");
        assert_eq!(count("not a protobuf"), 1, "{dead:#?}");
        assert_eq!(count("missing field `alertname`"), 1, "{dead:#?}");
        assert_eq!(count("malformed JSON"), 1, "{dead:#?}");
        assert!(dead.iter().all(|r| r.starts_with("POST /api/")), "{dead:#?}");

        let alerts = read_table(&dir.join("out/alerts"));
        let opened: Vec<(&str, &str)> = alerts
            .iter()
            .map(|r| r.split(',').collect::<Vec<_>>())
            .filter(|c| c[1] == "opened")
            .map(|c| (c[2], c[4]))
            .map(|(t, a)| (if t == "acme" { "acme" } else { "default" }, if a == "HighLatency" { "HighLatency" } else { "Other" }))
            .collect();
        assert_eq!(opened.len(), 2, "{alerts:#?}");
        assert!(opened.contains(&("acme", "HighLatency")) && opened.contains(&("default", "Other")), "{alerts:#?}");
    }
}

/// With tokens: no token is 401, a tenant's token pushes into its tenant only (403 for another
/// `X-Scope-OrgID`), an all-tenants token pushes for the tenant it names.
#[test]
fn tokens_decide_the_tenant_of_a_push() {
    let dir = temp_dir("push-tokens");
    let text = r#"
[[source]]
type = "http"
name = "am"
records = "alerts"

[output]
path = "out"

[serve]
http = "127.0.0.1:0"

[[serve.tokens]]
token = "acme-pusher-1"
tenant = "acme"

[[serve.tokens]]
token = "operator-1"
tenant = "*"
"#;
    std::fs::write(dir.join("p.toml"), text).unwrap();
    let r = start(Pipeline::load(&dir.join("p.toml")).unwrap(), 2);
    let alert = |name: &str| format!(r#"[{{"labels":{{"alertname":"{name}"}},"startsAt":"2026-01-01T00:00:00Z"}}]"#);
    let push = |headers: &[(&str, &str)], name: &str| post(&r.url, "/api/v2/alerts", headers, alert(name).as_bytes());
    assert_eq!(push(&[], "A").status, 401);
    assert_eq!(push(&[("Authorization", "Bearer wrong")], "A").status, 401);
    assert_eq!(push(&[("Authorization", "Bearer acme-pusher-1")], "Acme").status, 200);
    let other = push(&[("Authorization", "Bearer acme-pusher-1"), ("X-Scope-OrgID", "globex")], "Stolen");
    assert_eq!(other.status, 403);
    assert!(other.text().contains("pushes for tenant `acme` only"), "{}", other.text());
    assert_eq!(push(&[("Authorization", "Bearer acme-pusher-1"), ("X-Scope-OrgID", "acme")], "Acme2").status, 200);
    assert_eq!(push(&[("Authorization", "Bearer operator-1"), ("X-Scope-OrgID", "globex")], "Globex").status, 200);
    assert_eq!(push(&[("Authorization", "Bearer operator-1")], "Default").status, 200);
    r.stop.store(true, Ordering::Release);
    r.thread.join().unwrap();
    let mut opened: Vec<(String, String)> = read_table(&dir.join("out/alerts"))
        .iter()
        .map(|r| r.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|c| c[1] == "opened")
        .map(|c| (c[2].clone(), c[4].clone()))
        .collect();
    opened.sort();
    let want = [("acme", "Acme"), ("acme", "Acme2"), ("default", "Default"), ("globex", "Globex")];
    assert_eq!(opened, want.map(|(a, b)| (a.to_string(), b.to_string())));
}

/// With checkpoints, on a source's own `listen` address (no `[serve]`): every push is logged
/// before it is answered. A run that fails before its first checkpoint loses nothing (the next
/// run replays the whole log); a stop ends at a checkpoint and the next run replays the log
/// from there. Every pushed sample is in the table exactly once, at 1 and 2 workers.
#[test]
fn with_checkpoints_acknowledged_pushes_survive_a_failure_and_a_stop() {
    for workers in [1, 2] {
        let dir = temp_dir("push-wal");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let text = format!(
            r#"
[engine]
epoch = "1s"
state_dir = "state"
checkpoint_interval = "10s"
checkpoint_min_wall_interval = "100ms"

[[source]]
type = "http"
name = "rw"
records = "metrics"
listen = "127.0.0.1:{port}"
max_out_of_orderness = "2s"
idle_timeout = "1h"

[[aggregate]]
name = "per_req"
input = "rw"
window = {{ type = "tumbling", size = "10s" }}
group_by = ["req"]
functions = ["count", "sum"]

[output]
path = "out"
"#
        );
        std::fs::write(dir.join("p.toml"), &text).unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let push = |req: &str, ts: &[i64]| {
            let samples = ts.iter().map(|&t| (t, (t - T0) as f64)).collect();
            let resp = write(&url, &[TimeSeries { labels: vec![("__name__", "wal"), ("req", req)], samples }]);
            assert_eq!(resp.status, 204, "{}", resp.text());
        };
        // Request i: 3 samples in second i.
        let push_range = |from: i64, to: i64| (from..to).for_each(|i| push(&i.to_string(), &[0, 10, 20].map(|k| T0 + i * 1000 + k)));
        let launch = |stop: Arc<AtomicBool>, cancel: Arc<AtomicBool>| {
            let p = Pipeline::load(&dir.join("p.toml")).unwrap();
            let t = std::thread::spawn(move || {
                run(p, RunOptions { workers: Some(workers), stop: Some(stop), cancel: Some(cancel), ..Default::default() })
            });
            // The listener is bound before any worker starts; wait for it.
            let t0 = std::time::Instant::now();
            while request("GET", &url, "/health", &[], b"").is_err() {
                assert!(t0.elapsed() < Duration::from_secs(30), "the run does not listen on {url}");
                std::thread::sleep(Duration::from_millis(20));
            }
            t
        };
        // A stop ends at a checkpoint taken after it, which needs event time to move past the
        // next interval: the pusher goes on pushing (request `next`, `next + 1`, … — or, with
        // `ticks`, one sample an hour later each time) until the run has stopped. Returns the
        // first request not taken.
        let stop_while_pushing = |stop: &Arc<AtomicBool>, t: std::thread::JoinHandle<_>, mut next: i64, ticks: bool| {
            stop.store(true, Ordering::Release);
            let mut hour = 1;
            while !t.is_finished() {
                std::thread::sleep(Duration::from_millis(300));
                let (req, samples) = if ticks {
                    hour += 1;
                    ("tick".to_string(), vec![(T0 + hour * 3_600_000 + 2_000, 0.0)])
                } else {
                    (next.to_string(), [0, 10, 20].map(|k| (T0 + next * 1000 + k, (next * 1000 + k) as f64)).to_vec())
                };
                let r = request(
                    "POST",
                    &url,
                    "/api/v1/write",
                    &[("Content-Encoding", "snappy")],
                    &body(&[TimeSeries { labels: vec![("__name__", "wal"), ("req", &req)], samples }]),
                );
                if r.is_ok_and(|r| r.status == 204) && !ticks {
                    next += 1;
                }
            }
            match t.join().unwrap() {
                Err(alertflow_engine::RunError::Stopped(m)) => assert!(m.contains("stopped at the checkpoint"), "{m}"),
                other => panic!("a stop with checkpoints ends at a checkpoint: {other:?}"),
            }
            next
        };

        // Run 1: ten pushes, then it fails (cancelled) before any checkpoint: the watermark
        // (second 7) never reached the first one (second 10).
        let (stop, cancel) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let t = launch(stop.clone(), cancel.clone());
        // The source's own listener serves pushes and /health only.
        let sql = request("POST", &url, "/sql", &[], b"SELECT 1").unwrap();
        assert_eq!(sql.status, 404);
        assert!(sql.text().contains("this address takes pushes"), "{}", sql.text());
        push_range(0, 10);
        cancel.store(true, Ordering::Release);
        let e = t.join().unwrap().unwrap_err().to_string();
        assert!(e.contains("cancelled"), "{e}");
        assert!(!dir.join("state/CURRENT").exists(), "no checkpoint was committed");
        let logged: usize = (0..workers).map(|w| std::fs::read_dir(dir.join(format!("state/wal/rw/w{w}"))).unwrap().count()).sum();
        assert!(logged >= 1, "the acknowledged pushes are in the log");

        // Run 2: replays the ten, takes 33 more (to second 42), then from second 52 on one a
        // moment while it stops. What it took at and after its checkpoint is only in the log.
        let (stop, cancel) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let t = launch(stop.clone(), cancel);
        push_range(10, 43);
        let next = stop_while_pushing(&stop, t, 52, false);
        assert!(dir.join("state/CURRENT").exists());
        assert!(next < 60, "the stop took {} requests", next - 52);

        // Run 3: resumes, replays the log from the checkpoint, takes the rest, and stops while
        // samples hours later close every window.
        let (stop, cancel) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let t = launch(stop.clone(), cancel);
        push_range(next, 60);
        stop_while_pushing(&stop, t, 0, true);

        let rows = read_table(&dir.join("out/per_req"));
        let mut got: BTreeMap<i64, (u64, f64)> = BTreeMap::new();
        for r in &rows {
            // window_start, window_end, tenant, name, req, count, sum
            let c: Vec<&str> = r.split(',').collect();
            if c[4] == "tick" {
                continue;
            }
            let e = got.entry(c[4].parse().unwrap()).or_default();
            e.0 += c[5].parse::<u64>().unwrap();
            e.1 += c[6].parse::<f64>().unwrap();
        }
        let want: BTreeMap<i64, (u64, f64)> = (0..43).chain(52..60).map(|i| (i, (3, (3 * i * 1000 + 30) as f64))).collect();
        assert_eq!(got, want, "{workers} worker(s)");
        assert!(read_table(&dir.join("out/dead_letters")).is_empty());
    }
}
