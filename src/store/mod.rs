//! The store of declared values: one [`Entry`] per distinct source item, loaded at INIT,
//! refreshed by invocations, published as immutable [`Snapshot`]s.
//!
//! | file | what |
//! |---|---|
//! | `config.rs` | the settings of declared values |
//! | `plan.rs` | declarations merged into entries |
//! | `entry.rs` | one source item, its keys, values and freshness |
//! | `refresh.rs` | what is refreshed together, the refresh task, and how it ends |
//! | `refresh_now.rs` | a forced refresh of one key |
//! | `publish.rs` | the snapshot invocations read |
//! | `restore.rs` | dropping the values for a SnapStart snapshot, loading them after a restore |
//!
//! Invocations never lock anything on the warm path: they load the current snapshot (one atomic
//! load) and compare one instant with `check_at`. Only when something is due do they take the
//! lock, move the due entries to `Refreshing` (so later invocations don't), publish a snapshot
//! with the next check instant, and spawn the refresh. Lambda freezes the process between
//! invocations, so nothing here relies on a timer: every refresh is started by an invocation.

mod config;
mod entry;
mod plan;
mod publish;
mod refresh;
mod refresh_now;
mod restore;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;

pub(crate) use config::Config;
use entry::Entry;

use crate::call::{CallContext, CallStats};
use crate::error::{Error, Failure, ItemError};
use crate::freshness::fetch::{Answer, FetchTarget};
use crate::freshness::seal::Seal;
use crate::freshness::spawn::Spawner;
use crate::snapshot::{Snapshot, SnapshotData};
use crate::source::{Declaration, Refreshed};
use crate::stats::Stats;
use crate::telemetry::{self, Cache};
use crate::time::later;

/// The entries, and the last refresh generation handed out.
pub(crate) struct Entries {
    list: Vec<Entry>,
    generation: u64,
    /// The values were dropped for a SnapStart snapshot ([`Store::seal`]) and not loaded since.
    sealed: bool,
}

/// What a read found: the snapshot, and whether some value in it is past its maximum staleness
/// while its refresh runs (the reader should then wait, at most `max_wait`).
pub(crate) struct Read {
    pub(crate) snapshot: Snapshot,
    pub(crate) must_wait: bool,
}

pub(crate) struct Store {
    config: Config,
    calls: Arc<CallStats>,
    refreshes: AtomicU64,
    refresh_failures: AtomicU64,
    /// Reads that found a value due (served it while its refresh ran, or waited).
    misses: AtomicU64,
    /// Reads that waited for values past their maximum staleness.
    waits: AtomicU64,
    /// Reads that found nothing due, as a metric (registered at load).
    hits: telemetry::Hits,
    current: ArcSwap<SnapshotData>,
    entries: Mutex<Entries>,
    /// Bumped each time a refresh lands or ends (however it ends); waiters watch it.
    completed: watch::Sender<u64>,
    /// Keys already warned about (produced twice), so the warning is logged once.
    warned: Mutex<Vec<String>>,
    /// Held through a reload after a SnapStart restore: two reloads do not interleave.
    restoring: tokio::sync::Mutex<()>,
    /// Values dropped for a SnapStart snapshot: refreshes under way stop.
    seal: Seal,
    spawner: Spawner,
}

impl Store {
    /// Validates the settings and declarations, fetches everything once (all sources
    /// concurrently) and publishes the first snapshot. Fails with every failing key listed.
    pub(crate) async fn load(config: Config, decls: Vec<Declaration>) -> Result<Arc<Store>, Error> {
        let started = Instant::now();
        let mut entries = plan::plan(&config, decls, started)?;
        telemetry::describe();
        let calls = Arc::new(CallStats::of(Cache::Declared));
        let ctx = cold_context(&calls, &config, later(started, config.load_timeout));
        let span = tracing::info_span!("lambda_secrets.load", cache = "declared", sources = entries.len());
        let answers = tracing::Instrument::instrument(
            crate::freshness::fetch::fetch_all(
                &cold_targets(&entries),
                &ctx,
                crate::freshness::fetch::Mode::Load,
            ),
            span,
        )
        .await;
        let now = Instant::now();
        let failures = land_cold_load(&mut entries, answers, started, now, &config);
        if !failures.is_empty() {
            count_load_failures(&failures);
            return Err(Error::Load { failures });
        }
        let (data, duplicates) = publish::build(&entries, now, false);
        tracing::info!(
            values = data.values.len(),
            sources = entries.len(),
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
            hits: telemetry::Hits::register(Cache::Declared),
            current: ArcSwap::from_pointee(data),
            entries: Mutex::new(Entries {
                list: entries,
                generation: 0,
                sealed: false,
            }),
            completed: watch::Sender::new(0),
            warned: Mutex::new(Vec::new()),
            restoring: tokio::sync::Mutex::new(()),
            seal: Seal::default(),
            spawner: Spawner::here(),
        });
        // A new parameter under a declared path with a declared key's name is a warning, as it
        // is at every refresh: it never fails a cold start.
        store.warn_duplicates(duplicates);
        record_oldest_age(&store.lock(), now);
        store.emit_stats();
        Ok(store)
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut stats = self.calls.stats();
        stats.refreshes = self.refreshes.load(Ordering::Relaxed);
        stats.refresh_failures = self.refresh_failures.load(Ordering::Relaxed);
        stats.misses = self.misses.load(Ordering::Relaxed);
        stats.waits = self.waits.load(Ordering::Relaxed);
        stats
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

