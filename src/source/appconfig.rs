//! [`AppConfigSource`]: AWS AppConfig configuration profiles, through AppConfigData sessions.
//!
//! A profile is read through a session: `StartConfigurationSession` gives a token, and each
//! `GetLatestConfiguration` spends one token and gives the next, the poll interval the service
//! wants, and the content (empty when the session already has the deployed version). Here:
//! - the cold load starts one session per profile and reads it (concurrently, through the
//!   [`CallContext`] like every call);
//! - a refresh spends the profile's token; an empty answer confirms the value
//!   ([`Refreshed::Unchanged`]), content replaces it. A refresh due before the service's
//!   interval has passed makes no call (the service would refuse it): the value is confirmed
//!   and asks to be refreshed when the interval ends;
//! - every answer's `NextPollIntervalInSeconds` caps the next refresh ([`Fetched::refresh_by`]);
//! - a refresh asked for now (`refresh_now`) within the interval starts a new session (whose
//!   first token may be spent at once): the deployed version, whatever the interval;
//! - a token issued 23 h ago or more is not tried (tokens live 24 h: a long freeze), and a token
//!   the service refuses as expired or already used (a retried attempt whose first try reached
//!   the service spent it) is answered with a new session, twice at most;
//! - [`seal`](Source::seal) (a SnapStart snapshot) drops every session: a token chain cannot be
//!   shared by the environments restored from one snapshot, so each starts its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_appconfigdata::Client;
use futures_util::future::join_all;
use tokio::time::Instant;

use super::{Declaration, Fetched, ItemResult, RefreshResult, Refreshed, Source};
use crate::call::{CallContext, Operation};
use crate::error::{CallError, ItemError};
use crate::iam::{Permission, PolicyScope};
use crate::limiter::QuotaClass;
use crate::value::SecretValue;

const START: Operation = Operation::new("StartConfigurationSession").with_quota(QuotaClass::AppConfigSession);
const GET: Operation = Operation::new("GetLatestConfiguration").with_quota(QuotaClass::AppConfigGet);
const START_ACTION: &str = "appconfig:StartConfigurationSession";
const GET_ACTION: &str = "appconfig:GetLatestConfiguration";
/// The shortest poll interval the service accepts (`RequiredMinimumPollIntervalInSeconds`).
pub const APPCONFIG_MIN_POLL: Duration = Duration::from_secs(15);
/// The longest.
const MAX_POLL: Duration = Duration::from_secs(86_400);
/// The default poll interval (the service's own when a session asks for none).
const DEFAULT_POLL: Duration = Duration::from_secs(60);
/// A token this old is not tried (they are valid for 24 h from when they are issued): after a
/// freeze of a day, a new session is started at once.
const TOKEN_RENEWAL: Duration = Duration::from_secs(23 * 3600);

/// AWS AppConfig configuration profiles (feature `appconfig`): JSON, text or YAML, as bytes
/// (JSON values also read with `expose_json` and `json_field`). The value's version is the
/// hosted configuration version's label, when it has one.
///
/// ```no_run
/// use std::time::Duration;
/// use lambda_secrets::{AppConfigSource, Secrets};
///
/// # async fn run() -> Result<(), lambda_secrets::Error> {
/// let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
/// let appconfig = AppConfigSource::new(&config).poll_interval(Duration::from_secs(45))?;
/// let secrets = Secrets::builder()
///     .add(appconfig.profile("flags", "shop", "prod", "feature-flags")) // names or ids
///     .load()
///     .await?;
/// # Ok(()) }
/// ```
///
/// IAM: `appconfig:StartConfigurationSession` and `appconfig:GetLatestConfiguration` on each
/// profile's `arn:${Partition}:appconfig:${Region}:${Account}:application/APP/environment/ENV/configuration/PROFILE`,
/// which IAM matches by **ids**: [`Policy`](crate::Policy) writes a part declared by name as `*`
/// (it cannot know the id without a call), so declare by ids (7 lowercase letters and digits)
/// for a policy of exactly the profiles read.
#[derive(Clone)]
pub struct AppConfigSource {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// `RequiredMinimumPollIntervalInSeconds`, and the TTL of the declarations made.
    poll: Duration,
    sessions: Mutex<HashMap<Profile, Session>>,
}

