//! # lambda-secrets
//!
//! Secrets for AWS Lambda functions, without environment variables: values are fetched (and
//! decrypted) from SSM Parameter Store, Secrets Manager and KMS at cold start, cached in memory with a TTL so a rotated
//! value reaches running containers without a redeploy, and handed to every invocation through
//! a tower [`Layer`](tower_layer::Layer).
//!
//! ```no_run
//! use lambda_runtime::{service_fn, Error, LambdaEvent};
//! use lambda_secrets::{Secrets, Snapshot, SsmSource};
//! use serde_json::{json, Value};
//!
//! async fn handler((event, secrets): (LambdaEvent<Value>, Snapshot)) -> Result<Value, Error> {
//!     let password = secrets.expose_str("db_password")?; // never logged: values are redacted
//!     Ok(json!({ "ok": !password.is_empty(), "id": event.context.request_id }))
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Error> {
//!     let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
//!     let ssm = SsmSource::new(&config);
//!     let secrets = Secrets::builder()
//!         .add(ssm.parameter("db_password", "/prod/db/password"))
//!         .add(ssm.path("/prod/app/"))
//!         .load() // during INIT: every name, batched 10 per GetParameters call, concurrently
//!         .await?;
//!     let handler = tower::ServiceBuilder::new().layer(secrets.layer()).service(service_fn(handler));
//!     lambda_runtime::run(handler).await
//! }
//! ```
//!
//! ## Design
//!
//! ```text
//! SecretsBuilder (declarations: key -> source item, TTL)
//!   └─ load(): merge duplicates into units, group by source, each source batches its calls
//!        └─ CallContext: rate limit per quota class (RateLimits), count, retry with full-jitter
//!           backoff, per-attempt timeout, deadline (time lost to freezes given back), spread
//!           of background calls to scarce quotas
//!             └─ Store: units {values, fetched_at, staleness, state: Fresh | Refreshing | Failing}
//!                  └─ publishes an immutable Snapshot (ArcSwap)
//! SecretsLayer, per invocation: load the Snapshot (one atomic load), compare one Instant;
//!   when due: move units to Refreshing, spawn their refresh, serve current values;
//!   wait only for values past their maximum staleness.
//! ```
//!
//! What you use:
//!
//! - [`Secrets`] and [`SecretsBuilder`]: declare values, load them at INIT, read them, refresh one
//!   now; [`Stats`] for metrics.
//! - Sources: `SsmSource`, `SecretsManagerSource` (rotation-aware: `DescribeSecret` before
//!   `GetSecretValue`), `KmsSource`, [`MemorySource`] for tests; [`Source`] for your own, whose
//!   API calls go through [`CallContext`] (rate limits, retries, deadlines, counts).
//! - [`Snapshot`]: what a handler reads; [`SecretValue`]: zeroized on drop, redacted in
//!   `Debug`/`Display`.
//! - [`SecretsLayer`]: the tower layer for `LambdaEvent<T>` and `http::Request<B>` services.
//! - [`RateLimits`]: one adaptive token bucket per AWS quota class, process-wide.
//! - [`Error`]: names keys, parameter names and IAM actions, never values.
//! - [`Policy`]: the least-privilege IAM policy the declarations need (JSON or SAM).
//! - [`SnapStart`]: the Lambda SnapStart hooks (no value in the snapshot, every value loaded again
//!   after each restore).
//!
//! Features: `ssm` and `lambda-runtime` (default), `secretsmanager`, `kms`, `on-demand`,
//! `snapstart` (the `lambda_runtime::SnapStartResource` impl; enabled by `lambda-runtime`); `full`
//! enables all.
//!
//! ## Freshness
//!
//! A value changed at time `t` is served by every invocation that starts after
//! `t + TTL × (1 + spread) + d`, where `spread` is the
//! [refresh spread](SecretsBuilder::refresh_spread) (0.1 by default, 0 for values with no scarce
//! quota) and `d` is the refresh's own duration (a few round trips) plus the gap to the first
//! invocation after the refresh is due (Lambda runs no timer between invocations). The next
//! refresh is scheduled from the start of the one that read the value, and a call starts at most
//! `TTL × spread` after that start. `d` also holds rate-limit waits, throttling and retries, and,
//! for a function invoked less often than a refresh takes, up to a couple of gaps between
//! invocations. A value is also refreshed by 90 % of its maximum staleness at the latest.
//!
//! After a cold load, the first refresh comes after a random 5 % to 100 % of the TTL, so that
//! containers started together by a deploy do not refresh together; later refreshes come after
//! the TTL less a random jitter (10 % by default). Values due close together are refreshed
//! together, in batched calls.
//!
//! Lambda freezes the process between invocations, so no background timer is relied on: a
//! refresh is started by the first invocation that finds a value due, runs on a spawned task,
//! and each of its HTTP attempts has a timeout (a call cut by a freeze is retried).
//!
//! ## SnapStart
//!
//! With Lambda SnapStart, INIT runs once and every execution environment is a restore of its
//! memory snapshot, possibly days later. Register [`Secrets::snapstart`]'s hooks with the runtime
//! (`Runtime::register_snapstart_resource`, in `lambda_runtime` and `lambda_http`):
//!
//! - before the snapshot, every value (declared and `OnDemand`) is dropped, and its bytes
//!   zeroized: the snapshot holds the declarations, not the secrets;
//! - after each restore, the random generator is reseeded from the OS (each restored environment
//!   draws its own refresh phase: no lockstep across a restored fleet), the rate limits start
//!   afresh, and every declared value is loaded again through the cold load's batched,
//!   rate-limited path, within Lambda's 10-second restore budget (calls end by the load timeout or
//!   9 s, the reload is cut at 9.5 s). Each value's clock starts at the restore. A failure fails
//!   the restore, naming every missing key, as a failed INIT does.
//!
//! What the library cannot reach: copies of a value in buffers of the AWS SDK, hyper and TLS,
//! freed without being zeroized (in the end-to-end test's runs, 0 or 1 such copy of a parameter's
//! bytes remained at the snapshot point, inside the raw SSM response; the test asserts that none
//! is held by the library), and
//! values your code keeps past an invocation (a [`Snapshot`] or [`SecretValue`] held in a
//! static: `before_snapshot` logs their keys). Connections pooled during INIT are dead after a
//! restore; a call on one fails or times out (the first attempt after a restore, after 1 s) and is
//! retried on a new connection within the reload's budget.

#![warn(missing_docs)]
// The unit tests' allocator (test_support.rs) is the only unsafe code.
#![cfg_attr(not(test), forbid(unsafe_code))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod call;
mod error;
mod freshness;
mod iam;
mod layer;
mod limiter;
#[cfg(feature = "on-demand")]
mod on_demand;
mod policy;
mod random;
mod secrets;
mod snapshot;
mod snapstart;
mod source;
mod stats;
mod store;
#[cfg(test)]
mod test_support;
mod time;
mod value;

pub use call::{CallContext, Operation, RetryPolicy};
pub use error::{CallError, CallErrorKind, Error, Failure, ItemError};
pub use iam::{Conditions, Permission, PolicyScope};
pub use layer::{ResponseFuture, SecretsLayer, SecretsService};
pub use limiter::{Quota, QuotaClass, RateLimits};
#[cfg(feature = "on-demand")]
pub use on_demand::{OnDemand, OnDemandBuilder};
pub use policy::{Policy, PolicyBuilder, PolicyStatement};
pub use secrets::{Secrets, SecretsBuilder};
pub use snapshot::{Snapshot, ValueInfo};
pub use snapstart::SnapStart;
#[cfg(feature = "kms")]
pub use source::kms::{Ciphertext, KmsSource};
#[cfg(feature = "secretsmanager")]
pub use source::secrets_manager::SecretsManagerSource;
#[cfg(feature = "ssm")]
pub use source::ssm::SsmSource;
pub use source::{Declaration, Fetched, ItemResult, MemorySource, RefreshResult, Refreshed, Source};
pub use stats::Stats;
pub use value::SecretValue;
