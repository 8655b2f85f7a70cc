//! The alert chain end to end through the binary: alert files (NDJSON, Alertmanager JSON) →
//! dedup → suppress → correlate → the `alerts`, `storms` and `incidents` tables.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alertflow_tests::{Scratch, bin, query_csv, run_json};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const MIN: i64 = 60_000;

/// A small deterministic generator (xorshift), so the data does not depend on a crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn line(ts: i64, tenant: &str, alertname: &str, service: &str, instance: &str, status: &str) -> String {
    format!(
        r#"{{"ts":{ts},"tenant":"{tenant}","alertname":"{alertname}","severity":"critical","status":"{status}","service":"{service}","instance":"{instance}"}}"#
    )
}

/// Seeded random alert notices with re-sends, resolutions, silences, a storm and disorder
/// (some beyond `max_out_of_orderness`: late), split over three files.
fn random_alerts(dir: &Path, seed: u64) {
    let mut r = Rng(seed);
    let services = ["edge", "api", "auth", "cart", "pay", "ship", "db", "cache", "queue", "search"];
    let mut rows: Vec<(i64, String)> = Vec::new();
    for tenant in ["acme", "globex"] {
        for _ in 0..40 {
            let svc = services[r.below(services.len() as u64) as usize];
            let name = ["HighErrorRate", "HighLatency", "PodCrashLooping"][r.below(3) as usize];
            let inst = format!("{svc}-{}", r.below(4));
            let mut t = T0 + r.below(90) as i64 * MIN;
            for _ in 0..1 + r.below(12) {
                rows.push((t, line(t, tenant, name, svc, &inst, "firing")));
                t += 30_000;
            }
            match r.below(3) {
                0 => rows.push((t, line(t, tenant, name, svc, &inst, "resolved"))),
                1 => {} // silence: expires after resolve_timeout
                _ => {
                    // Flapping: a few quick cycles.
                    for _ in 0..4 {
                        rows.push((t, line(t, tenant, name, svc, &inst, "resolved")));
                        t += 20_000;
                        rows.push((t, line(t, tenant, name, svc, &inst, "firing")));
                        t += 20_000;
                    }
                }
            }
        }
        // A storm: one data store failing, 150 distinct pods within a minute.
        let s = T0 + 40 * MIN;
        for i in 0..150 {
            let t = s + r.below(50_000) as i64;
            rows.push((t, line(t, tenant, "UpstreamUnavailable", ["api", "cart", "pay"][i % 3], &format!("pod-{i}"), "firing")));
        }
    }
    rows.sort_by_key(|(t, _)| *t);
    // Disorder: swap neighbours, and move a few records far back (late).
    for i in 1..rows.len() {
        if r.below(4) == 0 {
            rows.swap(i - 1, i);
        }
    }
    let mut files = [String::new(), String::new(), String::new()];
    for (i, (_, l)) in rows.iter().enumerate() {
        let f = &mut files[i % 3];
        if r.below(200) == 0 && i > 50 {
            // Late: an old re-send that shows up far behind its neighbours.
            let _ = writeln!(f, "{}", line(rows[i - 50].0 - 60_000, "acme", "HighLatency", "db", "db-late", "firing"));
        }
        let _ = writeln!(f, "{l}");
    }
    files[1].push_str("{\"ts\": oops}\n");
    for (i, f) in files.iter().enumerate() {
        std::fs::write(dir.join(format!("alerts-{i}.ndjson")), f).unwrap();
    }
    std::fs::write(
        dir.join("topology.csv"),
        "service,depends_on,team,tier\nedge,api,web,0\napi,auth,core,1\napi,cart,core,1\ncart,pay,shop,1\npay,db,shop,1\nship,queue,logistics,2\nauth,cache,core,1\nsearch,,,\ndb,,data,3\n",
    )
    .unwrap();
}

