//! The file source: NDJSON, CSV or Parquet files named by a path or a glob.
//!
//! Input is cut into **partitions** that do not depend on the worker count: a line-oriented
//! file into fixed-size byte chunks (cut at line boundaries, see [`chunk`]), a Parquet file into
//! its row groups. Partition `k` of a source is read by worker `k mod workers`, and each
//! partition has its own watermark (max event time seen − `max_out_of_orderness`), against
//! which its records are judged late. The source holds its capability at the least watermark
//! of the partitions it has not finished (a partition not yet started could still hold any
//! time, so it holds the capability at 0).

pub mod chunk;
mod parquet_rows;
pub mod records;
pub mod source;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::time_bounds::TimeBounds;
use alertflow_model::size::ByteSize;
use alertflow_model::time::DurationMs;
use serde::{Deserialize, Serialize};

pub use records::FileRecord;
pub use source::file_source;

/// The `[[source]]` section of `type = "file"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// The stream's name: operators name it in `input`, dead letters in `source`.
    pub name: String,
    /// A path or a glob (`logs/*.ndjson`), relative to the pipeline file.
    pub path: String,
    /// `ndjson`, `csv`, `parquet` (metrics) or `alertmanager` (alerts: Alertmanager v2 JSON,
    /// an object or an array of alerts per line); by default taken from each file's extension.
    #[serde(default)]
    pub format: Option<Format>,
    /// What the records are: `metrics` or `alerts`.
    #[serde(default)]
    pub records: Records,
    /// How far behind the newest event time of its partition a record may be and still count;
    /// older records are late.
    #[serde(default = "default_out_of_orderness")]
    pub max_out_of_orderness: DurationMs,
    /// Size of the pieces a large line-oriented file is cut into to spread decoding over
    /// workers. Smaller pieces balance better; each piece has its own watermark.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: ByteSize,
    /// Replays the input at most this many lines per second (all workers together), to watch
    /// a bounded file behave like a live stream; unlimited by default.
    #[serde(default)]
    pub replay_rate: Option<u64>,
    /// The earliest event time accepted (RFC 3339 or integer ms; default 2000-01-01): older
    /// records are dead letters (see [`crate::time_bounds`]).
    #[serde(default)]
    pub min_event_time: Option<String>,
    /// How far ahead of the wall clock an event time may be (default `1d`); later records are
    /// dead letters.
    #[serde(default = "crate::time_bounds::default_max_future")]
    pub max_future: DurationMs,
}

fn default_out_of_orderness() -> DurationMs {
    DurationMs::from_secs(5)
}

fn default_chunk_size() -> ByteSize {
    ByteSize(8 << 20)
}

/// An input encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line.
    Ndjson,
    /// Comma-separated values under a header line.
    Csv,
    /// Apache Parquet.
    Parquet,
    /// Prometheus Alertmanager v2 JSON: an alert object or an array of them per line.
    Alertmanager,
}

impl Format {
    /// The format a file name suggests.
    pub fn from_path(p: &Path) -> Option<Format> {
        match p.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "ndjson" | "jsonl" | "json" => Some(Format::Ndjson),
            "csv" => Some(Format::Csv),
            "parquet" | "parq" => Some(Format::Parquet),
            _ => None,
        }
    }
}

/// What the records of a source are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Records {
    /// Metric points.
    #[default]
    Metrics,
    /// Alert notifications.
    Alerts,
}

/// A file found by a source's path.
#[derive(Debug)]
pub struct PlannedFile {
    /// Where it is.
    pub path: PathBuf,
    /// How dead letters name it (relative to the pipeline folder when inside it).
    pub display: Arc<str>,
    /// Length in bytes when planned.
    pub len: u64,
    /// Its encoding.
    pub format: Format,
}

