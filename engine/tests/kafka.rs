//! The Kafka source against librdkafka's mock cluster (no broker needed): the same tables as the
//! file run at 1, 2 and 4 workers, topics found while running, a broker down at start, and a run
//! stopped mid-way then resumed from its committed offsets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;

use alertflow_engine::{Pipeline, RunOptions, run};
use common::{Table, read_table, same, temp_dir};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// A small deterministic PRNG (splitmix64), so the test data is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `points` NDJSON metric lines over `series` series, one point per series every 10 s from
/// 2026-01-01, with ±3 s of disorder (a few beyond the 5 s allowed: late records) and values in
/// quarters, so sums are exact in any order. Returns (series index, line) pairs.
fn generate(series: u64, points: u64, seed: u64) -> Vec<(u64, String)> {
    let mut rng = Rng(seed);
    let t0 = 1_767_225_600_000i64;
    (0..points)
        .map(|i| {
            let s = i % series;
            let step = (i / series) as i64;
            let mut ts = t0 + step * 10_000 + rng.below(6_000) as i64 - 3_000;
            if rng.below(500) == 0 {
                ts -= 20_000; // late against its partition's watermark
            }
            let value = rng.below(400) as f64 * 0.25;
            let line = format!(r#"{{"ts":{ts},"tenant":"t{}","host":"h{s:03}","name":"cpu","value":{value}}}"#, s % 3);
            (s, line)
        })
        .collect()
}

const AGGREGATE: &str = r#"
[[aggregate]]
name = "per_minute"
input = "points"
window = { type = "tumbling", size = "1m" }
group_by = ["host"]
functions = ["count", "sum", "min", "max", "avg"]

[output]
path = "out"
file_span = "10m"
"#;

fn kafka_pipeline(dir: &Path, brokers: &str, topics: &str, group: &str, extra: &str) -> Pipeline {
    let text = format!(
        r#"
[[source]]
name = "points"
type = "kafka"
brokers = "{brokers}"
topics = {topics}
group_id = "{group}"
max_out_of_orderness = "5s"
idle_timeout = "60s"
metadata_refresh = "200ms"
commit_interval = "20ms"
{extra}
{AGGREGATE}"#
    );
    Pipeline::parse(&text, dir).unwrap_or_else(|e| panic!("{e}"))
}

/// The tables of the file run over the same lines, one file per Kafka partition (`series mod
/// partitions`, as [`produce`] sends them): a file is a partition with its own watermark, so
/// the same records are late.
fn file_tables(lines: &[(u64, String)], partitions: u64) -> (Table, Table) {
    let dir = temp_dir("kafka-file");
    for k in 0..partitions {
        let body: String = lines.iter().filter(|(s, _)| s % partitions == k).map(|(_, l)| format!("{l}\n")).collect();
        std::fs::write(dir.join(format!("points-{k}.ndjson")), body).unwrap();
    }
    let text =
        format!("[[source]]\nname = \"points\"\ntype = \"file\"\npath = \"points-*.ndjson\"\nmax_out_of_orderness = \"5s\"\n{AGGREGATE}");
    let p = Pipeline::parse(&text, &dir).unwrap();
    run(p, RunOptions { workers: Some(2), ..Default::default() }).unwrap();
    (read_table(&dir.join("out/per_minute")), read_table(&dir.join("out/dead_letters")))
}

/// The dead letters without the columns that name where they came from (file vs topic).
fn dead_letter_times(t: &Table) -> Vec<String> {
    let mut v: Vec<String> = t.iter().map(|r| r.split(',').rev().take(3).collect::<Vec<_>>().join(",")).collect();
    v.sort();
    v
}

fn ts_of(line: &str) -> i64 {
    line["{\"ts\":".len()..].split(',').next().unwrap().parse().unwrap()
}

fn parse_meta(m: &str) -> (i64, i64) {
    let (f, k) = m.strip_prefix("alertflow:F=").unwrap().split_once(",K=").unwrap();
    (f.parse().unwrap(), k.parse().unwrap())
}

fn mock(topics: &[(&str, i32)]) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let m = MockCluster::new(1).unwrap();
    for (t, n) in topics {
        m.create_topic(t, *n, 1).unwrap();
    }
    m
}

