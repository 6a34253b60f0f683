//! The policy builder's ARNs and merging. Whether a policy allows what loading needs, and nothing
//! else, is checked against a real IAM evaluator and the emulator in `cli/tests/policy.rs`.

use std::sync::Arc;

use super::*;
use crate::iam::Permission;
use crate::{CallContext, ItemResult, Source};

fn config() -> aws_types::SdkConfig {
    aws_types::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build()
}

fn explicit() -> PolicyBuilder {
    Policy::builder().region("us-east-1").account("123456789012")
}

fn statement<'a>(policy: &'a Policy, sid: &str) -> &'a PolicyStatement {
    policy
        .statements()
        .iter()
        .find(|s| s.sid == sid)
        .unwrap_or_else(|| panic!("no statement {sid} in {policy}"))
}

#[cfg(feature = "ssm")]
#[test]
fn parameters_lose_their_selectors_and_merge_into_one_statement() {
    let ssm = crate::SsmSource::new(&config());
    let policy = explicit()
        .declaration(&ssm.parameter("a", "/prod/db/password:3"))
        .declaration(&ssm.parameter("b", "plain:prod"))
        .declaration(&ssm.parameter("c", "arn:aws:ssm:eu-west-1:111122223333:parameter/shared/key:2"))
        .declaration(&ssm.parameter("d", "/prod/db/password"))
        .declaration(&ssm.path("/prod/app/"))
        .build()
        .unwrap();
    assert_eq!(policy.statements().len(), 2, "{policy}");
    assert_eq!(
        statement(&policy, "SsmGetParameters").resources,
        [
            "arn:aws:ssm:us-east-1:123456789012:parameter/prod/db/password",
            "arn:aws:ssm:us-east-1:123456789012:parameter/plain",
            "arn:aws:ssm:eu-west-1:111122223333:parameter/shared/key",
        ]
    );
    assert_eq!(
        statement(&policy, "SsmGetParametersByPath").resources,
        ["arn:aws:ssm:us-east-1:123456789012:parameter/prod/app"]
    );
}

#[cfg(feature = "ssm")]
#[test]
fn placeholders_unless_region_and_account_are_given() {
    let ssm = crate::SsmSource::new(&config());
    let decl = ssm.parameter("a", "/a");
    let policy = Policy::builder().declaration(&decl).build().unwrap();
    assert_eq!(
        policy.statements()[0].resources,
        ["arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/a"]
    );
    let china = Policy::builder()
        .region("cn-north-1")
        .declaration(&decl)
        .build()
        .unwrap();
    assert_eq!(
        china.statements()[0].resources,
        ["arn:aws-cn:ssm:cn-north-1:${AWS::AccountId}:parameter/a"]
    );
    let any = explicit().account("*").declaration(&decl).build().unwrap();
    assert_eq!(
        any.statements()[0].resources,
        ["arn:aws:ssm:us-east-1:*:parameter/a"]
    );
}

#[cfg(feature = "ssm")]
#[test]
fn customer_managed_key_of_securestrings_is_scoped_to_ssm_and_the_declared_parameters() {
    let ssm = crate::SsmSource::new(&config());
    let key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let policy = explicit()
        .ssm_kms_key(key)
        .declaration(&ssm.parameter("a", "/prod/a"))
        .declaration(&ssm.parameter("b", "/prod/b:1"))
        .declaration(&ssm.path("/prod/app"))
        .build()
        .unwrap();
    let decrypt = statement(&policy, "KmsDecryptViaSsm");
    assert_eq!(decrypt.resources, [key]);
    let like: Vec<&String> = decrypt.conditions["StringLike"]["kms:EncryptionContext:PARAMETER_ARN"]
        .iter()
        .collect();
    assert_eq!(
        like,
        [
            "arn:aws:ssm:us-east-1:123456789012:parameter/prod/a",
            "arn:aws:ssm:us-east-1:123456789012:parameter/prod/app/*",
            "arn:aws:ssm:us-east-1:123456789012:parameter/prod/b",
        ]
    );
    let via: Vec<&String> = decrypt.conditions["StringEquals"]["kms:ViaService"]
        .iter()
        .collect();
    assert_eq!(via, ["ssm.us-east-1.amazonaws.com"]);

    // Without decryption, no kms:Decrypt; a key id is put in the scope's account.
    let plain = crate::SsmSource::new(&config()).with_decryption(false);
    let policy = explicit()
        .ssm_kms_key("1234abcd-12ab-34cd-56ef-1234567890ab")
        .declaration(&plain.parameter("a", "/prod/a"))
        .build()
        .unwrap();
    assert_eq!(policy.statements().len(), 1, "{policy}");
    let policy = explicit()
        .ssm_kms_key("1234abcd-12ab-34cd-56ef-1234567890ab")
        .declaration(&ssm.parameter("a", "/prod/a"))
        .build()
        .unwrap();
    assert_eq!(statement(&policy, "KmsDecryptViaSsm").resources, [key]);
}

