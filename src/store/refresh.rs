//! Refresh execution: choosing what to refresh together, running the refresh on a task within
//! its budget, and ending it through the unit state machine however it ends.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures_util::future::{join_all, select, Either};
use futures_util::FutureExt;
use tokio::time::Instant;

use super::unit::{Finished, Outcome, Unit};
use super::{Store, Units};
use crate::call::{CallContext, Urgency};
use crate::error::ItemError;
use crate::schedule;
use crate::source::{AnyItem, DynSource, RefreshResult, Refreshed};
use crate::time::freeze::{sleep_until, FROZEN_SLACK};
use crate::time::later;

/// How long after its deadline a refresh is given up as lost (a source that does not go
/// through [`CallContext`] and hangs; calls that do are cut at the deadline).
const GRACE: Duration = Duration::from_secs(2);

const LOST_EARLY: &str = "the refresh task ended early (it panicked or its runtime was dropped)";
const LOST_PANICKED: &str = "the source panicked";
pub(super) const LOST_TIMED_OUT: &str = "the source did not answer within its budget";

impl Store {
    /// Starts the refresh of everything due at `now` (off the warm path: an invocation found
    /// `check_at` passed), and hurries the refreshes that waiting invocations need.
    pub(super) fn start_due_refreshes(self: &Arc<Self>, now: Instant) {
        let mut units = self.lock();
        for unit in &units.list {
            if let Some(r) = unit.refreshing() {
                if !unit.is_expired() && unit.stale_at() <= now {
                    r.urgency.hurry();
                }
            }
        }
        let due: Vec<usize> = (0..units.list.len())
            .filter(|&i| units.list[i].is_due(now))
            .collect();
        if due.is_empty() {
            return;
        }
        // Values that failed or are past their maximum staleness are fetched at once (someone may
        // be waiting; recovery after an outage is not spread), apart from the healthy ones, which
        // keep their spread.
        let urgent_now = |u: &Unit| u.is_failing() || u.stale_at() <= now;
        let (urgent, healthy): (Vec<usize>, Vec<usize>) =
            due.into_iter().partition(|&i| urgent_now(&units.list[i]));
        let mut tasks = Vec::new();
        if !urgent.is_empty() {
            tasks.push(self.begin(&mut units, urgent, now, Duration::ZERO, true).1);
        }
        if let Some(shortest) = healthy.iter().map(|&i| units.list[i].ttl).min() {
            // Refresh together every healthy value due within the jitter of the shortest due TTL,
            // so that a container's values keep being fetched in few batched calls instead of
            // drifting apart (a long-TTL value is not refreshed early because a short one is due).
            let horizon = later(now, schedule::batch_window(shortest, self.config.jitter));
            let batch: Vec<usize> = (0..units.list.len())
                .filter(|&i| {
                    let u = &units.list[i];
                    healthy.contains(&i)
                        || (!u.is_failing() && !urgent_now(u) && u.due_at().is_some_and(|d| d <= horizon))
                })
                .collect();
            let shortest = batch.iter().map(|&i| units.list[i].ttl).min().unwrap_or(shortest);
            // Never spread past half the time left before a value of the batch goes stale (a
            // maximum staleness set close to the TTL), so that nobody waits for a spread call.
            let room = batch
                .iter()
                .map(|&i| units.list[i].stale_at().saturating_duration_since(now))
                .min()
                .unwrap_or_default();
            let window = schedule::spread_window(shortest, self.config.spread).min(room / 2);
            tasks.push(self.begin(&mut units, batch, now, window, false).1);
        }
        drop(units);
        for task in tasks {
            self.spawn(task);
        }
    }

    /// Moves `batch` to `Refreshing` under a new generation and returns the task that ends it.
    /// The guard that ends the refresh if the task is lost exists before any unit moves.
    pub(super) fn begin(
        self: &Arc<Self>,
        units: &mut Units,
        batch: Vec<usize>,
        now: Instant,
        window: Duration,
        urgent: bool,
    ) -> (u64, impl Future<Output = ()> + Send + 'static) {
        units.generation += 1;
        let generation = units.generation;
        let urgency = Arc::new(if urgent {
            Urgency::urgent()
        } else {
            Urgency::default()
        });
        let guard = RefreshGuard {
            store: self.clone(),
            batch,
            generation,
            done: false,
        };
        for &i in &guard.batch {
            units.list[i].start(generation, now, urgency.clone());
        }
        self.retime(&units.list, now);
        (generation, self.clone().run(guard, window, urgency))
    }

