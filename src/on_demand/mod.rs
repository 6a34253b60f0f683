//! [`OnDemand`]: values whose names are known only at invocation time (a tenant's key, a sender's
//! signing secret), in a bounded cache with coalesced fetches.

mod batch;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::time::Instant;

use self::batch::{lost, Batcher, Fetching};
use crate::call::{CallStats, RetryPolicy};
use crate::error::{Error, Failure, ItemError};
use crate::limiter::RateLimits;
use crate::snapshot::ValueInfo;
use crate::source::{AnyItem, Declaration, DynSource, Fetched, Refreshed};
use crate::stats::Stats;
use crate::time::later;
use crate::value::SecretValue;

/// Values looked up by name at invocation time, cached with the same refresh semantics as declared
/// values: past its TTL a value is served while one background refresh runs (`DescribeSecret` first
/// for secrets), past its maximum staleness it is fetched again before it is served.
///
/// - **Bounded:** by entries and by bytes (`max_entries`, `max_bytes`), in a `moka` cache; evicted
///   and expired values are dropped, and a [`SecretValue`] zeroizes its bytes when its last clone
///   goes.
/// - **Coalesced:** misses of different names arriving within [`coalesce_window`] (2 ms by
///   default) go to their source together, so that it batches them (10 names per
///   `GetParameters`, 20 ids per `BatchGetSecretValue`); concurrent misses of one name make one
///   fetch.
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

struct Inner {
    declare: Box<Declare>,
    cache: moka::future::Cache<String, Entry>,
    batcher: Batcher,
    settings: Settings,
    stats: Arc<CallStats>,
    misses: AtomicU64,
    refreshes: AtomicU64,
    refresh_failures: AtomicU64,
    /// Every entry was dropped for a SnapStart snapshot; lookups fail until the restore.
    sealed: AtomicBool,
    /// Snapshots taken so far: a fetch that began before one does not cache its answer.
    seals: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    ttl: Duration,
    jitter: f64,
    /// Set by the builder; else each value's default, from its TTL.
    max_staleness: Option<Duration>,
    timeout: Duration,
    negative_ttl: Duration,
    failure_backoff: Duration,
}

/// A cached answer for one name: its value, or why there is none (not found or denied).
#[derive(Clone)]
struct Entry(Arc<EntryData>);

struct EntryData {
    /// Failed refreshes in a row (for the backoff, and to warn once).
    failures: std::sync::atomic::AtomicU32,
    /// The value (shared with the entries of refreshes that found it unchanged), or the failure to
    /// report for the name (not found, denied).
    found: Result<Arc<Found>, Failure>,
    /// When the value was fetched (its age counts from here); for a negative answer, when it came.
    fetched_at: Instant,
    /// When a background refresh is due, in nanoseconds after `fetched_at` (later after a failed
    /// one): one atomic load on a hit.
    due_after: AtomicU64,
    refreshing: AtomicBool,
}

/// What a name is fetched as: its declaration's source, item and JSON field, its TTL and the
/// maximum staleness that goes with it. Shared by every answer for the name.
struct Target {
    source: Arc<dyn DynSource>,
    item: AnyItem,
    field: Option<String>,
    ttl: Duration,
    staleness: Duration,
}

struct Found {
    target: Arc<Target>,
    value: SecretValue,
    info: Arc<ValueInfo>,
}

impl Entry {
    fn bytes(&self) -> usize {
        match &self.0.found {
            Ok(found) => found.value.len(),
            Err(_) => 0,
        }
    }
}

impl EntryData {
    fn due(&self) -> Instant {
        later(
            self.fetched_at,
            Duration::from_nanos(self.due_after.load(Ordering::Acquire)),
        )
    }

