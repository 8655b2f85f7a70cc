//! Output tables: their Arrow schemas, where each row is partitioned, and the builders that turn
//! rows into record batches. Every time column is `Timestamp(Millisecond, "UTC")`.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BinaryBuilder, Float64Array, Int64Array, StringArray, StringBuilder, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use crate::dead_letter::DeadLetter;
use crate::time::{HOUR_MS, date_hour};
use crate::window::{AggFn, WindowRow};

/// The name of the dead-letter table.
pub const DEAD_LETTERS: &str = "dead_letters";

/// Column names a table may not also use for a `group_by` label.
pub const WINDOW_FIXED_COLUMNS: [&str; 4] = ["window_start", "window_end", "tenant", "name"];

/// Hive partition columns; reserved as label names in `group_by`.
pub const PARTITION_COLUMNS: [&str; 2] = ["date", "hour"];

/// The Arrow type of every time column.
pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Where a row is stored under its table folder.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Partition {
    /// `date=YYYY-MM-DD/hour=HH` of an hour (hours since the epoch, UTC).
    Hour(i64),
    /// `source=NAME`.
    Source(Arc<str>),
}

impl Partition {
    /// The relative folder path.
    pub fn path(&self) -> String {
        match self {
            Partition::Hour(h) => {
                let (date, hour) = date_hour(h * HOUR_MS);
                format!("date={date}/hour={hour:02}")
            }
            // Source names are validated identifiers: nothing to escape.
            Partition::Source(s) => format!("source={s}"),
        }
    }
}

/// A row of some output table.
pub trait TableRow: Clone + Send + 'static {
    /// The partition the row belongs to.
    fn partition(&self) -> Partition;
}

/// Turns rows of one table into record batches.
pub trait TableBuilder<R>: Send + 'static {
    /// The schema of the batches (without the partition columns, which live in the path).
    fn schema(&self) -> SchemaRef;
    /// Puts rows in the table's canonical order, so that files are the same on every run.
    fn sort(&self, rows: &mut [R]);
    /// Builds one batch.
    fn build(&self, rows: &[R]) -> Result<RecordBatch, ArrowError>;
}

impl TableRow for WindowRow {
    fn partition(&self) -> Partition {
        Partition::Hour(self.start.div_euclid(HOUR_MS))
    }
}

impl TableRow for DeadLetter {
    fn partition(&self) -> Partition {
        Partition::Source(self.source.clone())
    }
}

/// The table of one window aggregate: `window_start`, `window_end`, `tenant`, `name`, one
/// column per `group_by` label, one column per function.
#[derive(Clone, Debug)]
pub struct WindowTable {
    group_by: Vec<String>,
    functions: Vec<AggFn>,
    schema: SchemaRef,
}

impl WindowTable {
    /// The table for these labels and functions.
    pub fn new(group_by: &[String], functions: &[AggFn]) -> Self {
        let mut fields = vec![
            Field::new("window_start", time_type(), false),
            Field::new("window_end", time_type(), false),
            Field::new("tenant", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, false),
        ];
        for g in group_by {
            fields.push(Field::new(g, DataType::Utf8, true));
        }
        for f in functions {
            let t = if *f == AggFn::Count { DataType::Int64 } else { DataType::Float64 };
            fields.push(Field::new(f.name(), t, false));
        }
        WindowTable { group_by: group_by.to_vec(), functions: functions.to_vec(), schema: Arc::new(Schema::new(fields)) }
    }
}

impl TableBuilder<WindowRow> for WindowTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn sort(&self, rows: &mut [WindowRow]) {
        rows.sort_unstable_by(|a, b| (a.start, &a.key).cmp(&(b.start, &b.key)));
    }
    fn build(&self, rows: &[WindowRow]) -> Result<RecordBatch, ArrowError> {
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        cols.push(Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.start)).with_timezone("UTC")));
        cols.push(Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.end)).with_timezone("UTC")));
        cols.push(Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.key.tenant()))));
        cols.push(Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.key.name()))));
        for i in 0..self.group_by.len() {
            cols.push(Arc::new(rows.iter().map(|r| r.key.values()[i].as_deref()).collect::<StringArray>()));
        }
        for f in &self.functions {
            let a: ArrayRef = match f {
                AggFn::Count => Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.acc.count as i64))),
                f => Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.acc.value(*f)))),
            };
            cols.push(a);
        }
        RecordBatch::try_new(self.schema.clone(), cols)
    }
}

/// The `dead_letters` table: `file`, `line`, `reason`, `raw` (Binary), `ts`; partitioned by
/// `source=`.
#[derive(Clone, Debug)]
pub struct DeadLetterTable {
    schema: SchemaRef,
}

impl Default for DeadLetterTable {
    fn default() -> Self {
        DeadLetterTable {
            schema: Arc::new(Schema::new(vec![
                Field::new("file", DataType::Utf8, false),
                Field::new("line", DataType::Int64, false),
                Field::new("reason", DataType::Utf8, false),
                Field::new("raw", DataType::Binary, false),
                Field::new("ts", time_type(), true),
            ])),
        }
    }
}

impl TableBuilder<DeadLetter> for DeadLetterTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn sort(&self, rows: &mut [DeadLetter]) {
        rows.sort_unstable_by(|a, b| (&a.file, a.line, &a.reason).cmp(&(&b.file, b.line, &b.reason)));
    }
    fn build(&self, rows: &[DeadLetter]) -> Result<RecordBatch, ArrowError> {
        let mut raw = BinaryBuilder::with_capacity(rows.len(), rows.iter().map(|r| r.raw.len()).sum());
        let mut reason = StringBuilder::new();
        for r in rows {
            raw.append_value(&r.raw);
            reason.append_value(&r.reason);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &*r.file))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.line as i64))),
            Arc::new(reason.finish()),
            Arc::new(raw.finish()),
            Arc::new(rows.iter().map(|r| r.ts).collect::<TimestampMillisecondArray>().with_timezone("UTC")),
        ];
        RecordBatch::try_new(self.schema.clone(), cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::Series;
    use crate::window::{Acc, GroupKey};

    #[test]
    fn window_batches_have_the_documented_schema() {
        let t = WindowTable::new(&["host".into()], &AggFn::ALL);
        let key = GroupKey::project(&Series::new("t0", "cpu", &[("host", "h1")]), &["host".into()]);
        let mut acc = Acc::of(1.0);
        acc.add(3.0);
        let rows = vec![WindowRow { start: 60_000, end: 120_000, key, acc }];
        let b = t.build(&rows).unwrap();
        let schema = b.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["window_start", "window_end", "tenant", "name", "host", "count", "sum", "min", "max", "avg"]);
        assert_eq!(b.schema().field(0).data_type(), &time_type());
        let avg = b.column(9).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(avg.value(0), 2.0);
        assert_eq!(rows[0].partition().path(), "date=1970-01-01/hour=00");
    }

    #[test]
    fn dead_letter_batches() {
        let s: Arc<str> = "points".into();
        let rows = vec![DeadLetter::new(&s, &"f.ndjson".into(), 3, "bad".into(), &[0xff; 5000], None)];
        let b = DeadLetterTable::default().build(&rows).unwrap();
        assert_eq!(b.num_rows(), 1);
        assert_eq!(rows[0].raw.len(), 4096);
        assert_eq!(rows[0].partition().path(), "source=points");
    }
}