    /// The current snapshot, and whether the reader must wait. Starts the refresh of due values
    /// off the request path.
    #[inline]
    pub(crate) fn read(self: &Arc<Self>) -> Read {
        let snap = self.current.load_full();
        let now = Instant::now();
        if now < snap.check_at {
            // A metric only (a handle doing nothing without a recorder): `Stats` counts no hits.
            self.hits.hit();
            return Read {
                snapshot: Snapshot(snap),
                must_wait: false,
            };
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        telemetry::miss(Cache::Declared);
        self.due(now)
    }

    /// Starts what is due and tells whether the caller must wait.
    fn due(self: &Arc<Self>, now: Instant) -> Read {
        self.start_due_refreshes(now);
        let snap = self.current.load_full();
        let must_wait = now >= snap.stale_at;
        Read {
            snapshot: Snapshot(snap),
            must_wait,
        }
    }

    /// The current snapshot, after waiting (at most `max_wait`) for the refresh of values past
    /// their maximum staleness. Counts one miss and one wait per read, however long it waits.
    pub(crate) async fn fresh_snapshot(self: &Arc<Self>, max_wait: Duration) -> Snapshot {
        let read = self.read();
        if !read.must_wait {
            return read.snapshot;
        }
        self.wait_for_fresh(max_wait).await
    }

    /// For a read told to wait (its miss is counted): waits at most `max_wait` for the refresh of
    /// values past their maximum staleness. Those not refreshed by then read as
    /// [`Error::Expired`]: a value past its maximum staleness is never served. Outside a tokio
    /// runtime there is no timer: it waits for the refresh to end, which its own budget bounds.
    pub(crate) async fn wait_for_fresh(self: &Arc<Self>, max_wait: Duration) -> Snapshot {
        self.waits.fetch_add(1, Ordering::Relaxed);
        telemetry::wait(Cache::Declared);
        let mut done = self.completed.subscribe();
        let timed = tokio::runtime::Handle::try_current().is_ok();
        let deadline = later(Instant::now(), max_wait);
        loop {
            let now = Instant::now();
            let read = match self.current.load_full() {
                current if now < current.check_at => return Snapshot(current),
                _ => self.due(now),
            };
            if !read.must_wait {
                return read.snapshot;
            }
            let ended = if timed {
                tokio::time::timeout_at(deadline, done.changed()).await.is_ok()
            } else {
                done.changed().await.is_ok()
            };
            if !ended {
                tracing::debug!(?max_wait, "the refresh of values past their maximum staleness did not land in time; they read as expired");
                if max_wait < self.config().max_wait {
                    // A read with less time (an invocation near its own deadline) does not
                    // decide for the others: they still wait for the refresh.
                    return self.current();
                }
                return self.waited_out(Instant::now());
            }
        }
    }

    /// A read waited `max_wait` in vain for the refreshes of values past their maximum staleness:
    /// later reads do not wait for these refreshes (they get the same answer, `Error::Expired`, at
    /// once), and the refreshes end as lost after their grace, to be retried. Returns the snapshot
    /// to serve.
    fn waited_out(self: &Arc<Self>, now: Instant) -> Snapshot {
        let mut entries = self.lock();
        for entry in &mut entries.list {
            let f = &mut entry.freshness;
            if f.refreshing().is_some() && f.stale_at() <= now {
                f.waited_out();
            }
        }
        self.publish(&entries, now);
        drop(entries);
        self.current()
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a snapshot of the entries' values as of `now`.
    fn publish(&self, entries: &Entries, now: Instant) {
        record_oldest_age(entries, now);
        let before = self.current.load().unserved;
        let (data, duplicates) = publish::build(&entries.list, now, entries.sealed);
        if data.unserved > before {
            let keys: Vec<&str> = entries
                .list
                .iter()
                .filter(|e| e.freshness.unserved_cause(now).is_some())
                .flat_map(Entry::key_list)
                .take(10)
                .collect();
            tracing::warn!(
                values = data.unserved,
                ?keys,
                "lambda-secrets: values past their maximum staleness are not served until a refresh replaces them (reads give Error::Expired)"
            );
        }
        self.warn_duplicates(duplicates);
        self.current.store(Arc::new(data));
    }

    /// Publishes the current values with the entries' timing (a refresh started), or a new
    /// snapshot if a value became unserved meanwhile.
    fn retime(&self, entries: &Entries, now: Instant) {
        match publish::retime(&self.current.load(), &entries.list, now) {
            Some(data) => self.current.store(Arc::new(data)),
            None => self.publish(entries, now),
        }
    }

    /// One warning per key produced twice (the explicit declaration, or the first path, wins).
    fn warn_duplicates(&self, duplicates: Vec<publish::Duplicate>) {
        if duplicates.is_empty() {
            return;
        }
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        for (key, kept, ignored) in duplicates {
            if !warned.contains(&key) {
                tracing::warn!(
                    key,
                    kept,
                    ignored,
                    "lambda-secrets: key produced twice; the explicitly declared (or first) one is kept"
                );
                warned.push(key);
            }
        }
    }
}

/// What a cold load (`load`, or the reload after a SnapStart restore) fetches: every entry's item.
fn cold_targets(entries: &[Entry]) -> Vec<FetchTarget> {
    entries
        .iter()
        .map(|e| FetchTarget {
            source: e.source.clone(),
            item: e.item.clone(),
            version: None,
        })
        .collect()
}

/// The calls of a cold load: counted, retried, rate-limited, until `deadline`.
fn cold_context(calls: &Arc<CallStats>, config: &Config, deadline: Instant) -> CallContext {
    CallContext::new(
        calls.clone(),
        config.freshness.retry,
        Some(config.freshness.limits.clone()),
        deadline,
    )
}

/// Lands the answers of a cold load (`load`, or the reload after a SnapStart restore) in the
/// entries: every entry's values arrived `now`, read by the load that started at `started`; its
/// first refresh is placed at one random phase of its TTL drawn for this load. Returns one
/// failure per key that could not be loaded.
fn land_cold_load(
    entries: &mut [Entry],
    answers: Vec<Answer>,
    started: Instant,
    now: Instant,
    config: &Config,
) -> Vec<Failure> {
    // One random phase per container: its values stay due together.
    let phase = crate::time::schedule::next_refresh(
        Duration::from_secs(1),
        config.freshness.jitter,
        true,
        crate::random::f64(),
    )
    .as_secs_f64();
    let mut failures = Vec::new();
    for (entry, answer) in entries.iter_mut().zip(answers) {
        let bound = match answer.into_result() {
            Ok(Refreshed::Changed(fetched)) => entry.bind(fetched, now),
            Ok(Refreshed::Unchanged { .. }) => Err(entry.failures(&ItemError::NotFound)),
            Err(e) => Err(entry.failures(&e)),
        };
        match bound {
            Ok(bound) => entry.loaded(bound, started, now, phase, &config.freshness),
            Err(f) => failures.extend(f),
        }
    }
    failures
}

#[cfg(test)]
mod tests;

/// Counts the values a load could not load, by source kind (a metric).
pub(crate) fn count_load_failures(failures: &[crate::error::Failure]) {
    let mut by_kind: Vec<(&'static str, u64)> = Vec::new();
    for f in failures {
        match by_kind.iter_mut().find(|(k, _)| *k == f.source) {
            Some((_, n)) => *n += 1,
            None => by_kind.push((f.source, 1)),
        }
    }
    for (kind, n) in by_kind {
        telemetry::load_failures(Cache::Declared, kind, n);
    }
}

/// Sets the age of the oldest value served (a metric), when there is one.
pub(super) fn record_oldest_age(entries: &Entries, now: Instant) {
    if entries.sealed {
        return;
    }
    let oldest = entries
        .list
        .iter()
        .filter(|e| !e.values.is_empty() && e.freshness.unserved_cause(now).is_none())
        .map(|e| e.freshness.fetched_at())
        .min();
    if let Some(oldest) = oldest {
        telemetry::oldest_age(now.saturating_duration_since(oldest));
    }
}
