//! Rate limits: one token bucket per AWS quota class, shared by every source and every clone of
//! a [`Secrets`](crate::Secrets) in the process, slowing down when AWS throttles.
//!
//! A bucket of rate `R` and burst `B` lets a call through when it holds a token (it refills at
//! `R` a second up to `B`) **and** fewer than `R` calls went through in the trailing second, so
//! no 1-second window ever sees more than `R` calls, whatever the burst. On a throttling answer the
//! rate is halved (at most once per second, down to a floor) and then grows back linearly to the
//! configured rate over about ten seconds: additive increase, multiplicative decrease.
//!
//! The buckets are hand-written rather than taken from `governor`: the adaptive rate changes the
//! quota of a live limiter, which governor's GCRA state (a theoretical arrival time computed
//! from a fixed quota) does not support without replacing the limiter and losing its state, and
//! the 1-second window cap is not a GCRA notion either.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::time::Deadline;

/// An AWS quota that calls are counted against.
///
/// ```
/// use lambda_secrets::{Quota, QuotaClass, RateLimits};
/// let limits = RateLimits::new();
/// limits.set(QuotaClass::SsmGet, Quota::new(5.0, 5));
/// assert_eq!(limits.quota(QuotaClass::SsmGet), Quota::new(5.0, 5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum QuotaClass {
    /// SSM `GetParameter`, `GetParameters` and `GetParametersByPath` (one shared quota).
    SsmGet,
    /// Secrets Manager `BatchGetSecretValue`.
    SecretsBatchGet,
    /// Secrets Manager `GetSecretValue`.
    SecretsGet,
    /// Secrets Manager `DescribeSecret`.
    SecretsDescribe,
    /// KMS `Decrypt`.
    KmsDecrypt,
    /// AppConfigData `StartConfigurationSession`.
    AppConfigSession,
    /// AppConfigData `GetLatestConfiguration`.
    AppConfigGet,
}

impl QuotaClass {
    /// Every class.
    ///
    /// ```
    /// assert!(lambda_secrets::QuotaClass::ALL.contains(&lambda_secrets::QuotaClass::SsmGet));
    /// ```
    pub const ALL: &'static [QuotaClass] = &[
        QuotaClass::SsmGet,
        QuotaClass::SecretsBatchGet,
        QuotaClass::SecretsGet,
        QuotaClass::SecretsDescribe,
        QuotaClass::KmsDecrypt,
        QuotaClass::AppConfigSession,
        QuotaClass::AppConfigGet,
    ];

    /// Whether the class's quota is scarce enough that a background refresh spreads its calls
    /// over time: SSM's (40 calls a second for the whole account and Region) and
    /// `BatchGetSecretValue`'s (100 a second). `GetSecretValue`, `DescribeSecret`, KMS
    /// `Decrypt` and AppConfigData have quotas in the thousands a second: their calls are never
    /// delayed.
    ///
    /// ```
    /// use lambda_secrets::QuotaClass;
    /// assert!(QuotaClass::SsmGet.is_scarce());
    /// assert!(!QuotaClass::SecretsDescribe.is_scarce());
    /// ```
    pub fn is_scarce(self) -> bool {
        matches!(self, QuotaClass::SsmGet | QuotaClass::SecretsBatchGet)
    }

    /// This process's default share of the class's account-wide quota.
    ///
    /// SSM's standard throughput is 40 calls a second for the whole account and Region. A
    /// container loads 100 parameters in 10 calls, so a burst of 10 serves a cold start at once;
    /// a rate of 10 a second is a quarter of the quota, so up to four containers starting
    /// together never throttle, and larger fleets are brought under the quota by the adaptive
    /// slow-down within a few seconds (see the fleet simulation in the README). Secrets Manager
    /// and KMS quotas are far higher; their defaults only stop a runaway loop.
    ///
    /// ```
    /// use lambda_secrets::{Quota, QuotaClass};
    /// assert_eq!(QuotaClass::SsmGet.default_quota(), Quota::SSM_STANDARD);
    /// ```
    pub fn default_quota(self) -> Quota {
        match self {
            QuotaClass::SsmGet => Quota::SSM_STANDARD,
            QuotaClass::SecretsBatchGet => Quota::new(10.0, 5),
            QuotaClass::SecretsGet
            | QuotaClass::SecretsDescribe
            | QuotaClass::KmsDecrypt
            | QuotaClass::AppConfigSession
            | QuotaClass::AppConfigGet => Quota::new(100.0, 50),
        }
    }
}

