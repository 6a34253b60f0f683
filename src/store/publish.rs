//! Snapshot publication: the immutable view invocations read, built from the units.
//!
//! A snapshot carries, besides the values, the two instants the warm path compares with:
//! `check_at` (something is due: a refresh to start, or a staleness limit) and `stale_at` (some
//! value passes its maximum staleness: invocations wait). A unit whose refresh is under way has
//! no due instant: its refresh ends through one transition that publishes again, however it
//! ends, so no invocation needs to look before then.

use std::collections::HashMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use tokio::time::Instant;

use super::unit::Unit;
use crate::snapshot::{Slot, SnapshotData};
use crate::time::never;

/// A key produced by two units: (key, kept, ignored).
pub(crate) type Duplicate = (String, String, String);

/// The instants the warm path compares with.
pub(crate) fn timing(units: &[Unit], now: Instant) -> (Instant, Instant) {
    let far = never(now);
    let (mut next_due, mut stale_at) = (far, far);
    for unit in units.iter().filter(|u| !u.is_sealed()) {
        if let Some(due) = unit.due_at() {
            next_due = next_due.min(due);
        }
        if !unit.is_expired() {
            stale_at = stale_at.min(unit.stale_at());
        }
    }
    (next_due.min(stale_at), stale_at)
}

/// A new snapshot with new values.
pub(crate) fn build(
    units: &[Unit],
    now: Instant,
    sealed: bool,
    duplicates: &mut Vec<Duplicate>,
) -> SnapshotData {
    let mut values: FxHashMap<Box<str>, Slot> = FxHashMap::default();
    let mut owner: HashMap<&str, usize> = HashMap::new();
    // Explicitly declared keys win over keys found under a path: a parameter created under a
    // path can never shadow a declared credential.
    let explicit_first = units
        .iter()
        .enumerate()
        .filter(|(_, u)| !u.item.tree)
        .chain(units.iter().enumerate().filter(|(_, u)| u.item.tree));
    for (index, unit) in explicit_first {
        let expired = unit.expired_cause();
        for (key, (value, info)) in &unit.values {
            if let Some(&first) = owner.get(&**key) {
                if first != index {
                    duplicates.push((key.to_string(), units[first].describe(), unit.describe()));
                }
                continue;
            }
            owner.insert(key, index);
            values.insert(
                key.clone(),
                Slot {
                    value: value.clone(),
                    info: info.clone(),
                    unit: index,
                    expired: expired.clone(),
                },
            );
        }
    }
    let (check_at, stale_at) = timing(units, now);
    SnapshotData {
        values: Arc::new(values),
        check_at,
        stale_at,
        sealed,
    }
}

/// The same values with new timing (a refresh started: nothing a reader sees changed).
pub(crate) fn retime(current: &SnapshotData, units: &[Unit], now: Instant) -> SnapshotData {
    let (check_at, stale_at) = timing(units, now);
    SnapshotData {
        values: current.values.clone(),
        check_at,
        stale_at,
        sealed: current.sealed,
    }
}
