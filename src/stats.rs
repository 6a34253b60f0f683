//! [`Stats`]: the counters of a [`Secrets`](crate::Secrets) or an `OnDemand` cache.

use std::collections::BTreeMap;

/// Counters of a [`Secrets`](crate::Secrets) (all clones together) or an
/// [`OnDemand`](crate::OnDemand) cache, for metrics and alarms.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mem = lambda_secrets::MemorySource::new();
/// mem.set("/a", "1");
/// mem.set("/b", "2");
/// let secrets = lambda_secrets::Secrets::builder()
///     .add(mem.value("a", "/a"))
///     .add(mem.value("b", "/b"))
///     .load().await.unwrap();
/// assert_eq!(secrets.stats().calls["MemoryFetch"], 1);
/// # });
/// ```
///
/// It serializes (with `serde`) as one object, for a metrics line:
///
/// ```
/// let stats = lambda_secrets::Stats::default();
/// let line = serde_json::to_string(&stats).unwrap();
/// assert!(line.starts_with(r#"{"calls":{},"throttled":0,"#), "{line}");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// API calls per operation (`GetParameters`, ...), every attempt counted.
    pub calls: BTreeMap<String, u64>,
    /// Of [`calls`](Self::calls), those sent to a failover Region, per Region and operation
    /// (a source's `failover_region`); the rest went to the sources' own Regions. Left out of
    /// the serialized form when empty.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub failover_calls: BTreeMap<String, BTreeMap<String, u64>>,
    /// Calls answered with throttling.
    pub throttled: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// Successful refreshes of a source item (after the initial load).
    pub refreshes: u64,
    /// Failed refreshes (the last good value kept being served).
    pub refresh_failures: u64,
    /// Cache misses: reads that found a value due for refresh (it was served while the refresh
    /// ran, or, past the maximum staleness, after waiting). Hits are every other read; they are
    /// not counted, so that the warm path writes nothing shared.
    pub misses: u64,
    /// Reads that waited for values past their maximum staleness.
    pub waits: u64,
    /// On-demand entries evicted by the cache's bounds or expired (an `OnDemand` cache's only).
    pub evictions: u64,
}
