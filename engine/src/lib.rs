//! alertflow's engine: the pipeline file, its validation, and the timely dataflow that runs it.

mod affinity;
pub mod cluster;
pub mod config;
pub mod control;
pub mod live;
pub mod notifications;
pub mod run;
pub mod serve_config;
mod serving;

pub use config::{ConfigErrors, ConfigProblem, Pipeline};
pub use run::{
    CheckpointSummary, ClusterSummary, FinishedFn, Progress, ProgressFn, RunError, RunOptions, RunSummary, ServingFn, StateBoundsSummary,
    TableSummary, run,
};
