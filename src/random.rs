//! The library's one source of randomness: refresh phases, TTL jitter, backoffs, spreading.
//!
//! One process-wide generator (not a thread-local one per worker thread), so that it can be
//! reseeded as a whole. That matters under SnapStart: every environment restored from one snapshot
//! starts with the same memory, hence the same generator state, and would draw the same "random"
//! refresh phases as every other one (a fleet refreshing in lockstep). [`reseed`] draws a new seed
//! from the operating system (`/dev/urandom`, which Lambda makes unique per restored environment).
//! Draws happen off the warm path only (a load, a refresh ending, a retry), so one lock is cheap.

use std::sync::{Mutex, MutexGuard};

/// A generator that can be reseeded whole (the process has one, [`GENERATOR`]).
struct Generator(Mutex<Option<fastrand::Rng>>);

static GENERATOR: Generator = Generator::new();

impl Generator {
    const fn new() -> Self {
        Generator(Mutex::new(None))
    }

    fn lock(&self) -> MutexGuard<'_, Option<fastrand::Rng>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn f64(&self) -> f64 {
        self.lock().get_or_insert_with(fastrand::Rng::new).f64()
    }

    fn seed(&self, seed: u64) {
        *self.lock() = Some(fastrand::Rng::with_seed(seed));
    }

    /// Starts again from a new seed (from the operating system if it can); returns the seed and
    /// whether the operating system gave it.
    fn reseed(&self) -> (u64, bool) {
        let (seed, from_os) = match os_seed() {
            Some(seed) => (seed, true),
            None => (clock_seed(), false),
        };
        self.seed(seed);
        (seed, from_os)
    }

    /// The state, as a snapshot would hold it.
    #[cfg(test)]
    fn state(&self) -> Option<u64> {
        self.lock().as_ref().map(fastrand::Rng::get_seed)
    }
}

/// A number in `[0, 1)`.
pub(crate) fn f64() -> f64 {
    #[cfg(test)]
    if let Some(x) = THREAD_SEEDED.with(|g| g.borrow_mut().as_mut().map(|g| g.f64())) {
        return x;
    }
    GENERATOR.f64()
}

/// Starts the generator again from a seed drawn from the operating system, and reseeds the calling
/// thread's `fastrand` generator too (other threads' are out of reach; the library draws only from
/// this one). Returns whether the seed came from the operating system (else from the clock and the
/// process: distinct per restore only as far as restores happen at distinct nanoseconds).
pub(crate) fn reseed() -> bool {
    let (seed, from_os) = GENERATOR.reseed();
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

    /// Four draws of an environment restored from a snapshot whose generator was in `state`.
    fn restored(state: u64, reseed: bool) -> Vec<f64> {
        let generator = Generator::new();
        generator.seed(state);
        if reseed {
            assert!(generator.reseed().1, "/dev/urandom is readable on Linux");
        }
        (0..4).map(|_| generator.f64()).collect()
    }

    #[test]
    fn two_restores_of_one_generator_state_draw_alike_unless_reseeded() {
        let snapshot = Generator::new();
        snapshot.f64();
        let state = snapshot.state().unwrap();
        assert_eq!(
            restored(state, false),
            restored(state, false),
            "the same memory, the same draws"
        );
        assert_ne!(restored(state, true), restored(state, true));
    }

    #[test]
    fn reseed_starts_the_process_generator_from_a_new_seed() {
        // Other tests draw from it concurrently, which only ever moves it further: a seed equal to
        // the one before (and to none of the states drawn since) would mean no reseed.
        let before = GENERATOR.state();
        assert!(reseed());
        assert_ne!(GENERATOR.state(), before);
    }

    #[test]
    fn a_thread_seeded_by_a_test_reseeds_too() {
        set_seed(7);
        reseed();
        let first: Vec<u64> = (0..4).map(|_| (f64() * 1e9) as u64).collect();
        set_seed(7);
        reseed();
        let second: Vec<u64> = (0..4).map(|_| (f64() * 1e9) as u64).collect();
        assert_ne!(first, second);
        set_seed(7);
        let a = f64();
        set_seed(7);
        assert_eq!(a, f64());
    }
}
