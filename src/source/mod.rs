//! Sources: where values come from. A source fetches a set of [`Item`]s, batching as its API
//! allows, and makes every API call through the [`CallContext`] it is given, so that counting,
//! retries and deadlines are applied the same way to every source.
//!
//! A new source (a local file for development, an in-memory map for tests, another AWS service)
//! is one type implementing [`Source`]; declarations that use it are made with
//! [`Declaration::new`].

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use futures_util::future::BoxFuture;

use crate::error::ItemError;
use crate::freeze::{after, Deadline};
use crate::limiter::{QuotaClass, RateLimits};
use crate::value::SecretValue;

/// A client of AWS SDK crate `$sdk` made from an `SdkConfig` (`config`) or from a client
/// (`client`), with the SDK's own retries off: retries are owned by [`CallContext`], so that
/// attempts are never multiplied.
#[cfg(feature = "aws")]
macro_rules! client_without_retries {
    ($sdk:ident, config $config:expr) => {
        $sdk::Client::from_conf(
            $sdk::config::Builder::from($config)
                .retry_config($sdk::config::retry::RetryConfig::disabled())
                .build(),
        )
    };
    ($sdk:ident, client $client:expr) => {
        $sdk::Client::from_conf(
            $client
                .config()
                .to_builder()
                .retry_config($sdk::config::retry::RetryConfig::disabled())
                .build(),
        )
    };
}

#[cfg(feature = "kms")]
pub mod kms;
#[cfg(feature = "secretsmanager")]
pub mod secrets_manager;
#[cfg(feature = "ssm")]
pub mod ssm;

mod memory;
pub use memory::MemorySource;

/// Something to fetch from a source.
///
/// ```
/// use lambda_secrets::Item;
/// let one = Item::One("/prod/db/password".into());
/// let all = Item::Tree("/prod/app/".into());
/// assert_ne!(one, all);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Item {
    /// One value by id (for SSM: a name or ARN, with an optional `:version` or `:label`).
    One(String),
    /// Every value under a prefix (for SSM: a path, recursive); keys are relative to it.
    Tree(String),
}

impl Item {
    /// The id or prefix as given.
    pub fn id(&self) -> &str {
        match self {
            Item::One(id) | Item::Tree(id) => id,
        }
    }
}

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
    /// For [`Item::Tree`]: the value's name relative to the prefix (`db/password`). `None` for
    /// [`Item::One`].
    pub relative: Option<String>,
    /// The full name of what was fetched (for SSM, the parameter name).
    pub name: String,
    /// The version the source reported (SSM: the parameter version; Secrets Manager: the
    /// version id).
    pub version: Option<String>,
    /// The source asks to be refreshed no later than this, whatever the TTL (Secrets
    /// Manager: the secret's next scheduled rotation).
    pub refresh_by: Option<SystemTime>,
    /// The plaintext.
    pub value: SecretValue,
}

impl Fetched {
    /// A value named `name`.
    pub fn new(name: impl Into<String>, value: impl Into<SecretValue>) -> Self {
        Fetched {
            relative: None,
            name: name.into(),
            version: None,
            refresh_by: None,
            value: value.into(),
        }
    }

    /// With the version the source reported.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// With its name relative to the [`Item::Tree`] prefix it was found under.
    pub fn with_relative(mut self, relative: impl Into<String>) -> Self {
        self.relative = Some(relative.into());
        self
    }

    /// Asks for a refresh no later than `at`.
    pub fn with_refresh_by(mut self, at: Option<SystemTime>) -> Self {
        self.refresh_by = at;
        self
    }
}

