//! Alert decoders: NDJSON alerts, Prometheus Alertmanager v2 JSON (an object or an array of
//! objects per line), and CSV alerts under a header.
//!
//! **NDJSON alerts**: `ts` (integer ms or RFC 3339; required), `tenant` (default `default`),
//! `alertname` (required), `severity`, `status` (`firing` | `resolved`, default `firing`),
//! `starts_at`/`startsAt`, `ends_at`/`endsAt`, `generator_url`/`generatorURL`, an
//! `annotations` object, a `labels` object; every other field is a label (numbers and booleans
//! as their JSON text).
//!
//! **Alertmanager** objects: `labels` (with `alertname`), `annotations`, `startsAt`, `endsAt`,
//! `generatorURL`, and optionally `status` (`"firing"`/`"resolved"` as in webhook payloads, or
//! `{"state": …}` as in `GET /api/v2/alerts`), `tenant`, and the time the notice was received
//! (`ts` or `receivedAt`; else `updatedAt`; else `startsAt`). Without an explicit status an
//! alert is resolved when its `endsAt` is at or before that time. Other fields (`fingerprint`,
//! `receivers`, …) are ignored. Go's zero time (`0001-01-01T00:00:00Z`) means "not set".

use std::sync::Arc;

use super::json::{Cursor, Val, kind};
use super::ndjson::parse_int_time;
use super::shape::{Consumed, Key, ShapeCache, TimeField, Times};
use super::{DecodeError, MAX_LABELS, MAX_LINE_BYTES, Text, check_utf8, parse_time_field};
use crate::alert::{Alert, Status};
use crate::labels::{LabelInterner, LabelSet};
use crate::series::DEFAULT_TENANT;
use crate::time::Millis;

#[derive(Default)]
struct Fields {
    tenant: Option<Text>,
    t: Times,
    status: Option<Status>,
    generator_url: Option<Text>,
    labels: Vec<(Text, Text)>,
    annotations: Vec<(Text, Text)>,
    /// The top-level time values and explicit statuses read, in order (see [`ShapeCache`]).
    consumed: Vec<Consumed>,
    scratch: Vec<u8>,
}

impl Fields {
    fn clear(&mut self) {
        *self = Fields {
            labels: std::mem::take(&mut self.labels),
            annotations: std::mem::take(&mut self.annotations),
            consumed: std::mem::take(&mut self.consumed),
            scratch: std::mem::take(&mut self.scratch),
            ..Fields::default()
        };
        self.labels.clear();
        self.annotations.clear();
        self.consumed.clear();
        self.scratch.clear();
    }
}

/// The `mode` bytes of shapes: one cache serves both formats, whose rules differ.
const NDJSON: u8 = 0;
const ALERTMANAGER: u8 = 1;

/// Decodes alerts; one per worker and source.
pub struct AlertDecoder {
    f: Fields,
    /// The event time of a record without one (a Kafka message's timestamp).
    default_ts: Option<Millis>,
    /// The tenant of every alert, whatever the record says (pushed alerts: the caller's).
    forced_tenant: Option<Box<[u8]>>,
    labels: LabelInterner,
    annotations: LabelInterner,
    no_annotations: LabelSet,
    /// Recently decoded lines by their shape: a re-sent notice is decoded from it.
    shapes: ShapeCache,
    /// Shapes read ahead (see [`read_ahead`](Self::read_ahead)), with the partition and
    /// position each was given for: `ahead[turn]` for the next [`ndjson`](Self::ndjson) call,
    /// the other for the call after it. Two slots and a turn rather than a value moved from
    /// one to the other: a key is 280 bytes, and moving it twice per line cost 2 % of the
    /// storm-heavy bench in `memmove`.
    ahead: [Ahead; 2],
    turn: usize,
    /// Lines whose shape came from a slot read ahead (tests check the path is taken).
    #[cfg(test)]
    ahead_used: usize,
}

/// A line's shape read ahead: for the line at `pos` of partition `part`, `len` bytes long
/// (`valid`: the slot holds one).
struct Ahead {
    valid: bool,
    part: u32,
    pos: u64,
    len: usize,
    key: Key,
}

impl Ahead {
    const EMPTY: Ahead = Ahead { valid: false, part: 0, pos: 0, len: 0, key: Key::empty() };

    /// Whether this slot holds the shape of the line at `pos` of `part`, `len` bytes long.
    fn is_for(&self, part: u32, pos: u64, len: usize) -> bool {
        self.valid && (self.part, self.pos, self.len) == (part, pos, len)
    }
}

impl Default for AlertDecoder {
    fn default() -> Self {
        AlertDecoder {
            f: Fields::default(),
            default_ts: None,
            forced_tenant: None,
            labels: LabelInterner::new(),
            annotations: LabelInterner::new(),
            no_annotations: LabelSet::new("", &[]),
            shapes: ShapeCache::default(),
            ahead: [Ahead::EMPTY, Ahead::EMPTY],
            turn: 0,
            #[cfg(test)]
            ahead_used: 0,
        }
    }
}

/// The known keys of an alert object.
enum K {
    Time(TimeField),
    Tenant,
    Url,
    Status,
    Labels,
    Annotations,
    Other,
}

/// Where a flat JSON member goes.
#[derive(Clone, Copy)]
enum Into {
    Labels,
    Annotations,
}

impl AlertDecoder {
    /// A new decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the event time of alerts without one (a Kafka message's timestamp), until changed.
    pub fn set_default_ts(&mut self, ts: Option<Millis>) {
        self.default_ts = ts;
    }

    /// Decodes one NDJSON alert line.
    pub fn ndjson(&mut self, line: &[u8], part: u32, pos: u64) -> Result<Alert, DecodeError> {
        let cur = self.turn;
        self.turn ^= 1;
        start(line)?;
        if self.ahead[cur].is_for(part, pos, line.len()) {
            // Read ahead: decode from the slot, without moving the key out of it.
            self.ahead[cur].valid = false;
            #[cfg(test)]
            {
                self.ahead_used += 1;
            }
            if let Some(a) = shaped(&mut self.shapes, self.default_ts, &self.ahead[cur].key, part, pos, false) {
                #[cfg(test)]
                self.check_shape(&a, |d| d.ndjson_in_full(line, part, pos));
                return Ok(a);
            }
            let a = self.ndjson_in_full(line, part, pos)?;
            self.shapes.remember(&self.ahead[cur].key, &self.f.consumed, &a);
            return Ok(a);
        }
        let key = self.shapes.key(line, NDJSON, &mut self.f.scratch);
        if let Some(a) = self.by_shape(key.as_ref(), part, pos, false) {
            #[cfg(test)]
            self.check_shape(&a, |d| d.ndjson_in_full(line, part, pos));
            return Ok(a);
        }
        let a = self.ndjson_in_full(line, part, pos)?;
        self.remember(key.as_ref(), &a);
        Ok(a)
    }

