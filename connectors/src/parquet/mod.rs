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

/// Writes the schema file of a table folder (atomically).
pub fn write_schema_file(table_dir: &Path, schema: &Schema) -> io::Result<()> {
    fs::create_dir_all(table_dir)?;
    let tmp = table_dir.join(format!(".{SCHEMA_FILE}.tmp"));
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

fn clear_files(table_dir: &Path, keep: &dyn Fn(&Path) -> bool) -> io::Result<usize> {
    fn walk(dir: &Path, n: &mut usize, keep: &dyn Fn(&Path) -> bool) -> io::Result<()> {
        for e in fs::read_dir(dir)? {
            let e = e?;
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if e.file_type()?.is_dir() {
                walk(&p, n, keep)?;
                // Drop partition folders left empty.
                if fs::read_dir(&p)?.next().is_none() {
                    fs::remove_dir(&p)?;
                }
            } else if ((name.starts_with("part-") && name.ends_with(".parquet")) && !keep(&p))
                || (name.starts_with(".part-") && name.ends_with(".tmp"))
            {
                fs::remove_file(&p)?;
                *n += 1;
            }
        }
        Ok(())
    }
    let mut n = 0;
    if table_dir.is_dir() {
        walk(table_dir, &mut n, keep)?;
    }
    Ok(n)
}
