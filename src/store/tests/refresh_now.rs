//! `refresh_now`: a forced refresh of one key, its guard against loops, its budget.

use super::*;

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
async fn refresh_now_does_not_wait_behind_a_spread_refresh() {
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
async fn within_its_interval_a_forced_refresh_that_failed_is_reported_not_hidden() {
    let mem = MemorySource::new();
    mem.set("/k", "v1");
    let secrets = builder().add(mem.value("k", "/k")).load().await.unwrap();
    mem.set_failing(true);
    assert!(secrets.refresh_now("k").await.is_err());
    // No second call within the interval, and no pretending it was refreshed either.
    let fetches = mem.fetches();
    assert!(matches!(secrets.refresh_now("k").await, Err(Error::Load { .. })));
    assert_eq!(mem.fetches(), fetches);
    assert_eq!(
        secrets.get("k").unwrap().expose_str(),
        Some("v1"),
        "the last good value stays"
    );
}

#[tokio::test(start_paused = true)]
async fn refresh_now_within_returns_at_its_budget_and_the_refresh_goes_on() {
    let mem = MemorySource::new();
    mem.set("/k", "v1");
    let secrets = builder().add(mem.value("k", "/k")).load().await.unwrap();
    mem.set_latency(secs(2));
    mem.set("/k", "v2");
    let asked = Instant::now();
    let err = secrets.refresh_now_within("k", ms(100)).await.unwrap_err();
    assert!(asked.elapsed() <= ms(150), "{:?}", asked.elapsed());
    assert!(err.to_string().contains("no answer within its budget"), "{err}");
    tokio::time::sleep(secs(3)).await;
    assert_eq!(secrets.get("k").unwrap().expose_str(), Some("v2"));
}