    /// Reads the shape of `next`, the NDJSON line at `pos` of partition `part`, and starts
    /// bringing its table line into the cache, before the line at hand is decoded. The
    /// [`ndjson`](Self::ndjson) call after the next one, if it is for that partition and
    /// position, takes the shape from here instead of reading the line again.
    ///
    /// The caller promises that the line it will decode at `(part, pos)` is `next`, byte for
    /// byte: the file source calls this with the line its reader will hand over next, and
    /// positions within a partition are never reused.
    ///
    /// Why: a remembered shape's table line (4 MB of table per decoder) was a cache miss on
    /// every re-sent notice, 6 % of all samples of the storm-heavy bench (`perf annotate` of
    /// `by_shape`). Hinted one line early, the miss overlaps with decoding the line before.
    /// The shape is read once either way, so reading ahead costs no more than not.
    pub fn read_ahead(&mut self, next: &[u8], part: u32, pos: u64) {
        let slot = &mut self.ahead[self.turn ^ 1];
        slot.valid = start(next).is_ok() && self.shapes.key_into(next, NDJSON, &mut self.f.scratch, &mut slot.key);
        if slot.valid {
            (slot.part, slot.pos, slot.len) = (part, pos, next.len());
            self.shapes.prefetch(&slot.key);
        }
    }

    /// [`ndjson`](Self::ndjson) without the shape cache.
    fn ndjson_in_full(&mut self, line: &[u8], part: u32, pos: u64) -> Result<Alert, DecodeError> {
        self.f.clear();
        let mut c = Cursor::new(line);
        c.eat(b'{', "expected `{` at the start of a record")?;
        self.object(&mut c, line, false)?;
        c.end()?;
        let ts = self.f.t.event_time(self.default_ts, false)?;
        self.finish(line, ts, part, pos, false)
    }

