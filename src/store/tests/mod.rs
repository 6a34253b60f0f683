//! Tests of the store, in virtual time (`tokio::time::pause`): every sleep, timeout and `Instant`
//! of the store, the call context and the limiter runs on the runtime's clock, so freezes are
//! `tokio::time::advance` and nothing depends on the machine's load. One file per behaviour.

mod failures;
mod freeze;
mod load;
mod properties;
mod reads;
mod refresh;
mod refresh_now;
mod restore;
mod runtime;
mod scripted;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::call::{CallContext, Operation};
use crate::error::CallError;
use crate::limiter::RateLimits;
use crate::source::{Declaration, Fetched, ItemResult, RefreshResult, Refreshed, Source};
use crate::{Error, MemorySource, RetryPolicy, Secrets};
use scripted::{Mode, Scripted};

pub(super) use crate::test_support::Capture;

fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 1,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
        attempt_timeout: Duration::from_secs(2),
    }
}

/// Polls until `cond` holds (bounded), driving refreshes through `snapshot()`.
async fn eventually(secrets: &Secrets, cond: impl Fn(&crate::Snapshot) -> bool) -> bool {
    for _ in 0..400 {
        if cond(&secrets.snapshot()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A builder with limits of its own (tests never share the process-wide ones).
fn builder() -> crate::SecretsBuilder {
    Secrets::builder()
        .rate_limits(RateLimits::new())
        .retry_policy(quick_retry())
}

/// Invokes every `every` until `key` holds `want` (at most `limit`); when it was first served.
async fn served_after(
    secrets: &Secrets,
    key: &str,
    want: &str,
    every: Duration,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() <= limit {
        if secrets.fresh_snapshot().await.expose_str(key).ok() == Some(want) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(every).await;
    }
    None
}

/// Runs a future to completion on the calling thread, with no runtime.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut future = std::pin::pin!(future);
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// A one-worker multi-thread runtime (it runs tasks without anyone driving it).
fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Loads key `k` from a new memory source holding `/k` = `v1`, TTL 10 ms, on `rt` (the tests
/// then read from threads without a runtime).
fn load_k_on(rt: &tokio::runtime::Runtime, staleness: Duration) -> (MemorySource, Secrets) {
    let mem = MemorySource::new();
    mem.set("/k", "v1");
    let secrets = rt
        .block_on(
            Secrets::builder()
                .add(mem.value("k", "/k").ttl(ms(10)))
                .max_staleness(staleness)
                .load(),
        )
        .unwrap();
    (mem, secrets)
}
