//! Sources: where values come from. A source fetches a set of its items, batching as its API
//! allows, and makes every API call through the [`CallContext`] it is given, so that rate limits,
//! counting, retries and deadlines are applied the same way to every source.
//!
//! A new source (a local file for development, an in-memory map for tests, another AWS service)
//! is one type implementing [`Source`], with its own [`Source::Item`] type; declarations that use
//! it are made with [`Declaration::new`].

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::BoxFuture;

use crate::call::CallContext;
use crate::error::ItemError;
use crate::iam::{Permission, PolicyScope};
use crate::value::SecretValue;

#[cfg(feature = "aws")]
#[macro_use]
mod aws;
// After `aws`, whose macro it uses.
#[cfg(feature = "appconfig")]
pub(crate) mod appconfig;
#[cfg(feature = "assume-role")]
pub(crate) mod assume;
#[cfg(any(feature = "aws-signing", feature = "assume-role"))]
mod credentials;
mod declaration;
#[cfg(feature = "dsql")]
pub(crate) mod dsql;
#[cfg(any(feature = "ssm", feature = "secretsmanager"))]
pub(crate) mod failover;
#[cfg(feature = "kms")]
pub(crate) mod kms;
mod memory;
#[cfg(feature = "rds")]
pub(crate) mod rds;
#[cfg(feature = "secretsmanager")]
pub(crate) mod secrets_manager;
#[cfg(feature = "aws-signing")]
mod signing;
#[cfg(feature = "ssm")]
pub(crate) mod ssm;

pub use declaration::Declaration;
pub use memory::MemorySource;

/// One value a source returned.
///
/// ```
/// use lambda_secrets::Fetched;
/// let f = Fetched::new("/prod/db", "pw").with_version("3");
/// assert_eq!(f.version.as_deref(), Some("3"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Fetched {
    /// For a value found under a tree item (an SSM path): its name relative to the tree
    /// (`db/password`), which the key is made of (see [`Source::is_tree`]). `None` for a single
    /// value.
    pub relative: Option<String>,
    /// The full name of what was fetched (for SSM, the parameter name).
    pub name: String,
    /// The version the source reported (SSM: the parameter version; Secrets Manager: the
    /// version id).
    pub version: Option<String>,
    /// The source asks to be refreshed no later than this, whatever the TTL (Secrets
    /// Manager: the secret's next scheduled rotation).
    pub refresh_by: Option<SystemTime>,
    /// The value is no good after this (an IAM auth token: the end of its own lifetime or of the
    /// credentials that signed it, whichever is first). It is never served past it, and is
    /// refreshed ahead of it, off the request path, by a minute or a tenth of its lifetime,
    /// whichever is smaller (see [the crate docs](crate#freshness)).
    pub expires_at: Option<SystemTime>,
    /// When the value was last changed at the source, if it says (SSM: `LastModifiedDate`;
    /// Secrets Manager: the version's `CreatedDate`): a source with a failover Region never
    /// replaces a value with one its failover Region changed earlier.
    pub modified_at: Option<SystemTime>,
    /// The Region that answered, for a source with a failover Region.
    pub region: Option<String>,
    /// The plaintext.
    pub value: SecretValue,
}

impl Fetched {
    /// A value named `name`.
    ///
    /// ```
    /// let f = lambda_secrets::Fetched::new("/prod/db", "pw");
    /// assert_eq!(f.name, "/prod/db");
    /// ```
    pub fn new(name: impl Into<String>, value: impl Into<SecretValue>) -> Self {
        Fetched {
            relative: None,
            name: name.into(),
            version: None,
            refresh_by: None,
            expires_at: None,
            modified_at: None,
            region: None,
            value: value.into(),
        }
    }

    /// With when the value was last changed at the source ([`modified_at`](Self::modified_at)).
    ///
    /// ```
    /// use std::time::SystemTime;
    /// let at = SystemTime::UNIX_EPOCH;
    /// let f = lambda_secrets::Fetched::new("/prod/db", "pw").with_modified_at(Some(at));
    /// assert_eq!(f.modified_at, Some(at));
    /// ```
    pub fn with_modified_at(mut self, at: Option<SystemTime>) -> Self {
        self.modified_at = at;
        self
    }

