//! Refresh execution: choosing what to refresh together, running the refresh on a task within
//! its budget, landing each source's answers as soon as they are in, and ending every entry
//! through its state machine however the refresh ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{select, Either};
use futures_util::StreamExt;
use tokio::time::Instant;

use super::{Entries, Store};
use crate::call::{CallContext, Urgency};
use crate::error::ItemError;
use crate::freshness::fetch::{fetch_groups, FetchTarget, Landed, Mode};
use crate::freshness::seal::{sealed, TaskGuard};
use crate::freshness::spawn::Beating;
use crate::freshness::state::{Outcome, Started, Transition, LOST_NEVER_RAN, LOST_NO_RUNTIME};
use crate::time::later;
use crate::time::schedule;

const LOST_EARLY: &str = "the refresh task ended early (it panicked or its runtime was dropped)";

/// Keys named in one log line, at most.
const KEYS_LOGGED: usize = 10;

impl Store {
    /// Starts the refresh of everything due at `now` (off the warm path: an invocation found
    /// `check_at` passed), hurries the refreshes that waiting invocations need, ends the refreshes
    /// whose task will never run, and publishes values that became unserved.
    pub(super) fn start_due_refreshes(self: &Arc<Self>, now: Instant) {
        let mut entries = self.lock();
        // A read that found a value due: the one kind that can serve a value older than its TTL.
        super::record_oldest_age(&entries, now);
        let mut ended = Vec::new();
        for (i, entry) in entries.list.iter_mut().enumerate() {
            if let Some(r) = entry.freshness.refreshing() {
                if !entry.freshness.is_expired() && entry.freshness.stale_at() <= now {
                    r.urgency.hurry();
                }
            }
            if let Some(generation) = entry.freshness.never_ran(now) {
                let (settings, random) = (&self.config.freshness, crate::random::f64());
                let lost = Outcome::Lost(LOST_NEVER_RAN);
                if let Some(t) = entry.finish(generation, lost, now, settings, random) {
                    ended.push((i, t));
                }
            }
        }
        if !ended.is_empty() {
            self.record(&mut entries, ended);
            self.publish(&entries, now);
            self.completed.send_modify(|n| *n += 1);
        }
        let due: Vec<usize> = (0..entries.list.len())
            .filter(|&i| entries.list[i].freshness.is_due(now))
            .collect();
        if due.is_empty() {
            // Something was due to be checked: a value reaching its maximum staleness, a watchdog.
            self.retime(&entries, now);
            return;
        }
        // Values that failed or are past their maximum staleness are fetched at once (someone may
        // be waiting; recovery after an outage is not spread), apart from the healthy ones, which
        // keep their spread.
        let urgent_now = |e: &super::Entry| e.freshness.is_failing() || e.freshness.stale_at() <= now;
        let (urgent, healthy): (Vec<usize>, Vec<usize>) =
            due.into_iter().partition(|&i| urgent_now(&entries.list[i]));
        let mut tasks = Vec::new();
        if !urgent.is_empty() {
            tasks.push(self.begin(&mut entries, urgent, now, Duration::ZERO, true));
        }
        if let Some(shortest) = healthy.iter().map(|&i| entries.list[i].freshness.ttl()).min() {
            // Refresh together every healthy value due within the jitter of the shortest due TTL,
            // so that a container's values keep being fetched in few batched calls instead of
            // drifting apart (a long-TTL value is not refreshed early because a short one is due).
            let horizon = later(
                now,
                schedule::batch_window(shortest, self.config.freshness.jitter),
            );
            let batch: Vec<usize> = (0..entries.list.len())
                .filter(|&i| {
                    let e = &entries.list[i];
                    healthy.contains(&i)
                        || (!e.freshness.is_failing()
                            && !urgent_now(e)
                            && e.freshness.due_at().is_some_and(|d| d <= horizon))
                })
                .collect();
            let shortest = batch
                .iter()
                .map(|&i| entries.list[i].freshness.ttl())
                .min()
                .unwrap_or(shortest);
            // Never spread past half the time left before a value of the batch goes stale (a
            // maximum staleness set close to the TTL), so that nobody waits for a spread call.
            let room = batch
                .iter()
                .map(|&i| {
                    entries.list[i]
                        .freshness
                        .stale_at()
                        .saturating_duration_since(now)
                })
                .min()
                .unwrap_or_default();
            let window = schedule::spread_window(shortest, self.config.spread).min(room / 2);
            tasks.push(self.begin(&mut entries, batch, now, window, false));
        }
        drop(entries);
        for task in tasks {
            self.spawn(task);
        }
    }

