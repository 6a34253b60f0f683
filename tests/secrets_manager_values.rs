//! Secrets Manager and KMS against the moto emulator, through our fault proxy.

mod support;

use std::time::Duration;

use aws_sdk_secretsmanager::primitives::Blob;
use lambda_secrets::{Ciphertext, Error, KmsSource, Secrets, SecretsManagerSource, SsmSource};
use support::{moto, unique_prefix, FaultProxy};

struct Env {
    proxy: FaultProxy,
    seed: aws_sdk_secretsmanager::Client,
    sm: SecretsManagerSource,
    prefix: String,
}

async fn env(tag: &str) -> Env {
    support::init_tracing();
    let moto = moto();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let seed = aws_sdk_secretsmanager::Client::new(&support::sdk_config(&moto.endpoint).await);
    let sm = SecretsManagerSource::new(&support::sdk_config(&proxy.endpoint()).await);
    // Secret names may not start with `/`.
    let prefix = unique_prefix(tag).trim_start_matches('/').to_owned();
    Env {
        proxy,
        seed,
        sm,
        prefix,
    }
}

async fn create(seed: &aws_sdk_secretsmanager::Client, name: &str, value: &str) -> String {
    let out = seed
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap();
    out.version_id.unwrap()
}

async fn put(seed: &aws_sdk_secretsmanager::Client, name: &str, value: &str) -> String {
    let out = seed
        .put_secret_value()
        .secret_id(name)
        .secret_string(value)
        .send()
        .await
        .unwrap();
    out.version_id.unwrap()
}

#[tokio::test]
async fn forty_five_secrets_take_three_batch_calls() {
    let e = env("sm-batch").await;
    let mut builder = Secrets::builder();
    for i in 0..45 {
        let name = format!("{}/s{i:02}", e.prefix);
        create(&e.seed, &name, &format!("secret-{i:02}")).await;
        builder = builder.add(e.sm.secret(format!("k{i:02}"), name));
    }
    let secrets = builder.load().await.unwrap();
    assert_eq!(
        e.proxy.calls_all(),
        [("BatchGetSecretValue".to_owned(), 3)].into()
    );
    let snap = secrets.snapshot();
    for i in 0..45 {
        assert_eq!(
            snap.expose_str(&format!("k{i:02}")).unwrap(),
            format!("secret-{i:02}")
        );
    }
    assert_eq!(snap.info("k00").unwrap().source, "secretsmanager");
    assert_eq!(
        snap.info("k00").unwrap().version.as_ref().unwrap().len(),
        36,
        "a version id"
    );
}

#[tokio::test]
async fn per_item_errors_are_all_named_in_one_error() {
    let e = env("sm-partial").await;
    let ok = format!("{}/ok", e.prefix);
    create(&e.seed, &ok, "ok-secret-value").await;
    let err = Secrets::builder()
        .add(e.sm.secret("ok", &ok))
        .add(e.sm.secret("gone1", format!("{}/missing-1", e.prefix)))
        .add(e.sm.secret("gone2", format!("{}/missing-2", e.prefix)))
        .add(e.sm.secret("bad", "has space"))
        .load()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid secret id `has space`"), "{err}");

    let err = Secrets::builder()
        .add(e.sm.secret("ok", &ok))
        .add(e.sm.secret("gone1", format!("{}/missing-1", e.prefix)))
        .add(e.sm.secret("gone2", format!("{}/missing-2", e.prefix)))
        .load()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("could not load 2 value(s)"), "{text}");
    assert!(
        text.contains(&format!(
            "key `gone1` (secretsmanager `{}/missing-1`): not found",
            e.prefix
        )),
        "{text}"
    );
    assert!(text.contains("key `gone2`"), "{text}");
    assert!(!text.contains("ok-secret-value"));
    assert_eq!(e.proxy.calls("BatchGetSecretValue"), 1);
}

