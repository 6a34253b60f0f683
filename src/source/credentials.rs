//! [`Held`]: the credentials a source signs with, kept between calls while they have more than
//! [`REUSE_MARGIN`] left, renewed by one caller at a time (the calls of a cold load run
//! concurrently: each would otherwise ask the provider, and an assumed role's provider calls STS),
//! and forgotten at a SnapStart seal. Used by the token signer and by assumed roles.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;

/// Credentials are taken again once they expire within this: a token signed with them would
/// live less than this, and a call signed with them might arrive after they expire (the SDK's
/// own margin is shorter).
pub(crate) const REUSE_MARGIN: Duration = Duration::from_secs(5 * 60);

#[derive(Default)]
pub(crate) struct Held {
    held: Mutex<Option<Credentials>>,
    /// Counts the seals: a renewal that began before one does not keep what it got.
    generation: AtomicU64,
    /// Held by the one caller renewing; the others wait for it and take what it got.
    renewing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not even the access key id.
        f.debug_struct("Held")
            .field("held", &self.lock().is_some())
            .finish_non_exhaustive()
    }
}

impl Held {
    /// The credentials held while they have [`REUSE_MARGIN`] left at `now()`, else those of
    /// `renew` (called by one caller at a time; a caller that waited for another's renewal takes
    /// its result).
    ///
    /// # Errors
    ///
    /// `renew`'s (nothing is held then; the next caller renews again).
    pub(crate) async fn get_or_renew<E, Fut>(
        &self,
        now: impl Fn() -> SystemTime,
        renew: impl FnOnce() -> Fut,
    ) -> Result<Credentials, E>
    where
        Fut: Future<Output = Result<Credentials, E>>,
    {
        if let Some(held) = self.reusable(now()) {
            return Ok(held);
        }
        let _renewing = self.renewing.lock().await;
        if let Some(held) = self.reusable(now()) {
            return Ok(held);
        }
        let generation = self.generation();
        let fresh = renew().await?;
        let mut held = self.lock();
        // A seal came meanwhile: the caller uses them for its call, nobody keeps them.
        if self.generation() == generation {
            *held = Some(fresh.clone());
        }
        Ok(fresh)
    }

    /// Drops the credentials held (they zeroize their secrets when dropped); a renewal under way
    /// keeps nothing.
    pub(crate) fn forget(&self) {
        let mut held = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        held.take();
    }

    /// How many seals there were: what was made before one is not kept after it.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    #[cfg(test)]
    pub(crate) fn peek(&self) -> Option<Credentials> {
        self.lock().clone()
    }

    fn reusable(&self, now: SystemTime) -> Option<Credentials> {
        let ok = |c: &Credentials| {
            c.expiry()
                .is_none_or(|at| at.duration_since(now).is_ok_and(|left| left > REUSE_MARGIN))
        };
        self.lock().as_ref().filter(|c| ok(c)).cloned()
    }

    fn lock(&self) -> MutexGuard<'_, Option<Credentials>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    use super::*;

    fn expiring(at: SystemTime) -> Credentials {
        Credentials::new("AKID", "secret", None, Some(at), "test")
    }

    #[tokio::test]
    async fn concurrent_callers_renew_once_and_renew_again_within_the_margin() {
        let held = Arc::new(Held::default());
        let renewals = Arc::new(AtomicU32::new(0));
        let start = SystemTime::now();
        let get = |now: SystemTime| {
            let (held, renewals) = (held.clone(), renewals.clone());
            async move {
                held.get_or_renew(
                    || now,
                    || async move {
                        renewals.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await; // the others arrive meanwhile
                        Ok::<_, ()>(expiring(now + Duration::from_secs(900)))
                    },
                )
                .await
            }
        };
        let all = futures_util::future::join_all((0..10).map(|_| get(start))).await;
        assert!(all.iter().all(Result::is_ok));
        assert_eq!(renewals.load(Ordering::SeqCst), 1, "one renewal for ten callers");
        // 9 min on: 6 left, reused. 11 min on: 4 left, renewed.
        get(start + Duration::from_secs(540)).await.unwrap();
        assert_eq!(renewals.load(Ordering::SeqCst), 1);
        get(start + Duration::from_secs(660)).await.unwrap();
        assert_eq!(renewals.load(Ordering::SeqCst), 2);
        held.forget();
        assert!(held.peek().is_none());
    }

    #[tokio::test]
    async fn a_renewal_under_way_at_a_seal_keeps_nothing() {
        let held = Arc::new(Held::default());
        let now = SystemTime::now();
        let (started, seal) = (
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(tokio::sync::Notify::new()),
        );
        let renewal = tokio::spawn({
            let (held, started, seal) = (held.clone(), started.clone(), seal.clone());
            async move {
                held.get_or_renew(
                    || now,
                    || async move {
                        started.notify_one();
                        seal.notified().await;
                        Ok::<_, ()>(expiring(now + Duration::from_secs(3600)))
                    },
                )
                .await
            }
        });
        started.notified().await;
        held.forget();
        seal.notify_one();
        assert!(
            renewal.await.unwrap().is_ok(),
            "the caller gets them for its call"
        );
        assert!(held.peek().is_none(), "kept across the seal");
    }

    #[tokio::test]
    async fn a_failed_renewal_holds_nothing_and_the_next_caller_tries_again() {
        let held = Held::default();
        let now = SystemTime::now();
        let err = held
            .get_or_renew(|| now, || async { Err::<Credentials, _>("down") })
            .await;
        assert_eq!(err.unwrap_err(), "down");
        assert!(held.peek().is_none());
        let ok = held
            .get_or_renew(
                || now,
                || async { Ok::<_, &str>(expiring(now + Duration::from_secs(3600))) },
            )
            .await;
        assert!(ok.is_ok());
    }
}
