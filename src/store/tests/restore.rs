//! SnapStart in the store: reads and refreshes under way when the values are dropped for the
//! snapshot, and a reload that must end within Lambda's restore budget.

use std::time::Duration;

use tokio::time::Instant;

use super::scripted::{Mode, Scripted};
use super::{builder, ms, secs};
use crate::Error;

#[tokio::test(start_paused = true)]
async fn a_refresh_now_and_a_waiting_read_under_way_at_the_seal_end_at_once() {
    let src = Scripted::new(ms(20));
    let secrets = builder()
        .add(src.declare("k", "/k").ttl(secs(1)))
        .max_staleness(secs(2))
        .load()
        .await
        .unwrap();
    src.set_mode(Mode::Hang);
    let forced = tokio::spawn({
        let secrets = secrets.clone();
        async move { secrets.refresh_now("k").await }
    });
    // Past the maximum staleness: a read waits for the (hung) refresh.
    tokio::time::sleep(secs(3)).await;
    let waiting = tokio::spawn({
        let secrets = secrets.clone();
        async move { secrets.fresh_snapshot().await }
    });
    tokio::time::sleep(ms(100)).await;
    assert!(!forced.is_finished() && !waiting.is_finished());

    let sealed = Instant::now();
    secrets.snapstart().before_snapshot().await.unwrap();
    let forced = forced.await.unwrap();
    assert!(
        matches!(forced, Err(Error::DroppedForSnapshot { .. })),
        "{forced:?}"
    );
    assert!(
        waiting.await.unwrap().is_empty(),
        "the waiting read got the sealed snapshot"
    );
    assert!(
        sealed.elapsed() < ms(100),
        "{:?}: nobody waited for the hung source",
        sealed.elapsed()
    );
    // After the seal, no refresh is started.
    assert!(matches!(
        secrets.refresh_now("k").await,
        Err(Error::DroppedForSnapshot { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_source_that_ignores_its_deadline_ends_the_reload_within_the_restore_budget() {
    let src = Scripted::new(ms(20));
    let secrets = builder()
        .load_timeout(secs(30))
        .add(src.declare("k", "/k"))
        .load()
        .await
        .unwrap();
    let hooks = secrets.snapstart();
    hooks.before_snapshot().await.unwrap();
    src.set_mode(Mode::Hang); // never answers, whatever its call context says
    let started = Instant::now();
    let err = hooks.after_restore().await.unwrap_err().to_string();
    assert!(err.contains("key `k`") && err.contains("did not answer"), "{err}");
    // Lambda fails a restore whose hooks run 10 s.
    let took = started.elapsed();
    assert!(took <= Duration::from_millis(9_500), "{took:?}");
    assert!(matches!(secrets.get("k"), Err(Error::DroppedForSnapshot { .. })));
}

#[tokio::test(start_paused = true)]
async fn a_refresh_waiting_in_its_spread_window_at_the_seal_makes_no_call() {
    crate::random::set_seed(3);
    let src = Scripted::new(ms(20));
    let secrets = builder()
        .add(src.declare("k", "/k").ttl(secs(100)))
        .max_staleness(secs(600))
        .load()
        .await
        .unwrap();
    let calls = || secrets.stats().calls.get("GetParameters").copied().unwrap_or(0);
    let loaded = calls();
    tokio::time::advance(secs(101)).await;
    let _ = secrets.snapshot(); // starts the refresh: its call waits for a point of a 10 s window
    tokio::task::yield_now().await;
    assert_eq!(calls(), loaded, "the call is waiting in its window");
    secrets.snapstart().before_snapshot().await.unwrap();
    tokio::time::sleep(secs(30)).await;
    assert_eq!(calls(), loaded, "a call after the seal");
}

/// A source whose refreshes make a value and then hang holding it (a refresh under way), telling
/// the test what watches the value.
#[derive(Default)]
struct Holding {
    calls: std::sync::atomic::AtomicU64,
    watches: std::sync::Mutex<Vec<crate::value::ValueWatch>>,
}

impl crate::Source for Holding {
    type Item = String;
    fn kind(&self) -> &'static str {
        "holding"
    }
    async fn fetch(&self, items: &[String], _: &crate::CallContext) -> Vec<crate::ItemResult> {
        let value = crate::SecretValue::from("plaintext in flight");
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
            self.watches.lock().unwrap().push(value.watch());
            tokio::time::sleep(secs(3)).await;
        }
        items
            .iter()
            .map(|id| Ok(vec![crate::Fetched::new(id.as_str(), value.clone())]))
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn before_snapshot_returns_once_no_refresh_holds_a_value() {
    let source = std::sync::Arc::new(Holding::default());
    let secrets = builder()
        .add(crate::Declaration::new("k", source.clone(), "/k".to_owned()).ttl(ms(100)))
        .load()
        .await
        .unwrap();
    while source.watches.lock().unwrap().is_empty() {
        let _ = secrets.snapshot();
        tokio::time::sleep(ms(10)).await;
    }
    secrets.snapstart().before_snapshot().await.unwrap();
    assert!(
        source.watches.lock().unwrap().iter().all(|w| !w.is_held()),
        "a refresh still held a value when the snapshot could be taken"
    );
}