/// What a refresh found for one item.
#[derive(Debug, Clone)]
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
/// use futures_util::future::BoxFuture;
/// use lambda_secrets::{CallContext, Fetched, Item, ItemError, ItemResult, Secrets, Source};
///
/// /// Values from environment variables named after the item (development only!).
/// struct EnvSource;
///
/// impl Source for EnvSource {
///     fn kind(&self) -> &'static str {
///         "env"
///     }
///     fn fetch<'a>(&'a self, items: &'a [Item], _calls: &'a CallContext) -> BoxFuture<'a, Vec<ItemResult>> {
///         Box::pin(async move {
///             items
///                 .iter()
///                 .map(|item| match std::env::var(item.id()) {
///                     Ok(v) => Ok(vec![Fetched::new(item.id(), v)]),
///                     Err(_) => Err(ItemError::NotFound),
///                 })
///                 .collect()
///         })
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// std::env::set_var("GREETING", "hello");
/// let env: std::sync::Arc<dyn Source> = std::sync::Arc::new(EnvSource);
/// let secrets = Secrets::builder()
///     .add(lambda_secrets::Declaration::new("greeting", env, Item::One("GREETING".into())))
///     .load()
///     .await
///     .unwrap();
/// assert_eq!(secrets.snapshot().get_str("greeting").unwrap(), "hello");
/// # });
/// ```
pub trait Source: Send + Sync + 'static {
    /// A short label for errors, logs and the check CLI (`ssm`, `secretsmanager`, `file`).
    fn kind(&self) -> &'static str;

    /// Fetches `items` (distinct); returns one result per item, in order.
    fn fetch<'a>(&'a self, items: &'a [Item], calls: &'a CallContext) -> BoxFuture<'a, Vec<ItemResult>>;

    /// Refreshes `items`, whose cached versions are `current` (same order). A source that can
    /// check a version cheaply (Secrets Manager's `DescribeSecret`) answers
    /// [`Refreshed::Unchanged`] without fetching the value; a source whose values cannot change
    /// may answer it without any call. The default fetches again.
    fn refresh<'a>(
        &'a self,
        items: &'a [Item],
        current: &'a [Option<String>],
        calls: &'a CallContext,
    ) -> BoxFuture<'a, Vec<RefreshResult>> {
        let _ = current;
        Box::pin(async move {
            self.fetch(items, calls)
                .await
                .into_iter()
                .map(|r| r.map(Refreshed::Changed))
                .collect()
        })
    }
}

/// A key (or, for a tree, a key prefix) bound to an item of a source, with its TTL.
///
/// Sources offer helpers that make these (`SsmSource::parameter`); `Declaration::new` is for
/// sources of your own.
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
pub struct Declaration {
    pub(crate) key: String,
    pub(crate) source: Arc<dyn Source>,
    pub(crate) item: Item,
    pub(crate) ttl: Option<Duration>,
    pub(crate) field: Option<String>,
    pub(crate) invalid: Option<(&'static str, String, String)>,
}

impl Declaration {
    /// Binds `key` to `item` of `source`. For an [`Item::Tree`], `key` is a prefix put before
    /// every relative name (often `""`).
    pub fn new(key: impl Into<String>, source: Arc<dyn Source>, item: Item) -> Self {
        Declaration {
            key: key.into(),
            source,
            item,
            ttl: None,
            field: None,
            invalid: None,
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
    /// assert_eq!(secrets.snapshot().get_str("db_password").unwrap(), "pw");
    /// assert_eq!(secrets.snapshot().get_str("db_port").unwrap(), "5432");
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
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Marks the declaration as rejected; `load` reports it as [`Error::InvalidInput`](crate::Error::InvalidInput).
    pub fn rejected(
        mut self,
        what: &'static str,
        input: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        self.invalid = Some((what, input.into(), reason.into()));
        self
    }
}

impl fmt::Debug for Declaration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Declaration")
            .field("key", &self.key)
            .field("source", &self.source.kind())
            .field("item", &self.item)
            .field("ttl", &self.ttl)
            .field("json_field", &self.field)
            .finish()
    }
}

/// How a failed API call should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallErrorKind {
    /// The service throttled the call: retried with backoff.
    Throttled,
    /// A 5xx, a timeout or a cut connection: retried with backoff.
    Transient,
    /// Access denied: not retried.
    Denied,
    /// The thing asked for does not exist: not retried.
    NotFound,
    /// Anything else: not retried.
    Fatal,
}

