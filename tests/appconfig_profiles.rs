//! AppConfig profiles through `AppConfigSource`, against moto behind the fault proxy (which
//! emulates environments, deployments and AppConfigData, see `tests/support/appconfig.rs`):
//! the cold load, a deployment reaching the function at the poll interval, an unchanged poll,
//! an expired token, a missing profile and a denied call.
#![cfg(feature = "appconfig")]

mod support;

use std::time::Duration;

use lambda_secrets::{AppConfigSource, Error, ItemError, Secrets};
use serde_json::json;
use support::{moto, sdk_config, unique_prefix, FaultProxy};

/// A proxy, and an application `app` with environment `prod` and profile `flags` deployed with
/// `content` (label `v1`).
async fn deployed(tag: &str, content: &str) -> (FaultProxy, String, serde_json::Value) {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let app = unique_prefix(tag).replace('/', "");
    let steps = json!([
        {"op": "setup", "app": app, "env": "prod", "profile": "flags"},
        {"op": "deploy", "app": app, "env": "prod", "profile": "flags", "content": content,
         "content_type": "application/json", "label": "v1"},
    ]);
    let endpoint = proxy.endpoint();
    let answers = tokio::task::spawn_blocking(move || support::boto3::appconfig(&endpoint, &steps))
        .await
        .unwrap();
    proxy.reset_counts();
    (proxy, app, answers[0].clone())
}

async fn deploy(proxy: &FaultProxy, ids: &serde_json::Value, content: &str, label: Option<&str>) {
    let steps = json!([{"op": "deploy", "app": "", "env": "", "profile": "", "app_id": ids["app"],
        "env_id": ids["env"], "profile_id": ids["profile"], "content": content,
        "content_type": "application/json", "label": label}]);
    let endpoint = proxy.endpoint();
    tokio::task::spawn_blocking(move || support::boto3::appconfig(&endpoint, &steps))
        .await
        .unwrap();
}

