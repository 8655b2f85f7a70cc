//! CSV metric lines under a header row. Known columns: `ts` (or `timestamp`), `tenant`,
//! `name`, `value`; every other column is a label (an empty cell is no label). Fields follow
//! RFC 4180 quoting (`"a,b"`, `""` for a quote) but a record must fit on one line, so that large
//! files can be split at line boundaries.

use std::sync::Arc;

use super::{DecodeError, MAX_LINE_BYTES, MetricFields, Text, parse_time_field, parse_value};
use crate::series::{Series, SeriesInterner};
use crate::time::Millis;

/// The roles of a CSV file's columns, read from its header line.
#[derive(Clone, Debug)]
pub struct CsvHeader {
    width: usize,
    ts: usize,
    tenant: Option<usize>,
    name: usize,
    value: usize,
    labels: Vec<(usize, Arc<str>)>,
}

impl CsvHeader {
    /// Reads a header line; the error says what is wrong with it.
    pub fn parse(line: &[u8]) -> Result<CsvHeader, DecodeError> {
        let names = header_names(line)?;
        let find = |alts: &[&str]| names.iter().position(|n| alts.contains(&n.as_str()));
        let mut seen = std::collections::HashSet::new();
        for n in &names {
            if n.is_empty() {
                return Err(DecodeError::CsvHeader("a column has no name".into()));
            }
            if !seen.insert(n.as_str()) {
                return Err(DecodeError::CsvHeader(format!("column `{n}` appears twice")));
            }
        }
        let missing = |c: &str| DecodeError::CsvHeader(format!("no `{c}` column (found: {})", names.join(", ")));
        let ts = find(&["ts", "timestamp"]).ok_or_else(|| missing("ts"))?;
        let name = find(&["name"]).ok_or_else(|| missing("name"))?;
        let value = find(&["value"]).ok_or_else(|| missing("value"))?;
        let tenant = find(&["tenant"]);
        let labels = names
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != ts && *i != name && *i != value && Some(*i) != tenant)
            .map(|(i, n)| (i, Arc::<str>::from(n.as_str())))
            .collect::<Vec<_>>();
        if labels.len() > super::MAX_LABELS {
            return Err(DecodeError::TooManyLabels(labels.len()));
        }
        Ok(CsvHeader { width: names.len(), ts, tenant, name, value, labels })
    }
}

/// Decodes CSV metric lines of one file; one per worker and file.
pub struct CsvMetricDecoder {
    header: CsvHeader,
    fields: MetricFields,
    cells: Vec<Text>,
}

impl CsvMetricDecoder {
    /// A decoder for lines under `header`.
    pub fn new(header: CsvHeader) -> Self {
        CsvMetricDecoder { header, fields: MetricFields::default(), cells: Vec::new() }
    }

    /// Sets the event time of lines whose `ts` cell is empty (a Kafka message's timestamp), until
    /// changed; `None` makes the cell required again.
    pub fn set_default_ts(&mut self, ts: Option<Millis>) {
        self.fields.default_ts = ts;
    }

    /// Adds label `name` = `value` to records without a label of that name (a Kafka message's
    /// key under `key_label`), until changed; `None` or an empty value adds none. The value
    /// must be UTF-8, else decoding the record fails.
    pub fn set_outside_label(&mut self, name: &[u8], value: Option<&[u8]>) {
        super::set_outside_label(&mut self.fields, name, value);
    }

    /// Decodes one data line (without its newline).
    pub fn decode(&mut self, line: &[u8], interner: &mut SeriesInterner) -> Result<(Series, Millis, f64), DecodeError> {
        if line.len() > MAX_LINE_BYTES {
            return Err(DecodeError::TooLong(line.len()));
        }
        super::check_utf8(line)?;
        let f = &mut self.fields;
        f.clear();
        split(line, &mut f.scratch, &mut self.cells)?;
        let h = &self.header;
        if self.cells.len() != h.width {
            return Err(DecodeError::CsvWidth { got: self.cells.len(), want: h.width });
        }
        let cell = |i: usize| self.cells[i];
        let ts = cell(h.ts).text(line, &f.scratch);
        if ts.trim().is_empty() {
            if f.default_ts.is_none() {
                return Err(DecodeError::Missing("ts"));
            }
        } else {
            f.ts = Some(parse_time_field("ts", ts)?);
        }
        let v = cell(h.value).text(line, &f.scratch);
        if v.trim().is_empty() {
            return Err(DecodeError::Missing("value"));
        }
        f.value = Some(parse_value("value", v)?);
        f.name = Some(cell(h.name));
        if let Some(t) = h.tenant
            && !cell(t).get(line, &f.scratch).is_empty()
        {
            f.tenant = Some(cell(t));
        }
        // Label keys come from the header: put them in the scratch buffer so that `Text`
        // can point at them like at any other string.
        for (i, key) in &h.labels {
            let c = cell(*i);
            if c.get(line, &f.scratch).is_empty() {
                continue;
            }
            let s = f.scratch.len();
            f.scratch.extend_from_slice(key.as_bytes());
            f.labels.push((Text::Scratch(s as u32, f.scratch.len() as u32), c));
        }
        f.finish(line, interner)
    }
}

