//! [`SsmSource`]: AWS Systems Manager Parameter Store, by name (batched `GetParameters`, at most
//! 10 names a call) and by path (`GetParametersByPath`, recursive, every page).

use std::sync::Arc;

use aws_sdk_ssm::types::Parameter;
use aws_sdk_ssm::Client;
use futures_util::future::join_all;

use super::failover::{Failover, Regional};
use super::{Declaration, Fetched, ItemResult, Source};
use crate::call::{CallContext, Operation};
use crate::error::{CallError, CallErrorKind, ItemError};
use crate::iam::{Permission, PolicyScope};
use crate::limiter::QuotaClass;
use crate::value::SecretValue;

/// `GetParameters` calls of single names that one fetch makes at most after denied batches (two
/// batches' worth); the other names of denied batches get the batch's error.
const MAX_FANOUT_CALLS: usize = 2 * MAX_NAMES_PER_CALL;
/// How long a name denied alone is remembered (then tried alone again).
const DENIED_FOR: std::time::Duration = std::time::Duration::from_secs(300);
/// Names remembered as denied, at most.
const DENIED_MAX: usize = 4096;

/// Names whose own `GetParameters` call was denied lately (or presumed so: every name tried alone
/// in the same fetch was denied).
#[derive(Default)]
struct Denied(std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>);

impl Denied {
    fn contains(&self, id: &str) -> bool {
        let denied = self.0.lock().unwrap_or_else(|e| e.into_inner());
        denied.get(id).is_some_and(|at| at.elapsed() < DENIED_FOR)
    }

    fn remember(&self, ids: impl IntoIterator<Item = String>) {
        let mut denied = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        denied.retain(|_, at| now.saturating_duration_since(*at) < DENIED_FOR);
        for id in ids {
            if denied.len() >= DENIED_MAX {
                break;
            }
            denied.insert(id, now);
        }
    }

    fn forget(&self, id: &str) {
        let mut denied = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !denied.is_empty() {
            denied.remove(id);
        }
    }
}

/// The single-name calls one fetch may still make after denied batches, and what they found.
struct Fanout {
    left: std::sync::atomic::AtomicUsize,
    found: std::sync::Mutex<FanoutFound>,
}

#[derive(Default)]
struct FanoutFound {
    succeeded: bool,
    denied: Vec<String>,
    unprobed: Vec<String>,
}

impl Fanout {
    fn new(calls: usize) -> Self {
        Fanout {
            left: std::sync::atomic::AtomicUsize::new(calls),
            found: Default::default(),
        }
    }

    /// Takes one call, if any is left.
    fn take(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    fn found(&self) -> std::sync::MutexGuard<'_, FanoutFound> {
        self.found.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn succeeded(&self) {
        self.found().succeeded = true;
    }

    fn denied(&self, id: &str) {
        self.found().denied.push(id.to_owned());
    }

    fn unprobed(&self, id: &str) {
        self.found().unprobed.push(id.to_owned());
    }

    /// Remembers the names denied alone; when no name tried alone could be read, the names of
    /// denied batches not tried alone are presumed denied too (the role lost the permission).
    fn learn(self, denied: &Denied) {
        let found = self.found.into_inner().unwrap_or_else(|e| e.into_inner());
        let presumed = !found.succeeded && !found.denied.is_empty();
        denied.remember(found.denied);
        if presumed {
            denied.remember(found.unprobed);
        }
    }
}

/// Names per `GetParameters` call (the API's limit).
pub(crate) const MAX_NAMES_PER_CALL: usize = 10;
const PAGE_SIZE: i32 = 10;
const GET_PARAMETERS: Operation = Operation::new("GetParameters").with_quota(QuotaClass::SsmGet);
const GET_PARAMETERS_BY_PATH: Operation =
    Operation::new("GetParametersByPath").with_quota(QuotaClass::SsmGet);

/// A parameter name (or ARN, with its selector), or a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SsmItem {
    Name(String),
    Path(String),
}

impl SsmItem {
    fn id(&self) -> &str {
        match self {
            SsmItem::Name(id) | SsmItem::Path(id) => id,
        }
    }
}

impl std::fmt::Display for SsmItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

