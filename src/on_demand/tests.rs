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
    // Each entry weighs its 1,000 bytes (and a share of 20 bytes): at most 19 fit.
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
    let trees = OnDemand::builder()
        .build({
            let mem = mem.clone();
            move |prefix| mem.tree("", prefix)
        })
        .unwrap();
    let err = trees.get("/tenants").await.unwrap_err();
    assert!(err.to_string().contains("one value"), "{err}");
    assert_eq!(mem.fetches(), 0);
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
    assert_eq!(od.stats().refreshes, 1, "the slow refresh answered");
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
    let began = od.inner.seals.load(std::sync::atomic::Ordering::Acquire);
    od.seal().await;
    od.unseal();
    let fetched = od.inner.fetch("t0", Duration::from_secs(5), began).await;
    assert!(matches!(fetched, Err(Error::DroppedForSnapshot { .. })));
    // A lookup that begins now fetches and caches.
    assert_eq!(od.get("t0").await.unwrap().expose_str(), Some("key-0"));
    assert_eq!(od.cached().await, 1);
}
