//! A lookup: a hit answered from the cache (starting its refresh when due), or a miss fetched in a
//! batch. Not found and denied are cached as negative answers; other failures are errors, not
//! cached.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::entry::{Entry, Found, NameSpec};
use super::Inner;
use crate::error::{CallError, CallErrorKind, Error, Failure, ItemError};
use crate::freshness::bind::{bind, KeyBinding};
use crate::freshness::dates::Dates;
use crate::freshness::fetch::{FetchTarget, Mode};
use crate::freshness::state::Freshness;
use crate::snapshot::ValueInfo;
use crate::source::{Fetched, Refreshed};
use crate::value::SecretValue;

impl Inner {
    /// The value for `name`, waiting at most `budget` for a fetch.
    pub(super) async fn lookup(
        self: &Arc<Self>,
        name: &str,
        budget: Duration,
    ) -> Result<(SecretValue, Arc<ValueInfo>), Error> {
        // Read before `sealed`: a snapshot taken after this point changes it, and the fetch below
        // then does not cache its answer.
        let epoch = self.seal.epoch();
        if self.sealed.load(Ordering::Acquire) {
            return Err(Error::DroppedForSnapshot { key: name.to_owned() });
        }
        let now = Instant::now();
        if let Some(entry) = self.cache.get(name).await {
            if let Some(answer) = self.answer(name, &entry, now) {
                self.hits.hit();
                return answer;
            }
            // Past its maximum staleness, or a negative answer past its TTL: fetch again (unless
            // another lookup replaced it meanwhile).
            self.replace(name, &entry, None).await;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(lookup_failure(
                name,
                ItemError::Source("OnDemand lookups run on a tokio runtime".into()),
            ));
        }
        // The fetch has the cache's own budget, whoever asks first: concurrent lookups of the name
        // share it, and one that gives up early (its own `budget`) fails nobody else. It runs on a
        // task of its own, so that a lookup giving up never cancels it (moka would start it again
        // for the next waiter).
        let inner = self.clone();
        let owned = name.to_owned();
        // The fetch's span is the lookup's child (the task does not inherit the lookup's span).
        let lookup = tracing::Span::current();
        let fetch = tokio::spawn(async move {
            // Counted by the seal: `before_snapshot` waits for this task, which may hold the
            // answer, whether or not its lookup still waits for it.
            let _live = inner.seal.task();
            let init = {
                let (inner, owned) = (inner.clone(), owned.clone());
                let span = tracing::info_span!(parent: &lookup, "lambda_secrets.load", cache = "on-demand", sources = 1);
                tracing::Instrument::instrument(async move { inner.fetch(&owned, epoch).await }, span)
            };
            let entry = inner.cache.try_get_with(owned.clone(), init).await;
            if let Ok(cached) = &entry {
                if inner.seal.epoch() != epoch {
                    // A SnapStart snapshot was taken while this fetch ran, and the cache may have
                    // taken its answer after the seal emptied it: dropped here, whether or not the
                    // lookup still waits.
                    inner.replace(&owned, cached, None).await;
                }
            }
            // moka applies evictions lazily: apply them now, so that both bounds hold whenever a
            // lookup returns (and once this task ends, if its lookup gave up).
            inner.cache.run_pending_tasks().await;
            entry
        });
        let entry = match tokio::time::timeout(budget, fetch).await {
            Ok(Ok(entry)) => entry.map_err(|e| Error::clone(&e))?,
            Ok(Err(_)) => {
                return Err(lookup_failure(
                    name,
                    ItemError::Source("the lookup's fetch panicked or its runtime shut down".into()),
                ))
            }
            Err(_) => {
                return Err(lookup_failure(
                    name,
                    ItemError::Call(CallError::new(
                        CallErrorKind::Transient,
                        format!("no answer within the lookup's budget of {budget:?} (the fetch goes on)"),
                    )),
                ))
            }
        };
        if self.seal.epoch() != epoch {
            // A SnapStart snapshot was taken while this lookup ran (the cache may have taken the
            // answer after the seal emptied it): what it found is from before the snapshot.
            self.replace(name, &entry, None).await;
            return Err(Error::DroppedForSnapshot { key: name.to_owned() });
        }
        entry_result(name, &entry)
    }