/// SSM Parameter Store.
///
/// The client comes from your `SdkConfig` (or a client you built): this crate never chooses
/// credentials, Region or behavior version. The SDK's own retries are turned off on the
/// client it uses, because retries are owned by this crate's [`RetryPolicy`](crate::RetryPolicy)
/// (one owner of retry policy, so attempts are never multiplied).
///
/// ```no_run
/// use lambda_secrets::{Secrets, SsmSource};
/// use std::time::Duration;
///
/// # async fn run() -> Result<(), lambda_secrets::Error> {
/// let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
/// let ssm = SsmSource::new(&config);
/// let secrets = Secrets::builder()
///     .add(ssm.parameter("db_password", "/prod/db/password"))
///     .add(ssm.parameter("api_key", "/prod/api-key:3").ttl(Duration::from_secs(60)))
///     .add(ssm.parameter("hosts", "/prod/hosts")) // a StringList: snapshot.expose_list("hosts")
///     .add(ssm.path("/prod/app/")) // keys relative to the path: "feature/flag", ...
///     .load()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SsmSource {
    inner: Arc<SsmInner>,
    /// Set by [`failover_region`](Self::failover_region): what declarations read through.
    failover: Option<Arc<Failover<SsmInner>>>,
}

struct SsmInner {
    client: Client,
    #[cfg(feature = "assume-role")]
    origin: super::assume::Origin,
    decrypt: bool,
    /// Names whose own `GetParameters` was denied lately (or presumed so): not tried alone again.
    denied: Denied,
}

impl std::fmt::Debug for SsmSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsmSource")
            .field("decrypt", &self.inner.decrypt)
            .finish()
    }
}

impl SsmSource {
    /// A source using a client made from `config`.
    pub fn new(config: &aws_types::SdkConfig) -> Self {
        #[allow(unused_mut)]
        let mut source = Self::with_client(client_without_retries!(aws_sdk_ssm, config config));
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
        let mut source = Self::new(&config).with_decryption(self.inner.decrypt);
        Arc::get_mut(&mut source.inner).expect("just made").origin = origin;
        Ok(source)
    }

    /// A source using (a copy of) `client`, with the SDK's retries turned off.
    pub fn from_client(client: &Client) -> Self {
        Self::with_client(client_without_retries!(aws_sdk_ssm, client client))
    }

    fn with_client(client: Client) -> Self {
        SsmSource {
            inner: Arc::new(SsmInner {
                client,
                #[cfg(feature = "assume-role")]
                origin: Default::default(),
                decrypt: true,
                denied: Denied::default(),
            }),
            failover: None,
        }
    }

    /// The same source, failing over to `region` when its own Region fails (a client for
    /// `region` made from this source's: same credentials, HTTP client and endpoint), for
    /// parameters kept in both Regions (SSM does not replicate them: your tooling does).
    /// Declarations do not change; the rules are in the README's "Region failover" section, as
    /// for [`SecretsManagerSource::failover_region`](crate::SecretsManagerSource::failover_region).
    /// SSM version numbers are per Region: a value the failover Region served has its version
    /// there, and it never replaces one changed later (`LastModifiedDate`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) naming `region`: not a Region name, or
    /// the source's own.
    pub fn failover_region(&self, region: impl Into<String>) -> Result<Self, crate::Error> {
        let region = region.into();
        super::failover::check_region(&region, self.inner.client.config().region().map(|r| r.as_ref()))?;
        let client = client_without_retries!(aws_sdk_ssm, client self.inner.client, region region.clone());
        let replica = Self::with_client(client).with_decryption(self.inner.decrypt);
        Ok(self.failing_over(replica.inner, region, None))
    }

    /// The same source, failing over to the client of `config` (another endpoint or other
    /// credentials for the failover Region), as [`failover_region`](Self::failover_region).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`](crate::Error::InvalidInput): `config` has no Region, or the
    /// source's own.
    pub fn failover_config(&self, config: &aws_types::SdkConfig) -> Result<Self, crate::Error> {
        let region = config.region().map(|r| r.as_ref().to_owned()).unwrap_or_default();
        super::failover::check_region(&region, self.inner.client.config().region().map(|r| r.as_ref()))?;
        let replica = Self::with_client(client_without_retries!(aws_sdk_ssm, config config))
            .with_decryption(self.inner.decrypt);
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
        replica: Arc<SsmInner>,
        region: String,
        hedge: Option<std::time::Duration>,
    ) -> Self {
        SsmSource {
            inner: self.inner.clone(),
            failover: Some(Arc::new(Failover::new(
                self.inner.clone(),
                replica,
                region,
                hedge,
            ))),
        }
    }

