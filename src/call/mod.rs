//! [`CallContext`]: the one place every API call of a source goes through.
//!
//! | step | file |
//! |---|---|
//! | a background refresh's call to a scarce quota waits for its spread slot | `spread.rs` |
//! | each attempt takes a token from its quota class's rate limit | `limiter.rs` |
//! | the attempt runs within its timeout, and the deadline of the load or refresh | `retry.rs` |
//! | time lost to a freeze is given back; a thawed attempt that failed is retried at once | `retry.rs` |
//! | throttling slows the rate limit; retryable failures back off (full jitter) and retry | `retry.rs` |
//! | calls, throttles and retries are counted; a final failure warns once per distinct answer | `stats.rs` |

mod operation;
mod retry;
mod spread;
mod stats;
mod timer;
#[cfg(test)]
mod trace_tests;
mod watch;

pub use operation::Operation;
pub use retry::RetryPolicy;
pub(crate) use spread::Urgency;
pub(crate) use stats::CallStats;
#[cfg_attr(not(any(feature = "ssm", feature = "secretsmanager")), allow(unused_imports))]
pub(crate) use watch::Watch;

use spread::Spread;
use timer::CallTimer;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::limiter::RateLimits;
use crate::time::{later, Deadline};

/// What a source's API calls go through: counting, retries with backoff, a per-attempt timeout
/// and the deadline of the load or refresh in progress.
///
/// ```
/// use std::time::{Duration, Instant};
/// use lambda_secrets::{CallContext, RetryPolicy};
///
/// // For testing a source of your own:
/// let calls = CallContext::standalone(RetryPolicy::default(), Instant::now() + Duration::from_secs(5));
/// assert!(calls.deadline() > Instant::now());
/// ```
#[derive(Debug)]
pub struct CallContext {
    stats: Arc<CallStats>,
    policy: RetryPolicy,
    limits: Option<RateLimits>,
    deadline: Arc<Deadline>,
    /// For background refreshes: calls to scarce quotas start at random points of a window.
    spread: Option<Arc<Spread>>,
    /// Calls of a background refresh: a call given up is logged at debug level (the refresh logs
    /// one line for all its values).
    background: bool,
    /// Calls of a refresh wanted now (`refresh_now`, a value failing or past its staleness), not
    /// a routine one.
    forced: bool,
    /// A shorter timeout for the first attempt of each call (after a SnapStart restore, where a
    /// pooled connection may be dead without a word).
    first_attempt_timeout: Option<Duration>,
    /// The failover Region the calls go to (its own rate limits, counted apart); `None`: the
    /// source's own Region.
    region: Option<Arc<str>>,
    /// Where the attempts under way are noted (the primary's calls of a source with a failover
    /// Region, which hedges when they are late).
    watch: Option<Arc<Watch>>,
    /// How long the calls took (shared by the contexts made from this one, apart from
    /// [`timed`](Self::timed)).
    timer: Arc<CallTimer>,
}

/// Where a wait began, for [`CallContext::give_back`]: when, and the deadline then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    began: Instant,
    deadline: Instant,
}

impl Mark {
    /// The deadline when the wait began.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// When the wait began.
    pub(crate) fn began(&self) -> Instant {
        self.began
    }
}

impl CallContext {
    pub(crate) fn new(
        stats: Arc<CallStats>,
        policy: RetryPolicy,
        limits: Option<RateLimits>,
        deadline: Instant,
    ) -> Self {
        Self::with_deadline(stats, policy, limits, Arc::new(Deadline::new(deadline)))
    }

    /// A context whose deadline is shared (a refresh's, which its values' state watches).
    pub(crate) fn with_deadline(
        stats: Arc<CallStats>,
        policy: RetryPolicy,
        limits: Option<RateLimits>,
        deadline: Arc<Deadline>,
    ) -> Self {
        CallContext {
            stats,
            policy,
            limits,
            deadline,
            spread: None,
            background: false,
            forced: false,
            first_attempt_timeout: None,
            region: None,
            watch: None,
            timer: Arc::default(),
        }
    }

    /// The context for the calls of the same load or refresh to failover Region `region`: the
    /// same counts, policy and deadline, that Region's rate limits, no spreading (a failover is
    /// not a background call to spread).
    #[cfg_attr(not(any(feature = "ssm", feature = "secretsmanager")), allow(dead_code))]
    pub(crate) fn in_region(&self, region: Arc<str>) -> CallContext {
        CallContext {
            stats: self.stats.clone(),
            policy: self.policy,
            limits: self.limits.clone(),
            deadline: self.deadline.clone(),
            spread: None,
            background: self.background,
            forced: self.forced,
            first_attempt_timeout: self.first_attempt_timeout,
            region: Some(region),
            watch: None,
            timer: self.timer.clone(),
        }
    }

    /// The same context, its attempts noted in `watch`.
    #[cfg_attr(not(any(feature = "ssm", feature = "secretsmanager")), allow(dead_code))]
    pub(crate) fn watched(&self, watch: Arc<Watch>) -> CallContext {
        CallContext {
            watch: Some(watch),
            ..self.copy()
        }
    }

    /// The same context: the same counts, deadline, timer and everything else.
    fn copy(&self) -> CallContext {
        CallContext {
            stats: self.stats.clone(),
            policy: self.policy,
            limits: self.limits.clone(),
            deadline: self.deadline.clone(),
            spread: self.spread.clone(),
            background: self.background,
            forced: self.forced,
            first_attempt_timeout: self.first_attempt_timeout,
            region: self.region.clone(),
            watch: self.watch.clone(),
            timer: self.timer.clone(),
        }
    }

