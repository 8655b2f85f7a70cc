//! Output tables: their Arrow schemas, where each row is partitioned, and the builders that turn
//! rows into record batches. Every time column is `Timestamp(Millisecond, "UTC")`.

use std::sync::Arc;

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanArray, Float64Array, Int32Array, Int64Array, ListArray, ListBuilder, StringArray, StringBuilder,
    TimestampMillisecondArray,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::alert::{AlertEvent, IncidentRow, StormRow};
use crate::anomaly::AnomalyRow;
use crate::dead_letter::DeadLetter;
use crate::labels::LabelSet;
use crate::time::{HOUR_MS, date_hour};
use crate::window::{AggFn, WindowRow};

/// The name of the dead-letter table.
pub const DEAD_LETTERS: &str = "dead_letters";

/// The name of the alert lifecycle table.
pub const ALERTS: &str = "alerts";
/// The name of the storm table.
pub const STORMS: &str = "storms";
/// The name of the incident table.
pub const INCIDENTS: &str = "incidents";
/// The default name of an anomaly table (a `[[detect]]` section names its own).
pub const ANOMALIES: &str = "anomalies";

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
    /// The event time at which the row was decided: the time of the record that caused it
    /// (an alert change, a storm or incident update, an anomaly), or the end of its window
    /// (the row is final once the frontier passes it). `None` for rows not tied to event time
    /// (dead letters). Latency is measured from it (`alertflow bench --rate`).
    fn decided_at(&self) -> Option<i64>;
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
    fn decided_at(&self) -> Option<i64> {
        Some(self.end)
    }
}

impl TableRow for DeadLetter {
    fn partition(&self) -> Partition {
        Partition::Source(self.source.clone())
    }
    fn decided_at(&self) -> Option<i64> {
        None
    }
}

/// The table of one window aggregate: `window_start`, `window_end`, `tenant`, `name`, one
/// column per `group_by` label, one column per function.
#[derive(Clone, Debug)]
pub struct WindowTable {
    group_by: Vec<String>,
    functions: Vec<AggFn>,
    revisions: bool,
    schema: SchemaRef,
}

impl WindowTable {
    /// The table for these labels and functions.
    pub fn new(group_by: &[String], functions: &[AggFn]) -> Self {
        Self::with_revisions(group_by, functions, false)
    }

    /// The table of an aggregate under the late policy `update`: a last column `revision`
    /// (Int32; 0 for a window's first row, one more for each correction).
    pub fn with_revisions(group_by: &[String], functions: &[AggFn], revisions: bool) -> Self {
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
        if revisions {
            fields.push(Field::new("revision", DataType::Int32, false));
        }
        WindowTable { group_by: group_by.to_vec(), functions: functions.to_vec(), revisions, schema: Arc::new(Schema::new(fields)) }
    }
}

impl TableBuilder<WindowRow> for WindowTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn sort(&self, rows: &mut [WindowRow]) {
        rows.sort_unstable_by(|a, b| (a.start, a.end, &a.key, a.revision).cmp(&(b.start, b.end, &b.key, b.revision)));
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
        if self.revisions {
            cols.push(Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.revision as i32))));
        }
        RecordBatch::try_new(self.schema.clone(), cols)
    }
}

impl TableRow for AnomalyRow {
    fn partition(&self) -> Partition {
        Partition::Hour(self.ts.div_euclid(HOUR_MS))
    }
    fn decided_at(&self) -> Option<i64> {
        Some(self.ts)
    }
}

/// An anomaly table: `tenant`, `name`, `labels` (JSON object text, sorted keys), `ts`,
/// `value`, `expected`, `score`, `detector`; partitioned by the hour of `ts`.
#[derive(Clone, Debug)]
pub struct AnomaliesTable {
    schema: SchemaRef,
}

