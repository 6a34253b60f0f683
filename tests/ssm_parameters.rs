//! SSM end to end against the moto emulator, through our fault proxy.

mod support;

use std::time::Duration;

use lambda_secrets::{CallErrorKind, Error, ItemError, RetryPolicy, Secrets, SsmSource};
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

fn quick_retries() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(3)
        .base_delay(Duration::from_millis(5))
        .max_delay(Duration::from_millis(20))
        .attempt_timeout(Duration::from_secs(2))
}

#[tokio::test]
async fn twenty_five_names_take_three_get_parameters_calls() {
    let e = env("batch").await;
    let mut builder = Secrets::builder();
    for i in 0..25 {
        let name = format!("{}/p{i:02}", e.prefix);
        put_param(&e.seed, &name, &format!("value-{i:02}"), "String").await;
        builder = builder.add(e.ssm.parameter(format!("k{i:02}"), name));
    }
    // The same name under a second key is fetched once.
    builder = builder.add(e.ssm.parameter("again", format!("{}/p00", e.prefix)));
    let secrets = builder.load().await.unwrap();

    assert_eq!(e.proxy.calls("GetParameters"), 3, "{:?}", e.proxy.calls_all());
    assert_eq!(e.proxy.calls_all().len(), 1, "{:?}", e.proxy.calls_all());
    let snap = secrets.snapshot();
    assert_eq!(snap.len(), 26);
    for i in 0..25 {
        assert_eq!(
            snap.expose_str(&format!("k{i:02}")).unwrap(),
            format!("value-{i:02}")
        );
    }
    assert_eq!(snap.expose_str("again").unwrap(), "value-00");
    assert_eq!(secrets.stats().calls["GetParameters"], 3);
}

#[tokio::test]
async fn a_path_is_read_across_pages_with_relative_keys() {
    let e = env("path").await;
    for i in 0..25 {
        let name = format!(
            "{}/app/{}/p{i:02}",
            e.prefix,
            if i % 2 == 0 { "db" } else { "api" }
        );
        put_param(&e.seed, &name, &format!("v{i}"), "String").await;
    }
    put_param(&e.seed, &format!("{}/other", e.prefix), "x", "String").await;
    let secrets = Secrets::builder()
        .add(e.ssm.path(format!("{}/app", e.prefix)))
        .load()
        .await
        .unwrap();
    let snap = secrets.snapshot();
    assert_eq!(snap.len(), 25, "{:?}", snap.keys());
    assert_eq!(snap.expose_str("db/p00").unwrap(), "v0");
    assert_eq!(snap.expose_str("api/p01").unwrap(), "v1");
    assert!(snap.get("other").is_err());
    let pages = e.proxy.calls("GetParametersByPath");
    assert!(
        pages >= 3,
        "25 parameters at 10 a page take at least 3 pages, saw {pages}"
    );
}

#[tokio::test]
async fn secure_strings_are_decrypted_and_string_lists_split() {
    let e = env("secure").await;
    let secret = format!("{}/secure", e.prefix);
    let list = format!("{}/list", e.prefix);
    put_param(&e.seed, &secret, "s3cr3t-plain", "SecureString").await;
    put_param(&e.seed, &list, "a,b,c", "StringList").await;
    let secrets = Secrets::builder()
        .add(e.ssm.parameter("secret", &secret))
        .add(e.ssm.parameter("list", &list))
        .load()
        .await
        .unwrap();
    let snap = secrets.snapshot();
    assert_eq!(snap.expose_str("secret").unwrap(), "s3cr3t-plain");
    assert_eq!(snap.expose_list("list").unwrap(), ["a", "b", "c"]);

    let raw = Secrets::builder()
        .add(e.ssm.clone().with_decryption(false).parameter("secret", &secret))
        .load()
        .await
        .unwrap();
    assert_ne!(raw.snapshot().expose_str("secret").unwrap(), "s3cr3t-plain");
}

