//! Prometheus remote_write 1.0: a protobuf `WriteRequest`, snappy block-compressed.
//!
//! ```text
//! message WriteRequest { repeated TimeSeries timeseries = 1; reserved 2; repeated MetricMetadata metadata = 3; }
//! message TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2;
//!                        repeated Exemplar exemplars = 3; repeated Histogram histograms = 4; }
//! message Label        { string name = 1; string value = 2; }
//! message Sample       { double value = 1; int64 timestamp = 2; }
//! ```
//!
//! Read by hand rather than through generated code: only four small messages matter, every
//! other field (metadata, exemplars, native histograms, fields of later versions) is skipped by
//! its wire type, and the labels are borrowed from the decompressed body and looked up in the
//! series interner, so a series seen before costs no allocation.
//!
//! A request is taken whole or not at all at the **protobuf** level: a body that is not snappy,
//! not protobuf, or truncated is a [`RemoteWriteError`] and yields nothing (Prometheus drops a
//! request answered 400, so half-taking it would make the outcome depend on where the damage
//! was). Within a well-formed request, one **series** or **sample** that is unusable (no
//! `__name__`, a duplicate label, invalid UTF-8, a NaN or infinite value, a time outside
//! 0…9999-12-31) is reported through `bad` and the rest is taken, as Cortex and Mimir do.
//!
//! Mapping: `__name__` is the metric name, every other label a label (a label with an empty
//! value is absent, as in Prometheus). **Stale markers** (the NaN with bits
//! `0x7ff0000000000002` Prometheus writes when a series disappears) are not values: they are
//! counted in [`WriteSummary::stale`] and skipped.

use crate::series::{Series, SeriesInterner};
use crate::time::{MAX_EVENT_TIME, Millis};

use super::MAX_LABELS;

/// The largest compressed body read.
pub const MAX_COMPRESSED_BYTES: usize = 32 << 20;
/// The largest decompressed body read (the snappy header states it before any work is done).
pub const MAX_DECOMPRESSED_BYTES: usize = 128 << 20;
/// The bit pattern of Prometheus's stale marker.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Why a request could not be read at all (answered 400; nothing from it is taken).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RemoteWriteError {
    /// The body is over [`MAX_COMPRESSED_BYTES`], or states a size over [`MAX_DECOMPRESSED_BYTES`].
    #[error("the body is too large: {0} bytes (at most {MAX_COMPRESSED_BYTES} compressed, {MAX_DECOMPRESSED_BYTES} decompressed)")]
    TooLarge(usize),
    /// Not snappy block format.
    #[error("not snappy-compressed (block format): {0}")]
    Snappy(String),
    /// Not a protobuf `WriteRequest`.
    #[error("not a protobuf WriteRequest: {what} at byte {at} of the decompressed body")]
    Protobuf {
        /// Offset in the decompressed body.
        at: usize,
        /// What was wrong.
        what: &'static str,
    },
}

/// One unusable series or sample of a well-formed request.
#[derive(Debug, Clone, PartialEq)]
pub struct BadSeries {
    /// Index of the series in the request (0-based).
    pub index: usize,
    /// What is wrong with it.
    pub reason: String,
    /// The series as text (`name{k="v",…} value @ts`), for the dead letter.
    pub text: String,
    /// The sample's time, when one sample (not the series) is bad.
    pub ts: Option<Millis>,
}

/// What a request held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// Series in the request.
    pub series: usize,
    /// Samples taken.
    pub samples: usize,
    /// Stale markers skipped.
    pub stale: usize,
    /// Series or samples reported bad.
    pub bad: usize,
    /// Native histogram samples skipped (not supported: a metric point is one float).
    pub histograms: usize,
}

/// A byte range of the decompressed body.
type Span = (u32, u32);
/// A label's name and value.
type LabelSpan = (Span, Span);

/// Where one series' parts lie in the decompressed body.
#[derive(Clone, Copy)]
struct SeriesSpan {
    labels: (u32, u32),
    samples: (u32, u32),
    histograms: u32,
}

