//! [`AssumeRole`]: reading through a role (another account's, typically), with the SDK's own
//! `AssumeRoleProvider`. The assumed credentials are kept until shortly before they expire, taken
//! again after, and dropped before a SnapStart snapshot (a restored environment assumes the role
//! afresh).

// Used by whichever AWS sources are enabled (none: nothing to assume a role for).
#![cfg_attr(
    not(any(
        feature = "ssm",
        feature = "secretsmanager",
        feature = "kms",
        feature = "aws-signing"
    )),
    allow(dead_code)
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::provider::{self, future, ProvideCredentials, SharedCredentialsProvider};

use crate::error::Error;

/// STS's range for an assumed role's session (`DurationSeconds`). A role assumed with the
/// credentials of another role (a Lambda execution role's: role chaining) takes at most one hour:
/// STS refuses more.
pub const ASSUME_ROLE_DURATION: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(900)..=Duration::from_secs(43_200);

/// The longest session STS gives a role assumed with another role's credentials.
const ROLE_CHAINING_MAX: Duration = Duration::from_secs(3600);

/// A role a source reads through: `sts:AssumeRole` with the config's credentials (a Lambda
/// execution role's), then every call of the source with the role's.
///
/// ```
/// use std::time::Duration;
/// let role = lambda_secrets::AssumeRole::new("arn:aws:iam::222222222222:role/secrets-reader")
///     .session_name("billing-fn")
///     .external_id("billing-7f3a")
///     .duration(Duration::from_secs(3600));
/// assert_eq!(role.account(), Some("222222222222"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    arn: String,
    session_name: Option<String>,
    external_id: Option<String>,
    duration: Option<Duration>,
}

impl AssumeRole {
    /// The role `role_arn` (`arn:aws:iam::ACCOUNT:role/NAME`).
    pub fn new(role_arn: impl Into<String>) -> Self {
        AssumeRole {
            arn: role_arn.into(),
            session_name: None,
            external_id: None,
            duration: None,
        }
    }

    /// The session name CloudTrail shows (2 to 64 of `A-Z a-z 0-9 + = , . @ -`); by default the
    /// SDK's `assume-role-provider-<time>`.
    pub fn session_name(mut self, name: impl Into<String>) -> Self {
        self.session_name = Some(name.into());
        self
    }

    /// The external id the role's trust policy asks for.
    pub fn external_id(mut self, id: impl Into<String>) -> Self {
        self.external_id = Some(id.into());
        self
    }

    /// How long a session lasts ([`ASSUME_ROLE_DURATION`]; STS's default is one hour, the most a
    /// role assumed with a Lambda execution role's credentials may have: STS refuses more, so in
    /// Lambda (`AWS_LAMBDA_FUNCTION_NAME` set) more than 3,600 s is refused at `assume_role`).
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }

    /// The role's ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The role's account, if its ARN is well formed.
    pub fn account(&self) -> Option<&str> {
        let parts: Vec<&str> = self.arn.splitn(6, ':').collect();
        (parts.len() == 6).then_some(parts[4]).filter(|a| !a.is_empty())
    }

    /// Checks the role as STS would.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the ARN, session name, external id or duration.
    pub(crate) fn check(&self) -> Result<(), Error> {
        self.check_in(std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some())
    }

    /// [`check`](Self::check), in Lambda (where the role is always assumed with a role's
    /// credentials) or not.
    fn check_in(&self, in_lambda: bool) -> Result<(), Error> {
        let arn = |reason: &str| Error::invalid_input("role ARN", &self.arn, reason);
        let parts: Vec<&str> = self.arn.splitn(6, ':').collect();
        if parts.len() != 6 || parts[0] != "arn" || parts[1].is_empty() || parts[2] != "iam" {
            return Err(arn("a role ARN looks like arn:aws:iam::123456789012:role/NAME"));
        }
        if !parts[3].is_empty() {
            return Err(arn("IAM ARNs have no Region: arn:aws:iam::ACCOUNT:role/NAME"));
        }
        crate::iam::check_role_account(parts[4]).map_err(|r| arn(&r))?;
        let Some(name) = parts[5].strip_prefix("role/") else {
            return Err(arn("its resource must be `role/NAME` (with an optional path)"));
        };
        let name_ok = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c);
        if name.is_empty() || name.ends_with('/') || !name.chars().all(name_ok) {
            return Err(arn(
                "a role name uses letters, digits and `+=,.@_-` (and `/` in its path)",
            ));
        }
        if let Some(session) = &self.session_name {
            let ok = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
            if !(2..=64).contains(&session.len()) || !session.chars().all(ok) {
                return Err(Error::invalid_input(
                    "role session name",
                    session,
                    "a session name is 2 to 64 of letters, digits and `+=,.@_-`",
                ));
            }
        }
        if let Some(id) = &self.external_id {
            let ok = |c: char| c.is_ascii_alphanumeric() || "+=,.@:/_-".contains(c);
            if !(2..=1224).contains(&id.len()) || !id.chars().all(ok) {
                return Err(Error::invalid_input(
                    "external id",
                    id,
                    "an external id is 2 to 1,224 of letters, digits and `+=,.@:/_-`",
                ));
            }
        }
        if let Some(d) = self.duration {
            if d > ROLE_CHAINING_MAX && in_lambda {
                return Err(Error::invalid_input(
                    "role session duration",
                    format!("{d:?}"),
                    "in Lambda the role is assumed with the execution role's credentials (role chaining), for which STS takes at most 3,600 s",
                ));
            }
            if !ASSUME_ROLE_DURATION.contains(&d) || d.subsec_nanos() != 0 {
                return Err(Error::invalid_input(
                    "role session duration",
                    format!("{d:?}"),
                    "STS takes 900 to 43,200 whole seconds (and at most 3,600 for a role assumed from another role, as from a Lambda execution role)",
                ));
            }
        }
        Ok(())
    }
}

