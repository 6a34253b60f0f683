//! [`Snapshot`]: the immutable view of every value that one invocation reads.

use std::fmt;
use std::sync::Arc;
use tokio::time::Instant;

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;

use crate::error::{Error, ItemError};
use crate::value::SecretValue;

/// Where a value came from (safe to log: no value in it).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mem = lambda_secrets::MemorySource::new();
/// mem.set("/db", "pw");
/// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
/// let info = secrets.snapshot().info("db").unwrap().clone();
/// assert_eq!((info.source, info.name.as_str(), info.version.as_deref()), ("memory", "/db", Some("1")));
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValueInfo {
    /// The source kind (`ssm`).
    pub source: &'static str,
    /// The full name of what was fetched (the SSM parameter name).
    pub name: String,
    /// The version the source reported (SSM: the parameter version; Secrets Manager: the
    /// version id).
    pub version: Option<String>,
    /// When the source asked for the next refresh at the latest (Secrets Manager: the
    /// secret's next scheduled rotation); the TTL is capped at it.
    pub refresh_by: Option<std::time::SystemTime>,
    /// When the value stops being good (an IAM auth token: the end of its lifetime or of its
    /// credentials', whichever is first); it is refreshed ahead of it and never served past it.
    /// `None` for values that do not expire.
    pub expires_at: Option<std::time::SystemTime>,
    /// The Region that served it, for a source with a failover Region (`failover_region`): its
    /// own, or the failover Region's while its own failed. `None` for other sources.
    pub region: Option<String>,
    /// When the value was last changed at the source, if it says (SSM: `LastModifiedDate`;
    /// Secrets Manager: the version's `CreatedDate`).
    pub modified_at: Option<std::time::SystemTime>,
    /// When the source last gave or confirmed it (see [`age`](Self::age)).
    fetched_at: Instant,
}

impl ValueInfo {
    pub(crate) fn new(
        source: &'static str,
        name: String,
        version: Option<String>,
        refresh_by: Option<std::time::SystemTime>,
        expires_at: Option<std::time::SystemTime>,
        fetched_at: Instant,
    ) -> Self {
        ValueInfo {
            source,
            name,
            version,
            refresh_by,
            expires_at,
            region: None,
            modified_at: None,
            fetched_at,
        }
    }

    /// With the Region that served it and when it was last changed.
    pub(crate) fn with_region(
        mut self,
        region: Option<String>,
        modified_at: Option<std::time::SystemTime>,
    ) -> Self {
        self.region = region;
        self.modified_at = modified_at;
        self
    }

    /// The same value, confirmed by the source `at`, with its new "refresh me by" (its expiry
    /// stays).
    pub(crate) fn confirmed(&self, refresh_by: Option<std::time::SystemTime>, at: Instant) -> Self {
        ValueInfo {
            refresh_by,
            fetched_at: at,
            ..self.clone()
        }
    }

    /// How long ago the source last gave or confirmed this value: what counts against the maximum
    /// staleness (see [the crate docs](crate#freshness)).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// assert!(secrets.snapshot().info("db").unwrap().age() < std::time::Duration::from_secs(60));
    /// # });
    /// ```
    pub fn age(&self) -> std::time::Duration {
        Instant::now().saturating_duration_since(self.fetched_at)
    }
}

/// A value as a snapshot holds it.
#[derive(Clone)]
pub(crate) struct Published {
    pub(crate) value: SecretValue,
    pub(crate) info: Arc<ValueInfo>,
    /// Index of the store's entry (source item) that produced it.
    pub(crate) entry: usize,
    /// Set when the value may not be served: it is as old as its maximum staleness and no refresh
    /// replaced it (the refresh failed, or had not answered yet).
    pub(crate) expired: Option<Arc<ItemError>>,
}

pub(crate) struct SnapshotData {
    /// Shared by snapshots that differ only in timing.
    pub(crate) values: Arc<FxHashMap<Box<str>, Published>>,
    /// The earliest instant at which something is due (a refresh, or a staleness limit).
    pub(crate) check_at: Instant,
    /// The earliest instant at which a value served passes its maximum staleness (readers then
    /// wait for its refresh).
    pub(crate) stale_at: Instant,
    /// How many entries' values were unserved when it was built.
    pub(crate) unserved: usize,
    /// The values were dropped for a SnapStart snapshot: every read says so.
    pub(crate) sealed: bool,
}

/// One consistent view of all loaded values, as of the start of an invocation.
///
/// A refresh that lands while an invocation runs publishes a new snapshot for the next
/// invocations; this one never changes. Cloning is a reference count.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use lambda_secrets::{MemorySource, Secrets};
///
/// #[derive(serde::Deserialize)]
/// struct Db { user: String, port: u16 }
///
/// let mem = MemorySource::new();
/// mem.set("/db", r#"{"user":"app","port":5432}"#);
/// mem.set("/hosts", "a.example,b.example");
/// let secrets = Secrets::builder()
///     .add(mem.value("db", "/db"))
///     .add(mem.value("hosts", "/hosts"))
///     .load()
///     .await
///     .unwrap();
///
/// let snapshot = secrets.snapshot();
/// let db: Db = snapshot.expose_json("db").unwrap();
/// assert_eq!((db.user.as_str(), db.port), ("app", 5432));
/// assert_eq!(snapshot.expose_list("hosts").unwrap(), ["a.example", "b.example"]);
/// assert!(snapshot.get("nope").is_err());
/// # });
/// ```
#[derive(Clone)]
pub struct Snapshot(pub(crate) Arc<SnapshotData>);

