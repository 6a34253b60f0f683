//! [`KmsSource`]: decrypts base64 ciphertext you supply (a literal, or an environment variable,
//! as the Lambda console's encryption helpers produce) with AWS KMS `Decrypt`, with an
//! encryption context. The plaintext exists only inside [`SecretValue`].

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::Client;
use futures_util::future::join_all;

use super::{Declaration, Fetched, ItemResult, RefreshResult, Refreshed, Source};
use crate::call::{CallContext, Operation};
use crate::error::{CallError, CallErrorKind, ItemError};
use crate::iam::{Permission, PolicyScope};
use crate::limiter::QuotaClass;
use crate::value::SecretValue;

/// The encryption context key the Lambda console's encryption helper uses.
const LAMBDA_FUNCTION_NAME: &str = "LambdaFunctionName";
const DECRYPT: Operation = Operation::new("Decrypt").with_quota(QuotaClass::KmsDecrypt);

/// AWS KMS `Decrypt` of ciphertext you supply.
///
/// ```no_run
/// use lambda_secrets::{Ciphertext, KmsSource, Secrets};
///
/// # async fn run() -> Result<(), lambda_secrets::Error> {
/// let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
/// let kms = KmsSource::new(&config);
/// let secrets = Secrets::builder()
///     // An environment variable encrypted with the Lambda console's helper:
///     .add(kms.decrypt("legacy_token", Ciphertext::env("LEGACY_TOKEN").lambda_function_name_context()))
///     // A literal ciphertext with a context of your own, and the key that must have made it:
///     .add(kms.decrypt(
///         "signing_key",
///         Ciphertext::base64("AQICAHh...base64...").context("app", "billing").key_id("alias/app"),
///     ))
///     .load()
///     .await?;
/// # Ok(()) }
/// ```
///
/// Ciphertext cannot change while the process runs, so values are decrypted once, at load;
/// refreshes make no call. IAM: `kms:Decrypt` on the key.
#[derive(Clone)]
pub struct KmsSource {
    inner: Arc<KmsInner>,
}

struct KmsInner {
    client: Client,
    #[cfg(feature = "assume-role")]
    origin: super::assume::Origin,
}

impl std::fmt::Debug for KmsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsSource").finish_non_exhaustive()
    }
}

impl KmsSource {
    /// A source using a client made from `config` (SDK retries off: this crate retries).
    pub fn new(config: &aws_types::SdkConfig) -> Self {
        #[allow(unused_mut)]
        let mut source = Self::with_client(client_without_retries!(aws_sdk_kms, config config));
        #[cfg(feature = "assume-role")]
        {
            Arc::get_mut(&mut source.inner).expect("just made").origin =
                super::assume::Origin::config(config);
        }
        source
    }

    /// The same source, reading through `role`: its calls are made with the role's credentials,
    /// assumed (`sts:AssumeRole`) with the credentials of the config the source was made with, on
    /// first use, renewed before they expire and dropped before a SnapStart snapshot. Values keep
    /// their own TTLs. See [`AssumeRole`](crate::AssumeRole).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`](crate::Error::InvalidInput): a malformed role ARN, session name,
    /// external id or duration, or a source made with `from_client`.
    #[cfg(feature = "assume-role")]
    pub fn assume_role(&self, role: crate::AssumeRole) -> Result<Self, crate::Error> {
        let (config, origin) = self.inner.origin.assume(role)?;
        let mut source = Self::new(&config);
        Arc::get_mut(&mut source.inner).expect("just made").origin = origin;
        Ok(source)
    }

    /// A source using (a copy of) `client`, with the SDK's retries turned off.
    pub fn from_client(client: &Client) -> Self {
        Self::with_client(client_without_retries!(aws_sdk_kms, client client))
    }

    fn with_client(client: Client) -> Self {
        KmsSource {
            inner: Arc::new(KmsInner {
                client,
                #[cfg(feature = "assume-role")]
                origin: Default::default(),
            }),
        }
    }