#[tokio::test]
async fn version_and_label_selectors_pick_their_version() {
    let e = env("select").await;
    let name = format!("{}/rotating", e.prefix);
    put_param(&e.seed, &name, "first", "String").await;
    put_param(&e.seed, &name, "second-value", "String").await;
    support::label_param(&e.seed, &name, 1, "previous").await;
    let secrets = Secrets::builder()
        .add(e.ssm.parameter("latest", &name))
        .add(e.ssm.parameter("v1", format!("{name}:1")))
        .add(e.ssm.parameter("labelled", format!("{name}:previous")))
        .load()
        .await
        .unwrap();
    let snap = secrets.snapshot();
    assert_eq!(snap.expose_str("latest").unwrap(), "second-value");
    assert_eq!(snap.info("latest").unwrap().version.as_deref(), Some("2"));
    assert_eq!(snap.expose_str("v1").unwrap(), "first");
    assert_eq!(snap.info("v1").unwrap().version.as_deref(), Some("1"));
    assert_eq!(snap.expose_str("labelled").unwrap(), "first");
}

#[tokio::test]
async fn missing_and_denied_names_are_all_listed_in_one_error() {
    let e = env("errors").await;
    let (captured, _guard) = support::Captured::install(tracing::Level::INFO);
    let ok = format!("{}/ok", e.prefix);
    let denied = format!("{}/denied", e.prefix);
    put_param(&e.seed, &ok, "ok-value-123", "SecureString").await;
    put_param(&e.seed, &denied, "denied-value-456", "String").await;
    put_param(
        &e.seed,
        &format!("{}/tree/x", e.prefix),
        "tree-value-789",
        "String",
    )
    .await;
    e.proxy.deny("GetParameters", &denied);
    e.proxy.deny("GetParametersByPath", &format!("{}/tree", e.prefix));
    let err = Secrets::builder()
        .add(e.ssm.parameter("ok", &ok))
        .add(e.ssm.parameter("missing", format!("{}/missing", e.prefix)))
        .add(e.ssm.parameter("missing_version", format!("{ok}:7")))
        .add(e.ssm.parameter("denied", &denied))
        .add(e.ssm.path_with_prefix("tree/", format!("{}/tree", e.prefix)))
        .load()
        .await
        .unwrap_err();
    let text = err.to_string();
    let Error::Load { failures } = &err else {
        panic!("{text}")
    };
    assert_eq!(failures.len(), 4, "{text}");
    assert!(
        text.contains(&format!("key `missing` (ssm `{}/missing`): not found", e.prefix)),
        "{text}"
    );
    assert!(
        text.contains(&format!("key `missing_version` (ssm `{ok}:7`): not found")),
        "{text}"
    );
    assert!(
        text.contains("key `denied`") && text.contains("grant `ssm:GetParameters`"),
        "{text}"
    );
    assert!(
        text.contains("key `tree/`") && text.contains("grant `ssm:GetParametersByPath`"),
        "{text}"
    );
    assert!(!text.contains("key `ok`"), "{text}");
    // AWS's denial text names the account and the role: it goes to the log, never to an invoker.
    assert!(
        !text.contains("123456789012") && !text.contains("assumed-role"),
        "{text}"
    );
    let log = captured.text();
    assert!(
        log.contains("WARN") && log.contains("assumed-role/test/fn"),
        "{log}"
    );
    for value in ["ok-value-123", "denied-value-456", "tree-value-789"] {
        assert!(!text.contains(value), "{text}");
        assert!(!format!("{err:?}").contains(value));
    }
}

#[tokio::test]
async fn a_changed_value_is_picked_up_after_its_ttl_without_restart() {
    let e = env("ttl").await;
    let name = format!("{}/api-key", e.prefix);
    put_param(&e.seed, &name, "before", "SecureString").await;
    let secrets = Secrets::builder()
        .add(e.ssm.parameter("api_key", &name).ttl(Duration::from_millis(300)))
        .max_staleness(Duration::from_secs(60))
        .load()
        .await
        .unwrap();
    put_param(&e.seed, &name, "after-rotation", "SecureString").await;
    assert_eq!(
        secrets.snapshot().expose_str("api_key").unwrap(),
        "before",
        "within TTL: cached"
    );
    assert_eq!(e.proxy.calls("GetParameters"), 1);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(support::eventually(&secrets, |s| s.expose_str("api_key").unwrap() == "after-rotation").await);
    assert_eq!(
        secrets.snapshot().info("api_key").unwrap().version.as_deref(),
        Some("2")
    );
    assert_eq!(e.proxy.calls("GetParameters"), 2, "one refresh");
}