/// Reads a snapshot every 100 ms (an invocation: a due refresh starts) until `cond` holds, for
/// at most `limit`. Panics if it never does.
async fn until(secrets: &Secrets, limit: Duration, cond: impl Fn(&lambda_secrets::Snapshot) -> bool) {
    let start = std::time::Instant::now();
    while !cond(&secrets.snapshot()) {
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Loads `key` as profile `flags` of environment `prod` of `app`.
async fn load(appconfig: &AppConfigSource, key: &str, app: &str) -> Secrets {
    Secrets::builder()
        .add(appconfig.profile(key, app, "prod", "flags"))
        .load()
        .await
        .unwrap()
}

async fn source(proxy: &FaultProxy) -> AppConfigSource {
    AppConfigSource::new(&sdk_config(&proxy.endpoint()).await)
        .poll_interval(Duration::from_secs(15))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profile_loads_and_a_new_deployment_reaches_the_function_at_the_poll_interval() {
    let (proxy, app, ids) = deployed("ac-load", r#"{"beta": {"enabled": true}}"#).await;
    let appconfig = source(&proxy).await;
    let secrets = load(&appconfig, "flags", &app).await;
    let snapshot = secrets.snapshot();
    assert_eq!(
        snapshot.expose_str("flags").unwrap(),
        r#"{"beta": {"enabled": true}}"#
    );
    let beta: serde_json::Value = snapshot.expose_json("flags").unwrap();
    assert_eq!(beta["beta"]["enabled"], true);
    let info = snapshot.info("flags").unwrap();
    assert_eq!((info.source, info.version.as_deref()), ("appconfig", Some("v1")));
    assert_eq!(info.name, format!("{app}/prod/flags"));
    assert_eq!(
        (
            proxy.calls("StartConfigurationSession"),
            proxy.calls("GetLatestConfiguration")
        ),
        (1, 1)
    );

    deploy(&proxy, &ids, r#"{"beta": {"enabled": false}}"#, Some("v2")).await;
    // Reads keep coming (a refresh starts at an invocation); the new version arrives once the
    // session's 15 s interval has passed, by one more poll of the same session.
    until(&secrets, Duration::from_secs(40), |s| {
        s.info("flags").unwrap().version.as_deref() == Some("v2")
    })
    .await;
    assert_eq!(
        secrets.snapshot().expose_str("flags").unwrap(),
        r#"{"beta": {"enabled": false}}"#
    );
    assert_eq!(proxy.calls("StartConfigurationSession"), 1, "one session");
    assert_eq!(
        proxy.calls("GetLatestConfiguration"),
        2,
        "never sooner than the interval"
    );
    assert_eq!(proxy.appconfig().sessions(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_poll_keeps_the_value_and_an_expired_token_starts_a_new_session() {
    let (proxy, app, ids) = deployed("ac-expire", r#"{"limit": 10}"#).await;
    let appconfig = source(&proxy).await;
    let secrets = load(&appconfig, "limits", &app).await;
    // The first poll after the interval: nothing deployed, an empty answer; the value stays
    // and is confirmed.
    until(&secrets, Duration::from_secs(40), |_| {
        proxy.calls("GetLatestConfiguration") >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        secrets.snapshot().expose_str("limits").unwrap(),
        r#"{"limit": 10}"#
    );
    assert_eq!(
        secrets.snapshot().info("limits").unwrap().version.as_deref(),
        Some("v1")
    );
    assert!(
        secrets.snapshot().info("limits").unwrap().age() < Duration::from_secs(5),
        "confirmed"
    );

    // Tokens now live 5 s: the next poll's token (issued 15 s before) has expired, and a new
    // session serves.
    proxy.appconfig().set_token_lifetime(Duration::from_secs(5));
    deploy(&proxy, &ids, r#"{"limit": 20}"#, None).await;
    until(&secrets, Duration::from_secs(40), |s| {
        s.expose_str("limits").unwrap() == r#"{"limit": 20}"#
    })
    .await;
    assert_eq!(proxy.calls("StartConfigurationSession"), 2, "a second session");
    assert_eq!(
        secrets.snapshot().info("limits").unwrap().version,
        None,
        "no label on the hosted version"
    );
    assert_eq!(secrets.stats().refresh_failures, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_profile_or_a_denied_session_fails_the_load_naming_the_key_and_the_action() {
    let (proxy, app, _) = deployed("ac-fail", "{}").await;
    let appconfig = source(&proxy).await;
    let err = Secrets::builder()
        .add(appconfig.profile("flags", &app, "prod", "no-such-profile"))
        .load()
        .await
        .unwrap_err();
    let Error::Load { failures } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(failures[0].key, "flags");
    assert!(matches!(failures[0].error, ItemError::NotFound), "{err}");

    proxy.deny("StartConfigurationSession", "");
    let err = Secrets::builder()
        .add(appconfig.profile("flags", &app, "prod", "flags"))
        .load()
        .await
        .unwrap_err();
    let Error::Load { failures } = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(&failures[0].error, ItemError::Denied { action } if action == "appconfig:StartConfigurationSession"),
        "{err}"
    );
    assert!(
        err.to_string().contains("appconfig:StartConfigurationSession"),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_identifier_is_refused_before_any_call() {
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let appconfig = source(&proxy).await;
    let err = Secrets::builder()
        .add(appconfig.profile("flags", "", "prod", "flags"))
        .load()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("AppConfig application"), "{err}");
    assert_eq!(proxy.calls("StartConfigurationSession"), 0);
    assert!(appconfig.poll_interval(Duration::from_secs(90_000)).is_err());
}

#[cfg(feature = "snapstart")]
#[tokio::test(flavor = "multi_thread")]
async fn each_environment_restored_from_a_snapshot_starts_its_own_session() {
    let (proxy, app, _) = deployed("ac-snap", r#"{"a": 1}"#).await;
    let appconfig = source(&proxy).await;
    let secrets = load(&appconfig, "cfg", &app).await;
    let snapstart = secrets.snapstart();
    snapstart.before_snapshot().await.unwrap();
    // Two environments restored from one snapshot must not share the token chain: the reload
    // starts a session of its own.
    snapstart.after_restore().await.unwrap();
    assert_eq!(secrets.snapshot().expose_str("cfg").unwrap(), r#"{"a": 1}"#);
    assert_eq!(
        (
            proxy.calls("StartConfigurationSession"),
            proxy.calls("GetLatestConfiguration")
        ),
        (2, 2),
        "a new session after the restore, not the old token"
    );
    assert_eq!(proxy.appconfig().sessions(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_now_reads_a_new_deployment_within_the_poll_interval() {
    let (proxy, app, ids) = deployed("ac-now", r#"{"a": 1}"#).await;
    let appconfig = source(&proxy).await;
    let secrets = load(&appconfig, "cfg", &app).await;
    deploy(&proxy, &ids, r#"{"a": 2}"#, Some("v2")).await;
    // Within the 15 s interval the session cannot be polled: a new session reads the deployment.
    let snapshot = secrets.refresh_now("cfg").await.unwrap();
    assert_eq!(snapshot.expose_str("cfg").unwrap(), r#"{"a": 2}"#);
    assert_eq!(snapshot.info("cfg").unwrap().version.as_deref(), Some("v2"));
    assert_eq!(proxy.calls("StartConfigurationSession"), 2);
}

#[cfg(feature = "on-demand")]
#[tokio::test(flavor = "multi_thread")]
async fn profiles_named_at_invocation_time_are_read_on_demand() {
    let (proxy, app, _) = deployed("ac-od", r#"{"tenant": "t1"}"#).await;
    let appconfig = source(&proxy).await;
    let od = lambda_secrets::OnDemand::builder()
        .build({
            let app = app.clone();
            move |profile| appconfig.profile(profile, app.clone(), "prod", profile)
        })
        .unwrap();
    let value = od.get("flags").await.unwrap();
    assert_eq!(value.expose_str(), Some(r#"{"tenant": "t1"}"#));
    od.get("flags").await.unwrap();
    assert_eq!(
        (
            proxy.calls("StartConfigurationSession"),
            proxy.calls("GetLatestConfiguration")
        ),
        (1, 1),
        "the second lookup is a hit"
    );
    assert!(matches!(
        od.get("missing-profile").await,
        Err(Error::Load { .. }) | Err(Error::MissingKey { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_longer_interval_from_the_service_is_waited() {
    let (proxy, app, _) = deployed("ac-slow", r#"{"a": 1}"#).await;
    // The service asks this session to poll every 40 s, not the 15 s it asked for.
    proxy.appconfig().set_poll_interval(Some(40));
    let appconfig = source(&proxy).await;
    let secrets = load(&appconfig, "cfg", &app).await;
    // Invocations keep coming past the session's own 15 s: no poll before the service's 40 s
    // (a poll then would be refused as too early).
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        secrets.snapshot();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(proxy.calls("GetLatestConfiguration"), 1, "only the load's");
    assert_eq!(secrets.stats().refresh_failures, 0);
    assert_eq!(secrets.snapshot().expose_str("cfg").unwrap(), r#"{"a": 1}"#);
}