impl Default for AnomaliesTable {
    fn default() -> Self {
        AnomaliesTable {
            schema: Arc::new(Schema::new(vec![
                Field::new("tenant", DataType::Utf8, false),
                Field::new("name", DataType::Utf8, false),
                Field::new("labels", DataType::Utf8, false),
                Field::new("ts", time_type(), false),
                Field::new("value", DataType::Float64, false),
                Field::new("expected", DataType::Float64, false),
                Field::new("score", DataType::Float64, false),
                Field::new("detector", DataType::Utf8, false),
            ])),
        }
    }
}

impl TableBuilder<AnomalyRow> for AnomaliesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn sort(&self, rows: &mut [AnomalyRow]) {
        rows.sort_unstable_by(|a, b| (a.ts, &a.series, a.part, a.pos).cmp(&(b.ts, &b.series, b.part, b.pos)));
    }
    fn build(&self, rows: &[AnomalyRow]) -> Result<RecordBatch, ArrowError> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.series.tenant()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.series.name()))),
            text_col(rows, |r, out| r.series.write_labels_json(out)),
            Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.ts)).with_timezone("UTC")),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.value))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.expected))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.score))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &*r.detector))),
        ];
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

fn ts_col(v: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from_iter_values(v).with_timezone("UTC"))
}
fn opt_ts_col(v: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(v.collect::<TimestampMillisecondArray>().with_timezone("UTC"))
}
fn str_col<'a>(v: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}
fn opt_str_col<'a>(v: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(v.collect::<StringArray>())
}
fn int_col(v: impl Iterator<Item = u64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(v.map(|x| x as i64)))
}
fn list_col<I: IntoIterator<Item = String>>(v: impl Iterator<Item = I>) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for items in v {
        for s in items {
            b.values().append_value(s);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}
/// The end of the text so far, as an Arrow offset.
fn offset(values: &[u8]) -> Result<i32, ArrowError> {
    i32::try_from(values.len()).map_err(|_| ArrowError::ComputeError("more than 2 GiB of fingerprints in one batch".into()))
}
/// Text of hex digits, with its offsets, as a string array: validated as UTF-8 once for the
/// whole buffer instead of once per fingerprint (incidents write up to 1,000 per row).
fn hex_array(offsets: Vec<i32>, values: Vec<u8>, nulls: Option<NullBuffer>) -> Result<StringArray, ArrowError> {
    StringArray::try_new(OffsetBuffer::new(offsets.into()), Buffer::from_vec(values), nulls)
}
/// A fingerprint column as hex text (`None`: null), without a `String` per row.
fn fingerprint_col(v: impl Iterator<Item = Option<u64>>) -> Result<ArrayRef, ArrowError> {
    let (mut offsets, mut values, mut nulls) = (vec![0], Vec::new(), NullBufferBuilder::new(0));
    for fp in v {
        match fp {
            Some(fp) => {
                values.extend_from_slice(&crate::labels::fingerprint_hex_bytes(fp));
                nulls.append_non_null();
            }
            None => nulls.append_null(),
        }
        offsets.push(offset(&values)?);
    }
    Ok(Arc::new(hex_array(offsets, values, nulls.finish())?))
}
/// A list column of fingerprints as hex text, without a `String` per fingerprint.
fn fingerprint_list_col<'a>(v: impl Iterator<Item = &'a [u64]>) -> Result<ArrayRef, ArrowError> {
    let (mut lists, mut offsets, mut values) = (vec![0], vec![0], Vec::new());
    for fps in v {
        values.reserve(16 * fps.len());
        for &fp in fps {
            values.extend_from_slice(&crate::labels::fingerprint_hex_bytes(fp));
            offsets.push(offset(&values)?);
        }
        lists.push(offsets.len() as i32 - 1);
    }
    let items = hex_array(offsets, values, None)?;
    Ok(Arc::new(ListArray::try_new(list_item(), OffsetBuffer::new(lists.into()), Arc::new(items), None)?))
}
/// A text column written row by row into one reused buffer (label sets as JSON): no
/// allocation per row.
fn text_col<R>(rows: &[R], mut write: impl FnMut(&R, &mut String)) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 64);
    let mut buf = String::new();
    for r in rows {
        buf.clear();
        write(r, &mut buf);
        b.append_value(&buf);
    }
    Arc::new(b.finish())
}
/// The item of every list column: nullable text.
fn list_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Utf8, true))
}
fn list_type() -> DataType {
    DataType::List(list_item())
}

