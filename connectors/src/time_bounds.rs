//! The event times a source accepts (DESIGN §2): not before `min_event_time`, and not more
//! than `max_future` ahead of the wall clock. Records outside become dead letters that say
//! which bound they broke.
//!
//! Why bounds at all, when every time from 1970 to 9999 decodes: one record stamped 2300
//! would move its partition's watermark centuries ahead, so every later record of that
//! partition would be late, a whole stream lost to one bad clock. And a stream written in
//! seconds instead of milliseconds (`1767225600`) reads as January 1970 without complaint,
//! windows and all. The defaults (2000-01-01, one day ahead) catch both and leave any real
//! observability data alone; a source that replays older history lowers `min_event_time`.
//!
//! The upper bound follows the wall clock, so it is the one thing about a bounded replay that
//! depends on when it runs; data from the past never meets it.

use alertflow_model::dead_letter::LATE;
use alertflow_model::time::{DurationMs, MAX_EVENT_TIME, Millis, format_rfc3339, parse_time_text};

/// The default `min_event_time`: 2000-01-01T00:00:00Z.
pub const DEFAULT_MIN_EVENT_TIME: Millis = 946_684_800_000;

/// The default `max_future`: one day, far beyond any clock skew, far below a typo's centuries.
pub fn default_max_future() -> DurationMs {
    DurationMs::from_secs(86_400)
}

/// A source's accepted event-time range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeBounds {
    /// The earliest event time accepted.
    pub min: Millis,
    /// How far ahead of the wall clock an event time may be (ms).
    pub max_future: Millis,
}

impl Default for TimeBounds {
    fn default() -> Self {
        TimeBounds { min: DEFAULT_MIN_EVENT_TIME, max_future: default_max_future().millis() as Millis }
    }
}

impl TimeBounds {
    /// The bounds of a source's `min_event_time` (RFC 3339 or integer milliseconds; default
    /// 2000-01-01) and `max_future`; the error names the field.
    pub fn from_config(min_event_time: Option<&str>, max_future: DurationMs) -> Result<TimeBounds, (&'static str, String)> {
        let min = match min_event_time.map(str::trim) {
            None => DEFAULT_MIN_EVENT_TIME,
            Some(t) if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) => t.parse().map_err(|_| {
                (
                    "min_event_time",
                    format!("`{t}` is too large: write milliseconds since 1970 or an RFC 3339 time like \"1990-01-01T00:00:00Z\""),
                )
            })?,
            Some(t) => parse_time_text(t).ok_or_else(|| {
                (
                    "min_event_time",
                    format!("`{t}` is not a time: write an RFC 3339 time like \"1990-01-01T00:00:00Z\" or milliseconds since 1970"),
                )
            })?,
        };
        if !(0..=MAX_EVENT_TIME).contains(&min) {
            return Err(("min_event_time", "must lie between 1970 and 9999".into()));
        }
        Ok(TimeBounds { min, max_future: max_future.millis().min(MAX_EVENT_TIME as u64) as Millis })
    }

    /// The latest event time accepted when the wall clock reads `now`.
    pub fn upper(&self, now: Millis) -> Millis {
        now.saturating_add(self.max_future)
    }

    /// Why `ts` is out of bounds (`upper` from [`TimeBounds::upper`]), or `None` when it is in.
    #[inline]
    pub fn reject(&self, ts: Millis, upper: Millis) -> Option<String> {
        if ts < self.min {
            // Seconds where milliseconds belong: the same number read as seconds would fit.
            let hint = if ts.checked_mul(1000).is_some_and(|ms| ms >= self.min && ms <= upper) {
                " (seconds instead of milliseconds?)"
            } else {
                ""
            };
            Some(format!(
                "ts {} is before min_event_time {}{hint}; lower the source's min_event_time to keep older data",
                format_rfc3339(ts),
                format_rfc3339(self.min)
            ))
        } else if ts > upper {
            Some(format!(
                "ts {} is more than max_future ({}) ahead of the wall clock ({})",
                format_rfc3339(ts),
                human(self.max_future),
                format_rfc3339(upper - self.max_future)
            ))
        } else {
            None
        }
    }
}

/// The records of one line or message that did not get in: (event time, `None` when late,
/// else why it is out of bounds).
pub type Rejected = Vec<(Millis, Option<String>)>;

/// Turns the rejected records of a line into dead letters, one each (`letter(reason, ts)`, a
/// line may hold several alerts); returns how many were out of bounds and how many late.
pub fn drain_rejected(rejected: &mut Rejected, mut letter: impl FnMut(String, Millis)) -> (u64, u64) {
    let (mut bad, mut late) = (0, 0);
    for (ts, why) in rejected.drain(..) {
        let reason = match why {
            Some(why) => {
                bad += 1;
                why
            }
            None => {
                late += 1;
                LATE.to_string()
            }
        };
        letter(reason, ts);
    }
    (bad, late)
}

/// A duration as the config writes it (`1d`, `90m`, `1500ms`).
fn human(ms: Millis) -> String {
    for (unit, n) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms >= n && ms % n == 0 {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_795_000_000_000; // 2026-11-18

    #[test]
    fn defaults_catch_seconds_and_far_futures() {
        let b = TimeBounds::from_config(None, default_max_future()).unwrap();
        let upper = b.upper(NOW);
        assert_eq!(b.reject(1_767_225_600_000, upper), None);
        assert_eq!(b.reject(DEFAULT_MIN_EVENT_TIME, upper), None);
        assert_eq!(b.reject(NOW + 86_400_000, upper), None);
        let secs = b.reject(1_767_225_600, upper).unwrap();
        assert!(
            secs.starts_with("ts 1970-01-21T10:53:45.600Z is before min_event_time 2000-01-01T00:00:00.000Z (seconds instead"),
            "{secs}"
        );
        let zero = b.reject(0, upper).unwrap();
        assert!(!zero.contains("seconds instead"), "{zero}");
        let future = b.reject(10_413_792_000_000, upper).unwrap(); // 2300-01-01
        assert!(
            future.starts_with("ts 2300-01-01T00:00:00.000Z is more than max_future (1d) ahead of the wall clock (2026-11-18"),
            "{future}"
        );
        assert!(b.reject(NOW + 86_400_001, upper).is_some());
    }

    #[test]
    fn config_forms_and_errors() {
        let at = |s: &str| TimeBounds::from_config(Some(s), DurationMs(90 * 60_000));
        assert_eq!(at("0").unwrap().min, 0);
        assert_eq!(at("1970-01-01T00:00:00Z").unwrap().min, 0);
        assert_eq!(at("1990-01-01T00:00:00Z").unwrap().min, 631_152_000_000);
        assert_eq!(at("0").unwrap().max_future, 90 * 60_000);
        assert!(at("yesterday").unwrap_err().1.contains("`yesterday` is not a time"));
        assert!(at("99999999999999999999").unwrap_err().1.contains("too large"));
        assert!(at("999999999999999").unwrap_err().1.contains("between 1970 and 9999"));
        assert_eq!(human(90 * 60_000), "90m");
        assert_eq!(human(1500), "1500ms");
    }
}
