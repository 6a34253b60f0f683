//! Self-test of `tests/support`: the moto server, the SDK config helpers and
//! the fault-injecting proxy. Also records how moto answers the SSM calls the
//! crate relies on (run with `--nocapture` to see the report).

mod support;

use std::time::{Duration, Instant};

use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use support::{moto, put_param, ssm_client, ssm_client_no_retries, unique_prefix, FaultProxy};

/// A proxy in front of the shared moto, a retry-less client through it, and a
/// seeding client straight to moto.
async fn setup() -> (FaultProxy, aws_sdk_ssm::Client, aws_sdk_ssm::Client) {
    support::init_tracing();
    let moto = moto();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let client = ssm_client_no_retries(&proxy.endpoint()).await;
    let seed = ssm_client(&moto.endpoint).await;
    (proxy, client, seed)
}

fn status_of<E>(err: &SdkError<E, aws_sdk_ssm::config::http::HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

#[tokio::test]
async fn moto_state_is_reachable_through_the_proxy() {
    let (proxy, client, seed) = setup().await;
    let name = format!("{}/db/password", unique_prefix("reach"));
    let version = put_param(&seed, &name, "hunter2", "SecureString").await;
    assert_eq!(version, 1);
    assert_eq!(put_param(&seed, &name, "hunter3", "SecureString").await, 2);

    let out = client
        .get_parameter()
        .name(&name)
        .with_decryption(true)
        .send()
        .await
        .expect("GetParameter through the proxy");
    let p = out.parameter().expect("parameter");
    assert_eq!(p.value(), Some("hunter3"));
    assert_eq!(p.version(), 2);
    assert_eq!(proxy.calls("GetParameter"), 1);
    assert_eq!(proxy.forwarded("GetParameter"), 1);
    // Seeding went straight to moto.
    assert_eq!(proxy.calls("PutParameter"), 0);
}

#[tokio::test]
async fn counts_per_operation() {
    let (proxy, client, seed) = setup().await;
    let prefix = unique_prefix("counts");
    let a = format!("{prefix}/a");
    let b = format!("{prefix}/b");
    put_param(&seed, &a, "1", "String").await;
    put_param(&seed, &b, "2", "String").await;

    for _ in 0..2 {
        client.get_parameter().name(&a).send().await.unwrap();
    }
    let out = client.get_parameters().names(&a).names(&b).send().await.unwrap();
    assert_eq!(out.parameters().len(), 2);
    client
        .get_parameters_by_path()
        .path(&prefix)
        .send()
        .await
        .unwrap();

    assert_eq!(proxy.calls("GetParameter"), 2);
    assert_eq!(proxy.calls("GetParameters"), 1);
    assert_eq!(proxy.calls("GetParametersByPath"), 1);
    assert_eq!(proxy.forwarded("GetParameter"), 2);
    assert_eq!(proxy.forwarded("GetParameters"), 1);
    let all = proxy.calls_all();
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(all.values().sum::<u64>(), 4);
    assert_eq!(proxy.throttled(), 0);
    let times = proxy.request_times();
    assert_eq!(times.len(), 4);
    assert!(times.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(times[2].1, "GetParameters");
    assert!(proxy.peak_in_any_1s_window() >= 1);

    proxy.reset_counts();
    assert_eq!(proxy.calls("GetParameter"), 0);
    assert!(proxy.calls_all().is_empty());
    assert!(proxy.request_times().is_empty());
    assert_eq!(proxy.peak_in_any_1s_window(), 0);
}

#[tokio::test]
async fn fail_next_gives_one_server_error_then_success() {
    let (proxy, client, seed) = setup().await;
    let name = format!("{}/p", unique_prefix("fail"));
    put_param(&seed, &name, "v", "String").await;

    proxy.fail_next(1, 500);
    let err = client.get_parameter().name(&name).send().await.unwrap_err();
    assert_eq!(status_of(&err), Some(500), "{err:?}");
    let service = err.as_service_error().expect("a service error");
    assert_eq!(service.code(), Some("InternalServerError"));
    assert_eq!(service.message(), Some("injected"));
    client.get_parameter().name(&name).send().await.unwrap();

    proxy.fail_next(1, 503);
    let err = client.get_parameter().name(&name).send().await.unwrap_err();
    assert_eq!(status_of(&err), Some(503));
    assert_eq!(err.code(), Some("ServiceUnavailable"));
    client.get_parameter().name(&name).send().await.unwrap();

    assert_eq!(proxy.calls("GetParameter"), 4);
    assert_eq!(proxy.forwarded("GetParameter"), 2);

    proxy.fail_all(Some(500));
    for _ in 0..3 {
        let err = client.get_parameter().name(&name).send().await.unwrap_err();
        assert_eq!(status_of(&err), Some(500));
    }
    proxy.fail_all(None);
    client.get_parameter().name(&name).send().await.unwrap();
    assert_eq!(proxy.forwarded("GetParameter"), 3);
}

#[tokio::test]
async fn throttle_rejects_over_quota_like_ssm() {
    let (proxy, client, seed) = setup().await;
    let name = format!("{}/p", unique_prefix("throttle"));
    put_param(&seed, &name, "v", "String").await;

    proxy.throttle_tps(Some(2));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let client = client.clone();
        let name = name.clone();
        set.spawn(async move { client.get_parameters().names(name).send().await });
    }
    let mut ok = 0;
    let mut throttled = 0;
    while let Some(res) = set.join_next().await {
        match res.unwrap() {
            Ok(_) => ok += 1,
            Err(err) => {
                assert_eq!(status_of(&err), Some(400), "{err:?}");
                assert_eq!(err.code(), Some("ThrottlingException"), "{err:?}");
                assert_eq!(err.message(), Some("Rate exceeded"));
                throttled += 1;
            }
        }
    }
    assert_eq!((ok, throttled), (2, 3));
    assert_eq!(proxy.throttled(), 3);
    assert_eq!(proxy.calls("GetParameters"), 5);
    assert_eq!(proxy.forwarded("GetParameters"), 2);
    assert_eq!(proxy.peak_in_any_1s_window(), 5);

    // The quota frees up once the window has passed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client.get_parameters().names(&name).send().await.unwrap();
    proxy.throttle_tps(None);
    for _ in 0..4 {
        client.get_parameters().names(&name).send().await.unwrap();
    }
    assert_eq!(proxy.throttled(), 3);
}

#[tokio::test]
async fn deny_gives_access_denied_for_matching_bodies_only() {
    let (proxy, client, seed) = setup().await;
    let prefix = unique_prefix("deny");
    let open = format!("{prefix}/open");
    let secret = format!("{prefix}/secret");
    put_param(&seed, &open, "o", "String").await;
    put_param(&seed, &secret, "s", "SecureString").await;

    proxy.deny("GetParameters", &secret);
    let err = client
        .get_parameters()
        .names(&open)
        .names(&secret)
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(400));
    assert_eq!(err.code(), Some("AccessDeniedException"));
    let message = err.message().unwrap_or_default().to_string();
    assert!(
        message.contains(&format!(
            "ssm:GetParameters on resource: arn:aws:ssm:us-east-1:123456789012:parameter{secret}"
        )),
        "{message}"
    );

    // Other names, and other operations, pass.
    client.get_parameters().names(&open).send().await.unwrap();
    client.get_parameter().name(&secret).send().await.unwrap();

    proxy.clear_denies();
    client
        .get_parameters()
        .names(&open)
        .names(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(proxy.calls("GetParameters"), 3);
    assert_eq!(proxy.forwarded("GetParameters"), 2);
}

#[tokio::test]
async fn latency_is_applied() {
    let (proxy, client, seed) = setup().await;
    let name = format!("{}/p", unique_prefix("latency"));
    put_param(&seed, &name, "v", "String").await;

    proxy.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    client.get_parameter().name(&name).send().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Injected answers are delayed too.
    proxy.fail_next(1, 500);
    let started = Instant::now();
    client.get_parameter().name(&name).send().await.unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn dropped_connection_is_a_dispatch_failure() {
    let (proxy, client, seed) = setup().await;
    let name = format!("{}/p", unique_prefix("drop"));
    put_param(&seed, &name, "v", "String").await;

    proxy.drop_connections_next(1);
    let err = client.get_parameter().name(&name).send().await.unwrap_err();
    assert!(
        matches!(err, SdkError::DispatchFailure(_)),
        "expected a dispatch failure, got {err:?}"
    );
    assert_eq!(proxy.dropped(), 1);
    client.get_parameter().name(&name).send().await.unwrap();
    assert_eq!(proxy.calls("GetParameter"), 2);
    assert_eq!(proxy.forwarded("GetParameter"), 1);
}

#[tokio::test]
async fn a_killed_connection_never_answers_and_a_new_one_does() {
    let (proxy, client, seed) = setup().await;
    let name = format!("{}/p", unique_prefix("killed"));
    put_param(&seed, &name, "v", "String").await;
    client.get_parameter().name(&name).send().await.unwrap(); // its connection is pooled

    proxy.kill_open_connections();
    let on_the_pooled_one = tokio::spawn({
        let (client, name) = (client.clone(), name.clone());
        async move { client.get_parameter().name(&name).send().await }
    });
    // The proxy has the request (however busy the machine), and does not answer it.
    let arrived = Instant::now();
    while proxy.unanswered() == 0 && arrived.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.unanswered(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !on_the_pooled_one.is_finished(),
        "a request on a dead connection got an answer"
    );
    on_the_pooled_one.abort();
    // The abandoned connection is not reused: the next request opens a new one, which works.
    client.get_parameter().name(&name).send().await.unwrap();
    assert_eq!(proxy.forwarded("GetParameter"), 2);
    assert_eq!(proxy.unanswered(), 1);
}

#[tokio::test]
async fn retrying_client_recovers_from_injected_faults() {
    let (proxy, _, seed) = setup().await;
    let name = format!("{}/p", unique_prefix("retry"));
    put_param(&seed, &name, "v", "String").await;

    // The default (standard) retry policy: 3 attempts.
    let client = ssm_client(&proxy.endpoint()).await;
    proxy.fail_next(2, 503);
    client.get_parameter().name(&name).send().await.unwrap();
    assert_eq!(proxy.calls("GetParameter"), 3);
    assert_eq!(proxy.forwarded("GetParameter"), 1);
}

#[test]
fn private_moto_reset_wipes_state() {
    let moto = support::Moto::start();
    assert_ne!(moto.endpoint, support::moto().endpoint);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = ssm_client(&moto.endpoint).await;
        put_param(&client, "/reset/me", "v", "String").await;
        client.get_parameter().name("/reset/me").send().await.unwrap();
        moto.reset();
        let err = client.get_parameter().name("/reset/me").send().await.unwrap_err();
        assert_eq!(err.code(), Some("ParameterNotFound"));
    });
}

