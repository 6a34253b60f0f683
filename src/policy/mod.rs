//! [`Policy`]: the least-privilege IAM policy that loading and refreshing a set of declarations
//! needs, as the JSON policy document or a SAM `Policies:` list.
//!
//! Each source describes what its items need ([`Source::permissions`](crate::Source::permissions));
//! the builder collects that for every declaration and merges it into statements.
//!
//! | Declaration | Actions | Resource | Conditions |
//! |---|---|---|---|
//! | SSM parameter (name or ARN; selector stripped) | `ssm:GetParameters` | the parameter's ARN | — |
//! | SSM path | `ssm:GetParametersByPath` | the path's ARN (IAM authorizes the path, not what it returns) | — |
//! | SSM SecureString under a customer managed key ([`PolicyBuilder::ssm_kms_key`]) | `kms:Decrypt` | the key | `kms:ViaService` = SSM in the Region, `kms:EncryptionContext:PARAMETER_ARN` like the parameters |
//! | Secret at `AWSCURRENT` | `secretsmanager:GetSecretValue`, `secretsmanager:DescribeSecret`; `secretsmanager:BatchGetSecretValue` | the secret's ARN, name + `-??????`; `*` for the batch action | — |
//! | Secret at another stage / a fixed version | `GetSecretValue` + `DescribeSecret` / `GetSecretValue` | the secret's ARN | — |
//! | Secret under a customer managed key ([`PolicyBuilder::secrets_manager_kms_key`]) | `kms:Decrypt` | the key | `kms:ViaService` = Secrets Manager in the Region, `kms:EncryptionContext:SecretARN` like the secrets |
//! | KMS ciphertext ([`KmsSource`](crate::KmsSource)) | `kms:Decrypt` | the key of [`Ciphertext::key_id`](crate::Ciphertext::key_id) (a key id or ARN; an alias: any key of the account with `kms:RequestAlias`; none: any key of the account) | `kms:EncryptionContext:K` = V for each pair of the context |
//!
//! What cannot be expressed tighter:
//! - `secretsmanager:BatchGetSecretValue` has no resource type: IAM accepts it only on `*`. It
//!   returns nothing by itself; each secret it returns is also authorized as
//!   `secretsmanager:GetSecretValue` on that secret.
//! - A secret's ARN ends with six random characters, which a declaration by name cannot know:
//!   `-??????` matches exactly six, so `prod/db` does not match `prod/db2`. A partial ARN (an ARN
//!   without the suffix) is treated like a name.
//! - `ssm:GetParametersByPath` on a path allows every parameter below it, whatever other
//!   statements say (IAM authorizes the path in the request).
//! - KMS ciphertext without [`Ciphertext::key_id`](crate::Ciphertext::key_id) can only be scoped
//!   to the account's keys, narrowed by its encryption context; give the key for a tighter policy.

use std::fmt;

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::error::Error;
use crate::secrets::SecretsBuilder;
use crate::source::Declaration;

mod merge;
mod sam;
#[cfg(test)]
mod tests;

use crate::iam::{Conditions, PolicyScope};

/// An IAM policy document: exactly the actions and resources some declarations need. Its
/// `Display` (and `serde` form) is the JSON document; [`Policy::to_sam_yaml`] the SAM form.
///
/// ```
/// use lambda_secrets::{MemorySource, Policy, Secrets};
/// let mem = MemorySource::new();
/// let builder = Secrets::builder().add(mem.value("a", "/a"));
/// let policy = Policy::builder().secrets(&builder).build().unwrap();
/// assert!(policy.statements().is_empty()); // values in memory need no permission
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<PolicyStatement>,
    /// Per assumed role (ARN), what it needs in its account.
    roles: Vec<(String, Policy)>,
}

/// One `Allow` statement of a [`Policy`].
///
/// ```
/// # let config = aws_types::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
/// use lambda_secrets::{Policy, SsmSource};
/// let ssm = SsmSource::new(&config);
/// let policy = Policy::builder()
///     .region("us-east-1")
///     .account("123456789012")
///     .declaration(&ssm.parameter("db", "/prod/db"))
///     .build()
///     .unwrap();
/// let statement = &policy.statements()[0];
/// assert_eq!(statement.sid, "SsmGetParameters");
/// assert_eq!(statement.actions, ["ssm:GetParameters"]);
/// assert_eq!(statement.resources, ["arn:aws:ssm:us-east-1:123456789012:parameter/prod/db"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PolicyStatement {
    /// The statement id, made of its actions (`SsmGetParameters`).
    pub sid: String,
    /// The actions allowed.
    pub actions: Vec<String>,
    /// The resources they are allowed on.
    pub resources: Vec<String>,
    /// The conditions (empty: none).
    pub conditions: Conditions,
}

