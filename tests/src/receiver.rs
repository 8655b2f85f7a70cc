//! A recording HTTP/1.1 receiver for notification tests: it answers every request with 200
//! (after a delay the test may change) and keeps the path, headers and JSON body.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as received.
#[derive(Clone, Debug)]
pub struct Got {
    /// The request path.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body, parsed as JSON.
    pub body: serde_json::Value,
}

/// The receiver: listens on a loopback port until the test ends.
pub struct Recorder {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    got: Arc<Mutex<Vec<Got>>>,
    /// How long each answer waits (ms), read per request.
    pub delay_ms: Arc<AtomicU64>,
}

impl Recorder {
    /// Starts listening.
    pub fn start() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let url = format!("http://{}", l.local_addr().expect("its address"));
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let delay_ms: Arc<AtomicU64> = Arc::default();
        let (g, d) = (got.clone(), delay_ms.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let (g, d) = (g.clone(), d.clone());
                std::thread::spawn(move || connection(conn, &g, &d));
            }
        });
        Recorder { url, got, delay_ms }
    }

    /// Every request so far.
    pub fn got(&self) -> Vec<Got> {
        self.got.lock().expect("poisoned").clone()
    }
}

fn connection(conn: TcpStream, got: &Mutex<Vec<Got>>, delay_ms: &AtomicU64) {
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let n: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; n];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let body = serde_json::from_slice(&body).unwrap_or_else(|e| serde_json::json!({ "not_json": e.to_string() }));
        // Recorded before the answer: a request the sender was killed while waiting on counts
        // as received (it was, and it is the one a restart may send again).
        got.lock().expect("poisoned").push(Got { path, headers, body });
        std::thread::sleep(Duration::from_millis(delay_ms.load(Ordering::Relaxed)));
        let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    }
}
