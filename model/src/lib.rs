//! alertflow's record model: metric and alert records, event time, the decoders that turn input
//! bytes into records, and the Arrow schemas of every output table.
//!
//! This crate is the leaf of the workspace: it knows nothing of timely or of I/O.

pub mod alert;
pub mod anomaly;
pub mod dead_letter;
pub mod decode;
pub mod fuzzing;
pub mod labels;
pub mod metric;
pub mod prefetch;
pub mod series;
pub mod size;
pub mod sketch;
pub mod tables;
pub mod time;
pub mod topology;
pub mod window;

pub use alert::{Alert, Status};
pub use anomaly::AnomalyRow;
pub use dead_letter::DeadLetter;
pub use labels::{LabelInterner, LabelSet};
pub use metric::Metric;
pub use series::{Series, SeriesInterner};
pub use time::{DurationMs, Millis};
