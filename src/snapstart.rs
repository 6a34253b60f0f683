//! [`SnapStart`]: no secret in a Lambda SnapStart snapshot, fresh values and a fresh refresh
//! schedule after every restore.

use std::sync::Arc;

use crate::error::Error;
use crate::secrets::Secrets;
use crate::store::Store;

/// The SnapStart hooks of one or more [`Secrets`] (and [`OnDemand`](crate::OnDemand) caches).
///
/// With Lambda SnapStart, INIT runs once, its memory is snapshotted, and every execution environment
/// is a restore of that snapshot, possibly days later, all with the same memory. Registered with
/// `lambda_runtime` (feature `snapstart`, on by default through `lambda-runtime`), these hooks run
/// when `AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`:
///
/// - [`before_snapshot`](Self::before_snapshot) drops every loaded value (declared and on-demand);
///   each zeroizes its bytes as its last clone goes. Only the declarations and settings stay. Until
///   the restore, every read gives [`Error::DroppedForSnapshot`].
/// - [`after_restore`](Self::after_restore) reseeds the library's random generator from
///   `/dev/urandom` (unique per restored environment), starts the rate limits afresh, and loads every
///   declared value again through the cold load's path: every [`Secrets`] at once, batched,
///   rate-limited: its calls end by the [load timeout](crate::SecretsBuilder::load_timeout) (8 s
///   by default) or 9 s, whichever is sooner, and the reload is cut at 9.5 s whatever a source
///   does, inside the 10 s Lambda gives the after-restore hooks. A call's first attempt is abandoned
///   after 1 s (a connection pooled before the snapshot may never answer). Each value's clock
///   starts at the restore, and each environment draws its own random first-refresh phase (one per
///   `Secrets`, as at a cold load), so a restored fleet does not refresh in lockstep. On-demand
///   names are fetched again on their first lookup. The calling thread's `fastrand` generator is
///   reseeded too.
///
/// If the reload fails, `after_restore` fails with [`Error::Load`] naming every key that could not
/// be loaded, like a failed INIT: the runtime reports it to `/restore/error`, and Lambda does not
/// use the environment. Nothing half-loaded is ever served. (No lenient mode is offered: the
/// calls were already retried within the budget, and a restored environment without its values
/// could only fail its invocations.)
///
/// ```
/// use std::sync::Arc;
/// use lambda_secrets::{MemorySource, Secrets};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mem = MemorySource::new();
/// mem.set("/db", "before");
/// let secrets = Secrets::builder().add(mem.value("db", "/db")).load().await?;
/// let snapstart = secrets.snapstart();
/// // In `main`: lambda_runtime::Runtime::new(service)
/// //     .register_snapstart_resource(Arc::new(snapstart.clone())).run().await
///
/// snapstart.before_snapshot().await?;
/// assert!(matches!(secrets.get("db"), Err(lambda_secrets::Error::DroppedForSnapshot { .. })));
/// mem.set("/db", "rotated while the snapshot waited");
/// snapstart.after_restore().await?;
/// assert_eq!(secrets.get("db")?.expose_str(), Some("rotated while the snapshot waited"));
/// # Ok::<(), lambda_secrets::Error>(()) }).unwrap();
/// ```
///
/// Register one `SnapStart` for all of a function's values (chain [`secrets`](Self::secrets) and
/// [`on_demand`](Self::on_demand)) rather than one per [`Secrets`]: `lambda_runtime` runs
/// registered hooks one after another, and each reload would have the whole restore budget.
///
/// What it cannot reach: clones of values your code keeps past an invocation (`before_snapshot`
/// logs the keys still held), and copies the AWS SDK, hyper and TLS buffers made while the values
/// were fetched, freed without zeroizing. See the crate's
/// [SnapStart section](crate#snapstart).
#[derive(Clone)]
pub struct SnapStart {
    stores: Vec<Arc<Store>>,
    #[cfg(feature = "on-demand")]
    caches: Vec<crate::on_demand::OnDemand>,
}

impl std::fmt::Debug for SnapStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("SnapStart");
        d.field("secrets", &self.stores.len());
        #[cfg(feature = "on-demand")]
        d.field("on_demand", &self.caches.len());
        d.finish()
    }
}

