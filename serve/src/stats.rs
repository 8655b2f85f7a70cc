//! The serving metrics: queries answered per interface and outcome, and their latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alertflow_queries::{Histogram, Metrics};

/// Counters and the latency histogram of one interface (`http` or `pg`).
#[derive(Clone)]
pub(crate) struct QueryStats {
    ok: Arc<AtomicU64>,
    error: Arc<AtomicU64>,
    duration: Arc<Histogram>,
}

impl QueryStats {
    /// Registers the series of `interface` into `metrics`.
    pub(crate) fn register(metrics: &Metrics, interface: &str) -> Self {
        let help = "Queries answered, by interface and outcome.";
        let ok = metrics.counter("alertflow_queries_total", help, &[("interface", interface), ("outcome", "ok")]);
        let error = metrics.counter("alertflow_queries_total", help, &[("interface", interface), ("outcome", "error")]);
        let duration = metrics.histogram(
            "alertflow_query_duration_seconds",
            "Time from receiving a query to its last row sent (or its error), by interface.",
            &[("interface", interface)],
        );
        QueryStats { ok, error, duration }
    }

    /// Counts one answered query.
    pub(crate) fn record(&self, ok: bool, elapsed: Duration) {
        if ok { &self.ok } else { &self.error }.fetch_add(1, Ordering::Relaxed);
        self.duration.record(elapsed);
    }
}
