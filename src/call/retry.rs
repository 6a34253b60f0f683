//! How a call is retried: [`RetryPolicy`], and the loop every API call goes through
//! ([`CallContext::call`]): its spread slot, a rate-limit token per attempt, the attempt timeout, the
//! time lost to a freeze given back, throttling fed back to the rate limit, full-jitter backoff, and
//! giving up at the deadline or after the last attempt.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::{CallContext, Operation};
use crate::error::{CallError, CallErrorKind, Transport};
use crate::limiter::QuotaClass;
use crate::time::later;

/// How API calls are retried: full-jitter exponential backoff, within a deadline. Made from the
/// default and changed with its setters (fields may be added).
///
/// ```
/// use std::time::Duration;
/// use lambda_secrets::RetryPolicy;
/// let policy = RetryPolicy::default().max_attempts(3).attempt_timeout(Duration::from_secs(1));
/// assert_eq!((policy.max_attempts, policy.attempt_timeout), (3, Duration::from_secs(1)));
/// assert_eq!(RetryPolicy::default().max_attempts, 6);
/// ```
///
/// Fields may be added, so a policy is never written out field by field:
///
/// ```compile_fail
/// use std::time::Duration;
/// let policy = lambda_secrets::RetryPolicy {
///     max_attempts: 3,
///     base_delay: Duration::from_millis(100),
///     max_delay: Duration::from_secs(1),
///     attempt_timeout: Duration::from_secs(3),
/// };
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts per call, including the first.
    pub max_attempts: u32,
    /// Backoff before the second attempt (before jitter); doubles each attempt.
    pub base_delay: Duration,
    /// Upper bound of one backoff.
    pub max_delay: Duration,
    /// Time one HTTP attempt may take before it is abandoned and retried (a call cut by a
    /// Lambda freeze never answers).
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(3),
        }
    }
}

impl RetryPolicy {
    /// With `attempts` attempts per call, the first included (default 6).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// With `delay` before the second attempt, doubling each attempt (default 100 ms).
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.base_delay = delay;
        self
    }

    /// With at most `delay` for one backoff (default 1 s).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// With `timeout` for one HTTP attempt before it is abandoned and retried (default 3 s).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Full jitter: uniform in `[0, min(max_delay, base * 2^retry))`.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << retry.min(20));
        exp.min(self.max_delay).mul_f64(crate::random::f64())
    }
}

impl CallContext {
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
    pub async fn call<T, F, Fut>(&self, operation: Operation, attempt: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        use tracing::Instrument;
        // OpenTelemetry's attributes for AWS SDK calls; the request id is recorded by the source
        // (from the answer), the attempts and the outcome here. Never a name or a value.
        let rpc_service = crate::telemetry::rpc_service(operation.quota());
        let span = tracing::info_span!(
            "aws.call",
            otel.name = format_args!("{rpc_service}.{}", operation.name()),
            otel.kind = "client",
            rpc.system = if operation.quota().is_some() { "aws-api" } else { "other" },
            rpc.service = rpc_service,
            rpc.method = operation.name(),
            cloud.region = self.region.as_deref(),
            aws.request_id = tracing::field::Empty,
            aws.attempts = tracing::field::Empty,
            aws.throttled = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let traced = span.clone();
        let mut unanswered = Unanswered(Some(span.clone()));
        let attempts = self.attempts(operation, attempt, &traced).instrument(span);
        let result = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(attempts)).await;
        unanswered.0 = None;
        let result = match result {
            Ok(result) => result,
            Err(panic) => {
                // The source's code panicked under this call (the calls dropped while the panic
                // unwinds are cancelled).
                traced
                    .record("otel.status_code", "ERROR")
                    .record("error.type", "panic");
                std::panic::resume_unwind(panic)
            }
        };
        match &result {
            Ok(_) => traced.record("otel.status_code", "OK"),
            Err(e) => traced
                .record("otel.status_code", "ERROR")
                .record("error.type", crate::telemetry::error_type(e.kind())),
        };
        result
    }

