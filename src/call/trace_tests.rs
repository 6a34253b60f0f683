//! The `aws.call` span of every call: OpenTelemetry's attributes for AWS SDK calls, recorded
//! by a subscriber layer that keeps every span's fields (`test_support::Spans`).

use std::time::{Duration, Instant};

use super::{CallContext, Operation, RetryPolicy};
use crate::error::{CallError, CallErrorKind};
use crate::limiter::QuotaClass;
use crate::test_support::traced;

#[test]
fn an_aws_call_is_one_span_with_opentelemetry_s_attributes_and_its_attempts() {
    const GET: Operation = Operation::new("GetParameters").with_quota(QuotaClass::SsmGet);
    let ((), spans) = traced(async {
        let calls = CallContext::standalone(RetryPolicy::default(), Instant::now() + Duration::from_secs(5));
        let mut n = 0;
        calls
            .call(GET, || {
                n += 1;
                let first = n == 1;
                async move {
                    if first {
                        return Err(CallError::new(
                            CallErrorKind::Throttled,
                            "GetParameters: ThrottlingException (HTTP 400)",
                        ));
                    }
                    Ok(())
                }
            })
            .await
            .unwrap();
    });
    let calls = spans.named("aws.call");
    assert_eq!(calls.len(), 1, "{calls:?}");
    let span = &calls[0];
    for (field, value) in [
        ("otel.name", "SSM.GetParameters"),
        ("otel.kind", "client"),
        ("rpc.system", "aws-api"),
        ("rpc.service", "SSM"),
        ("rpc.method", "GetParameters"),
        ("aws.attempts", "2"),
        ("aws.throttled", "true"),
        ("otel.status_code", "OK"),
    ] {
        assert_eq!(
            span.get(field).map(String::as_str),
            Some(value),
            "{field}: {span:?}"
        );
    }
}

#[test]
fn a_failed_call_s_span_says_error_and_its_class() {
    const DECRYPT: Operation = Operation::new("Decrypt").with_quota(QuotaClass::KmsDecrypt);
    let (_, spans) = traced(async {
        let calls = CallContext::standalone(RetryPolicy::default(), Instant::now() + Duration::from_secs(5));
        calls
            .call(DECRYPT, || async {
                Err::<(), _>(CallError::new(
                    CallErrorKind::Denied,
                    "Decrypt: AccessDeniedException (HTTP 400)",
                ))
            })
            .await
    });
    let span = &spans.named("aws.call")[0];
    assert_eq!(span["rpc.service"], "KMS");
    assert_eq!(span["otel.status_code"], "ERROR");
    assert_eq!(span["error.type"], "denied");
    assert_eq!(span["aws.attempts"], "1");
}