/// Produces `lines` to `topic`, each series to partition `series mod partitions` (so a series'
/// points keep their order), and waits for every delivery.
fn produce(brokers: &str, topic: &str, partitions: u64, lines: &[(u64, String)]) {
    // Batches of at most 500 messages: a test that limits fetch sizes to read slowly gets
    // small fetches (a fetch returns at least one whole batch, however large).
    let p: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "5").set("batch.num.messages", "500").create().unwrap();
    for (s, line) in lines {
        let key = format!("h{s}");
        let mut rec = BaseRecord::to(topic).payload(line.as_str()).key(key.as_str()).partition((s % partitions) as i32);
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

fn consumer(brokers: &str, group: &str) -> BaseConsumer {
    ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create().unwrap()
}

fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, (i64, String)> {
    committed_by(&consumer(brokers, group), topic, partitions)
}

fn committed_by(c: &BaseConsumer, topic: &str, partitions: i32) -> BTreeMap<i32, (i64, String)> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), (o, e.metadata().to_string()))),
            _ => None,
        })
        .collect()
}

#[test]
fn kafka_gives_the_file_tables_on_1_2_4_workers() {
    let lines = generate(40, 24_000, 7);
    let (want, want_dead) = file_tables(&lines, 4);
    assert!(want.len() > 1000, "{} rows", want.len());
    assert!(!want_dead.is_empty(), "the data should hold late records");
    let m = mock(&[("metrics", 4)]);
    let brokers = m.bootstrap_servers();
    produce(&brokers, "metrics", 4, &lines);
    for workers in [1, 2, 4] {
        let dir = temp_dir("kafka-w");
        let group = format!("g{workers}");
        let p = kafka_pipeline(&dir, &brokers, r#"["metrics"]"#, &group, "start = \"earliest\"\nstop_at_end = true");
        let s = run(p, RunOptions { workers: Some(workers), ..Default::default() }).unwrap();
        assert_eq!(s.records_in, lines.len() as u64, "{workers} worker(s)");
        same(&read_table(&dir.join("out/per_minute")), &want, &format!("{workers} worker(s)"));
        let dead = read_table(&dir.join("out/dead_letters"));
        same(&dead_letter_times(&dead), &dead_letter_times(&want_dead), &format!("dead letters, {workers} worker(s)"));
        // A clean end commits, per partition, the first record of the last file span's
        // windows (a later run rewrites that span whole): F = the newest event time rounded
        // down to the span (10 min), K = F − 1 min, and the offset that of the first record
        // with ts ≥ K.
        let c = committed(&brokers, &group, "metrics", 4);
        for k in 0..4u64 {
            let ts: Vec<i64> = lines.iter().filter(|(s, _)| s % 4 == k).map(|(_, l)| ts_of(l)).collect();
            let (offset, meta) = &c[&(k as i32)];
            let (f, kk) = parse_meta(meta);
            if workers == 1 {
                let newest = lines.iter().map(|(_, l)| ts_of(l)).max().unwrap();
                assert_eq!(f, newest - newest % 600_000, "{meta}");
            }
            assert_eq!(kk, f - 60_000, "{meta}");
            let want = ts.iter().position(|&t| t >= kk).unwrap_or(ts.len()) as i64;
            assert_eq!(*offset, want, "partition {k}, {workers} worker(s): {meta}");
            assert!(*offset > 0 && (*offset as usize) < ts.len());
        }
    }
}

#[test]
fn a_topic_created_while_running_is_picked_up() {
    let lines = generate(8, 4_000, 3);
    let (a, b) = lines.split_at(2_000);
    let m = mock(&[("first", 2)]);
    let brokers = m.bootstrap_servers();
    produce(&brokers, "first", 2, a);
    let dir = temp_dir("kafka-new");
    let p = kafka_pipeline(&dir, &brokers, r#"["first", "second"]"#, "g-new", "start = \"earliest\"");
    let records = Arc::new(AtomicU64::new(0));
    let cancel = Arc::new(AtomicBool::new(false));
    let (r2, c2) = (records.clone(), cancel.clone());
    let progress = Box::new(move |p: &alertflow_engine::Progress| r2.store(p.records, Ordering::Relaxed));
    let handle = std::thread::spawn(move || {
        run(p, RunOptions { workers: Some(2), progress: Some(progress), cancel: Some(c2), ..Default::default() })
    });
    let wait_for = |n: u64| {
        let t = Instant::now();
        while records.load(Ordering::Relaxed) < n {
            assert!(t.elapsed() < Duration::from_secs(60), "stuck at {} of {n} records", records.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(a.len() as u64);
    m.create_topic("second", 3, 1).unwrap();
    produce(&brokers, "second", 3, b);
    wait_for(lines.len() as u64);
    cancel.store(true, Ordering::Release);
    let r = handle.join().unwrap();
    assert!(r.unwrap_err().to_string().contains("cancelled"));
    assert_eq!(records.load(Ordering::Relaxed), lines.len() as u64);
}

#[test]
fn a_broker_down_at_start_is_waited_for() {
    let lines = generate(10, 3_000, 5);
    let m = mock(&[("metrics", 2)]);
    let brokers = m.bootstrap_servers();
    produce(&brokers, "metrics", 2, &lines);
    let (want, _) = file_tables(&lines, 2);
    m.broker_down(1).unwrap();
    let dir = temp_dir("kafka-down");
    let p = kafka_pipeline(&dir, &brokers, r#"["metrics"]"#, "g-down", "start = \"earliest\"\nstop_at_end = true");
    let t = Instant::now();
    let running = std::thread::spawn(move || run(p, RunOptions { workers: Some(2), ..Default::default() }));
    std::thread::sleep(Duration::from_secs(3));
    assert!(!running.is_finished(), "the run should wait for the broker");
    m.broker_up(1).unwrap();
    let s = running.join().unwrap().unwrap();
    assert!(t.elapsed() >= Duration::from_secs(3));
    assert_eq!(s.records_in, lines.len() as u64);
    same(&read_table(&dir.join("out/per_minute")), &want, "per_minute");
}

#[test]
fn a_broker_that_goes_away_mid_run_is_waited_for() {
    let lines = generate(10, 20_000, 23);
    let m = mock(&[("metrics", 2)]);
    let brokers = m.bootstrap_servers();
    produce(&brokers, "metrics", 2, &lines);
    let (want, _) = file_tables(&lines, 2);
    // Small fetches from a slow broker, so that the run is still reading when it goes away.
    m.broker_round_trip_time(1, Duration::from_millis(50)).unwrap();
    let dir = temp_dir("kafka-away");
    let p = kafka_pipeline(
        &dir,
        &brokers,
        r#"["metrics"]"#,
        "g-away",
        "start = \"earliest\"\nstop_at_end = true\noptions = { \"max.partition.fetch.bytes\" = \"4096\", \"fetch.max.bytes\" = \"8192\", \"message.max.bytes\" = \"8192\" }",
    );
    let records = Arc::new(AtomicU64::new(0));
    let r2 = records.clone();
    let progress = Box::new(move |p: &alertflow_engine::Progress| r2.store(p.records, Ordering::Relaxed));
    let running = std::thread::spawn(move || run(p, RunOptions { workers: Some(2), progress: Some(progress), ..Default::default() }));
    let t = Instant::now();
    while records.load(Ordering::Relaxed) < 1_000 {
        assert!(t.elapsed() < Duration::from_secs(60) && !running.is_finished(), "no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    m.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let during = records.load(Ordering::Relaxed);
    assert!(!running.is_finished() && during < lines.len() as u64, "the run should wait for the broker ({during} records)");
    m.broker_up(1).unwrap();
    let s = running.join().unwrap().unwrap();
    assert_eq!(s.records_in, lines.len() as u64);
    same(&read_table(&dir.join("out/per_minute")), &want, "per_minute");
}

/// What the broker does with the commit metadata in `resume`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Metadata {
    /// Keeps it (Apache Kafka, the mock cluster).
    Kept,
    /// Drops it (Tansu 0.6): the output folder's commit journal has it.
    Dropped,
    /// Drops it, and the journal is gone too (a control: the resumed run cannot be exact).
    DroppedNoJournal,
}

/// Stops a run once it has committed offsets mid-way (like a crash: nothing more written or
/// committed), then resumes it from them; returns the resumed run's table and the file run's.
fn resume(meta: Metadata) -> (Table, Table) {
    let lines = generate(40, 60_000, 11);
    let (want, _) = file_tables(&lines, 4);
    let m = mock(&[("metrics", 4)]);
    let brokers = m.bootstrap_servers();
    produce(&brokers, "metrics", 4, &lines);
    // Small fetches from a slow broker: the run takes seconds, so it is stopped mid-way.
    m.broker_round_trip_time(1, Duration::from_millis(100)).unwrap();
    const SLOW: &str = "stop_at_end = true\noptions = { \"max.partition.fetch.bytes\" = \"4096\", \"fetch.max.bytes\" = \"16384\", \"message.max.bytes\" = \"16384\" }";
    let dir = temp_dir("kafka-resume");
    let group = "g-resume";
    {
        let p = kafka_pipeline(&dir, &brokers, r#"["metrics"]"#, group, SLOW);
        let cancel = Arc::new(AtomicBool::new(false));
        let c = cancel.clone();
        let watch = consumer(&brokers, group);
        let running = std::thread::spawn(move || run(p, RunOptions { workers: Some(2), cancel: Some(c), ..Default::default() }));
        let t = Instant::now();
        while committed_by(&watch, "metrics", 4).is_empty() {
            assert!(t.elapsed() < Duration::from_secs(60) && !running.is_finished(), "no offsets committed mid-run");
            std::thread::sleep(Duration::from_millis(50));
        }
        cancel.store(true, Ordering::Release);
        let r = running.join().unwrap();
        assert!(r.is_err(), "the run should have been stopped: {:?} after {:?}", r.map(|s| s.records_in), t.elapsed());
    }
    let c = committed(&brokers, group, "metrics", 4);
    let done: i64 = c.values().map(|(o, _)| *o).sum();
    assert!(done > 0 && done < lines.len() as i64, "a mid-run commit is expected: {c:?}");
    assert!(c.values().all(|(_, m)| m.starts_with("alertflow:F=")), "{c:?}");
    if meta != Metadata::Kept {
        // The same offsets, without metadata.
        let mut tpl = TopicPartitionList::new();
        for (&p, (o, _)) in &c {
            tpl.add_partition_offset("metrics", p, Offset::Offset(*o)).unwrap();
        }
        consumer(&brokers, group).commit(&tpl, CommitMode::Sync).unwrap();
        assert!(committed(&brokers, group, "metrics", 4).values().all(|(_, m)| m.is_empty()));
    }
    if meta == Metadata::DroppedNoJournal {
        std::fs::remove_dir_all(dir.join("out/_kafka")).unwrap();
    }
    if meta == Metadata::Dropped {
        // A damaged journal stops the resumed run with an error naming the file and line.
        let files: Vec<PathBuf> = std::fs::read_dir(dir.join("out/_kafka/g-resume")).unwrap().map(|e| e.unwrap().path()).collect();
        let good = std::fs::read(&files[0]).unwrap();
        std::fs::write(&files[0], "not a journal line\n").unwrap();
        let p = kafka_pipeline(&dir, &brokers, r#"["metrics"]"#, group, SLOW);
        let err = run(p, RunOptions { workers: Some(2), ..Default::default() }).unwrap_err().to_string();
        assert!(err.contains("commit journal") && err.contains(":1: not an `offset F K` line"), "{err}");
        std::fs::write(&files[0], good).unwrap();
    }
    let partial = read_table(&dir.join("out/per_minute"));
    assert!(!partial.is_empty() && partial.len() < want.len(), "{} of {} rows", partial.len(), want.len());
    // Second run: from the committed offsets, keeping the files written so far.
    let p = kafka_pipeline(&dir, &brokers, r#"["metrics"]"#, group, SLOW);
    let s = run(p, RunOptions { workers: Some(2), ..Default::default() }).unwrap();
    assert!(s.records_in < lines.len() as u64, "the resumed run re-read everything");
    (read_table(&dir.join("out/per_minute")), want)
}

#[test]
fn a_stopped_run_resumes_from_committed_offsets_to_the_same_tables() {
    let (got, want) = resume(Metadata::Kept);
    same(&got, &want, "per_minute");
}

#[test]
fn a_broker_that_drops_commit_metadata_resumes_exactly_from_the_journal() {
    let (got, want) = resume(Metadata::Dropped);
    same(&got, &want, "per_minute");
    // The control: without metadata and journal the restart rewrites the span it resumes in
    // with only the records from the committed offsets on.
    let (got, want) = resume(Metadata::DroppedNoJournal);
    assert!(got.len() < want.len(), "without the journal the resumed table should lack rows: {} of {}", got.len(), want.len());
}

/// A sink that cannot write (its output folder blocked from hour 02 on: a regular file where
/// the sink must create `date=…/hour=02`) stops the run with an error naming the table and the
/// folder; no offset is committed past the durable output, so once the fault is fixed the
/// restart resumes and the table is the same as an uninterrupted run's.
#[test]
fn a_sink_that_cannot_write_stops_the_run_and_the_restart_loses_nothing() {
    let lines = generate(40, 60_000, 12);
    let (want, _) = file_tables(&lines, 4);
    let m = mock(&[("metrics", 4)]);
    let brokers = m.bootstrap_servers();
    produce(&brokers, "metrics", 4, &lines);
    let dir = temp_dir("kafka-sink-fault");
    let blocker = dir.join("out/per_minute/date=2026-01-01/hour=02");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, "in the way").unwrap();
    let group = "g-fault";
    let pipeline = || kafka_pipeline(&dir, &brokers, r#"["metrics"]"#, group, "stop_at_end = true");
    let err = run(pipeline(), RunOptions { workers: Some(2), ..Default::default() }).unwrap_err().to_string();
    assert!(err.contains("sink `per_minute`: cannot create") && err.contains("hour=02"), "{err}");
    let hour2 = 1_767_225_600_000 + 2 * 3_600_000;
    let c = committed(&brokers, group, "metrics", 4);
    for (p, (_, meta)) in &c {
        let (f, k) = parse_meta(meta);
        assert!(f <= hour2 && k <= hour2, "partition {p} committed past the failed output: F={f} K={k}");
    }
    let partial = read_table(&dir.join("out/per_minute"));
    assert!(partial.len() < want.len(), "the failed run cannot have written everything");
    std::fs::remove_file(&blocker).unwrap();
    run(pipeline(), RunOptions { workers: Some(2), ..Default::default() }).unwrap();
    same(&read_table(&dir.join("out/per_minute")), &want, "per_minute after the restart");
}

#[test]
fn the_message_timestamp_is_the_event_time_when_the_payload_has_none() {
    let lines = generate(6, 3_000, 13);
    let (want, _) = file_tables(&lines, 2);
    let m = mock(&[("bare", 2)]);
    let brokers = m.bootstrap_servers();
    // The same points, the time only in the message's timestamp.
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    for (s, line) in &lines {
        let ts = ts_of(line);
        let bare = line.replacen(&format!("\"ts\":{ts},"), "", 1);
        assert!(!bare.contains("\"ts\""));
        let rec = BaseRecord::<(), _>::to("bare").payload(bare.as_str()).partition((s % 2) as i32).timestamp(ts);
        p.send(rec).map_err(|(e, _)| e).unwrap();
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let dir = temp_dir("kafka-bare");
    let pipe = kafka_pipeline(&dir, &brokers, r#"["bare"]"#, "g-bare", "start = \"earliest\"\nstop_at_end = true");
    run(pipe, RunOptions { workers: Some(2), ..Default::default() }).unwrap();
    same(&read_table(&dir.join("out/per_minute")), &want, "per_minute");
}

#[test]
fn the_message_key_is_a_label_under_key_label() {
    let lines = generate(6, 3_000, 19);
    let (want, _) = file_tables(&lines, 2);
    let m = mock(&[("keyed", 2)]);
    let brokers = m.bootstrap_servers();
    // The same points, the host only in the message key; one more with a key that is not
    // UTF-8 (a dead letter), one without a key (no host label: another series).
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    for (s, line) in &lines {
        let host = format!("h{s:03}");
        let bare = line.replacen(&format!(",\"host\":\"{host}\""), "", 1);
        assert!(!bare.contains("host"), "{bare}");
        p.send(BaseRecord::to("keyed").payload(bare.as_str()).key(host.as_str()).partition((s % 2) as i32)).map_err(|(e, _)| e).unwrap();
        p.poll(Duration::ZERO);
    }
    let last = lines.iter().map(|(_, l)| ts_of(l)).max().unwrap();
    let extra = format!(r#"{{"ts":{last},"tenant":"t0","name":"cpu","value":1}}"#);
    p.send(BaseRecord::to("keyed").payload(extra.as_str()).key(&b"h\xff"[..]).partition(0)).map_err(|(e, _)| e).unwrap();
    p.send(BaseRecord::<(), _>::to("keyed").payload(extra.as_str()).partition(1)).map_err(|(e, _)| e).unwrap();
    p.flush(Duration::from_secs(30)).unwrap();
    let dir = temp_dir("kafka-keyed");
    let pipe = kafka_pipeline(&dir, &brokers, r#"["keyed"]"#, "g-keyed", "start = \"earliest\"\nstop_at_end = true\nkey_label = \"host\"");
    let s = run(pipe, RunOptions { workers: Some(2), ..Default::default() }).unwrap();
    assert_eq!(s.records_in, lines.len() as u64 + 2);
    let got = read_table(&dir.join("out/per_minute"));
    let (hostless, keyed): (Vec<String>, Vec<String>) = got.into_iter().partition(|r| !r.contains(",h0"));
    same(&keyed, &want, "per_minute");
    assert_eq!(hostless.len(), 1, "the keyless message is a series without host: {hostless:?}");
    let dead = read_table(&dir.join("out/dead_letters"));
    assert!(
        dead.iter().any(|r| r.contains("the message key is not UTF-8 text (invalid at byte 1)")),
        "the bad key should be a dead letter: {dead:?}"
    );
}

#[test]
fn a_table_goes_to_a_kafka_sink_as_json_keyed_by_tenant_and_id() {
    let lines = generate(12, 6_000, 17);
    let m = mock(&[("metrics", 3), ("per-minute", 2)]);
    let brokers = m.bootstrap_servers();
    produce(&brokers, "metrics", 3, &lines);
    let dir = temp_dir("kafka-sink");
    let sink = format!(
        "start = \"earliest\"\nstop_at_end = true\n[[sink]]\ntype = \"kafka\"\ntable = \"per_minute\"\nbrokers = \"{brokers}\"\ntopic = \"per-minute\""
    );
    let pipe = kafka_pipeline(&dir, &brokers, r#"["metrics"]"#, "g-sink", &sink);
    let s = run(pipe, RunOptions { workers: Some(2), ..Default::default() }).unwrap();
    let table = read_table(&dir.join("out/per_minute"));
    assert_eq!(s.tables[0].rows as usize, table.len());
    // Every row arrived (delivery is confirmed before the run ends), once.
    let c = consumer(&brokers, "reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("per-minute", 0, Offset::Beginning).unwrap();
    tpl.add_partition_offset("per-minute", 1, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let t = Instant::now();
    while got.len() < table.len() && t.elapsed() < Duration::from_secs(30) {
        if let Some(msg) = c.poll(Duration::from_millis(100)) {
            let msg = msg.unwrap();
            use rdkafka::Message;
            let v: serde_json::Value = serde_json::from_slice(msg.payload().unwrap()).unwrap();
            let key = std::str::from_utf8(msg.key().unwrap()).unwrap().to_string();
            // The key: tenant, name, host and the window start.
            let want_key = format!(
                "{}/{}/{}/{}",
                v["tenant"].as_str().unwrap(),
                v["name"].as_str().unwrap(),
                v["host"].as_str().unwrap(),
                v["window_start"].as_str().unwrap()
            );
            assert_eq!(key, want_key);
            got.push((
                v["window_start"].as_str().unwrap().to_string(),
                v["tenant"].as_str().unwrap().to_string(),
                v["host"].as_str().unwrap().to_string(),
                v["count"].as_i64().unwrap(),
                v["sum"].as_f64().unwrap(),
            ));
        }
    }
    assert!(c.poll(Duration::from_millis(500)).is_none(), "more messages than rows");
    assert_eq!(got.len(), table.len());
    // The same rows as the Parquet table (count and sum per window and host).
    let mut from_table: Vec<(i64, String, String, i64, f64)> = table
        .iter()
        .map(|r| {
            let c: Vec<&str> = r.split(',').collect();
            (c[0].parse().unwrap(), c[2].to_string(), c[4].to_string(), c[5].parse().unwrap(), c[6].parse().unwrap())
        })
        .collect();
    from_table.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut from_kafka: Vec<(i64, String, String, i64, f64)> = got
        .into_iter()
        .map(|(ws, t, h, n, s)| (alertflow_model::decode::parse_time_field("window_start", &ws).unwrap(), t, h, n, s))
        .collect();
    from_kafka.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(from_kafka, from_table);
}
