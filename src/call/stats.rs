//! [`CallStats`]: API calls counted per operation, throttled answers and retries, and the
//! warn-once memory of final failures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::CallError;
use crate::telemetry::{self, Cache};

/// Distinct final failures logged as warnings per [`Secrets`](crate::Secrets); later ones are
/// logged at debug level.
const WARNED_CAUSES: usize = 256;

/// Per-operation API call counts and retry figures, shared by all clones of a [`Secrets`](crate::Secrets)
/// (or an `OnDemand` cache); each is also recorded as a metric (`crate::telemetry`).
#[derive(Debug, Default)]
pub(crate) struct CallStats {
    /// The cache whose calls these are (the metrics' `cache` label).
    cache: Cache,
    calls: Mutex<BTreeMap<&'static str, u64>>,
    /// Calls to failover Regions, per Region and operation (also counted in `calls`).
    regional: Mutex<BTreeMap<(std::sync::Arc<str>, &'static str), u64>>,
    pub(super) throttled: AtomicU64,
    pub(super) retries: AtomicU64,
    /// Final failures already logged as warnings: hashes of (operation, message, AWS message).
    warned: Mutex<std::collections::HashSet<u64>>,
}

impl CallStats {
    /// The counters of `cache`'s calls.
    pub(crate) fn of(cache: Cache) -> CallStats {
        CallStats {
            cache,
            ..CallStats::default()
        }
    }

    /// The cache whose calls these are.
    pub(crate) fn cache(&self) -> Cache {
        self.cache
    }

    pub(crate) fn calls(&self) -> BTreeMap<String, u64> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    /// Whether `err` is the first final failure of `operation` with this message and AWS message
    /// (to warn once per distinct answer). Past [`WARNED_CAUSES`] distinct answers, none is new.
    pub(super) fn first_failure(&self, operation: &'static str, err: &CallError) -> bool {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (operation, err.message(), err.aws_message()).hash(&mut hasher);
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        warned.len() < WARNED_CAUSES && warned.insert(hasher.finish())
    }

    /// The call counters as [`Stats`](crate::Stats) (the cache fills in its own).
    pub(crate) fn stats(&self) -> crate::stats::Stats {
        let mut failover_calls: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for ((region, operation), n) in self.regional.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            failover_calls
                .entry(region.to_string())
                .or_default()
                .insert((*operation).to_owned(), *n);
        }
        crate::stats::Stats {
            calls: self.calls(),
            failover_calls,
            throttled: self.throttled.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            ..Default::default()
        }
    }

    /// An attempt that was a retry.
    pub(super) fn retried(&self, source: &'static str, operation: &'static str) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        telemetry::aws(telemetry::AWS_RETRIES, self.cache, source, operation);
    }

    /// A throttled answer.
    pub(super) fn throttled(&self, source: &'static str, operation: &'static str) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        telemetry::aws(telemetry::AWS_THROTTLED, self.cache, source, operation);
    }

    /// An attempt (`source`: the service of its quota, the metric's label).
    pub(super) fn count(
        &self,
        source: &'static str,
        operation: &'static str,
        region: Option<&std::sync::Arc<str>>,
    ) {
        telemetry::aws(telemetry::AWS_CALLS, self.cache, source, operation);
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        *calls.entry(operation).or_default() += 1;
        drop(calls);
        if let Some(region) = region {
            let mut regional = self.regional.lock().unwrap_or_else(|e| e.into_inner());
            *regional.entry((region.clone(), operation)).or_default() += 1;
        }
    }
}
