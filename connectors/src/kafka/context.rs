//! The librdkafka client context: its log lines and errors go to `tracing`, rate-limited (a
//! broker that is down makes librdkafka report the same failure several times a second).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

/// At most one line per period; the lines held back are counted into the next one.
#[derive(Debug)]
pub struct RateLimited {
    period: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimited {
    /// A limiter of one line per `period`.
    pub fn new(period: Duration) -> Self {
        RateLimited { period, state: Mutex::new((None, 0)) }
    }

    /// Logs `line(suffix)` as a warning unless a line was logged less than a period ago. The
    /// suffix says how many lines were held back since the last one (empty if none).
    pub fn warn(&self, line: impl FnOnce(String) -> String) {
        if let Some(suffix) = self.admit() {
            tracing::warn!("{}", line(suffix));
        }
    }

    /// Logs as an error, rate-limited like [`warn`](Self::warn).
    pub fn error(&self, line: impl FnOnce(String) -> String) {
        if let Some(suffix) = self.admit() {
            tracing::error!("{}", line(suffix));
        }
    }

    fn admit(&self) -> Option<String> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if s.0.is_some_and(|t| now.duration_since(t) < self.period) {
            s.1 += 1;
            return None;
        }
        let held = std::mem::take(&mut s.1);
        s.0 = Some(now);
        Some(if held > 0 { format!(" ({held} similar line(s) held back)") } else { String::new() })
    }
}

/// The context of alertflow's Kafka clients.
#[derive(Debug)]
pub struct KafkaContext {
    name: String,
    errors: RateLimited,
    /// Logs nothing (the client `validate` creates to check a configuration).
    quiet: bool,
}

impl KafkaContext {
    /// A context for the source or sink `name`.
    pub fn new(name: &str) -> Self {
        KafkaContext { name: name.to_string(), errors: RateLimited::new(Duration::from_secs(10)), quiet: false }
    }

    /// A context that logs nothing.
    pub fn quiet(name: &str) -> Self {
        KafkaContext { quiet: true, ..KafkaContext::new(name) }
    }
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        if self.quiet {
            return;
        }
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                self.errors.error(|n| format!("kafka `{}`: {fac} {msg}{n}", self.name))
            }
            RDKafkaLogLevel::Warning => self.errors.warn(|n| format!("kafka `{}`: {fac} {msg}{n}", self.name)),
            _ => tracing::debug!("kafka `{}`: {fac} {msg}", self.name),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition is expected under `stop_at_end` (the source handles it), not
        // a problem to warn about.
        let eof = matches!(error, KafkaError::PartitionEOF(_) | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF));
        if self.quiet || eof {
            return;
        }
        self.errors.warn(|n| format!("kafka `{}`: {error}: {reason}; librdkafka retries{n}", self.name));
    }
}

impl ConsumerContext for KafkaContext {}
