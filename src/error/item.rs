//! [`ItemError`]: why one item could not be fetched; [`Failure`]: one key that failed, and why.

use super::CallError;

/// One key that failed to load.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use lambda_secrets::{Error, ItemError, MemorySource, Secrets};
/// let mem = MemorySource::new();
/// let Err(Error::Load { failures }) = Secrets::builder().add(mem.value("db", "/db")).load().await else {
///     panic!("nothing is set");
/// };
/// assert_eq!((failures[0].key.as_str(), failures[0].id.as_str()), ("db", "/db"));
/// assert_eq!(failures[0].error, ItemError::NotFound);
/// # });
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Failure {
    /// The key the handler would have read (for a path, the path's key prefix or the path).
    pub key: String,
    /// The source kind (`ssm`).
    pub source: &'static str,
    /// What was asked of the source: its item as displayed (the parameter name with its
    /// selector, the path, the secret id with its stage).
    pub id: String,
    /// What went wrong.
    pub error: ItemError,
}

impl Failure {
    /// `key` (the source's `id` of `source`) failed with `error`.
    pub(crate) fn new(
        key: impl Into<String>,
        source: &'static str,
        id: impl Into<String>,
        error: ItemError,
    ) -> Self {
        Failure {
            key: key.into(),
            source,
            id: id.into(),
            error,
        }
    }
}

/// Why one item could not be fetched. Produced by [`Source`](crate::Source) implementations.
///
/// Its `Display` names the IAM action to grant or the operation and error code that failed, never
/// a value, and never AWS's own message (it can hold the account id and role ARN; it is logged as a
/// `tracing` warning instead, and kept in [`CallError::aws_message`](crate::CallError::aws_message)).
///
/// ```
/// use lambda_secrets::ItemError;
/// let e = ItemError::Denied { action: "ssm:GetParameters".into() };
/// assert!(e.to_string().contains("grant `ssm:GetParameters`"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ItemError {
    /// The item does not exist (or the selected version/label does not).
    #[error("not found; create it or fix the name/selector")]
    NotFound,
    /// The caller lacks permission.
    #[error(
        "access denied; grant `{action}` on it to the function's role \
         (`lambda-secrets policy` or `Policy::builder()` writes the policy your declarations need)"
    )]
    Denied {
        /// The IAM action to grant, e.g. `ssm:GetParameters`.
        action: String,
    },
    /// An API call failed after retries; its [`kind`](CallError::kind) says how (throttled,
    /// transient, rejected).
    #[error("{0}")]
    Call(CallError),
    /// The value arrived but cannot be used as declared (not a JSON object with the field, not
    /// base64 ciphertext, nothing under a path, ...).
    #[error("{0}")]
    Invalid(String),
    /// The source failed without an API error: it panicked, ran past its budget, or gave no
    /// result for the item.
    #[error("{0}")]
    Source(String),
}