    /// With the version the source reported.
    ///
    /// ```
    /// let f = lambda_secrets::Fetched::new("/prod/db", "pw").with_version("7");
    /// assert_eq!(f.version.as_deref(), Some("7"));
    /// ```
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// With its name relative to the tree item it was found under.
    ///
    /// ```
    /// let f = lambda_secrets::Fetched::new("/prod/app/db/url", "x").with_relative("db/url");
    /// assert_eq!(f.relative.as_deref(), Some("db/url"));
    /// ```
    pub fn with_relative(mut self, relative: impl Into<String>) -> Self {
        self.relative = Some(relative.into());
        self
    }

    /// Asks for a refresh no later than `at`.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// let rotation = SystemTime::now() + Duration::from_secs(3600);
    /// let f = lambda_secrets::Fetched::new("prod/db", "pw").with_refresh_by(Some(rotation));
    /// assert_eq!(f.refresh_by, Some(rotation));
    /// ```
    pub fn with_refresh_by(mut self, at: Option<SystemTime>) -> Self {
        self.refresh_by = at;
        self
    }

    /// With the instant after which the value is no good ([`expires_at`](Self::expires_at)).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// let expiry = SystemTime::now() + Duration::from_secs(900);
    /// let f = lambda_secrets::Fetched::new("db:5432/app", "token").with_expires_at(Some(expiry));
    /// assert_eq!(f.expires_at, Some(expiry));
    /// ```
    pub fn with_expires_at(mut self, at: Option<SystemTime>) -> Self {
        self.expires_at = at;
        self
    }
}

/// What a refresh found for one item.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Refreshed {
    /// New values (or the same ones, fetched again).
    Changed(Vec<Fetched>),
    /// The source checked that the cached version is still current without fetching it.
    Unchanged {
        /// As [`Fetched::refresh_by`].
        refresh_by: Option<SystemTime>,
    },
}

/// The outcome of refreshing one item.
pub type RefreshResult = Result<Refreshed, ItemError>;

/// The outcome for one item: its value(s), or why not.
pub type ItemResult = Result<Vec<Fetched>, ItemError>;

