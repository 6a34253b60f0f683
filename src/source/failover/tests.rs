//! The failover rules in virtual time, over a source whose two Regions the test scripts.

use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::call::{Operation, RetryPolicy};

/// How one Region answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answers {
    /// After `latency`, each item's value, changed at `modified` seconds after the epoch.
    Values { latency: Duration, modified: u64 },
    /// After `latency`, a 503 for every item.
    Unavailable { latency: Duration },
    /// After `latency`, not found.
    NotFound { latency: Duration },
    /// Never.
    Hangs,
}

#[derive(Debug)]
struct Region {
    name: &'static str,
    answers: Mutex<Answers>,
    calls: AtomicU32,
    /// The version id its values carry, if any.
    version: Mutex<Option<&'static str>>,
    /// Whether version ids are the same in every Region (as Secrets Manager's).
    global: std::sync::atomic::AtomicBool,
    /// Every item it was asked for, in order.
    asked: Mutex<Vec<String>>,
}

impl Region {
    fn new(name: &'static str, answers: Answers) -> Arc<Region> {
        Arc::new(Region {
            name,
            answers: Mutex::new(answers),
            calls: AtomicU32::new(0),
            version: Mutex::new(None),
            global: std::sync::atomic::AtomicBool::new(false),
            asked: Mutex::new(Vec::new()),
        })
    }

    fn set(&self, answers: Answers) {
        *self.answers.lock().unwrap() = answers;
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }

    /// Values from now on carry version id `version`, the same in every Region.
    fn set_version(&self, version: &'static str) {
        *self.version.lock().unwrap() = Some(version);
        self.global.store(true, Ordering::SeqCst);
    }
}

impl Source for Region {
    type Item = String;

    fn kind(&self) -> &'static str {
        "test"
    }

    /// One call through `calls` (its retries, timeouts and the hedge's watch), answering every
    /// item as the Region is set to.
    async fn fetch(&self, items: &[String], calls: &CallContext) -> Vec<ItemResult> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.asked.lock().unwrap().extend(items.iter().cloned());
        let answers = *self.answers.lock().unwrap();
        let version = *self.version.lock().unwrap();
        let name = self.name;
        let answered = calls
            .call(TEST_GET, || async move {
                match answers {
                    Answers::Values { latency, .. } | Answers::NotFound { latency } => {
                        tokio::time::sleep(latency).await;
                        Ok(())
                    }
                    Answers::Unavailable { latency } => {
                        tokio::time::sleep(latency).await;
                        Err(CallError::new(
                            CallErrorKind::Transient,
                            "TestGet: ServiceUnavailable (HTTP 503)",
                        ))
                    }
                    Answers::Hangs => std::future::pending().await,
                }
            })
            .await;
        items
            .iter()
            .map(|item| {
                answered.clone().map_err(ItemError::Call)?;
                match answers {
                    Answers::Values { modified, .. } => {
                        let mut fetched = Fetched::new(item.clone(), format!("{item}@{name}"))
                            .with_modified_at(Some(SystemTime::UNIX_EPOCH + Duration::from_secs(modified)));
                        fetched.version = version.map(str::to_owned);
                        Ok(vec![fetched])
                    }
                    _ => Err(ItemError::NotFound),
                }
            })
            .collect()
    }
}

impl Regional for Region {
    fn region(&self) -> Option<String> {
        Some(self.name.to_owned())
    }

    fn in_region(&self, item: &String, region: &str) -> String {
        item.replace("us-east-1", region)
    }

    /// `name:3`: a version of the primary's own.
    fn fails_over(&self, item: &String) -> bool {
        !item.contains(':') || item.starts_with("arn:")
    }

    fn global_versions(&self) -> bool {
        self.global.load(Ordering::SeqCst)
    }
}

/// A scarce quota's operation: a background refresh spreads its calls.
const TEST_GET: Operation = Operation::new("TestGet").with_quota(crate::limiter::QuotaClass::SsmGet);

const MS: Duration = Duration::from_millis(1);

fn healthy(modified: u64) -> Answers {
    Answers::Values {
        latency: 20 * MS,
        modified,
    }
}

fn pair(primary: Answers, replica: Answers) -> (Failover<Region>, Arc<Region>, Arc<Region>) {
    let (p, r) = (
        Region::new("us-east-1", primary),
        Region::new("us-west-2", replica),
    );
    let failover = Failover::new(p.clone(), r.clone(), "us-west-2".into(), None);
    (failover, p, r)
}

