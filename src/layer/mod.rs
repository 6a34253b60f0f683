//! [`SecretsLayer`]: hands each invocation one consistent [`Snapshot`] of the values.
//!
//! - `lambda_runtime` handlers (`Service<LambdaEvent<T>>`): `LambdaEvent` has no extensions, so
//!   the wrapped service receives `(LambdaEvent<T>, Snapshot)`; write the handler as
//!   `async fn handler((event, secrets): (LambdaEvent<T>, Snapshot))`.
//! - `http::Request<B>` services (lambda_http, axum, hyper): the snapshot is put in the request
//!   extensions; read it with `req.extensions().get::<Snapshot>()` or axum's
//!   `Extension<Snapshot>`.
//!
//! The warm path is one atomic load and one clock comparison. When values are due for refresh
//! the refresh is spawned and the invocation goes on with the current values; only when a value
//! is past its maximum staleness does the invocation wait for it (bounded by `max_wait` and,
//! for Lambda events, by the invocation's deadline). Readiness is the inner service's:
//! an AWS error never makes `poll_ready` fail (that would end the Lambda runtime).
//!
//! - [`SecretsLayer`] (here): the layer, made by [`Secrets::layer`].
//! - [`SecretsService`] (`service.rs`): the service, with both `Service` impls and the wait budget.
//! - [`ResponseFuture`] (`future.rs`): its opaque response future.

mod future;
mod service;

pub use future::ResponseFuture;
pub use service::SecretsService;

use tower_layer::Layer;

use crate::secrets::Secrets;

/// A tower `Layer` wrapping a handler in a [`SecretsService`].
///
/// With `lambda_runtime`:
///
/// ```no_run
/// use lambda_runtime::{service_fn, Error, LambdaEvent};
/// use lambda_secrets::{Secrets, Snapshot, SsmSource};
/// use serde_json::{json, Value};
/// use tower::ServiceBuilder;
///
/// async fn handler((event, secrets): (LambdaEvent<Value>, Snapshot)) -> Result<Value, Error> {
///     let key = secrets.expose_str("api_key")?;
///     Ok(json!({ "key_length": key.len(), "request": event.context.request_id }))
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), Error> {
///     let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
///     let ssm = SsmSource::new(&config);
///     let secrets = Secrets::builder().add(ssm.parameter("api_key", "/prod/api-key")).load().await?;
///     let service = ServiceBuilder::new().layer(secrets.layer()).service(service_fn(handler));
///     lambda_runtime::run(service).await
/// }
/// ```
///
/// With an `http::Request` service (here a plain `service_fn`; axum routers work the same way):
///
/// ```
/// use std::convert::Infallible;
/// use lambda_secrets::{MemorySource, Secrets, Snapshot};
/// use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mem = MemorySource::new();
/// mem.set("/token", "abc");
/// let secrets = Secrets::builder().add(mem.value("token", "/token")).load().await.unwrap();
///
/// let mut service = ServiceBuilder::new().layer(secrets.layer()).service(service_fn(
///     |req: http::Request<String>| async move {
///         let secrets = req.extensions().get::<Snapshot>().expect("layer installed");
///         Ok::<_, Infallible>(secrets.get("token").map(|v| v.len()).unwrap_or(0))
///     },
/// ));
/// let len = service.ready().await.unwrap().call(http::Request::new(String::new())).await.unwrap();
/// assert_eq!(len, 3);
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct SecretsLayer {
    secrets: Secrets,
}

impl SecretsLayer {
    /// A layer handing `secrets` to every invocation.
    pub fn new(secrets: Secrets) -> Self {
        SecretsLayer { secrets }
    }
}

impl<S> Layer<S> for SecretsLayer {
    type Service = SecretsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SecretsService::new(inner, self.secrets.clone())
    }
}

impl Secrets {
    /// A tower `Layer` handing these values to every invocation.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// let service = tower::ServiceBuilder::new().layer(secrets.layer()).service(tower::service_fn(
    ///     |req: http::Request<()>| async move { Ok::<_, std::convert::Infallible>(req.extensions().get::<lambda_secrets::Snapshot>().is_some()) },
    /// ));
    /// use tower::ServiceExt;
    /// assert!(service.oneshot(http::Request::new(())).await.unwrap());
    /// # });
    /// ```
    pub fn layer(&self) -> SecretsLayer {
        SecretsLayer::new(self.clone())
    }
}
