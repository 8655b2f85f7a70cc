//! Delivery against a local HTTP receiver that records every request and answers as scripted:
//! the payload and idempotency key arrive; 5xx and a receiver that is down are retried with
//! backoff; a 4xx fails at once with the reason; a slow receiver holds up nobody else; the
//! rate limit spaces requests; closing returns what was not delivered.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alertflow_notify::{AlertInfo, Deliverer, Message, Outcome, Receiver, ReceiverConfig, Status};

/// A request as received.
#[derive(Clone, Debug)]
struct Got {
    path: String,
    headers: BTreeMap<String, String>,
    body: serde_json::Value,
    at: Instant,
}

type Script = Arc<dyn Fn(usize) -> (u16, Duration) + Send + Sync>;

/// A recording HTTP/1.1 server: the `n`-th request (from 0) gets `script(n)`: a status, after a
/// delay.
struct Recorder {
    addr: String,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Recorder {
    fn start(script: impl Fn(usize) -> (u16, Duration) + Send + Sync + 'static) -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", l.local_addr().unwrap());
        Self::serve(l, Arc::new(script), addr)
    }

    fn serve(l: TcpListener, script: Script, addr: String) -> Recorder {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let g = got.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let (g, script) = (g.clone(), script.clone());
                std::thread::spawn(move || connection(conn, &g, &script));
            }
        });
        Recorder { addr, got }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

fn connection(conn: TcpStream, got: &Mutex<Vec<Got>>, script: &Script) {
    let mut w = conn.try_clone().unwrap();
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
            r.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let n: usize = headers.get("content-length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; n];
        r.read_exact(&mut body).unwrap();
        let index = {
            let mut g = got.lock().unwrap();
            g.push(Got { path, headers, body: serde_json::from_slice(&body).unwrap(), at: Instant::now() });
            g.len() - 1
        };
        let (status, delay) = script(index);
        std::thread::sleep(delay);
        let text = format!("answer {status}");
        let extra = if status == 429 { "Retry-After: 1\r\n" } else { "" };
        let _ = write!(w, "HTTP/1.1 {status} X\r\n{extra}Content-Length: {}\r\n\r\n{text}", text.len());
    }
}

fn receiver(name: &str, url: &str, extra: &str) -> Receiver {
    // Short retries unless `extra` sets its own.
    let retries = if extra.contains("retry_initial") { "" } else { "retry_initial = \"100ms\"\nretry_max = \"400ms\"\n" };
    let text = format!("name = \"{name}\"\ntype = \"webhook\"\nurl = \"{url}/hook\"\ntimeout = \"5s\"\n{retries}{extra}");
    let c: ReceiverConfig = toml::from_str(&text).unwrap();
    Receiver::new(c).unwrap()
}

fn message(receiver: &str, at: i64) -> Message {
    Message {
        receiver: receiver.into(),
        group_key: "{}:{alertname=\"Down\"}".into(),
        group_labels: [("alertname".to_string(), "Down".to_string())].into(),
        at,
        alerts: vec![AlertInfo {
            labels: [("alertname".to_string(), "Down".to_string()), ("instance".to_string(), "a".to_string())].into(),
            annotations: BTreeMap::new(),
            starts_at: at - 30_000,
            ends_at: None,
            generator_url: String::new(),
            fingerprint: 7,
        }],
        truncated_alerts: 0,
        external_url: "http://alertflow".into(),
    }
}

/// Outcomes as reported, and a wait for a condition on them.
#[derive(Clone, Default)]
struct Outcomes(Arc<Mutex<Vec<Outcome>>>);

