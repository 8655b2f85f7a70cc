//! The alert record.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::labels::LabelSet;
use crate::time::Millis;

/// Whether an alert notice says the condition holds or has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Status {
    /// The condition holds.
    Firing,
    /// The condition has ended.
    Resolved,
}

impl Status {
    /// `firing` or `resolved`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One alert notice as received (a sender re-sends the same alert while it fires).
///
/// Its identity is its label set (tenant + labels, `alertname` and `severity` among them):
/// [`LabelSet::fingerprint`] is the alert's fingerprint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Alert {
    /// Tenant and labels (with `alertname` and `severity`).
    pub labels: LabelSet,
    /// Annotations (`summary`, `description`, …); not part of the identity. Interned as a
    /// label set with an empty tenant.
    pub annotations: LabelSet,
    /// Firing or resolved.
    pub status: Status,
    /// When the condition started (the sender's `startsAt`; the event time when absent).
    pub starts_at: Millis,
    /// When the condition ended or, for a firing alert, when it expires (`endsAt`).
    pub ends_at: Option<Millis>,
    /// Event time of this notice.
    pub ts: Millis,
    /// The sender's link back (`generatorURL`).
    pub generator_url: Option<Arc<str>>,
    /// Input partition (see [`crate::Metric::part`]).
    pub part: u32,
    /// Position inside the partition.
    pub pos: u64,
}

/// The `alertname` label of an alert's label set.
pub fn alertname(labels: &LabelSet) -> &str {
    labels.get("alertname").map(|s| &**s).unwrap_or("")
}

/// The `severity` label of an alert's label set, `none` when absent.
pub fn severity(labels: &LabelSet) -> &str {
    labels.get("severity").map(|s| &**s).unwrap_or("none")
}

impl Alert {
    /// The tenant.
    pub fn tenant(&self) -> &str {
        self.labels.tenant()
    }
    /// The `alertname` label.
    pub fn alertname(&self) -> &str {
        alertname(&self.labels)
    }
    /// The `severity` label, `none` when absent.
    pub fn severity(&self) -> &str {
        severity(&self.labels)
    }
    /// The fingerprint.
    pub fn fingerprint(&self) -> u64 {
        self.labels.fingerprint()
    }
}

/// The rank of a severity, for `max_severity`: critical > error > warning > info > anything
/// else. Synonyms: `page`/`fatal`/`emergency` as critical, `high`/`major` as error,
/// `warn`/`medium`/`minor` as warning, `low`/`notice` as info.
pub fn severity_rank(s: &str) -> u8 {
    match s.to_ascii_lowercase().as_str() {
        "critical" | "crit" | "page" | "fatal" | "emergency" | "emerg" | "alert" | "p1" => 5,
        "error" | "err" | "high" | "major" | "p2" => 4,
        "warning" | "warn" | "medium" | "minor" | "p3" => 3,
        "info" | "informational" | "low" | "notice" | "p4" => 2,
        _ => 1,
    }
}

/// What changed in an alert's lifecycle: the `event` column of the `alerts` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// The first firing notice of an episode.
    Opened,
    /// Still firing, re-emitted every `repeat_interval`.
    Repeated,
    /// A resolved notice closed the episode.
    Resolved,
    /// No notice for `resolve_timeout` (or past the sender's `endsAt`): closed.
    Expired,
    /// More than `flap_threshold` episodes within `flap_window`.
    Flapping,
    /// The alert's incident changed (a merge or a split).
    Regrouped,
}

impl EventKind {
    /// The column value.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Opened => "opened",
            EventKind::Repeated => "repeated",
            EventKind::Resolved => "resolved",
            EventKind::Expired => "expired",
            EventKind::Flapping => "flapping",
            EventKind::Regrouped => "regrouped",
        }
    }
}

