//! The live tables of a pipeline with `[serve]` (DESIGN §6): which stream feeds each, what
//! its key is, which row of a key is the current one, and which rows end a key.
//!
//! - `<aggregate>_latest`: the latest window row per group (by window end, then start, then
//!   revision: a correction replaces the row it corrects);
//! - `active_alerts`: per fingerprint, the alert's current lifecycle row (highest revision)
//!   while it fires; a resolved or expired row removes it;
//! - `open_incidents`: per incident, its latest row while open; resolved or merged removes it;
//! - `active_storms`: per storm, its latest row while open.

use std::sync::Arc;
use std::time::Duration;

use alertflow_connectors::Failure;
use alertflow_connectors::live::{LatestBy, LiveStats, LiveTable, LiveTables, PublishExt};
use alertflow_model::Status;
use alertflow_model::alert::{AlertEvent, IncidentRow, StormRow};
use alertflow_model::tables::{AlertsTable, IncidentsTable, StormsTable, TableBuilder, WindowTable};
use alertflow_model::window::{GroupKey, WindowRow};
use alertflow_operators::Time;
use timely::dataflow::Stream;

use crate::config::Pipeline;
use crate::serve_config::{ACTIVE_ALERTS, ACTIVE_STORMS, OPEN_INCIDENTS};

/// A pipeline's live tables and their counters, in one order: the aggregates' (in file
/// order), then, with the alert chain, `active_alerts`, `open_incidents`, `active_storms`.
#[derive(Clone, Debug)]
pub struct Live {
    /// The tables.
    pub tables: LiveTables,
    /// Per table, in the same order.
    pub stats: Vec<(String, Arc<LiveStats>)>,
}

impl Live {
    /// No live tables (serving without `[serve]`).
    pub fn none() -> Live {
        Live { tables: LiveTables::new(), stats: Vec::new() }
    }

    /// The live tables of `pipeline`, published by `workers` workers at most once per `refresh`.
    pub fn new(pipeline: &Pipeline, workers: usize, refresh: Duration) -> Live {
        let mut tables = LiveTables::new();
        let mut stats = Vec::new();
        let mut add = |name: String, schema| {
            tables.add(LiveTable::new(name.clone(), schema, workers, refresh));
            stats.push((name, Arc::default()));
        };
        for (agg, _) in &pipeline.aggregates {
            add(format!("{}_latest", agg.name()), WindowTable::with_revisions(agg.group_by(), agg.functions(), agg.revises()).schema());
        }
        if pipeline.alerts.is_some() {
            add(ACTIVE_ALERTS.into(), AlertsTable::default().schema());
            add(OPEN_INCIDENTS.into(), IncidentsTable::default().schema());
            add(ACTIVE_STORMS.into(), StormsTable::default().schema());
        }
        Live { tables, stats }
    }

    fn table(&self, name: &str) -> (Arc<LiveTable>, Arc<LiveStats>) {
        let t = self.tables.get(name).unwrap_or_else(|| panic!("live table `{name}` was not created (a bug)")).clone();
        let s = self.stats.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone()).unwrap_or_default();
        (t, s)
    }

    /// Publishes an aggregate's rows as `<aggregate>_latest`.
    pub fn windows(&self, aggregate: &str, rows: &Stream<'_, Time, Vec<WindowRow>>, builder: WindowTable, failure: &Failure) {
        const BY: LatestBy<WindowRow, GroupKey> = LatestBy {
            key: |r| r.key.clone(),
            hash: |r| r.key.stable_hash(),
            replaces: |n, c| (n.end, n.start, n.revision) >= (c.end, c.start, c.revision),
            closes: |_| false,
        };
        let (table, stats) = self.table(&format!("{aggregate}_latest"));
        rows.clone().publish_latest(table, builder, BY, stats, failure.clone());
    }

    /// Publishes the alert chain's tables.
    pub fn alerts(
        &self,
        events: &Stream<'_, Time, Vec<AlertEvent>>,
        incidents: &Stream<'_, Time, Vec<IncidentRow>>,
        storms: &Stream<'_, Time, Vec<StormRow>>,
        failure: &Failure,
    ) {
        const ALERT: LatestBy<AlertEvent, u64> = LatestBy {
            key: |r| r.fingerprint(),
            hash: |r| r.fingerprint(),
            // `revision` grows per fingerprint across episodes; equal revisions (an alert's
            // incident changing within one change) are ordered by input position.
            replaces: |n, c| (n.revision, n.part, n.pos, n.ts) >= (c.revision, c.part, c.pos, c.ts),
            closes: |r| r.status == Status::Resolved,
        };
        const INCIDENT: LatestBy<IncidentRow, u64> = LatestBy {
            key: |r| r.incident_id,
            hash: |r| r.incident_id,
            replaces: |n, c| (n.revision, n.updated_at) >= (c.revision, c.updated_at),
            closes: |r| r.status != "open",
        };
        const STORM: LatestBy<StormRow, u64> = LatestBy {
            key: |r| r.storm_id,
            hash: |r| r.storm_id,
            replaces: |n, c| (n.revision, n.updated_at) >= (c.revision, c.updated_at),
            closes: |r| !r.open,
        };
        let (t, s) = self.table(ACTIVE_ALERTS);
        events.clone().publish_latest(t, AlertsTable::default(), ALERT, s, failure.clone());
        let (t, s) = self.table(OPEN_INCIDENTS);
        incidents.clone().publish_latest(t, IncidentsTable::default(), INCIDENT, s, failure.clone());
        let (t, s) = self.table(ACTIVE_STORMS);
        storms.clone().publish_latest(t, StormsTable::default(), STORM, s, failure.clone());
    }
}
