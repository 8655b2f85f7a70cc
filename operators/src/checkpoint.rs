//! An operator's part in checkpoints (see `alertflow_checkpoint`): what every stateful
//! operator does the same way.
//!
//! An operator handles epochs only up to the pending checkpoint `B`; once its input frontier
//! has passed `B` it saves its state — which then holds exactly the epochs before `B` — and
//! goes on. Records of later epochs that it already holds are not part of the state: the
//! sources replay them after a restart.

use alertflow_checkpoint::Participant;
use serde::Serialize;
use serde::de::DeserializeOwned;
use timely::progress::frontier::MutableAntichain;

use crate::Time;

/// One operator instance's checkpointing: inert when the run does not checkpoint.
pub struct Saver(Option<Participant>, bool);

impl Saver {
    /// Registers the operator `name` on `worker` with the run's checkpoints, if it takes any.
    /// Call while the operator is built.
    pub fn register(name: &str, worker: usize) -> Saver {
        Saver(alertflow_checkpoint::register(name, worker), false)
    }

    /// The state saved for the checkpoint the run resumes from, if it does. A part that cannot
    /// be read fails the run (the error names the operator) and the operator starts empty.
    pub fn restore<T: DeserializeOwned>(&mut self) -> Option<T> {
        let p = self.0.as_mut()?;
        match p.restore() {
            Ok(t) => t,
            Err(e) => {
                p.fail(e);
                None
            }
        }
    }

    /// Whether the run checkpoints.
    pub fn active(&self) -> bool {
        self.0.is_some()
    }

    /// The time the run resumes at (0: fresh).
    pub fn resumed_at(&self) -> Time {
        self.0.as_ref().map_or(0, |p| p.resumed_at())
    }

    /// The checkpoint not saved yet: handle nothing at or after it.
    #[inline]
    pub fn pending(&self) -> Option<Time> {
        self.0.as_ref().and_then(|p| p.pending())
    }

    /// Saves `state()` for `until` if the frontier has passed it; returns whether it did (then
    /// handle again, up to the frontier). The state is a closure because operators call this
    /// every time they are scheduled: building a copy of the state eagerly (the windows'
    /// open panes) cost more than all the rest of the window's work.
    pub fn save_if_passed<T: Serialize>(
        &mut self,
        frontier: &MutableAntichain<Time>,
        until: Option<Time>,
        state: impl FnOnce() -> T,
    ) -> bool {
        match (until, self.0.as_mut()) {
            (Some(b), Some(p)) if passed(frontier, b) => {
                p.save(b, &state());
                true
            }
            _ => false,
        }
    }
}

impl Saver {
    /// Once the input has ended, hands over the final state: the operator is not scheduled any
    /// more, and every later checkpoint takes it as is (nothing can change it).
    pub fn finish_if_done<T: Serialize>(&mut self, frontier: &MutableAntichain<Time>, state: impl FnOnce() -> T) {
        if !frontier.is_empty() || self.1 {
            return;
        }
        if let Some(p) = self.0.as_mut() {
            self.1 = true;
            p.finish::<(), _>(&[], &state());
        }
    }
}

/// The least time not to handle yet: the frontier's, or a pending checkpoint's if earlier
/// (`None`: everything).
#[inline]
pub fn limit_of(frontier: &MutableAntichain<Time>, until: Option<Time>) -> Option<Time> {
    match (frontier.frontier().iter().next().copied(), until) {
        (Some(f), Some(u)) => Some(f.min(u)),
        (f, u) => f.or(u),
    }
}

/// Whether no time before `t` can still arrive.
#[inline]
pub fn passed(frontier: &MutableAntichain<Time>, t: Time) -> bool {
    frontier.frontier().iter().all(|f| *f >= t)
}