    /// Declares `key` as the plaintext of `ciphertext`. Declaring the same ciphertext (with the
    /// same context and key) under several keys decrypts it once.
    ///
    /// ```
    /// # let config = aws_types::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
    /// use lambda_secrets::{Ciphertext, KmsSource};
    /// let kms = KmsSource::new(&config);
    /// let decl = kms.decrypt("token", Ciphertext::env("TOKEN_ENC").context("app", "billing"));
    /// assert_eq!(decl.key(), "token");
    /// ```
    pub fn decrypt(&self, key: impl Into<String>, ciphertext: Ciphertext) -> Declaration {
        let problem = ciphertext.problem.clone();
        let decl = Declaration::new(key, self.inner.clone(), ciphertext);
        match problem {
            Some(reason) => decl.rejected("encryption context", LAMBDA_FUNCTION_NAME, reason),
            None => decl,
        }
    }
}

/// Base64 KMS ciphertext to decrypt (a literal, or the content of an environment variable, read at
/// load), with the encryption context and, optionally, the key it must have been made with.
///
/// ```
/// use lambda_secrets::Ciphertext;
/// let c = Ciphertext::env("DB_PASSWORD_ENC").context("app", "billing").key_id("alias/app");
/// assert_eq!(c.to_string(), "env DB_PASSWORD_ENC");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Ciphertext {
    from: Location,
    context: BTreeMap<String, String>,
    key_id: Option<String>,
    problem: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Location {
    Env(String),
    Base64(String),
}

impl Ciphertext {
    /// Ciphertext given as base64 text.
    ///
    /// ```
    /// let c = lambda_secrets::Ciphertext::base64("AQICAHh...");
    /// assert_eq!(c.to_string(), "ciphertext (10 base64 characters)");
    /// ```
    pub fn base64(text: impl Into<String>) -> Self {
        Self::at(Location::Base64(text.into()))
    }

    /// Ciphertext in environment variable `var`, as base64 (the Lambda console's encryption
    /// helpers store it so); the variable is read at load.
    ///
    /// ```
    /// let c = lambda_secrets::Ciphertext::env("LEGACY_TOKEN");
    /// assert_eq!(c.to_string(), "env LEGACY_TOKEN");
    /// ```
    pub fn env(var: impl Into<String>) -> Self {
        Self::at(Location::Env(var.into()))
    }

    fn at(from: Location) -> Self {
        Ciphertext {
            from,
            context: BTreeMap::new(),
            key_id: None,
            problem: None,
        }
    }

    /// Adds a pair to the encryption context (it must match the one used to encrypt).
    pub fn context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context.insert(key.into(), value.into());
        self
    }

    /// Adds `LambdaFunctionName` = this function's name (`AWS_LAMBDA_FUNCTION_NAME`), the context
    /// the Lambda console's encryption helper uses. Outside Lambda (the variable unset), the
    /// declaration is rejected at load: use `.context("LambdaFunctionName", NAME)` there.
    ///
    /// ```
    /// std::env::set_var("AWS_LAMBDA_FUNCTION_NAME", "my-function");
    /// let c = lambda_secrets::Ciphertext::env("LEGACY_TOKEN").lambda_function_name_context();
    /// assert_eq!(c, lambda_secrets::Ciphertext::env("LEGACY_TOKEN").context("LambdaFunctionName", "my-function"));
    /// ```
    pub fn lambda_function_name_context(self) -> Self {
        match std::env::var("AWS_LAMBDA_FUNCTION_NAME") {
            Ok(name) => self.context(LAMBDA_FUNCTION_NAME, name),
            Err(_) => Ciphertext {
                problem: Some(
                    "AWS_LAMBDA_FUNCTION_NAME is not set (not running in Lambda?); \
                     use .context(\"LambdaFunctionName\", NAME)"
                        .to_owned(),
                ),
                ..self
            },
        }
    }

    /// Requires the ciphertext to have been made with this key (id, ARN or alias).
    pub fn key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }
}

/// Names where the ciphertext is, never the ciphertext itself.
impl std::fmt::Display for Ciphertext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.from {
            Location::Env(var) => write!(f, "env {var}"),
            Location::Base64(text) => write!(f, "ciphertext ({} base64 characters)", text.len()),
        }
    }
}

