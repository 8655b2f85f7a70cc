//! `[serve]` end to end, driven the way a user drives it: `alertflow run` on a paced alert
//! stream serves its tables over HTTP and the PostgreSQL protocol while it runs; a real `psql`
//! lists the tables and joins the live `open_incidents` with the `incidents` history; a
//! tenant's token sees only its tenant; after the input ends the run keeps serving its final
//! state (and its metrics) until SIGTERM, then exits 0. A JDBC client (the PostgreSQL JDBC
//! driver, as Java BI tools use it) connects, prepares a parameterised query, reads the
//! metadata BI tools browse, and gets the same answers as HTTP; so does an ODBC client
//! (psqlODBC through unixODBC's `isql`).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alertflow_tests::{Running, Scratch, free_port, http, in_ci};

/// 2026-01-01T00:00:00Z in ms.
const T: i64 = 1_767_225_600_000;
const OPERATOR: &str = "operator-token-1";
const ACME: &str = "acme-token-123";

/// Alerts of two tenants on 6 hosts, re-sent every 10 s of event time for 10 minutes, replayed
/// at 60 notices/s: about 12 s of wall time during which incidents stay open.
fn fixture(dir: &Path, http: u16, pg: u16) {
    fixture_at(dir, http, pg, 30);
}

/// [`fixture`] replayed at `rate` notices/s.
fn fixture_at(dir: &Path, http: u16, pg: u16, rate: u32) {
    let mut lines = Vec::new();
    for round in 0..60 {
        for h in 0..6 {
            let tenant = if h % 2 == 0 { "acme" } else { "globex" };
            lines.push(format!(
                r#"{{"ts":{},"tenant":"{tenant}","alertname":"HighCpu","severity":"critical","status":"firing","host":"h{h}"}}"#,
                T + round * 10_000 + h * 100
            ));
        }
    }
    std::fs::write(dir.join("alerts.ndjson"), lines.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.join("pipeline.toml"),
        format!(
            r#"
[engine]
epoch = "100ms"

[[source]]
name = "alerts"
type = "file"
path = "alerts.ndjson"
records = "alerts"
replay_rate = {rate}

[correlate]
group_by = ["host"]

[output]
path = "out"
file_span = "10s"

[serve]
http = "127.0.0.1:{http}"
pg = "127.0.0.1:{pg}"
live_refresh = "50ms"

[[serve.tokens]]
token = "{OPERATOR}"
tenant = "*"

[[serve.tokens]]
token = "{ACME}"
tenant = "acme"
"#
        ),
    )
    .unwrap();
}

