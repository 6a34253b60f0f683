//! Faults that Lambda's freezes cause in the transport, not in the service, against moto through
//! the fault proxy: a request signed before a freeze and sent after it ("Signature expired"),
//! and a pooled connection that died meanwhile. Each is retried at once, once.

mod support;

use lambda_secrets::{Error, ItemError, RetryPolicy, Secrets};
use support::{moto, put_param, ssm_client, unique_prefix, FaultProxy};

async fn parameter(tag: &str) -> (FaultProxy, lambda_secrets::SsmSource, String) {
    support::init_tracing();
    let moto = moto();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let name = format!("{}/k", unique_prefix(tag));
    put_param(&ssm_client(&moto.endpoint).await, &name, "v", "SecureString").await;
    let ssm = lambda_secrets::SsmSource::new(&support::sdk_config(&proxy.endpoint()).await);
    (proxy, ssm, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stale_signature_answer_is_signed_again_and_the_load_takes_two_calls() {
    let (proxy, ssm, name) = parameter("stale-once").await;
    proxy.stale_signature_next(1);
    let secrets = Secrets::builder()
        .add(ssm.parameter("k", &name))
        .load()
        .await
        .unwrap();
    assert_eq!(secrets.snapshot().expose_str("k").unwrap(), "v");
    assert_eq!(proxy.calls("GetParameters"), 2, "{:?}", proxy.calls_all());
    assert_eq!(secrets.stats().retries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stale_signature_answer_is_final_and_names_the_clock() {
    let (proxy, ssm, name) = parameter("stale-twice").await;
    proxy.stale_signature_next(2);
    let err = Secrets::builder()
        .add(ssm.parameter("k", &name))
        .load()
        .await
        .unwrap_err();
    assert_eq!(proxy.calls("GetParameters"), 2, "{:?}", proxy.calls_all());
    let Error::Load { failures } = &err else {
        panic!("{err:?}")
    };
    let ItemError::Call(call) = &failures[0].error else {
        panic!("{err:?}")
    };
    assert!(call.message().contains("InvalidSignatureException"), "{call}");
    assert!(call.message().contains("clock"), "{call}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_under_the_first_attempt_is_retried_at_once() {
    let (proxy, ssm, name) = parameter("cut").await;
    proxy.drop_connections_next(1);
    // One attempt allowed for failures: the at-once retry is not one of them.
    let secrets = Secrets::builder()
        .retry_policy(RetryPolicy::default().max_attempts(1))
        .add(ssm.parameter("k", &name))
        .load()
        .await
        .unwrap();
    assert_eq!(secrets.snapshot().expose_str("k").unwrap(), "v");
    assert_eq!(proxy.calls("GetParameters"), 2, "{:?}", proxy.calls_all());
    assert_eq!(secrets.stats().retries, 1);
    // A second cut under the same call is an outage like any other: with one attempt, final.
    proxy.drop_connections_next(2);
    let err = Secrets::builder()
        .retry_policy(RetryPolicy::default().max_attempts(1))
        .add(ssm.parameter("k", &name))
        .load()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Load { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_refused_twice_fails_a_batch_of_names_without_asking_them_one_by_one() {
    // One bad name of ten makes GetParameters fall back to asking names alone; a refused
    // signing time is no bad name: every name gets the answer, and no call more.
    let (proxy, ssm, name) = parameter("stale-batch").await;
    let other = format!("{name}-2");
    put_param(&ssm_client(&moto().endpoint).await, &other, "w", "SecureString").await;
    proxy.stale_signature_next(20);
    let err = Secrets::builder()
        .add(ssm.parameter("k", &name))
        .add(ssm.parameter("k2", &other))
        .load()
        .await
        .unwrap_err();
    assert_eq!(proxy.calls("GetParameters"), 2, "{:?}", proxy.calls_all());
    let Error::Load { failures } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(failures.len(), 2, "{err:?}");
    assert!(err.to_string().contains("clock"), "{err}");
}

#[cfg(feature = "secretsmanager")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_refused_twice_fails_a_batch_of_secrets_without_a_call_per_secret() {
    support::init_tracing();
    let moto = moto();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let prefix = unique_prefix("stale-sm").trim_start_matches('/').to_owned();
    let seed = aws_sdk_secretsmanager::Client::new(&support::sdk_config(&moto.endpoint).await);
    for i in 0..2 {
        seed.create_secret()
            .name(format!("{prefix}/s{i}"))
            .secret_string("v")
            .send()
            .await
            .unwrap();
    }
    let sm = lambda_secrets::SecretsManagerSource::new(&support::sdk_config(&proxy.endpoint()).await);
    proxy.stale_signature_next(20);
    let err = Secrets::builder()
        .add(sm.secret("a", format!("{prefix}/s0")))
        .add(sm.secret("b", format!("{prefix}/s1")))
        .load()
        .await
        .unwrap_err();
    assert_eq!(proxy.calls("BatchGetSecretValue"), 2, "{:?}", proxy.calls_all());
    assert_eq!(proxy.calls("GetSecretValue"), 0, "{:?}", proxy.calls_all());
    assert!(err.to_string().contains("clock"), "{err}");
}
