//! Time: overflow-safe instants ([`later`], [`never`]), the [`Deadline`] of a load or refresh,
//! time lost to Lambda freezes ([`freeze`]), when values are refreshed ([`schedule`], pure
//! functions), and the wall clock of dates a source states ([`wall`]).
//!
//! Every clock here is `tokio::time::Instant`, which is `std::time::Instant` in a normal build and
//! the runtime's virtual clock under `tokio::time::pause` (tests advance it to simulate freezes).

mod deadline;
pub(crate) mod freeze;
pub(crate) mod schedule;
pub(crate) mod wall;

use std::time::Duration;

use tokio::time::Instant;

pub(crate) use deadline::Deadline;

/// `now + d`, or a far-away instant where that does not fit (settings are validated, but no
/// arithmetic on the request path may panic).
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or_else(|| never(now))
}

/// An instant so far ahead that nothing is ever due at it.
pub(crate) fn never(now: Instant) -> Instant {
    now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600))
        .or_else(|| now.checked_add(Duration::from_secs(3600)))
        .unwrap_or(now)
}
