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
//! - Hedging (fetches: the cold load, a restore, an on-demand miss): when the primary is late by
//!   the hedge delay (a request out unanswered that long, or that long since the first it failed:
//!   [`Watch`]; waits for the function's own rate limits do not count), the failover Region is
//!   asked too and the first answer wins, so a hanging primary costs the hedge delay, not the
//!   budget (and, still out unanswered when the failover Region's answer ends the fetch, the
//!   primary counts as failed). A refresh (off the request path) gives the primary half its
//!   budget instead.
//! - Never backwards: a refresh answered by the failover Region never replaces a value with one
//!   changed there earlier than the one held ([`Fetched::modified_at`]), nor, where version ids
//!   are the same in every Region ([`Regional::global_versions`]), with a version already
//!   replaced; a replica lags its primary for seconds after a rotation.
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
use crate::call::{CallContext, Watch};
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

    /// Whether another Region may answer for `item` (an SSM version or label is the primary's
    /// own: version numbers and labels are per Region). The default: yes.
    fn fails_over(&self, item: &Self::Item) -> bool {
        let _ = item;
        true
    }

    /// Whether a version id names the same version in every Region (Secrets Manager's do;
    /// SSM's version numbers are per Region). Then an answer of the failover Region with a
    /// version the primary already replaced is behind, whatever its date.
    fn global_versions(&self) -> bool {
        false
    }

    /// Which of a name's values `item` reads, when one name has several (a Secrets Manager
    /// stage): what is remembered of served values is kept apart per variant.
    fn variant(&self, item: &Self::Item) -> Option<String> {
        let _ = item;
        None
    }
}

/// Versions replaced under a name, remembered to know a lagging replica by its version id.
const REPLACED_KEPT: usize = 4;

/// What was served under a value name, from either Region.
#[derive(Default)]
struct Held {
    /// The newest modification date.
    date: Option<SystemTime>,
    /// The version served last.
    version: Option<String>,
    /// Versions it replaced, newest last (with global version ids only).
    replaced: Vec<String>,
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
    /// What was served per value name, from either Region: its newest modification date and
    /// the versions it replaced.
    newest: Mutex<HashMap<String, Held>>,
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

