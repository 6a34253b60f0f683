//! [`CallContext`]: the one place every API call of a source goes through. It rate-limits by the
//! operation's quota, counts, retries with full-jitter backoff within the deadline of the load or
//! refresh in progress, gives back time lost to freezes, and spreads background calls to scarce
//! quotas.

mod operation;
mod retry;

pub use operation::Operation;
pub use retry::RetryPolicy;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{CallError, CallErrorKind};
use crate::limiter::{QuotaClass, RateLimits};
use crate::time::{later, Deadline};

/// Distinct final failures logged as warnings per [`Secrets`](crate::Secrets); later ones are
/// logged at debug level.
const WARNED_CAUSES: usize = 256;

/// Per-operation API call counts and retry figures, shared by all clones of a [`Secrets`](crate::Secrets).
#[derive(Debug, Default)]
pub(crate) struct CallStats {
    calls: Mutex<BTreeMap<&'static str, u64>>,
    pub(crate) throttled: AtomicU64,
    pub(crate) retries: AtomicU64,
    /// Final failures already logged as warnings: hashes of (operation, message, AWS message).
    warned: Mutex<std::collections::HashSet<u64>>,
}

impl CallStats {
    pub(crate) fn calls(&self) -> BTreeMap<String, u64> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    /// Whether `err` is the first final failure of `operation` with this message and AWS message
    /// (to warn once per distinct answer). Past [`WARNED_CAUSES`] distinct answers, none is new.
    fn first_failure(&self, operation: &'static str, err: &CallError) -> bool {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (operation, err.message(), err.aws_message()).hash(&mut hasher);
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        warned.len() < WARNED_CAUSES && warned.insert(hasher.finish())
    }

    /// The call counters as [`Stats`](crate::Stats) (the cache fills in its own).
    pub(crate) fn stats(&self) -> crate::stats::Stats {
        crate::stats::Stats {
            calls: self.calls(),
            throttled: self.throttled.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            ..Default::default()
        }
    }

    fn count(&self, operation: &'static str) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        *calls.entry(operation).or_default() += 1;
    }
}