/// A place values come from.
///
/// `fetch` receives distinct items and returns one result per item, in the same order. It
/// batches as the API allows and runs batches concurrently; every API call goes through
/// [`CallContext::call`].
///
/// ```
/// use std::sync::Arc;
/// use lambda_secrets::{CallContext, Declaration, Fetched, ItemError, ItemResult, Secrets, Source};
///
/// /// Values from environment variables named after the item (development only!).
/// struct EnvSource;
///
/// impl Source for EnvSource {
///     type Item = String;
///
///     fn kind(&self) -> &'static str {
///         "env"
///     }
///
///     async fn fetch(&self, items: &[String], _calls: &CallContext) -> Vec<ItemResult> {
///         items
///             .iter()
///             .map(|var| match std::env::var(var) {
///                 Ok(v) => Ok(vec![Fetched::new(var, v)]),
///                 Err(_) => Err(ItemError::NotFound),
///             })
///             .collect()
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// std::env::set_var("GREETING", "hello");
/// let env = Arc::new(EnvSource);
/// let secrets = Secrets::builder()
///     .add(Declaration::new("greeting", env, "GREETING".to_owned()))
///     .load()
///     .await
///     .unwrap();
/// assert_eq!(secrets.snapshot().expose_str("greeting").unwrap(), "hello");
/// # });
/// ```
pub trait Source: Send + Sync + 'static {
    /// What a declaration asks of this source: for SSM a parameter name or a path, for Secrets
    /// Manager a secret id with its stage or version. Its `Display` names it in errors, logs and
    /// [`Failure::id`](crate::Failure::id) (never put a value in it).
    type Item: Clone + Eq + Hash + fmt::Debug + fmt::Display + Send + Sync + 'static;

    /// A short label for errors, logs and the check CLI (`ssm`, `secretsmanager`, `file`).
    fn kind(&self) -> &'static str;

    /// Whether `item` stands for every value found under it (an SSM path) rather than for one
    /// value. The values of a tree item are keyed by the declaration's key prefix followed by each
    /// value's [`Fetched::relative`] name. The default: every item is one value.
    ///
    /// ```
    /// use lambda_secrets::{CallContext, ItemResult, Source};
    ///
    /// /// Files: a name ending in `/` is a directory, every file under it a value.
    /// struct Files;
    /// impl Source for Files {
    ///     type Item = String;
    ///     fn kind(&self) -> &'static str { "file" }
    ///     fn is_tree(&self, item: &String) -> bool { item.ends_with('/') }
    ///     async fn fetch(&self, items: &[String], _: &CallContext) -> Vec<ItemResult> {
    ///         # let _ = items; unimplemented!()
    ///     }
    /// }
    /// assert!(Files.is_tree(&"/etc/app/".to_owned()));
    /// ```
    fn is_tree(&self, item: &Self::Item) -> bool {
        let _ = item;
        false
    }

    /// The IAM permissions that fetching and refreshing `item` need, with ARNs written for
    /// `scope`, for a [`Policy`](crate::Policy). `None`, the default, means the source does not
    /// say, and a policy of a declaration using it fails naming the declaration; a source that
    /// needs no permission returns an empty list.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lambda_secrets::{CallContext, Declaration, ItemResult, Permission, Policy, PolicyScope, Source};
    ///
    /// /// Objects of one S3 bucket.
    /// struct Bucket(String);
    /// impl Source for Bucket {
    ///     type Item = String;
    ///     fn kind(&self) -> &'static str { "s3" }
    ///     async fn fetch(&self, items: &[String], _: &CallContext) -> Vec<ItemResult> {
    ///         # let _ = items; unimplemented!()
    ///     }
    ///     fn permissions(&self, key: &String, _scope: &PolicyScope) -> Option<Vec<Permission>> {
    ///         Some(vec![Permission::new("s3:GetObject", format!("arn:aws:s3:::{}/{key}", self.0))])
    ///     }
    /// }
    ///
    /// let bucket = Arc::new(Bucket("config-bucket".into()));
    /// let policy = Policy::builder()
    ///     .declaration(&Declaration::new("flags", bucket, "flags.json".to_owned()))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(policy.statements()[0].resources, ["arn:aws:s3:::config-bucket/flags.json"]);
    /// ```
    fn permissions(&self, item: &Self::Item, scope: &PolicyScope) -> Option<Vec<Permission>> {
        let _ = (item, scope);
        None
    }

    /// The role the source's calls are made as when it is not the function's own (an assumed
    /// role's ARN): a [`Policy`](crate::Policy) then grants the function `sts:AssumeRole` on it
    /// and lists what [`permissions`](Self::permissions) says under that role
    /// ([`Policy::role_policies`](crate::Policy::role_policies)). The default: the function's own.
    fn role_arn(&self) -> Option<&str> {
        None
    }

    /// Drops what the source keeps that must not be in a SnapStart snapshot (credentials it
    /// cached, a session): called by [`SnapStart::before_snapshot`](crate::SnapStart::before_snapshot)
    /// once the values are dropped. After the restore the source gets them afresh. The default
    /// keeps nothing, so does nothing.
    fn seal(&self) {}

    /// Fetches `items` (distinct); returns one result per item, in order.
    fn fetch(
        &self,
        items: &[Self::Item],
        calls: &CallContext,
    ) -> impl Future<Output = Vec<ItemResult>> + Send;

    /// Refreshes `items`, whose cached versions are `current` (same order). A source that can
    /// check a version cheaply (Secrets Manager's `DescribeSecret`) answers
    /// [`Refreshed::Unchanged`] without fetching the value; a source whose values cannot change
    /// may answer it without any call. The default fetches again.
    fn refresh(
        &self,
        items: &[Self::Item],
        current: &[Option<String>],
        calls: &CallContext,
    ) -> impl Future<Output = Vec<RefreshResult>> + Send {
        let _ = current;
        async move {
            self.fetch(items, calls)
                .await
                .into_iter()
                .map(|r| r.map(Refreshed::Changed))
                .collect()
        }
    }
}

/// A [`Source`] with its item type erased, as the store holds it.
pub(crate) trait DynSource: Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    fn permissions(&self, item: &AnyItem, scope: &PolicyScope) -> Option<Vec<Permission>>;
    fn role_arn(&self) -> Option<&str>;
    fn seal(&self);
    fn fetch<'a>(&'a self, items: &'a [AnyItem], calls: &'a CallContext) -> BoxFuture<'a, Vec<ItemResult>>;
    fn refresh<'a>(
        &'a self,
        items: &'a [AnyItem],
        current: &'a [Option<String>],
        calls: &'a CallContext,
    ) -> BoxFuture<'a, Vec<RefreshResult>>;
}

