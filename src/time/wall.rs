//! The wall clock, for the instants a source states as `SystemTime` (a rotation date, the expiry
//! of a token or of the credentials that signed it), and their distance from now.
//!
//! In a normal build this is `SystemTime::now()`. In the crate's unit tests it follows tokio's
//! clock (anchored to the real time at its first reading), so that a test advancing virtual time
//! under `tokio::time::pause` moves expiry dates and rotation dates as it moves instants.

use std::time::{Duration, SystemTime};

/// The current wall-clock time.
pub(crate) fn now() -> SystemTime {
    #[cfg(not(test))]
    {
        SystemTime::now()
    }
    #[cfg(test)]
    {
        virtual_now()
    }
}

/// How long from now until `at`; `None` once `at` has passed.
pub(crate) fn until(at: SystemTime) -> Option<Duration> {
    at.duration_since(now()).ok().filter(|d| !d.is_zero())
}

#[cfg(test)]
fn virtual_now() -> SystemTime {
    use std::sync::OnceLock;
    static ANCHOR: OnceLock<(SystemTime, std::time::Instant)> = OnceLock::new();
    let (wall, instant) = *ANCHOR.get_or_init(|| (SystemTime::now(), std::time::Instant::now()));
    let elapsed = tokio::time::Instant::now()
        .into_std()
        .saturating_duration_since(instant);
    wall + elapsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn in_tests_the_wall_clock_follows_virtual_time() {
        let before = now();
        let soon = before + Duration::from_secs(90);
        assert!(until(soon).is_some());
        tokio::time::advance(Duration::from_secs(100)).await;
        assert!(now().duration_since(before).unwrap() >= Duration::from_secs(100));
        assert_eq!(until(soon), None, "90 s ahead has passed after 100 s");
    }
}