/// A rate (calls a second) and a burst (calls at once after a quiet period).
///
/// ```
/// use lambda_secrets::Quota;
/// let q = Quota::new(20.0, 10);
/// assert_eq!((q.rate, q.burst), (20.0, 10));
/// ```
///
/// Fields may be added: a quota is made with [`Quota::new`], never written out field by field.
///
/// ```compile_fail
/// let q = lambda_secrets::Quota { rate: 20.0, burst: 10 };
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Quota {
    /// Calls a second, sustained; also the most calls any 1-second window sees.
    pub rate: f64,
    /// Calls allowed at once after a quiet period (at most `rate`).
    pub burst: u32,
}

impl Quota {
    /// Default per-process share of SSM's standard throughput (40 TPS per account and Region).
    ///
    /// ```
    /// use lambda_secrets::{Quota, QuotaClass, RateLimits};
    /// RateLimits::process().set(QuotaClass::SsmGet, Quota::SSM_STANDARD);
    /// ```
    pub const SSM_STANDARD: Quota = Quota {
        rate: 10.0,
        burst: 10,
    };
    /// Per-process share for accounts with SSM's higher-throughput setting (1,000 TPS or more).
    ///
    /// ```
    /// use lambda_secrets::{Quota, QuotaClass, RateLimits};
    /// // An account with SSM's higher throughput setting:
    /// RateLimits::process().set(QuotaClass::SsmGet, Quota::SSM_HIGHER_THROUGHPUT);
    /// ```
    pub const SSM_HIGHER_THROUGHPUT: Quota = Quota {
        rate: 100.0,
        burst: 50,
    };

    /// A quota of `rate` calls a second with bursts of `burst`. `f64::INFINITY` means no limit;
    /// a rate that is not a positive number is rejected by [`SecretsBuilder::load`](crate::SecretsBuilder::load).
    ///
    /// ```
    /// let unlimited = lambda_secrets::Quota::new(f64::INFINITY, 1);
    /// assert!(unlimited.validate().is_ok());
    /// ```
    pub const fn new(rate: f64, burst: u32) -> Quota {
        Quota { rate, burst }
    }

    /// Why this quota cannot be enforced, if it cannot.
    ///
    /// ```
    /// use lambda_secrets::Quota;
    /// assert!(Quota::new(f64::INFINITY, 100).validate().is_ok());
    /// assert!(Quota::new(0.0, 1).validate().is_err());
    /// assert!(Quota::new(f64::NAN, 1).validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), String> {
        if self.rate.is_nan() || self.rate < MIN_RATE {
            return Err(format!(
                "the rate must be a number of calls a second of at least {MIN_RATE:.4} (one a minute), or f64::INFINITY for no limit"
            ));
        }
        Ok(())
    }
}

/// One token bucket with a 1-second window cap and an adaptive rate.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// The quota as configured (reported, and validated at `load()`).
    configured: Quota,
    /// The quota enforced: `configured` with its rate made workable.
    quota: Quota,
    /// The rate in force (lowered on throttling, recovering to `quota.rate`).
    rate: f64,
    tokens: f64,
    refilled: Instant,
    /// Instants of the calls let through in the trailing second.
    recent: VecDeque<Instant>,
    last_decrease: Option<Instant>,
}

const WINDOW: Duration = Duration::from_secs(1);
/// The window the cap is kept over: a little more than a second, because a call reaches AWS
/// some milliseconds after it leaves here and those delays vary; without the margin, two calls
/// sent just over a second apart could arrive just under.
const CAP_WINDOW: Duration = Duration::from_millis(1050);
/// Seconds for the rate to grow back from its floor to the configured rate.
const RECOVERY_SECS: f64 = 10.0;
/// The adaptive rate never goes below this fraction of the configured rate.
const FLOOR: f64 = 0.25;