    /// Runs a refresh on the runtime of the caller, or else the one `load()` ran on. Without
    /// either, the task is dropped, and its guard ends the refresh as lost (with a backoff).
    pub(super) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        match tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| self.runtime.clone())
        {
            Some(runtime) => drop(runtime.spawn(task)),
            None => {
                static WARNED: AtomicBool = AtomicBool::new(false);
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!("lambda-secrets: values are due for refresh but no tokio runtime is running here; they are not refreshed");
                }
                drop(task);
            }
        }
    }

    async fn run(self: Arc<Self>, mut guard: RefreshGuard, window: Duration, urgency: Arc<Urgency>) {
        // Values dropped for a SnapStart snapshot end the refresh where it is: its calls would only
        // bring into memory answers the snapshot would hold (the restore loads everything again).
        // Its guard ends it, which changes nothing in sealed units.
        let mut sealed = self.seals.subscribe();
        let targets: Vec<_> = {
            let units = self.lock();
            if units.sealed {
                return;
            }
            guard
                .batch
                .iter()
                .map(|&i| {
                    let u = &units.list[i];
                    (u.source.clone(), u.item.clone(), u.version.clone())
                })
                .collect()
        };
        // The budget starts after the spread window: every call gets a real attempt.
        let ctx = CallContext::new(
            self.calls.clone(),
            self.config.retry,
            Some(self.config.limits.clone()),
            later(Instant::now(), window + self.config.refresh_timeout),
        )
        .spread(window, urgency);
        let fetch = std::pin::pin!(fetch_all(&targets, &ctx, true));
        let results = match select(fetch, std::pin::pin!(sealed.changed())).await {
            Either::Left((results, _)) => results,
            Either::Right(_) => return,
        };
        let now = Instant::now();
        // One draw for the whole refresh (jitter of the next refresh, or backoff): values
        // refreshed together stay due together, in one batched refresh, instead of scattering.
        let random = crate::random::f64();
        let mut units = self.lock();
        for (&i, result) in guard.batch.iter().zip(results) {
            let unit = &mut units.list[i];
            let outcome = match result {
                Err(lost) => Outcome::Lost(lost),
                Ok(Ok(Refreshed::Changed(fetched))) => match unit.bind(fetched) {
                    Ok(bound) => Outcome::Fetched(bound),
                    Err(failures) => Outcome::Failed(
                        failures
                            .into_iter()
                            .next()
                            .map(|f| f.error)
                            .unwrap_or(ItemError::NotFound),
                    ),
                },
                Ok(Ok(Refreshed::Unchanged { refresh_by })) => Outcome::Unchanged { refresh_by },
                Ok(Err(error)) => Outcome::Failed(error),
            };
            let finished = unit.finish(guard.generation, outcome, now, &self.config, random);
            self.record(unit, finished);
        }
        guard.done = true;
        self.publish(&units, now);
        drop(units);
        self.completed.send_modify(|n| *n += 1);
        self.emit_stats();
    }

    /// Counts and logs how a unit's refresh ended.
    pub(super) fn record(&self, unit: &Unit, finished: Option<Finished>) {
        match finished {
            None => {}
            Some(Finished::Refreshed) => {
                self.refreshes.fetch_add(1, Ordering::Relaxed);
            }
            Some(Finished::Failed {
                failures,
                retry_in,
                expired,
                error,
            }) => {
                self.refresh_failures.fetch_add(1, Ordering::Relaxed);
                let message = if expired {
                    "lambda-secrets refresh failed; the value is past its maximum staleness and is no longer served (reads give Error::Expired)"
                } else {
                    "lambda-secrets refresh failed; serving the last good value"
                };
                tracing::warn!(
                    keys = ?unit.key_list(),
                    source = unit.source.kind(),
                    id = %unit.item,
                    %error,
                    failures,
                    retry_in_ms = retry_in.as_millis() as u64,
                    past_max_staleness = expired,
                    "{message}"
                );
            }
        }
    }
}

