//! The window aggregate alone, on one worker: W1-shaped points (10,000 series every 10 s)
//! through a 1-minute tumbling window grouped by host. Target: ≥ 10 M points/s per worker.

use alertflow_benches::w1_points;
use alertflow_model::Metric;
use alertflow_operators::{Aggregate, AggregateConfig, AggregateExt, Time, WindowSpec};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use timely::dataflow::operators::{Input, Inspect};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn aggregate() -> Aggregate {
    let cfg = AggregateConfig {
        name: "per_minute".into(),
        input: "points".into(),
        window: WindowSpec::Tumbling { size: "1m".parse().unwrap() },
        group_by: vec!["host".into()],
        functions: alertflow_model::window::AggFn::ALL.to_vec(),
    };
    Aggregate::with_config(&cfg, "1s".parse().unwrap()).unwrap()
}

/// Runs the operator over `batches` on one worker; returns the number of rows out.
fn run(batches: Vec<Vec<Metric>>, op: &Aggregate) -> usize {
    let op = op.clone();
    timely::execute_directly(move |worker| {
        let rows = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let mut input = InputHandle::<Time, CapacityContainerBuilder<Vec<Metric>>>::new();
        let r = rows.clone();
        worker.dataflow::<Time, _, _>(|scope| {
            scope.input_from(&mut input).aggregate(&op).inspect(move |_| r.set(r.get() + 1));
        });
        for mut b in batches {
            // The file source emits at the epoch of the points; hold the input at the batch's
            // watermark as it would.
            let t = b.iter().map(|m| m.ts).min().unwrap_or(0).max(0) as u64;
            let t = t - t % 1000;
            if t > *input.time() {
                input.advance_to(t);
            }
            input.send_batch(&mut b);
            worker.step();
        }
        drop(input);
        while worker.has_dataflows() {
            worker.step();
        }
        rows.get()
    })
}

fn bench(c: &mut Criterion) {
    let n = 1_000_000;
    let points = w1_points(10_000, n, 100_000);
    let batches: Vec<Vec<Metric>> = points.chunks(8192).map(|c| c.to_vec()).collect();
    let op = aggregate();
    assert!(run(batches.clone(), &op) > 150_000);
    let mut g = c.benchmark_group("window");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(20);
    g.bench_function("tumbling_1m_by_host_1M_points", |b| b.iter_batched(|| batches.clone(), |bs| run(bs, &op), BatchSize::LargeInput));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