/// Decodes remote_write requests; one per thread (it keeps buffers and the series interner).
#[derive(Default)]
pub struct RemoteWriteDecoder {
    body: Vec<u8>,
    interner: SeriesInterner,
    series: Vec<SeriesSpan>,
    /// (name, value) byte ranges of every series' labels, in request order.
    labels: Vec<LabelSpan>,
    samples: Vec<(f64, i64)>,
    /// One series' labels while it is checked and sorted.
    scratch: Vec<LabelSpan>,
}

impl RemoteWriteDecoder {
    /// A new decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Series interned so far (they are kept: a remote-write sender repeats its series).
    pub fn interned(&self) -> usize {
        self.interner.len()
    }

    /// Decompresses and decodes `compressed`, calling `sample(series, ts, value)` for every
    /// usable sample and `bad` for every unusable series or sample, all under `tenant`.
    /// Nothing is called when the request is not readable as a whole.
    pub fn decode(
        &mut self,
        compressed: &[u8],
        tenant: &str,
        mut sample: impl FnMut(&Series, Millis, f64),
        mut bad: impl FnMut(BadSeries),
    ) -> Result<WriteSummary, RemoteWriteError> {
        if compressed.len() > MAX_COMPRESSED_BYTES {
            return Err(RemoteWriteError::TooLarge(compressed.len()));
        }
        let n = snap::raw::decompress_len(compressed).map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
        if n > MAX_DECOMPRESSED_BYTES {
            return Err(RemoteWriteError::TooLarge(n));
        }
        self.body.clear();
        self.body.resize(n, 0);
        let got = snap::raw::Decoder::new().decompress(compressed, &mut self.body).map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
        self.body.truncate(got);
        self.parse()?;
        Ok(self.emit(tenant, &mut sample, &mut bad))
    }

    /// Pass 1: the whole request's structure, so that a damaged one yields nothing.
    fn parse(&mut self) -> Result<(), RemoteWriteError> {
        self.series.clear();
        self.labels.clear();
        self.samples.clear();
        let body = &self.body;
        let mut r = Reader { buf: body, at: 0 };
        while !r.done() {
            let (field, wire) = r.key()?;
            if field == 1 && wire == LEN {
                let (a, b) = r.len_delimited()?;
                let mut ts = Reader { buf: &body[..b], at: a };
                let mut span = SeriesSpan { labels: (self.labels.len() as u32, 0), samples: (self.samples.len() as u32, 0), histograms: 0 };
                while !ts.done() {
                    let (f, w) = ts.key()?;
                    match (f, w) {
                        (1, LEN) => {
                            let (la, lb) = ts.len_delimited()?;
                            self.labels.push(label(body, la, lb)?);
                        }
                        (2, LEN) => {
                            let (sa, sb) = ts.len_delimited()?;
                            self.samples.push(sample_of(body, sa, sb)?);
                        }
                        (4, LEN) => {
                            ts.skip(w)?;
                            span.histograms += 1;
                        }
                        _ => ts.skip(w)?,
                    }
                }
                span.labels.1 = self.labels.len() as u32;
                span.samples.1 = self.samples.len() as u32;
                self.series.push(span);
            } else {
                r.skip(wire)?;
            }
        }
        Ok(())
    }

