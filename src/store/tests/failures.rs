//! Failed refreshes: the last good value kept, backoff, expiry past the maximum staleness, hung and panicking sources, and what is logged.

use super::*;

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

pub(super) use crate::test_support::Capture;

#[tokio::test(start_paused = true)]
async fn a_refresh_that_panics_backs_off_and_counts_a_failure() {
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
async fn after_an_outage_values_come_back_at_once_not_spread() {
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

/// A healthy source beside one that hangs, read by one invocation every 10 s for 2 minutes:
/// the healthy key's value at each invocation (`Err("Expired")` past its staleness).
async fn healthy_values_beside_a_hung_source(staleness: Duration) -> Vec<Result<String, String>> {
    let hung = Scripted::new(ms(20));
    let mem = MemorySource::new();
    mem.set("/m", "m1");
    let secrets = builder()
        .add(hung.declare("h", "/h").ttl(secs(10)))
        .add(mem.value("m", "/m").ttl(secs(10)))
        .max_staleness(staleness)
        .load()
        .await
        .unwrap();
    hung.set_mode(Mode::Hang);
    mem.set("/m", "m2");
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < secs(120) {
        tokio::time::sleep(secs(10)).await;
        let snap = secrets.fresh_snapshot().await;
        seen.push(snap.expose_str("m").map(str::to_owned).map_err(|e| match e {
            Error::Expired { .. } => "Expired".to_owned(),
            e => e.to_string(),
        }));
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn a_hung_source_does_not_throw_away_another_sources_results() {
    let seen = healthy_values_beside_a_hung_source(secs(60)).await;
    assert!(
        seen.iter().any(|v| v.as_deref() == Ok("m2")),
        "the healthy source's value never served"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_source_never_expires_a_healthy_sources_key() {
    let seen = healthy_values_beside_a_hung_source(secs(30)).await;
    assert!(!seen.iter().any(|v| v.is_err()), "a healthy source's key expired");
}

#[tokio::test(start_paused = true)]
async fn values_that_fail_together_are_retried_together() {
    // Each value drew its own backoff: after one failure, 100 values of one source were retried
    // in ~225 calls in 30 s instead of a few.
    let src = Scripted::new(ms(20));
    let mut b = builder().failure_backoff(secs(1), secs(8));
    for i in 0..100 {
        b = b.add(src.declare(&format!("k{i}"), &format!("/k{i}")).ttl(secs(10)));
    }
    let secrets = b.load().await.unwrap();
    let calls = |from: Instant, to: Instant| {
        let mut starts: Vec<Instant> = src
            .log()
            .iter()
            .filter(|l| l.start >= from && l.start < to)
            .map(|l| l.start)
            .collect();
        starts.dedup();
        starts.len()
    };
    let run = |d: Duration| {
        let secrets = secrets.clone();
        async move {
            let t = Instant::now();
            while t.elapsed() < d {
                let _ = secrets.snapshot();
                tokio::time::sleep(ms(50)).await;
            }
        }
    };
    run(secs(30)).await;
    let failing = Instant::now();
    src.set_mode(Mode::Fail);
    run(secs(30)).await;
    let recovered = Instant::now();
    src.set_mode(Mode::Ok);
    run(secs(30)).await;
    let (during, after) = (calls(failing, recovered), calls(recovered, Instant::now()));
    // Backoffs of 1, 2, 4, 8, 8, 8 s: about 6 retries in 30 s, each one call for all 100.
    assert!(during <= 10, "{during} source calls while failing");
    assert!(after <= 6, "{after} source calls in the 30 s after recovery");
}

#[tokio::test(start_paused = true)]
async fn a_refresh_failing_for_a_hundred_values_logs_one_line_and_a_key_again_only_when_its_cause_changes() {
    let capture = Capture::default();
    let _log = capture.start();
    let mem = MemorySource::new();
    for i in 0..100 {
        mem.set(format!("/p{i}"), "v");
    }
    let secrets = builder()
        .add_all((0..100).map(|i| mem.value(format!("k{i}"), format!("/p{i}")).ttl(secs(1))))
        .max_staleness(secs(3600))
        .load()
        .await
        .unwrap();
    mem.set_failing(true);
    for _ in 0..40 {
        let _ = secrets.snapshot();
        tokio::time::sleep(ms(250)).await;
    }
    let failures = secrets.stats().refresh_failures;
    assert!(failures >= 300, "{failures} failed refreshes of values");
    let log = capture.text();
    let lines = log.matches("lambda-secrets refresh failed").count() as u64;
    assert_eq!(
        lines,
        failures / 100,
        "one line per refresh ({failures} failures)"
    );
    assert_eq!(
        log.matches("the cause of the failures changed").count(),
        0,
        "{log}"
    );
    // Another cause: each key says so once.
    mem.set_failing(false);
    for i in 0..100 {
        mem.remove(&format!("/p{i}"));
    }
    for _ in 0..40 {
        let _ = secrets.snapshot();
        tokio::time::sleep(ms(250)).await;
    }
    let log = capture.text();
    assert_eq!(
        log.matches("the cause of the failures changed").count(),
        100,
        "{log}"
    );
}
