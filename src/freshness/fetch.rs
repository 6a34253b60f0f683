//! Fetching a set of items from their sources: grouped by source (one call of the source per
//! group, so that it batches), all groups concurrently, each within the budget of the load or
//! refresh (plus a grace) and behind its own panic boundary, so that a source that hangs or panics
//! costs only its own items. Each group's answers are delivered as soon as that group is done
//! ([`fetch_groups`]): a slow or spread source never holds back another's values.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::time::Instant;

use super::state::Outcome;
use crate::call::CallContext;
use crate::error::ItemError;
use crate::source::{AnyItem, DynSource, RefreshResult, Refreshed};
use crate::time::freeze::{frozen_for, sleep_until, FROZEN_SLACK};
use crate::time::later;

/// How long after its deadline a fetch is given up as lost (a source that does not go through
/// [`CallContext`] and hangs; calls that do are cut at the deadline).
pub(crate) const GRACE: Duration = Duration::from_secs(2);

pub(crate) const LOST_PANICKED: &str = "the source panicked";
pub(crate) const LOST_TIMED_OUT: &str = "the source did not answer within its budget";

/// A source, one of its items, and the version held (for a refresh).
#[derive(Clone)]
pub(crate) struct FetchTarget {
    pub(crate) source: Arc<dyn DynSource>,
    pub(crate) item: AnyItem,
    pub(crate) version: Option<String>,
}

/// Whether items are fetched whole (a load, an on-demand miss) or checked against the version held
/// ([`Source::refresh`](crate::Source::refresh): `DescribeSecret` first for secrets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Load,
    Refresh,
}

/// What a source answered for one item, or why it gave no answer.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    Answered(RefreshResult),
    /// It panicked, or it was still running at the end of its budget.
    Lost(&'static str),
}

impl Answer {
    /// The answer as the state machine takes it; `bind` binds new values to their keys (with what
    /// the source said of their time), or fails.
    pub(crate) fn outcome<V>(
        self,
        bind: impl FnOnce(Vec<crate::source::Fetched>) -> Result<(V, super::dates::Dates), ItemError>,
    ) -> Outcome<V> {
        match self {
            Answer::Lost(why) => Outcome::Lost(why),
            Answer::Answered(Ok(Refreshed::Changed(fetched))) => match bind(fetched) {
                Ok((values, timing)) => Outcome::Fetched(values, timing),
                Err(error) => Outcome::Failed(error),
            },
            Answer::Answered(Ok(Refreshed::Unchanged { refresh_by })) => Outcome::Unchanged { refresh_by },
            Answer::Answered(Err(error)) => Outcome::Failed(error),
        }
    }

    /// The answer as the item's result (a lost answer is the item's error).
    pub(crate) fn into_result(self) -> RefreshResult {
        match self {
            Answer::Answered(result) => result,
            Answer::Lost(why) => Err(ItemError::Source(why.to_owned())),
        }
    }
}

/// The answers of one group: (index in the targets, answer).
pub(crate) type Landed = Vec<(usize, Answer)>;

/// Fetches every target, one group per source; each group's answers come out of the stream as
/// soon as they are in.
pub(crate) fn fetch_groups<'a>(
    targets: &'a [FetchTarget],
    ctx: &'a CallContext,
    mode: Mode,
) -> FuturesUnordered<impl Future<Output = Landed> + Send + 'a> {
    let mut groups: Vec<(Arc<dyn DynSource>, Vec<usize>)> = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        match groups.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &target.source)) {
            Some((_, members)) => members.push(i),
            None => groups.push((target.source.clone(), vec![i])),
        }
    }
    groups
        .into_iter()
        .map(|(source, members)| async move {
            // Each source's calls timed apart (`cache.refresh.duration` is per source).
            let ctx = &ctx.timed();
            let items: Vec<AnyItem> = members.iter().map(|&i| targets[i].item.clone()).collect();
            let versions: Vec<Option<String>> = members.iter().map(|&i| targets[i].version.clone()).collect();
            let work = async {
                match mode {
                    Mode::Refresh => source.refresh(&items, &versions, ctx).await,
                    Mode::Load => {
                        let fetched = source.fetch(&items, ctx).await;
                        fetched.into_iter().map(|r| r.map(Refreshed::Changed)).collect()
                    }
                }
            };
            let mut answers: Vec<Answer> =
                match within_budget(AssertUnwindSafe(work).catch_unwind(), ctx).await {
                    Some(Ok(results)) => results.into_iter().map(Answer::Answered).collect(),
                    Some(Err(_panic)) => vec![Answer::Lost(LOST_PANICKED); members.len()],
                    None => vec![Answer::Lost(LOST_TIMED_OUT); members.len()],
                };
            if mode == Mode::Refresh {
                if let Some(took) = ctx.took(Instant::now()) {
                    crate::telemetry::refresh_duration(ctx.cache(), source.kind(), took);
                }
            }
            answers.resize_with(members.len(), || {
                Answer::Answered(Err(ItemError::Source(
                    "the source returned no result for it".into(),
                )))
            });
            members.into_iter().zip(answers).collect()
        })
        .collect()
}

/// Fetches every target; one answer per target, in order.
pub(crate) async fn fetch_all(targets: &[FetchTarget], ctx: &CallContext, mode: Mode) -> Vec<Answer> {
    let mut out: Vec<Option<Answer>> = vec![None; targets.len()];
    let mut groups = fetch_groups(targets, ctx, mode);
    while let Some(landed) = groups.next().await {
        for (i, answer) in landed {
            out[i] = Some(answer);
        }
    }
    out.into_iter()
        .map(|a| a.unwrap_or(Answer::Lost(LOST_TIMED_OUT)))
        .collect()
}

/// Runs `fetch` until the context's deadline plus [`GRACE`]; `None` when the limit came first.
/// It watches in slices of at most [`FROZEN_SLACK`], so that a freeze gives back the time of the
/// slice it interrupted (the time frozen, and at most a slice more), never the whole wait: a
/// source that hangs still ends at its budget however often the process is frozen.
async fn within_budget<T>(fetch: impl Future<Output = T>, ctx: &CallContext) -> Option<T> {
    let mut fetch = std::pin::pin!(fetch);
    loop {
        let mark = ctx.mark();
        let limit = later(mark.deadline(), GRACE);
        let now = Instant::now();
        if now >= limit {
            return None;
        }
        let slice = limit.min(later(now, FROZEN_SLACK));
        let mut sleep = std::pin::pin!(sleep_until(slice));
        let (out, lost) = std::future::poll_fn(|cx| {
            // The clock before the fetch runs: its own work is never taken for a freeze.
            let polled = Instant::now();
            if let Poll::Ready(out) = fetch.as_mut().poll(cx) {
                // The slice may be due too (a thaw): its freeze is still reported.
                return Poll::Ready((Some(out), frozen_for(mark.began(), slice, polled)));
            }
            sleep.as_mut().poll(cx).map(|lost| (None, lost))
        })
        .await;
        if !lost.is_zero() {
            ctx.give_back(mark, lost);
            ctx.frozen(mark.began(), later(mark.began(), lost));
        }
        if out.is_some() {
            return out;
        }
    }
}
