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

/// A thousand concurrent loads sharing one process-wide set of limits, against a proxy that
/// throttles above the same rate: every load succeeds (throttled calls are retried), each made
/// its call. That no second of the limiter's own grants exceeds the rate is checked in virtual
/// time in `src/limiter.rs` (`a_thousand_concurrent_callers_never_exceed_the_rate_in_virtual_time`):
/// here, arrival times at the proxy bunch up whenever the client is starved of CPU, so neither
/// the peak nor the number of throttles is asserted against the real clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_through_shared_limits_all_load() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let names = seed(&unique_prefix("limit"), 10).await;
    let ssm = SsmSource::new(&support::sdk_config(&proxy.endpoint()).await);
    let limits = RateLimits::new();
    limits.set(QuotaClass::SsmGet, Quota::new(100.0, 20));
    proxy.throttle_tps(Some(100));
    let loads: Vec<_> = (0..1000)
        .map(|i| {
            let builder = Secrets::builder()
                .add(ssm.parameter("k", &names[i % names.len()]))
                .rate_limits(limits.clone())
                .load_timeout(Duration::from_secs(60));
            tokio::spawn(builder.load())
        })
        .collect();
    for load in loads {
        let secrets = load.await.unwrap().unwrap();
        assert_eq!(secrets.snapshot().len(), 1);
    }
    let calls = proxy.calls("GetParameters");
    assert!(calls >= 1000, "{calls} calls for 1,000 loads");
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
