//! Decoders from input bytes to records: NDJSON and CSV lines (Parquet rows are decoded by the
//! file connector from Arrow arrays, through [`MetricFields`] as well).
//!
//! Decoders never allocate for a series they have seen: strings are borrowed from the line (or
//! from a per-decoder scratch buffer when JSON escapes had to be undone) and the series is
//! looked up in the worker's [`SeriesInterner`].

mod alert;
mod csv;
mod error;
mod json;
mod ndjson;
pub mod remote_write;
mod shape;

pub use alert::{AlertDecoder, CsvAlertHeader};
pub use csv::{CsvHeader, CsvMetricDecoder};
pub use error::DecodeError;
pub use ndjson::NdjsonMetricDecoder;
pub use remote_write::{BadSeries, RemoteWriteDecoder, RemoteWriteError, WriteSummary};

use crate::series::{DEFAULT_TENANT, Series, SeriesInterner};
use crate::time::{MAX_EVENT_TIME, Millis};

/// Most labels one record may carry; more is a dead letter, not a memory hazard.
pub const MAX_LABELS: usize = 512;

/// Longest input line decoded; longer lines become dead letters.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// A piece of text inside the current line, or inside the decoder's scratch buffer when an
/// escape sequence had to be undone. Ranges keep the borrow checker out of the hot path.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Text {
    Line(u32, u32),
    Scratch(u32, u32),
    /// `true` or `false`, for boolean labels.
    Bool(bool),
}

impl Text {
    /// The bytes of the text. Lines are UTF-8-validated before decoding and string
    /// boundaries fall on ASCII quotes and commas, so these bytes are UTF-8 too; they are only
    /// converted to `str` (checked) when a new series is interned.
    #[inline]
    pub(crate) fn get<'a>(self, line: &'a [u8], scratch: &'a [u8]) -> &'a [u8] {
        match self {
            Text::Line(a, b) => &line[a as usize..b as usize],
            Text::Scratch(a, b) => &scratch[a as usize..b as usize],
            Text::Bool(true) => b"true",
            Text::Bool(false) => b"false",
        }
    }

    /// The text as `str` (validated), for the rare paths that need one.
    pub(crate) fn text<'a>(self, line: &'a [u8], scratch: &'a [u8]) -> &'a str {
        std::str::from_utf8(self.get(line, scratch)).unwrap_or("\u{FFFD}")
    }
}

/// Checks that a line is UTF-8; pure-ASCII lines (nearly all) take a word-at-a-time path.
#[inline]
pub fn check_utf8(line: &[u8]) -> Result<(), DecodeError> {
    if line.is_ascii() {
        return Ok(());
    }
    std::str::from_utf8(line).map(|_| ()).map_err(|e| DecodeError::InvalidUtf8(e.valid_up_to()))
}

/// The fields of one metric record while it is decoded; reused from record to record.
#[derive(Default)]
pub(crate) struct MetricFields {
    pub tenant: Option<Text>,
    pub name: Option<Text>,
    pub ts: Option<Millis>,
    /// The event time of a record without one (a Kafka message's timestamp); kept across records.
    pub default_ts: Option<Millis>,
    pub value: Option<f64>,
    /// A label from outside the record (a Kafka message's key under `key_label`): name and
    /// value, added when the record has no label of that name; kept across records.
    pub outside_label: Option<(Vec<u8>, Vec<u8>)>,
    pub labels: Vec<(Text, Text)>,
    pub scratch: Vec<u8>,
}

impl MetricFields {
    pub(crate) fn clear(&mut self) {
        self.tenant = None;
        self.name = None;
        self.ts = None;
        self.value = None;
        self.labels.clear();
        self.scratch.clear();
    }

    /// Checks the fields and interns the series.
    pub(crate) fn finish(&mut self, line: &[u8], interner: &mut SeriesInterner) -> Result<(Series, Millis, f64), DecodeError> {
        let ts = self.ts.or(self.default_ts).ok_or(DecodeError::Missing("ts"))?;
        let value = self.value.ok_or(DecodeError::Missing("value"))?;
        let name = self.name.ok_or(DecodeError::Missing("name"))?;
        if let Some((k, v)) = &self.outside_label
            && !self.labels.iter().any(|(n, _)| n.get(line, &self.scratch) == &k[..])
        {
            std::str::from_utf8(v).map_err(|e| DecodeError::KeyNotUtf8(e.valid_up_to()))?;
            let a = self.scratch.len() as u32;
            self.scratch.extend_from_slice(k);
            let b = self.scratch.len() as u32;
            self.scratch.extend_from_slice(v);
            self.labels.push((Text::Scratch(a, b), Text::Scratch(b, self.scratch.len() as u32)));
        }
        let scratch = &self.scratch;
        let name = name.get(line, scratch);
        if name.is_empty() {
            return Err(DecodeError::Empty("name"));
        }
        let tenant = match self.tenant {
            Some(t) => {
                let t = t.get(line, scratch);
                if t.is_empty() {
                    return Err(DecodeError::Empty("tenant"));
                }
                t
            }
            None => DEFAULT_TENANT.as_bytes(),
        };
        if self.labels.len() > MAX_LABELS {
            return Err(DecodeError::TooManyLabels(self.labels.len()));
        }
        if self.labels.len() > 1 {
            self.labels.sort_unstable_by(|a, b| a.0.get(line, scratch).cmp(b.0.get(line, scratch)));
            for w in self.labels.windows(2) {
                if w[0].0.get(line, scratch) == w[1].0.get(line, scratch) {
                    return Err(DecodeError::Duplicate(w[0].0.text(line, scratch).to_string()));
                }
            }
        }
        if self.labels.iter().any(|(k, _)| k.get(line, scratch).is_empty()) {
            return Err(DecodeError::EmptyLabelKey);
        }
        let labels = &self.labels;
        let series = interner
            .intern_bytes(tenant, name, labels.len(), |i| (labels[i].0.get(line, scratch), labels[i].1.get(line, scratch)))
            .ok_or(DecodeError::InvalidUtf8(0))?;
        Ok((series, ts, value))
    }
}