impl TableRow for AlertEvent {
    fn partition(&self) -> Partition {
        Partition::Hour(self.ts.div_euclid(HOUR_MS))
    }
    fn decided_at(&self) -> Option<i64> {
        Some(self.ts)
    }
}

/// The `alerts` table: one row per lifecycle change of an alert episode.
#[derive(Clone, Debug)]
pub struct AlertsTable {
    schema: SchemaRef,
}

impl Default for AlertsTable {
    fn default() -> Self {
        let f = |n: &str, t: DataType, null: bool| Field::new(n, t, null);
        AlertsTable {
            schema: Arc::new(Schema::new(vec![
                f("ts", time_type(), false),
                f("event", DataType::Utf8, false),
                f("tenant", DataType::Utf8, false),
                f("fingerprint", DataType::Utf8, false),
                f("alertname", DataType::Utf8, false),
                f("severity", DataType::Utf8, false),
                f("status", DataType::Utf8, false),
                f("labels", DataType::Utf8, false),
                f("annotations", DataType::Utf8, false),
                f("starts_at", time_type(), false),
                f("ends_at", time_type(), true),
                f("last_seen", time_type(), false),
                f("occurrences", DataType::Int64, false),
                f("suppressed", DataType::Boolean, false),
                f("storm_id", DataType::Utf8, true),
                f("incident_id", DataType::Utf8, true),
                f("revision", DataType::Int64, false),
                f("generator_url", DataType::Utf8, true),
                f("team", DataType::Utf8, true),
                f("tier", DataType::Utf8, true),
            ])),
        }
    }
}

impl TableBuilder<AlertEvent> for AlertsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn sort(&self, rows: &mut [AlertEvent]) {
        rows.sort_by(|a, b| (a.ts, a.tenant(), a.fingerprint(), a.revision).cmp(&(b.ts, b.tenant(), b.fingerprint(), b.revision)));
    }
    fn build(&self, rows: &[AlertEvent]) -> Result<RecordBatch, ArrowError> {
        // The columns read from the label set in one pass: a batch's label sets (and their
        // strings) are far more than the caches hold, so a pass per column missed on each row's
        // label set once per column.
        let n = rows.len();
        // The annotations too, and each row's two sets are hinted into the cache a few rows
        // ahead (`LabelSet::prefetch_ahead`): each is two allocations to wait for otherwise.
        let mut fps = Vec::with_capacity(n);
        let (mut tenant, mut alertname, mut severity, mut labels, mut annotations) = (
            StringBuilder::with_capacity(n, n * 8),
            StringBuilder::with_capacity(n, n * 16),
            StringBuilder::with_capacity(n, n * 8),
            StringBuilder::with_capacity(n, n * 192),
            StringBuilder::with_capacity(n, n * 64),
        );
        let mut buf = String::new();
        for (i, r) in rows.iter().enumerate() {
            LabelSet::prefetch_ahead(|k| rows.get(i + k).map(|a| &a.labels));
            LabelSet::prefetch_ahead(|k| rows.get(i + k).map(|a| &a.annotations));
            tenant.append_value(r.tenant());
            fps.push(Some(r.fingerprint()));
            alertname.append_value(r.alertname());
            severity.append_value(r.severity());
            buf.clear();
            r.labels.write_json(&mut buf);
            labels.append_value(&buf);
            buf.clear();
            r.annotations.write_json(&mut buf);
            annotations.append_value(&buf);
        }
        let cols: Vec<ArrayRef> = vec![
            ts_col(rows.iter().map(|r| r.ts)),
            str_col(rows.iter().map(|r| r.event.name())),
            Arc::new(tenant.finish()),
            fingerprint_col(fps.into_iter())?,
            Arc::new(alertname.finish()),
            Arc::new(severity.finish()),
            str_col(rows.iter().map(|r| r.status.name())),
            Arc::new(labels.finish()),
            Arc::new(annotations.finish()),
            ts_col(rows.iter().map(|r| r.starts_at)),
            opt_ts_col(rows.iter().map(|r| r.ends_at)),
            ts_col(rows.iter().map(|r| r.last_seen)),
            int_col(rows.iter().map(|r| r.occurrences)),
            Arc::new(rows.iter().map(|r| Some(r.suppressed)).collect::<BooleanArray>()),
            fingerprint_col(rows.iter().map(|r| r.storm_id))?,
            fingerprint_col(rows.iter().map(|r| r.incident_id))?,
            int_col(rows.iter().map(|r| r.revision)),
            opt_str_col(rows.iter().map(|r| r.generator_url.as_deref())),
            opt_str_col(rows.iter().map(|r| r.team.as_deref())),
            opt_str_col(rows.iter().map(|r| r.tier.as_deref())),
        ];
        RecordBatch::try_new(self.schema.clone(), cols)
    }
}

