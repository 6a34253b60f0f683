//! The AppConfig the test proxy emulates (`tests/support/appconfig.rs`), checked with boto3's
//! `appconfig` and `appconfigdata` clients: botocore parses every answer by the service's own
//! model (headers into fields, error codes and the details union), and the test checks what it
//! parsed: statuses, fields and error shapes.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::{moto, FaultProxy};

/// Seeds an application through boto3, deploys two versions and walks a session; prints one
/// JSON object of what botocore parsed.
const SCRIPT: &str = r#"
import json, sys, time
import boto3, botocore
endpoint = sys.argv[1]
kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
          aws_secret_access_key="testing", config=botocore.config.Config(retries={"max_attempts": 1}))
ac, data = boto3.client("appconfig", **kw), boto3.client("appconfigdata", **kw)
out = {}
app = ac.create_application(Name="shop")["Id"]
env = ac.create_environment(ApplicationId=app, Name="prod")
out["env_state"] = env["State"]
prof = ac.create_configuration_profile(ApplicationId=app, Name="flags", LocationUri="hosted")["Id"]
v1 = ac.create_hosted_configuration_version(ApplicationId=app, ConfigurationProfileId=prof,
    Content=b'{"beta": {"enabled": true}}', ContentType="application/json", VersionLabel="v1")["VersionNumber"]
def err(f):
    try:
        f()
        return None
    except botocore.exceptions.ClientError as e:
        r = e.response
        return {"code": r["Error"]["Code"], "status": r["ResponseMetadata"]["HTTPStatusCode"],
                "details": r.get("Details"), "resource": r.get("ResourceType")}
out["before_deploy"] = err(lambda: data.start_configuration_session(ApplicationIdentifier="shop",
    EnvironmentIdentifier="prod", ConfigurationProfileIdentifier="flags"))
dep = ac.start_deployment(ApplicationId=app, EnvironmentId=env["Id"], DeploymentStrategyId="AppConfig.AllAtOnce",
    ConfigurationProfileId=prof, ConfigurationVersion=str(v1))
out["deployment"] = [dep["State"], dep["DeploymentNumber"]]
out["missing_env"] = err(lambda: data.start_configuration_session(ApplicationIdentifier="shop",
    EnvironmentIdentifier="staging", ConfigurationProfileIdentifier="flags"))
out["bad_interval"] = err(lambda: data.start_configuration_session(ApplicationIdentifier="shop",
    EnvironmentIdentifier="prod", ConfigurationProfileIdentifier="flags", RequiredMinimumPollIntervalInSeconds=90000))
s = data.start_configuration_session(ApplicationIdentifier=app, EnvironmentIdentifier="prod",
    ConfigurationProfileIdentifier="flags", RequiredMinimumPollIntervalInSeconds=15)
out["session_status"] = s["ResponseMetadata"]["HTTPStatusCode"]
first = data.get_latest_configuration(ConfigurationToken=s["InitialConfigurationToken"])
out["first"] = [first["Configuration"].read().decode(), first.get("VersionLabel"), first["ContentType"],
                first["NextPollIntervalInSeconds"]]
out["reused"] = err(lambda: data.get_latest_configuration(ConfigurationToken=s["InitialConfigurationToken"]))
out["too_early"] = err(lambda: data.get_latest_configuration(ConfigurationToken=first["NextPollConfigurationToken"]))
print(json.dumps(out))
sys.stdout.flush()
sys.stdin.readline()  # the test lets the poll interval pass
same = data.get_latest_configuration(ConfigurationToken=first["NextPollConfigurationToken"])
v2 = ac.create_hosted_configuration_version(ApplicationId=app, ConfigurationProfileId=prof,
    Content=b"plain text", ContentType="text/plain")["VersionNumber"]
s2 = data.start_configuration_session(ApplicationIdentifier="shop", EnvironmentIdentifier="prod",
    ConfigurationProfileIdentifier=prof, RequiredMinimumPollIntervalInSeconds=15)
other = data.get_latest_configuration(ConfigurationToken=s2["InitialConfigurationToken"])
ac.start_deployment(ApplicationId=app, EnvironmentId=env["Id"], DeploymentStrategyId="AppConfig.AllAtOnce",
    ConfigurationProfileId=prof, ConfigurationVersion=str(v2))
print(json.dumps({"unchanged": [same["Configuration"].read().decode(), same.get("VersionLabel")],
                  "second_session": [other["Configuration"].read().decode(), other.get("VersionLabel")]}))
sys.stdout.flush()
sys.stdin.readline()
new = data.get_latest_configuration(ConfigurationToken=same["NextPollConfigurationToken"])
print(json.dumps({"deployed": [new["Configuration"].read().decode(), new.get("VersionLabel"), new["ContentType"]]}))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_emulated_appconfig_answers_as_botocore_expects() {
    support::boto3::ensure_boto3();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT, &proxy.endpoint()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run python3");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let read = tokio::task::spawn_blocking(move || {
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        (line, stdout)
    });
    let (line, stdout) = read.await.unwrap();
    let out: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(out["env_state"], "READY_FOR_DEPLOYMENT", "{out}");
    assert_eq!(out["before_deploy"]["code"], "ResourceNotFoundException", "{out}");
    assert_eq!(out["before_deploy"]["status"], 404, "{out}");
    assert_eq!(out["deployment"], serde_json::json!(["COMPLETE", 1]), "{out}");
    assert_eq!(out["missing_env"]["code"], "ResourceNotFoundException", "{out}");
    assert_eq!(out["bad_interval"]["code"], "BadRequestException", "{out}");
    assert_eq!(out["session_status"], 201, "{out}");
    assert_eq!(
        out["first"],
        serde_json::json!([r#"{"beta": {"enabled": true}}"#, "v1", "application/json", 15]),
        "{out}"
    );
    assert_eq!(out["reused"]["code"], "BadRequestException", "{out}");
    assert_eq!(
        out["reused"]["details"],
        serde_json::json!({"InvalidParameters": {"ConfigurationToken": {"Problem": "Corrupted"}}}),
        "botocore parses the details union: {out}"
    );
    assert_eq!(
        out["too_early"]["details"]["InvalidParameters"]["ConfigurationToken"]["Problem"],
        "PollIntervalNotSatisfied",
        "{out}"
    );
    assert_eq!(proxy.calls("StartConfigurationSession"), 4);
    assert_eq!(proxy.calls("GetLatestConfiguration"), 3);
    assert_eq!(proxy.appconfig().sessions(), 1, "refused starts make no session");

    let mut next = |stdout: std::io::BufReader<std::process::ChildStdout>| {
        proxy.appconfig().let_poll_intervals_pass();
        child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let mut stdout = stdout;
            std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
            let out: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            (out, stdout)
        })
    };
    let (out, stdout) = next(stdout).await.unwrap();
    assert_eq!(
        out["unchanged"],
        serde_json::json!(["", null]),
        "unchanged: an empty body and no label: {out}"
    );
    assert_eq!(
        out["second_session"],
        serde_json::json!([r#"{"beta": {"enabled": true}}"#, "v1"]),
        "a new session is served the deployed version, not the newest hosted one: {out}"
    );
    let (out, _) = next(stdout).await.unwrap();
    assert_eq!(
        out["deployed"],
        serde_json::json!(["plain text", null, "text/plain"]),
        "the deployed version reaches the session; no label when it has none: {out}"
    );
    assert!(child.wait().unwrap().success());
}
