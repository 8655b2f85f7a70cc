//! The PostgreSQL wire protocol against a real server, through an independent client
//! (tokio-postgres) and the real `psql`.

mod common;

use std::time::{Duration, SystemTime};

use alertflow_queries::QueryLimits;
use common::*;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

async fn connect(port: u16, password: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) =
        tokio_postgres::connect(&format!("host=127.0.0.1 port={port} user=anyone password={password} dbname=alertflow"), NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The first column of every row of a simple query, as text.
async fn column(c: &Client, sql: &str) -> Vec<String> {
    let msgs = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .collect()
}

fn code(e: &tokio_postgres::Error) -> SqlState {
    e.code().cloned().unwrap_or_else(|| panic!("no SQLSTATE: {e:?}"))
}

#[test]
fn simple_and_extended_queries_with_postgres_types() {
    let s = serve(QueryLimits::default(), tokens());
    let port = s.pg_port();
    s.rt.block_on(async {
        let c = connect(port, ROOT).await.unwrap();
        assert_eq!(column(&c, "SELECT value FROM events ORDER BY value").await, ["1", "2", "3", "100", "200"]);
        assert_eq!(column(&c, "SELECT key FROM state ORDER BY key").await, ["k1", "k2", "k9"]);

        // Extended flow: a prepared statement with a parameter.
        let stmt = c.prepare("SELECT tenant, ts, value, tags FROM events WHERE value > $1 ORDER BY value").await.unwrap();
        let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
        assert_eq!(types, [Type::TEXT, Type::TIMESTAMPTZ, Type::INT8, Type::TEXT_ARRAY]);
        assert_eq!(stmt.params(), [Type::INT8]);
        let rows = c.query(&stmt, &[&2i64]).await.unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows.iter().map(|r| r.get::<_, i64>("value")).collect::<Vec<_>>(), [3, 100, 200]);
        assert_eq!(rows[1].get::<_, String>("tenant"), "globex");
        let ts: SystemTime = rows[0].get("ts");
        assert_eq!(ts, SystemTime::UNIX_EPOCH + Duration::from_millis((T0 + 2000) as u64));
        assert_eq!(rows[0].get::<_, Vec<String>>("tags"), ["x", "t2"]);
        // Same statement, another parameter.
        assert_eq!(c.query(&stmt, &[&150i64]).await.unwrap().len(), 1);
        // Unprepared extended query with a text parameter.
        let n: i64 = c.query_one("SELECT count(*) FROM events WHERE tenant = $1", &[&"acme"]).await.unwrap().get(0);
        assert_eq!(n, 3);
    });
}

#[test]
fn errors_have_sqlstates_and_the_connection_survives() {
    let s = serve(QueryLimits::default(), tokens());
    let port = s.pg_port();
    s.rt.block_on(async {
        let c = connect(port, ROOT).await.unwrap();
        let cases: [(&str, SqlState); 8] = [
            ("SELEC 1", SqlState::SYNTAX_ERROR),
            ("SELECT * FROM nope", SqlState::UNDEFINED_TABLE),
            ("SELECT nope FROM events", SqlState::UNDEFINED_COLUMN),
            ("CREATE EXTERNAL TABLE raw STORED AS PARQUET LOCATION '/etc/'", SqlState::READ_ONLY_SQL_TRANSACTION),
            ("INSERT INTO events VALUES ('acme', now(), 1, 'h', NULL)", SqlState::READ_ONLY_SQL_TRANSACTION),
            ("COPY events TO '/tmp/alertflow-serve-pg-copy.csv'", SqlState::READ_ONLY_SQL_TRANSACTION),
            ("SELECT 1 INTO newtable", SqlState::READ_ONLY_SQL_TRANSACTION),
            ("SET datafusion.runtime.memory_limit = '100G'", SqlState::READ_ONLY_SQL_TRANSACTION),
        ];
        for (sql, want) in cases {
            let e = c.simple_query(sql).await.unwrap_err();
            assert_eq!(code(&e), want, "{sql}: {e:?}");
            // The extended flow refuses the same.
            let e = c.query(sql, &[]).await.unwrap_err();
            assert_eq!(code(&e), want, "{sql} (extended): {e:?}");
            assert_eq!(column(&c, "SELECT 41 + 1").await, ["42"], "after {sql}");
        }
        let e = c.simple_query("SELECT * FROM nope").await.unwrap_err();
        assert!(e.as_db_error().unwrap().message().contains("nope"), "{e:?}");
        // Settings a client may change still work.
        c.simple_query("SET application_name = 'test'").await.unwrap();
        c.simple_query("SET TIME ZONE 'UTC'").await.unwrap();
        assert!(!column(&c, "SHOW application_name").await.is_empty());
    });
}

