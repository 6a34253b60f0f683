//! [`Secrets`]: the handle to loaded values, and [`SecretsBuilder`], which declares them.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::call::RetryPolicy;
use crate::error::Error;
use crate::snapshot::Snapshot;
use crate::source::Declaration;
use crate::store::{Config, Store};
use crate::value::SecretValue;

/// Loaded values: clone it freely (clones share one cache).
///
/// Use it through [`SecretsLayer`](crate::SecretsLayer) in a Lambda function, or directly:
///
/// ```
/// use lambda_secrets::{MemorySource, Secrets};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mem = MemorySource::new();
/// mem.set("/prod/api-key", "k-123");
/// let secrets = Secrets::builder().add(mem.value("api_key", "/prod/api-key")).load().await?;
///
/// assert_eq!(secrets.get("api_key")?.expose_str(), Some("k-123"));
/// // After a downstream rejected the credential:
/// let snapshot = secrets.refresh_now("api_key").await?;
/// assert_eq!(snapshot.expose_str("api_key")?, "k-123");
/// # Ok::<(), lambda_secrets::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct Secrets {
    pub(crate) store: Arc<Store>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("snapshot", &self.store.current())
            .finish()
    }
}

impl Secrets {
    /// Starts declaring what to load.
    pub fn builder() -> SecretsBuilder {
        SecretsBuilder::default()
    }

    /// The current values, never waiting. If some are due for refresh, their refresh starts
    /// in the background; this call still returns at once with the current values.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// let snapshot = secrets.snapshot();
    /// assert_eq!(snapshot.expose_str("db").unwrap(), "pw");
    /// # });
    /// ```
    #[inline]
    pub fn snapshot(&self) -> Snapshot {
        self.store.read().snapshot
    }

    /// The current values; if some are past their maximum staleness, first waits (at most the
    /// configured `max_wait`) for their refresh. This is what [`SecretsLayer`](crate::SecretsLayer) hands each
    /// invocation.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// assert_eq!(secrets.fresh_snapshot().await.expose_str("db").unwrap(), "pw");
    /// # });
    /// ```
    pub async fn fresh_snapshot(&self) -> Snapshot {
        self.store.fresh_snapshot(self.store.config().max_wait).await
    }

    /// The value of `key` in the current snapshot.
    ///
    /// Each call takes a snapshot (one atomic load; the `cache.hits` metric counts one per
    /// call): a handler reading several values reads them from one [`snapshot`](Self::snapshot),
    /// which is also one consistent set of values.
    ///
    /// # Errors
    ///
    /// Those of [`Snapshot::get`].
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// let value = secrets.get("db").unwrap();
    /// assert_eq!(value.expose_str(), Some("pw"));
    /// # });
    /// ```
    pub fn get(&self, key: &str) -> Result<SecretValue, Error> {
        self.snapshot().get(key).cloned()
    }

    /// The value of `key` decoded from JSON.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/limits", "[1,2,3]");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("limits", "/limits")).load().await.unwrap();
    /// let limits: Vec<u32> = secrets.expose_json("limits").unwrap();
    /// assert_eq!(limits, [1, 2, 3]);
    /// # });
    /// ```
    pub fn expose_json<T: DeserializeOwned>(&self, key: &str) -> Result<T, Error> {
        self.snapshot().expose_json(key)
    }

    /// Fetches `key` again now, for a handler whose downstream just rejected the credential
    /// (e.g. a rotated database password), and returns the snapshot holding the new value.
    ///
    /// The fetch starts at once, unspread, superseding a background refresh of the key that may
    /// be under way (that refresh may have read the value before the rotation). Guarded against
    /// hot loops: a key is force-refreshed at most once per
    /// [`refresh_now_interval`](SecretsBuilder::refresh_now_interval) (5 s by default); calls
    /// within that interval join the forced refresh while it runs, and afterwards make no API
    /// call: they return the current snapshot if that refresh succeeded, and its error if it
    /// failed. It needs no timer of its own, so it can be awaited from any executor once
    /// [`load`](SecretsBuilder::load) ran on a tokio runtime. To bound the wait by the
    /// invocation's remaining time, use [`refresh_now_within`](Self::refresh_now_within).
    ///
    /// # Errors
    ///
    /// [`Error::MissingKey`] for a key that was not loaded, [`Error::Load`] naming the key when
    /// the fetch failed (the last good value is still served), [`Error::DroppedForSnapshot`]
    /// between a SnapStart snapshot and the restore.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// mem.set("/db", "rotated");
    /// let snapshot = secrets.refresh_now("db").await.unwrap();
    /// assert_eq!(snapshot.expose_str("db").unwrap(), "rotated");
    /// # });
    /// ```
    pub async fn refresh_now(&self, key: &str) -> Result<Snapshot, Error> {
        self.store.refresh_now(key).await
    }

