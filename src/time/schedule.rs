//! When values are refreshed, so that a fleet of containers spreads its calls over time, and so
//! that a changed value is served within a stated bound.
//!
//! Every decision is a pure function of its inputs (`now`, the TTL, a random number), shared by
//! the store and by the fleet simulation in `examples/fleet.rs`:
//!
//! - [`next_refresh`]: after a cold load, the first refresh comes after a uniformly random
//!   fraction (5 % to 100 %) of the TTL: a deploy that starts many containers at once would
//!   otherwise have them all refresh together one TTL later, and again every TTL after. Later
//!   refreshes come after the TTL less a random fraction of it (the jitter, 10 % by default),
//!   counted from the **start** of the refresh that read the values ([`next_refresh_at`]).
//! - [`batch_window`]: values due within the jitter of the shortest due TTL are refreshed
//!   together, so a container's values keep being fetched in few batched calls.
//! - [`spread_window`] and [`call_slot`]: the calls of a background refresh to a *scarce* quota
//!   (SSM's 40 calls a second per account; `BatchGetSecretValue`'s 100) start at evenly spread
//!   points, from a random offset, of a window of at most [`MAX_SPREAD`] of the shortest TTL in
//!   the batch. Calls to
//!   plentiful quotas (`DescribeSecret`, `GetSecretValue`, KMS `Decrypt`) are never spread, and
//!   neither are loads, forced refreshes and refreshes of failing or stale values.
//! - [`failure_backoff`]: a failed refresh is retried after an exponential, jittered backoff.
//! - [`default_staleness`]: how old a value may get before it is no longer served (an invocation
//!   through the layer then waits for its refresh).
//! - [`next_due`]: when the next refresh of values just read is due (the TTL less the jitter,
//!   counted from the start of the refresh that read them; by 90 % of the maximum staleness at the
//!   latest; at a source's "refresh me by" if that comes first).
//! - [`expiry_margin`]: how long before its expiry a value that expires (a token) is refreshed.
//!
//! What these give a changed value is stated once, in the crate docs' freshness section (the
//! freshness bound).

use std::time::Duration;

/// Default fraction of the TTL over which a refresh's calls to a scarce quota are spread.
pub const DEFAULT_SPREAD: f64 = 0.1;
/// The largest spread a builder accepts: spreading may delay a value by at most this fraction of
/// its TTL.
pub const MAX_SPREAD: f64 = 0.1;
/// The earliest first refresh, as a fraction of the TTL.
const FIRST_MIN: f64 = 0.05;

/// A value is refreshed at the latest at this fraction of its maximum staleness, so that a maximum
/// staleness set close to the TTL does not make invocations wait while the source answers.
pub const REFRESH_BY_STALENESS_FRACTION: f64 = 0.9;

/// The least time between a refresh and the next one asked for by a source's "refresh me by"
/// (a rotation date just passed, an expiring token): never a loop of refreshes.
pub const MIN_REFRESH_GAP: Duration = Duration::from_secs(1);

/// The most a value with an expiry (an IAM auth token) is refreshed ahead of it.
pub const EXPIRY_MARGIN_MAX: Duration = Duration::from_secs(60);
/// The fraction of its lifetime a value with an expiry is refreshed ahead of it, when that is
/// less than [`EXPIRY_MARGIN_MAX`].
pub const EXPIRY_MARGIN_FRACTION: f64 = 0.1;

/// How long before its expiry a value that lives `lifetime` from its arrival is refreshed: a
/// minute or a tenth of its lifetime, whichever is smaller (a 15-minute token is refreshed 60 s
/// ahead, one that lives 2 minutes because its credentials do, 12 s ahead).
pub fn expiry_margin(lifetime: Duration) -> Duration {
    lifetime.mul_f64(EXPIRY_MARGIN_FRACTION).min(EXPIRY_MARGIN_MAX)
}

