//! SnapStart: dropping every value before the snapshot, loading them again after a restore.
//!
//! Both are transitions of each entry's state machine (sealed, then the cold load's landing), so
//! a refresh under way when the values are dropped is superseded like any other, and nothing from
//! before the snapshot (values, versions, instants, backoffs) survives the reload.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{cold_context, cold_targets, land_cold_load, Store};
use crate::error::Failure;
use crate::freshness::fetch::{fetch_all, Answer, Mode, LOST_TIMED_OUT};
use crate::freshness::seal::{still_held, DRAIN, FIRST_ATTEMPT_AFTER_RESTORE};
use crate::time::later;

/// How long Lambda lets the after-restore hooks run before it fails the restore
/// (`SnapStartTimeoutException`): 10 s, less a margin for the runtime's own work.
pub(crate) const RESTORE_BUDGET: Duration = Duration::from_secs(9);

/// A source that does not honour its [`CallContext`](crate::CallContext)'s deadline is given up
/// this long after it (the store's usual grace is longer than a restore can afford).
const RESTORE_GRACE: Duration = Duration::from_millis(500);

/// What a reload after a restore did (for the caller's log line).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reloaded {
    /// Values loaded.
    pub(crate) values: usize,
    /// Time the reload took.
    pub(crate) elapsed: Duration,
    /// Time from the end of the reload to the first refresh (the random phase drawn for it).
    pub(crate) first_refresh_in: Duration,
}

impl Store {
    /// Drops every value (each zeroizes its bytes when its last clone goes), publishes a snapshot
    /// whose every read gives [`Error::DroppedForSnapshot`](crate::Error::DroppedForSnapshot),
    /// stops the refreshes under way and waits (at most a second) until none holds anything.
    /// Returns the keys whose values are still held outside the store (a
    /// [`Snapshot`](crate::Snapshot) or [`SecretValue`](crate::SecretValue) kept past an
    /// invocation): those bytes stay in memory, hence in the snapshot.
    pub(crate) async fn seal(&self) -> Vec<String> {
        let held = self.seal_entries();
        if !self.seal.drained(DRAIN).await {
            tracing::warn!(
                tasks = self.seal.live(),
                "lambda-secrets: refreshes under way did not stop within {DRAIN:?} of the SnapStart seal; what they hold may be in the snapshot"
            );
        }
        // A refresh that ran until the drain may have taken credentials again.
        crate::source::seal_each(self.lock().list.iter().map(|e| &e.source));
        still_held(held)
    }

    /// The sealing itself: values dropped, refreshes told to stop, waiters woken. Returns what
    /// watches the dropped values.
    fn seal_entries(&self) -> Vec<(String, crate::value::ValueWatch)> {
        let mut entries = self.lock();
        let watched: Vec<_> = entries
            .list
            .iter()
            .flat_map(|e| e.values.iter().map(|k| (k.key.to_string(), k.value.watch())))
            .collect();
        for entry in &mut entries.list {
            entry.seal();
        }
        crate::source::seal_each(entries.list.iter().map(|e| &e.source));
        entries.sealed = true;
        self.publish(&entries, Instant::now());
        drop(entries);
        // Stops the refreshes under way (their calls, and what they would bring into memory).
        self.seal.seal();
        // Wakes invocations waiting for a refresh: they now read the sealed snapshot.
        self.completed.send_modify(|n| *n += 1);
        watched
    }

    /// After a SnapStart restore (which began at `started`, and has reseeded the random generator
    /// and started the rate limits afresh): drops whatever the snapshot held, and loads every value
    /// again through the cold load's path (all sources concurrently, batched, rate-limited, within
    /// the load timeout and the [`RESTORE_BUDGET`]). Every entry gets a fresh random first-refresh
    /// phase. On failure the values stay dropped, and the failures name every key that could not be
    /// loaded.
    pub(crate) async fn reload(self: &Arc<Self>, started: Instant) -> Result<Reloaded, Vec<Failure>> {
        let _one_at_a_time = self.restoring.lock().await;
        let _ = self.seal_entries();
        let targets = cold_targets(&self.lock().list);
        let deadline = later(started, self.config.load_timeout.min(RESTORE_BUDGET));
        let ctx = cold_context(&self.calls, &self.config, deadline)
            .first_attempt_timeout(FIRST_ATTEMPT_AFTER_RESTORE);
        let cut_at = later(started, RESTORE_BUDGET + RESTORE_GRACE);
        let span = tracing::info_span!(
            "lambda_secrets.load",
            cache = "declared",
            sources = targets.len(),
            restore = true
        );
        let load = tracing::Instrument::instrument(fetch_all(&targets, &ctx, Mode::Load), span);
        let answers = match tokio::time::timeout_at(cut_at, load).await {
            Ok(answers) => answers,
            Err(_) => vec![Answer::Lost(LOST_TIMED_OUT); targets.len()],
        };
        let now = Instant::now();
        let mut entries = self.lock();
        let failures = land_cold_load(&mut entries.list, answers, started, now, &self.config);
        if !failures.is_empty() {
            super::count_load_failures(&failures);
            // Like a failed INIT: nothing half-loaded is served.
            for entry in &mut entries.list {
                entry.seal();
            }
            drop(entries);
            return Err(failures);
        }
        entries.sealed = false;
        self.publish(&entries, now);
        let first_refresh_in = entries
            .list
            .iter()
            .filter_map(|e| e.freshness.due_at())
            .min()
            .map(|due| due.saturating_duration_since(now))
            .unwrap_or_default();
        drop(entries);
        self.completed.send_modify(|n| *n += 1);
        self.emit_stats();
        Ok(Reloaded {
            values: self.current.load().values.len(),
            elapsed: now.saturating_duration_since(started),
            first_refresh_in,
        })
    }
}
