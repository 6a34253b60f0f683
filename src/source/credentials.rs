//! [`Held`]: the credentials a source signs with, kept between calls while they have more than
//! [`REUSE_MARGIN`] left, renewed by one caller at a time (the calls of a cold load run
//! concurrently: each would otherwise ask the provider, and an assumed role's provider calls STS),
//! and forgotten at a SnapStart seal. Used by the token signer and by assumed roles.

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;

/// Credentials are taken again once they expire within this: a token signed with them would
/// live less than this, and a call signed with them might arrive after they expire (the SDK's
/// own margin is shorter).
pub(crate) const REUSE_MARGIN: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Default)]
pub(crate) struct Held {
    held: Mutex<Option<Credentials>>,
    /// Held by the one caller renewing; the others wait for it and take what it got.
    renewing: tokio::sync::Mutex<()>,
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
        let fresh = renew().await?;
        *self.lock() = Some(fresh.clone());
        Ok(fresh)
    }

    /// Drops the credentials held (they zeroize their secrets when dropped).
    pub(crate) fn forget(&self) {
        self.lock().take();
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
    use std::sync::atomic::{AtomicU32, Ordering};
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
