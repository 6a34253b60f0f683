//! The on-demand cache over `MemorySource`, in virtual time.

use std::time::Duration;

use futures_util::future::join_all;

use super::OnDemand;
use crate::{Error, ItemError, MemorySource};

fn tenants(mem: &MemorySource) -> OnDemand {
    tenants_with(mem, OnDemand::builder().ttl(Duration::from_secs(10)))
}

/// Tenants' keys at `/tenants/{tenant}` of `mem`, with the settings of `builder`.
fn tenants_with(mem: &MemorySource, builder: super::OnDemandBuilder) -> OnDemand {
    let mem = mem.clone();
    builder
        .build(move |tenant| mem.value(tenant, format!("/tenants/{tenant}")))
        .unwrap()
}

fn seed(mem: &MemorySource, n: usize) {
    for i in 0..n {
        mem.set(format!("/tenants/t{i}"), format!("key-{i}"));
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_are_fetched_together_and_hits_make_no_call() {
    let mem = MemorySource::new();
    seed(&mem, 50);
    let od = tenants(&mem);
    let names: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
    let got = join_all(names.iter().map(|n| od.get(n))).await;
    for (i, value) in got.into_iter().enumerate() {
        assert_eq!(value.unwrap().expose_str(), Some(format!("key-{i}").as_str()));
    }
    // Batches of 20 (the default max batch): 20 + 20 + 10.
    assert_eq!(mem.fetches(), 3);
    assert_eq!(od.stats().misses, 50);
    for n in &names {
        od.get(n).await.unwrap();
    }
    assert_eq!(mem.fetches(), 3, "hits make no call");
    assert_eq!(od.cached().await, 50);
}

#[tokio::test(start_paused = true)]
async fn concurrent_lookups_of_one_name_make_one_fetch() {
    let mem = MemorySource::new();
    seed(&mem, 1);
    mem.set_latency(Duration::from_millis(20));
    let od = tenants(&mem);
    let got = join_all((0..100).map(|_| od.get("t0"))).await;
    assert!(got
        .iter()
        .all(|v| v.as_ref().unwrap().expose_str() == Some("key-0")));
    assert_eq!(mem.fetches(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_lone_miss_waits_only_the_window() {
    let mem = MemorySource::new();
    seed(&mem, 1);
    let od = tenants(&mem);
    let started = tokio::time::Instant::now();
    od.get("t0").await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(2));
}

#[tokio::test(start_paused = true)]
async fn past_its_ttl_a_value_is_served_while_it_refreshes_then_the_new_one() {
    let mem = MemorySource::new();
    seed(&mem, 1);
    let od = tenants(&mem);
    od.get("t0").await.unwrap();
    mem.set("/tenants/t0", "rotated");
    tokio::time::advance(Duration::from_secs(10)).await;
    // Due: the old value at once, the refresh in the background.
    assert_eq!(od.get("t0").await.unwrap().expose_str(), Some("key-0"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(od.get("t0").await.unwrap().expose_str(), Some("rotated"));
    assert_eq!(od.stats().refreshes, 1);
    assert_eq!(mem.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn past_its_maximum_staleness_a_value_is_fetched_before_it_is_served() {
    let mem = MemorySource::new();
    seed(&mem, 1);
    let od = tenants(&mem); // TTL 10 s: max staleness 30 s
    od.get("t0").await.unwrap();
    mem.set("/tenants/t0", "rotated");
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(od.get("t0").await.unwrap().expose_str(), Some("rotated"));
}

#[tokio::test(start_paused = true)]
async fn a_missing_name_is_an_error_for_it_only_and_is_remembered() {
    let mem = MemorySource::new();
    seed(&mem, 1);
    let od = tenants(&mem);
    let (good, bad) = tokio::join!(od.get("t0"), od.get("nobody"));
    assert_eq!(good.unwrap().expose_str(), Some("key-0"));
    let Err(Error::Load { failures }) = bad else {
        panic!("{bad:?}")
    };
    assert_eq!(failures[0].key, "nobody");
    assert_eq!(failures[0].id, "/tenants/nobody");
    assert_eq!(failures[0].error, ItemError::NotFound);
    let fetches = mem.fetches();
    for _ in 0..100 {
        assert!(od.get("nobody").await.is_err());
    }
    assert_eq!(mem.fetches(), fetches, "remembered for the negative TTL");
    mem.set("/tenants/nobody", "now here");
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(od.get("nobody").await.unwrap().expose_str(), Some("now here"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_fetch_is_not_remembered() {
    let mem = MemorySource::new();
    seed(&mem, 1);
    mem.set_failing(true);
    let od = tenants_with(
        &mem,
        OnDemand::builder().retry_policy(crate::call::RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }),
    );
    let err = od.get("t0").await.unwrap_err();
    assert!(err.to_string().contains("source is failing"), "{err}");
    mem.set_failing(false);
    assert_eq!(od.get("t0").await.unwrap().expose_str(), Some("key-0"));
}

#[tokio::test(start_paused = true)]
async fn the_entry_bound_evicts() {
    let mem = MemorySource::new();
    seed(&mem, 200);
    let od = tenants_with(&mem, OnDemand::builder().max_entries(50));
    for i in 0..200 {
        od.get(&format!("t{i}")).await.unwrap();
    }
    assert!(od.cached().await <= 50, "{}", od.cached().await);
}

#[tokio::test(start_paused = true)]
async fn the_byte_bound_evicts() {
    let mem = MemorySource::new();
    for i in 0..100 {
        mem.set(format!("/tenants/t{i}"), "x".repeat(1000));
    }
    let od = tenants_with(&mem, OnDemand::builder().max_entries(1000).max_bytes(20_000));
    for i in 0..100 {
        od.get(&format!("t{i}")).await.unwrap();
    }
    // Each entry weighs its 1,000 bytes and its name (more than its share of 20 bytes): 19 fit.
    assert!(od.cached().await <= 19, "{}", od.cached().await);
}

#[tokio::test(start_paused = true)]
async fn json_fields_and_json_decoding() {
    let mem = MemorySource::new();
    mem.set("tenant/7/db", r#"{"user":"t7","password":"pw7"}"#);
    let passwords = OnDemand::builder()
        .build({
            let mem = mem.clone();
            move |tenant| {
                mem.value(tenant, format!("tenant/{tenant}/db"))
                    .json_field("password")
            }
        })
        .unwrap();
    assert_eq!(passwords.get("7").await.unwrap().expose_str(), Some("pw7"));
    #[derive(serde::Deserialize)]
    struct Db {
        user: String,
    }
    let whole = OnDemand::builder()
        .build(move |tenant| mem.value(tenant, format!("tenant/{tenant}/db")))
        .unwrap();
    let db: Db = whole.expose_json("7").await.unwrap();
    assert_eq!(db.user, "t7");
    let err = whole.expose_json::<u32>("7").await.unwrap_err();
    assert!(!err.to_string().contains("pw7"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_rejected_name_makes_no_call_and_a_tree_is_refused() {
    let mem = MemorySource::new();
    let od = OnDemand::builder()
        .build({
            let mem = mem.clone();
            move |name| {
                mem.value(name, name)
                    .ttl(Duration::ZERO)
                    .rejected("tenant id", name, "not a tenant id")
            }
        })
        .unwrap();
    let err = od.get("../etc").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidInput {
                what: "tenant id",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(mem.fetches(), 0);
    assert_eq!(od.stats().misses, 0, "bad input is an error, not a miss");
    let trees = OnDemand::builder()
        .build({
            let mem = mem.clone();
            move |prefix| mem.tree("", prefix)
        })
        .unwrap();
    let err = trees.get("/tenants").await.unwrap_err();
    assert!(err.to_string().contains("one value"), "{err}");
    assert_eq!(mem.fetches(), 0);
    assert_eq!(trees.stats().misses, 0, "a tree refused is no miss");
}

#[tokio::test(start_paused = true)]
async fn a_declarations_own_ttl_wins() {
    let mem = MemorySource::new();
    seed(&mem, 1);
    let od = OnDemand::builder()
        .ttl(Duration::from_secs(300))
        .build({
            let mem = mem.clone();
            move |tenant| {
                mem.value(tenant, format!("/tenants/{tenant}"))
                    .ttl(Duration::from_secs(2))
            }
        })
        .unwrap();
    od.get("t0").await.unwrap();
    mem.set("/tenants/t0", "rotated");
    tokio::time::advance(Duration::from_secs(2)).await;
    od.get("t0").await.unwrap(); // due after 2 s (not 300 s): the refresh starts
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(od.get("t0").await.unwrap().expose_str(), Some("rotated"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_the_value_and_backs_off() {
    let mem = MemorySource::new();
    seed(&mem, 1);
    let od = tenants_with(
        &mem,
        OnDemand::builder()
            .ttl(Duration::from_secs(10))
            .max_staleness(Duration::from_secs(3600))
            .retry_policy(crate::call::RetryPolicy {
                max_attempts: 1,
                ..Default::default()
            }),
    );
    od.get("t0").await.unwrap();
    mem.set_failing(true);
    tokio::time::advance(Duration::from_secs(10)).await;
    // Read every 100 ms for a minute: the failing refresh backs off (1 s, 2 s, 4 s, ... jittered),
    // it is not retried at every read, and the last good value is served all along.
    for _ in 0..600 {
        assert_eq!(od.get("t0").await.unwrap().expose_str(), Some("key-0"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failures = od.stats().refresh_failures;
    assert!(
        (2..=8).contains(&failures),
        "{failures} failed refreshes in a minute"
    );
    mem.set_failing(false);
    mem.set("/tenants/t0", "rotated");
    tokio::time::sleep(Duration::from_secs(61)).await;
    od.get("t0").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(od.get("t0").await.unwrap().expose_str(), Some("rotated"));
}

/// Reads its values at once, then answers after the delay set for the next call: a refresh that
/// read an old value can answer after a newer fetch.
#[derive(Default)]
struct ReadThenWait {
    values: std::sync::Mutex<std::collections::HashMap<String, String>>,
    next_delay: std::sync::Mutex<Duration>,
    /// Fetches that answered.
    answered: std::sync::atomic::AtomicU64,
}

impl crate::Source for ReadThenWait {
    type Item = String;
    fn kind(&self) -> &'static str {
        "read-then-wait"
    }
    async fn fetch(&self, items: &[String], _: &crate::CallContext) -> Vec<crate::ItemResult> {
        let read: Vec<crate::ItemResult> = {
            let values = self.values.lock().unwrap();
            items
                .iter()
                .map(|id| match values.get(id) {
                    Some(v) => Ok(vec![crate::Fetched::new(id.as_str(), v.as_str())]),
                    None => Err(ItemError::NotFound),
                })
                .collect()
        };
        let delay = std::mem::take(&mut *self.next_delay.lock().unwrap());
        tokio::time::sleep(delay).await;
        self.answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        read
    }
}

#[tokio::test(start_paused = true)]
async fn a_refresh_never_replaces_a_newer_answer() {
    // A refresh starts just before the value's maximum staleness and reads the old value, slowly; a
    // lookup past the staleness fetches again and finds the name deleted. The refresh, answering
    // last, must not bring the old value back.
    let source = std::sync::Arc::new(ReadThenWait::default());
    source.values.lock().unwrap().insert("k".into(), "old".into());
    let od = OnDemand::builder()
        .ttl(Duration::from_secs(10))
        .max_staleness(Duration::from_secs(30))
        .build({
            let source = source.clone();
            move |name| crate::Declaration::new(name, source.clone(), name.to_owned())
        })
        .unwrap();
    od.get("k").await.unwrap();
    tokio::time::advance(Duration::from_millis(29_900)).await;
    *source.next_delay.lock().unwrap() = Duration::from_millis(500);
    od.get("k").await.unwrap(); // due: the refresh starts, reads "old", answers in 500 ms
    tokio::time::sleep(Duration::from_millis(150)).await;
    source.values.lock().unwrap().remove("k");
    assert!(
        od.get("k").await.is_err(),
        "past the maximum staleness: fetched again, gone"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answered = source.answered.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        answered, 3,
        "the first fetch, the slow refresh and the fetch again all answered"
    );
    assert!(
        od.get("k").await.is_err(),
        "the refresh did not bring the old value back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lookup_waits_no_longer_than_its_budget() {
    let mem = MemorySource::new();
    seed(&mem, 1);
    mem.set_latency(Duration::from_secs(3));
    let od = tenants(&mem);
    let started = tokio::time::Instant::now();
    let err = od.get_within("t0", Duration::from_millis(800)).await.unwrap_err();
    assert!(
        started.elapsed() <= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("no answer within"), "{err}");
    // Not remembered: a patient lookup gets the value.
    mem.set_latency(Duration::ZERO);
    assert_eq!(od.get("t0").await.unwrap().expose_str(), Some("key-0"));
}

#[tokio::test(start_paused = true)]
async fn the_fetch_of_a_lookup_that_began_before_a_snapstart_seal_caches_nothing() {
    // A lookup passed the sealed check, then the values were dropped for a snapshot (and maybe
    // restored) before its fetch ran: what it fetched is from before the snapshot.
    let mem = MemorySource::new();
    seed(&mem, 1);
    let od = tenants(&mem);
    let began = od.inner.seal.epoch();
    od.seal().await;
    od.unseal();
    let fetched = od.inner.fetch("t0", began).await;
    assert!(matches!(fetched, Err(Error::DroppedForSnapshot { .. })));
    // A lookup that begins now fetches and caches.
    assert_eq!(od.get("t0").await.unwrap().expose_str(), Some("key-0"));
    assert_eq!(od.cached().await, 1);
}

/// A Secrets-Manager-like source: a fetch asks for a refresh a second later (to learn the
/// rotation date), a refresh confirms the version without a date. Counts refreshes.
#[derive(Default)]
struct RotationDate {
    refreshes: std::sync::atomic::AtomicU64,
}

impl crate::Source for RotationDate {
    type Item = String;
    fn kind(&self) -> &'static str {
        "rotation-date"
    }
    async fn fetch(&self, items: &[String], _: &crate::CallContext) -> Vec<crate::ItemResult> {
        let soon = std::time::SystemTime::now() + Duration::from_secs(1);
        items
            .iter()
            .map(|id| {
                Ok(vec![crate::Fetched::new(id.as_str(), "v")
                    .with_version("1")
                    .with_refresh_by(Some(soon))])
            })
            .collect()
    }
    async fn refresh(
        &self,
        items: &[String],
        _: &[Option<String>],
        _: &crate::CallContext,
    ) -> Vec<crate::RefreshResult> {
        self.refreshes
            .fetch_add(items.len() as u64, std::sync::atomic::Ordering::SeqCst);
        items
            .iter()
            .map(|_| Ok(crate::Refreshed::Unchanged { refresh_by: None }))
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_confirmed_value_is_refreshed_by_its_ttl_not_by_its_first_answers_refresh_by() {
    // The first answer asks for a refresh a second later; the refresh confirms the value and asks
    // for nothing: the next is due one TTL (5 min) later, not a second after the first answer.
    let source = std::sync::Arc::new(RotationDate::default());
    let od = OnDemand::builder()
        .ttl(Duration::from_secs(300))
        .build({
            let source = source.clone();
            move |name| crate::Declaration::new(name, source.clone(), name.to_owned())
        })
        .unwrap();
    for _ in 0..8 {
        for name in ["a", "b", "c"] {
            od.get(name).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    let refreshes = source.refreshes.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        refreshes <= 3,
        "{refreshes} refreshes of 3 names in 10 s with a TTL of 5 min"
    );
}

/// A source whose calls draw on the SSM quota class (so a rate limit applies to them).
#[derive(Default)]
struct Limited {
    fetched: std::sync::Mutex<Vec<String>>,
    duplicates: std::sync::atomic::AtomicBool,
}

const LIMITED_GET: crate::Operation =
    crate::Operation::new("LimitedGet").with_quota(crate::QuotaClass::SsmGet);

impl crate::Source for Limited {
    type Item = String;
    fn kind(&self) -> &'static str {
        "limited"
    }
    async fn fetch(&self, items: &[String], calls: &crate::CallContext) -> Vec<crate::ItemResult> {
        let distinct: std::collections::HashSet<&String> = items.iter().collect();
        if distinct.len() != items.len() {
            self.duplicates.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.fetched.lock().unwrap().extend(items.iter().cloned());
        match calls
            .call(LIMITED_GET, || async { Ok::<_, crate::CallError>(()) })
            .await
        {
            Ok(()) => items
                .iter()
                .map(|id| Ok(vec![crate::Fetched::new(id.as_str(), format!("value of {id}"))]))
                .collect(),
            Err(e) => items.iter().map(|_| Err(ItemError::Call(e.clone()))).collect(),
        }
    }
}

fn limited(source: &std::sync::Arc<Limited>, limits: crate::RateLimits) -> OnDemand {
    OnDemand::builder()
        .rate_limits(limits)
        .build({
            let source = source.clone();
            // Names are case-insensitive: `A` and `a` stand for one item.
            move |name| crate::Declaration::new(name, source.clone(), name.to_lowercase())
        })
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_lookup_with_little_time_left_never_fails_a_patient_one_for_the_same_name() {
    // The rate limit allows one call a second, and a first lookup just took it: the next call
    // waits about a second. A lookup with 300 ms left gives up; one with the whole fetch timeout
    // waiting for the same name must not inherit its budget (nor its error).
    let limits = crate::RateLimits::new();
    limits.set(crate::QuotaClass::SsmGet, crate::Quota::new(1.0, 1));
    let source = std::sync::Arc::new(Limited::default());
    let od = limited(&source, limits);
    od.get("warm").await.unwrap();
    let hurried = od.get_within("t0", Duration::from_millis(300));
    let patient = od.get("t0");
    let (hurried, patient) = tokio::join!(hurried, patient);
    assert!(hurried.is_err());
    assert_eq!(patient.unwrap().expose_str(), Some("value of t0"));
    // The lookup that gave up did not cancel the fetch: the name was fetched once.
    let t0 = source
        .fetched
        .lock()
        .unwrap()
        .iter()
        .filter(|i| *i == "t0")
        .count();
    assert_eq!(t0, 1, "{:?}", source.fetched.lock().unwrap());
}

#[tokio::test(start_paused = true)]
async fn names_that_stand_for_one_item_are_fetched_once_and_all_answered() {
    let source = std::sync::Arc::new(Limited::default());
    let od = limited(&source, crate::RateLimits::new());
    let (upper, lower) = tokio::join!(od.get("A"), od.get("a"));
    assert_eq!(upper.unwrap().expose_str(), Some("value of a"));
    assert_eq!(lower.unwrap().expose_str(), Some("value of a"));
    assert!(
        !source.duplicates.load(std::sync::atomic::Ordering::SeqCst),
        "the source was given one item twice: {:?}",
        source.fetched.lock().unwrap()
    );
}

#[test]
fn the_builder_validates_what_declared_values_validate() {
    let mem = MemorySource::new();
    let cases: Vec<(super::OnDemandBuilder, &str)> = vec![
        (
            OnDemand::builder()
                .retry_policy(crate::call::RetryPolicy::default().attempt_timeout(Duration::ZERO)),
            "retry attempt timeout",
        ),
        (
            OnDemand::builder().retry_policy(crate::call::RetryPolicy::default().max_attempts(0)),
            "retry attempts",
        ),
        (OnDemand::builder().ttl_jitter(0.9), "TTL jitter"),
        (
            OnDemand::builder().failure_backoff(Duration::from_secs(10), Duration::from_secs(1)),
            "failure backoff",
        ),
        (OnDemand::builder().fetch_timeout(Duration::ZERO), "fetch timeout"),
        (OnDemand::builder().negative_ttl(Duration::ZERO), "negative TTL"),
    ];
    for (builder, what) in cases {
        let mem = mem.clone();
        let err = builder.build(move |n| mem.value(n, n)).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { what: w, .. } if *w == what),
            "{what}: {err}"
        );
    }
}

/// A source whose fetch makes a value and then hangs holding it (a batch under way), telling the
/// test what watches the value.
#[derive(Default)]
struct Holding {
    watches: std::sync::Mutex<Vec<crate::value::ValueWatch>>,
}

impl crate::Source for Holding {
    type Item = String;
    fn kind(&self) -> &'static str {
        "holding"
    }
    async fn fetch(&self, items: &[String], _: &crate::CallContext) -> Vec<crate::ItemResult> {
        let value = crate::SecretValue::from("plaintext in flight");
        self.watches.lock().unwrap().push(value.watch());
        tokio::time::sleep(Duration::from_secs(3)).await;
        items
            .iter()
            .map(|id| Ok(vec![crate::Fetched::new(id.as_str(), value.clone())]))
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn before_snapshot_returns_once_no_batch_holds_a_value() {
    let source = std::sync::Arc::new(Holding::default());
    let od = OnDemand::builder()
        .build({
            let source = source.clone();
            move |name| crate::Declaration::new(name, source.clone(), name.to_owned())
        })
        .unwrap();
    let lookup = tokio::spawn({
        let od = od.clone();
        async move { od.get("t").await }
    });
    while source.watches.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    od.snapstart().before_snapshot().await.unwrap();
    assert!(
        source.watches.lock().unwrap().iter().all(|w| !w.is_held()),
        "a batch still held a value when the snapshot could be taken"
    );
    assert!(lookup.await.unwrap().is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    #[test]
    fn both_bounds_hold_whenever_a_lookup_returns(
        max_entries in 1u64..12,
        share in 1u64..400,
        lookups in proptest::collection::vec((0usize..40, 0usize..600), 1..80),
    ) {
        let max_bytes = max_entries * share;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(async {
            let mem = MemorySource::new();
            let od = tenants_with(&mem, OnDemand::builder().max_entries(max_entries).max_bytes(max_bytes));
            for (name, size) in lookups {
                mem.set(format!("/tenants/t{name}"), "x".repeat(size));
                let _ = od.get(&format!("t{name}")).await;
                let (entries, bytes) = od.held();
                proptest::prop_assert!(entries <= max_entries, "{} entries held, bound {}", entries, max_entries);
                proptest::prop_assert!(bytes <= max_bytes, "{} bytes held, bound {}", bytes, max_bytes);
            }
            Ok(())
        })?;
    }
}

/// Answers after `steps` × 100 ms, and counts its answers.
#[derive(Default)]
struct Stepping {
    steps: std::sync::atomic::AtomicU64,
    answered: std::sync::atomic::AtomicU64,
}

impl crate::Source for Stepping {
    type Item = String;
    fn kind(&self) -> &'static str {
        "stepping"
    }
    async fn fetch(&self, items: &[String], _: &crate::CallContext) -> Vec<crate::ItemResult> {
        for _ in 0..self.steps.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let n = self.answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        items
            .iter()
            .map(|id| Ok(vec![crate::Fetched::new(id.as_str(), format!("v{n}"))]))
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_refresh_frozen_in_its_batch_lands_after_the_thaw() {
    // A refresh's batch is 1 s into a 4 s fetch when Lambda freezes the process for a minute; after
    // the thaw the fetch takes 3 s more. Lookups meanwhile must not take the refresh for one that
    // never runs: its answer is served, and nothing failed.
    let source = std::sync::Arc::new(Stepping::default());
    let od = OnDemand::builder()
        .ttl(Duration::from_secs(1))
        .max_staleness(Duration::from_secs(3600))
        .build({
            let source = source.clone();
            move |name| crate::Declaration::new(name, source.clone(), name.to_owned())
        })
        .unwrap();
    assert_eq!(od.get("k").await.unwrap().expose_str(), Some("v0"));
    source.steps.store(40, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    od.get("k").await.unwrap(); // due: the refresh starts
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::time::advance(Duration::from_secs(60)).await; // frozen
    for _ in 0..12 {
        od.get("k").await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(od.get("k").await.unwrap().expose_str(), Some("v1"));
    assert_eq!(od.stats().refresh_failures, 0, "{:?}", od.stats());
}

#[tokio::test(start_paused = true)]
async fn an_outage_across_a_hundred_names_is_one_warning() {
    let capture = crate::test_support::Capture::default();
    let _log = capture.start();
    let mem = MemorySource::new();
    seed(&mem, 100);
    let od = tenants_with(
        &mem,
        OnDemand::builder()
            .ttl(Duration::from_secs(1))
            .max_staleness(Duration::from_secs(3600))
            .retry_policy(crate::call::RetryPolicy::default().max_attempts(1)),
    );
    let names: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
    join_all(names.iter().map(|n| od.get(n))).await;
    mem.set_failing(true);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        join_all(names.iter().map(|n| od.get(n))).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    assert!(od.stats().refresh_failures >= 100, "{:?}", od.stats());
    let log = capture.text();
    let warnings = log.lines().filter(|l| l.contains("WARN")).count();
    assert_eq!(warnings, 1, "{log}");
    // Nothing is dropped silently: once the 10 s are over, the next failure (a repeat, same cause)
    // warns again, counting the failures not logged meanwhile.
    tokio::time::sleep(Duration::from_secs(10)).await;
    join_all(names.iter().map(|n| od.get(n))).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = capture.text();
    let second = log
        .lines()
        .filter(|l| l.contains("WARN"))
        .nth(1)
        .expect(&log)
        .to_owned();
    let counted: u64 = second
        .split("failed_refreshes_not_logged_since_last_warning=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect(&second);
    assert!(counted >= 99, "{second}");
}

#[tokio::test(start_paused = true)]
async fn a_refresh_begun_before_a_snapstart_seal_makes_no_call_even_if_first_run_after_it() {
    // Its task joined the batch only after the seal (the runtime ran it late): the batch took the
    // epoch at joining, so the call went out after the values were dropped.
    let mem = MemorySource::new();
    seed(&mem, 1);
    let od = tenants_with(&mem, OnDemand::builder().ttl(Duration::from_secs(1)));
    assert!(od.get("t0").await.is_ok());
    tokio::time::advance(Duration::from_millis(1100)).await;
    let calls = || od.stats().calls.get("MemoryFetch").copied().unwrap_or(0);
    assert_eq!(calls(), 1);
    let _ = od.get("t0").await; // due: its refresh is spawned, not yet run
    od.snapstart().before_snapshot().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(calls(), 1, "a call was made after the seal");
}

#[test]
fn a_miss_is_traced_under_its_lookup_and_a_batch_follows_from_every_miss_in_it() {
    let ((), spans) = crate::test_support::traced(async {
        let mem = MemorySource::new();
        seed(&mem, 2);
        let od = tenants(&mem);
        let lookup = |name: &'static str| {
            let od = od.clone();
            tracing::Instrument::instrument(
                async move { od.get(name).await.unwrap() },
                tracing::info_span!("invocation"),
            )
        };
        join_all([lookup("t0"), lookup("t1")]).await;
        assert_eq!(mem.fetches(), 1, "one batch");
    });
    let loads = spans.named("lambda_secrets.load");
    assert_eq!(loads.len(), 2, "{loads:?}");
    assert!(loads.iter().all(|l| l["@parent"] == "invocation"), "{loads:?}");
    let batch = &spans.named("lambda_secrets.batch")[0];
    assert_eq!(batch["@parent"], "lambda_secrets.load", "{batch:?}");
    assert_eq!(batch["items"], "2", "how many, never which: {batch:?}");
    assert_eq!(
        batch["@follows"], "lambda_secrets.load",
        "the other miss: {batch:?}"
    );
    let call = &spans.named("aws.call")[0];
    assert_eq!(call["@parent"], "lambda_secrets.batch", "{call:?}");
}
