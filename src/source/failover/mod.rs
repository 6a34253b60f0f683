//! [`Failover`]: a source that reads from a second Region (a replica's) when its own fails.
//!
//! The rules (the README's "Region failover" section says them for users):
//!
//! - Loads, refreshes and on-demand lookups go to the source's own Region, the primary.
//! - What the primary fails transiently (5xx, timeouts, cut connections, throttling that outlasts
//!   the retries) is asked of the failover Region; each item is served from wherever it was
//!   answered, and [`ValueInfo::region`](crate::ValueInfo::region) says which.
//! - A 4xx is an answer, not an outage (not found, denied, invalid): it is reported, never masked
//!   by the failover Region, so a value deleted in the primary is not resurrected from a lagging
//!   replica.
//! - Hedging (fetches: the cold load, a restore, an on-demand miss): when the primary has not
//!   answered within the hedge delay, the failover Region is asked too and the first answer wins,
//!   so a hanging primary costs the hedge delay, not the budget. A refresh (off the request path)
//!   gives the primary half its budget instead.
//! - Never backwards: a refresh answered by the failover Region never replaces a value with one
//!   changed there earlier than the one held ([`Fetched::modified_at`]); a replica lags its
//!   primary for seconds after a rotation.
//! - Failback and backoff: [`route`](route::Route).
//! - Rate limits: the failover Region's calls draw on that Region's buckets.

mod route;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::future::{select, BoxFuture, Either};
use tokio::time::Instant;

use self::route::{Route, Side};
use super::{Fetched, ItemResult, RefreshResult, Refreshed, Source};
use crate::call::CallContext;
use crate::error::{CallError, CallErrorKind, ItemError};
use crate::iam::{Permission, PolicyScope};

/// The share of a load's or refresh's time left that the primary has before the failover Region
/// is asked (when no hedge asked it sooner).
const PRIMARY_SHARE: f64 = 0.5;

/// Items whose newest modification date is remembered; past it the memory starts again (an
/// on-demand cache of many names).
const REMEMBERED: usize = 10_000;

/// A source that knows its Region and how an item is named in another.
pub(crate) trait Regional: Source {
    /// The Region its client calls, if the client's config says.
    fn region(&self) -> Option<String>;

    /// `item` as `region` names it (an ARN names its Region; a name is the same everywhere).
    fn in_region(&self, item: &Self::Item, region: &str) -> Self::Item;
}

/// `S` with a failover Region: see the module docs.
pub(crate) struct Failover<S: Regional> {
    primary: Arc<S>,
    replica: Arc<S>,
    primary_region: Option<String>,
    region: Arc<str>,
    /// The hedge delay set on the source; `None`: a third of the attempt timeout.
    hedge: Option<Duration>,
    route: Mutex<Route>,
    /// The newest modification date served per item, from either Region.
    newest: Mutex<HashMap<S::Item, SystemTime>>,
}

impl<S: Regional> std::fmt::Debug for Failover<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover")
            .field("primary_region", &self.primary_region)
            .field("failover_region", &self.region)
            .field("hedge", &self.hedge)
            .finish_non_exhaustive()
    }
}

/// A hedge delay when none is set: a third of an attempt's timeout (1 s by default), at least
/// 100 ms.
pub(crate) fn default_hedge(attempt_timeout: Duration) -> Duration {
    (attempt_timeout / 3).max(Duration::from_millis(100))
}

impl<S: Regional> Failover<S> {
    /// `primary`, failing over to `replica` (the same source's client for `region`).
    pub(crate) fn new(primary: Arc<S>, replica: Arc<S>, region: String, hedge: Option<Duration>) -> Self {
        Failover {
            primary_region: primary.region(),
            primary,
            replica,
            region: region.into(),
            hedge,
            route: Mutex::new(Route::default()),
            newest: Mutex::new(HashMap::new()),
        }
    }

    /// The failover Region.
    pub(crate) fn region(&self) -> &str {
        &self.region
    }

