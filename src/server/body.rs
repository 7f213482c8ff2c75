//! Reading a request body with both bounds a peer must not escape: a size
//! limit and a deadline for the whole body (a client that declares 100
//! bytes and sends one must not hold its request for ever). Every handler
//! that reads a body goes through here.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;

use super::error;

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// Larger than the limit (declared or sent).
    TooLarge { limit: usize, key: &'static str },
    /// Not all there before the deadline.
    Timeout(Duration),
    /// The connection broke mid-body.
    Broken(String),
}

impl BodyError {
    /// The answer: 413, 408 or 400, naming the setting that applied.
    pub fn into_response(self) -> Response {
        match self {
            BodyError::TooLarge { limit, key } => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {key} ({limit} bytes)"),
            ),
            BodyError::Timeout(t) => error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within server.body_timeout_ms ({} ms)",
                    t.as_millis()
                ),
            ),
            BodyError::Broken(e) => error(StatusCode::BAD_REQUEST, format!("cannot read request body: {e}")),
        }
    }
}

/// Read all of `body`, at most `limit` bytes (`key` names the setting in
/// errors), within `timeout`.
pub async fn read_bounded(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    key: &'static str,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge { limit, key });
    }
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(BodyError::Timeout(timeout)),
        Ok(Ok(b)) => Ok(b),
        // to_bytes fails either on the limit or on a broken connection.
        Ok(Err(e)) if is_length_limit(&e) => Err(BodyError::TooLarge { limit, key }),
        Ok(Err(e)) => Err(BodyError::Broken(e.to_string())),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if s.to_string().contains("length limit exceeded") {
            return true;
        }
        src = s.source();
    }
    false
}