    /// [`refresh_now`](Self::refresh_now), waiting at most `budget`: pass the invocation's
    /// remaining time less what the handler needs after. When the budget runs out first, the
    /// refresh goes on in the background (a later read or `refresh_now` sees its value).
    ///
    /// # Errors
    ///
    /// Those of [`refresh_now`](Self::refresh_now), and [`Error::Load`] naming the key when no
    /// answer came within `budget`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the budget needs its timer).
    ///
    /// ```
    /// use std::time::Duration;
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// mem.set_latency(Duration::from_secs(2)); // the store is slow today
    /// mem.set("/db", "rotated");
    /// let err = secrets.refresh_now_within("db", Duration::from_millis(100)).await.unwrap_err();
    /// assert!(err.to_string().contains("no answer within its budget"), "{err}");
    /// # });
    /// ```
    pub async fn refresh_now_within(&self, key: &str, budget: Duration) -> Result<Snapshot, Error> {
        self.store.refresh_now_within(key, budget).await
    }

    /// Counters: API calls per operation, throttles, retries, refreshes.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// let stats = secrets.stats();
    /// assert_eq!((stats.calls["MemoryFetch"], stats.throttled), (1, 0));
    /// # });
    /// ```
    pub fn stats(&self) -> crate::stats::Stats {
        self.store.stats()
    }
}

impl Extend<Declaration> for SecretsBuilder {
    /// Adds every declaration, as [`SecretsBuilder::add_all`] does.
    fn extend<I: IntoIterator<Item = Declaration>>(&mut self, declarations: I) {
        self.decls.extend(declarations);
    }
}

/// Declares what to load and how long to keep it. See [`Secrets`].
///
/// ```
/// use std::time::Duration;
/// use lambda_secrets::{Error, MemorySource, Secrets};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mem = MemorySource::new();
/// mem.set("/a", "1");
/// let err = Secrets::builder()
///     .add(mem.value("a", "/a").ttl(Duration::ZERO))
///     .load()
///     .await
///     .unwrap_err();
/// assert!(matches!(err, Error::InvalidInput { what: "TTL", .. }), "{err}");
/// # });
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct SecretsBuilder {
    decls: Vec<Declaration>,
    config: Config,
}

impl SecretsBuilder {
    /// The declarations added so far, in order.
    pub(crate) fn declarations(&self) -> &[Declaration] {
        &self.decls
    }

