//! Property tests of the refresh engine over random sequences of invocations, fetch results (ok,
//! changed, error, panic, hang), time passing, freezes (the clock jumps while nothing runs) and
//! SnapStart snapshots (values dropped, a long wait, a restore), all in virtual time. After every
//! step:
//!
//! - at most one refresh of an item is in flight;
//! - a refresh that failed or was lost is not followed by another before its backoff (or the
//!   value's maximum staleness, whichever comes first);
//! - an invocation waits only if some value was past its maximum staleness;
//! - between the seal and the restore nothing is readable and nothing is fetched; after a restore
//!   every value is the source's current one (a restore that failed is followed by another, as
//!   Lambda restores another environment);
//!
//! and at the end, once the source is healthy again, a changed value is served within the bound.

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::scripted::{FetchLog, Mode, Scripted};
use super::{ms, secs};
use crate::{RateLimits, RetryPolicy, Secrets};

#[derive(Debug, Clone)]
enum Event {
    /// One invocation (through `fresh_snapshot`, as the Layer does).
    Invoke,
    /// Invocations every `every` ms for `span` ms.
    Traffic { every: u64, span: u64 },
    /// Time passes with no invocation (timers fire on time).
    Idle(u64),
    /// The process is frozen for this long (the clock jumps; timers fire late).
    Freeze(u64),
    /// The source's next answers.
    Answer(Mode),
    /// The values change.
    Change,
    /// A SnapStart snapshot: `before_snapshot`, a wait of this many ms (longer than a refresh's
    /// budget: a refresh under way at the seal ends within it, as one on a connection that died
    /// with the snapshot would), the values changed or not, then `after_restore`.
    Snapshot { wait: u64, change: bool },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => Just(Event::Invoke),
        4 => (10u64..500, 100u64..8_000).prop_map(|(every, span)| Event::Traffic { every, span }),
        2 => (1u64..10_000).prop_map(Event::Idle),
        2 => (1_000u64..600_000).prop_map(Event::Freeze),
        3 => prop_oneof![
            4 => Just(Mode::Ok),
            2 => Just(Mode::Fail),
            1 => Just(Mode::Panic),
            1 => Just(Mode::Hang)
        ]
        .prop_map(Event::Answer),
        2 => Just(Event::Change),
        1 => (5_000u64..600_000, any::<bool>()).prop_map(|(wait, change)| Event::Snapshot { wait, change }),
    ]
}

const TTL: Duration = Duration::from_secs(2);
const LONG_TTL: Duration = Duration::from_secs(5);
const STALENESS: Duration = Duration::from_secs(8);
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(2));
const BUDGET: Duration = Duration::from_secs(1);
const LATENCY: Duration = Duration::from_millis(20);

struct Run {
    source: Scripted,
    secrets: Secrets,
    /// Item id -> end of its last successful fetch (a value's age counts from its arrival).
    last_ok: Vec<(String, Instant)>,
}

impl Run {
    fn note_successes(&mut self) {
        for FetchLog { item, end, ok, .. } in self.source.log() {
            if let (true, Some(end)) = (ok, end) {
                let entry = self
                    .last_ok
                    .iter_mut()
                    .find(|(i, _)| *i == item)
                    .expect("known item");
                entry.1 = entry.1.max(end);
            }
        }
    }

    /// Whether some value was past its maximum staleness at `at`.
    fn stale_at(&self, at: Instant) -> bool {
        self.last_ok.iter().any(|(_, ok)| at >= *ok + STALENESS)
    }

    async fn invoke(&mut self) -> Result<(), TestCaseError> {
        self.note_successes();
        let at = Instant::now();
        let stale = self.stale_at(at);
        let _ = self.secrets.fresh_snapshot().await;
        let waited = at.elapsed();
        prop_assert!(
            waited.is_zero() || stale,
            "an invocation waited {waited:?} with no value past its maximum staleness"
        );
        Ok(())
    }

    async fn snapshot(&mut self, wait: Duration, change: bool) -> Result<(), TestCaseError> {
        let hooks = self.secrets.snapstart();
        let sealed = Instant::now();
        hooks.before_snapshot().await.unwrap();
        prop_assert!(
            self.secrets.snapshot().is_empty(),
            "a value readable after the seal"
        );
        tokio::time::sleep(wait).await;
        if change {
            self.source.change();
        }
        let restored = Instant::now();
        prop_assert!(
            self.source
                .log()
                .iter()
                .all(|e| e.start <= sealed || e.start >= restored),
            "a fetch started between the seal and the restore"
        );
        while let Err(e) = hooks.after_restore().await {
            // The source is failing: this environment fails its restore, and Lambda restores
            // another one later.
            prop_assert!(self.secrets.snapshot().is_empty(), "half-loaded after {e}");
            tokio::time::sleep(secs(1)).await;
            self.source.set_mode(Mode::Ok);
        }
        let want = format!("v{}", self.source.version());
        let snap = self.secrets.snapshot();
        for key in ["a", "b", "c"] {
            prop_assert_eq!(
                snap.expose_str(key).ok(),
                Some(want.as_str()),
                "key {} after the restore",
                key
            );
        }
        Ok(())
    }

