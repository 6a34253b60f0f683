//! SnapStart, end to end: the `lambda_runtime_handler` example (which registers the library's
//! SnapStart hooks) runs as a real function process against a Lambda Runtime API that speaks
//! `restore/next` (`support::runtime_api`), reading SSM from moto through the fault proxy.
//!
//! The Runtime API holds `restore/next` as Lambda holds a snapshotted environment: the test
//! reads the process's memory there (the snapshot point), changes a value in the emulator, kills
//! every connection the function had open (they are dead after a restore), then releases it.
//!
//! Run with `--nocapture` to see where the value's bytes are at the snapshot point.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use support::runtime_api::{Answer, RuntimeApi};
use support::{moto, process_memory, put_param, ssm_client, unique_prefix, FaultProxy};

/// INIT of a debug build on a busy machine, with room to spare.
const INIT: Duration = Duration::from_secs(60);
const INVOKE: Duration = Duration::from_secs(60);

const RUNTIME_EXAMPLE: &str = "lambda_runtime_handler";
const HTTP_EXAMPLE: &str = "lambda_http_handler";

/// The examples' binaries, built with `--all-features` as CI's test command builds them (so a no-op
/// there, where `cargo test` already built them; run alone with fewer features, this builds the
/// library once more, with all of them).
fn example_binary(name: &str) -> PathBuf {
    static BINARIES: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    let binaries = BINARIES.get_or_init(|| {
        let out = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "lambda-secrets", "--all-features"])
            .args(["--example", RUNTIME_EXAMPLE, "--example", HTTP_EXAMPLE])
            .args(["--message-format", "json-render-diagnostics"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("cargo build --example ...");
        assert!(out.status.success(), "building the examples failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|m| {
                let name = m["target"]["name"].as_str()?.to_owned();
                Some((name, PathBuf::from(m["executable"].as_str()?)))
            })
            .collect()
    });
    binaries
        .iter()
        .find(|(built, _)| built == name)
        .map(|(_, path)| path.clone())
        .unwrap_or_else(|| panic!("cargo reported no executable for example {name}"))
}

/// The example as a function process, with its own Runtime API; killed on drop.
struct Function {
    api: RuntimeApi,
    child: Child,
    log: PathBuf,
}

/// How the function's INIT is run.
#[derive(Clone, Copy, PartialEq)]
enum Init {
    /// `AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`: INIT, `before_snapshot`, `restore/next`.
    SnapStart,
    /// An ordinary cold start: INIT, then `invocation/next`.
    OnDemand,
}

impl Function {
    /// The `lambda_runtime_handler` example reading `param` and the values under `config_path`.
    async fn start(tag: &str, init: Init, endpoint: &str, param: &str, config_path: &str) -> Function {
        let env = [
            ("API_KEY_PARAM", param),
            ("CONFIG_PATH", config_path),
            ("SECRETS_TTL", "5m"),
        ];
        Function::start_example(RUNTIME_EXAMPLE, tag, init, endpoint, &env).await
    }

