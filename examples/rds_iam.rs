//! RDS IAM database authentication: the token is a value like any other, signed locally (no API
//! call), renewed off the request path before it expires, never served past it. This example
//! connects to nothing: it prints what a handler would know of the token (its expiry, its
//! length), never the token.
//!
//! It signs twice: with the environment's credentials (a Lambda execution role's, from
//! `AWS_ACCESS_KEY_ID` & co), whose token lives its 15 minutes, and with credentials that expire
//! in two minutes (what an assumed role's session near its end gives), whose token dies with them.
//!
//! `DB_HOST=db.cluster-x.us-east-1.rds.amazonaws.com DB_USER=app AWS_REGION=us-east-1 \
//!  AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... cargo run --example rds_iam --features rds`
//!
//! In a handler, open each new connection with `snapshot.expose_str("db_token")` as the
//! password (and TLS: RDS requires it for IAM auth); a connection stays open when its token
//! expires, so a pool only needs the current token when it opens one.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use lambda_secrets::{RdsSource, Secrets, Snapshot};

fn describe(label: &str, snapshot: &Snapshot) -> Result<(), lambda_secrets::Error> {
    let token = snapshot.expose_str("db_token")?;
    let info = snapshot.info("db_token").expect("declared");
    let left = info
        .expires_at
        .and_then(|at| at.duration_since(SystemTime::now()).ok())
        .unwrap_or_default();
    println!(
        "{label:<32} token for {:<40} {} bytes, good for {:>4} s more (renewed a minute or 10 % of that ahead)",
        info.name,
        token.len(),
        left.as_secs()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), lambda_secrets::Error> {
    let host = std::env::var("DB_HOST").unwrap_or_else(|_| "db.cluster-x.us-east-1.rds.amazonaws.com".into());
    let port = std::env::var("DB_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5432);
    let user = std::env::var("DB_USER").unwrap_or_else(|_| "app".into());

    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let config = if config.credentials_provider().is_some() && config.region().is_some() {
        config
    } else {
        // No AWS environment: example credentials (the token is as valid as they are).
        config
            .to_builder()
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKIDEXAMPLE",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                None,
                None,
                "example",
            )))
            .build()
    };
    let secrets = Secrets::builder()
        .add(RdsSource::new(&config).auth_token("db_token", &host, port, &user))
        .load()
        .await?;
    describe("environment's credentials:", &secrets.snapshot())?;

    // Credentials that expire in two minutes: the token, though it says 15 minutes, dies with them.
    let expiring = Credentials::new(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        None,
        Some(SystemTime::now() + Duration::from_secs(120)),
        "expiring",
    );
    let short = config
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(expiring))
        .build();
    let secrets = Secrets::builder()
        .add(RdsSource::new(&short).auth_token("db_token", &host, port, &user))
        .load()
        .await?;
    describe("credentials expiring in 2 min:", &secrets.snapshot())?;
    Ok(())
}