impl TableRow for StormRow {
    fn partition(&self) -> Partition {
        Partition::Hour(self.updated_at.div_euclid(HOUR_MS))
    }
    fn decided_at(&self) -> Option<i64> {
        Some(self.updated_at)
    }
}

/// The `storms` table: one row per storm change.
#[derive(Clone, Debug)]
pub struct StormsTable {
    schema: SchemaRef,
}

impl Default for StormsTable {
    fn default() -> Self {
        let f = |n: &str, t: DataType, null: bool| Field::new(n, t, null);
        StormsTable {
            schema: Arc::new(Schema::new(vec![
                f("storm_id", DataType::Utf8, false),
                f("tenant", DataType::Utf8, false),
                f("group_key", DataType::Utf8, false),
                f("status", DataType::Utf8, false),
                f("opened_at", time_type(), false),
                f("updated_at", time_type(), false),
                f("closed_at", time_type(), true),
                f("alert_count", DataType::Int64, false),
                f("distinct_fingerprints", DataType::Int64, false),
                f("top_labels", DataType::Utf8, false),
                f("sample_fingerprints", list_type(), false),
                f("revision", DataType::Int64, false),
            ])),
        }
    }
}

impl TableBuilder<StormRow> for StormsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn sort(&self, rows: &mut [StormRow]) {
        rows.sort_by(|a, b| (a.updated_at, &a.tenant, a.storm_id, a.revision).cmp(&(b.updated_at, &b.tenant, b.storm_id, b.revision)));
    }
    fn build(&self, rows: &[StormRow]) -> Result<RecordBatch, ArrowError> {
        let cols: Vec<ArrayRef> = vec![
            fingerprint_col(rows.iter().map(|r| Some(r.storm_id)))?,
            str_col(rows.iter().map(|r| &*r.tenant)),
            str_col(rows.iter().map(|r| &*r.group_key)),
            str_col(rows.iter().map(|r| if r.open { "open" } else { "closed" })),
            ts_col(rows.iter().map(|r| r.opened_at)),
            ts_col(rows.iter().map(|r| r.updated_at)),
            opt_ts_col(rows.iter().map(|r| r.closed_at)),
            int_col(rows.iter().map(|r| r.alert_count)),
            int_col(rows.iter().map(|r| r.distinct_fingerprints)),
            str_col(rows.iter().map(|r| r.top_labels.as_str())),
            fingerprint_list_col(rows.iter().map(|r| &r.sample_fingerprints[..]))?,
            int_col(rows.iter().map(|r| r.revision)),
        ];
        RecordBatch::try_new(self.schema.clone(), cols)
    }
}

