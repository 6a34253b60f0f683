//! [`CallError`]: a failed API call, classified for retry with the AWS SDK's own error lists.

use std::fmt;

use crate::error::ItemError;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    kind: CallErrorKind,
    message: String,
    aws_message: Option<String>,
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
    /// and the resource; it is kept out of `Display` so that it never reaches an invoker.
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

    /// Classifies an AWS SDK error with the SDK's own lists of throttling and transient error codes
    /// (`aws_runtime::retries::classifiers`) and the error's modeled retry kind. A 4xx answer other
    /// than 429 (throttled) and 408 (timed out) is final whatever its body (a proxy's or WAF's HTML
    /// 403 is not a cut response); 5xx, timeouts and failed sends are transient. Only AWS's error codes make a denial or a "not found": a
    /// bare 403 may be a bad signature or a firewall, whose fix is not an IAM grant.
    #[cfg(feature = "aws")]
    pub(crate) fn from_sdk<E>(
        operation: &str,
        err: aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>,
    ) -> Self
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata
            + aws_smithy_types::retry::ProvideErrorKind
            + std::error::Error
            + 'static,
    {
        use aws_smithy_runtime_api::client::result::SdkError;
        match &err {
            SdkError::ServiceError(ctx) => {
                let status = ctx.raw().status().as_u16();
                let code = aws_smithy_types::error::metadata::ProvideErrorMetadata::code(ctx.err());
                let kind = classify(code, ctx.err().retryable_error_kind(), status);
                CallError {
                    kind,
                    message: format!("{operation}: {} (HTTP {status})", code.unwrap_or("unknown error")),
                    aws_message: aws_smithy_types::error::metadata::ProvideErrorMetadata::message(ctx.err())
                        .map(str::to_owned),
                }
            }
            SdkError::ResponseError(ctx) => {
                let status = ctx.raw().status().as_u16();
                if (400..500).contains(&status) {
                    // The answer is final whatever its body (a proxy's or a firewall's page).
                    CallError::new(
                        classify(None, None, status),
                        format!("{operation}: HTTP {status} with a body that is not an AWS error (a proxy or a firewall?)"),
                    )
                } else {
                    CallError::new(
                        CallErrorKind::Transient,
                        // Not the parser's message: it may quote the body, which holds values.
                        format!("{operation}: the response (HTTP {status}) was cut or unreadable"),
                    )
                }
            }
            SdkError::TimeoutError(_) => {
                CallError::new(CallErrorKind::Transient, format!("{operation}: timed out"))
            }
            // The chain of causes can quote a credential provider's answer (an STS denial names the
            // account and role): it goes to `aws_message`, not to `Display`.
            SdkError::DispatchFailure(d) if !d.is_user() => CallError {
                kind: CallErrorKind::Transient,
                message: format!(
                    "{operation}: could not send the request ({})",
                    if d.is_timeout() {
                        "timed out"
                    } else if d.is_io() {
                        "connection failed"
                    } else {
                        "connection or credentials; the log has the cause"
                    }
                ),
                aws_message: Some(error_chain(&err)),
            },
            _ => CallError {
                kind: CallErrorKind::Fatal,
                message: format!("{operation}: the request could not be made; the log has the cause"),
                aws_message: Some(error_chain(&err)),
            },
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallError {}

#[cfg(feature = "aws")]
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        parts.push(e.to_string());
        cur = e.source();
    }
    parts.join(": ")
}

/// Classifies an AWS error code (if the body had one), the error's modeled retry kind and the
/// HTTP status.
#[cfg(feature = "aws")]
fn classify(
    code: Option<&str>,
    modeled: Option<aws_smithy_types::retry::ErrorKind>,
    status: u16,
) -> CallErrorKind {
    use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
    use aws_smithy_types::retry::ErrorKind;
    let code = code.unwrap_or("");
    if THROTTLING_ERRORS.contains(&code) || status == 429 || modeled == Some(ErrorKind::ThrottlingError) {
        CallErrorKind::Throttled
    } else if TRANSIENT_ERRORS.contains(&code)
        || matches!(modeled, Some(ErrorKind::TransientError | ErrorKind::ServerError))
        || status == 408
    {
        CallErrorKind::Transient
    } else if code.starts_with("AccessDenied") || code == "UnauthorizedOperation" || code == "NotAuthorized" {
        CallErrorKind::Denied
    } else if matches!(
        code,
        "ParameterNotFound" | "ResourceNotFoundException" | "ParameterVersionNotFound" | "NotFoundException"
    ) {
        CallErrorKind::NotFound
    } else if (500..600).contains(&status) {
        CallErrorKind::Transient
    } else {
        CallErrorKind::Fatal
    }
}

