//! [`ResponseFuture`]: the response future of [`SecretsService`](super::SecretsService).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;

pin_project! {
    /// Response future of [`SecretsService`]: the inner service's future on the warm path; on
    /// the rare path where values are past their maximum staleness, a wait for their refresh and
    /// then the inner call.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mem = lambda_secrets::MemorySource::new();
    /// mem.set("/db", "pw");
    /// let secrets = lambda_secrets::Secrets::builder().add(mem.value("db", "/db")).load().await.unwrap();
    /// use tower::{Layer, Service, ServiceExt};
    /// let mut service = secrets.layer().layer(tower::service_fn(|_req: http::Request<()>| async { Ok::<_, std::convert::Infallible>("ok") }));
    /// let future: lambda_secrets::ResponseFuture<_> = service.ready().await.unwrap().call(http::Request::new(()));
    /// assert_eq!(future.await.unwrap(), "ok");
    /// # });
    /// ```
    pub struct ResponseFuture<F: Future> {
        #[pin]
        kind: Kind<F>,
    }
}

impl<F: Future> ResponseFuture<F> {
    pub(super) fn ready(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Ready { future },
        }
    }

    pub(super) fn waiting(future: BoxFuture<'static, F::Output>) -> Self {
        ResponseFuture {
            kind: Kind::Waiting { future },
        }
    }
}

impl<F: Future> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F: Future> {
        Ready { #[pin] future: F },
        Waiting { future: BoxFuture<'static, F::Output> },
    }
}

impl<F: Future> Future for ResponseFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { future } => future.poll(cx),
            KindProj::Waiting { future } => future.as_mut().poll(cx),
        }
    }
}
