//! alertflow's dataflow operators, one per file (DESIGN §4). Each file holds the operator's
//! `Config` (the pipeline section, validated once into the operator), an extension trait on
//! timely streams, and its tests, including an oracle test over 1, 2 and 4 workers.
//!
//! Time is `u64`: event time in milliseconds, rounded down to the pipeline's epoch (DESIGN §2).

pub mod aggregate;
pub mod error;

#[cfg(test)]
pub(crate) mod testing;

pub use aggregate::{Aggregate, AggregateConfig, AggregateExt, WindowSpec};
pub use error::ConfigError;

/// The timely timestamp of every alertflow dataflow: event time in ms, coarsened to an epoch.
pub type Time = u64;
