//! Checkpoints with Kafka (issue 7) against librdkafka's mock cluster: a pipeline reading
//! metric points and alerts from two topics — tumbling, hopping and session windows, a rule, a
//! detector raising alerts, dedup, storm suppression, correlation — and sending `alerts` to
//! a Kafka sink, is cut short at random moments (as a crash: `cancel`) and restarted until it
//! completes, at 1, 2 and 4 workers (at 2, every other cut is a stop, as SIGTERM). Every Parquet table must equal an uninterrupted run's,
//! dead letters included: the sources resume from their checkpoint parts (per partition: an
//! offset and the partition's state), not from committed offsets. The sink is at least once:
//! every `alerts` row of the uninterrupted run reaches the topic, and nothing else does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;

use alertflow_engine::{Pipeline, RunError, RunOptions, run};
use common::{Lcg, Table, read_table, same, temp_dir};
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const METRIC_LINES: usize = 60_000;
const ALERT_LINES: usize = 20_000;
const METRIC_PARTITIONS: i32 = 4;
const ALERT_PARTITIONS: i32 = 3;
/// The mock cluster keeps at most 5 MB per partition (and drops the oldest messages past
/// that): incident rows are large, so the sink topics have partitions enough for twice the rows.
const SINK_PARTITIONS: i32 = 8;
/// Each fetch waits this long: a run lasts a few seconds.
const ROUND_TRIP: Duration = Duration::from_millis(40);

