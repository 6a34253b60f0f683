//! Spreading: the calls of a background refresh to a scarce quota start at spread points of a
//! window ([`Spread`]), unless someone waits for the refresh ([`Urgency`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Whether someone waits for a refresh: set by an invocation that finds a value past its maximum
/// staleness while that value's refresh is spreading its calls. One per refresh, so the end of
/// another refresh never resets it.
#[derive(Debug, Default)]
pub(crate) struct Urgency {
    urgent: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Urgency {
    pub(crate) fn urgent() -> Self {
        Urgency {
            urgent: AtomicBool::new(true),
            notify: tokio::sync::Notify::new(),
        }
    }

    /// Ends the spreading of this refresh's calls: the waiting ones start now.
    pub(crate) fn hurry(&self) {
        if !self.urgent.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    pub(crate) fn is_urgent(&self) -> bool {
        self.urgent.load(Ordering::Acquire)
    }

    /// Sleeps until `until` or until hurried; returns the time lost to a freeze.
    pub(super) async fn sleep_until(&self, until: Instant) -> Duration {
        let notified = self.notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if self.is_urgent() {
            return Duration::ZERO;
        }
        let sleep = std::pin::pin!(crate::time::freeze::sleep_until(until));
        match futures_util::future::select(sleep, notified).await {
            futures_util::future::Either::Left((lost, _)) => lost,
            futures_util::future::Either::Right(_) => Duration::ZERO,
        }
    }
}

/// How a background refresh spreads its calls to scarce quotas.
#[derive(Debug)]
pub(super) struct Spread {
    pub(super) start: Instant,
    pub(super) window: Duration,
    /// The refresh's random offset in the sequence of slots, and the calls that took one.
    pub(super) offset: f64,
    pub(super) calls: std::sync::atomic::AtomicU32,
    pub(super) urgency: Arc<Urgency>,
}
