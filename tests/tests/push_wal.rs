//! The acceptance test of push ingest with checkpoints (issue 9), on the release binary: four
//! clients remote-write samples — and, in a second pipeline, post Alertmanager alerts — into a
//! checkpointing run on its own `listen` address (no `[serve]`), which is killed with `kill -9`
//! at seeded random moments and restarted. Like Prometheus, a client re-sends a push until it is
//! answered 2xx. At the end (SIGTERM, which stops at a checkpoint) every acknowledged push is in
//! the tables exactly once: a push answered 2xx once is counted once, and one whose earlier tries
//! went unanswered (the run died under them) at most once per try — never zero times.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alertflow_model::decode::remote_write::encode::{TimeSeries, body};
use alertflow_serve::client::request;
use alertflow_tests::{Lcg, PUSHED_SAMPLES, Scratch, bin, free_port, query_csv};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const SAMPLES: u64 = 10;
const CLIENTS: u64 = 4;

fn pipeline(dir: &Path, port: u16, alerts: bool) {
    let source = if alerts {
        // Alerts take the receive time: event time is the wall clock, so a short interval.
        r#"
[engine]
epoch = "1s"
state_dir = "state"
checkpoint_interval = "2s"
checkpoint_min_wall_interval = "100ms"

[[source]]
type = "http"
name = "am"
records = "alerts"
listen = "127.0.0.1:PORT"
"#
    } else {
        // Request i holds samples of the 10 ms from T0 + 10·i ms: event time runs ahead of the
        // wall clock, so checkpoints (every 10 simulated seconds) come often, and a client may
        // fall 6,000 requests (a few seconds) behind the others before its samples are late.
        r#"
[engine]
epoch = "1s"
state_dir = "state"
checkpoint_interval = "10s"
checkpoint_min_wall_interval = "100ms"
"#
    };
    let source = if alerts { source.to_string() } else { format!("{source}\n{PUSHED_SAMPLES}") };
    let text = format!("{}\n[output]\npath = \"out\"\nfsync = false\n", source.replace("PORT", &port.to_string()));
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("pipeline.toml"), text).unwrap();
}

