//! The HTTP interface against a real server on 127.0.0.1:0.

mod common;

use std::time::Duration;

use alertflow_queries::QueryLimits;
use alertflow_serve::client::{self, ClientError, HttpResponse};
use common::*;
use datafusion::arrow::array::{AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::ipc::reader::StreamReader;

fn post(url: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], sql: &str) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h: Vec<(&str, &str)> = headers.to_vec();
    if let Some(a) = &auth {
        h.push(("Authorization", a));
    }
    client::request("POST", url, path, &h, sql.as_bytes()).unwrap()
}

fn get(url: &str, path: &str, token: Option<&str>) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let h: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    client::request("GET", url, path, &h, b"").unwrap()
}

fn json(r: &HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

#[test]
fn answers_in_json_csv_and_arrow() {
    let s = serve(QueryLimits::default(), tokens());
    let url = s.url();
    let q = "SELECT tenant, ts, value, tags FROM events WHERE value < 100 ORDER BY value";

    // JSON by default: row objects, timestamps as ISO text, lists as arrays.
    let r = post(&url, "/sql", Some(ROOT), &[], q);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let rows = json(&r);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["tenant"], "acme");
    assert_eq!(rows[2]["value"], 3);
    let ts = rows[0]["ts"].as_str().unwrap();
    assert!(ts.starts_with("2024-01-01T00:00:00"), "{ts}");
    assert_eq!(rows[1]["tags"], serde_json::json!(["x", "t1"]));

    // CSV through Accept, with a header line.
    let r = post(&url, "/sql", Some(ROOT), &[("Accept", "text/csv")], "SELECT value, host FROM events ORDER BY value");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    assert_eq!(r.text(), "value,host\n1,a1\n2,a2\n3,a3\n100,g1\n200,g2\n");
    // An empty answer still has its header.
    let r = post(&url, "/sql", Some(ROOT), &[("Accept", "text/csv")], "SELECT value, host FROM events WHERE value < 0");
    assert_eq!(r.text(), "value,host\n");

    // ?format= wins over Accept.
    let r = post(&url, "/sql?format=csv", Some(ROOT), &[("Accept", "application/json")], "SELECT 1 AS one");
    assert_eq!(r.text(), "one\n1\n");
    let r = post(&url, "/sql?format=json", Some(ROOT), &[("Accept", "text/csv")], "SELECT 1 AS one");
    assert_eq!(json(&r), serde_json::json!([{"one": 1}]));
    let r = post(&url, "/sql?format=xml", Some(ROOT), &[], "SELECT 1");
    assert_eq!(r.status, 400);

    // Arrow IPC: decoded with arrow's own reader, types and values intact.
    let r = post(&url, "/sql", Some(ROOT), &[("Accept", "application/vnd.apache.arrow.stream")], q);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/vnd.apache.arrow.stream"));
    let reader = StreamReader::try_new(std::io::Cursor::new(r.body), None).unwrap();
    let schema = reader.schema();
    assert_eq!(schema.field(1).data_type(), &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())));
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    let values: Vec<i64> = batches.iter().flat_map(|b| b.column(2).as_primitive::<Int64Type>().values().to_vec()).collect();
    assert_eq!(values, vec![1, 2, 3]);
    let ts: Vec<i64> = batches.iter().flat_map(|b| b.column(1).as_primitive::<TimestampMillisecondType>().values().to_vec()).collect();
    assert_eq!(ts, vec![T0, T0 + 1000, T0 + 2000]);

    // The client decodes the same.
    let (_, batches) = client::query(&url, Some(ROOT), "SELECT count FROM state ORDER BY count").unwrap();
    let counts: Vec<i64> =
        batches.iter().flat_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec()).collect();
    assert_eq!(counts, vec![10, 20, 900]);
}