    /// The hedge delay set on the source.
    #[cfg_attr(not(feature = "ssm"), allow(dead_code))]
    pub(crate) fn hedge(&self) -> Option<Duration> {
        self.hedge
    }

    /// The source of the failover Region.
    pub(crate) fn replica(&self) -> &Arc<S> {
        &self.replica
    }

    fn route(&self) -> std::sync::MutexGuard<'_, Route> {
        self.route.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn region_of(&self, side: Side) -> Option<String> {
        match side {
            Side::Primary => self.primary_region.clone(),
            Side::Replica => Some(self.region.to_string()),
        }
    }

    /// `items` as the failover Region names them.
    fn replica_items(&self, items: &[S::Item], which: &[usize]) -> Vec<S::Item> {
        which
            .iter()
            .map(|&i| self.primary.in_region(&items[i], &self.region))
            .collect()
    }

    /// Runs `ask` for `items` by the rules of the module docs; one answer per item, with the side
    /// that gave it. `ask(side, which)` asks that side for the items at indexes `which`, in order.
    async fn run<'a, T: Send + 'a>(
        &'a self,
        n: usize,
        calls: &'a CallContext,
        hedge: bool,
        ask: impl Fn(Side, Vec<usize>) -> BoxFuture<'a, Vec<Result<T, ItemError>>>,
    ) -> Vec<(Result<T, ItemError>, Side)> {
        let all: Vec<usize> = (0..n).collect();
        let now = Instant::now();
        if self.route().first(now) == Side::Replica {
            return ask(Side::Replica, all)
                .await
                .into_iter()
                .map(|r| (r, Side::Replica))
                .collect();
        }
        let left = calls.deadline_handle().get().saturating_duration_since(now);
        let cutoff = crate::time::later(now, left.mul_f64(PRIMARY_SHARE));
        let mut primary = Box::pin(tokio::time::timeout_at(cutoff, ask(Side::Primary, all.clone())));
        let mut replica_all = None;
        let primary_answer = match hedge.then(|| {
            self.hedge
                .unwrap_or_else(|| default_hedge(calls.attempt_timeout()))
        }) {
            None => primary.await.ok(),
            Some(delay) => match select(primary.as_mut(), Box::pin(tokio::time::sleep(delay))).await {
                Either::Left((answer, _)) => answer.ok(),
                Either::Right(((), _)) => {
                    tracing::debug!(region = %self.region, ?delay, "no answer from the primary Region within the hedge delay; asking the failover Region too");
                    let replica = ask(Side::Replica, all.clone());
                    match select(primary.as_mut(), replica).await {
                        Either::Left((answer, replica)) => {
                            replica_all = Some(replica);
                            answer.ok()
                        }
                        Either::Right((replica, primary)) => {
                            return self.replica_first(replica, primary).await;
                        }
                    }
                }
            },
        };
        let primary_answer = primary_answer.unwrap_or_else(|| {
            let err = ItemError::Call(CallError::new(
                CallErrorKind::Transient,
                format!(
                    "no answer from the primary Region within {:?}",
                    cutoff.saturating_duration_since(now)
                ),
            ));
            all.iter().map(|_| Err(err.clone())).collect()
        });
        let mut out: Vec<Option<(Result<T, ItemError>, Side)>> = (0..n).map(|_| None).collect();
        let mut failed = Vec::new();
        for (i, answer) in primary_answer.into_iter().enumerate() {
            match &answer {
                Err(e) if is_outage(e) => failed.push((i, answer)),
                _ => out[i] = Some((answer, Side::Primary)),
            }
        }
        self.note_primary(failed.len() < n);
        if !failed.is_empty() {
            let which: Vec<usize> = failed.iter().map(|(i, _)| *i).collect();
            let answers = match replica_all {
                Some(replica) => {
                    let mut answers: Vec<Option<Result<T, ItemError>>> =
                        replica.await.into_iter().map(Some).collect();
                    which
                        .iter()
                        .map(|&i| answers[i].take().expect("one answer per item"))
                        .collect()
                }
                None => ask(Side::Replica, which.clone()).await,
            };
            for ((i, _), answer) in failed.into_iter().zip(answers) {
                out[i] = Some((answer, Side::Replica));
            }
        }
        out.into_iter().map(|o| o.expect("every item answered")).collect()
    }