    /// Decodes one line of Alertmanager JSON (an object or an array of objects) into `out`.
    pub fn alertmanager(&mut self, line: &[u8], part: u32, pos: u64, out: &mut Vec<Alert>) -> Result<(), DecodeError> {
        start(line)?;
        // Only a line of one object is remembered by its shape.
        let single = line.iter().find(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n')) == Some(&b'{');
        let key = if single { self.shapes.key(line, ALERTMANAGER, &mut self.f.scratch) } else { None };
        if let Some(a) = self.by_shape(key.as_ref(), part, pos * 65_536, true) {
            #[cfg(test)]
            self.check_shape(&a, |d| {
                let mut v = Vec::new();
                d.alertmanager_in_full(line, part, pos, &mut v)?;
                v.pop().ok_or(DecodeError::Missing("alert"))
            });
            out.push(a);
            return Ok(());
        }
        let first = out.len();
        self.alertmanager_in_full(line, part, pos, out)?;
        if single && out.len() == first + 1 {
            self.remember(key.as_ref(), &out[first]);
        }
        Ok(())
    }

    /// [`alertmanager`](Self::alertmanager) without the shape cache.
    fn alertmanager_in_full(&mut self, line: &[u8], part: u32, pos: u64, out: &mut Vec<Alert>) -> Result<(), DecodeError> {
        self.each_alert(line, false, |d, index| {
            let ts = d.f.t.event_time(d.default_ts, true)?;
            // Several alerts on one line keep their order: positions 2^16 apart per line.
            out.push(d.finish(line, ts, part, pos * 65_536 + (index as u64).min(65_535), true)?);
            Ok(())
        })
    }

    /// The alert of a line whose shape is remembered, from its time values alone (`None`: not
    /// remembered, or its times say something the full decoding should report).
    #[inline]
    fn by_shape(&mut self, key: Option<&Key>, part: u32, pos: u64, am: bool) -> Option<Alert> {
        shaped(&mut self.shapes, self.default_ts, key?, part, pos, am)
    }

    /// Remembers the alert a line of shape `key` decoded to in full, if the decoding read
    /// exactly the shape's cut-out values as its time fields and status (see [`ShapeCache`]).
    fn remember(&mut self, key: Option<&Key>, a: &Alert) {
        if let Some(key) = key {
            self.shapes.remember(key, &self.f.consumed, a);
        }
    }

    /// Unit tests: a line decoded from its shape decodes to the same alert in full.
    #[cfg(test)]
    fn check_shape(&mut self, a: &Alert, full: impl FnOnce(&mut Self) -> Result<Alert, DecodeError>) {
        let b = full(self).expect("a remembered shape decodes in full");
        assert!(
            a.labels == b.labels
                && a.annotations == b.annotations
                && (a.status, a.starts_at, a.ends_at, a.ts, a.part, a.pos) == (b.status, b.starts_at, b.ends_at, b.ts, b.part, b.pos)
                && a.generator_url == b.generator_url,
            "decoded by shape: {a:?}, in full: {b:?}"
        );
    }

    /// Decodes the body of an Alertmanager `POST /api/v2/alerts`: a JSON array of alerts, each
    /// taking `received` as its event time and `tenant` as its tenant whatever the body says
    /// (a pusher's `startsAt` and `endsAt` stay data: Prometheus re-sends a firing alert with
    /// its original `startsAt` and an `endsAt` in the future, its expiry). A body that is not
    /// a JSON array of objects is an error and leaves nothing in `out`; an alert that fails
    /// validation (no `alertname`, say) goes to `bad` with its index and the others are kept,
    /// as Alertmanager does. Alert `i` has position `pos + i`.
    #[allow(clippy::too_many_arguments)]
    pub fn pushed(
        &mut self,
        body: &[u8],
        tenant: &str,
        received: Millis,
        part: u32,
        pos: u64,
        out: &mut Vec<Alert>,
        bad: &mut Vec<(usize, DecodeError)>,
    ) -> Result<(), DecodeError> {
        let first = out.len();
        check_utf8(body)?;
        if tenant.is_empty() {
            return Err(DecodeError::Empty("tenant"));
        }
        self.forced_tenant = Some(tenant.as_bytes().into());
        let r = self.each_alert(body, true, |d, index| {
            match d.finish(body, received, part, pos + index as u64, true) {
                Ok(a) => out.push(a),
                Err(e) => bad.push((index, e)),
            }
            Ok(())
        });
        self.forced_tenant = None;
        if r.is_err() {
            out.truncate(first);
        }
        r
    }

    /// Walks an alert object, or an array of them (`array_only`: only an array), reading each
    /// object's members and then calling `each(self, index)`. A syntax error anywhere is the
    /// error of the whole text.
    fn each_alert(
        &mut self,
        text: &[u8],
        array_only: bool,
        mut each: impl FnMut(&mut Self, usize) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let mut c = Cursor::new(text);
        c.ws();
        let array = c.peek() == Some(b'[');
        if array {
            c.i += 1;
            c.ws();
            if c.peek() == Some(b']') {
                c.i += 1;
                return Ok(c.end()?);
            }
        } else if array_only {
            return Err(c.err("expected `[`: the body is a JSON array of alerts").into());
        }
        let mut index = 0usize;
        loop {
            self.f.clear();
            c.ws();
            c.eat(b'{', "expected `{` for an alert")?;
            self.object(&mut c, text, true)?;
            each(self, index)?;
            index += 1;
            if !array {
                return Ok(c.end()?);
            }
            c.ws();
            match c.peek() {
                Some(b',') => c.i += 1,
                Some(b']') => {
                    c.i += 1;
                    return Ok(c.end()?);
                }
                _ => return Err(c.err("expected `,` or `]` between alerts").into()),
            }
        }
    }

    /// Reads the members of an alert object (the cursor is after its `{`).
    fn object(&mut self, c: &mut Cursor<'_>, line: &[u8], am: bool) -> Result<(), DecodeError> {
        let mut first = true;
        while let Some(key) = c.next_key(first, &mut self.f.scratch)? {
            first = false;
            // Classify the key first: reading the value may append to the scratch buffer the
            // key lives in (appends never move earlier ranges, so `key` stays valid).
            let k = match key.get(line, &self.f.scratch) {
                b"tenant" => K::Tenant,
                b"generator_url" | b"generatorURL" => K::Url,
                b"status" => K::Status,
                b"labels" => K::Labels,
                b"annotations" => K::Annotations,
                k => TimeField::of_key(k).map_or(K::Other, K::Time),
            };
            let f = &mut self.f;
            match k {
                K::Time(tf) => {
                    c.ws();
                    let start = c.i;
                    let v = time_value(c, line, &mut f.scratch, tf.name())?;
                    f.t.set(tf, v);
                    f.consumed.push(Consumed { start: start as u32, end: c.i as u32, status: None });
                }
                K::Tenant => f.tenant = Some(string_value(c, f, "tenant")?),
                K::Url => f.generator_url = Some(string_value(c, f, "generatorURL")?),
                K::Status => {
                    c.ws();
                    let start = c.i;
                    match c.value(&mut f.scratch)? {
                        Val::Str(t) => {
                            let s = match t.get(line, &f.scratch).to_ascii_lowercase().as_slice() {
                                b"firing" => Status::Firing,
                                b"resolved" => Status::Resolved,
                                _ => {
                                    return Err(DecodeError::WrongType {
                                        field: "status".into(),
                                        expected: "\"firing\" or \"resolved\"",
                                        got: "another string",
                                    });
                                }
                            };
                            f.status = Some(s);
                            f.consumed.push(Consumed { start: start as u32, end: c.i as u32, status: Some(s) });
                        }
                        // `{"state": "active"}` (GET /api/v2/alerts): the time decides, as without.
                        Val::Object => c.skip_value(&mut f.scratch, 0)?,
                        v => {
                            return Err(DecodeError::WrongType {
                                field: "status".into(),
                                expected: "\"firing\" or \"resolved\"",
                                got: kind(&v),
                            });
                        }
                    }
                }
                K::Labels | K::Annotations => {
                    let into = if matches!(k, K::Labels) { Into::Labels } else { Into::Annotations };
                    match c.value(&mut f.scratch)? {
                        Val::Object => {
                            c.i += 1;
                            self.members(c, line, into)?;
                        }
                        v if am => {
                            let field = if matches!(k, K::Labels) { "labels" } else { "annotations" };
                            return Err(DecodeError::WrongType { field: field.into(), expected: "an object", got: kind(&v) });
                        }
                        v => self.push(key, v, Into::Labels, line)?,
                    }
                }
                K::Other if am => c.skip_value(&mut f.scratch, 0)?,
                K::Other => {
                    let v = c.value(&mut f.scratch)?;
                    self.push(key, v, Into::Labels, line)?;
                }
            }
        }
        Ok(())
    }

    /// Reads a flat object of labels or annotations (the cursor is after its `{`).
    fn members(&mut self, c: &mut Cursor<'_>, line: &[u8], into: Into) -> Result<(), DecodeError> {
        let mut first = true;
        while let Some(k) = c.next_key(first, &mut self.f.scratch)? {
            first = false;
            let v = c.value(&mut self.f.scratch)?;
            // A nested value is named by its path (`annotations.summary`), as metric lines do.
            self.push(k, v, into, line).map_err(|e| match e {
                DecodeError::Nested { field, got } => {
                    let outer = if matches!(into, Into::Labels) { "labels" } else { "annotations" };
                    DecodeError::Nested { field: format!("{outer}.{field}"), got }
                }
                e => e,
            })?;
        }
        Ok(())
    }

    fn push(&mut self, key: Text, v: Val<'_>, into: Into, line: &[u8]) -> Result<(), DecodeError> {
        let f = &mut self.f;
        let text = match v {
            Val::Str(t) => t,
            Val::Num(n) => {
                let s = f.scratch.len();
                f.scratch.extend_from_slice(n.as_bytes());
                Text::Scratch(s as u32, f.scratch.len() as u32)
            }
            Val::Bool(b) => Text::Bool(b),
            Val::Null => return Ok(()),
            Val::Object | Val::Array => {
                return Err(DecodeError::Nested {
                    field: key.text(line, &f.scratch).to_string(),
                    got: if matches!(v, Val::Object) { "an object" } else { "an array" },
                });
            }
        };
        match into {
            Into::Labels => f.labels.push((key, text)),
            Into::Annotations => f.annotations.push((key, text)),
        }
        Ok(())
    }

    /// Checks the fields and builds the alert.
    fn finish(&mut self, line: &[u8], ts: Millis, part: u32, pos: u64, am: bool) -> Result<Alert, DecodeError> {
        let f = &mut self.f;
        let scratch = &f.scratch;
        let tenant = match f.tenant {
            _ if self.forced_tenant.is_some() => self.forced_tenant.as_deref().unwrap_or_default(),
            Some(t) if t.get(line, scratch).is_empty() => return Err(DecodeError::Empty("tenant")),
            Some(t) => t.get(line, scratch),
            None => DEFAULT_TENANT.as_bytes(),
        };
        let labels = sorted(&mut f.labels, line, scratch)?;
        match labels.iter().find(|(k, _)| k.get(line, scratch) == b"alertname") {
            None => return Err(DecodeError::Missing("alertname")),
            Some((_, v)) if v.get(line, scratch).is_empty() => return Err(DecodeError::Empty("alertname")),
            Some(_) => {}
        }
        let label_set = self
            .labels
            .intern_bytes(tenant, labels.len(), |i| (labels[i].0.get(line, scratch), labels[i].1.get(line, scratch)))
            .ok_or(DecodeError::InvalidUtf8(0))?;
        let annotations = if f.annotations.is_empty() {
            self.no_annotations.clone()
        } else {
            let a = sorted(&mut f.annotations, line, scratch)?;
            self.annotations
                .intern_bytes(b"", a.len(), |i| (a[i].0.get(line, scratch), a[i].1.get(line, scratch)))
                .ok_or(DecodeError::InvalidUtf8(0))?
        };
        // (A `{"state": …}` object is no explicit status: the time decides, as without.)
        let status = f.t.status(f.status, ts, am);
        let generator_url = match f.generator_url {
            Some(t) if !t.get(line, scratch).is_empty() => Some(Arc::<str>::from(t.text(line, scratch))),
            _ => None,
        };
        Ok(Alert {
            labels: label_set,
            annotations,
            status,
            starts_at: f.t.starts_at.unwrap_or(ts),
            ends_at: f.t.ends_at,
            ts,
            generator_url,
            part,
            pos,
        })
    }
}

/// [`AlertDecoder::by_shape`] on the decoder's parts, so that the key may be borrowed from the
/// decoder too.
#[inline]
fn shaped(shapes: &mut ShapeCache, default_ts: Option<Millis>, key: &Key, part: u32, pos: u64, am: bool) -> Option<Alert> {
    let shape = shapes.get(key)?;
    let t = key.times();
    let ts = t.event_time(default_ts, am).ok()?;
    Some(Alert {
        labels: shape.labels.clone(),
        annotations: shape.annotations.clone(),
        status: t.status(key.status(), ts, am),
        starts_at: t.starts_at.unwrap_or(ts),
        ends_at: t.ends_at,
        ts,
        generator_url: shape.generator_url.cloned(),
        part,
        pos,
    })
}

fn start(line: &[u8]) -> Result<(), DecodeError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(DecodeError::TooLong(line.len()));
    }
    check_utf8(line)
}

