//! [`SecretsManagerSource`]: AWS Secrets Manager, rotation-aware.
//!
//! Cold start: `BatchGetSecretValue`, at most 20 ids a call (per-item `Errors` read), falling
//! back to `GetSecretValue` per secret if the batch action is denied. Refresh: `DescribeSecret`
//! first (a cheap, high-quota call); `GetSecretValue` only when the version carrying the
//! requested stage changed. The TTL is capped at the secret's `NextRotationDate` (learned by a
//! first `DescribeSecret` about a second after the load, at the next invocation), and while a
//! rotation is in progress (a version is `AWSPENDING`) the secret is checked every 30 s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_secretsmanager::Client;
use futures_util::future::join_all;

use super::failover::{Failover, Regional};
use super::{Declaration, Fetched, ItemResult, RefreshResult, Refreshed, Source};
use crate::call::{CallContext, Operation};
use crate::error::{CallError, CallErrorKind, ItemError};
use crate::iam::{Permission, PolicyScope};
use crate::limiter::QuotaClass;
use crate::value::SecretValue;

/// Ids per `BatchGetSecretValue` call (the API's limit).
pub(crate) const MAX_IDS_PER_BATCH: usize = 20;
/// The stage read when none is given.
pub(crate) const AWSCURRENT: &str = "AWSCURRENT";
/// While a rotation is in progress (a version is `AWSPENDING`), check again this soon.
const ROTATION_RECHECK: Duration = Duration::from_secs(30);
const GET_ACTION: &str = "secretsmanager:GetSecretValue";
const BATCH_GET_SECRET_VALUE: Operation =
    Operation::new("BatchGetSecretValue").with_quota(QuotaClass::SecretsBatchGet);
const GET_SECRET_VALUE: Operation = Operation::new("GetSecretValue").with_quota(QuotaClass::SecretsGet);
const DESCRIBE_SECRET: Operation = Operation::new("DescribeSecret").with_quota(QuotaClass::SecretsDescribe);
/// Pages of one batch call followed at most (20 ids never need more than a few).
const MAX_PAGES: usize = 20;

/// AWS Secrets Manager.
///
/// ```no_run
/// use lambda_secrets::{Secrets, SecretsManagerSource};
///
/// # async fn run() -> Result<(), lambda_secrets::Error> {
/// #[derive(serde::Deserialize)]
/// struct Rds { username: String, password: String, host: String, port: u16 }
///
/// let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
/// let sm = SecretsManagerSource::new(&config);
/// let secrets = Secrets::builder()
///     .add(sm.secret("rds", "prod/rds"))                                  // whole secret
///     .add(sm.secret("db_password", "prod/rds").json_field("password"))   // one JSON field
///     .add(sm.secret_at_stage("db_password_before", "prod/rds", "AWSPREVIOUS"))
///     .load()
///     .await?;
/// let rds: Rds = secrets.expose_json("rds")?;
/// # Ok(()) }
/// ```
///
/// IAM: `secretsmanager:BatchGetSecretValue` (on `*`) and `secretsmanager:GetSecretValue` on
/// each secret for the cold start, `secretsmanager:DescribeSecret` on each secret for refreshes,
/// and `kms:Decrypt` on the key of secrets encrypted with a customer managed key.
#[derive(Clone)]
pub struct SecretsManagerSource {
    inner: Arc<SmInner>,
    /// Set by [`failover_region`](Self::failover_region): what declarations read through.
    failover: Option<Arc<Failover<SmInner>>>,
}

struct SmInner {
    client: Client,
    #[cfg(feature = "assume-role")]
    origin: super::assume::Origin,
    warned_batch: AtomicBool,
    warned_describe: AtomicBool,
}

impl std::fmt::Debug for SecretsManagerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsManagerSource").finish_non_exhaustive()
    }
}

/// Which version of a secret a declaration reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Selector {
    Stage(String),
    VersionId(String),
}

/// A secret id (name or ARN) and the version a declaration reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SecretItem {
    id: String,
    selector: Selector,
}

impl std::fmt::Display for SecretItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.selector {
            Selector::Stage(stage) if stage == AWSCURRENT => f.write_str(&self.id),
            Selector::Stage(stage) => write!(f, "{} (stage {stage})", self.id),
            Selector::VersionId(version) => write!(f, "{} (version {version})", self.id),
        }
    }
}