#[cfg(feature = "ssm")]
#[test]
fn patterns_describe_but_never_load() {
    let ssm = crate::SsmSource::new(&config());
    let decl = ssm.parameter("tenant", "/tenants/*/api-key");
    let policy = explicit().declaration(&decl).build().unwrap();
    assert_eq!(
        policy.statements()[0].resources,
        ["arn:aws:ssm:us-east-1:123456789012:parameter/tenants/*/api-key"]
    );
    let err = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(crate::Secrets::builder().add(decl).load())
        .unwrap_err();
    assert!(err.to_string().contains("`*` and `?` make it a pattern"), "{err}");
    // A name that is malformed besides its wildcard is still an error.
    let err = explicit()
        .declaration(&ssm.parameter("bad", "/tenants/*//x"))
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid SSM parameter name `/tenants/*//x`"),
        "{err}"
    );
}

#[cfg(feature = "ssm")]
#[test]
fn a_secrets_manager_reference_needs_the_secret_too() {
    let ssm = crate::SsmSource::new(&config());
    let policy = explicit()
        .declaration(&ssm.parameter("db", "/aws/reference/secretsmanager/prod/db"))
        .build()
        .unwrap();
    assert_eq!(
        statement(&policy, "SecretsManagerGetSecretValue").resources,
        ["arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-??????"]
    );
    // Secrets Manager decrypts it with its own key, not SSM's.
    let policy = Policy::builder()
        .region("cn-north-1")
        .ssm_kms_key("k-ssm")
        .secrets_manager_kms_key("k-sm")
        .declaration(&ssm.parameter("db", "/aws/reference/secretsmanager/prod/db"))
        .build()
        .unwrap();
    let decrypt = statement(&policy, "KmsDecryptViaSecretsManager");
    assert!(decrypt.resources[0].ends_with(":key/k-sm"), "{policy}");
    assert!(decrypt.conditions["StringEquals"]["kms:ViaService"]
        .contains("secretsmanager.cn-north-1.amazonaws.com.cn"));
    assert_eq!(policy.statements().len(), 3, "{policy}");
}

#[cfg(feature = "secretsmanager")]
#[test]
fn secrets_match_their_random_suffix_and_batch_on_star() {
    let sm = crate::SecretsManagerSource::new(&config());
    let full = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/full-AbC123";
    let policy = explicit()
        .declaration(&sm.secret("a", "prod/db"))
        .declaration(&sm.secret("b", full))
        .declaration(&sm.secret(
            "c",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/partial",
        ))
        .declaration(&sm.secret("d", "tenants/*"))
        .build()
        .unwrap();
    let read = statement(&policy, "SecretsManagerGetSecretValueDescribeSecret");
    assert_eq!(
        read.resources,
        [
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-??????",
            full,
            // A full ARN reads like a partial one whose name ends in `-AbC123`: both are allowed.
            &format!("{full}-??????"),
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/partial-??????",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:tenants/*",
        ]
    );
    assert_eq!(
        statement(&policy, "SecretsManagerBatchGetSecretValue").resources,
        ["*"]
    );
    assert_eq!(policy.statements().len(), 2, "{policy}");

    // A partial ARN whose name ends in `-` and six letters (`db-master`) is not taken for a full
    // one: the secret's real ARN is `...app/db-master-XXXXXX`.
    let partial = "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db-master";
    let policy = explicit().declaration(&sm.secret("m", partial)).build().unwrap();
    let read = statement(&policy, "SecretsManagerGetSecretValueDescribeSecret");
    assert!(
        read.resources.contains(&format!("{partial}-??????")),
        "{:?}",
        read.resources
    );

    // A fixed version is never refreshed and never batched; another stage is not batched.
    let policy = explicit()
        .declaration(&sm.secret_version("v", "prod/signing", "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111"))
        .declaration(&sm.secret_at_stage("p", "prod/db", "AWSPREVIOUS"))
        .build()
        .unwrap();
    let get = statement(&policy, "SecretsManagerGetSecretValue");
    assert_eq!(get.resources.len(), 2, "{policy}");
    let describe = statement(&policy, "SecretsManagerDescribeSecret");
    assert_eq!(
        describe.resources,
        ["arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-??????"]
    );
    assert_eq!(policy.statements().len(), 2, "{policy}");

    let key = "arn:aws:kms:us-east-1:123456789012:key/k-1";
    let policy = explicit()
        .secrets_manager_kms_key(key)
        .declaration(&sm.secret("a", "prod/db"))
        .build()
        .unwrap();
    let decrypt = statement(&policy, "KmsDecryptViaSecretsManager");
    assert!(
        decrypt.conditions["StringLike"]["kms:EncryptionContext:SecretARN"]
            .contains("arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-??????")
    );

    // A pattern whose stage is malformed is an error, not a pattern.
    let err = explicit()
        .declaration(&sm.secret_at_stage("p", "tenants/*", "bad stage"))
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("invalid version stage `bad stage`"),
        "{err}"
    );
}