#[tokio::test]
async fn a_denied_batch_falls_back_to_one_get_per_secret_and_says_what_to_grant() {
    let e = env("sm-denied").await;
    let (captured, _guard) = support::Captured::install(tracing::Level::INFO);

    let names: Vec<String> = (0..3).map(|i| format!("{}/s{i}", e.prefix)).collect();
    for (i, name) in names.iter().enumerate() {
        create(&e.seed, name, &format!("value-{i}")).await;
    }
    e.proxy.deny("BatchGetSecretValue", "");
    let mut builder = Secrets::builder();
    for (i, name) in names.iter().enumerate() {
        builder = builder.add(e.sm.secret(format!("k{i}"), name));
    }
    let secrets = builder.load().await.unwrap();
    assert_eq!(secrets.snapshot().expose_str("k2").unwrap(), "value-2");
    assert_eq!(e.proxy.calls("BatchGetSecretValue"), 1);
    assert_eq!(e.proxy.calls("GetSecretValue"), 3);
    let logs = captured.text();
    assert_eq!(
        logs.matches("Grant `secretsmanager:BatchGetSecretValue`").count(),
        1,
        "{logs}"
    );
}

#[tokio::test]
async fn binary_secrets_json_fields_and_typed_decoding() {
    #[derive(serde::Deserialize)]
    struct Rds {
        username: String,
        password: String,
        port: u16,
    }
    let e = env("sm-shapes").await;
    let rds = format!("{}/rds", e.prefix);
    create(
        &e.seed,
        &rds,
        r#"{"username":"app","password":"p@ss w\"rd","port":5432}"#,
    )
    .await;
    let bin = format!("{}/bin", e.prefix);
    let out = e
        .seed
        .create_secret()
        .name(&bin)
        .secret_binary(Blob::new(vec![0u8, 1, 0xff, 0xfe]))
        .send()
        .await
        .unwrap();
    let secrets = Secrets::builder()
        .add(e.sm.secret("rds", &rds))
        .add(e.sm.secret("password", &rds).json_field("password"))
        .add(e.sm.secret("port", &rds).json_field("port"))
        // Through GetSecretValue (moto's BatchGetSecretValue mangles binary secrets).
        .add(e.sm.secret_version("bin", &bin, out.version_id.unwrap()))
        .load()
        .await
        .unwrap();
    let snap = secrets.snapshot();
    let typed: Rds = snap.expose_json("rds").unwrap();
    assert_eq!(
        (typed.username.as_str(), typed.password.as_str(), typed.port),
        ("app", "p@ss w\"rd", 5432)
    );
    assert_eq!(snap.expose_str("password").unwrap(), "p@ss w\"rd");
    assert_eq!(snap.expose_str("port").unwrap(), "5432");
    assert_eq!(snap.get("bin").unwrap().expose_bytes(), [0u8, 1, 0xff, 0xfe]);
    assert!(matches!(snap.expose_str("bin"), Err(Error::NotUtf8 { .. })));

    let err = Secrets::builder()
        .add(e.sm.secret("missing_field", &rds).json_field("host"))
        .load()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("key `missing_field`") && text.contains("no field `host`"),
        "{text}"
    );
    assert!(!text.contains("p@ss"), "{text}");
}