fn start(dir: &Path, n: usize) -> Child {
    let log = std::fs::File::create(dir.join(format!("run-{n}.log"))).unwrap();
    Command::new(bin())
        .args(["run", &dir.join("pipeline.toml").to_string_lossy(), "--workers", "2"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Per push: (answered 2xx, tries that were not).
type Ledger = Arc<Mutex<Vec<(bool, u64)>>>;

/// `CLIENTS` threads pushing `n` pushes, each re-sent until answered 2xx, at most `rate`
/// pushes a second in all (so that the pushes span several killed runs however fast the
/// machine answers).
fn pushers(
    url: &str,
    n: u64,
    rate: f64,
    alerts: bool,
    ledger: &Ledger,
    done: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|c| {
            let (url, ledger, done, stop) = (url.to_string(), ledger.clone(), done.clone(), stop.clone());
            let start = Instant::now();
            std::thread::spawn(move || {
                for i in (c..n).step_by(CLIENTS as usize) {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    let (path, headers, payload): (&str, Vec<(&str, &str)>, Vec<u8>) = if alerts {
                        let a = format!(
                            r#"[{{"labels":{{"alertname":"A{i}","job":"wal"}},"startsAt":"2026-01-01T00:00:00Z","endsAt":"2999-01-01T00:00:00Z"}}]"#
                        );
                        ("/api/v2/alerts", vec![("Content-Type", "application/json")], a.into_bytes())
                    } else {
                        let req = i.to_string();
                        let samples = (0..SAMPLES).map(|k| (T0 + i as i64 * 10 + k as i64, (i * SAMPLES + k) as f64)).collect();
                        let series = [TimeSeries { labels: vec![("__name__", "wal_test"), ("req", &req)], samples }];
                        ("/api/v1/write", vec![("Content-Encoding", "snappy")], body(&series))
                    };
                    loop {
                        assert!(!stop.load(Ordering::Relaxed), "the test gave up");
                        match request("POST", &url, path, &headers, &payload) {
                            Ok(r) if r.status / 100 == 2 => break,
                            Ok(r) => assert!(r.status == 503, "push {i}: {} {}", r.status, r.text()),
                            Err(_) => {} // the run is down: try again
                        }
                        ledger.lock().unwrap()[i as usize].1 += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    ledger.lock().unwrap()[i as usize].0 = true;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

/// The committed checkpoint's event time (0: none).
fn committed(dir: &Path) -> i64 {
    let current = std::fs::read_to_string(dir.join("state/CURRENT")).unwrap_or_default();
    current.trim().strip_prefix("chk-").and_then(|t| t.parse().ok()).unwrap_or(0)
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(t.elapsed() < limit, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pushes `n` pushes while killing the run `kills` times; returns the ledger, once a last run
/// has taken every push and stopped at a checkpoint on SIGTERM.
fn push_through_kills(dir: &Path, alerts: bool, n: u64, kills: usize, seed: u64) -> Vec<(bool, u64)> {
    let port = free_port();
    pipeline(dir, port, alerts);
    let url = format!("http://127.0.0.1:{port}");
    let ledger: Ledger = Arc::new(Mutex::new(vec![(false, 0); n as usize]));
    let (done, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    // At most ~10 s of pushes for the alerts' runs of 1.5–4.5 s, ~5 s for the samples' of
    // 0.4–2.4 s: each part's pushes outlast at least its first three runs (a faster machine
    // once took all 60,000 alerts within two).
    let rate = if alerts { 6_000.0 } else { 8_000.0 };
    let clients = pushers(&url, n, rate, alerts, &ledger, &done, &stop);
    let mut r = Lcg(seed);
    let (mut runs, mut resumed, mut replayed_without_checkpoint) = (0, 0, 0);
    for _ in 0..kills {
        if done.load(Ordering::Relaxed) == n {
            break;
        }
        let committed = dir.join("state/CURRENT").exists();
        let logged = std::fs::read_dir(dir.join("state/wal")).is_ok();
        resumed += committed as usize;
        replayed_without_checkpoint += (logged && !committed) as usize;
        let mut child = start(dir, runs);
        runs += 1;
        // Alerts' checkpoints come with the wall clock (every 2 s): runs long enough for some.
        let (least, spread) = if alerts { (1_500, 3_000) } else { (400, 2_000) };
        std::thread::sleep(Duration::from_millis(least + r.below(spread)));
        assert!(
            child.try_wait().unwrap().is_none(),
            "run {runs} ended by itself: see {}",
            dir.join(format!("run-{}.log", runs - 1)).display()
        );
        assert!(Command::new("kill").args(["-9", &child.id().to_string()]).status().unwrap().success());
        let _ = child.wait();
    }
    assert!(runs >= 3, "the pushes ended after {runs} runs: the test would prove little");
    assert!(resumed >= 1, "no run resumed from a checkpoint ({runs} runs)");
    eprintln!(
        "{}: {runs} killed runs, {resumed} resumed from a checkpoint, {replayed_without_checkpoint} from the log alone",
        dir.display()
    );

    // The last run takes the rest.
    let mut child = start(dir, runs);
    let t = Instant::now();
    while done.load(Ordering::Relaxed) < n {
        if t.elapsed() > Duration::from_secs(120) {
            stop.store(true, Ordering::Relaxed);
            panic!("only {} of {n} pushes answered after 120 s", done.load(Ordering::Relaxed));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for c in clients {
        c.join().unwrap();
    }
    // Event time goes on as it does live — the wall clock for alerts; for samples, a pusher
    // pushing one sample an hour later every 300 ms — until a checkpoint after every pushed
    // record is committed. SIGTERM then ends the run at that one or a later one.
    let mut hour = 0;
    let mut tick = || {
        if !alerts {
            hour += 1;
            let series = [TimeSeries { labels: vec![("__name__", "tick"), ("req", "tick")], samples: vec![(T0 + hour * 3_600_000, 0.0)] }];
            let _ = request("POST", &url, "/api/v1/write", &[("Content-Encoding", "snappy")], &body(&series));
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let past_all = if alerts { alertflow_model::time::wall_now() + 1_000 } else { T0 + n as i64 * 10 + 1_000 };
    let t = Instant::now();
    while committed(dir) <= past_all {
        assert!(t.elapsed() < Duration::from_secs(60), "no checkpoint past every record after 60 s");
        tick();
    }
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    while child.try_wait().unwrap().is_none() {
        tick();
    }
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let log = std::fs::read_to_string(dir.join(format!("run-{runs}.log"))).unwrap();
    assert!(status.success(), "SIGTERM must exit 0 at a checkpoint, got {status}: {log}");
    assert!(log.contains("stopped at the checkpoint"), "{log}");
    Arc::try_unwrap(ledger).unwrap().into_inner().unwrap()
}

#[test]
fn kill_9_loses_no_acknowledged_push() {
    let dir = Scratch::new("push-wal");

    // Samples: per request, its count of samples in the table, its sum to tell a doubled push.
    let d = dir.join("samples");
    let n = 40_000;
    let ledger = push_through_kills(&d, false, n, 6, 2026);
    let csv = query_csv(&d.join("out"), "SELECT req, SUM(count) AS n, SUM(sum) AS s FROM per_req WHERE req <> 'tick' GROUP BY req");
    let mut seen = vec![0u64; n as usize];
    for line in csv.lines().skip(1) {
        let c: Vec<&str> = line.split(',').collect();
        let i: usize = c[0].parse().unwrap();
        let (count, sum): (u64, f64) = (c[1].parse().unwrap(), c[2].parse().unwrap());
        assert_eq!(count % SAMPLES, 0, "request {i}: {count} samples, not a whole number of pushes");
        let one: f64 = (0..SAMPLES).map(|k| (i as u64 * SAMPLES + k) as f64).sum();
        assert_eq!(sum, one * (count / SAMPLES) as f64, "request {i}");
        seen[i] = count / SAMPLES;
    }
    let dead = query_csv(&d.join("out"), "SELECT COUNT(*) FROM dead_letters");
    assert_eq!(dead.lines().nth(1), Some("0"), "no sample may be late or unreadable: {dead}");
    check(&ledger, &seen, "samples");

    // Alerts: each alert opened once (a re-sent firing alert is the same alert to dedup), so
    // only a missing one can show; the notices count the pushes taken.
    let d = dir.join("alerts");
    let n = 60_000;
    let ledger = push_through_kills(&d, true, n, 4, 7);
    let csv = query_csv(&d.join("out"), "SELECT alertname, COUNT(*) FROM alerts WHERE event = 'opened' GROUP BY alertname");
    let mut seen = vec![0u64; n as usize];
    for line in csv.lines().skip(1) {
        let (name, count) = line.split_once(',').unwrap();
        let i: usize = name.strip_prefix('A').unwrap().parse().unwrap();
        assert_eq!(count, "1", "alert {name} opened {count} times");
        seen[i] = 1;
    }
    let missing: Vec<usize> = (0..n as usize).filter(|&i| seen[i] == 0).collect();
    assert!(missing.is_empty(), "{} acknowledged alerts lost, e.g. {:?}", missing.len(), &missing[..missing.len().min(10)]);
    check(&ledger, &seen, "alerts");
}

/// Every push was answered 2xx; each is in the table at least once, and more often only by
/// as many tries as went unanswered.
fn check(ledger: &[(bool, u64)], seen: &[u64], what: &str) {
    let mut retried = 0;
    for (i, (acked, failed)) in ledger.iter().enumerate() {
        assert!(*acked, "{what}: push {i} was never answered");
        assert!(seen[i] >= 1, "{what}: push {i} was acknowledged and is not in the table (tries without an answer: {failed})");
        assert!(seen[i] <= 1 + failed, "{what}: push {i} is in the table {} times but was sent {} times", seen[i], 1 + failed);
        retried += (*failed > 0) as usize;
    }
    assert!(retried > 0, "{what}: no push was ever refused or cut off: the kills proved nothing");
}