impl TableRow for IncidentRow {
    fn partition(&self) -> Partition {
        Partition::Hour(self.updated_at.div_euclid(HOUR_MS))
    }
    fn decided_at(&self) -> Option<i64> {
        Some(self.updated_at)
    }
}

/// The `incidents` table: one row per incident change.
#[derive(Clone, Debug)]
pub struct IncidentsTable {
    schema: SchemaRef,
}

impl Default for IncidentsTable {
    fn default() -> Self {
        let f = |n: &str, t: DataType, null: bool| Field::new(n, t, null);
        IncidentsTable {
            schema: Arc::new(Schema::new(vec![
                f("incident_id", DataType::Utf8, false),
                f("tenant", DataType::Utf8, false),
                f("status", DataType::Utf8, false),
                f("opened_at", time_type(), false),
                f("updated_at", time_type(), false),
                f("resolved_at", time_type(), true),
                f("alert_count", DataType::Int64, false),
                f("fingerprints", list_type(), false),
                f("services", list_type(), false),
                f("root_cause", DataType::Utf8, true),
                f("max_severity", DataType::Utf8, false),
                f("title", DataType::Utf8, false),
                f("revision", DataType::Int64, false),
            ])),
        }
    }
}

impl TableBuilder<IncidentRow> for IncidentsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn sort(&self, rows: &mut [IncidentRow]) {
        rows.sort_by(|a, b| {
            (a.updated_at, &a.tenant, a.incident_id, a.revision).cmp(&(b.updated_at, &b.tenant, b.incident_id, b.revision))
        });
    }
    fn build(&self, rows: &[IncidentRow]) -> Result<RecordBatch, ArrowError> {
        let cols: Vec<ArrayRef> = vec![
            fingerprint_col(rows.iter().map(|r| Some(r.incident_id)))?,
            str_col(rows.iter().map(|r| &*r.tenant)),
            str_col(rows.iter().map(|r| &*r.status)),
            ts_col(rows.iter().map(|r| r.opened_at)),
            ts_col(rows.iter().map(|r| r.updated_at)),
            opt_ts_col(rows.iter().map(|r| r.resolved_at)),
            int_col(rows.iter().map(|r| r.alert_count)),
            fingerprint_list_col(rows.iter().map(|r| &r.fingerprints[..]))?,
            list_col(rows.iter().map(|r| r.services.iter().map(|s| s.to_string()).collect::<Vec<_>>())),
            opt_str_col(rows.iter().map(|r| r.root_cause.as_deref())),
            str_col(rows.iter().map(|r| &*r.max_severity)),
            str_col(rows.iter().map(|r| r.title.as_str())),
            int_col(rows.iter().map(|r| r.revision)),
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
        let t = WindowTable::new(&["host".into()], &AggFn::DEFAULT);
        let key = GroupKey::project(&Series::new("t0", "cpu", &[("host", "h1")]), &["host".into()]);
        let mut acc = Acc::of(1.0);
        acc.add(3.0);
        let rows = vec![WindowRow { start: 60_000, end: 120_000, key, acc, revision: 0 }];
        let b = t.build(&rows).unwrap();
        let schema = b.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["window_start", "window_end", "tenant", "name", "host", "count", "sum", "min", "max", "avg"]);
        assert_eq!(b.schema().field(0).data_type(), &time_type());
        let avg = b.column(9).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(avg.value(0), 2.0);
        assert_eq!(rows[0].partition().path(), "date=1970-01-01/hour=00");
    }

    /// The fingerprint columns built from buffers equal the same columns built value by value,
    /// nulls and empty lists included.
    #[test]
    fn fingerprint_columns_are_hex_text_as_arrow_builds_it() {
        let fps: Vec<Option<u64>> = vec![Some(0), None, Some(u64::MAX), Some(0x0123_4567_89ab_cdef), None];
        let mut b = StringBuilder::new();
        for fp in &fps {
            b.append_option(fp.map(|f| format!("{f:016x}")));
        }
        assert_eq!(fingerprint_col(fps.iter().copied()).unwrap().as_ref(), &b.finish() as &dyn arrow::array::Array);
        let lists: Vec<Vec<u64>> = vec![vec![], vec![1, 2, 3], vec![], vec![u64::MAX], (0..1000).collect()];
        let mut b = ListBuilder::new(StringBuilder::new());
        for l in &lists {
            for f in l {
                b.values().append_value(format!("{f:016x}"));
            }
            b.append(true);
        }
        let built = fingerprint_list_col(lists.iter().map(|l| &l[..])).unwrap();
        assert_eq!(built.as_ref(), &b.finish() as &dyn arrow::array::Array);
        assert_eq!(built.data_type(), &list_type());
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

/// The name of the notification table.
pub const NOTIFICATIONS: &str = "notifications";

/// One delivery attempt's outcome: a row of the `notifications` table (the delivery log;
/// an id's latest row is where that notification stands).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationRow {
    /// The notification's id (its idempotency key).
    pub id: String,
    /// The receiver.
    pub receiver: String,
    /// The group it is about.
    pub group_key: String,
    /// The event time of the tick that decided it.
    pub at: i64,
    /// XXH3-64 of the request body, 16 hex digits.
    pub digest: String,
    /// Attempts so far.
    pub attempts: u32,
    /// `delivered`, `retrying` or `failed`.
    pub status: &'static str,
    /// The last answer's HTTP status.
    pub http_status: Option<u16>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// Wall-clock time of the first attempt.
    pub first_attempt: i64,
    /// Wall-clock time of this attempt.
    pub last_attempt: i64,
}

