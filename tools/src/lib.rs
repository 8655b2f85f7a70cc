//! The `alertflow` command line's library half: the data generator (also used by tests and
//! benches) and the demo.

pub mod alertgen;
pub mod datagen;
pub mod eval;
pub mod kafka_lines;
