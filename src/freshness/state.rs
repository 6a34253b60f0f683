//! [`Freshness`]: where one value (a declared entry, or an on-demand name) stands between two
//! fetches, as one explicit state machine shared by both caches.
//!
//! ```text
//!            start                      finish(ok)
//!   Fresh ─────────────▶ Refreshing ─────────────────▶ Fresh
//!     ▲                   │     ▲ start                 (next refresh from the schedule)
//!     │ finish(ok)        │     │
//!     │                   ▼     │
//!     └──────────────── Failing ◀── finish(error | lost | timed out | never ran)
//!                                   (backoff; expired once past the maximum staleness)
//!
//!   any state ── seal ──▶ Sealed ── loaded ──▶ Fresh     (SnapStart: values dropped before the
//!                                                        snapshot, fetched again after a restore)
//! ```
//!
//! Every way a refresh ends — a result, an error, a panic, its runtime dropped, its budget
//! exhausted (a hang, a freeze that never thawed), its task never run — goes through
//! [`Freshness::finish`], the only way out of `Refreshing`, which counts a failure and backs off
//! for every outcome but success. A result for an older generation (a refresh superseded by
//! `refresh_now`, or by a seal) changes nothing.
//!
//! What the state decides, and nothing else does:
//! - when the next refresh is due ([`schedule::next_due`]: the TTL less the jitter from the start
//!   of the refresh that read the value, by 90 % of the maximum staleness, at the source's
//!   "refresh me by" if sooner, a "refresh me by" in the past ignored; for a value that expires,
//!   [`schedule::expiry_margin`] ahead of its expiry at the latest);
//! - how long to back off after a failure (never past the maximum staleness while the value is
//!   still served);
//! - whether the value may be served: not once it is as old as its maximum staleness, nor past
//!   its expiry ([`Freshness::unserved_cause`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::dates::{Dates, Expiry};
use super::settings::Settings;
use super::spawn::Heartbeat;
use crate::call::Urgency;
use crate::error::ItemError;
use crate::time::schedule;
use crate::time::{later, wall, Deadline};

/// Why a refresh ended without an answer: its task was never run.
pub(crate) const LOST_NEVER_RAN: &str = "the refresh task was never run (its runtime is no longer driven)";
/// Why a refresh ended without an answer: there was no runtime to run it.
pub(crate) const LOST_NO_RUNTIME: &str = "no tokio runtime was running to run the refresh";

/// How long after a refresh's deadline (plus the grace [`within_budget`](super::fetch) allows a
/// source) its task may show no sign of life twice, this far apart, before it is taken for one
/// that will never run (a runtime kept but no longer driven).
pub(crate) const WATCHDOG: Duration = Duration::from_secs(2);

/// Where a value's refresh stands.
#[derive(Clone)]
pub(crate) enum State {
    /// The value is current; the next refresh is due at `due`.
    Fresh { due: Instant },
    /// A refresh is under way.
    Refreshing(Refreshing),
    /// The last `failures` refreshes failed (the last good value is still served unless
    /// `expired`); the next one is due at `retry_at`.
    Failing {
        failures: u32,
        retry_at: Instant,
        error: ItemError,
        expired: bool,
    },
    /// The value was dropped (a SnapStart snapshot is about to be taken): nothing is due, nothing
    /// is served, until the value is loaded again. Every instant it held came from before the
    /// snapshot and is forgotten.
    Sealed,
}

/// A refresh under way, and what the value was before it.
#[derive(Clone)]
pub(crate) struct Refreshing {
    pub(crate) generation: u64,
    pub(crate) since: Instant,
    /// Raised by an invocation waiting for this value: the refresh stops spreading its calls.
    pub(crate) urgency: Arc<Urgency>,
    /// The refresh's budget, moved later by freezes its task saw.
    deadline: Arc<Deadline>,
    /// When its task was last polled.
    heartbeat: Arc<Heartbeat>,
    /// The watchdog's first look: when, and the heartbeat it saw.
    suspect: Option<(Instant, Instant)>,
    /// A read waited for it past the value's maximum staleness, in vain: later reads do not wait.
    waited_out: bool,
    failures: u32,
    error: Option<ItemError>,
    expired: bool,
}

