//! [`RdsSource`]: RDS and Aurora IAM database authentication tokens, signed locally.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::signing::{check_host, uri_encode_into, Signer, TokenRequest};
use super::{Declaration, ItemResult, Source};
use crate::call::CallContext;
use crate::iam::{Permission, PolicyScope};

/// How long an RDS auth token says it is good for (`X-Amz-Expires`), as botocore's and every
/// SDK's: RDS accepts a token for 15 minutes at most.
pub const RDS_TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// A database user to sign RDS auth tokens for: the DB's host name and port, the user, and, for
/// an IAM [`Policy`](crate::Policy), the DB's resource id.
///
/// ```
/// let user = lambda_secrets::RdsDbUser::new("db.cluster-x.us-east-1.rds.amazonaws.com", 5432, "app")
///     .dbi_resource_id("cluster-ABCDEFGHIJKLMNOPQRSTUVWXYZ");
/// assert_eq!(user.to_string(), "app@db.cluster-x.us-east-1.rds.amazonaws.com:5432");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RdsDbUser {
    host: String,
    port: u16,
    user: String,
    resource_id: Option<String>,
}

impl RdsDbUser {
    /// The user `user` of the DB at `host` (the instance's or the cluster's endpoint, without a
    /// scheme or port) and `port`. Checked when declared: a bad one fails `load` naming it.
    pub fn new(host: impl Into<String>, port: u16, user: impl Into<String>) -> Self {
        RdsDbUser {
            host: host.into(),
            port,
            user: user.into(),
            resource_id: None,
        }
    }

    /// The DB's resource id (`db-…` for an instance's `DbiResourceId`, `cluster-…` for an Aurora
    /// cluster's `DbClusterResourceId`), which IAM names the DB by in `rds-db:connect`. It cannot
    /// be derived from the host name, and only a [`Policy`](crate::Policy) needs it.
    pub fn dbi_resource_id(mut self, id: impl Into<String>) -> Self {
        self.resource_id = Some(id.into());
        self
    }

