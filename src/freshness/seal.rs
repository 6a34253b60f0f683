//! [`Seal`]: dropping every value before a SnapStart snapshot, the same way in both caches.
//!
//! Sealing bumps an epoch that every background task (a refresh, an on-demand batch) watches: a
//! task under way stops where it is, dropping what it holds, and a task that began before the
//! seal caches nothing. [`Seal::drained`] then waits (briefly) until no such task lives, so that
//! no plaintext is in memory when the snapshot is taken. The SnapStart sequence itself is told in
//! the crate docs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::value::ValueWatch;

/// How long `before_snapshot` waits for background tasks to drop what they hold.
pub(crate) const DRAIN: Duration = Duration::from_secs(1);

/// Connections pooled before the snapshot are dead after a restore, and one whose peer forgot it
/// without a word is never answered: the first attempt of each call of the reload (and of an
/// on-demand cache's first batch) is abandoned after this long (instead of the policy's attempt
/// timeout, 3 s by default) and retried, on a new connection.
pub(crate) const FIRST_ATTEMPT_AFTER_RESTORE: Duration = Duration::from_secs(1);

/// The seal epoch of one cache and its live background tasks.
#[derive(Debug)]
pub(crate) struct Seal {
    epoch: watch::Sender<u64>,
    /// The same epoch, read with one atomic load (on-demand lookups read it on every hit).
    seals: std::sync::atomic::AtomicU64,
    live: Arc<Live>,
}

#[derive(Debug, Default)]
struct Live {
    tasks: AtomicUsize,
    ended: Notify,
}

/// Held by a background task for as long as it lives (it may hold plaintext).
#[derive(Debug)]
pub(crate) struct TaskGuard(Arc<Live>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.tasks.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ended.notify_waiters();
        }
    }
}

impl Default for Seal {
    fn default() -> Self {
        Seal {
            epoch: watch::Sender::new(0),
            seals: std::sync::atomic::AtomicU64::new(0),
            live: Arc::default(),
        }
    }
}

impl Seal {
    /// Seals so far.
    #[cfg_attr(not(feature = "on-demand"), allow(dead_code))] // used by on_demand only
    pub(crate) fn epoch(&self) -> u64 {
        self.seals.load(Ordering::Acquire)
    }

    /// Watches the epoch (subscribe before reading what the task will fetch: no seal is missed).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// Seals: every task watching the epoch stops.
    pub(crate) fn seal(&self) {
        self.seals.fetch_add(1, Ordering::AcqRel);
        self.epoch.send_modify(|n| *n += 1);
    }

    /// Counts a background task until the guard is dropped.
    pub(crate) fn task(&self) -> TaskGuard {
        self.live.tasks.fetch_add(1, Ordering::AcqRel);
        TaskGuard(self.live.clone())
    }

    /// Background tasks alive now.
    pub(crate) fn live(&self) -> usize {
        self.live.tasks.load(Ordering::Acquire)
    }

    /// Waits until no background task lives, at most `within`; whether none does. A task that is
    /// never polled again (its runtime no longer driven) holds its guard: the wait then ends at
    /// `within`.
    pub(crate) async fn drained(&self, within: Duration) -> bool {
        let wait = async {
            loop {
                let ended = self.live.ended.notified();
                let mut ended = std::pin::pin!(ended);
                ended.as_mut().enable();
                if self.live() == 0 {
                    return;
                }
                ended.await;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::time::timeout(within, wait).await.is_ok(),
            Err(_) => self.live() == 0,
        }
    }
}

/// Resolves once `epoch` moves (a seal happened after it was subscribed).
pub(crate) async fn sealed(epoch: &mut watch::Receiver<u64>) {
    if epoch.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The keys whose values are still held outside the cache (a `Snapshot` or `SecretValue` kept past
/// an invocation): those bytes stay in memory, hence in the snapshot.
pub(crate) fn still_held(watched: Vec<(String, ValueWatch)>) -> Vec<String> {
    let mut held: Vec<String> = watched
        .into_iter()
        .filter(|(_, watch)| watch.is_held())
        .map(|(key, _)| key)
        .collect();
    held.dedup();
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn draining_waits_for_the_last_task() {
        let seal = Arc::new(Seal::default());
        let guard = seal.task();
        let waiting = tokio::spawn({
            let seal = seal.clone();
            async move { seal.drained(Duration::from_secs(1)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(guard);
        assert!(waiting.await.unwrap());
        let _stuck = seal.task();
        assert!(
            !seal.drained(Duration::from_secs(1)).await,
            "a task that never ends: a bounded wait"
        );
    }
}
