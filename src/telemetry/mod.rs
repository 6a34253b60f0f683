//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`): what the
//! caches and their AWS calls do, for the exporter the function already uses (Prometheus,
//! OpenTelemetry, CloudWatch EMF).
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | [`cache.hits`](HITS) | counter | `cache` | reads answered from the cache: a snapshot taken with nothing due (one per invocation through the [`Layer`](crate::SecretsLayer)), an on-demand lookup answered from the cache |
//! | [`cache.misses`](MISSES) | counter | `cache` | a snapshot taken with a value due (served while it refreshes, or waited for), an on-demand lookup that fetched |
//! | [`cache.load.failures`](LOAD_FAILURES) | counter | `cache`, `source` | values a cold load (or a SnapStart restore's reload) could not load; on-demand fetches that found no value (an error, not found, denied) |
//! | [`cache.refresh.failures`](REFRESH_FAILURES) | counter | `cache`, `source` | refreshes that failed (the last good value kept being served) |
//! | [`cache.evictions`](EVICTIONS) | counter | `cache` | on-demand entries evicted by the cache's bounds or expired |
//! | [`cache.waits`](WAITS) | counter | `cache` | reads that waited for values past their maximum staleness |
//! | [`cache.oldest_value.age`](OLDEST_AGE) | gauge (seconds) | `cache` | age of the oldest declared value served, set when a snapshot is published and at each read that finds a value due (the only reads that can serve a value older than its TTL) |
//! | [`cache.refresh.duration`](REFRESH_DURATION) | histogram (seconds) | `cache`, `source` | how long a refresh's calls to one source took: the time at least one was under way (each from its first attempt sent to its answer), without the spread-slot and rate-limit waits before a call's first attempt nor time the process spent frozen (Lambda between invocations) |
//! | [`aws.calls`](AWS_CALLS) | counter | `cache`, `source`, `operation` | AWS API calls, every attempt counted (what the service bills and throttles) |
//! | [`aws.throttled`](AWS_THROTTLED) | counter | `cache`, `source`, `operation` | calls answered with throttling |
//! | [`aws.retries`](AWS_RETRIES) | counter | `cache`, `source`, `operation` | attempts sent that were retries (one the deadline cut before it was sent is not counted) |
//!
//! Label values: `cache` is `declared` ([`Secrets`](crate::Secrets)) or `on-demand`
//! ([`OnDemand`](crate::OnDemand)); `source` is a source kind (`ssm`, `secretsmanager`, `kms`,
//! ..., a custom [`Source::kind`](crate::Source::kind); for AWS calls, the service of the
//! operation's quota, `other` without one); `operation` is the API operation (`GetParameters`).
//! A metric never carries a key, a name, an ARN or a value: names are unbounded (cardinality)
//! and are the customer's data.
//!
//! The warm path stays what it was: a read of declared values adds one counter increment per
//! snapshot taken (not per value read), on a handle registered when the cache is built; with no
//! recorder installed that handle does nothing. Install the recorder before loading
//! [`Secrets`](crate::Secrets) or building an [`OnDemand`](crate::OnDemand): handles registered
//! before it do nothing (the facade's rule). Every other metric is recorded where its event
//! happens, off the warm path.
//!
//! ```
//! assert_eq!(lambda_secrets::telemetry::AWS_CALLS, "aws.calls");
//! ```

/// Reads answered from the cache.
pub const HITS: &str = "cache.hits";
/// Reads that found a value due, or on-demand lookups that fetched.
pub const MISSES: &str = "cache.misses";
/// Values a load could not load.
pub const LOAD_FAILURES: &str = "cache.load.failures";
/// Failed refreshes.
pub const REFRESH_FAILURES: &str = "cache.refresh.failures";
/// On-demand entries evicted or expired.
pub const EVICTIONS: &str = "cache.evictions";
/// Reads that waited for values past their maximum staleness.
pub const WAITS: &str = "cache.waits";
/// Age of the oldest declared value served, in seconds.
pub const OLDEST_AGE: &str = "cache.oldest_value.age";
/// Duration of a refresh's calls to one source, in seconds.
pub const REFRESH_DURATION: &str = "cache.refresh.duration";
/// AWS API calls (attempts).
pub const AWS_CALLS: &str = "aws.calls";
/// AWS calls answered with throttling.
pub const AWS_THROTTLED: &str = "aws.throttled";
/// AWS call attempts that were retries.
pub const AWS_RETRIES: &str = "aws.retries";

/// Which cache a metric is about: its `cache` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(not(feature = "on-demand"), allow(dead_code))]
pub(crate) enum Cache {
    #[default]
    Declared,
    OnDemand,
}

impl Cache {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn label(self) -> &'static str {
        match self {
            Cache::Declared => "declared",
            Cache::OnDemand => "on-demand",
        }
    }
}