/// The credentials of an assumed role: the SDK's `AssumeRoleProvider`, built on first use from the
/// base config, behind a cache that a SnapStart seal empties.
#[derive(Debug)]
pub(crate) struct Assumed {
    role: AssumeRole,
    base: aws_types::SdkConfig,
    /// Built on first use; dropped with the credentials at a seal (its STS client's pooled
    /// connections and its default session name are from before the snapshot).
    provider: Mutex<Option<Arc<AssumeRoleProvider>>>,
    held: super::credentials::Held,
}

impl Assumed {
    /// A config whose calls are made with `role`'s credentials (assumed with `base`'s), and the
    /// handle that forgets them.
    ///
    /// # Errors
    ///
    /// As [`AssumeRole::check`].
    pub(crate) fn config(
        base: &aws_types::SdkConfig,
        role: AssumeRole,
    ) -> Result<(aws_types::SdkConfig, Arc<Assumed>), Error> {
        role.check()?;
        let assumed = Arc::new(Assumed {
            role,
            base: base.clone(),
            provider: Mutex::new(None),
            held: super::credentials::Held::default(),
        });
        let config = base
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(Handle(assumed.clone())))
            // The only cache of these credentials is ours: the seal can empty it.
            .identity_cache(aws_config::identity::IdentityCache::no_cache())
            .build();
        Ok((config, assumed))
    }

    pub(crate) fn role(&self) -> &AssumeRole {
        &self.role
    }

    /// Drops the credentials held (they zeroize their secrets when dropped) and the provider.
    pub(crate) fn forget(&self) {
        let mut provider = self.provider.lock().unwrap_or_else(|e| e.into_inner());
        self.held.forget();
        provider.take();
    }

    #[cfg(test)]
    pub(crate) fn holds_anything(&self) -> bool {
        self.held.peek().is_some() || self.provider.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// The SDK's provider for the role, its STS client made from the base config (given a clock
    /// and a behavior version if the config has none: the SDK's builder requires both).
    async fn provider(&self) -> AssumeRoleProvider {
        let mut base = self.base.to_builder();
        if self.base.time_source().is_none() {
            base = base.time_source(aws_smithy_async::time::SystemTimeSource::new());
        }
        if self.base.behavior_version().is_none() {
            base = base.behavior_version(aws_config::BehaviorVersion::latest());
        }
        let mut builder = AssumeRoleProvider::builder(self.role.arn.clone()).configure(&base.build());
        if let Some(name) = &self.role.session_name {
            builder = builder.session_name(name.clone());
        }
        if let Some(id) = &self.role.external_id {
            builder = builder.external_id(id.clone());
        }
        if let Some(d) = self.role.duration {
            builder = builder.session_length(d);
        }
        builder.build().await
    }

    /// The role's credentials: those held while they have
    /// [`REUSE_MARGIN`](super::credentials::REUSE_MARGIN) left, else assumed again (by one
    /// caller at a time: the concurrent calls of a cold load make one `AssumeRole`).
    async fn credentials(&self) -> provider::Result {
        let now = || {
            self.base
                .time_source()
                .map_or_else(std::time::SystemTime::now, |c| c.now())
        };
        self.held
            .get_or_renew(now, || async {
                let built = self.provider.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let provider = match built {
                    Some(provider) => provider,
                    None => {
                        let generation = self.held.generation();
                        let provider = Arc::new(self.provider().await);
                        let mut kept = self.provider.lock().unwrap_or_else(|e| e.into_inner());
                        // Not kept across a seal that came while it was built.
                        if self.held.generation() == generation {
                            *kept = Some(provider.clone());
                        }
                        provider
                    }
                };
                provider.provide_credentials().await
            })
            .await
    }
}