    fn declare(&self, key: impl Into<String>, item: SsmItem) -> Declaration {
        match &self.failover {
            Some(failover) => Declaration::new(key, failover.clone(), item),
            None => Declaration::new(key, self.inner.clone(), item),
        }
    }

    /// Whether SecureString values are decrypted (the default). With `false` the ciphertext is
    /// returned and `kms:Decrypt` is not needed.
    pub fn with_decryption(self, decrypt: bool) -> Self {
        let source = SsmSource {
            inner: Arc::new(SsmInner {
                client: self.inner.client.clone(),
                #[cfg(feature = "assume-role")]
                origin: self.inner.origin.clone(),
                decrypt,
                denied: Denied::default(),
            }),
            failover: None,
        };
        match &self.failover {
            Some(f) => {
                let replica = SsmSource {
                    inner: f.replica().clone(),
                    failover: None,
                }
                .with_decryption(decrypt);
                source.failing_over(replica.inner, f.region().to_owned(), f.hedge())
            }
            None => source,
        }
    }

    /// Declares `key` as the parameter `name`: a name (`/prod/db/password`), an ARN, or either
    /// with a selector, `:VERSION` or `:LABEL`. A malformed name is reported by `load`.
    pub fn parameter(&self, key: impl Into<String>, name: impl Into<String>) -> Declaration {
        let name = name.into();
        let decl = self.declare(key, SsmItem::Name(name.clone()));
        match validate_name(&without_wildcards(&name)) {
            Ok(()) if name.contains(['*', '?']) => decl.pattern("SSM parameter name", name),
            Ok(()) => decl,
            Err(reason) => decl.rejected("SSM parameter name", name, reason),
        }
    }

    /// Declares every parameter under `path` (recursive); each key is the parameter's name
    /// relative to the path (`/prod/app/db/url` under `/prod/app` is `db/url`).
    pub fn path(&self, path: impl Into<String>) -> Declaration {
        self.path_with_prefix("", path)
    }

    /// Like [`path`](Self::path), with `prefix` put before every key.
    pub fn path_with_prefix(&self, prefix: impl Into<String>, path: impl Into<String>) -> Declaration {
        let path = path.into();
        let decl = self.declare(prefix, SsmItem::Path(path.clone()));
        match validate_path(&path) {
            Ok(()) => decl,
            Err(reason) => decl.rejected("SSM path", path, reason),
        }
    }
}

/// `name` with the wildcards of a pattern replaced by a letter, to check the rest of it.
fn without_wildcards(name: &str) -> String {
    name.replace(['*', '?'], "x")
}

const NAME_CHARS: &str = "letters, digits and `_ . - /`";

fn name_char_ok(c: char, reference: bool) -> bool {
    c.is_ascii_alphanumeric() || "_.-/".contains(c) || (reference && "+=,@".contains(c))
}

/// Splits an SSM id into (name, selector), resolving an ARN to its parameter name.
fn split_id(id: &str) -> Result<(String, Option<&str>), String> {
    let (name, arn) = if let Some(rest) = id.strip_prefix("arn:") {
        // arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        if parts.len() != 5 || parts[1] != "ssm" || parts[0].is_empty() {
            return Err("an ARN must look like arn:aws:ssm:REGION:ACCOUNT:parameter/NAME".into());
        }
        let Some(name) = parts[4].strip_prefix("parameter/") else {
            return Err("an SSM parameter ARN's resource must start with `parameter/`".into());
        };
        (name, true)
    } else {
        (id, false)
    };
    let (name, selector) = match name.split_once(':') {
        Some((n, s)) => (n, Some(s)),
        None => (name, None),
    };
    let name = if arn && name.contains('/') {
        format!("/{name}")
    } else {
        name.to_owned()
    };
    Ok((name, selector))
}

/// Names under this prefix read a Secrets Manager secret through Parameter Store.
const SECRETS_MANAGER_REFERENCE: &str = "/aws/reference/secretsmanager/";

/// The IAM resource of a parameter id: an ARN as given, or the scope's ARN of the name, both
/// without the selector (IAM authorizes the parameter, whatever version is asked for).
fn parameter_arn(id: &str, scope: &PolicyScope) -> String {
    if id.starts_with("arn:") {
        // arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME[:SELECTOR]
        let resource_start = id.match_indices(':').nth(4).map_or(id.len(), |(i, _)| i + 1);
        return match id[resource_start..].rfind(':') {
            Some(sel) => id[..resource_start + sel].to_owned(),
            None => id.to_owned(),
        };
    }
    let name = id.split_once(':').map_or(id, |(name, _)| name);
    scope.arn("ssm", &format!("parameter/{}", name.trim_start_matches('/')))
}

