//! alertflow's dataflow operators, one per file (DESIGN §4). Each file holds the operator's
//! `Config` (the pipeline section, validated once into the operator), an extension trait on
//! timely streams, and its tests, including an oracle test over 1, 2 and 4 workers.
//!
//! Time is `u64`: event time in milliseconds, rounded down to the pipeline's epoch (DESIGN §2).

pub mod aggregate;
pub mod boxed_map;
pub mod checkpoint;
pub mod correlate;
pub mod dedup;
pub mod detect;
pub mod enrich;
pub mod error;
pub mod limits;
pub mod notify;
pub mod ordered;
pub mod placement;
pub mod rule;
pub mod session;
pub mod stats;
pub mod suppress;

#[cfg(test)]
pub(crate) mod testing;

pub use aggregate::{Aggregate, AggregateConfig, AggregateExt, Shape, WindowSpec};
pub use correlate::{Correlate, CorrelateConfig, CorrelateExt, Correlated, TopologyChange};
pub use dedup::{Dedup, DedupConfig, DedupExt};
pub use detect::{Detect, DetectConfig, DetectExt, DetectorKind, DetectorSpec};
pub use enrich::EnrichExt;
pub use error::ConfigError;
pub use limits::{OnFull, StateConfig, StateLimits};
pub use notify::{Notify, NotifyExt};
pub use rule::{Rule, RuleConfig, RuleExt};
pub use stats::{OperatorStats, StateGauge};
pub use suppress::{StormMembers, Suppress, SuppressConfig, SuppressExt, Suppressed};

/// The timely timestamp of every alertflow dataflow: event time in ms, coarsened to an epoch.
pub type Time = u64;
