//! Test harness: runs an operator on 1..n workers over a fixed input, fed the way the file
//! source feeds it (partitions spread over workers by index, each in order, the input's time
//! held back behind the data's watermark).

use std::sync::{Arc, Mutex};

use alertflow_model::Metric;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::{Input, Inspect};
use timely::dataflow::{InputHandle, Stream};

use crate::Time;

/// A small deterministic generator (SplitMix64).
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Runs `build` on `workers` threads over `points` and returns every output record.
/// Partition `p` goes to worker `p % workers`; after every `batch` points a worker advances
/// its input to its watermark (max event time seen − 6 s, rounded to the 1 s epoch).
pub fn run_metrics<R, F>(workers: usize, points: Vec<Metric>, batch: usize, build: F) -> Vec<R>
where
    R: Clone + Send + 'static,
    F: for<'s> Fn(Stream<'s, Time, Vec<Metric>>) -> Stream<'s, Time, Vec<R>> + Send + Sync + 'static,
{
    let points = Arc::new(points);
    let out = Arc::new(Mutex::new(Vec::new()));
    let out2 = out.clone();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let mut input = InputHandle::<Time, CapacityContainerBuilder<Vec<Metric>>>::new();
        let out = out2.clone();
        worker.dataflow::<Time, _, _>(|scope| {
            let s = scope.input_from(&mut input);
            build(s).inspect(move |r: &R| out.lock().expect("poisoned").push(r.clone()));
        });
        let mine: Vec<&Metric> = points.iter().filter(|m| m.part as usize % peers == index).collect();
        let mut max_seen = 0i64;
        for chunk in mine.chunks(batch.max(1)) {
            for m in chunk {
                max_seen = max_seen.max(m.ts);
                input.send((*m).clone());
            }
            let t = (max_seen - 6000).max(0);
            let t = (t - t % 1000) as Time;
            if t > *input.time() {
                input.advance_to(t);
            }
            worker.step();
        }
        drop(input);
        while worker.has_dataflows() {
            worker.step_or_park(None);
        }
    })
    .expect("timely failed to start");
    drop(guards.join());
    std::mem::take(&mut *out.lock().expect("poisoned"))
}
