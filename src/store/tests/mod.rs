//! Tests of the engine, in virtual time (`tokio::time::pause`): every sleep, timeout and
//! `Instant` of the store, the call context and the limiter runs on the runtime's clock, so
//! freezes are `tokio::time::advance` and nothing depends on the machine's load.

mod properties;
mod restore;
mod review;
mod scripted;

use std::time::Duration;

use crate::{Error, MemorySource, RetryPolicy, Secrets};

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

#[tokio::test(start_paused = true)]
async fn an_item_declared_twice_is_fetched_once_under_both_keys() {
    let mem = MemorySource::new();
    mem.set("/db", "pw");
    let secrets = Secrets::builder()
        .add(mem.value("a", "/db"))
        .add(mem.value("b", "/db"))
        .add(mem.value("a", "/db"))
        .load()
        .await
        .unwrap();
    let snap = secrets.snapshot();
    assert_eq!(snap.expose_str("a").unwrap(), "pw");
    assert_eq!(snap.expose_str("b").unwrap(), "pw");
    assert_eq!(snap.len(), 2);
    assert_eq!(mem.fetches(), 1);
}

#[tokio::test(start_paused = true)]
async fn bad_declarations_are_rejected_naming_the_input() {
    let mem = MemorySource::new();
    mem.set("/a", "1");
    mem.set("/b", "2");
    let err = Secrets::builder()
        .add(mem.value("k", "/a"))
        .add(mem.value("k", "/b"))
        .load()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::DuplicateKey { key, .. } if key == "k"),
        "{err}"
    );

    let err = Secrets::builder()
        .add(mem.value("k", "/a").ttl(Duration::from_secs(60)))
        .max_staleness(Duration::from_secs(10))
        .load()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("shorter than the TTL"), "{err}");

    let err = Secrets::builder()
        .add(mem.value("k", "/a"))
        .ttl_jitter(0.9)
        .load()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TTL jitter"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn missing_items_fail_the_load_listing_every_key() {
    let mem = MemorySource::new();
    mem.set("/a", "1");
    let err = Secrets::builder()
        .add(mem.value("a", "/a"))
        .add(mem.value("b", "/missing-b"))
        .add(mem.value("c", "/missing-c"))
        .load()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("could not load 2 value(s)"), "{text}");
    assert!(
        text.contains("key `b` (memory `/missing-b`): not found"),
        "{text}"
    );
    assert!(text.contains("key `c` (memory `/missing-c`)"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn tree_keys_are_relative_with_prefix() {
    let mem = MemorySource::new();
    mem.set("/app/db/url", "u");
    mem.set("/app/flag", "f");
    mem.set("/other", "o");
    let secrets = Secrets::builder()
        .add(mem.tree("cfg/", "/app"))
        .load()
        .await
        .unwrap();
    assert_eq!(secrets.snapshot().keys(), ["cfg/db/url", "cfg/flag"]);
}

#[tokio::test(start_paused = true)]
async fn past_ttl_the_current_value_is_served_while_the_refresh_runs() {
    let mem = MemorySource::new();
    mem.set("/k", "old");
    let secrets = Secrets::builder()
        .add(mem.value("k", "/k").ttl(Duration::from_millis(30)))
        .max_staleness(Duration::from_secs(60))
        .load()
        .await
        .unwrap();
    mem.set("/k", "new");
    mem.set_latency(Duration::from_millis(200));
    tokio::time::sleep(Duration::from_millis(40)).await;
    // Due: this read starts the refresh and is served the current value at once.
    assert_eq!(secrets.snapshot().expose_str("k").unwrap(), "old");
    assert!(eventually(&secrets, |s| s.expose_str("k").unwrap() == "new").await);
    assert_eq!(mem.fetches(), 2);
    assert_eq!(secrets.stats().refreshes, 1);
    assert_eq!(
        secrets.snapshot().info("k").unwrap().version.as_deref(),
        Some("2")
    );
}

#[tokio::test(start_paused = true)]
async fn a_thousand_readers_of_a_stale_key_cause_one_fetch() {
    let mem = MemorySource::new();
    mem.set("/k", "old");
    let secrets = Secrets::builder()
        .add(mem.value("k", "/k").ttl(Duration::from_millis(20)))
        .max_staleness(Duration::from_millis(20))
        .load()
        .await
        .unwrap();
    mem.set("/k", "new");
    mem.set_latency(Duration::from_millis(100));
    tokio::time::sleep(Duration::from_millis(30)).await;
    let readers: Vec<_> = (0..1000)
        .map(|_| {
            let secrets = secrets.clone();
            tokio::spawn(async move { secrets.fresh_snapshot().await.expose_str("k").unwrap().to_owned() })
        })
        .collect();
    for reader in readers {
        // Past max staleness, every reader waits for the one refresh and sees its value.
        assert_eq!(reader.await.unwrap(), "new");
    }
    assert_eq!(mem.fetches(), 2, "one load + one refresh");
    // Probe defect 12: 1,000 waiting reads counted 3,000 misses. One read is one miss.
    let stats = secrets.stats();
    assert_eq!((stats.misses, stats.waits), (1000, 1000), "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_the_last_good_value_then_recovers() {
    let mem = MemorySource::new();
    mem.set("/k", "good");
    let secrets = Secrets::builder()
        .add(mem.value("k", "/k").ttl(Duration::from_millis(20)))
        .max_staleness(Duration::from_secs(60))
        .retry_policy(quick_retry())
        .failure_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .load()
        .await
        .unwrap();
    mem.set_failing(true);
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(eventually(&secrets, |_| secrets.stats().refresh_failures >= 2).await);
    assert_eq!(secrets.snapshot().expose_str("k").unwrap(), "good");
    mem.set("/k", "rotated");
    mem.set_failing(false);
    assert!(eventually(&secrets, |s| s.expose_str("k").unwrap() == "rotated").await);
}

#[tokio::test(start_paused = true)]
async fn past_max_staleness_a_failed_refresh_makes_the_key_expired() {
    let mem = MemorySource::new();
    mem.set("/k", "good");
    let secrets = Secrets::builder()
        .add(mem.value("k", "/k").ttl(Duration::from_millis(20)))
        .max_staleness(Duration::from_millis(40))
        .retry_policy(quick_retry())
        .failure_backoff(Duration::from_secs(30), Duration::from_secs(30))
        .load()
        .await
        .unwrap();
    mem.set_failing(true);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let snap = secrets.fresh_snapshot().await;
    let err = snap.get("k").unwrap_err();
    assert!(matches!(&err, Error::Expired { key, .. } if key == "k"), "{err}");
    assert!(!err.to_string().contains("good"));
    // No waiting on every invocation after that: the next refresh is backed off.
    let before = mem.fetches();
    let _ = secrets.fresh_snapshot().await;
    assert_eq!(mem.fetches(), before);
}

#[tokio::test(start_paused = true)]
async fn refresh_now_fetches_at_once_and_is_guarded_against_loops() {
    let mem = MemorySource::new();
    mem.set("/pw", "v1");
    let secrets = Secrets::builder()
        .add(mem.value("pw", "/pw"))
        .refresh_now_interval(Duration::from_secs(60))
        .load()
        .await
        .unwrap();
    mem.set("/pw", "v2");
    let snap = secrets.refresh_now("pw").await.unwrap();
    assert_eq!(snap.expose_str("pw").unwrap(), "v2");
    assert_eq!(secrets.snapshot().expose_str("pw").unwrap(), "v2");
    mem.set("/pw", "v3");
    for _ in 0..100 {
        secrets.refresh_now("pw").await.unwrap();
    }
    assert_eq!(mem.fetches(), 2, "one load + one forced refresh");
    assert!(matches!(
        secrets.refresh_now("nope").await,
        Err(Error::MissingKey { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn refresh_now_reports_a_failed_fetch() {
    let mem = MemorySource::new();
    mem.set("/pw", "v1");
    let secrets = Secrets::builder()
        .add(mem.value("pw", "/pw"))
        .retry_policy(quick_retry())
        .load()
        .await
        .unwrap();
    mem.set_failing(true);
    let err = secrets.refresh_now("pw").await.unwrap_err();
    assert!(err.to_string().contains("key `pw`"), "{err}");
    assert_eq!(secrets.snapshot().expose_str("pw").unwrap(), "v1");
}

#[tokio::test(start_paused = true)]
async fn keys_due_together_are_refreshed_in_one_fetch() {
    let mem = MemorySource::new();
    for i in 0..20 {
        mem.set(format!("/k{i}"), "v");
    }
    let mut builder = Secrets::builder().default_ttl(Duration::from_millis(30));
    for i in 0..20 {
        builder = builder.add(mem.value(format!("k{i}"), format!("/k{i}")));
    }
    let secrets = builder.load().await.unwrap();
    tokio::time::sleep(Duration::from_millis(40)).await;
    let _ = secrets.snapshot();
    assert!(eventually(&secrets, |_| secrets.stats().refreshes == 20).await);
    assert_eq!(mem.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_source_refresh_by_caps_the_ttl() {
    let mem = MemorySource::new();
    let soon = std::time::SystemTime::now() + Duration::from_millis(1200);
    mem.set_with_refresh_by("/rotating", "v1", Some(soon));
    let secrets = Secrets::builder()
        .add(mem.value("k", "/rotating").ttl(Duration::from_secs(3600)))
        .load()
        .await
        .unwrap();
    assert_eq!(secrets.snapshot().info("k").unwrap().refresh_by, Some(soon));
    mem.set("/rotating", "v2");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // Due at the rotation, not after the hour-long TTL.
    assert!(eventually(&secrets, |s| s.expose_str("k").unwrap() == "v2").await);
}

#[tokio::test(start_paused = true)]
async fn a_declared_key_is_never_shadowed_by_a_new_name_under_a_path() {
    let mem = MemorySource::new();
    mem.set("/cred", "declared");
    mem.set("/app/flag", "on");
    let secrets = Secrets::builder()
        .add(mem.tree("", "/app").ttl(Duration::from_millis(20)))
        .add(mem.value("db_password", "/cred").ttl(Duration::from_millis(20)))
        .load()
        .await
        .unwrap();
    mem.set("/app/db_password", "planted");
    mem.set("/app/new", "x");
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(eventually(&secrets, |s| s.get("new").is_ok()).await);
    assert_eq!(secrets.snapshot().expose_str("db_password").unwrap(), "declared");
}

#[tokio::test(start_paused = true)]
async fn a_json_field_that_is_missing_fails_the_load_naming_key_and_field() {
    let mem = MemorySource::new();
    mem.set("/rds", r#"{"password":"hunter2"}"#);
    mem.set("/plain", "hunter2");
    let err = Secrets::builder()
        .add(mem.value("user", "/rds").json_field("username"))
        .add(mem.value("pw", "/plain").json_field("password"))
        .add(mem.value("ok", "/rds").json_field("password"))
        .load()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("key `user` (memory `/rds`): the JSON object has no field `username`"),
        "{text}"
    );
    assert!(
        text.contains("key `pw` (memory `/plain`): the value is not a JSON object"),
        "{text}"
    );
    assert!(!text.contains("key `ok`") && !text.contains("hunter2"), "{text}");
}

#[test]
fn a_refresh_lost_with_its_runtime_does_not_block_the_key() {
    let mem = MemorySource::new();
    mem.set("/k", "v1");
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let secrets = rt().block_on(
        Secrets::builder()
            .add(mem.value("k", "/k").ttl(Duration::from_millis(10)))
            .max_staleness(Duration::from_secs(60))
            .failure_backoff(Duration::from_millis(10), Duration::from_millis(20))
            .load(),
    );
    let secrets = secrets.unwrap();
    mem.set("/k", "v2");
    mem.set_latency(Duration::from_secs(3600));
    // A runtime that starts the refresh and is dropped with it in flight.
    let doomed = rt();
    doomed.block_on(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = secrets.snapshot();
        tokio::time::sleep(Duration::from_millis(20)).await;
    });
    drop(doomed);
    // Review defect 1: a refresh lost with its runtime counts as a failure and backs off.
    assert_eq!(secrets.stats().refresh_failures, 1);
    mem.set_latency(Duration::ZERO);
    let fresh = rt().block_on(async { eventually(&secrets, |s| s.expose_str("k").unwrap() == "v2").await });
    assert!(fresh, "a new refresh replaced the lost one");
}

// ---- The refresh engine's defects (issue "Refresh engine"), each reproduced in virtual time. ----

use std::sync::Arc;

use tokio::time::Instant;

use crate::limiter::RateLimits;
use scripted::{Mode, Scripted};

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

pub(super) use crate::test_support::Capture;

#[tokio::test(start_paused = true)]
async fn a_refresh_that_panics_backs_off_and_counts_a_failure() {
    // Review defect 1: a panicked refresh set no backoff, so every invocation restarted it.
    let src = Scripted::new(ms(20));
    let secrets = builder()
        .add(src.declare("k", "/k").ttl(secs(1)))
        .max_staleness(secs(60))
        .failure_backoff(secs(1), secs(8))
        .load()
        .await
        .unwrap();
    src.set_mode(Mode::Panic);
    tokio::time::sleep(secs(1)).await;
    for _ in 0..50 {
        let _ = secrets.snapshot();
        tokio::time::sleep(ms(1)).await;
    }
    assert_eq!(
        src.fetches(),
        2,
        "the load, one refresh that panicked, then a backoff"
    );
    assert_eq!(secrets.stats().refresh_failures, 1);
    assert_eq!(
        secrets.snapshot().expose_str("k").unwrap(),
        "v1",
        "the last good value"
    );
    src.set_mode(Mode::Ok);
    let v = format!("v{}", src.change());
    assert!(served_after(&secrets, "k", &v, ms(50), secs(10)).await.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_refresh_that_hangs_ends_at_its_budget_and_backs_off() {
    let src = Scripted::new(ms(20));
    let secrets = builder()
        .add(src.declare("k", "/k").ttl(secs(1)))
        .max_staleness(secs(600))
        .refresh_timeout(secs(5))
        .load()
        .await
        .unwrap();
    src.set_mode(Mode::Hang);
    tokio::time::sleep(secs(1)).await;
    let _ = secrets.snapshot();
    let started = Instant::now();
    while secrets.stats().refresh_failures == 0 && started.elapsed() < secs(60) {
        let _ = secrets.snapshot();
        tokio::time::sleep(ms(100)).await;
    }
    assert_eq!(secrets.stats().refresh_failures, 1);
    assert!(started.elapsed() <= secs(5) + secs(3), "{:?}", started.elapsed());
    assert_eq!(src.fetches(), 2);
    assert_eq!(src.max_in_flight(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_largest_settings_never_panic_on_the_request_path() {
    // Review defect 2: an unvalidated pacing made `Instant` arithmetic panic on the request path.
    let src = Scripted::new(ms(20));
    let week = secs(7 * 24 * 3600);
    let secrets = builder()
        .add(src.declare("k", "/k").ttl(week))
        .max_staleness(week * 4)
        .refresh_timeout(secs(3600))
        .max_wait(secs(3600))
        .failure_backoff(secs(3600), secs(3600))
        .refresh_now_interval(secs(3600))
        .load()
        .await
        .unwrap();
    let v = format!("v{}", src.change());
    tokio::time::advance(week + secs(3600)).await; // frozen for over a week
    assert_eq!(secrets.fresh_snapshot().await.expose_str("k").unwrap(), "v1");
    // The refresh spreads its call over at most a tenth of the week.
    assert!(served_after(&secrets, "k", &v, secs(60), week / 10 + secs(120))
        .await
        .is_some());
}

#[tokio::test(start_paused = true)]
async fn a_long_refresh_does_not_put_every_invocation_on_the_slow_path() {
    // Review defect 3: a refresh outliving a fixed in-flight expiry made every invocation take
    // the units lock (counted as a miss).
    let src = Scripted::new(secs(1));
    let secrets = builder()
        .retry_policy(RetryPolicy {
            attempt_timeout: secs(10),
            ..quick_retry()
        })
        .refresh_timeout(secs(600))
        .refresh_spread(0.0)
        .add(src.declare("k", "/k").ttl(secs(10)))
        .max_staleness(secs(3600))
        .load()
        .await
        .unwrap();
    src.set_pages(300); // a path of 3,000 parameters, one second a page
    while secrets.stats().misses == 0 {
        let _ = secrets.snapshot();
        tokio::time::sleep(secs(1)).await;
    }
    for _ in 0..250 {
        let _ = secrets.snapshot();
        tokio::time::sleep(secs(1)).await;
    }
    assert_eq!(src.fetches(), 2, "the refresh is still under way");
    assert_eq!(secrets.stats().misses, 1, "only the invocation that started it");
}

#[tokio::test(start_paused = true)]
async fn a_spread_never_outlasts_the_maximum_staleness() {
    // Review defect 4's scenario: a spread refresh starting just before the value goes stale.
    // The spread is capped at half the time left, so nobody waits for it (a waiting
    // invocation would also hurry it: `CallContext` test `a_hurried_spread_call_starts_at_once`).
    let src = Scripted::new(ms(20));
    let secrets = builder()
        .add(src.declare("k", "/k").ttl(secs(100)))
        .max_staleness(secs(104))
        .load()
        .await
        .unwrap();
    let v = format!("v{}", src.change());
    tokio::time::sleep(ms(103_900)).await;
    let _ = secrets.snapshot(); // due, not stale: a spread refresh starts
    tokio::time::sleep(ms(200)).await;
    let started = Instant::now();
    let snap = secrets.fresh_snapshot().await;
    assert_eq!(snap.expose_str("k").unwrap(), v);
    assert!(
        started.elapsed().is_zero() && secrets.stats().waits == 0,
        "{:?}",
        secrets.stats()
    );
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

#[test]
fn refresh_now_and_refreshes_work_from_a_thread_without_a_runtime() {
    // Review defect 5: `refresh_now` used `tokio::spawn` and panicked outside a runtime.
    let rt = multi_thread_runtime();
    let (mem, secrets) = load_k_on(&rt, secs(60));
    mem.set("/k", "v2");
    let s = secrets.clone();
    let snap = std::thread::spawn(move || block_on(s.refresh_now("k")))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(snap.expose_str("k").unwrap(), "v2");
    mem.set("/k", "v3");
    std::thread::sleep(ms(20));
    let s = secrets.clone();
    let fresh = std::thread::spawn(move || {
        // Real time on a runtime's threads: a generous bound for a busy machine.
        for _ in 0..2000 {
            if s.snapshot().expose_str("k").unwrap() == "v3" {
                return true;
            }
            std::thread::sleep(ms(5));
        }
        false
    });
    assert!(fresh.join().unwrap(), "refreshed on the runtime load() ran on");
}

#[tokio::test(start_paused = true)]
async fn a_spread_refresh_of_many_pages_gives_every_call_an_attempt() {
    // Probe defect 7: a paced refresh spent its budget before its later calls started.
    let src = Scripted::new(ms(20));
    let ttl = secs(300);
    let secrets = builder()
        .add(src.declare("p", "/path").ttl(ttl))
        .load()
        .await
        .unwrap();
    src.set_pages(30);
    let v = format!("v{}", src.change());
    let seen = served_after(&secrets, "p", &v, secs(1), secs(400))
        .await
        .expect("refreshed");
    assert!(seen <= ttl.mul_f64(1.1) + ms(30 * 20) + secs(1), "{seen:?}");
    assert_eq!(secrets.stats().refresh_failures, 0);
    assert_eq!(secrets.stats().calls["GetParameters"], 1 + 30);
}

#[tokio::test(start_paused = true)]
async fn refresh_now_does_not_wait_behind_a_spread_refresh() {
    // Probe defect 9: `refresh_now` during a background refresh waited for it (10 s, failed).
    crate::random::set_seed(9);
    let src = Scripted::new(ms(20));
    let secrets = builder()
        .add(src.declare("k", "/k").ttl(secs(300)))
        .load()
        .await
        .unwrap();
    src.set_pages(10);
    while secrets.stats().misses == 0 {
        let _ = secrets.snapshot();
        tokio::time::sleep(secs(1)).await;
    }
    assert_eq!(
        src.fetches(),
        2,
        "a background refresh is spreading its calls over 30 s"
    );
    let v = format!("v{}", src.change());
    let started = Instant::now();
    let snap = secrets.refresh_now("k").await.unwrap();
    // Ten 20 ms calls, and at most a second's wait for the rate limit (10 a second) whose tokens
    // the spreading refresh may hold; the old engine waited for the whole spread (30 s).
    assert!(started.elapsed() <= ms(10 * 20 + 1100), "{:?}", started.elapsed());
    assert_eq!(snap.expose_str("k").unwrap(), v);
    // The superseded refresh ends later; it neither fails the key nor brings back old values.
    tokio::time::sleep(secs(40)).await;
    assert_eq!(secrets.snapshot().expose_str("k").unwrap(), v);
    assert_eq!(secrets.stats().refresh_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn after_an_outage_values_come_back_at_once_not_spread() {
    // Probe defect 10: after an outage, refreshes were paced (all keys back 26 s later).
    let src = Scripted::new(ms(20));
    let secrets = builder()
        .add(src.declare("k", "/k").ttl(secs(300)))
        .failure_backoff(secs(1), secs(4))
        .load()
        .await
        .unwrap();
    src.set_pages(10);
    src.set_mode(Mode::Fail);
    while secrets.stats().refresh_failures < 3 {
        let _ = secrets.snapshot();
        tokio::time::sleep(ms(100)).await;
    }
    src.set_mode(Mode::Ok);
    let v = format!("v{}", src.change());
    let seen = served_after(&secrets, "k", &v, ms(100), secs(60))
        .await
        .expect("recovered");
    assert!(seen <= secs(4) + ms(10 * 20 + 100), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn an_expired_key_is_not_reported_as_served() {
    // Probe defect 12: the warning said "serving the last good value" for an expired key.
    let capture = Capture::default();
    let _guard = capture.start();
    let mem = MemorySource::new();
    mem.set("/k", "good");
    let secrets = builder()
        .add(mem.value("k", "/k").ttl(ms(20)))
        .max_staleness(ms(40))
        .load()
        .await
        .unwrap();
    mem.set_failing(true);
    tokio::time::sleep(ms(60)).await;
    assert!(secrets.fresh_snapshot().await.get("k").is_err());
    let logs = capture.text();
    assert!(logs.contains("no longer served"), "{logs}");
    assert!(!logs.contains("serving the last good value"), "{logs}");
    assert!(!logs.contains("good\""), "no value in the logs");
}

#[tokio::test(start_paused = true)]
async fn with_default_settings_a_change_is_served_within_the_bound_and_no_invocation_waits() {
    // The issue's measured run, in virtual time: TTL 2 s, 110 values, an invocation every 50 ms,
    // one value changed at 1 s, 20 ms latency: served within TTL x 1.1 + 0.5 s, nobody waits.
    let ssm = Scripted::new(ms(20));
    let sm = Scripted::new(ms(20));
    let mut b = builder().default_ttl(secs(2));
    for i in 0..100 {
        b = b.add(ssm.declare(&format!("p{i}"), &format!("/p/{i}")));
    }
    for i in 0..10 {
        b = b.add(sm.declare(&format!("s{i}"), &format!("secret-{i}")));
    }
    let secrets = b.load().await.unwrap();
    tokio::time::sleep(secs(1)).await;
    let v = format!("v{}", ssm.change());
    let seen = served_after(&secrets, "p7", &v, ms(50), secs(6))
        .await
        .expect("served");
    assert!(seen <= secs(2).mul_f64(1.1) + ms(500), "{seen:?}");
    let stats = secrets.stats();
    assert_eq!((stats.waits, stats.refresh_failures), (0, 0), "{stats:?}");
}
