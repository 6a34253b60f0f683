//! [`OnDemand`]: values whose names are known only at invocation time (a tenant's key, a sender's
//! signing secret), in a bounded cache with coalesced fetches.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the API: `get`, `get_within`, `get_with_info`, `expose_json`, `stats`, `cached` |
//! | `builder.rs` | [`OnDemandBuilder`] and the moka cache it makes |
//! | `entry.rs` | what is cached for a name, how it is weighed and expired |
//! | `lookup.rs` | a lookup, and a miss: declare, validate, fetch in a batch, negative answers |
//! | `refresh.rs` | a hit past its TTL: one background refresh, its landing or backoff |
//! | `batch.rs` | coalescing of misses and refreshes |
//!
//! A value's schedule, backoff and staleness are the freshness core's (`freshness/`), as for
//! declared values.

mod batch;
mod builder;
mod entry;
mod lookup;
mod refresh;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

pub use builder::OnDemandBuilder;

use self::batch::Batcher;
use self::entry::Entry;
use crate::call::CallStats;
use crate::error::Error;
use crate::freshness::seal::{still_held, Seal, DRAIN};
use crate::freshness::settings::Settings as Shared;
use crate::freshness::spawn::Spawner;
use crate::limiter::RateLimits;
use crate::snapshot::ValueInfo;
use crate::source::Declaration;
use crate::stats::Stats;
use crate::value::SecretValue;

/// Values looked up by name at invocation time, cached with the same refresh semantics as declared
/// values (see [the crate docs](crate#freshness)): past its TTL a value is served while one
/// background refresh runs (`DescribeSecret` first for secrets), past its maximum staleness it is
/// fetched again before it is served.
///
/// - **Bounded:** by entries and by bytes (`max_entries`, `max_bytes`), in a `moka` cache, and
///   both bounds hold whenever a lookup returns; evicted and expired values are dropped, and a
///   [`SecretValue`] zeroizes its bytes when its last clone goes.
/// - **Coalesced:** misses of different names arriving within [`coalesce_window`] (2 ms by
///   default) go to their source together, so that it batches them (10 names per
///   `GetParameters`, 20 ids per `BatchGetSecretValue`); concurrent misses of one name make one
///   fetch, and names that stand for one item are fetched once.
/// - **Negative results:** a name that does not exist or is denied is an error for that name only,
///   remembered for [`negative_ttl`] (30 s by default), so a bad tenant id cannot hammer the quota.
/// - Every call goes through the same [`RateLimits`] (process-wide by default), retries and
///   deadline as declared values.
///
/// [`coalesce_window`]: OnDemandBuilder::coalesce_window
/// [`negative_ttl`]: OnDemandBuilder::negative_ttl
///
/// How a name becomes a declaration is yours: the closure given to [`OnDemandBuilder::build`]
/// maps it (often through a source's helper, which validates it: a malformed name is an error
/// without a call).
///
/// ```
/// use lambda_secrets::{MemorySource, OnDemand};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mem = MemorySource::new();
/// mem.set("/tenants/42/api-key", "k-42");
/// let tenants = OnDemand::builder()
///     .build(move |tenant| mem.value(tenant, format!("/tenants/{tenant}/api-key")))
///     .unwrap();
///
/// // In the handler, with the tenant id the request names:
/// let key = tenants.get("42").await?;
/// assert_eq!(key.expose_str(), Some("k-42"));
/// assert!(tenants.get("43").await.is_err()); // not found: remembered for 30 s
/// # Ok::<(), lambda_secrets::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct OnDemand {
    inner: Arc<Inner>,
}

type Declare = dyn Fn(&str) -> Declaration + Send + Sync;

/// The settings of a cache: what declared values share, and its own.
#[derive(Debug, Clone)]
struct Settings {
    /// `timeout` is the fetch timeout.
    freshness: Shared,
    negative_ttl: Duration,
}

struct Inner {
    declare: Box<Declare>,
    cache: moka::future::Cache<String, Entry>,
    batcher: Batcher,
    settings: Settings,
    stats: Arc<CallStats>,
    /// Lookups answered from the cache, as a metric (registered at build).
    hits: crate::telemetry::Hits,
    misses: AtomicU64,
    /// Entries evicted by the bounds or expired.
    evictions: Arc<AtomicU64>,
    refreshes: AtomicU64,
    refresh_failures: AtomicU64,
    /// Refresh generations handed out.
    generation: AtomicU64,
    /// Warnings of failed refreshes, at most one every few seconds.
    warnings: refresh::Warnings,
    /// Every source its lookups used, for the seal.
    sources: crate::source::Seen,
    /// Every entry was dropped for a SnapStart snapshot; lookups fail until the restore.
    sealed: AtomicBool,
    /// Snapshots taken so far, and the background tasks alive (they may hold values).
    seal: Arc<Seal>,
    spawner: Spawner,
}

