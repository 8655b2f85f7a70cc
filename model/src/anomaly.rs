//! Anomaly rows: the points a detector scored at or over its threshold, and the alerts they
//! raise when a `[[detect]]` section says `raise_alerts = true`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::alert::{Alert, Status};
use crate::labels::LabelSet;
use crate::series::Series;
use crate::time::Millis;

/// The alert name of anomaly alerts.
pub const ANOMALY_ALERTNAME: &str = "MetricAnomaly";

/// One anomalous point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnomalyRow {
    /// Tenant, metric name and labels.
    pub series: Series,
    /// Event time of the point.
    pub ts: Millis,
    /// The point's value.
    pub value: f64,
    /// What the detector expected.
    pub expected: f64,
    /// The score in [0, 1].
    pub score: f64,
    /// The detector's name.
    pub detector: Arc<str>,
    /// Input partition of the point.
    pub part: u32,
    /// Position of the point in its partition.
    pub pos: u64,
}

impl AnomalyRow {
    /// The severity of an anomaly alert: `critical` from a score of 0.99, else `warning`.
    pub fn severity(&self) -> &'static str {
        if self.score >= 0.99 { "critical" } else { "warning" }
    }

    /// The firing alert this anomaly raises: alertname `MetricAnomaly`, the series' tenant and
    /// labels plus `metric` = its name and the severity; value, expected, score and detector as
    /// annotations. Starts (and is stamped) at the point's time; no end, so the alert chain's
    /// `resolve_timeout` closes it when the anomaly does not recur.
    pub fn to_alert(&self) -> Alert {
        let mut labels: Vec<(&str, &str)> = self.series.labels().iter().map(|(k, v)| (&**k, &**v)).collect();
        labels.retain(|(k, _)| !matches!(*k, "alertname" | "severity" | "metric"));
        labels.push(("alertname", ANOMALY_ALERTNAME));
        labels.push(("metric", self.series.name()));
        labels.push(("severity", self.severity()));
        labels.sort_unstable();
        let (value, expected, score) = (self.value.to_string(), self.expected.to_string(), format!("{:.6}", self.score));
        let annotations =
            [("detector", &*self.detector), ("expected", expected.as_str()), ("score", score.as_str()), ("value", value.as_str())];
        Alert {
            labels: LabelSet::new(self.series.tenant(), &labels),
            annotations: LabelSet::new("", &annotations),
            status: Status::Firing,
            starts_at: self.ts,
            ends_at: None,
            ts: self.ts,
            generator_url: None,
            part: self.part,
            pos: self.pos,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anomaly_becomes_a_firing_alert_with_the_series_labels() {
        let row = AnomalyRow {
            series: Series::new("acme", "cpu", &[("host", "h1"), ("severity", "spoofed")]),
            ts: 1_000,
            value: 97.5,
            expected: 40.0,
            score: 0.995,
            detector: "mad".into(),
            part: 3,
            pos: 17,
        };
        let a = row.to_alert();
        assert_eq!(a.tenant(), "acme");
        assert_eq!(a.alertname(), ANOMALY_ALERTNAME);
        assert_eq!(a.labels.get("metric").map(|s| &**s), Some("cpu"));
        assert_eq!(a.labels.get("host").map(|s| &**s), Some("h1"));
        assert_eq!(a.labels.get("severity").map(|s| &**s), Some("critical"), "the series' own severity label is replaced");
        assert_eq!(a.annotations.get("value").map(|s| &**s), Some("97.5"));
        assert_eq!(a.annotations.get("detector").map(|s| &**s), Some("mad"));
        assert_eq!((a.status, a.starts_at, a.ts, a.part, a.pos), (Status::Firing, 1_000, 1_000, 3, 17));
        let warn = AnomalyRow { score: 0.95, ..row };
        assert_eq!(warn.to_alert().labels.get("severity").map(|s| &**s), Some("warning"));
    }
}
