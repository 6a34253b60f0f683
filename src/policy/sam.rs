//! The SAM form of a policy: a `Policies:` list holding the policy document, in block YAML.
//! Every string is double-quoted (JSON escapes are valid YAML); a string holding a
//! CloudFormation placeholder (`${AWS::Region}`) is a `!Sub` string.

use std::fmt::Write;

use super::{Policy, PolicyStatement};

pub(super) fn render(policy: &Policy) -> String {
    let mut out = String::from("Policies:\n  - Version: \"2012-10-17\"\n");
    if policy.statements.is_empty() {
        out.push_str("    Statement: []\n");
        return out;
    }
    out.push_str("    Statement:\n");
    for s in &policy.statements {
        statement(&mut out, s);
    }
    out
}

fn statement(out: &mut String, s: &PolicyStatement) {
    let _ = writeln!(out, "      - Sid: {}", scalar(&s.sid));
    out.push_str("        Effect: Allow\n");
    list(out, "Action", &s.actions, 8);
    list(out, "Resource", &s.resources, 8);
    if s.conditions.is_empty() {
        return;
    }
    out.push_str("        Condition:\n");
    for (op, keys) in &s.conditions {
        let _ = writeln!(out, "          {}:", scalar(op));
        for (key, values) in keys {
            let values: Vec<String> = values.iter().cloned().collect();
            list(out, &scalar(key), &values, 12);
        }
    }
}

/// `name: value`, or `name:` followed by one `- value` line per value.
fn list(out: &mut String, name: &str, values: &[String], indent: usize) {
    let pad = " ".repeat(indent);
    match values {
        [one] => {
            let _ = writeln!(out, "{pad}{name}: {}", scalar(one));
        }
        many => {
            let _ = writeln!(out, "{pad}{name}:");
            for v in many {
                let _ = writeln!(out, "{pad}  - {}", scalar(v));
            }
        }
    }
}

/// A double-quoted YAML string; `!Sub` when it holds a CloudFormation placeholder.
fn scalar(text: &str) -> String {
    let quoted = serde_json::to_string(text).expect("a string serializes");
    if text.contains("${AWS::") {
        format!("!Sub {quoted}")
    } else {
        quoted
    }
}