fn validate_name(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the name is empty".into());
    }
    if id.len() > 2048 {
        return Err("a name is at most 2048 characters".into());
    }
    let (name, selector) = split_id(id)?;
    let reference = name.starts_with(SECRETS_MANAGER_REFERENCE);
    if let Some(bad) = name.chars().find(|c| !name_char_ok(*c, reference)) {
        return Err(format!("{bad:?} is not allowed; names use {NAME_CHARS}"));
    }
    if name.is_empty() || name == "/" || name.ends_with('/') || name.contains("//") {
        return Err("a name must not be empty, end with `/` or contain `//`".into());
    }
    if name.contains('/') && !name.starts_with('/') {
        return Err("a hierarchical name must start with `/`".into());
    }
    if name.matches('/').count() > 15 {
        return Err("a name has at most 15 levels".into());
    }
    if let Some(sel) = selector {
        let is_version = !sel.is_empty() && sel.bytes().all(|b| b.is_ascii_digit());
        let is_label = !sel.is_empty()
            && sel.len() <= 100
            && !sel.starts_with(|c: char| c.is_ascii_digit())
            && sel
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if is_version && sel.starts_with('0') {
            return Err("a version selector is a number from 1".into());
        }
        if !is_version && !is_label {
            return Err(format!(
                "selector `{sel}` is neither a version (`:3`) nor a label (`:prod`, letters, digits and `._-`, not starting with a digit)"
            ));
        }
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("a path starts with `/`".into());
    }
    if let Some(bad) = path.chars().find(|c| !name_char_ok(*c, false)) {
        return Err(format!("{bad:?} is not allowed; paths use {NAME_CHARS}"));
    }
    if path.contains("//") {
        return Err("a path must not contain `//`".into());
    }
    Ok(())
}

impl Regional for SsmInner {
    fn region(&self) -> Option<String> {
        self.client.config().region().map(|r| r.as_ref().to_owned())
    }

    fn in_region(&self, item: &SsmItem, region: &str) -> SsmItem {
        match item {
            SsmItem::Name(id) => SsmItem::Name(super::failover::arn_in_region(id, region)),
            SsmItem::Path(id) => SsmItem::Path(super::failover::arn_in_region(id, region)),
        }
    }

    /// Not a name with a version or label: those are per Region, so another Region's `name:3`
    /// is another value.
    fn fails_over(&self, item: &SsmItem) -> bool {
        match item {
            SsmItem::Name(id) => split_id(id).map_or(true, |(_, selector)| selector.is_none()),
            SsmItem::Path(_) => true,
        }
    }
}

impl Source for SsmInner {
    type Item = SsmItem;