    /// Adds a declaration (made by a source: `ssm.parameter(..)`, `ssm.path(..)`).
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, declaration: Declaration) -> Self {
        self.decls.push(declaration);
        self
    }

    /// Adds every declaration of `declarations` (the builder also implements [`Extend`]).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// let names: Vec<String> = (0..100).map(|i| format!("/app/p{i}")).collect();
    /// for name in &names {
    ///     mem.set(name.as_str(), "v");
    /// }
    /// let secrets = lambda_secrets::Secrets::builder()
    ///     .add_all(names.iter().map(|name| mem.value(&name[5..], name.as_str())))
    ///     .load()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(secrets.snapshot().len(), 100);
    /// # });
    /// ```
    pub fn add_all(mut self, declarations: impl IntoIterator<Item = Declaration>) -> Self {
        self.decls.extend(declarations);
        self
    }

    /// TTL of declarations without their own (default 300 s, as the AWS extension and
    /// Powertools use). After it, the next invocation starts a refresh in the background.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.config.freshness.default_ttl = ttl;
        self
    }

    /// Fraction of the TTL taken off at random on each refresh (default 0.1, at most 0.5), so a
    /// fleet of containers does not refresh in lockstep.
    pub fn ttl_jitter(mut self, fraction: f64) -> Self {
        self.config.freshness.jitter = fraction;
        self
    }

    /// Age past which a value is not served without a refresh: an invocation finding such a
    /// value waits for its refresh (at most `max_wait`), and if the refresh fails, reading the
    /// key gives [`Error::Expired`]. Default: three times the value's TTL, and at least the TTL
    /// plus its spread and the refresh timeout, so that a normal refresh always lands before any
    /// invocation would wait. Must be at least every TTL. A value is refreshed by 90 % of its
    /// maximum staleness at the latest, whatever its TTL, so that a maximum staleness close to the
    /// TTL does not make invocations wait while AWS answers.
    pub fn max_staleness(mut self, staleness: Duration) -> Self {
        self.config.freshness.max_staleness = Some(staleness);
        self
    }

    /// Longest an invocation waits for values past their maximum staleness (default 5 s).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.config.max_wait = wait;
        self
    }

    /// Retries of throttled, 5xx and timed-out calls.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.config.freshness.retry = policy;
        self
    }

    /// Budget of the cold-start load, retries included (default 8 s: Lambda's INIT phase has
    /// 10 s).
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.config.load_timeout = timeout;
        self
    }

    /// Budget of one background refresh, retries included (default 5 s).
    pub fn refresh_timeout(mut self, timeout: Duration) -> Self {
        self.config.freshness.timeout = timeout;
        self
    }

    /// First delay before retrying a failed refresh (default 1 s; doubles up to 60 s).
    pub fn failure_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.config.freshness.failure_backoff = first;
        self.config.freshness.failure_backoff_max = max;
        self
    }

    /// Minimum interval between two forced refreshes of one key by
    /// [`Secrets::refresh_now`] (default 5 s).
    pub fn refresh_now_interval(mut self, interval: Duration) -> Self {
        self.config.refresh_now_interval = interval;
        self
    }

    /// The rate limits calls go through (default: [`RateLimits::process`](crate::RateLimits::process), shared by the whole
    /// process). Give each simulated container its own set in fleet simulations.
    pub fn rate_limits(mut self, limits: crate::limiter::RateLimits) -> Self {
        self.config.freshness.limits = limits;
        self
    }

    /// Fraction of the TTL over which a background refresh spreads its calls to scarce quotas
    /// (SSM, and Secrets Manager's `BatchGetSecretValue`), so that a fleet of containers does not
    /// send a refresh's calls as one spike (default 0.1; at most 0.1; `0.0` sends them at once).
    /// The fraction is of the shortest TTL in the refresh, and it is what spreading may add to
    /// the time a changed value takes to be served: see [the freshness bound](crate#freshness).
    /// Calls to plentiful quotas (`GetSecretValue`,
    /// `DescribeSecret`, KMS `Decrypt`) are never spread, nor are loads, `refresh_now`, and
    /// refreshes of failing or stale values.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/a", "1");
    /// let err = lambda_secrets::Secrets::builder()
    ///     .add(mem.value("a", "/a"))
    ///     .refresh_spread(0.5)
    ///     .load()
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("refresh spread"), "{err}");
    /// # });
    /// ```
    pub fn refresh_spread(mut self, fraction: f64) -> Self {
        self.config.spread = fraction;
        self
    }

    /// Fetches every declared value (all sources concurrently; each source batches) and
    /// returns the handle. Call it in `main`, during Lambda INIT, before
    /// `lambda_runtime::run`. Fails, listing every failing key, if anything is missing or
    /// denied, or if a declaration is invalid.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/a", "1");
    /// let err = lambda_secrets::Secrets::builder()
    ///     .add(mem.value("a", "/a"))
    ///     .add(mem.value("b", "/missing"))
    ///     .load()
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("key `b` (memory `/missing`): not found"), "{err}");
    /// # });
    /// ```
    pub async fn load(self) -> Result<Secrets, Error> {
        let store = Store::load(self.config, self.decls).await?;
        Ok(Secrets { store })
    }
}
