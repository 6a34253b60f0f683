//! A hit: its answer, and, past the value's TTL, one background refresh (coalesced with the other
//! refreshes of the moment), landed through the value's state machine: a new or confirmed value
//! replaces the entry it refreshed, a failure backs off and keeps the value.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::time::Instant;

use super::entry::{Entry, Found};
use super::lookup::{bind_found, entry_result};
use super::Inner;
use crate::call::Urgency;
use crate::error::{Error, ItemError};
use crate::freshness::dates::Dates;
use crate::freshness::fetch::{Answer, FetchTarget, Mode, GRACE};
use crate::freshness::spawn::{awaiting, Beating};
use crate::freshness::state::{Outcome, Started, Transition, LOST_NEVER_RAN, LOST_NO_RUNTIME};
use crate::snapshot::ValueInfo;
use crate::time::{later, never};
use crate::value::SecretValue;

/// At most one warning of failed refreshes per cache in this long.
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Rate-limits a cache's warnings of failed refreshes, counting the failures it does not log at
/// warning level, so that every one is reported (as a count) by the next warning.
#[derive(Default)]
pub(super) struct Warnings {
    last: std::sync::Mutex<Option<Instant>>,
    held_back: std::sync::atomic::AtomicU64,
}

impl Warnings {
    /// For a failed refresh (`news`: the first of a streak, or a new cause): `Some(failures not
    /// logged at warning level since the last warning)` when it is to be logged as a warning now:
    /// news, or a repeat once some failure went unlogged, at most once every [`WARN_EVERY`].
    /// Otherwise it is counted for the next warning.
    fn note(&self, news: bool) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let quiet = last.is_some_and(|at| now.saturating_duration_since(at) < WARN_EVERY);
        if quiet || !(news || self.held_back.load(Ordering::Relaxed) > 0) {
            if quiet || news {
                self.held_back.fetch_add(1, Ordering::Relaxed);
            }
            return None;
        }
        *last = Some(now);
        Some(self.held_back.swap(0, Ordering::Relaxed))
    }
}

impl Inner {
    /// The answer of a cached entry, starting its refresh when due; `None` when it must be fetched
    /// again first (a value past its maximum staleness, a negative answer past its TTL).
    pub(super) fn answer(
        self: &Arc<Self>,
        name: &str,
        entry: &Entry,
        now: Instant,
    ) -> Option<Result<(SecretValue, Arc<ValueInfo>), Error>> {
        let age = now.saturating_duration_since(entry.0.fetched_at);
        match &entry.0.answer {
            Err(_) if age < self.settings.negative_ttl => Some(entry_result(name, entry)),
            Err(_) => None,
            // Past its maximum staleness, or past its expiry (a token): fetched again first.
            Ok(_) if now >= entry.0.stale_at => None,
            Ok(_) => {
                if now >= entry.due() {
                    self.refresh_if_due(name, entry, now);
                }
                Some(entry_result(name, entry))
            }
        }
    }