/// A load's context: 10 s, the default policy (3 s attempts: a 1 s hedge).
fn calls() -> CallContext {
    CallContext::new(
        Arc::default(),
        RetryPolicy::default(),
        None,
        Instant::now() + Duration::from_secs(10),
    )
}

fn items(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn served_by(results: &[ItemResult]) -> Vec<Option<String>> {
    results
        .iter()
        .map(|r| r.as_ref().ok().and_then(|f| f[0].region.clone()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_healthy_primary_serves_and_the_failover_region_is_not_asked() {
    let (failover, primary, replica) = pair(healthy(10), healthy(10));
    let results = failover.fetch(&items(&["a", "b"]), &calls()).await;
    assert_eq!(
        served_by(&results),
        [Some("us-east-1".into()), Some("us-east-1".into())]
    );
    assert_eq!((primary.calls(), replica.calls()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_failing_primary_is_read_from_the_failover_region_then_skipped_then_probed_and_failed_back() {
    let (failover, primary, replica) = pair(Answers::Unavailable { latency: 20 * MS }, healthy(10));
    let results = failover.fetch(&items(&["a"]), &calls()).await;
    assert_eq!(served_by(&results), [Some("us-west-2".into())]);
    assert_eq!((primary.calls(), replica.calls()), (1, 1));
    // Within the backoff (at least 0.5 s after one failure) the primary is not asked.
    failover.fetch(&items(&["a"]), &calls()).await;
    assert_eq!((primary.calls(), replica.calls()), (1, 2), "no doubled calls");
    // After it (at most 1 s), the primary is probed; it answers: failback.
    tokio::time::advance(Duration::from_secs(1)).await;
    primary.set(healthy(11));
    let results = failover.fetch(&items(&["a"]), &calls()).await;
    assert_eq!(served_by(&results), [Some("us-east-1".into())]);
    assert_eq!((primary.calls(), replica.calls()), (2, 2));
    failover.fetch(&items(&["a"]), &calls()).await;
    assert_eq!((primary.calls(), replica.calls()), (3, 2), "back on the primary");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_primary_costs_a_cold_load_the_hedge_delay_and_a_round_trip() {
    let (failover, _, replica) = pair(Answers::Hangs, healthy(10));
    let start = Instant::now();
    let results = failover.fetch(&items(&["a", "b"]), &calls()).await;
    let took = start.elapsed();
    assert_eq!(
        served_by(&results),
        [Some("us-west-2".into()), Some("us-west-2".into())]
    );
    assert_eq!(replica.calls(), 1);
    // The default hedge: a third of the 3 s attempt timeout; then the replica's 20 ms.
    assert_eq!(took, Duration::from_secs(1) + 20 * MS, "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_primary_gets_half_a_refresh_s_budget_then_the_failover_region_is_asked() {
    let (failover, _, replica) = pair(Answers::Hangs, healthy(10));
    let start = Instant::now();
    let results = failover.refresh(&items(&["a"]), &[None], &calls()).await;
    assert!(matches!(&results[0], Ok(Refreshed::Changed(f)) if f[0].region.as_deref() == Some("us-west-2")));
    assert_eq!(replica.calls(), 1);
    assert_eq!(start.elapsed(), Duration::from_secs(5) + 20 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_not_found_from_the_primary_is_an_answer_not_masked_by_the_failover_region() {
    let (failover, _, replica) = pair(Answers::NotFound { latency: 20 * MS }, healthy(10));
    let results = failover.fetch(&items(&["deleted"]), &calls()).await;
    assert!(matches!(results[0], Err(ItemError::NotFound)), "{:?}", results[0]);
    assert_eq!(replica.calls(), 0);
    // And it counts as the primary answering: no failover afterwards.
    assert_eq!(failover.route().first(Instant::now()), Side::Primary);
}

#[tokio::test(start_paused = true)]
async fn a_slow_primary_s_answer_wins_over_the_failover_region_s_not_found() {
    // The replica answers first (hedged), but without the value (a secret it has not received yet):
    // the primary's later answer is used for it.
    let (failover, _, _) = pair(
        Answers::Values {
            latency: 1500 * MS,
            modified: 10,
        },
        Answers::NotFound { latency: 20 * MS },
    );
    let results = failover.fetch(&items(&["new"]), &calls()).await;
    assert_eq!(served_by(&results), [Some("us-east-1".into())]);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_answered_by_a_lagging_replica_never_goes_backwards() {
    let (failover, primary, replica) = pair(healthy(20), healthy(10));
    // Loaded from the primary: the version changed at t = 20.
    failover.fetch(&items(&["db"]), &calls()).await;
    // The primary fails; the replica still has the version of t = 10.
    primary.set(Answers::Unavailable { latency: 20 * MS });
    let results = failover
        .refresh(&items(&["db"]), &[Some("v".into())], &calls())
        .await;
    assert!(
        matches!(results[0], Ok(Refreshed::Unchanged { .. })),
        "{:?}",
        results[0]
    );
    assert_eq!(replica.calls(), 1);
    // Once the replica has caught up (t = 20 or later), its value is taken.
    tokio::time::advance(Duration::from_secs(61)).await;
    replica.set(healthy(25));
    let results = failover
        .refresh(&items(&["db"]), &[Some("v".into())], &calls())
        .await;
    assert!(
        matches!(&results[0], Ok(Refreshed::Changed(f)) if f[0].region.as_deref() == Some("us-west-2")),
        "{:?}",
        results[0]
    );
}

#[tokio::test(start_paused = true)]
async fn items_are_named_as_the_failover_region_names_them() {
    let (failover, _, _) = pair(Answers::Unavailable { latency: 20 * MS }, healthy(10));
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf".to_owned();
    let results = failover.fetch(std::slice::from_ref(&arn), &calls()).await;
    let fetched = &results[0].as_ref().unwrap()[0];
    assert_eq!(
        fetched.name,
        "arn:aws:secretsmanager:us-west-2:123456789012:secret:db-AbCdEf"
    );
}

#[tokio::test(start_paused = true)]
async fn a_seal_forgets_the_failover_state() {
    let (failover, _, _) = pair(Answers::Unavailable { latency: 20 * MS }, healthy(10));
    failover.fetch(&items(&["a"]), &calls()).await;
    assert_eq!(failover.route().first(Instant::now()), Side::Replica);
    failover.seal();
    assert_eq!(failover.route().first(Instant::now()), Side::Primary);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_waiting_for_its_spread_slot_is_not_cut_off_before_its_primary_call() {
    // A background refresh's calls wait for a slot in the spread window (30 s here) before they
    // are sent: the primary's share of the budget starts after it.
    let (failover, _, replica) = pair(healthy(10), healthy(10));
    let calls = CallContext::new(
        Arc::default(),
        RetryPolicy::default(),
        None,
        Instant::now() + Duration::from_secs(35),
    )
    .spread(Duration::from_secs(30), Arc::new(crate::call::Urgency::default()));
    let results = failover.refresh(&items(&["a"]), &[None], &calls).await;
    assert!(
        matches!(&results[0], Ok(Refreshed::Changed(f)) if f[0].region.as_deref() == Some("us-east-1")),
        "{:?}",
        results[0]
    );
    assert_eq!(replica.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn while_skipped_the_primary_is_still_asked_what_the_failover_region_does_not_have() {
    let (failover, primary, replica) = pair(Answers::Unavailable { latency: 20 * MS }, healthy(10));
    failover.fetch(&items(&["a"]), &calls()).await;
    assert_eq!(failover.route().first(Instant::now()), Side::Replica);
    // Not copied to the replica yet; the primary is back and has it.
    replica.set(Answers::NotFound { latency: 20 * MS });
    primary.set(healthy(10));
    let results = failover.fetch(&items(&["new"]), &calls()).await;
    assert_eq!(served_by(&results), [Some("us-east-1".into())]);
    assert_eq!(
        failover.route().first(Instant::now()),
        Side::Primary,
        "failed back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_version_of_the_primary_s_own_is_never_asked_of_the_failover_region() {
    let (failover, _, replica) = pair(Answers::Unavailable { latency: 20 * MS }, healthy(10));
    let results = failover.fetch(&items(&["db:3", "plain"]), &calls()).await;
    assert!(matches!(&results[0], Err(ItemError::Call(_))), "{:?}", results[0]);
    assert_eq!(served_by(&results)[1], Some("us-west-2".into()));
    assert_eq!(replica.calls(), 1);
    assert_eq!(
        failover.route().first(Instant::now()),
        Side::Replica,
        "an outage all the same"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_failures_of_one_outage_count_once() {
    let (failover, primary, _) = pair(Answers::Unavailable { latency: 20 * MS }, healthy(10));
    let calls = calls();
    let all = items(&["a"]);
    futures_util::future::join_all((0..5).map(|_| failover.fetch(&all, &calls))).await;
    // One failure: the primary is asked again within a second, not a minute.
    tokio::time::advance(Duration::from_secs(1)).await;
    primary.set(healthy(10));
    let results = failover.fetch(&all, &calls).await;
    assert_eq!(served_by(&results), [Some("us-east-1".into())]);
}

/// One call every 2 s, the burst spent: the next call waits 2 s for its token.
async fn spent_limits() -> crate::limiter::RateLimits {
    spent_limits_at(0.5).await
}

/// `rate` calls a second, burst 1, spent: the next call waits `1 / rate` for its token.
async fn spent_limits_at(rate: f64) -> crate::limiter::RateLimits {
    let limits = crate::limiter::RateLimits::new();
    limits.set(
        crate::limiter::QuotaClass::SsmGet,
        crate::limiter::Quota::new(rate, 1),
    );
    let far = crate::time::Deadline::new(Instant::now() + Duration::from_secs(60));
    limits
        .bucket(crate::limiter::QuotaClass::SsmGet)
        .acquire(&far)
        .await
        .unwrap();
    limits
}

#[tokio::test(start_paused = true)]
async fn a_primary_held_back_by_the_function_s_own_rate_limit_is_not_hedged() {
    // One call a second, the burst spent: the primary's call waits 2 s for its token, then is
    // answered in 20 ms. The wait is the function's own (a fleet sharing the quota), not the
    // primary's: the 1 s hedge does not ask the failover Region.
    let limits = spent_limits().await;
    let (failover, primary, replica) = pair(healthy(10), healthy(10));
    let calls = CallContext::new(
        Arc::default(),
        RetryPolicy::default(),
        Some(limits),
        Instant::now() + Duration::from_secs(10),
    );
    let start = Instant::now();
    let results = failover.fetch(&items(&["a"]), &calls).await;
    assert_eq!(served_by(&results), [Some("us-east-1".into())]);
    assert_eq!((primary.calls(), replica.calls()), (1, 0));
    assert_eq!(start.elapsed(), Duration::from_secs(2) + 20 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_primary_that_hangs_after_waiting_for_its_rate_limit_is_hedged_a_delay_after_it_sent() {
    let limits = spent_limits().await;
    let (failover, _, replica) = pair(Answers::Hangs, healthy(10));
    let calls = CallContext::new(
        Arc::default(),
        RetryPolicy::default(),
        Some(limits),
        Instant::now() + Duration::from_secs(10),
    );
    let start = Instant::now();
    let results = failover.fetch(&items(&["a"]), &calls).await;
    assert_eq!(served_by(&results), [Some("us-west-2".into())]);
    assert_eq!(replica.calls(), 1);
    // 2 s for the token, then the 1 s hedge, then the replica's 20 ms.
    assert_eq!(start.elapsed(), Duration::from_secs(3) + 20 * MS);
}

#[tokio::test(start_paused = true)]
async fn after_a_restore_a_hanging_primary_costs_a_third_of_the_shorter_first_attempt() {
    let (failover, _, replica) = pair(Answers::Hangs, healthy(10));
    let calls = calls().first_attempt_timeout(crate::freshness::seal::FIRST_ATTEMPT_AFTER_RESTORE);
    let start = Instant::now();
    let results = failover.fetch(&items(&["a"]), &calls).await;
    assert_eq!(served_by(&results), [Some("us-west-2".into())]);
    assert_eq!(replica.calls(), 1);
    // 333.3 ms, then 20 ms (tokio's timers have a millisecond's resolution).
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(1) / 3 + 20 * MS && took <= 355 * MS,
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_primary_failing_while_the_hedge_waits_is_skipped_next_time() {
    // 503s, retried: the hedge asks the failover Region a second after the first failed
    // attempt began, its answer wins, and the primary counts as failed (the next fetch goes
    // straight to the failover Region).
    let (failover, primary, replica) = pair(Answers::Unavailable { latency: 20 * MS }, healthy(10));
    // Attempts enough that the retries outlast the hedge delay.
    let calls = || {
        CallContext::new(
            Arc::default(),
            RetryPolicy::default().max_attempts(100),
            None,
            Instant::now() + Duration::from_secs(10),
        )
    };
    let start = Instant::now();
    let results = failover.fetch(&items(&["a"]), &calls()).await;
    assert_eq!(served_by(&results), [Some("us-west-2".into())]);
    assert_eq!(start.elapsed(), Duration::from_secs(1) + 20 * MS, "hedged");
    failover.fetch(&items(&["a"]), &calls()).await;
    assert_eq!((primary.calls(), replica.calls()), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn a_hanging_primary_beaten_by_the_failover_region_is_skipped_next_time() {
    // Its attempt is still out, unanswered for more than the hedge delay, when the failover
    // Region's answer ends the fetch: the primary failed, and the next fetch (an on-demand
    // miss) neither waits for the hedge again nor asks the primary.
    let (failover, primary, replica) = pair(Answers::Hangs, healthy(10));
    failover.fetch(&items(&["a"]), &calls()).await;
    let start = Instant::now();
    let results = failover.fetch(&items(&["b"]), &calls()).await;
    assert_eq!(served_by(&results), [Some("us-west-2".into())]);
    assert_eq!(start.elapsed(), 20 * MS, "no second hedge delay");
    assert_eq!((primary.calls(), replica.calls()), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn while_the_primary_is_skipped_only_its_own_versions_are_asked_of_it() {
    let (failover, primary, replica) = pair(Answers::Unavailable { latency: 20 * MS }, healthy(10));
    failover.fetch(&items(&["a"]), &calls()).await;
    assert_eq!(failover.route().first(Instant::now()), Side::Replica);
    let results = failover
        .refresh(&items(&["db:3", "plain"]), &[None, None], &calls())
        .await;
    assert!(
        matches!(&results[1], Ok(Refreshed::Changed(f)) if f[0].region.as_deref() == Some("us-west-2")),
        "{:?}",
        results[1]
    );
    assert!(matches!(&results[0], Err(ItemError::Call(_))), "{:?}", results[0]);
    assert_eq!(
        primary.asked(),
        ["a", "db:3"],
        "the plain item skips the failing primary"
    );
    assert_eq!(replica.asked(), ["a", "plain"]);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_cut_off_while_waiting_for_the_rate_limit_is_no_failure_of_the_primary() {
    // One call every 10 s, the burst spent: the refresh's primary call waits past its share
    // of the budget (5 s of 10) without sending anything.
    let limits = spent_limits_at(0.1).await;
    let (failover, primary, _) = pair(healthy(10), healthy(10));
    let calls = CallContext::new(
        Arc::default(),
        RetryPolicy::default(),
        Some(limits),
        Instant::now() + Duration::from_secs(10),
    );
    failover.refresh(&items(&["a"]), &[None], &calls).await;
    assert!(primary.asked().len() <= 1);
    assert_eq!(
        failover.route().first(Instant::now()),
        Side::Primary,
        "nothing was sent: nothing is known of the primary"
    );
}

#[tokio::test(start_paused = true)]
async fn a_replica_serving_a_version_the_primary_replaced_is_behind_whatever_its_date() {
    // Version ids are the same in every Region (Secrets Manager): v1 was served, then v2; the
    // primary fails and the replica, not yet replicated, still has v1, with a later date of its
    // own. It is not taken back.
    let (failover, primary, replica) = pair(healthy(10), healthy(30));
    primary.set_version("v1");
    replica.set_version("v1");
    failover.fetch(&items(&["db"]), &calls()).await;
    primary.set(healthy(20));
    primary.set_version("v2");
    let results = failover
        .refresh(&items(&["db"]), &[Some("v1".into())], &calls())
        .await;
    assert!(matches!(&results[0], Ok(Refreshed::Changed(f)) if f[0].version.as_deref() == Some("v2")));
    primary.set(Answers::Unavailable { latency: 20 * MS });
    let results = failover
        .refresh(&items(&["db"]), &[Some("v2".into())], &calls())
        .await;
    assert!(
        matches!(results[0], Ok(Refreshed::Unchanged { .. })),
        "{:?}",
        results[0]
    );
    assert!(replica.calls() >= 1);
    // Replicated: v2 reaches the replica, and is taken from it.
    tokio::time::advance(Duration::from_secs(61)).await;
    replica.set_version("v2");
    let results = failover
        .refresh(&items(&["db"]), &[Some("v2".into())], &calls())
        .await;
    assert!(
        matches!(&results[0], Ok(Refreshed::Changed(f)) if f[0].region.as_deref() == Some("us-west-2")),
        "{:?}",
        results[0]
    );
}
