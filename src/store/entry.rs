//! [`Entry`]: one distinct (source, item), the keys bound to it, its values, and its
//! [`Freshness`] (the state machine every value goes through, in `freshness/state.rs`).

use std::sync::Arc;

use tokio::time::Instant;

use crate::error::{Failure, ItemError};
use crate::freshness::bind::{self, Bound, KeyBinding, Keyed};
use crate::freshness::settings::{Settings, Timing};
use crate::freshness::state::{Freshness, Outcome, Transition};
use crate::source::{AnyItem, DynSource, Fetched};

/// One distinct (source, item) and the keys bound to it.
pub(crate) struct Entry {
    pub(crate) source: Arc<dyn DynSource>,
    pub(crate) item: AnyItem,
    pub(crate) keys: Vec<KeyBinding>,
    pub(crate) values: Vec<Keyed>,
    /// Version of a single value, handed to [`Source::refresh`](crate::Source::refresh).
    pub(crate) version: Option<String>,
    pub(crate) freshness: Freshness,
    /// The last forced refresh and its generation (`refresh_now`'s guard).
    pub(crate) forced_at: Option<(Instant, u64)>,
    /// The last generation that finished, and whether it failed (for `refresh_now`).
    pub(crate) finished: (u64, Option<ItemError>),
    /// The cause of the failing streak, as last logged (a key is logged again when it changes).
    pub(crate) failing_with: Option<ItemError>,
}

impl Entry {
    pub(crate) fn new(source: Arc<dyn DynSource>, item: AnyItem, timing: Timing, now: Instant) -> Self {
        Entry {
            source,
            item,
            keys: Vec::new(),
            values: Vec::new(),
            version: None,
            freshness: Freshness::new(timing.ttl, timing.staleness, now),
            forced_at: None,
            finished: (0, None),
            failing_with: None,
        }
    }

    /// The source and item, as errors and logs name them (``ssm `/prod/db` ``).
    pub(crate) fn label(&self) -> String {
        format!("{} `{}`", self.source.kind(), self.item)
    }

    pub(crate) fn failure(&self, key: &str, error: &ItemError) -> Failure {
        Failure::new(key, self.source.kind(), self.item.to_string(), error.clone())
    }

    /// One failure per key bound to the entry.
    pub(crate) fn failures(&self, error: &ItemError) -> Vec<Failure> {
        self.keys.iter().map(|b| self.failure(&b.key, error)).collect()
    }

    pub(crate) fn key_list(&self) -> Vec<&str> {
        self.keys.iter().map(|b| b.key.as_str()).collect()
    }

    /// Binds fetched values to this entry's keys (taking JSON fields where asked); fails with one
    /// failure per key that cannot be bound.
    pub(crate) fn bind(&self, fetched: Vec<Fetched>, at: Instant) -> Result<Bound, Vec<Failure>> {
        bind::bind(self.source.kind(), self.item.tree, &self.keys, fetched, at).map_err(|failed| {
            failed
                .into_iter()
                .map(|(key, error)| self.failure(&key, &error))
                .collect()
        })
    }

    /// Ends the refresh `generation` with `outcome` (see [`Freshness::finish`]) and puts new
    /// values in place. `None` when `generation` is not the refresh under way.
    pub(crate) fn finish(
        &mut self,
        generation: u64,
        outcome: Outcome<Bound>,
        now: Instant,
        settings: &Settings,
        random: f64,
    ) -> Option<Transition<()>> {
        let refresh_by = match &outcome {
            Outcome::Unchanged { refresh_by } => Some(*refresh_by),
            _ => None,
        };
        let transition = match self
            .freshness
            .finish(generation, outcome, now, settings, random)?
        {
            Transition::Refreshed(Some(bound)) => {
                self.values = bound.values;
                self.version = bound.version;
                self.finished = (generation, None);
                Transition::Refreshed(None)
            }
            Transition::Refreshed(None) => {
                bind::confirmed(&mut self.values, refresh_by.flatten(), now);
                self.finished = (generation, None);
                Transition::Refreshed(None)
            }
            Transition::Failed {
                failures,
                retry_in,
                expired,
                error,
            } => {
                self.finished = (generation, Some(error.clone()));
                Transition::Failed {
                    failures,
                    retry_in,
                    expired,
                    error,
                }
            }
        };
        Some(transition)
    }

    /// A source's answer to a refresh, as the state machine takes it.
    pub(crate) fn outcome(&self, answer: crate::freshness::fetch::Answer, at: Instant) -> Outcome<Bound> {
        answer.outcome(|fetched| match self.bind(fetched, at) {
            Ok(bound) => {
                let timing = bound.timing;
                Ok((bound, timing))
            }
            Err(failures) => Err(failures
                .into_iter()
                .next()
                .map(|f| f.error)
                .unwrap_or(ItemError::NotFound)),
        })
    }

    /// Any state -> sealed: drops the values (each zeroizes its bytes when its last clone goes).
    pub(crate) fn seal(&mut self) {
        self.values = Vec::new();
        self.version = None;
        self.forced_at = None;
        self.failing_with = None;
        self.freshness.seal();
    }

    /// After a cold load that started at `since`: the values arrived `now`; the first refresh
    /// comes at `phase` of the TTL.
    pub(crate) fn loaded(
        &mut self,
        bound: Bound,
        since: Instant,
        now: Instant,
        phase: f64,
        settings: &Settings,
    ) {
        self.values = bound.values;
        self.version = bound.version;
        self.freshness.loaded(since, now, bound.timing, phase, settings);
    }
}
