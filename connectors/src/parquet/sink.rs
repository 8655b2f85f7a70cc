//! The Parquet sink operator.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use alertflow_model::tables::{Partition, TableBuilder, TableRow};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::Compression;
use crate::durable::Durability;
use crate::{Failure, Time};

/// Rows per record batch handed to the Parquet writer.
const BATCH_ROWS: usize = 64 * 1024;

/// Counters of one table's sink, shared by its workers in this process.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Rows written.
    pub rows: AtomicU64,
    /// Files written.
    pub files: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
}

/// Where and how one table is written.
pub struct ParquetSink<B> {
    /// The table's name.
    pub table: String,
    /// The table's folder, `<out>/<table>`.
    pub dir: PathBuf,
    /// Builds record batches from rows.
    pub builder: B,
    /// Codec.
    pub compression: Compression,
    /// Length of the span of timely time one file covers, in ms.
    pub span: u64,
    /// Global index of this worker.
    pub worker: usize,
    /// Whether to fsync each file before renaming it into place.
    pub fsync: bool,
    /// Where to report how far the table is durable (and, on a resumed run, below which rows
    /// are already written), when a source commits positions.
    pub durability: Option<Arc<Durability>>,
}

/// Writes a stream of table rows as Parquet.
pub trait ParquetSinkExt<R> {
    /// Buffers rows by span of timely time and writes each span's files once the frontier has
    /// passed it (at once when bounded input ends).
    fn sink_parquet<B: TableBuilder<R>>(self, sink: ParquetSink<B>, stats: Arc<SinkStats>, failure: Failure);
}

impl<R: TableRow> ParquetSinkExt<R> for Stream<'_, Time, Vec<R>> {
    fn sink_parquet<B: TableBuilder<R>>(self, sink: ParquetSink<B>, stats: Arc<SinkStats>, failure: Failure) {
        let name = format!("sink:{}", sink.table);
        let props = WriterProperties::builder().set_compression(sink.compression.codec()).build();
        let span = sink.span.max(1);
        let mut pending: BTreeMap<u64, Vec<R>> = BTreeMap::new();
        let slot = sink.durability.as_ref().map(|d| d.slot());
        self.sink(Pipeline, &name, move |(input, frontier)| {
            let floor = sink.durability.as_ref().map_or(0, |d| d.resume_floor());
            input.for_each_stamp(|cap, data| {
                let Some(t) = cap.least().copied() else { return };
                if t < floor {
                    return; // written by the run this one resumes (whole spans: see `Durability`)
                }
                let rows = pending.entry(t / span).or_default();
                for batch in data {
                    rows.append(batch);
                }
            });
            while let Some(entry) = pending.first_entry() {
                let end = (*entry.key() + 1).saturating_mul(span);
                if frontier.less_than(&end) {
                    break;
                }
                let start = *entry.key() * span;
                let rows = entry.remove();
                if failure.is_set() {
                    continue; // the run is failing: drop, do not write past the fault
                }
                if let Err(e) = write_span(&sink, &props, start, rows, &stats) {
                    failure.set(format!("sink `{}`: {e}", sink.table));
                }
            }
            if let Some(slot) = &slot
                && !failure.is_set()
            {
                // Durable: everything before the input frontier that is not waiting in a span.
                let f = frontier.frontier().iter().copied().min().unwrap_or(Time::MAX);
                slot.set(pending.keys().next().map_or(f, |k| f.min(k * span)));
            }
        });
    }
}

fn write_span<R: TableRow, B: TableBuilder<R>>(
    sink: &ParquetSink<B>,
    props: &WriterProperties,
    span_start: u64,
    rows: Vec<R>,
    stats: &SinkStats,
) -> Result<(), String> {
    let mut by_part: BTreeMap<Partition, Vec<R>> = BTreeMap::new();
    for r in rows {
        by_part.entry(r.partition()).or_default().push(r);
    }
    for (part, mut rows) in by_part {
        sink.builder.sort(&mut rows);
        let dir = sink.dir.join(part.path());
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let name = format!("part-{:04}-{span_start}.parquet", sink.worker);
        let tmp = dir.join(format!(".{name}.tmp"));
        let path = dir.join(&name);
        let file = fs::File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let io = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", tmp.display());
        let mut w = ArrowWriter::try_new(&file, sink.builder.schema(), Some(props.clone())).map_err(|e| io(&e))?;
        for chunk in rows.chunks(BATCH_ROWS) {
            let batch =
                sink.builder.build(chunk).map_err(|e| format!("internal error building a batch of `{}` (a bug): {e}", sink.table))?;
            w.write(&batch).map_err(|e| io(&e))?;
        }
        w.close().map_err(|e| io(&e))?;
        if sink.fsync {
            file.sync_all().map_err(|e| io(&e))?;
        }
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        drop(file);
        fs::rename(&tmp, &path).map_err(|e| format!("cannot rename {} into place: {e}", tmp.display()))?;
        stats.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
        stats.files.fetch_add(1, Ordering::Relaxed);
        stats.bytes.fetch_add(len, Ordering::Relaxed);
    }
    Ok(())
}