    /// Pass 2: checks each series and hands out its samples.
    fn emit(&mut self, tenant: &str, sample: &mut impl FnMut(&Series, Millis, f64), bad: &mut impl FnMut(BadSeries)) -> WriteSummary {
        let mut sum = WriteSummary { series: self.series.len(), ..Default::default() };
        let body = &self.body[..];
        let get = |(a, b): (u32, u32)| &body[a as usize..b as usize];
        for (index, span) in self.series.iter().enumerate() {
            sum.histograms += span.histograms as usize;
            let samples = &self.samples[span.samples.0 as usize..span.samples.1 as usize];
            let labels = &self.labels[span.labels.0 as usize..span.labels.1 as usize];
            let text = || series_text(body, labels);
            // The name, then the other labels with a value, sorted by name.
            let mut name: Option<&[u8]> = None;
            self.scratch.clear();
            let mut problem: Option<String> = None;
            for &(k, v) in labels {
                let (key, value) = (get(k), get(v));
                if key == b"__name__" {
                    if name.is_some() {
                        problem = Some("label `__name__` is given twice".into());
                    }
                    name = Some(value);
                } else if key.is_empty() {
                    problem = Some("a label has an empty name".into());
                } else if !value.is_empty() {
                    self.scratch.push((k, v));
                }
            }
            if problem.is_none() {
                problem = match name {
                    None => Some("no `__name__` label (the metric name)".into()),
                    Some([]) => Some("label `__name__` is empty".into()),
                    _ if self.scratch.len() > MAX_LABELS => Some(format!("{} labels (at most {MAX_LABELS})", self.scratch.len())),
                    _ => None,
                };
            }
            if problem.is_none() && self.scratch.len() > 1 {
                self.scratch.sort_unstable_by(|a, b| get(a.0).cmp(get(b.0)));
                if let Some(w) = self.scratch.windows(2).find(|w| get(w[0].0) == get(w[1].0)) {
                    problem = Some(format!("label `{}` is given twice", String::from_utf8_lossy(get(w[0].0))));
                }
            }
            let series = match problem {
                Some(reason) => Err(reason),
                None => {
                    let l = &self.scratch;
                    self.interner
                        .intern_bytes(tenant.as_bytes(), name.unwrap_or_default(), l.len(), |i| (get(l[i].0), get(l[i].1)))
                        .ok_or_else(|| "a label name or value is not valid UTF-8".to_string())
                }
            };
            let series = match series {
                Ok(s) => s,
                Err(reason) => {
                    // The series' samples are all lost with it: one dead letter says so.
                    if !samples.is_empty() {
                        sum.bad += 1;
                        bad(BadSeries { index, reason, text: format!("{} ({} samples)", text(), samples.len()), ts: None });
                    }
                    continue;
                }
            };
            for &(value, ts) in samples {
                if value.to_bits() == STALE_NAN_BITS {
                    sum.stale += 1;
                    continue;
                }
                let reason = if !value.is_finite() {
                    format!("value {value} is not a finite number")
                } else if !(0..=MAX_EVENT_TIME).contains(&ts) {
                    format!("timestamp {ts} is outside 1970-01-01…9999-12-31 (milliseconds since the Unix epoch)")
                } else {
                    sum.samples += 1;
                    sample(&series, ts, value);
                    continue;
                };
                sum.bad += 1;
                bad(BadSeries { index, reason, text: format!("{} {value} @{ts}", text()), ts: Some(ts) });
            }
        }
        sum
    }
}

/// A series' labels as `name{k="v",…}` (lossy UTF-8), for dead letters.
fn series_text(body: &[u8], labels: &[LabelSpan]) -> String {
    let get = |(a, b): (u32, u32)| String::from_utf8_lossy(&body[a as usize..b as usize]).into_owned();
    let name = labels.iter().find(|(k, _)| get(*k) == "__name__").map(|(_, v)| get(*v)).unwrap_or_default();
    let rest: Vec<String> =
        labels.iter().filter(|(k, _)| get(*k) != "__name__").map(|(k, v)| format!("{}={:?}", get(*k), get(*v))).collect();
    let mut s = format!("{name}{{{}}}", rest.join(","));
    s.truncate(crate::dead_letter::MAX_RAW_BYTES);
    s
}

/// Wire types.
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// A cursor over one message (`buf[at..]`, the message ending at `buf.len()`).
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.at >= self.buf.len()
    }

    fn err(&self, what: &'static str) -> RemoteWriteError {
        RemoteWriteError::Protobuf { at: self.at, what }
    }

    fn varint(&mut self) -> Result<u64, RemoteWriteError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.at) else { return Err(self.err("truncated varint")) };
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    fn key(&mut self) -> Result<(u64, u8), RemoteWriteError> {
        let k = self.varint()?;
        let (field, wire) = (k >> 3, (k & 7) as u8);
        if field == 0 {
            return Err(self.err("field number 0"));
        }
        Ok((field, wire))
    }

    /// A length-delimited field's byte range.
    fn len_delimited(&mut self) -> Result<(usize, usize), RemoteWriteError> {
        let n = self.varint()?;
        let a = self.at;
        let b = usize::try_from(n).ok().and_then(|n| a.checked_add(n)).filter(|&b| b <= self.buf.len());
        let Some(b) = b else { return Err(self.err("length runs past the end of its message")) };
        self.at = b;
        Ok((a, b))
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], RemoteWriteError> {
        let Some(b) = self.buf.get(self.at..self.at + N) else { return Err(self.err("truncated fixed-width value")) };
        self.at += N;
        Ok(b.try_into().expect("N bytes"))
    }

    fn skip(&mut self, wire: u8) -> Result<(), RemoteWriteError> {
        match wire {
            VARINT => self.varint().map(drop),
            I64 => self.fixed::<8>().map(drop),
            LEN => self.len_delimited().map(drop),
            I32 => self.fixed::<4>().map(drop),
            _ => Err(self.err("unsupported wire type (groups are not used by remote_write)")),
        }
    }
}