/// One lifecycle change of an alert episode: a row of the `alerts` table. Emitted by dedup,
/// annotated by suppress (`suppressed`, `storm_id`) and correlate (`incident_id`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AlertEvent {
    /// What changed.
    pub event: EventKind,
    /// Tenant and labels (identity).
    pub labels: LabelSet,
    /// Annotations of the latest notice.
    pub annotations: LabelSet,
    /// Firing or resolved, after this change.
    pub status: Status,
    /// Start of the episode (the same on every row of one episode).
    pub starts_at: Millis,
    /// End of the episode (when closed), or the sender's expiry (`endsAt`) while firing.
    pub ends_at: Option<Millis>,
    /// Event time of the latest notice.
    pub last_seen: Millis,
    /// Notices received in this episode.
    pub occurrences: u64,
    /// Per fingerprint, increasing: the row with the highest revision is the current state
    /// (see [`revision`]).
    pub revision: u64,
    /// Event time of the change.
    pub ts: Millis,
    /// Part of a storm (suppressed for notification; still stored).
    pub suppressed: bool,
    /// The storm the alert belongs to.
    pub storm_id: Option<u64>,
    /// The incident the alert belongs to.
    pub incident_id: Option<u64>,
    /// The owning team of the alert's service, from the topology (enrich).
    pub team: Option<Arc<str>>,
    /// The tier of the alert's service, from the topology (enrich).
    pub tier: Option<Arc<str>>,
    /// The sender's link.
    pub generator_url: Option<Arc<str>>,
    /// Canonical order: the input position of the notice that caused the change.
    pub part: u32,
    /// Canonical order (see `part`).
    pub pos: u64,
}

impl AlertEvent {
    /// The fingerprint.
    pub fn fingerprint(&self) -> u64 {
        self.labels.fingerprint()
    }
    /// The tenant.
    pub fn tenant(&self) -> &str {
        self.labels.tenant()
    }
    /// The `alertname` label.
    pub fn alertname(&self) -> &str {
        alertname(&self.labels)
    }
    /// The `severity` label, `none` when absent.
    pub fn severity(&self) -> &str {
        severity(&self.labels)
    }
    /// The episode's id: XXH3-64 of the fingerprint and `starts_at` (little-endian bytes).
    pub fn episode(&self) -> u64 {
        episode_id(self.fingerprint(), self.starts_at)
    }
}

/// The revision of the `seq`-th change (1-based) of an episode that started at `starts_at`:
/// `starts_at × 1000 + seq`. It increases per fingerprint across episodes without keeping any
/// per-fingerprint state after an episode ends (its state is evicted, a later episode starts
/// later), so "the row with the highest revision is the alert's current state" always holds.
pub fn revision(starts_at: Millis, seq: u64) -> u64 {
    (starts_at.max(0) as u64) * 1000 + seq.min(999)
}

/// The id of an alert episode: XXH3-64 of `fingerprint` and `starts_at`, both as 8
/// little-endian bytes. An incident's id is the episode id of its oldest member.
pub fn episode_id(fingerprint: u64, starts_at: Millis) -> u64 {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&fingerprint.to_le_bytes());
    b[8..].copy_from_slice(&starts_at.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&b)
}

/// A storm's state change: a row of the `storms` table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StormRow {
    /// The storm's id.
    pub storm_id: u64,
    /// The tenant.
    pub tenant: Arc<str>,
    /// The group, as `key=value` pairs joined with `,` (e.g. `alertname=DiskFull`).
    pub group_key: Arc<str>,
    /// `open` or `closed`.
    pub open: bool,
    /// When it opened.
    pub opened_at: Millis,
    /// Event time of this row.
    pub updated_at: Millis,
    /// When it closed.
    pub closed_at: Option<Millis>,
    /// Alert episodes opened in the group while the storm was open (and the ones that opened it).
    pub alert_count: u64,
    /// Distinct fingerprints among them.
    pub distinct_fingerprints: u64,
    /// The most frequent values of each label among members, as JSON
    /// (`{"service":[["db",812],["api",5]]}`).
    pub top_labels: String,
    /// Up to ten member fingerprints, first ones first.
    pub sample_fingerprints: Vec<u64>,
    /// Increasing per storm.
    pub revision: u64,
}

/// An incident's state change: a row of the `incidents` table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IncidentRow {
    /// The id of its oldest member's episode.
    pub incident_id: u64,
    /// The tenant.
    pub tenant: Arc<str>,
    /// `open`, `resolved`, or `merged` (absorbed into another incident). A `Cow` only so the
    /// row can be deserialized (rows cross workers); the operator writes static text.
    pub status: std::borrow::Cow<'static, str>,
    /// When its first member opened.
    pub opened_at: Millis,
    /// Event time of this row.
    pub updated_at: Millis,
    /// When it closed.
    pub resolved_at: Option<Millis>,
    /// Member alert episodes.
    pub alert_count: u64,
    /// Member fingerprints (at most 1,000, oldest first).
    pub fingerprints: Vec<u64>,
    /// Services of the members, sorted.
    pub services: Vec<Arc<str>>,
    /// The root-cause candidate: the most upstream member service, else the earliest
    /// member's service.
    pub root_cause: Option<Arc<str>>,
    /// The highest member severity.
    pub max_severity: Arc<str>,
    /// A one-line summary.
    pub title: String,
    /// Increasing per incident.
    pub revision: u64,
}