/// Sorts labels by key and rejects duplicates, empty keys and too many labels.
fn sorted<'a>(v: &'a mut [(Text, Text)], line: &[u8], scratch: &[u8]) -> Result<&'a [(Text, Text)], DecodeError> {
    if v.len() > MAX_LABELS {
        return Err(DecodeError::TooManyLabels(v.len()));
    }
    v.sort_unstable_by(|a, b| a.0.get(line, scratch).cmp(b.0.get(line, scratch)));
    for w in v.windows(2) {
        if w[0].0.get(line, scratch) == w[1].0.get(line, scratch) {
            return Err(DecodeError::Duplicate(w[0].0.text(line, scratch).to_string()));
        }
    }
    if v.iter().any(|(k, _)| k.get(line, scratch).is_empty()) {
        return Err(DecodeError::EmptyLabelKey);
    }
    Ok(v)
}

fn string_value(c: &mut Cursor<'_>, f: &mut Fields, field: &str) -> Result<Text, DecodeError> {
    match c.value(&mut f.scratch)? {
        Val::Str(t) => Ok(t),
        v => Err(DecodeError::WrongType { field: field.to_string(), expected: "a string", got: kind(&v) }),
    }
}

/// A time field; Go's zero time and `null` mean "not set".
pub(super) fn time_value(
    c: &mut Cursor<'_>,
    line: &[u8],
    scratch: &mut Vec<u8>,
    field: &'static str,
) -> Result<Option<Millis>, DecodeError> {
    match c.value(scratch)? {
        Val::Num(n) => parse_int_time(field, n).map(Some),
        Val::Str(t) => {
            let s = t.text(line, scratch);
            if s.starts_with("0001-01-01") || s.is_empty() {
                return Ok(None);
            }
            parse_time_field(field, s).map(Some)
        }
        Val::Null => Ok(None),
        v => {
            Err(DecodeError::WrongType { field: field.to_string(), expected: "integer milliseconds or an RFC 3339 string", got: kind(&v) })
        }
    }
}

/// The roles of a CSV alert file's columns: `ts` (or `timestamp`), `tenant`, `alertname`,
/// `severity`, `status`, `starts_at`, `ends_at`, `generator_url`, `annotation.<key>` columns
/// as annotations, every other column a label (an empty cell is no label).
#[derive(Clone, Debug)]
pub struct CsvAlertHeader {
    width: usize,
    ts: usize,
    roles: Vec<Role>,
}

#[derive(Clone, Debug)]
enum Role {
    Skip,
    Tenant,
    Status,
    Starts,
    Ends,
    Url,
    Label(Arc<str>),
    Annotation(Arc<str>),
}

impl CsvAlertHeader {
    /// Reads a header line.
    pub fn parse(line: &[u8]) -> Result<CsvAlertHeader, DecodeError> {
        let names = super::csv::header_names(line)?;
        let ts = names
            .iter()
            .position(|n| n == "ts" || n == "timestamp")
            .ok_or_else(|| DecodeError::CsvHeader(format!("no `ts` column (found: {})", names.join(", "))))?;
        if !names.iter().any(|n| n == "alertname") {
            return Err(DecodeError::CsvHeader(format!("no `alertname` column (found: {})", names.join(", "))));
        }
        let roles = names
            .iter()
            .enumerate()
            .map(|(i, n)| match n.as_str() {
                _ if i == ts => Role::Skip,
                "tenant" => Role::Tenant,
                "status" => Role::Status,
                "starts_at" | "startsAt" => Role::Starts,
                "ends_at" | "endsAt" => Role::Ends,
                "generator_url" | "generatorURL" => Role::Url,
                n => match n.strip_prefix("annotation.") {
                    Some(a) => Role::Annotation(a.into()),
                    None => Role::Label(n.into()),
                },
            })
            .collect();
        Ok(CsvAlertHeader { width: names.len(), ts, roles })
    }
}

