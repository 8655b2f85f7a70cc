//! What correlate keeps of an episode's latest row: enough to write its `regrouped` rows.
//!
//! A `regrouped` row is the episode's latest row with a new incident id, revision, time and
//! kind, so those four are not kept; the sender's rarely-set fields share one optional box.
//! At 1,000,000 open episodes this is 80 bytes each instead of a whole `AlertEvent` (168).

use std::sync::Arc;

use alertflow_model::LabelSet;
use alertflow_model::alert::{AlertEvent, EventKind, Status};
use serde::{Deserialize, Serialize};

/// The latest row of an episode, less what a `regrouped` row replaces.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Snapshot {
    pub(super) labels: LabelSet,
    annotations: LabelSet,
    /// Team, tier and the sender's link, when any is set.
    extra: Option<Box<Extra>>,
    pub(super) starts_at: i64,
    /// `ends_at`, or [`NO_END`].
    ends_at: i64,
    last_seen: i64,
    occurrences: u64,
    /// `storm_id` when `in_storm` (an `Option` would take 8 bytes more).
    storm_id: u64,
    pos: u64,
    part: u32,
    status: Status,
    suppressed: bool,
    in_storm: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Extra {
    team: Option<Arc<str>>,
    tier: Option<Arc<str>>,
    generator_url: Option<Arc<str>>,
}

/// `ends_at` of a row that has none (no event time is this early).
const NO_END: i64 = i64::MIN;

impl Snapshot {
    /// Keeps `row`.
    pub(super) fn of(row: &AlertEvent) -> Snapshot {
        let extra = (row.team.is_some() || row.tier.is_some() || row.generator_url.is_some())
            .then(|| Box::new(Extra { team: row.team.clone(), tier: row.tier.clone(), generator_url: row.generator_url.clone() }));
        Snapshot {
            labels: row.labels.clone(),
            annotations: row.annotations.clone(),
            extra,
            starts_at: row.starts_at,
            ends_at: row.ends_at.unwrap_or(NO_END),
            last_seen: row.last_seen,
            occurrences: row.occurrences,
            storm_id: row.storm_id.unwrap_or(0),
            in_storm: row.storm_id.is_some(),
            pos: row.pos,
            part: row.part,
            status: row.status,
            suppressed: row.suppressed,
        }
    }

    /// The kept row as `event` at `ts`, with `revision` and `incident_id`.
    pub(super) fn row(&self, event: EventKind, ts: i64, revision: u64, incident_id: u64) -> AlertEvent {
        let extra = self.extra.as_deref();
        AlertEvent {
            event,
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            status: self.status,
            starts_at: self.starts_at,
            ends_at: (self.ends_at != NO_END).then_some(self.ends_at),
            last_seen: self.last_seen,
            occurrences: self.occurrences,
            revision,
            ts,
            suppressed: self.suppressed,
            storm_id: self.in_storm.then_some(self.storm_id),
            incident_id: Some(incident_id),
            team: extra.and_then(|x| x.team.clone()),
            tier: extra.and_then(|x| x.tier.clone()),
            generator_url: extra.and_then(|x| x.generator_url.clone()),
            part: self.part,
            pos: self.pos,
        }
    }

    /// The annotations (read ahead of a regroup, see `correlate::flush`).
    pub(super) fn annotations(&self) -> &LabelSet {
        &self.annotations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(full: bool) -> AlertEvent {
        let labels = LabelSet::new("t1", &[("alertname", "Down"), ("service", "db"), ("severity", "critical")]);
        AlertEvent {
            event: EventKind::Opened,
            labels,
            annotations: LabelSet::new("", &[("summary", "down")]),
            status: if full { Status::Resolved } else { Status::Firing },
            starts_at: 1_000,
            ends_at: full.then_some(9_000),
            last_seen: 5_000,
            occurrences: 7,
            revision: 1_000_001,
            ts: 5_000,
            suppressed: full,
            storm_id: full.then_some(42),
            incident_id: Some(3),
            team: full.then(|| "storage".into()),
            tier: full.then(|| "1".into()),
            generator_url: full.then(|| "http://prom/graph".into()),
            part: 2,
            pos: 99,
        }
    }

    /// A regrouped row from a snapshot is the row kept, with only the kind, time, revision
    /// and incident replaced — with every optional field set and with none.
    #[test]
    fn regrouped_row_is_the_kept_row_with_four_fields_replaced() {
        for full in [false, true] {
            let r = row(full);
            let got = Snapshot::of(&r).row(EventKind::Regrouped, 60_000, 1_000_002, 77);
            let mut want = r.clone();
            want.event = EventKind::Regrouped;
            want.ts = 60_000;
            want.revision = 1_000_002;
            want.incident_id = Some(77);
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "full = {full}");
        }
    }

    /// An episode fits the allocator's 128-byte size class (the next is 160).
    #[test]
    fn episode_is_128_bytes() {
        assert!(std::mem::size_of::<super::super::Ep>() <= 128, "{} bytes", std::mem::size_of::<super::super::Ep>());
    }

    #[test]
    fn is_compact() {
        assert!(std::mem::size_of::<Snapshot>() <= 80, "{} bytes", std::mem::size_of::<Snapshot>());
    }
}