    /// Runs `ask` for `n` items by the rules of the module docs; one answer per item, with the
    /// side that gave it. `ask(side, which)` asks that side for the items at indexes `which`, in
    /// order. Only the items `spare` says may be answered by the failover Region are asked there.
    /// `watch` notes the primary's attempts (time its calls wait for the function's own rate
    /// limit is no failure of its); with `hedge`, a late primary is hedged (fetches only).
    async fn run<'a, T: Send + 'a>(
        &'a self,
        spare: &[bool],
        calls: &'a CallContext,
        watch: &Watch,
        hedge: bool,
        ask: impl Fn(Side, Vec<usize>) -> BoxFuture<'a, Vec<Result<T, ItemError>>>,
    ) -> Vec<(Result<T, ItemError>, Side)> {
        let n = spare.len();
        let all: Vec<usize> = (0..n).collect();
        let to_replica: Vec<usize> = (0..n).filter(|&i| spare[i]).collect();
        let cutoff = calls.failover_cutoff(PRIMARY_SHARE);
        if self.route().first(Instant::now()) == Side::Replica && !to_replica.is_empty() {
            if to_replica.len() == n {
                return self.on_replica(all, cutoff, &ask).await.0;
            }
            // Items only the primary may answer (an SSM version or label) still go there; the
            // rest skip it while it fails.
            let pinned: Vec<usize> = (0..n).filter(|&i| !spare[i]).collect();
            let ((spared, answered), primary) = futures_util::future::join(
                self.on_replica(to_replica.clone(), cutoff, &ask),
                within(cutoff, ask(Side::Primary, pinned.clone())),
            )
            .await;
            let primary = match primary {
                Some(answers) => {
                    let answers = pad(answers, pinned.len());
                    // The primary answered `on_replica` (noted there): that verdict stands.
                    match verdict(&answers) {
                        Some(false) if answered => {}
                        Some(verdict) => self.note_primary(verdict),
                        None => {}
                    }
                    answers
                }
                None => {
                    if watch.began_any() && !answered {
                        self.note_primary(false);
                    }
                    let err = cut_off();
                    pinned.iter().map(|_| Err(err.clone())).collect()
                }
            };
            let mut out: Vec<Option<(Result<T, ItemError>, Side)>> = (0..n).map(|_| None).collect();
            for (&i, answer) in to_replica.iter().zip(spared) {
                out[i] = Some(answer);
            }
            for (&i, answer) in pinned.iter().zip(primary) {
                out[i] = Some((answer, Side::Primary));
            }
            return out.into_iter().map(|o| o.expect("every item answered")).collect();
        }
        let mut primary = Box::pin(within(cutoff, ask(Side::Primary, all.clone())));
        let mut replica_all = None;
        let delay = self
            .hedge
            .unwrap_or_else(|| default_hedge(calls.attempt_timeout()));
        let answer = match Some(watch).filter(|_| hedge && !to_replica.is_empty()) {
            Some(watch) => match select(primary.as_mut(), Box::pin(late(watch, delay))).await {
                Either::Left((answer, _)) => answer,
                Either::Right(((), _)) => {
                    tracing::debug!(region = %self.region, ?delay, "no answer from the primary Region within the hedge delay; asking the failover Region too");
                    let replica = ask(Side::Replica, to_replica.clone());
                    match select(primary.as_mut(), replica).await {
                        Either::Left((answer, replica)) => {
                            replica_all = Some(replica);
                            answer
                        }
                        Either::Right((replica, primary)) => {
                            return self
                                .replica_first(spare, pad(replica, to_replica.len()), primary, watch, delay)
                                .await;
                        }
                    }
                }
            },
            None => primary.await,
        };
        let (answer, verdict) = match answer {
            Some(answer) => {
                let answer = pad(answer, n);
                let verdict = verdict(&answer);
                (answer, verdict)
            }
            None => {
                let err = cut_off();
                // Cut off before any request went out (the calls waited for the function's own
                // rate limit): nothing is known of the primary.
                let verdict = if !watch.began_any() { None } else { Some(false) };
                (all.iter().map(|_| Err(err.clone())).collect(), verdict)
            }
        };
        let mut out: Vec<Option<(Result<T, ItemError>, Side)>> = (0..n).map(|_| None).collect();
        let mut failed = Vec::new();
        for (i, answer) in answer.into_iter().enumerate() {
            match &answer {
                Err(e) if is_outage(e) && spare[i] => failed.push(i),
                _ => {}
            }
            out[i] = Some((answer, Side::Primary));
        }
        if let Some(answered) = verdict {
            self.note_primary(answered);
        }
        if !failed.is_empty() {
            let answers = match replica_all {
                Some(replica) => {
                    let mut answers: Vec<Option<Result<T, ItemError>>> = pad(replica.await, to_replica.len())
                        .into_iter()
                        .map(Some)
                        .collect();
                    failed
                        .iter()
                        .map(|i| {
                            let k = to_replica.iter().position(|j| j == i).expect("a spare item");
                            answers[k].take().expect("one answer per item")
                        })
                        .collect()
                }
                None => pad(ask(Side::Replica, failed.clone()).await, failed.len()),
            };
            for (&i, answer) in failed.iter().zip(answers) {
                out[i] = Some((answer, Side::Replica));
            }
        }
        out.into_iter().map(|o| o.expect("every item answered")).collect()
    }