/// A `Label` message: (name, value) ranges.
fn label(body: &[u8], a: usize, b: usize) -> Result<LabelSpan, RemoteWriteError> {
    let mut r = Reader { buf: &body[..b], at: a };
    let (mut name, mut value) = ((a as u32, a as u32), (a as u32, a as u32));
    while !r.done() {
        match r.key()? {
            (1, LEN) => {
                let (x, y) = r.len_delimited()?;
                name = (x as u32, y as u32);
            }
            (2, LEN) => {
                let (x, y) = r.len_delimited()?;
                value = (x as u32, y as u32);
            }
            (_, w) => r.skip(w)?,
        }
    }
    Ok((name, value))
}

/// A `Sample` message: (value, timestamp); absent fields are 0 as proto3 says.
fn sample_of(body: &[u8], a: usize, b: usize) -> Result<(f64, i64), RemoteWriteError> {
    let mut r = Reader { buf: &body[..b], at: a };
    let (mut value, mut ts) = (0.0, 0i64);
    while !r.done() {
        match r.key()? {
            (1, I64) => value = f64::from_le_bytes(r.fixed::<8>()?),
            (2, VARINT) => ts = r.varint()? as i64,
            (_, w) => r.skip(w)?,
        }
    }
    Ok((value, ts))
}

