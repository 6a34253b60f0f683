//! The store: one entry ("unit") per distinct source item, refresh scheduling, single-flight,
//! last-good-on-failure, and publication of immutable [`Snapshot`]s.
//!
//! - [`plan`]: settings, their validation, declarations merged into units.
//! - [`unit`]: the unit and its refresh state machine (the only place states change).
//! - [`refresh`]: what is refreshed together, the refresh task, and how it ends.
//! - [`publish`]: the snapshot invocations read.
//!
//! Invocations never lock anything on the warm path: they load the current snapshot (one atomic
//! load) and compare one instant with `check_at`. Only when something is due do they take the
//! lock, move the due units to `Refreshing` (so later invocations don't), publish a snapshot with
//! the next check instant, and spawn the refresh. Lambda freezes the process between
//! invocations, so nothing here relies on a timer: every refresh is started by an invocation.

mod plan;
mod publish;
mod refresh;
mod restore;
mod unit;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;

#[cfg(feature = "on-demand")]
pub(crate) use plan::ttl_in_range;
pub(crate) use plan::Config;
#[cfg(feature = "on-demand")]
pub(crate) use refresh::{fetch_all, Answer};
#[cfg(feature = "on-demand")]
pub(crate) use restore::FIRST_ATTEMPT_AFTER_RESTORE;
#[cfg(feature = "on-demand")]
pub(crate) use unit::json_field;

use crate::call::{CallContext, CallStats};
use crate::error::{Error, ItemError};
use crate::snapshot::{Snapshot, SnapshotData};
use crate::source::{Declaration, Refreshed};
use crate::time::later;
use unit::Unit;

/// The units, and the last refresh generation handed out.
pub(crate) struct Units {
    list: Vec<Unit>,
    generation: u64,
    /// The values were dropped for a SnapStart snapshot ([`Store::seal`]) and not loaded since.
    sealed: bool,
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
    current: ArcSwap<SnapshotData>,
    units: Mutex<Units>,
    /// Bumped each time a refresh ends (however it ends); waiters watch it.
    completed: watch::Sender<u64>,
    /// Keys already warned about (produced twice), so the warning is logged once.
    warned: Mutex<Vec<String>>,
    /// Held through a reload after a SnapStart restore: two reloads do not interleave.
    restoring: tokio::sync::Mutex<()>,
    /// Bumped each time the values are dropped for a SnapStart snapshot: refreshes under way stop.
    seals: watch::Sender<u64>,
    /// The multi-thread runtime `load()` ran on, if it did: refreshes started where no runtime is
    /// current run there.
    runtime: Option<tokio::runtime::Handle>,
}

