//! SSM when the role may not read the parameters, or the service fails, against the moto
//! emulator through our fault proxy: every key names the real cause, and the calls made to find
//! it out are bounded.

mod support;

use std::time::Duration;

use lambda_secrets::{Error, ItemError, RateLimits, Secrets, SsmSource};
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
    let ssm = SsmSource::new(&support::sdk_config(&proxy.endpoint()).await);
    Env {
        proxy,
        seed,
        ssm,
        prefix: unique_prefix(tag),
    }
}

/// A hundred parameters under the env's prefix, declared one by one.
async fn hundred(e: &Env) -> Secrets_ {
    for i in 0..100 {
        put_param(&e.seed, &format!("{}/p{i}", e.prefix), "v", "String").await;
    }
    Secrets::builder()
        .rate_limits(RateLimits::new())
        .add_all((0..100).map(|i| e.ssm.parameter(format!("k{i}"), format!("{}/p{i}", e.prefix))))
}

type Secrets_ = lambda_secrets::SecretsBuilder;

fn failures(err: Error) -> Vec<lambda_secrets::Failure> {
    match err {
        Error::Load { failures } => failures,
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn a_role_denied_every_parameter_fails_the_load_naming_the_grant_for_every_key_in_few_calls() {
    let e = env("denied-all").await;
    let builder = hundred(&e).await;
    e.proxy.deny("GetParameters", &e.prefix);
    let failures = failures(builder.load().await.unwrap_err());
    assert_eq!(failures.len(), 100);
    for f in &failures {
        assert_eq!(
            f.error,
            ItemError::Denied {
                action: "ssm:GetParameters".into()
            },
            "key `{}`: {}",
            f.key,
            f.error
        );
    }
    // Ten batches, and names tried alone within a bounded share: not one call per name.
    let calls = e.proxy.calls("GetParameters");
    assert!(calls <= 30, "{calls} GetParameters calls for 100 denied names");
}

#[tokio::test]
async fn a_denied_refresh_does_not_try_every_name_alone_again() {
    let e = env("denied-refresh").await;
    let secrets = hundred(&e)
        .await
        .default_ttl(Duration::from_secs(1))
        .max_staleness(Duration::from_secs(3600))
        .failure_backoff(Duration::from_millis(200), Duration::from_millis(400))
        .load()
        .await
        .unwrap();
    e.proxy.deny("GetParameters", &e.prefix);
    // Reads start refreshes; count the calls of the first failing refresh and of the next ones.
    let mut calls_at = Vec::new();
    for _ in 0..400 {
        let _ = secrets.snapshot();
        let failed = secrets.stats().refresh_failures / 100;
        if failed as usize > calls_at.len() {
            calls_at.push(e.proxy.calls("GetParameters"));
        }
        if calls_at.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(calls_at.len() >= 3, "{:?} {:?}", calls_at, secrets.stats());
    for later in calls_at.windows(2) {
        let calls = later[1] - later[0];
        assert!(
            calls <= 10,
            "a failing refresh of 100 known-denied names made {calls} calls"
        );
    }
    // The last good values are still served.
    assert_eq!(secrets.snapshot().expose_str("k7").unwrap(), "v");
}

#[tokio::test]
async fn during_an_outage_every_key_names_the_outage_not_the_rate_limit() {
    let e = env("outage").await;
    let builder = hundred(&e).await.load_timeout(Duration::from_secs(3));
    e.proxy.fail_all(Some(500));
    let failures = failures(builder.load().await.unwrap_err());
    assert_eq!(failures.len(), 100);
    for f in &failures {
        let text = f.error.to_string();
        // What the service answered comes first; why the retries stopped after it.
        assert!(
            text.starts_with("GetParameters: InternalServerError (HTTP 500)"),
            "key `{}`: {text}",
            f.key
        );
    }
}
