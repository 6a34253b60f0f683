//! Shared support code for the integration tests.
//!
//! * [`moto()`] — one local moto server per test process (started lazily).
//! * [`sdk_config`] / [`ssm_client`] — AWS SDK configuration that talks to a
//!   local endpoint with static test credentials and never reads the
//!   machine's AWS environment or profile files.
//! * [`put_param`] / [`label_param`] — seeding helpers (talk straight to moto).
//! * [`FaultProxy`] — an HTTP/1.1 reverse proxy in front of moto that counts
//!   calls per AWS operation and injects latency, errors, throttling, access
//!   denials and dropped connections.
//! * [`runtime_api::RuntimeApi`] — the Lambda Runtime API (SnapStart's `restore/next` included)
//!   for a function process under test; [`process_memory`] — where a value's bytes are in that
//!   process's memory.
//!
//! All tests in one test binary share the same moto server, so every test
//! should use its own parameter names (see [`unique_prefix`]).

// Every test file compiles this module separately and uses only part of it.
#![allow(dead_code)]

mod appconfig;
pub mod boto3;
pub mod iam_simulate;
mod moto;
pub mod powertools;
pub mod process_memory;
mod proxy;
pub mod runtime_api;

use std::sync::atomic::{AtomicU64, Ordering};

use aws_config::BehaviorVersion;
use aws_sdk_ssm::config::retry::RetryConfig;
use aws_sdk_ssm::config::{Credentials, Region};
use aws_sdk_ssm::types::ParameterType;
use aws_types::SdkConfig;

// Not every test file uses every re-export.
#[allow(unused_imports)]
pub use self::moto::{ensure_moto_installed, moto, Moto};
#[allow(unused_imports)]
pub use self::proxy::FaultProxy;

/// Region used by every test client.
pub const REGION: &str = "us-east-1";
/// Account id moto uses for everything.
pub const ACCOUNT_ID: &str = "123456789012";

/// An [`SdkConfig`] for a local endpoint: region `us-east-1`, static
/// credentials `test`/`test`, and `endpoint_url` set to `endpoint`.
///
/// The host environment is ignored (an empty environment is used for config
/// resolution, so no `AWS_*` variables and — with no `HOME` — no profile
/// files are read).
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .empty_test_environment()
        .region(Region::from_static(REGION))
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "lambda-secrets-tests",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// An SSM client for `endpoint` with the SDK's default (standard) retries.
///
/// For seeding, pass `moto().endpoint` so requests bypass any [`FaultProxy`].
pub async fn ssm_client(endpoint: &str) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(&sdk_config(endpoint).await)
}

/// An SSM client for `endpoint` with retries disabled, so every fault the
/// proxy injects is seen as-is.
pub async fn ssm_client_no_retries(endpoint: &str) -> aws_sdk_ssm::Client {
    let conf = aws_sdk_ssm::config::Builder::from(&sdk_config(endpoint).await)
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

/// `PutParameter` with `overwrite = true`. `kind` is `"String"`,
/// `"SecureString"` or `"StringList"`. Panics on failure.
/// Returns the new version of the parameter.
pub async fn put_param(client: &aws_sdk_ssm::Client, name: &str, value: &str, kind: &str) -> i64 {
    let kind = match kind {
        "String" => ParameterType::String,
        "SecureString" => ParameterType::SecureString,
        "StringList" => ParameterType::StringList,
        other => panic!("put_param: unknown parameter type {other:?}"),
    };
    let out = client
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(kind)
        .overwrite(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("put_param({name:?}) failed: {e:?}"));
    out.version()
}

/// `LabelParameterVersion`: attaches `label` to `version` of `name`.
/// Panics on failure or if moto reports the label as invalid.
pub async fn label_param(client: &aws_sdk_ssm::Client, name: &str, version: i64, label: &str) {
    let out = client
        .label_parameter_version()
        .name(name)
        .parameter_version(version)
        .labels(label)
        .send()
        .await
        .unwrap_or_else(|e| panic!("label_param({name:?}, {version}, {label:?}) failed: {e:?}"));
    assert!(
        out.invalid_labels().is_empty(),
        "label_param({name:?}, {version}, {label:?}): invalid labels {:?}",
        out.invalid_labels()
    );
}

/// A parameter-name prefix unique within this test process, e.g.
/// `/lst/counts-4242-7`. The moto server is shared by all tests of a binary,
/// so tests that run in parallel must not reuse names.
pub fn unique_prefix(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("/lst/{tag}-{}-{n}", std::process::id())
}

/// Installs a `tracing` subscriber writing through the test harness' capture
/// (filter from `RUST_LOG`, default `warn`). Safe to call many times.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Reads through `secrets` until `cond` holds (refreshes are started by reads), for up to 10 s.
pub async fn eventually(
    secrets: &lambda_secrets::Secrets,
    cond: impl Fn(&lambda_secrets::Snapshot) -> bool,
) -> bool {
    for _ in 0..500 {
        if cond(&secrets.snapshot()) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

/// Runs `python3 -c script args...` (with `env`), `input` as JSON on its stdin, and reads its
/// stdout as JSON; panics naming `what` if it fails. The reference implementations' runner
/// (boto3, Powertools).
pub fn python_json<T: serde::de::DeserializeOwned>(
    what: &str,
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
    input: &impl serde::Serialize,
) -> T {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}'s answer is not the JSON expected: {e}"))
}

/// Accepts connections on `listener` until the task running it is dropped or aborted, and serves
/// each on a task of its own (`serve(stream)`); those tasks end with it. The test servers' loop
/// (fault proxy, Runtime API).
pub async fn accept_loop<F, Fut>(listener: tokio::net::TcpListener, mut serve: F)
where
    F: FnMut(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve(stream));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A `tracing` writer into a shared buffer: `tracing_subscriber::fmt().with_writer(move || c.clone())`.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Captures this thread's `tracing` events up to `level` until the guard is dropped.
    pub fn install(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
        // With one subscriber alive, tracing computes a callsite's interest from the default of
        // the thread that first hits it (another test's, with none): a second, idle subscriber
        // kept alive makes it ask every live one.
        static IDLE: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        IDLE.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        tracing::callsite::rebuild_interest_cache();
        (captured, guard)
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
