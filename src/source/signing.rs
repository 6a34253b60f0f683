//! What the token sources (`rds.rs`, `dsql.rs`) share: the signing identity of an `SdkConfig`
//! (its Region, credentials and clock), credentials kept until shortly before they expire and
//! forgotten at a SnapStart seal, and a SigV4-presigned query written as botocore writes it.
//!
//! A token is signed locally with the SDK's own signer (`aws-sigv4`): no API call, no quota. It
//! is good until the earlier of its own lifetime (`X-Amz-Expires`) and its credentials' expiry,
//! which is what [`Fetched::expires_at`](crate::Fetched::expires_at) says; the freshness core
//! renews it ahead of that and never serves it past it.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_smithy_async::time::SharedTimeSource;
use aws_smithy_runtime_api::client::identity::Identity;

use crate::error::ItemError;
use crate::value::SecretValue;

/// The auth parameters of a presigned query, in the order botocore writes them (its token is the
/// reference; `aws-sigv4` puts `X-Amz-Security-Token` last). The signature covers the sorted
/// query, so the order changes the text, not its validity.
const BOTOCORE_ORDER: [&str; 7] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Security-Token",
    "X-Amz-Signature",
];

/// The Region, credentials and clock a token source signs with, from an `SdkConfig`.
pub(crate) struct Signer {
    region: Option<String>,
    /// The Region was set on the source (`region(..)`), not taken from the config.
    explicit_region: bool,
    provider: Option<SharedCredentialsProvider>,
    clock: SharedTimeSource,
    held: super::credentials::Held,
    #[cfg(feature = "assume-role")]
    origin: super::assume::Origin,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .field("credentials", &self.provider.is_some())
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub(crate) fn new(config: &aws_types::SdkConfig) -> Self {
        Signer {
            region: config.region().map(|r| r.as_ref().to_owned()),
            explicit_region: false,
            provider: config.credentials_provider(),
            clock: config.time_source().unwrap_or_default(),
            held: super::credentials::Held::default(),
            #[cfg(feature = "assume-role")]
            origin: super::assume::Origin::config(config),
        }
    }

    /// The same signer (and Region), signing with `role`'s credentials.
    ///
    /// # Errors
    ///
    /// As [`SsmSource::assume_role`](crate::SsmSource::assume_role).
    #[cfg(feature = "assume-role")]
    pub(crate) fn assume_role(&self, role: crate::AssumeRole) -> Result<Self, crate::Error> {
        let (config, origin) = self.origin.assume(role)?;
        let mut signer = Signer::new(&config);
        signer.region.clone_from(&self.region);
        signer.explicit_region = self.explicit_region;
        signer.origin = origin;
        Ok(signer)
    }

    /// The same identity, signing for `region`.
    pub(crate) fn in_region(&self, region: String) -> Self {
        Signer {
            region: Some(region),
            explicit_region: true,
            provider: self.provider.clone(),
            clock: self.clock.clone(),
            held: super::credentials::Held::default(),
            #[cfg(feature = "assume-role")]
            origin: self.origin.clone(),
        }
    }

    /// The assumed role it signs as, if any.
    pub(crate) fn role_arn(&self) -> Option<&str> {
        #[cfg(feature = "assume-role")]
        {
            self.origin.role().map(crate::AssumeRole::arn)
        }
        #[cfg(not(feature = "assume-role"))]
        {
            None
        }
    }

    /// The Region tokens are signed for.
    ///
    /// # Errors
    ///
    /// When the config has none.
    pub(crate) fn region(&self) -> Result<&str, ItemError> {
        self.region.as_deref().ok_or_else(|| {
            ItemError::Invalid(
                "the SdkConfig has no Region to sign the token for (set AWS_REGION, or the source's region)"
                    .into(),
            )
        })
    }

    /// A policy's scope for tokens signed here: `scope` in the Region the source was set to sign
    /// for, if it was (a database in another Region than the function's), or in `region` (the
    /// Region a DSQL endpoint names).
    pub(crate) fn policy_scope(
        &self,
        scope: &crate::iam::PolicyScope,
        region: Option<&str>,
    ) -> crate::iam::PolicyScope {
        let mut scope = scope.clone();
        if let Some(region) = region.or(self.explicit_region.then_some(()).and(self.region.as_deref())) {
            region.clone_into(&mut scope.region);
        }
        scope
    }