/// Records moto's answers to the calls the crate makes. Run with
/// `cargo test --test support_selftest moto_behaviour -- --nocapture`.
///
/// Seen with moto 5.2.1 (real SSM differs where marked *):
/// * GetParameters with an ARN name: the ARN lands in `InvalidParameters`*
///   (GetParameter with an ARN works and returns the plain name).
/// * `name:1` / `name:label`: `Name` is the plain name, `Selector` is absent*,
///   `Version` is the selected version, `ARN` is the plain ARN.
/// * Missing or unknown selectors: the requested string, selector included,
///   is returned in `InvalidParameters`.
/// * The same name twice in one call is returned once; `name` and `name:1`
///   are both returned.
/// * More than 10 names: `ValidationException`.
/// * StringList: `"a,b,c"` as stored. SecureString without decryption:
///   `"kms:alias/aws/ssm:<plaintext>"`*; with decryption: the plaintext.
/// * GetParametersByPath, 25 parameters, `max_results(10)`: pages 10, 10, 5.
#[tokio::test]
async fn moto_behaviour_report() {
    let (_proxy, _, seed) = setup().await;
    let prefix = unique_prefix("probe");
    let name = format!("{prefix}/x/y");
    put_param(&seed, &name, "v1", "String").await;
    put_param(&seed, &name, "v2", "String").await;
    support::label_param(&seed, &name, 1, "blue").await;
    let arn = format!("arn:aws:ssm:us-east-1:123456789012:parameter{name}");

    let cases = [
        ("ARN name", arn.clone()),
        ("version selector", format!("{name}:1")),
        ("label selector", format!("{name}:blue")),
        ("missing name with selector", format!("{prefix}/missing:1")),
        ("unknown label", format!("{name}:green")),
        ("unknown version", format!("{name}:9")),
    ];
    for (what, query) in &cases {
        match seed.get_parameters().names(query).send().await {
            Ok(out) => {
                println!("GetParameters [{what}] {query:?}");
                for p in out.parameters() {
                    println!(
                        "  parameter: name={:?} selector={:?} version={} arn={:?} value={:?}",
                        p.name(),
                        p.selector(),
                        p.version(),
                        p.arn(),
                        p.value()
                    );
                }
                println!("  invalid_parameters={:?}", out.invalid_parameters());
            }
            Err(e) => println!("GetParameters [{what}] {query:?} -> error {e:?}"),
        }
    }

    for (what, query) in &cases[..3] {
        match seed.get_parameter().name(query).send().await {
            Ok(out) => {
                let p = out.parameter().unwrap();
                println!(
                    "GetParameter [{what}]: name={:?} selector={:?} version={} arn={:?} value={:?}",
                    p.name(),
                    p.selector(),
                    p.version(),
                    p.arn(),
                    p.value()
                );
            }
            Err(e) => println!(
                "GetParameter [{what}] -> error code={:?} message={:?}",
                e.code(),
                e.message()
            ),
        }
    }

    // The same parameter twice (plain and with selector) in one call.
    let out = seed
        .get_parameters()
        .names(&name)
        .names(format!("{name}:1"))
        .names(&name)
        .send()
        .await
        .unwrap();
    println!(
        "GetParameters [plain + :1 + plain again]: {:?} invalid={:?}",
        out.parameters()
            .iter()
            .map(|p| (p.name(), p.selector(), p.version(), p.value()))
            .collect::<Vec<_>>(),
        out.invalid_parameters()
    );

    // More than 10 names in one call.
    let mut many = seed.get_parameters();
    for i in 0..11 {
        many = many.names(format!("{prefix}/many{i}"));
    }
    match many.send().await {
        Ok(out) => println!(
            "GetParameters [11 names] -> ok, invalid={}",
            out.invalid_parameters().len()
        ),
        Err(e) => println!(
            "GetParameters [11 names] -> error code={:?} message={:?}",
            e.code(),
            e.message()
        ),
    }

    let list = format!("{prefix}/list");
    put_param(&seed, &list, "a,b,c", "StringList").await;
    let out = seed.get_parameters().names(&list).send().await.unwrap();
    let p = &out.parameters()[0];
    assert_eq!(p.value(), Some("a,b,c"));
    println!("StringList: type={:?} value={:?}", p.r#type(), p.value());

    let secure = format!("{prefix}/secure");
    put_param(&seed, &secure, "s3cret", "SecureString").await;
    for decrypt in [true, false] {
        let out = seed
            .get_parameters()
            .names(&secure)
            .with_decryption(decrypt)
            .send()
            .await
            .unwrap();
        let value = out.parameters()[0].value().unwrap_or_default();
        println!("SecureString with_decryption({decrypt}): value={value:?}");
        if decrypt {
            assert_eq!(value, "s3cret");
        }
    }

    let bulk = format!("{prefix}/bulk");
    for i in 0..25 {
        put_param(&seed, &format!("{bulk}/p{i:02}"), "x", "String").await;
    }
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = seed
            .get_parameters_by_path()
            .path(&bulk)
            .max_results(10)
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        pages.push(out.parameters().len());
        token = out.next_token().map(str::to_string);
        if token.is_none() || pages.len() > 20 {
            break;
        }
    }
    println!("GetParametersByPath max_results=10 over 25: page sizes {pages:?}");
    assert_eq!(pages.iter().sum::<usize>(), 25);
}
