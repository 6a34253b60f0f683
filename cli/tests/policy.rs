//! `lambda-secrets policy`, verified rather than compared with our own expectations:
//!
//! 1. sufficient: the declarations load and refresh with credentials holding only the generated
//!    policy, under the emulator's IAM enforcement (moto checks actions only);
//! 2. resource-tight: every request the load and refresh made, as observed by the proxy, is
//!    allowed by a real IAM evaluator (`@cloud-copilot/iam-simulate`), and requests outside the
//!    declarations are denied;
//! 3. minimal: without any one statement, some observed request is denied;
//! 4. no `*` action, no `*` resource except for `secretsmanager:BatchGetSecretValue`; and every
//!    action/resource/condition pairing is in the Service Authorization Reference data.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::iam_simulate::{evaluate, lint, IamRequest};
use support::{put_param, sdk_config, ssm_client, unique_prefix, FaultProxy, Moto, ACCOUNT_ID, REGION};

fn policy_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lambda-secrets"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("policy");
    cmd
}

/// Runs a command to completion without blocking the proxy's runtime thread.
fn run(cmd: &mut Command) -> std::process::Output {
    tokio::task::block_in_place(|| cmd.output().unwrap())
}

fn stdout_of(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Creates IAM user `user` with `policy` as its only (inline) policy and returns its access key,
/// through boto3 (installed with moto), before IAM enforcement is on.
fn iam_user(endpoint: &str, user: &str, policy: &Value) -> (String, String) {
    const SCRIPT: &str = r#"
import json, sys, boto3
endpoint, user, policy = sys.argv[1], sys.argv[2], sys.argv[3]
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
iam.create_user(UserName=user)
iam.put_user_policy(UserName=user, PolicyName="generated", PolicyDocument=policy)
key = iam.create_access_key(UserName=user)["AccessKey"]
print(json.dumps([key["AccessKeyId"], key["SecretAccessKey"]]))
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT, endpoint, user, &policy.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `lambda-secrets check` as the IAM user with this access key.
fn check_as(endpoint: &str, (key_id, secret): &(String, String), args: &[String]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lambda-secrets"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", REGION)
        .arg("check")
        .args(args);
    run(&mut cmd)
}

/// The policy as moto can enforce it: actions only (it treats SSM and Secrets Manager resources
/// as `*`, so exact ARNs would deny everything, and it denies KMS statements with conditions).
fn actions_only(policy: &Value) -> Value {
    let mut policy = policy.clone();
    for s in policy["Statement"].as_array_mut().unwrap() {
        s["Resource"] = json!("*");
        s.as_object_mut().unwrap().remove("Condition");
    }
    policy
}

fn as_list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(|i| i.as_str().unwrap().to_owned()).collect(),
        Value::String(s) => vec![s.clone()],
        other => panic!("not a string or list: {other}"),
    }
}

fn parameter_arn(name: &str) -> String {
    let name = name.split(':').next().unwrap();
    format!(
        "arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter/{}",
        name.trim_start_matches('/')
    )
}