impl OnDemand {
    /// Starts configuring an on-demand cache.
    pub fn builder() -> OnDemandBuilder {
        OnDemandBuilder::default()
    }

    /// The declaration the cache's closure makes for `name` (for a [`Policy`](crate::Policy)).
    pub(crate) fn declare(&self, name: &str) -> Declaration {
        (self.inner.declare)(name)
    }

    /// The value for `name`: from the cache, or fetched (with other misses of the same moment) and
    /// cached. Past its TTL the cached value is returned at once while one refresh runs in the
    /// background; past its maximum staleness it is fetched again first.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a name the declaring closure rejects (no call is made);
    /// [`Error::Load`] naming the name, its source item and why (not found, denied: remembered for
    /// the negative TTL; throttled or failed after retries: not remembered);
    /// [`Error::DroppedForSnapshot`] between a SnapStart snapshot and the restore.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/signing/github", "s3cr3t");
    /// let signing = lambda_secrets::OnDemand::builder()
    ///     .build(move |sender| mem.value(sender, format!("/signing/{sender}")))
    ///     .unwrap();
    /// assert_eq!(signing.get("github").await.unwrap().len(), 6);
    /// # });
    /// ```
    pub async fn get(&self, name: &str) -> Result<SecretValue, Error> {
        self.inner
            .lookup(name, self.inner.settings.freshness.timeout)
            .await
            .map(|(value, _)| value)
    }

    /// Like [`get`](Self::get), waiting at most `budget`: pass the invocation's remaining time
    /// (less what the handler needs after), so that a slow or throttled fetch fails the lookup
    /// before Lambda times the invocation out. The fetch itself has the builder's
    /// [`fetch_timeout`](OnDemandBuilder::fetch_timeout), whoever asked first: a lookup that gives
    /// up early never fails the others waiting for the same name.
    ///
    /// # Errors
    ///
    /// Those of [`get`](Self::get), and [`Error::Load`] naming the name when no answer came within
    /// `budget`.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime, UNIX_EPOCH};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let mem = lambda_secrets::MemorySource::new();
    /// # mem.set("/tenants/42", "k");
    /// # let tenants = lambda_secrets::OnDemand::builder().build(move |t| mem.value(t, format!("/tenants/{t}"))).unwrap();
    /// # let context = lambda_runtime::Context::default();
    /// // In a lambda_runtime handler, `context` is `event.context` (its deadline is in ms since the epoch):
    /// let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    /// let left = Duration::from_millis(context.deadline).saturating_sub(now);
    /// let budget = left.saturating_sub(Duration::from_millis(500)).max(Duration::from_millis(100));
    /// let key = tenants.get_within("42", budget).await.unwrap();
    /// # assert_eq!(key.expose_str(), Some("k"));
    /// # });
    /// ```
    pub async fn get_within(&self, name: &str, budget: Duration) -> Result<SecretValue, Error> {
        self.inner.lookup(name, budget).await.map(|(value, _)| value)
    }

    /// Like [`get`](Self::get), with where the value came from (source, full name, version, age).
    ///
    /// # Errors
    ///
    /// Those of [`get`](Self::get).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/a", "1");
    /// let od = lambda_secrets::OnDemand::builder().build(move |name| mem.value(name, name)).unwrap();
    /// let (value, info) = od.get_with_info("/a").await.unwrap();
    /// assert_eq!((value.len(), info.version.as_deref()), (1, Some("1")));
    /// # });
    /// ```
    pub async fn get_with_info(&self, name: &str) -> Result<(SecretValue, ValueInfo), Error> {
        self.inner
            .lookup(name, self.inner.settings.freshness.timeout)
            .await
            .map(|(value, info)| (value, ValueInfo::clone(&info)))
    }

