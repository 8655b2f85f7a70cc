//! The metric record.

use serde::{Deserialize, Serialize};

use crate::series::Series;
use crate::time::Millis;

/// One metric point.
///
/// `part` and `pos` say where the point came from (the input partition — a file chunk, a
/// Parquet row group, a Kafka partition — and the line or offset inside it). They do not depend
/// on the number of workers, so operators use them to break ties and to combine partial results
/// in one canonical order: that is what makes floating-point sums bit-identical whatever the
/// worker count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Metric {
    /// Tenant, name and labels.
    pub series: Series,
    /// Event time, exact (the timely timestamp is this rounded down to an epoch).
    pub ts: Millis,
    /// The value; always finite.
    pub value: f64,
    /// Input partition index (global across the pipeline's sources).
    pub part: u32,
    /// Position inside the partition (line index or offset).
    pub pos: u64,
    /// Older than its partition's watermark but within `allowed_lateness` (late policy
    /// `update`): stamped at the watermark's epoch rather than its own, so operators that
    /// keep closed windows can revise them, and operators that need event-time order skip it.
    /// Fits in the padding after `part`: the record stays 40 bytes.
    #[serde(default)]
    pub late: bool,
}
