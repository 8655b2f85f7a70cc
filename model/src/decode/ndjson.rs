//! NDJSON metric lines: `{"ts":…,"tenant":"t0","name":"cpu","value":54.5,"host":"h1"}`.
//!
//! Known fields: `ts` (integer milliseconds or an RFC 3339 string), `tenant` (default
//! `"default"`), `name`, `value` (a JSON number). Every other field is a label: strings as they
//! are, numbers and booleans as their JSON text, `null` as no label. A `labels` object adds its
//! members as labels; an `annotations` object is accepted and ignored; any other object or
//! array makes the line a dead letter.

use super::json::{Cursor, Val, kind};
use super::{DecodeError, MAX_LINE_BYTES, MetricFields, Text, check_event_time, check_utf8, parse_time_field, parse_value};
use crate::series::{Series, SeriesInterner};
use crate::time::Millis;

/// Decodes NDJSON metric lines; one per worker and source.
#[derive(Default)]
pub struct NdjsonMetricDecoder {
    fields: MetricFields,
}

impl NdjsonMetricDecoder {
    /// A new decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the event time of records without a `ts` field (a Kafka message's timestamp), until
    /// changed; `None` makes `ts` required again.
    pub fn set_default_ts(&mut self, ts: Option<Millis>) {
        self.fields.default_ts = ts;
    }

    /// Adds label `name` = `value` to records without a label of that name (a Kafka message's
    /// key under `key_label`), until changed; `None` or an empty value adds none. The value
    /// must be UTF-8, else decoding the record fails.
    pub fn set_outside_label(&mut self, name: &[u8], value: Option<&[u8]>) {
        super::set_outside_label(&mut self.fields, name, value);
    }

    /// Decodes one line (without its newline) into `(series, ts, value)`.
    pub fn decode(&mut self, line: &[u8], interner: &mut SeriesInterner) -> Result<(Series, Millis, f64), DecodeError> {
        if line.len() > MAX_LINE_BYTES {
            return Err(DecodeError::TooLong(line.len()));
        }
        check_utf8(line)?;
        let f = &mut self.fields;
        f.clear();
        let mut c = Cursor::new(line);
        c.eat(b'{', "expected `{` at the start of a record")?;
        let mut first = true;
        while let Some(key) = c.next_key(first, &mut f.scratch)? {
            first = false;
            // Classify the key before reading the value: the value may append to the scratch
            // buffer the key lives in (appends never move earlier ranges, so `key` stays valid).
            let kind = match key.get(line, &f.scratch) {
                b"ts" => Key::Ts,
                b"value" => Key::Value,
                b"tenant" => Key::Tenant,
                b"name" => Key::Name,
                b"annotations" => Key::Annotations,
                b"labels" => Key::Labels,
                _ => Key::Other,
            };
            match kind {
                Key::Ts => {
                    let v = c.value(&mut f.scratch)?;
                    if f.ts.is_some() {
                        return Err(DecodeError::Duplicate("ts".into()));
                    }
                    f.ts = Some(match v {
                        Val::Num(n) => parse_int_time("ts", n)?,
                        Val::Str(t) => parse_time_field("ts", t.text(line, &f.scratch))?,
                        other => return Err(wrong("ts", "integer milliseconds or an RFC 3339 string", &other)),
                    });
                }
                Key::Value => {
                    let v = c.value(&mut f.scratch)?;
                    if f.value.is_some() {
                        return Err(DecodeError::Duplicate("value".into()));
                    }
                    f.value = Some(match v {
                        Val::Num(n) => parse_value("value", n)?,
                        other => return Err(wrong("value", "a number", &other)),
                    });
                }
                Key::Tenant | Key::Name => {
                    let field = if matches!(kind, Key::Tenant) { "tenant" } else { "name" };
                    let v = c.value(&mut f.scratch)?;
                    let Val::Str(t) = v else {
                        return Err(wrong(field, "a string", &v));
                    };
                    let slot = if matches!(kind, Key::Tenant) { &mut f.tenant } else { &mut f.name };
                    if slot.is_some() {
                        return Err(DecodeError::Duplicate(field.to_string()));
                    }
                    *slot = Some(t);
                }
                Key::Annotations => match c.value(&mut f.scratch)? {
                    Val::Object => c.skip_value(&mut f.scratch, 0)?,
                    Val::Array => return Err(nested("annotations", "an array")),
                    v => label(f, key, v)?,
                },
                Key::Labels => match c.value(&mut f.scratch)? {
                    Val::Object => {
                        c.i += 1;
                        let mut first = true;
                        while let Some(k2) = c.next_key(first, &mut f.scratch)? {
                            first = false;
                            let v = c.value(&mut f.scratch)?;
                            match v {
                                Val::Object | Val::Array => {
                                    let name = format!("labels.{}", k2.text(line, &f.scratch));
                                    return Err(nested(&name, if matches!(v, Val::Object) { "an object" } else { "an array" }));
                                }
                                v => label(f, k2, v)?,
                            }
                        }
                    }
                    Val::Array => return Err(nested("labels", "an array")),
                    v => label(f, key, v)?,
                },
                Key::Other => match c.value(&mut f.scratch)? {
                    Val::Object => return Err(nested(key.text(line, &f.scratch), "an object")),
                    Val::Array => return Err(nested(key.text(line, &f.scratch), "an array")),
                    v => label(f, key, v)?,
                },
            }
        }
        c.end()?;
        f.finish(line, interner)
    }
}