/// The value of one series (name with its labels, as rendered) in a Prometheus text page.
fn metric(page: &str, series: &str) -> f64 {
    let line = page.lines().find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')));
    let line = line.unwrap_or_else(|| panic!("no {series} in /metrics:\n{page}"));
    line[series.len()..].trim().parse().unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// A query's CSV answer over HTTP, header line dropped.
fn sql(addr: SocketAddr, token: &str, q: &str) -> Vec<String> {
    let (status, body) = http(addr, "POST", "/sql?format=csv", Some(token), q);
    assert_eq!(status, 200, "{q}: {body}");
    body.lines().skip(1).map(str::to_string).collect()
}

fn psql(pg: u16, password: &str, command: &str) -> Option<(bool, String)> {
    let out = Command::new("psql")
        .arg(format!("host=127.0.0.1 port={pg} user=sre dbname=alertflow sslmode=disable"))
        .args(["-X", "-A", "-t", "-c", command])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output();
    match out {
        Ok(o) => Some((o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(!in_ci(), "psql is not installed: in CI the PostgreSQL client test must run (scripts/test.sh installs it)");
            eprintln!("SKIPPED psql checks: psql is not installed (scripts/test.sh installs postgresql-client)");
            None
        }
        Err(e) => panic!("cannot run psql: {e}"),
    }
}

#[test]
fn a_running_pipeline_serves_sql_over_http_and_postgres() {
    let scratch = Scratch::new("serve");
    let (http_port, pg_port) = (free_port(), free_port());
    fixture(&scratch.0, http_port, pg_port);
    let addr = SocketAddr::from(([127, 0, 0, 1], http_port));
    let mut run = Running::start(&scratch.join("pipeline.toml"), 2);

    // Serving starts before the first record is read.
    let up = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(up.elapsed() < Duration::from_secs(30), "the run did not start serving");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, _) = http(addr, "POST", "/sql", None, "SELECT 1");
    assert_eq!(status, 401, "with tokens configured, a caller without one is refused");
    let (status, _) = http(addr, "POST", "/sql", Some("wrong-token-xyz"), "SELECT 1");
    assert_eq!(status, 401);

    // While the replay runs, incidents open (one per host) and stay open.
    let waited = Instant::now();
    loop {
        let open = sql(addr, OPERATOR, "SELECT count(*) FROM open_incidents");
        if open.first().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) == 6 {
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(20), "open_incidents never showed the 6 hosts' incidents: {open:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The operators' state, as /metrics shows it while the run goes: dedup holds the 6 firing
    // fingerprints (no alert resolves), correlate at least their 6 episodes.
    let (_, metrics) = http(addr, "GET", "/metrics", Some(OPERATOR), "");
    assert_eq!(metric(&metrics, r#"alertflow_operator_state_entries{operator="dedup",name="dedup"}"#), 6.0, "{metrics}");
    assert!(metric(&metrics, r#"alertflow_operator_state_entries{operator="correlate",name="correlate"}"#) >= 6.0, "{metrics}");
    // The live table joins the history (its incidents' earlier rows are in Parquet by now).
    let history = Instant::now();
    loop {
        let joined = sql(
            addr,
            OPERATOR,
            "SELECT count(DISTINCT o.incident_id) FROM open_incidents o JOIN incidents h ON o.incident_id = h.incident_id",
        );
        if joined.first().is_some_and(|n| n != "0") {
            break;
        }
        assert!(history.elapsed() < Duration::from_secs(10), "no open incident found in the history: {joined:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A tenant's token sees its own rows only, whatever the query does.
    let seen = sql(addr, ACME, "SELECT tenant FROM open_incidents UNION SELECT tenant FROM alerts UNION SELECT tenant FROM active_alerts");
    assert_eq!(seen, vec!["acme".to_string()]);
    let count = sql(addr, ACME, "SELECT count(*) FROM open_incidents WHERE tenant <> 'acme' OR true");
    assert_eq!(count, vec!["3".to_string()], "acme has 3 hosts");

    // A real psql: lists the tables and joins live state with history, as the operator; the
    // tenant's password scopes it.
    if let Some((ok, out)) = psql(pg_port, OPERATOR, "\\dt") {
        assert!(ok, "psql \\dt failed: {out}");
        for t in ["open_incidents", "incidents", "active_alerts", "alerts", "storms", "active_storms", "dead_letters"] {
            assert!(out.contains(t), "psql \\dt does not list {t}: {out}");
        }
        let (ok, out) = psql(
            pg_port,
            OPERATOR,
            "SELECT o.tenant, count(DISTINCT o.incident_id) FROM open_incidents o JOIN incidents h ON o.incident_id = h.incident_id GROUP BY o.tenant ORDER BY o.tenant",
        )
        .unwrap();
        assert!(ok, "{out}");
        let rows: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(rows.len(), 2, "one row per tenant: {out}");
        assert!(rows[0].starts_with("acme|") && rows[1].starts_with("globex|"), "{out}");
        let (ok, out) = psql(pg_port, ACME, "SELECT DISTINCT tenant FROM incidents").unwrap();
        assert!(ok && out.trim() == "acme", "the tenant's password scopes psql too: {out}");
        let (ok, out) = psql(pg_port, "not-a-token-1", "SELECT 1").unwrap();
        assert!(!ok && out.to_lowercase().contains("password authentication failed"), "a wrong password is refused: {out}");
        let (ok, out) = psql(pg_port, OPERATOR, "SELECT * FROM no_such_table").unwrap();
        assert!(!ok && out.contains("no_such_table"), "{out}");
    }

    // The input ends: the summary is printed, and the run keeps serving its final state.
    let mut stdout = run.0.stdout.take().unwrap();
    let summary: serde_json::Value =
        serde_json::Deserializer::from_reader(&mut stdout).into_iter().next().expect("a summary").expect("JSON summary");
    assert_eq!(summary["records_in"], 360);
    let (status, health) = http(addr, "GET", "/health", Some(OPERATOR), "");
    assert_eq!(status, 200, "{health}");
    let alerts = sql(addr, OPERATOR, "SELECT count(DISTINCT fingerprint) FROM alerts");
    assert_eq!(alerts, vec!["6".to_string()]);
    let (status, metrics) = http(addr, "GET", "/metrics", Some(OPERATOR), "");
    assert_eq!(status, 200);
    assert!(metrics.contains("alertflow_source_records_total{source=\"alerts\"} 360"), "{metrics}");
    assert!(metrics.contains("alertflow_queries_total"), "{metrics}");
    // Per operator: every notice reached dedup, what dedup emitted reached suppress, and what
    // correlate emitted is exactly the rows of the `alerts` and `incidents` tables.
    let op = |kind: &str, family: &str| metric(&metrics, &format!(r#"alertflow_operator_{family}{{operator="{kind}",name="{kind}"}}"#));
    assert_eq!(op("dedup", "records_in_total"), 360.0, "{metrics}");
    assert_eq!(op("dedup", "records_out_total"), op("suppress", "records_in_total"), "{metrics}");
    let rows = sql(addr, OPERATOR, "SELECT (SELECT count(*) FROM alerts) + (SELECT count(*) FROM incidents)");
    assert_eq!(op("correlate", "records_out_total").to_string(), rows[0], "{metrics}");

    // SIGTERM stops it cleanly.
    let pid = run.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let stopped = Instant::now();
    loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            assert!(status.success(), "exit status after SIGTERM: {status}");
            break;
        }
        assert!(stopped.elapsed() < Duration::from_secs(10), "the run did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The JDBC client: one line per check, `name<TAB>value`.
const JDBC_CLIENT: &str = r#"
import java.sql.*;
import java.util.*;
public class Client {
  static void out(String k, Object v) { System.out.println(k + "\t" + v); }
  public static void main(String[] a) throws Exception {
    String url = "jdbc:postgresql://127.0.0.1:" + a[0] + "/alertflow";
    try (Connection c = DriverManager.getConnection(url, "sre", a[1])) {
      out("product", c.getMetaData().getDatabaseProductName());
      try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT count(*) FROM alerts")) {
        r.next(); out("count", r.getLong(1));
      }
      try (PreparedStatement p = c.prepareStatement(
          "SELECT incident_id, status, revision FROM incidents WHERE revision >= ? ORDER BY incident_id, revision LIMIT 5")) {
        p.setLong(1, 1);
        try (ResultSet r = p.executeQuery()) {
          while (r.next()) out("prepared", r.getString(1) + "," + r.getString(2) + "," + r.getLong(3));
          ResultSetMetaData md = r.getMetaData();
          List<String> t = new ArrayList<>();
          for (int i = 1; i <= md.getColumnCount(); i++) t.add(md.getColumnName(i) + ":" + md.getColumnTypeName(i));
          out("types", String.join(",", t));
        }
      }
      List<String> tables = new ArrayList<>();
      try (ResultSet r = c.getMetaData().getTables(null, null, "%", new String[]{"TABLE", "VIEW"})) {
        while (r.next()) tables.add(r.getString("TABLE_NAME"));
      }
      out("tables", String.join(",", tables));
      List<String> cols = new ArrayList<>();
      try (ResultSet r = c.getMetaData().getColumns(null, null, "open_incidents", "%")) {
        while (r.next()) cols.add(r.getString("COLUMN_NAME"));
      }
      out("columns", String.join(",", cols));
      try (Statement s = c.createStatement()) {
        s.execute("CREATE TABLE x (a INT)");
        out("refused", "no");
      } catch (SQLException e) {
        out("refused", e.getSQLState());
      }
    }
  }
}
"#;

/// The PostgreSQL JDBC driver with a JDK (`javac`), and the psqlODBC driver with unixODBC's
/// `isql`, or why they are missing. `scripts/test.sh` installs Debian's
/// `default-jdk-headless`, `libpostgresql-jdbc-java`, `unixodbc` and `odbc-postgresql`.
fn drivers() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let jar = std::env::var("ALERTFLOW_PGJDBC").map(std::path::PathBuf::from).unwrap_or_else(|_| "/usr/share/java/postgresql.jar".into());
    let odbc = std::env::var("ALERTFLOW_PSQLODBC")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| "/usr/lib/x86_64-linux-gnu/odbc/psqlodbcw.so".into());
    let javac = Command::new("javac").arg("-version").output().is_ok_and(|o| o.status.success());
    let isql = Command::new("isql").arg("--version").output().is_ok();
    if javac && isql && jar.is_file() && odbc.is_file() {
        return Some((jar, odbc));
    }
    let why = format!(
        "javac: {javac}, isql: {isql}, JDBC driver at {}: {}, ODBC driver at {}: {}",
        jar.display(),
        jar.is_file(),
        odbc.display(),
        odbc.is_file()
    );
    assert!(!in_ci(), "in CI the JDBC/ODBC test must run ({why}); scripts/test.sh installs them");
    eprintln!(
        "SKIPPED JDBC/ODBC test ({why}; scripts/test.sh installs default-jdk-headless, libpostgresql-jdbc-java, unixodbc, odbc-postgresql)"
    );
    None
}

#[test]
fn jdbc_and_odbc_clients_query_a_running_pipeline() {
    let Some((jar, odbc)) = drivers() else { return };
    let scratch = Scratch::new("jdbc");
    let (http_port, pg_port) = (free_port(), free_port());
    fixture_at(&scratch.0, http_port, pg_port, 1_000);
    std::fs::write(scratch.join("Client.java"), JDBC_CLIENT).unwrap();
    let classes = scratch.join("classes");
    let javac = Command::new("javac").arg("-d").arg(&classes).arg(scratch.join("Client.java")).output().unwrap();
    assert!(javac.status.success(), "javac: {}", String::from_utf8_lossy(&javac.stderr));
    let mut run = Running::start(&scratch.join("pipeline.toml"), 2);
    // The input ends (the summary is printed); the run serves its final state.
    let mut stdout = run.0.stdout.take().unwrap();
    let summary: serde_json::Value =
        serde_json::Deserializer::from_reader(&mut stdout).into_iter().next().expect("a summary").expect("JSON summary");
    assert_eq!(summary["records_in"], 360);
    let addr = SocketAddr::from(([127, 0, 0, 1], http_port));

    let client = |token: &str| -> Vec<(String, String)> {
        let cp = format!("{}:{}", jar.display(), classes.display());
        let out = Command::new("java").args(["-cp", &cp, "Client", &pg_port.to_string(), token]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "JDBC client failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
        text.lines().filter_map(|l| l.split_once('\t')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let get =
        |lines: &[(String, String)], k: &str| -> Vec<String> { lines.iter().filter(|(n, _)| n == k).map(|(_, v)| v.clone()).collect() };

    let op = client(OPERATOR);
    assert_eq!(get(&op, "product"), ["PostgreSQL"], "{op:?}");
    assert_eq!(get(&op, "count"), sql(addr, OPERATOR, "SELECT count(*) FROM alerts"));
    // The prepared statement's parameter is bound: the same rows as the literal query.
    let want = sql(
        addr,
        OPERATOR,
        "SELECT incident_id, status, revision FROM incidents WHERE revision >= 1 ORDER BY incident_id, revision LIMIT 5",
    );
    assert!(!want.is_empty(), "the fixture revises incidents");
    assert_eq!(get(&op, "prepared"), want);
    assert_eq!(get(&op, "types"), ["incident_id:text,status:text,revision:int8"]);
    let tables = get(&op, "tables").join(",");
    for t in ["active_alerts", "alerts", "incidents", "open_incidents", "storms"] {
        assert!(tables.split(',').any(|x| x == t), "{t} missing from getTables: {tables}");
    }
    let columns = sql(
        addr,
        OPERATOR,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'open_incidents' ORDER BY ordinal_position",
    );
    assert_eq!(get(&op, "columns"), [columns.join(",")]);
    assert_eq!(get(&op, "refused"), ["25006"], "a write is refused with SQLSTATE 25006");

    // A tenant's token sees its tenant only, through JDBC as through HTTP.
    let acme = client(ACME);
    let acme_count = get(&acme, "count");
    assert_eq!(acme_count, sql(addr, ACME, "SELECT count(*) FROM alerts"));
    let (a, all): (u64, u64) = (acme_count[0].parse().unwrap(), get(&op, "count")[0].parse().unwrap());
    assert!(a > 0 && a < all, "acme sees {a} of {all} alert rows");

    // ODBC: a DSN in the scratch folder, queries through `isql` (batch mode, comma-separated).
    std::fs::write(scratch.join("odbcinst.ini"), format!("[PostgreSQL]\nDriver = {}\n", odbc.display())).unwrap();
    std::fs::write(
        scratch.join("odbc.ini"),
        format!("[alertflow]\nDriver = PostgreSQL\nServername = 127.0.0.1\nPort = {pg_port}\nDatabase = alertflow\nSSLmode = disable\n"),
    )
    .unwrap();
    let isql = |token: &str, queries: &str| -> String {
        let mut child = Command::new("isql")
            .args(["-b", "-v", "-d,", "alertflow", "sre", token])
            .env("ODBCSYSINI", &scratch.0)
            .env("ODBCINI", scratch.join("odbc.ini"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(queries.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let limited = "SELECT incident_id, status, revision FROM incidents WHERE revision >= 1 ORDER BY incident_id, revision LIMIT 5";
    let out = isql(OPERATOR, &format!("SELECT count(*) FROM alerts\n{limited}\nCREATE TABLE x (a INT)\n"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], all.to_string(), "{out}");
    assert_eq!(lines[1..=want.len()], want.iter().map(String::as_str).collect::<Vec<_>>()[..], "{out}");
    assert!(out.contains("[25006]"), "a write is refused with SQLSTATE 25006: {out}");
    assert_eq!(isql(ACME, "SELECT count(*) FROM alerts\n").lines().next(), Some(a.to_string().as_str()));
    assert!(isql("wrong-token-xyz", "SELECT 1\n").contains("assword authentication failed"), "a wrong token is refused");
}
