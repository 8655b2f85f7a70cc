//! alertflow's connectors: sources that bring records into timely (files: NDJSON, CSV, Parquet;
//! Kafka; HTTP push) and sinks that write output tables (Parquet, Kafka). One folder per connector, sources and sinks
//! side by side; the engine lists them explicitly.

pub mod backlog;
pub mod durable;
pub mod failure;
pub mod file;
pub mod kafka;
pub mod latency;
pub mod live;
pub mod parquet;
pub mod push;
pub mod time_bounds;
pub mod topology;

pub use failure::Failure;

/// Adds `deltas` (wrapping) to `counters` one by one; returns the deltas left over.
pub(crate) fn add_values<'d>(counters: &[&std::sync::atomic::AtomicU64], deltas: &'d [u64]) -> &'d [u64] {
    let (mine, rest) = deltas.split_at(counters.len().min(deltas.len()));
    for (c, d) in counters.iter().zip(mine) {
        if *d != 0 {
            c.fetch_add(*d, std::sync::atomic::Ordering::Relaxed);
        }
    }
    rest
}

/// The timely timestamp of alertflow dataflows (event time in ms, coarsened to an epoch).
pub type Time = u64;
