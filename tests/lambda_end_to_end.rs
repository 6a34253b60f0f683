//! The `lambda_runtime_handler` and `multi_tenant` examples run as real function binaries under
//! cargo-lambda's local Lambda Runtime API (`cargo lambda watch`), reading from the moto emulator.
//!
//! Needs `cargo lambda` (installed here with `pip install cargo-lambda` when missing).

mod support;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{moto, put_param, ssm_client, unique_prefix};

fn ensure_cargo_lambda() {
    let ok = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok(Command::new("cargo").args(["lambda", "--version"])) {
        return;
    }
    eprintln!("cargo-lambda not found: installing it with `python3 -m pip install cargo-lambda`");
    assert!(
        ok(Command::new("python3").args(["-m", "pip", "install", "--quiet", "cargo-lambda"])),
        "could not install cargo-lambda with pip"
    );
    assert!(
        ok(Command::new("cargo").args(["lambda", "--version"])),
        "cargo lambda still not runnable"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `cargo lambda watch` in its own process group, killed (with the function) on drop.
struct Watch {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Watch {
    fn start(tag: &str, example: &str, env: &[(&str, &str)]) -> Watch {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let log = std::env::temp_dir().join(format!("lambda-secrets-e2e-{tag}-{}.log", std::process::id()));
        let file = std::fs::File::create(&log).unwrap();
        let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut cmd = Command::new("cargo");
        cmd.args(["lambda", "watch", "--quiet", "--ignore-changes", "--all-features"])
            .args(["--example", example])
            .args([
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &port.to_string(),
            ])
            .args(["--env-var", &vars.join(",")])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let watch = Watch {
            child: cmd.spawn().expect("cargo lambda watch"),
            port,
            log,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "cargo lambda watch did not start:\n{}",
                watch.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        watch
    }

    /// `cargo lambda invoke`; the first one compiles the function, so it may take a while.
    fn invoke(&self, payload: &str, timeout: Duration) -> Result<serde_json::Value, String> {
        let mut child = Command::new("cargo")
            .args([
                "lambda",
                "invoke",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
            ])
            .arg(self.port.to_string())
            .args(["--data-ascii", payload])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (mut out, mut err) = (String::new(), String::new());
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        serde_json::from_str(out.trim()).map_err(|_| format!("stdout: {out}\nstderr: {err}"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        std::thread::sleep(Duration::from_millis(200));
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn aws_env<'a>(endpoint: &'a str, param: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("API_KEY_PARAM", param),
        ("SECRETS_TTL", "1s"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_serves_a_rotated_value_and_fails_init_on_a_missing_one() {
    ensure_cargo_lambda();
    let moto = moto();
    let seed = ssm_client(&moto.endpoint).await;
    let prefix = unique_prefix("e2e");
    let param = format!("{prefix}/api-key");
    put_param(&seed, &param, "0123456789", "SecureString").await;

    let watch = Watch::start("ok", "lambda_runtime_handler", &aws_env(&moto.endpoint, &param));
    let first = tokio::task::block_in_place(|| watch.invoke(r#"{"name":"e2e"}"#, Duration::from_secs(600)))
        .unwrap_or_else(|e| panic!("{e}\n{}", watch.log()));
    assert_eq!(first["api_key_length"], 10, "{first}");
    assert_eq!(first["api_key_version"], "1", "{first}");
    assert_eq!(first["echo"], "e2e");

    put_param(&seed, &param, "0123456789-rotated", "SecureString").await;
    let mut seen = Vec::new();
    let rotated = tokio::task::block_in_place(|| {
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(300));
            let out = watch
                .invoke("{}", Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{e}\n{}", watch.log()));
            seen.push(out.clone());
            if out["api_key_version"] == "2" {
                return Some(out);
            }
        }
        None
    })
    .unwrap_or_else(|| panic!("rotation not picked up: {seen:?}\n{}", watch.log()));
    assert_eq!(rotated["api_key_length"], 18);
    let log = watch.log();
    assert!(
        !log.contains("0123456789"),
        "a value reached the function's output: {log}"
    );
    drop(watch);

    let missing = format!("{prefix}/not-there");
    let watch = Watch::start(
        "missing",
        "lambda_runtime_handler",
        &aws_env(&moto.endpoint, &missing),
    );
    let expected = format!("key `api_key` (ssm `{missing}`): not found");
    let found = tokio::task::block_in_place(|| {
        // The invocation cannot succeed: INIT fails. Its error is in the function's output.
        let result = watch.invoke("{}", Duration::from_secs(20));
        assert!(result.is_err(), "{result:?}");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if watch.log().contains(&expected) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    });
    assert!(
        found,
        "INIT error naming {missing} not found in:\n{}",
        watch.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_multi_tenant_function_reads_each_tenants_key_on_demand() {
    ensure_cargo_lambda();
    let moto = moto();
    let seed = ssm_client(&moto.endpoint).await;
    let prefix = unique_prefix("e2e-tenants");
    put_param(
        &seed,
        &format!("{prefix}/shared/signing-key"),
        "signing-key-value",
        "SecureString",
    )
    .await;
    put_param(
        &seed,
        &format!("{prefix}/tenants/acme/api-key"),
        "acme-key",
        "SecureString",
    )
    .await;
    put_param(
        &seed,
        &format!("{prefix}/tenants/globex/api-key"),
        "globex-key-value",
        "SecureString",
    )
    .await;
    let env = [
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("PARAMETER_PREFIX", prefix.as_str()),
    ];
    let watch = Watch::start("tenants", "multi_tenant", &env);
    let (acme, globex, unknown) = tokio::task::block_in_place(|| {
        let invoke = |payload: &str| watch.invoke(payload, Duration::from_secs(600));
        (
            invoke(r#"{"tenant_id":"acme"}"#).unwrap_or_else(|e| panic!("{e}\n{}", watch.log())),
            invoke(r#"{"tenant_id":"globex"}"#).unwrap_or_else(|e| panic!("{e}\n{}", watch.log())),
            invoke(r#"{"tenant_id":"initech"}"#),
        )
    });
    assert_eq!(acme["tenant_key_length"], 8, "{acme}");
    assert_eq!(acme["tenant_key_version"], "1", "{acme}");
    assert_eq!(acme["signing_key_length"], 17, "{acme}");
    assert_eq!(globex["tenant_key_length"], 16, "{globex}");
    // An unknown tenant fails that invocation only, naming the parameter.
    let unknown = format!("{unknown:?}");
    assert!(
        // (cargo-lambda wraps the error at its terminal width: words, not the whole name.)
        unknown.contains("key `initech`") && unknown.contains("not found"),
        "{unknown}"
    );
    let log = watch.log();
    assert!(
        !log.contains("acme-key") && !log.contains("signing-key-value"),
        "{log}"
    );
}
