//! [`Settings`]: what declared and on-demand values share (TTL, jitter, maximum staleness,
//! retries, rate limits, the budget of a refresh, the backoff after failures), their defaults and
//! their validation, and the [`Timing`] of one declaration (its TTL and maximum staleness).

use std::time::Duration;

use crate::call::RetryPolicy;
use crate::error::Error;
use crate::limiter::RateLimits;
use crate::time::schedule;

/// The longest TTL.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest maximum staleness.
const MAX_STALENESS: Duration = Duration::from_secs(28 * 24 * 3600);
/// Upper bound of timeouts, waits and backoffs (a Lambda invocation lasts at most 15 minutes).
pub(crate) const MAX_SETTING: Duration = Duration::from_secs(3600);

/// The settings both caches schedule their values by.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// TTL of declarations without their own.
    pub(crate) default_ttl: Duration,
    /// Fraction of the TTL taken off at random on each refresh.
    pub(crate) jitter: f64,
    /// Set by the builder; else each value's default, from its TTL.
    pub(crate) max_staleness: Option<Duration>,
    pub(crate) retry: RetryPolicy,
    /// Budget of one refresh (of an on-demand fetch), retries included.
    pub(crate) timeout: Duration,
    /// First wait after a failed refresh; doubles up to `failure_backoff_max`.
    pub(crate) failure_backoff: Duration,
    pub(crate) failure_backoff_max: Duration,
    pub(crate) limits: RateLimits,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_ttl: Duration::from_secs(300),
            jitter: 0.1,
            max_staleness: None,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(5),
            failure_backoff: Duration::from_secs(1),
            failure_backoff_max: Duration::from_secs(60),
            limits: RateLimits::process(),
        }
    }
}

/// A declaration's TTL and maximum staleness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    pub(crate) ttl: Duration,
    pub(crate) staleness: Duration,
}

impl Settings {
    /// Checks every setting; the first one out of range is the error. `timeout` names the budget
    /// in errors (`refresh timeout`, `fetch timeout`).
    pub(crate) fn validate(&self, timeout: &'static str) -> Result<(), Error> {
        if !ttl_in_range(self.default_ttl) {
            return Err(Error::invalid_input(
                "TTL",
                format!("{:?}", self.default_ttl),
                "must be between 1 ms and 7 days",
            ));
        }
        for (what, value) in [
            (timeout, self.timeout),
            ("failure backoff", self.failure_backoff),
            ("failure backoff", self.failure_backoff_max),
            ("retry attempt timeout", self.retry.attempt_timeout),
            ("retry delay", self.retry.base_delay),
            ("retry delay", self.retry.max_delay),
        ] {
            at_most_an_hour(what, value)?;
        }
        for (what, value, why) in [
            (timeout, self.timeout, "must be more than zero"),
            (
                "retry attempt timeout",
                self.retry.attempt_timeout,
                "must be more than zero",
            ),
            (
                "failure backoff",
                self.failure_backoff,
                "must be more than zero: a failing value would be fetched again by every invocation",
            ),
        ] {
            if value.is_zero() {
                return Err(Error::invalid_input(what, "0s", why));
            }
        }
        if self.failure_backoff > self.failure_backoff_max {
            return Err(Error::invalid_input(
                "failure backoff",
                format!("{:?}", self.failure_backoff),
                format!(
                    "the first backoff is longer than the longest, {:?}",
                    self.failure_backoff_max
                ),
            ));
        }
        if self.retry.max_attempts == 0 {
            return Err(Error::invalid_input("retry attempts", "0", "must be at least 1"));
        }
        if let Some(s) = self.max_staleness.filter(|s| *s > MAX_STALENESS) {
            return Err(Error::invalid_input(
                "max staleness",
                format!("{s:?}"),
                "must be at most 28 days",
            ));
        }
        if !(0.0..=0.5).contains(&self.jitter) {
            return Err(Error::invalid_input(
                "TTL jitter",
                shown(self.jitter),
                "must be between 0.0 and 0.5",
            ));
        }
        if let Some((class, quota, why)) = self.limits.invalid() {
            return Err(Error::invalid_input(
                "rate limit",
                format!("{class:?}: {quota:?}"),
                why,
            ));
        }
        Ok(())
    }