    /// The value for `name` decoded from JSON into `T` (errors name the name and the type, never the
    /// value). As with [`Snapshot::expose_json`](crate::Snapshot::expose_json), `T` holds a copy
    /// of the plaintext.
    ///
    /// # Errors
    ///
    /// Those of [`get`](Self::get), and [`Error::Json`] when the value does not decode into `T`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// #[derive(serde::Deserialize)]
    /// struct Db { user: String, port: u16 }
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("tenant/7/db", r#"{"user":"t7","port":5432}"#);
    /// let dbs = lambda_secrets::OnDemand::builder()
    ///     .build(move |tenant| mem.value(tenant, format!("tenant/{tenant}/db")))
    ///     .unwrap();
    /// let db: Db = dbs.expose_json("7").await.unwrap();
    /// assert_eq!((db.user.as_str(), db.port), ("t7", 5432));
    /// # });
    /// ```
    pub async fn expose_json<T: DeserializeOwned>(&self, name: &str) -> Result<T, Error> {
        let value = self.get(name).await?;
        crate::value::json::decode(&value, name)
    }

    /// Counters: API calls per operation, throttles, retries, refreshes, misses (lookups that
    /// fetched).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/a", "1");
    /// let od = lambda_secrets::OnDemand::builder().build(move |name| mem.value(name, name)).unwrap();
    /// od.get("/a").await.unwrap();
    /// od.get("/a").await.unwrap();
    /// assert_eq!((od.stats().calls["MemoryFetch"], od.stats().misses), (1, 1));
    /// # });
    /// ```
    pub fn stats(&self) -> Stats {
        let mut stats = self.inner.stats.stats();
        stats.refreshes = self.inner.refreshes.load(Ordering::Relaxed);
        stats.refresh_failures = self.inner.refresh_failures.load(Ordering::Relaxed);
        stats.misses = self.inner.misses.load(Ordering::Relaxed);
        stats.evictions = self.inner.evictions.load(Ordering::Relaxed);
        stats
    }

    /// Names cached now (values and negative answers), after pending evictions have run.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/a", "1");
    /// let od = lambda_secrets::OnDemand::builder().build(move |name| mem.value(name, name)).unwrap();
    /// od.get("/a").await.unwrap();
    /// assert_eq!(od.cached().await, 1);
    /// # });
    /// ```
    pub async fn cached(&self) -> u64 {
        self.inner.cache.run_pending_tasks().await;
        self.inner.cache.entry_count()
    }

    /// Drops every cached answer (each value zeroizes its bytes when its last clone goes), stops
    /// the batches and refreshes under way and waits (at most a second) until none holds anything,
    /// and makes lookups fail with [`Error::DroppedForSnapshot`] until [`unseal`](Self::unseal): a
    /// SnapStart snapshot is about to be taken. Returns the names whose values are still held
    /// outside the cache (kept past an invocation): those bytes stay in memory, hence in the
    /// snapshot.
    pub(crate) async fn seal(&self) -> Vec<String> {
        self.inner.sealed.store(true, Ordering::Release);
        self.inner.seal.seal();
        let mut watched = Vec::new();
        let mut names = Vec::new();
        for (name, entry) in self.inner.cache.iter() {
            if let Ok(found) = &entry.0.answer {
                if let Some(watch) = found.seal() {
                    watched.push((name.to_string(), watch));
                }
            }
            names.push(name);
        }
        self.inner.sources.seal();
        for name in names {
            self.inner.cache.invalidate(&*name).await;
        }
        // Removals are applied (and the entries dropped) by the cache's maintenance.
        self.inner.cache.run_pending_tasks().await;
        if !self.inner.seal.drained(DRAIN).await {
            tracing::warn!(
                tasks = self.inner.seal.live(),
                "lambda-secrets: on-demand fetches under way did not stop within {DRAIN:?} of the SnapStart seal; what they hold may be in the snapshot"
            );
        }
        // A lookup that was fetching when the seal came may have cached its answer meanwhile (it
        // removes it itself, but moka applies removals lazily): drop whatever is there now.
        self.inner.cache.invalidate_all();
        self.inner.cache.run_pending_tasks().await;
        // A fetch that ran until the drain may have taken credentials again.
        self.inner.sources.seal();
        still_held(watched)
    }

    /// After a SnapStart restore: lookups work again, each name fetched on its first lookup (nothing
    /// from before the snapshot is kept).
    pub(crate) fn unseal(&self) {
        self.inner.batcher.restored();
        self.inner.sealed.store(false, Ordering::Release);
    }

    /// The rate limits its calls go through.
    pub(crate) fn rate_limits(&self) -> &RateLimits {
        self.inner.batcher.limits()
    }

    /// Values and bytes held now, without running the cache's pending maintenance: what the bounds
    /// are about.
    #[cfg(test)]
    pub(crate) fn held(&self) -> (u64, u64) {
        self.inner.cache.iter().fold((0, 0), |(n, bytes), (name, entry)| {
            (n + 1, bytes + (name.len() + entry.bytes()) as u64)
        })
    }
}

impl std::fmt::Debug for OnDemand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDemand")
            .field("cached", &self.inner.cache.entry_count())
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