    /// Fetches `name` (a miss): declared by the closure, coalesced with other misses. `epoch`: the
    /// seals when the lookup began.
    pub(super) async fn fetch(&self, name: &str, epoch: u64) -> Result<Entry, Error> {
        let decl = (self.declare)(name);
        self.sources.note(&decl.source);
        if let Some((what, input, reason)) = decl.invalid {
            return Err(Error::InvalidInput { what, input, reason });
        }
        if decl.item.tree {
            return Err(Error::invalid_input(
                "on-demand name",
                name,
                "it was declared as a tree (a path); an on-demand name stands for one value",
            ));
        }
        let settings = &self.settings.freshness;
        let timing = settings.timing(decl.ttl, 0.0, &format!("on-demand name `{name}`"))?;
        let spec = Arc::new(NameSpec {
            source: decl.source,
            item: decl.item,
            field: decl.field,
            timing,
        });
        // A miss is a valid name fetched (bad input is an error, not a miss).
        self.misses.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::miss(crate::telemetry::Cache::OnDemand);
        let started = Instant::now();
        let target = FetchTarget {
            source: spec.source.clone(),
            item: spec.item.clone(),
            version: None,
        };
        let answer = self.batcher.fetch(target, Mode::Load, epoch).await;
        if self.seal.epoch() != epoch {
            // A SnapStart snapshot was taken meanwhile: the answer is from before it, and is not
            // cached (its bytes go with this future).
            return Err(Error::DroppedForSnapshot { key: name.to_owned() });
        }
        let now = Instant::now();
        let found = match answer.into_result() {
            Ok(Refreshed::Changed(fetched)) => bind_found(&spec, name, fetched, now),
            Ok(Refreshed::Unchanged { .. }) => Err(ItemError::NotFound),
            Err(e) => Err(e),
        };
        match found {
            Ok(found) => {
                let mut freshness = Freshness::new(timing.ttl, timing.staleness, started);
                let dates = Dates::of_info(&found.info);
                freshness.fetched(started, now, dates, settings, crate::random::f64());
                Ok(Entry::found(Arc::new(found), freshness))
            }
            Err(error @ (ItemError::NotFound | ItemError::Denied { .. })) => {
                crate::telemetry::load_failures(crate::telemetry::Cache::OnDemand, spec.source.kind(), 1);
                Ok(Entry::failed(
                    spec.failure(name, error),
                    now,
                    self.settings.negative_ttl,
                ))
            }
            Err(error) => {
                crate::telemetry::load_failures(crate::telemetry::Cache::OnDemand, spec.source.kind(), 1);
                Err(Error::Load {
                    failures: vec![spec.failure(name, error)],
                })
            }
        }
    }

    /// Puts `fresh` in place of `old` (or removes `old` when `fresh` is `None`), only if `old` is
    /// still the entry cached for `name`.
    pub(super) async fn replace(&self, name: &str, old: &Entry, fresh: Option<Entry>) {
        use moka::ops::compute::Op;
        self.cache
            .entry_by_ref(name)
            .and_compute_with(|current| {
                let same = current.is_some_and(|c| c.into_value().same(old));
                std::future::ready(match (same, fresh) {
                    (true, Some(fresh)) => Op::Put(fresh),
                    (true, None) => Op::Remove,
                    (false, _) => Op::Nop,
                })
            })
            .await;
    }
}

/// Binds a source's answer to a name: its first value (an on-demand name is one value), or its
/// JSON field.
pub(super) fn bind_found(
    spec: &Arc<NameSpec>,
    name: &str,
    fetched: Vec<Fetched>,
    at: Instant,
) -> Result<Found, ItemError> {
    let keys = [KeyBinding {
        key: name.to_owned(),
        field: spec.field.clone(),
    }];
    let bound =
        bind(spec.source.kind(), false, &keys, fetched, at).map_err(|mut failed| failed.swap_remove(0).1)?;
    let keyed = bound.values.into_iter().next().ok_or(ItemError::NotFound)?;
    Ok(Found::new(spec.clone(), keyed.value, keyed.info))
}

/// A lookup that failed before reaching a source (no runtime, out of budget).
fn lookup_failure(name: &str, error: ItemError) -> Error {
    Error::Load {
        failures: vec![Failure::new(name, "on-demand", name, error)],
    }
}

/// What a cached entry answers.
pub(super) fn entry_result(name: &str, entry: &Entry) -> Result<(SecretValue, Arc<ValueInfo>), Error> {
    match &entry.0.answer {
        Ok(found) => match found.value() {
            Some(value) => Ok((value, found.info.clone())),
            None => Err(Error::DroppedForSnapshot { key: name.to_owned() }),
        },
        Err(failure) => Err(Error::Load {
            failures: vec![failure.clone()],
        }),
    }
}
