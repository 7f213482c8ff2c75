//! Bearer-token check for the ingest and admin endpoints.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use event_pusher_core::token::constant_time_eq;

use crate::state::AppState;

pub async fn require_token(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(expected) = state.token.as_deref() else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let problem = match given {
        None => Some("missing bearer token: send `Authorization: Bearer <token>`"),
        Some(t) if !constant_time_eq(t.trim().as_bytes(), expected.as_bytes()) => Some("invalid bearer token"),
        Some(_) => None,
    };
    match problem {
        None => next.run(req).await,
        Some(msg) => {
            if is_ingest(req.uri().path()) {
                state.metrics.request(401);
            }
            let mut resp = super::error(StatusCode::UNAUTHORIZED, msg);
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            resp.into_response()
        }
    }
}

/// The token of a `Bearer` credential. The scheme is case-insensitive
/// (RFC 9110 §11.1): `Bearer`, `bearer` and `BEARER` all count.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// Whether `path` is an ingest endpoint, whose refusals count in the ingest
/// metrics.
fn is_ingest(path: &str) -> bool {
    path == "/v1/events" || path == "/v1/mongooseim/http" || path.starts_with("/v1/mongooseim/http/")
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_scheme_is_case_insensitive() {
        for v in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR s3cret"] {
            assert_eq!(bearer_token(v), Some("s3cret"), "{v}");
        }
        assert_eq!(bearer_token("Basic s3cret"), None);
        assert_eq!(bearer_token("Bearers3cret"), None);
    }
}