#[cfg(feature = "kms")]
#[test]
fn kms_ciphertext_is_scoped_to_its_key_and_context() {
    use crate::Ciphertext;
    let kms = crate::KmsSource::new(&config());
    let decl = |key: Option<&str>| {
        let mut c = Ciphertext::base64("AQICAHh=").context("app", "billing");
        if let Some(key) = key {
            c = c.key_id(key);
        }
        kms.decrypt("k", c)
    };
    let resources = |key: Option<&str>| {
        let policy = explicit().declaration(&decl(key)).build().unwrap();
        let s = &policy.statements()[0];
        assert_eq!(s.actions, ["kms:Decrypt"]);
        assert!(s.conditions["StringEquals"]["kms:EncryptionContext:app"].contains("billing"));
        (
            s.resources.clone(),
            s.conditions["StringEquals"].get("kms:RequestAlias").cloned(),
        )
    };
    assert_eq!(
        resources(Some("1234abcd")).0,
        ["arn:aws:kms:us-east-1:123456789012:key/1234abcd"]
    );
    assert_eq!(
        resources(Some("arn:aws:kms:eu-west-1:111122223333:key/k")).0,
        ["arn:aws:kms:eu-west-1:111122223333:key/k"]
    );
    let (any, alias) = resources(Some("alias/app"));
    assert_eq!(any, ["arn:aws:kms:us-east-1:123456789012:key/*"]);
    assert!(alias.unwrap().contains("alias/app"));
    let (any, alias) = resources(Some("arn:aws:kms:eu-west-1:111122223333:alias/app"));
    assert_eq!(any, ["arn:aws:kms:eu-west-1:111122223333:key/*"]);
    assert!(alias.unwrap().contains("alias/app"));
    assert_eq!(resources(None).0, ["arn:aws:kms:us-east-1:123456789012:key/*"]);
}

#[test]
fn bad_inputs_name_the_input() {
    for (builder, expected) in [
        (Policy::builder().region("US East"), "invalid Region `US East`"),
        (Policy::builder().account("12345"), "invalid account id `12345`"),
        (
            Policy::builder().ssm_kms_key("alias/app"),
            "invalid KMS key `alias/app`",
        ),
        (
            Policy::builder().ssm_kms_key("arn:aws:kms:us-east-1:123456789012:alias/app"),
            "invalid KMS key",
        ),
    ] {
        let err = builder.build().unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
    }
}

struct Undescribed;

impl Source for Undescribed {
    type Item = String;
    fn kind(&self) -> &'static str {
        "custom"
    }
    async fn fetch(&self, items: &[String], _: &CallContext) -> Vec<ItemResult> {
        items.iter().map(|_| Ok(Vec::new())).collect()
    }
}

#[test]
fn a_source_that_does_not_describe_its_permissions_fails_the_policy() {
    let decl = crate::Declaration::new("flags", Arc::new(Undescribed), "x".to_owned());
    let err = Policy::builder().declaration(&decl).build().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("invalid declaration `flags`"), "{text}");
    assert!(text.contains("source `custom`"), "{text}");
}

#[test]
fn merging_never_widens_what_is_allowed() {
    let key = "arn:aws:kms:us-east-1:123456789012:key/k";
    let p = |op: &str, value: &str| {
        Permission::new("kms:Decrypt", key).condition(op, "kms:EncryptionContext:app", value)
    };
    // Alternatives of one key under StringEquals: one statement allowing either.
    let merged = merge::statements(vec![p("StringEquals", "a"), p("StringEquals", "b")]);
    assert_eq!(merged.len(), 1);
    assert_eq!(
        merged[0].conditions["StringEquals"]["kms:EncryptionContext:app"].len(),
        2
    );
    // Under a negated operator, uniting values would allow less, not either: kept apart.
    let apart = merge::statements(vec![p("StringNotEquals", "a"), p("StringNotEquals", "b")]);
    assert_eq!(apart.len(), 2);
    assert_eq!(apart[1].sid, "KmsDecrypt2");
    // Two keys differing: kept apart (a union would allow mixed pairs).
    let two = |a: &str, b: &str| {
        Permission::new("kms:Decrypt", key)
            .condition("StringEquals", "kms:EncryptionContext:a", a)
            .condition("StringEquals", "kms:EncryptionContext:b", b)
    };
    assert_eq!(merge::statements(vec![two("1", "1"), two("2", "2")]).len(), 2);
    // Different resources and different conditions: kept apart.
    let other = Permission::new("kms:Decrypt", "arn:aws:kms:us-east-1:123456789012:key/other").condition(
        "StringEquals",
        "kms:EncryptionContext:app",
        "b",
    );
    assert_eq!(merge::statements(vec![p("StringEquals", "a"), other]).len(), 2);
}