    fn check(&self) -> Result<(), (&'static str, String, String)> {
        check_host(&self.host).map_err(|r| ("RDS host name", self.host.clone(), r))?;
        if self.port == 0 {
            return Err(("RDS port", "0".into(), "the port must be 1 to 65535".into()));
        }
        if self.user.is_empty() {
            return Err(("RDS user", String::new(), "the database user is empty".into()));
        }
        if let Some(id) = &self.resource_id {
            let ok = (id.starts_with("db-") || id.starts_with("cluster-"))
                && id.len() > 4
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok {
                return Err((
                    "RDS resource id",
                    id.clone(),
                    "a resource id looks like `db-ABCDEFGHIJKLMNOPQRSTUVWXY1` (an instance's DbiResourceId) or `cluster-…` (a cluster's DbClusterResourceId)".into(),
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for RdsDbUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)
    }
}

/// RDS and Aurora IAM database authentication tokens as values: a token is the SigV4-presigned
/// `connect` request that RDS takes as the user's password, signed locally with the config's
/// credentials (no API call, no quota), byte for byte as botocore's `generate_db_auth_token`.
///
/// A token says it is good for 15 minutes ([`RDS_TOKEN_LIFETIME`]), but it dies with the
/// credentials that signed it: signed with credentials that expire in 2 minutes, it lives 2
/// minutes. The value's expiry ([`ValueInfo::expires_at`](crate::ValueInfo::expires_at)) is the
/// earlier of the two; the token is signed again off the request path a minute or a tenth of its
/// life before it, whichever is smaller, and is never served past it (see [the crate
/// docs](crate#freshness)). Open each new connection with the current token: a connection opened
/// stays open when its token expires.
///
/// ```no_run
/// use lambda_secrets::{RdsSource, Secrets};
///
/// # async fn run() -> Result<(), lambda_secrets::Error> {
/// let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
/// let rds = RdsSource::new(&config);
/// let secrets = Secrets::builder()
///     .add(rds.auth_token("db_token", "db.cluster-x.us-east-1.rds.amazonaws.com", 5432, "app"))
///     .load()
///     .await?;
/// let snapshot = secrets.snapshot();
/// let token = snapshot.expose_str("db_token")?; // the password for this connection
/// # let _ = token; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RdsSource {
    inner: Arc<RdsSigner>,
}

/// The signer of RDS tokens (the source declarations hold).
#[derive(Debug)]
struct RdsSigner(Signer);

impl RdsSource {
    /// Tokens signed with `config`'s credentials, for its Region, at its clock.
    pub fn new(config: &aws_types::SdkConfig) -> Self {
        RdsSource {
            inner: Arc::new(RdsSigner(Signer::new(config))),
        }
    }

    /// The same source, signing with `role`'s credentials (assumed with those of the config it was
    /// made with, renewed
    /// before they expire, dropped before a SnapStart snapshot): a token then lives until the
    /// earlier of its lifetime and the assumed credentials' expiry.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) naming a malformed role ARN, session
    /// name, external id or duration.
    #[cfg(feature = "assume-role")]
    pub fn assume_role(&self, role: crate::AssumeRole) -> Result<Self, crate::Error> {
        Ok(RdsSource {
            inner: Arc::new(RdsSigner(self.inner.0.assume_role(role)?)),
        })
    }

    /// Tokens for DBs in `region` rather than the config's.
    pub fn region(&self, region: impl Into<String>) -> Self {
        RdsSource {
            inner: Arc::new(RdsSigner(self.inner.0.in_region(region.into()))),
        }
    }

    /// Declares `key` as the auth token of `user` on the DB at `host`:`port`.
    pub fn auth_token(
        &self,
        key: impl Into<String>,
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
    ) -> Declaration {
        self.auth_token_for(key, RdsDbUser::new(host, port, user))
    }

    /// Declares `key` as the auth token of `db_user` (with its resource id, for a
    /// [`Policy`](crate::Policy)).
    pub fn auth_token_for(&self, key: impl Into<String>, db_user: RdsDbUser) -> Declaration {
        let checked = db_user.check();
        let no_resource_id = db_user.resource_id.is_none();
        let decl = Declaration::new(key, self.inner.clone(), db_user);
        match checked {
            Err((what, input, reason)) => decl.rejected(what, input, reason),
            Ok(()) if no_resource_id => decl.without_policy(
                "IAM names the DB by its resource id in `rds-db:connect`, which the host name does \
                 not tell: give it with RdsDbUser::dbi_resource_id (`aws rds describe-db-instances` \
                 shows DbiResourceId)",
            ),
            Ok(()) => decl,
        }
    }
}

impl Source for RdsSigner {
    type Item = RdsDbUser;

    fn kind(&self) -> &'static str {
        "rds"
    }

    fn permissions(&self, item: &RdsDbUser, scope: &PolicyScope) -> Option<Vec<Permission>> {
        let id = item.resource_id.as_ref()?;
        let resource = format!("dbuser:{id}/{}", item.user);
        Some(vec![Permission::new(
            "rds-db:connect",
            self.0.policy_scope(scope, None).arn("rds-db", &resource),
        )])
    }

    fn role_arn(&self) -> Option<&str> {
        self.0.role_arn()
    }

    fn seal(&self) {
        self.0.forget();
    }

    async fn fetch(&self, items: &[RdsDbUser], _calls: &CallContext) -> Vec<ItemResult> {
        self.0
            .sign_all("rds-db", items, |item| {
                let mut query = String::from("Action=connect&DBUser=");
                uri_encode_into(&item.user, &mut query);
                TokenRequest {
                    authority: format!("{}:{}", item.host, item.port),
                    query,
                    lifetime: RDS_TOKEN_LIFETIME,
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::SystemTime;

    use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
    use aws_credential_types::Credentials;

    use super::*;
    use crate::time::wall;
    use crate::{Error, Secrets};

    /// The wall clock the crate's tests use (it follows virtual time).
    #[derive(Debug)]
    struct WallClock;
    impl aws_smithy_async::time::TimeSource for WallClock {
        fn now(&self) -> SystemTime {
            wall::now()
        }
    }

    /// Credentials that expire `life` after each call, numbered by call.
    #[derive(Debug)]
    struct Expiring {
        calls: Arc<AtomicU32>,
        life: Duration,
    }
    impl ProvideCredentials for Expiring {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("AKIDTEST{n}"),
                "secret",
                Some("session".into()),
                Some(wall::now() + self.life),
                "test",
            )))
        }
    }

    fn config(calls: &Arc<AtomicU32>, life: Duration) -> aws_types::SdkConfig {
        aws_types::SdkConfig::builder()
            .region(aws_types::region::Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(Expiring {
                calls: calls.clone(),
                life,
            }))
            .time_source(WallClock)
            .build()
    }

    #[test]
    fn a_policy_names_the_database_user_in_the_region_the_source_signs_for() {
        let calls = Arc::new(AtomicU32::new(0));
        let rds = RdsSource::new(&config(&calls, Duration::from_secs(3600)));
        let user = |rds: &RdsSource| {
            rds.auth_token_for(
                "db",
                RdsDbUser::new("db.example.internal", 5432, "app").dbi_resource_id("db-ABC"),
            )
        };
        let resources = |decl: &crate::Declaration| -> Vec<String> {
            crate::Policy::builder()
                .region("us-west-2")
                .account("123456789012")
                .declaration(decl)
                .build()
                .unwrap()
                .statements()
                .iter()
                .flat_map(|s| s.resources.clone())
                .collect()
        };
        // The config's Region is the function's: the policy's Region is used.
        assert_eq!(
            resources(&user(&rds)),
            ["arn:aws:rds-db:us-west-2:123456789012:dbuser:db-ABC/app"]
        );
        // A source set to sign for another Region: that Region.
        assert_eq!(
            resources(&user(&rds.region("eu-west-1"))),
            ["arn:aws:rds-db:eu-west-1:123456789012:dbuser:db-ABC/app"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_held_past_a_token_s_expiry_does_not_serve_it() {
        let calls = Arc::new(AtomicU32::new(0));
        let rds = RdsSource::new(&config(&calls, Duration::from_secs(120)));
        let secrets = Secrets::builder()
            .add(rds.auth_token("db", "db.example.internal", 5432, "app"))
            .load()
            .await
            .unwrap();
        // A long invocation keeps the snapshot it started with.
        let held = secrets.snapshot();
        tokio::time::advance(Duration::from_secs(100)).await;
        assert!(held.expose_str("db").is_ok());
        tokio::time::advance(Duration::from_secs(21)).await;
        let err = held.expose_str("db").map(str::len).unwrap_err();
        assert!(matches!(err, Error::Expired { .. }), "{err}");
        assert!(
            err.to_string().contains("expired while this snapshot was held"),
            "{err}"
        );
        assert!(
            secrets.fresh_snapshot().await.expose_str("db").is_ok(),
            "a new one serves its renewal"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_dies_with_its_credentials_is_signed_again_before_and_never_served_after() {
        let calls = Arc::new(AtomicU32::new(0));
        let rds = RdsSource::new(&config(&calls, Duration::from_secs(120)));
        let secrets = Secrets::builder()
            .default_ttl(Duration::from_secs(300))
            .add(rds.auth_token("db", "db.example.internal", 5432, "app"))
            .load()
            .await
            .unwrap();
        let info = secrets.snapshot().info("db").unwrap().clone();
        let lifetime = info.expires_at.unwrap().duration_since(wall::now()).unwrap();
        assert!(
            lifetime <= Duration::from_secs(120),
            "{lifetime:?}: the credentials' life, not 15 min"
        );
        let mut tokens = vec![secrets.snapshot().expose_str("db").unwrap().to_owned()];
        // Ten minutes, an invocation a second: every read is served a token still good.
        for _ in 0..600 {
            tokio::time::advance(Duration::from_secs(1)).await;
            let snapshot = secrets.fresh_snapshot().await;
            let token = snapshot.expose_str("db").unwrap();
            let expires = snapshot.info("db").unwrap().expires_at.unwrap();
            assert!(expires > wall::now(), "a token past its expiry was served");
            if tokens.last().map(String::as_str) != Some(token) {
                tokens.push(token.to_owned());
            }
        }
        // Renewed 12 s (a tenth of 2 min) ahead: about every 108 s.
        assert!(
            (5..=7).contains(&tokens.len()),
            "{} tokens in 10 min",
            tokens.len()
        );
        assert!(tokens.iter().all(|t| t.contains("X-Amz-Expires=900")));
        assert!(
            calls.load(Ordering::SeqCst) >= 5,
            "credentials taken again for each token"
        );
    }

    #[cfg(feature = "on-demand")]
    #[tokio::test(start_paused = true)]
    async fn an_on_demand_token_past_its_expiry_is_signed_again_before_it_is_served() {
        let calls = Arc::new(AtomicU32::new(0));
        let rds = RdsSource::new(&config(&calls, Duration::from_secs(120)));
        let users = crate::OnDemand::builder()
            .ttl(Duration::from_secs(300))
            .build(move |user| rds.auth_token(user, "db.example.internal", 5432, user))
            .unwrap();
        let (first, info) = users.get_with_info("app").await.unwrap();
        assert!(info.expires_at.unwrap() <= wall::now() + Duration::from_secs(120));
        // No lookup for 130 s (the function was not invoked): the token held has expired.
        tokio::time::advance(Duration::from_secs(130)).await;
        let (token, info) = users.get_with_info("app").await.unwrap();
        assert!(
            info.expires_at.unwrap() > wall::now(),
            "an expired token was served"
        );
        assert_ne!(token.expose_str(), first.expose_str());
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_that_cannot_be_signed_again_is_not_served_past_its_expiry() {
        #[derive(Debug)]
        struct Once(Arc<AtomicU32>);
        impl ProvideCredentials for Once {
            fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                if self.0.fetch_add(1, Ordering::SeqCst) > 0 {
                    let e = aws_credential_types::provider::error::CredentialsError::not_loaded("gone");
                    return future::ProvideCredentials::ready(Err(e));
                }
                future::ProvideCredentials::ready(Ok(Credentials::new(
                    "AKIDONCE",
                    "secret",
                    None,
                    Some(wall::now() + Duration::from_secs(60)),
                    "test",
                )))
            }
        }
        let config = aws_types::SdkConfig::builder()
            .region(aws_types::region::Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(Once(Arc::new(AtomicU32::new(0)))))
            .time_source(WallClock)
            .build();
        let secrets = Secrets::builder()
            .max_wait(Duration::from_millis(200))
            .add(RdsSource::new(&config).auth_token("db", "db.example.internal", 5432, "app"))
            .load()
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(
            secrets.fresh_snapshot().await.expose_str("db").is_ok(),
            "still good at 59 s"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        let err = secrets
            .fresh_snapshot()
            .await
            .expose_str("db")
            .map(str::len)
            .unwrap_err();
        assert!(matches!(err, Error::Expired { .. }), "{err}");
        assert!(
            err.to_string().contains("no credentials to sign the token with"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn credentials_that_are_never_renewed_give_ever_shorter_tokens_a_handful_of_times_then_none() {
        // A provider stuck on the same credentials (its own source is gone): each token lives
        // only as long as they do.
        #[derive(Debug)]
        struct Stuck(Arc<AtomicU32>, SystemTime);
        impl ProvideCredentials for Stuck {
            fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                self.0.fetch_add(1, Ordering::SeqCst);
                future::ProvideCredentials::ready(Ok(Credentials::new(
                    "AKIDSTUCK",
                    "secret",
                    None,
                    Some(self.1),
                    "test",
                )))
            }
        }
        let calls = Arc::new(AtomicU32::new(0));
        let dies = wall::now() + Duration::from_secs(120);
        let config = aws_types::SdkConfig::builder()
            .region(aws_types::region::Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(Stuck(calls.clone(), dies)))
            .time_source(WallClock)
            .build();
        let secrets = Secrets::builder()
            .max_wait(Duration::from_millis(200))
            .add(RdsSource::new(&config).auth_token("db", "db.example.internal", 5432, "app"))
            .load()
            .await
            .unwrap();
        let mut served = std::collections::BTreeSet::new();
        // Every 100 ms until 5 s past the credentials' expiry.
        for _ in 0..1250 {
            tokio::time::advance(Duration::from_millis(100)).await;
            match secrets.fresh_snapshot().await.expose_str("db") {
                Ok(token) => {
                    assert!(
                        wall::now() < dies,
                        "a token past its credentials' expiry was served"
                    );
                    served.insert(token.to_owned());
                }
                Err(e) => {
                    assert!(wall::now() >= dies - Duration::from_secs(1), "{e}");
                    assert!(matches!(e, Error::Expired { .. }), "{e}");
                }
            }
        }
        assert!(served.len() >= 2, "renewed before the credentials' expiry");
        // Renewed at 90 % of what is left: 120 s, 12 s, 1.2 s, ... a handful of signings, not
        // one per read; then retried with the core's backoff.
        let asked = calls.load(Ordering::SeqCst);
        assert!((2..=15).contains(&asked), "{asked} credentials requests");
    }

    #[tokio::test(start_paused = true)]
    async fn the_credentials_held_are_dropped_for_a_snapshot_and_taken_afresh_after_the_restore() {
        let calls = Arc::new(AtomicU32::new(0));
        let rds = RdsSource::new(&config(&calls, Duration::from_secs(3600)));
        let secrets = Secrets::builder()
            .add(rds.auth_token("db", "db.example.internal", 5432, "app"))
            .load()
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let snapstart = secrets.snapstart();
        snapstart.before_snapshot().await.unwrap();
        assert!(
            rds.inner.0.held_for_tests().is_none(),
            "no credentials in the snapshot"
        );
        snapstart.after_restore().await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the restored environment signs with new ones"
        );
        assert!(secrets.snapshot().expose_str("db").unwrap().contains("AKIDTEST1"));
    }

    #[tokio::test]
    async fn bad_input_fails_the_load_naming_it() {
        let calls = Arc::new(AtomicU32::new(0));
        let rds = RdsSource::new(&config(&calls, Duration::from_secs(3600)));
        for (decl, says) in [
            (rds.auth_token("a", "https://db.example", 5432, "app"), "scheme"),
            (rds.auth_token("a", "db.example", 0, "app"), "RDS port"),
            (rds.auth_token("a", "db.example", 5432, ""), "user is empty"),
            (
                rds.auth_token_for(
                    "a",
                    RdsDbUser::new("db.example", 5432, "app").dbi_resource_id("x"),
                ),
                "resource id",
            ),
        ] {
            let err = Secrets::builder().add(decl).load().await.err().unwrap();
            assert!(err.to_string().contains(says), "{says}: {err}");
        }
        let policy = crate::Policy::builder()
            .declaration(&rds.auth_token("a", "db.example", 5432, "app"))
            .build()
            .unwrap_err();
        assert!(policy.to_string().contains("dbi_resource_id"), "{policy}");
    }
}