    /// The signing time: the config's clock (`SystemTime::now()` unless a test set one).
    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Credentials to sign with: those held while they have
    /// [`REUSE_MARGIN`](super::credentials::REUSE_MARGIN) left, else the provider's (asked by
    /// one caller at a time).
    ///
    /// # Errors
    ///
    /// When the config has no credentials provider, or the provider fails (the message is the
    /// provider's own, without its chain of causes, which may quote an STS answer).
    pub(crate) async fn credentials(&self) -> Result<Credentials, ItemError> {
        let Some(provider) = &self.provider else {
            return Err(ItemError::Invalid(
                "the SdkConfig has no credentials provider to sign the token with".into(),
            ));
        };
        let renew = || async {
            let fresh = provider.provide_credentials().await.map_err(|e| {
                // The causes (an STS answer, which may name the account and role) go to
                // the log, not into the error that an invoker may see.
                let mut causes = String::new();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    causes.push_str(": ");
                    causes.push_str(&c.to_string());
                    cause = c.source();
                }
                tracing::warn!(error = %e, causes = %causes, "no credentials to sign tokens with");
                ItemError::Source(format!("no credentials to sign the token with: {e}"))
            })?;
            if fresh.expiry().is_some_and(|at| at <= self.now()) {
                return Err(ItemError::Source(
                    "the credentials provider gave credentials that have already expired".into(),
                ));
            }
            Ok(fresh)
        };
        self.held.get_or_renew(|| self.now(), renew).await
    }

    /// A token for each of `items` ([`presign`] of what `request` says of it), all with the same
    /// credentials and signing time; each item fails alike when there are no credentials or no
    /// Region.
    pub(crate) async fn sign_all<T: std::fmt::Display>(
        &self,
        service: &str,
        items: &[T],
        request: impl Fn(&T) -> TokenRequest,
    ) -> Vec<crate::source::ItemResult> {
        let signed = async { Ok::<_, ItemError>((self.region()?, self.credentials().await?)) }.await;
        let (region, credentials) = match signed {
            Ok(ok) => ok,
            Err(e) => return items.iter().map(|_| Err(e.clone())).collect(),
        };
        let at = self.now();
        items
            .iter()
            .map(|item| {
                let r = request(item);
                let (token, expires_at) = presign(
                    &credentials,
                    service,
                    region,
                    &r.authority,
                    &r.query,
                    r.lifetime,
                    at,
                )?;
                let fetched = crate::source::Fetched::new(item.to_string(), token);
                Ok(vec![fetched.with_expires_at(Some(expires_at))])
            })
            .collect()
    }

    /// Forgets the credentials held (a SnapStart snapshot is about to be taken; they zeroize
    /// their secrets when dropped).
    pub(crate) fn forget(&self) {
        self.held.forget();
        #[cfg(feature = "assume-role")]
        self.origin.forget();
    }

    #[cfg(test)]
    pub(crate) fn held_for_tests(&self) -> Option<Credentials> {
        self.held.peek()
    }
}

/// What one token presigns: `GET https://{authority}/?{query}` (already URI-encoded), good for
/// `lifetime`.
pub(crate) struct TokenRequest {
    pub(crate) authority: String,
    pub(crate) query: String,
    pub(crate) lifetime: Duration,
}

/// A token: the presigned `GET https://{authority}/?{query}` for `service`, without the scheme,
/// and when it stops being good (the earlier of `at + expires_in` and the credentials' expiry).
/// `query` is written first, as given (names and values already URI-encoded), then the auth
/// parameters in [`BOTOCORE_ORDER`].
///
/// # Errors
///
/// When the signer refuses the request (a malformed authority or query).
pub(crate) fn presign(
    credentials: &Credentials,
    service: &str,
    region: &str,
    authority: &str,
    query: &str,
    expires_in: Duration,
    at: SystemTime,
) -> Result<(SecretValue, SystemTime), ItemError> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings};

    let identity = Identity::from(credentials.clone());
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(expires_in);
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(at)
        .settings(settings)
        .build()
        .map_err(|e| ItemError::Source(format!("the token could not be signed: {e}")))?
        .into();
    let url = format!("https://{authority}/?{query}");
    let request = SignableRequest::new("GET", url.as_str(), std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| ItemError::Invalid(format!("the token's request is malformed: {e}")))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| ItemError::Invalid(format!("the token could not be signed: {e}")))?
        .into_parts();
    let (_headers, mut auth) = instructions.into_parts();
    let rank = |name: &str| {
        BOTOCORE_ORDER
            .iter()
            .position(|n| *n == name)
            .unwrap_or(BOTOCORE_ORDER.len())
    };
    auth.sort_by_key(|(name, _)| rank(name));
    let mut token = String::with_capacity(authority.len() + query.len() + 2 + auth_len(&auth));
    token.push_str(authority);
    token.push_str("/?");
    token.push_str(query);
    for (name, value) in &auth {
        token.push('&');
        token.push_str(name);
        token.push('=');
        uri_encode_into(value, &mut token);
    }
    let lifetime_end = at + expires_in;
    let expires_at = credentials
        .expiry()
        .map_or(lifetime_end, |creds| creds.min(lifetime_end));
    Ok((SecretValue::from(token), expires_at))
}

