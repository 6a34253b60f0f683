//! Merging permissions into as few statements as allow exactly the same requests.
//!
//! Two grants of one action are merged when that allows nothing more than the two did:
//! - with equal conditions, their resources are united;
//! - with equal resources, conditions that differ only in the values of one key under an
//!   "any of these" operator (`StringEquals`, `StringLike`, ...) have those values united.
//!
//! Then grants with equal resources and conditions become one statement with several actions.

use super::PolicyStatement;
use crate::iam::{Conditions, Permission};

/// Operators whose values are alternatives, so that uniting the values of two grants allows
/// what either allowed and nothing else. Negated and `ForAllValues` operators are not.
const ANY_OF_OPERATORS: &[&str] = &[
    "StringEquals",
    "StringLike",
    "StringEqualsIgnoreCase",
    "ArnEquals",
    "ArnLike",
    "ForAnyValue:StringEquals",
    "ForAnyValue:StringLike",
];

/// One action on resources under conditions; resources in first-seen order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    action: String,
    resources: Vec<String>,
    conditions: Conditions,
}

pub(super) fn statements(permissions: Vec<Permission>) -> Vec<PolicyStatement> {
    let mut grants: Vec<Grant> = Vec::new();
    for p in permissions {
        let grant = Grant {
            action: p.action,
            resources: vec![p.resource],
            conditions: p.conditions,
        };
        if !grants.contains(&grant) {
            grants.push(grant);
        }
    }
    while merge_one(&mut grants) {}

    let mut statements: Vec<PolicyStatement> = Vec::new();
    for grant in grants {
        match statements
            .iter_mut()
            .find(|s| same_set(&s.resources, &grant.resources) && s.conditions == grant.conditions)
        {
            Some(s) => s.actions.push(grant.action),
            None => statements.push(PolicyStatement {
                sid: String::new(),
                actions: vec![grant.action],
                resources: grant.resources,
                conditions: grant.conditions,
            }),
        }
    }
    // The services' own statements first, then the keys their values are decrypted with.
    statements.sort_by_key(|s| match s.actions[0].split(':').next() {
        Some("ssm") => 0,
        Some("secretsmanager") => 1,
        Some("kms") => 3,
        _ => 2,
    });
    name_statements(&mut statements);
    statements
}

/// Merges one pair of grants, if some pair can be; returns whether it did.
fn merge_one(grants: &mut Vec<Grant>) -> bool {
    for i in 0..grants.len() {
        for j in i + 1..grants.len() {
            let (a, b) = (&grants[i], &grants[j]);
            if a.action != b.action {
                continue;
            }
            if a.conditions == b.conditions {
                let extra: Vec<String> = b
                    .resources
                    .iter()
                    .filter(|r| !a.resources.contains(r))
                    .cloned()
                    .collect();
                grants[i].resources.extend(extra);
                grants.remove(j);
                return true;
            }
            if same_set(&a.resources, &b.resources) {
                if let Some(conditions) = united_conditions(&a.conditions, &b.conditions) {
                    grants[i].conditions = conditions;
                    grants.remove(j);
                    return true;
                }
            }
        }
    }
    false
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

/// `a` with the values of `b` added, when the two have the same operators and keys and differ in
/// the values of exactly one key under an "any of" operator.
fn united_conditions(a: &Conditions, b: &Conditions) -> Option<Conditions> {
    let keys = |c: &Conditions| -> Vec<(String, String)> {
        c.iter()
            .flat_map(|(op, m)| m.keys().map(move |k| (op.clone(), k.clone())))
            .collect()
    };
    if keys(a) != keys(b) {
        return None;
    }
    let differing: Vec<(String, String)> = keys(a)
        .into_iter()
        .filter(|(op, k)| a[op][k] != b[op][k])
        .collect();
    let [(op, key)] = differing.as_slice() else {
        return None;
    };
    if !ANY_OF_OPERATORS.contains(&op.as_str()) {
        return None;
    }
    let mut united = a.clone();
    let values = united.get_mut(op)?.get_mut(key)?;
    values.extend(b[op][key].iter().cloned());
    Some(united)
}

/// Gives each statement a `Sid` made of its actions (`SsmGetParameters`), with the service a
/// `kms:ViaService` condition names (`KmsDecryptViaSsm`); repeated names get a number.
fn name_statements(statements: &mut [PolicyStatement]) {
    let mut used: Vec<String> = Vec::new();
    for s in statements.iter_mut() {
        let mut name = String::new();
        let mut last_service = "";
        for action in &s.actions {
            let (service, op) = action.split_once(':').unwrap_or(("", action));
            if service != last_service {
                name.push_str(&service_name(service));
                last_service = service;
            }
            name.push_str(op);
        }
        let via = s
            .conditions
            .get("StringEquals")
            .and_then(|m| m.get("kms:ViaService"))
            .and_then(|v| v.iter().next())
            .and_then(|v| v.split('.').next());
        if let Some(via) = via {
            name.push_str("Via");
            name.push_str(&service_name(via));
        }
        let mut name: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
        if name.is_empty() {
            name.push_str("Statement");
        }
        let base = name.clone();
        let mut n = 2;
        while used.contains(&name) {
            name = format!("{base}{n}");
            n += 1;
        }
        used.push(name.clone());
        s.sid = name;
    }
}

fn service_name(service: &str) -> String {
    match service {
        "ssm" => "Ssm".into(),
        "secretsmanager" => "SecretsManager".into(),
        "kms" => "Kms".into(),
        other => {
            let mut chars = other.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        }
    }
}