impl SecretsManagerSource {
    /// A source using a client made from `config` (SDK retries off: this crate retries).
    pub fn new(config: &aws_types::SdkConfig) -> Self {
        #[allow(unused_mut)]
        let mut source = Self::with_client(client_without_retries!(aws_sdk_secretsmanager, config config));
        #[cfg(feature = "assume-role")]
        {
            Arc::get_mut(&mut source.inner).expect("just made").origin =
                super::assume::Origin::config(config);
        }
        source
    }

    /// The same source, reading through `role`: its calls are made with the role's credentials,
    /// assumed (`sts:AssumeRole`) with the credentials of the config the source was made with, on
    /// first use, renewed before they expire and dropped before a SnapStart snapshot. Values keep
    /// their own TTLs. See [`AssumeRole`](crate::AssumeRole).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`](crate::Error::InvalidInput): a malformed role ARN, session name,
    /// external id or duration, or a source made with `from_client`.
    #[cfg(feature = "assume-role")]
    pub fn assume_role(&self, role: crate::AssumeRole) -> Result<Self, crate::Error> {
        if let Some(failover) = &self.failover {
            return Err(crate::Error::invalid_input(
                "role ARN",
                role.arn(),
                format!(
                    "the source already fails over to {}; call `assume_role` first, then `failover_region`",
                    failover.region()
                ),
            ));
        }
        let (config, origin) = self.inner.origin.assume(role)?;
        let mut source = Self::new(&config);
        Arc::get_mut(&mut source.inner).expect("just made").origin = origin;
        Ok(source)
    }

    /// A source using (a copy of) `client`, with the SDK's retries turned off.
    pub fn from_client(client: &Client) -> Self {
        Self::with_client(client_without_retries!(aws_sdk_secretsmanager, client client))
    }

    fn with_client(client: Client) -> Self {
        SecretsManagerSource {
            inner: Arc::new(SmInner {
                client,
                #[cfg(feature = "assume-role")]
                origin: Default::default(),
                warned_batch: AtomicBool::new(false),
                warned_describe: AtomicBool::new(false),
            }),
            failover: None,
        }
    }

    /// The same source, failing over to the replicas of its secrets in `region` when its own
    /// Region fails (a client for `region` made from this source's: same credentials, HTTP
    /// client and endpoint). Declarations do not change; the rules are in the README's "Region
    /// failover" section: transient failures go to the replica, a 4xx is an answer, a cold load
    /// hedges after [`hedge_after`](Self::hedge_after), a refresh never goes backwards, and
    /// the primary is asked again after a backoff.
    ///
    /// ```
    /// # async fn run(config: aws_types::SdkConfig) -> Result<(), lambda_secrets::Error> {
    /// // config's Region is us-east-1; the secrets are replicated to us-west-2.
    /// let sm = lambda_secrets::SecretsManagerSource::new(&config).failover_region("us-west-2")?;
    /// let secrets = lambda_secrets::Secrets::builder().add(sm.secret("db", "prod/db")).load().await?;
    /// println!("served from {:?}", secrets.snapshot().info("db").unwrap().region);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) naming `region`: not a Region name, or
    /// the source's own.
    pub fn failover_region(&self, region: impl Into<String>) -> Result<Self, crate::Error> {
        let region = region.into();
        super::failover::check_region(&region, self.inner.client.config().region().map(|r| r.as_ref()))?;
        let replica = Self::with_client(
            client_without_retries!(aws_sdk_secretsmanager, client self.inner.client, region region.clone()),
        );
        Ok(self.failing_over(replica.inner, region, None))
    }

    /// The same source, failing over to the client of `config` (another endpoint or other
    /// credentials for the replica's Region), as [`failover_region`](Self::failover_region).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`](crate::Error::InvalidInput): `config` has no Region, or the
    /// source's own.
    pub fn failover_config(&self, config: &aws_types::SdkConfig) -> Result<Self, crate::Error> {
        let region = config.region().map(|r| r.as_ref().to_owned()).unwrap_or_default();
        super::failover::check_region(&region, self.inner.client.config().region().map(|r| r.as_ref()))?;
        let replica = Self::with_client(client_without_retries!(aws_sdk_secretsmanager, config config));
        Ok(self.failing_over(replica.inner, region, None))
    }

