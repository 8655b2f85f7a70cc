//! Query load on a running pipeline (`alertflow bench … --rate R --clients N`): the fixed-rate
//! run serves its tables (`[serve] http`), and N clients, each on its own keep-alive HTTP/1.1
//! connection, send a point query on a live table back to back for the length of the replay.
//! Reported: queries answered, errors, queries/s and latency percentiles; the run's own
//! latency report says whether the pipeline kept up meanwhile.
//!
//! The client is a minimal blocking HTTP/1.1 client (Content-Length and chunked bodies), so
//! the figures are the server's and the network stack's, not a client library's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// What the clients saw.
#[derive(Debug, Serialize)]
pub struct QueryLoad {
    /// Concurrent clients.
    pub clients: usize,
    /// The query (with `{host}` standing for a host drawn per query).
    pub query: String,
    /// Queries answered with 200.
    pub queries: u64,
    /// Queries that failed (a status other than 200, or a broken connection).
    pub errors: u64,
    /// The first error, to say what went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Answered queries per second of load.
    pub queries_per_second: f64,
    /// Latency percentiles and maximum, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

/// A loopback port nobody listens on now (the run binds it a moment later).
pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| format!("cannot find a free port: {e}"))
}

/// The point query of a client: the latest window of one host (hosts of the generated data
/// are `h00000` … ).
pub const POINT_QUERY: &str = "SELECT * FROM per_second_latest WHERE host = '{host}'";

/// Runs `clients` clients against `addr` until `until`, starting once the server answers
/// (waiting at most 60 s for it).
pub fn run(addr: SocketAddr, clients: usize, hosts: usize, until: Instant) -> Result<QueryLoad, String> {
    let up = Instant::now();
    while TcpStream::connect(addr).is_err() {
        if up.elapsed() > Duration::from_secs(60) {
            return Err(format!("the run did not start serving at {addr} within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let hist = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?));
    let errors: Arc<Mutex<(u64, Option<String>)>> = Arc::default();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (stop, hist, errors) = (stop.clone(), hist.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut local = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
                let mut conn: Option<Conn> = None;
                let mut k = c as u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let host = format!("h{:05}", (k >> 33) as usize % hosts.max(1));
                    let sql = POINT_QUERY.replace("{host}", &host);
                    let t = Instant::now();
                    let r = match conn.as_mut() {
                        Some(c) => c.query(&sql),
                        None => Conn::open(addr).and_then(|mut c| {
                            let r = c.query(&sql);
                            conn = Some(c);
                            r
                        }),
                    };
                    match r {
                        Ok(()) => {
                            let _ = local.record((t.elapsed().as_micros() as u64).max(1));
                            if conn.as_ref().is_some_and(|c| c.closed) {
                                conn = None;
                            }
                        }
                        Err(e) => {
                            conn = None;
                            let mut g = errors.lock().unwrap_or_else(|p| p.into_inner());
                            g.0 += 1;
                            g.1.get_or_insert(e);
                        }
                    }
                }
                let _ = hist.lock().unwrap_or_else(|p| p.into_inner()).add(&local);
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    stop.store(true, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let h = hist.lock().unwrap_or_else(|p| p.into_inner());
    let (errors, first_error) = std::mem::take(&mut *errors.lock().unwrap_or_else(|p| p.into_inner()));
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(QueryLoad {
        clients,
        query: POINT_QUERY.to_string(),
        queries: h.len(),
        errors,
        first_error,
        queries_per_second: h.len() as f64 / secs,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: h.max() as f64 / 1000.0,
    })
}

/// One keep-alive connection.
pub(super) struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The server said it closes the connection after this answer.
    closed: bool,
}

impl Conn {
    pub(super) fn open(addr: SocketAddr) -> Result<Conn, String> {
        let s = TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let writer = s.try_clone().map_err(|e| e.to_string())?;
        Ok(Conn { reader: BufReader::new(s), writer, closed: false })
    }

    /// Sends one query and reads the whole answer; an error unless the status is 200.
    fn query(&mut self, sql: &str) -> Result<(), String> {
        let (status, body) = self.post("/sql?format=csv", "Content-Type: text/plain\r\n", sql.as_bytes())?;
        if status != 200 {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body).chars().take(200).collect::<String>()));
        }
        Ok(())
    }

    /// POSTs `body` to `path` (`headers`: extra header lines, each ending in CRLF) and reads
    /// the whole answer: its status and body.
    pub(super) fn post(&mut self, path: &str, headers: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        self.request("POST", path, headers, body)
    }

    /// Sends a request and reads the whole answer: its status and body.
    pub(super) fn request(&mut self, method: &str, path: &str, headers: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let head = format!("{method} {path} HTTP/1.1\r\nHost: alertflow\r\n{headers}Content-Length: {}\r\n\r\n", body.len());
        self.writer.write_all(head.as_bytes()).map_err(|e| format!("send: {e}"))?;
        self.writer.write_all(body).map_err(|e| format!("send: {e}"))?;
        let mut line = String::new();
        self.reader.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
        let status: u16 =
            line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad status line `{}`", line.trim()))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            self.reader.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse::<usize>().ok(),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                "connection" => close = v.to_ascii_lowercase().contains("close"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
                let n =
                    usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).map_err(|_| "bad chunk size".to_string())?;
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk).map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            self.reader.read_exact(&mut body).map_err(|e| format!("read: {e}"))?;
        } else if status != 204 {
            return Err("an answer without a length".into());
        }
        self.closed = close;
        Ok((status, body))
    }
}