impl std::fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ciphertext")
            .field("from", &self.to_string())
            .field("context", &self.context)
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl Source for KmsInner {
    type Item = Ciphertext;

    fn kind(&self) -> &'static str {
        "kms"
    }

    #[cfg(feature = "assume-role")]
    fn role_arn(&self) -> Option<&str> {
        self.origin.role().map(crate::AssumeRole::arn)
    }

    #[cfg(feature = "assume-role")]
    fn seal(&self) {
        self.origin.forget();
    }

    /// `kms:Decrypt` on the key named by [`Ciphertext::key_id`] (a key id or ARN; for an alias,
    /// any key of that account and Region asked for by that alias, `kms:RequestAlias`; with no
    /// key, any key of the scope's account), under the ciphertext's encryption context.
    fn permissions(&self, item: &Ciphertext, scope: &PolicyScope) -> Option<Vec<Permission>> {
        let any_key = |arn_prefix: String| format!("{arn_prefix}key/*");
        let mut alias = None;
        let resource = match item.key_id.as_deref() {
            None => scope.arn("kms", "key/*"),
            Some(id) if id.starts_with("arn:") => match id.split_once(":alias/") {
                Some((prefix, name)) => {
                    alias = Some(format!("alias/{name}"));
                    any_key(format!("{prefix}:"))
                }
                None => id.to_owned(),
            },
            Some(id) if id.starts_with("alias/") => {
                alias = Some(id.to_owned());
                scope.arn("kms", "key/*")
            }
            Some(id) => scope.arn("kms", &format!("key/{id}")),
        };
        let mut permission = Permission::new("kms:Decrypt", resource);
        if let Some(alias) = alias {
            permission = permission.condition("StringEquals", "kms:RequestAlias", alias);
        }
        for (k, v) in &item.context {
            permission =
                permission.condition("StringEquals", format!("kms:EncryptionContext:{k}"), v.clone());
        }
        Some(vec![permission])
    }

    async fn fetch(&self, items: &[Ciphertext], calls: &CallContext) -> Vec<ItemResult> {
        join_all(items.iter().map(|item| self.decrypt(item, calls))).await
    }

    async fn refresh(
        &self,
        items: &[Ciphertext],
        _current: &[Option<String>],
        _calls: &CallContext,
    ) -> Vec<RefreshResult> {
        items
            .iter()
            .map(|_| Ok(Refreshed::Unchanged { refresh_by: None }))
            .collect()
    }
}

impl KmsInner {
    async fn decrypt(&self, item: &Ciphertext, calls: &CallContext) -> ItemResult {
        let base64 = match &item.from {
            Location::Base64(text) => text.clone(),
            Location::Env(var) => std::env::var(var)
                .map_err(|_| ItemError::Invalid(format!("environment variable `{var}` is not set")))?,
        };
        let ciphertext = aws_smithy_types::base64::decode(base64.trim())
            .map_err(|_| ItemError::Invalid(format!("{item} is not base64 ciphertext")))?;
        let context: std::collections::HashMap<String, String> = item.context.clone().into_iter().collect();
        let out = calls
            .call(DECRYPT, || {
                let send = self
                    .client
                    .decrypt()
                    .ciphertext_blob(Blob::new(ciphertext.clone()))
                    .set_encryption_context((!context.is_empty()).then(|| context.clone()))
                    .set_key_id(item.key_id.clone())
                    .send();
                async move { super::aws::answered(DECRYPT.name(), send.await) }
            })
            .await
            .map_err(|e| {
                let code = e.message();
                if code.contains("InvalidCiphertextException") || code.contains("IncorrectKeyException") {
                    ItemError::Call(CallError::new(
                        CallErrorKind::Fatal,
                        format!("KMS could not decrypt it: wrong encryption context, wrong key, or not KMS ciphertext ({e})"),
                    ))
                } else {
                    e.into_item_error("kms:Decrypt")
                }
            })?;
        let plaintext = out.plaintext.map(Blob::into_inner).unwrap_or_default();
        let mut fetched = Fetched::new(item.to_string(), SecretValue::new(plaintext));
        fetched.version = out.key_id;
        Ok(vec![fetched])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn declaring_the_same_ciphertext_again_is_one_item() {
        let config = aws_types::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let kms = KmsSource::new(&config);
        let a = kms.decrypt("a", Ciphertext::base64("AQICAHh=").context("app", "billing"));
        let b = kms.decrypt("b", Ciphertext::base64("AQICAHh=").context("app", "billing"));
        let other = kms.decrypt("c", Ciphertext::base64("AQICAHh=").context("app", "payroll"));
        assert!(a.item == b.item);
        assert!(a.item != other.item);
        assert_eq!(a.item.to_string(), "ciphertext (8 base64 characters)");
    }
}
