//! [`Declaration`]: a key bound to an item of a source, with its TTL.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{AnyItem, DynSource, Source};

/// A key (or, for a tree, a key prefix) bound to an item of a source, with its TTL and, if
/// asked, one JSON field of the value.
///
/// Sources offer helpers that make these (`SsmSource::parameter`, `SsmSource::path`,
/// `SecretsManagerSource::secret`, `KmsSource::decrypt`, [`MemorySource::value`](crate::MemorySource::value));
/// [`Declaration::new`] is for sources of your own.
///
/// ```
/// use std::time::Duration;
/// use lambda_secrets::MemorySource;
///
/// let mem = MemorySource::new();
/// let decl = mem.value("api_key", "/prod/api").ttl(Duration::from_secs(60));
/// assert_eq!(decl.key(), "api_key");
/// ```
#[derive(Clone)]
#[must_use]
pub struct Declaration {
    pub(crate) key: String,
    pub(crate) source: Arc<dyn DynSource>,
    pub(crate) item: AnyItem,
    pub(crate) ttl: Option<Duration>,
    pub(crate) field: Option<String>,
    pub(crate) invalid: Option<(&'static str, String, String)>,
    /// The only defect is a wildcard in the name: usable in a [`Policy`](crate::Policy), not loadable.
    pub(crate) pattern: bool,
    /// Loadable, but a [`Policy`](crate::Policy) cannot be written for it: why not.
    pub(crate) no_policy: Option<&'static str>,
}

impl Declaration {
    /// Binds `key` to `item` of `source`: to its value, or, for an item that stands for every
    /// value under it ([`Source::is_tree`], as an SSM path does), to each of them under the key
    /// `key` + its name relative to the item ([`Fetched::relative`](crate::Fetched::relative)).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lambda_secrets::{CallContext, Declaration, Fetched, ItemResult, Source};
    ///
    /// struct Fixed;
    /// impl Source for Fixed {
    ///     type Item = u32;
    ///     fn kind(&self) -> &'static str { "fixed" }
    ///     async fn fetch(&self, items: &[u32], _: &CallContext) -> Vec<ItemResult> {
    ///         items.iter().map(|n| Ok(vec![Fetched::new(n.to_string(), format!("value {n}"))])).collect()
    ///     }
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let secrets = lambda_secrets::Secrets::builder()
    ///     .add(Declaration::new("seven", Arc::new(Fixed), 7))
    ///     .load()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(secrets.snapshot().expose_str("seven").unwrap(), "value 7");
    /// # });
    /// ```
    pub fn new<S: Source>(key: impl Into<String>, source: Arc<S>, item: S::Item) -> Self {
        let tree = source.is_tree(&item);
        Declaration {
            key: key.into(),
            source,
            item: AnyItem::new(item, tree),
            ttl: None,
            field: None,
            invalid: None,
            pattern: false,
            no_policy: None,
        }
    }

    /// Takes one field of a JSON object value (e.g. `password` of an RDS secret) as the key's
    /// value: a string field gives its text, any other JSON its text form. A value that is not
    /// an object with this field fails the load (or the refresh) naming the key and field.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/rds", r#"{"username":"app","password":"pw","port":5432}"#);
    /// let secrets = lambda_secrets::Secrets::builder()
    ///     .add(mem.value("db_password", "/rds").json_field("password"))
    ///     .add(mem.value("db_port", "/rds").json_field("port"))
    ///     .load()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(secrets.snapshot().expose_str("db_password").unwrap(), "pw");
    /// assert_eq!(secrets.snapshot().expose_str("db_port").unwrap(), "5432");
    /// # });
    /// ```
    pub fn json_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Overrides the builder's default TTL for this declaration.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The key (or key prefix, for a tree).
    ///
    /// ```
    /// let mem = lambda_secrets::MemorySource::new();
    /// assert_eq!(mem.tree("flag.", "/flags").key(), "flag.");
    /// ```
    pub fn key(&self) -> &str {
        &self.key
    }

    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    /// Marks the declaration as rejected; `load` reports it as [`Error::InvalidInput`](crate::Error::InvalidInput).
    pub(crate) fn rejected(
        mut self,
        what: &'static str,
        input: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        self.invalid = Some((what, input.into(), reason.into()));
        self.pattern = false;
        self
    }

    #[cfg_attr(not(feature = "aws-signing"), allow(dead_code))]
    /// Marks the declaration as one a [`Policy`](crate::Policy) cannot be written for, and why
    /// (it still loads).
    pub(crate) fn without_policy(mut self, why: &'static str) -> Self {
        self.no_policy = Some(why);
        self
    }

    #[cfg_attr(not(any(feature = "ssm", feature = "secretsmanager")), allow(dead_code))]
    /// Marks the declaration as a name pattern (`*`, `?`): rejected by `load`, described by a
    /// [`Policy`](crate::Policy).
    pub(crate) fn pattern(self, what: &'static str, input: impl Into<String>) -> Self {
        let mut decl = self.rejected(
            what,
            input,
            "`*` and `?` make it a pattern, which an IAM policy can allow but which cannot be loaded",
        );
        decl.pattern = true;
        decl
    }
}

impl fmt::Debug for Declaration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Declaration")
            .field("key", &self.key)
            .field("source", &self.source.kind())
            .field("item", &self.item)
            .field("tree", &self.item.tree)
            .field("ttl", &self.ttl)
            .field("json_field", &self.field)
            .finish()
    }
}