/// Describes every metric (its unit and meaning) to the installed recorder, for exporters that
/// show units (CloudWatch EMF: `Count`, `Seconds`). Called by every [`Secrets`](crate::Secrets)
/// load and [`OnDemand`](crate::OnDemand) build; call it yourself after installing a recorder
/// if you build neither before your first flush.
///
/// ```
/// lambda_secrets::telemetry::describe();
/// ```
#[cfg(feature = "metrics")]
pub fn describe() {
    use metrics::Unit;
    metrics::describe_counter!(HITS, Unit::Count, "reads answered from the cache");
    metrics::describe_counter!(
        MISSES,
        Unit::Count,
        "reads that found a value due, or lookups that fetched"
    );
    metrics::describe_counter!(LOAD_FAILURES, Unit::Count, "values a load could not load");
    metrics::describe_counter!(REFRESH_FAILURES, Unit::Count, "refreshes that failed");
    metrics::describe_counter!(EVICTIONS, Unit::Count, "on-demand entries evicted or expired");
    metrics::describe_counter!(
        WAITS,
        Unit::Count,
        "reads that waited for values past their maximum staleness"
    );
    metrics::describe_gauge!(OLDEST_AGE, Unit::Seconds, "age of the oldest value served");
    metrics::describe_histogram!(
        REFRESH_DURATION,
        Unit::Seconds,
        "duration of a refresh's calls to one source"
    );
    metrics::describe_counter!(AWS_CALLS, Unit::Count, "AWS API call attempts");
    metrics::describe_counter!(AWS_THROTTLED, Unit::Count, "AWS calls answered with throttling");
    metrics::describe_counter!(AWS_RETRIES, Unit::Count, "AWS call attempts that were retries");
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn describe() {}

/// A counter handle registered once (the warm path's hits); nothing without the feature.
#[derive(Clone)]
pub(crate) struct Hits(#[cfg(feature = "metrics")] metrics::Counter);

impl std::fmt::Debug for Hits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hits")
    }
}

impl Hits {
    /// Registers `cache`'s hit counter with the recorder installed now.
    pub(crate) fn register(cache: Cache) -> Hits {
        let _ = cache;
        Hits(
            #[cfg(feature = "metrics")]
            metrics::counter!(HITS, "cache" => cache.label()),
        )
    }

    #[inline]
    pub(crate) fn hit(&self) {
        #[cfg(feature = "metrics")]
        self.0.increment(1);
    }
}

/// The `source` label of an AWS operation: the service of its quota.
pub(crate) fn service_of(class: Option<crate::limiter::QuotaClass>) -> &'static str {
    use crate::limiter::QuotaClass;
    match class {
        Some(QuotaClass::SsmGet) => "ssm",
        Some(QuotaClass::SecretsBatchGet | QuotaClass::SecretsGet | QuotaClass::SecretsDescribe) => {
            "secretsmanager"
        }
        Some(QuotaClass::KmsDecrypt) => "kms",
        Some(QuotaClass::AppConfigSession | QuotaClass::AppConfigGet) => "appconfig",
        None => "other",
    }
}

/// OpenTelemetry's `rpc.service` of an AWS operation: the SDK's service id of its quota's
/// service.
pub(crate) fn rpc_service(class: Option<crate::limiter::QuotaClass>) -> &'static str {
    match service_of(class) {
        "ssm" => "SSM",
        "secretsmanager" => "Secrets Manager",
        "appconfig" => "AppConfigData",
        "kms" => "KMS",
        _ => "other",
    }
}

/// OpenTelemetry's `error.type` of a failed call: its class.
pub(crate) fn error_type(kind: crate::error::CallErrorKind) -> &'static str {
    use crate::error::CallErrorKind;
    match kind {
        CallErrorKind::Throttled => "throttled",
        CallErrorKind::Transient => "transient",
        CallErrorKind::Denied => "denied",
        CallErrorKind::NotFound => "not_found",
        _ => "fatal",
    }
}

macro_rules! count {
    ($name:expr, $n:expr, $($label:expr => $value:expr),*) => {{
        #[cfg(feature = "metrics")]
        metrics::counter!($name, $($label => $value),*).increment($n);
        #[cfg(not(feature = "metrics"))]
        {
            let _ = ($name, $n, $($value),*);
        }
    }};
}

/// An AWS call attempt, a throttled answer or a retry (`metric`: [`AWS_CALLS`],
/// [`AWS_THROTTLED`], [`AWS_RETRIES`]).
pub(crate) fn aws(metric: &'static str, cache: Cache, source: &'static str, operation: &'static str) {
    count!(metric, 1, "cache" => cache.label(), "source" => source, "operation" => operation);
}

/// A read that found a value due, or an on-demand lookup that fetched.
pub(crate) fn miss(cache: Cache) {
    count!(MISSES, 1, "cache" => cache.label());
}

/// A read that waited for values past their maximum staleness.
pub(crate) fn wait(cache: Cache) {
    count!(WAITS, 1, "cache" => cache.label());
}

/// `n` values of `source` that a load could not load.
pub(crate) fn load_failures(cache: Cache, source: &'static str, n: u64) {
    count!(LOAD_FAILURES, n, "cache" => cache.label(), "source" => source);
}

/// A failed refresh of a `source` value.
pub(crate) fn refresh_failure(cache: Cache, source: &'static str) {
    count!(REFRESH_FAILURES, 1, "cache" => cache.label(), "source" => source);
}

/// An on-demand entry evicted or expired.
#[cfg(feature = "on-demand")]
pub(crate) fn eviction() {
    count!(EVICTIONS, 1, "cache" => Cache::OnDemand.label());
}

/// A refresh's calls to `source` took `took`.
pub(crate) fn refresh_duration(cache: Cache, source: &'static str, took: std::time::Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!(REFRESH_DURATION, "cache" => cache.label(), "source" => source)
        .record(took.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = (cache, source, took);
}

/// The oldest declared value served is `age` old.
pub(crate) fn oldest_age(age: std::time::Duration) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(OLDEST_AGE, "cache" => Cache::Declared.label()).set(age.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = age;
}

#[cfg(all(test, feature = "metrics"))]
mod tests;