const RANDOM_PIPELINE: &str = r#"
[[source]]
name = "alerts"
type = "file"
path = "alerts-*.ndjson"
records = "alerts"
chunk_size = "4KiB"

[dedup]
resolve_timeout = "3m"
flap_threshold = 3
flap_window = "10m"

[suppress]
threshold = 30

[correlate]
topology = "topology.csv"
service_label = "service"

[output]
path = "out"
"#;

fn tables(out: &Path) -> [String; 4] {
    [
        query_csv(out, "SELECT * FROM alerts ORDER BY tenant, fingerprint, revision, event"),
        query_csv(out, "SELECT * FROM storms ORDER BY tenant, storm_id, revision"),
        query_csv(out, "SELECT * FROM incidents ORDER BY tenant, incident_id, revision"),
        query_csv(out, "SELECT source, file, line, reason, ts FROM dead_letters ORDER BY file, line, ts"),
    ]
}

#[test]
fn alert_tables_are_the_same_on_1_2_and_4_workers() {
    let dir = Scratch::new("alerts-workers");
    random_alerts(&dir.0, 7);
    std::fs::write(dir.join("pipeline.toml"), RANDOM_PIPELINE).unwrap();
    let mut first: Option<[String; 4]> = None;
    for workers in [1, 2, 4] {
        let summary = run_json(&dir.join("pipeline.toml"), workers);
        assert!(summary["late"].as_u64().unwrap() > 0, "the data has late records");
        assert_eq!(summary["dead_letters"].as_u64().unwrap(), 1, "one malformed line");
        let t = tables(&dir.join("out"));
        match &first {
            None => first = Some(t),
            Some(f) => {
                for (i, name) in ["alerts", "storms", "incidents", "dead_letters"].iter().enumerate() {
                    assert!(f[i] == t[i], "table {name} differs between 1 and {workers} workers");
                }
            }
        }
    }
    let out = dir.join("out");
    // Unique revisions per fingerprint, and the invariants of episodes.
    let dup = query_csv(&out, "SELECT count(*) - count(DISTINCT (tenant, fingerprint, revision)) AS d FROM alerts");
    assert_eq!(dup.trim(), "d\n0");
    let events = query_csv(&out, "SELECT event FROM alerts GROUP BY event ORDER BY event");
    for e in ["expired", "flapping", "opened", "resolved"] {
        assert!(events.contains(e), "no `{e}` row in\n{events}");
    }
    let storms = query_csv(&out, "SELECT count(DISTINCT storm_id) AS n, max(distinct_fingerprints) >= 30 AS big FROM storms");
    assert_eq!(storms.trim(), "n,big\n2,true", "one storm per tenant");
    // Every episode's current row has an incident; incidents never span tenants.
    let orphans = query_csv(
        &out,
        "SELECT count(*) AS n FROM (SELECT incident_id, row_number() OVER (PARTITION BY tenant, fingerprint, starts_at ORDER BY revision DESC) AS k FROM alerts) WHERE k = 1 AND incident_id IS NULL",
    );
    assert_eq!(orphans.trim(), "n\n0");
    let cross = query_csv(
        &out,
        "SELECT count(*) AS n FROM (SELECT incident_id FROM incidents GROUP BY incident_id HAVING count(DISTINCT tenant) > 1)",
    );
    assert_eq!(cross.trim(), "n\n0");
    // Enrich: team and tier of the alert's service from the topology (none for `search`,
    // whose row names neither).
    let enriched = query_csv(&out, "SELECT DISTINCT team, tier FROM alerts WHERE alertname = 'UpstreamUnavailable' ORDER BY team");
    assert_eq!(enriched, "team,tier\ncore,1\nshop,1\n");
    let search = query_csv(&out, "SELECT count(*) AS n, count(team) AS teams FROM alerts WHERE labels LIKE '%\"service\":\"search\"%'");
    assert!(search.starts_with("n,teams\n") && !search.starts_with("n,teams\n0,") && search.trim().ends_with(",0"), "{search}");
}