#[test]
fn a_wrong_password_is_refused() {
    let s = serve(QueryLimits::default(), tokens());
    let port = s.pg_port();
    s.rt.block_on(async {
        for wrong in ["", "nope", "root-secre", "root-secrett"] {
            let e = connect(port, wrong).await.err().unwrap_or_else(|| panic!("{wrong:?} accepted"));
            assert_eq!(code(&e), SqlState::INVALID_PASSWORD, "{wrong:?}: {e:?}");
        }
    });
    // Without tokens (loopback) any password does.
    let open = serve(QueryLimits::default(), vec![]);
    let port = open.pg_port();
    open.rt.block_on(async {
        let c = connect(port, "whatever").await.unwrap();
        assert_eq!(column(&c, "SELECT count(*) FROM events").await, ["5"]);
    });
}

#[test]
fn a_tenant_sees_only_its_rows_over_pgwire() {
    let s = serve(QueryLimits::default(), tokens());
    let port = s.pg_port();
    s.rt.block_on(async {
        let c = connect(port, ACME).await.unwrap();
        for sql in [
            "SELECT DISTINCT tenant FROM events",
            "SELECT DISTINCT tenant FROM events WHERE tenant <> 'x' OR 1=1",
            "SELECT tenant FROM events UNION SELECT tenant FROM state",
            "SELECT DISTINCT e.tenant FROM events e JOIN state s ON e.tenant <> s.tenant OR true",
            "SELECT DISTINCT tenant FROM (SELECT * FROM alertflow.public.state) x",
        ] {
            assert_eq!(column(&c, sql).await, ["acme"], "{sql}");
        }
        assert_eq!(column(&c, "SELECT sum(value) FROM events").await, ["6"]);
        let n: i64 = c.query_one("SELECT count(*) FROM events WHERE tenant = $1", &[&"globex"]).await.unwrap().get(0);
        assert_eq!(n, 0);
        // Metadata lists the tables (never rows) through pg_catalog and information_schema.
        let mut tables = column(&c, "SELECT relname FROM pg_catalog.pg_class WHERE relname IN ('events', 'state')").await;
        tables.sort();
        assert_eq!(tables, ["events", "state"]);
        assert_eq!(
            column(&c, "SELECT column_name FROM information_schema.columns WHERE table_name = 'state' ORDER BY ordinal_position").await,
            ["tenant", "key", "count"]
        );
        let e = c.simple_query("CREATE EXTERNAL TABLE raw STORED AS PARQUET LOCATION '/'").await.unwrap_err();
        assert_eq!(code(&e), SqlState::READ_ONLY_SQL_TRANSACTION);
        let g = connect(port, GLOBEX).await.unwrap();
        assert_eq!(column(&g, "SELECT tenant FROM events UNION SELECT tenant FROM state").await, ["globex"]);
    });
}

#[test]
fn limits_apply_over_pgwire() {
    let s = serve(QueryLimits { timeout: Duration::from_millis(300), ..QueryLimits::default() }, tokens());
    let port = s.pg_port();
    s.rt.block_on(async {
        let c = connect(port, ROOT).await.unwrap();
        let e = c.simple_query("SELECT count(*) FROM generate_series(1, 2000000000) a WHERE a.value % 7 = 3").await.unwrap_err();
        assert_eq!(code(&e), SqlState::QUERY_CANCELED, "{e:?}");
        // A client cannot lift the limit with its own statement_timeout.
        c.simple_query("SET statement_timeout = 0").await.unwrap();
        let e = c.query("SELECT count(*) FROM generate_series(1, 2000000000) a WHERE a.value % 7 = $1", &[&3i64]).await.unwrap_err();
        assert_eq!(code(&e), SqlState::QUERY_CANCELED, "{e:?}");
        assert_eq!(column(&c, "SELECT count(*) FROM events").await, ["5"], "the connection works after a timeout");
    });
    let s = serve(QueryLimits { memory: 1 << 20, ..QueryLimits::default() }, tokens());
    let port = s.pg_port();
    s.rt.block_on(async {
        let c = connect(port, ROOT).await.unwrap();
        let e = c
            .simple_query("SELECT count(*) FROM generate_series(1, 2000000) a JOIN generate_series(1, 2000000) b ON a.value = b.value")
            .await
            .unwrap_err();
        assert_eq!(code(&e), SqlState::OUT_OF_MEMORY, "{e:?}");
        assert_eq!(column(&c, "SELECT count(*) FROM events").await, ["5"]);
    });
    let text = s.metrics.render();
    assert!(text.contains("alertflow_queries_total{interface=\"pg\",outcome=\"error\"} 1\n"), "{text}");
    assert!(text.contains("alertflow_queries_total{interface=\"pg\",outcome=\"ok\"} 1\n"), "{text}");
}