    fn kind(&self) -> &'static str {
        "ssm"
    }

    #[cfg(feature = "assume-role")]
    fn role_arn(&self) -> Option<&str> {
        self.origin.role().map(crate::AssumeRole::arn)
    }

    #[cfg(feature = "assume-role")]
    fn seal(&self) {
        self.origin.forget();
    }

    fn is_tree(&self, item: &SsmItem) -> bool {
        matches!(item, SsmItem::Path(_))
    }

    /// `ssm:GetParameters` on a parameter (its ARN without selector), `ssm:GetParametersByPath`
    /// on a path; with customer managed keys, `kms:Decrypt` through SSM for the parameters'
    /// encryption context; for a Secrets Manager reference, `secretsmanager:GetSecretValue` on the
    /// secret too, and Secrets Manager's customer managed keys instead of SSM's.
    fn permissions(&self, item: &SsmItem, scope: &PolicyScope) -> Option<Vec<Permission>> {
        let (action, arn, encrypted) = match item {
            SsmItem::Name(id) => {
                let arn = parameter_arn(id, scope);
                ("ssm:GetParameters", arn.clone(), arn)
            }
            SsmItem::Path(path) => {
                let arn = scope.arn("ssm", &format!("parameter/{}", path.trim_matches('/')));
                let under = format!("{}/*", arn.trim_end_matches('/'));
                ("ssm:GetParametersByPath", arn, under)
            }
        };
        let mut needed = vec![Permission::new(action, arn)];
        let reference = match item {
            SsmItem::Name(id) => split_id(id)
                .ok()
                .and_then(|(name, _)| name.strip_prefix(SECRETS_MANAGER_REFERENCE).map(str::to_owned)),
            SsmItem::Path(_) => None,
        };
        if let Some(secret) = reference {
            // Parameter Store reads the secret from Secrets Manager with the caller's rights,
            // and Secrets Manager decrypts it with its own key.
            for secret_arn in scope.secret_arns(&secret) {
                needed.push(Permission::new(
                    "secretsmanager:GetSecretValue",
                    secret_arn.clone(),
                ));
                needed.extend(scope.decrypt_via("secretsmanager", "SecretARN", &secret_arn));
            }
            return Some(needed);
        }
        if self.decrypt {
            needed.extend(scope.decrypt_via("ssm", "PARAMETER_ARN", &encrypted));
        }
        Some(needed)
    }

    async fn fetch(&self, items: &[SsmItem], calls: &CallContext) -> Vec<ItemResult> {
        {
            let names: Vec<usize> = (0..items.len())
                .filter(|&i| matches!(items[i], SsmItem::Name(_)))
                .collect();
            let paths: Vec<usize> = (0..items.len())
                .filter(|&i| matches!(items[i], SsmItem::Path(_)))
                .collect();
            // Names known to be denied are batched apart and never tried alone again (every
            // refresh of a function whose role lost the permission would otherwise spend the
            // account's quota on calls that cannot succeed); they are tried again as a batch.
            let (known, unknown): (Vec<usize>, Vec<usize>) =
                names.iter().partition(|&&i| self.denied.contains(items[i].id()));
            let fanout = Fanout::new(MAX_FANOUT_CALLS);
            let chunks: Vec<(Vec<usize>, bool)> = batches(items, &unknown)
                .into_iter()
                .map(|c| (c, true))
                .chain(batches(items, &known).into_iter().map(|c| (c, false)))
                .collect();
            let by_name = join_all(chunks.iter().map(|(chunk, probe)| {
                let ids: Vec<&str> = chunk.iter().map(|&i| items[i].id()).collect();
                let fanout = probe.then_some(&fanout);
                async move { (chunk, self.get_parameters(&ids, calls, fanout).await) }
            }));
            let by_path = join_all(
                paths
                    .iter()
                    .map(|&i| async move { (i, self.get_by_path(items[i].id(), calls).await) }),
            );
            let (by_name, by_path) = futures_util::future::join(by_name, by_path).await;
            fanout.learn(&self.denied);

            let mut out: Vec<Option<ItemResult>> = vec![None; items.len()];
            for (chunk, results) in by_name {
                for (&i, r) in chunk.iter().zip(results) {
                    out[i] = Some(r);
                }
            }
            for (i, r) in by_path {
                out[i] = Some(r);
            }
            out.into_iter()
                .map(|r| r.unwrap_or_else(|| Err(ItemError::Source("not fetched".into()))))
                .collect()
        }
    }
}

impl SsmInner {
    /// One `GetParameters` call for up to 10 ids; one result per id. When the call is denied
    /// for a batch (one name the role may not read denies them all), its ids are tried alone, as
    /// `fanout` allows, so that the error names exactly the denied ones; an id not tried alone gets
    /// the batch's error. Without `fanout`, the batch's error is every id's.
    async fn get_parameters(
        &self,
        ids: &[&str],
        calls: &CallContext,
        fanout: Option<&Fanout>,
    ) -> Vec<ItemResult> {
        let err = match self.get_parameters_call(ids, calls).await {
            Ok(results) => {
                for id in ids {
                    self.denied.forget(id);
                }
                return results;
            }
            Err(err) => err,
        };
        let batch_error = denied_action(err.clone(), "ssm:GetParameters");
        let fanout = match fanout {
            // One bad name (denied, or rejected as invalid) must not fail the other nine.
            Some(fanout)
                if matches!(err.kind(), CallErrorKind::Denied | CallErrorKind::Fatal)
                    && err.transport() != crate::error::Transport::StaleSignature
                    && ids.len() > 1 =>
            {
                fanout
            }
            _ => return ids.iter().map(|_| Err(batch_error.clone())).collect(),
        };
        // The singles have at most half the time left: the rest of the load or refresh keeps its
        // budget.
        let alone = calls.share(0.5);
        let single = ids.iter().map(|id| {
            let (alone, batch_error) = (&alone, &batch_error);
            async move {
                if !fanout.take() {
                    fanout.unprobed(id);
                    return Err(batch_error.clone());
                }
                match self.get_parameters_call(&[id], alone).await {
                    Ok(mut r) => {
                        fanout.succeeded();
                        r.pop().unwrap_or(Err(ItemError::NotFound))
                    }
                    // No request was made (the rate limit or the budget allowed none): the
                    // batch's answer is all that is known of it.
                    Err(e) if e.was_not_sent() => {
                        fanout.unprobed(id);
                        Err(batch_error.clone())
                    }
                    Err(e) => {
                        let error = denied_action(e, "ssm:GetParameters");
                        if matches!(error, ItemError::Denied { .. }) {
                            fanout.denied(id);
                        }
                        Err(error)
                    }
                }
            }
        });
        join_all(single).await
    }

