//! [`RetryPolicy`]: how failed API calls are retried.

use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy::default();
        for retry in 0..40 {
            assert!(p.backoff(retry) <= p.max_delay);
        }
    }
}
