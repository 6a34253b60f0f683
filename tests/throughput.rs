//! Rate limits, throttling and deadlines against the moto emulator behind our fault proxy.

mod support;

use std::time::Duration;

use lambda_secrets::{Error, Quota, QuotaClass, RateLimits, Secrets, SsmSource};
use support::{moto, put_param, ssm_client, unique_prefix, FaultProxy};

async fn seed(prefix: &str, n: usize) -> Vec<String> {
    let client = ssm_client(&moto().endpoint).await;
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}/p{i:03}");
        put_param(&client, &name, &format!("v{i}"), "String").await;
        names.push(name);
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limiter_never_exceeds_its_rate_under_a_thousand_concurrent_misses() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let names = seed(&unique_prefix("limit"), 10).await;
    let ssm = SsmSource::new(&support::sdk_config(&proxy.endpoint()).await);
    // One process-wide set of limits, as every Secrets of a process shares.
    let limits = RateLimits::new();
    limits.set(QuotaClass::SsmGet, Quota::new(100.0, 20));
    // The proxy throttles above the same rate: any excess would show as a throttle.
    proxy.throttle_tps(Some(100));
    let loads: Vec<_> = (0..1000)
        .map(|i| {
            let builder = Secrets::builder()
                .add(ssm.parameter("k", &names[i % names.len()]))
                .rate_limits(limits.clone())
                .load_timeout(Duration::from_secs(30));
            tokio::spawn(builder.load())
        })
        .collect();
    for load in loads {
        load.await.unwrap().unwrap();
    }
    // Every miss made its call (a few more if the emulator was slow to answer and an attempt
    // timed out), none was throttled, and no second saw more than the configured rate.
    assert!(proxy.calls("GetParameters") >= 1000);
    assert_eq!(proxy.throttled(), 0, "{:?}", proxy.calls_all());
    let peak = proxy.peak_in_any_1s_window();
    assert!(peak <= 100, "peak of {peak} calls in one second");
}

#[tokio::test]
async fn a_throttled_cold_load_completes_within_its_deadline() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let names = seed(&unique_prefix("throttled"), 60).await;
    proxy.throttle_tps(Some(2));
    let ssm = SsmSource::new(&support::sdk_config(&proxy.endpoint()).await);
    let mut builder = Secrets::builder().rate_limits(RateLimits::new());
    for (i, name) in names.iter().enumerate() {
        builder = builder.add(ssm.parameter(format!("k{i}"), name));
    }
    let secrets = builder.load().await.unwrap();
    assert_eq!(secrets.snapshot().len(), 60);
    let stats = secrets.stats();
    assert!(stats.throttled >= 1, "{stats:?}");
    assert_eq!(stats.calls["GetParameters"], 6 + stats.throttled, "{stats:?}");
    assert!(proxy.peak_in_any_1s_window() >= 1);
}

#[tokio::test]
async fn a_deadline_that_cannot_be_met_names_what_is_missing() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let names = seed(&unique_prefix("deadline"), 50).await;
    proxy.throttle_tps(Some(1));
    let ssm = SsmSource::new(&support::sdk_config(&proxy.endpoint()).await);
    let mut builder = Secrets::builder()
        .rate_limits(RateLimits::new())
        .load_timeout(Duration::from_millis(1500));
    for (i, name) in names.iter().enumerate() {
        builder = builder.add(ssm.parameter(format!("k{i:02}"), name));
    }
    let err = builder.load().await.unwrap_err();
    let text = err.to_string();
    let Error::Load { failures } = &err else {
        panic!("{text}")
    };
    // At 1 call a second, 1.5 s let at most two of the five batches through.
    assert!(failures.len() >= 30 && failures.len() % 10 == 0, "{text}");
    assert!(text.contains("the deadline came"), "{text}");
    assert!(text.contains("GetParameters"), "{text}");
}