    async fn get_parameters_call(
        &self,
        ids: &[&str],
        calls: &CallContext,
    ) -> Result<Vec<ItemResult>, CallError> {
        let names: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
        let out = calls
            .call(GET_PARAMETERS, || {
                let send = self
                    .client
                    .get_parameters()
                    .set_names(Some(names.clone()))
                    .with_decryption(self.decrypt)
                    .send();
                async move { super::aws::answered("GetParameters", send.await) }
            })
            .await?;
        Ok(match_parameters(
            ids,
            &out.invalid_parameters.unwrap_or_default(),
            out.parameters.unwrap_or_default(),
        ))
    }

    async fn get_by_path(&self, path: &str, calls: &CallContext) -> ItemResult {
        // `/prod/app/` and `/prod/app` are the same hierarchy; IAM authorizes the path as sent,
        // and a policy names it without the trailing `/`.
        let path = match path.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        };
        let mut values = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = calls
                .call(GET_PARAMETERS_BY_PATH, || {
                    let send = self
                        .client
                        .get_parameters_by_path()
                        .path(path)
                        .recursive(true)
                        .with_decryption(self.decrypt)
                        .max_results(PAGE_SIZE)
                        .set_next_token(token.clone())
                        .send();
                    async move { super::aws::answered("GetParametersByPath", send.await) }
                })
                .await
                .map_err(|e| denied_action(e, "ssm:GetParametersByPath"))?;
            for p in page.parameters.unwrap_or_default() {
                let relative = relative_name(path, p.name().unwrap_or_default());
                values.push(fetched(p, Some(relative)));
            }
            token = page.next_token.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        if values.is_empty() {
            return Err(ItemError::Invalid(
                "no parameters under this path (or none readable); check the path".into(),
            ));
        }
        Ok(values)
    }
}

/// One result per requested id from a `GetParameters` answer: its parameter, not found (in
/// `InvalidParameters`), or an error if the answer has neither. A parameter that answers no id (an
/// odd answer) has its value zeroized as it goes.
fn match_parameters(ids: &[&str], invalid: &[String], parameters: Vec<Parameter>) -> Vec<ItemResult> {
    let mut params: Vec<Option<Parameter>> = parameters.into_iter().map(Some).collect();
    let results = ids
        .iter()
        .map(|id| {
            if invalid.iter().any(|n| n == id) {
                return Err(ItemError::NotFound);
            }
            let found = params
                .iter_mut()
                .find(|p| p.as_ref().is_some_and(|p| matches_id(p, id)))
                .and_then(Option::take);
            match found {
                Some(p) => Ok(vec![fetched(p, None)]),
                None => Err(ItemError::Source(
                    "GetParameters returned no value and no error for it".into(),
                )),
            }
        })
        .collect();
    for mut unmatched in params.into_iter().flatten() {
        drop(unmatched.value.take().map(zeroize::Zeroizing::new));
    }
    results
}