/// Delay before the next refresh of values fetched now. `random` is uniform in `[0, 1)`;
/// `first` is true right after a cold load.
pub fn next_refresh(ttl: Duration, jitter: f64, first: bool, random: f64) -> Duration {
    let random = random.clamp(0.0, 1.0);
    if first {
        ttl.mul_f64(FIRST_MIN + (1.0 - FIRST_MIN) * random)
    } else {
        ttl.mul_f64(1.0 - jitter.clamp(0.0, 1.0) * random)
    }
}

/// When the next refresh is due, for a refresh that started at `started` and ended at `ended`:
/// `delay` (from [`next_refresh`]) after the start, since the value may have been read any time
/// after it; but no earlier than a tenth of the TTL after the end, so that a refresh slower
/// than the TTL is not followed by another at once.
pub fn next_refresh_at<I>(started: I, ended: I, ttl: Duration, delay: Duration) -> I
where
    I: Copy + Ord + std::ops::Add<Duration, Output = I>,
{
    (started + delay).max(ended + ttl / 10)
}

/// How long after `now` the next refresh of values is due, for values read by a refresh that
/// started `elapsed` before `now` (it ended now) with this TTL and maximum staleness: `delay`
/// (from [`next_refresh`]) after that refresh's start ([`next_refresh_at`]), no later than
/// [`REFRESH_BY_STALENESS_FRACTION`] of the staleness from now, and no later than `refresh_in`,
/// the time until the source's "refresh me by" (never less than [`MIN_REFRESH_GAP`]; a
/// "refresh me by" in the past is `None`: no reason to hurry). The `bool` tells whether
/// `refresh_in` decided it.
pub fn next_due(
    elapsed: Duration,
    ttl: Duration,
    staleness: Duration,
    delay: Duration,
    refresh_in: Option<Duration>,
) -> (Duration, bool) {
    // Offsets from the refresh's start.
    let by_ttl = next_refresh_at(Duration::ZERO, elapsed, ttl, delay).saturating_sub(elapsed);
    let wait = by_ttl.min(staleness.mul_f64(REFRESH_BY_STALENESS_FRACTION));
    match refresh_in.map(|until| until.max(MIN_REFRESH_GAP)) {
        Some(by) if by < wait => (by, true),
        _ => (wait, false),
    }
}

/// How far ahead of `now` a healthy value may be due and still join a refresh starting now:
/// the jitter of the shortest TTL among the values due now, so a long-TTL value is not refreshed
/// early because a short-TTL one is due.
pub fn batch_window(shortest_due_ttl: Duration, jitter: f64) -> Duration {
    shortest_due_ttl.mul_f64(jitter.clamp(0.0, 1.0))
}

/// The window over which a background refresh spreads its calls to scarce quotas: `spread` of
/// the shortest TTL in the batch (never more than [`MAX_SPREAD`] of it).
pub fn spread_window(shortest_ttl: Duration, spread: f64) -> Duration {
    let spread = if spread.is_nan() {
        0.0
    } else {
        spread.clamp(0.0, MAX_SPREAD)
    };
    shortest_ttl.mul_f64(spread)
}

/// When the `index`-th spread call of a refresh may start, as an offset from the refresh's start:
/// a point of the window taken from a low-discrepancy sequence (golden-ratio stride) from a
/// random `offset` in `[0, 1)` drawn once per refresh. A refresh's calls are evenly spread over
/// the window whatever their number (which a path's paging does not tell in advance), and the
/// random offset keeps the containers of a fleet independent of one another.
pub fn call_slot(window: Duration, offset: f64, index: u32) -> Duration {
    const GOLDEN: f64 = 0.618_033_988_749_895;
    let point = (offset.clamp(0.0, 1.0) + f64::from(index) * GOLDEN).fract();
    window.mul_f64(point)
}

/// Delay before retrying after the `failures`-th failed refresh in a row (`failures` ≥ 1):
/// `first`, doubling with each failure up to `max`, times a random factor in `[0.5, 1)`.
pub fn failure_backoff(first: Duration, max: Duration, failures: u32, random: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    first
        .saturating_mul(1 << exp)
        .min(max)
        .mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0))
}

