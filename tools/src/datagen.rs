//! Deterministic generators of test data.
//!
//! [`generate_metrics`] writes metric points as NDJSON, one object per line, in this exact
//! form (key order fixed, no spaces):
//!
//! ```text
//! {"ts":1767225598647,"tenant":"t0","host":"h00000","name":"cpu","value":54.525}
//! ```
//!
//! - Series `i` (0-based) has tenant `t{i % tenants}`, host `h{i:05}` and name
//!   `["cpu", "mem", "disk", "net"][i % 4]`, and reports once every `interval_ms`.
//! - Round `r` holds one point of every series; the nominal time of series `i` in round `r`
//!   is `start_ms + r * interval_ms + offset_i`, with a fixed per-series `offset_i` in
//!   `[0, interval_ms)`. Within a round, lines are written in nominal-time order (then series
//!   index), so the file is sorted by nominal time.
//! - The written `ts` is the nominal time plus a uniform random disorder in
//!   `[-disorder_ms, +disorder_ms]`: event time versus file order is out of order by at most
//!   `2 * disorder_ms` (for any two lines, the earlier one's `ts` exceeds the later one's by at
//!   most that).
//! - `value` has exactly three decimals: a per-series base level, plus a daily sinusoid (of the
//!   nominal time, so series peak at different hours), plus noise, clamped to `[0, 100]`.
//! - With an [`Incident`], the first `hosts` cpu series of tenant `t0` (series indexes that
//!   are multiples of 4 and of `tenants`) read `96 + 1.5·z` (z the same approximately normal
//!   noise, clamped to 100) while their nominal time is in `[start_ms + at, start_ms + at +
//!   duration)`: an injected incident for rules and detectors to find.
//! - `points` good lines are written in all; `malformed` extra bad lines are inserted at
//!   pseudo-random positions, cycling over [`MALFORMED_KINDS`], and reported with their
//!   1-based line numbers in [`GenReport::malformed`].
//!
//! The same configuration (seed included) always gives byte-identical output. The good lines
//! do not depend on `malformed`: bad lines are drawn from a separate random stream, so adding
//! them only inserts lines.

use std::io::{self, Write};

/// The metric names, by `series % 4`.
pub const METRIC_NAMES: [&str; 4] = ["cpu", "mem", "disk", "net"];

/// The kinds of malformed lines, in the order they cycle through the file.
///
/// - `bad_json`: a good line cut short (a truncated object),
/// - `missing_value`: a complete object without `value`,
/// - `value_string`: `"value":"54.5"` (a string, not a number),
/// - `ts_not_time`: `"ts":"yesterday"`,
/// - `invalid_utf8`: the bytes `0xC3 0x28` inside the `host` string.
pub const MALFORMED_KINDS: [&str; 5] = ["bad_json", "missing_value", "value_string", "ts_not_time", "invalid_utf8"];

/// Configuration of [`generate_metrics`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsGen {
    /// Number of series (distinct hosts), at least 1.
    pub series: usize,
    /// Total number of good points (lines) to write.
    pub points: u64,
    /// Seed of the random streams: the same seed gives the same bytes.
    pub seed: u64,
    /// Each `ts` is moved by a uniform random amount in `[-disorder_ms, +disorder_ms]`.
    pub disorder_ms: u64,
    /// Reporting interval of every series, at least 1 (default 10 s).
    pub interval_ms: u64,
    /// Number of tenants `t0`, `t1`, …, at least 1 (default 4).
    pub tenants: usize,
    /// Start of round 0 (default 2026-01-01T00:00:00Z).
    pub start_ms: i64,
    /// Number of extra malformed lines inserted among the good ones (default 0).
    pub malformed: u64,
    /// An injected incident (none by default).
    pub incident: Option<Incident>,
}

/// A stretch of time in which some cpu series run hot (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incident {
    /// Start, relative to `start_ms`.
    pub at_ms: i64,
    /// Length.
    pub duration_ms: i64,
    /// How many cpu series of tenant `t0` run hot.
    pub hosts: usize,
}

impl Default for MetricsGen {
    fn default() -> Self {
        MetricsGen {
            series: 10_000,
            points: 2_000_000,
            seed: 1,
            disorder_ms: 2_000,
            interval_ms: 10_000,
            tenants: 4,
            start_ms: 1_767_225_600_000,
            malformed: 0,
            incident: None,
        }
    }
}