#[test]
fn tables_metrics_and_health() {
    let s = serve(QueryLimits::default(), tokens());
    let url = s.url();
    let r = get(&url, "/tables", Some(ROOT));
    assert_eq!(r.status, 200);
    let t = json(&r);
    let names: Vec<&str> = t.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["events", "state"]);
    assert_eq!(t[0]["kind"], "history");
    assert_eq!(t[1]["kind"], "live");
    assert_eq!(t[0]["columns"][2], serde_json::json!({"name": "value", "type": "Int64", "nullable": false}));
    assert_eq!(t[1]["columns"].as_array().unwrap().len(), 3);

    assert_eq!(post(&url, "/sql", Some(ROOT), &[], "SELECT 1").status, 200);
    assert_eq!(post(&url, "/sql", Some(ROOT), &[], "SELEC 1").status, 400);
    let r = get(&url, "/metrics", Some(ROOT));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    let text = r.text();
    let sample = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{series} in {text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(sample("alertflow_queries_total{interface=\"http\",outcome=\"ok\"}"), 1.0);
    assert_eq!(sample("alertflow_queries_total{interface=\"http\",outcome=\"error\"}"), 1.0);
    assert_eq!(sample("alertflow_query_duration_seconds_count{interface=\"http\"}"), 2.0);
    assert_eq!(sample("alertflow_queries_total{interface=\"pg\",outcome=\"ok\"}"), 0.0);
    assert!(text.contains("# TYPE alertflow_query_duration_seconds histogram\n"), "{text}");
    // Every line is a comment or `series value`.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = l.rsplit_once(' ').unwrap();
        assert!(v == "+Inf" || v.parse::<f64>().is_ok(), "{l}");
    }

    // Health needs no token.
    let r = get(&url, "/health", None);
    assert_eq!(r.status, 200);
    assert_eq!(json(&r), serde_json::json!({"running": true, "frontier_ms": T0, "uptime_secs": 7}));
}

#[test]
fn tokens_are_required() {
    let s = serve(QueryLimits::default(), tokens());
    let url = s.url();
    for token in [None, Some("wrong"), Some("acme-secre"), Some("acme-secrett")] {
        let r = post(&url, "/sql", token, &[], "SELECT 1");
        assert_eq!(r.status, 401, "{token:?}");
        assert!(json(&r)["error"].as_str().unwrap().contains("Bearer"));
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert_eq!(get(&url, "/tables", token).status, 401);
        assert_eq!(get(&url, "/metrics", token).status, 401);
    }
    let e = client::query(&url, Some("wrong"), "SELECT 1").unwrap_err();
    assert!(matches!(e, ClientError::Server { status: 401, .. }), "{e}");
    // Without tokens (loopback) everyone is let in.
    let open = serve(QueryLimits::default(), vec![]);
    assert_eq!(post(&open.url(), "/sql", None, &[], "SELECT count(*) AS n FROM events").text(), "[{\"n\":5}]\n");
}

#[test]
fn errors_are_clear_and_the_server_keeps_serving() {
    let s = serve(QueryLimits::default(), tokens());
    let url = s.url();
    let check = |sql: &str, status: u16, sqlstate: &str, words: &str| {
        let r = post(&url, "/sql", Some(ROOT), &[], sql);
        assert_eq!(r.status, status, "{sql}: {}", r.text());
        let e = json(&r);
        assert_eq!(e["sqlstate"], sqlstate, "{sql}: {e}");
        assert!(e["error"].as_str().unwrap().contains(words), "{sql}: {e}");
        assert_eq!(post(&url, "/sql", Some(ROOT), &[], "SELECT 1 AS ok").status, 200);
    };
    check("SELEC value FROM events", 400, "42601", "SELEC");
    check("SELECT * FROM nope", 400, "42P01", "nope");
    check("SELECT nope FROM events", 400, "42703", "nope");
    check("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc'", 400, "25006", "DDL");
    check("INSERT INTO events VALUES ('acme', 0, 1, 'h', NULL)", 400, "25006", "DML");
    check("COPY events TO '/tmp/alertflow-serve-copy.csv'", 400, "25006", "COPY");
    check("SET datafusion.runtime.memory_limit = '10G'", 400, "25006", "not supported");
}

