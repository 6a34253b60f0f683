//! Coalescing: misses (or refreshes) of different names that arrive within a short window go to
//! their source together, so that the source batches them (10 names per `GetParameters`, 20 ids per
//! `BatchGetSecretValue`) instead of one call per name.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::Either;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::call::{CallContext, CallStats};
use crate::error::ItemError;
use crate::source::{AnyItem, DynSource, RefreshResult};
use crate::store::{fetch_all, Answer};
use crate::time::later;

/// One name waiting in a batch: what to fetch, the version it has (refreshes), and where the
/// answer goes.
struct Waiting {
    /// How long this lookup may take (its invocation's remaining time, at most the fetch timeout).
    budget: Duration,
    source: Arc<dyn DynSource>,
    item: AnyItem,
    version: Option<String>,
    answer: oneshot::Sender<Answer>,
}

/// The batch being filled, and whether it is one of refreshes (`DescribeSecret`-first for secrets)
/// or of misses (batched fetches).
struct Open {
    waiting: Vec<Waiting>,
    /// When the first name of this batch arrived.
    opened: Instant,
    /// Counts batches, so that a waiter of a batch sent already does not send the next one early.
    generation: u64,
}

impl Default for Open {
    fn default() -> Self {
        Open {
            waiting: Vec::new(),
            opened: Instant::now(),
            generation: 0,
        }
    }
}

/// How a batch is fetched.
#[derive(Clone)]
pub(super) struct Fetching {
    pub(super) stats: Arc<CallStats>,
    pub(super) retry: crate::call::RetryPolicy,
    pub(super) limits: crate::limiter::RateLimits,
    /// Budget of one batch, retries included.
    pub(super) timeout: Duration,
    /// How long the first miss of a batch waits for others.
    pub(super) window: Duration,
    /// Names at which a batch is sent at once.
    pub(super) max_batch: usize,
    /// Set by a SnapStart restore: the next batch abandons each call's first attempt sooner (its
    /// pooled connection may be dead).
    pub(super) restored: Arc<std::sync::atomic::AtomicBool>,
}

/// Two coalescers: misses and refreshes are fetched differently.
pub(super) struct Batcher {
    fetching: Fetching,
    misses: Arc<Mutex<Open>>,
    refreshes: Arc<Mutex<Open>>,
}

impl Batcher {
    pub(super) fn limits(&self) -> &crate::limiter::RateLimits {
        &self.fetching.limits
    }

    /// After a SnapStart restore (see [`Fetching::restored`]).
    pub(super) fn restored(&self) {
        self.fetching
            .restored
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub(super) fn new(fetching: Fetching) -> Self {
        Batcher {
            fetching,
            misses: Arc::default(),
            refreshes: Arc::default(),
        }
    }

    /// Fetches `item` (`refresh`: checks it against `version`) in the next batch.
    pub(super) async fn fetch(
        &self,
        source: Arc<dyn DynSource>,
        item: AnyItem,
        version: Option<String>,
        refresh: bool,
        budget: Duration,
    ) -> Answer {
        let (tx, rx) = oneshot::channel();
        let open = if refresh { &self.refreshes } else { &self.misses };
        let waiting = Waiting {
            budget: budget.min(self.fetching.timeout),
            source,
            item,
            version,
            answer: tx,
        };
        let (generation, opened, full) = {
            let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
            if open.waiting.is_empty() {
                open.opened = Instant::now();
            }
            open.waiting.push(waiting);
            let (generation, opened) = (open.generation, open.opened);
            let full = (open.waiting.len() >= self.fetching.max_batch).then(|| take(&mut open));
            (generation, opened, full)
        };
        if let Some(batch) = full {
            // Full: sent now.
            spawn(send(batch, self.fetching.clone(), refresh));
        }
        // Every waiter watches the window of its batch (no timer task that could be lost): when it
        // ends, the first to see it sends the batch, unless it was sent already. A lone miss waits
        // the window (a few ms) and one round trip. The batch runs on its own task, so a waiter that
        // gives up does not stop it.
        let window = std::pin::pin!(tokio::time::sleep_until(later(opened, self.fetching.window)));
        let rx = match futures_util::future::select(rx, window).await {
            Either::Left((answer, _)) => return answer.unwrap_or(Err(LOST)),
            Either::Right((_, rx)) => rx,
        };
        let batch = {
            let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
            (open.generation == generation).then(|| take(&mut open))
        };
        if let Some(batch) = batch {
            spawn(send(batch, self.fetching.clone(), refresh));
        }
        rx.await.unwrap_or(Err(LOST))
    }
}

const LOST: &str = "the batch holding it was dropped (its runtime shut down)";

fn take(open: &mut Open) -> Vec<Waiting> {
    open.generation += 1;
    std::mem::take(&mut open.waiting)
}

/// Runs `task` on the current tokio runtime. `get` checks that it runs in one; were it not, the
/// dropped task would answer every waiter of the batch with `LOST`.
fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        drop(runtime.spawn(task));
    }
}

/// Fetches one batch (grouped by source inside `fetch_all`) and answers every waiter.
async fn send(batch: Vec<Waiting>, fetching: Fetching, refresh: bool) {
    let targets: Vec<_> = batch
        .iter()
        .map(|w| (w.source.clone(), w.item.clone(), w.version.clone()))
        .collect();
    // The batch lasts as long as its most patient lookup may wait; each lookup stops waiting at
    // its own budget.
    let budget = batch.iter().map(|w| w.budget).max().unwrap_or(fetching.timeout);
    let mut ctx = CallContext::new(
        fetching.stats.clone(),
        fetching.retry,
        Some(fetching.limits.clone()),
        later(Instant::now(), budget),
    );
    if fetching.restored.swap(false, std::sync::atomic::Ordering::AcqRel) {
        ctx = ctx.first_attempt_timeout(crate::store::FIRST_ATTEMPT_AFTER_RESTORE);
    }
    let answers = fetch_all(&targets, &ctx, refresh).await;
    for (waiting, answer) in batch.into_iter().zip(answers) {
        let _ = waiting.answer.send(answer);
    }
}

/// A lost answer (a panic, a budget run out, a dropped batch) as the item's error.
pub(super) fn lost(why: &'static str) -> RefreshResult {
    Err(ItemError::Source(why.to_owned()))
}