impl Policy {
    /// Starts a policy: add declarations, name the Region and account (or leave CloudFormation
    /// placeholders), name customer managed keys.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// The statements: the services' own (SSM, Secrets Manager, then other sources') first, then
    /// `kms:Decrypt`; within each, in the order of the declarations that first needed them.
    ///
    /// ```
    /// let policy = lambda_secrets::Policy::builder().build().unwrap();
    /// assert!(policy.statements().is_empty());
    /// ```
    pub fn statements(&self) -> &[PolicyStatement] {
        &self.statements
    }

    /// For each role a source reads through ([`Source::role_arn`](crate::Source::role_arn): an
    /// `assume_role`), by ARN, what that role needs in its own account (the ARNs carry its
    /// account id): attach it to the role. The function's own [`statements`](Self::statements)
    /// then hold `sts:AssumeRole` on exactly these roles, and nothing those sources need.
    ///
    /// ```
    /// let policy = lambda_secrets::Policy::builder().build().unwrap();
    /// assert!(policy.role_policies().is_empty());
    /// ```
    pub fn role_policies(&self) -> &[(String, Policy)] {
        &self.roles
    }

    /// The JSON policy document, indented.
    ///
    /// ```
    /// let json = lambda_secrets::Policy::builder().build().unwrap().to_json_pretty();
    /// assert!(json.contains(r#""Version": "2012-10-17""#));
    /// ```
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a policy is always serializable")
    }

    /// The SAM form: a `Policies:` list holding this policy document, to paste under a
    /// function's `Properties`. Strings holding CloudFormation placeholders are `!Sub` strings.
    ///
    /// ```
    /// # let config = aws_types::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
    /// let ssm = lambda_secrets::SsmSource::new(&config);
    /// let policy = lambda_secrets::Policy::builder().declaration(&ssm.parameter("db", "/prod/db")).build().unwrap();
    /// let yaml = policy.to_sam_yaml();
    /// assert!(yaml.starts_with("Policies:\n"));
    /// assert!(yaml.contains(r#"!Sub "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/prod/db""#));
    /// ```
    pub fn to_sam_yaml(&self) -> String {
        sam::render(self)
    }
}

/// The JSON policy document, indented (as [`Policy::to_json_pretty`]).
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json_pretty())
    }
}

/// The IAM policy document: `{"Version": "2012-10-17", "Statement": [...]}`.
impl Serialize for Policy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut doc = serializer.serialize_struct("Policy", 2)?;
        doc.serialize_field("Version", "2012-10-17")?;
        doc.serialize_field("Statement", &self.statements)?;
        doc.end()
    }
}

/// One value as itself, several as a list (as IAM writes them).
struct OneOrMany<'a, T>(&'a [T]);

impl<T: Serialize> Serialize for OneOrMany<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            [one] => one.serialize(serializer),
            many => many.serialize(serializer),
        }
    }
}

struct ConditionBlock<'a>(&'a Conditions);

impl Serialize for ConditionBlock<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut ops = serializer.serialize_map(Some(self.0.len()))?;
        for (op, keys) in self.0 {
            let keys: Vec<(&String, Vec<&String>)> =
                keys.iter().map(|(k, v)| (k, v.iter().collect())).collect();
            ops.serialize_entry(op, &KeyValues(&keys))?;
        }
        ops.end()
    }
}

struct KeyValues<'a>(&'a [(&'a String, Vec<&'a String>)]);

impl Serialize for KeyValues<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, values) in self.0 {
            map.serialize_entry(key, &OneOrMany(values))?;
        }
        map.end()
    }
}

impl Serialize for PolicyStatement {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = if self.conditions.is_empty() { 4 } else { 5 };
        let mut s = serializer.serialize_struct("Statement", fields)?;
        s.serialize_field("Sid", &self.sid)?;
        s.serialize_field("Effect", "Allow")?;
        s.serialize_field("Action", &OneOrMany(&self.actions))?;
        s.serialize_field("Resource", &OneOrMany(&self.resources))?;
        if !self.conditions.is_empty() {
            s.serialize_field("Condition", &ConditionBlock(&self.conditions))?;
        }
        s.end()
    }
}

