//! Coalescing: misses (or refreshes) of different names that arrive within a short window go to
//! their source together, so that the source batches them (10 names per `GetParameters`, 20 ids per
//! `BatchGetSecretValue`) instead of one call per name. Names that stand for one item (two names
//! mapped to one secret) are fetched once, and every one of them gets the answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::Either;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::call::{CallContext, CallStats, RetryPolicy};
use crate::freshness::fetch::{fetch_all, Answer, FetchTarget, Mode};
use crate::freshness::seal::{sealed, Seal, FIRST_ATTEMPT_AFTER_RESTORE};
use crate::freshness::spawn::Spawner;
use crate::limiter::RateLimits;
use crate::time::later;

/// One name waiting in a batch: what to fetch and where the answer goes.
struct Waiter {
    target: FetchTarget,
    answer: oneshot::Sender<Answer>,
    /// The seal epoch when its lookup or refresh began: one from before a seal is not fetched
    /// after it (even if it joins a batch only after the seal, its task having been polled late).
    epoch: u64,
    /// The span it was asked in (a lookup's load, a refresh): the batch's calls are traced under
    /// the first waiter's and follow from the others'.
    span: tracing::Span,
}

/// The batch being filled.
struct FillingBatch {
    waiters: Vec<Waiter>,
    /// When the first name of this batch arrived.
    opened: Instant,
    /// Counts batches, so that a waiter of a batch sent already does not send the next one early.
    generation: u64,
}

impl Default for FillingBatch {
    fn default() -> Self {
        FillingBatch {
            waiters: Vec::new(),
            opened: Instant::now(),
            generation: 0,
        }
    }
}

/// How batches are fetched.
#[derive(Clone)]
pub(super) struct BatchSettings {
    pub(super) stats: Arc<CallStats>,
    pub(super) retry: RetryPolicy,
    pub(super) limits: RateLimits,
    /// Budget of one batch, retries included (the fetch timeout).
    pub(super) timeout: Duration,
    /// How long the first miss of a batch waits for others.
    pub(super) window: Duration,
    /// Names at which a batch is sent at once.
    pub(super) max_batch: usize,
    /// Values dropped for a SnapStart snapshot: a batch under way stops.
    pub(super) seal: Arc<Seal>,
    pub(super) spawner: Spawner,
    /// Set by a SnapStart restore: the next batch abandons each call's first attempt sooner (its
    /// pooled connection may be dead).
    pub(super) restored: Arc<AtomicBool>,
}

/// Two coalescers: misses and refreshes are fetched differently.
pub(super) struct Batcher {
    settings: BatchSettings,
    misses: Arc<Mutex<FillingBatch>>,
    refreshes: Arc<Mutex<FillingBatch>>,
}

/// A batch that was never answered: its task was dropped (its runtime shut down, or a SnapStart
/// seal stopped it).
pub(super) const LOST: &str = "the batch holding it was dropped (its runtime shut down, or the values were dropped for a SnapStart snapshot)";

impl Batcher {
    pub(super) fn new(settings: BatchSettings) -> Self {
        Batcher {
            settings,
            misses: Arc::default(),
            refreshes: Arc::default(),
        }
    }

    pub(super) fn limits(&self) -> &RateLimits {
        &self.settings.limits
    }

    /// After a SnapStart restore (see [`BatchSettings::restored`]).
    pub(super) fn restored(&self) {
        self.settings.restored.store(true, Ordering::Release);
    }

