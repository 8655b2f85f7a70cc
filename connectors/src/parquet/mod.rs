//! The Parquet sink: every output table as Hive-partitioned Parquet files.
//!
//! Layout: `<out>/<table>/<partition>/part-<worker>-<span>.parquet`, where `<partition>` is
//! `date=YYYY-MM-DD/hour=HH` of the rows' event time (or `source=NAME` for dead letters),
//! `<worker>` the global worker index and `<span>` the start (ms) of the span of timely time
//! the file covers. Which rows fall in which span depends only on the data, so names are the
//! same on every run. Files are written under a temporary name and renamed when complete.

mod sink;

use std::fs;
use std::io;
use std::path::Path;

use arrow::datatypes::Schema;
use arrow::ipc::writer::FileWriter;
use serde::{Deserialize, Serialize};

pub(crate) use sink::take_before;
pub use sink::{ParquetSink, ParquetSinkExt, SinkStats};

/// The file a table folder's schema is kept in (an Arrow IPC file with no batches), so an
/// empty table still has columns. Readers that list `*.parquet` or skip `_` files ignore it.
pub const SCHEMA_FILE: &str = "_schema.arrow";

/// Parquet compression codecs offered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd, level 1: small files, fast to write.
    #[default]
    Zstd,
    /// LZ4 (raw): fastest to read and write.
    Lz4,
    /// Snappy, for readers that know nothing newer.
    Snappy,
    /// No compression.
    None,
}

impl Compression {
    /// The parquet crate's codec.
    pub fn codec(self) -> parquet::basic::Compression {
        use parquet::basic::{Compression as C, ZstdLevel};
        match self {
            Compression::Zstd => C::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()),
            Compression::Lz4 => C::LZ4_RAW,
            Compression::Snappy => C::SNAPPY,
            Compression::None => C::UNCOMPRESSED,
        }
    }
}

/// How the threads that encode and write a sink's files are scheduled (`[output] writers`).
/// A file is written when its span closes, a burst of encoding and compression that took a
/// full core for 50–100 ms at 100,000 alerts/s.
///
/// `low` (nice +10) is the default because it is safe on a shared host: `SCHED_IDLE` gets
/// almost no CPU while any other process keeps the cores busy, and through back-pressure
/// (two spans in flight, then the worker waits) the whole pipeline crawls with its writers.
/// With two busy loops beside it on 2 cores, W1 from a file took 68.6 s under `idle` against
/// 2.8 s at `low` (0.8 s and 0.7 s alone), and a Kafka run 57.0 s against 3.6 s. A thread
/// cannot leave `SCHED_IDLE` again without `CAP_SYS_NICE` (which containers do not get), so
/// the writers cannot be raised once they are found starving (BENCHMARKS, "Writers under
/// load", 2026-11-26).
///
/// `idle` is for a host the pipeline has to itself: there a waking worker takes the core back
/// from a writer's burst at once, where at nice +10 it waits for the writer's slice, and the
/// `alerts` p99 at 100,000 alerts/s was 9.5–16.8 ms in six runs with `low`, 5.1–7.8 ms in seven
/// of eight with `idle` (BENCHMARKS, issue 10, sixth session).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriterPriority {
    /// `SCHED_IDLE`: the writers run only on CPU no other thread wants, and a waking worker
    /// takes the core back at once. Only for a host the pipeline has to itself: any other
    /// busy process starves the writers, and the pipeline slows with them.
    Idle,
    /// nice +10 (the default): the writers yield to the workers under contention, but share
    /// with them, and get their share of a host that other processes keep busy.
    #[default]
    Low,
}

/// Writes the schema file of a table folder (atomically).
pub fn write_schema_file(table_dir: &Path, schema: &Schema) -> io::Result<()> {
    fs::create_dir_all(table_dir)?;
    // Named by process: the processes of a cluster sharing the folder write it at once.
    let tmp = table_dir.join(format!(".{SCHEMA_FILE}.{}.tmp", std::process::id()));
    {
        let f = fs::File::create(&tmp)?;
        let mut w = FileWriter::try_new(f, schema).map_err(io::Error::other)?;
        w.finish().map_err(io::Error::other)?;
    }
    fs::rename(&tmp, table_dir.join(SCHEMA_FILE))
}

/// Reads a table folder's schema file, if there is one.
pub fn read_schema_file(table_dir: &Path) -> Option<Schema> {
    let f = fs::File::open(table_dir.join(SCHEMA_FILE)).ok()?;
    let r = arrow::ipc::reader::FileReader::try_new(f, None).ok()?;
    Some(r.schema().as_ref().clone())
}

/// Removes the data files (`part-*.parquet` and leftover temporaries) under a table folder,
/// leaving anything else alone. Returns how many were removed.
pub fn clear_table(table_dir: &Path) -> io::Result<usize> {
    clear_files(table_dir, &|_| false)
}

/// Removes the data files of a table that are not in `keep` (paths relative to the output
/// folder, `<table>/<partition>/<file>`, as a checkpoint lists them), and partial files. Returns
/// how many it removed.
pub fn clear_table_except(table_dir: &Path, table: &str, keep: &std::collections::HashSet<String>) -> io::Result<usize> {
    clear_files(table_dir, &|p: &Path| {
        let rel = p.strip_prefix(table_dir).map(|r| format!("{table}/{}", r.to_string_lossy())).unwrap_or_default();
        keep.contains(&rel)
    })
}