/// Maximum staleness of a value when none is configured: three TTLs, and never less than a TTL
/// plus the spread and a whole refresh budget, so that a normal refresh always finishes before an
/// invocation would have to wait.
pub fn default_staleness(ttl: Duration, spread: f64, refresh_budget: Duration) -> Duration {
    let floor = ttl + spread_window(ttl, spread) + refresh_budget;
    ttl.saturating_mul(3).max(floor)
}

/// The freshness bound of a value with this TTL and spread, without the refresh's own duration:
/// `TTL × (1 + spread)` (see the module docs).
#[allow(dead_code)] // the tests and the fleet example use it
pub fn freshness_bound(ttl: Duration, spread: f64) -> Duration {
    ttl + spread_window(ttl, spread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn next_refresh_stays_within_its_range(ttl_ms in 1u64..10_000_000, jitter in 0.0f64..0.5, r in 0.0f64..1.0) {
            let ttl = Duration::from_millis(ttl_ms);
            let later = next_refresh(ttl, jitter, false, r);
            prop_assert!(later <= ttl && later >= ttl.mul_f64(1.0 - jitter) - Duration::from_nanos(1));
            let first = next_refresh(ttl, jitter, true, r);
            prop_assert!(first <= ttl && first >= ttl.mul_f64(FIRST_MIN) - Duration::from_nanos(1));
        }

        #[test]
        fn spreading_never_adds_more_than_a_tenth_of_the_ttl(ttl_ms in 1u64..10_000_000, spread in -1.0f64..10.0, r in 0.0f64..1.0, index in 0u32..100_000) {
            let ttl = Duration::from_millis(ttl_ms);
            let slot = call_slot(spread_window(ttl, spread), r, index);
            prop_assert!(slot <= ttl.mul_f64(MAX_SPREAD));
        }

        #[test]
        fn backoff_grows_and_is_bounded(first_ms in 1u64..10_000, max_ms in 1u64..600_000, failures in 1u32..100, r in 0.0f64..1.0) {
            let (first, max) = (Duration::from_millis(first_ms), Duration::from_millis(max_ms));
            let b = failure_backoff(first, max, failures, r);
            prop_assert!(b <= max);
            prop_assert!(b >= first.min(max) / 2 - Duration::from_nanos(1));
        }

        #[test]
        fn the_next_refresh_is_never_later_than_the_ttl_the_staleness_or_the_source_asks(
            elapsed_ms in 0u64..1_000_000, ttl_ms in 1u64..1_000_000, extra_ms in 0u64..1_000_000,
            jitter in 0.0f64..0.5, r in 0.0f64..1.0, by_ms in proptest::option::of(0u64..2_000_000),
        ) {
            let (elapsed, ttl) = (Duration::from_millis(elapsed_ms), Duration::from_millis(ttl_ms));
            let staleness = ttl + Duration::from_millis(extra_ms);
            let delay = next_refresh(ttl, jitter, false, r);
            let refresh_in = by_ms.map(Duration::from_millis);
            let (wait, by_source) = next_due(elapsed, ttl, staleness, delay, refresh_in);
            prop_assert!(wait <= staleness.mul_f64(REFRESH_BY_STALENESS_FRACTION).max(MIN_REFRESH_GAP));
            prop_assert!(wait <= ttl.saturating_sub(elapsed).max(ttl / 10));
            if let Some(by) = refresh_in {
                prop_assert!(wait <= by.max(MIN_REFRESH_GAP));
                prop_assert_eq!(by_source, by.max(MIN_REFRESH_GAP) < delay.saturating_sub(elapsed).max(ttl / 10).min(staleness.mul_f64(REFRESH_BY_STALENESS_FRACTION)));
            } else {
                prop_assert!(!by_source);
            }
        }

        #[test]
        fn default_staleness_leaves_room_for_a_refresh(ttl_ms in 1u64..10_000_000, spread in 0.0f64..0.1, budget_ms in 0u64..3_600_000) {
            let ttl = Duration::from_millis(ttl_ms);
            let budget = Duration::from_millis(budget_ms);
            let s = default_staleness(ttl, spread, budget);
            prop_assert!(s >= freshness_bound(ttl, spread) + budget);
        }
    }
}