/// The trimmed column names of a header line, checked for empty and duplicate names.
pub(crate) fn header_names(line: &[u8]) -> Result<Vec<String>, DecodeError> {
    let line = super::trim_line(line);
    std::str::from_utf8(line).map_err(|e| DecodeError::CsvHeader(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    let mut scratch = Vec::new();
    let mut cells = Vec::new();
    split(line, &mut scratch, &mut cells).map_err(|_| DecodeError::CsvHeader("unclosed quote".into()))?;
    let names: Vec<String> = cells.iter().map(|t| t.text(line, &scratch).trim().to_string()).collect();
    let mut seen = std::collections::HashSet::new();
    for n in &names {
        if n.is_empty() {
            return Err(DecodeError::CsvHeader("a column has no name".into()));
        }
        if !seen.insert(n.as_str()) {
            return Err(DecodeError::CsvHeader(format!("column `{n}` appears twice")));
        }
    }
    Ok(names)
}

/// Splits one CSV line into cells (for other decoders of this module tree).
pub(crate) fn split_line(line: &[u8], scratch: &mut Vec<u8>, cells: &mut Vec<Text>) -> Result<(), DecodeError> {
    split(line, scratch, cells)
}

/// Splits one CSV line into cells.
fn split(line: &[u8], scratch: &mut Vec<u8>, cells: &mut Vec<Text>) -> Result<(), DecodeError> {
    cells.clear();
    let mut i = 0;
    loop {
        if line.get(i) == Some(&b'"') {
            // Quoted: copy into scratch, undoing `""`.
            let s = scratch.len();
            i += 1;
            loop {
                match memchr::memchr(b'"', &line[i..]) {
                    None => return Err(DecodeError::CsvQuote),
                    Some(off) => {
                        scratch.extend_from_slice(&line[i..i + off]);
                        i += off + 1;
                        if line.get(i) == Some(&b'"') {
                            scratch.push(b'"');
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            cells.push(Text::Scratch(s as u32, scratch.len() as u32));
            match line.get(i) {
                None => return Ok(()),
                Some(b',') => i += 1,
                Some(_) => return Err(DecodeError::CsvQuote),
            }
        } else {
            let end = memchr::memchr(b',', &line[i..]).map(|o| i + o);
            let stop = end.unwrap_or(line.len());
            cells.push(Text::Line(i as u32, stop as u32));
            match end {
                None => return Ok(()),
                Some(e) => i = e + 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder(h: &str) -> CsvMetricDecoder {
        CsvMetricDecoder::new(CsvHeader::parse(h.as_bytes()).unwrap())
    }

    #[test]
    fn decodes_lines_under_a_header() {
        let mut d = decoder("\u{feff}ts,tenant,host,name,value,zone\r");
        let mut i = SeriesInterner::new();
        let (s, ts, v) = d.decode(b"1767225598647,t0,h00000,cpu,54.525,", &mut i).unwrap();
        assert_eq!((s.tenant(), s.name(), ts, v), ("t0", "cpu", 1_767_225_598_647, 54.525));
        assert_eq!(s.labels().len(), 1, "an empty cell is no label");
        let (s, ts, _) = d.decode(br#"2026-01-01T00:00:00Z,,"h,1",cpu,1,"a""b""#, &mut i).unwrap();
        assert_eq!(s.tenant(), "default");
        assert_eq!(ts, 1_767_225_600_000);
        assert_eq!(&**s.label("host").unwrap(), "h,1");
        assert_eq!(&**s.label("zone").unwrap(), "a\"b");
    }

    #[test]
    fn bad_headers_and_lines() {
        for (h, want) in [
            ("ts,name", "no `value` column"),
            ("time,name,value", "no `ts` column"),
            ("ts,name,value,ts", "appears twice"),
            ("ts,,name,value", "no name"),
        ] {
            let e = CsvHeader::parse(h.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{h}: {e}");
        }
        let mut d = decoder("ts,name,value");
        let mut i = SeriesInterner::new();
        for (line, want) in [
            ("1,cpu", "has 2 fields, the header has 3"),
            ("1,cpu,abc", "`value` is not a number"),
            ("1,cpu,inf", "`value` is not a number"),
            ("x,cpu,1", "`ts` is not a time"),
            ("1,cpu,", "missing field `value`"),
            ("1,\"cpu,1", "not closed"),
            ("1,,1", "field `name` is empty"),
        ] {
            let e = d.decode(line.as_bytes(), &mut i).unwrap_err().to_string();
            assert!(e.contains(want), "{line}: {e}");
        }
    }
}
