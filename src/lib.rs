//! # lambda-secrets
//!
//! Secrets for AWS Lambda functions, without environment variables: values are fetched (and
//! decrypted) from SSM Parameter Store, Secrets Manager and KMS, or signed locally (RDS and Aurora
//! DSQL IAM auth tokens), at cold start, cached in memory with a TTL so a rotated
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
//! declarations (key -> source item, TTL)          OnDemand::get(name) -> a declaration
//!         └──────────────────────┬───────────────────────┘
//!                                ▼
//!   freshness core (freshness/): each value's state (Fresh | Refreshing | Failing | Sealed),
//!   when it is due, backoff, single flight, binding answers to keys, seal, spawning
//!                                ▼
//!   sources (SSM, Secrets Manager, KMS, yours), every call through a CallContext: rate limit per
//!   quota class (RateLimits), retries with full-jitter backoff within a deadline (time lost to
//!   freezes given back), spreading of background calls to scarce quotas, counts
//!                                ▼
//!   Store (declared values: an immutable Snapshot swapped atomically)   OnDemand (bounded moka cache)
//!                                ▼
//!   SecretsLayer, per invocation: one atomic load, one clock comparison; when something is due,
//!   its refresh is spawned and the invocation goes on with the current values
//! ```
//!
//! What you use:
//!
//! - [`Secrets`] and [`SecretsBuilder`]: declare values, load them at INIT, read them, refresh one
//!   now; [`Stats`] for metrics.
//! - Sources: `SsmSource`, `SecretsManagerSource` (rotation-aware: `DescribeSecret` before
//!   `GetSecretValue`), `KmsSource`, `RdsSource` and `DsqlSource` (IAM auth tokens that expire with
//!   their credentials), [`MemorySource`] for tests; [`Source`] for your own, whose
//!   API calls go through [`CallContext`] (rate limits, retries, deadlines, counts).
//! - [`Snapshot`]: what a handler reads; [`SecretValue`]: zeroized on drop, redacted in
//!   `Debug`/`Display`; [`ValueInfo`]: where a value came from and its age.
//! - `OnDemand` (feature `on-demand`): names known only at invocation time, in a bounded cache.
//! - [`SecretsLayer`]: the tower layer for `LambdaEvent<T>` and `http::Request<B>` services.
//! - [`RateLimits`]: one adaptive token bucket per AWS quota class, process-wide.
//! - [`Error`]: names keys, parameter names and IAM actions, never values.
//! - [`Policy`]: the least-privilege IAM policy the declarations need (JSON or SAM).
//! - [`SnapStart`]: the Lambda SnapStart hooks (see [below](#snapstart)).
//!
//! Features: `ssm` and `lambda-runtime` (default), `secretsmanager`, `appconfig`, `kms`, `rds`, `dsql`,
//! `assume-role`, `on-demand`, `snapstart` (the `lambda_runtime::SnapStartResource` impl; enabled by `lambda-runtime`),
//! `metrics` (metrics through the `metrics` facade: [`telemetry`] lists them), `feature-flags`
//! (`flags`: feature flags evaluated in memory, with Powertools' answers); `full` enables all.
//! Traces need no feature: every AWS call, load and refresh is a `tracing` span.
//!
//! ## Freshness
//!
//! One contract for every value, declared or looked up on demand:
//!
//! - **Past its TTL** (less a random jitter, 10 % by default) a value is refreshed in the
//!   background, started by the first read that finds it due, and served as it is meanwhile.
//!   A source may ask for an earlier refresh (a secret's next rotation date): its "refresh me by"
//!   caps the TTL; one already past is ignored.
//! - **A value that expires** (an IAM auth token: [`Fetched::expires_at`], shown in
//!   [`ValueInfo::expires_at`]) is refreshed ahead of its expiry, whatever its TTL, by a minute or
//!   a tenth of its lifetime, whichever is smaller (a 15-minute token 60 s ahead, one whose
//!   credentials expire in 2 minutes 12 s ahead), and is never served past it: its expiry caps its
//!   maximum staleness (below). A failed renewal is retried before the expiry. A [`Snapshot`]
//!   held past a value's expiry (by a long invocation) does not serve it either.
//! - **The freshness bound.** A value changed at time `t` is served by every invocation that
//!   starts after `t + TTL × (1 + spread) + d`, where `spread` is the
//!   [refresh spread](SecretsBuilder::refresh_spread) (0.1 by default, 0 for values with no
//!   scarce quota, and for on-demand values) and `d` is the refresh's own duration (a few round
//!   trips) plus the gap to the first invocation after the refresh is due (Lambda runs no timer
//!   between invocations). The next refresh is scheduled from the start of the one that read the
//!   value, and a call starts at most `TTL × spread` after that start. `d` also holds rate-limit
//!   waits, throttling and retries, and, for a function invoked less often than a refresh takes,
//!   up to a couple of gaps between invocations. Each source's values are served as soon as that
//!   source has answered: a slow or spread source never holds back another's.
//! - **Maximum staleness is a hard bound.** A value is refreshed by 90 % of its maximum staleness
//!   at the latest, and a value as old as its maximum staleness is never served: an invocation
//!   reading it through the layer waits for its refresh (at most
//!   [`max_wait`](SecretsBuilder::max_wait), and never past its deadline), and if no refresh
//!   replaced it by then (the refresh failed, or had not answered), the key reads as
//!   [`Error::Expired`]. On-demand values are fetched again before they are served. A value's
//!   age is in its [`ValueInfo::age`].
//! - **Failures** keep the last good value (until its maximum staleness), and the value is
//!   retried after a jittered backoff (1 s doubling to 60 s by default, never past the maximum
//!   staleness). A refresh that panics, hangs past its budget, loses its runtime or is never run
//!   ends like a failure. A failed refresh of declared values logs one warning per source (how many
//!   values, which keys, the causes), and a key again only when its cause changes; on-demand
//!   failures log at most one warning every 10 s per cache, which counts the failed refreshes not
//!   logged since the previous one (so an outage lasting minutes warns every 10 s).
//!
//! After a cold load, the first refresh comes after a random 5 % to 100 % of the TTL, so that
//! containers started together by a deploy do not refresh together. Values due close together are
//! refreshed together, in batched calls. Lambda freezes the process between invocations, so no
//! background timer is relied on, and each HTTP attempt has a timeout (a call cut by a freeze is
//! retried).
//!
//! ## SnapStart
//!
//! With Lambda SnapStart, INIT runs once and every execution environment is a restore of its
//! memory snapshot, possibly days later. Register [`Secrets::snapstart`]'s hooks with the runtime
//! (`Runtime::register_snapstart_resource`, in `lambda_runtime` and `lambda_http`):
//!
//! - before the snapshot, every value (declared and `OnDemand`) is dropped, and its bytes
//!   zeroized; refreshes and on-demand fetches under way stop, and the hook returns once none holds
//!   a value (it waits a second at most), and what sources cached that must not be in a snapshot
//!   is dropped too ([`Source::seal`]: the credentials the token sources hold): the snapshot holds
//!   the declarations, not the secrets;
//! - after each restore, the random generator is reseeded from the OS (each restored environment
//!   draws its own refresh phase: no lockstep across a restored fleet), the rate limits start
//!   afresh, and every declared value is loaded again through the cold load's batched,
//!   rate-limited path, within Lambda's 10-second restore budget (calls end by the load timeout or
//!   9 s, the reload is cut at 9.5 s; each call's first attempt is abandoned after 1 s, since a
//!   connection pooled before the snapshot may never answer). Each value's clock starts at the
//!   restore. A failure fails the restore, naming every missing key, as a failed INIT does.
//!   On-demand names are fetched again on their first lookup.
//!
//! What the library cannot reach: copies of a value in buffers of the AWS SDK, hyper and TLS,
//! freed without being zeroized (in the end-to-end test's runs, 0 or 1 such copy of a parameter's
//! bytes remained at the snapshot point, inside the raw SSM response; the test asserts that none
//! is held by the library), and values your code keeps past an invocation (a [`Snapshot`] or
//! [`SecretValue`] held in a static: `before_snapshot` logs their keys).
//!
//! ## Where things are
//!
//! | question | where |
//! |---|---|
//! | what states can a value be in | `freshness/state.rs` (one enum for both caches) |
//! | what a source says of a value's time (refresh by, expires at) | `freshness/dates.rs` |
//! | how a token is signed | `source/signing.rs` (`aws-sigv4`), `source/rds.rs`, `source/dsql.rs` |
//! | when is a value due, how long to back off | `time/schedule.rs` (pure functions) |
//! | where does a declared value refresh | `store/refresh.rs`; on demand: `on_demand/refresh.rs` |
//! | how is a call retried | `call/retry.rs`; its errors: `error/call.rs`; AWS's: `source/aws.rs` |
//! | how is the IAM policy derived | `iam.rs` → each source's `permissions` → `policy/` |
//! | what happens at SnapStart | `snapstart.rs` → `freshness/seal.rs` → `store/restore.rs` |