#[test]
fn alertmanager_lifecycle_parity() {
    let dir = Scratch::new("alerts-am");
    let iso = |ms: i64| {
        let s = ms / 1000;
        format!("2026-01-01T{:02}:{:02}:{:02}Z", s / 3600 % 24, s / 60 % 60, s % 60)
    };
    let mut text = String::new();
    // `Steady` is re-sent every 30 s for an hour, then resolved (endsAt in the past).
    // `Gone` started at 00:01, is re-sent from 00:02 to 00:10, then falls silent: like
    // Alertmanager, it resolves at its last `endsAt` (00:14). `Quiet` (NDJSON, no endsAt) is
    // re-sent for ten minutes and expires `resolve_timeout` after it was last seen.
    let mut quiet = String::new();
    for k in 0..=120 {
        let at = k * 30_000;
        let mut batch = vec![format!(
            r#"{{"labels":{{"alertname":"Steady","job":"db","severity":"critical"}},"startsAt":"{}","endsAt":"{}","receivedAt":"{}"}}"#,
            iso(0),
            iso(at + 4 * MIN),
            iso(at)
        )];
        if (2 * MIN..=10 * MIN).contains(&at) {
            batch.push(format!(
                r#"{{"labels":{{"alertname":"Gone","job":"web"}},"startsAt":"{}","endsAt":"{}","receivedAt":"{}"}}"#,
                iso(MIN),
                iso(at + 4 * MIN),
                iso(at)
            ));
        }
        let _ = writeln!(text, "[{}]", batch.join(","));
        if at <= 10 * MIN {
            let _ = writeln!(quiet, r#"{{"ts":"{}","alertname":"Quiet","job":"batch"}}"#, iso(at));
        }
    }
    let end = 60 * MIN + 15_000;
    let _ = writeln!(
        text,
        r#"{{"labels":{{"alertname":"Steady","job":"db","severity":"critical"}},"startsAt":"{}","endsAt":"{}","receivedAt":"{}"}}"#,
        iso(0),
        iso(end),
        iso(end)
    );
    std::fs::write(dir.join("am.json"), text).unwrap();
    std::fs::write(dir.join("quiet.ndjson"), quiet).unwrap();
    std::fs::write(
        dir.join("pipeline.toml"),
        "[[source]]\nname = \"am\"\ntype = \"file\"\npath = \"am.json\"\nformat = \"alertmanager\"\nrecords = \"alerts\"\n\n\
         [[source]]\nname = \"quiet\"\ntype = \"file\"\npath = \"quiet.ndjson\"\nrecords = \"alerts\"\n\n\
         [dedup]\nresolve_timeout = \"5m\"\n\n[output]\npath = \"out\"\n",
    )
    .unwrap();
    for workers in [1, 2] {
        let s = run_json(&dir.join("pipeline.toml"), workers);
        assert_eq!(s["alerts"]["notices"].as_u64().unwrap(), 121 + 17 + 1 + 21);
        let rows = query_csv(
            &dir.join("out"),
            "SELECT alertname, event, status, occurrences, starts_at, ends_at, last_seen FROM alerts WHERE event <> 'regrouped' ORDER BY alertname DESC, revision",
        );
        let want = "alertname,event,status,occurrences,starts_at,ends_at,last_seen\n\
            Steady,opened,firing,1,2026-01-01T00:00:00Z,2026-01-01T00:04:00Z,2026-01-01T00:00:00Z\n\
            Steady,resolved,resolved,122,2026-01-01T00:00:00Z,2026-01-01T01:00:15Z,2026-01-01T01:00:15Z\n\
            Quiet,opened,firing,1,2026-01-01T00:00:00Z,,2026-01-01T00:00:00Z\n\
            Quiet,expired,resolved,21,2026-01-01T00:00:00Z,2026-01-01T00:15:00Z,2026-01-01T00:10:00Z\n\
            Gone,opened,firing,1,2026-01-01T00:01:00Z,2026-01-01T00:06:00Z,2026-01-01T00:02:00Z\n\
            Gone,expired,resolved,17,2026-01-01T00:01:00Z,2026-01-01T00:14:00Z,2026-01-01T00:10:00Z\n";
        assert_eq!(rows, want, "{workers} worker(s)");
    }
}

#[test]
fn topology_reload_regroups_open_incidents() {
    let dir = Scratch::new("alerts-reload");
    // `pay` and `ship` fire together for two hours of event time; the first topology does not
    // relate them, the second makes `pay` depend on `ship`.
    let mut text = String::new();
    for k in 0..240 {
        let t = T0 + k * 30_000;
        let _ = writeln!(text, "{}", line(t, "acme", "PaymentsFailing", "pay", "pay-0", "firing"));
        let _ = writeln!(text, "{}", line(t + 1000, "acme", "ShipmentsStuck", "ship", "ship-0", "firing"));
    }
    std::fs::write(dir.join("alerts.ndjson"), text).unwrap();
    std::fs::write(dir.join("topology.csv"), "service,depends_on,team\npay,,payments\nship,,logistics\n").unwrap();
    std::fs::write(
        dir.join("pipeline.toml"),
        "[[source]]\nname = \"alerts\"\ntype = \"file\"\npath = \"alerts.ndjson\"\nrecords = \"alerts\"\nreplay_rate = 120\n\n\
         [correlate]\ntopology = \"topology.csv\"\nservice_label = \"service\"\n\n[output]\npath = \"out\"\n",
    )
    .unwrap();
    let start = Instant::now();
    let child = Command::new(bin())
        .args(["run", &dir.join("pipeline.toml").to_string_lossy(), "--workers", "2", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // 480 lines at 120/s: about four seconds. Change the file 1.5 s in (atomically).
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(dir.join("topology.new"), "service,depends_on,team\npay,ship,payments\nship,,fulfilment\n").unwrap();
    std::fs::rename(dir.join("topology.new"), dir.join("topology.csv")).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(start.elapsed() > Duration::from_millis(3000), "the replay was paced");
    let o = dir.join("out");
    let first = query_csv(&o, "SELECT count(DISTINCT incident_id) AS n FROM alerts WHERE event = 'opened'");
    assert_eq!(first.trim(), "n\n2", "before the change the two alerts are separate incidents");
    let last = query_csv(
        &o,
        "SELECT count(DISTINCT incident_id) AS n FROM (SELECT incident_id, row_number() OVER (PARTITION BY fingerprint ORDER BY revision DESC) AS k FROM alerts) WHERE k = 1",
    );
    assert_eq!(last.trim(), "n\n1", "after the change they are one incident");
    let regrouped = query_csv(&o, "SELECT count(*) AS n FROM alerts WHERE event = 'regrouped'");
    assert_ne!(regrouped.trim(), "n\n0");
    let merged = query_csv(&o, "SELECT count(*) AS n FROM incidents WHERE status = 'merged'");
    assert_eq!(merged.trim(), "n\n1", "the younger incident is merged into the older");
    let root = query_csv(&o, "SELECT root_cause FROM incidents WHERE status <> 'merged' ORDER BY revision DESC LIMIT 1");
    assert_eq!(root.trim(), "root_cause\nship", "pay depends on ship: ship is upstream");
    // Enrich follows the reload too: ship's team changes, pay's stays.
    let teams = query_csv(
        &o,
        "SELECT alertname, first_value(team ORDER BY revision) AS before, last_value(team ORDER BY revision) AS after FROM alerts GROUP BY alertname ORDER BY alertname",
    );
    assert_eq!(teams, "alertname,before,after\nPaymentsFailing,payments,payments\nShipmentsStuck,logistics,fulfilment\n");
}
