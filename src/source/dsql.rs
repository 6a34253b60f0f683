//! [`DsqlSource`]: Aurora DSQL authentication tokens (`DbConnect`, `DbConnectAdmin`), signed
//! locally.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::signing::{check_host, Signer, TokenRequest};
use super::{Declaration, ItemResult, Source};
use crate::call::CallContext;
use crate::iam::{Permission, PolicyScope};

/// How long a DSQL token says it is good for unless set otherwise: 15 minutes, as the SDKs'.
pub const DSQL_TOKEN_LIFETIME: Duration = Duration::from_secs(900);
/// The longest lifetime Aurora DSQL accepts for a token: one week.
pub const DSQL_TOKEN_MAX_LIFETIME: Duration = Duration::from_secs(604_800);

/// A DSQL cluster endpoint and the action its token is for.
///
/// ```
/// let admin = lambda_secrets::DsqlToken::admin("abc123.dsql.us-east-1.on.aws");
/// assert_eq!(admin.to_string(), "DbConnectAdmin@abc123.dsql.us-east-1.on.aws");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DsqlToken {
    host: String,
    admin: bool,
    lifetime: Duration,
}

impl DsqlToken {
    /// A `DbConnect` token (a custom database role) for the cluster at `host`, good for
    /// [`DSQL_TOKEN_LIFETIME`].
    pub fn connect(host: impl Into<String>) -> Self {
        DsqlToken {
            host: host.into(),
            admin: false,
            lifetime: DSQL_TOKEN_LIFETIME,
        }
    }

    /// A `DbConnectAdmin` token (the `admin` role) for the cluster at `host`.
    pub fn admin(host: impl Into<String>) -> Self {
        DsqlToken {
            admin: true,
            ..Self::connect(host)
        }
    }

    /// How long the token says it is good for (`X-Amz-Expires`), 1 s to
    /// [`DSQL_TOKEN_MAX_LIFETIME`]; it still dies with the credentials that signed it. Checked
    /// when declared (whole seconds).
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    fn action(&self) -> &'static str {
        if self.admin {
            "DbConnectAdmin"
        } else {
            "DbConnect"
        }
    }

    /// The cluster id, the first label of the endpoint (`abc123` of
    /// `abc123.dsql.us-east-1.on.aws`), which IAM names the cluster by.
    fn cluster_id(&self) -> Option<&str> {
        let (id, rest) = self.host.split_once('.')?;
        rest.starts_with("dsql").then_some(id)
    }

    /// The Region an endpoint `CLUSTER_ID.dsql.REGION.on.aws` names.
    fn region(&self) -> Option<&str> {
        let rest = self.host.split_once('.')?.1.strip_prefix("dsql.")?;
        let (region, suffix) = rest.split_once('.')?;
        (suffix.starts_with("on.aws") && !region.is_empty()).then_some(region)
    }

    fn check(&self) -> Result<(), (&'static str, String, String)> {
        check_host(&self.host).map_err(|r| ("DSQL host name", self.host.clone(), r))?;
        let secs = self.lifetime.as_secs();
        if secs == 0 || self.lifetime > DSQL_TOKEN_MAX_LIFETIME || self.lifetime.subsec_nanos() != 0 {
            return Err((
                "DSQL token lifetime",
                format!("{:?}", self.lifetime),
                format!(
                    "a DSQL token lives 1 to {} whole seconds (one week)",
                    DSQL_TOKEN_MAX_LIFETIME.as_secs()
                ),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for DsqlToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.action(), self.host)
    }
}

/// Aurora DSQL authentication tokens as values, signed locally with the config's credentials (no
/// API call, no quota), byte for byte as boto3's `generate_db_connect_auth_token` and
/// `generate_db_connect_admin_auth_token`. Like [RDS tokens](crate::RdsSource), a token lives
/// until the earlier of its own lifetime and its credentials' expiry, is signed again ahead of
/// that, and is never served past it.
///
/// ```no_run
/// use std::time::Duration;
/// use lambda_secrets::{DsqlSource, DsqlToken, Secrets};
///
/// # async fn run() -> Result<(), lambda_secrets::Error> {
/// let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
/// let dsql = DsqlSource::new(&config);
/// let secrets = Secrets::builder()
///     .add(dsql.token("dsql", DsqlToken::connect("abc123.dsql.us-east-1.on.aws")))
///     .add(dsql.token(
///         "dsql_admin",
///         DsqlToken::admin("abc123.dsql.us-east-1.on.aws").expires_in(Duration::from_secs(3600)),
///     ))
///     .load()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct DsqlSource {
    inner: Arc<DsqlSigner>,
}

