//! IAM auth tokens are byte for byte the tokens botocore writes (boto3 is the reference): RDS
//! `generate_db_auth_token`, DSQL `generate_db_connect_auth_token` and
//! `generate_db_connect_admin_auth_token`, with and without a session token, for the same
//! credentials, Region, host, port, user and signing time.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::{Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_smithy_async::time::StaticTimeSource;
use lambda_secrets::{Declaration, DsqlSource, DsqlToken, RdsSource, Secrets};
use support::boto3::{reference_tokens, TokenCase};

const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// Has the characters a query must encode (`/`, `+`, `=`).
const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEJr/////+abc=";

/// Now, to the second (botocore's clock has no finer grain); a token signed in the past would
/// expire at once.
fn signing_time() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn config(region: &str, session_token: Option<&str>, at: u64, expiry: Option<SystemTime>) -> SdkConfig {
    let credentials = Credentials::new(
        ACCESS_KEY,
        SECRET_KEY,
        session_token.map(str::to_owned),
        expiry,
        "test",
    );
    SdkConfig::builder()
        .region(Region::new(region.to_owned()))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .time_source(StaticTimeSource::new(UNIX_EPOCH + Duration::from_secs(at)))
        .build()
}

async fn ours(decl: Declaration) -> (String, Option<SystemTime>) {
    let secrets = Secrets::builder().add(decl).load().await.unwrap();
    let snapshot = secrets.snapshot();
    let info = snapshot.info("token").unwrap().clone();
    (snapshot.expose_str("token").unwrap().to_owned(), info.expires_at)
}

#[tokio::test]
async fn rds_tokens_equal_botocores() {
    let at = signing_time();
    let cases = [
        (
            "us-east-1",
            Some(SESSION_TOKEN),
            "db.cluster-abc.us-east-1.rds.amazonaws.com",
            5432,
            "app_user",
        ),
        (
            "us-east-1",
            None,
            "db.cluster-abc.us-east-1.rds.amazonaws.com",
            5432,
            "app_user",
        ),
        (
            "eu-west-1",
            Some(SESSION_TOKEN),
            "mydb.x1y2z3.eu-west-1.rds.amazonaws.com",
            3306,
            "jane+ops@corp.example",
        ),
        ("eu-west-1", None, "10.0.12.7", 443, "user with space"),
    ];
    let reference = reference_tokens(
        &cases
            .iter()
            .map(|&(region, session_token, host, port, user)| TokenCase {
                kind: "rds",
                access_key: ACCESS_KEY,
                secret_key: SECRET_KEY,
                session_token,
                region,
                host,
                port,
                user,
                expires_in: 900,
                time: at,
            })
            .collect::<Vec<_>>(),
    );
    assert_eq!(reference.len(), cases.len(), "boto3 answered every case");
    for (&(region, session_token, host, port, user), expected) in cases.iter().zip(&reference) {
        let rds = RdsSource::new(&config(region, session_token, at, None));
        let (token, expires_at) = ours(rds.auth_token("token", host, port, user)).await;
        assert_eq!(&token, expected, "{user}@{host}:{port} in {region}");
        assert_eq!(expires_at, Some(UNIX_EPOCH + Duration::from_secs(at + 900)));
    }
}

#[tokio::test]
async fn dsql_tokens_equal_botocores() {
    let at = signing_time();
    let host = "abcdefghijklmnopqrst123456.dsql.us-east-1.on.aws";
    let cases = [
        ("dsql", Some(SESSION_TOKEN), 900),
        ("dsql", None, 900),
        ("dsql_admin", Some(SESSION_TOKEN), 900),
        ("dsql_admin", None, 3600),
        ("dsql_admin", Some(SESSION_TOKEN), 604_800),
    ];
    let reference = reference_tokens(
        &cases
            .iter()
            .map(|&(kind, session_token, expires_in)| TokenCase {
                kind,
                access_key: ACCESS_KEY,
                secret_key: SECRET_KEY,
                session_token,
                region: "us-east-1",
                host,
                port: 0,
                user: "",
                expires_in,
                time: at,
            })
            .collect::<Vec<_>>(),
    );
    assert_eq!(reference.len(), cases.len(), "boto3 answered every case");
    for (&(kind, session_token, expires_in), expected) in cases.iter().zip(&reference) {
        let dsql = DsqlSource::new(&config("us-east-1", session_token, at, None));
        let token = match kind {
            "dsql" => DsqlToken::connect(host),
            _ => DsqlToken::admin(host),
        }
        .expires_in(Duration::from_secs(expires_in));
        let (token, expires_at) = ours(dsql.token("token", token)).await;
        assert_eq!(&token, expected, "{kind} for {expires_in} s");
        assert_eq!(
            expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(at + expires_in))
        );
    }
}

#[tokio::test]
async fn a_token_expires_with_the_credentials_that_signed_it_though_it_says_15_minutes() {
    let at = signing_time();
    let soon = UNIX_EPOCH + Duration::from_secs(at + 120);
    let rds = RdsSource::new(&config("us-east-1", Some(SESSION_TOKEN), at, Some(soon)));
    let (token, expires_at) = ours(rds.auth_token("token", "db.example.internal", 5432, "app")).await;
    assert!(
        token.contains("X-Amz-Expires=900"),
        "the token's own text is botocore's"
    );
    assert_eq!(expires_at, Some(soon), "valid until the credentials expire");
    let dsql = DsqlSource::new(&config("us-east-1", Some(SESSION_TOKEN), at, Some(soon)));
    let (_, expires_at) = ours(dsql.token("token", DsqlToken::admin("abc.dsql.us-east-1.on.aws"))).await;
    assert_eq!(expires_at, Some(soon));
}