    /// The failover Region answered before the primary: what it found wins; for the rest the
    /// primary's answer is awaited, and wins unless it is an outage too.
    async fn replica_first<T>(
        &self,
        replica: Vec<Result<T, ItemError>>,
        primary: impl std::future::Future<Output = Result<Vec<Result<T, ItemError>>, tokio::time::error::Elapsed>>,
    ) -> Vec<(Result<T, ItemError>, Side)> {
        if replica.iter().all(Result::is_ok) {
            self.note_primary(false);
            return replica.into_iter().map(|r| (r, Side::Replica)).collect();
        }
        let primary = primary.await.ok();
        let answered = primary
            .as_ref()
            .is_some_and(|p| p.iter().any(|a| !matches!(a, Err(e) if is_outage(e))));
        self.note_primary(answered);
        let mut primary: Vec<Option<Result<T, ItemError>>> = match primary {
            Some(p) => p.into_iter().map(Some).collect(),
            None => Vec::new(),
        };
        replica
            .into_iter()
            .enumerate()
            .map(|(i, r)| match r {
                Ok(v) => (Ok(v), Side::Replica),
                Err(replica_err) => match primary.get_mut(i).and_then(Option::take) {
                    Some(Err(e)) if is_outage(&e) => (Err(replica_err), Side::Replica),
                    Some(answer) => (answer, Side::Primary),
                    None => (Err(replica_err), Side::Replica),
                },
            })
            .collect()
    }

    fn note_primary(&self, answered: bool) {
        let mut route = self.route();
        if answered {
            if *route != Route::Primary {
                tracing::info!(region = ?self.primary_region, "the primary Region answers again; failing back");
            }
            route.primary_answered();
        } else {
            if *route == Route::Primary {
                tracing::warn!(primary = ?self.primary_region, failover = %self.region, "the primary Region fails; reading from the failover Region");
            }
            route.primary_failed(Instant::now(), crate::random::f64());
        }
    }

    /// Tags `fetched` with the Region that answered and remembers its date; for an answer of the
    /// failover Region to a refresh, whether it is older than what was served (then it is not
    /// used).
    fn land(&self, item: &S::Item, fetched: &mut [Fetched], side: Side, refresh: bool) -> bool {
        let region = self.region_of(side);
        for f in fetched.iter_mut() {
            f.region.clone_from(&region);
        }
        let Some(date) = fetched.iter().filter_map(|f| f.modified_at).max() else {
            return false;
        };
        let mut newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
        match (side, newest.get(item)) {
            (Side::Replica, Some(&held)) if refresh && date < held => {
                tracing::debug!(region = %self.region, "the failover Region's value is older than the one held (a replica behind its primary); kept");
                true
            }
            (Side::Replica, Some(&held)) if date < held => false,
            _ => {
                if newest.len() >= REMEMBERED && !newest.contains_key(item) {
                    newest.clear();
                }
                newest.insert(item.clone(), date);
                false
            }
        }
    }
}

/// Checks `region` as a failover Region of a source in `primary`.
///
/// # Errors
///
/// [`Error::InvalidInput`](crate::Error::InvalidInput) naming it: not a Region name, or the
/// source's own Region.
pub(crate) fn check_region(region: &str, primary: Option<&str>) -> Result<(), crate::Error> {
    let invalid = |reason: &str| crate::Error::invalid_input("failover Region", region, reason);
    let parts: Vec<&str> = region.split('-').collect();
    let well_formed = parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit());
    if !well_formed {
        return Err(invalid("a Region is named like us-west-2 or eu-central-1"));
    }
    if primary == Some(region) {
        return Err(invalid(
            "it is the source's own Region; a failover Region is another one",
        ));
    }
    Ok(())
}

