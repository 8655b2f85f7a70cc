//! Parquet input: one partition per row group; columns `ts`, `tenant`, `name`, `value`, and
//! every other column a label (cast to text). Time columns may be integer milliseconds, any
//! Arrow timestamp, or RFC 3339 text.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use alertflow_model::decode::{DecodeError, check_event_time, parse_time_field};
use alertflow_model::series::{DEFAULT_TENANT, Series, SeriesInterner};
use alertflow_model::time::Millis;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMillisecondType};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::reader::{FileReader, SerializedFileReader};

/// The row count and compressed size of each row group of a file.
pub fn row_groups(path: &Path) -> Result<Vec<(u64, u64)>, String> {
    let f = File::open(path).map_err(|e| e.to_string())?;
    let r = SerializedFileReader::new(f).map_err(|e| e.to_string())?;
    Ok(r.metadata().row_groups().iter().map(|g| (g.num_rows().max(0) as u64, g.compressed_size().max(0) as u64)).collect())
}

/// Opens the reader of one row group.
pub fn open_row_group(path: &Path, index: usize) -> Result<ParquetRecordBatchReader, String> {
    let f = File::open(path).map_err(|e| e.to_string())?;
    ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.with_row_groups(vec![index]).with_batch_size(8192).build())
        .map_err(|e| e.to_string())
}

/// The columns of one batch, cast to the types decoding needs.
pub struct Columns {
    ts: TsColumn,
    value: Option<ArrayRef>,
    name: Option<ArrayRef>,
    tenant: Option<ArrayRef>,
    /// Label columns, sorted by name.
    labels: Vec<(Arc<str>, ArrayRef)>,
    batch: RecordBatch,
}

enum TsColumn {
    Millis(ArrayRef),
    Text(ArrayRef),
    Missing,
    Unusable(String),
}

impl Columns {
    /// Prepares a batch for row-by-row decoding.
    pub fn new(batch: RecordBatch) -> Columns {
        let schema = batch.schema();
        let col = |n: &str| schema.index_of(n).ok().map(|i| batch.column(i).clone());
        let text = |a: ArrayRef| cast(&a, &DataType::Utf8).ok();
        let ts_idx = schema.index_of("ts").or_else(|_| schema.index_of("timestamp")).ok();
        let ts = match ts_idx.map(|i| batch.column(i).clone()) {
            None => TsColumn::Missing,
            Some(a) => match a.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => match text(a) {
                    Some(t) => TsColumn::Text(t),
                    None => TsColumn::Unusable("cannot read `ts` as text".into()),
                },
                DataType::Timestamp(_, _) => match cast(&a, &DataType::Timestamp(TimeUnit::Millisecond, None)) {
                    Ok(t) => TsColumn::Millis(t),
                    Err(e) => TsColumn::Unusable(e.to_string()),
                },
                t if t.is_integer() => match cast(&a, &DataType::Int64) {
                    Ok(t) => TsColumn::Millis(t),
                    Err(e) => TsColumn::Unusable(e.to_string()),
                },
                t => TsColumn::Unusable(format!("column `ts` has type {t}; expected integer milliseconds, a timestamp or text")),
            },
        };
        let value = col("value").and_then(|a| cast(&a, &DataType::Float64).ok());
        let name = col("name").and_then(text);
        let tenant = col("tenant").and_then(text);
        let mut labels: Vec<(Arc<str>, ArrayRef)> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, f)| !matches!(f.name().as_str(), "value" | "name" | "tenant") && Some(*i) != ts_idx)
            .filter_map(|(i, f)| text(batch.column(i).clone()).map(|a| (Arc::<str>::from(f.name().as_str()), a)))
            .collect();
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        Columns { ts, value, name, tenant, labels, batch }
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    /// Decodes row `i`.
    pub fn row(&self, i: usize, interner: &mut SeriesInterner) -> Result<(Series, Millis, f64), DecodeError> {
        let ts = match &self.ts {
            TsColumn::Missing => return Err(DecodeError::Missing("ts")),
            TsColumn::Unusable(e) => return Err(DecodeError::Unreadable(e.clone())),
            TsColumn::Millis(a) if a.is_null(i) => return Err(DecodeError::Missing("ts")),
            TsColumn::Millis(a) => {
                let v = if let Some(p) = a.as_primitive_opt::<Int64Type>() {
                    p.value(i)
                } else {
                    a.as_primitive::<TimestampMillisecondType>().value(i)
                };
                check_event_time("ts", v)?
            }
            TsColumn::Text(a) if a.is_null(i) => return Err(DecodeError::Missing("ts")),
            TsColumn::Text(a) => parse_time_field("ts", a.as_string::<i32>().value(i))?,
        };
        let value = match &self.value {
            Some(a) if !a.is_null(i) => a.as_primitive::<Float64Type>().value(i),
            _ => return Err(DecodeError::Missing("value")),
        };
        if !value.is_finite() {
            return Err(DecodeError::NotFinite("value"));
        }
        let name = match &self.name {
            Some(a) if !a.is_null(i) => a.as_string::<i32>().value(i),
            _ => return Err(DecodeError::Missing("name")),
        };
        if name.is_empty() {
            return Err(DecodeError::Empty("name"));
        }
        let tenant = match &self.tenant {
            Some(a) if !a.is_null(i) => a.as_string::<i32>().value(i),
            _ => DEFAULT_TENANT,
        };
        if tenant.is_empty() {
            return Err(DecodeError::Empty("tenant"));
        }
        let present: Vec<(&str, &str)> = self
            .labels
            .iter()
            .filter(|(_, a)| a.is_valid(i))
            .map(|(k, a)| (&**k, a.as_string::<i32>().value(i)))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        if present.len() > alertflow_model::decode::MAX_LABELS {
            return Err(DecodeError::TooManyLabels(present.len()));
        }
        Ok((interner.intern(tenant, name, present.len(), |j| present[j]), ts, value))
    }

    /// Row `i` as one line of JSON, for a dead letter's `raw`.
    pub fn raw(&self, i: usize) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            if w.write(&self.batch.slice(i, 1)).is_err() {
                return b"(row could not be rendered)".to_vec();
            }
            let _ = w.finish();
        }
        while out.last() == Some(&b'\n') {
            out.pop();
        }
        out
    }
}