    /// Fetches `target` (`Mode::Refresh`: checks it against its version) in the next batch.
    pub(super) async fn fetch(&self, target: FetchTarget, mode: Mode, epoch: u64) -> Answer {
        let (tx, rx) = oneshot::channel();
        let filling = match mode {
            Mode::Load => &self.misses,
            Mode::Refresh => &self.refreshes,
        };
        let waiter = Waiter {
            target,
            answer: tx,
            epoch,
            span: tracing::Span::current(),
        };
        let (generation, opened, full) = {
            let mut open = filling.lock().unwrap_or_else(|e| e.into_inner());
            if open.waiters.is_empty() {
                open.opened = Instant::now();
            }
            open.waiters.push(waiter);
            let (generation, opened) = (open.generation, open.opened);
            let full = (open.waiters.len() >= self.settings.max_batch).then(|| take(&mut open));
            (generation, opened, full)
        };
        if let Some(batch) = full {
            // Full: sent now.
            self.send(batch, mode);
        }
        // Every waiter watches the window of its batch (no timer task that could be lost): when it
        // ends, the first to see it sends the batch, unless it was sent already. A lone miss waits
        // the window (a few ms) and one round trip. The batch runs on its own task, so a waiter that
        // gives up does not stop it.
        let window = std::pin::pin!(tokio::time::sleep_until(later(opened, self.settings.window)));
        let rx = match futures_util::future::select(rx, window).await {
            Either::Left((answer, _)) => return answer.unwrap_or(Answer::Lost(LOST)),
            Either::Right((_, rx)) => rx,
        };
        let batch = {
            let mut open = filling.lock().unwrap_or_else(|e| e.into_inner());
            (open.generation == generation).then(|| take(&mut open))
        };
        if let Some(batch) = batch {
            self.send(batch, mode);
        }
        rx.await.unwrap_or(Answer::Lost(LOST))
    }

    /// Sends `batch` on a task of its own (dropped where no runtime can run it: its waiters are then
    /// answered [`LOST`]).
    fn send(&self, batch: Vec<Waiter>, mode: Mode) {
        let settings = self.settings.clone();
        let task = settings.seal.task();
        let epoch = settings.seal.subscribe();
        let spawner = settings.spawner.clone();
        spawner.spawn(async move {
            let _task = task;
            send(batch, settings, mode, epoch).await;
        });
    }
}

fn take(open: &mut FillingBatch) -> Vec<Waiter> {
    open.generation += 1;
    std::mem::take(&mut open.waiters)
}

/// Fetches one batch (grouped by source inside `fetch_all`) and answers every waiter; stops where
/// it is if the values are dropped for a SnapStart snapshot (its waiters are answered [`LOST`]).
async fn send(
    batch: Vec<Waiter>,
    settings: BatchSettings,
    mode: Mode,
    mut epoch: tokio::sync::watch::Receiver<u64>,
) {
    let now = *epoch.borrow_and_update();
    let batch: Vec<Waiter> = batch.into_iter().filter(|w| w.epoch == now).collect();
    if batch.is_empty() {
        return;
    }
    // One fetch per distinct item (and version): `Source::fetch` is given distinct items.
    let mut targets: Vec<FetchTarget> = Vec::new();
    let mut of_waiter: Vec<usize> = Vec::with_capacity(batch.len());
    for waiter in &batch {
        let t = &waiter.target;
        let same =
            |u: &FetchTarget| Arc::ptr_eq(&u.source, &t.source) && u.item == t.item && u.version == t.version;
        match targets.iter().position(same) {
            Some(i) => of_waiter.push(i),
            None => {
                of_waiter.push(targets.len());
                targets.push(t.clone());
            }
        }
    }
    let mut ctx = CallContext::new(
        settings.stats.clone(),
        settings.retry,
        Some(settings.limits.clone()),
        later(Instant::now(), settings.timeout),
    );
    if settings.restored.swap(false, Ordering::AcqRel) {
        ctx = ctx.first_attempt_timeout(FIRST_ATTEMPT_AFTER_RESTORE);
    }
    if mode == Mode::Refresh {
        ctx = ctx.background();
    }
    let span = tracing::info_span!(parent: batch[0].span.id(), "lambda_secrets.batch", items = targets.len());
    for waiter in &batch[1..] {
        span.follows_from(&waiter.span);
    }
    let fetch = std::pin::pin!(tracing::Instrument::instrument(
        fetch_all(&targets, &ctx, mode),
        span
    ));
    let answers = match futures_util::future::select(fetch, std::pin::pin!(sealed(&mut epoch))).await {
        Either::Left((answers, _)) => answers,
        Either::Right(_) => return,
    };
    for (waiter, i) in batch.into_iter().zip(of_waiter) {
        let _ = waiter.answer.send(answers[i].clone());
    }
}