impl TokenBucket {
    pub(crate) fn new(configured: Quota) -> Self {
        let quota = Quota::new(sane_rate(configured.rate), configured.burst.max(1));
        TokenBucket {
            state: Mutex::new(BucketState {
                configured,
                quota,
                rate: quota.rate,
                tokens: quota.burst.max(1) as f64,
                refilled: Instant::now(),
                recent: VecDeque::new(),
                last_decrease: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BucketState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_quota(&self, configured: Quota) {
        let quota = Quota::new(sane_rate(configured.rate), configured.burst.max(1));
        let mut s = self.lock();
        s.configured = configured;
        s.quota = quota;
        s.rate = quota.rate;
        s.tokens = s.tokens.min(quota.burst.max(1) as f64);
    }

    /// Back to a new bucket's state (full, at the configured rate, no recent calls): after a
    /// SnapStart restore, when every instant it holds is from before the snapshot.
    pub(crate) fn restart(&self) {
        let mut s = self.lock();
        s.rate = s.quota.rate;
        s.tokens = s.quota.burst.max(1) as f64;
        s.refilled = Instant::now();
        s.recent.clear();
        s.last_decrease = None;
    }

    /// The rate in force now.
    pub(crate) fn current_rate(&self) -> f64 {
        self.lock().rate
    }

    /// [`acquire_noting`](Self::acquire_noting) for a test, which needs no report of freezes.
    #[cfg(test)]
    pub(crate) async fn acquire(&self, deadline: &Deadline) -> Result<(), Duration> {
        self.acquire_noting(deadline, |_, _| {}).await
    }

    /// Takes a token, waiting as needed; `Err(wait)` when the wait would pass `deadline` (which
    /// moves later by any time the process spends frozen while waiting). Each wait the process was
    /// frozen in is reported to `frozen`: from when it was due to when it ended.
    pub(crate) async fn acquire_noting(
        &self,
        deadline: &Deadline,
        mut frozen: impl FnMut(Instant, Instant),
    ) -> Result<(), Duration> {
        loop {
            let wait = {
                let mut s = self.lock();
                let now = Instant::now();
                s.refill(now);
                while s
                    .recent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= CAP_WINDOW)
                {
                    s.recent.pop_front();
                }
                let cap = (s.rate.floor() as usize).max(1);
                if s.tokens >= 1.0 && s.recent.len() < cap {
                    s.tokens -= 1.0;
                    s.recent.push_back(now);
                    return Ok(());
                }
                let token_wait = Duration::from_secs_f64(((1.0 - s.tokens) / s.rate).max(0.0));
                let window_wait = match s.recent.len() >= cap {
                    true => (s.recent[s.recent.len() - cap] + CAP_WINDOW).saturating_duration_since(now),
                    false => Duration::ZERO,
                };
                token_wait.max(window_wait).max(Duration::from_millis(1))
            };
            let seen = deadline.get();
            let now = Instant::now();
            if now + wait > seen {
                return Err(wait);
            }
            // A freeze while waiting for a token is no reason to give up the call.
            let lost = crate::time::freeze::sleep_until(now + wait).await;
            deadline.give_back(seen, lost);
            if !lost.is_zero() {
                // What was certainly frozen: from when the token was due.
                frozen(now + wait, now + lost);
            }
        }
    }

    /// AWS throttled a call: halve the rate (at most once a second).
    pub(crate) fn throttled(&self) {
        let mut s = self.lock();
        let now = Instant::now();
        if s.last_decrease.is_some_and(|t| now.duration_since(t) < WINDOW) {
            return;
        }
        s.refill(now);
        s.rate = (s.rate / 2.0).max(s.quota.rate * FLOOR);
        s.tokens = s.tokens.min(s.rate.max(1.0));
        s.last_decrease = Some(now);
        tracing::debug!(rate = s.rate, "lambda-secrets: throttled; slowing down");
    }
}

/// A rate the bucket can work with (`Quota::validate` rejects the others at `load()`; a set
/// that was never validated still never panics): at least one call a minute, at most
/// [`MAX_RATE`].
fn sane_rate(rate: f64) -> f64 {
    if rate.is_nan() {
        MIN_RATE
    } else {
        rate.clamp(MIN_RATE, MAX_RATE)
    }
}

/// The highest rate a bucket enforces; `f64::INFINITY` means "no limit" and becomes this.
const MAX_RATE: f64 = 1_000_000.0;

const MIN_RATE: f64 = 1.0 / 60.0;

impl BucketState {
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.rate = (self.rate + self.quota.rate / RECOVERY_SECS * dt).min(self.quota.rate);
        let burst = (self.quota.burst.max(1) as f64).min(self.rate.max(1.0));
        self.tokens = (self.tokens + self.rate * dt).min(burst);
    }
}

/// A failover Region's bucket of a class.
type RegionalBucket = (Arc<str>, QuotaClass, Arc<TokenBucket>);

/// A set of buckets, one per [`QuotaClass`] and Region. [`RateLimits::process`] is the
/// process-wide set every [`Secrets`](crate::Secrets) uses unless given another; separate sets
/// stand for separate containers in simulations and tests.
///
/// Quotas are per account and Region: calls to a source's own Region draw on one bucket per class,
/// and calls to a failover Region (`failover_region` on a source) on buckets of that Region's,
/// made on first use with the class's configured quota.
///
/// ```
/// use lambda_secrets::{Quota, QuotaClass, RateLimits};
///
/// // For an account with SSM's higher-throughput setting:
/// RateLimits::process().set(QuotaClass::SsmGet, Quota::SSM_HIGHER_THROUGHPUT);
/// assert_eq!(RateLimits::process().quota(QuotaClass::SsmGet), Quota::SSM_HIGHER_THROUGHPUT);
/// # RateLimits::process().set(QuotaClass::SsmGet, Quota::SSM_STANDARD);
/// ```
#[derive(Debug, Clone)]
pub struct RateLimits {
    buckets: Arc<[(QuotaClass, Arc<TokenBucket>)]>,
    /// Buckets of failover Regions, made on first use.
    regional: Arc<Mutex<Vec<RegionalBucket>>>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimits {
    /// A new set with every class at its default quota.
    ///
    /// ```
    /// use lambda_secrets::{QuotaClass, RateLimits};
    /// // Each simulated container of a fleet test gets its own set:
    /// let limits = RateLimits::new();
    /// assert_eq!(limits.quota(QuotaClass::SsmGet), QuotaClass::SsmGet.default_quota());
    /// ```
    pub fn new() -> Self {
        RateLimits {
            buckets: QuotaClass::ALL
                .iter()
                .map(|&c| (c, Arc::new(TokenBucket::new(c.default_quota()))))
                .collect(),
            regional: Arc::default(),
        }
    }

    /// The process-wide set.
    ///
    /// ```
    /// use lambda_secrets::{Quota, QuotaClass, RateLimits};
    /// RateLimits::process().set(QuotaClass::SsmGet, Quota::new(5.0, 5));
    /// assert_eq!(RateLimits::process().quota(QuotaClass::SsmGet), Quota::new(5.0, 5));
    /// ```
    pub fn process() -> RateLimits {
        static PROCESS: OnceLock<RateLimits> = OnceLock::new();
        PROCESS.get_or_init(RateLimits::new).clone()
    }

    /// Every bucket back to a new bucket's state (see [`TokenBucket::restart`]).
    pub(crate) fn restart(&self) {
        for (_, bucket) in self.buckets.iter() {
            bucket.restart();
        }
        for (_, _, bucket) in self.regional().iter() {
            bucket.restart();
        }
    }

    fn regional(&self) -> std::sync::MutexGuard<'_, Vec<RegionalBucket>> {
        self.regional.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `self` and `other` are the same set (clones of one another).
    pub(crate) fn same_set(&self, other: &RateLimits) -> bool {
        Arc::ptr_eq(&self.buckets, &other.buckets)
    }

    pub(crate) fn bucket(&self, class: QuotaClass) -> &TokenBucket {
        &self
            .buckets
            .iter()
            .find(|(c, _)| *c == class)
            .expect("every class has a bucket")
            .1
    }

    /// The bucket of `class` in `region` (a failover Region), or in the sources' own Region
    /// (`None`).
    pub(crate) fn bucket_in(&self, class: QuotaClass, region: Option<&Arc<str>>) -> Arc<TokenBucket> {
        let own = || {
            self.buckets
                .iter()
                .find(|(c, _)| *c == class)
                .expect("every class has a bucket")
                .1
                .clone()
        };
        let Some(region) = region else {
            return own();
        };
        let mut regional = self.regional();
        if let Some((_, _, bucket)) = regional.iter().find(|(r, c, _)| r == region && *c == class) {
            return bucket.clone();
        }
        let bucket = Arc::new(TokenBucket::new(self.quota(class)));
        regional.push((region.clone(), class, bucket.clone()));
        bucket
    }

    /// Sets the quota of `class` (for every user of this set).
    ///
    /// ```
    /// use lambda_secrets::{Quota, QuotaClass, RateLimits};
    /// let limits = RateLimits::new();
    /// limits.set(QuotaClass::SsmGet, Quota::new(20.0, 10)).set(QuotaClass::KmsDecrypt, Quota::new(50.0, 10));
    /// ```
    pub fn set(&self, class: QuotaClass, quota: Quota) -> &Self {
        self.bucket(class).set_quota(quota);
        for (_, c, bucket) in self.regional().iter() {
            if *c == class {
                bucket.set_quota(quota);
            }
        }
        self
    }

    /// The configured quota of `class`.
    ///
    /// ```
    /// use lambda_secrets::{Quota, QuotaClass, RateLimits};
    /// let limits = RateLimits::new();
    /// limits.set(QuotaClass::SecretsGet, Quota::new(20.0, 10));
    /// assert_eq!(limits.quota(QuotaClass::SecretsGet).rate, 20.0);
    /// ```
    pub fn quota(&self, class: QuotaClass) -> Quota {
        self.bucket(class).lock().configured
    }

    /// The first class whose quota cannot be enforced, with the reason.
    pub(crate) fn invalid(&self) -> Option<(QuotaClass, Quota, String)> {
        QuotaClass::ALL.iter().find_map(|&c| {
            let quota = self.quota(c);
            quota.validate().err().map(|why| (c, quota, why))
        })
    }

    /// The rate in force for `class` (below the quota's while recovering from throttling).
    ///
    /// ```
    /// use lambda_secrets::{QuotaClass, RateLimits};
    /// let limits = RateLimits::new();
    /// assert_eq!(limits.current_rate(QuotaClass::SsmGet), limits.quota(QuotaClass::SsmGet).rate);
    /// ```
    pub fn current_rate(&self, class: QuotaClass) -> f64 {
        self.bucket(class).current_rate()
    }

    /// [`current_rate`](Self::current_rate) of `class` in a failover Region (its configured
    /// quota's rate before its first call there).
    ///
    /// ```
    /// use lambda_secrets::{QuotaClass, RateLimits};
    /// let limits = RateLimits::new();
    /// assert_eq!(limits.current_rate_in(QuotaClass::SsmGet, "us-west-2"), 10.0);
    /// ```
    pub fn current_rate_in(&self, class: QuotaClass, region: &str) -> f64 {
        let regional = self.regional();
        match regional.iter().find(|(r, c, _)| &**r == region && *c == class) {
            Some((_, _, bucket)) => bucket.current_rate(),
            None => self.quota(class).rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// When each of `n` concurrent callers got a token (within `budget`), sorted.
    async fn grant_times(bucket: &Arc<TokenBucket>, budget: Duration, n: usize) -> Vec<Instant> {
        let deadline = Arc::new(Deadline::new(Instant::now() + budget));
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (bucket, deadline) = (bucket.clone(), deadline.clone());
                tokio::spawn(async move {
                    bucket.acquire(&deadline).await.unwrap();
                    Instant::now()
                })
            })
            .collect();
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap());
        }
        times.sort();
        times
    }

    /// The most of `times` (sorted) within any one-second window.
    fn most_in_one_window(times: &[Instant]) -> usize {
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|u| u.duration_since(times[i]) < WINDOW)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn no_window_of_one_second_sees_more_than_the_rate() {
        let bucket = Arc::new(TokenBucket::new(Quota::new(20.0, 20)));
        let started = Instant::now();
        let times = grant_times(&bucket, Duration::from_secs(10), 60).await;
        let in_window = most_in_one_window(&times);
        assert!(in_window <= 20, "{in_window} calls within one second");
        // 60 calls at 20 a second: the last ones wait about two seconds.
        assert!(times.last().unwrap().duration_since(started) >= Duration::from_millis(1900));
    }

    #[tokio::test]
    async fn a_wait_past_the_deadline_is_refused() {
        let bucket = TokenBucket::new(Quota::new(1.0, 1));
        let deadline = Deadline::new(Instant::now() + Duration::from_millis(200));
        bucket.acquire(&deadline).await.unwrap();
        assert!(bucket.acquire(&deadline).await.is_err());
    }

    #[tokio::test]
    async fn a_zero_or_invalid_rate_is_raised_to_the_minimum_instead_of_panicking() {
        for rate in [0.0, -1.0, f64::NAN] {
            let bucket = TokenBucket::new(Quota::new(rate, 0));
            let deadline = Deadline::new(Instant::now() + Duration::from_millis(50));
            bucket.acquire(&deadline).await.unwrap();
            assert!(bucket.acquire(&deadline).await.is_err());
            assert!(Quota::new(rate, 0).validate().is_err());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_infinite_rate_means_no_limit_not_one_call_a_minute() {
        // Probe defect 11: `Quota::new(f64::INFINITY, 100)` became one call a minute.
        let bucket = TokenBucket::new(Quota::new(f64::INFINITY, 100));
        let deadline = Deadline::new(Instant::now() + Duration::from_secs(1));
        let started = Instant::now();
        for _ in 0..1000 {
            bucket.acquire(&deadline).await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        let limits = RateLimits::new();
        limits.set(QuotaClass::SsmGet, Quota::new(f64::INFINITY, 100));
        assert!(limits.invalid().is_none());
        limits.set(QuotaClass::KmsDecrypt, Quota::new(0.0, 1));
        assert_eq!(limits.invalid().map(|(c, ..)| c), Some(QuotaClass::KmsDecrypt));
    }

    #[tokio::test(start_paused = true)]
    async fn a_thousand_concurrent_callers_never_exceed_the_rate_in_virtual_time() {
        // The limiter's property, checked on its own grant times in virtual time (not on arrival
        // times at a proxy, which a busy machine bunches up).
        let bucket = Arc::new(TokenBucket::new(Quota::new(100.0, 20)));
        let times = grant_times(&bucket, Duration::from_secs(60), 1000).await;
        let in_window = most_in_one_window(&times);
        assert!(in_window <= 100, "{in_window} grants within one second");
        let span = times[999].duration_since(times[0]);
        assert!(
            span >= Duration::from_millis(9_000),
            "1,000 calls at 100/s took {span:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_freeze_while_waiting_for_a_token_gives_the_budget_back() {
        // Probe defect 8: a freeze during a rate-limit wait ended the call without an attempt.
        let bucket = Arc::new(TokenBucket::new(Quota::new(1.0, 1)));
        let deadline = Arc::new(Deadline::new(Instant::now() + Duration::from_millis(1500)));
        bucket.acquire(&deadline).await.unwrap();
        let waiter = {
            let (bucket, deadline) = (bucket.clone(), deadline.clone());
            tokio::spawn(async move { bucket.acquire(&deadline).await })
        };
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(30)).await; // frozen between invocations
        assert!(waiter.await.unwrap().is_ok());
        assert!(deadline.get() > Instant::now(), "the frozen time was given back");
    }

    #[test]
    fn throttling_halves_the_rate_which_then_recovers() {
        let bucket = TokenBucket::new(Quota::new(40.0, 10));
        bucket.throttled();
        assert_eq!(bucket.current_rate(), 20.0);
        bucket.throttled(); // within a second: ignored
        assert_eq!(bucket.current_rate(), 20.0);
        {
            let mut s = bucket.lock();
            s.last_decrease = None;
            s.refilled -= Duration::from_secs(2);
        }
        bucket.lock().refill(Instant::now());
        let rate = bucket.current_rate();
        assert!((27.0..29.0).contains(&rate), "{rate}");
    }

    #[test]
    fn a_failover_region_has_buckets_of_its_own_with_the_configured_quota() {
        let limits = RateLimits::new();
        limits.set(QuotaClass::SsmGet, Quota::new(40.0, 10));
        let west: Arc<str> = "us-west-2".into();
        let theirs = limits.bucket_in(QuotaClass::SsmGet, Some(&west));
        assert!(
            Arc::ptr_eq(&theirs, &limits.bucket_in(QuotaClass::SsmGet, Some(&west))),
            "made once"
        );
        assert!(!Arc::ptr_eq(&theirs, &limits.bucket_in(QuotaClass::SsmGet, None)));
        assert_eq!(limits.current_rate_in(QuotaClass::SsmGet, "us-west-2"), 40.0);
        // Throttling there slows only there.
        theirs.throttled();
        assert_eq!(limits.current_rate_in(QuotaClass::SsmGet, "us-west-2"), 20.0);
        assert_eq!(limits.current_rate(QuotaClass::SsmGet), 40.0);
        // A quota set later applies to every Region's bucket of the class.
        limits.set(QuotaClass::SsmGet, Quota::new(100.0, 10));
        assert_eq!(limits.current_rate_in(QuotaClass::SsmGet, "us-west-2"), 100.0);
        limits.restart();
        assert_eq!(limits.current_rate_in(QuotaClass::SsmGet, "us-west-2"), 100.0);
    }
}
