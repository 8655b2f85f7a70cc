//! `alertflow bench`: every scenario runs from the binary at a small scale and reports figures
//! that agree with what it wrote (record counts from the generators' sizes, rows from the
//! Parquet tables read back with SQL).

use alertflow_tests::{Scratch, alertflow, query_csv};

#[test]
fn every_scenario_reports_what_it_ran() {
    let dir = Scratch::new("bench");
    let out = alertflow(&[
        "bench",
        "metrics",
        "alerts",
        "anomaly",
        "end-to-end",
        "kafka",
        "push",
        "push-wal",
        "--scale",
        "0.02",
        "--workers",
        "2",
        "--json",
        "--dir",
        &dir.0.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let rows = report.as_array().expect("an array");
    let names: Vec<&str> = rows.iter().map(|r| r["scenario"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "metrics",
            "alerts",
            "anomaly",
            "end-to-end",
            "kafka",
            "push:remote_write",
            "push:alerts",
            "push-wal:remote_write",
            "push-wal:alerts"
        ]
    );
    let by = |n: &str| rows.iter().find(|r| r["scenario"] == n).unwrap();
    // 2 % of W1's 2,000,000 points; of the anomaly and end-to-end scenarios' 1,000,000.
    assert_eq!(by("metrics")["records"], 40_000);
    assert_eq!(by("kafka")["records"], 40_000);
    assert_eq!(by("anomaly")["records"], 20_000);
    // 2 % of the push scenario's 2,000,000 samples and 200,000 alerts, every one counted by the run.
    assert_eq!(by("push:remote_write")["records"], 40_000);
    assert_eq!(by("push:alerts")["records"], 4_000);
    // With checkpoints every push went through a write-ahead log: its segments are there.
    assert_eq!(by("push-wal:remote_write")["records"], 40_000);
    assert_eq!(by("push-wal:alerts")["records"], 4_000);
    for source in ["remote_write", "alertmanager"] {
        let logged: u64 = (0..2)
            .filter_map(|w| std::fs::read_dir(dir.join(&format!("push-wal/state/wal/{source}/w{w}"))).ok())
            .flat_map(|d| d.flatten())
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(logged > 4_000, "{source}: {logged} bytes logged");
    }
    let alerts = by("alerts")["records"].as_u64().unwrap();
    assert!(alerts > 10_000, "{alerts} notices");
    assert_eq!(by("end-to-end")["records"].as_u64().unwrap(), alerts + 20_000, "the same alert stream plus the points");
    // At most the CPUs /proc/stat counts (a cgroup may offer fewer, never more).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    for r in rows {
        let (n, secs, rps) = (r["records"].as_f64().unwrap(), r["seconds"].as_f64().unwrap(), r["records_per_second"].as_f64().unwrap());
        assert!(secs > 0.0 && (rps - n / secs).abs() <= 1e-6 * rps, "{r}");
        assert!(r["bytes_per_second"].as_f64().unwrap() > rps, "{r}: records are longer than a byte");
        assert!(r["peak_rss_bytes"].as_u64().unwrap() > 8 << 20, "{r}");
        // The hypervisor's steal (zero on bare metal): a share of the run's CPU time, given
        // once the run spans 100 ticks of /proc/stat (100 per CPU-second) — surely once it
        // spans 1.5 CPU-seconds, a phase of it included (the push phases are parts of one run).
        match r.get("host_steal_percent") {
            Some(steal) => {
                let steal = steal.as_f64().unwrap_or_else(|| panic!("{r}: steal is a number"));
                assert!((0.0..=100.0).contains(&steal), "{r}");
            }
            None => assert!(secs * cpus < 1.5, "{r}: a run of {secs} s on {cpus} CPUs has no steal figure"),
        }
        assert_eq!(r["workers"], 2);
        assert!(r.get("pinned_to").is_none(), "{r}: workers are not pinned unless asked");
        assert_eq!(r["sink"], "parquet");
    }
    // Rows written, read back with SQL from each scenario's output folder.
    let count = |scenario: &str, tables: &[&str]| -> u64 {
        let sum = tables.iter().map(|t| format!("(SELECT count(*) FROM {t})")).collect::<Vec<_>>().join(" + ");
        let csv = query_csv(&dir.join(&format!("{scenario}/out")), &format!("SELECT {sum} AS n"));
        csv.lines().nth(1).unwrap().trim().parse().unwrap()
    };
    for (scenario, tables) in [
        ("metrics", &["per_minute", "dead_letters"][..]),
        ("kafka", &["per_minute", "dead_letters"]),
        ("anomaly", &["zscore", "mad", "holt_winters", "dead_letters"]),
        ("alerts", &["alerts", "storms", "incidents", "dead_letters"]),
        ("end-to-end", &["per_minute", "per_tenant_5m", "anomalies", "alerts", "storms", "incidents", "dead_letters"]),
    ] {
        assert_eq!(by(scenario)["rows_out"].as_u64().unwrap(), count(scenario, tables), "{scenario}: rows_out against the tables");
    }
    // Both push phases are one run: its rows are reported with each.
    let pushed = count("push", &["per_minute", "alerts", "storms", "incidents", "dead_letters"]);
    assert_eq!(by("push:remote_write")["rows_out"].as_u64().unwrap(), pushed);
    assert_eq!(by("push:alerts")["rows_out"].as_u64().unwrap(), pushed);
    // 10 jobs × 200 rounds of 10 s at 2 %: 4 rounds, 40 s of samples, a window per job and minute.
    let windows = query_csv(&dir.join("push/out"), "SELECT count(*) AS n, sum(count) AS c FROM per_minute");
    assert_eq!(windows.lines().nth(1).unwrap().trim(), "10,40000", "{windows}");
    assert_eq!(count("metrics", &["per_minute"]), count("kafka", &["per_minute"]), "W1 from a file and from Kafka: the same windows");
    assert!(count("end-to-end", &["alerts"]) > count("alerts", &["alerts"]), "rule and detector alerts join the alert stream");
    let opened =
        query_csv(&dir.join("end-to-end/out"), "SELECT count(*) AS n FROM alerts WHERE alertname = 'HostCpuHigh' AND event = 'opened'");
    assert_eq!(opened.lines().nth(1).unwrap().trim(), "3", "the rule fires once for each of the 3 hot hosts");
}

#[test]
fn the_human_report_is_a_table_and_bad_arguments_are_refused() {
    let out = alertflow(&["bench", "metrics", "--scale", "0.005", "--workers", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let head = lines.next().unwrap();
    for col in ["scenario", "workers", "records", "wall", "records/s", "MB/s", "peak RSS", "steal", "sink"] {
        assert!(head.contains(col), "{head}");
    }
    let row = lines.next().unwrap();
    assert!(row.starts_with("metrics ") && row.contains("10,000") && row.ends_with("parquet"), "{row}");
    assert!(row.contains(" %  parquet") || row.contains(" —  parquet"), "{row}: the run's steal, or a dash for a run too short");
    let bad = alertflow(&["bench", "--scale", "0"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--scale must be greater than 0"));
    let bad = alertflow(&["bench", "nonsense"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn pin_workers_reaches_the_run_and_the_report_says_where() {
    // One worker: it goes to the first CPU this process may use (the run inherits the mask).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim().to_string();
    let first: u64 = list.split([',', '-']).next().unwrap().parse().unwrap();
    let out = alertflow(&["bench", "metrics", "--scale", "0.005", "--workers", "1", "--pin-workers", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report[0]["pinned_to"], serde_json::json!([first]), "{report}");
    assert!(report[0].get("writers").is_none(), "no writer priority asked for, none reported: {report}");
    let out = alertflow(&["bench", "metrics", "--scale", "0.005", "--workers", "1", "--pin-workers"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().nth(1).unwrap();
    assert!(row.starts_with("metrics ") && row.contains(" 1 pinned "), "{text}");
}

#[test]
fn a_writer_priority_asked_for_reaches_the_run_and_the_report() {
    // `--writers` goes to `alertflow run` as given: a bad value there would fail the scenario.
    let out = alertflow(&["bench", "metrics", "--scale", "0.005", "--workers", "1", "--writers", "idle", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report[0]["writers"], "idle", "{report}");
    let out = alertflow(&["bench", "metrics", "--scale", "0.005", "--workers", "1", "--pin-workers", "--writers", "idle"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().nth(1).unwrap().contains(" 1 pinned, idle writers "), "{text}");
    let bad = alertflow(&["bench", "metrics", "--writers", "high"]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("'high'") && err.contains("idle") && err.contains("low"), "{err}");
}

#[test]
fn the_fixed_rate_mode_paces_the_replay_and_reports_latency_per_table_and_sink() {
    let dir = Scratch::new("bench-rate");
    let out = alertflow(&[
        "bench",
        "metrics",
        "alerts",
        "--rate",
        "20000",
        "--duration",
        "2s",
        "--workers",
        "2",
        "--json",
        "--dir",
        &dir.0.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    for r in report.as_array().unwrap() {
        assert_eq!(r["records"], 40_000, "{r}");
        assert_eq!(r["rate"], 20_000, "{r}");
        // Paced: 2 s of data cannot be replayed much faster than in 2 s.
        assert!(r["seconds"].as_f64().unwrap() >= 1.9, "{r}");
        let lat = r["latency"].as_array().unwrap();
        let get = |table: &str, sink: &str| {
            lat.iter().find(|l| l["table"] == table && l["sink"] == sink).unwrap_or_else(|| panic!("{table}/{sink} in {r}"))
        };
        for l in lat {
            let q: Vec<f64> = ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"].iter().map(|k| l[k].as_f64().unwrap()).collect();
            assert!(q.windows(2).all(|w| w[0] <= w[1]) && q[0] > 0.0, "percentiles in order: {l}");
            let memory = get(l["table"].as_str().unwrap(), "memory");
            assert_eq!(l["rows"], memory["rows"], "both sinks see the same rows: {l}");
            if l["sink"] == "parquet" {
                assert!(l["p50_ms"].as_f64() >= memory["p50_ms"].as_f64(), "a row leaves the dataflow before its file is written: {l}");
            }
        }
    }
    let by = |n: &str| report.as_array().unwrap().iter().find(|r| r["scenario"] == n).unwrap();
    // Windows are measured when closed by time, not by the end of the input: the 1 s windows
    // ending by the last record's time (T0 + 1.99995 s), i.e. the first second's, one row per
    // host.
    let windows = &by("metrics")["latency"].as_array().unwrap()[0];
    assert_eq!((windows["table"].as_str(), windows["output"].as_str()), (Some("per_second"), Some("window")));
    let closed = query_csv(
        &dir.join("metrics/out"),
        "SELECT count(*) AS n FROM per_second WHERE window_end <= TIMESTAMP '2026-01-01T00:00:01.999Z'",
    );
    assert_eq!(windows["rows"].as_u64().unwrap(), closed.lines().nth(1).unwrap().trim().parse::<u64>().unwrap());
    assert!(windows["rows"].as_u64().unwrap() > 1_000);
    let alerts = by("alerts")["latency"].as_array().unwrap();
    for t in ["alerts", "incidents", "storms"] {
        assert!(alerts.iter().any(|l| l["table"] == t && l["output"] == "record" && l["rows"].as_u64().unwrap() > 0), "{t}: {alerts:?}");
    }

    let bad = alertflow(&["bench", "kafka", "--rate", "1000"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no fixed-rate mode"));
    let bad = alertflow(&["bench", "--rate", "0"]);
    assert_eq!(bad.status.code(), Some(2));
    let bad = alertflow(&["bench", "metrics", "--duration", "5s"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--duration applies to the fixed-rate mode"));
}

#[test]
fn the_fixed_rate_human_report_has_a_latency_table() {
    let out = alertflow(&["bench", "metrics", "--rate", "20000", "--duration", "1500ms", "--workers", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("processing latency at 20,000 records/s (ms):"), "{text}");
    let head = text.lines().find(|l| l.starts_with("scenario") && l.contains("p99.9")).expect("a latency table");
    for col in ["table", "output", "sink", "rows", "p50", "p90", "p99", "max"] {
        assert!(head.contains(col), "{head}");
    }
    // The first second's window closes by time: rows measured, through both sinks.
    for sink in ["memory", "parquet"] {
        let row = text.lines().find(|l| l.starts_with("metrics") && l.contains("per_second") && l.contains(sink)).expect("a row");
        let rows: u64 = row.split_whitespace().nth(4).unwrap().replace(',', "").parse().unwrap();
        assert!(rows > 1_000, "{row}");
    }
}
