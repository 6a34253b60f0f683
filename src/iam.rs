//! The IAM words sources answer in: [`Permission`], one IAM action on one resource with its
//! conditions, and [`PolicyScope`], the partition, Region, account and customer managed keys ARNs
//! are written for. A [`Policy`](crate::Policy) merges permissions into statements.

use std::collections::{BTreeMap, BTreeSet};

/// Condition blocks of an IAM statement: operator (`StringEquals`) → condition key
/// (`kms:ViaService`) → values (any one of them matches).
///
/// ```
/// use lambda_secrets::Permission;
/// let p = Permission::new("kms:Decrypt", "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab")
///     .condition("StringEquals", "kms:EncryptionContext:app", "billing");
/// assert_eq!(p.conditions["StringEquals"]["kms:EncryptionContext:app"].len(), 1);
/// ```
pub type Conditions = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// One IAM action on one resource (an ARN, or `*` for actions IAM accepts on no resource), allowed
/// under its conditions. Sources describe what their items need with these
/// ([`Source::permissions`](crate::Source::permissions)); a [`Policy`](crate::Policy) merges
/// them into statements.
///
/// ```
/// use lambda_secrets::Permission;
/// let p = Permission::new("ssm:GetParameters", "arn:aws:ssm:us-east-1:123456789012:parameter/prod/db");
/// assert_eq!(p.action, "ssm:GetParameters");
/// assert!(p.conditions.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub struct Permission {
    /// The IAM action, `service:Action`.
    pub action: String,
    /// The resource ARN (wildcards allowed), or `*`.
    pub resource: String,
    /// The conditions under which it is allowed (all must hold).
    pub conditions: Conditions,
}

impl Permission {
    /// `action` on `resource`, without conditions.
    ///
    /// ```
    /// let p = lambda_secrets::Permission::new("secretsmanager:BatchGetSecretValue", "*");
    /// assert_eq!(p.resource, "*");
    /// ```
    pub fn new(action: impl Into<String>, resource: impl Into<String>) -> Self {
        Permission {
            action: action.into(),
            resource: resource.into(),
            conditions: Conditions::new(),
        }
    }

    /// Adds a condition: the request's `key` must match `value` under `operator`. Values added
    /// for the same operator and key are alternatives (any one matches), as in IAM.
    ///
    /// ```
    /// let p = lambda_secrets::Permission::new("kms:Decrypt", "arn:aws:kms:us-east-1:123456789012:key/k")
    ///     .condition("StringEquals", "kms:ViaService", "ssm.us-east-1.amazonaws.com");
    /// assert!(p.conditions["StringEquals"].contains_key("kms:ViaService"));
    /// ```
    pub fn condition(
        mut self,
        operator: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.conditions
            .entry(operator.into())
            .or_default()
            .entry(key.into())
            .or_default()
            .insert(value.into());
        self
    }
}

/// What ARNs are written for: the partition, Region and account (explicit, or CloudFormation
/// placeholders such as `${AWS::Region}`), and the customer managed KMS keys that services
/// decrypt values with on the function's behalf. Made by
/// [`PolicyBuilder`](crate::PolicyBuilder); handed to [`Source::permissions`](crate::Source::permissions).
///
/// ```
/// let scope = lambda_secrets::PolicyScope::placeholders();
/// assert_eq!(scope.arn("ssm", "parameter/prod/db"), "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/prod/db");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyScope {
    pub(crate) partition: String,
    pub(crate) region: String,
    pub(crate) account: String,
    /// The partition's domain (`amazonaws.com`, `amazonaws.com.cn`, `${AWS::URLSuffix}`).
    pub(crate) url_suffix: String,
    /// Key ARNs per service (`ssm`, `secretsmanager`).
    pub(crate) kms_keys: BTreeMap<String, Vec<String>>,
}

/// The CloudFormation pseudo parameters used when no Region or account is given.
pub(crate) const PARTITION_PLACEHOLDER: &str = "${AWS::Partition}";
pub(crate) const REGION_PLACEHOLDER: &str = "${AWS::Region}";
pub(crate) const ACCOUNT_PLACEHOLDER: &str = "${AWS::AccountId}";

impl Default for PolicyScope {
    fn default() -> Self {
        Self::placeholders()
    }
}

impl PolicyScope {
    /// Every ARN with CloudFormation placeholders (`${AWS::Partition}`, `${AWS::Region}`,
    /// `${AWS::AccountId}`), for a SAM or CloudFormation template (`!Sub`).
    ///
    /// ```
    /// let scope = lambda_secrets::PolicyScope::placeholders();
    /// assert_eq!(scope.region(), "${AWS::Region}");
    /// ```
    pub fn placeholders() -> Self {
        PolicyScope {
            partition: PARTITION_PLACEHOLDER.into(),
            region: REGION_PLACEHOLDER.into(),
            account: ACCOUNT_PLACEHOLDER.into(),
            url_suffix: "${AWS::URLSuffix}".into(),
            kms_keys: BTreeMap::new(),
        }
    }