    /// [`call`](Self::call)'s attempts, noted in `span`.
    async fn attempts<T, F, Fut>(
        &self,
        operation: Operation,
        mut attempt: F,
        span: &tracing::Span,
    ) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let mut attempts: u32 = 0;
        let mut retry = 0;
        let mut failures = 0;
        let mut thaws = 0;
        // Faults of the transport, each retried at once, once (see `Transport`).
        let (mut resigned, mut reconnected) = (false, false);
        // A retry was decided: counted when its attempt is sent.
        let mut retrying = false;
        // The call is under way from its first attempt until it ends (`cache.refresh.duration`).
        let mut busy = None;
        let class = operation.quota();
        let operation = operation.name();
        let service = crate::telemetry::service_of(class);
        let bucket = class.and_then(|c| self.limits.as_ref().map(|l| l.bucket_in(c, self.region.as_ref())));
        let bucket = bucket.as_deref();
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
            let mark = self.mark();
            let lost = spread.urgency.sleep_until(slot).await;
            self.give_back(mark, lost);
        }
        // The last answer the service gave: what a call that then runs out of time reports.
        let mut last: Option<CallError> = None;
        let out_of_time = |last: Option<CallError>, retry: u32, why: String| match last {
            Some(err) => err.noted(format_args!("gave up after {retry} attempt(s): {why}")),
            None => CallError::new(CallErrorKind::Throttled, format!("{operation}: {why}")).not_sent(),
        };
        loop {
            if let Some(bucket) = bucket {
                // Frozen while waiting for a token for a retry: not the call's time either
                // (the part from when the token was due).
                let noting = |due, ended| {
                    if busy.is_some() {
                        self.timer.frozen(due, ended);
                    }
                };
                if let Err(wait) = bucket.acquire_noting(&self.deadline, noting).await {
                    return Err(out_of_time(
                        last,
                        retry,
                        format!("the deadline came before the rate limit allowed another call (next slot in {wait:?})"),
                    ));
                }
            }
            let began = Instant::now();
            let mark = self.mark();
            let left = mark.deadline.saturating_duration_since(began);
            if left.is_zero() {
                return Err(out_of_time(
                    last,
                    retry,
                    "the deadline came before an attempt could start".to_owned(),
                ));
            }
            self.stats.count(service, operation, self.region.as_ref());
            // A retry is counted when it is sent (not when decided: the deadline may cut its wait).
            if std::mem::take(&mut retrying) {
                self.stats.retried(service, operation);
            }
            if busy.is_none() {
                busy = Some(self.timer.begin(began));
            }
            attempts += 1;
            span.record("aws.attempts", attempts);
            let timeout = match self.first_attempt_timeout {
                Some(first) if retry == 0 && thaws == 0 => first.min(self.policy.attempt_timeout),
                _ => self.policy.attempt_timeout,
            }
            .min(left);
            let noted = self.watch.as_deref().map(super::Watch::begin);
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
            match (noted, &result) {
                // A failure of the service's: not a freeze's, nor a pooled connection's found
                // dead by a call's first attempt (retried at once, below).
                (Some(noted), Err(e))
                    if e.is_retryable()
                        && e.kind() != CallErrorKind::Throttled
                        && lost.is_zero()
                        && !(e.transport() == Transport::ConnectionLost
                            && retry == 0
                            && thaws == 0
                            && !reconnected) =>
                {
                    noted.failed()
                }
                _ => {}
            }
            self.give_back(mark, lost);
            if !lost.is_zero() {
                // Only what was certainly frozen (from when it was due): a call's wait may be
                // long, and others of the group may have run in the part before.
                self.timer.frozen(later(began, timeout), later(began, lost));
            }
            let err = match result {
                Ok(v) => return Ok(v),
                Err(err) => err,
            };
            // A request signed before a freeze and sent after it is refused as expired: signed
            // again (each attempt builds its request anew) and sent at once. A second such
            // answer is a wrong clock, final.
            if err.transport() == Transport::StaleSignature {
                if resigned {
                    tracing::warn!(operation, error = %err, aws_message = err.aws_message().unwrap_or(""), "AWS refused the request's signing time twice: check the clock");
                    return Err(err.noted(
                        "refused again when signed anew: the machine's clock is off by more than AWS allows \
                         (5 minutes); not an IAM matter",
                    ));
                }
                resigned = true;
                retrying = true;
                tracing::debug!(
                    operation,
                    "request refused as signed too long ago (signed before a freeze?); signing it again"
                );
                last = Some(err);
                continue;
            }
            // The first attempt of a call on a connection that died while the process was frozen
            // or idle (reset, closed by the peer): retried at once, on a new connection.
            if err.transport() == Transport::ConnectionLost && retry == 0 && thaws == 0 && !reconnected {
                reconnected = true;
                retrying = true;
                tracing::debug!(operation, "connection lost under the first attempt (closed while idle or frozen?); retrying at once");
                last = Some(err);
                continue;
            }
            // A frozen attempt that failed (its connection died in the freeze) is retried at once.
            if err.is_retryable() && !lost.is_zero() && thaws < 3 {
                thaws += 1;
                retrying = true;
                tracing::debug!(operation, ?lost, "AWS call interrupted by a freeze; retrying");
                last = Some(err);
                continue;
            }
            if err.kind() == CallErrorKind::Throttled {
                self.stats.throttled(service, operation);
                span.record("aws.throttled", true);
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
                if self.background {
                    tracing::debug!(operation, attempts = retry, error = %err, aws_message = err.aws_message().unwrap_or(""), "giving up on AWS call: {why}");
                } else {
                    tracing::warn!(
                        operation,
                        attempts = retry,
                        error = %err,
                        aws_message = err.aws_message().unwrap_or(""),
                        "giving up on AWS call: {why}"
                    );
                }
                return Err(err.noted(format_args!("gave up after {retry} attempt(s): {why}")));
            }
            retrying = true;
            tracing::debug!(operation, retry, ?delay, error = %err, "retrying AWS call");
            last = Some(err);
            let mark = self.mark();
            let due = later(mark.began, delay);
            let lost = crate::time::freeze::sleep_until(due).await;
            self.give_back(mark, lost);
            if !lost.is_zero() {
                self.timer.frozen(due, later(mark.began, lost));
            }
        }
    }
}

