//! [`OnDemandBuilder`]: the settings of an [`OnDemand`] cache, their validation, and the moka
//! cache it makes.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use super::batch::{BatchSettings, Batcher};
use super::entry::{weigher, EntryExpiry};
use super::{Inner, OnDemand, Settings};
use crate::call::{CallStats, RetryPolicy};
use crate::error::Error;
use crate::freshness::seal::Seal;
use crate::freshness::settings::{at_most_an_hour, Settings as Shared};
use crate::freshness::spawn::Spawner;
use crate::limiter::RateLimits;
use crate::source::Declaration;

/// Settings of an [`OnDemand`] cache. See [`OnDemand`]; the TTL, jitter, maximum staleness, retry
/// and backoff settings mean what they mean for declared values (see
/// [`SecretsBuilder`](crate::SecretsBuilder)).
///
/// ```
/// use std::time::Duration;
/// # let mem = lambda_secrets::MemorySource::new();
/// let tenants = lambda_secrets::OnDemand::builder()
///     .ttl(Duration::from_secs(300))
///     .max_entries(10_000)
///     .max_bytes(16 << 20)
///     .negative_ttl(Duration::from_secs(30))
///     .build(move |tenant| mem.value(tenant, format!("/tenants/{tenant}/api-key")))
///     .unwrap();
/// # let _ = tenants;
/// ```
#[derive(Debug)]
#[must_use]
pub struct OnDemandBuilder {
    freshness: Shared,
    negative_ttl: Duration,
    max_entries: u64,
    max_bytes: u64,
    window: Duration,
    max_batch: usize,
}

impl Default for OnDemandBuilder {
    fn default() -> Self {
        OnDemandBuilder {
            freshness: Shared::default(),
            negative_ttl: Duration::from_secs(30),
            max_entries: 10_000,
            max_bytes: 16 << 20,
            window: Duration::from_millis(2),
            max_batch: 20,
        }
    }
}

