//! Snapshot publication: the immutable view invocations read, built from the entries.
//!
//! A snapshot carries, besides the values, the instants the warm path compares with: `check_at`
//! (something is due: a refresh to start, a refresh to watch, a value reaching its maximum
//! staleness) and `stale_at` (some value served now passes its maximum staleness: invocations
//! wait for its refresh). A value as old as its maximum staleness is published as unserved (its
//! reads give `Error::Expired`); an entry whose refresh is under way has no due instant: its
//! refresh ends through one transition that publishes again, however it ends.

use std::collections::HashMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use tokio::time::Instant;

use super::entry::Entry;
use crate::freshness::fetch::GRACE;
use crate::snapshot::{Published, SnapshotData};
use crate::time::never;

/// A key produced by two entries: (key, kept, ignored).
pub(crate) type Duplicate = (String, String, String);

/// The instants the warm path compares with: (check_at, stale_at).
fn timing(entries: &[Entry], now: Instant) -> (Instant, Instant) {
    let far = never(now);
    let (mut next_check, mut stale_at) = (far, far);
    for freshness in entries.iter().map(|e| &e.freshness).filter(|f| !f.is_sealed()) {
        if let Some(due) = freshness.due_at() {
            next_check = next_check.min(due);
        }
        if let Some(watch) = freshness.watch_at(GRACE) {
            next_check = next_check.min(watch);
        }
        if freshness.is_worth_waiting_for() {
            stale_at = stale_at.min(freshness.stale_at());
        }
    }
    (next_check.min(stale_at), stale_at)
}

/// How many entries are unserved at `now` (expired, or as old as their maximum staleness).
fn unserved(entries: &[Entry], now: Instant) -> usize {
    entries
        .iter()
        .filter(|e| e.freshness.unserved_cause(now).is_some())
        .count()
}

/// A new snapshot of the entries' values as of `now`, and the keys produced twice. Explicitly
/// declared keys win over keys found under a path (a parameter created under a path can never
/// shadow a declared credential); between two paths, the first declared wins.
pub(crate) fn build(entries: &[Entry], now: Instant, sealed: bool) -> (SnapshotData, Vec<Duplicate>) {
    let mut values: FxHashMap<Box<str>, Published> = FxHashMap::default();
    let mut owner: HashMap<&str, usize> = HashMap::new();
    let mut duplicates = Vec::new();
    let explicit_first = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.item.tree)
        .chain(entries.iter().enumerate().filter(|(_, e)| e.item.tree));
    for (index, entry) in explicit_first {
        let expired = entry.freshness.unserved_cause(now).map(Arc::new);
        for keyed in &entry.values {
            if let Some(&first) = owner.get(&*keyed.key) {
                if first != index {
                    duplicates.push((keyed.key.to_string(), entries[first].label(), entry.label()));
                }
                continue;
            }
            owner.insert(&keyed.key, index);
            values.insert(
                keyed.key.clone(),
                Published {
                    value: keyed.value.clone(),
                    info: keyed.info.clone(),
                    entry: index,
                    expired: expired.clone(),
                },
            );
        }
    }
    let (check_at, stale_at) = timing(entries, now);
    let data = SnapshotData {
        values: Arc::new(values),
        check_at,
        stale_at,
        sealed,
        unserved: unserved(entries, now),
    };
    (data, duplicates)
}

/// The same values with new timing, when nothing a reader sees changed (a refresh started);
/// `None` when a value became unserved since `current` was built (it must be built anew).
pub(crate) fn retime(current: &SnapshotData, entries: &[Entry], now: Instant) -> Option<SnapshotData> {
    if unserved(entries, now) != current.unserved {
        return None;
    }
    let (check_at, stale_at) = timing(entries, now);
    Some(SnapshotData {
        values: current.values.clone(),
        check_at,
        stale_at,
        sealed: current.sealed,
        unserved: current.unserved,
    })
}