    /// Starts the refresh of `entry` if it is due (single flight: its state says whether one is
    /// under way), or ends one whose task will never run.
    fn refresh_if_due(self: &Arc<Self>, name: &str, entry: &Entry, now: Instant) {
        let Some(mut freshness) = entry.freshness() else {
            return;
        };
        if let Some(generation) = freshness.never_ran(now) {
            let last = freshness.last_error().cloned();
            let random = crate::random::f64();
            let outcome = Outcome::<Arc<Found>>::Lost(LOST_NEVER_RAN);
            if let Some(transition) =
                freshness.finish(generation, outcome, now, &self.settings.freshness, random)
            {
                self.failed(name, entry, transition, last.as_ref());
            }
        }
        if !freshness.is_due(now) {
            entry.due_at(
                freshness
                    .due_at()
                    .or_else(|| freshness.watch_at(GRACE))
                    .unwrap_or_else(|| never(now)),
            );
            return;
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        // Someone is reading it: an on-demand refresh is never spread.
        let deadline = later(now, self.settings.freshness.timeout);
        let started = Started::new(generation, now, deadline, Arc::new(Urgency::urgent()));
        freshness.start(&started, now);
        entry.due_at(freshness.watch_at(GRACE).unwrap_or(deadline));
        drop(freshness);
        self.spawn_refresh(name.to_owned(), entry, started);
    }

    /// Refreshes `entry` in the background. The task does not keep the entry (nor its value)
    /// alive: an entry evicted or dropped for a SnapStart snapshot meanwhile is not refreshed into
    /// the cache again.
    fn spawn_refresh(self: &Arc<Self>, name: String, entry: &Entry, started: Started) {
        let Ok(found) = &entry.0.answer else { return };
        let target = FetchTarget {
            source: found.spec.source.clone(),
            item: found.spec.item.clone(),
            version: found.info.version.clone(),
        };
        let refreshed = Arc::downgrade(&entry.0);
        let inner = self.clone();
        let (generation, epoch, live) = (started.generation, self.seal.epoch(), self.seal.task());
        let (task_name, deadline) = (name.clone(), started.deadline.clone());
        let task = async move {
            let name = task_name;
            let _live = live;
            // The batch fetches on a task of its own: this one wakes meanwhile, so that the
            // watchdog sees it live and a freeze is given back to its budget.
            let answer = awaiting(inner.batcher.fetch(target, Mode::Refresh, epoch), &deadline).await;
            let Some(entry) = refreshed.upgrade().map(Entry) else {
                return; // no longer cached: the answer is dropped (its value zeroized)
            };
            if inner.seal.epoch() != epoch {
                return; // dropped for a SnapStart snapshot meanwhile
            }
            inner.land(&name, &entry, generation, answer).await;
        };
        // A refresh of its own, off the request path: not a child of the invocation that found
        // the value due (it outlives it), but following from it.
        let span =
            tracing::info_span!(parent: None, "lambda_secrets.refresh", cache = "on-demand", items = 1);
        span.follows_from(tracing::Span::current());
        let task = tracing::Instrument::instrument(task, span);
        if !self.spawner.spawn(Beating::new(task, started.heartbeat.clone())) {
            let Some(mut freshness) = entry.freshness() else {
                return;
            };
            let last = freshness.last_error().cloned();
            let outcome = Outcome::<Arc<Found>>::Lost(LOST_NO_RUNTIME);
            let (now, random) = (Instant::now(), crate::random::f64());
            if let Some(transition) =
                freshness.finish(generation, outcome, now, &self.settings.freshness, random)
            {
                self.failed(&name, entry, transition, last.as_ref());
            }
        }
    }

    /// Lands a refresh's answer: a new or confirmed value replaces the entry (if it is still the
    /// one cached); a failure keeps it, backing off.
    async fn land(&self, name: &str, entry: &Entry, generation: u64, answer: Answer) {
        let now = Instant::now();
        let random = crate::random::f64();
        let Ok(found) = &entry.0.answer else { return };
        let fresh = {
            let Some(mut freshness) = entry.freshness() else {
                return;
            };
            let last = freshness.last_error().cloned();
            let outcome = answer.outcome(|fetched| {
                let new = bind_found(&found.spec, name, fetched, now)?;
                let timing = Dates::of_info(&new.info);
                Ok((Arc::new(new), timing))
            });
            let confirmed = match &outcome {
                Outcome::Unchanged { refresh_by } => Some(*refresh_by),
                _ => None,
            };
            match freshness.finish(generation, outcome, now, &self.settings.freshness, random) {
                None => return,
                Some(Transition::Refreshed(new)) => {
                    self.refreshes.fetch_add(1, Ordering::Relaxed);
                    let new = match new {
                        Some(new) => new,
                        // Confirmed: the same value, unless a seal took it meanwhile.
                        None => match found.value() {
                            Some(value) => Arc::new(Found::new(
                                found.spec.clone(),
                                value,
                                Arc::new(found.info.confirmed(confirmed.flatten(), now)),
                            )),
                            None => return,
                        },
                    };
                    if last.is_some() {
                        tracing::info!(name, "lambda-secrets on-demand refresh succeeded again");
                    }
                    Entry::found(new, freshness.clone())
                }
                Some(transition) => {
                    self.failed(name, entry, transition, last.as_ref());
                    return;
                }
            }
        };
        // Only over the entry it refreshed: not over a newer answer, nor back after an eviction.
        self.replace(name, entry, Some(fresh)).await;
        // A value that grew is weighed again: the bounds hold after it too.
        self.cache.run_pending_tasks().await;
    }

    /// A failed refresh: counted, the entry due again after its backoff, and a warning for the
    /// first failure of a streak or a new cause (`last`: the streak's cause before this one).
    fn failed(
        &self,
        name: &str,
        entry: &Entry,
        transition: Transition<Arc<Found>>,
        last: Option<&ItemError>,
    ) {
        let Transition::Failed {
            failures,
            retry_in,
            error,
            ..
        } = transition
        else {
            return;
        };
        self.refresh_failures.fetch_add(1, Ordering::Relaxed);
        entry.due_at(later(Instant::now(), retry_in));
        let (source, id) = match &entry.0.answer {
            Ok(found) => (found.spec.source.kind(), found.spec.item.to_string()),
            Err(f) => (f.source, f.id.clone()),
        };
        crate::telemetry::refresh_failure(crate::telemetry::Cache::OnDemand, source);
        // A streak starting or a new cause is a warning, at most one per cache every few seconds
        // (an outage across thousands of names is one line every few seconds, counting the failed
        // refreshes it did not log).
        match self.warnings.note(last != Some(&error)) {
            Some(others) => tracing::warn!(
                name,
                source,
                id = %id,
                %error,
                failures,
                retry_in_ms = retry_in.as_millis() as u64,
                failed_refreshes_not_logged_since_last_warning = others,
                "lambda-secrets on-demand refresh failed; serving the last good value"
            ),
            None => tracing::debug!(name, %error, failures, "lambda-secrets on-demand refresh failed"),
        }
    }
}