#[test]
fn time_limit_stops_a_query_and_the_next_one_works() {
    let s = serve(QueryLimits { timeout: Duration::from_millis(300), ..QueryLimits::default() }, tokens());
    let url = s.url();
    // Far longer than 300 ms in all, in short steps (batches), so it stops promptly.
    let r = post(&url, "/sql", Some(ROOT), &[], "SELECT count(*) FROM generate_series(1, 2000000000) a WHERE a.value % 7 = 3");
    assert_eq!(r.status, 503, "{}", r.text());
    let e = json(&r);
    assert_eq!(e["sqlstate"], "57014");
    assert!(e["error"].as_str().unwrap().contains("query_timeout"), "{e}");
    // The next query works.
    assert_eq!(post(&url, "/sql", Some(ROOT), &[], "SELECT count(*) AS n FROM events").text(), "[{\"n\":5}]\n");
}

#[test]
fn memory_limit_stops_a_query_and_the_next_one_works() {
    let s = serve(QueryLimits { memory: 1 << 20, ..QueryLimits::default() }, tokens());
    let url = s.url();
    let r = post(
        &url,
        "/sql",
        Some(ROOT),
        &[],
        "SELECT count(*) FROM generate_series(1, 2000000) a JOIN generate_series(1, 2000000) b ON a.value = b.value",
    );
    assert_eq!(r.status, 507, "{}", r.text());
    let e = json(&r);
    assert_eq!(e["sqlstate"], "53200", "{e}");
    assert!(e["error"].as_str().unwrap().contains("Resources exhausted"), "{e}");
    assert_eq!(post(&url, "/sql", Some(ROOT), &[], "SELECT count(*) AS n FROM events").text(), "[{\"n\":5}]\n");
}

#[test]
fn a_tenant_sees_only_its_rows_whatever_the_sql() {
    let s = serve(QueryLimits::default(), tokens());
    let url = s.url();
    let rows = |token: &str, sql: &str| -> serde_json::Value {
        let r = post(&url, "/sql", Some(token), &[], sql);
        assert_eq!(r.status, 200, "{sql}: {}", r.text());
        json(&r)
    };
    let tenants_of = |token: &str, sql: &str| -> Vec<String> {
        let mut t: Vec<String> = rows(token, sql).as_array().unwrap().iter().map(|r| r["tenant"].as_str().unwrap().to_string()).collect();
        t.sort();
        t.dedup();
        t
    };
    let acme = vec!["acme".to_string()];
    for sql in [
        "SELECT tenant FROM events",
        "SELECT tenant FROM events WHERE tenant <> 'acme' OR 1=1",
        "SELECT tenant FROM events UNION ALL SELECT tenant FROM state",
        "SELECT tenant FROM (SELECT * FROM events WHERE value > 0) sub",
        "SELECT e.tenant FROM events e JOIN state s ON true",
        "SELECT tenant FROM events WHERE tenant IN (SELECT 'globex') OR tenant = 'acme'",
        "SELECT tenant FROM alertflow.public.events",
    ] {
        assert_eq!(tenants_of(ACME, sql), acme, "{sql}");
    }
    assert_eq!(rows(ACME, "SELECT count(*) AS n, sum(value) AS s FROM events"), serde_json::json!([{"n": 3, "s": 6}]));
    assert_eq!(rows(GLOBEX, "SELECT sum(count) AS s FROM state"), serde_json::json!([{"s": 900}]));
    assert_eq!(rows(ACME, "SELECT count(*) AS n FROM events WHERE tenant = 'globex'"), serde_json::json!([{"n": 0}]));
    assert_eq!(rows(ROOT, "SELECT count(*) AS n FROM events"), serde_json::json!([{"n": 5}]));
    // The catalog's metadata shows tables, never rows.
    let t = rows(ACME, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name");
    assert_eq!(t, serde_json::json!([{"table_name": "events"}, {"table_name": "state"}]));
    // No table over raw files.
    let r = post(&url, "/sql", Some(ACME), &[], "CREATE EXTERNAL TABLE raw STORED AS PARQUET LOCATION 'events/'");
    assert_eq!(r.status, 400);
    assert_eq!(json(&r)["sqlstate"], "25006");
    let r = post(&url, "/sql", Some(ACME), &[], "SELECT * FROM raw");
    assert_eq!(json(&r)["sqlstate"], "42P01");
}
