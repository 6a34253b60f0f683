//! The `lambda-secrets check` binary against the moto emulator, through the fault proxy.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use support::{moto, put_param, ssm_client, unique_prefix, FaultProxy};

/// The binary's `subcommand`, with only the AWS environment of the emulator at `endpoint`.
fn command(endpoint: &str, subcommand: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lambda-secrets"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .arg(subcommand);
    cmd
}

fn check(endpoint: &str) -> Command {
    command(endpoint, "check")
}

/// Runs a command to completion without blocking the proxy's runtime thread.
trait Run {
    fn run(&mut self) -> std::process::Output;
}

impl Run for Command {
    fn run(&mut self) -> std::process::Output {
        tokio::task::block_in_place(|| self.output().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_what_was_loaded_never_the_value() {
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let seed = ssm_client(&moto().endpoint).await;
    let prefix = unique_prefix("cli");
    let a = format!("{prefix}/a");
    put_param(&seed, &a, "value-aaaa", "SecureString").await;
    put_param(&seed, &a, "value-aaaa-2", "SecureString").await;
    for i in 0..3 {
        put_param(
            &seed,
            &format!("{prefix}/tree/p{i}"),
            &format!("tree-value-{i}"),
            "String",
        )
        .await;
    }
    let out = check(&proxy.endpoint())
        .args(["--param", &a, "--path", &format!("{prefix}/tree")])
        .run();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().find(|l| l.starts_with(&a)).expect(&stdout);
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols, [a.as_str(), "ssm", a.as_str(), "2", "12"], "{stdout}");
    assert!(stdout.contains(&format!("{prefix}/tree/p2")), "{stdout}");
    assert!(
        stdout.contains("calls: GetParameters=1 GetParametersByPath=1"),
        "{stdout}"
    );
    assert!(!stdout.contains("value-"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_json_and_missing_names() {
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let seed = ssm_client(&moto().endpoint).await;
    let prefix = unique_prefix("clijson");
    let a = format!("{prefix}/a");
    put_param(&seed, &a, "abc", "String").await;
    let out = check(&proxy.endpoint()).args(["--param", &a, "--json"]).run();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        lines[0],
        serde_json::json!({"round": 0, "key": a, "source": "ssm", "name": a, "version": 1, "bytes": 3})
    );
    assert_eq!(
        lines[1],
        serde_json::json!({"calls": {"GetParameters": 1}, "throttled": 0, "retries": 0, "refreshes": 0, "refresh_failures": 0, "misses": 0, "waits": 0})
    );

    let missing = format!("{prefix}/missing");
    let out = check(&proxy.endpoint())
        .args(["--param", &a, "--param", &missing, "--param", "bad name"])
        .run();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("invalid SSM parameter name `bad name`"),
        "{stderr}"
    );
    let out = check(&proxy.endpoint())
        .args(["--param", &a, "--param", &missing])
        .run();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("key `{missing}` (ssm `{missing}`): not found")),
        "{stderr}"
    );
    assert!(!stderr.contains("abc"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_repeat_shows_a_rotation_through_the_cache() {
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let seed = ssm_client(&moto().endpoint).await;
    let name = format!("{}/rotating", unique_prefix("clirepeat"));
    put_param(&seed, &name, "v1", "String").await;
    let mut child = check(&proxy.endpoint())
        .args([
            "--param",
            &name,
            "--ttl",
            "300ms",
            "--repeat",
            "4",
            "--interval-ms",
            "400",
            "--json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value =
        tokio::task::block_in_place(|| serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap());
    assert_eq!(first["version"], 1);
    put_param(&seed, &name, "v2-longer", "String").await;
    let rest: Vec<serde_json::Value> = tokio::task::block_in_place(|| {
        let rest = lines
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect();
        assert!(child.wait().unwrap().success());
        rest
    });
    let last_round = &rest[rest.len() - 2];
    assert_eq!(
        (last_round["round"].clone(), last_round["version"].clone()),
        (4.into(), 2.into()),
        "{rest:?}"
    );
    assert_eq!(last_round["bytes"], 9);
    let summary = rest.last().unwrap();
    assert!(
        summary["calls"]["GetParameters"].as_u64().unwrap() >= 2,
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_secrets_and_kms_env() {
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let config = support::sdk_config(&moto().endpoint).await;
    let sm = aws_sdk_secretsmanager::Client::new(&config);
    let name = format!("{}/db", unique_prefix("clism").trim_start_matches('/'));
    let created = sm
        .create_secret()
        .name(&name)
        .secret_string("sm-value-123")
        .send()
        .await
        .unwrap();
    let kms = aws_sdk_kms::Client::new(&config);
    let key = kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let blob = kms
        .encrypt()
        .key_id(&key)
        .plaintext(aws_sdk_kms::primitives::Blob::new(b"kms-plain".to_vec()))
        .encryption_context("LambdaFunctionName", "fn")
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    let out = check(&proxy.endpoint())
        .env("LEGACY_ENC", aws_smithy_types::base64::encode(blob.into_inner()))
        .args([
            "--secret",
            &name,
            "--kms-env",
            "LEGACY_ENC",
            "--kms-context",
            "LambdaFunctionName=fn",
            "--json",
        ])
        .run();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kms_line = lines.iter().find(|l| l["key"] == "LEGACY_ENC").unwrap();
    assert_eq!(
        (kms_line["source"].as_str(), kms_line["bytes"].as_u64()),
        (Some("kms"), Some(9))
    );
    let sm_line = lines.iter().find(|l| l["key"] == name.as_str()).unwrap();
    assert_eq!(sm_line["source"], "secretsmanager");
    assert_eq!(sm_line["version"], created.version_id.unwrap().as_str());
    assert_eq!(sm_line["bytes"], 12);
    assert_eq!(
        lines.last().unwrap()["calls"],
        serde_json::json!({"BatchGetSecretValue": 1, "Decrypt": 1})
    );
    assert!(!stdout.contains("sm-value") && !stdout.contains("kms-plain"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_simultaneous_checks_of_100_parameters_all_succeed_under_a_40_tps_quota() {
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let seed = ssm_client(&moto().endpoint).await;
    let prefix = unique_prefix("fleetcli");
    let mut args = Vec::new();
    for i in 0..100 {
        let name = format!("{prefix}/p{i:03}");
        put_param(&seed, &name, "v", "String").await;
        args.push("--param".to_owned());
        args.push(name);
    }
    proxy.throttle_tps(Some(40));
    let children: Vec<_> = (0..20)
        .map(|_| {
            check(&proxy.endpoint())
                .args(&args)
                .arg("--json")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = tokio::task::block_in_place(|| {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect()
    });
    let mut throttled = 0;
    for out in &outputs {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(stdout.lines().count(), 101);
        throttled += summary["throttled"].as_u64().unwrap();
    }
    // The proxy enforced the quota: the processes were throttled, retried and all got through.
    assert_eq!(throttled, proxy.throttled());
    assert_eq!(proxy.calls("GetParameters"), 200 + throttled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_rate_and_burst_override_the_limit() {
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let seed = ssm_client(&moto().endpoint).await;
    let prefix = unique_prefix("clirate");
    let mut args = vec![
        "--rate".to_owned(),
        "2".to_owned(),
        "--burst".to_owned(),
        "1".to_owned(),
    ];
    for i in 0..40 {
        let name = format!("{prefix}/p{i:02}");
        put_param(&seed, &name, "v", "String").await;
        args.push("--param".to_owned());
        args.push(name);
    }
    let out = check(&proxy.endpoint()).args(&args).run();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // 4 calls at 2 a second: never more than 2 in any second.
    assert_eq!(proxy.calls("GetParameters"), 4);
    assert!(
        proxy.peak_in_any_1s_window() <= 2,
        "{}",
        proxy.peak_in_any_1s_window()
    );
    let bad = check(&proxy.endpoint())
        .args(["--param", "/x", "--rate", "0"])
        .run();
    assert_eq!(bad.status.code(), Some(2));
}

fn lookup(endpoint: &str) -> Command {
    command(endpoint, "lookup")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_of_fifty_names_three_rounds_takes_at_most_six_calls() {
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let seed = ssm_client(&moto().endpoint).await;
    let prefix = unique_prefix("clilookup");
    let names: Vec<String> = (0..50).map(|i| format!("{prefix}/tenants/t{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        put_param(&seed, name, &format!("secret-value-{i}"), "SecureString").await;
    }
    let mut cmd = lookup(&proxy.endpoint());
    for name in &names {
        cmd.args(["--param", name]);
    }
    let out = cmd
        .args(["--rounds", "3", "--interval-ms", "200", "--json"])
        .run();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 151, "{stdout}");
    for round in 0..3 {
        for (i, name) in names.iter().enumerate() {
            let line = &lines[round * 50 + i];
            assert_eq!(
                line,
                &serde_json::json!({"round": round, "name": name, "found": true, "version": 1, "bytes": format!("secret-value-{i}").len()})
            );
        }
    }
    println!("lookup summary: {}", lines[150]);
    let calls = lines[150]["calls"]["GetParameters"].as_u64().unwrap();
    assert!(calls <= 6, "{}", lines[150]);
    assert_eq!(proxy.calls("GetParameters"), calls);
    assert!(!stdout.contains("secret-value"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_reports_a_missing_name_and_fails_after_every_line() {
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let seed = ssm_client(&moto().endpoint).await;
    let prefix = unique_prefix("clilookupmiss");
    let a = format!("{prefix}/a");
    put_param(&seed, &a, "abc", "String").await;
    let missing = format!("{prefix}/missing");
    let out = lookup(&proxy.endpoint())
        .args([
            "--param",
            &a,
            "--param",
            &missing,
            "--rounds",
            "2",
            "--interval-ms",
            "10",
            "--json",
        ])
        .run();
    assert!(!out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert_eq!(lines[1]["found"], false, "{stdout}");
    assert!(
        lines[1]["error"].as_str().unwrap().contains("not found"),
        "{stdout}"
    );
    assert_eq!(lines[3]["found"], false, "{stdout}");
    // The miss is remembered: one call for the first round, none for the second.
    assert_eq!(proxy.calls("GetParameters"), 1, "{:?}", proxy.calls_all());
}

/// `rds-token` and `dsql-token` print a token signed with the environment's credentials (no call:
/// the endpoint is never reached), its expiry on stderr; bad input fails naming it, printing
/// nothing on stdout. (That the tokens are botocore's, byte for byte, is `tests/tokens_reference.rs`.)
#[test]
fn the_token_commands_print_a_token_signed_with_the_environments_credentials() {
    let unreachable = "http://127.0.0.1:9";
    let out = command(unreachable, "rds-token")
        .env("AWS_SESSION_TOKEN", "session/token+=")
        .args([
            "--hostname",
            "db.example.internal",
            "--port",
            "5432",
            "--username",
            "app",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let token = token.trim_end();
    assert!(token.starts_with("db.example.internal:5432/?Action=connect&DBUser=app&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=test%2F"), "{token}");
    assert!(token.contains("%2Fus-east-1%2Frds-db%2Faws4_request&"), "{token}");
    assert!(token.contains("&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=session%2Ftoken%2B%3D&X-Amz-Signature="), "{token}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("expires "));

    let out = command(unreachable, "dsql-token")
        .args([
            "--hostname",
            "abc.dsql.eu-west-1.on.aws",
            "--admin",
            "--expires-in",
            "3600",
            "--region",
            "eu-west-1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    assert!(
        token.starts_with("abc.dsql.eu-west-1.on.aws/?Action=DbConnectAdmin&"),
        "{token}"
    );
    assert!(
        token.contains("%2Feu-west-1%2Fdsql%2Faws4_request&") && token.contains("&X-Amz-Expires=3600&"),
        "{token}"
    );

    for (sub, args, expected) in [
        (
            "rds-token",
            &[
                "--hostname",
                "https://db.example",
                "--port",
                "5432",
                "--username",
                "app",
            ][..],
            "invalid RDS host name `https://db.example`",
        ),
        (
            "rds-token",
            &["--hostname", "db.example", "--port", "0", "--username", "app"][..],
            "invalid RDS port",
        ),
        (
            "rds-token",
            &["--hostname", "db.example", "--port", "5432", "--username", ""][..],
            "user is empty",
        ),
        (
            "dsql-token",
            &[
                "--hostname",
                "abc.dsql.us-east-1.on.aws",
                "--expires-in",
                "604801",
            ][..],
            "invalid DSQL token lifetime",
        ),
    ] {
        let out = command(unreachable, sub).args(args).output().unwrap();
        assert!(!out.status.success() && out.stdout.is_empty(), "{sub} {args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// `check --failover-region`: the primary failing, each value is served by the other Region, and
/// the summary's per-Region calls are the ones the emulator saw there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_a_failover_region_counts_calls_per_region() {
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let prefix = unique_prefix("clifo");
    let name = format!("{}/db", prefix.trim_start_matches('/'));
    let param = format!("{prefix}/key");
    for region in ["us-east-1", "us-west-2"] {
        let config = support::sdk_config(&moto().endpoint)
            .await
            .into_builder()
            .region(aws_types::region::Region::from_static(region))
            .build();
        aws_sdk_secretsmanager::Client::new(&config)
            .create_secret()
            .name(&name)
            .secret_string("sm-value")
            .send()
            .await
            .unwrap();
        put_param(
            &aws_sdk_ssm::Client::new(&config),
            &param,
            "p-value",
            "SecureString",
        )
        .await;
    }
    proxy.fail_region("us-east-1", Some(503));
    let out = check(&proxy.endpoint())
        .args([
            "--secret",
            &name,
            "--param",
            &param,
            "--failover-region",
            "us-west-2",
            "--json",
        ])
        .run();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for key in [name.as_str(), param.as_str()] {
        let line = lines.iter().find(|l| l["key"] == key).expect(&stdout);
        assert_eq!(line["region"], "us-west-2", "{line}");
    }
    let summary = lines.last().unwrap();
    let west = &summary["failover_calls"]["us-west-2"];
    for op in ["BatchGetSecretValue", "GetParameters"] {
        assert_eq!(
            west[op].as_u64(),
            Some(proxy.calls_in("us-west-2", op)),
            "{op}: {summary}"
        );
    }
    let total: u64 = summary["calls"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    let east: u64 = ["BatchGetSecretValue", "GetParameters"]
        .iter()
        .map(|op| proxy.calls_in("us-east-1", op))
        .sum();
    let west_total: u64 = west
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    // Every call the emulator saw is counted; an attempt of the primary's dropped by the
    // failover cut-off or the hedge before its request reached the emulator (a busy machine) is
    // counted too (it was started): at most one per source.
    let seen = east + west_total;
    assert!(
        seen <= total && total <= seen + 2,
        "emulator saw {seen}: {summary}"
    );
    assert!(!stdout.contains("sm-value") && !stdout.contains("p-value"));
}

/// `lookup --failover-region`: during an outage of the primary, names are served by the other
/// Region, and the summary counts its calls as the emulator saw them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_with_a_failover_region_is_served_by_it_during_an_outage() {
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let name = format!("{}/db", unique_prefix("clifo-lookup").trim_start_matches('/'));
    for region in ["us-east-1", "us-west-2"] {
        let config = support::sdk_config(&moto().endpoint)
            .await
            .into_builder()
            .region(aws_types::region::Region::from_static(region))
            .build();
        aws_sdk_secretsmanager::Client::new(&config)
            .create_secret()
            .name(&name)
            .secret_string("sm-value")
            .send()
            .await
            .unwrap();
    }
    proxy.fail_region("us-east-1", None);
    let out = lookup(&proxy.endpoint())
        .args([
            "--secret",
            &name,
            "--failover-region",
            "us-west-2",
            "--rounds",
            "2",
            "--json",
        ])
        .run();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for round in 0..2 {
        let line = lines.iter().find(|l| l["round"] == round).expect(&stdout);
        assert_eq!(
            (line["found"].as_bool(), line["region"].as_str()),
            (Some(true), Some("us-west-2")),
            "{line}"
        );
    }
    let summary = lines.last().unwrap();
    let west: u64 = summary["failover_calls"]["us-west-2"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    let seen: u64 = proxy
        .calls_all()
        .keys()
        .map(|op| proxy.calls_in("us-west-2", op))
        .sum();
    assert_eq!(west, seen, "{summary}");
    assert!(!stdout.contains("sm-value"));
}

/// The EMF documents in `stdout` (JSON lines with an `_aws` member).
fn emf_documents(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|doc| doc.get("_aws").is_some())
        .collect()
}

/// The sum of metric `name` over `docs` whose dimension `label` is `value` (any, if `None`).
fn emf_sum(docs: &[serde_json::Value], name: &str, label: Option<(&str, &str)>) -> u64 {
    docs.iter()
        .filter(|d| label.is_none_or(|(k, v)| d[k] == v))
        .filter_map(|d| d[name].as_u64())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_metrics_emf_prints_per_round_deltas_whose_calls_sum_to_the_emulators() {
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let seed = ssm_client(&moto().endpoint).await;
    let prefix = unique_prefix("cliemf");
    let names: Vec<String> = (0..12).map(|i| format!("{prefix}/p{i}")).collect();
    for name in &names {
        put_param(&seed, name, "metric-secret-value", "SecureString").await;
    }
    // Two throttled answers: retried, counted as throttled and as retries.
    proxy.fail_next(2, 429);
    let mut cmd = check(&proxy.endpoint());
    for name in &names {
        cmd.args(["--param", name]);
    }
    let out = cmd
        .args([
            "--repeat",
            "2",
            "--interval-ms",
            "50",
            "--refresh",
            "--metrics",
            "emf",
        ])
        .run();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = emf_documents(&stdout);
    // Valid EMF: each document declares its namespace, dimensions and metrics, and carries a
    // value for every metric and dimension it declares.
    for doc in &docs {
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "lambda-secrets", "{doc}");
        assert!(doc["_aws"]["Timestamp"].as_u64().is_some(), "{doc}");
        for dimension in directive["Dimensions"][0].as_array().unwrap() {
            assert!(doc[dimension.as_str().unwrap()].is_string(), "{doc}");
        }
        for metric in directive["Metrics"].as_array().unwrap() {
            assert!(!doc[metric["Name"].as_str().unwrap()].is_null(), "{doc}");
        }
    }
    // Summed over the run (each document holds what happened since the previous round), the
    // calls equal what the emulator saw; the throttled answers are there too.
    let emulated: u64 = proxy.calls_all().values().sum();
    assert_eq!(emf_sum(&docs, "aws.calls", None), emulated, "{stdout}");
    assert_eq!(
        emf_sum(&docs, "aws.calls", Some(("operation", "GetParameters"))),
        proxy.calls("GetParameters")
    );
    assert_eq!(emf_sum(&docs, "aws.throttled", None), 2, "{stdout}");
    assert!(emf_sum(&docs, "aws.retries", None) >= 2, "{stdout}");
    // One batch of documents per round: the load's calls in the first, the refresh's in the
    // next (a third refresh within `refresh_now`'s interval makes none).
    let per_round: Vec<u64> = stdout
        .split("\nround ")
        .map(|round| emf_sum(&emf_documents(round), "aws.calls", None))
        .collect();
    assert_eq!(per_round.len(), 3, "{stdout}");
    assert!(per_round[0] > 0 && per_round[1] > 0, "{per_round:?}");
    // Never a name nor a value.
    let emf_text: String = docs.iter().map(|d| d.to_string()).collect();
    assert!(
        !emf_text.contains(&prefix) && !emf_text.contains("metric-secret-value"),
        "{emf_text}"
    );
}

#[test]
fn an_unknown_metrics_format_is_a_clear_error() {
    let out = check("http://127.0.0.1:9")
        .args(["--param", "/x", "--metrics", "prometheus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'prometheus' for '--metrics <FORMAT>'") && stderr.contains("emf"),
        "{stderr}"
    );
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_after_a_freeze_whose_connections_the_far_end_closed_succeeds() {
    // The process is stopped (as Lambda freezes it) past its next refresh; meanwhile the far
    // end closes its idle keep-alive connections. At SIGCONT the refresh is due at once, on a
    // pool whose connection is closed: it succeeds, at most one request more (the at-once
    // retry on a new connection). Two freezes, one process, each longer than `refresh_now`'s
    // 5 s interval (so that each refresh makes its call).
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let seed = ssm_client(&moto().endpoint).await;
    let name = format!("{}/frozen", unique_prefix("clistop"));
    put_param(&seed, &name, "v", "SecureString").await;
    let mut child = check(&proxy.endpoint())
        .args([
            "--param",
            &name,
            "--repeat",
            "2",
            "--interval-ms",
            "300",
            "--refresh",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = || tokio::task::block_in_place(|| lines.next()).unwrap().unwrap();
    let (mut extra, mut spans) = (Vec::new(), Vec::new());
    // This round's value line: the process then sleeps before the next refresh.
    let mut line = next_line();
    for round in 0..2 {
        assert!(line.contains(&format!("\"round\":{round}")), "{line}");
        signal(pid, "STOP");
        proxy.close_open_connections();
        tokio::time::sleep(std::time::Duration::from_millis(5500)).await;
        let before = proxy.calls("GetParameters");
        let since = proxy.request_times().len();
        signal(pid, "CONT");
        line = next_line();
        assert!(line.contains(&format!("\"round\":{}", round + 1)), "{line}");
        let calls = proxy.calls("GetParameters") - before;
        assert!(
            (1..=2).contains(&calls),
            "refresh after the freeze: {calls} calls"
        );
        extra.push(calls - 1);
        let times: Vec<std::time::Instant> = proxy.request_times()[since..].iter().map(|(t, _)| *t).collect();
        spans.push(times.last().unwrap().duration_since(times[0]));
    }
    assert!(
        proxy.closed() >= 2,
        "the proxy closed the idle connections: {}",
        proxy.closed()
    );
    // Read to the end (the summary), so that the child never writes to a closed pipe.
    let mut rest = Vec::new();
    while let Some(Ok(l)) = tokio::task::block_in_place(|| lines.next()) {
        rest.push(l);
    }
    let out = tokio::task::block_in_place(|| child.wait_with_output()).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The library counts every attempt, the proxy only those that reached it: an attempt sent on
    // a connection the far end had closed is the difference.
    let summary: serde_json::Value = serde_json::from_str(rest.last().expect("a summary line")).unwrap();
    let attempted = summary["calls"]["GetParameters"].as_u64().unwrap();
    let lost = attempted - proxy.calls("GetParameters");
    println!(
        "refresh after SIGSTOP/SIGCONT with the far end's idle connections closed: requests reaching the proxy beyond one per refresh {extra:?}, first to last {spans:?}, attempts lost on a closed connection {lost}, connections closed {}",
        proxy.closed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_metrics_emf_counts_the_on_demand_cache_and_its_calls() {
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let seed = ssm_client(&moto().endpoint).await;
    let prefix = unique_prefix("clilookupemf");
    let names: Vec<String> = (0..5).map(|i| format!("{prefix}/t{i}")).collect();
    for name in &names {
        put_param(&seed, name, "tenant-secret-value", "SecureString").await;
    }
    let mut cmd = lookup(&proxy.endpoint());
    for name in &names {
        cmd.args(["--param", name]);
    }
    let out = cmd
        .args(["--rounds", "2", "--interval-ms", "50", "--metrics", "emf"])
        .run();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = emf_documents(&stdout);
    let emulated: u64 = proxy.calls_all().values().sum();
    assert_eq!(
        emf_sum(&docs, "aws.calls", Some(("cache", "on-demand"))),
        emulated,
        "{stdout}"
    );
    // Round one fetches the five names, round two finds them cached.
    assert_eq!(
        emf_sum(&docs, "cache.misses", Some(("cache", "on-demand"))),
        5,
        "{stdout}"
    );
    assert_eq!(
        emf_sum(&docs, "cache.hits", Some(("cache", "on-demand"))),
        5,
        "{stdout}"
    );
    let emf_text: String = docs.iter().map(|d| d.to_string()).collect();
    assert!(
        !emf_text.contains(&prefix) && !emf_text.contains("tenant-secret"),
        "{emf_text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reads_an_appconfig_profile_printing_its_label_and_size_never_its_content() {
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let app = unique_prefix("cliac").replace('/', "");
    let steps = serde_json::json!([
        {"op": "setup", "app": app, "env": "prod", "profile": "flags"},
        {"op": "deploy", "app": app, "env": "prod", "profile": "flags",
         "content": r#"{"secret-ish": true}"#, "content_type": "application/json", "label": "v7"},
    ]);
    let endpoint = proxy.endpoint();
    tokio::task::spawn_blocking(move || support::boto3::appconfig(&endpoint, &steps))
        .await
        .unwrap();
    let spec = format!("{app}/prod/flags");
    let out = check(&proxy.endpoint())
        .args(["--appconfig", &spec, "--ttl", "30s", "--json"])
        .run();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(
        first,
        serde_json::json!({"round": 0, "key": spec, "source": "appconfig", "name": spec, "version": "v7", "bytes": 20})
    );
    assert!(!stdout.contains("secret-ish"), "{stdout}");
    assert!(stdout.contains(r#""StartConfigurationSession":1"#), "{stdout}");

    let out = check(&proxy.endpoint()).args(["--appconfig", "only/two"]).run();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not APPLICATION/ENVIRONMENT/PROFILE"));
}