    /// The partition (`aws`, `aws-cn`, ... or `${AWS::Partition}`).
    ///
    /// ```
    /// assert_eq!(lambda_secrets::PolicyScope::placeholders().partition(), "${AWS::Partition}");
    /// ```
    pub fn partition(&self) -> &str {
        &self.partition
    }

    /// The Region (`us-east-1` or `${AWS::Region}`).
    ///
    /// ```
    /// assert_eq!(lambda_secrets::PolicyScope::placeholders().region(), "${AWS::Region}");
    /// ```
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The account id (`123456789012` or `${AWS::AccountId}`).
    ///
    /// ```
    /// assert_eq!(lambda_secrets::PolicyScope::placeholders().account(), "${AWS::AccountId}");
    /// ```
    pub fn account(&self) -> &str {
        &self.account
    }

    /// `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`.
    ///
    /// ```
    /// let scope = lambda_secrets::PolicyScope::placeholders();
    /// assert!(scope.arn("kms", "key/k").ends_with(":key/k"));
    /// ```
    pub fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{}:{}:{resource}",
            self.partition, self.region, self.account
        )
    }

    /// The customer managed keys (ARNs) that `service` (`ssm`, `secretsmanager`) decrypts values
    /// with on the function's behalf; empty when the service's AWS managed key is used (no
    /// `kms:Decrypt` grant needed then).
    ///
    /// ```
    /// assert!(lambda_secrets::PolicyScope::placeholders().kms_keys("ssm").is_empty());
    /// ```
    pub fn kms_keys(&self, service: &str) -> &[String] {
        self.kms_keys.get(service).map_or(&[], Vec::as_slice)
    }

    /// The scope of a source's failover Region `region`: ARNs in that Region, and of each
    /// service's customer managed keys those of that Region (a replica is encrypted with a key of
    /// its own Region) and the multi-Region keys (`mrk-…`), named in that Region.
    #[cfg_attr(not(any(feature = "ssm", feature = "secretsmanager")), allow(dead_code))]
    pub(crate) fn in_failover_region(&self, region: &str) -> PolicyScope {
        let mut scope = self.clone();
        region.clone_into(&mut scope.region);
        for keys in scope.kms_keys.values_mut() {
            let mut there: Vec<String> = Vec::new();
            for key in keys.iter() {
                let parts = arn_parts(key);
                let [arn, partition, kms, key_region, account, resource] = &parts[..] else {
                    continue;
                };
                if kms != "kms" {
                    continue;
                }
                let moved = if key_region == region {
                    key.clone()
                } else if resource.starts_with("key/mrk-") {
                    format!("{arn}:{partition}:kms:{region}:{account}:{resource}")
                } else {
                    continue;
                };
                if !there.contains(&moved) {
                    there.push(moved);
                }
            }
            *keys = there;
        }
        scope
    }

    /// The scope of a source's own Region when it fails over to `region`: the keys of `region`
    /// are the replicas', not its own.
    #[cfg_attr(not(any(feature = "ssm", feature = "secretsmanager")), allow(dead_code))]
    pub(crate) fn without_keys_of(&self, region: &str) -> PolicyScope {
        let mut scope = self.clone();
        for keys in scope.kms_keys.values_mut() {
            keys.retain(|key| arn_parts(key).get(3).map(String::as_str) != Some(region));
        }
        scope
    }

    #[cfg_attr(not(any(feature = "ssm", feature = "secretsmanager")), allow(dead_code))]
    /// `kms:Decrypt` on each customer managed key of `service` (`ssm`, `secretsmanager`), only
    /// through that service (`kms:ViaService`) and only for values whose encryption context
    /// `context_key` is like `value` (the ARN of what the service decrypts).
    pub(crate) fn decrypt_via(&self, service: &str, context_key: &str, value: &str) -> Vec<Permission> {
        let via = format!("{service}.{}.{}", self.region, self.url_suffix);
        self.kms_keys(service)
            .iter()
            .map(|key| {
                Permission::new("kms:Decrypt", key.clone())
                    .condition("StringEquals", "kms:ViaService", via.clone())
                    .condition(
                        "StringLike",
                        format!("kms:EncryptionContext:{context_key}"),
                        value,
                    )
            })
            .collect()
    }

    #[cfg_attr(not(any(feature = "ssm", feature = "secretsmanager")), allow(dead_code))]
    /// The resources of Secrets Manager secret `id` (a name, a partial ARN or a full ARN, or a
    /// pattern with `*`/`?`). IAM matches a secret's full ARN, whose name ends with `-` and six
    /// random characters: a name gets `-??????` (exactly six, so `prod/db` does not match
    /// `prod/db2`); a full ARN is kept. An ARN whose name merely looks like it ends with the suffix
    /// (`app/db-master` is a partial ARN whose name ends in `-master`) is both: the ARN as given
    /// and with `-??????`, since the text cannot tell the two apart.
    pub(crate) fn secret_arns(&self, id: &str) -> Vec<String> {
        let (arn, name) = match id.strip_prefix("arn:") {
            Some(_) => {
                let name = id.splitn(7, ':').nth(6).unwrap_or_default();
                (id.to_owned(), name)
            }
            None => (self.arn("secretsmanager", &format!("secret:{id}")), id),
        };
        if name.ends_with('*') {
            vec![arn]
        } else if id.starts_with("arn:") && has_random_suffix(name) {
            let partial = format!("{arn}-??????");
            vec![arn, partial]
        } else {
            vec![format!("{arn}-??????")]
        }
    }
}