/// (partition, line) pairs: metric points of 12 series over ~4 hours, shuffled up to 3 s
/// (within the 5 s allowed), late points (30 s behind) and broken lines now and then, a host's
/// points in one partition; alerts of 40 services firing in bursts (storms) and resolving, an
/// instance's alerts in one partition.
fn inputs(seed: u64) -> (Vec<Message>, Vec<Message>) {
    let mut r = Lcg(seed);
    let mut m = Vec::with_capacity(METRIC_LINES);
    for i in 0..METRIC_LINES {
        let base = T0 + (i as i64) * 250;
        let ts = match r.below(1000) {
            0..=4 => base - 30_000,
            _ => base + r.below(3000) as i64 - 1500,
        };
        let host = r.below(6);
        let name = if r.below(2) == 0 { "cpu" } else { "mem" };
        let spike = if r.below(500) == 0 { 400.0 } else { 0.0 };
        let v = 50.0 + 30.0 * ((i as f64) / 900.0).sin() + (r.below(1000) as f64) / 100.0 + spike;
        let part = (host % METRIC_PARTITIONS as u64) as i32;
        match r.below(2000) {
            0 => m.push((part, "{\"ts\": oops".to_string())),
            _ => m.push((part, format!(r#"{{"ts":{ts},"name":"{name}","value":{v},"host":"h{host}","dc":"dc{}"}}"#, host % 2))),
        }
    }
    let mut a = Vec::with_capacity(ALERT_LINES);
    let mut firing = [false; 120];
    for i in 0..ALERT_LINES {
        let ts = T0 + (i as i64) * 700 + r.below(2000) as i64;
        let burst = (i / 200) % 9 == 0;
        let k = if burst { r.below(120) } else { r.below(30) } as usize;
        let status = if firing[k] && r.below(3) == 0 { "resolved" } else { "firing" };
        firing[k] = status == "firing";
        let sev = ["critical", "warning", "info"][k % 3];
        let part = (k % ALERT_PARTITIONS as usize) as i32;
        match r.below(3000) {
            0 => a.push((part, "{\"alertname\":".to_string())),
            _ => a.push((
                part,
                format!(
                    r#"{{"ts":{ts},"alertname":"Alert{}","severity":"{sev}","status":"{status}","service":"svc{}","instance":"i{k}","annotations":{{"summary":"s{k}"}}}}"#,
                    k % 7,
                    k % 40
                ),
            )),
        }
    }
    (m, a)
}

/// A message to produce: (partition, payload).
type Message = (i32, String);

fn produce(brokers: &str, topic: &str, lines: &[Message]) {
    let p: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "5").set("batch.num.messages", "500").create().unwrap();
    for (part, line) in lines {
        let mut rec = BaseRecord::<(), str>::to(topic).payload(line.as_str()).partition(*part);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    p.poll(Duration::from_millis(10));
                    rec = r;
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// The pipeline over both topics, with small fetches so that a run lasts long enough to be
/// cut several times.
fn pipeline_text(brokers: &str, group: &str) -> String {
    let kafka = |name: &str, topic: &str, records: &str| {
        format!(
            r#"
[[source]]
name = "{name}"
type = "kafka"
brokers = "{brokers}"
topic = "{topic}"
group_id = "{group}"
records = "{records}"
start = "earliest"
stop_at_end = true
idle_timeout = "60s"
max_out_of_orderness = "5s"
options = {{ "max.partition.fetch.bytes" = "8192", "fetch.max.bytes" = "32768", "message.max.bytes" = "32768" }}
"#
        )
    };
    let mut t = String::from(
        r#"
[engine]
epoch = "1s"
state_dir = "state"
checkpoint_interval = "10s"
checkpoint_min_wall_interval = "10ms"
"#,
    );
    t.push_str(&kafka("points", "metrics", "metrics"));
    t.push_str(&kafka("alerts", "alerts", "alerts"));
    write!(
        t,
        r#"
[[aggregate]]
name = "per_minute"
input = "points"
window = {{ type = "tumbling", size = "1m" }}
group_by = ["host"]
functions = ["count", "sum", "avg", "min", "max", "last", "stddev", "p95"]

[[aggregate]]
name = "hopping"
input = "points"
window = {{ type = "hopping", size = "5m", slide = "1m" }}
group_by = ["dc"]
functions = ["count", "avg", "p50"]

[[aggregate]]
name = "sessions"
input = "points"
window = {{ type = "session", gap = "2s" }}
group_by = ["host"]
functions = ["count", "max"]

[[rule]]
name = "HighCpu"
input = "per_minute"
metrics = ["cpu"]
when = "avg > 70"
for = "2m"
severity = "warning"

[[detect]]
name = "anomalies"
input = "points"
metrics = ["cpu"]
detector = "mad"
threshold = 0.99
raise_alerts = true

[suppress]
group_by = ["alertname"]
threshold = 8
window = "2m"

[correlate]
group_by = ["service"]

[[sink]]
type = "kafka"
table = "alerts"
brokers = "{brokers}"
topic = "alerts-out"

[output]
path = "out"
fsync = false
"#
    )
    .unwrap();
    t
}

const TABLES: [&str; 8] = ["per_minute", "hopping", "sessions", "anomalies", "alerts", "storms", "incidents", "dead_letters"];

fn tables(dir: &Path) -> Vec<(String, Table)> {
    TABLES.iter().map(|t| (t.to_string(), read_table(&dir.join("out").join(t)))).collect()
}

/// When to cut a run short.
#[derive(Clone, Copy)]
enum Cut {
    /// After this long.
    After(Duration),
    /// This long after the run's first commit of a checkpoint: every such run makes progress,
    /// however slow the build.
    AfterCommit(Duration),
}

/// Runs once, cut short if asked: cancelled (as a crash), or with `stop` asked to stop (as
/// SIGTERM: it ends at a checkpoint).
fn run_once(dir: &Path, workers: usize, cut: Option<Cut>, stop: bool) -> Result<alertflow_engine::RunSummary, RunError> {
    let pipeline = Pipeline::load(&dir.join("pipeline.toml")).unwrap();
    let mut opts = RunOptions { workers: Some(workers), ..RunOptions::default() };
    if let Some(after) = cut {
        let flag = Arc::new(AtomicBool::new(false));
        if stop {
            opts.stop = Some(flag.clone());
        } else {
            opts.cancel = Some(flag.clone());
        }
        let current = dir.join("state/CURRENT");
        let before = std::fs::read(&current).ok();
        std::thread::spawn(move || {
            let after = match after {
                Cut::After(d) => d,
                Cut::AfterCommit(d) => {
                    // (The run ending removes CURRENT, which ends the wait too.)
                    let t = Instant::now();
                    while std::fs::read(&current).ok() == before && t.elapsed() < Duration::from_secs(600) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    d
                }
            };
            std::thread::sleep(after);
            flag.store(true, Ordering::Release);
        });
    }
    run(pipeline, opts)
}

/// Every message of a topic's partitions, from the start (without the broker's delay).
fn read_topic(m: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>, topic: &str, partitions: i32) -> Vec<serde_json::Value> {
    m.broker_round_trip_time(1, Duration::ZERO).unwrap();
    let brokers = &m.bootstrap_servers();
    // Fetches larger than any batch the sink's producer makes (incident rows are large): the
    // mock cluster does not hand out a batch larger than a fetch.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "reader")
        .set("max.partition.fetch.bytes", "67108864")
        .set("fetch.max.bytes", "134217728")
        .set("receive.message.max.bytes", "134218240")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut end = 0;
    let mut marks = Vec::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        let w = c.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
        marks.push(w);
        end += w.1 - w.0;
    }
    c.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let mut per = BTreeMap::new();
    let t = Instant::now();
    assert!(marks.iter().all(|w| w.0 == 0), "the mock cluster dropped messages of `{topic}`: {marks:?}");
    while (got.len() as i64) < end {
        assert!(t.elapsed() < Duration::from_secs(60), "{} of {end} messages of `{topic}` (watermarks {marks:?}): {per:?}", got.len());
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            *per.entry(m.partition()).or_insert(0) += 1;
            got.push(serde_json::from_slice(m.payload().unwrap()).unwrap());
        }
    }
    m.broker_round_trip_time(1, ROUND_TRIP).unwrap();
    got
}

/// An `alerts` row as (fingerprint, revision): one lifecycle change of one alert.
fn alert_revisions(rows: &[serde_json::Value]) -> BTreeSet<(String, i64)> {
    rows.iter().map(|v| (v["fingerprint"].as_str().unwrap().to_string(), v["revision"].as_i64().unwrap())).collect()
}

#[test]
fn kafka_runs_cut_short_and_resumed_from_checkpoints_end_with_the_tables_of_an_uninterrupted_run() {
    for (workers, seed) in [(1u64, 3u64), (2, 5), (4, 7)] {
        if workers == 4 && cfg!(debug_assertions) {
            // Four workers on two cores, unoptimized: a checkpoint takes about as long as the
            // whole run, so runs cut at random within that length make no progress.
            // `scripts/test.sh` runs this test in a release build, where they do.
            eprintln!("4 worker(s): skipped in a debug build (run it with --release)");
            continue;
        }
        let (metrics, alerts) = inputs(seed);
        let m = MockCluster::new(1).unwrap();
        m.create_topic("metrics", METRIC_PARTITIONS, 1).unwrap();
        m.create_topic("alerts", ALERT_PARTITIONS, 1).unwrap();
        m.create_topic("alerts-out", SINK_PARTITIONS, 1).unwrap();
        let brokers = m.bootstrap_servers();
        produce(&brokers, "metrics", &metrics);
        produce(&brokers, "alerts", &alerts);
        m.broker_round_trip_time(1, ROUND_TRIP).unwrap();
        let w = workers as usize;

        let reference = temp_dir("kafka-ckpt-ref");
        std::fs::write(reference.join("pipeline.toml"), pipeline_text(&brokers, "g-ref")).unwrap();
        let t = Instant::now();
        let s = run_once(&reference, w, None, false).unwrap();
        let took = t.elapsed();
        eprintln!("{workers} worker(s): the uninterrupted run took {took:?}");
        assert_eq!(s.records_in, (METRIC_LINES + ALERT_LINES) as u64, "{workers} worker(s)");
        let c = s.checkpoints.clone().unwrap();
        // (At least one: a debug build's run may spend its whole length on the first, held
        // back by the one worker that correlates the alerts of the busiest service.)
        assert!(c.committed >= 1, "{workers} worker(s): the uninterrupted run took no checkpoint");
        assert!(s.dead_letters > 0 && s.late > 0, "{s:?}");
        let want = tables(&reference);
        for (name, t) in &want {
            assert!(!t.is_empty(), "{workers} worker(s): table `{name}` is empty: the test would prove little");
        }
        // The uninterrupted run sent every alert row once.
        let sent = read_topic(&m, "alerts-out", SINK_PARTITIONS);
        let want_alerts = want.iter().find(|(n, _)| n == "alerts").unwrap().1.len();
        assert_eq!(sent.len(), want_alerts, "{workers} worker(s): alert rows sent by the uninterrupted run");
        let want_revisions = alert_revisions(&sent);
        assert_eq!(want_revisions.len(), want_alerts);
        // A completed run leaves nothing to resume, and commits the end offsets.
        assert!(!reference.join("state/CURRENT").exists());
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", "g-ref").create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..METRIC_PARTITIONS {
            tpl.add_partition("metrics", p);
        }
        let committed: BTreeMap<i32, (i64, String)> = c
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap()
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), (o, e.metadata().to_string()))),
                _ => None,
            })
            .collect();
        assert_eq!(committed.len(), METRIC_PARTITIONS as usize, "{committed:?}");
        for (p, (o, meta)) in &committed {
            let high = c.fetch_watermarks("metrics", *p, Duration::from_secs(10)).unwrap().1;
            assert_eq!((*o, meta.as_str()), (high, "alertflow:end"), "partition {p}");
        }

        // The same, cut short at seeded random moments (within the uninterrupted run's time)
        // until a run completes. Sent to a fresh sink topic.
        m.create_topic("alerts-cut", SINK_PARTITIONS, 1).unwrap();
        let cut = temp_dir("kafka-ckpt-cut");
        std::fs::write(cut.join("pipeline.toml"), pipeline_text(&brokers, "g-cut").replace("alerts-out", "alerts-cut")).unwrap();
        let mut r = Lcg(seed * 31);
        let (mut cuts, mut resumes) = (0, 0);
        let span = took.as_millis().max(200) as u64;
        for attempt in 0.. {
            assert!(attempt < 40, "the run never completed");
            let resuming = cut.join("state/CURRENT").exists();
            // The first cut at any moment (perhaps before any checkpoint); the others after the
            // run committed one, so that each makes progress. The window grows with the
            // attempts, so that the run completes however far behind its sources the
            // checkpoints are (in a debug build, far).
            let after = Duration::from_millis(30 + r.below(span / 3 * (1 + attempt / 4)));
            let after = if attempt == 0 { Cut::After(after) } else { Cut::AfterCommit(after) };
            // At 2 workers every other cut is a stop.
            let stop = workers == 2 && attempt % 2 == 1;
            resumes += usize::from(resuming);
            match run_once(&cut, w, Some(after), stop) {
                Ok(s) => {
                    // A checkpoint past the first minute lies after the first messages of
                    // every partition (disorder is at most 30 s): those are not read again.
                    let from = s.checkpoints.as_ref().map_or(0, |c| c.resumed_from);
                    if resuming && from > T0 as u64 + 60_000 {
                        assert!(s.records_in < (METRIC_LINES + ALERT_LINES) as u64, "a run resumed at {from} read everything again");
                    }
                    break;
                }
                Err(RunError::Failed(m)) if !stop => assert!(m.contains("cancelled"), "{m}"),
                Err(RunError::Stopped(m)) if stop => assert!(m.contains("checkpoint"), "{m}"),
                Err(e) => panic!("attempt {attempt}: {e}"),
            }
            cuts += 1;
        }
        assert!(cuts >= 2 && resumes >= 1, "{workers} worker(s): {cuts} cut(s), {resumes} resumed: too few to prove anything");
        let what = format!("{workers} worker(s), {cuts} cut(s), {resumes} resumed");
        for ((name, g), (_, w)) in tables(&cut).iter().zip(&want) {
            same(g, w, &format!("{what}: table `{name}`"));
        }
        // At least once: every alert row reached the topic; nothing that is not one did.
        let got = alert_revisions(&read_topic(&m, "alerts-cut", SINK_PARTITIONS));
        let missing: Vec<_> = want_revisions.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(&want_revisions).take(5).collect();
        assert!(missing.is_empty() && extra.is_empty(), "{what}: alert rows missing from the sink topic {missing:?}, not rows {extra:?}");
        eprintln!("{what}: the tables of the uninterrupted run ({took:?})");
    }
}
