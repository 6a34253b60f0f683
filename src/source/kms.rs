//! [`KmsSource`]: decrypts base64 ciphertext you supply (a literal, or an environment variable,
//! as the Lambda console's encryption helpers produce) with AWS KMS `Decrypt`, with an
//! encryption context. The plaintext exists only inside [`SecretValue`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::Client;
use futures_util::future::{join_all, BoxFuture};

use super::{
    CallContext, CallError, Declaration, Fetched, Item, ItemResult, RefreshResult, Refreshed, Source,
};
use crate::error::ItemError;
use crate::value::SecretValue;

/// The encryption context key the Lambda console's encryption helper uses.
pub const LAMBDA_FUNCTION_NAME: &str = "LambdaFunctionName";

/// AWS KMS `Decrypt` of ciphertext you supply.
///
/// ```no_run
/// use lambda_secrets::{KmsSource, Secrets};
///
/// # async fn run() -> Result<(), lambda_secrets::Error> {
/// let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
/// let kms = KmsSource::new(&config);
/// let secrets = Secrets::builder()
///     // An environment variable encrypted with the Lambda console's helper:
///     .add(kms.decrypt_env("legacy_token", "LEGACY_TOKEN").lambda_function_name_context())
///     // A literal ciphertext with a context of your own, and the key that must have made it:
///     .add(kms.decrypt("signing_key", "AQICAHh...base64...").context("app", "billing").key_id("alias/app"))
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
    entries: Mutex<Vec<Entry>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ciphertext {
    Env(String),
    Literal(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    ciphertext: Ciphertext,
    context: BTreeMap<String, String>,
    key_id: Option<String>,
}

impl std::fmt::Debug for KmsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsSource").finish_non_exhaustive()
    }
}

impl KmsSource {
    /// A source using a client made from `config` (SDK retries off: this crate retries).
    pub fn new(config: &aws_types::SdkConfig) -> Self {
        Self::with_client(client_without_retries!(aws_sdk_kms, config config))
    }

    /// A source using (a copy of) `client`, with the SDK's retries turned off.
    pub fn from_client(client: &Client) -> Self {
        Self::with_client(client_without_retries!(aws_sdk_kms, client client))
    }

    fn with_client(client: Client) -> Self {
        KmsSource {
            inner: Arc::new(KmsInner {
                client,
                entries: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Declares `key` as the plaintext of `ciphertext` (base64).
    pub fn decrypt(&self, key: impl Into<String>, ciphertext: impl Into<String>) -> KmsDeclaration {
        self.declaration(key.into(), Ciphertext::Literal(ciphertext.into()))
    }

    /// Declares `key` as the plaintext of the base64 ciphertext in environment variable `var`
    /// (read at load).
    pub fn decrypt_env(&self, key: impl Into<String>, var: impl Into<String>) -> KmsDeclaration {
        self.declaration(key.into(), Ciphertext::Env(var.into()))
    }

    fn declaration(&self, key: String, ciphertext: Ciphertext) -> KmsDeclaration {
        KmsDeclaration {
            source: self.clone(),
            key,
            entry: Entry {
                ciphertext,
                context: BTreeMap::new(),
                key_id: None,
            },
            ttl: None,
            invalid: None,
        }
    }
}

/// A KMS declaration being built; becomes a [`Declaration`] when added to the builder.
#[derive(Debug)]
#[must_use]
pub struct KmsDeclaration {
    source: KmsSource,
    key: String,
    entry: Entry,
    ttl: Option<Duration>,
    invalid: Option<(&'static str, String, String)>,
}

impl KmsDeclaration {
    /// Adds a pair to the encryption context (it must match the one used to encrypt).
    pub fn context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.entry.context.insert(key.into(), value.into());
        self
    }

    /// Adds `LambdaFunctionName` = this function's name (`AWS_LAMBDA_FUNCTION_NAME`), the
    /// context the Lambda console's encryption helper uses.
    pub fn lambda_function_name_context(mut self) -> Self {
        match std::env::var("AWS_LAMBDA_FUNCTION_NAME") {
            Ok(name) => self.context(LAMBDA_FUNCTION_NAME, name),
            Err(_) => {
                self.invalid = Some((
                    "encryption context",
                    LAMBDA_FUNCTION_NAME.to_owned(),
                    "AWS_LAMBDA_FUNCTION_NAME is not set (not running in Lambda?); \
                     use .context(\"LambdaFunctionName\", NAME)"
                        .to_owned(),
                ));
                self
            }
        }
    }

    /// Requires the ciphertext to have been made with this key (id, ARN or alias).
    pub fn key_id(mut self, key_id: impl Into<String>) -> Self {
        self.entry.key_id = Some(key_id.into());
        self
    }

    /// Overrides the builder's default TTL (values from KMS never change, so this only matters
    /// for [`Secrets::refresh_now`](crate::Secrets::refresh_now)).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

impl From<KmsDeclaration> for Declaration {
    fn from(d: KmsDeclaration) -> Declaration {
        let label = match &d.entry.ciphertext {
            Ciphertext::Env(var) => format!("env:{var}"),
            Ciphertext::Literal(_) => "ciphertext".to_owned(),
        };
        // One entry per distinct (ciphertext, context, key): declaring the same thing again (a
        // builder made per request, a test loop) does not grow the source.
        let index = {
            let mut entries = d.source.inner.entries.lock().unwrap_or_else(|e| e.into_inner());
            match entries.iter().position(|e| *e == d.entry) {
                Some(i) => i,
                None => {
                    entries.push(d.entry);
                    entries.len() - 1
                }
            }
        };
        let mut decl = Declaration::new(
            d.key,
            d.source.inner.clone(),
            Item::One(format!("{label}#{index}")),
        );
        if let Some(ttl) = d.ttl {
            decl = decl.ttl(ttl);
        }
        match d.invalid {
            Some((what, input, reason)) => decl.rejected(what, input, reason),
            None => decl,
        }
    }
}

impl Source for KmsInner {
    fn kind(&self) -> &'static str {
        "kms"
    }

    fn fetch<'a>(&'a self, items: &'a [Item], calls: &'a CallContext) -> BoxFuture<'a, Vec<ItemResult>> {
        Box::pin(join_all(items.iter().map(|item| self.decrypt(item, calls))))
    }

    fn refresh<'a>(
        &'a self,
        items: &'a [Item],
        _current: &'a [Option<String>],
        _calls: &'a CallContext,
    ) -> BoxFuture<'a, Vec<RefreshResult>> {
        Box::pin(async move {
            items
                .iter()
                .map(|_| Ok(Refreshed::Unchanged { refresh_by: None }))
                .collect()
        })
    }
}

