//! [`SecretsService`]: hands each call the snapshot, waiting first only for values past their
//! maximum staleness.

use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use super::future::ResponseFuture;
use crate::secrets::Secrets;
use crate::snapshot::Snapshot;

/// The service made by [`SecretsLayer`](crate::SecretsLayer). `Clone + Send + 'static` when the inner service is, so
/// it works with `lambda_runtime::run` and `run_concurrent`.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mem = lambda_secrets::MemorySource::new();
/// mem.set("/db", "pw");
/// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
/// let service = lambda_secrets::SecretsService::new(tower::service_fn(|req: http::Request<()>| async move {
///     let secrets = req.extensions().get::<lambda_secrets::Snapshot>().unwrap();
///     Ok::<_, std::convert::Infallible>(secrets.expose_str("db").unwrap().len())
/// }), secrets);
/// use tower::ServiceExt;
/// assert_eq!(service.oneshot(http::Request::new(())).await.unwrap(), 2);
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct SecretsService<S> {
    inner: S,
    secrets: Secrets,
}

impl<S> SecretsService<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, secrets: Secrets) -> Self {
        SecretsService { inner, secrets }
    }

    /// The wrapped service.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// let service = lambda_secrets::SecretsService::new(42_u32, secrets);
    /// assert_eq!(*service.get_ref(), 42);
    /// # });
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let mem = lambda_secrets::MemorySource::new();
    /// # mem.set("/db", "pw");
    /// # let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// let mut service = lambda_secrets::SecretsService::new(41_u32, secrets);
    /// *service.get_mut() += 1;
    /// assert_eq!(service.into_inner(), 42);
    /// # });
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, taken out of this one.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let mem = lambda_secrets::MemorySource::new();
    /// # mem.set("/db", "pw");
    /// # let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// let service = lambda_secrets::SecretsService::new("inner", secrets);
    /// assert_eq!(service.into_inner(), "inner");
    /// # });
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Calls the inner service with the snapshot, waiting first only if values are past their
    /// maximum staleness.
    /// `deadline_ms` reads the invocation's deadline (ms since the epoch) from the request; it is
    /// only called on the wait path, so the warm path reads no clock but the store's one.
    fn call_with<R, Req>(
        &mut self,
        request: R,
        deadline_ms: fn(&R) -> Option<u64>,
        wrap: fn(R, Snapshot) -> Req,
    ) -> ResponseFuture<S::Future>
    where
        S: Service<Req> + Clone + Send + 'static,
        S::Future: Send + 'static,
        R: Send + 'static,
        Req: 'static,
    {
        let read = self.secrets.store.read();
        if !read.must_wait {
            return ResponseFuture::ready(self.inner.call(wrap(request, read.snapshot)));
        }
        // The inner service was made ready by `poll_ready`: take it, leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let store = self.secrets.store.clone();
        let max_wait = wait_budget(store.config().max_wait, deadline_ms(&request));
        ResponseFuture::waiting(Box::pin(async move {
            // The miss was counted by `read()` above: only the wait is counted now.
            let snapshot = store.wait_for_fresh(max_wait).await;
            inner.call(wrap(request, snapshot)).await
        }))
    }
}

#[cfg(feature = "lambda-runtime")]
impl<S, T> Service<lambda_runtime::LambdaEvent<T>> for SecretsService<S>
where
    S: Service<(lambda_runtime::LambdaEvent<T>, Snapshot)> + Clone + Send + 'static,
    S::Future: Send + 'static,
    T: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, event: lambda_runtime::LambdaEvent<T>) -> Self::Future {
        self.call_with(
            event,
            |event| Some(event.context.deadline),
            |event, snapshot| (event, snapshot),
        )
    }
}

