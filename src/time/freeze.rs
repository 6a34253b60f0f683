//! Time lost to Lambda freezes, given back.
//!
//! Lambda freezes the process between invocations: no timer fires, and when the process thaws
//! every timer that came due meanwhile fires at once, late. A wait that ends much later than it
//! was due (more than [`FROZEN_SLACK`]) was frozen; the time lost says nothing of AWS, so the
//! budget it ate is given back to the [`Deadline`](super::Deadline) of the load or refresh in progress.
//!
//! Every clock here is `tokio::time::Instant`, which is `std::time::Instant` in a normal build and
//! the runtime's virtual clock under `tokio::time::pause` (tests advance it to simulate freezes).

use std::time::Duration;

use tokio::time::Instant;

/// How much later than due a wait must end to count as frozen (a busy machine wakes timers a
/// little late, never this late).
pub(crate) const FROZEN_SLACK: Duration = Duration::from_secs(1);

/// The budget a wait that began at `began`, was due to end by `due`, and ended at `now` must
/// give back: all of it if it ended much later than due (the process was frozen at some point of
/// it, and which point is unknowable, so a frozen wait costs nothing), else nothing.
pub(crate) fn frozen_for(began: Instant, due: Instant, now: Instant) -> Duration {
    if now.saturating_duration_since(due) > FROZEN_SLACK {
        now.saturating_duration_since(began)
    } else {
        Duration::ZERO
    }
}

/// Sleeps until `until`; returns the budget to give back if the process was frozen meanwhile.
pub(crate) async fn sleep_until(until: Instant) -> Duration {
    let began = Instant::now();
    tokio::time::sleep_until(until).await;
    frozen_for(began, until, Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{later, Deadline};

    #[tokio::test(start_paused = true)]
    async fn a_wait_on_time_loses_nothing_and_a_frozen_one_is_given_back_once() {
        let deadline = Deadline::new(Instant::now() + Duration::from_secs(5));
        let seen = deadline.get();
        assert_eq!(
            sleep_until(Instant::now() + Duration::from_secs(1)).await,
            Duration::ZERO
        );

        let due = Instant::now() + Duration::from_millis(100);
        let sleeping = tokio::spawn(sleep_until(due));
        tokio::task::yield_now().await;
        // A freeze: the clock moves on while nothing runs.
        tokio::time::advance(Duration::from_secs(60)).await;
        let lost = sleeping.await.unwrap();
        assert_eq!(
            lost,
            Duration::from_secs(60),
            "the whole frozen wait is given back"
        );
        deadline.give_back(seen, lost);
        deadline.give_back(seen, lost); // a second observer of the same freeze
        assert_eq!(deadline.get(), seen + lost);
    }

    #[test]
    fn arithmetic_never_overflows() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now);
    }
}
