//! Turning AWS errors into delivery errors: retry, or dead-letter at once.
//!
//! The rule: what the service may accept later is retryable — throttling,
//! 5xx, transport failures and timeouts, expired credentials (they are
//! refreshed), and any entry of a batch that SNS itself blames on its side
//! (`SenderFault=false`). What no retry can fix goes to dead letters with
//! the AWS error code and message: invalid parameters, a missing topic
//! (the message names the ARN, so the operator knows what to create),
//! authorization and KMS configuration errors.

use std::time::Duration;

use aws_sdk_sns::config::http::HttpResponse;
use aws_sdk_sns::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use event_pusher_core::DeliveryError;

/// Error codes that mean "not now" rather than "never", whatever the status.
const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "KMSThrottling",
    "KMSThrottlingException",
    "InternalError",
    "InternalErrorException",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
    "PriorRequestNotComplete",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "IDPCommunicationError",
];

/// The least a throttled event waits before its next attempt: SNS sends no
/// `Retry-After`, and retrying a throttled account at once only adds load.
const THROTTLE_WAIT: Duration = Duration::from_secs(1);

fn is_throttling(code: &str) -> bool {
    code.contains("Throttl") || code == "TooManyRequestsException" || code == "RequestLimitExceeded"
}

/// Classify an error code from SNS. `status` is the HTTP status of the
/// answer (0 for a batch entry, which has none); `sender_fault` is what a
/// batch entry says about whose fault it was.
pub(crate) fn classify(
    topic_arn: &str,
    code: &str,
    message: &str,
    status: u16,
    sender_fault: Option<bool>,
) -> DeliveryError {
    let message = message.trim();
    let text = match code {
        "NotFound" | "NotFoundException" => {
            format!(
                "SNS topic {topic_arn} does not exist ({code}: {message}); create it or fix the topic in the config"
            )
        }
        _ if message.is_empty() => format!("SNS rejected the publish to {topic_arn}: {code}"),
        _ => format!("SNS rejected the publish to {topic_arn}: {code}: {message}"),
    };
    let retryable = RETRYABLE_CODES.contains(&code)
        || status >= 500
        || status == 429
        // SNS says the failure was its own: worth another try.
        || sender_fault == Some(false);
    let mut err = if retryable {
        DeliveryError::retryable(text)
    } else {
        DeliveryError::permanent(text)
    };
    if status != 0 {
        err = err.with_status(status);
    }
    if is_throttling(code) {
        err = err.with_retry_after(THROTTLE_WAIT);
    }
    err
}

/// Classify an error from a whole API call.
pub(crate) fn from_sdk<E>(topic_arn: &str, err: SdkError<E, HttpResponse>) -> DeliveryError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let e = se.err();
            let code = e.code().unwrap_or("UnknownError");
            classify(topic_arn, code, e.message().unwrap_or(""), status, None)
        }
        SdkError::TimeoutError(_) => DeliveryError::retryable(format!("publish to SNS topic {topic_arn} timed out")),
        // Connection refused or reset, DNS, TLS, and credentials that could
        // not be loaded right now (identity resolution fails at this stage).
        SdkError::DispatchFailure(_) => DeliveryError::retryable(format!(
            "cannot reach SNS for topic {topic_arn}: {}",
            DisplayErrorContext(&err)
        )),
        // An answer that is not SNS's (a proxy's error page, a cut body).
        SdkError::ResponseError(r) => DeliveryError::retryable(format!(
            "unreadable answer from SNS for topic {topic_arn}: {}",
            DisplayErrorContext(&err)
        ))
        .with_status(r.raw().status().as_u16()),
        // The request could not even be built: it will not build next time.
        _ => DeliveryError::permanent(format!(
            "cannot build the SNS request for topic {topic_arn}: {}",
            DisplayErrorContext(&err)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:sns:eu-west-1:123456789012:t";

    #[test]
    fn throttling_and_server_errors_retry() {
        for (code, status) in [
            ("Throttling", 400),
            ("KMSThrottling", 400),
            ("InternalError", 500),
            ("Whatever", 503),
        ] {
            let e = classify(ARN, code, "m", status, None);
            assert!(e.retryable, "{code}");
            assert_eq!(e.status, Some(status));
        }
        assert_eq!(
            classify(ARN, "Throttling", "", 400, None).retry_after,
            Some(THROTTLE_WAIT)
        );
        assert_eq!(classify(ARN, "InternalError", "", 500, None).retry_after, None);
    }

    #[test]
    fn caller_errors_are_permanent_and_name_code_and_topic() {
        for code in [
            "InvalidParameter",
            "InvalidParameterValue",
            "AuthorizationError",
            "KMSDisabled",
            "NotFound",
        ] {
            let e = classify(ARN, code, "why", 400, None);
            assert!(!e.retryable, "{code}");
            assert!(e.message.contains(code) && e.message.contains(ARN), "{}", e.message);
        }
        let nf = classify(ARN, "NotFound", "Topic does not exist", 404, None);
        assert!(nf.message.contains("does not exist"), "{}", nf.message);
    }

    #[test]
    fn batch_entries_follow_sender_fault() {
        assert!(classify(ARN, "InternalError", "", 0, Some(false)).retryable);
        assert!(classify(ARN, "Odd", "", 0, Some(false)).retryable);
        assert!(!classify(ARN, "InvalidParameter", "", 0, Some(true)).retryable);
        assert!(classify(ARN, "Throttling", "", 0, Some(true)).retryable);
        assert_eq!(classify(ARN, "InvalidParameter", "", 0, Some(true)).status, None);
    }
}