#[cfg(all(test, feature = "aws"))]
mod tests {
    use super::*;

    #[test]
    fn classifies_with_the_sdk_lists() {
        for code in [
            "ThrottlingException",
            "PriorRequestNotComplete",
            "LimitExceededException",
            "BandwidthLimitExceeded",
            "TransactionInProgressException",
            "EC2ThrottledException",
        ] {
            assert_eq!(
                classify(Some(code), None, 400),
                CallErrorKind::Throttled,
                "{code}"
            );
        }
        assert_eq!(
            classify(Some("RequestTimeout"), None, 400),
            CallErrorKind::Transient
        );
        assert_eq!(
            classify(Some("AccessDeniedException"), None, 400),
            CallErrorKind::Denied
        );
        assert_eq!(
            classify(Some("InternalServerError"), None, 500),
            CallErrorKind::Transient
        );
        assert_eq!(
            classify(Some("ValidationException"), None, 400),
            CallErrorKind::Fatal
        );
        assert_eq!(
            classify(Some("ParameterNotFound"), None, 400),
            CallErrorKind::NotFound
        );
        assert_eq!(
            classify(
                Some("SomethingModeled"),
                Some(aws_smithy_types::retry::ErrorKind::ServerError),
                400
            ),
            CallErrorKind::Transient
        );
    }

    #[test]
    fn a_4xx_whose_body_is_not_an_aws_error_is_final() {
        use aws_smithy_runtime_api::client::result::SdkError;
        use aws_smithy_runtime_api::http::{Response, StatusCode};
        use aws_smithy_types::body::SdkBody;
        type Err = aws_smithy_types::error::ErrorMetadata;
        let answer = |status: u16| {
            let raw = Response::new(
                StatusCode::try_from(status).unwrap(),
                SdkBody::from("<html>Forbidden</html>"),
            );
            let err: SdkError<Err, Response> = SdkError::response_error("not JSON", raw);
            CallError::from_sdk("GetParameters", err)
        };
        assert_eq!(answer(403).kind(), CallErrorKind::Fatal);
        assert!(answer(403)
            .to_string()
            .contains("HTTP 403 with a body that is not an AWS error"));
        assert_eq!(answer(400).kind(), CallErrorKind::Fatal);
        assert_eq!(answer(502).kind(), CallErrorKind::Transient);
        // Neither the body nor the parser's message (which may quote the body) is shown.
        for status in [403, 502] {
            let text = answer(status).to_string();
            assert!(!text.contains("html") && !text.contains("not JSON"), "{text}");
        }
    }

    #[test]
    fn a_send_failure_keeps_its_cause_out_of_display() {
        use aws_smithy_runtime_api::client::result::{ConnectorError, SdkError};
        use aws_smithy_runtime_api::http::Response;
        type Err = aws_smithy_types::error::ErrorMetadata;
        let sts = "User: arn:aws:sts::123456789012:assumed-role/fn-role/fn is not authorized to perform: sts:AssumeRole";
        let err: SdkError<Err, Response> =
            SdkError::dispatch_failure(ConnectorError::other(sts.into(), None));
        let call = CallError::from_sdk("GetParameters", err);
        assert_eq!(call.kind(), CallErrorKind::Transient);
        assert!(!call.to_string().contains("123456789012"), "{call}");
        assert!(
            call.aws_message()
                .unwrap_or_default()
                .contains("assumed-role/fn-role"),
            "{call:?}"
        );
    }

    #[test]
    fn a_4xx_without_an_aws_body_is_final() {
        // Without an AWS code a 403 is no IAM denial (a bad signature, a firewall): final all the same.
        assert_eq!(classify(None, None, 403), CallErrorKind::Fatal);
        assert_eq!(
            classify(Some("InvalidSignatureException"), None, 403),
            CallErrorKind::Fatal
        );
        assert_eq!(
            classify(Some("AccessDeniedException"), None, 400),
            CallErrorKind::Denied
        );
        assert_eq!(classify(None, None, 404), CallErrorKind::Fatal);
        assert_eq!(classify(None, None, 400), CallErrorKind::Fatal);
        assert_eq!(classify(None, None, 429), CallErrorKind::Throttled);
        assert_eq!(classify(None, None, 503), CallErrorKind::Transient);
    }
}