/// The signer of DSQL tokens (the source declarations hold).
#[derive(Debug)]
struct DsqlSigner(Signer);

impl DsqlSource {
    /// Tokens signed with `config`'s credentials, for its Region, at its clock.
    pub fn new(config: &aws_types::SdkConfig) -> Self {
        DsqlSource {
            inner: Arc::new(DsqlSigner(Signer::new(config))),
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
        Ok(DsqlSource {
            inner: Arc::new(DsqlSigner(self.inner.0.assume_role(role)?)),
        })
    }

    /// Tokens for clusters in `region` rather than the config's.
    pub fn region(&self, region: impl Into<String>) -> Self {
        DsqlSource {
            inner: Arc::new(DsqlSigner(self.inner.0.in_region(region.into()))),
        }
    }

    /// Declares `key` as a token for `token`'s cluster and action.
    pub fn token(&self, key: impl Into<String>, token: DsqlToken) -> Declaration {
        let checked = token.check();
        let no_cluster_id = token.cluster_id().is_none();
        let decl = Declaration::new(key, self.inner.clone(), token);
        match checked {
            Err((what, input, reason)) => decl.rejected(what, input, reason),
            Ok(()) if no_cluster_id => decl.without_policy(
                "IAM names a DSQL cluster by its id, the first label of its endpoint (`CLUSTER_ID.dsql.REGION.on.aws`), and this host name is not such an endpoint",
            ),
            Ok(()) => decl,
        }
    }
}

impl Source for DsqlSigner {
    type Item = DsqlToken;

    fn kind(&self) -> &'static str {
        "dsql"
    }

    fn permissions(&self, item: &DsqlToken, scope: &PolicyScope) -> Option<Vec<Permission>> {
        let resource = format!("cluster/{}", item.cluster_id()?);
        Some(vec![Permission::new(
            format!("dsql:{}", item.action()),
            self.0.policy_scope(scope, item.region()).arn("dsql", &resource),
        )])
    }

    fn role_arn(&self) -> Option<&str> {
        self.0.role_arn()
    }

    fn seal(&self) {
        self.0.forget();
    }

    async fn fetch(&self, items: &[DsqlToken], _calls: &CallContext) -> Vec<ItemResult> {
        self.0
            .sign_all("dsql", items, |item| TokenRequest {
                authority: item.host.clone(),
                query: format!("Action={}", item.action()),
                lifetime: item.lifetime,
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    fn config() -> aws_types::SdkConfig {
        aws_types::SdkConfig::builder()
            .region(aws_types::region::Region::new("us-east-1"))
            .build()
    }

    fn resources(decl: &Declaration) -> Vec<String> {
        let policy = Policy::builder()
            .region("us-east-1")
            .account("123456789012")
            .declaration(decl)
            .build()
            .unwrap();
        policy
            .statements()
            .iter()
            .flat_map(|s| s.resources.clone())
            .collect()
    }

    #[test]
    fn a_policy_names_the_cluster_in_the_region_its_endpoint_names() {
        let dsql = DsqlSource::new(&config());
        let here = dsql.token("a", DsqlToken::connect("abc.dsql.us-east-1.on.aws"));
        let there = dsql.token("b", DsqlToken::admin("xyz.dsql.eu-west-1.on.aws"));
        assert_eq!(
            resources(&here),
            ["arn:aws:dsql:us-east-1:123456789012:cluster/abc"]
        );
        assert_eq!(
            resources(&there),
            ["arn:aws:dsql:eu-west-1:123456789012:cluster/xyz"]
        );
    }
}
