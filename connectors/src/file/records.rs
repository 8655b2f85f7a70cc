//! What a file source decodes: metric points or alerts. The source's reading, chunking,
//! watermarks and dead letters are the same for both; only decoding differs, so it is a trait
//! the source is generic over (monomorphised: the metric hot path pays nothing for it).

use alertflow_model::decode::{AlertDecoder, CsvAlertHeader, CsvHeader, CsvMetricDecoder, DecodeError, NdjsonMetricDecoder};
use alertflow_model::{Alert, Metric, SeriesInterner};

use super::Format;
use super::parquet_rows::Columns;

/// A record type a file source can produce.
pub trait FileRecord: Clone + Send + 'static {
    /// Per-worker decoding state (interners, scratch buffers).
    type Decoder: 'static;
    /// What a CSV file's header line tells (one per file).
    type CsvHeader: 'static;

    /// A fresh decoder.
    fn decoder() -> Self::Decoder;

    /// Reads a CSV header line.
    fn csv_header(line: &[u8]) -> Result<Self::CsvHeader, DecodeError>;

    /// Decodes one line (`csv` is the file's header when the file is CSV), calling
    /// `emit(event_time, record)` for each record in it. A line either yields all its records
    /// or an error and none: a half-decoded line never reaches the dataflow.
    fn decode_line(
        dec: &mut Self::Decoder,
        format: Format,
        csv: Option<&mut Self::CsvHeader>,
        line: &[u8],
        part: u32,
        pos: u64,
        emit: impl FnMut(i64, Self),
    ) -> Result<(), DecodeError>;

    /// Hints the decoder at the line it will be given next, at position `pos` of partition
    /// `part`, before the line at hand is decoded (see [`AlertDecoder::read_ahead`]). `csv`:
    /// whether the file is CSV. The caller must decode exactly that line at that position
    /// next, or decode nothing at that position.
    #[inline]
    fn read_ahead(_dec: &mut Self::Decoder, _format: Format, _csv: bool, _next: &[u8], _part: u32, _pos: u64) {}

    /// Sets the event time given to records that carry none (a Kafka message's timestamp), until
    /// changed; `None` makes the time required again. `csv` is the CSV header in use, if any.
    fn set_default_ts(dec: &mut Self::Decoder, csv: Option<&mut Self::CsvHeader>, ts: Option<i64>);

    /// Sets the label `name` given the value `key` (a Kafka message's key under `key_label`)
    /// in records without a label of that name, until changed. Only metric records have
    /// labels set this way (configuration rejects `key_label` for alerts).
    fn set_key_label(_dec: &mut Self::Decoder, _csv: Option<&mut Self::CsvHeader>, _name: &[u8], _key: Option<&[u8]>) {}

    /// Decodes row `i` of a Parquet batch.
    fn parquet_row(dec: &mut Self::Decoder, cols: &Columns, i: usize, part: u32, pos: u64) -> Result<(i64, Self), DecodeError>;

    /// Marks a record accepted late (see [`alertflow_model::Metric::late`]). Only record types
    /// whose operators revise results take late records; the engine gives the others no
    /// `allowed_lateness`, so this is never called for them.
    fn mark_late(&mut self) {}
}

/// Decoding state for metric points.
pub struct MetricDecoder {
    interner: SeriesInterner,
    ndjson: NdjsonMetricDecoder,
}

impl FileRecord for Metric {
    type Decoder = MetricDecoder;
    type CsvHeader = CsvMetricDecoder;

    fn decoder() -> MetricDecoder {
        MetricDecoder { interner: SeriesInterner::new(), ndjson: NdjsonMetricDecoder::new() }
    }

    fn csv_header(line: &[u8]) -> Result<CsvMetricDecoder, DecodeError> {
        CsvHeader::parse(line).map(CsvMetricDecoder::new)
    }

    fn mark_late(&mut self) {
        self.late = true;
    }

