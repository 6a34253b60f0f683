//! Planning: the settings, their validation, and the merge of declarations into units (an item
//! declared twice is fetched once). Everything a user can get wrong is rejected here, at
//! `load()`, with an error naming the input, so that nothing on the request path can fail on a
//! setting.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::unit::{Binding, Unit};
use crate::call::RetryPolicy;
use crate::error::Error;
use crate::schedule;
use crate::source::{AnyItem, Declaration};

/// Tuning of loading and refreshing (set through [`SecretsBuilder`](crate::SecretsBuilder)).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) default_ttl: Duration,
    pub(crate) jitter: f64,
    pub(crate) max_staleness: Option<Duration>,
    pub(crate) retry: RetryPolicy,
    pub(crate) load_timeout: Duration,
    pub(crate) refresh_timeout: Duration,
    pub(crate) max_wait: Duration,
    pub(crate) failure_backoff: Duration,
    pub(crate) failure_backoff_max: Duration,
    pub(crate) refresh_now_interval: Duration,
    pub(crate) limits: crate::limiter::RateLimits,
    /// Fraction of the shortest TTL of a refresh over which its calls to scarce quotas spread.
    pub(crate) spread: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_ttl: Duration::from_secs(300),
            jitter: 0.1,
            max_staleness: None,
            retry: RetryPolicy::default(),
            load_timeout: Duration::from_secs(8),
            refresh_timeout: Duration::from_secs(5),
            max_wait: Duration::from_secs(5),
            failure_backoff: Duration::from_secs(1),
            failure_backoff_max: Duration::from_secs(60),
            refresh_now_interval: Duration::from_secs(5),
            limits: crate::limiter::RateLimits::process(),
            spread: schedule::DEFAULT_SPREAD,
        }
    }
}

/// The longest TTL.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Upper bound of timeouts, waits and backoffs (a Lambda invocation lasts at most 15 minutes).
const MAX_SETTING: Duration = Duration::from_secs(3600);

/// Whether `ttl` is one the crate accepts (1 ms to 7 days).
pub(crate) fn ttl_in_range(ttl: Duration) -> bool {
    (Duration::from_millis(1)..=MAX_TTL).contains(&ttl)
}

