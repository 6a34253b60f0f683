//! `refresh_now`: a forced refresh of one key (a downstream rejected its credential), joined by
//! concurrent callers, at most once per interval, superseding a background refresh under way.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Store;
use crate::error::{CallError, CallErrorKind, Error, Failure, ItemError};
use crate::snapshot::Snapshot;

impl Store {
    /// Fetches `key`'s item now, at once (no spreading), superseding a background refresh of it
    /// under way. Joins a forced refresh of it that is under way. Within the configured interval
    /// after a forced refresh, makes no call: returns the current snapshot if that refresh
    /// succeeded, its error if it failed. Needs no timer of its own (the refresh has its budget),
    /// so it can be awaited from any executor once `load()` has run on a tokio runtime.
    pub(crate) async fn refresh_now(self: &Arc<Self>, key: &str) -> Result<Snapshot, Error> {
        let current = self.current.load_full();
        let Some(index) = current.values.get(key).map(|p| p.entry) else {
            return Err(match current.sealed {
                true => Error::DroppedForSnapshot { key: key.to_owned() },
                false => Error::MissingKey { key: key.to_owned() },
            });
        };
        let mut done = self.completed.subscribe();
        let generation = {
            let mut entries = self.lock();
            if entries.sealed {
                // Dropped for a SnapStart snapshot since `current` was read: nothing is fetched
                // before the restore (it would put a value in the snapshot).
                return Err(Error::DroppedForSnapshot { key: key.to_owned() });
            }
            let now = Instant::now();
            let entry = &entries.list[index];
            let under_way = entry
                .forced_at
                .filter(|(_, g)| entry.freshness.refreshing().is_some_and(|r| r.generation == *g));
            let recent = entry
                .forced_at
                .filter(|(at, _)| now.saturating_duration_since(*at) < self.config.refresh_now_interval);
            match (under_way, recent) {
                // A forced refresh is under way: join it (whatever the interval).
                (Some((_, generation)), _) => generation,
                (None, Some((_, generation))) => {
                    tracing::debug!(key, "refresh_now: forced refresh too recent; no call made");
                    return match &entry.finished {
                        (finished, Some(error)) if *finished == generation => Err(Error::Load {
                            failures: entry.failures(error),
                        }),
                        _ => Ok(self.current()),
                    };
                }
                (None, None) => {
                    let refresh = self.begin(&mut entries, vec![index], now, Duration::ZERO, true);
                    let generation = refresh.generation();
                    entries.list[index].forced_at = Some((now, generation));
                    drop(entries);
                    self.spawn(refresh);
                    generation
                }
            }
        };
        loop {
            {
                let entries = self.lock();
                let entry = &entries.list[index];
                let (finished, error) = &entry.finished;
                if *finished >= generation {
                    return match error {
                        None => Ok(self.current()),
                        Some(e) => Err(Error::Load {
                            failures: entry.failures(e),
                        }),
                    };
                }
                if entry
                    .freshness
                    .refreshing()
                    .is_none_or(|r| r.generation != generation)
                {
                    // Superseded without finishing: the values were dropped for a SnapStart
                    // snapshot (and maybe loaded again since).
                    return match entries.sealed {
                        true => Err(Error::DroppedForSnapshot { key: key.to_owned() }),
                        false => Ok(self.current()),
                    };
                }
            }
            if done.changed().await.is_err() {
                return Ok(self.current()); // the store is gone; cannot happen while `self` lives
            }
        }
    }

    /// [`refresh_now`](Self::refresh_now), waiting at most `budget` for it (the refresh goes on in
    /// the background if the budget runs out first). Needs a tokio runtime (for the timer).
    pub(crate) async fn refresh_now_within(
        self: &Arc<Self>,
        key: &str,
        budget: Duration,
    ) -> Result<Snapshot, Error> {
        match tokio::time::timeout(budget, self.refresh_now(key)).await {
            Ok(result) => result,
            Err(_) => {
                let current = self.current.load();
                let (source, id) = current
                    .values
                    .get(key)
                    .map(|p| (p.info.source, p.info.name.clone()))
                    .unwrap_or(("", String::new()));
                Err(Error::Load {
                    failures: vec![Failure::new(
                        key,
                        source,
                        id,
                        ItemError::Call(CallError::new(
                            CallErrorKind::Transient,
                            format!("refresh_now: no answer within its budget of {budget:?} (the refresh goes on)"),
                        )),
                    )],
                })
            }
        }
    }
}