impl AlertDecoder {
    /// Decodes one CSV data line under `header`.
    pub fn csv(&mut self, header: &CsvAlertHeader, line: &[u8], part: u32, pos: u64) -> Result<Alert, DecodeError> {
        start(line)?;
        self.f.clear();
        let mut cells = Vec::with_capacity(header.width);
        super::csv::split_line(line, &mut self.f.scratch, &mut cells)?;
        if cells.len() != header.width {
            return Err(DecodeError::CsvWidth { got: cells.len(), want: header.width });
        }
        let ts_text = cells[header.ts].text(line, &self.f.scratch);
        if ts_text.trim().is_empty() {
            return Err(DecodeError::Missing("ts"));
        }
        let ts = parse_time_field("ts", ts_text)?;
        for (i, role) in header.roles.iter().enumerate() {
            let c = cells[i];
            let f = &mut self.f;
            // Borrowed from the line (or the unquoting scratch); only label keys are appended
            // to the scratch, after the cell's text has been used.
            let text = c.text(line, &f.scratch);
            if text.is_empty() {
                continue;
            }
            match role {
                Role::Skip => {}
                Role::Tenant => f.tenant = Some(c),
                Role::Status => {
                    f.status = Some(if text.eq_ignore_ascii_case("firing") {
                        Status::Firing
                    } else if text.eq_ignore_ascii_case("resolved") {
                        Status::Resolved
                    } else {
                        return Err(DecodeError::WrongType {
                            field: "status".into(),
                            expected: "\"firing\" or \"resolved\"",
                            got: "another string",
                        });
                    })
                }
                Role::Starts => f.t.starts_at = Some(parse_time_field("starts_at", text)?),
                Role::Ends => f.t.ends_at = Some(parse_time_field("ends_at", text)?),
                Role::Url => f.generator_url = Some(c),
                Role::Label(k) | Role::Annotation(k) => {
                    let s = f.scratch.len();
                    f.scratch.extend_from_slice(k.as_bytes());
                    let key = Text::Scratch(s as u32, f.scratch.len() as u32);
                    if matches!(role, Role::Label(_)) { f.labels.push((key, c)) } else { f.annotations.push((key, c)) }
                }
            }
        }
        self.finish(line, ts, part, pos, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sort_bytewise_whatever_their_prefixes() {
        let keys = ["abcdefghi", "abcdefgh", "a", "abcdefgg", "a\\u0000", "ab", "zz", "é", "abcdefgh\\u0000", "B", "abcdefghh"];
        let mut line = String::from(r#"{"ts":1,"alertname":"X""#);
        for (i, k) in keys.iter().enumerate() {
            line.push_str(&format!(r#","{k}":"{i}""#));
        }
        line.push('}');
        let a = AlertDecoder::new().ndjson(line.as_bytes(), 0, 0).unwrap();
        let got: Vec<&str> = a.labels.labels().iter().map(|(k, _)| &**k).collect();
        let mut want: Vec<String> = keys.iter().map(|k| k.replace("\\u0000", "\0")).collect();
        want.push("alertname".into());
        want.sort();
        assert_eq!(got, want);
        // A duplicate that differs only after eight bytes is still caught; one that differs
        // there is not a duplicate.
        let dup = AlertDecoder::new().ndjson(br#"{"ts":1,"alertname":"X","abcdefghij":"1","abcdefghij":"2"}"#, 0, 0);
        assert!(matches!(dup, Err(DecodeError::Duplicate(ref k)) if k == "abcdefghij"), "{dup:?}");
        assert!(AlertDecoder::new().ndjson(br#"{"ts":1,"alertname":"X","abcdefghij":"1","abcdefghik":"2"}"#, 0, 0).is_ok());
    }

    #[test]
    fn ndjson_alerts() {
        let mut d = AlertDecoder::new();
        let a = d
            .ndjson(br#"{"ts":"2026-01-01T00:00:05Z","tenant":"acme","alertname":"HighCpu","severity":"critical","service":"api","pod":7,"annotations":{"summary":"cpu > 90%"},"generator_url":"http://x"}"#, 1, 2)
            .unwrap();
        assert_eq!((a.tenant(), a.alertname(), a.severity(), a.status), ("acme", "HighCpu", "critical", Status::Firing));
        assert_eq!(a.ts, 1_767_225_605_000);
        assert_eq!(a.starts_at, a.ts);
        assert_eq!(a.labels.to_json(), r#"{"alertname":"HighCpu","pod":"7","service":"api","severity":"critical"}"#);
        assert_eq!(a.annotations.to_json(), r#"{"summary":"cpu > 90%"}"#);
        assert_eq!(a.generator_url.as_deref(), Some("http://x"));
        let b = d.ndjson(br#"{"ts":1767225605000,"alertname":"HighCpu","status":"resolved","labels":{"service":"api"}}"#, 1, 3).unwrap();
        assert_eq!((b.tenant(), b.status, b.severity()), ("default", Status::Resolved, "none"));
        for (line, want) in [
            (r#"{"ts":1,"severity":"x"}"#, "missing field `alertname`"),
            (r#"{"alertname":"A"}"#, "missing field `ts`"),
            (r#"{"ts":1,"alertname":"A","status":"maybe"}"#, "field `status` must be"),
            (r#"{"ts":1,"alertname":"A","x":{"y":1}}"#, "field `x` is an object"),
            (r#"{"ts":1,"alertname":"A","annotations":{"summary":["s"]}}"#, "field `annotations.summary` is an array"),
            (r#"{"ts":1,"alertname":"A","service":"a","labels":{"service":"b"}}"#, "field `service` appears twice"),
            (r#"{"ts":1,"alertname":""}"#, "field `alertname` is empty"),
        ] {
            let e = d.ndjson(line.as_bytes(), 0, 0).unwrap_err().to_string();
            assert!(e.contains(want), "{line}: {e}");
        }
    }

    #[test]
    fn alertmanager_objects_and_arrays() {
        let mut d = AlertDecoder::new();
        let mut out = Vec::new();
        let line = br#"[{"labels":{"alertname":"Down","job":"db"},"annotations":{"summary":"db down"},"startsAt":"2026-01-01T00:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom/graph","receivedAt":"2026-01-01T00:00:30Z"},
                        {"labels":{"alertname":"Down","job":"web"},"startsAt":"2026-01-01T00:00:00Z","endsAt":"2026-01-01T00:01:00Z","updatedAt":"2026-01-01T00:02:00Z","fingerprint":"abc","receivers":[{"name":"x"}],"status":{"state":"active"}}]"#;
        let line: Vec<u8> = line.iter().copied().filter(|&c| c != b'\n').collect();
        d.alertmanager(&line, 3, 10, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].status, out[0].ends_at, out[0].ts, out[0].starts_at),
            (Status::Firing, None, 1_767_225_630_000, 1_767_225_600_000)
        );
        assert_eq!((out[1].status, out[1].ts), (Status::Resolved, 1_767_225_720_000), "endsAt passed: resolved");
        assert_eq!((out[0].pos, out[1].pos), (10 * 65_536, 10 * 65_536 + 1));
        out.clear();
        d.alertmanager(br#"{"labels":{"alertname":"A"},"startsAt":"2026-01-01T00:00:00Z","status":"resolved"}"#, 0, 0, &mut out).unwrap();
        assert_eq!(out[0].status, Status::Resolved);
        for (line, want) in [
            (&br#"{"labels":{"job":"x"},"startsAt":"2026-01-01T00:00:00Z"}"#[..], "missing field `alertname`"),
            (br#"{"labels":{"alertname":"A"}}"#, "missing field `startsAt`"),
            (br#"{"labels":"x","startsAt":1}"#, "field `labels` must be an object"),
            (br#"[{"labels":{"alertname":"A"},"startsAt":1} {"#, "expected `,` or `]`"),
        ] {
            let e = d.alertmanager(line, 0, 0, &mut Vec::new()).unwrap_err().to_string();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(line));
        }
        d.alertmanager(b"[]", 0, 0, &mut out).unwrap();
    }

    #[test]
    fn pushed_alerts_take_the_receive_time_and_the_callers_tenant() {
        let mut d = AlertDecoder::new();
        let (mut out, mut bad) = (Vec::new(), Vec::new());
        let received = 1_767_225_900_000; // 00:05
        // Prometheus re-sends a firing alert with its original startsAt and an endsAt ahead.
        let body = br#"[{"labels":{"alertname":"Down","job":"db"},"startsAt":"2026-01-01T00:00:00Z","endsAt":"2026-01-01T00:09:00Z","tenant":"evil"},
            {"labels":{"job":"no-name"},"startsAt":"2026-01-01T00:00:00Z"},
            {"labels":{"alertname":"Gone"},"startsAt":"2026-01-01T00:00:00Z","endsAt":"2026-01-01T00:04:00Z"}]"#;
        d.pushed(body, "acme", received, 7, 100, &mut out, &mut bad).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(bad.len(), 1);
        assert_eq!((bad[0].0, bad[0].1.to_string()), (1, "missing field `alertname`".to_string()));
        let a = &out[0];
        assert_eq!(
            (a.tenant(), a.ts, a.starts_at, a.ends_at, a.status),
            ("acme", received, 1_767_225_600_000, Some(1_767_226_140_000), Status::Firing)
        );
        assert_eq!((out[1].status, out[1].pos, out[1].part), (Status::Resolved, 102, 7), "endsAt before the receive time: resolved");
        // Not an array, or broken JSON: nothing is kept.
        for body in [&br#"{"labels":{"alertname":"A"}}"#[..], br#"[{"labels":{"alertname":"A"}} {"#, b"", b"[1]"] {
            let mut out = vec![];
            assert!(d.pushed(body, "acme", received, 0, 0, &mut out, &mut bad).is_err(), "{}", String::from_utf8_lossy(body));
            assert!(out.is_empty());
        }
        out.clear();
        d.pushed(b" [ ] ", "acme", received, 0, 0, &mut out, &mut bad).unwrap();
        assert!(out.is_empty());
        // The forced tenant does not leak into later records.
        let mut o = Vec::new();
        d.alertmanager(br#"{"labels":{"alertname":"A"},"startsAt":1,"tenant":"t2"}"#, 0, 0, &mut o).unwrap();
        assert_eq!(o[0].tenant(), "t2");
    }

    /// One decoder over many lines against a fresh decoder (no remembered shapes) per line.
    fn same_as_fresh(d: &mut AlertDecoder, line: &str, am: bool) -> Result<Alert, String> {
        let decode = |d: &mut AlertDecoder| -> Result<Alert, String> {
            if am {
                let mut v = Vec::new();
                d.alertmanager(line.as_bytes(), 1, 9, &mut v).map_err(|e| e.to_string())?;
                Ok(v.remove(0))
            } else {
                d.ndjson(line.as_bytes(), 1, 9).map_err(|e| e.to_string())
            }
        };
        let mut fresh = AlertDecoder::new();
        fresh.set_default_ts(d.default_ts);
        let (a, b) = (decode(d), decode(&mut fresh));
        match (&a, &b) {
            (Ok(a), Ok(b)) => assert!(
                a.labels == b.labels
                    && a.annotations == b.annotations
                    && (a.status, a.starts_at, a.ends_at, a.ts, a.pos) == (b.status, b.starts_at, b.ends_at, b.ts, b.pos)
                    && a.generator_url == b.generator_url,
                "{line}: {a:?} against {b:?}"
            ),
            (Err(x), Err(y)) => assert_eq!(x, y, "{line}"),
            _ => panic!("{line}: {a:?} against {b:?}"),
        }
        a
    }

    #[test]
    fn re_sent_notices_decode_by_their_shape() {
        let mut d = AlertDecoder::new();
        let line = |ts: &str, status: &str| {
            format!(
                r#"{{"ts":{ts},"tenant":"acme","alertname":"Down","status":"{status}","service":"db","annotations":{{"summary":"db: down"}},"generator_url":"http://x:9090/g"}}"#
            )
        };
        let a = same_as_fresh(&mut d, &line("1000", "firing"), false).unwrap();
        assert_eq!(d.shapes.len(), 1, "remembered");
        let b = same_as_fresh(&mut d, &line("31000", "firing"), false).unwrap();
        assert!(LabelSet::ptr_eq(&a.labels, &b.labels));
        assert_eq!(d.shapes.hits, 1, "the re-send was decoded from its shape");
        assert_eq!((b.ts, b.starts_at, b.status), (31_000, 31_000, Status::Firing), "starts_at defaults to this notice's ts");
        // RFC 3339 in the same place, then a time the full decoding rejects, in the same shape.
        let c = same_as_fresh(&mut d, &line(r#""1970-01-01T00:01:01Z""#, "firing"), false).unwrap();
        assert_eq!(c.ts, 61_000);
        for bad in ["-5", "true", r#""soon""#, "{}", "[1]", "99999999999999999999", "1.5"] {
            assert!(same_as_fresh(&mut d, &line(bad, "firing"), false).is_err(), "{bad}");
        }
        // Whatever the full decoding makes of these, the same.
        for odd in ["1e3", "null", r#""""#, r#""0001-01-01T00:00:00Z""#, r#""12""#, "0"] {
            let _ = same_as_fresh(&mut d, &line(odd, "firing"), false);
        }
        let hits = d.shapes.hits;
        let r = same_as_fresh(&mut d, &line("91000", "resolved"), false).unwrap();
        assert_eq!(r.status, Status::Resolved);
        assert_eq!(d.shapes.hits, hits + 1, "the resolved notice is decoded from the firing one's shape");
        assert_eq!(d.shapes.len(), 1, "a string time is the same shape as a number, and a status is cut out too");
        // Without `ts`, a Kafka message's timestamp stands in, message by message.
        let no_ts = r#"{"alertname":"Down","tenant":"acme"}"#;
        d.set_default_ts(Some(5));
        assert_eq!(same_as_fresh(&mut d, no_ts, false).unwrap().ts, 5);
        d.set_default_ts(Some(7));
        assert_eq!(same_as_fresh(&mut d, no_ts, false).unwrap().ts, 7);
        d.set_default_ts(None);
        assert_eq!(same_as_fresh(&mut d, no_ts, false).unwrap_err(), "missing field `ts`");
        // The last of two `ts` members wins, remembered or not.
        for (x, y) in [(1, 5), (2, 7)] {
            assert_eq!(same_as_fresh(&mut d, &format!(r#"{{"ts":{x},"alertname":"A","ts":{y}}}"#), false).unwrap().ts, y);
        }
    }

    /// Lines decoded with their shapes read ahead, as the file source does, decode as they do
    /// without: over a seeded stream of re-sent notices in several shapes, with bad times,
    /// bad lines, and lines read ahead but never decoded (blank lines the source skips).
    #[test]
    fn a_shape_read_ahead_decodes_the_line_as_without() {
        let mut seed = 0x5eed_u64;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let lines: Vec<String> = (0..6_000u64)
            .map(|i| {
                let (alert, ts) = (next(300), 1_000 * i + next(5_000));
                let status = ["firing", "resolved", "FIRING", "firing"][next(4) as usize];
                let ts = match next(50) {
                    0 => r#""soon""#.to_string(),
                    1 => format!(r#""1970-01-01T00:{:02}:00Z""#, next(60)),
                    _ => ts.to_string(),
                };
                match next(40) {
                    0 => "not json".to_string(),
                    1 => String::new(),
                    2 => format!(r#"{{"alertname":"A{alert}","ts":{ts},"status":"{status}","pod":"p{alert}","starts_at":{ts}}}"#),
                    _ => format!(
                        r#"{{"ts":{ts},"tenant":"t{}","alertname":"A{}","status":"{status}","pod":"p{alert}","annotations":{{"summary":"s{}"}}}}"#,
                        alert % 3,
                        alert % 7,
                        alert % 5
                    ),
                }
            })
            .collect();
        let (mut ahead, mut plain) = (AlertDecoder::new(), AlertDecoder::new());
        let mut decoded = 0;
        for (pos, line) in lines.iter().enumerate() {
            let pos = pos as u64;
            if let Some(n) = lines.get(pos as usize + 1) {
                ahead.read_ahead(n.as_bytes(), 0, pos + 1);
            }
            if line.is_empty() {
                continue; // read ahead, never decoded
            }
            decoded += 1;
            let a = ahead.ndjson(line.as_bytes(), 0, pos).map_err(|e| e.to_string());
            let b = plain.ndjson(line.as_bytes(), 0, pos).map_err(|e| e.to_string());
            match (&a, &b) {
                (Ok(a), Ok(b)) => assert!(
                    a.labels == b.labels
                        && a.annotations == b.annotations
                        && (a.status, a.starts_at, a.ends_at, a.ts, a.part, a.pos)
                            == (b.status, b.starts_at, b.ends_at, b.ts, b.part, b.pos),
                    "line {pos} {line}: {a:?} against {b:?}"
                ),
                (Err(x), Err(y)) => assert_eq!(x, y, "line {pos} {line}"),
                _ => panic!("line {pos} {line}: {a:?} against {b:?}"),
            }
        }
        assert_eq!(ahead.shapes.hits, plain.shapes.hits, "the same lines decoded from remembered shapes");
        assert!(ahead.shapes.hits > decoded / 2, "{} of {decoded} lines by shape", ahead.shapes.hits);
        assert!(ahead.ahead_used > decoded * 8 / 10, "{} of {decoded} lines took the shape read ahead", ahead.ahead_used);

        // A shape read ahead serves only the position it was read for, in its partition, at
        // its length: anything else is read again.
        let (x, y) = (r#"{"ts":1,"alertname":"X"}"#, r#"{"ts":2,"alertname":"Y","pod":"q"}"#);
        let mut d = AlertDecoder::new();
        // As the source does: the next line (`x` at position 1) is read ahead, then the line
        // at hand (`y` at 0) decoded; then the line at position 1 comes.
        for (p, pos, line, used) in [(0, 2, x, false), (1, 1, x, false), (0, 1, y, false), (0, 1, x, true)] {
            d.read_ahead(x.as_bytes(), 0, 1);
            assert_eq!(d.ndjson(y.as_bytes(), 0, 0).unwrap().alertname(), "Y");
            let before = d.ahead_used;
            let a = d.ndjson(line.as_bytes(), p, pos).unwrap();
            assert_eq!(a.alertname(), if line == x { "X" } else { "Y" }, "partition {p} position {pos}");
            assert_eq!(d.ahead_used - before, usize::from(used), "partition {p} position {pos} {line}");
        }
    }

    #[test]
    fn the_status_is_cut_out_of_the_shape_only_as_a_plain_status_string() {
        let mut d = AlertDecoder::new();
        let line = |ts: u32, status: &str| format!(r#"{{"ts":{ts},"alertname":"A","status":{status},"pod":"p"}}"#);
        let mut want = Vec::new();
        for (i, status) in [r#""firing""#, r#""resolved""#, r#""FIRING""#, r#""Resolved""#, r#""firing""#].iter().enumerate() {
            want.push(same_as_fresh(&mut d, &line(i as u32, status), false).unwrap().status);
        }
        use Status::{Firing, Resolved};
        assert_eq!(want, [Firing, Resolved, Firing, Resolved, Firing]);
        assert_eq!((d.shapes.len(), d.shapes.hits), (1, 4), "one shape whatever the status says, in any case");
        // Escaped, wrong or not a string: never cut. The escaped one decodes in full (and is
        // not remembered: the scan did not cut what the decoding read as the status); the
        // wrong ones are errors, as a fresh decoder says.
        for round in 0..2 {
            assert_eq!(same_as_fresh(&mut d, &line(9, r#""fir\u0069ng""#), false).unwrap().status, Firing, "{round}");
            for bad in [r#""maybe""#, "1", "true", "[]", r#""firing ""#] {
                assert!(same_as_fresh(&mut d, &line(9, bad), false).is_err(), "{bad}");
            }
        }
        assert_eq!(d.shapes.len(), 1);
        // Two status members: the last wins, remembered or not.
        for ts in 1..4 {
            let two = format!(r#"{{"ts":{ts},"status":"resolved","alertname":"B","status":"firing"}}"#);
            assert_eq!(same_as_fresh(&mut d, &two, false).unwrap().status, Firing);
        }
        // A label or annotation named `status` is no status: such a line is never remembered
        // (its status-like value would be cut, but the decoding does not read it as the status).
        for (ts, s) in [(1, "firing"), (2, "resolved"), (3, "firing")] {
            let l = format!(r#"{{"ts":{ts},"alertname":"C","annotations":{{"status":"{s}"}}}}"#);
            let a = same_as_fresh(&mut d, &l, false).unwrap();
            assert_eq!((a.status, a.annotations.get("status").map(|v| v.to_string())), (Firing, Some(s.to_string())));
        }
        let am =
            |recv: &str, s: &str| format!(r#"{{"labels":{{"alertname":"D","status":"{s}"}},"startsAt":"{recv}","receivedAt":"{recv}"}}"#);
        for (r, s) in [("2026-01-01T00:00:30Z", "firing"), ("2026-01-01T00:01:30Z", "resolved")] {
            let a = same_as_fresh(&mut d, &am(r, s), true).unwrap();
            assert_eq!((a.status, a.labels.get("status").map(|v| v.to_string())), (Firing, Some(s.to_string())));
        }
        assert_eq!(d.shapes.len(), 2, "only the shapes of `A` and `B`");
        // Alertmanager's `{"state": …}` status stays in the shape: the time decides.
        let st = |recv: &str, ends: &str| {
            format!(
                r#"{{"labels":{{"alertname":"E"}},"status":{{"state":"active"}},"startsAt":"{recv}","endsAt":"{ends}","receivedAt":"{recv}"}}"#
            )
        };
        let x = same_as_fresh(&mut d, &st("2026-01-01T00:00:30Z", "2026-01-01T00:04:30Z"), true).unwrap();
        let y = same_as_fresh(&mut d, &st("2026-01-01T00:09:30Z", "2026-01-01T00:04:30Z"), true).unwrap();
        assert_eq!((x.status, y.status, d.shapes.len()), (Firing, Resolved, 3));
    }

    #[test]
    fn look_alike_time_members_are_never_remembered() {
        let mut d = AlertDecoder::new();
        for ts in 1..4 {
            for line in [
                // A label named `ts` beside the real one, and one under `labels`.
                format!(r#"{{"labels":{{"ts":"{ts}"}},"ts":{ts},"alertname":"A"}}"#),
                // Space before the colon: the scan does not see this member.
                format!(r#"{{"ts" :{ts},"alertname":"A"}}"#),
                // An escaped key that decodes to `ts`.
                format!(r#"{{"t\u0073":{ts},"alertname":"A"}}"#),
            ] {
                let a = same_as_fresh(&mut d, &line, false).unwrap();
                assert_eq!(a.ts, ts, "{line}");
                assert_eq!(d.shapes.len(), 0, "{line}");
            }
        }
        assert_eq!(d.shapes.len(), 0);
        // `"ts":` inside a string, behind escaped quotes, is part of the shape: remembered,
        // and the string comes out as it was.
        for ts in 1..4 {
            let a = same_as_fresh(&mut d, &format!(r#"{{"ts":{ts},"alertname":"A","summary":"x \"ts\":{ts}"}}"#), false).unwrap();
            assert_eq!((a.ts, a.labels.get("summary").map(|s| s.to_string())), (ts, Some(format!(r#"x "ts":{ts}"#))));
        }
        assert_eq!(d.shapes.len(), 3, "the string differs: three shapes");
        // Nested `ts` under annotations that changes: each line its own alert.
        let x = same_as_fresh(&mut d, r#"{"ts":1,"alertname":"A","annotations":{"ts":"one"}}"#, false).unwrap();
        let y = same_as_fresh(&mut d, r#"{"ts":1,"alertname":"A","annotations":{"ts":"two"}}"#, false).unwrap();
        assert_ne!(x.annotations, y.annotations);
    }

    #[test]
    fn alertmanager_re_sends_resolve_by_their_moving_ends_at() {
        let mut d = AlertDecoder::new();
        // Prometheus re-sends with the same startsAt and an endsAt moved ahead; the last
        // notice's endsAt has passed at its receive time: resolved, from the same shape.
        let line = |recv: &str, ends: &str| {
            format!(
                r#"{{"labels":{{"alertname":"Down","job":"db"}},"startsAt":"2026-01-01T00:00:00Z","endsAt":"{ends}","receivedAt":"{recv}"}}"#
            )
        };
        let a = same_as_fresh(&mut d, &line("2026-01-01T00:00:30Z", "2026-01-01T00:04:30Z"), true).unwrap();
        let b = same_as_fresh(&mut d, &line("2026-01-01T00:01:30Z", "2026-01-01T00:05:30Z"), true).unwrap();
        let c = same_as_fresh(&mut d, &line("2026-01-01T00:09:00Z", "2026-01-01T00:05:30Z"), true).unwrap();
        let z = same_as_fresh(&mut d, &line("2026-01-01T00:09:30Z", "0001-01-01T00:00:00Z"), true).unwrap();
        assert_eq!((d.shapes.len(), d.shapes.hits), (1, 3), "one shape, the three re-sends decoded from it");
        assert_eq!((a.status, b.status, c.status, z.status), (Status::Firing, Status::Firing, Status::Resolved, Status::Firing));
        assert_eq!((a.starts_at, b.ends_at, z.ends_at), (1_767_225_600_000, Some(1_767_225_930_000), None));
        assert_eq!(b.pos, 9 * 65_536);
        // Arrays are decoded in full every time, and an NDJSON line of the same bytes is
        // another format: not confused.
        let arr = format!("[{}]", line("2026-01-01T00:00:30Z", "2026-01-01T00:04:30Z"));
        let mut out = Vec::new();
        d.alertmanager(arr.as_bytes(), 0, 1, &mut out).unwrap();
        assert_eq!(d.shapes.len(), 1);
        let e = same_as_fresh(&mut d, &line("2026-01-01T00:00:30Z", "2026-01-01T00:04:30Z"), false).unwrap_err();
        assert_eq!(e, "missing field `ts`", "as NDJSON, the same bytes lack `ts`");
    }

    #[test]
    fn the_shape_table_grows_only_while_it_serves_lines() {
        let mut d = AlertDecoder::new();
        let line = |i: u32, ts: u32| format!(r#"{{"ts":{ts},"alertname":"A","pod":"p{i}"}}"#);
        // Every alert new: the table stays at its first size.
        for i in 0..5_000 {
            d.ndjson(line(i, i).as_bytes(), 0, 0).unwrap();
        }
        assert_eq!(d.shapes.capacity(), 1 << 10);
        assert_eq!(d.shapes.hits, 0);
        // 3,000 alerts re-sent in turn: it grows until they fit, then serves them.
        let mut d = AlertDecoder::new();
        for round in 0..4 {
            for i in 0..3_000 {
                let a = d.ndjson(line(i, round * 30_000 + i).as_bytes(), 0, 0).unwrap();
                assert_eq!(a.labels.get("pod").map(|p| &**p), Some(&*format!("p{i}")));
            }
        }
        assert!(d.shapes.capacity() >= 4_096, "{}", d.shapes.capacity());
        assert!(d.shapes.len() >= 2_900, "{}", d.shapes.len());
        // Once it fits, a round is decoded from remembered shapes, nearly all of it.
        let (hits, capacity) = (d.shapes.hits, d.shapes.capacity());
        for i in 0..3_000 {
            d.ndjson(line(i, 200_000 + i).as_bytes(), 0, 0).unwrap();
        }
        assert!(d.shapes.hits - hits >= 2_900, "{} of 3,000 lines decoded by shape", d.shapes.hits - hits);
        assert_eq!(d.shapes.capacity(), capacity, "no growth once it fits");
    }

    #[test]
    fn csv_alerts() {
        let h = CsvAlertHeader::parse(b"ts,tenant,alertname,severity,service,status,annotation.summary").unwrap();
        let mut d = AlertDecoder::new();
        let a = d.csv(&h, b"2026-01-01T00:00:05Z,acme,HighCpu,critical,\"api,v2\",firing,cpu hot", 0, 1).unwrap();
        assert_eq!(
            (a.tenant(), a.alertname(), a.severity(), a.status, a.ts),
            ("acme", "HighCpu", "critical", Status::Firing, 1_767_225_605_000)
        );
        assert_eq!(a.labels.to_json(), r#"{"alertname":"HighCpu","service":"api,v2","severity":"critical"}"#);
        assert_eq!(a.annotations.to_json(), r#"{"summary":"cpu hot"}"#);
        let b = d.csv(&h, b"1767225605000,,HighCpu,,,resolved,", 0, 2).unwrap();
        assert_eq!((b.tenant(), b.status, b.severity()), ("default", Status::Resolved, "none"));
        for (line, want) in [
            (&b"1,t,A,x,y,maybe,"[..], "field `status` must be"),
            (b"1,t,A", "the header has 7"),
            (b",t,A,x,y,firing,", "missing field `ts`"),
            (b"1,t,,x,y,firing,", "alertname"),
        ] {
            let e = d.csv(&h, line, 0, 0).unwrap_err().to_string();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(line));
        }
        assert!(CsvAlertHeader::parse(b"ts,name").unwrap_err().to_string().contains("no `alertname` column"));
        assert!(CsvAlertHeader::parse(b"alertname,x").unwrap_err().to_string().contains("no `ts` column"));
    }
}