impl Secrets {
    /// The SnapStart hooks for these values (add more with [`SnapStart::secrets`] and
    /// [`SnapStart::on_demand`]).
    pub fn snapstart(&self) -> SnapStart {
        SnapStart {
            stores: vec![self.store.clone()],
            #[cfg(feature = "on-demand")]
            caches: Vec::new(),
        }
    }
}

#[cfg(feature = "on-demand")]
#[cfg_attr(docsrs, doc(cfg(feature = "on-demand")))]
impl crate::on_demand::OnDemand {
    /// The SnapStart hooks for this cache, for a function without declared values (add more with
    /// [`SnapStart::secrets`] and [`SnapStart::on_demand`]).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/tenants/7", "k-7");
    /// let tenants = lambda_secrets::OnDemand::builder()
    ///     .build(move |t| mem.value(t, format!("/tenants/{t}")))
    ///     .unwrap();
    /// tenants.get("7").await.unwrap();
    /// let hooks = tenants.snapstart();
    /// hooks.before_snapshot().await.unwrap();
    /// assert_eq!(tenants.cached().await, 0);
    /// # });
    /// ```
    pub fn snapstart(&self) -> SnapStart {
        SnapStart {
            stores: Vec::new(),
            caches: vec![self.clone()],
        }
    }
}

impl SnapStart {
    /// Also drops and reloads `other`'s values.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/a", "1");
    /// mem.set("/b", "2");
    /// let a = lambda_secrets::Secrets::builder().add(mem.value("a", "/a")).load().await.unwrap();
    /// let b = lambda_secrets::Secrets::builder().add(mem.value("b", "/b")).load().await.unwrap();
    /// let hooks = a.snapstart().secrets(&b);
    /// hooks.before_snapshot().await.unwrap();
    /// assert!(b.get("b").is_err());
    /// # });
    /// ```
    pub fn secrets(mut self, other: &Secrets) -> Self {
        self.stores.push(other.store.clone());
        self
    }

    /// Also drops every value `cache` holds before the snapshot (names are fetched again on their
    /// first lookup after the restore).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// mem.set("/tenants/7", "k-7");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// let lookup = mem.clone();
    /// let tenants = lambda_secrets::OnDemand::builder()
    ///     .build(move |t| lookup.value(t, format!("/tenants/{t}")))
    ///     .unwrap();
    /// assert!(tenants.get("7").await.is_ok());
    ///
    /// let hooks = secrets.snapstart().on_demand(&tenants);
    /// hooks.before_snapshot().await.unwrap();
    /// assert_eq!(tenants.cached().await, 0);
    /// hooks.after_restore().await.unwrap();
    /// assert_eq!(tenants.get("7").await.unwrap().expose_str(), Some("k-7"));
    /// # });
    /// ```
    #[cfg(feature = "on-demand")]
    #[cfg_attr(docsrs, doc(cfg(feature = "on-demand")))]
    pub fn on_demand(mut self, cache: &crate::on_demand::OnDemand) -> Self {
        self.caches.push(cache.clone());
        self
    }

    /// Drops every value (see [`SnapStart`]). Keys whose values are still held outside the library
    /// (a [`Snapshot`](crate::Snapshot) or [`SecretValue`](crate::SecretValue) kept past an
    /// invocation) are logged as a warning: their bytes stay in memory, hence in the snapshot.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// secrets.snapstart().before_snapshot().await.unwrap();
    /// assert!(secrets.snapshot().is_empty());
    /// # });
    /// ```
    pub async fn before_snapshot(&self) -> Result<(), Error> {
        // Every store and cache at once: each stops its background tasks and waits (a second at
        // most) until none holds a value, all within the same second.
        let stores = futures_util::future::join_all(self.stores.iter().map(|s| s.seal()));
        #[cfg(feature = "on-demand")]
        let caches = futures_util::future::join_all(self.caches.iter().map(|c| c.seal()));
        #[cfg(not(feature = "on-demand"))]
        let caches = std::future::ready(Vec::<Vec<String>>::new());
        let (stores, caches) = futures_util::future::join(stores, caches).await;
        let held: Vec<String> = stores.into_iter().chain(caches).flatten().collect();
        if held.is_empty() {
            tracing::info!("lambda-secrets: values dropped before the SnapStart snapshot");
        } else {
            tracing::warn!(
                keys = ?held,
                "lambda-secrets: values dropped before the SnapStart snapshot, but these are still held elsewhere (a Snapshot or SecretValue kept past an invocation) and will be in the snapshot"
            );
        }
        Ok(())
    }

