//! A `lambda_runtime` handler reading an RDS-style JSON secret from Secrets Manager, and the
//! pattern for rotation: when the database rejects the password, fetch the secret again at once
//! with `refresh_now` and retry once.
//!
//! Rotation windows: with Secrets Manager's *single-user* rotation, between the rotation
//! function's `setSecret` step (the database now has the new password) and `finishSecret`
//! (the new version becomes `AWSCURRENT`), only the `AWSPENDING` password works. That window
//! is short; a handler that still fails after one `refresh_now` should fail the invocation (the
//! caller retries) rather than loop — `refresh_now` is rate-limited per key for that reason —
//! and lambda-secrets re-checks a secret every 30 s while a rotation is in progress. The
//! *alternating-users* strategy avoids the window: the previous user stays valid while the
//! other one is rotated, so `AWSCURRENT` always logs in.
//!
//! `SECRET_ID=prod/rds cargo run --example rds_secret --features secretsmanager` (in Lambda, or
//! locally with cargo-lambda).

use lambda_runtime::{service_fn, Error, LambdaEvent};
use lambda_secrets::{Secrets, SecretsManagerSource, Snapshot};
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceBuilder;
use zeroize::Zeroizing;

/// The JSON shape of an RDS secret managed by Secrets Manager.
#[derive(Deserialize)]
struct RdsSecret {
    username: String,
    password: Zeroizing<String>,
    host: String,
    port: u16,
    #[serde(default)]
    dbname: Option<String>,
}

#[derive(Debug)]
enum DbError {
    AuthenticationFailed,
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("password authentication failed")
    }
}

impl std::error::Error for DbError {}

/// Stands in for your database driver's connect call (e.g. `tokio_postgres::connect`).
async fn query_user_count(db: &RdsSecret) -> Result<u64, DbError> {
    if db.password.is_empty() {
        return Err(DbError::AuthenticationFailed);
    }
    let _target = (&db.username, &db.host, db.port, &db.dbname);
    Ok(42)
}

async fn handler(
    secrets: Secrets,
    (_event, snapshot): (LambdaEvent<Value>, Snapshot),
) -> Result<Value, Error> {
    let db: RdsSecret = snapshot.expose_json("rds")?;
    let count = match query_user_count(&db).await {
        Ok(count) => count,
        Err(DbError::AuthenticationFailed) => {
            // The password was probably just rotated: fetch AWSCURRENT now and retry once.
            let fresh = secrets.refresh_now("rds").await?;
            query_user_count(&fresh.expose_json::<RdsSecret>("rds")?).await?
        }
    };
    Ok(json!({ "users": count }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sm = SecretsManagerSource::new(&config);
    let id = std::env::var("SECRET_ID").unwrap_or_else(|_| "prod/rds".into());
    let secrets = Secrets::builder().add(sm.secret("rds", id)).load().await?;

    let handle = secrets.clone();
    let service = ServiceBuilder::new()
        .layer(secrets.layer())
        .service(service_fn(move |request| handler(handle.clone(), request)));
    lambda_runtime::run(service).await
}
