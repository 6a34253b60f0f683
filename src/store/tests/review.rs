//! Defects found by a read-only review of the new engine, each reproduced here first (all
//! failed before their fix).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::scripted::{Mode, Scripted};
use super::{block_on, builder, load_k_on, ms, multi_thread_runtime, secs, Capture};
use crate::call::{CallContext, Operation};
use crate::error::CallError;
use crate::source::{Declaration, Fetched, ItemResult, RefreshResult, Refreshed, Source};
use crate::{Error, MemorySource, Secrets};

/// A Secrets-Manager-like source: a refresh is `DescribeSecret` then, if the version changed,
/// `GetSecretValue` (two sequential calls to plentiful quotas: never spread).
struct TwoStep {
    version: AtomicU64,
}

impl Source for TwoStep {
    type Item = String;

    fn kind(&self) -> &'static str {
        "twostep"
    }
    async fn fetch(&self, items: &[String], _calls: &CallContext) -> Vec<ItemResult> {
        let v = self.version.load(Ordering::SeqCst);
        items
            .iter()
            .map(|i| {
                Ok(vec![
                    Fetched::new(i.as_str(), format!("v{v}")).with_version(v.to_string())
                ])
            })
            .collect()
    }
    async fn refresh(
        &self,
        items: &[String],
        current: &[Option<String>],
        calls: &CallContext,
    ) -> Vec<RefreshResult> {
        {
            let mut out = Vec::new();
            for (item, cur) in items.iter().zip(current) {
                let v = calls
                    .call(Operation::new("DescribeSecret"), || async {
                        tokio::time::sleep(ms(20)).await;
                        Ok::<_, CallError>(self.version.load(Ordering::SeqCst))
                    })
                    .await;
                let v = match v {
                    Ok(v) => v,
                    Err(e) => {
                        out.push(Err(e.into_item_error("describe")));
                        continue;
                    }
                };
                if cur.as_deref() == Some(v.to_string().as_str()) {
                    out.push(Ok(Refreshed::Unchanged { refresh_by: None }));
                    continue;
                }
                let got = calls
                    .call(Operation::new("GetSecretValue"), || async {
                        tokio::time::sleep(ms(20)).await;
                        Ok::<_, CallError>(())
                    })
                    .await;
                out.push(match got {
                    Ok(()) => Ok(Refreshed::Changed(vec![Fetched::new(
                        item.as_str(),
                        format!("v{v}"),
                    )
                    .with_version(v.to_string())])),
                    Err(e) => Err(e.into_item_error("get")),
                });
            }
            out
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_freeze_during_a_call_that_succeeds_leaves_the_next_call_its_budget() {
    let capture = Capture::default();
    let _guard = capture.start();
    let src = Arc::new(TwoStep {
        version: AtomicU64::new(1),
    });
    let source = src.clone();
    // Default settings: TTL 10 s, so the default max staleness is 30 s.
    let secrets = builder()
        .retry_policy(crate::call::RetryPolicy::default())
        .add(Declaration::new("k", source, "secret".to_owned()).ttl(secs(10)))
        .load()
        .await
        .unwrap();
    src.version.store(2, Ordering::SeqCst); // rotated
    tokio::time::sleep(secs(10)).await;
    let _ = secrets.snapshot(); // an invocation: due, the refresh starts in the background
    tokio::time::sleep(ms(5)).await; // DescribeSecret is on the wire; the invocation ends
    tokio::time::advance(secs(60)).await; // Lambda freezes the process for a minute
                                          // The next invocation, AWS healthy all along:
    let snap = secrets.fresh_snapshot().await;
    let got = snap.expose_str("k").map(str::to_owned);
    println!("value after thaw: {got:?}");
    println!("stats: {:?}", secrets.stats());
    let logs = capture.text();
    for line in logs.lines().filter(|l| l.contains("WARN")) {
        println!("{line}");
    }
    assert_eq!(
        got.ok().as_deref(),
        Some("v2"),
        "healthy AWS, yet the value is not served"
    );
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
async fn a_zero_failure_backoff_is_rejected() {
    // Accepted before, a failing key was then fetched by every invocation.
    let src = Scripted::new(ms(1));
    let err = builder()
        .add(src.declare("k", "/k").ttl(secs(1)))
        .failure_backoff(Duration::ZERO, Duration::ZERO)
        .load()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::InvalidInput {
                what: "failure backoff",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn fresh_snapshot_waits_without_panicking_outside_a_runtime() {
    let rt = multi_thread_runtime();
    let (mem, secrets) = load_k_on(&rt, ms(10));
    mem.set_latency(ms(200));
    std::thread::sleep(ms(20));
    let s = secrets.clone();
    let r =
        std::thread::spawn(move || block_on(s.fresh_snapshot()).expose_str("k").unwrap().to_owned()).join();
    println!(
        "fresh_snapshot from a non-tokio thread: {:?}",
        r.as_ref().map_err(|e| e.downcast_ref::<String>().cloned())
    );
    assert!(r.is_ok(), "panicked on the request path");
}

#[test]
fn a_refresh_with_no_runtime_to_run_it_ends_as_lost_and_refresh_now_returns() {
    // load() ran on a current-thread runtime that is kept but no longer driven; invocations
    // read from other threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mem, secrets) = load_k_on(&rt, ms(50));
    mem.set("/k", "v2");
    std::thread::sleep(ms(20));
    let _ = secrets.snapshot(); // spawns onto `rt`, which nobody drives
    std::thread::sleep(ms(200)); // far past the max staleness and the refresh budget
    let before = secrets.stats().misses;
    for _ in 0..100 {
        let _ = secrets.snapshot();
    }
    let snap = secrets.snapshot();
    println!(
        "value {:?}, misses for 100 reads: {}, stats {:?}",
        snap.expose_str("k").map(str::to_owned),
        secrets.stats().misses - before,
        secrets.stats()
    );
    let s = secrets.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(block_on(s.refresh_now("k")).is_ok());
    });
    let done = rx.recv_timeout(Duration::from_secs(3));
    println!("refresh_now within 3 s: {done:?}");
    assert!(done.is_ok(), "refresh_now never returns");
    assert!(
        secrets.stats().refresh_failures >= 1,
        "the lost refresh counts as a failure"
    );
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
async fn a_hung_source_never_expires_a_healthy_sources_key() {
    let seen = healthy_values_beside_a_hung_source(secs(30)).await;
    assert!(!seen.iter().any(|v| v.is_err()), "a healthy source's key expired");
}

// ---- A second review of the fixes above. ----

#[tokio::test(start_paused = true)]
async fn a_hung_refresh_in_a_frozen_lambda_ends_at_its_budget() {
    // The watchdog gave back its whole wait after every freeze, so a source hanging outside
    // `CallContext` was never given up: every invocation waited `max_wait`, forever.
    let src = Scripted::new(ms(20));
    let secrets = builder()
        .add(src.declare("k", "/k").ttl(secs(2)))
        .load()
        .await
        .unwrap();
    src.set_mode(Mode::Hang);
    let start = Instant::now();
    let (mut long_waits, mut expired) = (0, 0);
    // One invocation every 10 s (frozen in between), for 5 minutes.
    while start.elapsed() < secs(300) {
        let t = Instant::now();
        let snap = secrets.fresh_snapshot().await;
        long_waits += usize::from(t.elapsed() >= secs(1));
        expired += usize::from(matches!(snap.expose_str("k"), Err(Error::Expired { .. })));
        tokio::time::sleep(ms(50)).await; // the handler runs
        tokio::time::advance(secs(10)).await; // Lambda freezes the process
    }
    let stats = secrets.stats();
    assert!(
        stats.refresh_failures > 0,
        "the hung refresh never ended: {stats:?}"
    );
    assert!(long_waits <= 2, "{long_waits} invocations waited: {stats:?}");
    assert!(expired > 0, "past its staleness, the value is reported expired");
}

#[tokio::test(start_paused = true)]
async fn a_value_joining_a_batch_before_its_first_phase_stays_in_the_batch() {
    // A value refreshed early with a batch kept its first phase and was fetched again at it.
    let src = Scripted::new(ms(20));
    let secrets = builder()
        .add(src.declare("a", "/a").ttl(secs(10)))
        .add(src.declare("b", "/b").ttl(secs(11)))
        .refresh_spread(0.0)
        .load()
        .await
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < secs(40) {
        let _ = secrets.snapshot();
        tokio::time::sleep(ms(50)).await;
    }
    let log = src.log();
    let when =
        |item: &str| -> Vec<Instant> { log.iter().filter(|l| l.item == item).map(|l| l.start).collect() };
    assert_eq!(when("/a"), when("/b"), "fetched together, each once a round");
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