/// Runs `fetch` until the context's deadline plus a grace; `None` when the limit came first.
/// It watches in slices of at most [`FROZEN_SLACK`], so that a freeze gives back the time of the
/// slice it interrupted (the time frozen, and at most a slice more), never the whole wait: a
/// source that hangs still ends at its budget however often the process is frozen.
async fn within_budget<T>(fetch: impl Future<Output = T>, ctx: &CallContext) -> Option<T> {
    let mut fetch = std::pin::pin!(fetch);
    loop {
        let seen = ctx.deadline_handle().get();
        let limit = later(seen, GRACE);
        let now = Instant::now();
        if now >= limit {
            return None;
        }
        let slice = limit.min(later(now, FROZEN_SLACK));
        match select(fetch.as_mut(), std::pin::pin!(sleep_until(slice))).await {
            Either::Left((out, _)) => return Some(out),
            Either::Right((lost, _)) => ctx.deadline_handle().give_back(seen, lost),
        }
    }
}

/// Ends a refresh however its task ends: if the task is dropped before it finished (a panic,
/// its runtime dropped, never spawned), its units end as lost, with a backoff.
pub(super) struct RefreshGuard {
    store: Arc<Store>,
    batch: Vec<usize>,
    generation: u64,
    done: bool,
}

impl Drop for RefreshGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let now = Instant::now();
        let random = crate::random::f64();
        let mut units = self.store.lock();
        for &i in &self.batch {
            let unit = &mut units.list[i];
            let finished = unit.finish(
                self.generation,
                Outcome::Lost(LOST_EARLY),
                now,
                &self.store.config,
                random,
            );
            self.store.record(unit, finished);
        }
        self.store.publish(&units, now);
        drop(units);
        self.store.completed.send_modify(|n| *n += 1);
    }
}

/// A source, one of its items, and the version held (for a refresh).
pub(crate) type Target = (Arc<dyn DynSource>, AnyItem, Option<String>);

/// What a source answered for one item, or why it gave no answer (it panicked, or it was still
/// running at the end of its budget).
pub(crate) type Answer = Result<RefreshResult, &'static str>;

/// Fetches (or, with `refresh`, refreshes) every target, grouping items by source: one call of
/// the source per group, all groups concurrently. Each group has the budget of `ctx` (and a
/// grace) and its own panic boundary, so a source that hangs or panics costs only its own items.
pub(crate) async fn fetch_all(targets: &[Target], ctx: &CallContext, refresh: bool) -> Vec<Answer> {
    let mut groups: Vec<(Arc<dyn DynSource>, Vec<usize>)> = Vec::new();
    for (i, (source, _, _)) in targets.iter().enumerate() {
        match groups.iter_mut().find(|(s, _)| Arc::ptr_eq(s, source)) {
            Some((_, members)) => members.push(i),
            None => groups.push((source.clone(), vec![i])),
        }
    }
    let fetches = groups.iter().map(|(source, members)| async move {
        let items: Vec<AnyItem> = members.iter().map(|&i| targets[i].1.clone()).collect();
        let versions: Vec<Option<String>> = members.iter().map(|&i| targets[i].2.clone()).collect();
        let work = async {
            if refresh {
                source.refresh(&items, &versions, ctx).await
            } else {
                let fetched = source.fetch(&items, ctx).await;
                fetched.into_iter().map(|r| r.map(Refreshed::Changed)).collect()
            }
        };
        let answers: Vec<Answer> = match within_budget(AssertUnwindSafe(work).catch_unwind(), ctx).await {
            Some(Ok(results)) => results.into_iter().map(Ok).collect(),
            Some(Err(_panic)) => vec![Err(LOST_PANICKED); members.len()],
            None => vec![Err(LOST_TIMED_OUT); members.len()],
        };
        (members, answers)
    });
    let mut out: Vec<Option<Answer>> = vec![None; targets.len()];
    for (members, answers) in join_all(fetches).await {
        for (&i, answer) in members.iter().zip(answers) {
            out[i] = Some(answer);
        }
    }
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Ok(Err(ItemError::Source(
                    "the source returned no result for it".into(),
                )))
            })
        })
        .collect()
}
