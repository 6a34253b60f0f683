//! A `lambda_runtime` function whose secrets come from SSM Parameter Store.
//!
//! At INIT it loads the parameter named by `API_KEY_PARAM` (default `/lambda-secrets/example/api-key`)
//! and everything under `CONFIG_PATH` (default `/lambda-secrets/example/config`, optional); each
//! invocation answers with the key's length and version (never the key). A missing parameter
//! fails INIT with an error naming it. `SECRETS_TTL` (e.g. `2s`, default `5m`) sets the TTL.
//! Built with the `assume-role` feature, `ASSUME_ROLE_ARN` reads them through that role (the
//! parameters of another account).
//!
//! SnapStart-ready: it registers the library's SnapStart hooks, so with
//! `AWS_LAMBDA_INITIALIZATION_TYPE=snap-start` no value is in the snapshot and every restore loads
//! the values again (`tests/snapstart_lifecycle.rs` runs it through the whole lifecycle). Without SnapStart
//! the hooks never run.
//!
//! Run it locally with cargo-lambda against an emulator:
//! `AWS_ENDPOINT_URL=http://127.0.0.1:5000 cargo lambda watch --example lambda_runtime_handler`.

use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{layers::TracingLayer, service_fn, Error, LambdaEvent, Runtime};
use lambda_secrets::{Secrets, Snapshot, SsmSource};
use serde_json::{json, Value};
use tower::ServiceBuilder;

async fn handler((event, secrets): (LambdaEvent<Value>, Snapshot)) -> Result<Value, Error> {
    let api_key = secrets.get("api_key")?;
    let version = secrets.info("api_key").and_then(|i| i.version.clone());
    Ok(json!({
        "api_key_length": api_key.len(),
        "api_key_version": version,
        "config_keys": secrets.keys().into_iter().filter(|k| *k != "api_key").collect::<Vec<_>>(),
        "echo": event.payload.get("name"),
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .without_time()
        .with_ansi(false) // CloudWatch shows escape codes as text
        .init();

    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ssm = SsmSource::new(&config);
    #[cfg(feature = "assume-role")]
    let ssm = match std::env::var("ASSUME_ROLE_ARN") {
        Ok(role) => ssm.assume_role(lambda_secrets::AssumeRole::new(role))?,
        Err(_) => ssm,
    };
    let param = std::env::var("API_KEY_PARAM").unwrap_or_else(|_| "/lambda-secrets/example/api-key".into());
    let ttl = match std::env::var("SECRETS_TTL") {
        Ok(t) => humantime_like(&t)?,
        Err(_) => Duration::from_secs(300),
    };
    let mut builder = Secrets::builder()
        .default_ttl(ttl)
        .add(ssm.parameter("api_key", param));
    if let Ok(path) = std::env::var("CONFIG_PATH") {
        builder = builder.add(ssm.path_with_prefix("config/", path));
    }
    // During INIT: a missing or denied parameter ends INIT here with an error naming it.
    let secrets = builder
        .load()
        .await
        .inspect_err(|e| tracing::error!("INIT failed: {e}"))?;

    let service = ServiceBuilder::new()
        .layer(secrets.layer())
        .service(service_fn(handler));
    // `lambda_runtime::run(service)`, plus the SnapStart hooks: before the snapshot every value is
    // dropped; after each restore they are loaded again (a failure there fails the restore).
    Runtime::new(service)
        .layer(TracingLayer::new())
        .register_snapstart_resource(Arc::new(secrets.snapstart()))
        .run()
        .await
}

/// `500ms`, `2s`, `5m`: enough for an example without another dependency.
fn humantime_like(text: &str) -> Result<Duration, Error> {
    let (num, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("SECRETS_TTL `{text}` is not like 500ms, 2s or 5m"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("SECRETS_TTL `{text}` is not like 500ms, 2s or 5m").into()),
    })
}
