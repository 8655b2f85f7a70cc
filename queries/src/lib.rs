//! alertflow's queries: one DataFusion catalog holding every table of an output folder (Parquet
//! with Hive partitions) and the live tables of a running engine, tenant isolation beneath the
//! query, the output formats of `alertflow sql`, and the metrics registry `GET /metrics`
//! renders.

pub mod catalog;
pub mod format;
pub mod live;
pub mod metrics;
pub mod session;
pub mod tenant;

pub use catalog::{QueryError, TableInfo, context_for_dir, new_context};
pub use format::{OutputFormat, export_parquet, render};
pub use metrics::{Histogram, Metrics};
pub use session::{Access, Catalog, QueryLimits, TableDesc, TableKind};