impl Snapshot {
    #[inline]
    fn slot(&self, key: &str) -> Result<&Published, Error> {
        match self.0.values.get(key) {
            Some(slot) => match &slot.expired {
                // A value with an expiry (an IAM auth token) in a snapshot held past it: a long
                // invocation's. Only such values read the clock.
                None if slot.info.expires_at.is_some_and(|at| crate::time::wall::now() >= at) => Err(Error::Expired {
                    key: key.to_owned(),
                    cause: ItemError::Source(
                        "it expired while this snapshot was held (a token's lifetime); a new snapshot (`Secrets::snapshot`) holds its renewal".into(),
                    ),
                }),
                None => Ok(slot),
                Some(cause) => Err(Error::Expired {
                    key: key.to_owned(),
                    cause: ItemError::clone(cause),
                }),
            },
            None if self.0.sealed => Err(Error::DroppedForSnapshot { key: key.to_owned() }),
            None => Err(Error::MissingKey { key: key.to_owned() }),
        }
    }

    /// The value of `key`, redacted when printed.
    ///
    /// # Errors
    ///
    /// [`Error::MissingKey`] for a key that was not declared, [`Error::Expired`] for a value past
    /// its maximum staleness or its expiry, [`Error::DroppedForSnapshot`] once a SnapStart
    /// snapshot dropped the values (until the restore's reload).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/token", "abc");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("token", "/token")).load().await.unwrap();
    /// let token = secrets.snapshot().get("token").unwrap().clone();
    /// assert_eq!(format!("{token:?}"), "SecretValue([REDACTED])");
    /// assert!(matches!(secrets.snapshot().get("other"), Err(lambda_secrets::Error::MissingKey { .. })));
    /// # });
    /// ```
    #[inline]
    pub fn get(&self, key: &str) -> Result<&SecretValue, Error> {
        self.slot(key).map(|slot| &slot.value)
    }

    /// The plaintext of `key` as text ([`Error::NotUtf8`] for a binary value). UTF-8 was checked
    /// once, when the value was stored.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/token", "abc");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("token", "/token")).load().await.unwrap();
    /// assert_eq!(secrets.snapshot().expose_str("token").unwrap(), "abc");
    /// # });
    /// ```
    #[inline]
    pub fn expose_str(&self, key: &str) -> Result<&str, Error> {
        self.get(key)?
            .expose_str()
            .ok_or_else(|| Error::NotUtf8 { key: key.to_owned() })
    }

    /// The plaintext bytes of `key`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/blob", vec![0xff, 0x00]);
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("blob", "/blob")).load().await.unwrap();
    /// assert_eq!(secrets.snapshot().expose_bytes("blob").unwrap(), [0xff, 0x00]);
    /// assert!(secrets.snapshot().expose_str("blob").is_err());
    /// # });
    /// ```
    #[inline]
    pub fn expose_bytes(&self, key: &str) -> Result<&[u8], Error> {
        Ok(self.get(key)?.expose_bytes())
    }

    /// The items of a `StringList` value (comma-separated).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/hosts", "a,b");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("hosts", "/hosts")).load().await.unwrap();
    /// assert_eq!(secrets.snapshot().expose_list("hosts").unwrap(), ["a", "b"]);
    /// # });
    /// ```
    pub fn expose_list(&self, key: &str) -> Result<Vec<&str>, Error> {
        Ok(self.expose_str(key)?.split(',').collect())
    }

    /// The plaintext of `key` decoded from JSON into `T`. The error names the key and type and
    /// where decoding failed, never the value.
    ///
    /// `T` holds a copy of the plaintext: prefer field types that zeroize on drop (such as
    /// `zeroize::Zeroizing<String>`) for secrets.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// #[derive(serde::Deserialize)]
    /// struct Db { user: String, port: u16 }
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", r#"{"user":"app","port":5432}"#);
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// let db: Db = secrets.snapshot().expose_json("db").unwrap();
    /// assert_eq!((db.user.as_str(), db.port), ("app", 5432));
    /// # });
    /// ```
    pub fn expose_json<T: DeserializeOwned>(&self, key: &str) -> Result<T, Error> {
        crate::value::json::decode(self.get(key)?, key)
    }

    /// Where the value of `key` came from.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// let info = secrets.snapshot().info("db").cloned().unwrap();
    /// assert_eq!((info.source, info.name.as_str()), ("memory", "/db"));
    /// # });
    /// ```
    pub fn info(&self, key: &str) -> Option<&ValueInfo> {
        self.0.values.get(key).map(|slot| &*slot.info)
    }

    /// Every key, sorted.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// assert_eq!(secrets.snapshot().keys(), ["db"]);
    /// # });
    /// ```
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.0.values.keys().map(|k| &**k).collect();
        keys.sort_unstable();
        keys
    }

    /// Number of values.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// assert_eq!(secrets.snapshot().len(), 1);
    /// # });
    /// ```
    pub fn len(&self) -> usize {
        self.0.values.len()
    }

    /// Whether there are no values.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// assert!(!secrets.snapshot().is_empty());
    /// # });
    /// ```
    pub fn is_empty(&self) -> bool {
        self.0.values.is_empty()
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("keys", &self.keys())
            .finish_non_exhaustive()
    }
}