#![warn(missing_docs)]
// The unit tests' allocator (test_support.rs) is the only unsafe code.
#![cfg_attr(not(test), forbid(unsafe_code))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod call;
mod error;
#[cfg(feature = "feature-flags")]
#[cfg_attr(docsrs, doc(cfg(feature = "feature-flags")))]
pub mod flags;
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
pub mod telemetry;
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
#[cfg(feature = "appconfig")]
pub use source::appconfig::{AppConfigSource, APPCONFIG_MIN_POLL};
#[cfg(feature = "assume-role")]
pub use source::assume::{AssumeRole, ASSUME_ROLE_DURATION};
#[cfg(feature = "dsql")]
pub use source::dsql::{DsqlSource, DsqlToken, DSQL_TOKEN_LIFETIME, DSQL_TOKEN_MAX_LIFETIME};
#[cfg(feature = "kms")]
pub use source::kms::{Ciphertext, KmsSource};
#[cfg(feature = "rds")]
pub use source::rds::{RdsDbUser, RdsSource, RDS_TOKEN_LIFETIME};
#[cfg(feature = "secretsmanager")]
pub use source::secrets_manager::SecretsManagerSource;
#[cfg(feature = "ssm")]
pub use source::ssm::SsmSource;
pub use source::{Declaration, Fetched, ItemResult, MemorySource, RefreshResult, Refreshed, Source};
pub use stats::Stats;
pub use value::SecretValue;