/// What [`generate_metrics`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenReport {
    /// Lines written (good + malformed); every line ends with `\n`.
    pub lines: u64,
    /// Good points written (= `points`).
    pub good: u64,
    /// The malformed lines, in file order.
    pub malformed: Vec<Malformed>,
}

/// One malformed line of a generated file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    /// 1-based line number in the file.
    pub line: u64,
    /// One of [`MALFORMED_KINDS`].
    pub kind: &'static str,
}

/// Writes `cfg.points` metric points (plus `cfg.malformed` bad lines) as NDJSON to `out`.
///
/// Output is buffered internally in 1 MiB chunks: no need to wrap `out` in a `BufWriter`.
/// `out` is flushed at the end. Fails with `InvalidInput` when `series`, `tenants` or
/// `interval_ms` is 0 (and points are asked for), or when a time would overflow.
pub fn generate_metrics(cfg: &MetricsGen, mut out: impl Write) -> io::Result<GenReport> {
    let invalid = |msg: &str| io::Error::new(io::ErrorKind::InvalidInput, msg.to_string());
    let mut report = GenReport::default();
    if cfg.points == 0 && cfg.malformed == 0 {
        out.flush()?;
        return Ok(report);
    }
    if cfg.series == 0 {
        return Err(invalid("series must be at least 1"));
    }
    if cfg.tenants == 0 {
        return Err(invalid("tenants must be at least 1"));
    }
    if cfg.interval_ms == 0 {
        return Err(invalid("interval must be at least 1 ms"));
    }
    let interval = i64::try_from(cfg.interval_ms).map_err(|_| invalid("interval is too large"))?;
    let disorder = i64::try_from(cfg.disorder_ms).ok().filter(|d| *d < i64::MAX / 4).ok_or_else(|| invalid("disorder is too large"))?;
    let rounds = cfg.points.div_ceil(cfg.series as u64).max(1);
    // The largest and smallest times written must fit: checked once here, so the loop can use
    // plain arithmetic.
    let last = i64::try_from(rounds)
        .ok()
        .and_then(|r| r.checked_mul(interval))
        .and_then(|t| t.checked_add(cfg.start_ms))
        .and_then(|t| t.checked_add(interval))
        .and_then(|t| t.checked_add(disorder));
    if last.is_none() || cfg.start_ms.checked_sub(disorder).is_none() {
        return Err(invalid("the time range overflows"));
    }

    let mut seeder = SplitMix64(cfg.seed);
    let series = make_series(cfg, &mut seeder);
    // The hot series and the nominal-time span of the incident.
    let step = 4 * cfg.tenants / gcd(4, cfg.tenants);
    let (heated, hot_span): (Vec<bool>, std::ops::Range<i64>) = match cfg.incident {
        Some(inc) => (
            (0..cfg.series).map(|i| i % step == 0 && i / step < inc.hosts).collect(),
            cfg.start_ms.saturating_add(inc.at_ms)..cfg.start_ms.saturating_add(inc.at_ms).saturating_add(inc.duration_ms),
        ),
        None => (Vec::new(), 0..0),
    };
    // Series in nominal-time order within a round.
    let mut order: Vec<u32> = (0..cfg.series as u32).collect();
    order.sort_by_key(|&i| (series[i as usize].offset, i));

    let mut rng = Xoshiro256::new(&mut seeder);
    let mut bad_rng = Xoshiro256::new(&mut seeder);
    // Insertion points of the malformed lines: before good point `g` (0-based; `points` =
    // after the last one), sorted; several may share a point.
    let mut bad_at: Vec<u64> = (0..cfg.malformed).map(|_| bad_rng.below(cfg.points + 1)).collect();
    bad_at.sort_unstable();
    let mut next_bad = 0usize;

    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + 1024);
    let mut emitted: u64 = 0;
    let mut line_no: u64 = 0;
    let mut round_start = cfg.start_ms;
    'rounds: loop {
        for &i in &order {
            let s = &series[i as usize];
            let nominal = round_start + s.offset;
            while next_bad < bad_at.len() && bad_at[next_bad] == emitted {
                let kind = MALFORMED_KINDS[next_bad % MALFORMED_KINDS.len()];
                line_no += 1;
                write_malformed(&mut buf, kind, cfg, &mut bad_rng, nominal, &series);
                report.malformed.push(Malformed { line: line_no, kind });
                next_bad += 1;
            }
            if emitted == cfg.points {
                break 'rounds;
            }
            let jitter = rng.next_u64();
            let noise = rng.next_u64();
            let ts = nominal + (below(jitter, 2 * disorder as u64 + 1) as i64 - disorder);
            // The nominal time's phase within its UTC day, in [0, 1).
            let day_frac = nominal.rem_euclid(DAY_MS) as f64 * (1.0 / DAY_MS as f64);
            let value = if hot_span.contains(&nominal) && heated[i as usize] { hot(noise) } else { s.value(day_frac, noise) };
            write_good(&mut buf, ts, i as usize, cfg.tenants, value);
            line_no += 1;
            emitted += 1;
            if buf.len() >= CHUNK {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
        round_start += interval;
        if emitted == cfg.points && next_bad == bad_at.len() {
            break;
        }
    }
    out.write_all(&buf)?;
    out.flush()?;
    report.lines = line_no;
    report.good = emitted;
    Ok(report)
}