/// The IAM requests an observed API request makes (`secret_arns`: the full ARN of each secret
/// name): AWS authorizes `GetParameters` against each name, `GetParametersByPath` against the
/// path, and `BatchGetSecretValue` on `*` plus `GetSecretValue` on each secret it returns.
fn iam_requests(op: &str, body: &Value, secret_arns: &BTreeMap<String, String>) -> Vec<IamRequest> {
    let secret = |id: &str| secret_arns.get(id).cloned().unwrap_or_else(|| id.to_owned());
    let request = |action: &str, resource: String| IamRequest::new(action, &resource, ACCOUNT_ID);
    match op {
        "GetParameters" => as_list(&body["Names"])
            .iter()
            .map(|n| request("ssm:GetParameters", parameter_arn(n)))
            .collect(),
        "GetParametersByPath" => vec![request(
            "ssm:GetParametersByPath",
            parameter_arn(body["Path"].as_str().unwrap()),
        )],
        "BatchGetSecretValue" => std::iter::once(request("secretsmanager:BatchGetSecretValue", "*".into()))
            .chain(
                as_list(&body["SecretIdList"])
                    .iter()
                    .map(|id| request("secretsmanager:GetSecretValue", secret(id))),
            )
            .collect(),
        "GetSecretValue" | "DescribeSecret" => vec![request(
            &format!("secretsmanager:{op}"),
            secret(body["SecretId"].as_str().unwrap()),
        )],
        other => panic!("unexpected request {other}: {body}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_policy_for_a_path_three_names_and_two_secrets_is_sufficient_tight_and_minimal() {
    // A private emulator: IAM enforcement is turned on for all of it below.
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let seed = ssm_client(&moto.endpoint).await;
    let prefix = unique_prefix("policy");
    let path = format!("{prefix}/app");
    for (name, kind) in [("db/url", "String"), ("flags/beta", "String")] {
        put_param(&seed, &format!("{path}/{name}"), "v", kind).await;
    }
    let (password, api_key, log_level) = (
        format!("{prefix}/db/password"),
        format!("{prefix}/api-key"),
        format!("{prefix}/log-level"),
    );
    put_param(&seed, &password, "pw", "SecureString").await;
    put_param(&seed, &api_key, "k1", "SecureString").await;
    put_param(&seed, &api_key, "k2", "SecureString").await;
    put_param(&seed, &log_level, "info", "String").await;
    for outside in [format!("{prefix}/other"), format!("{prefix}/app-other/x")] {
        put_param(&seed, &outside, "no", "String").await;
    }
    let sm = aws_sdk_secretsmanager::Client::new(&sdk_config(&moto.endpoint).await);
    let secret_base = prefix.trim_start_matches('/').replace('/', "-");
    let mut secret_arns = BTreeMap::new();
    for name in ["rds", "stripe", "rds2"] {
        let id = format!("{secret_base}/{name}");
        let created = sm
            .create_secret()
            .name(&id)
            .secret_string("s3cr3t")
            .send()
            .await
            .unwrap();
        secret_arns.insert(id, created.arn().unwrap().to_owned());
    }
    let (rds, stripe) = (format!("{secret_base}/rds"), format!("{secret_base}/stripe"));
    let names = [password.clone(), format!("{api_key}:1"), log_level.clone()];

    // The policy, as printed by the CLI.
    // With a trailing `/`: the request and the policy both name the path without it.
    let mut args: Vec<String> = vec!["--path".into(), format!("{path}/")];
    for name in &names {
        args.extend(["--param".into(), name.clone()]);
    }
    for id in [&rds, &stripe] {
        args.extend(["--secret".into(), id.clone()]);
    }
    let printed = stdout_of(&run(policy_command().args(&args).args([
        "--region",
        REGION,
        "--account",
        ACCOUNT_ID,
    ])));
    let policy: Value = serde_json::from_str(&printed).expect("stdout is the JSON document only");
    let statements = policy["Statement"].as_array().unwrap().clone();

    // 4. No `*` action; `*` resource only for BatchGetSecretValue; pairings in the reference.
    for s in &statements {
        let actions = as_list(&s["Action"]);
        assert!(actions.iter().all(|a| !a.contains('*')), "{s}");
        if as_list(&s["Resource"]).contains(&"*".to_owned()) {
            assert_eq!(actions, ["secretsmanager:BatchGetSecretValue"], "{s}");
        }
    }
    assert_eq!(lint(&policy), Vec::<String>::new(), "{printed}");

    // 1. Sufficient under moto's IAM enforcement: load, then refresh every value.
    let function = iam_user(&moto.endpoint, "function", &actions_only(&policy));
    let only_batch = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "secretsmanager:BatchGetSecretValue", "Resource": "*"}]});
    let stranger = iam_user(&moto.endpoint, "stranger", &only_batch);
    moto.enforce_iam();
    let mut check_args = args.clone();
    check_args.extend(["--repeat", "1", "--interval-ms", "0", "--refresh", "--json"].map(String::from));
    let out = check_as(&proxy.endpoint(), &function, &check_args);
    let checked = stdout_of(&out);
    assert_eq!(
        checked.lines().filter(|l| l.contains(r#""round":1"#)).count(),
        7,
        "{checked}"
    );
    let summary: Value = serde_json::from_str(checked.lines().last().unwrap()).unwrap();
    assert!(
        summary["calls"]["DescribeSecret"].as_u64() >= Some(2),
        "{checked}"
    );
    let made = proxy.requests();
    // The emulator enforces: a user without the policy is denied.
    let denied = check_as(&proxy.endpoint(), &stranger, &check_args);
    assert!(
        !denied.status.success(),
        "{}",
        String::from_utf8_lossy(&denied.stdout)
    );

    // 2. Every request the function made is allowed by the evaluator, with exact resources.
    let observed: Vec<IamRequest> = made
        .iter()
        .flat_map(|(op, body)| iam_requests(op, body, &secret_arns))
        .collect();
    let observed_ops: Vec<&str> = observed.iter().map(|r| r.action.as_str()).collect();
    for needed in [
        "ssm:GetParameters",
        "ssm:GetParametersByPath",
        "secretsmanager:BatchGetSecretValue",
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
    ] {
        assert!(
            observed_ops.contains(&needed),
            "{needed} not observed: {observed_ops:?}"
        );
    }
    let function_requests = observed.as_slice();
    let results = evaluate(&policy, function_requests);
    for (request, result) in function_requests.iter().zip(&results) {
        assert_eq!(result, "Allowed", "{request:?} under {printed}");
    }

    //    ...and requests outside the declarations are denied.
    let other_account = "210987654321";
    let outside = [
        IamRequest::new(
            "ssm:GetParameters",
            &parameter_arn(&format!("{prefix}/other")),
            ACCOUNT_ID,
        ),
        IamRequest::new(
            "ssm:GetParameters",
            &parameter_arn(&format!("{path}/db/url")),
            ACCOUNT_ID,
        ),
        IamRequest::new(
            "ssm:GetParametersByPath",
            &parameter_arn(&format!("{path}-other")),
            ACCOUNT_ID,
        ),
        IamRequest::new("ssm:GetParametersByPath", &parameter_arn(&prefix), ACCOUNT_ID),
        IamRequest::new("ssm:GetParameter", &parameter_arn(&password), ACCOUNT_ID),
        IamRequest::new("ssm:PutParameter", &parameter_arn(&password), ACCOUNT_ID),
        IamRequest::new(
            "ssm:GetParameters",
            &parameter_arn(&password).replace(ACCOUNT_ID, other_account),
            other_account,
        ),
        IamRequest::new(
            "ssm:GetParameters",
            &parameter_arn(&password).replace(REGION, "eu-west-1"),
            ACCOUNT_ID,
        ),
        IamRequest::new(
            "secretsmanager:GetSecretValue",
            &secret_arns[&format!("{secret_base}/rds2")],
            ACCOUNT_ID,
        ),
        IamRequest::new(
            "secretsmanager:GetSecretValue",
            &format!("{}x", secret_arns[&rds]),
            ACCOUNT_ID,
        ),
        IamRequest::new("secretsmanager:PutSecretValue", &secret_arns[&rds], ACCOUNT_ID),
    ];
    let results = evaluate(&policy, &outside);
    for (request, result) in outside.iter().zip(&results) {
        assert_eq!(result, "ImplicitlyDenied", "{request:?} under {printed}");
    }

    // 3. Minimal: without any one statement, some needed request is denied.
    for (i, removed) in statements.iter().enumerate() {
        let mut fewer = policy.clone();
        fewer["Statement"].as_array_mut().unwrap().remove(i);
        let results = evaluate(&fewer, function_requests);
        assert!(
            results.iter().any(|r| r != "Allowed"),
            "statement {removed} is not needed by any request"
        );
    }
}

/// The SAM form (`--format sam`), read by a YAML parser with `!Sub` as CloudFormation reads it,
/// is the JSON document; the customer managed key and KMS statements pair actions, resources
/// and condition keys as the Service Authorization Reference says. (Their encryption-context
/// conditions cannot be evaluated: see `support::iam_simulate`.)
#[test]
fn sam_form_is_the_json_document_and_kms_statements_are_in_the_reference() {
    support::ensure_moto_installed(); // brings PyYAML
    let args = [
        "--param",
        "/prod/db/password",
        "--param",
        "/prod/api-key:3",
        "--path",
        "/prod/app/",
        "--secret",
        "prod/rds",
        "--kms-key",
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "--secret-kms-key",
        "arn:aws:kms:us-east-1:123456789012:key/abcd1234-12ab-34cd-56ef-1234567890ab",
        "--decrypt-key",
        "alias/app",
        "--decrypt-key",
        "1234abcd-12ab-34cd-56ef-000000000000",
        "--decrypt-context",
        "app=billing",
    ];
    let json_text = stdout_of(&policy_command().args(args).output().unwrap());
    let sam_text = stdout_of(
        &policy_command()
            .args(args)
            .args(["--format", "sam"])
            .output()
            .unwrap(),
    );
    const READ_SAM: &str = r#"
import json, sys, yaml
class Loader(yaml.SafeLoader): pass
Loader.add_constructor("!Sub", lambda loader, node: {"Fn::Sub": loader.construct_scalar(node)})
print(json.dumps(yaml.load(sys.stdin.read(), Loader=Loader)))
"#;
    let mut child = Command::new("python3")
        .args(["-c", READ_SAM])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), sam_text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{sam_text}");
    let sam: Value = serde_json::from_slice(&out.stdout).unwrap();
    // `!Sub "text"` with the placeholders substituted is the JSON document's text.
    fn unsub(v: &Value) -> Value {
        match v {
            Value::Object(m) if m.len() == 1 && m.contains_key("Fn::Sub") => m["Fn::Sub"].clone(),
            Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), unsub(v))).collect()),
            Value::Array(items) => Value::Array(items.iter().map(unsub).collect()),
            other => other.clone(),
        }
    }
    let json: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(unsub(&sam["Policies"][0]), json, "{sam_text}");
    assert!(
        sam_text.contains(
            "!Sub \"arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/prod/app\""
        ),
        "{sam_text}"
    );

    // With explicit Region and account, every statement's pairings are in the reference.
    let explicit = stdout_of(
        &policy_command()
            .args(args)
            .args(["--region", REGION, "--account", ACCOUNT_ID])
            .output()
            .unwrap(),
    );
    let policy: Value = serde_json::from_str(&explicit).unwrap();
    let sids: Vec<&str> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Sid"].as_str().unwrap())
        .collect();
    for sid in [
        "KmsDecryptViaSsm",
        "KmsDecryptViaSecretsManager",
        "KmsDecrypt",
        "KmsDecrypt2",
    ] {
        assert!(sids.contains(&sid), "{sid} missing: {explicit}");
    }
    assert_eq!(lint(&policy), Vec::<String>::new(), "{explicit}");

    // Statements without an encryption context evaluate: the key named by id, and any key asked
    // for by the alias.
    let key_arn = format!("arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/1234abcd-12ab-34cd-56ef-000000000000");
    let other_key = format!("arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/ffffffff-12ab-34cd-56ef-000000000000");
    let printed = stdout_of(
        &policy_command()
            .args([
                "--decrypt-key",
                "alias/app",
                "--decrypt-key",
                "1234abcd-12ab-34cd-56ef-000000000000",
            ])
            .args(["--region", REGION, "--account", ACCOUNT_ID])
            .output()
            .unwrap(),
    );
    let policy: Value = serde_json::from_str(&printed).unwrap();
    let requests = [
        IamRequest::new("kms:Decrypt", &key_arn, ACCOUNT_ID),
        IamRequest::new("kms:Decrypt", &other_key, ACCOUNT_ID).with("kms:RequestAlias", "alias/app"),
        IamRequest::new("kms:Decrypt", &other_key, ACCOUNT_ID),
        IamRequest::new("kms:Decrypt", &other_key, ACCOUNT_ID).with("kms:RequestAlias", "alias/other"),
        IamRequest::new("kms:Encrypt", &key_arn, ACCOUNT_ID),
    ];
    assert_eq!(
        evaluate(&policy, &requests),
        [
            "Allowed",
            "Allowed",
            "ImplicitlyDenied",
            "ImplicitlyDenied",
            "ImplicitlyDenied"
        ],
        "{printed}"
    );
}

