//! The store: one entry ("unit") per distinct source item, refresh scheduling, single-flight,
//! last-good-on-failure, and publication of immutable [`Snapshot`]s.
//!
//! Invocations never lock anything on the warm path: they load the current snapshot (one atomic
//! load) and compare one instant with `check_at`. Only when something is due do they take the
//! lock, mark the due units in flight (so later invocations don't), publish a snapshot with the
//! next check instant, and spawn the refresh. Lambda freezes the process between invocations, so
//! nothing here relies on a timer: every refresh is started by an invocation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use futures_util::future::join_all;
use rustc_hash::FxHashMap;
use tokio::sync::watch;

use crate::error::{Error, Failure, ItemError};
use crate::snapshot::{Slot, Snapshot, SnapshotData, ValueInfo};
use crate::source::{
    CallContext, CallStats, Declaration, Fetched, Item, RefreshResult, Refreshed, RetryPolicy, Source,
};

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
    pub(crate) limits: crate::RateLimits,
    pub(crate) pacing: Duration,
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
            limits: crate::RateLimits::process(),
            pacing: crate::schedule::REFRESH_PACING,
        }
    }
}

/// Maximum staleness when none is configured: three TTLs.
const DEFAULT_STALENESS_TTLS: u32 = 3;
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Upper bound of timeouts, waits and backoffs (a Lambda invocation lasts at most 15 minutes).
const MAX_SETTING: Duration = Duration::from_secs(3600);

/// The least time between a refresh and the next one asked for by a source's `refresh_by`.
const MIN_REFRESH_GAP: Duration = Duration::from_secs(1);

/// A key bound to a unit, optionally to one JSON field of its value.
struct Binding {
    /// The key (for a tree: the key prefix).
    key: String,
    field: Option<String>,
}

/// One distinct (source, item) and the keys bound to it.
struct Unit {
    source: Arc<dyn Source>,
    item: Item,
    keys: Vec<Binding>,
    ttl: Duration,
    staleness: Duration,
    values: Vec<(Box<str>, SecretValueAndInfo)>,
    /// Version of an [`Item::One`]'s value, handed to [`Source::refresh`].
    version: Option<String>,
    fetched_at: Instant,
    refresh_at: Instant,
    failures: u32,
    /// After a cold load: the randomly placed first refresh, kept if a source asks for an
    /// earlier one (Secrets Manager learning the rotation schedule), so the fleet stays spread.
    first_phase: Option<Instant>,
    /// The refresh under way, if any.
    in_flight: Option<InFlight>,
    forced_at: Option<Instant>,
    /// Generation of the last refresh started / finished (results of superseded ones are dropped).
    started: u64,
    finished: u64,
    last_error: Option<ItemError>,
    expired: Option<Arc<str>>,
}

/// A refresh under way. `alive` turns false when its task ends in any way (finished, panicked,
/// or dropped with its runtime), so a lost refresh never blocks a unit; a refresh merely frozen
/// with the process (Lambda between invocations) stays alive and is not started twice.
struct InFlight {
    since: Instant,
    alive: Arc<AtomicBool>,
}

type SecretValueAndInfo = (crate::SecretValue, Arc<ValueInfo>);
type Bound = (
    Vec<(Box<str>, SecretValueAndInfo)>,
    Option<String>,
    Option<SystemTime>,
);

impl Unit {
    fn stale_at(&self) -> Instant {
        self.fetched_at + self.staleness
    }

    fn describe(&self) -> String {
        format!("{} `{}`", self.source.kind(), self.item.id())
    }

    fn failure(&self, key: &str, error: &ItemError) -> Failure {
        Failure {
            key: key.to_owned(),
            source: self.source.kind(),
            id: self.item.id().to_owned(),
            error: error.clone(),
        }
    }

    fn failures(&self, error: &ItemError) -> Vec<Failure> {
        self.keys.iter().map(|b| self.failure(&b.key, error)).collect()
    }

    fn key_list(&self) -> Vec<&str> {
        self.keys.iter().map(|b| b.key.as_str()).collect()
    }

    /// Binds fetched values to this unit's keys (taking JSON fields where asked); fails with
    /// one failure per key that cannot be bound.
    fn bind(&self, fetched: Vec<Fetched>) -> Result<Bound, Vec<Failure>> {
        if fetched.is_empty() {
            return Err(self.failures(&ItemError::NotFound));
        }
        let kind = self.source.kind();
        let version = fetched[0].version.clone();
        let refresh_by = fetched.iter().filter_map(|f| f.refresh_by).min();
        let mut values = Vec::new();
        let mut failures = Vec::new();
        let take = if matches!(self.item, Item::One(_)) {
            1
        } else {
            fetched.len()
        };
        for f in fetched.into_iter().take(take) {
            let info = Arc::new(ValueInfo {
                source: kind,
                name: f.name,
                version: f.version,
                refresh_by: f.refresh_by,
            });
            for binding in &self.keys {
                let key: Box<str> = match (&self.item, &f.relative) {
                    (Item::Tree(_), Some(rel)) => format!("{}{rel}", binding.key).into(),
                    _ => binding.key.as_str().into(),
                };
                let value = match &binding.field {
                    None => f.value.clone(),
                    Some(field) => match json_field(&f.value, field) {
                        Ok(v) => v,
                        Err(e) => {
                            failures.push(self.failure(&key, &e));
                            continue;
                        }
                    },
                };
                values.push((key, (value, info.clone())));
            }
        }
        if failures.is_empty() {
            Ok((values, version, refresh_by))
        } else {
            Err(failures)
        }
    }