/// Groups names into `GetParameters` calls of at most 10, never putting two selectors of one
/// parameter in the same call: a response's `Selector` field is optional (emulators omit it),
/// and without it two versions of one name could not be told apart.
fn batches(items: &[SsmItem], names: &[usize]) -> Vec<Vec<usize>> {
    // Names with the most selectors first, so that they spread over the fewest calls.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for &i in names {
        let base = split_id(items[i].id()).map(|(n, _)| n).unwrap_or_default();
        match groups.iter_mut().find(|(b, _)| *b == base) {
            Some((_, members)) => members.push(i),
            None => groups.push((base, vec![i])),
        }
    }
    groups.sort_by_key(|(_, members)| std::cmp::Reverse(members.len()));
    let mut chunks: Vec<(Vec<usize>, Vec<&str>)> = Vec::new();
    for (base, members) in &groups {
        for &i in members {
            match chunks
                .iter_mut()
                .find(|(chunk, bases)| chunk.len() < MAX_NAMES_PER_CALL && !bases.contains(&base.as_str()))
            {
                Some((chunk, bases)) => {
                    chunk.push(i);
                    bases.push(base);
                }
                None => chunks.push((vec![i], vec![base])),
            }
        }
    }
    chunks.into_iter().map(|(chunk, _)| chunk).collect()
}

/// A denial that mentions `kms:Decrypt` is about the SecureString's key, not the SSM action.
fn denied_action(err: CallError, ssm_action: &str) -> ItemError {
    let said = err.aws_message().unwrap_or_default();
    let action = if said.contains("kms:Decrypt") || said.contains("KMS") {
        "kms:Decrypt"
    } else {
        ssm_action
    };
    err.into_item_error(action)
}

/// Whether `p` answers the requested `id` (a name or ARN, with an optional selector).
fn matches_id(p: &Parameter, id: &str) -> bool {
    let Ok((name, selector)) = split_id(id) else {
        return false;
    };
    if id.starts_with("arn:") {
        // `parameter/x` is the ARN of both `x` and `/x`: compare ARNs when the response has one.
        let base_arn = match selector {
            Some(sel) => &id[..id.len() - sel.len() - 1],
            None => id,
        };
        if let Some(arn) = p.arn() {
            return arn == base_arn && selector_ok(p, selector);
        }
    }
    matches_request(p, &name, selector)
}

fn selector_ok(p: &Parameter, selector: Option<&str>) -> bool {
    let p_selector = p
        .selector()
        .map(|s| s.trim_start_matches(':'))
        .filter(|s| !s.is_empty());
    p_selector == selector || (p_selector.is_none() && selector_matches(p, selector))
}

/// Secrets Manager references come back named after the secret by some implementations.
const REFERENCE_PREFIX: &str = "/aws/reference/secretsmanager/";

fn matches_request(p: &Parameter, name: &str, selector: Option<&str>) -> bool {
    let p_name = p.name().unwrap_or_default();
    let p_name = split_id(p_name)
        .map(|(n, _)| n)
        .unwrap_or_else(|_| p_name.to_owned());
    let name_ok = p_name == name || name.strip_prefix(REFERENCE_PREFIX) == Some(p_name.as_str());
    name_ok && selector_ok(p, selector)
}

/// Whether `p` is what `selector` asked for when the response omits the selector.
fn selector_matches(p: &Parameter, selector: Option<&str>) -> bool {
    match selector {
        None => true,
        Some(s) if s.bytes().all(|b| b.is_ascii_digit()) => p.version().to_string() == s,
        // A label cannot be checked from a `Parameter`; the name matched.
        Some(_label) => true,
    }
}

fn relative_name(path: &str, name: &str) -> String {
    name.strip_prefix(path)
        .unwrap_or(name)
        .trim_start_matches('/')
        .to_owned()
}