    #[inline]
    fn decode_line(
        dec: &mut MetricDecoder,
        _format: Format,
        csv: Option<&mut CsvMetricDecoder>,
        line: &[u8],
        part: u32,
        pos: u64,
        mut emit: impl FnMut(i64, Metric),
    ) -> Result<(), DecodeError> {
        let (series, ts, value) = match csv {
            None => dec.ndjson.decode(line, &mut dec.interner)?,
            Some(c) => c.decode(line, &mut dec.interner)?,
        };
        emit(ts, Metric { series, ts, value, part, pos, late: false });
        Ok(())
    }

    #[inline]
    fn set_default_ts(dec: &mut MetricDecoder, csv: Option<&mut CsvMetricDecoder>, ts: Option<i64>) {
        match csv {
            None => dec.ndjson.set_default_ts(ts),
            Some(c) => c.set_default_ts(ts),
        }
    }

    #[inline]
    fn set_key_label(dec: &mut MetricDecoder, csv: Option<&mut CsvMetricDecoder>, name: &[u8], key: Option<&[u8]>) {
        match csv {
            None => dec.ndjson.set_outside_label(name, key),
            Some(c) => c.set_outside_label(name, key),
        }
    }

    fn parquet_row(dec: &mut MetricDecoder, cols: &Columns, i: usize, part: u32, pos: u64) -> Result<(i64, Metric), DecodeError> {
        let (series, ts, value) = cols.row(i, &mut dec.interner)?;
        Ok((ts, Metric { series, ts, value, part, pos, late: false }))
    }
}

/// Decoding state for alerts.
pub struct AlertsDecoder {
    dec: AlertDecoder,
    /// The alerts of one Alertmanager line, held until the whole line has decoded.
    line: Vec<Alert>,
}

impl FileRecord for Alert {
    type Decoder = AlertsDecoder;
    type CsvHeader = CsvAlertHeader;

    fn decoder() -> AlertsDecoder {
        AlertsDecoder { dec: AlertDecoder::new(), line: Vec::new() }
    }

    fn csv_header(line: &[u8]) -> Result<CsvAlertHeader, DecodeError> {
        CsvAlertHeader::parse(line)
    }

    #[inline]
    fn read_ahead(d: &mut AlertsDecoder, format: Format, csv: bool, next: &[u8], part: u32, pos: u64) {
        // Only `ndjson` below takes a shape read ahead.
        if !csv && !matches!(format, Format::Alertmanager) {
            d.dec.read_ahead(next, part, pos);
        }
    }

    fn decode_line(
        d: &mut AlertsDecoder,
        format: Format,
        csv: Option<&mut CsvAlertHeader>,
        line: &[u8],
        part: u32,
        pos: u64,
        mut emit: impl FnMut(i64, Alert),
    ) -> Result<(), DecodeError> {
        match (csv, format) {
            (Some(h), _) => {
                let a = d.dec.csv(h, line, part, pos)?;
                emit(a.ts, a);
            }
            (None, Format::Alertmanager) => {
                d.line.clear();
                d.dec.alertmanager(line, part, pos, &mut d.line)?;
                for a in d.line.drain(..) {
                    emit(a.ts, a);
                }
            }
            (None, _) => {
                let a = d.dec.ndjson(line, part, pos)?;
                emit(a.ts, a);
            }
        }
        Ok(())
    }

    #[inline]
    fn set_default_ts(d: &mut AlertsDecoder, _csv: Option<&mut CsvAlertHeader>, ts: Option<i64>) {
        // CSV alert files name a `ts` column in their header, so only JSON alerts take it.
        d.dec.set_default_ts(ts);
    }

    fn parquet_row(_: &mut AlertsDecoder, _: &Columns, _: usize, _: u32, _: u64) -> Result<(i64, Alert), DecodeError> {
        // Planning refuses Parquet alert sources (`PlanError::Unsupported`); this is a guard.
        Err(DecodeError::BadFileHeader("Parquet input holds metric points only".into()))
    }
}