#[tokio::test]
async fn the_last_good_value_is_served_while_the_emulator_fails() {
    let e = env("lastgood").await;
    let name = format!("{}/k", e.prefix);
    put_param(&e.seed, &name, "good", "String").await;
    let secrets = Secrets::builder()
        .add(e.ssm.parameter("k", &name).ttl(Duration::from_millis(100)))
        .max_staleness(Duration::from_secs(60))
        .retry_policy(quick_retries())
        .failure_backoff(Duration::from_millis(50), Duration::from_millis(100))
        .load()
        .await
        .unwrap();
    e.proxy.fail_all(Some(500));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(support::eventually(&secrets, |_| secrets.stats().refresh_failures >= 2).await);
    assert_eq!(secrets.snapshot().expose_str("k").unwrap(), "good");
    assert!(secrets.stats().retries >= 2, "{:?}", secrets.stats());

    put_param(&e.seed, &name, "recovered", "String").await;
    e.proxy.fail_all(None);
    assert!(support::eventually(&secrets, |s| s.expose_str("k").unwrap() == "recovered").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_readers_of_a_stale_key_make_one_fetch() {
    let e = env("flight").await;
    let name = format!("{}/k", e.prefix);
    put_param(&e.seed, &name, "old", "String").await;
    // The refreshed value stays fresh for 2 s: long enough for every reader to have asked, however
    // busy the machine (with 100 ms, a reader scheduled late found it stale again: a second fetch).
    let secrets = Secrets::builder()
        .add(e.ssm.parameter("k", &name).ttl(Duration::from_secs(2)))
        .max_staleness(Duration::from_secs(2))
        .load()
        .await
        .unwrap();
    put_param(&e.seed, &name, "new", "String").await;
    e.proxy.set_latency(Duration::from_millis(200));
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let readers: Vec<_> = (0..1000)
        .map(|_| {
            let secrets = secrets.clone();
            tokio::spawn(async move { secrets.fresh_snapshot().await.expose_str("k").unwrap().to_owned() })
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.await.unwrap(), "new");
    }
    assert_eq!(e.proxy.calls("GetParameters"), 2, "load + one refresh");
}

#[tokio::test]
async fn five_hundreds_and_cut_connections_are_retried() {
    let e = env("retry").await;
    let name = format!("{}/k", e.prefix);
    put_param(&e.seed, &name, "v", "String").await;
    e.proxy.drop_connections_next(1);
    e.proxy.fail_next(2, 503);
    let secrets = Secrets::builder()
        .add(e.ssm.parameter("k", &name))
        .load()
        .await
        .unwrap();
    assert_eq!(secrets.snapshot().expose_str("k").unwrap(), "v");
    let stats = secrets.stats();
    assert_eq!(e.proxy.calls("GetParameters"), 4, "{:?}", e.proxy.calls_all());
    // SDK retries are off: every attempt the proxy saw is one we counted and chose to make.
    assert_eq!(stats.calls["GetParameters"], 4);
    assert_eq!(stats.retries, 3);
}

#[tokio::test]
async fn a_4xx_whose_body_is_not_aws_json_is_final() {
    // A corporate proxy or a WAF answers with its own HTML page: the answer is final.
    let e = env("html403").await;
    let name = format!("{}/k", e.prefix);
    put_param(&e.seed, &name, "v", "String").await;
    e.proxy.html_all(Some(403));
    let err = Secrets::builder()
        .add(e.ssm.parameter("k", &name))
        .load()
        .await
        .unwrap_err();
    let Error::Load { failures } = &err else {
        panic!("{err}")
    };
    // Not an IAM denial (no AWS error code: the fix is not a grant), and not retried.
    let ItemError::Call(call) = &failures[0].error else {
        panic!("{err}")
    };
    assert_eq!(call.kind(), CallErrorKind::Fatal, "{err}");
    assert!(
        err.to_string()
            .contains("HTTP 403 with a body that is not an AWS error"),
        "{err}"
    );
    assert_eq!(e.proxy.calls("GetParameters"), 1, "{:?}", e.proxy.calls_all());
    // Any other 4xx is final too; a 5xx page is retried.
    e.proxy.html_all(Some(400));
    let err = Secrets::builder()
        .add(e.ssm.parameter("k", &name))
        .load()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not an AWS error"), "{err}");
    assert_eq!(e.proxy.calls("GetParameters"), 2);
    e.proxy.html_all(Some(502));
    let _ = Secrets::builder()
        .add(e.ssm.parameter("k", &name))
        .retry_policy(
            RetryPolicy::default()
                .max_attempts(3)
                .base_delay(Duration::from_millis(1))
                .max_delay(Duration::from_millis(1))
                .attempt_timeout(Duration::from_secs(2)),
        )
        .load()
        .await
        .unwrap_err();
    assert_eq!(e.proxy.calls("GetParameters"), 5);
}

#[tokio::test]
async fn throttling_is_retried_until_the_quota_window_passes() {
    let e = env("throttle").await;
    let name = format!("{}/k", e.prefix);
    put_param(&e.seed, &name, "v", "String").await;
    e.proxy.throttle_tps(Some(1));
    // Use up this second's quota with a call of our own.
    support::ssm_client_no_retries(&e.proxy.endpoint())
        .await
        .get_parameter()
        .name(&name)
        .send()
        .await
        .unwrap();
    let secrets = Secrets::builder()
        .add(e.ssm.parameter("k", &name))
        .retry_policy(
            RetryPolicy::default()
                .max_attempts(30)
                .base_delay(Duration::from_millis(100))
                .max_delay(Duration::from_millis(400))
                .attempt_timeout(Duration::from_secs(2)),
        )
        .load()
        .await
        .unwrap();
    assert_eq!(secrets.snapshot().expose_str("k").unwrap(), "v");
    let stats = secrets.stats();
    assert!(stats.throttled >= 1, "{stats:?}");
    assert_eq!(stats.throttled, e.proxy.throttled());
    assert_eq!(stats.calls["GetParameters"], stats.throttled + 1);
}

#[tokio::test]
async fn no_seeded_value_reaches_errors_debug_or_tracing() {
    let e = env("hygiene").await;
    let (captured, _guard) = support::Captured::install(tracing::Level::DEBUG);

    let values = [
        "hunter2-alpha-secret",
        "hunter2-beta-secret",
        "hunter2-gamma-secret",
    ];
    let names: Vec<String> = (0..3).map(|i| format!("{}/s{i}", e.prefix)).collect();
    for (name, value) in names.iter().zip(values) {
        put_param(&e.seed, name, value, "SecureString").await;
    }
    let mut texts = Vec::new();
    // A failing load (one name missing) ...
    let err = Secrets::builder()
        .add(e.ssm.parameter("a", &names[0]))
        .add(e.ssm.parameter("missing", format!("{}/nope", e.prefix)))
        .load()
        .await
        .unwrap_err();
    texts.push(format!("{err} {err:?}"));
    // ... a good load, refreshes that fail, a value that expires, JSON that does not fit.
    let secrets = Secrets::builder()
        .add(e.ssm.parameter("a", &names[0]).ttl(Duration::from_millis(50)))
        .add(e.ssm.parameter("b", &names[1]).ttl(Duration::from_millis(50)))
        .add(
            e.ssm
                .path_with_prefix("p/", &e.prefix)
                .ttl(Duration::from_millis(50)),
        )
        .max_staleness(Duration::from_millis(100))
        .retry_policy(quick_retries())
        .load()
        .await
        .unwrap();
    texts.push(format!(
        "{secrets:?} {:?} {:?}",
        secrets.snapshot(),
        secrets.get("a").unwrap()
    ));
    texts.push(format!("{:?}", secrets.expose_json::<Vec<u32>>("b").unwrap_err()));
    texts.push(secrets.expose_json::<Vec<u32>>("b").unwrap_err().to_string());
    e.proxy.fail_all(Some(500));
    tokio::time::sleep(Duration::from_millis(120)).await;
    let snap = secrets.fresh_snapshot().await;
    let expired = snap.get("a").unwrap_err();
    assert!(matches!(expired, Error::Expired { .. }), "{expired}");
    texts.push(format!("{expired} {expired:?}"));
    texts.push(format!("{:?}", secrets.refresh_now("b").await));
    e.proxy.fail_all(None);

    let logs = captured.text();
    assert!(
        logs.contains("refresh failed"),
        "the failures were logged: {logs}"
    );
    texts.push(logs);
    for text in &texts {
        for value in values {
            assert!(!text.contains(value), "a value leaked into: {text}");
        }
    }
}