/// One profile's session: the token to spend next, when it may be spent, and when it was issued.
struct Session {
    token: String,
    not_before: Instant,
    issued: Instant,
}

/// An application, environment and configuration profile, by name or id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Profile {
    application: String,
    environment: String,
    profile: String,
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.application, self.environment, self.profile)
    }
}

impl std::fmt::Debug for AppConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfigSource")
            .field("poll", &self.inner.poll)
            .finish_non_exhaustive()
    }
}

/// The service refused the session's token (expired, used already): start another.
struct TokenRefused;

impl AppConfigSource {
    /// A source using a client made from `config` (SDK retries off: this crate retries).
    pub fn new(config: &aws_types::SdkConfig) -> Self {
        Self::with_client(client_without_retries!(aws_sdk_appconfigdata, config config))
    }

    /// A source using (a copy of) `client`, with its retries off.
    pub fn from_client(client: &Client) -> Self {
        Self::with_client(client_without_retries!(aws_sdk_appconfigdata, client client))
    }

    fn with_client(client: Client) -> Self {
        AppConfigSource {
            inner: Arc::new(Inner {
                client,
                poll: DEFAULT_POLL,
                sessions: Mutex::default(),
            }),
        }
    }

    /// The poll interval the sessions ask for (`RequiredMinimumPollIntervalInSeconds`), and the
    /// TTL of the profiles declared from now on. 60 s by default. The service never answers
    /// sooner; it may ask for longer, which the next refresh then waits.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for an interval over a day. One under
    /// 15 s (the service's minimum) is 15 s, with a warning.
    pub fn poll_interval(&self, interval: Duration) -> Result<Self, crate::Error> {
        if interval > MAX_POLL {
            return Err(crate::Error::invalid_input(
                "AppConfig poll interval",
                format!("{interval:?}"),
                "AppConfig polls at most once a day (86,400 s)",
            ));
        }
        if interval < APPCONFIG_MIN_POLL {
            tracing::warn!(
                asked = ?interval,
                "lambda-secrets: AppConfig's shortest poll interval is 15 s; polling every 15 s"
            );
        }
        Ok(AppConfigSource {
            inner: Arc::new(Inner {
                client: self.inner.client.clone(),
                poll: interval.max(APPCONFIG_MIN_POLL),
                sessions: Mutex::default(),
            }),
        })
    }

