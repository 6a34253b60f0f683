//! A `lambda_http` function (API Gateway / function URL) whose handler reads its secrets from the
//! request extensions. The same layer works in front of an axum `Router`: take
//! `Extension(secrets): Extension<Snapshot>` in a handler.
//!
//! It registers the library's SnapStart hooks with `lambda_http`'s runtime (feature `snapstart`):
//! with SnapStart on, no value is in the snapshot and each restore loads them again.

use std::sync::Arc;

use lambda_http::{service_fn, Body, Error, Request, Response};
use lambda_secrets::{Secrets, Snapshot, SsmSource};
use tower::ServiceBuilder;

async fn handler(req: Request) -> Result<Response<Body>, Error> {
    let secrets = req
        .extensions()
        .get::<Snapshot>()
        .expect("SecretsLayer is installed");
    // Use the secret (e.g. to sign a downstream call); answer only with harmless facts about it.
    let token = secrets.get("upstream_token")?;
    let body = format!("{{\"token_bytes\":{}}}", token.len());
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(body))?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ssm = SsmSource::new(&config);
    let param = std::env::var("UPSTREAM_TOKEN_PARAM")
        .unwrap_or_else(|_| "/lambda-secrets/example/upstream-token".into());
    let secrets = Secrets::builder()
        .add(ssm.parameter("upstream_token", param))
        .load()
        .await?;
    let service = ServiceBuilder::new()
        .layer(secrets.layer())
        .service(service_fn(handler));
    // `lambda_http::run(service)`, plus the SnapStart hooks.
    lambda_http::runtime(service)
        .layer(lambda_http::lambda_runtime::layers::TracingLayer::new())
        .register_snapstart_resource(Arc::new(secrets.snapstart()))
        .run()
        .await
}