#[cfg(feature = "ssm")]
#[test]
fn json_document_and_sam_form() {
    let ssm = crate::SsmSource::new(&config());
    let policy = Policy::builder()
        .ssm_kms_key("k-1")
        .declaration(&ssm.parameter("a", "/a"))
        .declaration(&ssm.parameter("b", "/b"))
        .build()
        .unwrap();
    let json = policy.to_string();
    let order: Vec<usize> = [
        "\"Sid\"",
        "\"Effect\"",
        "\"Action\"",
        "\"Resource\"",
        "\"Condition\"",
    ]
    .iter()
    .map(|k| json.find(k).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{json}");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["Statement"][0]["Action"], "ssm:GetParameters");
    assert_eq!(value["Statement"][0]["Resource"].as_array().unwrap().len(), 2);

    let yaml = policy.to_sam_yaml();
    assert!(
        yaml.starts_with(
            "Policies:\n  - Version: \"2012-10-17\"\n    Statement:\n      - Sid: \"SsmGetParameters\"\n"
        ),
        "{yaml}"
    );
    assert!(
        yaml.contains("\n            \"kms:ViaService\": !Sub \"ssm.${AWS::Region}.${AWS::URLSuffix}\"\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains(
            "\n          - !Sub \"arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/b\"\n"
        ),
        "{yaml}"
    );
    assert_eq!(
        Policy::builder().build().unwrap().to_sam_yaml(),
        "Policies:\n  - Version: \"2012-10-17\"\n    Statement: []\n"
    );
}

#[cfg(feature = "secretsmanager")]
#[test]
fn a_failover_region_grants_the_replicas_and_a_multi_region_key_in_both_regions() {
    let sm = crate::SecretsManagerSource::new(&config())
        .failover_region("us-west-2")
        .unwrap();
    let mrk = "arn:aws:kms:us-east-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab";
    let policy = explicit()
        .secrets_manager_kms_key(mrk)
        .declaration(&sm.secret("db", "prod/db"))
        .build()
        .unwrap();
    let resources: Vec<&String> = policy.statements().iter().flat_map(|s| &s.resources).collect();
    for expected in [
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-??????",
        "arn:aws:secretsmanager:us-west-2:123456789012:secret:prod/db-??????",
        mrk,
        "arn:aws:kms:us-west-2:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab",
    ] {
        assert!(
            resources.iter().any(|r| *r == expected),
            "{expected} not in {policy}"
        );
    }
    let via: Vec<&String> = policy
        .statements()
        .iter()
        .filter(|s| s.actions.iter().any(|a| a == "kms:Decrypt"))
        .flat_map(|s| s.conditions["StringEquals"]["kms:ViaService"].iter())
        .collect();
    assert!(
        via.iter().any(|v| *v == "secretsmanager.us-west-2.amazonaws.com"),
        "{policy}"
    );
    assert!(
        via.iter().any(|v| *v == "secretsmanager.us-east-1.amazonaws.com"),
        "{policy}"
    );
}

#[cfg(feature = "secretsmanager")]
#[test]
fn a_failover_region_moves_a_multi_region_key_in_a_template_policy_too() {
    let sm = crate::SecretsManagerSource::new(&config())
        .failover_region("us-west-2")
        .unwrap();
    // No Region or account: CloudFormation placeholders, a key given by id.
    let policy = Policy::builder()
        .secrets_manager_kms_key("mrk-1234abcd12ab34cd56ef1234567890ab")
        .declaration(&sm.secret("db", "prod/db"))
        .build()
        .unwrap();
    let resources: Vec<&String> = policy.statements().iter().flat_map(|s| &s.resources).collect();
    for expected in [
        "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/mrk-1234abcd12ab34cd56ef1234567890ab",
        "arn:${AWS::Partition}:kms:us-west-2:${AWS::AccountId}:key/mrk-1234abcd12ab34cd56ef1234567890ab",
        "arn:${AWS::Partition}:secretsmanager:us-west-2:${AWS::AccountId}:secret:prod/db-??????",
    ] {
        assert!(
            resources.iter().any(|r| *r == expected),
            "{expected} not in {policy}"
        );
    }
}
