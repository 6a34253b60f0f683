//! The unit: one distinct (source, item), the keys bound to it, its values, and its refresh
//! state as one explicit state machine.
//!
//! ```text
//!            start                      finish(ok)
//!   Fresh ─────────────▶ Refreshing ─────────────────▶ Fresh
//!     ▲                   │     ▲ start                 (next refresh from the schedule)
//!     │ finish(ok)        │     │
//!     │                   ▼     │
//!     └──────────────── Failing ◀── finish(error | lost | timed out)
//!                                   (backoff; expired once past the maximum staleness)
//!
//!   any state ── seal ──▶ Sealed ── loaded ──▶ Fresh     (SnapStart: values dropped before the
//!                                                        snapshot, reloaded after a restore)
//! ```
//!
//! Every way a refresh ends — a result, an error, a panic, its runtime dropped, its budget
//! exhausted (a hang, a freeze that never thawed) — goes through [`Unit::finish`], which is the
//! only place that leaves `Refreshing`, and which counts a failure and backs off for every
//! outcome but success. A result for an older generation (a refresh superseded by
//! `refresh_now`) is ignored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::plan::Config;
use crate::call::Urgency;
use crate::error::{Failure, ItemError};
use crate::schedule;
use crate::snapshot::ValueInfo;
use crate::source::{AnyItem, DynSource, Fetched};
use crate::time::later;
use crate::value::SecretValue;

/// A value is refreshed at the latest at this fraction of its maximum staleness.
const STALENESS_REFRESH: f64 = 0.9;

/// The least time between a refresh and the next one asked for by a source's `refresh_by`.
const MIN_REFRESH_GAP: Duration = Duration::from_secs(1);

/// A key bound to a unit, optionally to one JSON field of its value.
pub(crate) struct Binding {
    /// The key (for a tree: the key prefix).
    pub(crate) key: String,
    pub(crate) field: Option<String>,
}

pub(crate) type ValueAndInfo = (SecretValue, Arc<ValueInfo>);

/// Values bound to keys, the version, and the source's refresh-by.
pub(crate) struct Bound {
    values: Vec<(Box<str>, ValueAndInfo)>,
    version: Option<String>,
    refresh_by: Option<SystemTime>,
}

/// Where a unit's refresh stands.
pub(crate) enum State {
    /// The values are current; the next refresh is due at `due`.
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
    /// The values were dropped (a SnapStart snapshot is about to be taken): nothing is due, nothing
    /// is served, until the cold-load path loads the unit again. Every instant the unit held came
    /// from before the snapshot and is forgotten.
    Sealed,
}

/// A refresh under way, and what the unit was before it.
pub(crate) struct Refreshing {
    pub(crate) generation: u64,
    pub(crate) since: Instant,
    /// Raised by an invocation waiting for this unit: the refresh stops spreading its calls.
    pub(crate) urgency: Arc<Urgency>,
    failures: u32,
    error: Option<ItemError>,
    expired: bool,
}