/// The known fields of a metric line.
enum Key {
    Ts,
    Value,
    Tenant,
    Name,
    Annotations,
    Labels,
    Other,
}

#[inline]
fn label(f: &mut MetricFields, key: Text, v: Val<'_>) -> Result<(), DecodeError> {
    let text = match v {
        Val::Str(t) => t,
        Val::Num(n) => {
            // Numbers keep their JSON text; the number slice lies inside the line.
            let s = f.scratch.len();
            f.scratch.extend_from_slice(n.as_bytes());
            Text::Scratch(s as u32, f.scratch.len() as u32)
        }
        Val::Bool(true) => Text::Bool(true),
        Val::Bool(false) => Text::Bool(false),
        Val::Null => return Ok(()),
        // Callers read objects and arrays themselves; reaching here would be a decoder bug,
        // still reported as a dead letter rather than a panic.
        Val::Object | Val::Array => return Err(nested("(label)", "an object or array")),
    };
    f.labels.push((key, text));
    Ok(())
}

fn nested(field: &str, got: &'static str) -> DecodeError {
    DecodeError::Nested { field: field.to_string(), got }
}

fn wrong(field: &str, expected: &'static str, got: &Val<'_>) -> DecodeError {
    DecodeError::WrongType { field: field.to_string(), expected, got: kind(got) }
}