    /// Moves `batch` to `Refreshing` under a new generation and returns its refresh, ready to
    /// spawn, with the guard that ends it if its task is lost (made under the same lock, so no
    /// entry can be left `Refreshing` without one).
    pub(super) fn begin(
        self: &Arc<Self>,
        entries: &mut Entries,
        batch: Vec<usize>,
        now: Instant,
        window: Duration,
        urgent: bool,
    ) -> Refresh {
        entries.generation += 1;
        let generation = entries.generation;
        let urgency = Arc::new(if urgent {
            Urgency::urgent()
        } else {
            Urgency::default()
        });
        // The budget starts after the spread window: every call gets a real attempt.
        let deadline = later(now, window + self.config.freshness.timeout);
        let started = Started::new(generation, now, deadline, urgency);
        for &i in &batch {
            entries.list[i].freshness.start(&started, now);
        }
        let guard = RefreshGuard {
            store: self.clone(),
            pending: batch.clone(),
            generation,
            _task: self.seal.task(),
        };
        self.retime(entries, now);
        Refresh {
            store: self.clone(),
            guard,
            batch,
            window,
            started,
            epoch: self.seal.subscribe(),
        }
    }

    /// Runs a refresh in the background (see `freshness/spawn.rs`). Without a runtime to run it,
    /// it is dropped, and its guard ends it as lost, with a backoff.
    pub(super) fn spawn(&self, refresh: Refresh) {
        let heartbeat = refresh.started.heartbeat.clone();
        // A refresh of its own, off the request path: not a child of the invocation that found
        // the values due (it outlives it), but following from it.
        let span = tracing::info_span!(
            parent: None,
            "lambda_secrets.refresh",
            cache = "declared",
            items = refresh.batch.len(),
            urgent = refresh.started.urgency.is_urgent()
        );
        span.follows_from(tracing::Span::current());
        let run = tracing::Instrument::instrument(refresh.run(), span);
        if !self.spawner.spawn(Beating::new(run, heartbeat)) {
            static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "lambda-secrets: values are due for refresh but no tokio runtime is running here; they are not refreshed ({LOST_NO_RUNTIME})"
                );
            }
        }
    }

    /// Counts and logs how entries' refreshes ended: one line per landing that failed (how many,
    /// which keys, why), and one per key whose cause of failure changed.
    pub(super) fn record(&self, entries: &mut Entries, ended: Vec<(usize, Transition<()>)>) {
        let mut failed: Vec<(usize, ItemError, bool, Duration, u32)> = Vec::new();
        for (i, transition) in ended {
            let entry = &mut entries.list[i];
            match transition {
                Transition::Refreshed(_) => {
                    self.refreshes.fetch_add(1, Ordering::Relaxed);
                    entry.failing_with = None;
                }
                Transition::Failed {
                    failures,
                    retry_in,
                    expired,
                    error,
                } => {
                    self.refresh_failures.fetch_add(1, Ordering::Relaxed);
                    crate::telemetry::refresh_failure(crate::telemetry::Cache::Declared, entry.source.kind());
                    if let Some(before) = entry.failing_with.as_ref().filter(|before| **before != error) {
                        tracing::warn!(
                            keys = ?entry.key_list(),
                            id = %entry.label(),
                            before = %before,
                            now = %error,
                            "lambda-secrets refresh: the cause of the failures changed"
                        );
                    }
                    entry.failing_with = Some(error.clone());
                    failed.push((i, error, expired, retry_in, failures));
                }
            }
        }
        if failed.is_empty() {
            return;
        }
        let mut causes: Vec<String> = Vec::new();
        for (_, error, _, _, _) in &failed {
            let cause = error.to_string();
            if !causes.contains(&cause) {
                causes.push(cause);
            }
        }
        let keys: Vec<&str> = failed
            .iter()
            .flat_map(|(i, ..)| entries.list[*i].key_list())
            .take(KEYS_LOGGED)
            .collect();
        let expired = failed.iter().filter(|f| f.2).count();
        let retry_in = failed.iter().map(|f| f.3).min().unwrap_or_default();
        let failures = failed.iter().map(|f| f.4).max().unwrap_or_default();
        let message = if expired > 0 {
            "lambda-secrets refresh failed; values past their maximum staleness are no longer served (reads give Error::Expired), the others keep their last good value"
        } else {
            "lambda-secrets refresh failed; serving the last good values"
        };
        tracing::warn!(
            items = failed.len(),
            ?keys,
            causes = ?causes,
            failures_in_a_row = failures,
            retry_in_ms = retry_in.as_millis() as u64,
            past_max_staleness = expired,
            "{message}"
        );
    }
}

