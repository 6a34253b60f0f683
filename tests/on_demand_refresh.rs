//! `OnDemand` refreshes against the moto emulator, through our fault proxy: names looked up again
//! and again are refreshed by their TTL, as declared values are.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use lambda_secrets::{OnDemand, RateLimits, SecretsManagerSource};
use support::{moto, unique_prefix, FaultProxy};

#[tokio::test]
async fn secrets_looked_up_on_demand_are_described_once_then_not_before_their_ttl() {
    // Three secrets, a TTL of 5 minutes, eight rounds of lookups 1.3 s apart: one early
    // `DescribeSecret` per secret (it learns the rotation date), then nothing until the TTL.
    support::init_tracing();
    let moto = moto();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let seed = aws_sdk_secretsmanager::Client::new(&support::sdk_config(&moto.endpoint).await);
    let sm = SecretsManagerSource::new(&support::sdk_config(&proxy.endpoint()).await);
    let prefix = unique_prefix("od-describe").trim_start_matches('/').to_owned();
    let names: Vec<String> = ["a", "b", "c"].iter().map(|n| format!("{prefix}/{n}")).collect();
    for name in &names {
        seed.create_secret()
            .name(name)
            .secret_string("v")
            .send()
            .await
            .unwrap();
    }
    let od = OnDemand::builder()
        .ttl(Duration::from_secs(300))
        .rate_limits(RateLimits::new())
        .build(move |name| sm.secret(name, name))
        .unwrap();
    for _ in 0..8 {
        for value in join_all(names.iter().map(|n| od.get(n))).await {
            assert_eq!(value.unwrap().expose_str(), Some("v"));
        }
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    let describes = proxy.calls("DescribeSecret");
    assert!(
        describes <= 3,
        "{describes} DescribeSecret calls: {:?}",
        proxy.calls_all()
    );
    assert_eq!(proxy.calls("GetSecretValue"), 0, "{:?}", proxy.calls_all());
}
