//! [`CallError`]: a failed API call, classified for retry with the AWS SDK's own error lists.

use std::fmt;

use super::ItemError;

/// How a failed API call should be treated.
///
/// ```
/// use lambda_secrets::{CallError, CallErrorKind};
/// let e = CallError::new(CallErrorKind::Denied, "MyStoreRead: no");
/// assert_eq!(e.kind(), CallErrorKind::Denied);
/// assert!(!e.is_retryable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallErrorKind {
    /// The service throttled the call: retried with backoff.
    Throttled,
    /// A 5xx, a timeout or a cut connection: retried with backoff.
    Transient,
    /// Access denied: not retried.
    Denied,
    /// The thing asked for does not exist: not retried.
    NotFound,
    /// Anything else, such as a request the service rejected: not retried.
    Fatal,
}

/// A failed API call, classified for retry.
///
/// Its `Display` names the operation, the AWS error code and HTTP status, and what this crate did
/// (retries, deadline), never a value and never the service's own message, which may carry the
/// account id and role ARN: that message is in [`aws_message`](Self::aws_message) and in the
/// `tracing` warning logged when the call fails for good (once per distinct answer).
///
/// ```
/// use lambda_secrets::{CallError, CallErrorKind};
/// let e = CallError::new(CallErrorKind::Throttled, "MyStoreRead: rate exceeded");
/// assert!(e.is_retryable());
/// assert_eq!(e.to_string(), "MyStoreRead: rate exceeded");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct CallError {
    kind: CallErrorKind,
    message: String,
    aws_message: Option<String>,
    /// No request was sent: the rate limit or the deadline allowed none.
    not_sent: bool,
    /// A fault of the way the request travelled rather than of the service's answer to it.
    transport: Transport,
}

/// Faults that say nothing of the service: a Lambda freeze causes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Transport {
    #[default]
    Sound,
    /// The service refused the request's signing time as stale or skewed (`Signature expired`,
    /// `RequestExpired`, `RequestTimeTooSkewed`): a request signed before a freeze and sent
    /// after it, or a wrong clock.
    StaleSignature,
    /// The connection failed under the request (reset, broken pipe, closed by the peer): a
    /// pooled connection that died while the process was frozen or idle.
    ConnectionLost,
}

impl CallError {
    /// A classified error; `message` is shown as is, so it must not hold a value.
    ///
    /// ```
    /// use lambda_secrets::{CallError, CallErrorKind};
    /// let e = CallError::new(CallErrorKind::NotFound, "MyStoreRead: no such key");
    /// assert_eq!(e.message(), "MyStoreRead: no such key");
    /// ```
    pub fn new(kind: CallErrorKind, message: impl Into<String>) -> Self {
        CallError {
            kind,
            message: message.into(),
            aws_message: None,
            not_sent: false,
            transport: Transport::Sound,
        }
    }

    /// Its classification.
    ///
    /// ```
    /// use lambda_secrets::{CallError, CallErrorKind};
    /// assert_eq!(CallError::new(CallErrorKind::Fatal, "x").kind(), CallErrorKind::Fatal);
    /// ```
    pub fn kind(&self) -> CallErrorKind {
        self.kind
    }

    /// What went wrong (the same text as `Display`).
    ///
    /// ```
    /// let e = lambda_secrets::CallError::new(lambda_secrets::CallErrorKind::Fatal, "MyStoreRead: bad request");
    /// assert_eq!(e.message(), e.to_string());
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What the AWS service said, when it said something. It may name the account, the role ARN
    /// and the resource; it is kept out of `Display` and `Debug` so that it never reaches an invoker
    /// or a log line by accident.
    ///
    /// ```
    /// // Errors made by your own source carry no AWS message:
    /// let e = lambda_secrets::CallError::new(lambda_secrets::CallErrorKind::Denied, "MyStoreRead: denied");
    /// assert_eq!(e.aws_message(), None);
    /// ```
    pub fn aws_message(&self) -> Option<&str> {
        self.aws_message.as_deref()
    }

    /// Whether another attempt may succeed.
    ///
    /// ```
    /// use lambda_secrets::{CallError, CallErrorKind};
    /// assert!(CallError::new(CallErrorKind::Transient, "HTTP 503").is_retryable());
    /// assert!(!CallError::new(CallErrorKind::NotFound, "gone").is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, CallErrorKind::Throttled | CallErrorKind::Transient)
    }

    /// Converts to the per-item error, naming `action` (an IAM action such as
    /// `ssm:GetParameters`) for access errors.
    ///
    /// ```
    /// use lambda_secrets::{CallError, CallErrorKind, ItemError};
    /// let e = CallError::new(CallErrorKind::Denied, "MyStoreRead: AccessDenied (HTTP 403)");
    /// assert_eq!(
    ///     e.into_item_error("mystore:Read"),
    ///     ItemError::Denied { action: "mystore:Read".into() }
    /// );
    /// ```
    pub fn into_item_error(self, action: &str) -> ItemError {
        match self.kind {
            CallErrorKind::Denied => ItemError::Denied {
                action: action.to_owned(),
            },
            CallErrorKind::NotFound => ItemError::NotFound,
            _ => ItemError::Call(self),
        }
    }

    /// The same error, with `note` appended to its message (e.g. why it was given up).
    pub(crate) fn noted(mut self, note: impl fmt::Display) -> Self {
        self.message = format!("{} ({note})", self.message);
        self
    }

    /// The same error, marked as made before any request was sent (the rate limit or the
    /// deadline allowed none).
    pub(crate) fn not_sent(mut self) -> Self {
        self.not_sent = true;
        self
    }

    /// Whether no request was sent: the call says nothing of the service.
    #[cfg_attr(not(feature = "ssm"), allow(dead_code))] // used by the SSM source
    pub(crate) fn was_not_sent(&self) -> bool {
        self.not_sent
    }

    /// The same error, marked as a fault of the transport (see [`Transport`]).
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    pub(crate) fn in_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The transport fault, if any.
    pub(crate) fn transport(&self) -> Transport {
        self.transport
    }

    /// An error with what the service said (kept out of `Display` and `Debug`).
    #[cfg(feature = "aws")]
    pub(crate) fn with_aws_message(
        kind: CallErrorKind,
        message: impl Into<String>,
        aws_message: Option<String>,
    ) -> Self {
        CallError {
            kind,
            message: message.into(),
            aws_message,
            not_sent: false,
            transport: Transport::Sound,
        }
    }
}

/// `Debug` shows whether AWS said something, not what: its message may name the account and the
/// role (a `main` returning `Result<(), Error>` prints an INIT failure with `Debug`).
impl fmt::Debug for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field(
                "aws_message",
                &self.aws_message.as_ref().map(|_| "[in aws_message()]"),
            )
            .finish()
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallError {}