    /// While the primary is skipped: the failover Region answers; what it has not (not found,
    /// denied: a value not copied there yet, a policy without the replica's ARN) is asked of the
    /// primary too, whose answer then wins unless it is an outage.
    /// `which`: the indexes of the items to ask; the answers come in that order, with whether
    /// the primary answered (then noted).
    async fn on_replica<'a, T: Send + 'a>(
        &'a self,
        which: Vec<usize>,
        cutoff: Instant,
        ask: &impl Fn(Side, Vec<usize>) -> BoxFuture<'a, Vec<Result<T, ItemError>>>,
    ) -> (Vec<(Result<T, ItemError>, Side)>, bool) {
        let n = which.len();
        let answers = pad(ask(Side::Replica, which.clone()).await, n);
        // Positions (in `which`) of the answers the primary is asked about too.
        let unsure: Vec<usize> = (0..n)
            .filter(|&k| matches!(&answers[k], Err(e) if !is_outage(e)))
            .collect();
        let mut out: Vec<(Result<T, ItemError>, Side)> =
            answers.into_iter().map(|a| (a, Side::Replica)).collect();
        if unsure.is_empty() {
            return (out, false);
        }
        let asked: Vec<usize> = unsure.iter().map(|&k| which[k]).collect();
        let mut answered = false;
        if let Some(primary) = within(cutoff, ask(Side::Primary, asked)).await {
            for (&k, answer) in unsure.iter().zip(pad(primary, unsure.len())) {
                if !matches!(&answer, Err(e) if is_outage(e)) {
                    out[k] = (answer, Side::Primary);
                    answered = true;
                }
            }
            if answered {
                self.note_primary(true);
            }
        }
        (out, answered)
    }

