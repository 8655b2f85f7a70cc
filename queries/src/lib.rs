//! alertflow's queries: one DataFusion `SessionContext` whose catalog holds every table of an
//! output folder (Parquet with Hive partitions), and the output formats of `alertflow sql`.

pub mod catalog;
pub mod format;

pub use catalog::{QueryError, TableInfo, context_for_dir, new_context};
pub use format::{OutputFormat, export_parquet, render};