impl KmsInner {
    async fn decrypt(&self, item: &Item, calls: &CallContext) -> ItemResult {
        let (label, index) = item.id().rsplit_once('#').unwrap_or((item.id(), ""));
        let entry = index
            .parse::<usize>()
            .ok()
            .and_then(|i| {
                self.entries
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(i)
                    .cloned()
            })
            .ok_or_else(|| ItemError::Failed("unknown KMS declaration".into()))?;
        let base64 = match &entry.ciphertext {
            Ciphertext::Literal(text) => text.clone(),
            Ciphertext::Env(var) => std::env::var(var)
                .map_err(|_| ItemError::Failed(format!("environment variable `{var}` is not set")))?,
        };
        let ciphertext = aws_smithy_types::base64::decode(base64.trim())
            .map_err(|_| ItemError::Failed(format!("{label} is not base64 ciphertext")))?;
        let context: std::collections::HashMap<String, String> = entry.context.clone().into_iter().collect();
        let out = calls
            .call("Decrypt", || {
                let send = self
                    .client
                    .decrypt()
                    .ciphertext_blob(Blob::new(ciphertext.clone()))
                    .set_encryption_context((!context.is_empty()).then(|| context.clone()))
                    .set_key_id(entry.key_id.clone())
                    .send();
                async move { send.await.map_err(|e| CallError::from_sdk("Decrypt", e)) }
            })
            .await
            .map_err(|e| {
                if e.message().contains("InvalidCiphertextException") || e.message().contains("IncorrectKeyException") {
                    ItemError::Failed(format!(
                        "KMS could not decrypt it: wrong encryption context, wrong key, or not KMS ciphertext ({e})"
                    ))
                } else {
                    e.into_item_error("kms:Decrypt")
                }
            })?;
        let plaintext = out.plaintext.map(Blob::into_inner).unwrap_or_default();
        let mut fetched = Fetched::new(label, SecretValue::new(plaintext));
        fetched.version = out.key_id;
        Ok(vec![fetched])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn declaring_the_same_ciphertext_again_does_not_grow_the_source() {
        // Review defect 6: entries grew with every declaration and never shrank.
        let config = aws_types::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let kms = KmsSource::new(&config);
        for i in 0..1000 {
            let decl: Declaration = kms
                .decrypt(format!("k{i}"), "AQICAHh=")
                .context("app", "billing")
                .into();
            assert_eq!(decl.item, Item::One("ciphertext#0".into()));
        }
        let other: Declaration = kms.decrypt("other", "AQICAHh=").context("app", "payroll").into();
        assert_eq!(other.item, Item::One("ciphertext#1".into()));
        assert_eq!(kms.inner.entries.lock().unwrap().len(), 2);
    }
}