/// How long a waiting invocation may wait: `max_wait`, leaving the handler half a second of the
/// invocation when its deadline (ms since the epoch, 0 if unknown) is known.
fn wait_budget(max_wait: Duration, deadline_ms: Option<u64>) -> Duration {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    match (deadline_ms.filter(|ms| *ms > 0), now) {
        (Some(ms), Ok(now)) => max_wait.min(
            Duration::from_millis(ms)
                .saturating_sub(now)
                .saturating_sub(Duration::from_millis(500)),
        ),
        _ => max_wait,
    }
}

impl<S, B> Service<http::Request<B>> for SecretsService<S>
where
    S: Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.call_with(request, http_deadline, |mut request, snapshot| {
            request.extensions_mut().insert(snapshot);
            request
        })
    }
}

/// lambda_http puts the invocation's `Context` in the extensions: honor its deadline.
fn http_deadline<B>(request: &http::Request<B>) -> Option<u64> {
    #[cfg(feature = "lambda-runtime")]
    return request
        .extensions()
        .get::<lambda_runtime::Context>()
        .map(|c| c.deadline);
    #[cfg(not(feature = "lambda-runtime"))]
    {
        let _ = request;
        None
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

    use crate::secrets::Secrets;
    use crate::snapshot::Snapshot;
    use crate::source::MemorySource;

    async fn secrets(mem: &MemorySource) -> Secrets {
        mem.set("/token", "abc");
        Secrets::builder()
            .add(mem.value("token", "/token").ttl(Duration::from_millis(20)))
            .max_staleness(Duration::from_secs(60))
            .load()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn lambda_events_get_the_snapshot() {
        let mem = MemorySource::new();
        let secrets = secrets(&mem).await;
        let mut service = ServiceBuilder::new().layer(secrets.layer()).service(service_fn(
            |(event, secrets): (lambda_runtime::LambdaEvent<String>, Snapshot)| async move {
                Ok::<_, Infallible>(format!(
                    "{}:{}",
                    event.payload,
                    secrets.get("token").unwrap().len()
                ))
            },
        ));
        let event = lambda_runtime::LambdaEvent::new("hi".to_owned(), lambda_runtime::Context::default());
        let out = service.ready().await.unwrap().call(event).await.unwrap();
        assert_eq!(out, "hi:3");
    }

    /// `run` and `run_concurrent` accept the layered service (a compile-time check: the futures
    /// are dropped unpolled).
    #[tokio::test]
    async fn the_layered_service_fits_the_lambda_runtime() {
        let mem = MemorySource::new();
        let secrets = secrets(&mem).await;
        let service = ServiceBuilder::new().layer(secrets.layer()).service(service_fn(
            |(_event, secrets): (lambda_runtime::LambdaEvent<serde_json::Value>, Snapshot)| async move {
                Ok::<_, lambda_runtime::Error>(secrets.len())
            },
        ));
        drop(lambda_runtime::run(service.clone()));
        drop(lambda_runtime::run_concurrent(service));
    }

    #[tokio::test]
    async fn one_invocation_keeps_one_snapshot_while_a_refresh_lands() {
        let mem = MemorySource::new();
        let secrets = secrets(&mem).await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
        let mut service =
            ServiceBuilder::new()
                .layer(secrets.layer())
                .service(service_fn(move |req: http::Request<()>| {
                    let rx = rx.clone();
                    async move {
                        let snap = req.extensions().get::<Snapshot>().unwrap().clone();
                        let before = snap.expose_str("token").unwrap().to_owned();
                        if let Some(rx) = rx.lock().await.take() {
                            rx.await.unwrap();
                        }
                        Ok::<_, Infallible>((before, snap.expose_str("token").unwrap().to_owned()))
                    }
                }));
        let call = service.ready().await.unwrap().call(http::Request::new(()));
        let running = tokio::spawn(call);
        mem.set("/token", "rotated");
        tokio::time::sleep(Duration::from_millis(30)).await;
        let _ = secrets.refresh_now("token").await.unwrap();
        tx.send(()).unwrap();
        let (before, after) = running.await.unwrap().unwrap();
        assert_eq!((before.as_str(), after.as_str()), ("abc", "abc"));
        let (now, _) = service
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(now, "rotated");
    }
}