    /// The failover Region answered before the primary (hedged): what it found wins; for the
    /// rest the primary's answer is awaited, and wins unless it is an outage too. When the
    /// failover Region's answer ends the call, the primary failed if one of its attempts failed
    /// transiently or is still out unanswered after the hedge `delay` (noted in `watch`): so
    /// that the next calls skip a hanging primary instead of paying the hedge delay again.
    async fn replica_first<T>(
        &self,
        spare: &[bool],
        replica: Vec<Result<T, ItemError>>,
        primary: impl std::future::Future<Output = Option<Vec<Result<T, ItemError>>>>,
        watch: &Watch,
        delay: Duration,
    ) -> Vec<(Result<T, ItemError>, Side)> {
        let n = spare.len();
        let mut replica = replica.into_iter();
        let mut from_replica: Vec<Option<Result<T, ItemError>>> = (0..n)
            .map(|i| if spare[i] { replica.next() } else { None })
            .collect();
        if from_replica.iter().all(|r| matches!(r, Some(Ok(_)))) {
            let hanging = watch.late_at(delay).is_some_and(|at| at <= Instant::now());
            if watch.troubled() || hanging {
                self.note_primary(false);
            }
            return from_replica
                .into_iter()
                .map(|r| (r.expect("all answered"), Side::Replica))
                .collect();
        }
        let primary = primary.await.map(|p| pad(p, n));
        match &primary {
            Some(answers) => {
                if let Some(answered) = verdict(answers) {
                    self.note_primary(answered);
                }
            }
            None if watch.began_any() => self.note_primary(false),
            None => {}
        }
        let mut primary: Vec<Option<Result<T, ItemError>>> =
            primary.map_or_else(Vec::new, |p| p.into_iter().map(Some).collect());
        (0..n)
            .map(|i| {
                let theirs = primary.get_mut(i).and_then(Option::take);
                match from_replica[i].take() {
                    Some(Ok(v)) => (Ok(v), Side::Replica),
                    Some(Err(replica_err)) => match theirs {
                        Some(Err(e)) if is_outage(&e) => (Err(replica_err), Side::Replica),
                        Some(answer) => (answer, Side::Primary),
                        None => (Err(replica_err), Side::Replica),
                    },
                    None => (theirs.unwrap_or_else(|| Err(cut_off())), Side::Primary),
                }
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

    /// Tags `fetched` with the Region that answered and remembers each value's date; for an
    /// answer of the failover Region to a refresh, whether any of its values is older than the
    /// one served under that name (then none is used: a tree is taken whole or not at all).
    /// `variant`: which of the name's values the item reads ([`Regional::variant`]).
    fn land(&self, fetched: &mut [Fetched], side: Side, refresh: bool, variant: Option<String>) -> bool {
        let key = |f: &Fetched| match &variant {
            Some(v) => format!("{}\u{0}{v}", f.name),
            None => f.name.clone(),
        };
        let region = self.region_of(side);
        for f in fetched.iter_mut() {
            f.region.clone_from(&region);
        }
        let global = self.primary.global_versions();
        let mut newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
        if side == Side::Replica {
            let behind = fetched.iter().any(|f| {
                let Some(held) = newest.get(&key(f)) else {
                    return false;
                };
                let older = matches!((f.modified_at, held.date), (Some(date), Some(held)) if date < held);
                // A version the primary already moved past (its id is the same in every
                // Region): the replica has not seen the rotation yet, whatever the dates say.
                let replaced = global
                    && f.version
                        .as_ref()
                        .is_some_and(|v| held.version.as_ref() != Some(v) && held.replaced.contains(v));
                older || replaced
            });
            if behind {
                if refresh {
                    tracing::debug!(region = %self.region, "the failover Region's value is older than the one held (a replica behind its primary); kept");
                }
                return refresh;
            }
        }
        for f in fetched.iter() {
            if f.modified_at.is_none() && (!global || f.version.is_none()) {
                continue;
            }
            let name = key(f);
            if newest.len() >= REMEMBERED && !newest.contains_key(&name) {
                // Forget the oldest half rather than everything.
                let mut dates: Vec<Option<SystemTime>> = newest.values().map(|h| h.date).collect();
                dates.sort_unstable();
                let median = dates[dates.len() / 2];
                newest.retain(|_, h| h.date.is_some() && h.date >= median);
            }
            let held = newest.entry(name).or_default();
            if let Some(date) = f.modified_at {
                // The primary is the authority (a label moved back is a change); the failover
                // Region only moves dates forward.
                if side == Side::Primary || held.date.is_none_or(|h| date > h) {
                    held.date = Some(date);
                }
            }
            if global && f.version.is_some() && f.version != held.version {
                if let Some(old) = held.version.take() {
                    held.replaced.push(old);
                    if held.replaced.len() > REPLACED_KEPT {
                        held.replaced.remove(0);
                    }
                }
                // A version served again (the primary moved its stage back) is current.
                held.replaced.retain(|v| Some(v) != f.version.as_ref());
                held.version.clone_from(&f.version);
            }
        }
        false
    }
}

/// What the primary's `answers` say of it: it answered (an item found, or a 4xx), it failed
/// (only outages), or nothing (only calls the function's own rate limit or deadline never let
/// go: no request was sent).
fn verdict<T>(answers: &[Result<T, ItemError>]) -> Option<bool> {
    if answers.iter().any(|a| !matches!(a, Err(e) if is_outage(e))) {
        Some(true)
    } else if !answers.is_empty()
        && answers
            .iter()
            .all(|a| matches!(a, Err(ItemError::Call(e)) if e.was_not_sent()))
    {
        None
    } else {
        Some(false)
    }
}

/// `answers`, one per item of `n`: a source that gave fewer gets "no result" for the rest.
fn pad<T>(mut answers: Vec<Result<T, ItemError>>, n: usize) -> Vec<Result<T, ItemError>> {
    answers.truncate(n);
    while answers.len() < n {
        answers.push(Err(ItemError::Source("the source gave no result for it".into())));
    }
    answers
}

/// The primary gave no answer within its share of the budget (an outage).
fn cut_off() -> ItemError {
    outage("no answer from the primary Region within its share of the budget")
}

/// A transient failure: worth asking the other Region.
fn outage(why: &str) -> ItemError {
    ItemError::Call(CallError::new(CallErrorKind::Transient, why))
}

/// Sleeps until `at`, later by any time the process spends frozen meanwhile (a Lambda freeze
/// says nothing of the primary).
async fn sleep_thawed_until(mut at: Instant) {
    loop {
        let wait = at.saturating_duration_since(Instant::now());
        if crate::time::freeze::sleep_until(at).await.is_zero() {
            return;
        }
        at = crate::time::later(Instant::now(), wait);
    }
}

/// Completes when the primary's calls noted in `watch` are `delay` late
/// ([`Watch::late_at`]): an attempt has been out that long, or that long has passed since the
/// first that failed. Time the calls spend waiting for the function's own rate limits does not
/// count.
async fn late(watch: &Watch, delay: Duration) {
    loop {
        let changed = watch.changed();
        let mut changed = std::pin::pin!(changed);
        changed.as_mut().enable();
        match watch.late_at(delay) {
            None => changed.await,
            Some(at) => {
                if at <= Instant::now() {
                    return;
                }
                if let Either::Left(_) = select(Box::pin(sleep_thawed_until(at)), changed).await {
                    return;
                }
            }
        }
    }
}

/// `future`'s output, unless `cutoff` (moved by freezes) comes first.
async fn within<F: std::future::Future>(cutoff: Instant, future: F) -> Option<F::Output> {
    match select(Box::pin(future), Box::pin(sleep_thawed_until(cutoff))).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(((), _)) => None,
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
        let watch = Arc::new(Watch::default());
        let primary_calls = calls.watched(watch.clone());
        let ask = |side: Side, which: Vec<usize>| -> BoxFuture<'_, Vec<ItemResult>> {
            match side {
                Side::Primary => {
                    let primary_calls = &primary_calls;
                    Box::pin(async move {
                        let asked: Vec<S::Item> = which.iter().map(|&i| items[i].clone()).collect();
                        self.primary.fetch(&asked, primary_calls).await
                    })
                }
                Side::Replica => {
                    let asked = self.replica_items(items, &which);
                    let replica_calls = &replica_calls;
                    Box::pin(async move { self.replica.fetch(&asked, replica_calls).await })
                }
            }
        };
        let spare: Vec<bool> = items.iter().map(|i| self.primary.fails_over(i)).collect();
        let answers = self.run(&spare, calls, &watch, true, ask).await;
        answers
            .into_iter()
            .zip(items)
            .map(|((answer, side), item)| {
                answer.map(|mut fetched| {
                    self.land(&mut fetched, side, false, self.primary.variant(item));
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
        // Not hedged (a refresh has its value to serve meanwhile), but watched: a refresh cut off
        // while its calls waited for the function's own rate limit says nothing of the primary.
        let watch = Arc::new(Watch::default());
        let primary_calls = calls.watched(watch.clone());
        let ask = |side: Side, which: Vec<usize>| -> BoxFuture<'_, Vec<RefreshResult>> {
            let versions: Vec<Option<String>> = which.iter().map(|&i| current[i].clone()).collect();
            match side {
                Side::Primary => {
                    let primary_calls = &primary_calls;
                    Box::pin(async move {
                        let asked: Vec<S::Item> = which.iter().map(|&i| items[i].clone()).collect();
                        self.primary.refresh(&asked, &versions, primary_calls).await
                    })
                }
                Side::Replica => {
                    let asked = self.replica_items(items, &which);
                    let replica_calls = &replica_calls;
                    Box::pin(async move { self.replica.refresh(&asked, &versions, replica_calls).await })
                }
            }
        };
        let spare: Vec<bool> = items.iter().map(|i| self.primary.fails_over(i)).collect();
        let answers = self.run(&spare, calls, &watch, false, ask).await;
        answers
            .into_iter()
            .zip(items)
            .map(|((answer, side), item)| match answer {
                Ok(Refreshed::Changed(mut fetched)) => {
                    if self.land(&mut fetched, side, true, self.primary.variant(item)) {
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
