//! Values of another account, read through an assumed role, against moto: credentials from
//! assuming `arn:aws:iam::222222222222:role/...` act in account 222222222222, so what is created
//! there loads through `assume_role` and not without it.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_async::time::{SharedTimeSource, TimeSource};
use aws_types::SdkConfig;
use lambda_secrets::{
    AssumeRole, Ciphertext, Error, ItemError, KmsSource, RdsSource, Secrets, SecretsManagerSource, SsmSource,
};
use support::{moto, put_param, sdk_config, unique_prefix, FaultProxy};

const ROLE: &str = "arn:aws:iam::222222222222:role/secrets-reader";

/// A config acting in the role's account (to seed it), straight to moto.
async fn in_other_account() -> SdkConfig {
    let base = sdk_config(&moto().endpoint).await;
    let provider = AssumeRoleProvider::builder(ROLE)
        .configure(&base)
        .session_name("seed")
        .build()
        .await;
    base.to_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .build()
}

/// STS calls seen by the proxy (its query protocol has no `X-Amz-Target`: counted under `/`).
fn sts_calls(proxy: &FaultProxy) -> u64 {
    proxy.calls("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_and_a_secure_string_of_another_account_load_through_the_role_and_not_without() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let seed = in_other_account().await;
    let prefix = unique_prefix("xacct");
    let secret = format!("{}/db", prefix.trim_start_matches('/'));
    aws_sdk_secretsmanager::Client::new(&seed)
        .create_secret()
        .name(&secret)
        .secret_string("from-222")
        .send()
        .await
        .unwrap();
    let parameter = format!("{prefix}/token");
    put_param(
        &aws_sdk_ssm::Client::new(&seed),
        &parameter,
        "token-222",
        "SecureString",
    )
    .await;

    let base = sdk_config(&proxy.endpoint()).await;
    // The function's own account has neither.
    let err = Secrets::builder()
        .add(SecretsManagerSource::new(&base).secret("db", &secret))
        .add(SsmSource::new(&base).parameter("token", &parameter))
        .load()
        .await
        .err()
        .unwrap();
    let Error::Load { failures, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(failures.len(), 2, "{err}");
    assert!(failures.iter().all(|f| f.error == ItemError::NotFound), "{err}");
    assert_eq!(sts_calls(&proxy), 0);

    let role = AssumeRole::new(ROLE).session_name("lambda-secrets-test");
    let sm = SecretsManagerSource::new(&base)
        .assume_role(role.clone())
        .unwrap();
    let ssm = SsmSource::new(&base).assume_role(role).unwrap();
    let secrets = Secrets::builder()
        .add(sm.secret("db", &secret))
        .add(ssm.parameter("token", &parameter))
        .load()
        .await
        .unwrap();
    let snapshot = secrets.snapshot();
    assert_eq!(snapshot.expose_str("db").unwrap(), "from-222");
    assert_eq!(snapshot.expose_str("token").unwrap(), "token-222");
    let assumed = sts_calls(&proxy);
    assert_eq!(assumed, 2, "each source assumed the role once");

    // Refreshes go on with the credentials held (no new AssumeRole while they are good).
    secrets.refresh_now("db").await.unwrap();
    secrets.refresh_now("token").await.unwrap();
    assert_eq!(sts_calls(&proxy), assumed);

    // SnapStart: the assumed credentials are dropped with the values; a restored environment
    // assumes the role afresh.
    let snapstart = secrets.snapstart();
    snapstart.before_snapshot().await.unwrap();
    snapstart.after_restore().await.unwrap();
    assert_eq!(sts_calls(&proxy), assumed + 2, "assumed again after the restore");
    assert_eq!(secrets.snapshot().expose_str("db").unwrap(), "from-222");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_ciphertext_of_another_account_decrypts_through_the_role_and_a_token_is_signed_as_the_role() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    proxy.record_responses("/");
    let seed = aws_sdk_kms::Client::new(&in_other_account().await);
    let key = seed
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let encrypted = seed
        .encrypt()
        .key_id(&key)
        .plaintext(aws_sdk_kms::primitives::Blob::new(b"kms-222".to_vec()))
        .send()
        .await
        .unwrap();
    let ciphertext = aws_smithy_types::base64::encode(encrypted.ciphertext_blob.unwrap().into_inner());

    let base = sdk_config(&proxy.endpoint()).await;
    let Err(err) = Secrets::builder()
        .add(KmsSource::new(&base).decrypt("k", Ciphertext::base64(&ciphertext)))
        .load()
        .await
    else {
        panic!("the function's own account has no such key");
    };
    assert!(err.to_string().contains("key `k`"), "{err}");

    let role = AssumeRole::new(ROLE).duration(Duration::from_secs(900));
    let kms = KmsSource::new(&base).assume_role(role.clone()).unwrap();
    let rds = RdsSource::new(&base).assume_role(role).unwrap();
    let secrets = Secrets::builder()
        .add(kms.decrypt("k", Ciphertext::base64(&ciphertext)))
        .add(rds.auth_token("db", "db.example.internal", 5432, "app"))
        .load()
        .await
        .unwrap();
    let snapshot = secrets.snapshot();
    assert_eq!(snapshot.expose_str("k").unwrap(), "kms-222");
    // The token is signed with the role's credentials (the key STS gave), not the config's.
    let keys = proxy.xml_fields("/", "AccessKeyId");
    assert_eq!(keys.len(), 2, "KMS and RDS each assumed the role once");
    let token = snapshot.expose_str("db").unwrap();
    assert!(
        keys.iter()
            .any(|k| token.contains(&format!("X-Amz-Credential={k}%2F"))),
        "the token is not signed as the role"
    );
    assert!(!token.contains("X-Amz-Credential=test%2F"));
    assert!(token.contains("X-Amz-Security-Token="));
    // Good no longer than the session (15 minutes) nor its own 900 s.
    let expires = snapshot.info("db").unwrap().expires_at.unwrap();
    assert!(expires <= SystemTime::now() + Duration::from_secs(900));
    drop(snapshot);

    // The seal drops both sources' credentials; the restore assumes the role again for each.
    let snapstart = secrets.snapstart();
    snapstart.before_snapshot().await.unwrap();
    snapstart.after_restore().await.unwrap();
    assert_eq!(proxy.xml_fields("/", "AccessKeyId").len(), 4);
    assert_eq!(secrets.snapshot().expose_str("k").unwrap(), "kms-222");
}

/// A clock the test moves: the SDK signs and the library judges credentials' expiry by it (moto
/// checks neither the signing time nor the credentials' expiry, so the calls still go through).
#[derive(Debug, Clone, Default)]
struct Clock(Arc<Mutex<Duration>>);

impl Clock {
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }

    fn set_back(&self) {
        *self.0.lock().unwrap() = Duration::ZERO;
    }
}

impl TimeSource for Clock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + *self.0.lock().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_go_on_across_the_renewal_of_short_lived_assumed_credentials() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let seed = in_other_account().await;
    let prefix = unique_prefix("xacct-renew");
    let secret = format!("{}/db", prefix.trim_start_matches('/'));
    let sm_seed = aws_sdk_secretsmanager::Client::new(&seed);
    sm_seed
        .create_secret()
        .name(&secret)
        .secret_string("v1")
        .send()
        .await
        .unwrap();

    let clock = Clock::default();
    let base = sdk_config(&proxy.endpoint())
        .await
        .into_builder()
        .time_source(SharedTimeSource::new(clock.clone()))
        .build();
    // The shortest session STS gives: 15 minutes, taken again when 5 are left.
    let role = AssumeRole::new(ROLE).duration(Duration::from_secs(900));
    let sm = SecretsManagerSource::new(&base).assume_role(role).unwrap();
    let secrets = Secrets::builder()
        .refresh_now_interval(Duration::ZERO) // each `refresh_now` below calls
        .add(sm.secret("db", &secret))
        .load()
        .await
        .unwrap();
    assert_eq!(sts_calls(&proxy), 1);

    // 9 minutes on: 6 left, the credentials are still used.
    clock.advance(Duration::from_secs(9 * 60));
    secrets.refresh_now("db").await.unwrap();
    assert_eq!(sts_calls(&proxy), 1, "reused while more than 5 minutes are left");

    // 11 minutes on: 4 left. The next refresh assumes the role again and reads the rotated value
    // with the new credentials.
    sm_seed
        .put_secret_value()
        .secret_id(&secret)
        .secret_string("v2")
        .send()
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2 * 60));
    secrets.refresh_now("db").await.unwrap();
    let renewed = sts_calls(&proxy);
    assert!(renewed > 1, "assumed again before they expire");
    assert_eq!(secrets.snapshot().expose_str("db").unwrap(), "v2");

    // moto stamps a session's expiry by its own clock, which the test's did not move: back to it,
    // the new session has its 15 minutes again, and is reused.
    clock.set_back();
    secrets.refresh_now("db").await.unwrap();
    assert_eq!(sts_calls(&proxy), renewed);
    assert_eq!(secrets.snapshot().expose_str("db").unwrap(), "v2");
    let stats = secrets.stats();
    assert_eq!(stats.refresh_failures, 0, "{stats:?}");
}

#[tokio::test]
async fn a_malformed_role_or_a_source_made_from_a_client_is_refused_naming_it() {
    let base = sdk_config("http://127.0.0.1:9").await;
    let err = SsmSource::new(&base)
        .assume_role(AssumeRole::new("arn:aws:iam::2222:role/r"))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid role ARN `arn:aws:iam::2222:role/r`"),
        "{err}"
    );
    let client = aws_sdk_secretsmanager::Client::new(&base);
    let err = SecretsManagerSource::from_client(&client)
        .assume_role(AssumeRole::new(ROLE))
        .unwrap_err();
    assert!(err.to_string().contains("made from a client"), "{err}");
    let err = SsmSource::new(&base)
        .assume_role(AssumeRole::new(ROLE))
        .unwrap()
        .assume_role(AssumeRole::new("arn:aws:iam::333333333333:role/other"))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("already reads through `arn:aws:iam::222222222222:role/secrets-reader`"),
        "{err}"
    );
}