/// Sets (or with `value` `None`, or empty, removes) the outside label `name` of `fields`,
/// reusing its buffers.
pub(crate) fn set_outside_label(fields: &mut MetricFields, name: &[u8], value: Option<&[u8]>) {
    match value {
        Some(v) if !v.is_empty() => {
            let (k, val) = fields.outside_label.get_or_insert_with(Default::default);
            if k[..] != *name {
                k.clear();
                k.extend_from_slice(name);
            }
            val.clear();
            val.extend_from_slice(v);
        }
        _ => fields.outside_label = None,
    }
}

/// Checks an event time for the range alertflow accepts.
pub fn check_event_time(field: &'static str, ts: i64) -> Result<Millis, DecodeError> {
    if (0..=MAX_EVENT_TIME).contains(&ts) { Ok(ts) } else { Err(DecodeError::TimeRange { field, ts }) }
}

/// Parses a time given as text: integer milliseconds or RFC 3339.
pub fn parse_time_field(field: &'static str, text: &str) -> Result<Millis, DecodeError> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) {
        let v: i64 = t.parse().map_err(|_| DecodeError::BadTime { field, text: clip(t) })?;
        return check_event_time(field, v);
    }
    match crate::time::parse_time_text(t) {
        Some(v) => check_event_time(field, v),
        None => Err(DecodeError::BadTime { field, text: clip(t) }),
    }
}

/// Parses a metric value given as text.
pub(crate) fn parse_value(field: &'static str, text: &str) -> Result<f64, DecodeError> {
    let t = text.trim();
    // `f64::from_str` also takes "inf" and "NaN": reject anything that is not a plain number.
    let plain = !t.is_empty() && t.bytes().all(|c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'));
    if !plain {
        return Err(DecodeError::NotANumber { field, text: clip(t) });
    }
    let v: f64 = match fast_decimal(t.as_bytes()) {
        Some(v) => v,
        None => t.parse().map_err(|_| DecodeError::NotANumber { field, text: clip(t) })?,
    };
    if !v.is_finite() {
        return Err(DecodeError::NotFinite(field));
    }
    Ok(v)
}

/// Exact powers of ten representable in an `f64`.
const POW10: [f64; 23] =
    [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22];

/// Clinger's fast path for plain decimals (`-12.345`, `54`): when the digits form an integer
/// below 2^53 and there are at most 22 decimals, both that integer and the power of ten are
/// exact in an `f64`, so one IEEE division is correctly rounded — the same value `str::parse`
/// gives, at a fraction of the cost. Anything else (exponents, long mantissas) returns `None`.
#[inline]
pub(crate) fn fast_decimal(b: &[u8]) -> Option<f64> {
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    let mut mantissa: u64 = 0;
    let mut decimals: usize = 0;
    let mut seen_dot = false;
    let mut n = 0;
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa.checked_mul(10)?.checked_add((c - b'0') as u64)?;
                n += 1;
                if seen_dot {
                    decimals += 1;
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => return None,
        }
    }
    if n == 0 || mantissa >= 1 << 53 || decimals >= POW10.len() || (seen_dot && decimals == 0) {
        return None;
    }
    let v = mantissa as f64 / POW10[decimals];
    Some(if neg { -v } else { v })
}

/// At most 64 characters of `s`, for error messages.
pub(crate) fn clip(s: &str) -> String {
    if s.len() <= 64 {
        s.to_string()
    } else {
        let mut end = 64;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// Removes a trailing `\r` (CRLF files) and a leading UTF-8 byte order mark.
#[inline]
pub fn trim_line(mut line: &[u8]) -> &[u8] {
    if let [rest @ .., b'\r'] = line {
        line = rest;
    }
    if let [0xEF, 0xBB, 0xBF, rest @ ..] = line {
        line = rest;
    }
    line
}

/// Whether a line holds nothing but white space (such lines are skipped, not dead letters).
#[inline]
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r'))
}

#[cfg(test)]
mod tests {
    use super::fast_decimal;

    #[test]
    fn fast_decimal_agrees_with_std() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let int = x % 10_000_000;
            let dec = (x >> 24) % 1000;
            let places = (x >> 40) % 7;
            let text = match places {
                0 => format!("{int}"),
                p => format!("{}{int}.{:0width$}", if x & 1 == 1 { "-" } else { "" }, dec % 10u64.pow(p as u32), width = p as usize),
            };
            assert_eq!(fast_decimal(text.as_bytes()), Some(text.parse::<f64>().unwrap()), "{text}");
        }
        for s in ["1e5", "1.", ".", "-", "", "1.2.3", "12345678901234567890", "9007199254740993"] {
            assert_eq!(fast_decimal(s.as_bytes()), None, "{s}");
        }
        assert_eq!(fast_decimal(b".5"), Some(0.5));
    }
}