/// A failed API call, classified for retry. Its message names operations, codes and resources,
/// never values.
///
/// ```
/// use lambda_secrets::{CallError, CallErrorKind};
/// let e = CallError::new(CallErrorKind::Throttled, "ThrottlingException: Rate exceeded");
/// assert!(e.is_retryable());
/// ```
#[derive(Debug, Clone)]
pub struct CallError {
    kind: CallErrorKind,
    message: String,
}

impl CallError {
    /// A classified error.
    pub fn new(kind: CallErrorKind, message: impl Into<String>) -> Self {
        CallError {
            kind,
            message: message.into(),
        }
    }

    /// Its classification.
    pub fn kind(&self) -> CallErrorKind {
        self.kind
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, CallErrorKind::Throttled | CallErrorKind::Transient)
    }

    /// Converts to the per-item error, naming `action` for access errors.
    pub fn into_item_error(self, action: &str) -> ItemError {
        match self.kind {
            CallErrorKind::Denied => ItemError::Denied {
                action: action.to_owned(),
                detail: self.message,
            },
            CallErrorKind::NotFound => ItemError::NotFound,
            _ => ItemError::Failed(self.message),
        }
    }

    /// Classifies an AWS SDK error: throttling codes and 5xx, timeouts and dispatch failures
    /// are retryable; `AccessDenied*` is [`CallErrorKind::Denied`].
    #[cfg(feature = "aws")]
    pub fn from_sdk<E, R>(
        operation: &str,
        err: aws_smithy_runtime_api::client::result::SdkError<E, R>,
    ) -> Self
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug + HttpStatus + 'static,
    {
        use aws_smithy_runtime_api::client::result::SdkError;
        match &err {
            SdkError::ServiceError(ctx) => {
                let code = ctx.err().code().unwrap_or("Unknown").to_owned();
                let message = ctx.err().message().unwrap_or("").to_owned();
                let status = ctx.raw().status_code();
                let kind = classify_code(&code, status);
                CallError::new(kind, format!("{operation}: {code} (HTTP {status}): {message}"))
            }
            SdkError::TimeoutError(_) => {
                CallError::new(CallErrorKind::Transient, format!("{operation}: timed out"))
            }
            SdkError::DispatchFailure(d) if !d.is_user() => CallError::new(
                CallErrorKind::Transient,
                format!("{operation}: could not send the request ({})", error_chain(&err)),
            ),
            SdkError::ResponseError(_) => CallError::new(
                CallErrorKind::Transient,
                format!(
                    "{operation}: the response was cut or unreadable ({})",
                    error_chain(&err)
                ),
            ),
            _ => CallError::new(
                CallErrorKind::Fatal,
                format!("{operation}: {}", error_chain(&err)),
            ),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallError {}

/// The status code of a raw HTTP response (implemented for the SDK's response type).
#[cfg(feature = "aws")]
pub trait HttpStatus {
    /// The status code.
    fn status_code(&self) -> u16;
}

#[cfg(feature = "aws")]
impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

#[cfg(feature = "aws")]
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        parts.push(e.to_string());
        cur = e.source();
    }
    parts.join(": ")
}

/// Classifies an AWS error code and HTTP status.
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub(crate) fn classify_code(code: &str, status: u16) -> CallErrorKind {
    const THROTTLING: &[&str] = &[
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "SlowDown",
    ];
    if THROTTLING.contains(&code) || status == 429 {
        CallErrorKind::Throttled
    } else if code.starts_with("AccessDenied") || code == "UnauthorizedOperation" || code == "NotAuthorized" {
        CallErrorKind::Denied
    } else if code == "ParameterNotFound"
        || code == "ResourceNotFoundException"
        || code == "ParameterVersionNotFound"
    {
        CallErrorKind::NotFound
    } else if status >= 500 {
        CallErrorKind::Transient
    } else {
        CallErrorKind::Fatal
    }
}