#[cfg_attr(not(any(feature = "ssm", feature = "secretsmanager")), allow(dead_code))]
/// Whether a secret name in an ARN ends with the `-XXXXXX` suffix Secrets Manager appends.
fn has_random_suffix(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() > 7
        && bytes[bytes.len() - 7] == b'-'
        && bytes[bytes.len() - 6..].iter().all(u8::is_ascii_alphanumeric)
}

/// Checks a Region (`us-east-1`) and returns its partition and the partition's domain.
pub(crate) fn partition_of(region: &str) -> Result<(&'static str, &'static str), String> {
    let mut parts = region.split('-');
    let ok = region.len() <= 32
        && region.split('-').count() >= 3
        && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && region
            .rsplit('-')
            .next()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        return Err("a Region looks like `us-east-1`".into());
    }
    Ok(if region.starts_with("cn-") {
        ("aws-cn", "amazonaws.com.cn")
    } else if region.starts_with("us-gov-") {
        ("aws-us-gov", "amazonaws.com")
    } else if region.starts_with("us-isob-") {
        ("aws-iso-b", "sc2s.sgov.gov")
    } else if region.starts_with("us-isof-") {
        ("aws-iso-f", "csp.hci.ic.gov")
    } else if region.starts_with("us-iso-") {
        ("aws-iso", "c2s.ic.gov")
    } else if region.starts_with("eu-isoe-") {
        ("aws-iso-e", "cloud.adc-e.uk")
    } else if region.starts_with("eusc-") {
        ("aws-eusc", "amazonaws.eu")
    } else {
        ("aws", "amazonaws.com")
    })
}

/// Checks an account id: twelve digits, or `*` when a wildcard account is asked for.
pub(crate) fn check_account(account: &str) -> Result<(), String> {
    if account == "*" || (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())) {
        Ok(())
    } else {
        Err("an account id is twelve digits (or `*`, to allow any account)".into())
    }
}

/// The six fields of an ARN, whose fields may be CloudFormation placeholders (`${AWS::Region}`,
/// whose `::` is not a separator).
fn arn_parts(arn: &str) -> Vec<String> {
    const HIDDEN: &str = "${AWS\u{0}";
    arn.replace("${AWS::", HIDDEN)
        .splitn(6, ':')
        .map(|part| part.replace(HIDDEN, "${AWS::"))
        .collect()
}

/// Checks the account of a role ARN: twelve digits (a role is one role of one account; `*` would
/// let the function assume any role of that name in any account).
pub(crate) fn check_role_account(account: &str) -> Result<(), String> {
    if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err("a role ARN names one account: twelve digits (no wildcard)".into())
    }
}

/// A customer managed key as an ARN: a key ARN is kept, a key id is put in the scope's account.
pub(crate) fn key_arn(scope: &PolicyScope, key: &str) -> Result<String, String> {
    if let Some(rest) = key.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        if parts.len() == 5 && parts[1] == "kms" && parts[4].starts_with("key/") && parts[4].len() > 4 {
            return Ok(key.to_owned());
        }
        return Err(
            "a key ARN looks like arn:aws:kms:REGION:ACCOUNT:key/KEY_ID (IAM matches the key, not an alias)"
                .into(),
        );
    }
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Ok(scope.arn("kms", &format!("key/{key}")));
    }
    Err("name the key by its id or key ARN (IAM matches the key, not an alias)".into())
}