    /// With a failover Region: ask it too when the primary has not answered a cold load's (or an
    /// on-demand lookup's) call within `delay`. By default a third of the attempt timeout (1 s
    /// with the default [`RetryPolicy`](crate::RetryPolicy)). Without a failover Region it does
    /// nothing.
    pub fn hedge_after(&self, delay: std::time::Duration) -> Self {
        match &self.failover {
            Some(f) => self.failing_over(f.replica().clone(), f.region().to_owned(), Some(delay)),
            None => self.clone(),
        }
    }

    fn failing_over(
        &self,
        replica: Arc<SmInner>,
        region: String,
        hedge: Option<std::time::Duration>,
    ) -> Self {
        SecretsManagerSource {
            inner: self.inner.clone(),
            failover: Some(Arc::new(Failover::new(
                self.inner.clone(),
                replica,
                region,
                hedge,
            ))),
        }
    }

    /// Declares `key` as the `AWSCURRENT` version of secret `id` (a name or ARN). The value
    /// is the `SecretString`, or the bytes of a `SecretBinary`.
    pub fn secret(&self, key: impl Into<String>, id: impl Into<String>) -> Declaration {
        self.declare(key, id.into(), Selector::Stage(AWSCURRENT.into()))
    }

    /// Declares `key` as the version of secret `id` carrying `stage` (`AWSPREVIOUS` or a custom
    /// label). `AWSPENDING` exists only during a rotation: declaring it fails the load outside
    /// one.
    pub fn secret_at_stage(
        &self,
        key: impl Into<String>,
        id: impl Into<String>,
        stage: impl Into<String>,
    ) -> Declaration {
        let stage = stage.into();
        if let Err(reason) = validate_label(&stage, 256) {
            return self
                .declare(key, id.into(), Selector::Stage(AWSCURRENT.into()))
                .rejected("version stage", stage, reason);
        }
        self.declare(key, id.into(), Selector::Stage(stage))
    }

    /// Declares `key` as one fixed version of secret `id`. A version never changes, so it is
    /// never fetched again.
    pub fn secret_version(
        &self,
        key: impl Into<String>,
        id: impl Into<String>,
        version_id: impl Into<String>,
    ) -> Declaration {
        let version = version_id.into();
        if let Err(reason) = validate_label(&version, 64) {
            return self
                .declare(key, id.into(), Selector::Stage(AWSCURRENT.into()))
                .rejected("version id", version, reason);
        }
        self.declare(key, id.into(), Selector::VersionId(version))
    }

    fn declare(&self, key: impl Into<String>, id: String, selector: Selector) -> Declaration {
        let item = SecretItem {
            id: id.clone(),
            selector,
        };
        let decl = match &self.failover {
            Some(failover) => Declaration::new(key, failover.clone(), item),
            None => Declaration::new(key, self.inner.clone(), item),
        };
        match validate_secret_id(&id.replace(['*', '?'], "x")) {
            Ok(()) if id.contains(['*', '?']) => decl.pattern("secret id", id),
            Ok(()) => decl,
            Err(reason) => decl.rejected("secret id", id, reason),
        }
    }
}

fn validate_label(label: &str, max: usize) -> Result<(), String> {
    if label.is_empty() || label.len() > max {
        return Err(format!("must be 1 to {max} characters"));
    }
    if let Some(bad) = label.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{bad:?} is not allowed"));
    }
    Ok(())
}

fn validate_secret_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 2048 {
        return Err("a secret id is 1 to 2048 characters".into());
    }
    let name = if let Some(rest) = id.strip_prefix("arn:") {
        // arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME
        let parts: Vec<&str> = rest.splitn(6, ':').collect();
        if parts.len() != 6 || parts[1] != "secretsmanager" || parts[4] != "secret" {
            return Err("an ARN must look like arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME".into());
        }
        parts[5]
    } else {
        id
    };
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c)))
    {
        Some(bad) => Err(format!(
            "{bad:?} is not allowed; secret names use letters, digits and `/ _ + = . @ -`"
        )),
        None if name.is_empty() => Err("the secret name is empty".into()),
        None => Ok(()),
    }
}

