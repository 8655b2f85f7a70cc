//! Dead letters: records that could not be parsed or validated, or that came late.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// The most bytes of a bad record kept in `raw`.
pub const MAX_RAW_BYTES: usize = 4096;

/// The `reason` of a record older than its partition's watermark.
pub const LATE: &str = "late";

/// A record that could not be used, kept with where it came from and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The pipeline source's name (the `source=` partition of the table).
    pub source: Arc<str>,
    /// The file (or topic/partition) the record came from.
    pub file: Arc<str>,
    /// 1-based line number in the file (or offset); 0 when the whole file was unreadable.
    pub line: u64,
    /// Why the record was rejected: the decoder's message, or `late`.
    pub reason: String,
    /// The record's bytes, at most [`MAX_RAW_BYTES`].
    pub raw: Vec<u8>,
    /// The record's event time, when it could be read.
    pub ts: Option<Millis>,
}

impl DeadLetter {
    /// Builds a dead letter, keeping at most [`MAX_RAW_BYTES`] of `raw`.
    pub fn new(source: &Arc<str>, file: &Arc<str>, line: u64, reason: String, raw: &[u8], ts: Option<Millis>) -> Self {
        DeadLetter { source: source.clone(), file: file.clone(), line, reason, raw: raw[..raw.len().min(MAX_RAW_BYTES)].to_vec(), ts }
    }
}