#[tokio::test]
async fn a_rotation_is_picked_up_with_one_describe_and_one_get_and_no_change_costs_one_describe() {
    let e = env("sm-rotate").await;
    let name = format!("{}/db", e.prefix);
    let other = format!("{}/api", e.prefix);
    create(&e.seed, &name, r#"{"password":"one"}"#).await;
    create(&e.seed, &other, "unchanging").await;
    let secrets = Secrets::builder()
        .add(e.sm.secret("db", &name).json_field("password"))
        .add(e.sm.secret("api", &other).ttl(Duration::from_secs(3600)))
        .default_ttl(Duration::from_millis(300))
        .load()
        .await
        .unwrap();
    // The first refresh learns the rotation schedule: one DescribeSecret per secret, no fetch.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    e.proxy.reset_counts();
    let _ = secrets.snapshot();
    assert!(support::eventually(&secrets, |_| e.proxy.calls("DescribeSecret") == 2).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(e.proxy.calls_all(), [("DescribeSecret".to_owned(), 2)].into());

    // Unchanged after the TTL: DescribeSecret only.
    e.proxy.reset_counts();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let _ = secrets.snapshot();
    assert!(support::eventually(&secrets, |_| e.proxy.calls("DescribeSecret") == 1).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(e.proxy.calls_all(), [("DescribeSecret".to_owned(), 1)].into());

    // Rotated: exactly one DescribeSecret and one GetSecretValue.
    let new_version = put(&e.seed, &name, r#"{"password":"two"}"#).await;
    e.proxy.reset_counts();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(support::eventually(&secrets, |s| s.expose_str("db").unwrap() == "two").await);
    assert_eq!(
        secrets.snapshot().info("db").unwrap().version.as_deref(),
        Some(new_version.as_str())
    );
    assert_eq!(
        e.proxy.calls_all(),
        [("DescribeSecret".to_owned(), 1), ("GetSecretValue".to_owned(), 1)].into()
    );
}

#[tokio::test]
async fn without_describe_secret_refreshes_fall_back_to_get_secret_value() {
    let e = env("sm-nodescribe").await;
    let name = format!("{}/db", e.prefix);
    create(&e.seed, &name, "before").await;
    e.proxy.deny("DescribeSecret", "");
    let secrets = Secrets::builder()
        .add(e.sm.secret("db", &name).ttl(Duration::from_millis(200)))
        .load()
        .await
        .unwrap();
    put(&e.seed, &name, "after").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(support::eventually(&secrets, |s| s.expose_str("db").unwrap() == "after").await);
    assert_eq!(secrets.stats().refresh_failures, 0, "{:?}", secrets.stats());
    assert!(e.proxy.calls("GetSecretValue") >= 1);
}

#[tokio::test]
async fn refresh_now_fetches_the_new_current_version_at_once() {
    let e = env("sm-now").await;
    let name = format!("{}/db", e.prefix);
    create(&e.seed, &name, "old-password").await;
    let secrets = Secrets::builder()
        .add(e.sm.secret("db", &name))
        .load()
        .await
        .unwrap();
    put(&e.seed, &name, "new-password").await;
    // The database just rejected "old-password": fetch the current one now.
    let snap = secrets.refresh_now("db").await.unwrap();
    assert_eq!(snap.expose_str("db").unwrap(), "new-password");
}

/// Sets up a rotation schedule in moto (it needs a rotation Lambda to exist) with boto3, which
/// ships with moto, and clears the AWSPENDING version moto creates even without rotating.
fn schedule_rotation(endpoint: &str, secret: &str) {
    let script = r#"
import sys, io, zipfile, boto3
endpoint, secret, n = sys.argv[1], sys.argv[2], sys.argv[3]
kw = dict(endpoint_url=endpoint, region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')
iam, lam, sm = boto3.client('iam', **kw), boto3.client('lambda', **kw), boto3.client('secretsmanager', **kw)
role = iam.create_role(RoleName='rotation-' + n, AssumeRolePolicyDocument='{}')['Role']['Arn']
buf = io.BytesIO(); z = zipfile.ZipFile(buf, 'w'); z.writestr('index.py', 'def handler(e, c): pass'); z.close()
fn = lam.create_function(FunctionName='rotation-' + n, Runtime='python3.11', Role=role, Handler='index.handler', Code={'ZipFile': buf.getvalue()})['FunctionArn']
sm.rotate_secret(SecretId=secret, RotationLambdaARN=fn, RotationRules={'AutomaticallyAfterDays': 1}, RotateImmediately=False)
for version, stages in sm.describe_secret(SecretId=secret)['VersionIdsToStages'].items():
    if 'AWSPENDING' in stages and 'AWSCURRENT' not in stages:
        sm.update_secret_version_stage(SecretId=secret, VersionStage='AWSPENDING', RemoveFromVersionId=version)
print(int(sm.describe_secret(SecretId=secret)['NextRotationDate'].timestamp()))
"#;
    let n = secret.replace('/', "-");
    let out = std::process::Command::new("python3")
        .args(["-c", script, endpoint, secret, &n])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_is_capped_at_the_next_rotation_date() {
    let e = env("sm-schedule").await;
    let name = format!("{}/rotating", e.prefix);
    create(&e.seed, &name, "v").await;
    tokio::task::block_in_place(|| schedule_rotation(&moto().endpoint, &name));
    let described = e.seed.describe_secret().secret_id(&name).send().await.unwrap();
    let next = std::time::SystemTime::try_from(*described.next_rotation_date().unwrap()).unwrap();

    let secrets = Secrets::builder()
        .add(e.sm.secret("s", &name).ttl(Duration::from_secs(7 * 24 * 3600)))
        .max_staleness(Duration::from_secs(7 * 24 * 3600))
        .load()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        support::eventually(&secrets, |s| s.info("s").unwrap().refresh_by == Some(next)).await,
        "{:?} vs {next:?}",
        secrets.snapshot().info("s")
    );
    // The refresh is due at the rotation (in a day), not after the week-long TTL: see the
    // store's unit test `refresh_by_caps_the_ttl` for the scheduling itself.
    assert_eq!(e.proxy.calls("GetSecretValue"), 0);
}

#[tokio::test]
async fn ssm_references_to_secrets_manager_work_like_any_parameter() {
    let e = env("sm-ref").await;
    let name = format!("{}/via-ssm", e.prefix);
    create(&e.seed, &name, "referenced-value").await;
    let ssm = SsmSource::new(&support::sdk_config(&e.proxy.endpoint()).await);
    let secrets = Secrets::builder()
        .add(ssm.parameter("s", format!("/aws/reference/secretsmanager/{name}")))
        .load()
        .await
        .unwrap();
    assert_eq!(secrets.snapshot().expose_str("s").unwrap(), "referenced-value");
    assert_eq!(e.proxy.calls("GetParameters"), 1);
}

#[tokio::test]
async fn kms_decrypts_with_the_right_encryption_context_only() {
    let e = env("kms").await;
    let kms_seed = aws_sdk_kms::Client::new(&support::sdk_config(&moto().endpoint).await);
    let key = kms_seed
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let encrypted = kms_seed
        .encrypt()
        .key_id(&key)
        .plaintext(aws_sdk_kms::primitives::Blob::new(
            b"legacy-plaintext-token".to_vec(),
        ))
        .encryption_context("LambdaFunctionName", "billing-fn")
        .send()
        .await
        .unwrap();
    let base64 = aws_smithy_types::base64::encode(encrypted.ciphertext_blob.unwrap().into_inner());
    let var = format!("LAMBDA_SECRETS_TEST_{}", std::process::id());
    std::env::set_var(&var, &base64);

    let kms = KmsSource::new(&support::sdk_config(&e.proxy.endpoint()).await);
    let secrets = Secrets::builder()
        .add(kms.decrypt(
            "token",
            Ciphertext::env(&var).context("LambdaFunctionName", "billing-fn"),
        ))
        .load()
        .await
        .unwrap();
    assert_eq!(
        secrets.snapshot().expose_str("token").unwrap(),
        "legacy-plaintext-token"
    );
    assert_eq!(secrets.snapshot().info("token").unwrap().source, "kms");
    assert_eq!(e.proxy.calls("Decrypt"), 1);
    // KMS values cannot change: a forced refresh makes no call.
    secrets.refresh_now("token").await.unwrap();
    assert_eq!(e.proxy.calls("Decrypt"), 1);

    let err = Secrets::builder()
        .add(kms.decrypt(
            "token",
            Ciphertext::base64(&base64).context("LambdaFunctionName", "another-fn"),
        ))
        .load()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("key `token` (kms `ciphertext"), "{text}");
    assert!(text.contains("wrong encryption context"), "{text}");
    assert!(!text.contains("legacy-plaintext"), "{text}");

    let err = Secrets::builder()
        .add(kms.decrypt("token", Ciphertext::env("LAMBDA_SECRETS_TEST_UNSET_VAR")))
        .load()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("`LAMBDA_SECRETS_TEST_UNSET_VAR` is not set"),
        "{err}"
    );
}
