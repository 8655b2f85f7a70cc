//! Decoders alone, one thread, every decoder of `alertflow_model::decode`: W1-style metric
//! lines (NDJSON and the same points as CSV) into interned series, and the storm-heavy alert
//! stream of the alert operator benches (≈ 0.34 M notices) as NDJSON, Alertmanager v2 JSON
//! (webhook-like arrays of up to 8 alerts per line) and CSV into `Alert`s with interned label
//! sets. For scale: the W1 end-to-end target is ≥ 2 M points/s on 2 workers, the alert
//! chain's 1 M alerts/s on 2 cores (≥ 0.5 M notices/s per worker for decode and every
//! operator together).

use std::fmt::Write;
use std::hint::black_box;

use alertflow_benches::harness::{alert_file, storm_scenario};
use alertflow_model::SeriesInterner;
use alertflow_model::decode::{AlertDecoder, CsvAlertHeader, CsvHeader, CsvMetricDecoder, NdjsonMetricDecoder};
use alertflow_tools::alertgen::AlertFormat;
use alertflow_tools::datagen::{MetricsGen, generate_metrics};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn lines(buf: &[u8]) -> Vec<&[u8]> {
    buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect()
}

/// The same points as CSV (`ts,tenant,name,host,value`), from the decoded NDJSON lines.
fn csv_metrics(ndjson: &[&[u8]]) -> Vec<u8> {
    let mut interner = SeriesInterner::new();
    let mut dec = NdjsonMetricDecoder::new();
    let mut out = String::from("ts,tenant,name,host,value\n");
    for l in ndjson {
        let (s, ts, v) = dec.decode(l, &mut interner).expect("generated lines decode");
        let host = s.label("host").expect("W1 points have a host");
        let _ = writeln!(out, "{ts},{},{},{host},{v}", s.tenant(), s.name());
    }
    out.into_bytes()
}

fn bench(c: &mut Criterion) {
    let spec = MetricsGen { series: 10_000, points: 200_000, ..MetricsGen::default() };
    let mut buf = Vec::new();
    generate_metrics(&spec, &mut buf).unwrap();
    let lines_ndjson = lines(&buf);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(lines_ndjson.len() as u64));
    g.bench_function("ndjson_w1_200k_lines", |b| {
        let mut interner = SeriesInterner::new();
        let mut dec = NdjsonMetricDecoder::new();
        b.iter(|| {
            let mut sum = 0.0;
            for l in &lines_ndjson {
                if let Ok((_, _, v)) = dec.decode(l, &mut interner) {
                    sum += v;
                }
            }
            sum
        })
    });

    let csv = csv_metrics(&lines_ndjson);
    let csv_lines = lines(&csv);
    let header = CsvHeader::parse(csv_lines[0]).unwrap();
    g.throughput(Throughput::Elements(csv_lines.len() as u64 - 1));
    g.bench_function("csv_w1_200k_lines", |b| {
        let mut interner = SeriesInterner::new();
        let mut dec = CsvMetricDecoder::new(header.clone());
        b.iter(|| {
            let mut sum = 0.0;
            for l in &csv_lines[1..] {
                sum += dec.decode(l, &mut interner).expect("CSV lines decode").2;
            }
            sum
        })
    });

    // Alerts: every notice of the scenario, in each format.
    let scenario = storm_scenario();
    let notices = scenario.notices.len() as u64;
    g.sample_size(20);
    g.throughput(Throughput::Elements(notices));

    let file = alert_file(&scenario, AlertFormat::Ndjson);
    let ls = lines(&file);
    g.bench_function(format!("ndjson_alerts_{}k_notices", notices / 1000), |b| {
        let mut dec = AlertDecoder::new();
        b.iter(|| {
            let mut n = 0u64;
            for (i, l) in ls.iter().enumerate() {
                n += black_box(dec.ndjson(l, 0, i as u64).expect("NDJSON alerts decode")).ts as u64 & 1;
            }
            n
        })
    });

    let file = alert_file(&scenario, AlertFormat::Alertmanager);
    let ls = lines(&file);
    g.bench_function(format!("alertmanager_alerts_{}k_notices_{}k_lines", notices / 1000, ls.len() / 1000), |b| {
        let mut dec = AlertDecoder::new();
        let mut out = Vec::with_capacity(8);
        b.iter(|| {
            let mut n = 0usize;
            for (i, l) in ls.iter().enumerate() {
                out.clear();
                dec.alertmanager(l, 0, i as u64, &mut out).expect("Alertmanager lines decode");
                n += black_box(&out).len();
            }
            assert_eq!(n as u64, notices);
            n
        })
    });

    let file = alert_file(&scenario, AlertFormat::Csv);
    let ls = lines(&file);
    let header = CsvAlertHeader::parse(ls[0]).unwrap();
    g.bench_function(format!("csv_alerts_{}k_notices", notices / 1000), |b| {
        let mut dec = AlertDecoder::new();
        b.iter(|| {
            let mut n = 0u64;
            for (i, l) in ls[1..].iter().enumerate() {
                n += black_box(dec.csv(&header, l, 0, i as u64).expect("CSV alerts decode")).ts as u64 & 1;
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
