//! The library's one source of randomness: refresh phases, TTL jitter, backoffs, spreading.
//!
//! One process-wide generator (not a thread-local one per worker thread), so that it can be
//! reseeded as a whole. That matters under SnapStart: every environment restored from one snapshot
//! starts with the same memory, hence the same generator state, and would draw the same "random"
//! refresh phases as every other one (a fleet refreshing in lockstep). [`reseed`] draws a new seed
//! from the operating system (`/dev/urandom`, which Lambda makes unique per restored environment).
//! Draws happen off the warm path only (a load, a refresh ending, a retry), so one lock is cheap.

use std::sync::{Mutex, MutexGuard};

static GENERATOR: Mutex<Option<fastrand::Rng>> = Mutex::new(None);

fn generator() -> MutexGuard<'static, Option<fastrand::Rng>> {
    GENERATOR.lock().unwrap_or_else(|e| e.into_inner())
}

/// A number in `[0, 1)`.
pub(crate) fn f64() -> f64 {
    #[cfg(test)]
    if let Some(x) = THREAD_SEEDED.with(|g| g.borrow_mut().as_mut().map(|g| g.f64())) {
        return x;
    }
    generator().get_or_insert_with(fastrand::Rng::new).f64()
}

/// Starts the generator again from a seed drawn from the operating system, and reseeds the calling
/// thread's `fastrand` generator too (other crates draw from it). Returns whether the seed came
/// from the operating system (else from the clock and the process: distinct per restore only as
/// far as restores happen at distinct nanoseconds).
pub(crate) fn reseed() -> bool {
    let (seed, from_os) = match os_seed() {
        Some(seed) => (seed, true),
        None => (clock_seed(), false),
    };
    *generator() = Some(fastrand::Rng::with_seed(seed));
    fastrand::seed(seed.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15);
    #[cfg(test)]
    THREAD_SEEDED.with(|g| {
        if let Some(g) = g.borrow_mut().as_mut() {
            g.seed(seed);
        }
    });
    from_os
}

#[cfg(test)]
thread_local! {
    /// Tests run in parallel: a test that seeds draws from its own thread's generator.
    static THREAD_SEEDED: std::cell::RefCell<Option<fastrand::Rng>> = const { std::cell::RefCell::new(None) };
}

/// Sets the state the calling thread draws from (tests: reproducible draws, or two restores of one
/// snapshot starting from the same state).
#[cfg(test)]
pub(crate) fn set_seed(seed: u64) {
    THREAD_SEEDED.with(|g| *g.borrow_mut() = Some(fastrand::Rng::with_seed(seed)));
}

fn os_seed() -> Option<u64> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .ok()?;
    Some(u64::from_ne_bytes(bytes))
}

fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    nanos ^ u64::from(std::process::id()).rotate_left(40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reseed_leaves_the_state_a_snapshot_held() {
        // Two restores of one snapshot: the same state, then a reseed each.
        set_seed(7);
        assert!(reseed(), "/dev/urandom is readable on Linux");
        let first: Vec<u64> = (0..4).map(|_| (f64() * 1e9) as u64).collect();
        set_seed(7);
        reseed();
        let second: Vec<u64> = (0..4).map(|_| (f64() * 1e9) as u64).collect();
        assert_ne!(first, second);
        // Without the reseed, the same state draws the same numbers.
        set_seed(7);
        let a = f64();
        set_seed(7);
        assert_eq!(a, f64());
    }
}