impl<S: Source> DynSource for S {
    fn kind(&self) -> &'static str {
        Source::kind(self)
    }

    fn permissions(&self, item: &AnyItem, scope: &PolicyScope) -> Option<Vec<Permission>> {
        let item = item.item.as_any().downcast_ref::<S::Item>()?;
        Source::permissions(self, item, scope)
    }

    fn role_arn(&self) -> Option<&str> {
        Source::role_arn(self)
    }

    fn seal(&self) {
        Source::seal(self);
    }

    fn fetch<'a>(&'a self, items: &'a [AnyItem], calls: &'a CallContext) -> BoxFuture<'a, Vec<ItemResult>> {
        Box::pin(async move {
            match typed::<S::Item>(items) {
                Some(items) => Source::fetch(self, &items, calls).await,
                None => mismatched(items.len()),
            }
        })
    }

    fn refresh<'a>(
        &'a self,
        items: &'a [AnyItem],
        current: &'a [Option<String>],
        calls: &'a CallContext,
    ) -> BoxFuture<'a, Vec<RefreshResult>> {
        Box::pin(async move {
            match typed::<S::Item>(items) {
                Some(items) => Source::refresh(self, &items, current, calls).await,
                None => mismatched(items.len()),
            }
        })
    }
}

/// Seals each distinct source of `sources` once ([`Source::seal`]).
pub(crate) fn seal_each<'a>(sources: impl IntoIterator<Item = &'a Arc<dyn DynSource>>) {
    let mut sealed: Vec<*const ()> = Vec::new();
    for source in sources {
        let at = Arc::as_ptr(source).cast::<()>();
        if !sealed.contains(&at) {
            sealed.push(at);
            source.seal();
        }
    }
}

/// The distinct sources an on-demand cache has fetched from, to seal them whatever its entries
/// hold then (weakly held: a source no longer used can go).
#[cfg(feature = "on-demand")]
#[derive(Default)]
pub(crate) struct Seen(std::sync::Mutex<Vec<std::sync::Weak<dyn DynSource>>>);

#[cfg(feature = "on-demand")]
impl Seen {
    /// Remembers `source` (once).
    pub(crate) fn note(&self, source: &Arc<dyn DynSource>) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let at = Arc::as_ptr(source).cast::<()>();
        if seen.iter().any(|w| std::sync::Weak::as_ptr(w).cast::<()>() == at) {
            return;
        }
        seen.retain(|w| w.strong_count() > 0);
        seen.push(Arc::downgrade(source));
    }

    /// Seals every source remembered that still lives ([`Source::seal`]).
    pub(crate) fn seal(&self) {
        let live: Vec<Arc<dyn DynSource>> = {
            let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
            seen.iter().filter_map(std::sync::Weak::upgrade).collect()
        };
        seal_each(&live);
    }
}

/// The items as the source's own type (a declaration always pairs a source with its item type).
fn typed<T: Clone + 'static>(items: &[AnyItem]) -> Option<Vec<T>> {
    items
        .iter()
        .map(|i| i.item.as_any().downcast_ref::<T>().cloned())
        .collect()
}

fn mismatched<T>(n: usize) -> Vec<Result<T, ItemError>> {
    (0..n)
        .map(|_| {
            Err(ItemError::Source(
                "an item of another source was given to this source".into(),
            ))
        })
        .collect()
}

/// An item of some source, type-erased: comparable and hashable (declarations of the same item
/// share one fetch), displayable (errors name it). `tree` is the source's [`Source::is_tree`] of
/// it, kept beside it for the store.
#[derive(Clone)]
pub(crate) struct AnyItem {
    item: Arc<dyn ErasedItem>,
    pub(crate) tree: bool,
}

impl AnyItem {
    pub(crate) fn new<T: Eq + Hash + fmt::Debug + fmt::Display + Send + Sync + 'static>(
        item: T,
        tree: bool,
    ) -> Self {
        AnyItem {
            item: Arc::new(item),
            tree,
        }
    }
}

trait ErasedItem: fmt::Debug + fmt::Display + Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn eq_item(&self, other: &dyn ErasedItem) -> bool;
    fn hash_item(&self, state: &mut dyn Hasher);
}

impl<T: Eq + Hash + fmt::Debug + fmt::Display + Send + Sync + 'static> ErasedItem for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn eq_item(&self, other: &dyn ErasedItem) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }

    fn hash_item(&self, mut state: &mut dyn Hasher) {
        self.hash(&mut state);
    }
}

impl PartialEq for AnyItem {
    fn eq(&self, other: &Self) -> bool {
        self.item.eq_item(&*other.item)
    }
}

impl Eq for AnyItem {}

impl Hash for AnyItem {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.item.as_any().type_id().hash(state);
        self.item.hash_item(state);
    }
}

impl fmt::Display for AnyItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.item, f)
    }
}

impl fmt::Debug for AnyItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.item, f)
    }
}