    /// A refresh that could not be made or failed: the next is due `delay` after `now`.
    fn retry_after(&self, now: Instant, delay: Duration) {
        let due = later(now, delay).saturating_duration_since(self.fetched_at);
        self.due_after.store(
            u64::try_from(due.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Release,
        );
        self.refreshing.store(false, Ordering::Release);
    }
}

/// Keeps an entry in memory until its maximum staleness (values) or its negative TTL (not found,
/// denied); the cache's clock is its own, so the logical checks in `get` use tokio's.
struct KeepFor(Settings);

impl moka::Expiry<String, Entry> for KeepFor {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: std::time::Instant) -> Option<Duration> {
        Some(self.keep(entry))
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.keep(entry))
    }
}

impl KeepFor {
    fn keep(&self, entry: &Entry) -> Duration {
        match &entry.0.found {
            Ok(found) => found.target.staleness,
            Err(_) => self.0.negative_ttl,
        }
    }
}

impl OnDemand {
    /// Starts configuring an on-demand cache.
    ///
    /// ```
    /// let builder = lambda_secrets::OnDemand::builder().max_entries(1_000);
    /// # let _ = builder;
    /// ```
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
    /// Errors: [`Error::InvalidInput`] for a name the declaring closure rejects (no call is made);
    /// [`Error::Load`] naming the name, its source item and why (not found, denied: remembered for
    /// the negative TTL; throttled or failed after retries: not remembered).
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
        self.lookup(name, self.inner.settings.timeout)
            .await
            .map(|(value, _)| value)
    }

    /// Like [`get`](Self::get), waiting at most `budget` for a fetch: pass the invocation's
    /// remaining time (less what the handler needs after), so that a slow or throttled fetch
    /// fails the lookup before Lambda times the invocation out. A fetch is bounded by the
    /// builder's [`fetch_timeout`](OnDemandBuilder::fetch_timeout) in any case.
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
        self.lookup(name, budget).await.map(|(value, _)| value)
    }

    /// Like [`get`](Self::get), with where the value came from (source, full name, version).
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
        self.lookup(name, self.inner.settings.timeout)
            .await
            .map(|(value, info)| (value, ValueInfo::clone(&info)))
    }

    async fn lookup(&self, name: &str, budget: Duration) -> Result<(SecretValue, Arc<ValueInfo>), Error> {
        // Read before `sealed`: a snapshot taken after this point changes it, and the fetch below
        // then does not cache its answer.
        let seals = self.inner.seals.load(Ordering::Acquire);
        if self.inner.sealed.load(Ordering::Acquire) {
            return Err(Error::DroppedForSnapshot { key: name.to_owned() });
        }
        let now = Instant::now();
        if let Some(entry) = self.inner.cache.get(name).await {
            if let Some(answer) = self.answer(name, &entry, now) {
                return answer;
            }
            // Past its maximum staleness, or a negative answer past its TTL: fetch again (unless
            // another lookup replaced it meanwhile).
            self.inner.replace(name, &entry, None).await;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(lookup_failure(
                name,
                ItemError::Source("OnDemand lookups run on a tokio runtime".into()),
            ));
        }
        let inner = self.inner.clone();
        let owned = name.to_owned();
        let fetch =
            self.inner.cache.try_get_with(
                owned.clone(),
                async move { inner.fetch(&owned, budget, seals).await },
            );
        let entry = match tokio::time::timeout(budget, fetch).await {
            Ok(entry) => entry.map_err(|e| Error::clone(&e))?,
            Err(_) => {
                return Err(lookup_failure(
                    name,
                    ItemError::Call(crate::CallError::new(
                        crate::CallErrorKind::Transient,
                        format!("no answer within the lookup's budget of {budget:?}"),
                    )),
                ))
            }
        };
        if self.inner.seals.load(Ordering::Acquire) != seals {
            // A SnapStart snapshot was taken while this lookup ran (the cache may have taken the
            // answer after the seal emptied it): what it found is from before the snapshot.
            self.inner.replace(name, &entry, None).await;
            return Err(Error::DroppedForSnapshot { key: name.to_owned() });
        }
        entry_result(&entry)
    }

    /// The value for `name` decoded from JSON into `T` (errors name the name and the type, never the
    /// value).
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
        serde_json::from_slice(value.expose_bytes()).map_err(|e| Error::json::<T>(name, &e))
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
        let mut stats = Stats::default();
        stats.calls = self.inner.stats.calls();
        stats.throttled = self.inner.stats.throttled.load(Ordering::Relaxed);
        stats.retries = self.inner.stats.retries.load(Ordering::Relaxed);
        stats.refreshes = self.inner.refreshes.load(Ordering::Relaxed);
        stats.refresh_failures = self.inner.refresh_failures.load(Ordering::Relaxed);
        stats.misses = self.inner.misses.load(Ordering::Relaxed);
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

    /// Drops every cached answer (each value zeroizes its bytes when its last clone goes) and makes
    /// lookups fail with [`Error::DroppedForSnapshot`] until [`unseal`](Self::unseal): a SnapStart
    /// snapshot is about to be taken. Returns the names whose values are still held outside the
    /// cache (kept past an invocation): those bytes stay in memory, hence in the snapshot.
    pub(crate) async fn seal(&self) -> Vec<String> {
        self.inner.sealed.store(true, Ordering::Release);
        self.inner.seals.fetch_add(1, Ordering::AcqRel);
        let mut watched = Vec::new();
        let mut names = Vec::new();
        for (name, entry) in self.inner.cache.iter() {
            if let Ok(found) = &entry.0.found {
                watched.push((name.to_string(), found.value.watch()));
            }
            names.push(name);
        }
        for name in names {
            self.inner.cache.invalidate(&*name).await;
        }
        // Removals are applied (and the entries dropped) by the cache's maintenance.
        self.inner.cache.run_pending_tasks().await;
        watched
            .into_iter()
            .filter(|(_, watch)| watch.is_held())
            .map(|(name, _)| name)
            .collect()
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

    /// The answer of a cached entry, starting its refresh when due; `None` when it must be fetched
    /// again first.
    fn answer(
        &self,
        name: &str,
        entry: &Entry,
        now: Instant,
    ) -> Option<Result<(SecretValue, Arc<ValueInfo>), Error>> {
        let settings = &self.inner.settings;
        let age = now.saturating_duration_since(entry.0.fetched_at);
        match &entry.0.found {
            Err(_) if age < settings.negative_ttl => Some(entry_result(entry)),
            Err(_) => None,
            Ok(found) if age >= found.target.staleness => None,
            Ok(found) => {
                if now >= entry.0.due() && !entry.0.refreshing.swap(true, Ordering::AcqRel) {
                    self.start_refresh(name.to_owned(), entry.clone());
                }
                Some(Ok((found.value.clone(), found.info.clone())))
            }
        }
    }

    /// Refreshes `entry` in the background (coalesced with other refreshes of the moment). The
    /// task does not keep the entry (nor its value) alive: an entry evicted or dropped for a
    /// SnapStart snapshot meanwhile is not refreshed into the cache again.
    fn start_refresh(&self, name: String, entry: Entry) {
        let Ok(found) = &entry.0.found else { return };
        let (target, version) = (found.target.clone(), found.info.version.clone());
        let refreshed = Arc::downgrade(&entry.0);
        let inner = self.inner.clone();
        let task = async move {
            let answer = inner
                .batcher
                .fetch(
                    target.source.clone(),
                    target.item.clone(),
                    version,
                    true,
                    inner.settings.timeout,
                )
                .await
                .unwrap_or_else(lost);
            let Some(entry) = refreshed.upgrade().map(Entry) else {
                return; // no longer cached: the answer is dropped (its value zeroized)
            };
            let Ok(found) = &entry.0.found else { return };
            let now = Instant::now();
            let fresh = match answer {
                Ok(Refreshed::Changed(fetched)) => bind(&target, fetched).map(Arc::new),
                Ok(Refreshed::Unchanged { .. }) => Ok(found.clone()),
                Err(e) => Err(e),
            };
            match fresh {
                Ok(fresh) => {
                    inner.refreshes.fetch_add(1, Ordering::Relaxed);
                    let fresh = inner.entry(Ok(fresh), now);
                    // Only over the entry it refreshed: not over a newer answer, nor back after an
                    // eviction.
                    inner.replace(&name, &entry, Some(fresh)).await;
                }
                Err(error) => {
                    inner.refresh_failures.fetch_add(1, Ordering::Relaxed);
                    let failures = entry.0.failures.fetch_add(1, Ordering::Relaxed) + 1;
                    let retry_in = crate::schedule::failure_backoff(
                        inner.settings.failure_backoff,
                        FAILURE_BACKOFF_MAX,
                        failures,
                        crate::random::f64(),
                    );
                    if failures == 1 {
                        tracing::warn!(
                            name = %name,
                            source = target.source.kind(),
                            id = %target.item,
                            %error,
                            "lambda-secrets on-demand refresh failed; serving the last good value"
                        );
                    } else {
                        tracing::debug!(name = %name, %error, failures, "lambda-secrets on-demand refresh failed again");
                    }
                    entry.0.retry_after(now, retry_in);
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(task)),
            // Outside a tokio runtime the refresh cannot run: try again after a backoff.
            Err(_) => {
                drop(task);
                self.inner.refresh_failures.fetch_add(1, Ordering::Relaxed);
                entry
                    .0
                    .retry_after(Instant::now(), self.inner.settings.failure_backoff);
            }
        }
    }
}

impl Inner {
    /// Fetches `name` (a miss): declared by the closure, coalesced with other misses. Not found and
    /// denied are cached as negative answers; other failures are errors, not cached.
    /// `seals`: the snapshots taken when the lookup began.
    async fn fetch(&self, name: &str, budget: Duration, seals: u64) -> Result<Entry, Error> {
        self.misses.fetch_add(1, Ordering::Relaxed);
        let decl = (self.declare)(name);
        if let Some((what, input, reason)) = decl.invalid {
            return Err(Error::InvalidInput { what, input, reason });
        }
        if decl.item.tree {
            return Err(Error::InvalidInput {
                what: "on-demand name",
                input: name.to_owned(),
                reason: "it was declared as a tree (a path); an on-demand name stands for one value".into(),
            });
        }
        let settings = &self.settings;
        let ttl = decl.ttl.unwrap_or(settings.ttl);
        if !crate::store::ttl_in_range(ttl) {
            return Err(Error::InvalidInput {
                what: "TTL",
                input: format!("{ttl:?}"),
                reason: format!("the TTL of on-demand name `{name}` must be between 1 ms and 7 days"),
            });
        }
        let staleness = match settings.max_staleness {
            Some(s) if s < ttl => {
                return Err(Error::InvalidInput {
                    what: "max staleness",
                    input: format!("{s:?}"),
                    reason: format!("it is shorter than the TTL {ttl:?} of on-demand name `{name}`"),
                })
            }
            Some(s) => s,
            None => crate::schedule::default_staleness(ttl, 0.0, settings.timeout),
        };
        let target = Arc::new(Target {
            source: decl.source,
            item: decl.item,
            field: decl.field,
            ttl,
            staleness,
        });
        let answer = self
            .batcher
            .fetch(target.source.clone(), target.item.clone(), None, false, budget)
            .await
            .unwrap_or_else(lost);
        if self.seals.load(Ordering::Acquire) != seals {
            // A SnapStart snapshot was taken meanwhile: the answer is from before it, and is not
            // cached (its bytes go with this future).
            return Err(Error::DroppedForSnapshot { key: name.to_owned() });
        }
        let now = Instant::now();
        let found = match answer {
            Ok(Refreshed::Changed(fetched)) => bind(&target, fetched),
            Ok(_) => Err(ItemError::NotFound),
            Err(e) => Err(e),
        };
        match found {
            Ok(found) => Ok(self.entry(Ok(Arc::new(found)), now)),
            Err(error @ (ItemError::NotFound | ItemError::Denied { .. })) => {
                Ok(self.entry(Err(failure(name, &target, error)), now))
            }
            Err(error) => Err(Error::Load {
                failures: vec![failure(name, &target, error)],
            }),
        }
    }

    fn entry(&self, found: Result<Arc<Found>, Failure>, now: Instant) -> Entry {
        // Due after the TTL less a random jitter, no later than the source asks (a secret's next
        // rotation) and than 90 % of the maximum staleness, as declared values are.
        let due = match &found {
            Ok(f) => {
                let (ttl, staleness) = (f.target.ttl, f.target.staleness);
                let delay =
                    crate::schedule::next_refresh(ttl, self.settings.jitter, false, crate::random::f64());
                let mut due = later(now, delay.min(staleness.mul_f64(0.9)));
                if let Some(by) = f.info.refresh_by {
                    let wait = by
                        .duration_since(std::time::SystemTime::now())
                        .unwrap_or_default();
                    due = due.min(later(now, wait.max(Duration::from_secs(1))));
                }
                due
            }
            Err(_) => later(now, self.settings.negative_ttl),
        };
        let due_after = due.saturating_duration_since(now).as_nanos();
        Entry(Arc::new(EntryData {
            failures: Default::default(),
            found,
            fetched_at: now,
            due_after: AtomicU64::new(u64::try_from(due_after).unwrap_or(u64::MAX)),
            refreshing: AtomicBool::new(false),
        }))
    }
}

/// Binds fetched values to a name: the first value (an on-demand name is one value), or its JSON
/// field.
fn bind(target: &Arc<Target>, fetched: Vec<Fetched>) -> Result<Found, ItemError> {
    let first = fetched.into_iter().next().ok_or(ItemError::NotFound)?;
    let value = match &target.field {
        Some(field) => crate::store::json_field(&first.value, field)?,
        None => first.value,
    };
    Ok(Found {
        target: target.clone(),
        value,
        info: Arc::new(ValueInfo {
            source: target.source.kind(),
            name: first.name,
            version: first.version,
            refresh_by: first.refresh_by,
        }),
    })
}

impl Inner {
    /// Puts `fresh` in place of `old` (or removes `old` when `fresh` is `None`), only if `old` is
    /// still the entry cached for `name`.
    async fn replace(&self, name: &str, old: &Entry, fresh: Option<Entry>) {
        use moka::ops::compute::Op;
        self.cache
            .entry_by_ref(name)
            .and_compute_with(|current| {
                let same = current.is_some_and(|c| Arc::ptr_eq(&c.into_value().0, &old.0));
                std::future::ready(match (same, fresh) {
                    (true, Some(fresh)) => Op::Put(fresh),
                    (true, None) => Op::Remove,
                    (false, _) => Op::Nop,
                })
            })
            .await;
    }
}

/// Longest wait between two failed refreshes of an on-demand value.
const FAILURE_BACKOFF_MAX: Duration = Duration::from_secs(60);

fn failure(name: &str, target: &Target, error: ItemError) -> Failure {
    Failure {
        key: name.to_owned(),
        source: target.source.kind(),
        id: target.item.to_string(),
        error,
    }
}

/// A lookup that failed before reaching a source (no runtime, out of budget).
fn lookup_failure(name: &str, error: ItemError) -> Error {
    Error::Load {
        failures: vec![Failure {
            key: name.to_owned(),
            source: "on-demand",
            id: name.to_owned(),
            error,
        }],
    }
}

fn entry_result(entry: &Entry) -> Result<(SecretValue, Arc<ValueInfo>), Error> {
    match &entry.0.found {
        Ok(found) => Ok((found.value.clone(), found.info.clone())),
        Err(failure) => Err(Error::Load {
            failures: vec![failure.clone()],
        }),
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

/// Settings of an [`OnDemand`] cache. See [`OnDemand`].
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
    ttl: Duration,
    jitter: f64,
    max_staleness: Option<Duration>,
    negative_ttl: Duration,
    max_entries: u64,
    max_bytes: u64,
    window: Duration,
    max_batch: usize,
    retry: RetryPolicy,
    limits: RateLimits,
    timeout: Duration,
    failure_backoff: Duration,
}

impl Default for OnDemandBuilder {
    fn default() -> Self {
        OnDemandBuilder {
            ttl: Duration::from_secs(300),
            jitter: 0.1,
            max_staleness: None,
            negative_ttl: Duration::from_secs(30),
            max_entries: 10_000,
            max_bytes: 16 << 20,
            window: Duration::from_millis(2),
            max_batch: 20,
            retry: RetryPolicy::default(),
            limits: RateLimits::process(),
            timeout: Duration::from_secs(5),
            failure_backoff: Duration::from_secs(1),
        }
    }
}

impl OnDemandBuilder {
    /// TTL of values whose declaration has none (default 300 s); past it the next lookup refreshes
    /// the value in the background. A declaration's own `.ttl(..)` wins.
    ///
    /// ```
    /// let b = lambda_secrets::OnDemand::builder().ttl(std::time::Duration::from_secs(60));
    /// # let _ = b;
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Age past which a value is fetched again before it is served (default, for each value:
    /// max(3 × TTL, TTL + the fetch timeout)); it must be at least every TTL. It is also how long
    /// a value stays in memory unused.
    ///
    /// ```
    /// let b = lambda_secrets::OnDemand::builder().max_staleness(std::time::Duration::from_secs(900));
    /// # let _ = b;
    /// ```
    pub fn max_staleness(mut self, staleness: Duration) -> Self {
        self.max_staleness = Some(staleness);
        self
    }

    /// How long "not found" and "denied" answers are remembered (default 30 s).
    ///
    /// ```
    /// let b = lambda_secrets::OnDemand::builder().negative_ttl(std::time::Duration::from_secs(10));
    /// # let _ = b;
    /// ```
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Most names kept (values and negative answers; default 10,000).
    ///
    /// ```
    /// let b = lambda_secrets::OnDemand::builder().max_entries(500);
    /// # let _ = b;
    /// ```
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.max_entries = entries;
        self
    }

    /// Most bytes of names and values kept (default 16 MiB). The two bounds share one budget:
    /// each name weighs its bytes plus `max_bytes / max_entries`, and the cache holds names while
    /// their weights sum to at most `max_bytes`, so it never exceeds either bound (with the defaults,
    /// 10,000 names of about 1.6 KB fill it). A value heavier than that is served but not cached.
    /// Names are evicted by moka's TinyLFU policy (rarely and long unused first).
    ///
    /// ```
    /// let b = lambda_secrets::OnDemand::builder().max_bytes(1 << 20);
    /// # let _ = b;
    /// ```
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// How long the first miss of a moment waits for others to fetch with it (default 2 ms); a
    /// batch of [`max_batch`](Self::max_batch) names is sent at once.
    ///
    /// ```
    /// let b = lambda_secrets::OnDemand::builder().coalesce_window(std::time::Duration::from_millis(5));
    /// # let _ = b;
    /// ```
    pub fn coalesce_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Names at which a batch is sent without waiting for the window (default 20, which is
    /// `BatchGetSecretValue`'s limit and two `GetParameters` calls).
    ///
    /// ```
    /// let b = lambda_secrets::OnDemand::builder().max_batch(10);
    /// # let _ = b;
    /// ```
    pub fn max_batch(mut self, names: usize) -> Self {
        self.max_batch = names;
        self
    }

    /// Retries of throttled, 5xx and timed-out calls.
    ///
    /// ```
    /// let policy = lambda_secrets::RetryPolicy { max_attempts: 3, ..Default::default() };
    /// let b = lambda_secrets::OnDemand::builder().retry_policy(policy);
    /// # let _ = b;
    /// ```
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The rate limits calls go through (default: the process-wide set, shared with declared
    /// values).
    ///
    /// ```
    /// let b = lambda_secrets::OnDemand::builder().rate_limits(lambda_secrets::RateLimits::new());
    /// # let _ = b;
    /// ```
    pub fn rate_limits(mut self, limits: RateLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Budget of one fetch, retries included (default 5 s). A batch holds the misses of several
    /// invocations, so it has one budget: keep it within your invocations' time. A lookup bounded by
    /// its invocation's deadline with `tokio::time::timeout` stops waiting; the batch goes on for
    /// the other names in it, and the next lookup of that name fetches it again.
    ///
    /// ```
    /// let b = lambda_secrets::OnDemand::builder().fetch_timeout(std::time::Duration::from_secs(2));
    /// # let _ = b;
    /// ```
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Makes the cache; `declare` turns a name into the declaration to fetch it by (a source's
    /// helper, with a JSON field if wanted). Fails on a setting out of range.
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
        if !crate::store::ttl_in_range(self.ttl) {
            return Err(Error::invalid_input(
                "TTL",
                format!("{:?}", self.ttl),
                "must be between 1 ms and 7 days",
            ));
        }
        if let Some(max_staleness) = self.max_staleness.filter(|s| *s < self.ttl) {
            return Err(Error::invalid_input(
                "max staleness",
                format!("{max_staleness:?}"),
                "must be at least the TTL",
            ));
        }
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
        if self.max_bytes / self.max_entries > u64::from(u32::MAX / 2) {
            return Err(Error::invalid_input(
                "max bytes",
                self.max_bytes.to_string(),
                "max bytes / max entries must be below 2 GiB (a name's weight is 32 bits)",
            ));
        }
        if self.max_batch == 0 {
            return Err(Error::invalid_input("max batch", "0", "must be at least 1"));
        }
        for (what, value) in [
            ("negative TTL", self.negative_ttl),
            ("coalesce window", self.window),
            ("fetch timeout", self.timeout),
        ] {
            if value > Duration::from_secs(3600) || (what != "coalesce window" && value.is_zero()) {
                return Err(Error::invalid_input(
                    what,
                    format!("{value:?}"),
                    "must be above zero and at most an hour",
                ));
            }
        }
        if let Some((class, quota, why)) = self.limits.invalid() {
            return Err(Error::invalid_input(
                "rate limit",
                format!("{class:?}: {quota:?}"),
                &why,
            ));
        }
        let settings = Settings {
            ttl: self.ttl,
            jitter: self.jitter,
            max_staleness: self.max_staleness,
            timeout: self.timeout,
            negative_ttl: self.negative_ttl,
            failure_backoff: self.failure_backoff,
        };
        // Two bounds with one weighted capacity: every entry weighs its bytes plus an equal share of
        // the byte budget, so the cache holds at most `max_entries` entries and `max_bytes` bytes.
        let share = self.max_bytes / self.max_entries;
        let cache = moka::future::Cache::builder()
            .max_capacity(self.max_bytes)
            .weigher(move |name: &String, entry: &Entry| {
                u32::try_from(share + (name.len() + entry.bytes()) as u64).unwrap_or(u32::MAX)
            })
            .expire_after(KeepFor(settings))
            .build();
        let stats = Arc::new(CallStats::default());
        let batcher = Batcher::new(Fetching {
            stats: stats.clone(),
            retry: self.retry,
            limits: self.limits,
            timeout: self.timeout,
            window: self.window,
            max_batch: self.max_batch,
            restored: Default::default(),
        });
        Ok(OnDemand {
            inner: Arc::new(Inner {
                declare: Box::new(declare),
                cache,
                batcher,
                settings,
                stats,
                misses: AtomicU64::new(0),
                refreshes: AtomicU64::new(0),
                refresh_failures: AtomicU64::new(0),
                sealed: AtomicBool::new(false),
                seals: AtomicU64::new(0),
            }),
        })
    }
}

#[cfg(test)]
mod tests;