/// An upper bound of the encoded length of the auth parameters (so the token is written into
/// one buffer, never reallocated: no partial copies of it are left behind).
fn auth_len(auth: &[(&str, Cow<'static, str>)]) -> usize {
    auth.iter().map(|(n, v)| n.len() + 2 + 3 * v.len()).sum()
}

/// AWS's URI encoding (RFC 3986 unreserved characters kept, every other byte `%XX`), as
/// botocore's `percent_encode` writes query values.
pub(crate) fn uri_encode_into(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// Checks a host name given for a token: a DNS name or an IP address, without a scheme, a path,
/// a port or a user.
pub(crate) fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host name is empty".into());
    }
    if host.contains("://") {
        return Err("give the host name alone, without a scheme (`https://`)".into());
    }
    if host.contains(['/', '?', '#']) {
        return Err("give the host name alone, without a path or query".into());
    }
    if host.contains('@') {
        return Err("give the host name alone, without a user".into());
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err("give the port separately, not in the host name".into());
    }
    if host.len() > 253 {
        return Err("a host name is at most 253 characters".into());
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || "-._[]:".contains(c);
    if let Some(bad) = host.chars().find(|c| !ok(*c)) {
        return Err(format!("{bad:?} is not allowed in a host name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded_as_botocore_encodes_them() {
        let mut out = String::new();
        uri_encode_into("AKID/20261207/us-east-1/rds-db/aws4_request", &mut out);
        assert_eq!(out, "AKID%2F20261207%2Fus-east-1%2Frds-db%2Faws4_request");
        out.clear();
        uri_encode_into("a+b=c d~é", &mut out);
        assert_eq!(out, "a%2Bb%3Dc%20d~%C3%A9");
    }

    #[test]
    fn a_host_with_a_scheme_path_port_or_user_is_refused_naming_what_to_drop() {
        for (host, says) in [
            ("https://db.example", "scheme"),
            ("db.example/x", "path"),
            ("db.example:5432", "port"),
            ("me@db.example", "user"),
            ("", "empty"),
            ("db example", "not allowed"),
        ] {
            let err = check_host(host).unwrap_err();
            assert!(err.contains(says), "{host}: {err}");
        }
        check_host("db.cluster-x.us-east-1.rds.amazonaws.com").unwrap();
        check_host("10.0.0.7").unwrap();
    }

    #[tokio::test]
    async fn credentials_are_kept_until_five_minutes_before_they_expire_and_forgotten_at_a_seal() {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Arc;

        #[derive(Debug)]
        struct Counting(Arc<AtomicU32>, Duration);
        impl ProvideCredentials for Counting {
            fn provide_credentials<'a>(
                &'a self,
            ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                let n = self.0.fetch_add(1, Ordering::SeqCst);
                aws_credential_types::provider::future::ProvideCredentials::ready(Ok(Credentials::new(
                    format!("AKID{n}"),
                    "secret",
                    None,
                    Some(SystemTime::now() + self.1),
                    "test",
                )))
            }
        }
        let calls = Arc::new(AtomicU32::new(0));
        let config = |life| {
            aws_types::SdkConfig::builder()
                .credentials_provider(SharedCredentialsProvider::new(Counting(calls.clone(), life)))
                .build()
        };
        let long = Signer::new(&config(Duration::from_secs(3600)));
        assert_eq!(long.credentials().await.unwrap().access_key_id(), "AKID0");
        assert_eq!(long.credentials().await.unwrap().access_key_id(), "AKID0");
        long.forget();
        assert_eq!(long.credentials().await.unwrap().access_key_id(), "AKID1");
        let short = Signer::new(&config(Duration::from_secs(120)));
        short.credentials().await.unwrap();
        short.credentials().await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "credentials that expire within 5 min are not kept"
        );
        let none = Signer::new(&aws_types::SdkConfig::builder().build());
        let err = none.credentials().await.unwrap_err();
        assert!(err.to_string().contains("no credentials provider"), "{err}");
        assert!(none.region().unwrap_err().to_string().contains("no Region"));
    }
}
