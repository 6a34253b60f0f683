//! `OnDemand` end to end against the moto emulator, through our fault proxy: names known only at
//! invocation time.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use lambda_secrets::{Error, ItemError, OnDemand, Secrets, SecretsManagerSource, SsmSource};
use support::{moto, put_param, ssm_client, unique_prefix, FaultProxy};

struct Env {
    proxy: FaultProxy,
    seed: aws_sdk_ssm::Client,
    ssm: SsmSource,
    sm: SecretsManagerSource,
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
        sm: SecretsManagerSource::new(&config),
        proxy,
        seed,
        prefix: unique_prefix(tag),
    }
}

/// Tenants' API keys under `prefix`, looked up by tenant id.
fn tenants(e: &Env, ttl: Duration) -> OnDemand {
    let (ssm, prefix) = (e.ssm.clone(), e.prefix.clone());
    OnDemand::builder()
        .ttl(ttl)
        .rate_limits(lambda_secrets::RateLimits::new())
        .build(move |tenant| ssm.parameter(tenant, format!("{prefix}/tenants/{tenant}/api-key")))
        .unwrap()
}

#[tokio::test]
async fn fifty_concurrent_misses_take_at_most_six_calls_and_hits_none() {
    let e = env("od-coalesce").await;
    for i in 0..50 {
        put_param(
            &e.seed,
            &format!("{}/tenants/t{i}/api-key", e.prefix),
            &format!("key-{i}"),
            "SecureString",
        )
        .await;
    }
    let od = tenants(&e, Duration::from_secs(300));
    let names: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
    let got = join_all(names.iter().map(|n| od.get(n))).await;
    for (i, value) in got.into_iter().enumerate() {
        assert_eq!(value.unwrap().expose_str(), Some(format!("key-{i}").as_str()));
    }
    let calls = e.proxy.calls("GetParameters");
    assert!(calls <= 6, "{calls} calls: {:?}", e.proxy.calls_all());
    assert_eq!(e.proxy.calls("GetParameter"), 0);
    let _ = join_all(names.iter().map(|n| od.get(n))).await;
    assert_eq!(e.proxy.calls("GetParameters"), calls, "hits make no call");
}

#[tokio::test]
async fn a_changed_value_is_served_after_its_ttl_old_first() {
    let e = env("od-refresh").await;
    let name = format!("{}/tenants/t1/api-key", e.prefix);
    put_param(&e.seed, &name, "old", "SecureString").await;
    let od = tenants(&e, Duration::from_millis(300));
    assert_eq!(od.get("t1").await.unwrap().expose_str(), Some("old"));
    put_param(&e.seed, &name, "new", "SecureString").await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    // Due: the old value, at once; the refresh runs in the background.
    assert_eq!(od.get("t1").await.unwrap().expose_str(), Some("old"));
    let mut seen = false;
    for _ in 0..100 {
        if od.get("t1").await.unwrap().expose_str() == Some("new") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "{:?}", od.stats());
}