    /// Reseeds the library's random generator, then loads every declared value again (see
    /// [`SnapStart`]). Fails with [`Error::Load`] naming every key that could not be loaded: the
    /// values of a [`Secrets`] with a key that could not be loaded stay dropped (those of the other
    /// `Secrets` are loaded; on-demand names are fetched on their next lookup).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// let hooks = secrets.snapstart();
    /// hooks.before_snapshot().await.unwrap();
    /// mem.remove("/db"); // deleted while the snapshot waited
    /// let err = hooks.after_restore().await.unwrap_err();
    /// assert!(err.to_string().contains("key `db` (memory `/db`): not found"), "{err}");
    /// # });
    /// ```
    pub async fn after_restore(&self) -> Result<(), Error> {
        let started = tokio::time::Instant::now();
        if !crate::random::reseed() {
            tracing::warn!("lambda-secrets: /dev/urandom is not readable; the random generator was reseeded from the clock");
        }
        // Every instant the rate limits hold is from before the snapshot: each set starts afresh,
        // once (stores and caches may share one).
        let mut limits: Vec<&crate::limiter::RateLimits> = Vec::new();
        let stores = self.stores.iter().map(|s| &s.config().freshness.limits);
        #[cfg(feature = "on-demand")]
        let stores = stores.chain(self.caches.iter().map(|c| c.rate_limits()));
        for set in stores {
            if !limits.iter().any(|seen| seen.same_set(set)) {
                set.restart();
                limits.push(set);
            }
        }
        // All stores at once: they share the restore's budget.
        let reloads = futures_util::future::join_all(self.stores.iter().map(|s| s.reload(started))).await;
        let mut failures = Vec::new();
        for reloaded in reloads {
            match reloaded {
                Ok(reloaded) => tracing::info!(
                    values = reloaded.values,
                    elapsed_ms = reloaded.elapsed.as_millis() as u64,
                    first_refresh_in_ms = reloaded.first_refresh_in.as_millis() as u64,
                    "lambda-secrets: values loaded again after the SnapStart restore"
                ),
                Err(f) => failures.extend(f),
            }
        }
        #[cfg(feature = "on-demand")]
        for cache in &self.caches {
            // Whatever the snapshot held goes (there is nothing to drop after `before_snapshot`).
            cache.seal().await;
            cache.unseal();
        }
        match failures.is_empty() {
            true => Ok(()),
            false => {
                let error = Error::Load { failures };
                tracing::error!(
                    "lambda-secrets: loading the values after the SnapStart restore failed: {error}"
                );
                Err(error)
            }
        }
    }
}