/// Ends the span of a call dropped before its answer (the loser of a hedge, a refresh stopped
/// for a SnapStart snapshot, a fetch cut at its budget): `error.type = "cancelled"`.
struct Unanswered(Option<tracing::Span>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(span) = self.0.take() {
            span.record("otel.status_code", "ERROR")
                .record("error.type", "cancelled");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    use super::*;
    use crate::call::{CallStats, Urgency};
    use crate::error::Transport;

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

    fn stale() -> CallError {
        CallError::new(
            CallErrorKind::Fatal,
            "GetParameters: InvalidSignatureException (HTTP 400)",
        )
        .in_transport(Transport::StaleSignature)
    }

    fn reset() -> CallError {
        CallError::new(
            CallErrorKind::Transient,
            "GetParameters: could not send the request (connection failed)",
        )
        .in_transport(Transport::ConnectionLost)
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_signature_is_signed_again_and_sent_at_once_a_second_is_final() {
        let (ctx, stats) = ctx(Duration::from_secs(5));
        let mut n = 0;
        let start = Instant::now();
        let out = ctx
            .call(SSM_GET, || {
                n += 1;
                let first = n == 1;
                async move {
                    if first {
                        Err(stale())
                    } else {
                        Ok("ok")
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!((out, stats.calls()["GetParameters"]), ("ok", 2));
        assert_eq!(start.elapsed(), Duration::ZERO, "no backoff");

        let (again, stats) = self::ctx(Duration::from_secs(5));
        let err = again
            .call(SSM_GET, || async { Err::<(), _>(stale()) })
            .await
            .unwrap_err();
        assert_eq!(stats.calls()["GetParameters"], 2, "once again, then final");
        assert!(err.message().contains("clock"), "{err}");
        assert!(!err.is_retryable());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_lost_under_a_call_s_first_attempt_is_retried_at_once_once() {
        let (ctx, stats) = ctx(Duration::from_secs(5));
        let mut n = 0;
        let start = Instant::now();
        let out = ctx
            .call(SSM_GET, || {
                n += 1;
                let first = n == 1;
                async move {
                    if first {
                        Err(reset())
                    } else {
                        Ok("ok")
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!((out, stats.calls()["GetParameters"]), ("ok", 2));
        assert_eq!(start.elapsed(), Duration::ZERO, "no backoff");
        // Lost every time: one attempt at once, then the policy's 4 with backoff (5 in all).
        let (again, stats) = self::ctx(Duration::from_secs(5));
        again
            .call(SSM_GET, || async { Err::<(), _>(reset()) })
            .await
            .unwrap_err();
        assert_eq!(stats.calls()["GetParameters"], 5);
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
    async fn the_calls_time_leaves_out_the_spread_wait_and_a_freeze() {
        // Review of the metrics: `cache.refresh.duration` counted the spread slot and freezes.
        let stats = Arc::new(CallStats::default());
        let ctx = CallContext::new(
            stats,
            RetryPolicy::default(),
            None,
            Instant::now() + Duration::from_secs(600),
        )
        .spread(Duration::from_secs(300), Arc::new(Urgency::default()));
        let started = Instant::now();
        let flag = std::sync::atomic::AtomicBool::new(false);
        let frozen = &flag;
        ctx.call(SSM_GET, || async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if !frozen.swap(true, Ordering::SeqCst) {
                // Lambda froze the process under the first attempt, which then failed.
                tokio::time::advance(Duration::from_secs(60)).await;
                return Err(CallError::new(CallErrorKind::Transient, "connection reset"));
            }
            Ok(())
        })
        .await
        .unwrap();
        let now = Instant::now();
        assert!(now - started > Duration::from_secs(60), "{:?}", now - started);
        // The slot wait is not the calls' time, nor the frozen attempt from when it was due
        // (3 s in: the attempt's own report is only what was certainly frozen; the fetch's
        // watch, not here, reports the rest at a second's grain), then the second attempt's
        // 20 ms (sent at once after a frozen one).
        assert_eq!(ctx.took(now), Some(Duration::from_millis(3_020)));
        let other = ctx.timed();
        assert_eq!(other.took(now), None, "a clock of its own");
    }

    #[tokio::test(start_paused = true)]
    async fn a_freeze_while_a_retry_waits_for_its_token_is_not_the_calls_time() {
        // Review of the metrics: the limiter's wait gave its freeze back to the deadline only.
        let policy = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(50),
            attempt_timeout: Duration::from_secs(3),
        };
        // One call a second: the retry waits about a second for its token.
        let limits = crate::limiter::RateLimits::new();
        limits.set(QuotaClass::SsmGet, crate::limiter::Quota::new(1.0, 1));
        let ctx = CallContext::new(
            Arc::new(CallStats::default()),
            policy,
            Some(limits),
            Instant::now() + Duration::from_secs(30),
        );
        let mut n = 0;
        let call = ctx.call(SSM_GET, || {
            n += 1;
            let first = n == 1;
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match first {
                    true => Err(CallError::new(CallErrorKind::Transient, "HTTP 500")),
                    false => Ok(()),
                }
            }
        });
        let freeze = async {
            tokio::time::sleep(Duration::from_millis(200)).await; // in the token wait
            tokio::time::advance(Duration::from_secs(60)).await;
        };
        let (answer, ()) = tokio::join!(call, freeze);
        answer.unwrap();
        let took = ctx.took(Instant::now()).unwrap();
        // The token was due about a second in: from then to the thaw was frozen.
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_cut_by_the_deadline_is_not_counted() {
        // Review of the metrics: `aws.retries` counted a retry decided but never sent.
        let stats = Arc::new(CallStats::default());
        let policy = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(50),
            attempt_timeout: Duration::from_millis(100),
        };
        // One call per 10 s: the first attempt spends the burst, so the retry decided after its
        // failure would wait for a token past the deadline, and is never sent.
        let limits = crate::limiter::RateLimits::new();
        limits.set(QuotaClass::SsmGet, crate::limiter::Quota::new(0.1, 1));
        let ctx = CallContext::new(
            stats.clone(),
            policy,
            Some(limits),
            Instant::now() + Duration::from_millis(500),
        );
        let mut n = 0;
        let err = ctx
            .call(SSM_GET, || {
                n += 1;
                async { Err::<(), _>(CallError::new(CallErrorKind::Transient, "HTTP 500")) }
            })
            .await
            .unwrap_err();
        assert_eq!(n, 1, "{err}");
        assert_eq!(stats.retries.load(Ordering::Relaxed), 0, "{err}");
    }

    #[test]
    fn a_call_dropped_before_its_answer_ends_its_span_as_cancelled() {
        let ((), spans) = crate::test_support::traced(async {
            let (ctx, _) = ctx(Duration::from_secs(5));
            let call = ctx.call(SSM_GET, std::future::pending::<Result<(), CallError>>);
            // The loser of a hedge: dropped while its attempt is out.
            let _ = tokio::time::timeout(Duration::from_millis(10), call).await;
        });
        let span = &spans.named("aws.call")[0];
        assert_eq!(span["otel.status_code"], "ERROR", "{span:?}");
        assert_eq!(span["error.type"], "cancelled", "{span:?}");
        assert_eq!(span["aws.attempts"], "1", "{span:?}");
    }

    #[test]
    fn a_call_whose_attempt_panics_ends_its_span_as_a_panic() {
        let ((), spans) = crate::test_support::traced(async {
            let (ctx, _) = ctx(Duration::from_secs(5));
            let call = ctx.call(SSM_GET, || async {
                panic!("a source's bug");
                #[allow(unreachable_code)]
                Ok::<(), CallError>(())
            });
            let caught = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(call)).await;
            assert!(caught.is_err());
        });
        let span = &spans.named("aws.call")[0];
        assert_eq!(span["otel.status_code"], "ERROR", "{span:?}");
        assert_eq!(span["error.type"], "panic", "{span:?}");
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

#[cfg(test)]
mod policy_tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy::default();
        for retry in 0..40 {
            assert!(p.backoff(retry) <= p.max_delay);
        }
    }
}
