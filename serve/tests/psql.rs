//! The real `psql` against the server: `\dt`, `\d`, a query, an error. Skipped (with a
//! printed reason) where `psql` is not installed, except in CI (`CI=true`), where that fails.

mod common;

use std::process::{Command, Output};

use alertflow_queries::QueryLimits;
use common::*;

fn psql_installed() -> bool {
    match Command::new("psql").arg("--version").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("psql is not installed (CI=true): scripts/test.sh installs postgresql-client");
            }
            eprintln!("SKIPPED: psql not installed");
            false
        }
    }
}

fn psql(port: u16, password: &str, command: &str) -> Output {
    Command::new("psql")
        .arg(format!("host=127.0.0.1 port={port} user=x password={password} dbname=alertflow"))
        // No ~/.psqlrc, unaligned, tuples only, stop at the first error.
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", command])
        .env_remove("PGPASSWORD")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn psql_lists_describes_and_queries() {
    if !psql_installed() {
        return;
    }
    let s = serve(QueryLimits::default(), tokens());
    let port = s.pg_port();
    // The server runs on its own runtime threads; psql is an ordinary child process.
    let o = psql(port, ACME, "\\dt");
    assert!(o.status.success(), "\\dt: {}", String::from_utf8_lossy(&o.stderr));
    let listed = text(&o);
    assert!(listed.lines().any(|l| l.contains("|events|")), "{listed}");
    assert!(listed.lines().any(|l| l.contains("|state|")), "{listed}");

    let o = psql(port, ACME, "\\d events");
    assert!(o.status.success(), "\\d events: {}", String::from_utf8_lossy(&o.stderr));
    let described = text(&o);
    assert!(described.contains("value|bigint"), "{described}");
    assert!(described.contains("ts|timestamp with time zone"), "{described}");

    let o = psql(port, ACME, "SELECT value FROM events ORDER BY value");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(text(&o), "1\n2\n3\n");

    let o = psql(port, ACME, "SELECT * FROM nope");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope"), "{}", String::from_utf8_lossy(&o.stderr));

    let o = psql(port, "wrong", "SELECT 1");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).to_lowercase().contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
