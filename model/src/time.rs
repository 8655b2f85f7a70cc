//! Event time: milliseconds since the Unix epoch (UTC), durations written as `"5m"`, and the
//! calendar helpers the Parquet partitions (`date=`, `hour=`) are made of.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Event time of a record: milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = i64;

/// Milliseconds in one hour.
pub const HOUR_MS: i64 = 3_600_000;
/// Milliseconds in one day.
pub const DAY_MS: i64 = 86_400_000;

/// The latest event time alertflow accepts (9999-12-31T23:59:59.999Z): past it, calendar
/// dates stop having four digits and the Parquet partition names would not sort.
pub const MAX_EVENT_TIME: Millis = 253_402_300_799_999;

/// A non-negative duration in milliseconds, written in configs as `"500ms"`, `"5s"`, `"1m"`,
/// `"2h"`, `"1d"` (or a sum of them, `"1h30m"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationMs(pub u64);

impl DurationMs {
    /// The duration in milliseconds.
    pub fn millis(self) -> u64 {
        self.0
    }
    /// Builds a duration from seconds.
    pub const fn from_secs(s: u64) -> Self {
        DurationMs(s * 1000)
    }
}

/// Why a duration string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {why} (write it like \"500ms\", \"5s\", \"1m\", \"2h\", \"1d\" or \"1h30m\")")]
pub struct DurationError {
    input: String,
    why: &'static str,
}

impl FromStr for DurationMs {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| DurationError { input: s.to_string(), why };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("it is empty"));
        }
        if t == "0" {
            return Ok(DurationMs(0));
        }
        let b = t.as_bytes();
        let mut i = 0;
        let mut total: u64 = 0;
        while i < b.len() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if start == i {
                return Err(err("expected a number"));
            }
            let n: u64 = t[start..i].parse().map_err(|_| err("the number is too large"))?;
            let ustart = i;
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit = match &t[ustart..i] {
                "ms" => 1,
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "" => return Err(err("a unit is missing")),
                _ => return Err(err("unknown unit")),
            };
            total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(|| err("the duration is too large"))?;
        }
        Ok(DurationMs(total))
    }
}

impl fmt::Display for DurationMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
            if ms != 0 && ms.is_multiple_of(size) {
                return write!(f, "{}{}", ms / size, unit);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for DurationMs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DurationMs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DurationMs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"5s\" or \"1m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationMs, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationMs, E> {
                if v == 0 {
                    Ok(DurationMs(0))
                } else {
                    Err(E::custom(format!("invalid duration {v}: a bare number has no unit; write \"{v}s\" or \"{v}ms\"")))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The wall clock now, in ms since the Unix epoch (0 if the clock is before 1970): what live
/// sources advance their watermark with when idle, and what pushed alerts are stamped with.
pub fn wall_now() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

/// Rounds `t` down to a multiple of `step` (both non-negative; `step` > 0).
#[inline]
pub fn floor_to(t: i64, step: i64) -> i64 {
    t - t.rem_euclid(step)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Howard Hinnant's `civil_from_days`, exact for every day in range.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Proleptic Gregorian (year, month, day) to days since 1970-01-01 (Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The Hive partition of an event time: `("2026-01-01", 7)` for 07:xx UTC on that day.
pub fn date_hour(ts: Millis) -> (String, u32) {
    let days = ts.div_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    let hour = (ts.rem_euclid(DAY_MS) / HOUR_MS) as u32;
    (format!("{y:04}-{m:02}-{d:02}"), hour)
}

/// Formats an event time as RFC 3339 with milliseconds, `2026-01-01T00:00:00.000Z`.
pub fn format_rfc3339(ts: Millis) -> String {
    let days = ts.div_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    let ms = ts.rem_euclid(DAY_MS);
    let (h, mi, s, milli) = (ms / HOUR_MS, (ms / 60_000) % 60, (ms / 1000) % 60, ms % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// Parses a time written as RFC 3339 (`2026-01-01T00:00:00Z`, `…00.123+02:00`) or as a
/// naive UTC date-time (`2026-01-01 00:00:00`, NAB's format) into event time.
pub fn parse_time_text(s: &str) -> Option<Millis> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as i64;
        }
        Some(v)
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo as u32) as i64 || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_min: i64 = if i == b.len() {
        0 // naive: taken as UTC
    } else if b[i] == b'Z' || b[i] == b'z' {
        i += 1;
        0
    } else if b[i] == b'+' || b[i] == b'-' {
        if b.len() < i + 6 || b[i + 3] != b':' {
            return None;
        }
        let sign = if b[i] == b'+' { 1 } else { -1 };
        let oh = num(i + 1..i + 3)?;
        let om = num(i + 4..i + 6)?;
        i += 6;
        sign * (oh * 60 + om)
    } else {
        return None;
    };
    if i != b.len() {
        return None;
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset_min * 60;
    Some(secs * 1000 + millis)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!("5s".parse::<DurationMs>().unwrap(), DurationMs(5000));
        assert_eq!("1m".parse::<DurationMs>().unwrap(), DurationMs(60_000));
        assert_eq!("1h30m".parse::<DurationMs>().unwrap(), DurationMs(5_400_000));
        assert_eq!("250ms".parse::<DurationMs>().unwrap(), DurationMs(250));
        assert_eq!("0".parse::<DurationMs>().unwrap(), DurationMs(0));
        for bad in ["", "5", "5x", "m", "-1s", "1.5s", "99999999999999999999d"] {
            assert!(bad.parse::<DurationMs>().is_err(), "{bad} should not parse");
        }
        assert_eq!(DurationMs(60_000).to_string(), "1m");
        assert_eq!(DurationMs(1500).to_string(), "1500ms");
    }

    #[test]
    fn calendar_round_trips_against_chrono() {
        for days in (-800_000..2_932_896).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            let c = chrono::NaiveDate::from_num_days_from_ce_opt((days + 719_163) as i32).unwrap();
            use chrono::Datelike;
            assert_eq!((y, m, d), (c.year() as i64, c.month(), c.day()));
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn partitions_and_formatting() {
        assert_eq!(date_hour(1_767_225_598_647), ("2025-12-31".to_string(), 23));
        assert_eq!(date_hour(1_767_225_600_000), ("2026-01-01".to_string(), 0));
        assert_eq!(format_rfc3339(1_767_225_598_647), "2025-12-31T23:59:58.647Z");
    }

    #[test]
    fn time_text_matches_chrono() {
        let cases = [
            "2026-01-01T00:00:00Z",
            "2025-12-31T23:59:58.647Z",
            "2025-12-31T23:59:58.6Z",
            "2026-03-01T10:20:30.123456+02:00",
            "2024-02-29T00:00:00-05:30",
            "2014-07-01 00:00:00",
        ];
        for c in cases {
            let ours = parse_time_text(c).unwrap();
            let theirs = chrono::DateTime::parse_from_rfc3339(c)
                .map(|t| t.timestamp_millis())
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(c, "%Y-%m-%d %H:%M:%S").map(|t| t.and_utc().timestamp_millis()))
                .unwrap();
            assert_eq!(ours, theirs, "{c}");
        }
        for bad in ["2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "yesterday", "2026-01-01T00:00:00Q", "2026-01-01T00:00:00+0200"] {
            assert_eq!(parse_time_text(bad), None, "{bad}");
        }
    }
}
