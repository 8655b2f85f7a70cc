//! Enrich: joins alert lifecycle rows with the topology reference data (DESIGN §4–§5): the
//! `team` and `tier` of the alert's service. The reference data changes while a pipeline runs
//! (the topology file is reloaded; each change is stamped with an event time), so rows are
//! handled in event-time order with the changes, a change applying to the rows at or after
//! its time: the same input gives the same table at any worker count.

use std::collections::BTreeMap;
use std::sync::Arc;

use alertflow_model::alert::AlertEvent;
use alertflow_model::topology::TopologyChange;
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Broadcast, Map};

use crate::Time;
use crate::checkpoint::Saver;
use crate::ordered::{Due, Ordered, Timed};

/// What enrich handles, in event-time order: changes before rows of the same time.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum In {
    Change(TopologyChange),
    Row(AlertEvent),
}

impl Timed for In {
    fn ts(&self) -> i64 {
        match self {
            In::Change(c) => c.ts,
            In::Row(e) => e.ts,
        }
    }
    fn origin(&self) -> (u32, u64) {
        match self {
            In::Change(_) => (0, 0),
            In::Row(e) => (e.part, e.pos),
        }
    }
    fn rank(&self) -> u8 {
        match self {
            In::Change(_) => 0,
            In::Row(_) => 1,
        }
    }
}

/// Per service: (team, tier) with the number of topology rows saying so. A service has one row
/// per dependency edge; rows that disagree are resolved by the smallest value, so the answer
/// does not depend on the order rows arrive in.
#[derive(Default, Serialize, Deserialize)]
struct Services(HashMap<Arc<str>, BTreeMap<TeamTier, i64>>);

/// A service's (team, tier) as one topology row gives them.
type TeamTier = (Option<Arc<str>>, Option<Arc<str>>);

impl Services {
    fn apply(&mut self, c: &TopologyChange) {
        let m = self.0.entry(c.service.clone()).or_default();
        let n = m.entry((c.team.clone(), c.tier.clone())).or_insert(0);
        *n += c.diff;
        if *n <= 0 {
            m.remove(&(c.team.clone(), c.tier.clone()));
        }
        if m.is_empty() {
            self.0.remove(&c.service);
        }
    }

    fn of(&self, service: &str) -> TeamTier {
        let Some(m) = self.0.get(service) else { return (None, None) };
        let team = m.keys().find_map(|(t, _)| t.clone());
        let tier = m.keys().filter_map(|(_, t)| t.clone()).min();
        (team, tier)
    }
}

/// Builds enrichment on lifecycle rows.
pub trait EnrichExt<'s> {
    /// Sets `team` and `tier` of each row from the topology, by the label `service_label`.
    fn enrich(self, service_label: &str, topology: Stream<'s, Time, Vec<TopologyChange>>, epoch: i64) -> Stream<'s, Time, Vec<AlertEvent>>;
}

impl<'s> EnrichExt<'s> for Stream<'s, Time, Vec<AlertEvent>> {
    fn enrich(self, service_label: &str, topology: Stream<'s, Time, Vec<TopologyChange>>, epoch: i64) -> Stream<'s, Time, Vec<AlertEvent>> {
        let label: Arc<str> = service_label.into();
        let worker = self.scope().index();
        self.map(In::Row).binary_frontier::<_, CapacityContainerBuilder<Vec<AlertEvent>>, _, _, _, _>(
            topology.broadcast().map(In::Change),
            Exchange::new(|i: &In| match i {
                In::Row(e) => e.fingerprint(),
                In::Change(_) => 0,
            }),
            Pipeline,
            "enrich",
            move |cap, _info| {
                let mut ordered: Ordered<In> = Ordered::new(cap, epoch);
                let mut services = Services::default();
                let mut saver = Saver::register("enrich", worker);
                if let Some(saved) = saver.restore::<Services>() {
                    services = saved;
                }
                let mut out: BTreeMap<Time, Vec<AlertEvent>> = BTreeMap::new();
                move |(rows, f1), (changes, f2), output| {
                    rows.for_each_stamp(|_, data| data.for_each(|b| b.drain(..).for_each(|r| ordered.push(r))));
                    changes.for_each_stamp(|_, data| data.for_each(|b| b.drain(..).for_each(|c| ordered.push(c))));
                    let mut frontier = f1.clone();
                    frontier.update_iter(f2.frontier().iter().map(|t| (*t, 1)));
                    loop {
                        let until = saver.pending();
                        ordered.begin_until(&frontier, until);
                        while let Some(due) = ordered.next_due() {
                            ordered.prefetch_labels(|r| match r {
                                In::Row(e) => Some(&e.labels),
                                In::Change(_) => None,
                            });
                            match due {
                                Due::Record(In::Change(c)) => services.apply(&c),
                                Due::Record(In::Row(mut e)) => {
                                    if let Some(s) = e.labels.get(&label) {
                                        (e.team, e.tier) = services.of(s);
                                    }
                                    out.entry(ordered.epoch_of(e.ts)).or_default().push(e);
                                }
                                Due::Timer(..) => {}
                            }
                        }
                        for (t, mut rows) in std::mem::take(&mut out) {
                            if let Some(cap) = ordered.cap_at(t as i64) {
                                output.session(&cap).give_container(&mut rows);
                            }
                        }
                        // No timers: the state is the services alone.
                        if !saver.save_if_passed(&frontier, until, || &services) {
                            break;
                        }
                    }
                    saver.finish_if_done(&frontier, || &services);
                    ordered.settle(&frontier);
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(service: &str, team: Option<&str>, tier: Option<&str>, diff: i64) -> TopologyChange {
        TopologyChange { service: service.into(), depends_on: None, team: team.map(Into::into), tier: tier.map(Into::into), diff, ts: 0 }
    }

    #[test]
    fn services_follow_additions_and_retractions() {
        let mut s = Services::default();
        s.apply(&change("api", Some("core"), Some("1"), 1));
        s.apply(&change("api", Some("core"), Some("1"), 1)); // a second edge row
        s.apply(&change("web", None, None, 1));
        assert_eq!(s.of("api"), (Some("core".into()), Some("1".into())));
        assert_eq!(s.of("web"), (None, None));
        assert_eq!(s.of("nope"), (None, None));
        s.apply(&change("api", Some("core"), Some("1"), -1));
        assert_eq!(s.of("api").0.as_deref(), Some("core"), "one row still says so");
        s.apply(&change("api", Some("core"), Some("1"), -1));
        s.apply(&change("api", Some("platform"), Some("0"), 1));
        assert_eq!(s.of("api"), (Some("platform".into()), Some("0".into())));
    }
}