    /// Takes newly fetched values.
    fn accept(&mut self, (values, version, refresh_by): Bound, now: Instant, factor: f64) {
        self.values = values;
        self.version = version;
        self.confirm(refresh_by, now, factor);
    }

    /// Marks the values current as of `now` and schedules the next refresh.
    fn confirm(&mut self, refresh_by: Option<SystemTime>, now: Instant, factor: f64) {
        self.fetched_at = now;
        self.refresh_at = match self.first_phase {
            Some(phase) if phase > now => phase,
            _ => {
                self.first_phase = None;
                now + self.ttl.mul_f64(factor)
            }
        };
        // A source's refresh-by in the past (a rotation that failed) is no reason to hurry.
        if let Some(until) = refresh_by.and_then(|by| by.duration_since(SystemTime::now()).ok()) {
            self.refresh_at = self.refresh_at.min(now + until.max(MIN_REFRESH_GAP));
        }
        for (_, (_, info)) in &mut self.values {
            if info.refresh_by != refresh_by {
                let mut updated = (**info).clone();
                updated.refresh_by = refresh_by;
                *info = Arc::new(updated);
            }
        }
        self.failures = 0;
        self.expired = None;
        self.last_error = None;
    }
}

/// One field of a JSON object value. Errors name the field, never the value.
fn json_field(value: &crate::SecretValue, field: &str) -> Result<crate::SecretValue, ItemError> {
    use serde_json::value::RawValue;
    let object: HashMap<std::borrow::Cow<'_, str>, &RawValue> = serde_json::from_slice(value.expose_bytes())
        .map_err(|_| {
            ItemError::Failed(format!(
                "the value is not a JSON object, so its field `{field}` cannot be taken"
            ))
        })?;
    let raw = object
        .get(field)
        .ok_or_else(|| ItemError::Failed(format!("the JSON object has no field `{field}`")))?
        .get();
    if raw.starts_with('"') {
        let text: String = serde_json::from_str(raw)
            .map_err(|_| ItemError::Failed(format!("field `{field}` is not a valid JSON string")))?;
        Ok(text.into())
    } else {
        Ok(raw.into())
    }
}

pub(crate) struct Store {
    config: Config,
    pub(crate) calls: Arc<CallStats>,
    pub(crate) refreshes: AtomicU64,
    pub(crate) refresh_failures: AtomicU64,
    /// Reads that found a value due (served it while its refresh ran, or waited).
    misses: AtomicU64,
    /// Reads that waited for values past their maximum staleness.
    waits: AtomicU64,
    /// Set while a read waits: background refreshes stop pacing their calls.
    hurry: Arc<AtomicBool>,
    current: ArcSwap<SnapshotData>,
    units: Mutex<Vec<Unit>>,
    /// Bumped each time a refresh finishes (success or failure); waiters watch it.
    completed: watch::Sender<u64>,
    /// Keys already warned about (produced twice), so the warning is logged once.
    warned: Mutex<Vec<String>>,
}