impl Config {
    /// Checks every setting; the first one out of range is the error.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        for (what, value) in [
            ("max wait", self.max_wait),
            ("load timeout", self.load_timeout),
            ("refresh timeout", self.refresh_timeout),
            ("failure backoff", self.failure_backoff),
            ("failure backoff", self.failure_backoff_max),
            ("refresh_now interval", self.refresh_now_interval),
            ("retry attempt timeout", self.retry.attempt_timeout),
            ("retry delay", self.retry.base_delay),
            ("retry delay", self.retry.max_delay),
        ] {
            if value > MAX_SETTING {
                return Err(Error::invalid_input(
                    what,
                    format!("{value:?}"),
                    format!("must be at most {MAX_SETTING:?}"),
                ));
            }
        }
        for (what, value, why) in [
            ("load timeout", self.load_timeout, "must be more than zero"),
            ("refresh timeout", self.refresh_timeout, "must be more than zero"),
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
        if let Some(s) = self.max_staleness.filter(|s| *s > MAX_TTL * 4) {
            return Err(Error::invalid_input(
                "max staleness",
                format!("{s:?}"),
                "must be at most 28 days",
            ));
        }
        if !(0.0..=0.5).contains(&self.jitter) {
            return Err(Error::invalid_input(
                "TTL jitter",
                self.jitter.to_string(),
                "must be between 0.0 and 0.5",
            ));
        }
        if !(0.0..=schedule::MAX_SPREAD).contains(&self.spread) {
            return Err(Error::invalid_input(
                "refresh spread",
                self.spread.to_string(),
                format!(
                    "must be between 0.0 (no spreading) and {}: spreading may delay a value by at most that fraction of its TTL",
                    schedule::MAX_SPREAD
                ),
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
}

/// Validates the settings and declarations and merges declarations into units.
pub(crate) fn plan(config: &Config, decls: Vec<Declaration>, now: Instant) -> Result<Vec<Unit>, Error> {
    config.validate()?;
    let mut units: Vec<Unit> = Vec::new();
    let mut index: HashMap<(*const (), AnyItem), usize> = HashMap::new();
    // Key of each single-value declaration -> what produces it (source, item and JSON field).
    let mut one_keys: HashMap<String, String> = HashMap::new();
    for decl in decls {
        if let Some((what, input, reason)) = decl.invalid {
            return Err(Error::InvalidInput { what, input, reason });
        }
        let ttl = decl.ttl.unwrap_or(config.default_ttl);
        if !ttl_in_range(ttl) {
            return Err(Error::invalid_input(
                "TTL",
                format!("{ttl:?}"),
                format!("the TTL of key `{}` must be between 1 ms and 7 days", decl.key),
            ));
        }
        let staleness = match config.max_staleness {
            Some(s) if s < ttl => {
                return Err(Error::invalid_input(
                    "max staleness",
                    format!("{s:?}"),
                    format!(
                        "it is shorter than the TTL {ttl:?} of key `{}`; it must be at least the TTL",
                        decl.key
                    ),
                ))
            }
            Some(s) => s,
            None => schedule::default_staleness(ttl, config.spread, config.refresh_timeout),
        };
        if !decl.item.tree {
            if decl.key.is_empty() {
                return Err(Error::invalid_input(
                    "key",
                    "",
                    format!("the key for {} `{}` is empty", decl.source.kind(), decl.item),
                ));
            }
            let mut described = format!("{} `{}`", decl.source.kind(), decl.item);
            if let Some(field) = &decl.field {
                described.push_str(&format!(" field `{field}`"));
            }
            if let Some(first) = one_keys.insert(decl.key.clone(), described.clone()) {
                if first != described {
                    return Err(Error::DuplicateKey {
                        key: decl.key,
                        first,
                        second: described,
                    });
                }
            }
        }
        let ptr = Arc::as_ptr(&decl.source) as *const ();
        let i = *index.entry((ptr, decl.item.clone())).or_insert_with(|| {
            units.push(Unit::new(
                decl.source.clone(),
                decl.item.clone(),
                ttl,
                staleness,
                now,
            ));
            units.len() - 1
        });
        let unit = &mut units[i];
        unit.ttl = unit.ttl.min(ttl);
        unit.staleness = unit.staleness.min(staleness);
        if !unit
            .keys
            .iter()
            .any(|b| b.key == decl.key && b.field == decl.field)
        {
            unit.keys.push(Binding {
                key: decl.key,
                field: decl.field,
            });
        }
    }
    Ok(units)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{Error, MemorySource, Quota, QuotaClass, RateLimits, Secrets};

    #[tokio::test]
    async fn one_key_on_two_fields_of_one_secret_is_rejected() {
        // Probe defect 11: accepted silently, one of the two fields won.
        let mem = MemorySource::new();
        mem.set("/rds", r#"{"username":"app","password":"pw"}"#);
        let err = Secrets::builder()
            .add(mem.value("db", "/rds").json_field("username"))
            .add(mem.value("db", "/rds").json_field("password"))
            .load()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::DuplicateKey { key, first, second }
                if key == "db" && first.contains("`username`") && second.contains("`password`")),
            "{err}"
        );
        // The same declaration twice is one value, not a conflict.
        let secrets = Secrets::builder()
            .add(mem.value("db", "/rds").json_field("password"))
            .add(mem.value("db", "/rds").json_field("password"))
            .load()
            .await
            .unwrap();
        assert_eq!(secrets.snapshot().expose_str("db").unwrap(), "pw");
    }

    #[tokio::test]
    async fn every_setting_is_validated_at_load() {
        let mem = MemorySource::new();
        mem.set("/a", "1");
        let cases: Vec<(crate::SecretsBuilder, &str)> = vec![
            (Secrets::builder().refresh_spread(0.5), "refresh spread"),
            (Secrets::builder().refresh_spread(f64::NAN), "refresh spread"),
            (
                Secrets::builder().refresh_timeout(Duration::MAX),
                "refresh timeout",
            ),
            (
                Secrets::builder().refresh_timeout(Duration::ZERO),
                "refresh timeout",
            ),
            (
                Secrets::builder().failure_backoff(Duration::from_secs(10), Duration::from_secs(1)),
                "failure backoff",
            ),
            (
                Secrets::builder().failure_backoff(Duration::ZERO, Duration::ZERO),
                "failure backoff",
            ),
            (Secrets::builder().ttl_jitter(-0.1), "TTL jitter"),
            (
                Secrets::builder().rate_limits({
                    let limits = RateLimits::new();
                    limits.set(QuotaClass::SsmGet, Quota::new(0.0, 1));
                    limits
                }),
                "rate limit",
            ),
        ];
        for (builder, what) in cases {
            let err = builder.add(mem.value("a", "/a")).load().await.unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput { what: w, .. } if *w == what),
                "{what}: {err}"
            );
        }
    }
}
