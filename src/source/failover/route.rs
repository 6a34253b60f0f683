//! [`Route`]: where a source with a failover Region sends its next calls, and how it comes back.
//!
//! ```text
//!            primary failed (transient)              backoff over: probe the primary
//!   Primary ───────────────────────────▶ Replica ──────────────────────────────▶ (Primary first)
//!      ▲                                   │  primary answered (anything but a transient failure)
//!      └───────────────────────────────────┘
//! ```
//!
//! While `Replica` and its backoff runs, calls go straight to the failover Region: a primary that
//! is down is not asked by every refresh, and a flapping one does not double every call. The
//! backoff is the freshness core's (1 s doubling to 60 s, jittered); once it is over, the next
//! call asks the primary again, and the first answer from it returns there (failback).

use std::time::Duration;

use tokio::time::Instant;

use crate::time::{later, schedule};

/// The core's failure backoff: first wait and longest.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Which Region answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Primary,
    Replica,
}

/// The failover state of one source in one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Route {
    /// Calls go to the primary (and to the failover Region for what it fails).
    #[default]
    Primary,
    /// The primary failed `failures` times in a row; calls go to the failover Region until
    /// `until`, then the primary is asked again.
    Replica { failures: u32, until: Instant },
}

impl Route {
    /// Where the next call goes first.
    pub(crate) fn first(&self, now: Instant) -> Side {
        match *self {
            Route::Replica { until, .. } if now < until => Side::Replica,
            _ => Side::Primary,
        }
    }

    /// The primary failed for good (every answer transient, or none in time): the failover
    /// Region serves for a backoff that grows with each failure in a row. `random` in `[0, 1)`.
    pub(crate) fn primary_failed(&mut self, now: Instant, random: f64) {
        // Concurrent calls of one outage (a load's batches, another refresh) fail together: one
        // failure, not several, or the backoff would climb to its longest at once.
        if matches!(*self, Route::Replica { until, .. } if now < until) {
            return;
        }
        let failures = match *self {
            Route::Primary => 1,
            Route::Replica { failures, .. } => failures.saturating_add(1),
        };
        let wait = schedule::failure_backoff(BACKOFF_FIRST, BACKOFF_MAX, failures, random);
        *self = Route::Replica {
            failures,
            until: later(now, wait),
        };
    }

    /// The primary answered: back to it.
    pub(crate) fn primary_answered(&mut self) {
        *self = Route::Primary;
    }

    /// After a SnapStart restore: whatever failed before the snapshot says nothing now.
    pub(crate) fn reset(&mut self) {
        *self = Route::Primary;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_failed_primary_is_skipped_for_a_growing_backoff_then_asked_again() {
        let t0 = Instant::now();
        let mut route = Route::default();
        assert_eq!(route.first(t0), Side::Primary);
        route.primary_failed(t0, 0.999);
        assert_eq!(route.first(t0), Side::Replica);
        assert_eq!(route.first(t0 + Duration::from_millis(900)), Side::Replica);
        assert_eq!(
            route.first(t0 + Duration::from_secs(1)),
            Side::Primary,
            "probed after 1 s"
        );
        route.primary_failed(t0 + Duration::from_secs(1), 0.999);
        assert_eq!(
            route.first(t0 + Duration::from_millis(2900)),
            Side::Replica,
            "2 s now"
        );
        route.primary_answered();
        assert_eq!(
            route.first(t0 + Duration::from_millis(2900)),
            Side::Primary,
            "failback"
        );
    }

    proptest! {
        /// Over any sequence of outcomes, the primary is asked again within the longest backoff
        /// of its last failure, and never skipped once it answered.
        #[test]
        fn the_primary_is_probed_within_the_longest_backoff(
            events in proptest::collection::vec((any::<bool>(), 0u64..120_000, 0.0f64..1.0), 1..60)
        ) {
            let mut now = Instant::now();
            let mut route = Route::default();
            for (failed, gap_ms, random) in events {
                now += Duration::from_millis(gap_ms);
                if failed {
                    route.primary_failed(now, random);
                    prop_assert_eq!(route.first(now + BACKOFF_MAX), Side::Primary);
                } else {
                    route.primary_answered();
                    prop_assert_eq!(route.first(now), Side::Primary);
                }
            }
        }
    }
}