impl Store {
    /// Validates the settings and declarations, fetches everything once (all sources
    /// concurrently) and publishes the first snapshot. Fails with every failing key listed.
    pub(crate) async fn load(config: Config, decls: Vec<Declaration>) -> Result<Arc<Store>, Error> {
        let started = Instant::now();
        let mut units = plan::plan(&config, decls, started)?;
        let calls = Arc::new(CallStats::default());
        let ctx = cold_context(&calls, &config, later(started, config.load_timeout));
        let results = refresh::fetch_all(&cold_targets(&units), &ctx, false).await;
        let now = Instant::now();
        let failures = loaded(&mut units, results, started, now, &config);
        if !failures.is_empty() {
            return Err(Error::Load { failures });
        }
        let mut duplicates = Vec::new();
        let data = publish::build(&units, now, false, &mut duplicates);
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
            current: ArcSwap::from_pointee(data),
            units: Mutex::new(Units {
                list: units,
                generation: 0,
                sealed: false,
            }),
            completed: watch::Sender::new(0),
            warned: Mutex::new(Vec::new()),
            restoring: tokio::sync::Mutex::new(()),
            seals: watch::Sender::new(0),
            // A current-thread runtime runs tasks only while someone drives it: not a fallback.
            runtime: tokio::runtime::Handle::try_current()
                .ok()
                .filter(|h| h.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread),
        });
        store.emit_stats();
        Ok(store)
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn stats(&self) -> crate::stats::Stats {
        crate::stats::Stats {
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
        self.due(now)
    }

    /// Starts what is due and tells whether the caller must wait.
    fn due(self: &Arc<Self>, now: Instant) -> (Snapshot, bool) {
        self.start_due_refreshes(now);
        let snap = self.current.load_full();
        let must_wait = now >= snap.stale_at;
        (Snapshot(snap), must_wait)
    }

    /// The current snapshot, after waiting (at most `max_wait`) for the refresh of values past
    /// their maximum staleness. Counts one miss and one wait per read, however long it waits.
    pub(crate) async fn fresh_snapshot(self: &Arc<Self>, max_wait: Duration) -> Snapshot {
        let (snap, wait) = self.snapshot();
        if !wait {
            return snap;
        }
        self.wait_for_fresh(max_wait).await
    }

    /// For a read that [`snapshot`](Self::snapshot) told to wait (its miss is counted): waits
    /// at most `max_wait` for the refresh of values past their maximum staleness. Outside a tokio
    /// runtime there is no timer: it waits for the refresh to end, which its own budget bounds.
    pub(crate) async fn wait_for_fresh(self: &Arc<Self>, max_wait: Duration) -> Snapshot {
        self.waits.fetch_add(1, Ordering::Relaxed);
        let mut done = self.completed.subscribe();
        let timed = tokio::runtime::Handle::try_current().is_ok();
        let deadline = later(Instant::now(), max_wait);
        loop {
            let now = Instant::now();
            let (snap, wait) = match self.current.load_full() {
                current if now < current.check_at => return Snapshot(current),
                _ => self.due(now),
            };
            if !wait {
                return snap;
            }
            let ended = if timed {
                tokio::time::timeout_at(deadline, done.changed()).await.is_ok()
            } else {
                done.changed().await.is_ok()
            };
            if !ended {
                tracing::warn!(?max_wait, "refresh of values past their maximum staleness did not finish in time; serving the last values");
                return snap;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Units> {
        self.units.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fetches `key`'s item now, at once (no spreading), superseding a background refresh of it
    /// under way. Joins a forced refresh of it that is under way; returns the current snapshot
    /// without a call if one started less than the configured interval ago. Needs no timer of its own (the refresh has its budget), so it can be awaited from
    /// any executor once `load()` has run on a tokio runtime.
    pub(crate) async fn refresh_now(self: &Arc<Self>, key: &str) -> Result<Snapshot, Error> {
        let current = self.current.load_full();
        let Some(index) = current.values.get(key).map(|s| s.unit) else {
            return Err(match current.sealed {
                true => Error::DroppedForSnapshot { key: key.to_owned() },
                false => Error::MissingKey { key: key.to_owned() },
            });
        };
        let mut done = self.completed.subscribe();
        let generation = {
            let mut units = self.lock();
            if units.sealed {
                // Dropped for a SnapStart snapshot since `current` was read: nothing is fetched
                // before the restore (it would put a value in the snapshot).
                return Err(Error::DroppedForSnapshot { key: key.to_owned() });
            }
            let now = Instant::now();
            let unit = &units.list[index];
            let forced = unit
                .forced_at
                .filter(|(_, generation)| unit.refreshing().is_some_and(|r| r.generation == *generation));
            let recent = unit
                .forced_at
                .filter(|(at, _)| now.saturating_duration_since(*at) < self.config.refresh_now_interval);
            match (forced, recent) {
                // A forced refresh is under way: join it (whatever the interval).
                (Some((_, generation)), _) => generation,
                (None, Some(_)) => {
                    tracing::debug!(
                        key,
                        "refresh_now: forced refresh too recent; serving the current value"
                    );
                    return Ok(self.current());
                }
                (None, None) => {
                    let (generation, task) = self.begin(&mut units, vec![index], now, Duration::ZERO, true);
                    units.list[index].forced_at = Some((now, generation));
                    drop(units);
                    self.spawn(task);
                    generation
                }
            }
        };
        loop {
            {
                let units = self.lock();
                let unit = &units.list[index];
                let (finished, error) = &unit.finished;
                if *finished >= generation {
                    return match error {
                        None => Ok(self.current()),
                        Some(e) => Err(Error::Load {
                            failures: unit.failures(e),
                        }),
                    };
                }
                if unit.refreshing().is_none_or(|r| r.generation != generation) {
                    // Superseded without finishing: the values were dropped for a SnapStart
                    // snapshot (and maybe loaded again since).
                    return match units.sealed {
                        true => Err(Error::DroppedForSnapshot { key: key.to_owned() }),
                        false => Ok(self.current()),
                    };
                }
            }
            if done.changed().await.is_err() {
                return Ok(self.current()); // the store is gone; cannot happen while `self` lives
            }
        }
    }

    /// Publishes a snapshot with the units' values.
    fn publish(&self, units: &Units, now: Instant) {
        let mut duplicates = Vec::new();
        let data = publish::build(&units.list, now, units.sealed, &mut duplicates);
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

    /// Publishes the current values with the units' timing.
    fn retime(&self, units: &[Unit], now: Instant) {
        let data = publish::retime(&self.current.load(), units, now);
        self.current.store(Arc::new(data));
    }
}

/// What a cold load (`load`, or the reload after a SnapStart restore) fetches: every unit's item.
fn cold_targets(units: &[Unit]) -> Vec<refresh::Target> {
    units
        .iter()
        .map(|u| (u.source.clone(), u.item.clone(), None))
        .collect()
}

/// The calls of a cold load: counted, retried, rate-limited, until `deadline`.
fn cold_context(calls: &Arc<CallStats>, config: &Config, deadline: Instant) -> CallContext {
    CallContext::new(calls.clone(), config.retry, Some(config.limits.clone()), deadline)
}

/// Lands the answers of a cold load (`load`, or the reload after a SnapStart restore) in the units:
/// every unit's values arrived `now`, read by the load that started at `started`; its first refresh
/// is placed at one random phase of its TTL drawn for this load. Returns one failure per key that
/// could not be loaded.
fn loaded(
    units: &mut [Unit],
    results: Vec<refresh::Answer>,
    started: Instant,
    now: Instant,
    config: &Config,
) -> Vec<crate::error::Failure> {
    // One random phase per container: its values stay due together.
    let factor =
        crate::schedule::next_refresh(Duration::from_secs(1), config.jitter, true, crate::random::f64())
            .as_secs_f64();
    let mut failures = Vec::new();
    for (unit, result) in units.iter_mut().zip(results) {
        let bound = match result {
            Ok(Ok(Refreshed::Changed(fetched))) => unit.bind(fetched),
            Ok(Ok(Refreshed::Unchanged { .. })) => Err(unit.failures(&ItemError::NotFound)),
            Ok(Err(e)) => Err(unit.failures(&e)),
            Err(lost) => Err(unit.failures(&ItemError::Source(lost.into()))),
        };
        match bound {
            Ok(bound) => unit.loaded(bound, started, now, factor, config),
            Err(f) => failures.extend(f),
        }
    }
    failures
}

#[cfg(test)]
mod tests;