    /// Marks the calls as those of a background refresh: a call given up is logged at debug
    /// level, the refresh logging one line for all its values.
    pub(crate) fn background(mut self) -> Self {
        self.background = true;
        self
    }

    /// Abandons the first attempt of each call after `timeout` (or the policy's attempt timeout,
    /// if shorter); later attempts have the policy's.
    pub(crate) fn first_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.first_attempt_timeout = Some(timeout);
        self
    }

    /// Starts each call to a scarce quota ([`QuotaClass::is_scarce`]) at a random point of
    /// `window` from now, or at once when `urgency` is raised. The deadline should leave the
    /// window on top of the budget.
    pub(crate) fn spread(mut self, window: Duration, urgency: Arc<Urgency>) -> Self {
        if window > Duration::ZERO {
            self.spread = Some(Arc::new(Spread {
                start: Instant::now(),
                window,
                offset: crate::random::f64(),
                calls: Default::default(),
                urgency,
            }));
        }
        self
    }

    /// A context for calls that may take at most `fraction` of the time left (a fan-out after a
    /// denied batch): the same counts, policy and rate limits, its own deadline, no spreading.
    #[cfg_attr(not(feature = "ssm"), allow(dead_code))] // used by the SSM source
    pub(crate) fn share(&self, fraction: f64) -> CallContext {
        let now = Instant::now();
        let left = self.deadline.get().saturating_duration_since(now);
        CallContext {
            stats: self.stats.clone(),
            policy: self.policy,
            limits: self.limits.clone(),
            deadline: Arc::new(Deadline::new(later(now, left.mul_f64(fraction.clamp(0.0, 1.0))))),
            spread: None,
            background: self.background,
            forced: self.forced,
            first_attempt_timeout: self.first_attempt_timeout,
            region: self.region.clone(),
            watch: self.watch.clone(),
            timer: self.timer.clone(),
        }
    }

    /// A context of its own (for testing a [`Source`](crate::Source)): retries by `policy` until `deadline`,
    /// without rate limits.
    pub fn standalone(policy: RetryPolicy, deadline: std::time::Instant) -> Self {
        Self::new(Arc::default(), policy, None, Instant::from_std(deadline))
    }

    /// When the load or refresh in progress must be done (later than first set if the process
    /// was frozen meanwhile).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use lambda_secrets::{CallContext, RetryPolicy};
    /// let deadline = Instant::now() + Duration::from_secs(2);
    /// let calls = CallContext::standalone(RetryPolicy::default(), deadline);
    /// assert_eq!(calls.deadline(), deadline);
    /// ```
    pub fn deadline(&self) -> std::time::Instant {
        self.deadline.get().into_std()
    }

    /// When a source with a failover Region stops waiting for its primary: `share` of the time
    /// left after the spread window of a background refresh (whose calls wait for their slot
    /// first), or after now.
    #[cfg_attr(not(any(feature = "ssm", feature = "secretsmanager")), allow(dead_code))]
    pub(crate) fn failover_cutoff(&self, share: f64) -> Instant {
        let now = Instant::now();
        let from = self
            .spread
            .as_ref()
            .filter(|s| !s.urgency.is_urgent())
            .map_or(now, |s| later(s.start, s.window).max(now));
        let left = self.deadline.get().saturating_duration_since(from);
        later(from, left.mul_f64(share.clamp(0.0, 1.0)))
    }

    /// The timeout of a call's first attempt.
    #[cfg_attr(not(any(feature = "ssm", feature = "secretsmanager")), allow(dead_code))]
    pub(crate) fn attempt_timeout(&self) -> Duration {
        self.first_attempt_timeout
            .map_or(self.policy.attempt_timeout, |first| {
                first.min(self.policy.attempt_timeout)
            })
    }

    /// Where a wait begins: what the time it loses to a freeze is given back relative to.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            began: Instant::now(),
            deadline: self.deadline.get(),
        }
    }

    /// A wait that began at `mark` lost `lost` to a freeze: given back to the deadline.
    pub(crate) fn give_back(&self, mark: Mark, lost: Duration) {
        self.deadline.give_back(mark.deadline, lost);
    }

    /// `began..ended` counts as time frozen, not the calls' ([`took`](Self::took)): reported by
    /// the watch over a whole fetch, whose slices are short (a call reports its own waits).
    pub(crate) fn frozen(&self, began: Instant, ended: Instant) {
        self.timer.frozen(began, ended);
    }

    /// The same context with a clock of its own: [`took`](Self::took) times only its calls (one
    /// source's, in a refresh of several).
    pub(crate) fn timed(&self) -> CallContext {
        CallContext {
            timer: Arc::default(),
            ..self.copy()
        }
    }

    /// How long the calls took until `now`: the time during which at least one was under way
    /// (from its first attempt sent to its answer: a spread wait before it is not counted), less
    /// the time reported [`frozen`](Self::frozen); `None` if no attempt was sent.
    pub(crate) fn took(&self, now: Instant) -> Option<Duration> {
        self.timer.took(now)
    }

    /// Marks the calls as those of a refresh wanted now (see [`is_forced`](Self::is_forced)).
    pub(crate) fn forced(mut self, forced: bool) -> Self {
        self.forced = forced;
        self
    }

    /// Whether these are the calls of a refresh wanted now (`refresh_now`, a value failing or
    /// past its maximum staleness): a source that may skip a routine refresh (AppConfig within
    /// its poll interval) reads anyway.
    #[cfg_attr(not(feature = "appconfig"), allow(dead_code))]
    pub(crate) fn is_forced(&self) -> bool {
        self.forced
    }

    /// The cache whose calls these are.
    pub(crate) fn cache(&self) -> crate::telemetry::Cache {
        self.stats.cache()
    }
}