    /// The TTL and maximum staleness of a declaration whose own TTL is `ttl` (the default's
    /// otherwise); `spread` is what spreading may add to a refresh (0 where nothing is spread);
    /// `whose` names it in errors (``key `db` ``, ``on-demand name `42` ``).
    pub(crate) fn timing(&self, ttl: Option<Duration>, spread: f64, whose: &str) -> Result<Timing, Error> {
        let ttl = ttl.unwrap_or(self.default_ttl);
        if !ttl_in_range(ttl) {
            return Err(Error::invalid_input(
                "TTL",
                format!("{ttl:?}"),
                format!("the TTL of {whose} must be between 1 ms and 7 days"),
            ));
        }
        let staleness = match self.max_staleness {
            Some(s) if s < ttl => {
                return Err(Error::invalid_input(
                    "max staleness",
                    format!("{s:?}"),
                    format!("it is shorter than the TTL {ttl:?} of {whose}; it must be at least the TTL"),
                ))
            }
            Some(s) => s,
            None => schedule::default_staleness(ttl, spread, self.timeout),
        };
        Ok(Timing { ttl, staleness })
    }
}

/// Whether `ttl` is one the crate accepts (1 ms to 7 days).
fn ttl_in_range(ttl: Duration) -> bool {
    (Duration::from_millis(1)..=MAX_TTL).contains(&ttl)
}

/// Rejects `value` above [`MAX_SETTING`].
pub(crate) fn at_most_an_hour(what: &'static str, value: Duration) -> Result<(), Error> {
    if value > MAX_SETTING {
        return Err(Error::invalid_input(
            what,
            format!("{value:?}"),
            format!("must be at most {MAX_SETTING:?}"),
        ));
    }
    Ok(())
}

/// A fraction as an error shows it: in full when it is an ordinary number, in scientific notation
/// otherwise (`f64::MAX` in full is 309 digits).
pub(crate) fn shown(fraction: f64) -> String {
    let magnitude = fraction.abs();
    if fraction == 0.0 || (1e-6..1e6).contains(&magnitude) || !fraction.is_finite() {
        format!("{fraction}")
    } else {
        format!("{fraction:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_are_shown_short() {
        assert_eq!(shown(0.1), "0.1");
        assert_eq!(shown(f64::MAX), "1.7976931348623157e308");
        assert_eq!(shown(f64::MIN_POSITIVE), "2.2250738585072014e-308");
        assert_eq!(shown(f64::NAN), "NaN");
        assert_eq!(shown(-2.0), "-2");
    }

    #[test]
    fn every_setting_out_of_range_is_named() {
        let cases: Vec<(Settings, &str)> = vec![
            (
                Settings {
                    jitter: 0.9,
                    ..Settings::default()
                },
                "TTL jitter",
            ),
            (
                Settings {
                    timeout: Duration::ZERO,
                    ..Settings::default()
                },
                "fetch timeout",
            ),
            (
                Settings {
                    retry: RetryPolicy::default().attempt_timeout(Duration::ZERO),
                    ..Settings::default()
                },
                "retry attempt timeout",
            ),
            (
                Settings {
                    retry: RetryPolicy::default().max_attempts(0),
                    ..Settings::default()
                },
                "retry attempts",
            ),
            (
                Settings {
                    failure_backoff: Duration::from_secs(90),
                    ..Settings::default()
                },
                "failure backoff",
            ),
        ];
        for (settings, what) in cases {
            let err = settings.validate("fetch timeout").unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput { what: w, .. } if *w == what),
                "{what}: {err}"
            );
        }
    }
}
