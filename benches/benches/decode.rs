//! Decoders alone: W1-style NDJSON metric lines into interned series, one thread.

use alertflow_model::SeriesInterner;
use alertflow_model::decode::NdjsonMetricDecoder;
use alertflow_tools::datagen::{MetricsGen, generate_metrics};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let spec = MetricsGen { series: 10_000, points: 200_000, ..MetricsGen::default() };
    let mut buf = Vec::new();
    generate_metrics(&spec, &mut buf).unwrap();
    let lines: Vec<&[u8]> = buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("ndjson_w1_200k_lines", |b| {
        let mut interner = SeriesInterner::new();
        let mut dec = NdjsonMetricDecoder::new();
        b.iter(|| {
            let mut sum = 0.0;
            for l in &lines {
                if let Ok((_, _, v)) = dec.decode(l, &mut interner) {
                    sum += v;
                }
            }
            sum
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
