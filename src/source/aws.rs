//! What every AWS source shares: clients with the SDK's retries off, and AWS SDK errors classified
//! into [`CallError`]s with the SDK's own lists of throttling and transient error codes.

use crate::error::{CallError, CallErrorKind, Transport};

/// A client of AWS SDK crate `$sdk` made from an `SdkConfig` (`config`) or from a client
/// (`client`), with the SDK's own retries off: retries are owned by
/// [`CallContext`](crate::CallContext), so that attempts are never multiplied.
macro_rules! client_without_retries {
    ($sdk:ident, config $config:expr) => {
        $sdk::Client::from_conf(
            $sdk::config::Builder::from($config)
                .retry_config($sdk::config::retry::RetryConfig::disabled())
                .build(),
        )
    };
    ($sdk:ident, client $client:expr, region $region:expr) => {
        $sdk::Client::from_conf(
            $client
                .config()
                .to_builder()
                .region($sdk::config::Region::new($region))
                .retry_config($sdk::config::retry::RetryConfig::disabled())
                .build(),
        )
    };
    ($sdk:ident, client $client:expr) => {
        $sdk::Client::from_conf(
            $client
                .config()
                .to_builder()
                .retry_config($sdk::config::retry::RetryConfig::disabled())
                .build(),
        )
    };
}

/// An SDK call's result, its request id recorded on the current span (the `aws.call` span of
/// [`CallContext::call`](crate::CallContext::call)) and its error classified ([`from_sdk`]).
pub(crate) fn answered<O, E>(
    operation: &str,
    result: Result<
        O,
        aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>,
    >,
) -> Result<O, CallError>
where
    O: aws_types::request_id::RequestId,
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + aws_smithy_types::retry::ProvideErrorKind
        + std::error::Error
        + 'static,
{
    match result {
        Ok(out) => {
            note_request_id(out.request_id());
            Ok(out)
        }
        Err(err) => Err(from_sdk(operation, err)),
    }
}

fn note_request_id(id: Option<&str>) {
    if let Some(id) = id {
        tracing::Span::current().record("aws.request_id", id);
    }
}

/// Classifies an AWS SDK error with the SDK's own lists of throttling and transient error codes
/// (`aws_runtime::retries::classifiers`) and the error's modeled retry kind. A 4xx answer other
/// than 429 (throttled) and 408 (timed out) is final whatever its body (a proxy's or WAF's HTML
/// 403 is not a cut response); 5xx, timeouts and failed sends are transient. Only AWS's error codes make a denial or a "not found": a
/// bare 403 may be a bad signature or a firewall, whose fix is not an IAM grant.
pub(crate) fn from_sdk<E>(
    operation: &str,
    err: aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> CallError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + aws_smithy_types::retry::ProvideErrorKind
        + std::error::Error
        + 'static,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    note_request_id(aws_types::request_id::RequestId::request_id(&err));
    match &err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = aws_smithy_types::error::metadata::ProvideErrorMetadata::code(ctx.err());
            let kind = classify(code, ctx.err().retryable_error_kind(), status);
            let message = aws_smithy_types::error::metadata::ProvideErrorMetadata::message(ctx.err());
            let stale = stale_signature(code, message);
            let err = CallError::with_aws_message(
                kind,
                format!("{operation}: {} (HTTP {status})", code.unwrap_or("unknown error")),
                message.map(str::to_owned),
            );
            if stale {
                err.in_transport(Transport::StaleSignature)
            } else {
                err
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
        SdkError::DispatchFailure(d) if !d.is_user() => {
            let call_err = CallError::with_aws_message(
                CallErrorKind::Transient,
                format!(
                    "{operation}: could not send the request ({})",
                    if d.is_timeout() {
                        "timed out"
                    } else if d.is_io() {
                        "connection failed"
                    } else {
                        "connection or credentials; the log has the cause"
                    }
                ),
                Some(error_chain(&err)),
            );
            // Only a connection that was there and died (reset, broken pipe, closed by the
            // peer): not one refused, unresolved or failing its TLS handshake.
            if !d.is_timeout() && connection_lost(&err) {
                call_err.in_transport(Transport::ConnectionLost)
            } else {
                call_err
            }
        }
        _ => CallError::with_aws_message(
            CallErrorKind::Fatal,
            format!("{operation}: the request could not be made; the log has the cause"),
            Some(error_chain(&err)),
        ),
    }
}

/// Whether an AWS error says the request's signing time is stale or skewed: `Signature
/// expired` (`InvalidSignatureException`, or S3-style `SignatureDoesNotMatch`, with that
/// message), `RequestExpired`, `RequestTimeTooSkewed`.
fn stale_signature(code: Option<&str>, message: Option<&str>) -> bool {
    let expired = message.is_some_and(|m| m.to_ascii_lowercase().contains("signature expired"));
    match code.unwrap_or("") {
        "RequestExpired" | "RequestTimeTooSkewed" => true,
        "InvalidSignatureException" | "SignatureDoesNotMatch" => expired,
        _ => false,
    }
}

/// Whether a failed send's causes say the connection died under it (reset, broken pipe, closed
/// by the peer before the answer).
fn connection_lost(err: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::BrokenPipe
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        if e.to_string()
            .contains("connection closed before message completed")
        {
            return true;
        }
        cur = e.source();
    }
    false
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_or_skewed_signing_time_is_told_from_a_bad_signature() {
        let expired = Some("Signature expired: 20261207T120000Z is now earlier than 20261207T120100Z");
        assert!(stale_signature(Some("InvalidSignatureException"), expired));
        assert!(stale_signature(Some("SignatureDoesNotMatch"), expired));
        assert!(stale_signature(Some("RequestExpired"), None));
        assert!(stale_signature(Some("RequestTimeTooSkewed"), None));
        // A wrong key or a mangled request is no freeze's: not signed again.
        assert!(!stale_signature(
            Some("InvalidSignatureException"),
            Some("The request signature we calculated does not match the signature you provided.")
        ));
        assert!(!stale_signature(Some("AccessDeniedException"), expired));
        assert!(!stale_signature(None, expired));
    }

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
            from_sdk("GetParameters", err)
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
        let call = from_sdk("GetParameters", err);
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
    fn debug_of_an_error_never_prints_what_aws_said() {
        use aws_smithy_runtime_api::client::result::{ConnectorError, SdkError};
        use aws_smithy_runtime_api::http::Response;
        type Err = aws_smithy_types::error::ErrorMetadata;
        let sts = "User: arn:aws:sts::123456789012:assumed-role/fn-role/fn is not authorized";
        let err: SdkError<Err, Response> =
            SdkError::dispatch_failure(ConnectorError::other(sts.into(), None));
        let error = crate::error::Error::Load {
            failures: vec![crate::error::Failure {
                key: "db".into(),
                source: "ssm",
                id: "/db".into(),
                error: crate::error::ItemError::Call(from_sdk("GetParameters", err)),
            }],
        };
        let debug = format!("{error:?}");
        assert!(
            !debug.contains("123456789012") && !debug.contains("fn-role"),
            "{debug}"
        );
        assert!(debug.contains("GetParameters"), "{debug}");
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
