//! Loading: declarations merged and validated, every failure named, keys produced twice.

use super::*;

#[tokio::test(start_paused = true)]
async fn an_item_declared_twice_is_fetched_once_under_both_keys() {
    let mem = MemorySource::new();
    mem.set("/db", "pw");
    let secrets = Secrets::builder()
        .add(mem.value("a", "/db"))
        .add(mem.value("b", "/db"))
        .add(mem.value("a", "/db"))
        .load()
        .await
        .unwrap();
    let snap = secrets.snapshot();
    assert_eq!(snap.expose_str("a").unwrap(), "pw");
    assert_eq!(snap.expose_str("b").unwrap(), "pw");
    assert_eq!(snap.len(), 2);
    assert_eq!(mem.fetches(), 1);
}

#[tokio::test(start_paused = true)]
async fn bad_declarations_are_rejected_naming_the_input() {
    let mem = MemorySource::new();
    mem.set("/a", "1");
    mem.set("/b", "2");
    let err = Secrets::builder()
        .add(mem.value("k", "/a"))
        .add(mem.value("k", "/b"))
        .load()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::DuplicateKey { key, .. } if key == "k"),
        "{err}"
    );

    let err = Secrets::builder()
        .add(mem.value("k", "/a").ttl(Duration::from_secs(60)))
        .max_staleness(Duration::from_secs(10))
        .load()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("shorter than the TTL"), "{err}");

    let err = Secrets::builder()
        .add(mem.value("k", "/a"))
        .ttl_jitter(0.9)
        .load()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TTL jitter"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn missing_items_fail_the_load_listing_every_key() {
    let mem = MemorySource::new();
    mem.set("/a", "1");
    let err = Secrets::builder()
        .add(mem.value("a", "/a"))
        .add(mem.value("b", "/missing-b"))
        .add(mem.value("c", "/missing-c"))
        .load()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("could not load 2 value(s)"), "{text}");
    assert!(
        text.contains("key `b` (memory `/missing-b`): not found"),
        "{text}"
    );
    assert!(text.contains("key `c` (memory `/missing-c`)"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn tree_keys_are_relative_with_prefix() {
    let mem = MemorySource::new();
    mem.set("/app/db/url", "u");
    mem.set("/app/flag", "f");
    mem.set("/other", "o");
    let secrets = Secrets::builder()
        .add(mem.tree("cfg/", "/app"))
        .load()
        .await
        .unwrap();
    assert_eq!(secrets.snapshot().keys(), ["cfg/db/url", "cfg/flag"]);
}

#[tokio::test(start_paused = true)]
async fn a_declared_key_is_never_shadowed_by_a_new_name_under_a_path() {
    let mem = MemorySource::new();
    mem.set("/cred", "declared");
    mem.set("/app/flag", "on");
    let secrets = Secrets::builder()
        .add(mem.tree("", "/app").ttl(Duration::from_millis(20)))
        .add(mem.value("db_password", "/cred").ttl(Duration::from_millis(20)))
        .load()
        .await
        .unwrap();
    mem.set("/app/db_password", "planted");
    mem.set("/app/new", "x");
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(eventually(&secrets, |s| s.get("new").is_ok()).await);
    assert_eq!(secrets.snapshot().expose_str("db_password").unwrap(), "declared");
}

#[tokio::test(start_paused = true)]
async fn a_json_field_that_is_missing_fails_the_load_naming_key_and_field() {
    let mem = MemorySource::new();
    mem.set("/rds", r#"{"password":"hunter2"}"#);
    mem.set("/plain", "hunter2");
    let err = Secrets::builder()
        .add(mem.value("user", "/rds").json_field("username"))
        .add(mem.value("pw", "/plain").json_field("password"))
        .add(mem.value("ok", "/rds").json_field("password"))
        .load()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("key `user` (memory `/rds`): the JSON object has no field `username`"),
        "{text}"
    );
    assert!(
        text.contains("key `pw` (memory `/plain`): the value is not a JSON object"),
        "{text}"
    );
    assert!(!text.contains("key `ok`") && !text.contains("hunter2"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_zero_failure_backoff_is_rejected() {
    // Accepted before, a failing key was then fetched by every invocation.
    let src = Scripted::new(ms(1));
    let err = builder()
        .add(src.declare("k", "/k").ttl(secs(1)))
        .failure_backoff(Duration::ZERO, Duration::ZERO)
        .load()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::InvalidInput {
                what: "failure backoff",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_name_under_a_path_that_collides_with_a_declared_key_never_fails_a_cold_start() {
    // Anyone who may put a parameter under the path must not be able to fail every new cold
    // start: the declared key wins, as it does at a refresh, and one warning names both.
    let capture = Capture::default();
    let _log = capture.start();
    let mem = MemorySource::new();
    mem.set("/app/flag", "on");
    mem.set("/app/db_url", "planted");
    mem.set("/shared/db_url", "declared");
    let secrets = builder()
        .add(mem.tree("", "/app"))
        .add(mem.value("db_url", "/shared/db_url"))
        .load()
        .await
        .unwrap();
    assert_eq!(secrets.snapshot().expose_str("db_url").unwrap(), "declared");
    assert_eq!(secrets.snapshot().expose_str("flag").unwrap(), "on");
    let log = capture.text();
    let warning: Vec<&str> = log.lines().filter(|l| l.contains("key produced twice")).collect();
    assert_eq!(warning.len(), 1, "{log}");
    assert!(
        warning[0].contains("/shared/db_url") && warning[0].contains("/app"),
        "{log}"
    );
}

#[test]
fn a_load_is_a_span_around_its_calls() {
    let (_, spans) = crate::test_support::traced(async {
        let mem = crate::MemorySource::new();
        mem.set("/a", "1");
        crate::Secrets::builder()
            .add(mem.value("a", "/a"))
            .load()
            .await
            .unwrap()
    });
    let loads = spans.named("lambda_secrets.load");
    assert_eq!(loads.len(), 1);
    assert_eq!(loads[0]["cache"], "declared");
    let call = &spans.named("aws.call")[0];
    assert_eq!(
        call["rpc.system"], "other",
        "a source of no AWS service: {call:?}"
    );
    assert_eq!(call["@parent"], "lambda_secrets.load", "{call:?}");
}

#[test]
fn a_snapstart_reload_is_a_load_span_marked_restore() {
    let ((), spans) = crate::test_support::traced(async {
        let mem = crate::MemorySource::new();
        mem.set("/a", "1");
        let secrets = crate::Secrets::builder()
            .add(mem.value("a", "/a"))
            .load()
            .await
            .unwrap();
        let snapstart = secrets.snapstart();
        snapstart.before_snapshot().await.unwrap();
        snapstart.after_restore().await.unwrap();
        assert_eq!(secrets.snapshot().expose_str("a").unwrap(), "1");
    });
    let loads = spans.named("lambda_secrets.load");
    assert_eq!(loads.len(), 2, "{loads:?}");
    assert!(!loads[0].contains_key("restore"), "the cold load: {loads:?}");
    assert_eq!(loads[1]["restore"], "true", "{loads:?}");
    assert_eq!(loads[1]["cache"], "declared", "{loads:?}");
    let calls = spans.named("aws.call");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls.iter().all(|c| c["@parent"] == "lambda_secrets.load"),
        "the reload's call is under its span: {calls:?}"
    );
}

#[test]
fn a_refresh_is_a_root_span_following_from_the_invocation_that_found_it_due() {
    let ((), spans) = crate::test_support::traced(async {
        let mem = crate::MemorySource::new();
        mem.set("/a", "1");
        let secrets = crate::Secrets::builder()
            .add(mem.value("a", "/a").ttl(Duration::from_secs(60)))
            .ttl_jitter(0.0)
            .load()
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        {
            let _invocation = tracing::info_span!("invocation").entered();
            secrets.snapshot().expose_str("a").unwrap();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(secrets.stats().refreshes, 1);
    });
    let refresh = &spans.named("lambda_secrets.refresh")[0];
    // It outlives the invocation: not its child, but linked to it.
    assert!(!refresh.contains_key("@parent"), "{refresh:?}");
    assert_eq!(refresh["@follows"], "invocation", "{refresh:?}");
    let calls = spans.named("aws.call");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1]["@parent"], "lambda_secrets.refresh", "{calls:?}");
}