    async fn start_example(
        example: &str,
        tag: &str,
        init: Init,
        endpoint: &str,
        env: &[(&str, &str)],
    ) -> Function {
        let api = RuntimeApi::start().await;
        let log = std::env::temp_dir().join(format!(
            "lambda-secrets-snapstart-{tag}-{}.log",
            std::process::id()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let initialization = match init {
            Init::SnapStart => "snap-start",
            Init::OnDemand => "on-demand",
        };
        let child = Command::new(example_binary(example))
            .env_clear()
            .envs([
                ("AWS_LAMBDA_RUNTIME_API", api.address().as_str()),
                ("AWS_LAMBDA_INITIALIZATION_TYPE", initialization),
                ("AWS_LAMBDA_FUNCTION_NAME", "snapstart-test"),
                ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
                ("AWS_LAMBDA_FUNCTION_VERSION", "1"),
                ("AWS_ENDPOINT_URL", endpoint),
                ("AWS_ACCESS_KEY_ID", "test"),
                ("AWS_SECRET_ACCESS_KEY", "test"),
                ("AWS_REGION", "us-east-1"),
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("starting the example");
        Function { api, child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the function's `GET path` (its INIT done), failing with its log.
    async fn reached(&self, path: &str) {
        if let Err(e) = self.api.wait_for_get(path, INIT).await {
            panic!("{e}\nfunction log:\n{}", self.log());
        }
    }

    async fn invoke(&self, payload: serde_json::Value) -> serde_json::Value {
        match self.api.invoke(payload, INVOKE).await {
            Ok(Answer::Response(body)) => body,
            other => panic!("{other:?}\nfunction log:\n{}", self.log()),
        }
    }

    /// Where the value's bytes are in the process now.
    fn copies_of(&self, value: &str) -> Vec<process_memory::Copy> {
        process_memory::find(self.child.id(), value.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `first_refresh_in_ms` of the function's "loaded again after the SnapStart restore" line.
    fn first_refresh_after_restore(&self) -> Duration {
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("loaded again after the SnapStart restore"))
            .unwrap_or_else(|| panic!("no reload line in:\n{log}"));
        eprintln!("{line}");
        let ms = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("first_refresh_in_ms="))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("no first_refresh_in_ms in: {line}"));
        Duration::from_millis(ms)
    }

    /// Waits for the process to exit; its status code.
    fn exit_code(&mut self, timeout: Duration) -> Option<i32> {
        let start = std::time::Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A value no other memory holds by chance: 40 random alphanumerics.
fn distinctive_value(tag: &str) -> String {
    let random: String = std::iter::repeat_with(fastrand::alphanumeric).take(40).collect();
    format!("{tag}-{random}")
}

/// Parameters of one function: its API key and a config path with two values.
struct Parameters {
    seed: aws_sdk_ssm::Client,
    api_key: String,
    config: String,
}

impl Parameters {
    /// The `lambda_runtime_handler` example reading these parameters through `proxy`.
    async fn function(&self, tag: &str, init: Init, proxy: &FaultProxy) -> Function {
        Function::start(tag, init, &proxy.endpoint(), &self.api_key, &self.config).await
    }
}

async fn parameters(tag: &str, api_key_value: &str) -> Parameters {
    let seed = ssm_client(&moto().endpoint).await;
    let prefix = unique_prefix(tag);
    let api_key = format!("{prefix}/api-key");
    let config = format!("{prefix}/config");
    put_param(&seed, &api_key, api_key_value, "SecureString").await;
    put_param(&seed, &format!("{config}/region"), "eu-west-1", "String").await;
    put_param(&seed, &format!("{config}/timeout"), "30", "String").await;
    Parameters {
        seed,
        api_key,
        config,
    }
}

/// Whether a copy is inside an SSM response body (`"Value": "..."`): a buffer of the AWS SDK or
/// hyper, freed without zeroizing, which the library cannot reach. Every other copy is one a
/// value of the library's kept.
fn in_aws_response(copy: &process_memory::Copy) -> bool {
    copy.context.contains("\"Value\": \"<value>") || copy.context.contains("\"Value\":\"<value>")
}

/// Prints where the copies are; returns how many are outside an AWS response.
fn report(label: &str, copies: &[process_memory::Copy]) -> usize {
    let held = copies.iter().filter(|c| !in_aws_response(c)).count();
    eprintln!(
        "{label}: {} copies ({held} held by the library, {} in AWS SDK response buffers)",
        copies.len(),
        copies.len() - held
    );
    for copy in copies {
        eprintln!("  {:#x} in {}: {}", copy.address, copy.mapping, copy.context);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_serves_the_value_changed_while_the_snapshot_waited_and_the_snapshot_holds_no_copy_of_the_store(
) {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let before = distinctive_value("v1");
    let params = parameters("snapstart", &before).await;

    // Without the hooks, the snapshot is the memory at the end of INIT: measured on an ordinary
    // cold start where it asks for its first invocation.
    let plain = params.function("plain", Init::OnDemand, &proxy).await;
    plain.reached("invocation/next").await;
    let without_hooks = plain.copies_of(&before);
    drop(plain);

    let function = params.function("snap", Init::SnapStart, &proxy).await;
    function.reached("restore/next").await;
    // The snapshot point: INIT is done, `before_snapshot` has run.
    let with_hooks = function.copies_of(&before);
    let held_without = report("at the end of INIT, without SnapStart hooks", &without_hooks);
    let held_with = report("at the snapshot point, with the hooks", &with_hooks);
    assert!(
        held_without >= 1,
        "the scan finds the value the store holds (else it could not show it gone): {without_hooks:#?}"
    );
    assert_eq!(
        held_with, 0,
        "the library still holds the value at the snapshot point: {with_hooks:#?}"
    );

    // The environment waits (for days): the value rotates, and the connections it had die.
    let after = distinctive_value("v2-rotated"); // another length than the INIT's value
    assert_eq!(
        put_param(&params.seed, &params.api_key, &after, "SecureString").await,
        2
    );
    proxy.kill_open_connections();
    proxy.reset_counts();
    function.api.release_restore();

    let first = function.invoke(serde_json::json!({"name": "restored"})).await;
    assert_eq!(first["api_key_version"], "2", "{first}");
    assert_eq!(first["api_key_length"], after.len(), "{first}");
    assert_eq!(
        first["config_keys"],
        serde_json::json!(["config/region", "config/timeout"]),
        "{first}"
    );
    assert_eq!(first["echo"], "restored");
    assert_eq!(function.api.restore_error(), None);
    // The reload went through the cold load's batched path (`GetParameters` and
    // `GetParametersByPath`, no call per name), retried on new connections where its pooled ones
    // were dead.
    assert!(proxy.unanswered() > 0, "the reload met the dead connections");
    let calls = proxy.forwarded_all();
    assert!(
        calls.contains_key("GetParameters") && calls.contains_key("GetParametersByPath"),
        "{calls:?}"
    );
    assert!(!calls.contains_key("GetParameter"), "{calls:?}");
    let requests = function.api.requests();
    let restore = requests.iter().position(|r| r.ends_with("/restore/next"));
    let next = requests.iter().position(|r| r.ends_with("/invocation/next"));
    assert!(restore.is_some() && restore < next, "{requests:?}");

    let log = function.log();
    assert!(
        !log.contains(&before) && !log.contains(&after),
        "a value reached the function's log:\n{log}"
    );
    let due = function.first_refresh_after_restore();
    assert!(due > Duration::ZERO && due <= Duration::from_secs(300), "{due:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_environments_draw_their_own_refresh_phases() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let params = parameters("snapstart-phases", &distinctive_value("v")).await;
    let mut phases = Vec::new();
    for n in 0..3 {
        let function = params
            .function(&format!("phase-{n}"), Init::SnapStart, &proxy)
            .await;
        function.reached("restore/next").await;
        function.api.release_restore();
        let answer = function.invoke(serde_json::json!({})).await;
        assert_eq!(answer["api_key_version"], "1", "{answer}");
        phases.push(function.first_refresh_after_restore());
    }
    eprintln!("first refresh after each restore (TTL 5 min): {phases:?}");
    // Three processes start from three generator states, so this does not show the reseed (the unit
    // tests restore one state twice: `src/random.rs`, `src/snapstart.rs`). It shows that each
    // restore draws a phase: with none (every value due one TTL after the restore) they would be
    // within milliseconds of each other. Drawn, three phases spread over minutes are all within one
    // second with a probability of about 1e-4.
    let spread = phases
        .iter()
        .max()
        .unwrap()
        .saturating_sub(*phases.iter().min().unwrap());
    assert!(spread > Duration::from_secs(1), "{phases:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_deleted_while_the_snapshot_waited_fails_the_restore_naming_it() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let params = parameters("snapstart-deleted", &distinctive_value("v")).await;
    let mut function = params.function("deleted", Init::SnapStart, &proxy).await;
    function.reached("restore/next").await;
    params
        .seed
        .delete_parameter()
        .name(&params.api_key)
        .send()
        .await
        .unwrap();
    function.api.release_restore();

    let error = function
        .api
        .wait_for_restore_error(INIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", function.log()));
    let expected = format!("key `api_key` (ssm `{}`): not found", params.api_key);
    assert!(error.contains(&expected), "{error}");
    // Like a failed INIT: the function exits, and never asks for an invocation.
    let code = tokio::task::block_in_place(|| function.exit_code(INIT));
    assert!(matches!(code, Some(c) if c != 0), "{code:?}\n{}", function.log());
    assert!(
        !function
            .api
            .requests()
            .iter()
            .any(|r| r.ends_with("/invocation/next")),
        "{:?}",
        function.api.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hooks_registered_with_lambda_http_reload_too() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let seed = ssm_client(&moto().endpoint).await;
    let param = format!("{}/upstream-token", unique_prefix("snapstart-http"));
    put_param(&seed, &param, "token-at-init", "SecureString").await;
    let env = [("UPSTREAM_TOKEN_PARAM", param.as_str())];
    let function =
        Function::start_example(HTTP_EXAMPLE, "http", Init::SnapStart, &proxy.endpoint(), &env).await;
    function.reached("restore/next").await;
    put_param(
        &seed,
        &param,
        "token-rotated-while-the-snapshot-waited",
        "SecureString",
    )
    .await;
    function.api.release_restore();

    // An API Gateway HTTP API (payload 2.0) request.
    let request = serde_json::json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
        "headers": {"host": "example.execute-api.us-east-1.amazonaws.com"},
        "isBase64Encoded": false,
        "requestContext": {
            "accountId": "123456789012", "apiId": "example", "domainName": "example.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "example", "requestId": "snapstart-http", "routeKey": "$default", "stage": "$default",
            "time": "04/Dec/2026:22:00:00 +0000", "timeEpoch": 1796421600000u64,
            "http": {"method": "GET", "path": "/", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "test"}
        }
    });
    let answer = function.invoke(request).await;
    assert_eq!(answer["statusCode"], 200, "{answer}");
    let body: serde_json::Value = serde_json::from_str(answer["body"].as_str().unwrap_or_default())
        .unwrap_or_else(|_| panic!("{answer}"));
    assert_eq!(
        body["token_bytes"],
        "token-rotated-while-the-snapshot-waited".len(),
        "the value read during INIT was served: {answer}"
    );
}

/// Whether a copy of a credential is in one of the SDK's HTTP buffers, freed without zeroizing:
/// the STS answer it came in, or (the session token, which every signed request carries in the
/// clear and which signs nothing) a request's headers or the canonical request SigV4 signed.
fn in_sdk_http_buffer(copy: &process_memory::Copy) -> bool {
    copy.context.contains("Key><value></")
        || copy.context.contains("Token><value></")
        || copy.context.contains("x-amz-security-token: <value>")
        || copy.context.contains("x-amz-security-token:<value>")
}

/// Copies of an assumed role's secret key or session token that the library could hold (outside
/// [`in_sdk_http_buffer`]).
fn held_credentials(function: &Function, proxy: &FaultProxy, label: &str) -> usize {
    let secrets: Vec<String> = ["SecretAccessKey", "SessionToken"]
        .iter()
        .flat_map(|tag| proxy.xml_fields("/", tag))
        .collect();
    assert!(!secrets.is_empty(), "no STS answer seen: {:?}", proxy.calls_all());
    secrets
        .iter()
        .map(|secret| {
            let copies = function.copies_of(secret);
            let held = copies.iter().filter(|c| !in_sdk_http_buffer(c)).count();
            eprintln!(
                "{label}: {} copies ({held} outside the SDK's HTTP buffers)",
                copies.len()
            );
            for copy in &copies {
                eprintln!("  {:#x} in {}: {}", copy.address, copy.mapping, copy.context);
            }
            held
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assumed_role_s_credentials_are_not_in_the_snapshot_and_a_restore_assumes_it_again() {
    support::init_tracing();
    let role = "arn:aws:iam::222222222222:role/snapstart-reader";
    let base = support::sdk_config(&moto().endpoint).await;
    let provider = aws_config::sts::AssumeRoleProvider::builder(role)
        .configure(&base)
        .session_name("seed")
        .build()
        .await;
    let seed = aws_sdk_ssm::Client::new(
        &base
            .to_builder()
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
                provider,
            ))
            .build(),
    );
    let prefix = unique_prefix("snapstart-role");
    let param = format!("{prefix}/api-key");
    put_param(&seed, &param, &distinctive_value("in-222"), "SecureString").await;
    let config = format!("{prefix}/config");
    put_param(&seed, &format!("{config}/region"), "eu-west-1", "String").await;
    let env = [
        ("API_KEY_PARAM", param.as_str()),
        ("CONFIG_PATH", config.as_str()),
        ("ASSUME_ROLE_ARN", role),
    ];

    // Without the hooks the assumed credentials are held at the end of INIT (the scan can see
    // them); with them, the snapshot holds none.
    let proxy = FaultProxy::start(&moto().endpoint).await;
    proxy.record_responses("/");
    let plain = Function::start_example(
        RUNTIME_EXAMPLE,
        "role-plain",
        Init::OnDemand,
        &proxy.endpoint(),
        &env,
    )
    .await;
    plain.reached("invocation/next").await;
    let held_without = held_credentials(&plain, &proxy, "assumed credentials, end of INIT, no hooks");
    drop(plain);
    assert!(
        held_without >= 1,
        "the scan finds the credentials the source holds"
    );

    let proxy = FaultProxy::start(&moto().endpoint).await;
    proxy.record_responses("/");
    let function = Function::start_example(
        RUNTIME_EXAMPLE,
        "role-snap",
        Init::SnapStart,
        &proxy.endpoint(),
        &env,
    )
    .await;
    function.reached("restore/next").await;
    assert_eq!(proxy.calls("/"), 1, "the role was assumed once in INIT");
    let held_with = held_credentials(&function, &proxy, "assumed credentials, snapshot point");
    assert_eq!(held_with, 0, "the snapshot holds assumed credentials");

    // Restored (days later): its connections are dead, the role is assumed afresh, within the
    // first attempt's short timeout however the dead connections answer.
    proxy.kill_open_connections();
    proxy.reset_counts();
    function.api.release_restore();
    let answer = function.invoke(serde_json::json!({})).await;
    assert_eq!(answer["api_key_version"], "1", "{answer}");
    assert_eq!(function.api.restore_error(), None);
    assert!(
        proxy.forwarded("/") >= 1,
        "assumed again after the restore: {:?}",
        proxy.calls_all()
    );
    assert!(proxy.unanswered() > 0, "the restore met the dead connections");
    assert!(proxy.forwarded("GetParameters") >= 1, "{:?}", proxy.calls_all());
}