/// How a refresh of one unit ended.
pub(crate) enum Outcome {
    /// New values.
    Fetched(Bound),
    /// The source confirmed the cached version.
    Unchanged { refresh_by: Option<SystemTime> },
    /// The source answered with an error.
    Failed(ItemError),
    /// The refresh task ended without a result (panic, runtime dropped) or ran out of time.
    Lost(&'static str),
}

/// What [`Unit::finish`] did, for counters and logs.
pub(crate) enum Finished {
    Refreshed,
    Failed {
        failures: u32,
        retry_in: Duration,
        expired: bool,
        error: ItemError,
    },
}

/// One distinct (source, item) and the keys bound to it.
pub(crate) struct Unit {
    pub(crate) source: Arc<dyn DynSource>,
    pub(crate) item: AnyItem,
    pub(crate) keys: Vec<Binding>,
    pub(crate) ttl: Duration,
    pub(crate) staleness: Duration,
    pub(crate) values: Vec<(Box<str>, ValueAndInfo)>,
    /// Version of an [`Item::One`]'s value, handed to [`Source::refresh`].
    pub(crate) version: Option<String>,
    /// When the current values arrived (their age, for the maximum staleness, counts from here).
    pub(crate) fetched_at: Instant,
    pub(crate) state: State,
    /// After a cold load: the randomly placed first refresh, kept if a source asks for an
    /// earlier one (Secrets Manager learning the rotation schedule), so the fleet stays spread.
    first_phase: Option<Instant>,
    /// The refresh due now was brought forward by the source's `refresh_by`: the first phase is
    /// kept through it (a refresh brought forward by a batch instead drops the phase, or the
    /// value would be fetched again at it).
    due_by_source: bool,
    /// The last forced refresh and its generation (`refresh_now`'s guard).
    pub(crate) forced_at: Option<(Instant, u64)>,
    /// The last generation that finished, and whether it failed (for `refresh_now`).
    pub(crate) finished: (u64, Option<ItemError>),
}

impl Unit {
    pub(crate) fn new(
        source: Arc<dyn DynSource>,
        item: AnyItem,
        ttl: Duration,
        staleness: Duration,
        now: Instant,
    ) -> Self {
        Unit {
            source,
            item,
            keys: Vec::new(),
            ttl,
            staleness,
            values: Vec::new(),
            version: None,
            fetched_at: now,
            state: State::Fresh { due: now },
            first_phase: None,
            due_by_source: false,
            forced_at: None,
            finished: (0, None),
        }
    }