    fn check_log(&self) -> Result<(), TestCaseError> {
        prop_assert!(
            self.source.max_in_flight() <= 1,
            "two refreshes of one item in flight"
        );
        let log = self.source.log();
        let mut last_ok: Vec<(String, Instant)> = Vec::new();
        for (n, entry) in log.iter().enumerate() {
            let Some(next) = log[n + 1..].iter().find(|e| e.item == entry.item) else {
                continue;
            };
            let ok_start = last_ok.iter().find(|(i, _)| *i == entry.item).map(|(_, t)| *t);
            if entry.ok {
                last_ok.retain(|(i, _)| *i != entry.item);
                last_ok.push((entry.item.clone(), entry.end.unwrap_or(entry.start)));
                continue;
            }
            let Some(end) = entry.end else { continue };
            // The value's staleness limit, counted from its last good fetch (the load's, first).
            let stale = ok_start.unwrap_or(log[0].end.unwrap_or(log[0].start)) + STALENESS;
            let earliest = (end + BACKOFF.0 / 2).min(stale);
            prop_assert!(
                next.start + ms(1) >= earliest,
                "item {} failed at {:?} and was fetched again {:?} later (backoff at least {:?})",
                entry.item,
                end - log[0].start,
                next.start - end,
                BACKOFF.0 / 2
            );
        }
        Ok(())
    }
}

async fn run(events: Vec<Event>) -> Result<(), TestCaseError> {
    let source = Scripted::new(LATENCY);
    let secrets = Secrets::builder()
        .rate_limits(RateLimits::new())
        .retry_policy(RetryPolicy {
            max_attempts: 2,
            base_delay: ms(10),
            max_delay: ms(50),
            attempt_timeout: ms(500),
        })
        .refresh_timeout(BUDGET)
        .failure_backoff(BACKOFF.0, BACKOFF.1)
        .max_staleness(STALENESS)
        .max_wait(secs(5))
        .add(source.declare("a", "/a").ttl(TTL))
        .add(source.declare("b", "/b").ttl(TTL))
        .add(source.declare("c", "/c").ttl(LONG_TTL))
        .load()
        .await
        .expect("load");
    let loaded = source.log()[0].end.expect("loaded");
    let mut run = Run {
        source,
        secrets,
        last_ok: ["/a", "/b", "/c"].map(|i| (i.to_owned(), loaded)).to_vec(),
    };
    for event in events {
        match event {
            Event::Invoke => run.invoke().await?,
            Event::Traffic { every, span } => {
                let until = Instant::now() + ms(span);
                while Instant::now() < until {
                    run.invoke().await?;
                    tokio::time::sleep(ms(every)).await;
                }
            }
            Event::Idle(n) => tokio::time::sleep(ms(n)).await,
            Event::Freeze(n) => tokio::time::advance(ms(n)).await,
            Event::Answer(mode) => run.source.set_mode(mode),
            Event::Change => {
                run.source.change();
            }
            Event::Snapshot { wait, change } => run.snapshot(ms(wait), change).await?,
        }
        run.check_log()?;
    }
    // The source recovers and changes: with invocations every 50 ms, every value is fresh
    // within: a hung refresh's budget (and grace), the longest backoff, then the bound.
    run.source.set_mode(Mode::Ok);
    let want = format!("v{}", run.source.change());
    let changed = Instant::now();
    let bound = BUDGET
        + secs(2)
        + BACKOFF.1
        + crate::time::schedule::freshness_bound(LONG_TTL, 0.1)
        + LATENCY * 4
        + ms(50);
    loop {
        run.invoke().await?;
        let snap = run.secrets.snapshot();
        if ["a", "b", "c"]
            .iter()
            .all(|k| snap.expose_str(k).ok() == Some(want.as_str()))
        {
            break;
        }
        prop_assert!(
            changed.elapsed() <= bound,
            "not every value fresh {:?} after recovery (bound {bound:?}): {:?}",
            changed.elapsed(),
            ["a", "b", "c"].map(|k| snap.expose_str(k).map(str::to_owned).map_err(|e| e.to_string()))
        );
        tokio::time::sleep(ms(50)).await;
    }
    run.check_log()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_engine_keeps_its_invariants(events in proptest::collection::vec(event(), 1..40), seed in any::<u64>()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        crate::random::set_seed(seed);
        rt.block_on(run(events))?;
    }
}