/// How API calls are retried: full-jitter exponential backoff, within a deadline.
///
/// ```
/// use std::time::Duration;
/// use lambda_secrets::RetryPolicy;
/// let policy = RetryPolicy::default();
/// assert_eq!(policy.max_attempts, 6);
/// assert!(policy.attempt_timeout <= Duration::from_secs(3));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per call, including the first.
    pub max_attempts: u32,
    /// Backoff before the second attempt (before jitter); doubles each attempt.
    pub base_delay: Duration,
    /// Upper bound of one backoff.
    pub max_delay: Duration,
    /// Time one HTTP attempt may take before it is abandoned and retried (a call cut by a
    /// Lambda freeze never answers).
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(3),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: uniform in `[0, min(max_delay, base * 2^retry))`.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << retry.min(20));
        exp.min(self.max_delay).mul_f64(fastrand::f64())
    }
}

/// Per-operation API call counts and retry figures, shared by all clones of a [`Secrets`](crate::Secrets).
#[derive(Debug, Default)]
pub(crate) struct CallStats {
    calls: Mutex<BTreeMap<&'static str, u64>>,
    pub(crate) throttled: AtomicU64,
    pub(crate) retries: AtomicU64,
}

impl CallStats {
    pub(crate) fn calls(&self) -> BTreeMap<String, u64> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    fn count(&self, operation: &'static str) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        *calls.entry(operation).or_default() += 1;
    }
}

