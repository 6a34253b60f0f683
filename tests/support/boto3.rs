//! boto3 (botocore) as the reference implementation of the IAM auth tokens: the same inputs and
//! signing time give the token botocore writes.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// One token to make: `kind` is `rds`, `dsql` or `dsql_admin`.
#[derive(serde::Serialize)]
pub struct TokenCase<'a> {
    pub kind: &'a str,
    pub access_key: &'a str,
    pub secret_key: &'a str,
    pub session_token: Option<&'a str>,
    pub region: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub expires_in: u64,
    /// Signing time, seconds since the epoch (UTC).
    pub time: u64,
}

const SCRIPT: &str = r#"
import datetime, json, sys
from unittest import mock
import boto3, botocore.auth
out = []
for c in json.load(sys.stdin):
    at = datetime.datetime.fromtimestamp(c["time"], datetime.timezone.utc).replace(tzinfo=None)
    session = boto3.session.Session(
        aws_access_key_id=c["access_key"], aws_secret_access_key=c["secret_key"],
        aws_session_token=c["session_token"], region_name=c["region"])
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=at):
        if c["kind"] == "rds":
            t = session.client("rds").generate_db_auth_token(c["host"], c["port"], c["user"], Region=c["region"])
        elif c["kind"] == "dsql":
            t = session.client("dsql").generate_db_connect_auth_token(c["host"], c["region"], c["expires_in"])
        else:
            t = session.client("dsql").generate_db_connect_admin_auth_token(c["host"], c["region"], c["expires_in"])
    out.append(t)
print(json.dumps(out))
"#;

/// Makes sure `python3` has a boto3 that knows DSQL (and patches botocore's clock through
/// `botocore.auth.get_current_datetime`); otherwise installs boto3 with pip. Panics if that fails.
pub fn ensure_boto3() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let usable = || {
            Command::new("python3")
                .args([
                    "-c",
                    "import boto3, botocore.auth; botocore.auth.get_current_datetime; \
                     boto3.session.Session().client('dsql', region_name='us-east-1')",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if usable() {
            return;
        }
        eprintln!(
            "support: boto3 with DSQL is not installed; running `python3 -m pip install --quiet -U boto3`"
        );
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "-U", "boto3"])
            .stdin(Stdio::null())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()) && usable(),
            "support: could not install a boto3 that knows DSQL; `python3 -m pip install -U boto3` by hand"
        );
    });
}

/// The tokens botocore writes for `cases`, in order.
pub fn reference_tokens(cases: &[TokenCase<'_>]) -> Vec<String> {
    ensure_boto3();
    super::python_json("boto3", SCRIPT, &[], &[], &cases)
}

/// Runs AppConfig control-plane calls through boto3 against `endpoint` (the fault proxy, which
/// forwards what moto has and emulates the rest): `steps` is a JSON list of
/// `{"op": "setup", "app", "env", "profile"}` (creates them; answers their ids) and
/// `{"op": "deploy", "app", "env", "profile", "content", "content_type", "label"}` (a new hosted
/// version, deployed; answers its number; `app_id`, `env_id`, `profile_id` name what an earlier
/// run set up). Answers one JSON value per step.
pub fn appconfig(endpoint: &str, steps: &serde_json::Value) -> Vec<serde_json::Value> {
    const SCRIPT: &str = r#"
import json, sys
import boto3, botocore
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="testing",
          aws_secret_access_key="testing", config=botocore.config.Config(retries={"max_attempts": 1}))
ac = boto3.client("appconfig", **kw)
ids, out = {}, []
for s in json.load(sys.stdin):
    if s["op"] == "setup":
        app = ac.create_application(Name=s["app"])["Id"]
        env = ac.create_environment(ApplicationId=app, Name=s["env"])["Id"]
        prof = ac.create_configuration_profile(ApplicationId=app, Name=s["profile"], LocationUri="hosted")["Id"]
        ids[(s["app"], s["env"], s["profile"])] = (app, env, prof)
        out.append({"app": app, "env": env, "profile": prof})
    else:
        app, env, prof = ids.get((s["app"], s["env"], s["profile"])) or (s["app_id"], s["env_id"], s["profile_id"])
        extra = {"VersionLabel": s["label"]} if s.get("label") else {}
        v = ac.create_hosted_configuration_version(ApplicationId=app, ConfigurationProfileId=prof,
            Content=s["content"].encode(), ContentType=s["content_type"], **extra)["VersionNumber"]
        ac.start_deployment(ApplicationId=app, EnvironmentId=env, DeploymentStrategyId="AppConfig.AllAtOnce",
            ConfigurationProfileId=prof, ConfigurationVersion=str(v))
        out.append(v)
print(json.dumps(out))
"#;
    ensure_boto3();
    super::python_json("boto3", SCRIPT, &[endpoint], &[], steps)
}