/// `ts` written as a JSON number: integer milliseconds (an integral float such as
/// `1.7e12` is accepted too).
#[inline]
pub(crate) fn parse_int_time(field: &'static str, n: &str) -> Result<Millis, DecodeError> {
    let b = n.as_bytes();
    if !b.is_empty() && b.len() <= 18 && b.iter().all(|c| c.is_ascii_digit()) {
        let mut v: i64 = 0;
        for &c in b {
            v = v * 10 + (c - b'0') as i64;
        }
        return check_event_time(field, v);
    }
    match n.parse::<f64>() {
        Ok(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => check_event_time(field, f as i64),
        _ => Err(DecodeError::BadTime { field, text: super::clip(n) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(line: &str) -> Result<(Series, Millis, f64), DecodeError> {
        NdjsonMetricDecoder::new().decode(line.as_bytes(), &mut SeriesInterner::new())
    }

    #[test]
    fn the_documented_line() {
        let (s, ts, v) = dec(r#"{"ts":1767225598647,"tenant":"t0","host":"h00000","name":"cpu","value":54.525}"#).unwrap();
        assert_eq!((s.tenant(), s.name(), ts, v), ("t0", "cpu", 1_767_225_598_647, 54.525));
        assert_eq!(s.labels().len(), 1);
        assert_eq!(&**s.label("host").unwrap(), "h00000");
    }

    #[test]
    fn labels_defaults_and_forms() {
        let (s, ts, _) = dec(r#" { "name" : "cpu", "ts":"2026-01-01T00:00:01.5Z", "value": -1e3, "code": 500, "up": true, "gone": null,
                  "labels": {"zone":"a\"b", "k8s": 1.50}, "annotations": {"x": [1, {"y": 2}]}, "esc":"\u00e9\ud83d\ude00" } "#)
        .unwrap();
        assert_eq!(s.tenant(), "default");
        assert_eq!(ts, 1_767_225_601_500);
        let labels: Vec<(&str, &str)> = s.labels().iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(labels, vec![("code", "500"), ("esc", "é😀"), ("k8s", "1.50"), ("up", "true"), ("zone", "a\"b")]);
    }

    #[test]
    fn an_outside_label_fills_in_for_a_missing_one() {
        let mut d = NdjsonMetricDecoder::new();
        let mut i = SeriesInterner::new();
        let line = |s: &str| s.as_bytes().to_vec();
        d.set_outside_label(b"host", Some(b"h1"));
        let (s, ..) = d.decode(&line(r#"{"ts":1,"name":"cpu","value":1,"zone":"a"}"#), &mut i).unwrap();
        assert_eq!((s.label("host").map(|v| &**v), s.label("zone").map(|v| &**v)), (Some("h1"), Some("a")));
        let (s, ..) = d.decode(&line(r#"{"ts":1,"name":"cpu","value":1,"host":"own"}"#), &mut i).unwrap();
        assert_eq!(s.label("host").map(|v| &**v), Some("own"), "the record's own label wins");
        d.set_outside_label(b"host", None);
        let (s, ..) = d.decode(&line(r#"{"ts":1,"name":"cpu","value":1}"#), &mut i).unwrap();
        assert_eq!(s.labels().len(), 0, "no key, no label");
        d.set_outside_label(b"host", Some(b""));
        assert_eq!(d.decode(&line(r#"{"ts":1,"name":"cpu","value":1}"#), &mut i).unwrap().0.labels().len(), 0, "empty key, no label");
        d.set_outside_label(b"host", Some(b"h\xff"));
        let e = d.decode(&line(r#"{"ts":1,"name":"cpu","value":1}"#), &mut i).unwrap_err();
        assert_eq!(e.to_string(), "the message key is not UTF-8 text (invalid at byte 1); `key_label` makes it a label");
    }

    #[test]
    fn bad_lines_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            (r#"{"ts":1,"name":"cpu","value":1"#, "malformed JSON"),
            (r#"{"ts":1,"name":"cpu"}"#, "missing field `value`"),
            (r#"{"ts":1,"name":"cpu","value":"12"}"#, "field `value` must be a number, got a string"),
            (r#"{"ts":"soon","name":"cpu","value":1}"#, "field `ts` is not a time: `soon`"),
            (r#"{"ts":true,"name":"cpu","value":1}"#, "field `ts` must be integer milliseconds"),
            (r#"{"ts":-5,"name":"cpu","value":1}"#, "out of range"),
            (r#"{"ts":1.5,"name":"cpu","value":1}"#, "not a time"),
            (r#"{"ts":1,"name":"cpu","value":1e999}"#, "not finite"),
            (r#"{"ts":1,"name":"cpu","value":NaN}"#, "malformed JSON"),
            (r#"{"ts":1,"name":"cpu","value":1,"x":{"a":1}}"#, "field `x` is an object"),
            (r#"{"ts":1,"name":"cpu","value":1,"x":[1]}"#, "field `x` is an array"),
            (r#"{"ts":1,"name":"cpu","value":1,"x":"a","x":"b"}"#, "field `x` appears twice"),
            (r#"{"ts":1,"name":"cpu","value":1,"value":2}"#, "field `value` appears twice"),
            (r#"{"ts":1,"name":"","value":1}"#, "field `name` is empty"),
            (r#"{"ts":1,"name":"cpu","value":1} x"#, "unexpected text after the object"),
            (r#"[1,2]"#, "expected `{`"),
            (r#"{"ts":1,"name":"cpu","value":1,"":"a"}"#, "empty key"),
        ];
        for (line, want) in cases {
            let e = dec(line).unwrap_err().to_string();
            assert!(e.contains(want), "{line}: got `{e}`, want `{want}`");
        }
        let e = NdjsonMetricDecoder::new().decode(b"{\"ts\":1,\"name\":\"c\xffpu\",\"value\":1}", &mut SeriesInterner::new());
        assert_eq!(e.unwrap_err(), DecodeError::InvalidUtf8(17));
        let many: String = (0..600).map(|i| format!(",\"l{i}\":\"v\"")).collect();
        let e = dec(&format!(r#"{{"ts":1,"name":"cpu","value":1{many}}}"#)).unwrap_err();
        assert_eq!(e, DecodeError::TooManyLabels(600));
    }

    #[test]
    fn decoder_is_reusable_after_errors() {
        let mut d = NdjsonMetricDecoder::new();
        let mut i = SeriesInterner::new();
        assert!(d.decode(br#"{"ts":1,"name":"cpu","value":"x","a":"\n"}"#, &mut i).is_err());
        let (s, _, _) = d.decode(br#"{"ts":1,"name":"cpu","value":2,"b":"q"}"#, &mut i).unwrap();
        assert_eq!(s.labels().len(), 1);
    }
}
