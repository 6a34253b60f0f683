//! [`MemorySource`]: values held in memory, for tests, local development and benchmarks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{Declaration, Fetched, ItemResult, Source};
use crate::call::{CallContext, Operation};
use crate::error::{CallError, CallErrorKind, ItemError};
use crate::value::SecretValue;

/// Values kept in memory, changeable at run time: stands in for a real store in tests and local
/// development. One `fetch` is one call named `MemoryFetch`, whatever the number of items.
///
/// ```
/// use lambda_secrets::{MemorySource, Secrets};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mem = MemorySource::new();
/// mem.set("/app/db_password", "hunter2");
/// mem.set("/app/flags/beta", "on");
/// let secrets = Secrets::builder()
///     .add(mem.value("db", "/app/db_password"))
///     .add(mem.tree("", "/app/flags"))
///     .load()
///     .await
///     .unwrap();
/// let snapshot = secrets.snapshot();
/// assert_eq!(snapshot.expose_str("db").unwrap(), "hunter2");
/// assert_eq!(snapshot.expose_str("beta").unwrap(), "on");
/// assert_eq!(mem.fetches(), 1);
/// # });
/// ```
#[derive(Clone, Default)]
pub struct MemorySource {
    inner: Arc<MemoryInner>,
}

/// Value, version, refresh-by.
type Entry = (SecretValue, u64, Option<SystemTime>);

#[derive(Default)]
struct MemoryInner {
    values: Mutex<BTreeMap<String, Entry>>,
    failing: AtomicBool,
    fetches: AtomicU64,
    latency: Mutex<Duration>,
}

impl std::fmt::Debug for MemorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.inner.values.lock().unwrap().keys().cloned().collect();
        f.debug_struct("MemorySource").field("ids", &ids).finish()
    }
}

impl MemorySource {
    /// An empty source.
    ///
    /// ```
    /// let mem = lambda_secrets::MemorySource::new();
    /// assert_eq!(mem.fetches(), 0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `id` to `value`, bumping its version (1 for a new id).
    ///
    /// ```
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// mem.set("/db", "rotated"); // version 2
    /// ```
    pub fn set(&self, id: impl Into<String>, value: impl Into<SecretValue>) {
        self.set_with_refresh_by(id, value, None);
    }

    /// Like [`set`](Self::set), asking for a refresh no later than `refresh_by` (as a secret's
    /// next rotation does).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set_with_refresh_by("/db", "pw", Some(SystemTime::now() + Duration::from_secs(60)));
    /// ```
    pub fn set_with_refresh_by(
        &self,
        id: impl Into<String>,
        value: impl Into<SecretValue>,
        refresh_by: Option<SystemTime>,
    ) {
        let mut values = self.inner.values.lock().unwrap();
        let entry = values
            .entry(id.into())
            .or_insert_with(|| (SecretValue::from(""), 0, None));
        *entry = (value.into(), entry.1 + 1, refresh_by);
    }

    /// Removes `id`.
    ///
    /// ```
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// mem.remove("/db");
    /// ```
    pub fn remove(&self, id: &str) {
        self.inner.values.lock().unwrap().remove(id);
    }

    /// While `true`, every fetch fails with a retryable error (an outage).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).retry_policy(lambda_secrets::RetryPolicy::default().max_attempts(1)).load().await.unwrap();
    /// mem.set_failing(true);
    /// assert!(secrets.refresh_now("db").await.is_err());
    /// # });
    /// ```
    pub fn set_failing(&self, failing: bool) {
        self.inner.failing.store(failing, Ordering::SeqCst);
    }

    /// Delay of every fetch.
    ///
    /// ```
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set_latency(std::time::Duration::from_millis(20)); // as a real service would
    /// ```
    pub fn set_latency(&self, latency: Duration) {
        *self.inner.latency.lock().unwrap() = latency;
    }

    /// Fetch calls made so far (attempts, including failed ones).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// assert_eq!(mem.fetches(), 1);
    /// # });
    /// ```
    pub fn fetches(&self) -> u64 {
        self.inner.fetches.load(Ordering::SeqCst)
    }

    /// Declares `key` as the value `id`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// assert_eq!(secrets.snapshot().expose_str("db").unwrap(), "pw");
    /// # });
    /// ```
    pub fn value(&self, key: impl Into<String>, id: impl Into<String>) -> Declaration {
        Declaration::new(key, self.inner.clone(), MemoryItem::One(id.into()))
    }

    /// Declares every id under `prefix`, keyed by `key_prefix` + the id relative to `prefix`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/app/a", "1");
    /// mem.set("/app/b/c", "2");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.tree("", "/app")).load().await.unwrap();
    /// assert_eq!(secrets.snapshot().keys(), ["a", "b/c"]);
    /// # });
    /// ```
    pub fn tree(&self, key_prefix: impl Into<String>, prefix: impl Into<String>) -> Declaration {
        Declaration::new(key_prefix, self.inner.clone(), MemoryItem::Tree(prefix.into()))
    }
}

/// An id, or every id under a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum MemoryItem {
    One(String),
    Tree(String),
}

impl std::fmt::Display for MemoryItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemoryItem::One(id) | MemoryItem::Tree(id) => f.write_str(id),
        }
    }
}

const MEMORY_FETCH: Operation = Operation::new("MemoryFetch");

impl Source for MemoryInner {
    type Item = MemoryItem;

    fn kind(&self) -> &'static str {
        "memory"
    }

    /// None: values in memory need no IAM permission.
    fn permissions(
        &self,
        _item: &MemoryItem,
        _scope: &crate::iam::PolicyScope,
    ) -> Option<Vec<crate::iam::Permission>> {
        Some(Vec::new())
    }

    fn is_tree(&self, item: &MemoryItem) -> bool {
        matches!(item, MemoryItem::Tree(_))
    }

    async fn fetch(&self, items: &[MemoryItem], calls: &CallContext) -> Vec<ItemResult> {
        {
            let attempt = || async {
                self.fetches.fetch_add(1, Ordering::SeqCst);
                let latency = *self.latency.lock().unwrap();
                if !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
                if self.failing.load(Ordering::SeqCst) {
                    return Err(CallError::new(
                        CallErrorKind::Transient,
                        "MemoryFetch: source is failing",
                    ));
                }
                let values = self.values.lock().unwrap();
                Ok(items.iter().map(|item| lookup(&values, item)).collect::<Vec<_>>())
            };
            match calls.call(MEMORY_FETCH, attempt).await {
                Ok(results) => results,
                Err(e) => items.iter().map(|_| Err(ItemError::Call(e.clone()))).collect(),
            }
        }
    }
}

fn lookup(values: &BTreeMap<String, Entry>, item: &MemoryItem) -> ItemResult {
    let fetched = |id: &str, relative: Option<String>, (value, version, refresh_by): &Entry| {
        let mut f = Fetched::new(id, value.clone())
            .with_version(version.to_string())
            .with_refresh_by(*refresh_by);
        f.relative = relative;
        f
    };
    match item {
        MemoryItem::One(id) => values
            .get(id)
            .map(|v| vec![fetched(id, None, v)])
            .ok_or(ItemError::NotFound),
        MemoryItem::Tree(prefix) => {
            let found: Vec<Fetched> = values
                .range(prefix.clone()..)
                .take_while(|(id, _)| id.starts_with(prefix.as_str()))
                .map(|(id, v)| {
                    let relative = id[prefix.len()..].trim_start_matches('/').to_owned();
                    fetched(id, Some(relative), v)
                })
                .collect();
            if found.is_empty() {
                Err(ItemError::NotFound)
            } else {
                Ok(found)
            }
        }
    }
}
