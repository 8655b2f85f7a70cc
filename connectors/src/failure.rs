//! The first fatal error of a run, shared by every worker: sources stop reading once it is set,
//! so the dataflow drains and the run ends with that error instead of a hang or a panic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A shared, write-once failure slot.
#[derive(Clone, Default)]
pub struct Failure(Arc<(AtomicBool, Mutex<Option<String>>)>);

impl Failure {
    /// A new, unset slot.
    pub fn new() -> Self {
        Self::default()
    }
    /// Records `message` unless an earlier failure was recorded.
    pub fn set(&self, message: String) {
        let mut slot = self.0.1.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            tracing::error!("{message}");
            *slot = Some(message);
        }
        self.0.0.store(true, Ordering::Release);
    }
    /// Whether a failure was recorded.
    pub fn is_set(&self) -> bool {
        self.0.0.load(Ordering::Acquire)
    }
    /// The recorded failure.
    pub fn get(&self) -> Option<String> {
        self.0.1.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
