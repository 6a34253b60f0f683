//! Powertools for AWS Lambda (Python) as the reference implementation of feature flags: the same
//! schema, context and clock give the answers its `FeatureFlags` gives.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The script: reads cases from stdin, answers each with Powertools' `FeatureFlags` over an
/// in-memory store, the schedule actions' clock fixed at the case's `now` (microseconds since
/// the epoch). Per case: `{"error": true}` when the schema is refused (any exception from
/// `get_configuration`), else per context the value of every feature name asked and the
/// enabled features (`{"raised": "AttributeError"}` when `get_enabled_features` raised).
const SCRIPT: &str = r#"
import datetime, json, sys, warnings
from dateutil.tz import gettz
from aws_lambda_powertools.utilities.feature_flags import FeatureFlags, comparators
from aws_lambda_powertools.utilities.feature_flags.base import StoreProvider

warnings.simplefilter("ignore")

class Store(StoreProvider):
    def __init__(self, doc):
        self.doc = doc
    def get_raw_configuration(self):
        return self.doc
    def get_configuration(self):
        return self.doc

MISSING = "__missing__"
out = []
for case in json.load(sys.stdin):
    secs, micros = divmod(case["now"], 1_000_000)
    now = datetime.datetime.fromtimestamp(secs, datetime.timezone.utc).replace(microsecond=micros)
    comparators._get_now_from_timezone = lambda tz: now.astimezone(tz if tz is not None else gettz("UTC"))
    flags = FeatureFlags(store=Store(json.loads(case["schema"])))
    try:
        flags.get_configuration()
    except Exception:
        out.append({"error": True})
        continue
    answers = []
    for ctx in case["contexts"]:
        values = {name: flags.evaluate(name=name, context=ctx, default=MISSING) for name in case["names"]}
        try:
            enabled = flags.get_enabled_features(context=ctx)
        except Exception as e:
            enabled = {"raised": type(e).__name__}
        answers.append({"values": values, "enabled": enabled})
    out.append({"answers": answers})
print(json.dumps(out))
"#;

/// Makes sure `python3` can import Powertools' feature flags (and dateutil); otherwise installs
/// them with pip. Panics if that fails.
pub fn ensure_powertools() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let usable = || {
            Command::new("python3")
                .args([
                    "-c",
                    "import dateutil.tz; from aws_lambda_powertools.utilities.feature_flags import FeatureFlags, comparators; comparators._get_now_from_timezone",
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
        eprintln!("support: Powertools is not installed; running `python3 -m pip install --quiet aws-lambda-powertools python-dateutil`");
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "aws-lambda-powertools", "python-dateutil"])
            .stdin(Stdio::null())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()) && usable(),
            "support: could not install Powertools; `python3 -m pip install aws-lambda-powertools python-dateutil` by hand"
        );
    });
}

/// Powertools' answers to `cases` (a JSON array), in order.
pub fn answers(cases: &serde_json::Value) -> Vec<serde_json::Value> {
    ensure_powertools();
    // A `TIMEZONE` that is present but false is the process's zone in Powertools: UTC, as on
    // Lambda.
    super::python_json("Powertools", SCRIPT, &[], &[("TZ", "UTC")], cases)
}

/// The version of Powertools the answers come from.
pub fn version() -> String {
    ensure_powertools();
    let out = Command::new("python3")
        .args([
            "-c",
            "from importlib.metadata import version; print(version('aws-lambda-powertools'))",
        ])
        .output()
        .expect("run python3");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