/// Whether someone waits for a refresh: set by an invocation that finds a value past its maximum
/// staleness while that value's refresh is spreading its calls. One per refresh, so the end of
/// another refresh never resets it.
#[derive(Debug, Default)]
pub(crate) struct Urgency {
    urgent: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Urgency {
    pub(crate) fn urgent() -> Self {
        Urgency {
            urgent: AtomicBool::new(true),
            notify: tokio::sync::Notify::new(),
        }
    }

    /// Ends the spreading of this refresh's calls: the waiting ones start now.
    pub(crate) fn hurry(&self) {
        if !self.urgent.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    pub(crate) fn is_urgent(&self) -> bool {
        self.urgent.load(Ordering::Acquire)
    }

    /// Sleeps until `until` or until hurried; returns the time lost to a freeze.
    async fn sleep_until(&self, until: Instant) -> Duration {
        let notified = self.notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if self.is_urgent() {
            return Duration::ZERO;
        }
        let sleep = std::pin::pin!(crate::time::freeze::sleep_until(until));
        match futures_util::future::select(sleep, notified).await {
            futures_util::future::Either::Left((lost, _)) => lost,
            futures_util::future::Either::Right(_) => Duration::ZERO,
        }
    }
}

/// How a background refresh spreads its calls to scarce quotas.
#[derive(Debug)]
struct Spread {
    start: Instant,
    window: Duration,
    /// The refresh's random offset in the sequence of slots, and the calls that took one.
    offset: f64,
    calls: std::sync::atomic::AtomicU32,
    urgency: Arc<Urgency>,
}

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
    spread: Option<Spread>,
    /// A shorter timeout for the first attempt of each call (after a SnapStart restore, where a
    /// pooled connection may be dead without a word).
    first_attempt_timeout: Option<Duration>,
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
            first_attempt_timeout: None,
        }
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
            self.spread = Some(Spread {
                start: Instant::now(),
                window,
                offset: crate::random::f64(),
                calls: Default::default(),
                urgency,
            });
        }
        self
    }

    /// A context for calls that may take at most `fraction` of the time left (a fan-out after a
    /// denied batch): the same counts, policy and rate limits, its own deadline, no spreading.
    pub(crate) fn share(&self, fraction: f64) -> CallContext {
        let now = Instant::now();
        let left = self.deadline.get().saturating_duration_since(now);
        CallContext {
            stats: self.stats.clone(),
            policy: self.policy,
            limits: self.limits.clone(),
            deadline: Arc::new(Deadline::new(later(now, left.mul_f64(fraction.clamp(0.0, 1.0))))),
            spread: None,
            first_attempt_timeout: self.first_attempt_timeout,
        }
    }

    /// A context of its own (for testing a [`Source`](crate::Source)): retries by `policy` until `deadline`,
    /// without rate limits.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use lambda_secrets::{CallContext, RetryPolicy};
    /// let calls = CallContext::standalone(RetryPolicy::default(), Instant::now() + Duration::from_secs(2));
    /// # let _ = calls;
    /// ```
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

    pub(crate) fn deadline_handle(&self) -> &Deadline {
        &self.deadline
    }

    /// Makes one API call `operation`, retrying retryable failures with full-jitter exponential
    /// backoff while the deadline allows: throttling until the deadline, other failures up to
    /// `max_attempts`. Each attempt first takes a token from the rate limit of the operation's
    /// [`QuotaClass`], if it has one; a throttling answer slows that limit down. Time the process
    /// spends frozen (Lambda between invocations) in any wait is given back to the deadline. A
    /// call that fails for good is logged as a `tracing` warning, with what the service said.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use lambda_secrets::{CallContext, CallError, CallErrorKind, Operation, RetryPolicy};
    ///
    /// const READ: Operation = Operation::new("MyStoreRead");
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let calls = CallContext::standalone(RetryPolicy::default(), Instant::now() + Duration::from_secs(5));
    /// let mut attempts = 0;
    /// let answer = calls
    ///     .call(READ, || {
    ///         attempts += 1;
    ///         let first = attempts == 1;
    ///         async move {
    ///             if first {
    ///                 return Err(CallError::new(CallErrorKind::Transient, "MyStoreRead: HTTP 503"));
    ///             }
    ///             Ok("answer")
    ///         }
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!((answer, attempts), ("answer", 2));
    /// # });
    /// ```
    pub async fn call<T, F, Fut>(&self, operation: Operation, mut attempt: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let mut retry = 0;
        let mut failures = 0;
        let mut thaws = 0;
        let class = operation.quota();
        let operation = operation.name();
        let bucket = class.and_then(|c| self.limits.as_ref().map(|l| l.bucket(c)));
        if let Some(spread) = self
            .spread
            .as_ref()
            .filter(|_| class.is_some_and(QuotaClass::is_scarce))
        {
            let index = spread.calls.fetch_add(1, Ordering::Relaxed);
            let slot = later(
                spread.start,
                crate::time::schedule::call_slot(spread.window, spread.offset, index),
            );
            let seen = self.deadline.get();
            let lost = spread.urgency.sleep_until(slot).await;
            self.deadline.give_back(seen, lost);
        }
        // The last answer the service gave: what a call that then runs out of time reports.
        let mut last: Option<CallError> = None;
        let out_of_time = |last: Option<CallError>, retry: u32, why: String| match last {
            Some(err) => err.noted(format_args!("gave up after {retry} attempt(s): {why}")),
            None => CallError::new(CallErrorKind::Throttled, format!("{operation}: {why}")).not_sent(),
        };
        loop {
            if let Some(bucket) = bucket {
                if let Err(wait) = bucket.acquire(&self.deadline).await {
                    return Err(out_of_time(
                        last,
                        retry,
                        format!("the deadline came before the rate limit allowed another call (next slot in {wait:?})"),
                    ));
                }
            }
            let began = Instant::now();
            let seen = self.deadline.get();
            let left = seen.saturating_duration_since(began);
            if left.is_zero() {
                return Err(out_of_time(
                    last,
                    retry,
                    "the deadline came before an attempt could start".to_owned(),
                ));
            }
            self.stats.count(operation);
            let timeout = match self.first_attempt_timeout {
                Some(first) if retry == 0 && thaws == 0 => first.min(self.policy.attempt_timeout),
                _ => self.policy.attempt_timeout,
            }
            .min(left);
            let result = match tokio::time::timeout(timeout, attempt()).await {
                Ok(result) => result,
                Err(_) => Err(CallError::new(
                    CallErrorKind::Transient,
                    format!("{operation}: no answer within {timeout:?}"),
                )),
            };
            // An attempt that outlived its own timeout by far was frozen with the process (Lambda
            // between invocations), even if it then succeeded (the answer was waiting at the
            // thaw): the time says nothing of the service and costs the budget nothing, so the
            // next call of this refresh still has its budget.
            let lost = crate::time::freeze::frozen_for(began, later(began, timeout), Instant::now());
            self.deadline.give_back(seen, lost);
            let err = match result {
                Ok(v) => return Ok(v),
                Err(err) => err,
            };
            // A frozen attempt that failed (its connection died in the freeze) is retried at once.
            if err.is_retryable() && !lost.is_zero() && thaws < 3 {
                thaws += 1;
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(operation, ?lost, "AWS call interrupted by a freeze; retrying");
                last = Some(err);
                continue;
            }
            if err.kind() == CallErrorKind::Throttled {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                if let Some(bucket) = bucket {
                    bucket.throttled();
                }
            } else {
                failures += 1;
            }
            if !err.is_retryable() {
                if matches!(err.kind(), CallErrorKind::Denied | CallErrorKind::Fatal) {
                    // What the service said, once per distinct answer (a denied DescribeSecret that
                    // every refresh falls back from is not a warning per refresh).
                    if self.stats.first_failure(operation, &err) {
                        tracing::warn!(operation, error = %err, aws_message = err.aws_message().unwrap_or(""), "AWS call failed");
                    } else {
                        tracing::debug!(operation, error = %err, aws_message = err.aws_message().unwrap_or(""), "AWS call failed");
                    }
                }
                return Err(err);
            }
            retry += 1;
            let delay = self.policy.backoff(retry - 1);
            let no_time = later(Instant::now(), delay) >= self.deadline.get();
            if failures >= self.policy.max_attempts || no_time {
                let why = if no_time {
                    "the deadline came"
                } else {
                    "attempts ran out"
                };
                tracing::warn!(
                    operation,
                    attempts = retry,
                    error = %err,
                    aws_message = err.aws_message().unwrap_or(""),
                    "giving up on AWS call: {why}"
                );
                return Err(err.noted(format_args!("gave up after {retry} attempt(s): {why}")));
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(operation, retry, ?delay, error = %err, "retrying AWS call");
            last = Some(err);
            let seen = self.deadline.get();
            let lost = crate::time::freeze::sleep_until(later(Instant::now(), delay)).await;
            self.deadline.give_back(seen, lost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSM_GET: Operation = Operation::new("GetParameters").with_quota(QuotaClass::SsmGet);

    fn ctx(deadline: Duration) -> (CallContext, Arc<CallStats>) {
        let stats = Arc::new(CallStats::default());
        let policy = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            attempt_timeout: Duration::from_millis(200),
        };
        (
            CallContext::new(stats.clone(), policy, None, Instant::now() + deadline),
            stats,
        )
    }

    #[tokio::test]
    async fn a_final_failure_is_a_warning_once_per_distinct_answer() {
        // A denied DescribeSecret that every refresh falls back from must not warn every refresh;
        // a different answer (another cause) is a warning of its own.
        let capture = crate::test_support::Capture::default();
        let _guard = capture.start();
        let (ctx, _stats) = ctx(Duration::from_secs(5));
        let describe = Operation::new("DescribeSecret");
        for _ in 0..3 {
            ctx.call(describe, || async {
                Err::<(), _>(CallError::new(
                    CallErrorKind::Denied,
                    "DescribeSecret: AccessDenied",
                ))
            })
            .await
            .unwrap_err();
        }
        ctx.call(describe, || async {
            Err::<(), _>(CallError::new(CallErrorKind::Fatal, "DescribeSecret: Validation"))
        })
        .await
        .unwrap_err();
        let log = capture.text();
        assert_eq!(log.matches("WARN").count(), 2, "{log}");
        assert_eq!(log.matches("AccessDenied").count(), 1, "{log}");
    }

    #[tokio::test]
    async fn retries_throttling_then_succeeds() {
        let (ctx, stats) = ctx(Duration::from_secs(5));
        let mut n = 0;
        let out = ctx
            .call(SSM_GET, || {
                n += 1;
                let fail = n < 3;
                async move {
                    if fail {
                        Err(CallError::new(CallErrorKind::Throttled, "ThrottlingException"))
                    } else {
                        Ok(7)
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(out, 7);
        assert_eq!(stats.calls()["GetParameters"], 3);
        assert_eq!(stats.throttled.load(Ordering::Relaxed), 2);
        assert_eq!(stats.retries.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn does_not_retry_denied_and_stops_after_max_attempts() {
        let (ctx, stats) = ctx(Duration::from_secs(5));
        let err = ctx
            .call(SSM_GET, || async {
                Err::<(), _>(CallError::new(CallErrorKind::Denied, "no"))
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), CallErrorKind::Denied);
        assert_eq!(stats.calls()["GetParameters"], 1);

        let err = ctx
            .call(Operation::new("GetParametersByPath"), || async {
                Err::<(), _>(CallError::new(CallErrorKind::Transient, "HTTP 503"))
            })
            .await
            .unwrap_err();
        assert!(
            err.message()
                .contains("gave up after 4 attempt(s): attempts ran out"),
            "{err}"
        );
        assert_eq!(stats.calls()["GetParametersByPath"], 4);
    }

    #[tokio::test]
    async fn an_attempt_that_never_answers_is_abandoned_and_retried() {
        let (ctx, stats) = ctx(Duration::from_secs(5));
        let mut n = 0;
        let out = ctx
            .call(SSM_GET, || {
                n += 1;
                let hang = n == 1;
                async move {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, CallError>("ok")
                }
            })
            .await
            .unwrap();
        assert_eq!(out, "ok");
        assert_eq!(stats.calls()["GetParameters"], 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_first_attempt_timeout_abandons_a_dead_connection_sooner() {
        for (first, within) in [
            (None, Duration::from_secs(3)),
            (Some(Duration::from_secs(1)), Duration::from_secs(1)),
        ] {
            let stats = Arc::new(CallStats::default());
            let mut ctx = CallContext::new(
                stats.clone(),
                RetryPolicy::default(),
                None,
                Instant::now() + Duration::from_secs(9),
            );
            if let Some(first) = first {
                ctx = ctx.first_attempt_timeout(first);
            }
            let started = Instant::now();
            let mut n = 0;
            ctx.call(SSM_GET, || {
                n += 1;
                let dead = n == 1;
                async move {
                    if dead {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, CallError>("ok")
                }
            })
            .await
            .unwrap();
            // The first attempt's timeout, then at most one backoff (100 ms before jitter).
            let took = started.elapsed();
            assert!(
                took >= within && took <= within + Duration::from_millis(100),
                "{first:?}: {took:?}"
            );
            assert_eq!(stats.calls()["GetParameters"], 2);
        }
    }

    #[tokio::test]
    async fn an_attempt_frozen_past_the_deadline_is_retried_with_the_budget_it_had() {
        let stats = Arc::new(CallStats::default());
        let policy = RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            attempt_timeout: Duration::from_millis(100),
        };
        let ctx = CallContext::new(
            stats.clone(),
            policy,
            None,
            Instant::now() + Duration::from_millis(300),
        );
        let mut n = 0;
        let out = ctx
            .call(SSM_GET, || {
                n += 1;
                let first = n == 1;
                async move {
                    if first {
                        // The process is frozen: no timer fires, the call comes back cut.
                        std::thread::sleep(Duration::from_millis(1300));
                        return Err(CallError::new(CallErrorKind::Transient, "connection reset"));
                    }
                    Ok("after thaw")
                }
            })
            .await
            .unwrap();
        assert_eq!(out, "after thaw");
        assert_eq!(stats.calls()["GetParameters"], 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hurried_spread_call_starts_at_once() {
        // Review defect 4: urgency belongs to one refresh; hurrying it starts its waiting calls.
        let stats = Arc::new(CallStats::default());
        let urgency = Arc::new(Urgency::default());
        let other = Arc::new(Urgency::default()); // another refresh's, never hurried
        let spread = |u: &Arc<Urgency>| {
            Arc::new(
                CallContext::new(
                    stats.clone(),
                    RetryPolicy::default(),
                    None,
                    Instant::now() + Duration::from_secs(600),
                )
                .spread(Duration::from_secs(300), u.clone()),
            )
        };
        let (ctx, other_ctx) = (spread(&urgency), spread(&other));
        let started = Instant::now();
        let call = |ctx: Arc<CallContext>| {
            tokio::spawn(async move {
                for _ in 0..5 {
                    ctx.call(SSM_GET, || async { Ok::<_, CallError>(()) })
                        .await
                        .unwrap();
                }
                Instant::now()
            })
        };
        let (mine, theirs) = (call(ctx), call(other_ctx));
        tokio::time::sleep(Duration::from_millis(10)).await;
        urgency.hurry();
        assert_eq!(
            mine.await.unwrap(),
            started + Duration::from_millis(10),
            "all five at once"
        );
        // The other refresh still spreads its calls over its window.
        assert!(theirs.await.unwrap() > started + Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_freeze_during_a_retry_backoff_gives_the_budget_back() {
        // Probe defect 8: a freeze during a backoff ended the call with a 0 ns "attempt".
        let stats = Arc::new(CallStats::default());
        let policy = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(50),
            attempt_timeout: Duration::from_millis(100),
        };
        let ctx = Arc::new(CallContext::new(
            stats.clone(),
            policy,
            None,
            Instant::now() + Duration::from_millis(300),
        ));
        let attempts = Arc::new(AtomicU64::new(0));
        let call = {
            let (ctx, attempts) = (ctx.clone(), attempts.clone());
            tokio::spawn(async move {
                ctx.call(SSM_GET, || {
                    let n = attempts.fetch_add(1, Ordering::SeqCst);
                    async move {
                        match n {
                            0 => Err(CallError::new(CallErrorKind::Transient, "HTTP 500")),
                            _ => Ok("after thaw"),
                        }
                    }
                })
                .await
            })
        };
        while attempts.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Frozen for a minute, in the backoff or right after it: no second attempt yet.
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(call.await.unwrap().unwrap(), "after thaw");
        assert_eq!(stats.calls()["GetParameters"], 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unvalidated_policy_never_overflows_the_clock() {
        // `standalone` takes any policy (a second review found `max_delay: Duration::MAX`
        // overflowing `Instant + Duration`).
        let policy = RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::MAX,
            max_delay: Duration::MAX,
            attempt_timeout: Duration::MAX,
        };
        let ctx = CallContext::standalone(policy, std::time::Instant::now() + Duration::from_secs(1));
        let err = ctx
            .call(SSM_GET, || async {
                Err::<(), _>(CallError::new(CallErrorKind::Transient, "HTTP 503"))
            })
            .await
            .unwrap_err();
        assert!(err.message().contains("the deadline came"), "{err}");
    }
}