#[tokio::test]
async fn missing_and_denied_names_fail_alone_and_are_remembered() {
    let e = env("od-negative").await;
    put_param(
        &e.seed,
        &format!("{}/tenants/ok/api-key", e.prefix),
        "v",
        "String",
    )
    .await;
    put_param(
        &e.seed,
        &format!("{}/tenants/denied/api-key", e.prefix),
        "v",
        "String",
    )
    .await;
    e.proxy.deny("GetParameters", "tenants/denied/");
    let od = tenants(&e, Duration::from_secs(300));
    let (ok, missing, denied) = tokio::join!(od.get("ok"), od.get("missing"), od.get("denied"));
    assert_eq!(ok.unwrap().expose_str(), Some("v"));
    let failure = |r: Result<_, Error>| match r {
        Err(Error::Load { failures }) => failures[0].error.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(failure(missing), ItemError::NotFound);
    assert_eq!(
        failure(denied),
        ItemError::Denied {
            action: "ssm:GetParameters".into()
        }
    );
    let calls = e.proxy.calls("GetParameters");
    for _ in 0..20 {
        assert!(od.get("missing").await.is_err());
        assert!(od.get("denied").await.is_err());
    }
    assert_eq!(
        e.proxy.calls("GetParameters"),
        calls,
        "a bad tenant id cannot hammer the quota"
    );
    // A malformed name: an error without a call.
    let err = od.get("bad name").await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert_eq!(e.proxy.calls("GetParameters"), calls);
}

#[tokio::test]
async fn secrets_looked_up_on_demand_are_batched_and_json_fields_taken() {
    let e = env("od-sm").await;
    let sm_seed = aws_sdk_secretsmanager::Client::new(&support::sdk_config(&moto().endpoint).await);
    let prefix = e.prefix.trim_start_matches('/').to_owned();
    for i in 0..25 {
        sm_seed
            .create_secret()
            .name(format!("{prefix}/tenant{i}/db"))
            .secret_string(format!(r#"{{"username":"u{i}","password":"pw-{i}"}}"#))
            .send()
            .await
            .unwrap();
    }
    let (sm, p) = (e.sm.clone(), prefix.clone());
    let passwords = OnDemand::builder()
        .rate_limits(lambda_secrets::RateLimits::new())
        .build(move |tenant| {
            sm.secret(tenant, format!("{p}/{tenant}/db"))
                .json_field("password")
        })
        .unwrap();
    let got = join_all((0..25).map(|i| {
        let passwords = passwords.clone();
        async move { passwords.get(&format!("tenant{i}")).await }
    }))
    .await;
    for (i, value) in got.into_iter().enumerate() {
        assert_eq!(value.unwrap().expose_str(), Some(format!("pw-{i}").as_str()));
    }
    let batches = e.proxy.calls("BatchGetSecretValue");
    assert!((2..=3).contains(&batches), "{:?}", e.proxy.calls_all());
    assert_eq!(e.proxy.calls("GetSecretValue"), 0);
}

#[tokio::test]
async fn a_name_both_declared_and_looked_up_on_demand() {
    let e = env("od-both").await;
    let name = format!("{}/tenants/t1/api-key", e.prefix);
    put_param(&e.seed, &name, "shared", "SecureString").await;
    let secrets = Secrets::builder()
        .add(e.ssm.parameter("t1", &name))
        .load()
        .await
        .unwrap();
    let od = tenants(&e, Duration::from_secs(300));
    assert_eq!(
        od.get("t1").await.unwrap(),
        *secrets.snapshot().get("t1").unwrap()
    );
    // Two caches, one call each: the declared value is never looked up again, nor the other.
    assert_eq!(e.proxy.calls("GetParameters"), 2);
    for _ in 0..10 {
        od.get("t1").await.unwrap();
        secrets.snapshot().get("t1").unwrap();
    }
    assert_eq!(e.proxy.calls("GetParameters"), 2);
}

#[tokio::test]
async fn an_on_demand_secret_is_refreshed_describe_secret_first() {
    let e = env("od-sm-refresh").await;
    let sm_seed = aws_sdk_secretsmanager::Client::new(&support::sdk_config(&moto().endpoint).await);
    let id = format!("{}/tenant1/db", e.prefix.trim_start_matches('/'));
    sm_seed
        .create_secret()
        .name(&id)
        .secret_string("v1")
        .send()
        .await
        .unwrap();
    let (sm, id2) = (e.sm.clone(), id.clone());
    let od = OnDemand::builder()
        .ttl(Duration::from_millis(300))
        .rate_limits(lambda_secrets::RateLimits::new())
        .build(move |_tenant| sm.secret("db", id2.as_str()))
        .unwrap();
    assert_eq!(od.get("tenant1").await.unwrap().expose_str(), Some("v1"));
    // Unchanged: a refresh is one DescribeSecret, no GetSecretValue.
    tokio::time::sleep(Duration::from_millis(350)).await;
    od.get("tenant1").await.unwrap();
    let mut described = false;
    for _ in 0..100 {
        if e.proxy.calls("DescribeSecret") >= 1 && od.stats().refreshes >= 1 {
            described = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(described, "{:?} {:?}", e.proxy.calls_all(), od.stats());
    assert_eq!(e.proxy.calls("GetSecretValue"), 0, "{:?}", e.proxy.calls_all());
    // Rotated: DescribeSecret sees the new version, then one GetSecretValue fetches it.
    sm_seed
        .put_secret_value()
        .secret_id(&id)
        .secret_string("v2")
        .send()
        .await
        .unwrap();
    let mut seen = false;
    for _ in 0..150 {
        if od.get("tenant1").await.unwrap().expose_str() == Some("v2") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "{:?} {:?}", e.proxy.calls_all(), od.stats());
    assert_eq!(e.proxy.calls("GetSecretValue"), 1, "{:?}", e.proxy.calls_all());
}
