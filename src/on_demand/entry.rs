//! What the cache holds for a name: its value and [`Freshness`] (the state machine every value
//! goes through), or why there is none (not found, denied); and how moka weighs and expires it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Failure;
use crate::freshness::settings::Timing;
use crate::freshness::state::Freshness;
use crate::snapshot::ValueInfo;
use crate::source::{AnyItem, DynSource};
use crate::time::later;
use crate::value::SecretValue;

/// What a name is fetched as: its declaration's source, item and JSON field, and its TTL and
/// maximum staleness. Shared by every answer for the name.
pub(super) struct NameSpec {
    pub(super) source: Arc<dyn DynSource>,
    pub(super) item: AnyItem,
    pub(super) field: Option<String>,
    pub(super) timing: Timing,
}

impl NameSpec {
    pub(super) fn failure(&self, name: &str, error: crate::error::ItemError) -> Failure {
        Failure::new(name, self.source.kind(), self.item.to_string(), error)
    }
}

/// A name's value, and where it came from.
pub(super) struct Found {
    pub(super) spec: Arc<NameSpec>,
    /// Emptied by a SnapStart seal: moka drops the entries it removes lazily (a removed entry may
    /// stay referenced by its pending maintenance for a while, longer on a busy machine), so the
    /// seal takes the plaintext out of every entry it can reach rather than rely on that.
    value: std::sync::Mutex<Option<SecretValue>>,
    /// The value's length (what the cache weighs), kept after the seal.
    pub(super) bytes: usize,
    pub(super) info: Arc<ValueInfo>,
}

impl Found {
    pub(super) fn new(spec: Arc<NameSpec>, value: SecretValue, info: Arc<ValueInfo>) -> Self {
        Found {
            spec,
            bytes: value.len(),
            value: std::sync::Mutex::new(Some(value)),
            info,
        }
    }

    /// The value (a reference count); `None` once sealed.
    pub(super) fn value(&self) -> Option<SecretValue> {
        self.lock().clone()
    }

    /// Drops the value (it zeroizes its bytes when its last clone goes): a SnapStart snapshot is
    /// about to be taken. Returns what watches it, to tell whether a clone is still held.
    pub(super) fn seal(&self) -> Option<crate::value::ValueWatch> {
        self.lock().take().map(|v| v.watch())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SecretValue>> {
        self.value.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cached answer for one name (cloning it is a reference count).
#[derive(Clone)]
pub(super) struct Entry(pub(super) Arc<EntryData>);

pub(super) struct EntryData {
    /// The value, or the failure to report for the name (not found, denied).
    pub(super) answer: Result<Arc<Found>, Failure>,
    /// When the value (or the failure) arrived: its age counts from here.
    pub(super) fetched_at: Instant,
    /// From when the value is no longer served (its maximum staleness, or its expiry if sooner):
    /// a lookup then fetches it again first.
    pub(super) stale_at: Instant,
    /// When something is due (a refresh, a look at the refresh under way), in nanoseconds after
    /// `fetched_at`: one atomic load on a hit.
    due_after: AtomicU64,
    /// A value's state machine (locked on the refresh path only); `None` for a failure.
    freshness: Option<Mutex<Freshness>>,
}

impl Entry {
    /// A value, with its freshness (which says when its refresh is due).
    pub(super) fn found(found: Arc<Found>, freshness: Freshness) -> Self {
        let due = freshness.due_at();
        let entry = Entry(Arc::new(EntryData {
            answer: Ok(found),
            fetched_at: freshness.fetched_at(),
            stale_at: freshness.stale_at(),
            due_after: AtomicU64::new(0),
            freshness: Some(Mutex::new(freshness)),
        }));
        if let Some(due) = due {
            entry.due_at(due);
        }
        entry
    }

    /// A failure (not found, denied), fetched again after `negative_ttl`.
    pub(super) fn failed(failure: Failure, now: Instant, negative_ttl: Duration) -> Self {
        let entry = Entry(Arc::new(EntryData {
            answer: Err(failure),
            fetched_at: now,
            stale_at: crate::time::never(now),
            due_after: AtomicU64::new(0),
            freshness: None,
        }));
        entry.due_at(later(now, negative_ttl));
        entry
    }

    /// Bytes of the value (for the byte bound).
    pub(super) fn bytes(&self) -> usize {
        match &self.0.answer {
            Ok(found) => found.bytes,
            Err(_) => 0,
        }
    }

    /// When something is due.
    pub(super) fn due(&self) -> Instant {
        later(
            self.0.fetched_at,
            Duration::from_nanos(self.0.due_after.load(Ordering::Acquire)),
        )
    }

    /// Sets when something is due.
    pub(super) fn due_at(&self, at: Instant) {
        let after = at.saturating_duration_since(self.0.fetched_at).as_nanos();
        self.0
            .due_after
            .store(u64::try_from(after).unwrap_or(u64::MAX), Ordering::Release);
    }

    /// The value's state machine (`None` for a failure).
    pub(super) fn freshness(&self) -> Option<MutexGuard<'_, Freshness>> {
        self.0
            .freshness
            .as_ref()
            .map(|f| f.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether `self` and `other` are the same cached answer.
    pub(super) fn same(&self, other: &Entry) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Keeps an entry in memory until its maximum staleness (values) or its negative TTL (not found,
/// denied); the cache's clock is its own, so the logical checks of a lookup use tokio's.
pub(super) struct EntryExpiry {
    pub(super) negative_ttl: Duration,
}

impl moka::Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: std::time::Instant) -> Option<Duration> {
        Some(self.keep(entry))
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.keep(entry))
    }
}

impl EntryExpiry {
    fn keep(&self, entry: &Entry) -> Duration {
        match &entry.0.answer {
            Ok(found) => found.spec.timing.staleness,
            Err(_) => self.negative_ttl,
        }
    }
}

/// The two bounds as one weighted capacity of `max_bytes`: every entry weighs the larger of its
/// bytes (name and value) and an equal share of the byte budget, rounded up, so that the cache
/// holds at most `max_entries` entries (each weighs at least a share, and `max_entries` shares are
/// at least `max_bytes`) and at most `max_bytes` bytes (each weighs at least its bytes).
pub(super) fn weigher(
    max_entries: u64,
    max_bytes: u64,
) -> impl Fn(&String, &Entry) -> u32 + Send + Sync + 'static {
    let share = max_bytes.div_ceil(max_entries);
    move |name, entry| u32::try_from(share.max((name.len() + entry.bytes()) as u64)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weights_share_round_up_so_the_entry_bound_holds() {
        // With a share rounded down (100 / 30 = 3), 33 empty names would fit in 100.
        let (max_entries, max_bytes) = (30u64, 100u64);
        let weigh = weigher(max_entries, max_bytes);
        let failure = Failure::new("n", "memory", "n", crate::error::ItemError::NotFound);
        let entry = Entry::failed(failure, Instant::now(), Duration::from_secs(1));
        let one = u64::from(weigh(&String::new(), &entry));
        assert!(max_bytes / one <= max_entries, "{one}");
    }
}