/// The examples that were in this module's docs (it is private: doc tests cannot reach it).
#[cfg(test)]
mod documented_examples {
    #[test]
    fn documented_example_1() {
        use super::{freshness_bound, DEFAULT_SPREAD};
        use std::time::Duration;

        let ttl = Duration::from_secs(300);
        // 330 s after a change, plus the refresh's own few round trips.
        assert_eq!(freshness_bound(ttl, DEFAULT_SPREAD), Duration::from_secs(330));
    }

    #[test]
    fn documented_example_2() {
        use super::next_refresh;
        use std::time::Duration;

        let ttl = Duration::from_secs(300);
        assert_eq!(next_refresh(ttl, 0.1, false, 0.0), ttl);
        assert_eq!(next_refresh(ttl, 0.1, false, 0.5), Duration::from_secs(285));
        assert_eq!(next_refresh(ttl, 0.1, true, 0.0), Duration::from_secs(15));
    }

    #[test]
    fn documented_example_3() {
        use super::next_refresh_at;
        use std::time::{Duration, Instant};

        let (ttl, start) = (Duration::from_secs(10), Instant::now());
        let quick = next_refresh_at(start, start + Duration::from_millis(50), ttl, ttl);
        assert_eq!(quick, start + ttl);
        let slow = next_refresh_at(start, start + Duration::from_secs(12), ttl, ttl);
        assert_eq!(slow, start + Duration::from_secs(13));
    }

    #[test]
    fn documented_example_4() {
        use super::batch_window;
        use std::time::Duration;
        assert_eq!(
            batch_window(Duration::from_secs(300), 0.1),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn documented_example_5() {
        use super::spread_window;
        use std::time::Duration;
        assert_eq!(
            spread_window(Duration::from_secs(2), 0.1),
            Duration::from_millis(200)
        );
        assert_eq!(
            spread_window(Duration::from_secs(2), 0.5),
            Duration::from_millis(200)
        );
        assert_eq!(spread_window(Duration::from_secs(2), 0.0), Duration::ZERO);
    }

    #[test]
    fn documented_example_6() {
        use super::call_slot;
        use std::time::Duration;
        let window = Duration::from_secs(30);
        assert_eq!(call_slot(window, 0.5, 0), Duration::from_secs(15));
        let mut slots: Vec<_> = (0..10).map(|i| call_slot(window, 0.25, i)).collect();
        slots.sort();
        // Ten calls, no two closer than a third of an even spacing, all inside the window.
        assert!(slots.windows(2).all(|w| w[1] - w[0] >= window / 30));
        assert!(slots.iter().all(|s| *s < window));
    }

    #[test]
    fn documented_example_7() {
        use super::failure_backoff;
        use std::time::Duration;
        let (first, max) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(failure_backoff(first, max, 1, 0.0), Duration::from_millis(500));
        assert_eq!(failure_backoff(first, max, 3, 0.0), Duration::from_secs(2));
        assert_eq!(failure_backoff(first, max, 40, 0.0), Duration::from_secs(30));
    }

    #[test]
    fn documented_example_8() {
        use super::default_staleness;
        use std::time::Duration;
        let budget = Duration::from_secs(5);
        assert_eq!(
            default_staleness(Duration::from_secs(300), 0.1, budget),
            Duration::from_secs(900)
        );
        assert_eq!(
            default_staleness(Duration::from_secs(2), 0.1, budget),
            Duration::from_millis(7200)
        );
    }
}