/// Builds a [`Policy`] from declarations.
///
/// ```
/// # let config = aws_types::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
/// use lambda_secrets::{Policy, Secrets, SsmSource};
///
/// let ssm = SsmSource::new(&config);
/// let declarations = Secrets::builder()
///     .add(ssm.parameter("db_password", "/prod/db/password"))
///     .add(ssm.path("/prod/app"));
/// let policy = Policy::builder()
///     .secrets(&declarations)
///     .ssm_kms_key("arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab")
///     .region("us-east-1")
///     .account("123456789012")
///     .build()?;
/// let json = policy.to_string();
/// assert!(json.contains("arn:aws:ssm:us-east-1:123456789012:parameter/prod/app"));
/// assert!(json.contains(r#""kms:ViaService": "ssm.us-east-1.amazonaws.com""#));
/// # Ok::<(), lambda_secrets::Error>(())
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct PolicyBuilder {
    declarations: Vec<Declaration>,
    region: Option<String>,
    account: Option<String>,
    /// (service, key as given)
    kms_keys: Vec<(&'static str, String)>,
}

impl PolicyBuilder {
    /// Adds one declaration. A declaration whose name is a pattern (`*`, `?`) cannot be loaded
    /// but can be described: `ssm.parameter("tenant", "/tenants/*/api-key")` allows every
    /// matching parameter.
    ///
    /// ```
    /// # let config = aws_types::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
    /// let ssm = lambda_secrets::SsmSource::new(&config);
    /// let policy = lambda_secrets::Policy::builder()
    ///     .declaration(&ssm.parameter("tenant", "/tenants/*/api-key"))
    ///     .build()
    ///     .unwrap();
    /// assert!(policy.statements()[0].resources[0].ends_with(":parameter/tenants/*/api-key"));
    /// ```
    pub fn declaration(mut self, declaration: &Declaration) -> Self {
        self.declarations.push(declaration.clone());
        self
    }

    /// Adds every declaration of a [`SecretsBuilder`] (the one the function loads).
    pub fn secrets(mut self, builder: &SecretsBuilder) -> Self {
        self.declarations.extend(builder.declarations().iter().cloned());
        self
    }

    /// Adds the names an [`OnDemand`](crate::OnDemand) cache may look up, as patterns: each is
    /// turned into a declaration by the cache's own closure, so `*` and `?` reach the source's
    /// name (`"*"` for a closure `|name| ssm.parameter(name, format!("/tenants/{name}"))`
    /// allows `/tenants/*`).
    ///
    /// ```
    /// # let config = aws_types::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
    /// let ssm = lambda_secrets::SsmSource::new(&config);
    /// let tenants = lambda_secrets::OnDemand::builder()
    ///     .build(move |id| ssm.parameter(id, format!("/tenants/{id}/api-key")))
    ///     .unwrap();
    /// let policy = lambda_secrets::Policy::builder().on_demand(&tenants, ["*"]).build().unwrap();
    /// assert!(policy.statements()[0].resources[0].ends_with(":parameter/tenants/*/api-key"));
    /// ```
    #[cfg(feature = "on-demand")]
    #[cfg_attr(docsrs, doc(cfg(feature = "on-demand")))]
    pub fn on_demand<I>(mut self, cache: &crate::on_demand::OnDemand, patterns: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        for pattern in patterns {
            self.declarations.push(cache.declare(pattern.as_ref()));
        }
        self
    }

    /// Writes ARNs for this Region (default: `${AWS::Region}`); the partition follows from it.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Writes ARNs for this account (default: `${AWS::AccountId}`). `*` allows any account, only
    /// when asked for so.
    pub fn account(mut self, account: impl Into<String>) -> Self {
        self.account = Some(account.into());
        self
    }

    /// The customer managed key (id or key ARN) SSM SecureStrings are encrypted with: allows
    /// `kms:Decrypt` on it through SSM, for the declared parameters only. Not needed for the AWS
    /// managed key `aws/ssm`. Repeatable.
    pub fn ssm_kms_key(mut self, key: impl Into<String>) -> Self {
        self.kms_keys.push(("ssm", key.into()));
        self
    }

    /// The customer managed key (id or key ARN) secrets are encrypted with: allows
    /// `kms:Decrypt` on it through Secrets Manager, for the declared secrets only. Not needed
    /// for the AWS managed key `aws/secretsmanager`. Repeatable.
    pub fn secrets_manager_kms_key(mut self, key: impl Into<String>) -> Self {
        self.kms_keys.push(("secretsmanager", key.into()));
        self
    }

    /// The policy. Fails with [`Error::InvalidInput`] naming the input for a malformed
    /// declaration, Region, account or key, or a declaration whose source does not describe
    /// its permissions ([`Source::permissions`](crate::Source::permissions)).
    ///
    /// ```
    /// let err = lambda_secrets::Policy::builder().account("12345").build().unwrap_err();
    /// assert!(err.to_string().contains("invalid account id `12345`"), "{err}");
    /// ```
    pub fn build(self) -> Result<Policy, Error> {
        let mut scope = PolicyScope::placeholders();
        if let Some(region) = self.region {
            let (partition, url_suffix) =
                crate::iam::partition_of(&region).map_err(|r| Error::invalid_input("Region", &region, r))?;
            scope.partition = partition.into();
            scope.url_suffix = url_suffix.into();
            scope.region = region;
        }
        if let Some(account) = self.account {
            crate::iam::check_account(&account)
                .map_err(|r| Error::invalid_input("account id", &account, r))?;
            scope.account = account;
        }
        for (service, key) in &self.kms_keys {
            let arn =
                crate::iam::key_arn(&scope, key).map_err(|r| Error::invalid_input("KMS key", key, r))?;
            let keys = scope.kms_keys.entry((*service).to_owned()).or_default();
            if !keys.contains(&arn) {
                keys.push(arn);
            }
        }
        let mut permissions = Vec::new();
        let mut roles: Vec<(String, Vec<crate::iam::Permission>)> = Vec::new();
        for decl in &self.declarations {
            if let Some((what, input, reason)) = &decl.invalid {
                if !decl.pattern {
                    return Err(Error::invalid_input(what, input, reason));
                }
            }
            if let Some(why) = decl.no_policy {
                return Err(Error::invalid_input("declaration", decl.key.clone(), why));
            }
            let role = decl.source.role_arn();
            let role_scope = match role {
                Some(arn) => Some(role_scope(&scope, arn, &self.kms_keys)?),
                None => None,
            };
            match decl
                .source
                .permissions(&decl.item, role_scope.as_ref().unwrap_or(&scope))
            {
                Some(needed) => match role {
                    None => permissions.extend(needed),
                    Some(arn) => match roles.iter_mut().find(|(r, _)| r == arn) {
                        Some((_, held)) => held.extend(needed),
                        None => {
                            permissions.push(crate::iam::Permission::new("sts:AssumeRole", arn));
                            roles.push((arn.to_owned(), needed));
                        }
                    },
                },
                None => {
                    return Err(Error::invalid_input(
                        "declaration",
                        decl.key.clone(),
                        format!(
                            "its source `{}` does not describe the IAM permissions it needs \
                             (implement Source::permissions; return an empty list if it needs none)",
                            decl.source.kind()
                        ),
                    ))
                }
            }
        }
        Ok(Policy {
            statements: merge::statements(permissions),
            roles: roles
                .into_iter()
                .map(|(arn, needed)| {
                    let policy = Policy {
                        statements: merge::statements(needed),
                        roles: Vec::new(),
                    };
                    (arn, policy)
                })
                .collect(),
        })
    }
}

/// The scope of a role's own permissions: its partition and account, the same Region, and the
/// customer managed keys given, a key given by id being one of the role's account.
fn role_scope(
    scope: &PolicyScope,
    role_arn: &str,
    kms_keys: &[(&'static str, String)],
) -> Result<PolicyScope, Error> {
    let invalid = |r: String| Error::invalid_input("role ARN", role_arn, r);
    let parts: Vec<&str> = role_arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" || parts[2] != "iam" {
        return Err(invalid(
            "a role ARN looks like arn:aws:iam::123456789012:role/NAME".into(),
        ));
    }
    crate::iam::check_role_account(parts[4]).map_err(invalid)?;
    let mut scope = scope.clone();
    scope.partition = parts[1].to_owned();
    scope.account = parts[4].to_owned();
    scope.kms_keys.clear();
    for (service, key) in kms_keys {
        let arn = crate::iam::key_arn(&scope, key).map_err(|r| Error::invalid_input("KMS key", key, r))?;
        let keys = scope.kms_keys.entry((*service).to_owned()).or_default();
        if !keys.contains(&arn) {
            keys.push(arn);
        }
    }
    Ok(scope)
}
