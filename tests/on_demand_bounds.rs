//! `OnDemand`'s bounds against the moto emulator, through our fault proxy: the cache holds at most
//! `max_entries` names and `max_bytes` bytes whenever a lookup returns, and a name it no longer
//! holds is fetched again.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use lambda_secrets::{OnDemand, SsmSource};
use support::{moto, put_param, ssm_client, unique_prefix, FaultProxy};

struct Env {
    proxy: FaultProxy,
    seed: aws_sdk_ssm::Client,
    ssm: SsmSource,
    prefix: String,
}

async fn env(tag: &str) -> Env {
    support::init_tracing();
    let moto = moto();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let seed = ssm_client(&moto.endpoint).await;
    let config = support::sdk_config(&proxy.endpoint()).await;
    Env {
        ssm: SsmSource::new(&config),
        proxy,
        seed,
        prefix: unique_prefix(tag),
    }
}

#[tokio::test]
async fn forty_names_through_a_ten_entry_cache_are_fetched_again_in_the_next_round() {
    // Two rounds of 40 concurrent lookups 100 ms apart: at most 10 values are held after the
    // first, so the second fetches at least 30 names again (moka evicts lazily; the bound holds
    // all the same).
    let e = env("od-bound").await;
    for i in 0..40 {
        put_param(&e.seed, &format!("{}/t{i}", e.prefix), "v", "String").await;
    }
    let (ssm, prefix) = (e.ssm.clone(), e.prefix.clone());
    let od = OnDemand::builder()
        .max_entries(10)
        .rate_limits(lambda_secrets::RateLimits::new())
        .build(move |name| ssm.parameter(name, format!("{prefix}/{name}")))
        .unwrap();
    let names: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    for value in join_all(names.iter().map(|n| od.get(n))).await {
        value.unwrap();
    }
    let first = e.proxy.calls("GetParameters");
    tokio::time::sleep(Duration::from_millis(100)).await;
    for value in join_all(names.iter().map(|n| od.get(n))).await {
        value.unwrap();
    }
    let second = e.proxy.calls("GetParameters") - first;
    assert!(
        second >= 3,
        "the second round made {second} GetParameters calls: more than 10 values were still held"
    );
    assert!(od.cached().await <= 10);
}

#[tokio::test]
async fn the_entry_bound_evicts_and_an_evicted_name_is_fetched_again() {
    let e = env("od-evict").await;
    for i in 0..30 {
        put_param(
            &e.seed,
            &format!("{}/tenants/t{i}/api-key", e.prefix),
            "v",
            "String",
        )
        .await;
    }
    let (ssm, prefix) = (e.ssm.clone(), e.prefix.clone());
    let od = OnDemand::builder()
        .max_entries(10)
        .rate_limits(lambda_secrets::RateLimits::new())
        .build(move |tenant| ssm.parameter(tenant, format!("{prefix}/tenants/{tenant}/api-key")))
        .unwrap();
    for i in 0..30 {
        od.get(&format!("t{i}")).await.unwrap();
    }
    let cached = od.cached().await;
    assert!(cached <= 10, "{cached}");
    // Names no longer cached are fetched again (one call each: they come one at a time).
    let before = e.proxy.calls("GetParameters");
    for i in 0..30 {
        od.get(&format!("t{i}")).await.unwrap();
    }
    assert!(
        e.proxy.calls("GetParameters") >= before + 20,
        "{:?}",
        e.proxy.calls_all()
    );
}

#[tokio::test]
async fn the_byte_bound_evicts() {
    let e = env("od-bytes").await;
    for i in 0..20 {
        put_param(
            &e.seed,
            &format!("{}/tenants/t{i}/api-key", e.prefix),
            &"x".repeat(2000),
            "String",
        )
        .await;
    }
    let (ssm, prefix) = (e.ssm.clone(), e.prefix.clone());
    let od = OnDemand::builder()
        .max_entries(100)
        .max_bytes(10_000)
        .rate_limits(lambda_secrets::RateLimits::new())
        .build(move |tenant| ssm.parameter(tenant, format!("{prefix}/tenants/{tenant}/api-key")))
        .unwrap();
    for i in 0..20 {
        od.get(&format!("t{i}")).await.unwrap();
    }
    // 2,000-byte values in a 10,000-byte cache: at most 4 fit (each also weighs its name).
    let cached = od.cached().await;
    assert!(cached <= 4, "{cached}");
}
