//! Consume + decode + window + Parquet from Kafka, 2 workers: W1-shaped points (10,000 series,
//! ±2 s disorder) pre-filled into a 16-partition topic of librdkafka's in-process mock cluster
//! (it shares the cores with the pipeline, as a loopback broker would), each iteration a fresh
//! consumer group reading the topic from the start with `stop_at_end = true`.

use std::time::{Duration, Instant};

use alertflow_engine::{Pipeline, RunOptions, run};
use alertflow_tools::datagen::{MetricsGen, generate_metrics};
use alertflow_tools::kafka_lines::KafkaLines;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rdkafka::mocking::MockCluster;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const POINTS: u64 = 1_000_000;

fn bench(c: &mut Criterion) {
    let spec = MetricsGen { series: 10_000, points: POINTS, seed: 1, disorder_ms: 2_000, ..MetricsGen::default() };
    let mock = MockCluster::new(1).unwrap();
    // The mock keeps at most 5 MiB of record batches per partition (it deletes older ones):
    // 16 partitions of lz4 batches hold the million points. Keyed by series: a series stays
    // in one partition, in order.
    mock.create_topic("w1", 16, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let mut w = KafkaLines::new(&brokers, "w1").unwrap();
    generate_metrics(&spec, &mut w).unwrap();
    assert_eq!(w.finish().unwrap(), POINTS);
    let dir = std::env::temp_dir().join(format!("af-bench-kafka-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut group = 0;
    let mut g = c.benchmark_group("kafka");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(POINTS));
    g.bench_function("w1_1m_points_4_partitions_2_workers", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                group += 1;
                let text = format!(
                    r#"
[[source]]
name = "points"
type = "kafka"
brokers = "{brokers}"
topic = "w1"
group_id = "bench-{group}"
start = "earliest"
stop_at_end = true

[[aggregate]]
name = "per_minute"
input = "points"
window = {{ type = "tumbling", size = "1m" }}
group_by = ["host"]
functions = ["count", "sum", "min", "max", "avg"]

[output]
path = "out"
"#
                );
                let pipeline = Pipeline::parse(&text, &dir).unwrap();
                let t = Instant::now();
                let s = run(pipeline, RunOptions { workers: Some(2), ..Default::default() }).unwrap();
                total += t.elapsed();
                assert_eq!(s.records_in, POINTS);
            }
            total
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