/// A refresh begun and not yet run: its entries, budget and guard.
pub(super) struct Refresh {
    store: Arc<Store>,
    guard: RefreshGuard,
    batch: Vec<usize>,
    window: Duration,
    started: Started,
    /// The seal epoch, watched from before the entries were read.
    epoch: tokio::sync::watch::Receiver<u64>,
}

impl Refresh {
    /// The refresh `generation`, when spawned by `refresh_now`.
    pub(super) fn generation(&self) -> u64 {
        self.started.generation
    }

    async fn run(mut self) {
        let store = self.store.clone();
        // Values dropped for a SnapStart snapshot end the refresh where it is: its calls would only
        // bring into memory answers the snapshot would hold (the restore loads everything again).
        // Its guard ends it, which changes nothing in sealed entries.
        let targets: Vec<FetchTarget> = {
            let entries = store.lock();
            // Sealed since it began (and maybe loaded again since): nothing to fetch.
            if entries.sealed || self.epoch.has_changed().unwrap_or(true) {
                return;
            }
            self.batch
                .iter()
                .map(|&i| {
                    let e = &entries.list[i];
                    FetchTarget {
                        source: e.source.clone(),
                        item: e.item.clone(),
                        version: e.version.clone(),
                    }
                })
                .collect()
        };
        let ctx = CallContext::with_deadline(
            store.calls.clone(),
            store.config.freshness.retry,
            Some(store.config.freshness.limits.clone()),
            self.started.deadline.clone(),
        )
        .spread(self.window, self.started.urgency.clone())
        .background()
        .forced(self.started.urgency.is_urgent());
        // One draw for the whole refresh (jitter of the next refresh, or backoff): values
        // refreshed together stay due together, in one batched refresh, instead of scattering.
        let random = crate::random::f64();
        let mut groups = fetch_groups(&targets, &ctx, Mode::Refresh);
        loop {
            let landed: Landed = match select(groups.next(), std::pin::pin!(sealed(&mut self.epoch))).await {
                Either::Left((Some(landed), _)) => landed,
                Either::Left((None, _)) => break,
                Either::Right(_) => return,
            };
            // Each source's values land as soon as its calls are done.
            let now = Instant::now();
            let mut entries = store.lock();
            let mut ended = Vec::new();
            for (t, answer) in landed {
                let i = self.batch[t];
                let entry = &mut entries.list[i];
                let outcome = entry.outcome(answer, now);
                if let Some(transition) = entry.finish(
                    self.guard.generation,
                    outcome,
                    now,
                    &store.config.freshness,
                    random,
                ) {
                    ended.push((i, transition));
                }
                self.guard.pending.retain(|&p| p != i);
            }
            store.record(&mut entries, ended);
            store.publish(&entries, now);
            drop(entries);
            store.completed.send_modify(|n| *n += 1);
        }
        store.emit_stats();
    }
}

/// Ends a refresh however its task ends: if the task is dropped before every entry landed (a
/// panic, its runtime dropped, never spawned), those entries end as lost, with a backoff. It also
/// counts the task as live for the seal (it may hold plaintext).
pub(super) struct RefreshGuard {
    store: Arc<Store>,
    pending: Vec<usize>,
    generation: u64,
    _task: TaskGuard,
}

impl Drop for RefreshGuard {
    fn drop(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        let random = crate::random::f64();
        let mut entries = self.store.lock();
        let mut ended = Vec::new();
        for &i in &self.pending {
            let outcome = Outcome::Lost(LOST_EARLY);
            if let Some(t) = entries.list[i].finish(
                self.generation,
                outcome,
                now,
                &self.store.config.freshness,
                random,
            ) {
                ended.push((i, t));
            }
        }
        if !ended.is_empty() {
            self.store.record(&mut entries, ended);
            self.store.publish(&entries, now);
        }
        drop(entries);
        self.store.completed.send_modify(|n| *n += 1);
    }
}