/// A unit of input with its own watermark.
#[derive(Debug, Clone)]
pub enum PartKind {
    /// Lines starting in `[start, end)` of a line-oriented file.
    Chunk {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// One Parquet row group.
    RowGroup {
        /// Its index in the file.
        index: usize,
        /// Rows in the file before it.
        first_row: u64,
        /// Its compressed size, for progress.
        bytes: u64,
    },
    /// A file that cannot be read: it becomes one dead letter.
    Unreadable(String),
}

/// A partition of a source's input.
#[derive(Debug, Clone)]
pub struct Partition {
    /// Pipeline-wide partition id (the `part` of records).
    pub id: u32,
    /// The file it belongs to.
    pub file: Arc<PlannedFile>,
    /// Which part of the file.
    pub kind: PartKind,
}

/// A file source with its input planned into partitions.
#[derive(Debug)]
pub struct FileSource {
    /// The source's name.
    pub name: Arc<str>,
    /// Allowed disorder in ms.
    pub out_of_orderness: i64,
    /// Late records at most this much older than their partition's watermark (ms) are kept
    /// and marked late instead of becoming dead letters: the engine sets it for metric
    /// sources under the late policy `update` (`None`: every late record is a dead letter).
    pub allowed_lateness: Option<i64>,
    /// The partitions, in a fixed order (files sorted by path, then by position).
    pub partitions: Vec<Partition>,
    /// Bytes of all files.
    pub total_bytes: u64,
    /// The files.
    pub files: Vec<Arc<PlannedFile>>,
    /// What the records are.
    pub records: Records,
    /// Lines per second to replay at, if paced.
    pub replay_rate: Option<u64>,
    /// The event times accepted.
    pub time_bounds: TimeBounds,
}

/// Why a source could not be planned (a configuration problem: the run does not start).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The path matched nothing.
    #[error("path: no file matches `{0}`")]
    NoFiles(String),
    /// The glob is malformed.
    #[error("path: invalid glob `{0}`: {1}")]
    BadGlob(String, String),
    /// A file's format cannot be told.
    #[error("format: cannot tell the format of `{0}` from its extension; set format = \"ndjson\", \"csv\" or \"parquet\"")]
    UnknownFormat(String),
    /// A matched path cannot be read.
    #[error("path: cannot read `{0}`: {1}")]
    Io(String, std::io::Error),
    /// The chunk size is unusable.
    #[error("chunk_size: must be at least 1KiB")]
    ChunkSize,
    /// A zero replay rate.
    #[error("replay_rate: must be at least 1 (line per second); leave it out for no pacing")]
    ReplayRate,
    /// The format cannot carry the records.
    #[error("format: {0}")]
    Unsupported(String),
    /// `min_event_time` or `max_future` is unusable.
    #[error("{0}: {1}")]
    Bounds(&'static str, String),
}

impl FileSource {
    /// Finds the files of `cfg` (relative to `base`) and cuts them into partitions numbered from
    /// `first_id`.
    pub fn plan(cfg: &FileSourceConfig, base: &Path, first_id: u32) -> Result<FileSource, PlanError> {
        if cfg.chunk_size.0 < 1024 {
            return Err(PlanError::ChunkSize);
        }
        if cfg.replay_rate == Some(0) {
            return Err(PlanError::ReplayRate);
        }
        let time_bounds =
            TimeBounds::from_config(cfg.min_event_time.as_deref(), cfg.max_future).map_err(|(f, m)| PlanError::Bounds(f, m))?;
        let pattern = base.join(&cfg.path);
        let pattern_str = pattern.to_string_lossy().to_string();
        let mut paths: Vec<PathBuf> = if cfg.path.contains(['*', '?', '[']) {
            glob::glob(&pattern_str)
                .map_err(|e| PlanError::BadGlob(cfg.path.clone(), e.to_string()))?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect()
        } else if pattern.is_file() {
            vec![pattern.clone()]
        } else if pattern.exists() {
            return Err(PlanError::Io(cfg.path.clone(), std::io::Error::other("not a regular file")));
        } else {
            vec![]
        };
        if paths.is_empty() {
            return Err(PlanError::NoFiles(cfg.path.clone()));
        }
        paths.sort();
        let mut files = Vec::new();
        let mut partitions = Vec::new();
        let mut total = 0;
        let mut id = first_id;
        for path in paths {
            let display: Arc<str> = path.strip_prefix(base).unwrap_or(&path).to_string_lossy().into();
            let format = match cfg.format.or_else(|| Format::from_path(&path)) {
                Some(f) => f,
                None => return Err(PlanError::UnknownFormat(display.to_string())),
            };
            match (cfg.records, format) {
                (Records::Alerts, Format::Parquet) => {
                    return Err(PlanError::Unsupported(format!(
                        "`{display}` is Parquet, which alert sources do not read; use ndjson, alertmanager or csv"
                    )));
                }
                (Records::Metrics, Format::Alertmanager) => {
                    return Err(PlanError::Unsupported("`alertmanager` holds alerts: set records = \"alerts\"".into()));
                }
                _ => {}
            }
            let len = std::fs::metadata(&path).map_err(|e| PlanError::Io(display.to_string(), e))?.len();
            total += len;
            let file = Arc::new(PlannedFile { path: path.clone(), display, len, format });
            files.push(file.clone());
            let mut push = |kind| {
                partitions.push(Partition { id, file: file.clone(), kind });
                id += 1;
            };
            match format {
                Format::Ndjson | Format::Csv | Format::Alertmanager => {
                    let size = cfg.chunk_size.0;
                    let chunks = len.div_ceil(size).max(1);
                    for k in 0..chunks {
                        push(PartKind::Chunk { start: k * size, end: ((k + 1) * size).min(len.max(1)) });
                    }
                }
                Format::Parquet => match parquet_rows::row_groups(&path) {
                    Ok(groups) if !groups.is_empty() => {
                        let mut first_row = 0;
                        for (index, (rows, bytes)) in groups.into_iter().enumerate() {
                            push(PartKind::RowGroup { index, first_row, bytes });
                            first_row += rows;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => push(PartKind::Unreadable(format!("cannot read Parquet file: {e}"))),
                },
            }
        }
        Ok(FileSource {
            name: cfg.name.as_str().into(),
            out_of_orderness: cfg.max_out_of_orderness.millis() as i64,
            allowed_lateness: None,
            partitions,
            total_bytes: total,
            files,
            records: cfg.records,
            replay_rate: cfg.replay_rate,
            time_bounds,
        })
    }
}

/// When a paced replay (`replay_rate`) began: the moment the first paced source of the run
/// started reading. Every paced source of a run counts from it, so their sources' event times
/// stay in step (the frontier is their minimum) and latency can be measured against it.
#[derive(Debug, Default)]
pub struct ReplayOrigin(std::sync::OnceLock<std::time::Instant>);

impl ReplayOrigin {
    /// The origin, set now if no source has started yet.
    pub fn start(&self) -> std::time::Instant {
        *self.0.get_or_init(std::time::Instant::now)
    }
    /// The origin, once a source has started.
    pub fn started(&self) -> Option<std::time::Instant> {
        self.0.get().copied()
    }
}

/// Counters of one source, shared by its workers in this process.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Bytes read.
    pub bytes: AtomicU64,
    /// Records read (good, bad and late).
    pub records: AtomicU64,
    /// Records emitted into the dataflow.
    pub emitted: AtomicU64,
    /// Records that could not be decoded.
    pub dead_letters: AtomicU64,
    /// Records older than their partition's watermark.
    pub late: AtomicU64,
}

impl SourceStats {
    /// The counters, in declaration order (a cluster gathers them; see `alertflow_engine::cluster`).
    pub fn values(&self) -> [u64; 5] {
        [&self.bytes, &self.records, &self.emitted, &self.dead_letters, &self.late].map(|a| a.load(Ordering::Relaxed))
    }

    /// Adds the first five of `deltas` (wrapping) to the counters, in [`SourceStats::values`]'
    /// order; returns the rest.
    pub fn add_values<'d>(&self, deltas: &'d [u64]) -> &'d [u64] {
        crate::add_values(&[&self.bytes, &self.records, &self.emitted, &self.dead_letters, &self.late], deltas)
    }
}