/// Writes remote_write requests: for tests, benchmarks and load generators (the encoding
/// Prometheus uses, snappy block format included).
pub mod encode {
    /// One series: labels (`__name__` among them) and samples `(ts, value)`.
    pub struct TimeSeries<'a> {
        /// Label pairs, written in this order.
        pub labels: Vec<(&'a str, &'a str)>,
        /// `(timestamp ms, value)`.
        pub samples: Vec<(i64, f64)>,
    }

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
        varint(out, number << 3 | 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    /// The uncompressed protobuf `WriteRequest`.
    pub fn write_request(series: &[TimeSeries<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut ts, mut part) = (Vec::new(), Vec::new());
        for s in series {
            ts.clear();
            for (k, v) in &s.labels {
                part.clear();
                field(&mut part, 1, k.as_bytes());
                field(&mut part, 2, v.as_bytes());
                field(&mut ts, 1, &part);
            }
            for &(t, v) in &s.samples {
                part.clear();
                part.push(1 << 3 | 1);
                part.extend_from_slice(&v.to_le_bytes());
                varint(&mut part, 2 << 3);
                varint(&mut part, t as u64);
                field(&mut ts, 2, &part);
            }
            field(&mut out, 1, &ts);
        }
        out
    }

    /// `bytes` snappy-compressed (block format), as remote_write sends it.
    pub fn snappy(bytes: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(bytes).expect("snappy compresses any input")
    }

    /// A request body: [`write_request`] compressed.
    pub fn body(series: &[TimeSeries<'_>]) -> Vec<u8> {
        snappy(&write_request(series))
    }
}

#[cfg(test)]
mod tests {
    use super::encode::{TimeSeries, body, snappy, write_request};
    use super::*;

    type Got = (Vec<(String, String, Vec<(String, String)>, i64, f64)>, Vec<BadSeries>);

    fn decode(d: &mut RemoteWriteDecoder, b: &[u8]) -> Result<(Got, WriteSummary), RemoteWriteError> {
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        let sum = d.decode(
            b,
            "acme",
            |s, ts, v| {
                let labels = s.labels().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                ok.push((s.tenant().to_string(), s.name().to_string(), labels, ts, v));
            },
            |b| bad.push(b),
        )?;
        Ok(((ok, bad), sum))
    }

    #[test]
    fn series_and_samples_become_points() {
        let b = body(&[
            TimeSeries {
                labels: vec![("__name__", "up"), ("job", "node"), ("instance", "a:9100")],
                samples: vec![(1000, 1.0), (2000, 0.0)],
            },
            TimeSeries { labels: vec![("zone", ""), ("__name__", "cpu")], samples: vec![(1500, -2.5)] },
        ]);
        let mut d = RemoteWriteDecoder::new();
        let ((ok, bad), sum) = decode(&mut d, &b).unwrap();
        assert!(bad.is_empty());
        assert_eq!(sum, WriteSummary { series: 2, samples: 3, ..Default::default() });
        let labels = vec![("instance".to_string(), "a:9100".to_string()), ("job".to_string(), "node".to_string())];
        assert_eq!(ok[0], ("acme".into(), "up".into(), labels.clone(), 1000, 1.0));
        assert_eq!(ok[1], ("acme".into(), "up".into(), labels, 2000, 0.0));
        assert_eq!(ok[2], ("acme".into(), "cpu".into(), vec![], 1500, -2.5), "an empty label value is no label");
        // The same series again: found in the interner.
        decode(&mut d, &b).unwrap();
        assert_eq!(d.interned(), 2);
    }

    #[test]
    fn stale_markers_are_skipped_and_bad_series_reported_without_losing_the_rest() {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let b = body(&[
            TimeSeries { labels: vec![("__name__", "up")], samples: vec![(1000, 1.0), (2000, stale)] },
            TimeSeries { labels: vec![("job", "x")], samples: vec![(1000, 1.0)] },
            TimeSeries { labels: vec![("__name__", "a"), ("k", "1"), ("k", "2")], samples: vec![(1000, 1.0)] },
            TimeSeries { labels: vec![("__name__", "b")], samples: vec![(1000, f64::NAN), (1001, f64::INFINITY), (-5, 1.0), (1002, 2.0)] },
            TimeSeries { labels: vec![("__name__", "c"), ("", "v")], samples: vec![(1, 1.0)] },
        ]);
        let ((ok, bad), sum) = decode(&mut RemoteWriteDecoder::new(), &b).unwrap();
        assert_eq!(sum, WriteSummary { series: 5, samples: 2, stale: 1, bad: 6, histograms: 0 });
        assert_eq!(ok.iter().map(|o| (o.1.as_str(), o.3)).collect::<Vec<_>>(), vec![("up", 1000), ("b", 1002)]);
        let reasons: Vec<(usize, &str)> = bad.iter().map(|b| (b.index, b.reason.as_str())).collect();
        assert_eq!(reasons[0], (1, "no `__name__` label (the metric name)"));
        assert_eq!(reasons[1], (2, "label `k` is given twice"));
        assert!(reasons[2].1.contains("NaN is not a finite"), "{reasons:?}");
        assert!(reasons[3].1.contains("inf is not a finite"), "{reasons:?}");
        assert!(reasons[4].1.contains("timestamp -5 is outside"), "{reasons:?}");
        assert_eq!(reasons[5], (4, "a label has an empty name"));
        assert_eq!(bad[0].text, r#"{job="x"} (1 samples)"#);
        assert_eq!(bad[4].ts, Some(-5));
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // WriteRequest field 3 (metadata), TimeSeries field 3 (exemplar) and 4 (histogram), a
        // Sample with an unknown varint field 9 and a fixed32 field 10.
        let mut ts = write_request(&[TimeSeries { labels: vec![("__name__", "m")], samples: vec![] }]);
        // Strip the outer key+length to get the TimeSeries message body.
        let inner = ts.split_off(2);
        let mut series = inner;
        series.extend_from_slice(&[3 << 3 | 2, 2, 0x08, 0x01]); // exemplar {1: 1}
        series.extend_from_slice(&[4 << 3 | 2, 0]); // an empty histogram
        let mut sample = vec![1 << 3 | 1];
        sample.extend_from_slice(&7.5f64.to_le_bytes());
        sample.extend_from_slice(&[2 << 3, 0x64, 9 << 3, 0x05, 10 << 3 | 5, 1, 2, 3, 4]);
        series.push(2 << 3 | 2);
        series.push(sample.len() as u8);
        series.extend_from_slice(&sample);
        let mut req = vec![3 << 3 | 2, 3, 0x0a, 0x01, b'x']; // metadata first
        req.push(1 << 3 | 2);
        req.push(series.len() as u8);
        req.extend_from_slice(&series);
        let ((ok, bad), sum) = decode(&mut RemoteWriteDecoder::new(), &snappy(&req)).unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(ok, vec![("acme".into(), "m".into(), vec![], 100, 7.5)]);
        assert_eq!(sum.histograms, 1);
    }

    #[test]
    fn damaged_requests_are_refused_whole() {
        let good = write_request(&[
            TimeSeries { labels: vec![("__name__", "up")], samples: vec![(1000, 1.0)] },
            TimeSeries { labels: vec![("__name__", "up2")], samples: vec![(1000, 1.0)] },
        ]);
        let mut d = RemoteWriteDecoder::new();
        let ((whole, _), _) = decode(&mut d, &snappy(&good)).unwrap();
        assert_eq!(whole.len(), 2);
        let e = decode(&mut d, b"{\"not\": \"snappy\"}").unwrap_err();
        assert!(matches!(e, RemoteWriteError::Snappy(_)), "{e}");
        // Every truncation of a good request is refused unless it ends on a series boundary;
        // then it yields exactly the whole series before the cut, never part of one.
        let mut prefixes = 0;
        for cut in 0..good.len() {
            match decode(&mut d, &snappy(&good[..cut])) {
                Ok(((ok, bad), _)) => {
                    assert!(bad.is_empty());
                    assert_eq!(ok[..], whole[..ok.len()], "cut at {cut}");
                    prefixes += 1;
                }
                Err(e) => assert!(e.to_string().contains("not a protobuf WriteRequest"), "{e}"),
            }
        }
        assert_eq!(prefixes, 2, "only the empty request and the first series alone parse");
        let e = decode(&mut d, &snappy(&good[..good.len() - 1])).unwrap_err().to_string();
        assert!(e.contains("length runs past the end") || e.contains("truncated"), "{e}");
        // A stated size over the limit is refused before decompressing.
        let mut huge = Vec::new();
        let mut n = (MAX_DECOMPRESSED_BYTES + 1) as u64;
        while n >= 0x80 {
            huge.push((n as u8) | 0x80);
            n >>= 7;
        }
        huge.push(n as u8);
        assert!(matches!(decode(&mut d, &huge).unwrap_err(), RemoteWriteError::TooLarge(_)));
    }

    /// A seeded mutation fuzzer over valid requests (bit flips, byte changes, cuts, splices),
    /// both before and after compression: the decoder returns an error or samples, never
    /// panics, and what it returns is consistent with its summary.
    #[test]
    fn mutated_requests_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base = write_request(&[
            TimeSeries {
                labels: vec![("__name__", "http_requests_total"), ("code", "200"), ("job", "api")],
                samples: vec![(1, 1.0), (2, 2.0)],
            },
            TimeSeries { labels: vec![("__name__", "up"), ("job", "node")], samples: vec![(3, f64::from_bits(STALE_NAN_BITS))] },
        ]);
        let mut d = RemoteWriteDecoder::new();
        for round in 0..20_000 {
            let mut m = base.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % m.len().max(1);
                match next() % 4 {
                    0 => m[i] ^= 1 << (next() % 8),
                    1 => m[i] = next() as u8,
                    2 => m.truncate(i),
                    _ => {
                        let j = (next() as usize) % base.len();
                        m.splice(i..i, base[j..].iter().copied().take(7));
                    }
                }
                if m.is_empty() {
                    break;
                }
            }
            let mut compressed = snappy(&m);
            if round % 3 == 0 && !compressed.is_empty() {
                let i = (next() as usize) % compressed.len();
                compressed[i] ^= 1 << (next() % 8);
            }
            let (mut n, mut nbad) = (0, 0);
            if let Ok(sum) = d.decode(&compressed, "t", |_, _, _| n += 1, |_| nbad += 1) {
                assert_eq!((sum.samples, sum.bad), (n, nbad));
            }
        }
    }
}