#[test]
fn bad_input_is_named_and_nothing_is_printed() {
    for (args, expected) in [
        (
            &["--param", "/prod//x"][..],
            "invalid SSM parameter name `/prod//x`",
        ),
        (
            &["--param", "/x", "--account", "12345"][..],
            "invalid account id `12345`",
        ),
        (
            &["--param", "/x", "--kms-key", "alias/aws/ssm"][..],
            "invalid KMS key `alias/aws/ssm`",
        ),
        (&[][..], "nothing to describe"),
    ] {
        let out = policy_command().args(args).output().unwrap();
        assert!(!out.status.success());
        assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// IAM auth tokens: `rds-db:connect` on exactly each database user, `dsql:DbConnect` /
/// `dsql:DbConnectAdmin` on exactly each cluster; each statement needed, neighbours denied (a real
/// IAM evaluator decides; there is no request for the emulator to see: tokens are signed locally).
#[test]
fn token_policies_allow_exactly_the_database_users_and_clusters_declared() {
    let region = "us-east-1";
    let account = "123456789012";
    let cluster = "abcdefghijklmnopqrst123456";
    let out = policy_command()
        .args([
            "--rds-db-user",
            "db-ABCDEFGHIJKLMNOPQRSTUVWXY1/app",
            "--rds-db-user",
            "cluster-ZYXWVUTSRQPONMLKJIHGFEDCB2/report",
            "--dsql",
            &format!("{cluster}.dsql.{region}.on.aws"),
            "--dsql-admin",
            &format!("admincluster000000000000001.dsql.{region}.on.aws"),
            "--region",
            region,
            "--account",
            account,
        ])
        .output()
        .unwrap();
    let policy: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert!(lint(&policy).is_empty(), "{:?}", lint(&policy));
    let dbuser = |id: &str, user: &str| format!("arn:aws:rds-db:{region}:{account}:dbuser:{id}/{user}");
    let cluster_arn = |id: &str| format!("arn:aws:dsql:{region}:{account}:cluster/{id}");
    let allowed = [
        IamRequest::new(
            "rds-db:connect",
            &dbuser("db-ABCDEFGHIJKLMNOPQRSTUVWXY1", "app"),
            account,
        ),
        IamRequest::new(
            "rds-db:connect",
            &dbuser("cluster-ZYXWVUTSRQPONMLKJIHGFEDCB2", "report"),
            account,
        ),
        IamRequest::new("dsql:DbConnect", &cluster_arn(cluster), account),
        IamRequest::new(
            "dsql:DbConnectAdmin",
            &cluster_arn("admincluster000000000000001"),
            account,
        ),
    ];
    let denied = [
        IamRequest::new(
            "rds-db:connect",
            &dbuser("db-ABCDEFGHIJKLMNOPQRSTUVWXY1", "admin"),
            account,
        ),
        IamRequest::new(
            "rds-db:connect",
            &dbuser("db-OTHER0000000000000000000", "app"),
            account,
        ),
        IamRequest::new("dsql:DbConnectAdmin", &cluster_arn(cluster), account),
        IamRequest::new(
            "dsql:DbConnect",
            &cluster_arn("othercluster00000000000000"),
            account,
        ),
    ];
    for (request, result) in allowed.iter().zip(evaluate(&policy, &allowed)) {
        assert_eq!(result, "Allowed", "{request:?}");
    }
    for (request, result) in denied.iter().zip(evaluate(&policy, &denied)) {
        assert_eq!(result, "ImplicitlyDenied", "{request:?}");
    }
    // Minimal: without any one statement, some allowed request is denied.
    let statements = policy["Statement"].as_array().unwrap();
    for (i, statement) in statements.iter().enumerate() {
        let mut fewer = policy.clone();
        fewer["Statement"].as_array_mut().unwrap().remove(i);
        let results = evaluate(&fewer, &allowed);
        assert!(
            results.iter().any(|r| r != "Allowed"),
            "statement {i} is not needed: {statement}"
        );
    }
    // Bad input names it.
    for (args, expected) in [
        (&["--rds-db-user", "app"][..], "is not RESOURCE_ID/USER"),
        (
            &["--rds-db-user", "bogus/app"][..],
            "invalid RDS resource id `bogus`",
        ),
        (
            &["--dsql", "db.example.com"][..],
            "IAM names a DSQL cluster by its id",
        ),
    ] {
        let out = policy_command().args(args).output().unwrap();
        assert!(!out.status.success() && out.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// `--assume-role`: the function's policy is `sts:AssumeRole` on exactly that role; the role's own
/// policy (a second document) allows the declarations in the role's account, not in the
/// function's. A real IAM evaluator decides.
#[test]
fn with_an_assumed_role_the_function_may_assume_it_and_the_role_reads_in_its_own_account() {
    let role = "arn:aws:iam::222222222222:role/secrets-reader";
    let out = policy_command()
        .args([
            "--secret",
            "shared/api",
            "--param",
            "/shared/flag",
            "--assume-role",
            role,
            "--kms-key",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "--region",
            "us-east-1",
            "--account",
            "123456789012",
        ])
        .output()
        .unwrap();
    let both: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let function = &both["FunctionPolicy"];
    let role_policy = &both["RolePolicies"][role];
    assert!(lint(function).is_empty() && lint(role_policy).is_empty());
    assert_eq!(function["Statement"].as_array().unwrap().len(), 1, "{function}");
    // A key given by id is one of the role's account, in the role's document only.
    let key = "arn:aws:kms:us-east-1:222222222222:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    assert!(role_policy.to_string().contains(key), "{role_policy}");
    assert!(!function.to_string().contains("kms:"), "{function}");
    let results = evaluate(
        function,
        &[
            IamRequest::new("sts:AssumeRole", role, "123456789012"),
            IamRequest::new(
                "sts:AssumeRole",
                "arn:aws:iam::222222222222:role/other",
                "123456789012",
            ),
            IamRequest::new(
                "secretsmanager:GetSecretValue",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:shared/api-AbCdEf",
                "123456789012",
            ),
        ],
    );
    assert_eq!(
        results,
        ["Allowed", "ImplicitlyDenied", "ImplicitlyDenied"],
        "{function}"
    );
    // The evaluator ignores `kms:EncryptionContext:KEY` context keys (it matches variable keys
    // only in the `prefix/KEY` form), so a request cannot satisfy that condition: it is taken
    // out for the evaluation (`src/policy/tests.rs` checks its value), `kms:ViaService` and the
    // key are evaluated.
    let role_policy = &without_encryption_context(role_policy);
    let results = evaluate(
        role_policy,
        &[
            IamRequest::new(
                "secretsmanager:GetSecretValue",
                "arn:aws:secretsmanager:us-east-1:222222222222:secret:shared/api-AbCdEf",
                "222222222222",
            ),
            IamRequest::new(
                "ssm:GetParameters",
                "arn:aws:ssm:us-east-1:222222222222:parameter/shared/flag",
                "222222222222",
            ),
            IamRequest::new(
                "secretsmanager:GetSecretValue",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:shared/api-AbCdEf",
                "222222222222",
            ),
            IamRequest::new("sts:AssumeRole", role, "222222222222"),
            IamRequest::new("kms:Decrypt", key, "222222222222")
                .with("kms:ViaService", "ssm.us-east-1.amazonaws.com"),
            IamRequest::new("kms:Decrypt", key, "222222222222"),
        ],
    );
    assert_eq!(
        results,
        [
            "Allowed",
            "Allowed",
            "ImplicitlyDenied",
            "ImplicitlyDenied",
            "Allowed",
            "ImplicitlyDenied"
        ],
        "{role_policy}"
    );
    // Minimal: without any one of the role's statements, a request it allowed is denied.
    let allowed = [
        IamRequest::new(
            "secretsmanager:GetSecretValue",
            "arn:aws:secretsmanager:us-east-1:222222222222:secret:shared/api-AbCdEf",
            "222222222222",
        ),
        IamRequest::new("secretsmanager:BatchGetSecretValue", "*", "222222222222"),
        IamRequest::new(
            "secretsmanager:DescribeSecret",
            "arn:aws:secretsmanager:us-east-1:222222222222:secret:shared/api-AbCdEf",
            "222222222222",
        ),
        IamRequest::new(
            "ssm:GetParameters",
            "arn:aws:ssm:us-east-1:222222222222:parameter/shared/flag",
            "222222222222",
        ),
        IamRequest::new("kms:Decrypt", key, "222222222222")
            .with("kms:ViaService", "ssm.us-east-1.amazonaws.com"),
    ];
    assert!(
        evaluate(role_policy, &allowed).iter().all(|r| r == "Allowed"),
        "{role_policy}"
    );
    let statements = role_policy["Statement"].as_array().unwrap();
    for (i, statement) in statements.iter().enumerate() {
        let mut fewer = role_policy.clone();
        fewer["Statement"].as_array_mut().unwrap().remove(i);
        assert!(
            evaluate(&fewer, &allowed).iter().any(|r| r != "Allowed"),
            "role statement {i} is not needed: {statement}"
        );
    }
    let out = policy_command()
        .args(["--secret", "x", "--assume-role", "arn:aws:iam::2222:role/r"])
        .output()
        .unwrap();
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid role ARN"));
}

/// `policy` without its `kms:EncryptionContext:KEY` conditions, which the evaluator cannot match
/// (it matches variable context keys only in the `prefix/KEY` form): `kms:ViaService` and the key
/// are still evaluated; `src/policy/tests.rs` checks the context conditions' values.
fn without_encryption_context(policy: &Value) -> Value {
    let mut policy = policy.clone();
    for statement in policy["Statement"].as_array_mut().unwrap() {
        if let Some(like) = statement.pointer_mut("/Condition/StringLike") {
            let like = like.as_object_mut().unwrap();
            like.retain(|k, _| !k.starts_with("kms:EncryptionContext:"));
            if like.is_empty() {
                statement["Condition"]
                    .as_object_mut()
                    .unwrap()
                    .remove("StringLike");
            }
        }
    }
    policy
}

/// `--failover-region`: the replicas' ARNs in the other Region are allowed besides the
/// primary's, the replica Region's key only through that Region's Secrets Manager, and nothing
/// in a third Region; every statement is needed.
#[test]
fn with_a_failover_region_the_replicas_and_their_region_s_key_are_allowed() {
    let (east_key, west_key) = (
        "arn:aws:kms:us-east-1:123456789012:key/1111aaaa-12ab-34cd-56ef-1234567890ab",
        "arn:aws:kms:us-west-2:123456789012:key/2222bbbb-12ab-34cd-56ef-1234567890ab",
    );
    let out = policy_command()
        .args([
            "--secret",
            "shared/api",
            "--param",
            "/app/key",
            "--failover-region",
            "us-west-2",
            "--secret-kms-key",
            east_key,
            "--secret-kms-key",
            west_key,
            "--region",
            "us-east-1",
            "--account",
            "123456789012",
        ])
        .output()
        .unwrap();
    let printed = stdout_of(&out);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("note:"),
        "both Regions' keys given"
    );
    let policy: Value = serde_json::from_str(&printed).unwrap();
    assert!(lint(&policy).is_empty(), "{printed}");
    let policy = without_encryption_context(&policy);
    let secret =
        |region: &str| format!("arn:aws:secretsmanager:{region}:123456789012:secret:shared/api-AbCdEf");
    let param = |region: &str| format!("arn:aws:ssm:{region}:123456789012:parameter/app/key");
    let via = |region: &str| format!("secretsmanager.{region}.amazonaws.com");
    let account = "123456789012";
    let allowed = [
        IamRequest::new("secretsmanager:GetSecretValue", &secret("us-east-1"), account),
        IamRequest::new("secretsmanager:GetSecretValue", &secret("us-west-2"), account),
        IamRequest::new("secretsmanager:DescribeSecret", &secret("us-west-2"), account),
        IamRequest::new("secretsmanager:BatchGetSecretValue", "*", account),
        IamRequest::new("ssm:GetParameters", &param("us-east-1"), account),
        IamRequest::new("ssm:GetParameters", &param("us-west-2"), account),
        IamRequest::new("kms:Decrypt", east_key, account).with("kms:ViaService", &via("us-east-1")),
        IamRequest::new("kms:Decrypt", west_key, account).with("kms:ViaService", &via("us-west-2")),
    ];
    for (request, result) in allowed.iter().zip(evaluate(&policy, &allowed)) {
        assert_eq!(result, "Allowed", "{request:?} under {printed}");
    }
    let denied = [
        IamRequest::new("secretsmanager:GetSecretValue", &secret("eu-west-1"), account),
        IamRequest::new("ssm:GetParameters", &param("eu-west-1"), account),
        IamRequest::new("kms:Decrypt", east_key, account).with("kms:ViaService", &via("us-west-2")),
        IamRequest::new("kms:Decrypt", west_key, account).with("kms:ViaService", &via("us-east-1")),
    ];
    for (request, result) in denied.iter().zip(evaluate(&policy, &denied)) {
        assert_eq!(result, "ImplicitlyDenied", "{request:?} under {printed}");
    }
    let statements = policy["Statement"].as_array().unwrap();
    for (i, statement) in statements.iter().enumerate() {
        let mut fewer = policy.clone();
        fewer["Statement"].as_array_mut().unwrap().remove(i);
        assert!(
            evaluate(&fewer, &allowed).iter().any(|r| r != "Allowed"),
            "statement {i} is not needed: {statement}"
        );
    }
    let out = policy_command()
        .args([
            "--secret",
            "x",
            "--failover-region",
            "us-east-1",
            "--region",
            "us-east-1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the policy's --region"));
    // Only the primary's key: the replicas could not be decrypted; said on stderr.
    let out = policy_command()
        .args([
            "--secret",
            "x",
            "--failover-region",
            "us-west-2",
            "--secret-kms-key",
            east_key,
            "--region",
            "us-east-1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("note: no --secret-kms-key of us-west-2 given"),
        "{said}"
    );
}

/// AppConfig profiles: IAM matches their ARNs by ids. Declared by ids, the policy allows the two
/// data-plane actions on exactly that profile; declared by names, on any profile of the account
/// and Region (a name cannot be matched), with a note saying so. (No emulator request: moto has
/// no AppConfigData, and the proxy's emulation does not enforce IAM; the IAM evaluator decides.)
#[test]
fn appconfig_policies_allow_the_profile_declared_by_ids_and_say_when_names_widen_them() {
    let (region, account) = ("us-east-1", "123456789012");
    let arn = |app: &str, env: &str, profile: &str| {
        format!("arn:aws:appconfig:{region}:{account}:application/{app}/environment/{env}/configuration/{profile}")
    };
    let policy_for = |spec: &str| {
        let out = policy_command()
            .args(["--appconfig", spec, "--region", region, "--account", account])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let policy: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
        assert!(lint(&policy).is_empty(), "{:?}", lint(&policy));
        (policy, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let actions = [
        "appconfig:StartConfigurationSession",
        "appconfig:GetLatestConfiguration",
    ];

    let (by_ids, note) = policy_for("abc1234/env5678/prf9012");
    assert!(!note.contains("note: --appconfig"), "{note}");
    let allowed: Vec<IamRequest> = actions
        .iter()
        .map(|a| IamRequest::new(a, &arn("abc1234", "env5678", "prf9012"), account))
        .collect();
    for (request, result) in allowed.iter().zip(evaluate(&by_ids, &allowed)) {
        assert_eq!(result, "Allowed", "{request:?}");
    }
    let denied = [
        IamRequest::new(actions[1], &arn("abc1234", "env5678", "zzz9999"), account),
        IamRequest::new(actions[1], &arn("abc1234", "stg0000", "prf9012"), account),
        IamRequest::new(
            "appconfig:GetConfiguration",
            &arn("abc1234", "env5678", "prf9012"),
            account,
        ),
    ];
    for (request, result) in denied.iter().zip(evaluate(&by_ids, &denied)) {
        assert_eq!(result, "ImplicitlyDenied", "{request:?}");
    }
    // Minimal: without either statement (or action), a request is denied.
    for (i, _) in by_ids["Statement"].as_array().unwrap().iter().enumerate() {
        let mut fewer = by_ids.clone();
        fewer["Statement"].as_array_mut().unwrap().remove(i);
        assert!(
            evaluate(&fewer, &allowed).iter().any(|r| r != "Allowed"),
            "statement {i} is not needed"
        );
    }

    let (by_names, note) = policy_for("shop/prod/flags");
    assert!(note.contains("shop, prod, flags stand(s) as `*`"), "{note}");
    let any = IamRequest::new(actions[1], &arn("abc1234", "env5678", "prf9012"), account);
    let elsewhere = IamRequest::new(
        actions[1],
        &format!("arn:aws:appconfig:eu-west-1:{account}:application/abc1234/environment/env5678/configuration/prf9012"),
        account,
    );
    assert_eq!(
        evaluate(&by_names, &[any, elsewhere]),
        ["Allowed", "ImplicitlyDenied"]
    );

    let out = policy_command()
        .args(["--appconfig", "shop/prod"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not APPLICATION/ENVIRONMENT/PROFILE"));
}
