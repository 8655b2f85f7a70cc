//! alertflow's connectors: sources that bring records into timely (files: NDJSON, CSV, Parquet;
//! Kafka; HTTP push) and sinks that write output tables (Parquet, Kafka). One folder per connector, sources and sinks
//! side by side; the engine lists them explicitly.

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

/// The timely timestamp of alertflow dataflows (event time in ms, coarsened to an epoch).
pub type Time = u64;