impl Store {
    /// Validates the declarations, fetches everything once (all sources concurrently) and
    /// publishes the first snapshot. Fails with every failing key listed.
    pub(crate) async fn load(config: Config, decls: Vec<Declaration>) -> Result<Arc<Store>, Error> {
        let mut units = plan(&config, decls)?;
        let calls = Arc::new(CallStats::default());
        let started = Instant::now();
        let ctx = CallContext::new(
            calls.clone(),
            config.retry,
            Some(config.limits.clone()),
            started + config.load_timeout,
        );
        let targets: Vec<_> = units
            .iter()
            .map(|u| (u.source.clone(), u.item.clone(), None))
            .collect();
        let results = fetch_all(&targets, &ctx, false).await;

        let now = Instant::now();
        let factor =
            crate::schedule::next_refresh(Duration::from_secs(1), config.jitter, true, fastrand::f64())
                .as_secs_f64();
        let mut failures = Vec::new();
        for (unit, result) in units.iter_mut().zip(results) {
            let bound = match result {
                Ok(Refreshed::Changed(fetched)) => unit.bind(fetched),
                Ok(Refreshed::Unchanged { .. }) => Err(unit.failures(&ItemError::NotFound)),
                Err(e) => Err(unit.failures(&e)),
            };
            match bound {
                Ok(bound) => {
                    unit.first_phase = Some(now + unit.ttl.mul_f64(factor));
                    unit.accept(bound, now, factor)
                }
                Err(f) => failures.extend(f),
            }
        }
        if !failures.is_empty() {
            return Err(Error::Load { failures });
        }
        let mut duplicates = Vec::new();
        let data = build_snapshot(&units, &config, &mut duplicates);
        if let Some((key, first, second)) = duplicates.into_iter().next() {
            return Err(Error::DuplicateKey { key, first, second });
        }
        tracing::info!(
            values = data.values.len(),
            sources = units.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "lambda-secrets loaded"
        );
        let store = Arc::new(Store {
            config,
            calls,
            refreshes: AtomicU64::new(0),
            refresh_failures: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            hurry: Arc::new(AtomicBool::new(false)),
            current: ArcSwap::from_pointee(data),
            units: Mutex::new(units),
            completed: watch::Sender::new(0),
            warned: Mutex::new(Vec::new()),
        });
        store.emit_stats();
        Ok(store)
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn stats(&self) -> crate::Stats {
        crate::Stats {
            calls: self.calls.calls(),
            throttled: self.calls.throttled.load(Ordering::Relaxed),
            retries: self.calls.retries.load(Ordering::Relaxed),
            refreshes: self.refreshes.load(Ordering::Relaxed),
            refresh_failures: self.refresh_failures.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
        }
    }

    /// Emits the counters as a `tracing` event (target `lambda_secrets::stats`) to alarm on.
    fn emit_stats(&self) {
        let stats = self.stats();
        tracing::info!(
            target: "lambda_secrets::stats",
            calls = ?stats.calls,
            throttled = stats.throttled,
            retries = stats.retries,
            refreshes = stats.refreshes,
            refresh_failures = stats.refresh_failures,
            misses = stats.misses,
            waits = stats.waits,
            "lambda-secrets counters"
        );
    }

    /// The current snapshot, with no side effect.
    pub(crate) fn current(&self) -> Snapshot {
        Snapshot(self.current.load_full())
    }

    /// The current snapshot, and whether some value in it is past its maximum staleness (the
    /// caller should then wait with [`fresh_snapshot`](Self::fresh_snapshot)). Starts the
    /// refresh of due values off the request path.
    #[inline]
    pub(crate) fn snapshot(self: &Arc<Self>) -> (Snapshot, bool) {
        let snap = self.current.load_full();
        let now = Instant::now();
        if now < snap.check_at {
            return (Snapshot(snap), false);
        }
        // Counted off the warm path only: reads that find nothing due are not counted at all.
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.start_due_refreshes(now);
        let snap = self.current.load_full();
        let must_wait = now >= snap.stale_at;
        (Snapshot(snap), must_wait)
    }

    /// The current snapshot, after waiting (at most `max_wait`) for the refresh of values past
    /// their maximum staleness.
    pub(crate) async fn fresh_snapshot(self: &Arc<Self>, max_wait: Duration) -> Snapshot {
        let (snap, wait) = self.snapshot();
        if !wait {
            return snap;
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        self.hurry.store(true, Ordering::Relaxed);
        let mut done = self.completed.subscribe();
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let (snap, wait) = self.snapshot();
            if !wait {
                return snap;
            }
            if tokio::time::timeout_at(deadline, done.changed()).await.is_err() {
                tracing::warn!(?max_wait, "refresh of values past their maximum staleness did not finish in time; serving the last values");
                return snap;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Unit>> {
        self.units.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn idle(unit: &Unit) -> bool {
        unit.in_flight
            .as_ref()
            .is_none_or(|f| !f.alive.load(Ordering::Acquire))
    }

    fn start_due_refreshes(self: &Arc<Self>, now: Instant) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!("lambda-secrets: values are due for refresh but no tokio runtime is running here; they are not refreshed");
            }
            return;
        };
        let mut units = self.lock();
        let due = |u: &Unit| u.refresh_at <= now || (u.expired.is_none() && u.stale_at() <= now);
        if !units.iter().any(|u| Self::idle(u) && due(u)) {
            return;
        }
        // Refresh together everything due within the jitter window, so that a container's keys
        // keep being fetched in few batched calls instead of drifting apart (healthy ones only:
        // a failing unit keeps its backoff).
        // The window is the jitter of the shortest TTL due now, so a long-TTL value is not
        // refreshed early just because a short-TTL one is due.
        let span = units
            .iter()
            .filter(|u| Self::idle(u) && due(u))
            .map(|u| u.ttl.mul_f64(self.config.jitter))
            .min()
            .unwrap_or_default();
        let window = |u: &Unit| u.failures == 0 && u.refresh_at <= now + span;
        let batch: Vec<usize> = (0..units.len())
            .filter(|&i| Self::idle(&units[i]) && (due(&units[i]) || window(&units[i])))
            .collect();
        // Pace the calls unless someone may be waiting (a value past its maximum staleness).
        let paced = !batch
            .iter()
            .any(|&i| units[i].expired.is_none() && units[i].stale_at() <= now);
        let task = self.begin(&mut units, &batch, now, paced);
        drop(units);
        runtime.spawn(task);
    }

    /// Marks `batch` in flight under a new generation, publishes, and returns the refresh task.
    fn begin(
        self: &Arc<Self>,
        units: &mut [Unit],
        batch: &[usize],
        now: Instant,
        paced: bool,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let alive = Arc::new(AtomicBool::new(true));
        let batch: Vec<(usize, u64)> = batch
            .iter()
            .map(|&i| {
                let unit = &mut units[i];
                unit.started += 1;
                unit.in_flight = Some(InFlight {
                    since: now,
                    alive: alive.clone(),
                });
                (i, unit.started)
            })
            .collect();
        self.publish(units);
        let guard = RefreshGuard {
            store: self.clone(),
            batch: batch.clone(),
            alive,
            done: false,
        };
        self.clone().refresh(batch, paced, guard)
    }

    async fn refresh(self: Arc<Self>, batch: Vec<(usize, u64)>, paced: bool, mut guard: RefreshGuard) {
        let targets: Vec<_> = {
            let units = self.lock();
            batch
                .iter()
                .map(|&(i, _)| {
                    (
                        units[i].source.clone(),
                        units[i].item.clone(),
                        units[i].version.clone(),
                    )
                })
                .collect()
        };
        let ctx = CallContext::new(
            self.calls.clone(),
            self.config.retry,
            Some(self.config.limits.clone()),
            Instant::now() + self.config.refresh_timeout,
        );
        let ctx = if paced && self.config.pacing > Duration::ZERO {
            ctx.paced(self.config.pacing, self.hurry.clone())
        } else {
            ctx
        };
        // A call cut by a freeze is retried by the context after the thaw, so an error here is
        // the source's answer and counts as a failure.
        let results = fetch_all(&targets, &ctx, true).await;
        self.hurry.store(false, Ordering::Relaxed);
        let now = Instant::now();
        let factor =
            crate::schedule::next_refresh(Duration::from_secs(1), self.config.jitter, false, fastrand::f64())
                .as_secs_f64();
        let mut units = self.lock();
        for (&(i, generation), result) in batch.iter().zip(results) {
            let unit = &mut units[i];
            if unit.started != generation {
                continue; // superseded by a newer refresh
            }
            unit.in_flight = None;
            unit.finished = generation;
            let result = match result {
                Ok(Refreshed::Changed(fetched)) => unit.bind(fetched).map(Some).map_err(|f| {
                    f.into_iter()
                        .next()
                        .map(|f| f.error)
                        .unwrap_or(ItemError::NotFound)
                }),
                Ok(Refreshed::Unchanged { refresh_by }) => {
                    unit.confirm(refresh_by, now, factor);
                    Ok(None)
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(bound) => {
                    if let Some(bound) = bound {
                        unit.accept(bound, now, factor);
                    }
                    self.refreshes.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    unit.failures += 1;
                    let backoff = self
                        .config
                        .failure_backoff
                        .saturating_mul(1 << (unit.failures - 1).min(16))
                        .min(self.config.failure_backoff_max)
                        .mul_f64(0.5 + 0.5 * fastrand::f64());
                    let past_limit = now >= unit.stale_at();
                    unit.refresh_at = if past_limit {
                        unit.expired = Some(error.to_string().into());
                        now + backoff
                    } else {
                        (now + backoff).min(unit.stale_at())
                    };
                    tracing::warn!(
                        keys = ?unit.key_list(),
                        source = unit.source.kind(),
                        id = unit.item.id(),
                        %error,
                        failures = unit.failures,
                        retry_in_ms = unit.refresh_at.saturating_duration_since(now).as_millis() as u64,
                        past_max_staleness = past_limit,
                        "lambda-secrets refresh failed; serving the last good value"
                    );
                    unit.last_error = Some(error);
                    self.refresh_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        guard.done = true;
        self.publish(&units);
        drop(units);
        drop(guard);
        self.completed.send_modify(|n| *n += 1);
        self.emit_stats();
    }

    /// A refresh task that ended without finishing (panic, runtime dropped): clears its units.
    fn abandon(&self, batch: &[(usize, u64)]) {
        let mut units = self.lock();
        for &(i, generation) in batch {
            let unit = &mut units[i];
            if unit.started == generation {
                unit.in_flight = None;
                unit.finished = generation;
                unit.last_error = Some(ItemError::Failed("the refresh task ended early".into()));
            }
        }
        self.publish(&units);
        drop(units);
        self.completed.send_modify(|n| *n += 1);
    }

    /// Fetches `key`'s item now, unless a forced refresh of it happened less than the
    /// configured interval ago (then the current snapshot is returned without a call). A
    /// refresh already under way is waited for, and followed by a new one if it started before
    /// this call (it may have read the value this call is about).
    pub(crate) async fn refresh_now(self: &Arc<Self>, key: &str) -> Result<Snapshot, Error> {
        let Some(index) = self.current.load().values.get(key).map(|s| s.unit) else {
            return Err(Error::MissingKey { key: key.to_owned() });
        };
        let called = Instant::now();
        let mut done = self.completed.subscribe();
        let deadline = tokio::time::Instant::now() + self.config.refresh_timeout * 2;
        loop {
            let target = {
                let mut units = self.lock();
                let now = Instant::now();
                let unit = &units[index];
                match &unit.in_flight {
                    Some(f) if f.alive.load(Ordering::Acquire) => Some((unit.started, f.since >= called)),
                    _ if unit
                        .forced_at
                        .is_some_and(|t| now.duration_since(t) < self.config.refresh_now_interval) =>
                    {
                        tracing::debug!(
                            key,
                            "refresh_now: forced refresh too recent; serving the current value"
                        );
                        return Ok(Snapshot(self.current.load_full()));
                    }
                    _ => {
                        units[index].forced_at = Some(now);
                        let task = self.begin(&mut units, &[index], now, false);
                        drop(units);
                        tokio::spawn(task);
                        None
                    }
                }
            };
            // Wait for the refresh started by this call (or one started after it).
            let (generation, accept) = target.unwrap_or((self.lock()[index].started, true));
            loop {
                {
                    let units = self.lock();
                    let unit = &units[index];
                    if unit.finished >= generation {
                        if !accept {
                            break;
                        }
                        return match &unit.last_error {
                            None => Ok(Snapshot(self.current.load_full())),
                            Some(e) => Err(Error::Load {
                                failures: unit.failures(e),
                            }),
                        };
                    }
                }
                if tokio::time::timeout_at(deadline, done.changed()).await.is_err() {
                    return Err(Error::Load {
                        failures: self.lock()[index]
                            .failures(&ItemError::Failed("the refresh did not finish in time".into())),
                    });
                }
            }
        }
    }

    fn publish(&self, units: &[Unit]) {
        let mut duplicates = Vec::new();
        let data = build_snapshot(units, &self.config, &mut duplicates);
        if !duplicates.is_empty() {
            let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
            for (key, first, second) in duplicates {
                if !warned.contains(&key) {
                    tracing::warn!(
                        key,
                        kept = first,
                        ignored = second,
                        "lambda-secrets: key produced twice"
                    );
                    warned.push(key);
                }
            }
        }
        self.current.store(Arc::new(data));
    }
}

/// Ends a refresh task's life: marks it not alive however it ends, and clears its units if it
/// did not finish (a panic, or its runtime dropped).
struct RefreshGuard {
    store: Arc<Store>,
    batch: Vec<(usize, u64)>,
    alive: Arc<AtomicBool>,
    done: bool,
}

impl Drop for RefreshGuard {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Release);
        if !self.done {
            self.store.abandon(&self.batch);
        }
    }
}

fn build_snapshot(
    units: &[Unit],
    config: &Config,
    duplicates: &mut Vec<(String, String, String)>,
) -> SnapshotData {
    let far = Instant::now() + MAX_TTL * 4;
    let mut values: FxHashMap<Box<str>, Slot> = FxHashMap::default();
    let mut owner: HashMap<&str, usize> = HashMap::new();
    let (mut next_due, mut stale_at) = (far, far);
    for unit in units {
        let due = match &unit.in_flight {
            // A paced refresh of ~10 calls takes ten pacing gaps on top of its budget.
            Some(f) => f.since + config.refresh_timeout * 2 + config.pacing * 10,
            None => unit.refresh_at,
        };
        next_due = next_due.min(due);
        if unit.expired.is_none() {
            stale_at = stale_at.min(unit.stale_at());
        }
    }
    // Explicitly declared keys win over keys found under a path: a parameter created under a
    // path can never shadow a declared credential.
    let explicit_first = units
        .iter()
        .enumerate()
        .filter(|(_, u)| matches!(u.item, Item::One(_)))
        .chain(
            units
                .iter()
                .enumerate()
                .filter(|(_, u)| matches!(u.item, Item::Tree(_))),
        );
    for (index, unit) in explicit_first {
        for (key, (value, info)) in &unit.values {
            if let Some(&first) = owner.get(&**key) {
                if first != index {
                    duplicates.push((key.to_string(), units[first].describe(), unit.describe()));
                }
                continue;
            }
            owner.insert(key, index);
            values.insert(
                key.clone(),
                Slot {
                    value: value.clone(),
                    info: info.clone(),
                    unit: index,
                    expired: unit.expired.clone(),
                },
            );
        }
    }
    SnapshotData {
        values,
        check_at: next_due.min(stale_at),
        stale_at,
    }
}

/// Validates declarations and merges them into units: an item declared twice is fetched once.
fn plan(config: &Config, decls: Vec<Declaration>) -> Result<Vec<Unit>, Error> {
    for (what, value) in [
        ("max wait", config.max_wait),
        ("load timeout", config.load_timeout),
        ("refresh timeout", config.refresh_timeout),
        ("failure backoff", config.failure_backoff_max),
        ("refresh_now interval", config.refresh_now_interval),
        ("retry attempt timeout", config.retry.attempt_timeout),
        ("retry delay", config.retry.max_delay),
    ] {
        if value > MAX_SETTING {
            return Err(Error::InvalidInput {
                what,
                input: format!("{value:?}"),
                reason: format!("must be at most {MAX_SETTING:?}"),
            });
        }
    }
    if config.retry.max_attempts == 0 {
        return Err(Error::InvalidInput {
            what: "retry attempts",
            input: "0".into(),
            reason: "must be at least 1".into(),
        });
    }
    if let Some(s) = config.max_staleness.filter(|s| *s > MAX_TTL * 4) {
        return Err(Error::InvalidInput {
            what: "max staleness",
            input: format!("{s:?}"),
            reason: "must be at most 28 days".into(),
        });
    }
    if !(0.0..=0.5).contains(&config.jitter) {
        return Err(Error::InvalidInput {
            what: "TTL jitter",
            input: config.jitter.to_string(),
            reason: "must be between 0.0 and 0.5".into(),
        });
    }
    let mut units: Vec<Unit> = Vec::new();
    let mut index: HashMap<(*const (), Item), usize> = HashMap::new();
    let mut one_keys: HashMap<String, String> = HashMap::new();
    let now = Instant::now();
    for decl in decls {
        if let Some((what, input, reason)) = decl.invalid {
            return Err(Error::InvalidInput { what, input, reason });
        }
        let ttl = decl.ttl.unwrap_or(config.default_ttl);
        if ttl < Duration::from_millis(1) || ttl > MAX_TTL {
            return Err(Error::InvalidInput {
                what: "TTL",
                input: format!("{ttl:?}"),
                reason: format!("the TTL of key `{}` must be between 1 ms and 7 days", decl.key),
            });
        }
        let staleness = match config.max_staleness {
            Some(s) if s < ttl => {
                return Err(Error::InvalidInput {
                    what: "max staleness",
                    input: format!("{s:?}"),
                    reason: format!(
                        "it is shorter than the TTL {ttl:?} of key `{}`; it must be at least the TTL",
                        decl.key
                    ),
                })
            }
            Some(s) => s,
            None => ttl * DEFAULT_STALENESS_TTLS,
        };
        if let Item::One(_) = decl.item {
            if decl.key.is_empty() {
                return Err(Error::InvalidInput {
                    what: "key",
                    input: String::new(),
                    reason: format!("the key for {} `{}` is empty", decl.source.kind(), decl.item.id()),
                });
            }
            let described = format!("{} `{}`", decl.source.kind(), decl.item.id());
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
            units.push(Unit {
                source: decl.source.clone(),
                item: decl.item.clone(),
                keys: Vec::new(),
                ttl,
                staleness,
                values: Vec::new(),
                version: None,
                fetched_at: now,
                refresh_at: now,
                failures: 0,
                first_phase: None,
                in_flight: None,
                forced_at: None,
                started: 0,
                finished: 0,
                last_error: None,
                expired: None,
            });
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

/// Fetches (or, with `refresh`, refreshes) every target, grouping items by source: one call of
/// the source per group, all groups concurrently.
async fn fetch_all(
    targets: &[(Arc<dyn Source>, Item, Option<String>)],
    ctx: &CallContext,
    refresh: bool,
) -> Vec<RefreshResult> {
    let mut groups: Vec<(Arc<dyn Source>, Vec<usize>)> = Vec::new();
    for (i, (source, _, _)) in targets.iter().enumerate() {
        match groups.iter_mut().find(|(s, _)| Arc::ptr_eq(s, source)) {
            Some((_, members)) => members.push(i),
            None => groups.push((source.clone(), vec![i])),
        }
    }
    let fetches = groups.iter().map(|(source, members)| async move {
        let items: Vec<Item> = members.iter().map(|&i| targets[i].1.clone()).collect();
        let results = if refresh {
            let versions: Vec<Option<String>> = members.iter().map(|&i| targets[i].2.clone()).collect();
            source.refresh(&items, &versions, ctx).await
        } else {
            let fetched = source.fetch(&items, ctx).await;
            fetched.into_iter().map(|r| r.map(Refreshed::Changed)).collect()
        };
        (members, results)
    });
    let mut out: Vec<Option<RefreshResult>> = vec![None; targets.len()];
    for (members, results) in join_all(fetches).await {
        for (&i, result) in members.iter().zip(results) {
            out[i] = Some(result);
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ItemError::Failed("the source returned no result for it".into()))))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{Error, MemorySource, RetryPolicy, Secrets};

    fn quick_retry() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            attempt_timeout: Duration::from_secs(2),
        }
    }

    /// Polls until `cond` holds (bounded), driving refreshes through `snapshot()`.
    async fn eventually(secrets: &Secrets, cond: impl Fn(&crate::Snapshot) -> bool) -> bool {
        for _ in 0..400 {
            if cond(&secrets.snapshot()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    #[tokio::test]
    async fn an_item_declared_twice_is_fetched_once_under_both_keys() {
        let mem = MemorySource::new();
        mem.set("/db", "pw");
        let secrets = Secrets::builder()
            .add(mem.value("a", "/db"))
            .add(mem.value("b", "/db"))
            .add(mem.value("a", "/db"))
            .load()
            .await
            .unwrap();
        let snap = secrets.snapshot();
        assert_eq!(snap.get_str("a").unwrap(), "pw");
        assert_eq!(snap.get_str("b").unwrap(), "pw");
        assert_eq!(snap.len(), 2);
        assert_eq!(mem.fetches(), 1);
    }

    #[tokio::test]
    async fn bad_declarations_are_rejected_naming_the_input() {
        let mem = MemorySource::new();
        mem.set("/a", "1");
        mem.set("/b", "2");
        let err = Secrets::builder()
            .add(mem.value("k", "/a"))
            .add(mem.value("k", "/b"))
            .load()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::DuplicateKey { key, .. } if key == "k"),
            "{err}"
        );

        let err = Secrets::builder()
            .add(mem.value("k", "/a").ttl(Duration::from_secs(60)))
            .max_staleness(Duration::from_secs(10))
            .load()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("shorter than the TTL"), "{err}");

        let err = Secrets::builder()
            .add(mem.value("k", "/a"))
            .ttl_jitter(0.9)
            .load()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("TTL jitter"), "{err}");
    }

    #[tokio::test]
    async fn missing_items_fail_the_load_listing_every_key() {
        let mem = MemorySource::new();
        mem.set("/a", "1");
        let err = Secrets::builder()
            .add(mem.value("a", "/a"))
            .add(mem.value("b", "/missing-b"))
            .add(mem.value("c", "/missing-c"))
            .load()
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("could not load 2 value(s)"), "{text}");
        assert!(
            text.contains("key `b` (memory `/missing-b`): not found"),
            "{text}"
        );
        assert!(text.contains("key `c` (memory `/missing-c`)"), "{text}");
    }

    #[tokio::test]
    async fn tree_keys_are_relative_with_prefix() {
        let mem = MemorySource::new();
        mem.set("/app/db/url", "u");
        mem.set("/app/flag", "f");
        mem.set("/other", "o");
        let secrets = Secrets::builder()
            .add(mem.tree("cfg/", "/app"))
            .load()
            .await
            .unwrap();
        assert_eq!(secrets.snapshot().keys(), ["cfg/db/url", "cfg/flag"]);
    }

    #[tokio::test]
    async fn past_ttl_the_current_value_is_served_while_the_refresh_runs() {
        let mem = MemorySource::new();
        mem.set("/k", "old");
        let secrets = Secrets::builder()
            .add(mem.value("k", "/k").ttl(Duration::from_millis(30)))
            .max_staleness(Duration::from_secs(60))
            .load()
            .await
            .unwrap();
        mem.set("/k", "new");
        mem.set_latency(Duration::from_millis(200));
        tokio::time::sleep(Duration::from_millis(40)).await;
        // Due: this read starts the refresh and is served the current value at once.
        assert_eq!(secrets.snapshot().get_str("k").unwrap(), "old");
        assert!(eventually(&secrets, |s| s.get_str("k").unwrap() == "new").await);
        assert_eq!(mem.fetches(), 2);
        assert_eq!(secrets.stats().refreshes, 1);
        assert_eq!(
            secrets.snapshot().info("k").unwrap().version.as_deref(),
            Some("2")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_readers_of_a_stale_key_cause_one_fetch() {
        let mem = MemorySource::new();
        mem.set("/k", "old");
        let secrets = Secrets::builder()
            .add(mem.value("k", "/k").ttl(Duration::from_millis(20)))
            .max_staleness(Duration::from_millis(20))
            .load()
            .await
            .unwrap();
        mem.set("/k", "new");
        mem.set_latency(Duration::from_millis(100));
        tokio::time::sleep(Duration::from_millis(30)).await;
        let readers: Vec<_> = (0..1000)
            .map(|_| {
                let secrets = secrets.clone();
                tokio::spawn(async move { secrets.fresh_snapshot().await.get_str("k").unwrap().to_owned() })
            })
            .collect();
        for reader in readers {
            // Past max staleness, every reader waits for the one refresh and sees its value.
            assert_eq!(reader.await.unwrap(), "new");
        }
        assert_eq!(mem.fetches(), 2, "one load + one refresh");
        let stats = secrets.stats();
        assert!(stats.waits >= 1 && stats.misses >= stats.waits, "{stats:?}");
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_last_good_value_then_recovers() {
        let mem = MemorySource::new();
        mem.set("/k", "good");
        let secrets = Secrets::builder()
            .add(mem.value("k", "/k").ttl(Duration::from_millis(20)))
            .max_staleness(Duration::from_secs(60))
            .retry_policy(quick_retry())
            .failure_backoff(Duration::from_millis(10), Duration::from_millis(20))
            .load()
            .await
            .unwrap();
        mem.set_failing(true);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(eventually(&secrets, |_| secrets.stats().refresh_failures >= 2).await);
        assert_eq!(secrets.snapshot().get_str("k").unwrap(), "good");
        mem.set("/k", "rotated");
        mem.set_failing(false);
        assert!(eventually(&secrets, |s| s.get_str("k").unwrap() == "rotated").await);
    }

    #[tokio::test]
    async fn past_max_staleness_a_failed_refresh_makes_the_key_expired() {
        let mem = MemorySource::new();
        mem.set("/k", "good");
        let secrets = Secrets::builder()
            .add(mem.value("k", "/k").ttl(Duration::from_millis(20)))
            .max_staleness(Duration::from_millis(40))
            .retry_policy(quick_retry())
            .failure_backoff(Duration::from_secs(30), Duration::from_secs(30))
            .load()
            .await
            .unwrap();
        mem.set_failing(true);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let snap = secrets.fresh_snapshot().await;
        let err = snap.get("k").unwrap_err();
        assert!(matches!(&err, Error::Expired { key, .. } if key == "k"), "{err}");
        assert!(!err.to_string().contains("good"));
        // No waiting on every invocation after that: the next refresh is backed off.
        let before = mem.fetches();
        let _ = secrets.fresh_snapshot().await;
        assert_eq!(mem.fetches(), before);
    }

    #[tokio::test]
    async fn refresh_now_fetches_at_once_and_is_guarded_against_loops() {
        let mem = MemorySource::new();
        mem.set("/pw", "v1");
        let secrets = Secrets::builder()
            .add(mem.value("pw", "/pw"))
            .refresh_now_interval(Duration::from_secs(60))
            .load()
            .await
            .unwrap();
        mem.set("/pw", "v2");
        let snap = secrets.refresh_now("pw").await.unwrap();
        assert_eq!(snap.get_str("pw").unwrap(), "v2");
        assert_eq!(secrets.snapshot().get_str("pw").unwrap(), "v2");
        mem.set("/pw", "v3");
        for _ in 0..100 {
            secrets.refresh_now("pw").await.unwrap();
        }
        assert_eq!(mem.fetches(), 2, "one load + one forced refresh");
        assert!(matches!(
            secrets.refresh_now("nope").await,
            Err(Error::MissingKey { .. })
        ));
    }

    #[tokio::test]
    async fn refresh_now_reports_a_failed_fetch() {
        let mem = MemorySource::new();
        mem.set("/pw", "v1");
        let secrets = Secrets::builder()
            .add(mem.value("pw", "/pw"))
            .retry_policy(quick_retry())
            .load()
            .await
            .unwrap();
        mem.set_failing(true);
        let err = secrets.refresh_now("pw").await.unwrap_err();
        assert!(err.to_string().contains("key `pw`"), "{err}");
        assert_eq!(secrets.snapshot().get_str("pw").unwrap(), "v1");
    }

    #[tokio::test]
    async fn keys_due_together_are_refreshed_in_one_fetch() {
        let mem = MemorySource::new();
        for i in 0..20 {
            mem.set(format!("/k{i}"), "v");
        }
        let mut builder = Secrets::builder().default_ttl(Duration::from_millis(30));
        for i in 0..20 {
            builder = builder.add(mem.value(format!("k{i}"), format!("/k{i}")));
        }
        let secrets = builder.load().await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        let _ = secrets.snapshot();
        assert!(eventually(&secrets, |_| secrets.stats().refreshes == 20).await);
        assert_eq!(mem.fetches(), 2);
    }

    #[tokio::test]
    async fn a_source_refresh_by_caps_the_ttl() {
        let mem = MemorySource::new();
        let soon = std::time::SystemTime::now() + Duration::from_millis(1200);
        mem.set_with_refresh_by("/rotating", "v1", Some(soon));
        let secrets = Secrets::builder()
            .add(mem.value("k", "/rotating").ttl(Duration::from_secs(3600)))
            .load()
            .await
            .unwrap();
        assert_eq!(secrets.snapshot().info("k").unwrap().refresh_by, Some(soon));
        mem.set("/rotating", "v2");
        tokio::time::sleep(Duration::from_millis(1300)).await;
        // Due at the rotation, not after the hour-long TTL.
        assert!(eventually(&secrets, |s| s.get_str("k").unwrap() == "v2").await);
    }

    #[tokio::test]
    async fn a_declared_key_is_never_shadowed_by_a_new_name_under_a_path() {
        let mem = MemorySource::new();
        mem.set("/cred", "declared");
        mem.set("/app/flag", "on");
        let secrets = Secrets::builder()
            .add(mem.tree("", "/app").ttl(Duration::from_millis(20)))
            .add(mem.value("db_password", "/cred").ttl(Duration::from_millis(20)))
            .load()
            .await
            .unwrap();
        mem.set("/app/db_password", "planted");
        mem.set("/app/new", "x");
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(eventually(&secrets, |s| s.get("new").is_ok()).await);
        assert_eq!(secrets.snapshot().get_str("db_password").unwrap(), "declared");
    }

    #[tokio::test]
    async fn a_json_field_that_is_missing_fails_the_load_naming_key_and_field() {
        let mem = MemorySource::new();
        mem.set("/rds", r#"{"password":"hunter2"}"#);
        mem.set("/plain", "hunter2");
        let err = Secrets::builder()
            .add(mem.value("user", "/rds").json_field("username"))
            .add(mem.value("pw", "/plain").json_field("password"))
            .add(mem.value("ok", "/rds").json_field("password"))
            .load()
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("key `user` (memory `/rds`): the JSON object has no field `username`"),
            "{text}"
        );
        assert!(
            text.contains("key `pw` (memory `/plain`): the value is not a JSON object"),
            "{text}"
        );
        assert!(!text.contains("key `ok`") && !text.contains("hunter2"), "{text}");
    }

    #[test]
    fn a_refresh_lost_with_its_runtime_does_not_block_the_key() {
        let mem = MemorySource::new();
        mem.set("/k", "v1");
        let rt = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let secrets = rt().block_on(
            Secrets::builder()
                .add(mem.value("k", "/k").ttl(Duration::from_millis(10)))
                .max_staleness(Duration::from_secs(60))
                .load(),
        );
        let secrets = secrets.unwrap();
        mem.set("/k", "v2");
        mem.set_latency(Duration::from_secs(3600));
        // A runtime that starts the refresh and is dropped with it in flight.
        let doomed = rt();
        doomed.block_on(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = secrets.snapshot();
            tokio::time::sleep(Duration::from_millis(20)).await;
        });
        drop(doomed);
        mem.set_latency(Duration::ZERO);
        let fresh = rt().block_on(async { eventually(&secrets, |s| s.get_str("k").unwrap() == "v2").await });
        assert!(fresh, "a new refresh replaced the lost one");
    }
}
