//! [`Deadline`]: the budget of a load or refresh, moved later by the time the process spends frozen.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::later;

/// The deadline of a load or refresh, moved later by the time the process spends frozen.
///
/// Several calls of one refresh run concurrently and may all see the same freeze: each gives back
/// the time lost *relative to the deadline it saw before waiting*, so one freeze is given back
/// once.
#[derive(Debug)]
pub(crate) struct Deadline(Mutex<(Instant, bool)>);

impl Deadline {
    pub(crate) fn new(at: Instant) -> Self {
        Deadline(Mutex::new((at, false)))
    }

    pub(crate) fn get(&self) -> Instant {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Gives back `lost` to a deadline that was `seen` before the wait (unless it was fixed).
    pub(crate) fn give_back(&self, seen: Instant, lost: Duration) {
        if lost > Duration::ZERO {
            let mut at = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if !at.1 {
                at.0 = at.0.max(later(seen, lost));
            }
        }
    }

    /// Fixes the deadline where it is: no time lost to a freeze is given back after this (the work
    /// it bounds keeps what is left of its budget).
    pub(crate) fn fix(&self) {
        let mut at = self.0.lock().unwrap_or_else(|e| e.into_inner());
        at.1 = true;
    }
}