/// Whether someone waits for a refresh: set by an invocation that finds a value past its maximum
/// staleness while that value's refresh is spreading its calls. One per refresh, so the end of
/// another refresh never resets it.
#[derive(Debug, Default)]
pub(crate) struct Urgency {
    urgent: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Urgency {
    pub(crate) fn urgent() -> Self {
        Urgency {
            urgent: AtomicBool::new(true),
            notify: tokio::sync::Notify::new(),
        }
    }

    /// Ends the spreading of this refresh's calls: the waiting ones start now.
    pub(crate) fn hurry(&self) {
        if !self.urgent.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    pub(crate) fn is_urgent(&self) -> bool {
        self.urgent.load(Ordering::Acquire)
    }

    /// Sleeps until `until` or until hurried; returns the time lost to a freeze.
    async fn sleep_until(&self, until: Instant) -> Duration {
        let notified = self.notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if self.is_urgent() {
            return Duration::ZERO;
        }
        let sleep = std::pin::pin!(crate::freeze::sleep_until(until));
        match futures_util::future::select(sleep, notified).await {
            futures_util::future::Either::Left((lost, _)) => lost,
            futures_util::future::Either::Right(_) => Duration::ZERO,
        }
    }
}

/// How a background refresh spreads its calls to scarce quotas.
#[derive(Debug)]
struct Spread {
    start: Instant,
    window: Duration,
    /// The refresh's random offset in the sequence of slots, and the calls that took one.
    offset: f64,
    calls: std::sync::atomic::AtomicU32,
    urgency: Arc<Urgency>,
}

/// What a source's API calls go through: counting, retries with backoff, a per-attempt timeout
/// and the deadline of the load or refresh in progress.
///
/// ```
/// use std::time::{Duration, Instant};
/// use lambda_secrets::{CallContext, RetryPolicy};
///
/// // For testing a source of your own:
/// let calls = CallContext::standalone(RetryPolicy::default(), Instant::now() + Duration::from_secs(5));
/// assert!(calls.deadline() > Instant::now());
/// ```
#[derive(Debug)]
pub struct CallContext {
    stats: Arc<CallStats>,
    policy: RetryPolicy,
    limits: Option<RateLimits>,
    deadline: Deadline,
    /// For background refreshes: calls to scarce quotas start at random points of a window.
    spread: Option<Spread>,
}

impl CallContext {
    pub(crate) fn new(
        stats: Arc<CallStats>,
        policy: RetryPolicy,
        limits: Option<RateLimits>,
        deadline: Instant,
    ) -> Self {
        CallContext {
            stats,
            policy,
            limits,
            deadline: Deadline::new(deadline),
            spread: None,
        }
    }

    /// Starts each call to a scarce quota ([`QuotaClass::is_scarce`]) at a random point of
    /// `window` from now, or at once when `urgency` is raised. The deadline should leave the
    /// window on top of the budget.
    pub(crate) fn spread(mut self, window: Duration, urgency: Arc<Urgency>) -> Self {
        if window > Duration::ZERO {
            self.spread = Some(Spread {
                start: Instant::now(),
                window,
                offset: fastrand::f64(),
                calls: Default::default(),
                urgency,
            });
        }
        self
    }

    /// A context of its own (for testing a [`Source`]): retries by `policy` until `deadline`,
    /// without rate limits.
    pub fn standalone(policy: RetryPolicy, deadline: std::time::Instant) -> Self {
        Self::new(Arc::default(), policy, None, Instant::from_std(deadline))
    }

    /// When the load or refresh in progress must be done (later than first set if the process
    /// was frozen meanwhile).
    pub fn deadline(&self) -> std::time::Instant {
        self.deadline.get().into_std()
    }

    pub(crate) fn deadline_handle(&self) -> &Deadline {
        &self.deadline
    }

    /// Makes one API call `operation` (e.g. `"GetParameters"`), retrying retryable failures
    /// with full-jitter exponential backoff while the deadline allows: throttling until the
    /// deadline, other failures up to `max_attempts`. Each attempt first takes a token from the
    /// rate limit of the operation's [`QuotaClass`], if it has one; a throttling answer slows
    /// that limit down. Time the process spends frozen (Lambda between invocations) in any wait
    /// is given back to the deadline.
    pub async fn call<T, F, Fut>(&self, operation: &'static str, mut attempt: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let mut retry = 0;
        let mut failures = 0;
        let mut thaws = 0;
        let class = QuotaClass::of(operation);
        let bucket = class.and_then(|c| self.limits.as_ref().map(|l| l.bucket(c)));
        if let Some(spread) = self
            .spread
            .as_ref()
            .filter(|_| class.is_some_and(QuotaClass::is_scarce))
        {
            let index = spread.calls.fetch_add(1, Ordering::Relaxed);
            let slot = after(
                spread.start,
                crate::schedule::call_slot(spread.window, spread.offset, index),
            );
            let seen = self.deadline.get();
            let lost = spread.urgency.sleep_until(slot).await;
            self.deadline.give_back(seen, lost);
        }
        loop {
            if let Some(bucket) = bucket {
                if let Err(wait) = bucket.acquire(&self.deadline).await {
                    return Err(CallError::new(
                        CallErrorKind::Throttled,
                        format!(
                            "{operation}: the deadline came before the rate limit allowed another call \
                             (next slot in {wait:?}; {retry} retries so far)"
                        ),
                    ));
                }
            }
            let began = Instant::now();
            let seen = self.deadline.get();
            let left = seen.saturating_duration_since(began);
            if left.is_zero() {
                return Err(CallError::new(
                    CallErrorKind::Transient,
                    format!("{operation}: the deadline came before an attempt could start ({retry} retries so far)"),
                ));
            }
            self.stats.count(operation);
            let timeout = self.policy.attempt_timeout.min(left);
            let result = match tokio::time::timeout(timeout, attempt()).await {
                Ok(result) => result,
                Err(_) => Err(CallError::new(
                    CallErrorKind::Transient,
                    format!("{operation}: no answer within {timeout:?}"),
                )),
            };
            // An attempt that outlived its own timeout by far was frozen with the process (Lambda
            // between invocations), even if it then succeeded (the answer was waiting at the
            // thaw): the time says nothing of the service and costs the budget nothing, so the
            // next call of this refresh still has its budget.
            let lost = crate::freeze::frozen_for(began, after(began, timeout), Instant::now());
            self.deadline.give_back(seen, lost);
            let err = match result {
                Ok(v) => return Ok(v),
                Err(err) => err,
            };
            // A frozen attempt that failed (its connection died in the freeze) is retried at once.
            if err.is_retryable() && !lost.is_zero() && thaws < 3 {
                thaws += 1;
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(operation, ?lost, "AWS call interrupted by a freeze; retrying");
                continue;
            }
            if err.kind == CallErrorKind::Throttled {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                if let Some(bucket) = bucket {
                    bucket.throttled();
                }
            } else {
                failures += 1;
            }
            if !err.is_retryable() {
                return Err(err);
            }
            retry += 1;
            let delay = self.policy.backoff(retry - 1);
            let out_of_time = after(Instant::now(), delay) >= self.deadline.get();
            if failures >= self.policy.max_attempts || out_of_time {
                let why = if out_of_time {
                    "the deadline came"
                } else {
                    "attempts ran out"
                };
                tracing::warn!(operation, attempts = retry, error = %err, "giving up on AWS call: {why}");
                return Err(CallError::new(
                    err.kind,
                    format!("{} (gave up after {retry} attempt(s): {why})", err.message),
                ));
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(operation, retry, ?delay, error = %err, "retrying AWS call");
            let seen = self.deadline.get();
            let lost = crate::freeze::sleep_until(after(Instant::now(), delay)).await;
            self.deadline.give_back(seen, lost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(deadline: Duration) -> (CallContext, Arc<CallStats>) {
        let stats = Arc::new(CallStats::default());
        let policy = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            attempt_timeout: Duration::from_millis(200),
        };
        (
            CallContext::new(stats.clone(), policy, None, Instant::now() + deadline),
            stats,
        )
    }

    #[tokio::test]
    async fn retries_throttling_then_succeeds() {
        let (ctx, stats) = ctx(Duration::from_secs(5));
        let mut n = 0;
        let out = ctx
            .call("GetParameters", || {
                n += 1;
                let fail = n < 3;
                async move {
                    if fail {
                        Err(CallError::new(CallErrorKind::Throttled, "ThrottlingException"))
                    } else {
                        Ok(7)
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(out, 7);
        assert_eq!(stats.calls()["GetParameters"], 3);
        assert_eq!(stats.throttled.load(Ordering::Relaxed), 2);
        assert_eq!(stats.retries.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn does_not_retry_denied_and_stops_after_max_attempts() {
        let (ctx, stats) = ctx(Duration::from_secs(5));
        let err = ctx
            .call("GetParameters", || async {
                Err::<(), _>(CallError::new(CallErrorKind::Denied, "no"))
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), CallErrorKind::Denied);
        assert_eq!(stats.calls()["GetParameters"], 1);

        let err = ctx
            .call("GetParametersByPath", || async {
                Err::<(), _>(CallError::new(CallErrorKind::Transient, "HTTP 503"))
            })
            .await
            .unwrap_err();
        assert!(
            err.message()
                .contains("gave up after 4 attempt(s): attempts ran out"),
            "{err}"
        );
        assert_eq!(stats.calls()["GetParametersByPath"], 4);
    }

    #[tokio::test]
    async fn an_attempt_that_never_answers_is_abandoned_and_retried() {
        let (ctx, stats) = ctx(Duration::from_secs(5));
        let mut n = 0;
        let out = ctx
            .call("GetParameters", || {
                n += 1;
                let hang = n == 1;
                async move {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, CallError>("ok")
                }
            })
            .await
            .unwrap();
        assert_eq!(out, "ok");
        assert_eq!(stats.calls()["GetParameters"], 2);
    }

    #[tokio::test]
    async fn an_attempt_frozen_past_the_deadline_is_retried_with_the_budget_it_had() {
        let stats = Arc::new(CallStats::default());
        let policy = RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            attempt_timeout: Duration::from_millis(100),
        };
        let ctx = CallContext::new(
            stats.clone(),
            policy,
            None,
            Instant::now() + Duration::from_millis(300),
        );
        let mut n = 0;
        let out = ctx
            .call("GetParameters", || {
                n += 1;
                let first = n == 1;
                async move {
                    if first {
                        // The process is frozen: no timer fires, the call comes back cut.
                        std::thread::sleep(Duration::from_millis(1300));
                        return Err(CallError::new(CallErrorKind::Transient, "connection reset"));
                    }
                    Ok("after thaw")
                }
            })
            .await
            .unwrap();
        assert_eq!(out, "after thaw");
        assert_eq!(stats.calls()["GetParameters"], 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hurried_spread_call_starts_at_once() {
        // Review defect 4: urgency belongs to one refresh; hurrying it starts its waiting calls.
        let stats = Arc::new(CallStats::default());
        let urgency = Arc::new(Urgency::default());
        let other = Arc::new(Urgency::default()); // another refresh's, never hurried
        let spread = |u: &Arc<Urgency>| {
            Arc::new(
                CallContext::new(
                    stats.clone(),
                    RetryPolicy::default(),
                    None,
                    Instant::now() + Duration::from_secs(600),
                )
                .spread(Duration::from_secs(300), u.clone()),
            )
        };
        let (ctx, other_ctx) = (spread(&urgency), spread(&other));
        let started = Instant::now();
        let call = |ctx: Arc<CallContext>| {
            tokio::spawn(async move {
                for _ in 0..5 {
                    ctx.call("GetParameters", || async { Ok::<_, CallError>(()) })
                        .await
                        .unwrap();
                }
                Instant::now()
            })
        };
        let (mine, theirs) = (call(ctx), call(other_ctx));
        tokio::time::sleep(Duration::from_millis(10)).await;
        urgency.hurry();
        assert_eq!(
            mine.await.unwrap(),
            started + Duration::from_millis(10),
            "all five at once"
        );
        // The other refresh still spreads its calls over its window.
        assert!(theirs.await.unwrap() > started + Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_freeze_during_a_retry_backoff_gives_the_budget_back() {
        // Probe defect 8: a freeze during a backoff ended the call with a 0 ns "attempt".
        let stats = Arc::new(CallStats::default());
        let policy = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(50),
            attempt_timeout: Duration::from_millis(100),
        };
        let ctx = Arc::new(CallContext::new(
            stats.clone(),
            policy,
            None,
            Instant::now() + Duration::from_millis(300),
        ));
        let attempts = Arc::new(AtomicU64::new(0));
        let call = {
            let (ctx, attempts) = (ctx.clone(), attempts.clone());
            tokio::spawn(async move {
                ctx.call("GetParameters", || {
                    let n = attempts.fetch_add(1, Ordering::SeqCst);
                    async move {
                        match n {
                            0 => Err(CallError::new(CallErrorKind::Transient, "HTTP 500")),
                            _ => Ok("after thaw"),
                        }
                    }
                })
                .await
            })
        };
        while attempts.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Frozen for a minute, in the backoff or right after it: no second attempt yet.
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(call.await.unwrap().unwrap(), "after thaw");
        assert_eq!(stats.calls()["GetParameters"], 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unvalidated_policy_never_overflows_the_clock() {
        // `standalone` takes any policy (a second review found `max_delay: Duration::MAX`
        // overflowing `Instant + Duration`).
        let policy = RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::MAX,
            max_delay: Duration::MAX,
            attempt_timeout: Duration::MAX,
        };
        let ctx = CallContext::standalone(policy, std::time::Instant::now() + Duration::from_secs(1));
        let err = ctx
            .call("GetParameters", || async {
                Err::<(), _>(CallError::new(CallErrorKind::Transient, "HTTP 503"))
            })
            .await
            .unwrap_err();
        assert!(err.message().contains("the deadline came"), "{err}");
    }

    #[test]
    fn classifies_codes() {
        assert_eq!(
            classify_code("ThrottlingException", 400),
            CallErrorKind::Throttled
        );
        assert_eq!(classify_code("AccessDeniedException", 400), CallErrorKind::Denied);
        assert_eq!(
            classify_code("InternalServerError", 500),
            CallErrorKind::Transient
        );
        assert_eq!(classify_code("ValidationException", 400), CallErrorKind::Fatal);
        assert_eq!(classify_code("ParameterNotFound", 400), CallErrorKind::NotFound);
    }

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy::default();
        for retry in 0..40 {
            assert!(p.backoff(retry) <= p.max_delay);
        }
    }
}