/// Whether the secret `requested` (name, ARN or partial ARN) is the one named `name` with
/// ARN `arn`.
fn same_secret(requested: &str, name: Option<&str>, arn: Option<&str>) -> bool {
    if name == Some(requested) || arn == Some(requested) {
        return true;
    }
    // A partial ARN lacks the `-XXXXXX` suffix Secrets Manager appends.
    arn.and_then(|arn| arn.strip_prefix(requested))
        .is_some_and(|rest| rest.len() == 7 && rest.starts_with('-'))
}

/// An error entry of a `BatchGetSecretValue` answer; what AWS said goes to the log only.
fn item_error(code: &str, message: &str) -> ItemError {
    if code != "ResourceNotFoundException" {
        tracing::warn!(
            code,
            aws_message = message,
            "BatchGetSecretValue: a secret could not be read"
        );
    }
    match code {
        "ResourceNotFoundException" => ItemError::NotFound,
        "DecryptionFailure" => ItemError::Denied {
            action: "kms:Decrypt".into(),
        },
        c if c.starts_with("AccessDenied") => ItemError::Denied {
            action: GET_ACTION.into(),
        },
        _ => ItemError::Call(CallError::new(
            CallErrorKind::Fatal,
            format!("BatchGetSecretValue: {code}"),
        )),
    }
}

fn call_item_error(err: CallError, action: &str) -> ItemError {
    let said = err.aws_message().unwrap_or_default();
    if err.message().contains("DecryptionFailure") || said.contains("kms:Decrypt") {
        return err.into_item_error("kms:Decrypt");
    }
    err.into_item_error(action)
}

fn value_of(string: Option<String>, binary: Option<aws_smithy_types::Blob>) -> SecretValue {
    match (string, binary) {
        (Some(s), _) => SecretValue::from(s),
        (None, Some(b)) => SecretValue::new(b.into_inner()),
        (None, None) => SecretValue::from(""),
    }
}

impl Regional for SmInner {
    fn region(&self) -> Option<String> {
        self.client.config().region().map(|r| r.as_ref().to_owned())
    }

    fn in_region(&self, item: &SecretItem, region: &str) -> SecretItem {
        SecretItem {
            id: super::failover::arn_in_region(&item.id, region),
            selector: item.selector.clone(),
        }
    }

    fn global_versions(&self) -> bool {
        true
    }

    fn variant(&self, item: &SecretItem) -> Option<String> {
        Some(match &item.selector {
            Selector::Stage(stage) => stage.clone(),
            Selector::VersionId(id) => format!("id {id}"),
        })
    }
}

impl Source for SmInner {
    type Item = SecretItem;