/// Removes the data files of the workers in `workers` (global indices: a cluster's process
/// clears only its own, the others' are theirs) that are not in `keep` (as in
/// [`clear_table_except`]: what the checkpoint a run resumes from covers), and their partial
/// files. Returns how many it removed.
pub fn clear_table_of(
    table_dir: &Path,
    table: &str,
    workers: std::ops::Range<usize>,
    keep: Option<&std::collections::HashSet<String>>,
) -> io::Result<usize> {
    let worker_of = |p: &Path| {
        let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let digits = name.trim_start_matches('.').strip_prefix("part-").and_then(|r| r.split('-').next()).unwrap_or("");
        digits.parse::<usize>().ok()
    };
    let kept = |p: &Path| {
        keep.is_some_and(|k| {
            let rel = p.strip_prefix(table_dir).map(|r| format!("{table}/{}", r.to_string_lossy())).unwrap_or_default();
            k.contains(&rel)
        })
    };
    clear_files_where(table_dir, &|p: &Path| worker_of(p).is_some_and(|w| workers.contains(&w)) && !kept(p))
}

fn clear_files(table_dir: &Path, keep: &dyn Fn(&Path) -> bool) -> io::Result<usize> {
    clear_files_where(table_dir, &|p: &Path| {
        let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        (name.starts_with("part-") && name.ends_with(".parquet") && !keep(p)) || (name.starts_with(".part-") && name.ends_with(".tmp"))
    })
}

/// Removes the data files (`part-*.parquet`) and partial files (`.part-*.tmp`) under a table
/// folder that `remove` picks, and partition folders left empty. Files or folders another
/// process removes meanwhile are not errors.
fn clear_files_where(table_dir: &Path, remove: &dyn Fn(&Path) -> bool) -> io::Result<usize> {
    fn gone(r: io::Result<()>) -> io::Result<()> {
        match r {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }
    fn walk(dir: &Path, n: &mut usize, remove: &dyn Fn(&Path) -> bool) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            r => r?,
        };
        for e in entries {
            let e = e?;
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if e.file_type()?.is_dir() {
                walk(&p, n, remove)?;
                // Drop partition folders left empty.
                if fs::read_dir(&p).is_ok_and(|mut d| d.next().is_none()) {
                    gone(fs::remove_dir(&p))?;
                }
            } else if ((name.starts_with("part-") && name.ends_with(".parquet")) || (name.starts_with(".part-") && name.ends_with(".tmp")))
                && remove(&p)
            {
                gone(fs::remove_file(&p))?;
                *n += 1;
            }
        }
        Ok(())
    }
    let mut n = 0;
    if table_dir.is_dir() {
        walk(table_dir, &mut n, remove)?;
    }
    Ok(n)
}

/// Writes `rows` (in the order given) as one Parquet file at `path`, under a temporary name
/// (`.<name>.tmp`) renamed when complete, so readers never see half a file; returns its size.
/// A failed write removes the temporary file (a full disk gets its space back). Used by the
/// sink's writer threads and by tables written outside the dataflow (`notifications`).
pub fn write_file<R, B: alertflow_model::tables::TableBuilder<R>>(
    path: &Path,
    builder: &B,
    rows: &[R],
    compression: Compression,
    fsync: bool,
) -> Result<u64, String> {
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = (|| {
        let io = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", tmp.display());
        let file = fs::File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let props = WriterProperties::builder().set_compression(compression.codec()).build();
        let mut w = ArrowWriter::try_new(&file, builder.schema(), Some(props)).map_err(|e| io(&e))?;
        for chunk in rows.chunks(BATCH_ROWS) {
            let batch = builder.build(chunk).map_err(|e| format!("internal error building a batch for {} (a bug): {e}", path.display()))?;
            w.write(&batch).map_err(|e| io(&e))?;
        }
        w.close().map_err(|e| io(&e))?;
        if fsync {
            file.sync_all().map_err(|e| io(&e))?;
        }
        fs::rename(&tmp, path).map_err(|e| format!("cannot rename {} into place: {e}", tmp.display()))?;
        Ok(file.metadata().map(|m| m.len()).unwrap_or(0))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Rows per record batch of a file.
const BATCH_ROWS: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_process_clears_only_its_own_workers_files() {
        let dir = std::env::temp_dir().join(format!("alertflow-clear-of-{}", std::process::id()));
        let part = dir.join("date=2026-01-01").join("hour=00");
        fs::create_dir_all(&part).unwrap();
        let other = dir.join("date=2026-01-02").join("hour=01");
        fs::create_dir_all(&other).unwrap();
        for f in [
            "part-0000-0.parquet",
            "part-0001-0.parquet",
            "part-0002-0-60000.parquet",
            ".part-0001-60000.parquet.tmp",
            ".part-0000-1.parquet.tmp",
        ] {
            fs::write(part.join(f), b"x").unwrap();
        }
        fs::write(other.join("part-0001-3.parquet"), b"x").unwrap();
        fs::write(dir.join("_schema.arrow"), b"x").unwrap();
        // What the checkpoint it resumes from covers stays (paths as a checkpoint lists them).
        let keep: std::collections::HashSet<String> = ["t/date=2026-01-01/hour=00/part-0002-0-60000.parquet".to_string()].into();
        assert_eq!(clear_table_of(&dir, "t", 1..3, Some(&keep)).unwrap(), 3);
        assert!(part.join("part-0002-0-60000.parquet").exists());
        assert_eq!(clear_table_of(&dir, "t", 1..3, None).unwrap(), 1);
        let mut left: Vec<String> = fs::read_dir(&part).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        left.sort();
        assert_eq!(left, vec![".part-0000-1.parquet.tmp", "part-0000-0.parquet"]);
        // A partition folder left empty goes; other files stay.
        assert!(!other.parent().unwrap().exists());
        assert!(dir.join("_schema.arrow").exists());
        // A folder that is not there (another process cleared it) is not an error.
        assert_eq!(clear_table_of(&dir.join("gone"), "t", 0..1, None).unwrap(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
