//! When values are refreshed, so that a fleet of containers spreads its calls over time.
//!
//! - After a cold load, the first refresh comes after a uniformly random fraction (5 % to 100 %)
//!   of the TTL: a deploy that starts many containers at once would otherwise have them all
//!   refresh together one TTL later, and again every TTL after (jitter alone takes hours to undo
//!   that lockstep). Random first phases spread the fleet's refreshes over the whole TTL at once.
//! - Later refreshes come after the TTL less a random fraction of it (the jitter, 10 % by default).
//! - The calls of one background refresh are paced ([`REFRESH_PACING`] apart), so a container's
//!   10 batched calls for 100 parameters reach the account's quota one by one, not as one spike.
//!   Nothing waits on a background refresh (the current values are served meanwhile); loads,
//!   forced refreshes and refreshes of values past their maximum staleness are not paced.
//!
//! `examples/fleet.rs` simulates 1,000 warm containers with these functions in virtual time.

use std::time::Duration;

/// Gap between two calls of one background refresh.
pub const REFRESH_PACING: Duration = Duration::from_millis(3000);

/// Delay before the next refresh of values fetched now. `random` is uniform in `[0, 1)`;
/// `first` is true right after a cold load.
///
/// ```
/// use std::time::Duration;
/// use lambda_secrets::schedule::next_refresh;
///
/// let ttl = Duration::from_secs(300);
/// assert_eq!(next_refresh(ttl, 0.1, false, 0.0), ttl);
/// assert_eq!(next_refresh(ttl, 0.1, false, 0.5), Duration::from_secs(285));
/// assert_eq!(next_refresh(ttl, 0.1, true, 0.0), Duration::from_secs(15));
/// ```
pub fn next_refresh(ttl: Duration, jitter: f64, first: bool, random: f64) -> Duration {
    if first {
        ttl.mul_f64(FIRST_MIN + (1.0 - FIRST_MIN) * random)
    } else {
        ttl.mul_f64(1.0 - jitter * random)
    }
}

/// The earliest first refresh, as a fraction of the TTL.
const FIRST_MIN: f64 = 0.05;