    fn kind(&self) -> &'static str {
        "secretsmanager"
    }

    #[cfg(feature = "assume-role")]
    fn role_arn(&self) -> Option<&str> {
        self.origin.role().map(crate::AssumeRole::arn)
    }

    #[cfg(feature = "assume-role")]
    fn seal(&self) {
        self.origin.forget();
    }

    /// `secretsmanager:GetSecretValue` on the secret; `DescribeSecret` too unless a fixed version
    /// is read (it is never refreshed); `BatchGetSecretValue` (on `*`, the only resource IAM
    /// accepts for it) for `AWSCURRENT`, which is loaded in batches; with customer managed keys,
    /// `kms:Decrypt` through Secrets Manager for the secret's encryption context.
    fn permissions(&self, item: &SecretItem, scope: &PolicyScope) -> Option<Vec<Permission>> {
        let mut needed = Vec::new();
        for arn in scope.secret_arns(&item.id) {
            needed.push(Permission::new(GET_ACTION, arn.clone()));
            if matches!(item.selector, Selector::Stage(_)) {
                needed.push(Permission::new("secretsmanager:DescribeSecret", arn.clone()));
            }
            needed.extend(scope.decrypt_via("secretsmanager", "SecretARN", &arn));
        }
        if item.selector == Selector::Stage(AWSCURRENT.into()) {
            needed.push(Permission::new("secretsmanager:BatchGetSecretValue", "*"));
        }
        Some(needed)
    }

    async fn fetch(&self, items: &[SecretItem], calls: &CallContext) -> Vec<ItemResult> {
        {
            let current: Vec<usize> = (0..items.len())
                .filter(|&i| items[i].selector == Selector::Stage(AWSCURRENT.into()))
                .collect();
            let others: Vec<usize> = (0..items.len()).filter(|i| !current.contains(i)).collect();
            let batches = join_all(current.chunks(MAX_IDS_PER_BATCH).map(|chunk| async move {
                let ids: Vec<&str> = chunk.iter().map(|&i| items[i].id.as_str()).collect();
                (chunk, self.batch_get(&ids, calls).await)
            }));
            let singles =
                join_all(others.iter().map(|&i| async move {
                    (i, self.get_one(&items[i].id, &items[i].selector, calls).await)
                }));
            let (batches, singles) = futures_util::future::join(batches, singles).await;
            let mut out: Vec<Option<ItemResult>> = vec![None; items.len()];
            for (chunk, results) in batches {
                for (&i, r) in chunk.iter().zip(results) {
                    out[i] = Some(r);
                }
            }
            for (i, r) in singles {
                out[i] = Some(r);
            }
            // The batch call does not tell the rotation schedule: ask for an early refresh, whose
            // `DescribeSecret` learns it (and caps the TTL at the next rotation from then on).
            let learn_schedule = Some(SystemTime::now() + Duration::from_secs(1));
            out.into_iter()
                .zip(items)
                .map(|(r, item)| {
                    let r = r.unwrap_or_else(|| Err(ItemError::Source("not fetched".into())))?;
                    Ok(match item.selector {
                        Selector::Stage(_) => {
                            r.into_iter().map(|f| f.with_refresh_by(learn_schedule)).collect()
                        }
                        Selector::VersionId(_) => r,
                    })
                })
                .collect()
        }
    }

    async fn refresh(
        &self,
        items: &[SecretItem],
        current: &[Option<String>],
        calls: &CallContext,
    ) -> Vec<RefreshResult> {
        join_all(items.iter().zip(current).map(
            |(item, version)| async move {
                let id = item.id.as_str();
                let stage = match &item.selector {
                    // A version id names immutable content: nothing to refresh.
                    Selector::VersionId(_) => return Ok(Refreshed::Unchanged { refresh_by: None }),
                    Selector::Stage(stage) => stage.clone(),
                };
                let described = calls
                    .call(DESCRIBE_SECRET, || {
                        let send = self.client.describe_secret().secret_id(id).send();
                        async move { super::aws::answered("DescribeSecret", send.await) }
                    })
                    .await
                    ;
            let described = match described {
                Ok(d) => d,
                Err(e) if e.kind() == CallErrorKind::Denied && e.transport() != crate::error::Transport::StaleSignature => {
                    // Without DescribeSecret, fetch the value itself (what other tools do).
                    if !self.warned_describe.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            error = %e,
                            "DescribeSecret denied; refreshing secrets with GetSecretValue instead. \
                             Grant `secretsmanager:DescribeSecret` to check versions cheaply and follow rotation dates"
                        );
                    }
                    let fetched = self.get_one(id, &Selector::Stage(stage), calls).await?;
                    let same = fetched.first().and_then(|f| f.version.as_deref()) == version.as_deref();
                    return Ok(if same && version.is_some() {
                        Refreshed::Unchanged { refresh_by: None }
                    } else {
                        Refreshed::Changed(fetched)
                    });
                }
                Err(e) => return Err(call_item_error(e, "secretsmanager:DescribeSecret")),
            };
                let stages = described.version_ids_to_stages.unwrap_or_default();
                let refresh_by = if rotation_in_progress(&stages) {
                    Some(SystemTime::now() + ROTATION_RECHECK)
                } else {
                    described
                        .next_rotation_date
                        .and_then(|d| SystemTime::try_from(d).ok())
                };
                let staged = stages
                    .iter()
                    .find(|(_, s)| s.contains(&stage))
                    .map(|(v, _)| v.clone());
                let Some(staged) = staged else {
                    return Err(ItemError::Invalid(format!(
                        "no version of the secret carries stage `{stage}`"
                    )));
                };
                if version.as_deref() == Some(staged.as_str()) {
                    return Ok(Refreshed::Unchanged { refresh_by });
                }
                let fetched = self.get_one(id, &Selector::VersionId(staged), calls).await?;
                Ok(Refreshed::Changed(
                    fetched
                        .into_iter()
                        .map(|f| f.with_refresh_by(refresh_by))
                        .collect(),
                ))
            },
        ))
        .await
    }
}

