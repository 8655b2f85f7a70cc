//! Topology reference data: which service depends on which, with optional team and tier
//! (DESIGN §5). One row per dependency edge: `service,depends_on[,team,tier]`; a service with no
//! dependency has a row with an empty `depends_on`. The file is a set of rows; a reload is
//! the difference of two sets, sent as [`TopologyChange`]s with +1/−1 diffs.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A change of the topology: one row of the file appearing (`diff` +1) or disappearing (−1).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopologyChange {
    /// The service.
    pub service: Arc<str>,
    /// The service it depends on (calls), if the row names one.
    pub depends_on: Option<Arc<str>>,
    /// Its team.
    pub team: Option<Arc<str>>,
    /// Its tier.
    pub tier: Option<Arc<str>>,
    /// +1 or −1.
    pub diff: i64,
    /// Event time at which it applies (the data's frontier when the change was read).
    pub ts: i64,
}

/// One row of a topology file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopologyRow {
    /// The service.
    pub service: Arc<str>,
    /// What it depends on.
    pub depends_on: Option<Arc<str>>,
    /// Its team.
    pub team: Option<Arc<str>>,
    /// Its tier.
    pub tier: Option<Arc<str>>,
}

/// A problem in a topology file, with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct TopologyError {
    /// The line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The rows of a topology file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// The rows, as a set.
    pub rows: BTreeSet<TopologyRow>,
}

impl Topology {
    /// Parses CSV text. A first line starting with `service` is a header naming the columns
    /// (`service`, `depends_on`, `team`, `tier`, in any order; others are ignored); without
    /// one, the columns are positional. Blank lines and lines starting with `#` are skipped.
    pub fn parse_csv(text: &str) -> Result<Topology, TopologyError> {
        let mut cols = [Some(0usize), Some(1), Some(2), Some(3)];
        let mut rows = BTreeSet::new();
        let mut first = true;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let cells: Vec<&str> = line.split(',').map(|c| c.trim().trim_matches('"').trim()).collect();
            if std::mem::take(&mut first) && cells[0].eq_ignore_ascii_case("service") {
                let find = |n: &str| cells.iter().position(|c| c.eq_ignore_ascii_case(n));
                cols = [find("service"), find("depends_on"), find("team"), find("tier")];
                if cols[1].is_none() {
                    return Err(TopologyError { line: i + 1, message: format!("the header has no `depends_on` column (found: {line})") });
                }
                continue;
            }
            let get = |k: usize| cols[k].and_then(|c| cells.get(c)).filter(|c| !c.is_empty()).map(|c| Arc::<str>::from(*c));
            let Some(service) = get(0) else {
                return Err(TopologyError { line: i + 1, message: "the `service` cell is empty".into() });
            };
            let depends_on = get(1);
            if depends_on.as_deref() == Some(&*service) {
                return Err(TopologyError { line: i + 1, message: format!("`{service}` depends on itself") });
            }
            rows.insert(TopologyRow { service, depends_on, team: get(2), tier: get(3) });
        }
        Ok(Topology { rows })
    }

    /// The changes that turn `self` into `new`, stamped `ts`: retractions first.
    pub fn diff(&self, new: &Topology, ts: i64) -> Vec<TopologyChange> {
        let change = |r: &TopologyRow, diff| TopologyChange {
            service: r.service.clone(),
            depends_on: r.depends_on.clone(),
            team: r.team.clone(),
            tier: r.tier.clone(),
            diff,
            ts,
        };
        let mut out: Vec<TopologyChange> = self.rows.difference(&new.rows).map(|r| change(r, -1)).collect();
        out.extend(new.rows.difference(&self.rows).map(|r| change(r, 1)));
        out
    }

    /// Every row as an insertion at `ts`.
    pub fn changes(&self, ts: i64) -> Vec<TopologyChange> {
        Topology::default().diff(self, ts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_header_and_diffs() {
        let a = Topology::parse_csv("service,depends_on,team,tier\napi,db,core,1\nweb,api,,\n\n# comment\ndb,,data,0\n").unwrap();
        assert_eq!(a.rows.len(), 3);
        let db = a.rows.iter().find(|r| &*r.service == "db").unwrap();
        assert_eq!((db.depends_on.as_deref(), db.team.as_deref(), db.tier.as_deref()), (None, Some("data"), Some("0")));
        let b = Topology::parse_csv("api,db,core,1\nweb,cache\n").unwrap();
        let d = a.diff(&b, 5);
        let summary: Vec<(String, Option<String>, i64)> =
            d.iter().map(|c| (c.service.to_string(), c.depends_on.as_deref().map(str::to_string), c.diff)).collect();
        assert_eq!(summary, vec![("db".into(), None, -1), ("web".into(), Some("api".into()), -1), ("web".into(), Some("cache".into()), 1)]);
        assert!(d.iter().all(|c| c.ts == 5));
        assert_eq!(a.changes(0).len(), 3);
        let named = Topology::parse_csv("service,tier,depends_on\napi,1,db\n").unwrap();
        assert_eq!(named.rows.iter().next().unwrap().depends_on.as_deref(), Some("db"));
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(Topology::parse_csv("a,b\n,c\n").unwrap_err().to_string(), "line 2: the `service` cell is empty");
        assert!(Topology::parse_csv("a,a\n").unwrap_err().to_string().contains("depends on itself"));
        assert!(Topology::parse_csv("service,x\n").unwrap_err().to_string().contains("no `depends_on` column"));
    }
}
