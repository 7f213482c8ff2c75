//! Turning AWS errors into delivery errors: retry, or dead-letter at once,
//! as the transport's one status policy ([`Outcome`]) says.
//!
//! The rule: what the service may accept later is retryable — throttling,
//! the statuses every backend retries (408, 429, 5xx, ...), transport
//! failures and timeouts, expired credentials (they are
//! refreshed), and any entry of a batch that SNS itself blames on its side
//! (`SenderFault=false`). What no retry can fix goes to dead letters with
//! the AWS error code and message: invalid parameters, a missing topic
//! (the message names the ARN, so the operator knows what to create),
//! authorization and KMS configuration errors.

use std::time::Duration;

use aws_sdk_sns::config::http::HttpResponse;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use event_pusher_core::DeliveryError;

use crate::transport::Outcome;

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

/// Most bytes of an error text (SNS's message, an SDK error chain) kept in
/// a delivery error: these end up in logs and dead letters, and the SDK's
/// full chain (e.g. every credential provider's failure, IMDS included) runs
/// to kilobytes.
pub(crate) const MAX_ERROR_TEXT: usize = 400;

/// `text` cut to [`MAX_ERROR_TEXT`] bytes at a character boundary.
pub(crate) fn bounded(text: &str) -> String {
    if text.len() <= MAX_ERROR_TEXT {
        return text.to_owned();
    }
    let mut cut = MAX_ERROR_TEXT;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// An error in one short line: what failed, and its root cause (the last
/// source in the chain), bounded. The layers between say little to an
/// operator and make the text long.
pub(crate) fn brief(err: &(dyn std::error::Error + 'static)) -> String {
    let mut root = err;
    while let Some(next) = root.source() {
        root = next;
    }
    let (top, cause) = (one_line(&err.to_string()), one_line(&root.to_string()));
    if std::ptr::addr_eq(root, err) || top.contains(&cause) {
        bounded(&top)
    } else {
        bounded(&format!("{top}: {cause}"))
    }
}

/// Multi-line error texts (the credential chain lists one provider per
/// line) joined into one log-friendly line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
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
    let message = bounded(message.trim());
    let text = match code {
        "NotFound" | "NotFoundException" => {
            format!(
                "SNS topic {topic_arn} does not exist ({code}: {message}); create it or fix the topic in the config"
            )
        }
        _ if message.is_empty() => format!("SNS rejected the publish to {topic_arn}: {code}"),
        _ => format!("SNS rejected the publish to {topic_arn}: {code}: {message}"),
    };
    let outcome = if RETRYABLE_CODES.contains(&code)
        // SNS says the failure was its own: worth another try.
        || sender_fault == Some(false)
    {
        Outcome::Retry
    } else if status == 0 {
        // A batch entry blamed on the sender, with a code no retry fixes.
        Outcome::Permanent
    } else {
        Outcome::of_status(status)
    };
    let mut err = outcome.error(text);
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
    SdkError<E, HttpResponse>: std::error::Error + 'static,
{
    match &err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let e = se.err();
            let code = e.code().unwrap_or("UnknownError");
            classify(topic_arn, code, e.message().unwrap_or(""), status, None)
        }
        SdkError::TimeoutError(_) => Outcome::Retry.error(format!("publish to SNS topic {topic_arn} timed out")),
        // Connection refused or reset, DNS, TLS, and credentials that could
        // not be loaded right now (identity resolution fails at this stage).
        SdkError::DispatchFailure(_) => {
            Outcome::Retry.error(format!("cannot reach SNS for topic {topic_arn}: {}", brief(&err)))
        }
        // An answer that is not SNS's (a proxy's error page, a cut body).
        SdkError::ResponseError(r) => Outcome::Retry
            .error(format!(
                "unreadable answer from SNS for topic {topic_arn}: {}",
                brief(&err)
            ))
            .with_status(r.raw().status().as_u16()),
        // The request could not even be built: it will not build next time.
        _ => Outcome::Permanent.error(format!(
            "cannot build the SNS request for topic {topic_arn}: {}",
            brief(&err)
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
            ("RequestTimeout", 408),
            ("Whatever", 408),
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
        let long = classify(ARN, "InvalidParameter", &"é".repeat(5000), 400, None);
        assert!(long.message.len() < MAX_ERROR_TEXT + 200, "{}", long.message.len());
        assert!(nf.message.contains("does not exist"), "{}", nf.message);
    }

    #[test]
    fn brief_keeps_the_top_and_the_root_cause_only() {
        #[derive(Debug)]
        struct Layer(&'static str, Option<Box<Layer>>);
        impl std::fmt::Display for Layer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|l| l as _)
            }
        }
        let chain = Layer(
            "dispatch failure",
            Some(Box::new(Layer(
                "middle",
                Some(Box::new(Layer("connection refused", None))),
            ))),
        );
        assert_eq!(brief(&chain), "dispatch failure: connection refused");
        assert_eq!(brief(&Layer("alone", None)), "alone");
        assert_eq!(
            brief(&Layer("chain:\n  Env: unset\n  Imds: timeout\n", None)),
            "chain:; Env: unset; Imds: timeout"
        );
        let huge = "x".repeat(10_000);
        let leaked: &'static str = Box::leak(huge.into_boxed_str());
        assert!(brief(&Layer(leaked, None)).len() <= MAX_ERROR_TEXT + 3);
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