/// The `notifications` table: one row per delivery attempt's outcome.
#[derive(Clone, Debug)]
pub struct NotificationsTable {
    schema: SchemaRef,
}

impl Default for NotificationsTable {
    fn default() -> Self {
        let f = |n: &str, t: DataType, null: bool| Field::new(n, t, null);
        NotificationsTable {
            schema: Arc::new(Schema::new(vec![
                f("id", DataType::Utf8, false),
                f("receiver", DataType::Utf8, false),
                f("group_key", DataType::Utf8, false),
                f("at", time_type(), false),
                f("digest", DataType::Utf8, false),
                f("attempts", DataType::Int32, false),
                f("status", DataType::Utf8, false),
                f("http_status", DataType::Int32, true),
                f("error", DataType::Utf8, true),
                f("first_attempt", time_type(), false),
                f("last_attempt", time_type(), false),
            ])),
        }
    }
}

impl TableBuilder<NotificationRow> for NotificationsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn sort(&self, rows: &mut [NotificationRow]) {
        rows.sort_by(|a, b| (a.last_attempt, &a.id, a.attempts).cmp(&(b.last_attempt, &b.id, b.attempts)));
    }
    fn build(&self, rows: &[NotificationRow]) -> Result<RecordBatch, ArrowError> {
        let cols: Vec<ArrayRef> = vec![
            str_col(rows.iter().map(|r| r.id.as_str())),
            str_col(rows.iter().map(|r| r.receiver.as_str())),
            str_col(rows.iter().map(|r| r.group_key.as_str())),
            ts_col(rows.iter().map(|r| r.at)),
            str_col(rows.iter().map(|r| r.digest.as_str())),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.attempts.min(i32::MAX as u32) as i32))),
            str_col(rows.iter().map(|r| r.status)),
            Arc::new(rows.iter().map(|r| r.http_status.map(i32::from)).collect::<Int32Array>()),
            opt_str_col(rows.iter().map(|r| r.error.as_deref())),
            ts_col(rows.iter().map(|r| r.first_attempt)),
            ts_col(rows.iter().map(|r| r.last_attempt)),
        ];
        RecordBatch::try_new(self.schema.clone(), cols)
    }
}
