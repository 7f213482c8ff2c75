//! What an answer comes to: the one status policy of every backend.
//!
//! - `408`, `409`, `425`, `429` and `5xx` are worth retrying (the peer was
//!   slow, busy, or in a state that passes), and so is a request that got
//!   no answer at all (refused, reset, timed out);
//! - every other non-2xx is permanent: the same request will be refused
//!   again (`400`, `401`, `403`, `404`, `410`, `413`, `422`, ...; and `3xx`,
//!   since redirects are not followed), so the event goes to dead letters
//!   at once.
//! - `Retry-After` (delta-seconds or an HTTP-date) is passed on as the
//!   least wait before the next attempt.
//!
//! Backends with answers of their own (a gone device, a rejected
//! credential) look at a [`Refusal`] first and hand the rest to
//! [`Refusal::into_error`]; SNS maps its SDK errors onto [`Outcome`] too.

use std::time::{Duration, SystemTime};

use event_pusher_core::DeliveryError;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::response::{drain_success, error_excerpt};

/// Whether a failed attempt is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Later, with backoff (and after `Retry-After`, if the peer gave one).
    Retry,
    /// Never: straight to dead letters.
    Permanent,
}

impl Outcome {
    /// The policy for a non-2xx HTTP status.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            408 | 409 | 425 | 429 | 500..=599 => Outcome::Retry,
            _ => Outcome::Permanent,
        }
    }

    /// A delivery error with this outcome.
    pub fn error(self, message: impl Into<String>) -> DeliveryError {
        match self {
            Outcome::Retry => DeliveryError::retryable(message),
            Outcome::Permanent => DeliveryError::permanent(message),
        }
    }
}

/// A non-2xx answer, its body read with a bound.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// The start of the body (peers explain refusals in it).
    pub body: String,
}

impl Refusal {
    /// Read a non-2xx answer: its status, `Retry-After` and body excerpt.
    pub async fn read(resp: reqwest::Response) -> Refusal {
        Refusal {
            status: resp.status().as_u16(),
            retry_after: retry_after(resp.headers()),
            body: error_excerpt(resp).await,
        }
    }

    pub fn outcome(&self) -> Outcome {
        Outcome::of_status(self.status)
    }

    /// The delivery error for this refusal, by the status policy, carrying
    /// the status and `Retry-After`.
    pub fn into_error(self, message: impl Into<String>) -> DeliveryError {
        let mut err = self.outcome().error(message).with_status(self.status);
        if let Some(wait) = self.retry_after {
            err = err.with_retry_after(wait);
        }
        err
    }

    /// `HTTP 503` or `HTTP 503: <body excerpt>`.
    pub fn describe(&self) -> String {
        match self.body.trim() {
            "" => format!("HTTP {}", self.status),
            body => format!("HTTP {}: {body}", self.status),
        }
    }
}

/// Send a request: `Ok(Ok(()))` on 2xx (the body drained so the connection
/// is reused), `Ok(Err(refusal))` on any other status, a retryable error
/// when the request got no answer.
pub async fn send(request: reqwest::RequestBuilder) -> Result<Result<(), Refusal>, DeliveryError> {
    let resp = request.send().await.map_err(transport_error)?;
    let status = resp.status();
    if status.is_success() {
        drain_success(resp).await;
        return Ok(Ok(()));
    }
    Ok(Err(Refusal::read(resp).await))
}

/// A request that got no answer: always worth retrying. The message keeps
/// the whole cause chain (reqwest's own Display hides "connection refused").
pub fn transport_error(e: reqwest::Error) -> DeliveryError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut msg = format!("{what}: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    Outcome::Retry.error(msg)
}

/// The `Retry-After` of an answer, if it has a readable one.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT` (a
/// date in the past is no wait).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_statuses_retry() {
        for s in [408, 409, 425, 429, 500, 502, 503, 504, 599] {
            assert_eq!(Outcome::of_status(s), Outcome::Retry, "{s}");
        }
        for s in [301, 302, 400, 401, 403, 404, 405, 410, 413, 415, 422] {
            assert_eq!(Outcome::of_status(s), Outcome::Permanent, "{s}");
        }
    }

    #[test]
    fn a_refusal_carries_status_and_wait() {
        let r = Refusal {
            status: 429,
            retry_after: Some(Duration::from_secs(3)),
            body: " slow down ".into(),
        };
        assert_eq!(r.describe(), "HTTP 429: slow down");
        let e = r.into_error("x");
        assert!(e.retryable && e.status == Some(429) && e.retry_after == Some(Duration::from_secs(3)));
        let e = Refusal {
            status: 410,
            retry_after: None,
            body: String::new(),
        };
        assert_eq!(e.describe(), "HTTP 410");
        assert!(!e.into_error("gone").retryable);
    }

    #[test]
    fn parses_retry_after() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let d = parse_retry_after(&later).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30), "{d:?}");
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
