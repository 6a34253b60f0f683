//! SnapStart: dropping every value before the snapshot, loading them again after a restore.
//!
//! Both are transitions of the unit state machine ([`Unit::seal`](super::unit::Unit::seal), then
//! the cold load's `loaded`), so a refresh under way when the values are dropped is superseded like
//! any other, and nothing from before the snapshot (values, versions, instants, backoffs) survives
//! the reload.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{cold_context, cold_targets, loaded, refresh, Store};
use crate::error::Failure;
use crate::time::later;

/// How long Lambda lets the after-restore hooks run before it fails the restore
/// (`SnapStartTimeoutException`): 10 s, less a margin for the runtime's own work.
pub(crate) const RESTORE_BUDGET: Duration = Duration::from_secs(9);

/// A source that does not honour its [`CallContext`]'s deadline is given up this long after it (the
/// store's usual grace is longer than a restore can afford).
const RESTORE_GRACE: Duration = Duration::from_millis(500);

/// Connections pooled before the snapshot are dead after a restore, and one whose peer forgot it
/// without a word is never answered: the first attempt of each call of the reload is abandoned
/// after this long (instead of the policy's attempt timeout, 3 s by default) and retried, on a new
/// connection.
pub(crate) const FIRST_ATTEMPT_AFTER_RESTORE: Duration = Duration::from_secs(1);

/// What a reload after a restore did (for the caller's log line).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reloaded {
    /// Values loaded.
    pub(crate) values: usize,
    /// Time the reload took.
    pub(crate) elapsed: std::time::Duration,
    /// Time from the end of the reload to the first refresh (the random phase drawn for it).
    pub(crate) first_refresh_in: std::time::Duration,
}

impl Store {
    /// Drops every value (each zeroizes its bytes when its last clone goes) and publishes a snapshot
    /// whose every read gives [`Error::DroppedForSnapshot`]. Returns the keys whose values are still
    /// held outside the store (a [`Snapshot`](crate::Snapshot) or [`SecretValue`](crate::SecretValue)
    /// kept past an invocation): those bytes stay in memory, hence in the snapshot.
    pub(crate) fn seal(&self) -> Vec<String> {
        let mut units = self.lock();
        let watched: Vec<_> = units
            .list
            .iter()
            .flat_map(|u| {
                u.values
                    .iter()
                    .map(|(key, (value, _))| (key.clone(), value.watch()))
            })
            .collect();
        for unit in &mut units.list {
            unit.seal();
        }
        units.sealed = true;
        self.publish(&units, Instant::now());
        drop(units);
        // Stops the refreshes under way (their calls, and what they would bring into memory).
        self.seals.send_modify(|n| *n += 1);
        // Wakes invocations waiting for a refresh: they now read the sealed snapshot.
        self.completed.send_modify(|n| *n += 1);
        let mut held: Vec<String> = watched
            .into_iter()
            .filter(|(_, watch)| watch.is_held())
            .map(|(key, _)| key.into())
            .collect();
        held.dedup();
        held
    }

    /// After a SnapStart restore (which began at `started`, and has reseeded the random generator
    /// and started the rate limits afresh): drops whatever the snapshot held, and loads every value
    /// again through the cold load's path (all sources concurrently, batched, rate-limited, within
    /// the load timeout and the [`RESTORE_BUDGET`]). Every unit gets a fresh random first-refresh
    /// phase. On failure the values stay dropped, and the failures name every key that could not be
    /// loaded.
    pub(crate) async fn reload(self: &Arc<Self>, started: Instant) -> Result<Reloaded, Vec<Failure>> {
        let _one_at_a_time = self.restoring.lock().await;
        let _ = self.seal();
        let targets = cold_targets(&self.lock().list);
        let deadline = later(started, self.config.load_timeout.min(RESTORE_BUDGET));
        let ctx = cold_context(&self.calls, &self.config, deadline)
            .first_attempt_timeout(FIRST_ATTEMPT_AFTER_RESTORE);
        let cut_at = later(started, RESTORE_BUDGET + RESTORE_GRACE);
        let results = match tokio::time::timeout_at(cut_at, refresh::fetch_all(&targets, &ctx, false)).await {
            Ok(results) => results,
            Err(_) => vec![Err(refresh::LOST_TIMED_OUT); targets.len()],
        };
        let now = Instant::now();
        let mut units = self.lock();
        let failures = loaded(&mut units.list, results, started, now, &self.config);
        if !failures.is_empty() {
            // Like a failed INIT: nothing half-loaded is served.
            for unit in &mut units.list {
                unit.seal();
            }
            drop(units);
            return Err(failures);
        }
        units.sealed = false;
        self.publish(&units, now);
        let first_refresh_in = units
            .list
            .iter()
            .filter_map(|u| u.due_at())
            .min()
            .map(|due| due.saturating_duration_since(now))
            .unwrap_or_default();
        drop(units);
        self.completed.send_modify(|n| *n += 1);
        self.emit_stats();
        Ok(Reloaded {
            values: self.current.load().values.len(),
            elapsed: now.saturating_duration_since(started),
            first_refresh_in,
        })
    }
}
