//! `POST /v1/events`: hook calls in, `202` once every event is in the spool.
//!
//! This handler only maps HTTP onto [`Pipeline::accept`]: it reads the body
//! in full (up to `max_body_bytes`), picks the framing from the content
//! type, and turns the outcome into a status. Translation, the chain and the
//! all-or-nothing spool append are the pipeline's.
//!
//! [`Pipeline::accept`]: event_pusher_core::Pipeline::accept

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use event_pusher_core::hook::{parse_body, Framing};
use event_pusher_core::spool::SpoolError;
use event_pusher_core::{Accepted, IngestError};
use serde_json::json;

use super::error;
use crate::state::AppState;

pub async fn post_events(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let resp = handle(&state, &headers, body).await;
    state.metrics.request(resp.status().as_u16());
    resp
}

async fn handle(state: &AppState, headers: &HeaderMap, body: Body) -> Response {
    if !state.accepting.load(Ordering::Acquire) {
        return unavailable("shutting down", 5);
    }
    let bytes = match read_body(state, headers, body).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let framing = match media_type(headers).as_deref() {
        Some("application/x-ndjson" | "application/jsonl" | "application/jsonlines") => Framing::NdJson,
        _ => Framing::Json,
    };
    let calls = match parse_body(&bytes, framing) {
        Ok(c) => c,
        Err(e) => return bad_request(&e.message, e.index),
    };

    match state.pipeline.accept(&calls).await {
        Ok(Accepted { ids, stopped }) => {
            state.metrics.accepted(ids.len(), stopped);
            (StatusCode::ACCEPTED, Json(json!({"accepted": ids.len(), "ids": ids}))).into_response()
        }
        Err(IngestError::Invalid { message, index }) => bad_request(&message, Some(index)),
        Err(IngestError::Spool(e)) => spool_refused(e),
    }
}

/// The whole body, up to `server.max_body_bytes`; the answer to give
/// instead when it is larger (413) or the connection breaks (400).
pub(super) async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let limit = state.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        // to_bytes fails either on the limit or on a broken connection.
        Err(e) if is_length_limit(&e) => Err(too_large(limit)),
        Err(e) => Err(error(StatusCode::BAD_REQUEST, format!("cannot read request body: {e}"))),
    }
}

/// The request's media type without parameters, lower-case (media types
/// are case-insensitive, RFC 9110 §8.3.1).
pub(super) fn media_type(headers: &HeaderMap) -> Option<String> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(content_type.split(';').next()?.trim().to_ascii_lowercase())
}

/// 503 with `Retry-After` when the spool refused or failed the write.
pub(super) fn spool_refused(e: SpoolError) -> Response {
    match e {
        SpoolError::Full(why) => unavailable(&why, 1),
        e => {
            tracing::error!(error = %e, "ingest refused: spool write failed");
            unavailable(&e.to_string(), 5)
        }
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

fn bad_request(message: &str, index: Option<usize>) -> Response {
    let mut body = json!({"error": message});
    if let Some(i) = index {
        body["index"] = json!(i);
    }
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn too_large(limit: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than server.max_body_bytes ({limit} bytes)"),
    )
}

pub(super) fn unavailable(why: &str, retry_after_secs: u64) -> Response {
    let mut resp = error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not accepted, try again later: {why}"),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    resp
}