const CHUNK: usize = 1 << 20;
const DAY_MS: i64 = 86_400_000;

/// The fixed parameters of one series.
struct SeriesParams {
    /// Offset of its reports within an interval, in `[0, interval)`.
    offset: i64,
    /// Mean level.
    base: f64,
    /// Amplitude of the daily sinusoid.
    amp: f64,
    /// Phase of the daily sinusoid, in turns.
    phase: f64,
    /// Standard deviation of the noise.
    noise: f64,
}

impl SeriesParams {
    /// The value at `day_frac` (the nominal time's fraction of its UTC day) with noise drawn
    /// from `r`, clamped to `[0, 100]`.
    #[inline]
    fn value(&self, day_frac: f64, r: u64) -> f64 {
        let v = self.base + self.amp * (std::f64::consts::TAU * (day_frac + self.phase)).sin() + self.noise * normal(r);
        v.clamp(0.0, 100.0)
    }
}

/// A hot series' value during an injected incident.
#[inline]
fn hot(r: u64) -> f64 {
    (96.0 + 1.5 * normal(r)).clamp(0.0, 100.0)
}

/// Approximately standard normal from 64 random bits: the sum of four uniforms, scaled to unit
/// variance.
#[inline]
fn normal(r: u64) -> f64 {
    let u = (r & 0xFFFF) + ((r >> 16) & 0xFFFF) + ((r >> 32) & 0xFFFF) + (r >> 48);
    (u as f64 * (1.0 / 65536.0) - 2.0) * 1.732_050_807_568_877_2
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn make_series(cfg: &MetricsGen, seeder: &mut SplitMix64) -> Vec<SeriesParams> {
    let mut r = Xoshiro256::new(seeder);
    (0..cfg.series)
        .map(|i| {
            let offset = r.below(cfg.interval_ms) as i64;
            let mut u = || r.unit();
            // (base range, amplitude range, noise range) per metric name.
            let ((b0, b1), (a0, a1), (n0, n1)) = match i % 4 {
                0 => ((10.0, 70.0), (5.0, 20.0), (1.0, 5.0)), // cpu: busy, daily load curve
                1 => ((30.0, 85.0), (1.0, 6.0), (0.2, 1.5)),  // mem: high and steady
                2 => ((20.0, 90.0), (0.0, 1.0), (0.05, 0.3)), // disk: nearly flat
                _ => ((5.0, 50.0), (5.0, 25.0), (2.0, 8.0)),  // net: bursty
            };
            let base = b0 + (b1 - b0) * u();
            let amp = a0 + (a1 - a0) * u();
            let noise = n0 + (n1 - n0) * u();
            let phase = u();
            SeriesParams { offset, base, amp, phase, noise }
        })
        .collect()
}

/// Appends one good line.
#[inline]
fn write_good(buf: &mut Vec<u8>, ts: i64, series: usize, tenants: usize, value: f64) {
    buf.extend_from_slice(b"{\"ts\":");
    push_i64(buf, ts);
    push_labels(buf, series, tenants, b"");
    buf.extend_from_slice(b",\"value\":");
    push_milli(buf, value);
    buf.extend_from_slice(b"}\n");
}

/// Appends `,"tenant":"t…","host":"h…<host_suffix>","name":"…"`.
#[inline]
fn push_labels(buf: &mut Vec<u8>, series: usize, tenants: usize, host_suffix: &[u8]) {
    buf.extend_from_slice(b",\"tenant\":\"t");
    push_u64(buf, (series % tenants) as u64, 1);
    buf.extend_from_slice(b"\",\"host\":\"h");
    push_u64(buf, series as u64, 5);
    buf.extend_from_slice(host_suffix);
    buf.extend_from_slice(b"\",\"name\":\"");
    buf.extend_from_slice(METRIC_NAMES[series % 4].as_bytes());
    buf.push(b'"');
}

/// Appends one malformed line of `kind`, for a random series near nominal time `nominal`.
fn write_malformed(buf: &mut Vec<u8>, kind: &str, cfg: &MetricsGen, r: &mut Xoshiro256, nominal: i64, series: &[SeriesParams]) {
    let i = r.below(cfg.series as u64) as usize;
    let ts = nominal;
    let value = series[i].value(r.unit(), r.next_u64());
    match kind {
        "bad_json" => {
            // A good line cut short, keeping at least `{` and dropping at least the final `}`.
            let start = buf.len();
            write_good(buf, ts, i, cfg.tenants, value);
            let full = buf.len() - start - 1; // without the newline
            let keep = 1 + r.below(full as u64 - 1) as usize;
            buf.truncate(start + keep);
            buf.push(b'\n');
        }
        "missing_value" => {
            buf.extend_from_slice(b"{\"ts\":");
            push_i64(buf, ts);
            push_labels(buf, i, cfg.tenants, b"");
            buf.extend_from_slice(b"}\n");
        }
        "value_string" => {
            buf.extend_from_slice(b"{\"ts\":");
            push_i64(buf, ts);
            push_labels(buf, i, cfg.tenants, b"");
            buf.extend_from_slice(b",\"value\":\"");
            push_milli(buf, value);
            buf.extend_from_slice(b"\"}\n");
        }
        "ts_not_time" => {
            buf.extend_from_slice(b"{\"ts\":\"yesterday\"");
            push_labels(buf, i, cfg.tenants, b"");
            buf.extend_from_slice(b",\"value\":");
            push_milli(buf, value);
            buf.extend_from_slice(b"}\n");
        }
        "invalid_utf8" => {
            buf.extend_from_slice(b"{\"ts\":");
            push_i64(buf, ts);
            push_labels(buf, i, cfg.tenants, b"\xC3\x28");
            buf.extend_from_slice(b",\"value\":");
            push_milli(buf, value);
            buf.extend_from_slice(b"}\n");
        }
        other => unreachable!("unknown malformed kind {other}"),
    }
}

const DIGITS2: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends `v` in decimal, zero-padded to at least `min_width` digits (≤ 20).
#[inline]
fn push_u64(buf: &mut Vec<u8>, mut v: u64, min_width: usize) {
    let mut tmp = [b'0'; 20];
    let mut pos = 20;
    while v >= 100 {
        let d = (v % 100) as usize * 2;
        v /= 100;
        pos -= 2;
        tmp[pos..pos + 2].copy_from_slice(&DIGITS2[d..d + 2]);
    }
    if v >= 10 {
        let d = v as usize * 2;
        pos -= 2;
        tmp[pos..pos + 2].copy_from_slice(&DIGITS2[d..d + 2]);
    } else {
        pos -= 1;
        tmp[pos] = b'0' + v as u8;
    }
    // `tmp` is pre-filled with '0': padding is just starting earlier.
    let start = pos.min(20 - min_width.min(20));
    buf.extend_from_slice(&tmp[start..]);
}

#[inline]
fn push_i64(buf: &mut Vec<u8>, v: i64) {
    if v < 0 {
        buf.push(b'-');
    }
    push_u64(buf, v.unsigned_abs(), 1);
}

/// Appends `v` rounded to three decimals as `<int>.<3 digits>` (a `-` when negative).
#[inline]
fn push_milli(buf: &mut Vec<u8>, v: f64) {
    let m = (v * 1000.0).round() as i64;
    if m < 0 {
        buf.push(b'-');
    }
    let m = m.unsigned_abs();
    push_u64(buf, m / 1000, 1);
    buf.push(b'.');
    push_u64(buf, m % 1000, 3);
}

/// `r` mapped to `[0, n)` (Lemire's multiply-shift; `n` > 0).
#[inline]
fn below(r: u64, n: u64) -> u64 {
    ((r as u128 * n as u128) >> 64) as u64
}

/// SplitMix64: seeds the other generators.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// xoshiro256**: the data streams.
pub(crate) struct Xoshiro256([u64; 4]);

impl Xoshiro256 {
    pub(crate) fn new(seeder: &mut SplitMix64) -> Self {
        Xoshiro256([seeder.next_u64(), seeder.next_u64(), seeder.next_u64(), seeder.next_u64()])
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, n)`; `n` > 0.
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        below(self.next_u64(), n)
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(cfg: &MetricsGen) -> (Vec<u8>, GenReport) {
        let mut out = Vec::new();
        let report = generate_metrics(cfg, &mut out).unwrap();
        (out, report)
    }

    fn small() -> MetricsGen {
        MetricsGen { series: 97, points: 10_000, seed: 7, ..MetricsGen::default() }
    }

    fn lines(bytes: &[u8]) -> Vec<&[u8]> {
        assert_eq!(bytes.last(), Some(&b'\n'), "the file ends with a newline");
        bytes[..bytes.len() - 1].split(|&b| b == b'\n').collect()
    }

    const KEYS: [&str; 5] = ["ts", "tenant", "host", "name", "value"];

    /// Parses a good line, checking its keys (in order) and its exact layout.
    fn parse_good(line: &[u8]) -> (i64, String, String, String, f64) {
        let text = std::str::from_utf8(line).expect("good lines are UTF-8");
        let v: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let obj = v.as_object().expect("an object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = KEYS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want, "{text}");
        let ts = obj["ts"].as_i64().expect("integer ts");
        let tenant = obj["tenant"].as_str().unwrap().to_string();
        let host = obj["host"].as_str().unwrap().to_string();
        let name = obj["name"].as_str().unwrap().to_string();
        let value = obj["value"].as_f64().expect("numeric value");
        // The exact layout: key order, no spaces, three decimals.
        let vtext = text.rsplit_once("\"value\":").unwrap().1.strip_suffix('}').unwrap();
        let expect = format!(r#"{{"ts":{ts},"tenant":"{tenant}","host":"{host}","name":"{name}","value":{vtext}}}"#);
        assert_eq!(text, expect);
        let (_, frac) = vtext.split_once('.').expect("a decimal point");
        assert_eq!(frac.len(), 3, "{text}");
        assert!(frac.bytes().all(|b| b.is_ascii_digit()), "{text}");
        (ts, tenant, host, name, value)
    }

    #[test]
    fn the_documented_line_shape() {
        let cfg = MetricsGen { series: 8, points: 8, ..MetricsGen::default() };
        let (out, report) = generate(&cfg);
        assert_eq!(report, GenReport { lines: 8, good: 8, malformed: vec![] });
        let mut seen = Vec::new();
        for line in lines(&out) {
            let (ts, tenant, host, name, value) = parse_good(line);
            let i: usize = host[1..].parse().unwrap();
            assert_eq!(host.len(), 6);
            assert_eq!(tenant, format!("t{}", i % 4));
            assert_eq!(name, METRIC_NAMES[i % 4]);
            assert!((0.0..=100.0).contains(&value));
            assert!((cfg.start_ms - 2_000..cfg.start_ms + 12_000).contains(&ts));
            seen.push(i);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..8).collect::<Vec<_>>(), "round 0 has every series once");
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let cfg = MetricsGen { malformed: 25, ..small() };
        let (a, ra) = generate(&cfg);
        let (b, rb) = generate(&cfg);
        assert_eq!(a, b);
        assert_eq!(ra, rb);
        let (c, _) = generate(&MetricsGen { seed: 8, ..cfg.clone() });
        assert_ne!(a, c);
    }

    #[test]
    fn exact_point_count_and_rounds() {
        for (series, points) in [(97usize, 10_000u64), (10, 10), (10, 1), (3, 1_000), (1, 5), (1000, 999)] {
            let cfg = MetricsGen { series, points, ..small() };
            let (out, report) = generate(&cfg);
            assert_eq!((report.lines, report.good), (points, points));
            let ls = lines(&out);
            assert_eq!(ls.len() as u64, points);
            // Round r holds each series exactly once: count per host = points spread evenly.
            let mut per_host = vec![0u64; series];
            for l in &ls {
                let (_, _, host, _, _) = parse_good(l);
                per_host[host[1..].parse::<usize>().unwrap()] += 1;
            }
            let full = points / series as u64;
            let extra = points % series as u64;
            assert_eq!(per_host.iter().filter(|&&c| c == full + 1).count() as u64, extra);
            assert!(per_host.iter().all(|&c| c == full || c == full + 1));
        }
        let (out, report) = generate(&MetricsGen { points: 0, ..small() });
        assert!(out.is_empty());
        assert_eq!(report, GenReport::default());
    }

    #[test]
    fn a_series_reports_every_interval() {
        let cfg = MetricsGen { series: 5, points: 500, disorder_ms: 0, ..small() };
        let (out, _) = generate(&cfg);
        let mut by_host: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
        let mut prev = i64::MIN;
        for l in lines(&out) {
            let (ts, _, host, _, _) = parse_good(l);
            assert!(ts >= prev, "without disorder the file is in time order");
            prev = ts;
            by_host.entry(host).or_default().push(ts);
        }
        for tss in by_host.values() {
            assert_eq!(tss.len(), 100);
            let off = tss[0] - cfg.start_ms;
            assert!((0..cfg.interval_ms as i64).contains(&off));
            for (r, ts) in tss.iter().enumerate() {
                assert_eq!(*ts, cfg.start_ms + r as i64 * cfg.interval_ms as i64 + off);
            }
        }
    }

    #[test]
    fn disorder_is_real_and_bounded() {
        let cfg = MetricsGen { series: 200, points: 50_000, disorder_ms: 2_000, ..small() };
        let (out, _) = generate(&cfg);
        let mut max_seen = i64::MIN;
        let mut worst = 0i64;
        let mut out_of_order = 0u64;
        for l in lines(&out) {
            let (ts, ..) = parse_good(l);
            if ts < max_seen {
                out_of_order += 1;
                worst = worst.max(max_seen - ts);
            }
            max_seen = max_seen.max(ts);
        }
        assert!(worst <= 2 * cfg.disorder_ms as i64, "worst {worst}");
        assert!(worst > cfg.disorder_ms as i64, "the bound is approached: worst {worst}");
        assert!(out_of_order > 1_000, "{out_of_order}");
    }

    #[test]
    fn values_look_like_signals() {
        let cfg = MetricsGen { series: 8, points: 8 * 8640, disorder_ms: 0, ..small() }; // one day
        let (out, _) = generate(&cfg);
        let mut per: Vec<Vec<f64>> = vec![Vec::new(); 8];
        let mut saw_cpu = false;
        for l in lines(&out) {
            let (_, _, host, name, v) = parse_good(l);
            saw_cpu |= name == "cpu";
            per[host[1..].parse::<usize>().unwrap()].push(v);
        }
        assert!(saw_cpu);
        for vs in &per {
            assert!(vs.iter().all(|v| (0.0..=100.0).contains(v)));
            let mean = vs.iter().sum::<f64>() / vs.len() as f64;
            let (lo, hi) = vs.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            assert!(hi > lo, "values vary");
            assert!(mean > 1.0 && mean < 99.0, "mean {mean}");
        }
    }

    #[test]
    fn malformed_lines_are_where_reported() {
        let cfg = MetricsGen { malformed: 103, ..small() };
        let (out, report) = generate(&cfg);
        assert_eq!(report.good, cfg.points);
        assert_eq!(report.lines, cfg.points + cfg.malformed);
        assert_eq!(report.malformed.len() as u64, cfg.malformed);
        let ls = lines(&out);
        assert_eq!(ls.len() as u64, report.lines);
        let bad: std::collections::HashMap<u64, &str> = report.malformed.iter().map(|m| (m.line, m.kind)).collect();
        assert_eq!(bad.len(), report.malformed.len(), "distinct line numbers");
        for (k, m) in report.malformed.iter().enumerate() {
            assert_eq!(m.kind, MALFORMED_KINDS[k % 5], "kinds cycle in file order");
            if k > 0 {
                assert!(m.line > report.malformed[k - 1].line);
            }
        }
        let mut kinds_seen = std::collections::BTreeSet::new();
        for (n, line) in ls.iter().enumerate() {
            let n = n as u64 + 1;
            let parsed = std::str::from_utf8(line).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok());
            let Some(&kind) = bad.get(&n) else {
                parse_good(line);
                continue;
            };
            kinds_seen.insert(kind);
            let obj = parsed.as_ref().and_then(|v| v.as_object());
            match kind {
                "bad_json" => {
                    assert!(std::str::from_utf8(line).is_ok());
                    assert!(parsed.is_none(), "line {n} must not parse");
                    assert!(line.starts_with(b"{"));
                }
                "missing_value" => {
                    let o = obj.unwrap();
                    assert!(!o.contains_key("value") && o["ts"].is_i64() && o["name"].is_string());
                }
                "value_string" => assert!(obj.unwrap()["value"].is_string()),
                "ts_not_time" => {
                    let o = obj.unwrap();
                    assert_eq!(o["ts"], "yesterday");
                    assert!(o["value"].is_f64());
                }
                "invalid_utf8" => {
                    assert!(std::str::from_utf8(line).is_err());
                    assert!(line.windows(2).any(|w| w == b"\xC3\x28"));
                    // Valid JSON otherwise.
                    let fixed = String::from_utf8_lossy(line);
                    assert!(serde_json::from_str::<serde_json::Value>(&fixed).unwrap()["value"].is_f64());
                }
                _ => unreachable!(),
            }
        }
        assert_eq!(kinds_seen.len(), 5);
    }

    #[test]
    fn malformed_lines_only_insert() {
        let (clean, _) = generate(&small());
        let (dirty, report) = generate(&MetricsGen { malformed: 40, ..small() });
        let bad: std::collections::HashSet<u64> = report.malformed.iter().map(|m| m.line).collect();
        let kept: Vec<&[u8]> =
            lines(&dirty).into_iter().enumerate().filter(|(i, _)| !bad.contains(&(*i as u64 + 1))).map(|(_, l)| l).collect();
        assert_eq!(kept, lines(&clean));
    }

    #[test]
    fn malformed_without_points_and_at_the_edges() {
        let (out, report) = generate(&MetricsGen { points: 0, malformed: 7, ..small() });
        assert_eq!(report.lines, 7);
        assert_eq!(lines(&out).len(), 7);
        assert_eq!(report.malformed.iter().map(|m| m.line).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
        let (out, report) = generate(&MetricsGen { series: 3, points: 2, malformed: 50, ..small() });
        assert_eq!((report.lines, lines(&out).len()), (52, 52));
    }

    #[test]
    fn bad_configurations_are_errors() {
        for cfg in [
            MetricsGen { series: 0, ..small() },
            MetricsGen { tenants: 0, ..small() },
            MetricsGen { interval_ms: 0, ..small() },
            MetricsGen { start_ms: i64::MAX - 10, ..small() },
        ] {
            let err = generate_metrics(&cfg, Vec::new()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{cfg:?}");
        }
    }

    #[test]
    fn number_formatting() {
        let mut b = Vec::new();
        for (v, s) in [
            (0.0, "0.000"),
            (54.525, "54.525"),
            (99.9996, "100.000"),
            (-0.5, "-0.500"),
            (7.25, "7.250"),
            (0.0015, "0.002"),
            (1e-9, "0.000"),
        ] {
            b.clear();
            push_milli(&mut b, v);
            assert_eq!(std::str::from_utf8(&b).unwrap(), s, "{v}");
        }
        for (v, w, s) in [(0u64, 5, "00000"), (42, 5, "00042"), (123_456, 5, "123456"), (u64::MAX, 1, "18446744073709551615"), (7, 1, "7")]
        {
            b.clear();
            push_u64(&mut b, v, w);
            assert_eq!(std::str::from_utf8(&b).unwrap(), s);
        }
        b.clear();
        push_i64(&mut b, i64::MIN);
        assert_eq!(std::str::from_utf8(&b).unwrap(), i64::MIN.to_string());
    }
}
