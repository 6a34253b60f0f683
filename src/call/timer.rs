//! [`CallTimer`]: how long a context's calls took, from the first attempt sent to now, without
//! the time the process spent frozen (the `cache.refresh.duration` metric).
//!
//! A background refresh's calls may first wait for their spread slot, and Lambda may freeze the
//! process under them: neither says anything of AWS, so neither counts. Several calls of one
//! context may see the same freeze: like the [`Deadline`](crate::time::Deadline), each gives
//! back what it lost relative to the total it saw before waiting, so a freeze counts once.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Default)]
pub(crate) struct CallTimer(Mutex<Timing>);

#[derive(Debug, Default)]
struct Timing {
    /// When the first attempt was sent, and the time frozen counted until then.
    first: Option<(Instant, Duration)>,
    /// The time frozen counted so far.
    frozen: Duration,
}

impl CallTimer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Timing> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An attempt is sent at `now` (the first one starts the clock).
    pub(crate) fn attempt(&self, now: Instant) {
        let mut t = self.lock();
        let frozen = t.frozen;
        t.first.get_or_insert((now, frozen));
    }

    /// The time frozen counted so far: what a wait's [`frozen`](Self::frozen) is relative to.
    pub(crate) fn seen(&self) -> Duration {
        self.lock().frozen
    }

    /// A wait that began when the count was `seen` lost `lost` to a freeze.
    pub(crate) fn frozen(&self, seen: Duration, lost: Duration) {
        let mut t = self.lock();
        t.frozen = t.frozen.max(seen.saturating_add(lost));
    }

    /// How long the calls took until `now`: from the first attempt, less the time frozen since;
    /// `None` if no attempt was sent.
    pub(crate) fn took(&self, now: Instant) -> Option<Duration> {
        let t = self.lock();
        let (first, frozen_then) = t.first?;
        let frozen = t.frozen.saturating_sub(frozen_then);
        Some(now.saturating_duration_since(first).saturating_sub(frozen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counts_from_the_first_attempt_and_a_freeze_seen_twice_once() {
        let timer = CallTimer::default();
        assert_eq!(timer.took(Instant::now()), None, "no attempt, no figure");
        // A freeze before the first attempt (a spread wait) is not the calls' time.
        timer.frozen(timer.seen(), Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(31)).await;
        timer.attempt(Instant::now());
        let seen = timer.seen();
        tokio::time::advance(Duration::from_millis(20)).await;
        // Two calls under way see one 60 s freeze.
        tokio::time::advance(Duration::from_secs(60)).await;
        timer.frozen(seen, Duration::from_secs(60));
        timer.frozen(seen, Duration::from_secs(60));
        tokio::time::advance(Duration::from_millis(30)).await;
        timer.attempt(Instant::now()); // a later attempt does not restart the clock
        assert_eq!(timer.took(Instant::now()), Some(Duration::from_millis(50)));
    }
}