/// The hooks, for `lambda_runtime` (and `lambda_http`): register them with
/// `Runtime::register_snapstart_resource`.
///
/// ```no_run
/// use std::sync::Arc;
/// use lambda_runtime::{service_fn, Error, LambdaEvent, Runtime};
/// use lambda_secrets::{Secrets, Snapshot, SsmSource};
///
/// async fn handler((event, secrets): (LambdaEvent<serde_json::Value>, Snapshot)) -> Result<usize, Error> {
///     Ok(secrets.get("api_key")?.len())
/// }
///
/// # async fn run() -> Result<(), Error> {
/// let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
/// let secrets = Secrets::builder()
///     .add(SsmSource::new(&config).parameter("api_key", "/prod/api-key"))
///     .load()
///     .await?;
/// let service = tower::ServiceBuilder::new().layer(secrets.layer()).service(service_fn(handler));
/// Runtime::new(service)
///     .register_snapstart_resource(Arc::new(secrets.snapstart()))
///     .run()
///     .await
/// # }
/// ```
///
/// With `lambda_http`: `lambda_http::runtime(service).register_snapstart_resource(..).run().await`.
#[cfg(feature = "snapstart")]
#[cfg_attr(docsrs, doc(cfg(feature = "snapstart")))]
impl lambda_runtime::SnapStartResource for SnapStart {
    fn before_snapshot(&self) -> lambda_runtime::BoxFuture<'_, Result<(), lambda_runtime::Error>> {
        Box::pin(async move { Ok(SnapStart::before_snapshot(self).await?) })
    }

    fn after_restore(&self) -> lambda_runtime::BoxFuture<'_, Result<(), lambda_runtime::Error>> {
        Box::pin(async move { Ok(SnapStart::after_restore(self).await?) })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::{MemorySource, SecretValue};

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    async fn load(mem: &MemorySource) -> Secrets {
        Secrets::builder()
            .default_ttl(secs(300))
            .add(mem.value("db", "/db"))
            .add(mem.value("api", "/api"))
            .load()
            .await
            .unwrap()
    }

    fn source() -> MemorySource {
        let mem = MemorySource::new();
        mem.set("/db", "db-init");
        mem.set("/api", "api-init");
        mem
    }

    /// When the first refresh is due, relative to now.
    fn first_refresh_in(secrets: &Secrets) -> Duration {
        secrets
            .store
            .current()
            .0
            .check_at
            .saturating_duration_since(Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn before_snapshot_drops_every_value_and_nothing_reads_or_refreshes_them_until_the_restore() {
        let mem = source();
        let secrets = load(&mem).await;
        let watch = secrets.get("db").unwrap().watch();
        // The source no longer holds the INIT value: only the store does.
        mem.set("/db", "db-rotated");
        let fetches = mem.fetches();

        secrets.snapstart().before_snapshot().await.unwrap();
        assert!(!watch.is_held(), "the value was dropped (and so zeroized)");
        assert!(secrets.snapshot().is_empty());
        for key in ["db", "api"] {
            assert!(
                matches!(secrets.get(key), Err(Error::DroppedForSnapshot { .. })),
                "{key}"
            );
            assert!(matches!(
                secrets.refresh_now(key).await,
                Err(Error::DroppedForSnapshot { .. })
            ));
        }
        assert!(matches!(
            secrets.get("undeclared"),
            Err(Error::DroppedForSnapshot { .. })
        ));
        // The snapshot waits for days: nothing is due, nobody waits, nothing is fetched.
        tokio::time::advance(secs(3 * 24 * 3600)).await;
        let snapshot = tokio::time::timeout(secs(1), secrets.fresh_snapshot())
            .await
            .unwrap();
        assert!(snapshot.is_empty());
        tokio::task::yield_now().await;
        assert_eq!(mem.fetches(), fetches, "no refresh started while sealed");
    }

    #[tokio::test(start_paused = true)]
    async fn after_restore_serves_the_value_changed_meanwhile_with_clocks_started_at_the_restore() {
        let mem = source();
        let secrets = load(&mem).await;
        let hooks = secrets.snapstart();
        hooks.before_snapshot().await.unwrap();
        tokio::time::advance(secs(5 * 24 * 3600)).await;
        mem.set("/db", "db-rotated");

        hooks.after_restore().await.unwrap();
        assert_eq!(secrets.get("db").unwrap().expose_str(), Some("db-rotated"));
        assert_eq!(secrets.get("api").unwrap().expose_str(), Some("api-init"));
        let due = first_refresh_in(&secrets);
        assert!(due > Duration::ZERO && due <= secs(300), "{due:?}");
        // The next refresh comes from the restore's clock, not from the INIT's.
        let fetches = mem.fetches();
        let _ = secrets.snapshot();
        tokio::task::yield_now().await;
        assert_eq!(mem.fetches(), fetches, "nothing is due right after the reload");
        tokio::time::advance(due).await;
        let _ = secrets.snapshot();
        tokio::time::sleep(secs(60)).await;
        assert!(mem.fetches() > fetches, "refreshed at the drawn phase");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_under_way_at_the_snapshot_lands_nowhere() {
        let mem = source();
        let secrets = load(&mem).await;
        mem.set_latency(secs(2));
        mem.set("/db", "db-rotated");
        tokio::time::advance(secs(400)).await;
        let _ = secrets.snapshot(); // starts the refresh of both values
        tokio::task::yield_now().await;
        secrets.snapstart().before_snapshot().await.unwrap();
        tokio::time::sleep(secs(60)).await;
        assert!(
            secrets.snapshot().is_empty(),
            "the refresh's answer was not published"
        );
        assert!(matches!(secrets.get("db"), Err(Error::DroppedForSnapshot { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_reload_names_every_missing_key_and_serves_nothing() {
        let mem = source();
        let secrets = load(&mem).await;
        let hooks = secrets.snapstart();
        hooks.before_snapshot().await.unwrap();
        mem.remove("/db");
        mem.remove("/api");
        let err = hooks.after_restore().await.unwrap_err().to_string();
        assert!(err.contains("key `db` (memory `/db`): not found"), "{err}");
        assert!(err.contains("key `api` (memory `/api`): not found"), "{err}");
        assert!(matches!(secrets.get("db"), Err(Error::DroppedForSnapshot { .. })));

        // One key missing: the other, loaded, is not served either (nothing half-loaded).
        mem.set("/api", "api-2");
        let err = hooks.after_restore().await.unwrap_err().to_string();
        assert!(err.contains("key `db`") && !err.contains("key `api`"), "{err}");
        assert!(matches!(
            secrets.get("api"),
            Err(Error::DroppedForSnapshot { .. })
        ));

        mem.set("/db", "db-2");
        hooks.after_restore().await.unwrap();
        assert_eq!(secrets.get("api").unwrap().expose_str(), Some("api-2"));
    }

    #[tokio::test(start_paused = true)]
    async fn two_restores_of_one_snapshot_draw_different_refresh_phases() {
        let mem = source();
        let secrets = load(&mem).await;
        let hooks = secrets.snapstart();
        hooks.before_snapshot().await.unwrap();
        // Without the reseed, two restores of one memory state draw the same phase: the herd.
        let mut control = Vec::new();
        for _ in 0..2 {
            crate::random::set_seed(42);
            secrets.store.reload(Instant::now()).await.unwrap();
            control.push(first_refresh_in(&secrets));
        }
        assert_eq!(control[0], control[1]);
        // With it, each restore draws its own.
        let mut phases = Vec::new();
        for _ in 0..2 {
            crate::random::set_seed(42);
            hooks.after_restore().await.unwrap();
            phases.push(first_refresh_in(&secrets));
        }
        assert_ne!(phases[0], phases[1], "{phases:?}");
    }

    #[tokio::test]
    async fn values_held_past_an_invocation_are_named() {
        let mem = source();
        let secrets = load(&mem).await;
        mem.set("/db", "db-rotated");
        mem.set("/api", "api-rotated");
        let kept: SecretValue = secrets.get("api").unwrap();
        assert_eq!(secrets.store.seal().await, ["api"]);
        drop(kept);
    }

    #[tokio::test(start_paused = true)]
    async fn every_secrets_reloads_at_once_within_the_restore_budget() {
        let (a, b) = (source(), source());
        let (first, second) = (load(&a).await, load(&b).await);
        let hooks = first.snapstart().secrets(&second);
        hooks.before_snapshot().await.unwrap();
        a.set_latency(ms(800));
        b.set_latency(ms(800));
        let started = Instant::now();
        hooks.after_restore().await.unwrap();
        let took = started.elapsed();
        assert!(
            took >= ms(800) && took < ms(1200),
            "one after the other would take 1.6 s: {took:?}"
        );
        assert_eq!(second.get("db").unwrap().expose_str(), Some("db-init"));

        // A source that no longer answers: the restore fails within Lambda's 10 s, whatever the
        // load timeout says.
        let patient = Secrets::builder()
            .load_timeout(secs(60))
            .add(a.value("db", "/db"))
            .load()
            .await
            .unwrap();
        let hooks = patient.snapstart();
        hooks.before_snapshot().await.unwrap();
        a.set_latency(secs(3600));
        let started = Instant::now();
        let err = hooks.after_restore().await.unwrap_err();
        assert!(err.to_string().contains("key `db`"), "{err}");
        assert!(started.elapsed() <= secs(10), "{:?}", started.elapsed());
    }

    #[cfg(feature = "on-demand")]
    #[tokio::test(start_paused = true)]
    async fn an_on_demand_fetch_under_way_at_the_snapshot_is_not_cached() {
        let mem = source();
        mem.set("/tenants/7", "t7-init");
        let secrets = load(&mem).await;
        let lookup = mem.clone();
        let tenants = crate::on_demand::OnDemand::builder()
            .fetch_timeout(secs(10))
            .build(move |t| lookup.value(t, format!("/tenants/{t}")))
            .unwrap();
        let hooks = secrets.snapstart().on_demand(&tenants);
        mem.set_latency(secs(1));
        let under_way = tokio::spawn({
            let tenants = tenants.clone();
            async move { tenants.get("7").await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        hooks.before_snapshot().await.unwrap();
        assert!(matches!(
            under_way.await.unwrap(),
            Err(Error::DroppedForSnapshot { .. })
        ));
        assert_eq!(tenants.cached().await, 0, "its answer was not cached");
        mem.set_latency(Duration::ZERO);
        mem.set("/tenants/7", "t7-rotated");
        hooks.after_restore().await.unwrap();
        assert_eq!(tenants.get("7").await.unwrap().expose_str(), Some("t7-rotated"));
    }

    #[cfg(feature = "on-demand")]
    #[tokio::test(start_paused = true)]
    async fn an_on_demand_refresh_under_way_at_the_seal_holds_no_value() {
        let mem = source();
        mem.set("/tenants/7", "t7-init");
        let lookup = mem.clone();
        let tenants = crate::on_demand::OnDemand::builder()
            .ttl(secs(10))
            .max_staleness(secs(600))
            .build(move |t| lookup.value(t, format!("/tenants/{t}")))
            .unwrap();
        let watch = tenants.get("7").await.unwrap().watch();
        mem.set("/tenants/7", "t7-rotated"); // the source no longer holds the first value
        tokio::time::advance(secs(20)).await;
        mem.set_latency(secs(5));
        drop(tenants.get("7").await.unwrap()); // served from the cache; starts the refresh
        tokio::time::sleep(ms(100)).await;
        assert!(mem.fetches() >= 2, "the refresh is under way");
        tenants.snapstart().before_snapshot().await.unwrap();
        assert!(!watch.is_held(), "the refresh task kept the value alive");
        tokio::time::sleep(secs(10)).await; // the refresh ends: nothing is cached again
        assert_eq!(tenants.cached().await, 0);
    }

    #[cfg(feature = "on-demand")]
    #[tokio::test(start_paused = true)]
    async fn an_on_demand_caches_first_batch_after_the_restore_abandons_a_slow_first_attempt_sooner() {
        let mem = source();
        mem.set("/tenants/7", "t7");
        mem.set("/tenants/8", "t8");
        let lookup = mem.clone();
        let tenants = crate::on_demand::OnDemand::builder()
            .build(move |t| lookup.value(t, format!("/tenants/{t}")))
            .unwrap();
        let hooks = tenants.snapstart();
        hooks.before_snapshot().await.unwrap();
        hooks.after_restore().await.unwrap();
        // Each attempt takes 2 s (as one on a dead connection would take its whole timeout).
        mem.set_latency(secs(2));
        let fetches = mem.fetches();
        assert_eq!(tenants.get("7").await.unwrap().expose_str(), Some("t7"));
        assert_eq!(
            mem.fetches() - fetches,
            2,
            "the first attempt was abandoned after 1 s"
        );
        let fetches = mem.fetches();
        assert_eq!(tenants.get("8").await.unwrap().expose_str(), Some("t8"));
        assert_eq!(
            mem.fetches() - fetches,
            1,
            "later batches wait the attempt timeout"
        );
    }

    #[cfg(feature = "on-demand")]
    #[tokio::test]
    async fn on_demand_values_are_dropped_and_fetched_again_after_the_restore() {
        let mem = source();
        mem.set("/tenants/7", "t7-init");
        let secrets = load(&mem).await;
        let lookup = mem.clone();
        let tenants = crate::on_demand::OnDemand::builder()
            .build(move |t| lookup.value(t, format!("/tenants/{t}")))
            .unwrap();
        let watch = tenants.get("7").await.unwrap().watch();
        mem.set("/tenants/7", "t7-rotated");
        let hooks = secrets.snapstart().on_demand(&tenants);

        hooks.before_snapshot().await.unwrap();
        assert!(!watch.is_held(), "the cache dropped the value");
        assert!(matches!(
            tenants.get("7").await,
            Err(Error::DroppedForSnapshot { .. })
        ));
        hooks.after_restore().await.unwrap();
        assert_eq!(tenants.get("7").await.unwrap().expose_str(), Some("t7-rotated"));
    }
}