impl OnDemandBuilder {
    /// TTL of values whose declaration has none (default 300 s); past it the next lookup refreshes
    /// the value in the background. A declaration's own `.ttl(..)` wins.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.freshness.default_ttl = ttl;
        self
    }

    /// Fraction of the TTL taken off at random on each refresh (default 0.1, at most 0.5).
    pub fn ttl_jitter(mut self, fraction: f64) -> Self {
        self.freshness.jitter = fraction;
        self
    }

    /// Age past which a value is fetched again before it is served (default, for each value:
    /// max(3 × TTL, TTL + the fetch timeout)); it must be at least every TTL. It is also how long
    /// a value stays in memory unused.
    pub fn max_staleness(mut self, staleness: Duration) -> Self {
        self.freshness.max_staleness = Some(staleness);
        self
    }

    /// How long "not found" and "denied" answers are remembered (default 30 s).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Most names kept (values and negative answers; default 10,000).
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.max_entries = entries;
        self
    }

    /// Most bytes of names and values kept (default 16 MiB). The two bounds share one budget:
    /// each name weighs the larger of its bytes and `max_bytes / max_entries` (rounded up), and
    /// the cache holds names while their weights sum to at most `max_bytes`, so it exceeds neither
    /// bound when a lookup returns (with the defaults: 10,000 names of up to about 1.6 KB, or fewer
    /// larger ones). A value heavier than `max_bytes` is served but not cached. Names are evicted
    /// by moka's TinyLFU policy (rarely and long unused first).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// How long the first miss of a moment waits for others to fetch with it (default 2 ms); a
    /// batch of [`max_batch`](Self::max_batch) names is sent at once.
    pub fn coalesce_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Names at which a batch is sent without waiting for the window (default 20, which is
    /// `BatchGetSecretValue`'s limit and two `GetParameters` calls).
    pub fn max_batch(mut self, names: usize) -> Self {
        self.max_batch = names;
        self
    }

    /// Retries of throttled, 5xx and timed-out calls.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.freshness.retry = policy;
        self
    }

    /// The rate limits calls go through (default: the process-wide set, shared with declared
    /// values).
    pub fn rate_limits(mut self, limits: RateLimits) -> Self {
        self.freshness.limits = limits;
        self
    }

    /// Budget of one fetch, retries included (default 5 s). A batch holds the misses of several
    /// invocations, so it has this budget whoever asked first; a lookup bounded by its invocation's
    /// deadline ([`OnDemand::get_within`]) stops waiting at its own budget, and the fetch goes on
    /// (its answer is cached for the next lookup of the name).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.freshness.timeout = timeout;
        self
    }

    /// First wait before retrying a failed refresh, and the longest (default 1 s doubling to
    /// 60 s), never past the value's maximum staleness.
    pub fn failure_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.freshness.failure_backoff = first;
        self.freshness.failure_backoff_max = max;
        self
    }

    /// Makes the cache; `declare` turns a name into the declaration to fetch it by (a source's
    /// helper, with a JSON field if wanted).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the first setting out of range.
    ///
    /// ```
    /// let mem = lambda_secrets::MemorySource::new();
    /// let err = lambda_secrets::OnDemand::builder()
    ///     .max_entries(0)
    ///     .build(move |name| mem.value(name, name))
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("max entries"), "{err}");
    /// ```
    pub fn build(
        self,
        declare: impl Fn(&str) -> Declaration + Send + Sync + 'static,
    ) -> Result<OnDemand, Error> {
        self.freshness.validate("fetch timeout")?;
        self.freshness.timing(None, 0.0, "the cache's names")?;
        if self.max_entries == 0 {
            return Err(Error::invalid_input("max entries", "0", "must be at least 1"));
        }
        if self.max_bytes < self.max_entries {
            return Err(Error::invalid_input(
                "max bytes",
                self.max_bytes.to_string(),
                "must be at least max entries (each name weighs at least a byte)",
            ));
        }
        if self.max_bytes.div_ceil(self.max_entries) > u64::from(u32::MAX / 2) {
            return Err(Error::invalid_input(
                "max bytes",
                self.max_bytes.to_string(),
                "max bytes / max entries must be below 2 GiB (a name's weight is 32 bits)",
            ));
        }
        if self.max_batch == 0 {
            return Err(Error::invalid_input("max batch", "0", "must be at least 1"));
        }
        if self.negative_ttl.is_zero() {
            return Err(Error::invalid_input(
                "negative TTL",
                "0s",
                "must be more than zero",
            ));
        }
        at_most_an_hour("negative TTL", self.negative_ttl)?;
        at_most_an_hour("coalesce window", self.window)?;
        let settings = Settings {
            freshness: self.freshness,
            negative_ttl: self.negative_ttl,
        };
        crate::telemetry::describe();
        let evictions = Arc::new(AtomicU64::new(0));
        let evicted = evictions.clone();
        let cache = moka::future::Cache::builder()
            .max_capacity(self.max_bytes)
            .weigher(weigher(self.max_entries, self.max_bytes))
            .expire_after(EntryExpiry {
                negative_ttl: settings.negative_ttl,
            })
            // Evicted by a bound or expired; not replaced or removed by the cache itself.
            .eviction_listener(move |_name, _entry, cause| {
                if cause.was_evicted() {
                    evicted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    crate::telemetry::eviction();
                }
            })
            .build();
        let stats = Arc::new(CallStats::of(crate::telemetry::Cache::OnDemand));
        let seal = Arc::new(Seal::default());
        let spawner = Spawner::here();
        let batcher = Batcher::new(BatchSettings {
            stats: stats.clone(),
            retry: settings.freshness.retry,
            limits: settings.freshness.limits.clone(),
            timeout: settings.freshness.timeout,
            window: self.window,
            max_batch: self.max_batch,
            seal: seal.clone(),
            spawner: spawner.clone(),
            restored: Arc::new(AtomicBool::new(false)),
        });
        Ok(OnDemand {
            inner: Arc::new(Inner {
                declare: Box::new(declare),
                cache,
                batcher,
                settings,
                stats,
                hits: crate::telemetry::Hits::register(crate::telemetry::Cache::OnDemand),
                misses: AtomicU64::new(0),
                evictions,
                refreshes: AtomicU64::new(0),
                refresh_failures: AtomicU64::new(0),
                generation: AtomicU64::new(0),
                warnings: Default::default(),
                sources: Default::default(),
                sealed: AtomicBool::new(false),
                seal,
                spawner,
            }),
        })
    }
}
