//! Running a refresh (or an on-demand batch) off the request path: on which runtime, and how its
//! task shows that it lives ([`Heartbeat`], for the watchdog of
//! [`Freshness::watch`](super::state::Freshness::watch)).
//!
//! One policy for every background task: the caller's runtime when it is a multi-thread one (it
//! runs tasks whether or not anyone awaits them); else the multi-thread runtime the cache was
//! built on, if any; else the caller's current-thread runtime (it runs the task while someone
//! drives it). With none, the task is dropped: the caller ends what it started as lost, with a
//! backoff.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures_util::future::{select, Either};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::time::Instant;

use crate::time::freeze::{sleep_until, FROZEN_SLACK};
use crate::time::{later, Deadline};

/// Where background tasks run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Spawner {
    /// The multi-thread runtime current when the cache was made, if one was.
    fallback: Option<Handle>,
}

impl Spawner {
    /// Remembers the current runtime as the fallback if it is a multi-thread one.
    pub(crate) fn here() -> Self {
        Spawner {
            fallback: Handle::try_current()
                .ok()
                .filter(|h| h.runtime_flavor() != RuntimeFlavor::CurrentThread),
        }
    }

    /// Runs `task` in the background; `false` (the task dropped) where no runtime can run it.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> bool {
        let current = Handle::try_current().ok();
        let multi = current
            .clone()
            .filter(|h| h.runtime_flavor() != RuntimeFlavor::CurrentThread);
        match multi.or_else(|| self.fallback.clone()).or(current) {
            Some(runtime) => {
                drop(runtime.spawn(task));
                true
            }
            None => false,
        }
    }
}

/// When a background task was last polled, for the watchdog: a task that is never polled (its
/// runtime kept but no longer driven) never ends by itself.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    origin: Instant,
    /// Nanoseconds after `origin` of the last poll.
    last: AtomicU64,
}

impl Heartbeat {
    pub(crate) fn new(origin: Instant) -> Self {
        Heartbeat {
            origin,
            last: AtomicU64::new(0),
        }
    }

    /// The task was polled at `now`.
    pub(crate) fn beat_at(&self, now: Instant) {
        let nanos = u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX);
        self.last.fetch_max(nanos, Ordering::AcqRel);
    }

    /// When the task was last polled (its start, if never).
    pub(crate) fn last(&self) -> Instant {
        later(
            self.origin,
            std::time::Duration::from_nanos(self.last.load(Ordering::Acquire)),
        )
    }
}

pin_project_lite::pin_project! {
    /// `future`, beating `heartbeat` each time it is polled.
    pub(crate) struct Beating<F> {
        #[pin]
        future: F,
        heartbeat: std::sync::Arc<Heartbeat>,
    }
}

impl<F> Beating<F> {
    pub(crate) fn new(future: F, heartbeat: std::sync::Arc<Heartbeat>) -> Self {
        Beating { future, heartbeat }
    }
}

impl<F: Future> Future for Beating<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.heartbeat.beat_at(Instant::now());
        this.future.poll(cx)
    }
}

/// Awaits `future`, work done by another task (an on-demand batch), in slices of at most
/// [`FROZEN_SLACK`]: the waiting task is polled at each (its heartbeat beats: the watchdog knows it
/// lives), and time lost to a freeze is given back to its `deadline`.
#[cfg_attr(not(feature = "on-demand"), allow(dead_code))] // used by on_demand only
pub(crate) async fn awaiting<T>(future: impl Future<Output = T>, deadline: &Deadline) -> T {
    let mut future = std::pin::pin!(future);
    loop {
        let seen = deadline.get();
        let slice = later(Instant::now(), FROZEN_SLACK);
        match select(future.as_mut(), std::pin::pin!(sleep_until(slice))).await {
            Either::Left((out, _)) => return out,
            Either::Right((lost, _)) => deadline.give_back(seen, lost),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn without_a_runtime_nothing_runs() {
        assert!(!Spawner::default().spawn(async {}));
    }

    #[test]
    fn a_multi_thread_runtime_made_earlier_runs_what_a_current_thread_one_would_not() {
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let spawner = multi.block_on(async { Spawner::here() });
        let current = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Spawned from inside a current-thread runtime that is then never driven again.
        current.block_on(async {
            assert!(spawner.spawn(async move {
                let _ = tx.send(());
            }));
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "ran on the multi-thread runtime"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn polls_beat() {
        let start = Instant::now();
        let heartbeat = std::sync::Arc::new(Heartbeat::new(start));
        let task = Beating::new(tokio::time::sleep(Duration::from_secs(3)), heartbeat.clone());
        task.await;
        assert_eq!(heartbeat.last(), start + Duration::from_secs(3));
    }
}
