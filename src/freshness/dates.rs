//! [`Dates`]: what a source said about a value's time (refresh it by this date; it is no good
//! after that one), and [`Expiry`], the same expiry as the instants the state machine compares.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::snapshot::ValueInfo;
use crate::source::Fetched;
use crate::time::{later, schedule, wall};

/// A source's "refresh me by" ([`Fetched::refresh_by`]) and expiry ([`Fetched::expires_at`]) for
/// one item: the earliest of its values'.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Dates {
    pub(crate) refresh_by: Option<SystemTime>,
    pub(crate) expires_at: Option<SystemTime>,
}

impl Dates {
    /// The earliest dates among `fetched`.
    pub(crate) fn of(fetched: &[Fetched]) -> Dates {
        Dates {
            refresh_by: fetched.iter().filter_map(|f| f.refresh_by).min(),
            expires_at: fetched.iter().filter_map(|f| f.expires_at).min(),
        }
    }

    /// The dates a value was published with.
    #[cfg_attr(not(feature = "on-demand"), allow(dead_code))] // used by on_demand only
    pub(crate) fn of_info(info: &ValueInfo) -> Dates {
        Dates {
            refresh_by: info.refresh_by,
            expires_at: info.expires_at,
        }
    }
}

/// When a value that expires stops being served, and when its refresh is due ahead of that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expiry {
    /// It is never served from here on.
    pub(crate) at: Instant,
    /// Its refresh is due here: [`schedule::expiry_margin`] of its lifetime before `at`.
    pub(crate) renew_at: Instant,
}

impl Expiry {
    /// A value arrived `now` that is no good after `expires_at` (already past: it expires now).
    pub(crate) fn new(expires_at: SystemTime, now: Instant) -> Expiry {
        let lifetime = wall::until(expires_at).unwrap_or(Duration::ZERO);
        Expiry {
            at: later(now, lifetime),
            renew_at: later(now, lifetime - schedule::expiry_margin(lifetime)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_token_is_renewed_a_minute_or_a_tenth_of_its_life_ahead() {
        let now = Instant::now();
        let in_15_min = wall::now() + Duration::from_secs(900);
        let e = Expiry::new(in_15_min, now);
        assert_eq!(e.at - now, Duration::from_secs(900));
        assert_eq!(e.at - e.renew_at, Duration::from_secs(60));
        let in_2_min = wall::now() + Duration::from_secs(120);
        let e = Expiry::new(in_2_min, now);
        assert_eq!(e.at - e.renew_at, Duration::from_secs(12));
        let past = wall::now() - Duration::from_secs(1);
        let e = Expiry::new(past, now);
        assert_eq!((e.at, e.renew_at), (now, now));
    }

    #[test]
    fn the_earliest_date_of_an_items_values_counts() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let fetched = [
            Fetched::new("a", "1").with_expires_at(Some(t + Duration::from_secs(5))),
            Fetched::new("b", "2")
                .with_expires_at(Some(t))
                .with_refresh_by(Some(t)),
            Fetched::new("c", "3"),
        ];
        assert_eq!(
            Dates::of(&fetched),
            Dates {
                refresh_by: Some(t),
                expires_at: Some(t)
            }
        );
    }
}
