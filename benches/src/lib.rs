//! Shared inputs of the criterion benches (`cargo bench -p alertflow-benches`).

use alertflow_model::{Metric, Series};

/// W1-shaped points: `series` series reporting every 10 s from 2026-01-01, in rounds, with up
/// to ±2 s of disorder; `per_part` points per input partition.
pub fn w1_points(series: usize, points: usize, per_part: usize) -> Vec<Metric> {
    let all: Vec<Series> = (0..series)
        .map(|i| Series::new(&format!("t{}", i % 4), ["cpu", "mem", "disk", "net"][i % 4], &[("host", &format!("h{i:05}"))]))
        .collect();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..points)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let round = (i / series) as i64;
            let s = i % series;
            Metric {
                series: all[s].clone(),
                ts: 1_767_225_600_000 + round * 10_000 + (s as i64 * 10_000 / series as i64) + (x % 4001) as i64 - 2000,
                value: (x % 100_000) as f64 / 1000.0,
                part: (i / per_part) as u32,
                pos: (i % per_part) as u64,
                late: false,
            }
        })
        .collect()
}
