//! Helpers for alertflow's end-to-end tests: find the binary, make scratch folders, run the
//! binary, read output tables, and call the independent Python checkers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use datafusion::arrow::record_batch::RecordBatch;

pub mod cluster;
pub mod receiver;

/// The `alertflow` binary: `$ALERTFLOW_BIN`, else the one next to the test executable's
/// target folder. Panics with the fix when there is none.
pub fn bin() -> PathBuf {
    if let Ok(p) = std::env::var("ALERTFLOW_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> → target/<profile>/alertflow
    let profile_dir = exe.parent().and_then(Path::parent).expect("target layout");
    let cand = profile_dir.join("alertflow");
    if cand.is_file() {
        return cand;
    }
    panic!("no alertflow binary at {}: run `scripts/test.sh`, or `cargo build --release --bin alertflow` first", cand.display());
}

/// Whether tests that need an external program must run (CI) rather than skip.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// The Python with DuckDB and pyarrow (`$ALERTFLOW_PYTHON`, set by `scripts/test.sh`). Outside
/// CI a missing one skips the check with a printed reason; in CI it fails the test.
pub fn python() -> Option<PathBuf> {
    match std::env::var("ALERTFLOW_PYTHON") {
        Ok(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        _ if in_ci() => panic!("ALERTFLOW_PYTHON is not set: in CI the DuckDB/pyarrow checks must run (use scripts/test.sh)"),
        _ => {
            eprintln!("SKIPPED independent DuckDB/pyarrow check: ALERTFLOW_PYTHON is not set (run scripts/test.sh to set it up)");
            None
        }
    }
}

/// A pipeline's HTTP source of remote-written samples on its own `listen` address (the caller
/// replaces `PORT`), counted and summed per minute by the `req` label: how the push tests tell
/// each push in the table (its count and sum) from a lost or a doubled one.
pub const PUSHED_SAMPLES: &str = r#"
[[source]]
type = "http"
name = "rw"
records = "metrics"
listen = "127.0.0.1:PORT"
max_out_of_orderness = "1m"
# The samples are from January: the watermark must not follow today's wall clock.
idle_timeout = "1h"

[[aggregate]]
name = "per_req"
input = "rw"
window = { type = "tumbling", size = "1m" }
group_by = ["req"]
functions = ["count", "sum"]
"#;

/// A scratch folder, removed when dropped (kept when the test panics, for inspection).
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new, empty folder named after `tag`.
    pub fn new(tag: &str) -> Scratch {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let d = std::env::temp_dir().join(format!("alertflow-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create scratch dir");
        Scratch(d)
    }
    /// A path inside the folder.
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A loopback port nobody listens on now (the run binds it a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port").local_addr().expect("its address").port()
}

/// Polls `ready` every 20 ms until it holds; panics naming `what` after `limit`.
pub fn wait_until(what: &str, limit: std::time::Duration, mut ready: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !ready() {
        assert!(t.elapsed() < limit, "waited more than {limit:?} for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs the binary with `args`.
pub fn alertflow(args: &[&str]) -> Output {
    Command::new(bin()).args(args).env("RUST_LOG", "warn").output().expect("run alertflow")
}

/// `alertflow run PIPELINE --workers N --json` in the background (stdout piped, for the
/// summary; stderr inherited), killed when dropped: for runs that serve, and stop on a signal.
pub struct Running(pub std::process::Child);

impl Running {
    /// Starts the run.
    pub fn start(pipeline: &Path, workers: usize) -> Running {
        let child = Command::new(bin())
            .args(["run", &pipeline.to_string_lossy(), "--workers", &workers.to_string(), "--json"])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start alertflow run");
        Running(child)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `alertflow run PIPELINE --workers N --json` and returns the summary; panics with the
/// output when it does not exit 0.
pub fn run_json(pipeline: &Path, workers: usize) -> serde_json::Value {
    let out = alertflow(&["run", &pipeline.to_string_lossy(), "--workers", &workers.to_string(), "--json"]);
    assert!(
        out.status.success(),
        "alertflow run failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("run --json prints JSON")
}

/// Runs a query over an output folder in-process and returns the batches.
pub fn query(data: &Path, sql: &str) -> Vec<RecordBatch> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let (ctx, _) = alertflow_queries::context_for_dir(data).await.expect("catalog");
        ctx.sql(sql).await.expect("plan").collect().await.expect("execute")
    })
}

/// Runs a query and renders its answer as CSV text (a simple way to compare tables).
pub fn query_csv(data: &Path, sql: &str) -> String {
    alertflow_queries::render(&query(data, sql), alertflow_queries::OutputFormat::Csv).expect("render")
}

/// The root of the workspace.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

/// Every table of `dir/out` named in `names`, as its rows in CSV, sorted: tables from
/// two runs compare equal when they hold the same rows, however the files were cut.
pub fn sorted_tables(dir: &Path, names: &[&str]) -> Vec<(String, Vec<String>)> {
    names
        .iter()
        .map(|t| {
            let csv = query_csv(&dir.join("out"), &format!("SELECT * FROM {t}"));
            let mut lines: Vec<String> = csv.lines().skip(1).map(String::from).collect();
            lines.sort();
            (t.to_string(), lines)
        })
        .collect()
}

/// One HTTP/1.1 request (`Connection: close`, an optional bearer token); returns the status
/// and the body, de-chunked. A connection reset before the answer is retried once, said on
/// stderr (seen once in CI on the first request to a freshly started server; not reproduced).
pub fn http(addr: std::net::SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    match try_http(addr, method, path, token, body) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            eprintln!("{method} {path}: connection reset ({e}); retrying once");
            std::thread::sleep(std::time::Duration::from_millis(100));
            try_http(addr, method, path, token, body).unwrap_or_else(|e| panic!("{method} {path} at {addr}: {e}"))
        }
        Err(e) => panic!("{method} {path} at {addr}: {e}"),
    }
}

fn try_http(addr: std::net::SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_string() };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// A little random number generator, seeded, for tests that pick moments or data at random
/// yet must do the same on every run (a linear congruential generator: no dependency).
pub struct Lcg(pub u64);

impl Lcg {
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}