    /// When the values pass their maximum staleness.
    pub(crate) fn stale_at(&self) -> Instant {
        later(self.fetched_at, self.staleness)
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

    /// Whether the values are past their maximum staleness and refreshing them failed: reading
    /// them gives [`Error::Expired`](crate::Error::Expired).
    pub(crate) fn is_expired(&self) -> bool {
        match &self.state {
            State::Failing { expired, .. } => *expired,
            State::Refreshing(r) => r.expired,
            State::Fresh { .. } | State::Sealed => false,
        }
    }

    pub(crate) fn is_sealed(&self) -> bool {
        matches!(self.state, State::Sealed)
    }

    /// Any state -> Sealed: drops the values (each zeroizes its bytes when its last clone goes) and
    /// forgets every instant. A refresh under way is superseded: its result is ignored.
    pub(crate) fn seal(&mut self) {
        self.values = Vec::new();
        self.version = None;
        self.first_phase = None;
        self.due_by_source = false;
        self.forced_at = None;
        self.state = State::Sealed;
    }

    /// Why the values are expired, for [`Error::Expired`](crate::Error::Expired).
    pub(crate) fn expired_cause(&self) -> Option<Arc<ItemError>> {
        let error = match &self.state {
            State::Failing {
                expired: true, error, ..
            } => Some(error),
            State::Refreshing(r) if r.expired => r.error.as_ref(),
            _ => None,
        }?;
        Some(Arc::new(error.clone()))
    }

    /// Fresh/Failing -> Refreshing. A refresh under way is superseded (its result will be
    /// ignored): only `refresh_now` does that.
    pub(crate) fn start(&mut self, generation: u64, now: Instant, urgency: Arc<Urgency>) {
        debug_assert!(
            !self.is_sealed(),
            "a sealed unit is only loaded again, never refreshed"
        );
        let (failures, error, expired) = match std::mem::replace(&mut self.state, State::Fresh { due: now }) {
            State::Fresh { .. } => (0, None, false),
            State::Failing {
                failures,
                error,
                expired,
                ..
            } => (failures, Some(error), expired),
            State::Refreshing(r) => (r.failures, r.error, r.expired),
            State::Sealed => (0, None, false),
        };
        self.state = State::Refreshing(Refreshing {
            generation,
            since: now,
            urgency,
            failures,
            error,
            expired,
        });
    }

    /// The one transition out of `Refreshing`. `None` when `generation` is not the refresh
    /// under way (superseded, or already finished). `random` (in `[0, 1)`) places the next
    /// refresh within the jitter, or the backoff: one draw per refresh keeps the values refreshed
    /// (or failing) together due together, so they stay in one batch.
    pub(crate) fn finish(
        &mut self,
        generation: u64,
        outcome: Outcome,
        now: Instant,
        config: &Config,
        random: f64,
    ) -> Option<Finished> {
        let State::Refreshing(r) = &self.state else {
            return None;
        };
        if r.generation != generation {
            return None;
        }
        let (since, failures) = (r.since, r.failures);
        let error = match outcome {
            Outcome::Fetched(bound) => {
                self.values = bound.values;
                self.version = bound.version;
                let keep_phase = self.due_by_source;
                self.succeed(since, bound.refresh_by, now, config, keep_phase, random);
                self.finished = (generation, None);
                return Some(Finished::Refreshed);
            }
            Outcome::Unchanged { refresh_by } => {
                let keep_phase = self.due_by_source;
                self.succeed(since, refresh_by, now, config, keep_phase, random);
                self.finished = (generation, None);
                return Some(Finished::Refreshed);
            }
            Outcome::Failed(error) => error,
            Outcome::Lost(why) => ItemError::Source(why.to_owned()),
        };
        let failures = failures.saturating_add(1);
        let backoff = schedule::failure_backoff(
            config.failure_backoff,
            config.failure_backoff_max,
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
        self.finished = (generation, Some(error.clone()));
        Some(Finished::Failed {
            failures,
            retry_in: retry_at.saturating_duration_since(now),
            expired,
            error,
        })
    }

    /// The values read by the refresh that started at `since` arrived `now`: their age counts
    /// from now, and the next refresh is scheduled from `since` (the value may have been read any
    /// time after it; see the freshness bound in [`schedule`]).
    fn succeed(
        &mut self,
        since: Instant,
        refresh_by: Option<SystemTime>,
        now: Instant,
        config: &Config,
        keep_phase: bool,
        random: f64,
    ) {
        self.fetched_at = now;
        let mut due = match self.first_phase {
            Some(phase) if phase > now && keep_phase => phase,
            _ => {
                self.first_phase = None;
                let delay = schedule::next_refresh(self.ttl, config.jitter, false, random);
                schedule::next_refresh_at(since, now, self.ttl, delay)
            }
        };
        // Start the refresh well before the value goes stale (a maximum staleness set close to
        // the TTL), so that no invocation waits while the source answers.
        due = due.min(later(now, self.staleness.mul_f64(STALENESS_REFRESH)));
        // A source's refresh-by in the past (a rotation that failed) is no reason to hurry.
        self.due_by_source = false;
        if let Some(until) = refresh_by.and_then(|by| by.duration_since(SystemTime::now()).ok()) {
            let by = later(now, until.max(MIN_REFRESH_GAP));
            if by < due {
                due = by;
                self.due_by_source = true;
            }
        }
        for (_, (_, info)) in &mut self.values {
            if info.refresh_by != refresh_by {
                let mut updated = (**info).clone();
                updated.refresh_by = refresh_by;
                *info = Arc::new(updated);
            }
        }
        self.state = State::Fresh { due };
    }

    /// After the cold load: the values were read by the load that started at `since`; the
    /// first refresh comes at a random phase of the TTL (`factor` of it, one draw per load).
    pub(crate) fn loaded(
        &mut self,
        bound: Bound,
        since: Instant,
        now: Instant,
        factor: f64,
        config: &Config,
    ) {
        self.first_phase = Some(later(since, self.ttl.mul_f64(factor)));
        self.values = bound.values;
        self.version = bound.version;
        self.succeed(since, bound.refresh_by, now, config, true, factor);
    }

    pub(crate) fn describe(&self) -> String {
        format!("{} `{}`", self.source.kind(), self.item)
    }

    pub(crate) fn failure(&self, key: &str, error: &ItemError) -> Failure {
        Failure {
            key: key.to_owned(),
            source: self.source.kind(),
            id: self.item.to_string(),
            error: error.clone(),
        }
    }

    pub(crate) fn failures(&self, error: &ItemError) -> Vec<Failure> {
        self.keys.iter().map(|b| self.failure(&b.key, error)).collect()
    }

    pub(crate) fn key_list(&self) -> Vec<&str> {
        self.keys.iter().map(|b| b.key.as_str()).collect()
    }

    /// Binds fetched values to this unit's keys (taking JSON fields where asked); fails with
    /// one failure per key that cannot be bound.
    pub(crate) fn bind(&self, fetched: Vec<Fetched>) -> Result<Bound, Vec<Failure>> {
        if fetched.is_empty() {
            return Err(self.failures(&ItemError::NotFound));
        }
        let kind = self.source.kind();
        let version = fetched[0].version.clone();
        let refresh_by = fetched.iter().filter_map(|f| f.refresh_by).min();
        let mut values = Vec::new();
        let mut failures = Vec::new();
        let take = if !self.item.tree { 1 } else { fetched.len() };
        for f in fetched.into_iter().take(take) {
            let info = Arc::new(ValueInfo {
                source: kind,
                name: f.name,
                version: f.version,
                refresh_by: f.refresh_by,
            });
            for binding in &self.keys {
                let key: Box<str> = match (self.item.tree, &f.relative) {
                    (true, Some(rel)) => format!("{}{rel}", binding.key).into(),
                    _ => binding.key.as_str().into(),
                };
                let value = match &binding.field {
                    None => f.value.clone(),
                    Some(field) => match json_field(&f.value, field) {
                        Ok(v) => v,
                        Err(e) => {
                            failures.push(self.failure(&key, &e));
                            continue;
                        }
                    },
                };
                values.push((key, (value, info.clone())));
            }
        }
        if failures.is_empty() {
            Ok(Bound {
                values,
                version,
                refresh_by,
            })
        } else {
            Err(failures)
        }
    }
}

/// One field of a JSON object value. Errors name the field, never the value.
pub(crate) fn json_field(value: &SecretValue, field: &str) -> Result<SecretValue, ItemError> {
    use serde_json::value::RawValue;
    let object: HashMap<std::borrow::Cow<'_, str>, &RawValue> = serde_json::from_slice(value.expose_bytes())
        .map_err(|_| {
            ItemError::Invalid(format!(
                "the value is not a JSON object, so its field `{field}` cannot be taken"
            ))
        })?;
    let raw = object
        .get(field)
        .ok_or_else(|| ItemError::Invalid(format!("the JSON object has no field `{field}`")))?
        .get();
    if raw.starts_with('"') {
        let text = json_string(raw)
            .ok_or_else(|| ItemError::Invalid(format!("field `{field}` is not a valid JSON string")))?;
        Ok(SecretValue::new(text))
    } else {
        Ok(raw.into())
    }
}

/// The text of the JSON string literal `raw` (quotes included), unescaped into one buffer that
/// never grows (an escape is never shorter than what it stands for), so that no copy of the text is
/// left behind: serde_json unescapes through a scratch buffer it frees without zeroizing. `None`
/// when `raw` is not a valid JSON string (as serde_json judges it).
fn json_string(raw: &str) -> Option<Vec<u8>> {
    fn push(out: &mut Vec<u8>, c: char) {
        let mut utf8 = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
    }
    fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
        (0..4).try_fold(0u32, |code, _| Some(code * 16 + chars.next()?.to_digit(16)?))
    }
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                '"' => out.push(b'"'),
                '\\' => out.push(b'\\'),
                '/' => out.push(b'/'),
                'b' => out.push(0x08),
                'f' => out.push(0x0c),
                'n' => out.push(b'\n'),
                'r' => out.push(b'\r'),
                't' => out.push(b'\t'),
                'u' => {
                    let high = hex4(&mut chars)?;
                    let code = match high {
                        0xD800..=0xDBFF => {
                            if (chars.next()?, chars.next()?) != ('\\', 'u') {
                                return None;
                            }
                            let low = hex4(&mut chars)?;
                            if !(0xDC00..=0xDFFF).contains(&low) {
                                return None;
                            }
                            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                        }
                        0xDC00..=0xDFFF => return None,
                        _ => high,
                    };
                    push(&mut out, char::from_u32(code)?);
                }
                _ => return None,
            },
            '"' => return None,
            c if u32::from(c) < 0x20 => return None,
            c => push(&mut out, c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemorySource;

    fn unit(now: Instant) -> Unit {
        let decl = MemorySource::new().value("k", "/k");
        let mut u = Unit::new(
            decl.source,
            decl.item,
            Duration::from_secs(10),
            Duration::from_secs(30),
            now,
        );
        u.state = State::Fresh { due: now };
        u
    }

    proptest::proptest! {
        #[test]
        fn json_strings_unescape_as_serde_json_does(text in "\\PC*", noise in "[\"\\\\u0-9a-fA-FdD/bnrtx]{0,12}") {
            // Any text, escaped by serde_json, comes back whole.
            let raw = serde_json::to_string(&text).unwrap();
            proptest::prop_assert_eq!(json_string(&raw), Some(text.clone().into_bytes()));
            // Escapes, valid or not (lone surrogates, short \u, stray quotes): the same verdict
            // and text as serde_json's.
            let raw = format!("\"{text}{noise}\"");
            let theirs = serde_json::from_str::<String>(&raw).ok().map(String::into_bytes);
            proptest::prop_assert_eq!(json_string(&raw), theirs, "{}", raw);
        }
    }

    #[test]
    fn every_way_a_refresh_ends_but_success_counts_a_failure_and_backs_off() {
        let config = Config::default();
        for outcome in [
            || Outcome::Failed(ItemError::NotFound),
            || Outcome::Lost("the refresh task panicked"),
            || Outcome::Lost("the refresh did not finish within its budget"),
        ] {
            let now = Instant::now();
            let mut u = unit(now);
            for n in 1..=3u32 {
                u.start(u64::from(n), now, Arc::default());
                let Some(Finished::Failed {
                    failures, retry_in, ..
                }) = u.finish(u64::from(n), outcome(), now, &config, 0.5)
                else {
                    panic!("a failure")
                };
                assert_eq!(failures, n);
                assert!(retry_in >= config.failure_backoff / 2, "{retry_in:?}");
                assert!(!u.is_due(now), "backing off");
            }
            u.start(9, now, Arc::default());
            assert!(matches!(
                u.finish(9, Outcome::Unchanged { refresh_by: None }, now, &config, 0.5),
                Some(Finished::Refreshed)
            ));
            assert!(!u.is_failing());
        }
    }

    #[test]
    fn a_superseded_or_finished_generation_changes_nothing() {
        let config = Config::default();
        let now = Instant::now();
        let mut u = unit(now);
        u.start(1, now, Arc::default());
        u.start(2, now, Arc::default()); // refresh_now superseding
        assert!(u
            .finish(1, Outcome::Failed(ItemError::NotFound), now, &config, 0.5)
            .is_none());
        assert!(u.refreshing().is_some());
        assert!(u
            .finish(2, Outcome::Unchanged { refresh_by: None }, now, &config, 0.5)
            .is_some());
        assert!(u
            .finish(2, Outcome::Lost("late drop"), now, &config, 0.5)
            .is_none());
        assert!(!u.is_failing());
    }

    #[test]
    fn the_next_refresh_is_counted_from_the_start_of_the_one_that_read_the_value() {
        let config = Config::default();
        let start = Instant::now();
        let mut u = unit(start);
        u.start(1, start, Arc::default());
        let end = start + Duration::from_secs(2);
        u.finish(1, Outcome::Unchanged { refresh_by: None }, end, &config, 0.5);
        let due = u.due_at().unwrap();
        assert!(
            due <= start + u.ttl && due >= start + u.ttl.mul_f64(0.9),
            "{:?}",
            due - start
        );
        assert_eq!(u.fetched_at, end, "the age counts from the arrival");
    }

    #[test]
    fn past_the_staleness_a_failure_expires_the_value() {
        let config = Config::default();
        let now = Instant::now();
        let mut u = unit(now);
        let later = now + Duration::from_secs(31);
        u.start(1, later, Arc::default());
        let Some(Finished::Failed { expired, .. }) =
            u.finish(1, Outcome::Failed(ItemError::NotFound), later, &config, 0.5)
        else {
            panic!()
        };
        assert!(expired && u.is_expired() && u.expired_cause().is_some());
        // Expired and backing off: not due again before the backoff.
        assert!(!u.is_due(later));
    }
}