/// `id` as named in `region`: an ARN with its Region replaced; a name as it is.
pub(crate) fn arn_in_region(id: &str, region: &str) -> String {
    let parts: Vec<&str> = id.splitn(5, ':').collect();
    match parts[..] {
        ["arn", partition, service, _, rest] => format!("arn:{partition}:{service}:{region}:{rest}"),
        _ => id.to_owned(),
    }
}

/// Whether an item's error is an outage of the Region (worth asking the other) rather than an
/// answer.
fn is_outage(err: &ItemError) -> bool {
    matches!(err, ItemError::Call(e) if e.is_retryable())
}

impl<S: Regional> Source for Failover<S> {
    type Item = S::Item;

    fn kind(&self) -> &'static str {
        self.primary.kind()
    }

    fn is_tree(&self, item: &Self::Item) -> bool {
        self.primary.is_tree(item)
    }

    fn permissions(&self, item: &Self::Item, scope: &PolicyScope) -> Option<Vec<Permission>> {
        let mut needed = self
            .primary
            .permissions(item, &scope.without_keys_of(&self.region))?;
        let there = scope.in_failover_region(&self.region);
        for p in self
            .replica
            .permissions(&self.primary.in_region(item, &self.region), &there)?
        {
            if !needed.contains(&p) {
                needed.push(p);
            }
        }
        Some(needed)
    }

    fn role_arn(&self) -> Option<&str> {
        self.primary.role_arn()
    }

    fn seal(&self) {
        self.primary.seal();
        self.replica.seal();
        self.route().reset();
    }

    async fn fetch(&self, items: &[Self::Item], calls: &CallContext) -> Vec<ItemResult> {
        let replica_calls = calls.in_region(self.region.clone());
        let ask = |side: Side, which: Vec<usize>| -> BoxFuture<'_, Vec<ItemResult>> {
            match side {
                Side::Primary => Box::pin(async move {
                    let asked: Vec<S::Item> = which.iter().map(|&i| items[i].clone()).collect();
                    self.primary.fetch(&asked, calls).await
                }),
                Side::Replica => {
                    let asked = self.replica_items(items, &which);
                    let replica_calls = &replica_calls;
                    Box::pin(async move { self.replica.fetch(&asked, replica_calls).await })
                }
            }
        };
        let answers = self.run(items.len(), calls, true, ask).await;
        answers
            .into_iter()
            .zip(items)
            .map(|((answer, side), item)| {
                answer.map(|mut fetched| {
                    self.land(item, &mut fetched, side, false);
                    fetched
                })
            })
            .collect()
    }

    async fn refresh(
        &self,
        items: &[Self::Item],
        current: &[Option<String>],
        calls: &CallContext,
    ) -> Vec<RefreshResult> {
        let replica_calls = calls.in_region(self.region.clone());
        let ask = |side: Side, which: Vec<usize>| -> BoxFuture<'_, Vec<RefreshResult>> {
            let versions: Vec<Option<String>> = which.iter().map(|&i| current[i].clone()).collect();
            match side {
                Side::Primary => Box::pin(async move {
                    let asked: Vec<S::Item> = which.iter().map(|&i| items[i].clone()).collect();
                    self.primary.refresh(&asked, &versions, calls).await
                }),
                Side::Replica => {
                    let asked = self.replica_items(items, &which);
                    let replica_calls = &replica_calls;
                    Box::pin(async move { self.replica.refresh(&asked, &versions, replica_calls).await })
                }
            }
        };
        let answers = self.run(items.len(), calls, false, ask).await;
        answers
            .into_iter()
            .zip(items)
            .map(|((answer, side), item)| match answer {
                Ok(Refreshed::Changed(mut fetched)) => {
                    if self.land(item, &mut fetched, side, true) {
                        Ok(Refreshed::Unchanged { refresh_by: None })
                    } else {
                        Ok(Refreshed::Changed(fetched))
                    }
                }
                other => other,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
