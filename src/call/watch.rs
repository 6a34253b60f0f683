//! [`Watch`]: which attempts of a set of calls are out, so that a caller can tell a Region that
//! does not answer from calls still waiting for their own rate limit.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::time::later;

/// The attempts under way of the calls made through one [`CallContext`](super::CallContext)
/// (and the contexts made from it), and when one first failed transiently.
///
/// Time spent waiting for a rate-limit token or a spread slot is not an attempt: a source with a
/// failover Region hedges when the primary is slow to answer, not when the function's own limits
/// hold its calls back (a fleet's cold starts share the quota).
#[derive(Debug, Default)]
pub(crate) struct Watch {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    /// Attempts under way, by when each began.
    open: BTreeMap<u64, Instant>,
    /// When the first attempt that failed transiently (5xx, timeout, cut connection; not
    /// throttling) began.
    troubled_since: Option<Instant>,
}

/// One attempt under way; it ends when dropped, or with [`Attempt::failed`].
#[derive(Debug)]
pub(crate) struct Attempt<'a> {
    watch: &'a Watch,
    id: u64,
    began: Instant,
}

#[cfg_attr(not(any(feature = "ssm", feature = "secretsmanager")), allow(dead_code))]
impl Watch {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An attempt begins now.
    pub(crate) fn begin(&self) -> Attempt<'_> {
        let began = Instant::now();
        let id = {
            let mut state = self.state();
            let id = state.next;
            state.next += 1;
            state.open.insert(id, began);
            id
        };
        self.changed.notify_waiters();
        Attempt {
            watch: self,
            id,
            began,
        }
    }

    /// When the calls are `delay` late: `delay` after the oldest attempt still under way, or
    /// after the first that failed transiently, whichever is first; `None` while neither is.
    pub(crate) fn late_at(&self, delay: Duration) -> Option<Instant> {
        let state = self.state();
        let oldest = state.open.values().min().copied();
        let since = match (oldest, state.troubled_since) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(later(since, delay))
    }

    /// Whether any attempt began.
    pub(crate) fn began_any(&self) -> bool {
        self.state().next > 0
    }

    /// Whether an attempt failed transiently.
    pub(crate) fn troubled(&self) -> bool {
        self.state().troubled_since.is_some()
    }

    /// Completes at the next change (an attempt begins or ends). Enable it before reading
    /// [`late_at`](Self::late_at), so that no change is missed between the two.
    pub(crate) fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }
}

impl Attempt<'_> {
    /// The attempt ended with a transient failure of the service (not throttling).
    pub(crate) fn failed(self) {
        self.watch.state().troubled_since.get_or_insert(self.began);
        // Dropped here: the attempt ends.
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.watch.state().open.remove(&self.id);
        self.watch.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn late_counts_from_the_oldest_attempt_out_or_the_first_failure() {
        let watch = Watch::default();
        assert_eq!(watch.late_at(MS), None, "nothing asked yet: not late");
        let start = Instant::now();
        let first = watch.begin();
        tokio::time::advance(10 * MS).await;
        let second = watch.begin();
        assert_eq!(watch.late_at(100 * MS), Some(start + 100 * MS));
        drop(first);
        assert_eq!(watch.late_at(100 * MS), Some(start + 110 * MS));
        assert!(!watch.troubled());
        second.failed();
        assert!(watch.troubled());
        assert_eq!(
            watch.late_at(100 * MS),
            Some(start + 110 * MS),
            "a failure counts from when its attempt began"
        );
        tokio::time::advance(10 * MS).await;
        let third = watch.begin();
        drop(third);
        assert_eq!(watch.late_at(100 * MS), Some(start + 110 * MS));
    }

    #[tokio::test(start_paused = true)]
    async fn every_beginning_and_end_of_an_attempt_is_a_change() {
        let watch = Watch::default();
        assert!(!watch.began_any());
        let changed = watch.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let attempt = watch.begin();
        assert!(watch.began_any());
        tokio::time::timeout(MS, changed)
            .await
            .expect("notified at the beginning");
        let changed = watch.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        drop(attempt);
        tokio::time::timeout(MS, changed)
            .await
            .expect("notified at the end");
    }
}
