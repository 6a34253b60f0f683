//! Reads: what an invocation is served while values are due, refreshing or past their maximum staleness, and what it waits for.

use super::*;

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
    let stats = secrets.stats();
    assert_eq!((stats.misses, stats.waits), (1000, 1000), "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn the_largest_settings_never_panic_on_the_request_path() {
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
async fn the_layer_counts_one_miss_for_one_waiting_invocation() {
    use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
    let mem = MemorySource::new();
    mem.set("/k", "old");
    let secrets = Secrets::builder()
        .add(mem.value("k", "/k").ttl(ms(20)))
        .max_staleness(ms(20))
        .load()
        .await
        .unwrap();
    mem.set("/k", "new");
    mem.set_latency(ms(100));
    tokio::time::sleep(ms(30)).await;
    let mut service = ServiceBuilder::new().layer(secrets.layer()).service(service_fn(
        |req: http::Request<()>| async move {
            let s = req.extensions().get::<crate::Snapshot>().unwrap().clone();
            Ok::<_, std::convert::Infallible>(s.expose_str("k").unwrap().to_owned())
        },
    ));
    let v = service
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(v, "new");
    let stats = secrets.stats();
    println!("{stats:?}");
    assert_eq!((stats.misses, stats.waits), (1, 1), "one invocation, one miss");
}

#[tokio::test(start_paused = true)]
async fn a_max_staleness_equal_to_the_ttl_makes_no_healthy_invocation_wait() {
    let src = Scripted::new(ms(20));
    let secrets = builder()
        .add(src.declare("k", "/k").ttl(secs(10)))
        .max_staleness(secs(10)) // accepted: "must be at least every TTL"
        .load()
        .await
        .unwrap();
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    while start.elapsed() < secs(300) {
        let t = Instant::now();
        let _ = secrets.fresh_snapshot().await;
        worst = worst.max(t.elapsed());
        tokio::time::sleep(ms(50)).await;
    }
    let stats = secrets.stats();
    println!("healthy source, 300 s at 20 invocations/s: {stats:?}, worst wait {worst:?}");
    assert_eq!((stats.waits, stats.refresh_failures), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn past_its_maximum_staleness_a_value_is_never_served_even_while_its_refresh_hangs() {
    // A thousand invocations wait (at most 1 s) for a refresh that hangs past its 5 s budget:
    // every one reads the key as expired (none is served the value past its maximum staleness),
    // and one line says so.
    let capture = Capture::default();
    let _log = capture.start();
    let src = Scripted::new(ms(20));
    let secrets = builder()
        .add(src.declare("k", "/k").ttl(secs(1)))
        .max_staleness(secs(2))
        .max_wait(secs(1))
        .load()
        .await
        .unwrap();
    let info = secrets.snapshot().info("k").cloned().unwrap();
    tokio::time::sleep(ms(1500)).await;
    assert!(info.age() >= ms(1500), "{:?}", info.age());
    src.set_mode(Mode::Hang);
    let _ = secrets.snapshot(); // the refresh starts, and hangs
    tokio::time::sleep(ms(600)).await; // past the maximum staleness
    let readers = (0..1000).map(|_| {
        let secrets = secrets.clone();
        tokio::spawn(async move { secrets.fresh_snapshot().await.get("k").map(|v| v.len()) })
    });
    for read in futures_util::future::join_all(readers).await {
        assert!(matches!(read.unwrap(), Err(Error::Expired { .. })));
    }
    assert!(matches!(secrets.snapshot().get("k"), Err(Error::Expired { .. })));
    // The same answer for a later read, at once: nobody waits again for that refresh.
    let asked = Instant::now();
    let late = secrets.fresh_snapshot().await;
    assert_eq!(asked.elapsed(), Duration::ZERO);
    assert!(matches!(late.get("k"), Err(Error::Expired { .. })));
    let log = capture.text();
    assert_eq!(
        log.matches("are not served until a refresh replaces them")
            .count(),
        1,
        "{log}"
    );
    assert!(!log.contains("serving the last values"), "{log}");
}

#[tokio::test(start_paused = true)]
async fn a_read_with_little_time_left_does_not_make_the_others_give_up_on_the_refresh() {
    // An invocation near its own deadline waits 100 ms for a value past its maximum staleness
    // and gets Error::Expired; the next one, with the whole `max_wait`, still waits for the
    // refresh (2 s) and is served. Once, the hurried read made every later one give up at once.
    let src = Scripted::new(secs(2));
    let secrets = builder()
        .add(src.declare("k", "/k").ttl(secs(1)))
        .max_staleness(secs(3))
        .max_wait(secs(5))
        .load()
        .await
        .unwrap();
    tokio::time::sleep(ms(3100)).await; // past the maximum staleness; nothing read meanwhile
    let hurried = secrets.store.fresh_snapshot(ms(100)).await;
    assert!(matches!(hurried.get("k"), Err(Error::Expired { .. })));
    let patient = secrets.fresh_snapshot().await;
    assert!(patient.get("k").is_ok(), "the patient read gave up too");
}