/// One refresh, as its task and the values it refreshes share it: its generation, its budget
/// (moved later by freezes the task sees), its task's heartbeat and its urgency.
pub(crate) struct Started {
    pub(crate) generation: u64,
    pub(crate) deadline: Arc<Deadline>,
    pub(crate) heartbeat: Arc<Heartbeat>,
    pub(crate) urgency: Arc<Urgency>,
}

impl Started {
    /// The refresh `generation`, begun `now`, with a budget until `deadline`.
    pub(crate) fn new(generation: u64, now: Instant, deadline: Instant, urgency: Arc<Urgency>) -> Self {
        Started {
            generation,
            deadline: Arc::new(Deadline::new(deadline)),
            heartbeat: Arc::new(Heartbeat::new(now)),
            urgency,
        }
    }
}

/// How a refresh of one value ended; `V` is the new value(s), bound to their keys.
pub(crate) enum Outcome<V> {
    /// New values, and what the source said of their time.
    Fetched(V, Dates),
    /// The source confirmed the version held.
    Unchanged { refresh_by: Option<SystemTime> },
    /// The source answered with an error.
    Failed(ItemError),
    /// The refresh ended without an answer (a panic, its runtime dropped, its budget run out,
    /// its task never run).
    Lost(&'static str),
}

/// What [`Freshness::finish`] did, for the caller to apply, count and log.
pub(crate) enum Transition<V> {
    /// The value is current again; `Some` holds new values to put in place.
    Refreshed(Option<V>),
    /// The refresh failed.
    Failed {
        failures: u32,
        retry_in: Duration,
        expired: bool,
        error: ItemError,
    },
}

/// What the watchdog found of a refresh under way.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Watch {
    /// Nothing to do before `at` (the refresh is within its budget, or its task lives).
    Until(Instant),
    /// The refresh's task showed no sign of life: end it as lost.
    Lost,
}

/// One value's freshness: its TTL, maximum staleness and age, and its [`State`].
#[derive(Clone)]
pub(crate) struct Freshness {
    ttl: Duration,
    staleness: Duration,
    /// When the value arrived (its age, for the maximum staleness, counts from here).
    fetched_at: Instant,
    /// When the value stops being good, if it expires (a token).
    expiry: Option<Expiry>,
    state: State,
    /// After a cold load: the randomly placed first refresh, kept if a source asks for an
    /// earlier one (Secrets Manager learning the rotation schedule), so a fleet stays spread.
    first_phase: Option<Instant>,
    /// The refresh due now was brought forward by the source's "refresh me by": the first phase
    /// is kept through it (a refresh brought forward by a batch drops the phase instead, or the
    /// value would be fetched again at it).
    due_by_source: bool,
}