/// Puts each value of a `BatchGetSecretValue` page in the result of the id it answers; a value
/// that answers no id still waiting (an odd answer) is zeroized as it goes.
fn land_values(
    ids: &[&str],
    results: &mut [Option<ItemResult>],
    entries: Vec<aws_sdk_secretsmanager::types::SecretValueEntry>,
) {
    for mut entry in entries {
        let Some(i) =
            (0..ids.len()).find(|&i| results[i].is_none() && same_secret(ids[i], entry.name(), entry.arn()))
        else {
            drop(entry.secret_string.take().map(zeroize::Zeroizing::new));
            drop(
                entry
                    .secret_binary
                    .take()
                    .map(|b| zeroize::Zeroizing::new(b.into_inner())),
            );
            continue;
        };
        let name = entry.name.clone().unwrap_or_else(|| ids[i].to_owned());
        let mut fetched = Fetched::new(name, value_of(entry.secret_string, entry.secret_binary))
            .with_modified_at(entry.created_date.and_then(|d| SystemTime::try_from(d).ok()));
        fetched.version = entry.version_id;
        results[i] = Some(Ok(vec![fetched]));
    }
}

/// A version is `AWSPENDING` without being `AWSCURRENT`: a rotation has started.
fn rotation_in_progress(stages: &HashMap<String, Vec<String>>) -> bool {
    stages
        .values()
        .any(|s| s.iter().any(|s| s == "AWSPENDING") && !s.iter().any(|s| s == AWSCURRENT))
}

