//! The topology source: reference data (DESIGN §5) read from a CSV file at start and re-read
//! whenever the file changes while the pipeline runs.
//!
//! The file changes on wall-clock time, but everything downstream is in event time, so a
//! change is stamped with the **data frontier** at the moment it is read (the least event-time
//! epoch the alert sources may still emit) and logged with that time. The source follows the
//! data frontier with its capability, so it never holds the dataflow back, and stops when the
//! data sources are done. Only worker 0 reads the file; correlate broadcasts the changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use alertflow_model::topology::{Topology, TopologyChange};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};

use crate::Time;

/// How often the file's modification time is checked.
const POLL: Duration = Duration::from_millis(250);

/// A topology file, read once when the pipeline is planned (a bad file is a configuration
/// error then; later a bad version is logged and the last good one kept).
#[derive(Debug, Clone)]
pub struct TopologyFile {
    /// Where it is.
    pub path: PathBuf,
    /// How messages name it.
    pub display: String,
    /// Its contents at planning time.
    pub initial: Topology,
    /// Its modification time and length then.
    pub stamp: Option<(SystemTime, u64)>,
}

impl TopologyFile {
    /// Reads and parses the file.
    pub fn load(path: PathBuf, display: String) -> Result<TopologyFile, String> {
        let stamp = file_stamp(&path);
        let initial = read(&path, &display)?;
        Ok(TopologyFile { path, display, initial, stamp })
    }
}

fn read(path: &std::path::Path, display: &str) -> Result<Topology, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {display}: {e}"))?;
    Topology::parse_csv(&text).map_err(|e| format!("{display} {e}"))
}

fn file_stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Builds the topology source. `frontier_of` is any stream whose frontier is the alert data's
/// (its records are ignored): the source is scheduled when it moves.
pub fn topology_source<'s, D: timely::Container>(
    scope: Scope<'s, Time>,
    file: Arc<TopologyFile>,
    frontier_of: Stream<'s, Time, D>,
) -> Stream<'s, Time, Vec<TopologyChange>> {
    let mut builder = OperatorBuilder::new(format!("topology:{}", file.display), scope);
    let activator = scope.activator_for(builder.operator_info().address.clone());
    let (out, stream) = builder.new_output::<Vec<TopologyChange>>();
    let mut out = OutputBuilder::<Time, CapacityContainerBuilder<Vec<TopologyChange>>>::from(out);
    let mut input = builder.new_input(frontier_of, Pipeline);
    let reader = scope.index() == 0;

    // Worker 0's reader is a checkpoint participant: its state is the topology it has sent. A
    // restored run sends the difference to the file as it is now, at the checkpoint's time.
    let mut ckpt = if reader { alertflow_checkpoint::register("topology", 0) } else { None };
    builder.build(move |mut caps| {
        let mut cap = caps.pop().filter(|_| reader);
        let mut current = Topology::default();
        if let Some(p) = ckpt.as_mut() {
            match p.restore::<Topology>() {
                Ok(Some(t)) => {
                    current = t;
                    if let Some(c) = cap.as_mut() {
                        c.downgrade(&p.resumed_at());
                    }
                }
                Ok(None) => {}
                Err(e) => p.fail(e),
            }
        }
        let mut stamp = file.stamp;
        let mut started = false;
        let mut next_poll = Instant::now() + POLL;
        // When the pending delayed activation fires (one at a time: every activation
        // scheduling its own would multiply them).
        let mut wake: Option<Instant> = None;
        move |frontiers| {
            input.for_each(|_, _| {});
            let Some(c) = cap.as_mut() else { return };
            if !started {
                started = true;
                let mut changes = current.diff(&file.initial, *c.time() as i64);
                current = file.initial.clone();
                out.activate().session(&*c).give_container(&mut changes);
            }
            let Some(&low) = frontiers[0].frontier().iter().next() else {
                // The data is done: nothing can change any more.
                if let Some(p) = ckpt.as_mut() {
                    p.finish::<(), _>(&[], &current);
                }
                cap = None;
                return;
            };
            if low > *c.time() {
                c.downgrade(&low);
            }
            // Everything sent so far is at times before the data frontier: the topology as of
            // any checkpoint the frontier has passed.
            if let Some(p) = ckpt.as_mut()
                && let Some(b) = p.pending()
                && low >= b
            {
                p.save(b, &current);
            }
            if Instant::now() >= next_poll {
                next_poll = Instant::now() + POLL;
                let now = file_stamp(&file.path);
                if now != stamp {
                    stamp = now;
                    match read(&file.path, &file.display) {
                        Ok(new) => {
                            let mut changes = current.diff(&new, low as i64);
                            if !changes.is_empty() {
                                let added = changes.iter().filter(|c| c.diff > 0).count();
                                tracing::info!(
                                    "topology {}: reloaded at event time {low}: {added} row(s) added, {} removed",
                                    file.display,
                                    changes.len() - added
                                );
                                current = new;
                                out.activate().session(&*c).give_container(&mut changes);
                            }
                        }
                        Err(e) => tracing::warn!("topology: keeping the previous version: {e}"),
                    }
                }
            }
            let now = Instant::now();
            if wake.is_none_or(|w| now >= w) {
                wake = Some(now + POLL);
                activator.activate_after(POLL);
            }
        }
    });
    stream
}