impl Outcomes {
    fn sink(&self) -> impl Fn(Outcome) + Send + Sync + 'static {
        let o = self.0.clone();
        move |x| o.lock().unwrap().push(x)
    }
    fn wait(&self, what: &str, f: impl Fn(&[Outcome]) -> bool) -> Vec<Outcome> {
        let t = Instant::now();
        loop {
            let o = self.0.lock().unwrap().clone();
            if f(&o) {
                return o;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "{what}: {o:#?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn a_webhook_gets_the_alertmanager_payload_with_the_id_as_idempotency_key() {
    let rec = Recorder::start(|_| (200, Duration::ZERO));
    let out = Outcomes::default();
    let d = Deliverer::start(vec![receiver("team", &rec.addr, "headers = { Authorization = \"Bearer t\" }")], out.sink());
    let msg = message("team", 1_767_225_600_000);
    d.deliver(msg.clone()).unwrap();
    let o = out.wait("delivered", |o| o.iter().any(|x| x.status == Status::Delivered));
    assert_eq!(o.len(), 1);
    assert_eq!((o[0].id.as_str(), o[0].attempts, o[0].http_status), (msg.id().as_str(), 1, Some(200)));
    let g = rec.got();
    assert_eq!(g[0].path, "/hook");
    assert_eq!(g[0].headers["idempotency-key"], msg.id());
    assert_eq!(g[0].headers["x-alertflow-notification-id"], msg.id());
    assert_eq!(g[0].headers["authorization"], "Bearer t");
    assert_eq!(g[0].headers["content-type"], "application/json");
    assert_eq!(g[0].body, msg.webhook_v4());
    assert_eq!(g[0].body["version"], "4");
    assert!(d.deliver(message("nobody", 0)).is_err());
    assert!(d.close(Duration::from_secs(1)).is_empty());
}

#[test]
fn server_errors_are_retried_with_doubling_backoff_and_a_4xx_fails_at_once_with_the_reason() {
    // Requests 0 and 1 (the first notification) get 500 and 503, then 200; request 3 (the
    // second notification) gets 400.
    let rec = Recorder::start(|n| ([500, 503, 200, 400][n.min(3)], Duration::ZERO));
    let out = Outcomes::default();
    let d = Deliverer::start(vec![receiver("team", &rec.addr, "")], out.sink());
    d.deliver(message("team", 1)).unwrap();
    let o = out.wait("delivered after retries", |o| o.iter().any(|x| x.status == Status::Delivered));
    let statuses: Vec<(Status, u32, Option<u16>)> = o.iter().map(|x| (x.status, x.attempts, x.http_status)).collect();
    assert_eq!(statuses, [(Status::Retrying, 1, Some(500)), (Status::Retrying, 2, Some(503)), (Status::Delivered, 3, Some(200))]);
    assert_eq!(o[0].error.as_deref(), Some("HTTP 500: answer 500"));
    let g = rec.got();
    let (gap1, gap2) = (g[1].at - g[0].at, g[2].at - g[1].at);
    assert!(gap1 >= Duration::from_millis(100) && gap2 >= Duration::from_millis(200), "backoff {gap1:?}, {gap2:?}");
    assert!(g.iter().all(|x| x.headers["idempotency-key"] == g[0].headers["idempotency-key"]), "a retry keeps the id");

    d.deliver(message("team", 2)).unwrap();
    let o = out.wait("failed", |o| o.iter().any(|x| x.status == Status::Failed));
    let f = o.iter().find(|x| x.status == Status::Failed).unwrap();
    assert_eq!((f.attempts, f.http_status, f.error.as_deref()), (1, Some(400), Some("HTTP 400: answer 400")));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rec.got().len(), 4, "a 4xx is not retried");
    d.close(Duration::ZERO);
}

#[test]
fn a_receiver_that_is_down_is_retried_until_it_is_up_and_given_up_after_max_attempts() {
    // A port nothing listens on yet.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let url = format!("http://127.0.0.1:{port}");
    let out = Outcomes::default();
    let d = Deliverer::start(vec![receiver("team", &url, ""), receiver("never", "http://127.0.0.1:9", "max_attempts = 3")], out.sink());
    d.deliver(message("team", 1)).unwrap();
    d.deliver(message("never", 1)).unwrap();
    out.wait("two failed attempts", |o| o.iter().filter(|x| x.receiver == "team").count() >= 2);
    let rec = Recorder::serve(TcpListener::bind(("127.0.0.1", port)).unwrap(), Arc::new(|_| (200, Duration::ZERO)), url);
    let o = out.wait("delivered once up, given up on the other", |o| {
        o.iter().any(|x| x.receiver == "team" && x.status == Status::Delivered)
            && o.iter().any(|x| x.receiver == "never" && x.status == Status::Failed)
    });
    let team: Vec<&Outcome> = o.iter().filter(|x| x.receiver == "team").collect();
    assert!(team[..team.len() - 1].iter().all(|x| x.status == Status::Retrying && x.http_status.is_none() && x.error.is_some()));
    assert_eq!(rec.got().len(), 1);
    let never: Vec<&Outcome> = o.iter().filter(|x| x.receiver == "never").collect();
    assert_eq!(never.len(), 3);
    assert!(never[2].error.as_deref().unwrap().starts_with("gave up after 3 attempts: "), "{:?}", never[2]);
    d.close(Duration::ZERO);
}

#[test]
fn a_slow_receiver_holds_up_no_other_and_the_rate_limit_spaces_requests() {
    let slow = Recorder::start(|_| (200, Duration::from_secs(2)));
    let fast = Recorder::start(|_| (200, Duration::ZERO));
    let out = Outcomes::default();
    let d = Deliverer::start(vec![receiver("slow", &slow.addr, ""), receiver("fast", &fast.addr, "rate_limit = 10.0")], out.sink());
    let t = Instant::now();
    d.deliver(message("slow", 1)).unwrap();
    for i in 0..5 {
        d.deliver(message("fast", i)).unwrap();
    }
    out.wait("the fast receiver's five", |o| o.iter().filter(|x| x.receiver == "fast" && x.status == Status::Delivered).count() == 5);
    assert!(t.elapsed() < Duration::from_millis(1500), "held up by the slow receiver: {:?}", t.elapsed());
    let g = fast.got();
    // Spaced at the sender; arrival times here shift by a connection set-up or a scheduling
    // delay, so each gap gets some slack, the whole span little.
    for w in g.windows(2) {
        assert!(w[1].at - w[0].at >= Duration::from_millis(70), "rate limit 10/s: {:?}", w[1].at - w[0].at);
    }
    assert!(g[4].at - g[0].at >= Duration::from_millis(380), "rate limit 10/s: {:?} for 5", g[4].at - g[0].at);
    out.wait("the slow one", |o| o.iter().any(|x| x.receiver == "slow" && x.status == Status::Delivered));
    d.close(Duration::ZERO);
}

#[test]
fn closing_returns_what_was_not_delivered() {
    let rec = Recorder::start(|_| (503, Duration::ZERO));
    let out = Outcomes::default();
    let d = Deliverer::start(vec![receiver("team", &rec.addr, "retry_initial = \"10s\"\nretry_max = \"10s\"")], out.sink());
    d.deliver(message("team", 1)).unwrap();
    d.deliver(message("team", 2)).unwrap();
    out.wait("both tried", |o| o.len() == 2);
    let t = Instant::now();
    let mut left = d.close(Duration::from_millis(200));
    assert!(t.elapsed() < Duration::from_secs(2), "close waits at most about its bound");
    left.sort_by_key(|m| m.at);
    assert_eq!(left.iter().map(|m| m.at).collect::<Vec<_>>(), [1, 2]);

    // A retry due within the bound still goes out while closing.
    let rec = Recorder::start(|n| (if n == 0 { 503 } else { 200 }, Duration::ZERO));
    let out = Outcomes::default();
    let d = Deliverer::start(vec![receiver("team", &rec.addr, "")], out.sink());
    d.deliver(message("team", 1)).unwrap();
    out.wait("first attempt", |o| o.len() == 1);
    assert!(d.close(Duration::from_secs(5)).is_empty(), "delivered while closing");
    assert_eq!(out.0.lock().unwrap().last().map(|o| o.status), Some(Status::Delivered));
}