impl SmInner {
    /// One `BatchGetSecretValue` call for up to 20 ids (following `NextToken` if any); one
    /// result per id.
    async fn batch_get(&self, ids: &[&str], calls: &CallContext) -> Vec<ItemResult> {
        let mut results: Vec<Option<ItemResult>> = vec![None; ids.len()];
        let mut token: Option<String> = None;
        for _page in 0..MAX_PAGES {
            let list: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
            let page = calls
                .call(BATCH_GET_SECRET_VALUE, || {
                    let send = self
                        .client
                        .batch_get_secret_value()
                        .set_secret_id_list(Some(list.clone()))
                        .set_next_token(token.clone())
                        .send();
                    async move { super::aws::answered("BatchGetSecretValue", send.await) }
                })
                .await;
            let page = match page {
                Ok(page) => page,
                // A clock AWS refuses (signed anew and refused again) is no matter of the batch
                // call: every secret gets that answer, and no call more.
                Err(err)
                    if matches!(err.kind(), CallErrorKind::Denied | CallErrorKind::Fatal)
                        && err.transport() != crate::error::Transport::StaleSignature =>
                {
                    if !self.warned_batch.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            error = %err,
                            "BatchGetSecretValue failed; falling back to one GetSecretValue per secret. \
                             Grant `secretsmanager:BatchGetSecretValue` to load up to 20 secrets per call"
                        );
                    }
                    return join_all(ids.iter().map(|id| async move {
                        self.get_one(id, &Selector::Stage(AWSCURRENT.into()), calls).await
                    }))
                    .await;
                }
                Err(err) => {
                    return ids
                        .iter()
                        .map(|_| Err(call_item_error(err.clone(), GET_ACTION)))
                        .collect()
                }
            };
            land_values(ids, &mut results, page.secret_values.unwrap_or_default());
            for error in page.errors.unwrap_or_default() {
                let requested = error.secret_id().unwrap_or_default();
                if let Some(i) = (0..ids.len()).find(|&i| {
                    results[i].is_none()
                        && (ids[i] == requested || same_secret(ids[i], None, Some(requested)))
                }) {
                    results[i] = Some(Err(item_error(
                        error.error_code().unwrap_or("Unknown"),
                        error.message().unwrap_or(""),
                    )));
                }
            }
            token = page.next_token.filter(|t| !t.is_empty());
            if token.is_none() || results.iter().all(Option::is_some) {
                break;
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(ItemError::Source(
                        "BatchGetSecretValue returned neither value nor error for it".into(),
                    ))
                })
            })
            .collect()
    }

    /// One `GetSecretValue` call.
    async fn get_one(&self, id: &str, selector: &Selector, calls: &CallContext) -> ItemResult {
        let out = calls
            .call(GET_SECRET_VALUE, || {
                let request = self.client.get_secret_value().secret_id(id);
                let request = match selector {
                    Selector::Stage(stage) => request.version_stage(stage),
                    Selector::VersionId(version) => request.version_id(version),
                };
                let send = request.send();
                async move { super::aws::answered("GetSecretValue", send.await) }
            })
            .await
            .map_err(|e| call_item_error(e, GET_ACTION))?;
        let name = out.name.clone().unwrap_or_else(|| id.to_owned());
        let mut fetched = Fetched::new(name, value_of(out.secret_string, out.secret_binary))
            .with_modified_at(out.created_date.and_then(|d| SystemTime::try_from(d).ok()));
        fetched.version = out.version_id;
        Ok(vec![fetched])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_show_their_selector_in_words() {
        let item = |selector| SecretItem {
            id: "prod/db".into(),
            selector,
        };
        assert_eq!(item(Selector::Stage(AWSCURRENT.into())).to_string(), "prod/db");
        assert_eq!(
            item(Selector::Stage("AWSPREVIOUS".into())).to_string(),
            "prod/db (stage AWSPREVIOUS)"
        );
        assert_eq!(
            item(Selector::VersionId("abc".into())).to_string(),
            "prod/db (version abc)"
        );
    }

    #[test]
    fn validates_ids() {
        assert_eq!(validate_secret_id("prod/db-1_x+y=z.w@v"), Ok(()));
        assert_eq!(
            validate_secret_id("arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"),
            Ok(())
        );
        assert!(validate_secret_id("prod db").unwrap_err().contains("' '"));
        assert!(validate_secret_id("arn:aws:ssm:us-east-1:1:parameter/x")
            .unwrap_err()
            .contains("ARN"));
        assert!(validate_secret_id("").is_err());
    }

    #[test]
    fn matches_names_arns_and_partial_arns() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf";
        assert!(same_secret("prod/db", Some("prod/db"), Some(arn)));
        assert!(same_secret(arn, Some("prod/db"), Some(arn)));
        assert!(same_secret(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db",
            None,
            Some(arn)
        ));
        assert!(!same_secret(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/d",
            None,
            Some(arn)
        ));
        assert!(!same_secret("prod/dbx", Some("prod/db"), Some(arn)));
    }

    #[test]
    fn a_value_that_answers_no_request_leaves_no_copy_of_itself() {
        use aws_sdk_secretsmanager::types::SecretValueEntry;
        let odd = SecretValueEntry::builder()
            .name("not/asked")
            .secret_string("CANARY-sm-leftover")
            .build();
        let twice = SecretValueEntry::builder()
            .name("asked")
            .secret_binary(aws_smithy_types::Blob::new(b"CANARY-sm-leftover".to_vec()))
            .build();
        let asked = SecretValueEntry::builder()
            .name("asked")
            .secret_string("v")
            .build();
        let mut results = vec![None];
        let ((), freed) = crate::test_support::freed_holding(b"CANARY-sm-leftover", || {
            land_values(&["asked"], &mut results, vec![odd, asked, twice])
        });
        assert!(matches!(&results[0], Some(Ok(v)) if v[0].value.expose_str() == Some("v")));
        assert_eq!(freed, 0, "an unmatched value was freed without being zeroized");
    }

    #[test]
    fn detects_rotation_in_progress() {
        let mut stages = HashMap::new();
        stages.insert("v1".to_owned(), vec!["AWSCURRENT".to_owned()]);
        assert!(!rotation_in_progress(&stages));
        stages.insert("v2".to_owned(), vec!["AWSPENDING".to_owned()]);
        assert!(rotation_in_progress(&stages));
    }
}