impl Freshness {
    /// A value not fetched yet (due at once).
    pub(crate) fn new(ttl: Duration, staleness: Duration, now: Instant) -> Self {
        Freshness {
            ttl,
            staleness,
            fetched_at: now,
            expiry: None,
            state: State::Fresh { due: now },
            first_phase: None,
            due_by_source: false,
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Merges another declaration of the same item: the shorter TTL and staleness win.
    pub(crate) fn tighten(&mut self, ttl: Duration, staleness: Duration) {
        self.ttl = self.ttl.min(ttl);
        self.staleness = self.staleness.min(staleness);
    }

    /// When the value arrived.
    #[cfg_attr(not(feature = "on-demand"), allow(dead_code))] // used by on_demand only
    pub(crate) fn fetched_at(&self) -> Instant {
        self.fetched_at
    }

    /// When the value may no longer be served: it passes its maximum staleness, or it expires.
    pub(crate) fn stale_at(&self) -> Instant {
        let stale = later(self.fetched_at, self.staleness);
        self.expiry.map_or(stale, |e| stale.min(e.at))
    }

    /// When a refresh should start, unless one is under way.
    pub(crate) fn due_at(&self) -> Option<Instant> {
        match &self.state {
            State::Fresh { due } => Some(*due),
            State::Failing { retry_at, .. } => Some(*retry_at),
            State::Refreshing(_) | State::Sealed => None,
        }
    }

    /// Whether a refresh should start now: due, or past the maximum staleness (unless already
    /// expired and backing off).
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.due_at()
            .is_some_and(|due| due <= now || (!self.is_expired() && self.stale_at() <= now))
    }

    pub(crate) fn refreshing(&self) -> Option<&Refreshing> {
        match &self.state {
            State::Refreshing(r) => Some(r),
            _ => None,
        }
    }

    /// Whether the last refresh failed.
    pub(crate) fn is_failing(&self) -> bool {
        match &self.state {
            State::Failing { .. } => true,
            State::Refreshing(r) => r.failures > 0,
            State::Fresh { .. } | State::Sealed => false,
        }
    }

    /// Whether the value is past its maximum staleness and refreshing it failed (no invocation
    /// waits for it: it is retried on its backoff).
    pub(crate) fn is_expired(&self) -> bool {
        match &self.state {
            State::Failing { expired, .. } => *expired,
            State::Refreshing(r) => r.expired,
            State::Fresh { .. } | State::Sealed => false,
        }
    }

    /// The error of the failing streak, if the last refresh failed.
    #[cfg_attr(not(feature = "on-demand"), allow(dead_code))] // used by on_demand only
    pub(crate) fn last_error(&self) -> Option<&ItemError> {
        match &self.state {
            State::Failing { error, .. } => Some(error),
            State::Refreshing(r) => r.error.as_ref(),
            State::Fresh { .. } | State::Sealed => None,
        }
    }

    /// Whether a read of the value past its maximum staleness should wait for its refresh: not once
    /// it expired, nor once a read waited for the refresh under way in vain (every later read gets
    /// the same answer at once: the value is not served).
    pub(crate) fn is_worth_waiting_for(&self) -> bool {
        match &self.state {
            State::Refreshing(r) => !r.expired && !r.waited_out,
            _ => !self.is_expired(),
        }
    }

    /// A read waited for the refresh under way until the whole `max_wait` ran out: later reads do
    /// not wait for it, and the refresh keeps what is left of its budget (the time its task spends
    /// frozen is no longer given back: a refresh hung across freezes ends), then ends as lost and
    /// is retried. Other values of the same refresh keep their budget too.
    pub(crate) fn waited_out(&mut self) {
        if let State::Refreshing(r) = &mut self.state {
            r.waited_out = true;
            r.deadline.fix();
        }
    }

    pub(crate) fn is_sealed(&self) -> bool {
        matches!(self.state, State::Sealed)
    }

    /// Why the value may not be served at `at`, if it may not: it expired (refreshing it failed
    /// past its maximum staleness), or it is as old as its maximum staleness while its refresh has
    /// not answered. `None` while it may be served.
    pub(crate) fn unserved_cause(&self, at: Instant) -> Option<ItemError> {
        match &self.state {
            State::Failing {
                expired: true, error, ..
            } => Some(error.clone()),
            State::Refreshing(r) if r.expired => r.error.clone(),
            State::Sealed => None,
            _ if self.stale_at() <= at => Some(match &self.state {
                State::Refreshing(Refreshing {
                    error: Some(error), ..
                })
                | State::Failing { error, .. } => error.clone(),
                _ if self.expiry.is_some_and(|e| e.at <= at) => {
                    ItemError::Source("its refresh had not answered when the value expired".into())
                }
                _ => ItemError::Source(
                    "its refresh had not answered when the value reached its maximum staleness".into(),
                ),
            }),
            _ => None,
        }
    }

    /// Any state -> Sealed: forgets every instant. A refresh under way is superseded: its result
    /// is ignored.
    pub(crate) fn seal(&mut self) {
        self.first_phase = None;
        self.expiry = None;
        self.due_by_source = false;
        self.state = State::Sealed;
    }

    /// Fresh/Failing -> Refreshing, for the refresh `started` (its generation, budget and
    /// heartbeat, shared by every value it refreshes). A refresh under way is superseded (its
    /// result will be ignored): only `refresh_now` does that.
    pub(crate) fn start(&mut self, started: &Started, now: Instant) {
        debug_assert!(
            !self.is_sealed(),
            "a sealed value is only loaded again, never refreshed"
        );
        let (failures, error, expired) = match std::mem::replace(&mut self.state, State::Sealed) {
            State::Fresh { .. } | State::Sealed => (0, None, false),
            State::Failing {
                failures,
                error,
                expired,
                ..
            } => (failures, Some(error), expired),
            State::Refreshing(r) => (r.failures, r.error, r.expired),
        };
        self.state = State::Refreshing(Refreshing {
            generation: started.generation,
            since: now,
            urgency: started.urgency.clone(),
            deadline: started.deadline.clone(),
            heartbeat: started.heartbeat.clone(),
            suspect: None,
            waited_out: false,
            failures,
            error,
            expired,
        });
    }

    /// The watchdog of a refresh under way (`None` when none is): a refresh past its deadline and
    /// grace whose task was not polled between two looks [`WATCHDOG`] apart will never end by
    /// itself. Two looks, because right after a Lambda thaw every task is late until the runtime
    /// polls it. `grace` is what a source is allowed past the deadline.
    pub(crate) fn watch(&mut self, now: Instant, grace: Duration) -> Option<Watch> {
        let State::Refreshing(r) = &mut self.state else {
            return None;
        };
        let limit = later(r.deadline.get(), grace);
        let beat = r.heartbeat.last();
        if now < limit {
            r.suspect = None;
            return Some(Watch::Until(limit));
        }
        match r.suspect {
            Some((seen, beat_then)) if beat <= beat_then && now >= later(seen, WATCHDOG) => Some(Watch::Lost),
            Some((seen, beat_then)) if beat <= beat_then => Some(Watch::Until(later(seen, WATCHDOG))),
            _ => {
                r.suspect = Some((now, beat));
                Some(Watch::Until(later(now, WATCHDOG)))
            }
        }
    }

    /// The generation of the refresh under way when the watchdog ([`watch`](Self::watch), with the
    /// grace fetching allows a source) finds that its task will never run: end it as lost, with
    /// [`LOST_NEVER_RAN`].
    pub(crate) fn never_ran(&mut self, now: Instant) -> Option<u64> {
        match self.watch(now, super::fetch::GRACE)? {
            Watch::Lost => self.refreshing().map(|r| r.generation),
            Watch::Until(_) => None,
        }
    }

    /// When the watchdog should look at the refresh under way next.
    pub(crate) fn watch_at(&self, grace: Duration) -> Option<Instant> {
        let r = self.refreshing()?;
        Some(match r.suspect {
            Some((seen, _)) => later(seen, WATCHDOG),
            None => later(r.deadline.get(), grace),
        })
    }

    /// The one transition out of `Refreshing`. `None` when `generation` is not the refresh under
    /// way (superseded, or already finished). `random` (in `[0, 1)`) places the next refresh within
    /// the jitter, or the backoff: one draw per refresh keeps the values refreshed (or failing)
    /// together due together, so they stay in one batch.
    pub(crate) fn finish<V>(
        &mut self,
        generation: u64,
        outcome: Outcome<V>,
        now: Instant,
        settings: &Settings,
        random: f64,
    ) -> Option<Transition<V>> {
        let State::Refreshing(r) = &self.state else {
            return None;
        };
        if r.generation != generation {
            return None;
        }
        let (since, failures) = (r.since, r.failures);
        let error = match outcome {
            Outcome::Fetched(values, timing) => {
                let keep_phase = self.due_by_source;
                self.expiry = timing.expires_at.map(|at| Expiry::new(at, now));
                self.succeed(since, timing.refresh_by, now, settings, keep_phase, random);
                return Some(Transition::Refreshed(Some(values)));
            }
            Outcome::Unchanged { refresh_by } => {
                let keep_phase = self.due_by_source;
                self.succeed(since, refresh_by, now, settings, keep_phase, random);
                return Some(Transition::Refreshed(None));
            }
            Outcome::Failed(error) => error,
            Outcome::Lost(why) => ItemError::Source(why.to_owned()),
        };
        let failures = failures.saturating_add(1);
        let backoff = schedule::failure_backoff(
            settings.failure_backoff,
            settings.failure_backoff_max,
            failures,
            random,
        );
        let expired = now >= self.stale_at();
        // Before the staleness limit, retry no later than it (so the value does not expire
        // just because the backoff was long).
        let retry_at = if expired {
            later(now, backoff)
        } else {
            later(now, backoff).min(self.stale_at())
        };
        self.state = State::Failing {
            failures,
            retry_at,
            error: error.clone(),
            expired,
        };
        Some(Transition::Failed {
            failures,
            retry_in: retry_at.saturating_duration_since(now),
            expired,
            error,
        })
    }

    /// The values read by a refresh that started at `since` arrived (or were confirmed) `now`:
    /// their age counts from now, and the next refresh is scheduled from `since` (the value may
    /// have been read any time after it), ahead of the value's expiry if it has one.
    fn succeed(
        &mut self,
        since: Instant,
        refresh_by: Option<SystemTime>,
        now: Instant,
        settings: &Settings,
        keep_phase: bool,
        random: f64,
    ) {
        self.fetched_at = now;
        // A source's "refresh me by" in the past (a rotation that failed) is no reason to hurry.
        let refresh_in = refresh_by.and_then(wall::until);
        // A value that expires is renewed ahead of its expiry, whatever the TTL.
        let renew_in = self.expiry.map(|e| e.renew_at.saturating_duration_since(now));
        let refresh_in = match (refresh_in, renew_in) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // The first refresh after a cold load keeps its random phase (the source may bring it
        // forward); every other one comes the TTL less the jitter after the refresh's start.
        let delay = match self.first_phase {
            Some(phase) if phase > now && keep_phase => phase.saturating_duration_since(since),
            _ => {
                self.first_phase = None;
                schedule::next_refresh(self.ttl, settings.jitter, false, random)
            }
        };
        let elapsed = now.saturating_duration_since(since);
        let (wait, by_source) = schedule::next_due(elapsed, self.ttl, self.staleness, delay, refresh_in);
        self.due_by_source = by_source;
        let due = later(now, wait);
        self.state = State::Fresh { due };
    }

    /// After a cold load (`load()`, a reload after a SnapStart restore) that started at `since`:
    /// the value arrived `now`; its first refresh comes at a random phase of its TTL (`phase` of
    /// it, one draw per load), or sooner if the source asks.
    pub(crate) fn loaded(
        &mut self,
        since: Instant,
        now: Instant,
        timing: Dates,
        phase: f64,
        settings: &Settings,
    ) {
        self.first_phase = Some(later(since, self.ttl.mul_f64(phase)));
        self.expiry = timing.expires_at.map(|at| Expiry::new(at, now));
        self.succeed(since, timing.refresh_by, now, settings, true, phase);
    }

    /// After a first fetch that started at `since` (an on-demand miss): the next refresh comes
    /// after the TTL less a random jitter, or sooner if the source asks.
    #[cfg_attr(not(feature = "on-demand"), allow(dead_code))] // used by on_demand only
    pub(crate) fn fetched(
        &mut self,
        since: Instant,
        now: Instant,
        timing: Dates,
        settings: &Settings,
        random: f64,
    ) {
        self.first_phase = None;
        self.expiry = timing.expires_at.map(|at| Expiry::new(at, now));
        self.succeed(since, timing.refresh_by, now, settings, false, random);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(2);

    fn fresh(now: Instant) -> Freshness {
        let mut f = Freshness::new(Duration::from_secs(10), Duration::from_secs(30), now);
        f.fetched(now, now, Dates::default(), &Settings::default(), 0.5);
        f
    }

    fn start(f: &mut Freshness, generation: u64, now: Instant) -> Started {
        let started = Started::new(generation, now, now + Duration::from_secs(5), Arc::default());
        f.start(&started, now);
        started
    }

    #[test]
    fn every_way_a_refresh_ends_but_success_counts_a_failure_and_backs_off() {
        let settings = Settings::default();
        for outcome in [
            || Outcome::<()>::Failed(ItemError::NotFound),
            || Outcome::Lost("the refresh task panicked"),
            || Outcome::Lost("the refresh did not finish within its budget"),
        ] {
            let now = Instant::now();
            let mut f = fresh(now);
            for n in 1..=3u32 {
                start(&mut f, u64::from(n), now);
                let Some(Transition::Failed {
                    failures, retry_in, ..
                }) = f.finish(u64::from(n), outcome(), now, &settings, 0.5)
                else {
                    panic!("a failure")
                };
                assert_eq!(failures, n);
                assert!(retry_in >= settings.failure_backoff / 2, "{retry_in:?}");
                assert!(!f.is_due(now), "backing off");
            }
            start(&mut f, 9, now);
            assert!(matches!(
                f.finish(
                    9,
                    Outcome::<()>::Unchanged { refresh_by: None },
                    now,
                    &settings,
                    0.5
                ),
                Some(Transition::Refreshed(None))
            ));
            assert!(!f.is_failing());
        }
    }

    #[test]
    fn a_superseded_or_finished_generation_changes_nothing() {
        let settings = Settings::default();
        let now = Instant::now();
        let mut f = fresh(now);
        start(&mut f, 1, now);
        start(&mut f, 2, now); // refresh_now superseding
        assert!(f
            .finish(1, Outcome::<()>::Failed(ItemError::NotFound), now, &settings, 0.5)
            .is_none());
        assert!(f.refreshing().is_some());
        assert!(f
            .finish(
                2,
                Outcome::<()>::Unchanged { refresh_by: None },
                now,
                &settings,
                0.5
            )
            .is_some());
        assert!(f
            .finish(2, Outcome::<()>::Lost("late drop"), now, &settings, 0.5)
            .is_none());
        assert!(!f.is_failing());
    }

    #[test]
    fn the_next_refresh_is_counted_from_the_start_of_the_one_that_read_the_value() {
        let settings = Settings::default();
        let start_at = Instant::now();
        let mut f = fresh(start_at);
        start(&mut f, 1, start_at);
        let end = start_at + Duration::from_secs(2);
        f.finish(
            1,
            Outcome::<()>::Unchanged { refresh_by: None },
            end,
            &settings,
            0.5,
        );
        let due = f.due_at().unwrap();
        assert!(
            due <= start_at + f.ttl && due >= start_at + f.ttl.mul_f64(0.9),
            "{:?}",
            due - start_at
        );
        assert_eq!(f.fetched_at, end, "the age counts from the arrival");
    }

    #[test]
    fn an_unchanged_answer_takes_the_sources_new_refresh_by_and_ignores_one_in_the_past() {
        // The on-demand copy of this rule kept the first answer's "refresh me by" (a second after
        // the fetch, to learn a secret's rotation date) and described the secret every second.
        let settings = Settings::default();
        let now = Instant::now();
        let mut f = Freshness::new(Duration::from_secs(300), Duration::from_secs(900), now);
        let soon = SystemTime::now() + Duration::from_secs(1);
        let timing = Dates {
            refresh_by: Some(soon),
            expires_at: None,
        };
        f.fetched(now, now, timing, &settings, 0.5);
        assert!(f.due_at().unwrap() <= now + Duration::from_secs(1));
        let later_on = now + Duration::from_secs(1);
        start(&mut f, 1, later_on);
        let past = SystemTime::now() - Duration::from_secs(60);
        f.finish(
            1,
            Outcome::<()>::Unchanged {
                refresh_by: Some(past),
            },
            later_on,
            &settings,
            0.5,
        );
        let due = f.due_at().unwrap();
        assert!(due >= later_on + Duration::from_secs(270), "{:?}", due - later_on);
        let rotation = SystemTime::now() + Duration::from_secs(3600 * 24);
        start(&mut f, 2, due);
        f.finish(
            2,
            Outcome::<()>::Unchanged {
                refresh_by: Some(rotation),
            },
            due,
            &settings,
            0.5,
        );
        assert!(f.due_at().unwrap() >= due + Duration::from_secs(270));
    }

    #[tokio::test(start_paused = true)]
    async fn a_value_that_expires_is_renewed_ahead_of_it_and_never_served_past_it() {
        // A token signed with credentials that expire in 2 minutes lives 2 minutes, whatever
        // its TTL (5 min) and maximum staleness (15 min).
        let settings = Settings::default();
        let now = Instant::now();
        let mut f = Freshness::new(Duration::from_secs(300), Duration::from_secs(900), now);
        let expires = Dates {
            refresh_by: None,
            expires_at: Some(wall::now() + Duration::from_secs(120)),
        };
        f.fetched(now, now, expires, &settings, 0.5);
        let due = f.due_at().unwrap();
        assert_eq!(
            due - now,
            Duration::from_secs(108),
            "12 s (10 % of its life) ahead"
        );
        assert_eq!(f.stale_at() - now, Duration::from_secs(120));
        assert!(f.unserved_cause(now + Duration::from_secs(119)).is_none());
        // The renewal fails: retried before the expiry; once past it, the value is not served.
        tokio::time::advance(Duration::from_secs(108)).await;
        let at = Instant::now();
        start(&mut f, 1, at);
        let failed = f.finish(
            1,
            Outcome::<()>::Failed(ItemError::Source("no credentials".into())),
            at,
            &settings,
            0.99,
        );
        assert!(matches!(failed, Some(Transition::Failed { expired: false, .. })));
        assert!(f.due_at().unwrap() <= now + Duration::from_secs(120));
        let cause = f.unserved_cause(now + Duration::from_secs(120)).unwrap();
        assert!(cause.to_string().contains("no credentials"), "{cause}");
        // A new token: served again, and its own expiry counts (an unchanged answer keeps it).
        tokio::time::advance(Duration::from_secs(5)).await;
        let at = Instant::now();
        start(&mut f, 2, at);
        let renewed = Dates {
            refresh_by: None,
            expires_at: Some(wall::now() + Duration::from_secs(900)),
        };
        f.finish(2, Outcome::Fetched((), renewed), at, &settings, 0.5);
        assert!(f.unserved_cause(now + Duration::from_secs(125)).is_none());
        assert_eq!(f.stale_at() - at, Duration::from_secs(900));
        let due = f.due_at().unwrap();
        assert!(
            due - at <= Duration::from_secs(300),
            "the TTL still counts: {:?}",
            due - at
        );
        start(&mut f, 3, due);
        f.finish(
            3,
            Outcome::<()>::Unchanged { refresh_by: None },
            due,
            &settings,
            0.5,
        );
        assert_eq!(
            f.stale_at() - at,
            Duration::from_secs(900),
            "confirmed: same expiry"
        );
        assert!(f.due_at().unwrap() - at <= Duration::from_secs(840));
    }

    #[test]
    fn past_the_staleness_a_failure_expires_the_value() {
        let settings = Settings::default();
        let now = Instant::now();
        let mut f = fresh(now);
        let later_on = now + Duration::from_secs(31);
        assert!(
            f.unserved_cause(later_on).is_some(),
            "past its staleness, not served"
        );
        assert!(f.unserved_cause(now).is_none());
        start(&mut f, 1, later_on);
        let Some(Transition::Failed { expired, .. }) = f.finish(
            1,
            Outcome::<()>::Failed(ItemError::NotFound),
            later_on,
            &settings,
            0.5,
        ) else {
            panic!()
        };
        assert!(expired && f.is_expired());
        assert_eq!(f.unserved_cause(later_on), Some(ItemError::NotFound));
        // Expired and backing off: not due again before the backoff.
        assert!(!f.is_due(later_on));
    }

    #[test]
    fn the_watchdog_ends_a_refresh_whose_task_never_runs_but_not_one_woken_late_by_a_thaw() {
        let now = Instant::now();
        let mut f = fresh(now);
        let started = start(&mut f, 1, now);
        let limit = now + Duration::from_secs(5) + GRACE;
        assert_eq!(f.watch(now, GRACE), Some(Watch::Until(limit)));
        // Long after: one look is a suspicion, not a verdict.
        let thaw = now + Duration::from_secs(600);
        assert_eq!(f.watch(thaw, GRACE), Some(Watch::Until(thaw + WATCHDOG)));
        // The runtime polled the task after the thaw: it lives.
        started.heartbeat.beat_at(thaw + Duration::from_millis(10));
        assert_eq!(
            f.watch(thaw + WATCHDOG, GRACE),
            Some(Watch::Until(thaw + WATCHDOG + WATCHDOG))
        );
        // Not polled between two looks: lost.
        assert_eq!(f.watch(thaw + WATCHDOG * 2, GRACE), Some(Watch::Lost));
    }
}