    /// Declares `key` as the configuration of `profile` deployed to `environment` of
    /// `application` (each a name or an id), refreshed at the source's poll interval.
    pub fn profile(
        &self,
        key: impl Into<String>,
        application: impl Into<String>,
        environment: impl Into<String>,
        profile: impl Into<String>,
    ) -> Declaration {
        let item = Profile {
            application: application.into(),
            environment: environment.into(),
            profile: profile.into(),
        };
        let invalid = [
            ("AppConfig application", &item.application),
            ("AppConfig environment", &item.environment),
            ("AppConfig configuration profile", &item.profile),
        ]
        .into_iter()
        .find_map(|(what, ident)| validate(ident).err().map(|reason| (what, ident.clone(), reason)));
        let declaration = Declaration::new(key, Arc::new(self.clone()), item).ttl(self.inner.poll);
        match invalid {
            Some((what, input, reason)) => declaration.rejected(what, input, reason),
            None => declaration,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Profile, Session>> {
        self.inner.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session for `item`; its first token.
    async fn start(&self, item: &Profile, calls: &CallContext) -> Result<String, ItemError> {
        let seconds = i32::try_from(self.inner.poll.as_secs()).unwrap_or(i32::MAX);
        let out = calls
            .call(START, || {
                let send = self
                    .inner
                    .client
                    .start_configuration_session()
                    .application_identifier(&item.application)
                    .environment_identifier(&item.environment)
                    .configuration_profile_identifier(&item.profile)
                    .required_minimum_poll_interval_in_seconds(seconds)
                    .send();
                async move { super::aws::answered("StartConfigurationSession", send.await) }
            })
            .await
            .map_err(|e| item_error(e, START_ACTION))?;
        out.initial_configuration_token
            .ok_or_else(|| ItemError::Source("StartConfigurationSession answered no token".into()))
    }

    /// Spends `token`: the content (`None`: unchanged), the version label and the next token
    /// and interval; `Err(Ok(TokenRefused))` when the service refused the token.
    async fn get(
        &self,
        token: &str,
        calls: &CallContext,
    ) -> Result<(Option<Vec<u8>>, Option<String>, String, Duration), Result<TokenRefused, ItemError>> {
        let out = calls
            .call(GET, || {
                let send = self
                    .inner
                    .client
                    .get_latest_configuration()
                    .configuration_token(token)
                    .send();
                async move {
                    match send.await {
                        Err(err) if refused_token(&err) => Ok(Err(TokenRefused)),
                        other => super::aws::answered("GetLatestConfiguration", other).map(Ok),
                    }
                }
            })
            .await
            .map_err(|e| Err(item_error(e, GET_ACTION)))?
            .map_err(Ok)?;
        let next = out.next_poll_configuration_token.ok_or_else(|| {
            Err(ItemError::Source(
                "GetLatestConfiguration answered no next token".into(),
            ))
        })?;
        let interval = Duration::from_secs(u64::try_from(out.next_poll_interval_in_seconds).unwrap_or(0))
            .max(APPCONFIG_MIN_POLL);
        let content = out
            .configuration
            .map(|blob| blob.into_inner())
            .filter(|b| !b.is_empty());
        Ok((
            content,
            out.version_label.filter(|l| !l.is_empty()),
            next,
            interval,
        ))
    }

    /// Reads `item`: through its session if it has a usable one (`fresh`: else a new one).
    /// `None` content: unchanged since the session's last answer.
    async fn read(&self, item: &Profile, calls: &CallContext, fresh: bool) -> RefreshResult {
        let now = Instant::now();
        let held = match fresh {
            true => None,
            false => {
                let mut sessions = self.lock();
                match sessions.get(item) {
                    Some(s) if now < s.not_before => {
                        // The service would refuse it: confirmed, due when the interval ends.
                        let wait = s.not_before - now;
                        return Ok(Refreshed::Unchanged {
                            refresh_by: Some(SystemTime::now() + wait),
                        });
                    }
                    // A token issued a day ago (a long freeze) is not tried: it is expired.
                    Some(s) if now.duration_since(s.issued) < TOKEN_RENEWAL => sessions.remove(item),
                    _ => None,
                }
            }
        };
        let mut new_session = held.is_none();
        let mut token = match held {
            Some(s) => s.token,
            None => self.start(item, calls).await?,
        };
        // A refused token is answered with a new session; twice at most (a retried attempt
        // whose first try reached the service has spent the new session's first token too).
        let mut restarts = 0;
        loop {
            match self.get(&token, calls).await {
                Ok((content, label, next, interval)) => {
                    let answered = Instant::now();
                    // Never sooner than the session asked for, whatever the answer says.
                    let interval = interval.max(self.inner.poll);
                    self.lock().insert(
                        item.clone(),
                        Session {
                            token: next,
                            not_before: answered + interval,
                            issued: answered,
                        },
                    );
                    let refresh_by = Some(SystemTime::now() + interval);
                    let changed = |bytes: Vec<u8>| {
                        let mut fetched = Fetched::new(item.to_string(), SecretValue::new(bytes))
                            .with_refresh_by(refresh_by);
                        fetched.version = label.clone();
                        Refreshed::Changed(vec![fetched])
                    };
                    return Ok(match content {
                        Some(bytes) => changed(bytes),
                        // A new session's first answer is the deployed configuration: empty.
                        None if new_session => changed(Vec::new()),
                        None => Refreshed::Unchanged { refresh_by },
                    });
                }
                Err(Ok(TokenRefused)) if restarts < 2 => {
                    tracing::debug!(profile = %item, "lambda-secrets: AppConfig refused the session's token; starting a new session");
                    restarts += 1;
                    token = self.start(item, calls).await?;
                    new_session = true;
                }
                Err(Ok(TokenRefused)) => {
                    return Err(ItemError::Source(
                        "GetLatestConfiguration refused the first token of two new sessions".into(),
                    ))
                }
                Err(Err(e)) => return Err(e),
            }
        }
    }
}

impl Source for AppConfigSource {
    type Item = Profile;

    fn kind(&self) -> &'static str {
        "appconfig"
    }

    fn permissions(&self, item: &Profile, scope: &PolicyScope) -> Option<Vec<Permission>> {
        // IAM matches the profile's ARN, which holds ids: a part given by name (unknown
        // without a control-plane call) is `*`, so that the policy works; declare by ids for a
        // policy of exactly one profile.
        let part = |ident: &str| {
            if is_id(ident) {
                ident.to_owned()
            } else {
                "*".to_owned()
            }
        };
        let arn = format!(
            "arn:{}:appconfig:{}:{}:application/{}/environment/{}/configuration/{}",
            scope.partition(),
            scope.region(),
            scope.account(),
            part(&item.application),
            part(&item.environment),
            part(&item.profile)
        );
        Some(vec![
            Permission::new(START_ACTION, arn.clone()),
            Permission::new(GET_ACTION, arn),
        ])
    }

    fn seal(&self) {
        self.lock().clear();
    }

    async fn fetch(&self, items: &[Profile], calls: &CallContext) -> Vec<ItemResult> {
        join_all(items.iter().map(|item| async move {
            match self.read(item, calls, true).await? {
                Refreshed::Changed(values) => Ok(values),
                Refreshed::Unchanged { .. } => Err(ItemError::Source("no content".into())),
            }
        }))
        .await
    }

    async fn refresh(
        &self,
        items: &[Profile],
        _current: &[Option<String>],
        calls: &CallContext,
    ) -> Vec<RefreshResult> {
        // A refresh wanted now (`refresh_now`, a failing or stale value), not a routine one:
        // within the poll interval the session cannot be polled, so a new session reads the
        // deployed version.
        let forced = calls.is_forced();
        join_all(items.iter().map(|item| self.read(item, calls, forced))).await
    }
}

/// Whether the service refused the request's token (`BadRequestException` whose details name
/// `ConfigurationToken` as `Expired` or `Corrupted`, the answer to a used token).
fn refused_token<R>(
    err: &aws_smithy_runtime_api::client::result::SdkError<
        aws_sdk_appconfigdata::operation::get_latest_configuration::GetLatestConfigurationError,
        R,
    >,
) -> bool {
    use aws_sdk_appconfigdata::operation::get_latest_configuration::GetLatestConfigurationError;
    use aws_sdk_appconfigdata::types::{BadRequestDetails, InvalidParameterProblem};
    let Some(GetLatestConfigurationError::BadRequestException(e)) = err.as_service_error() else {
        return false;
    };
    match e.details() {
        Some(BadRequestDetails::InvalidParameters(params)) => {
            params.get("ConfigurationToken").is_some_and(|d| {
                matches!(
                    d.problem(),
                    Some(InvalidParameterProblem::Expired | InvalidParameterProblem::Corrupted)
                )
            })
        }
        _ => false,
    }
}

/// A failed call as the item's error: a denial names `action`, a missing resource is not found.
fn item_error(err: CallError, action: &'static str) -> ItemError {
    err.into_item_error(action)
}

/// Whether `ident` is an AppConfig id (7 lowercase letters and digits, as AppConfig makes
/// them) rather than a name. A name of that shape is taken for an id.
pub(crate) fn is_id(ident: &str) -> bool {
    ident.len() == 7
        && ident
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// An application, environment or profile identifier: a name or an id, 1 to 128 characters.
fn validate(ident: &str) -> Result<(), String> {
    if ident.is_empty() || ident.chars().count() > 128 {
        return Err("a name or an id of 1 to 128 characters".into());
    }
    if ident.chars().any(char::is_control) {
        return Err("control characters are not allowed".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked_and_items_read_as_a_path() {
        assert!(validate("shop").is_ok());
        assert!(validate("").is_err());
        assert!(validate(&"a".repeat(129)).is_err());
        assert!(validate("a\nb").is_err());
        let item = Profile {
            application: "shop".into(),
            environment: "prod".into(),
            profile: "flags".into(),
        };
        assert_eq!(item.to_string(), "shop/prod/flags");
        assert!(is_id("abc1234") && !is_id("shop") && !is_id("Abc1234") && !is_id("abc12345"));
    }
}