fn fetched(mut p: Parameter, relative: Option<String>) -> Fetched {
    let value = SecretValue::from(p.value.take().unwrap_or_default());
    let mut f = Fetched::new(p.name.take().unwrap_or_default(), value)
        .with_version(p.version().to_string())
        .with_modified_at(
            p.last_modified_date
                .and_then(|d| std::time::SystemTime::try_from(d).ok()),
        );
    f.relative = relative;
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_arns_and_selectors() {
        for ok in [
            "/prod/db/password",
            "plain_name",
            "/prod/db/password:3",
            "/prod/db/password:live",
            "arn:aws:ssm:us-east-1:123456789012:parameter/prod/db",
            "arn:aws:ssm:us-east-1:123456789012:parameter/prod/db:2",
            "arn:aws-cn:ssm:cn-north-1:123456789012:parameter/plain",
            "/aws/reference/secretsmanager/my+secret@x",
        ] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_malformed_names_saying_why() {
        for (bad, why) in [
            ("", "empty"),
            ("/prod/db password", "' ' is not allowed"),
            ("prod/db", "must start with `/`"),
            ("/prod/db/", "end with `/`"),
            ("/prod/db:", "neither a version"),
            ("/prod/db:0", "number from 1"),
            ("/prod/db:1abc", "neither a version"),
            ("arn:aws:s3:::bucket", "ARN"),
            ("arn:aws:ssm:us-east-1:123:secret/x", "`parameter/`"),
        ] {
            let err = validate_name(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(validate_path("prod").unwrap_err().contains("starts with `/`"));
        assert_eq!(validate_path("/prod/app/"), Ok(()));
    }

    #[test]
    fn splits_ids() {
        assert_eq!(split_id("/a/b:3").unwrap(), ("/a/b".into(), Some("3")));
        assert_eq!(
            split_id("arn:aws:ssm:r:1:parameter/a/b:lbl").unwrap(),
            ("/a/b".into(), Some("lbl"))
        );
        assert_eq!(
            split_id("arn:aws:ssm:r:1:parameter/plain").unwrap(),
            ("plain".into(), None)
        );
    }

    #[test]
    fn batches_hold_ten_names_and_one_selector_per_name() {
        let mut items: Vec<SsmItem> = (0..25).map(|i| SsmItem::Name(format!("/p{i}"))).collect();
        items.push(SsmItem::Name("/p0:1".into()));
        items.push(SsmItem::Name("/p0:live".into()));
        let names: Vec<usize> = (0..items.len()).collect();
        let chunks = batches(&items, &names);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 7]);
        for chunk in &chunks {
            let p0 = chunk
                .iter()
                .filter(|&&i| items[i].id().starts_with("/p0"))
                .count();
            assert!(p0 <= 1, "{chunk:?}");
        }
    }

    #[test]
    fn responses_match_requests_by_name_arn_and_selector() {
        let arn = "arn:aws:ssm:us-east-1:123456789012:parameter/prod/db";
        // Real SSM echoes the selector; emulators may not.
        let with_selector = Parameter::builder()
            .name("/prod/db")
            .arn(arn)
            .version(3)
            .selector(":3")
            .build();
        let without = Parameter::builder().name("/prod/db").arn(arn).version(3).build();
        let latest = Parameter::builder().name("/prod/db").arn(arn).version(5).build();
        fn matches(p: &Parameter, id: &str) -> bool {
            matches_id(p, id)
        }
        assert!(matches(&with_selector, "/prod/db:3"));
        assert!(matches(&with_selector, &format!("{arn}:3")));
        assert!(!matches(&with_selector, "/prod/db"));
        assert!(!matches(&with_selector, "/prod/db:live"));
        assert!(matches(&without, "/prod/db:3"));
        assert!(!matches(&latest, "/prod/db:3"));
        assert!(matches(&latest, "/prod/db"));
        assert!(matches(&latest, arn));
        assert!(!matches(&latest, "/prod/other"));
        // `parameter/plain` is the ARN of `/plain` too: the ARN decides.
        let slash = Parameter::builder()
            .name("/plain")
            .arn("arn:aws:ssm:r:1:parameter/plain")
            .version(1)
            .build();
        assert!(matches(&slash, "arn:aws:ssm:r:1:parameter/plain"));
        assert!(matches(&slash, "arn:aws:ssm:r:1:parameter/plain:1"));
        assert!(!matches(&slash, "arn:aws:ssm:r:1:parameter/other"));
        let reference = Parameter::builder().name("prod/db").version(0).build();
        assert!(matches(&reference, "/aws/reference/secretsmanager/prod/db"));
    }

    #[test]
    fn a_parameter_that_answers_no_request_leaves_no_copy_of_its_value() {
        let odd = Parameter::builder()
            .name("/not/asked")
            .value("CANARY-ssm-leftover")
            .version(1)
            .build();
        let asked = Parameter::builder().name("/asked").value("v").version(1).build();
        let (results, freed) = crate::test_support::freed_holding(b"CANARY-ssm-leftover", || {
            match_parameters(&["/asked"], &[], vec![odd, asked])
        });
        assert_eq!(results.len(), 1);
        assert!(results[0].is_ok());
        assert_eq!(
            freed, 0,
            "the unmatched parameter's value was freed without being zeroized"
        );
    }

    #[test]
    fn relative_names() {
        assert_eq!(relative_name("/prod/app", "/prod/app/db/url"), "db/url");
        assert_eq!(relative_name("/prod/app/", "/prod/app/db/url"), "db/url");
        assert_eq!(relative_name("/", "/x"), "x");
    }
}
