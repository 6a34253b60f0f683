//! [`CallTimer`]: how long a context's calls took (the `cache.refresh.duration` metric): the
//! time during which at least one call was under way, from its first attempt sent to its answer,
//! less the time the process spent frozen.
//!
//! A background refresh's calls may first wait for their spread slot, and Lambda may freeze the
//! process under them: neither says anything of AWS, so neither counts. Each call is an interval
//! (a later call's spread wait is outside its interval, though inside an earlier call's, which
//! then counts once). The freezes are intervals too, from the waits found frozen (a wait that
//! ended far later than due): a call's own waits after its first attempt (attempts, backoff,
//! rate-limit waits for a retry) report only the part certainly frozen, from when they were due
//! (they may be long, and other calls of the group may have run before); the fetch's watch
//! reports its slices whole (at most a second, so that a freeze too short for an attempt's timeout
//! to notice still counts, with at most a second more). The waits before a call's first attempt
//! (its spread slot, its first rate-limit wait) report nothing: the watch's slices cover them.
//! The figure is the length of the union of the calls' intervals, outside every frozen one.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Default)]
pub(crate) struct CallTimer(Mutex<Timing>);

#[derive(Debug, Default)]
struct Timing {
    /// Each call's interval: when its first attempt was sent and when it ended (`None`: under way).
    calls: Vec<(Instant, Option<Instant>)>,
    /// The intervals the process was frozen in (at some point of each).
    frozen: Vec<(Instant, Instant)>,
}

/// A call under way, from its first attempt; its interval ends when this is dropped (answered,
/// given up or cancelled).
#[derive(Debug)]
pub(crate) struct Busy<'a> {
    timer: &'a CallTimer,
    index: usize,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        if let Some(call) = self.timer.lock().calls.get_mut(self.index) {
            call.1 = Some(now);
        }
    }
}

impl CallTimer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Timing> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A call's first attempt is sent at `now`: its interval lasts until the guard is dropped.
    pub(crate) fn begin(&self, now: Instant) -> Busy<'_> {
        let mut t = self.lock();
        t.calls.push((now, None));
        Busy {
            timer: self,
            index: t.calls.len() - 1,
        }
    }

    /// `began..ended` counts as time frozen (see the module's doc for who reports what).
    pub(crate) fn frozen(&self, began: Instant, ended: Instant) {
        if ended > began {
            self.lock().frozen.push((began, ended));
        }
    }

    /// How long the calls took until `now` (a call under way ends at `now`), without the time
    /// frozen; `None` if no attempt was sent.
    pub(crate) fn took(&self, now: Instant) -> Option<Duration> {
        let t = self.lock();
        if t.calls.is_empty() {
            return None;
        }
        let busy = merged(
            t.calls
                .iter()
                .map(|&(from, to)| (from, to.unwrap_or(now).min(now))),
        );
        let frozen = merged(t.frozen.iter().copied());
        let overlap: Duration = busy
            .iter()
            .flat_map(|&(b0, b1)| {
                frozen.iter().map(move |&(f0, f1)| {
                    let (from, to) = (b0.max(f0), b1.min(f1));
                    to.saturating_duration_since(from)
                })
            })
            .sum();
        let total: Duration = busy
            .iter()
            .map(|&(from, to)| to.saturating_duration_since(from))
            .sum();
        Some(total.saturating_sub(overlap))
    }
}

/// The union of `intervals`, as disjoint intervals in order.
fn merged(intervals: impl Iterator<Item = (Instant, Instant)>) -> Vec<(Instant, Instant)> {
    let mut all: Vec<(Instant, Instant)> = intervals.filter(|(from, to)| to > from).collect();
    all.sort_unstable();
    let mut out: Vec<(Instant, Instant)> = Vec::with_capacity(all.len());
    for (from, to) in all {
        match out.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => out.push((from, to)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn overlapping_calls_count_once_and_the_gaps_and_freezes_not_at_all() {
        let t0 = Instant::now();
        let at = |n: u64| t0 + ms(n);
        let timer = CallTimer::default();
        assert_eq!(timer.took(at(0)), None, "no attempt, no figure");
        // A freeze before any call (a spread wait) is not the calls' time.
        timer.frozen(at(0), at(500));
        // Two calls, the second begun while the first was under way: counted once.
        timer.lock().calls.push((at(1_000), Some(at(1_050))));
        timer.lock().calls.push((at(1_010), Some(at(1_040))));
        assert_eq!(timer.took(at(5_000)), Some(ms(50)));
        // A third call after a gap (its spread wait), frozen 2 s in the middle.
        timer.lock().calls.push((at(2_000), Some(at(4_030))));
        timer.frozen(at(2_010), at(4_010));
        // A second observer of the same freeze (an overlapping report) removes nothing more.
        timer.frozen(at(2_500), at(4_010));
        assert_eq!(timer.took(at(5_000)), Some(ms(50 + 30)));
        // A freeze reported by a wait begun before the first call (the watch's slice): only the
        // part after the call's first attempt was the call's.
        timer.frozen(at(900), at(1_020));
        assert_eq!(timer.took(at(5_000)), Some(ms(30 + 30)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_under_way_counts_until_now_and_ends_when_dropped() {
        let timer = CallTimer::default();
        let begun = Instant::now();
        let busy = timer.begin(begun);
        tokio::time::advance(ms(20)).await;
        assert_eq!(timer.took(Instant::now()), Some(ms(20)));
        drop(busy);
        tokio::time::advance(ms(100)).await;
        assert_eq!(timer.took(Instant::now()), Some(ms(20)), "ended when dropped");
    }
}