/// The provider a client made by [`Assumed::config`] calls.
#[derive(Debug)]
struct Handle(Arc<Assumed>);

impl ProvideCredentials for Handle {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.0.credentials())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;

    #[tokio::test]
    async fn the_seal_drops_the_provider_with_its_sts_client() {
        let base = aws_types::SdkConfig::builder()
            .region(aws_types::region::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9") // refused: no credentials, but a provider built
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKID", "secret", None, None, "test",
            )))
            .build();
        let (_, assumed) =
            Assumed::config(&base, AssumeRole::new("arn:aws:iam::222222222222:role/r")).unwrap();
        assert!(!assumed.holds_anything());
        assert!(assumed.credentials().await.is_err());
        assert!(assumed.holds_anything(), "the provider is kept between calls");
        assumed.forget();
        assert!(!assumed.holds_anything(), "nothing of it is in a snapshot");
    }

    #[test]
    fn a_malformed_role_session_or_duration_is_refused_naming_it() {
        for (role, says) in [
            (AssumeRole::new("role/x"), "invalid role ARN `role/x`"),
            (
                AssumeRole::new("arn:aws:iam:us-east-1:123456789012:role/r"),
                "no Region",
            ),
            (AssumeRole::new("arn:aws:iam::1234:role/r"), "invalid role ARN"),
            (AssumeRole::new("arn:aws:iam::*:role/r"), "no wildcard"),
            (AssumeRole::new("arn:aws:iam::123456789012:user/u"), "role/NAME"),
            (AssumeRole::new("arn:aws:iam::123456789012:role/a b"), "role name"),
            (
                AssumeRole::new("arn:aws:iam::123456789012:role/r").session_name("x"),
                "invalid role session name `x`",
            ),
            (
                AssumeRole::new("arn:aws:iam::123456789012:role/r").external_id("a b"),
                "invalid external id",
            ),
            (
                AssumeRole::new("arn:aws:iam::123456789012:role/r").duration(Duration::from_secs(600)),
                "invalid role session duration",
            ),
            (
                AssumeRole::new("arn:aws:iam::123456789012:role/r").duration(Duration::from_secs(43_201)),
                "900 to 43,200",
            ),
        ] {
            let err = role.check().unwrap_err().to_string();
            assert!(err.contains(says), "{says}: {err}");
        }
        let long = AssumeRole::new("arn:aws:iam::123456789012:role/r").duration(Duration::from_secs(7200));
        long.check_in(false).unwrap();
        let err = long.check_in(true).unwrap_err().to_string();
        assert!(err.contains("role chaining") && err.contains("3,600"), "{err}");
        AssumeRole::new("arn:aws:iam::123456789012:role/team/secrets-reader")
            .session_name("fn-1")
            .duration(Duration::from_secs(900))
            .check()
            .unwrap();
    }
}

/// Where an AWS source's client came from, kept so that it can assume a role later, and the role
/// it reads through, if any (whose credentials the seal drops).
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    base: Option<aws_types::SdkConfig>,
    assumed: Option<Arc<Assumed>>,
}

impl Origin {
    /// A source made from `config`.
    pub(crate) fn config(config: &aws_types::SdkConfig) -> Origin {
        Origin {
            base: Some(config.clone()),
            assumed: None,
        }
    }

    /// The config of a source that reads through `role`, assumed with this source's credentials.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`]: a malformed role ([`AssumeRole::check`]), or a source made from a
    /// client (`from_client`), whose credentials cannot assume a role here.
    pub(crate) fn assume(&self, role: AssumeRole) -> Result<(aws_types::SdkConfig, Origin), Error> {
        let Some(base) = &self.base else {
            return Err(Error::invalid_input(
                "role ARN",
                role.arn,
                "a source made from a client cannot assume a role; make it with `new(&config)`",
            ));
        };
        if let Some(first) = self.role() {
            return Err(Error::invalid_input(
                "role ARN",
                role.arn,
                format!(
                    "the source already reads through `{}`; a source reads through one role (make the second from a source made with `new(&config)`)",
                    first.arn
                ),
            ));
        }
        let (config, assumed) = Assumed::config(base, role)?;
        Ok((
            config,
            Origin {
                base: Some(base.clone()),
                assumed: Some(assumed),
            },
        ))
    }

    /// The role the source reads through.
    pub(crate) fn role(&self) -> Option<&AssumeRole> {
        self.assumed.as_deref().map(Assumed::role)
    }

    /// Drops the assumed credentials held.
    pub(crate) fn forget(&self) {
        if let Some(assumed) = &self.assumed {
            assumed.forget();
        }
    }
}
