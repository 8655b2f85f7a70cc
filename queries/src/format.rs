//! Rendering query answers: an aligned table, CSV, JSON, NDJSON, or a Parquet export.

use std::path::Path;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use futures::StreamExt;

use crate::catalog::QueryError;

/// How `alertflow sql` prints an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// An aligned table with borders.
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array of row objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(OutputFormat::Table),
            "csv" => Ok(OutputFormat::Csv),
            "json" => Ok(OutputFormat::Json),
            "ndjson" => Ok(OutputFormat::Ndjson),
            _ => Err(format!("unknown format `{s}`: expected table, csv, json, ndjson or parquet")),
        }
    }
}

/// Renders batches as text.
pub fn render(batches: &[RecordBatch], format: OutputFormat) -> Result<String, QueryError> {
    let err = |e: datafusion::arrow::error::ArrowError| QueryError::Output(e.to_string());
    match format {
        OutputFormat::Table => Ok(datafusion::arrow::util::pretty::pretty_format_batches(batches).map_err(err)?.to_string()),
        OutputFormat::Csv => {
            let mut out = Vec::new();
            {
                let mut w = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
                if batches.is_empty() {
                    return Ok(String::new());
                }
                for b in batches {
                    w.write(&flatten_nested(b).map_err(err)?).map_err(err)?;
                }
            }
            String::from_utf8(out).map_err(|e| QueryError::Output(e.to_string()))
        }
        OutputFormat::Json => {
            let mut out = Vec::new();
            {
                let mut w = datafusion::arrow::json::ArrayWriter::new(&mut out);
                for b in batches {
                    w.write(b).map_err(err)?;
                }
                w.finish().map_err(err)?;
            }
            if out.is_empty() {
                out.extend_from_slice(b"[]");
            }
            out.push(b'\n');
            String::from_utf8(out).map_err(|e| QueryError::Output(e.to_string()))
        }
        OutputFormat::Ndjson => {
            let mut out = Vec::new();
            {
                let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
                for b in batches {
                    w.write(b).map_err(err)?;
                }
                w.finish().map_err(err)?;
            }
            String::from_utf8(out).map_err(|e| QueryError::Output(e.to_string()))
        }
    }
}

/// CSV has no lists or structs: such columns are written as their display text
/// (`[api, db]`), the way the table format shows them.
fn flatten_nested(b: &RecordBatch) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    use datafusion::arrow::array::{ArrayRef, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    if !b.schema().fields().iter().any(|f| f.data_type().is_nested()) {
        return Ok(b.clone());
    }
    let opts = FormatOptions::default().with_null("");
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if f.data_type().is_nested() {
            let fmt = ArrayFormatter::try_new(c.as_ref(), &opts)?;
            let text: StringArray = (0..c.len()).map(|i| c.is_valid(i).then(|| fmt.value(i).to_string())).collect();
            fields.push(Field::new(f.name(), DataType::Utf8, true));
            cols.push(std::sync::Arc::new(text));
        } else {
            fields.push(f.as_ref().clone());
            cols.push(c.clone());
        }
    }
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), cols)
}

/// Streams a query's answer into a Parquet file (zstd), written under a temporary name and
/// renamed when complete. Returns the number of rows.
pub async fn export_parquet(df: DataFrame, path: &Path) -> Result<u64, QueryError> {
    let schema = df.schema().inner().clone();
    let mut stream = df.execute_stream().await?;
    let tmp = path.with_extension("parquet.tmp");
    let out = |e: &dyn std::fmt::Display| QueryError::Output(format!("{}: {e}", path.display()));
    let file = std::fs::File::create(&tmp).map_err(|e| out(&e))?;
    let props = WriterProperties::builder().set_compression(datafusion::parquet::basic::Compression::ZSTD(Default::default())).build();
    let mut w = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| out(&e))?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        w.write(&batch).map_err(|e| out(&e))?;
    }
    w.close().map_err(|e| out(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| out(&e))?;
    Ok(rows)
}
