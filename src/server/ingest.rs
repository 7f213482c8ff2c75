//! `POST /v1/events`: hook calls in, `202` once every event is in the spool.
//!
//! This handler only maps HTTP onto [`Pipeline::accept`]: it reads the body
//! in full (up to `max_body_bytes`, within `body_timeout_ms`), picks the framing from the content
//! type, and turns the outcome into a status. Translation, the chain and the
//! all-or-nothing spool append are the pipeline's. An `Idempotency-Key`
//! goes to [`Pipeline::accept_keyed`]: a retry gets the first answer with
//! `Idempotent-Replayed: true`, other content under the key gets 422.
//!
//! [`Pipeline::accept`]: event_pusher_core::Pipeline::accept
//! [`Pipeline::accept_keyed`]: event_pusher_core::Pipeline::accept_keyed

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use event_pusher_core::hook::{parse_calls, Framing, HookInput};
use event_pusher_core::spool::SpoolError;
use event_pusher_core::{Accepted, IngestError, KeyedOutcome};
use serde_json::json;

use super::body::read_bounded;
use super::error;
use crate::state::AppState;

#[utoipa::path(post, path = "/v1/events", tag = "ingest",
    description = "One hook call or a JSON array of them (`application/json`), or one per line (`application/x-ndjson`). \
An `Idempotency-Key` header makes a retry answer the first 202 again.",
    request_body(content = super::schema::IngestBody, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 printable ASCII characters")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Every event is fsync'd in the spool", body = super::schema::Accepted,
            headers(("Idempotent-Replayed" = String, description = "`true` when this answers a retry"))),
        (status = 400, description = "An item is invalid (index names it): nothing was accepted", body = super::schema::ErrorBody),
        (status = 401, description = "Bad or missing token", body = super::schema::ErrorBody),
        (status = 408, description = "Body not complete within server.body_timeout_ms", body = super::schema::ErrorBody),
        (status = 413, description = "Body over server.max_body_bytes", body = super::schema::ErrorBody),
        (status = 422, description = "Idempotency-Key reused with another body", body = super::schema::ErrorBody),
        (status = 503, description = "A queue or the spool is full, or the spool cannot be written",
            body = super::schema::ErrorBody, headers(("Retry-After" = String, description = "Seconds"))),
    ))]
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
    let calls = match parse_calls(&bytes, framing) {
        Ok(c) => c,
        Err(e) => return bad_request(&e.problem.to_string(), e.index),
    };

    let key = match idempotency_key(headers) {
        Ok(k) => k,
        Err(resp) => return *resp,
    };
    let outcome = match accept(state, &calls, key).await {
        // A hook command (`push_enable`, ...) reads fields the typed reader
        // skips: rare, so only then is the body read again as JSON values.
        Err(IngestError::CommandNeedsJson { .. }) => match event_pusher_core::hook::parse_body(&bytes, framing) {
            Ok(values) => accept(state, &values, key).await,
            Err(e) => return bad_request(&e.problem.to_string(), e.index),
        },
        other => other,
    };
    answer(state, outcome, key)
}

async fn accept<C: HookInput>(state: &AppState, calls: &[C], key: Option<&str>) -> Result<KeyedOutcome, IngestError> {
    match key {
        None => state.pipeline.accept(calls).await.map(KeyedOutcome::Stored),
        Some(key) => state.pipeline.accept_keyed(calls, key).await,
    }
}

/// The status and body for what the pipeline did.
fn answer(state: &AppState, outcome: Result<KeyedOutcome, IngestError>, key: Option<&str>) -> Response {
    match outcome {
        Ok(KeyedOutcome::Stored(a)) => {
            if let Some(r) = state.engine.reporter_ref() {
                r.ingest_accepted();
            }
            state.metrics.accepted(a.ids.len(), a.stopped);
            accepted(&a)
        }
        Ok(KeyedOutcome::Replayed(a)) => {
            let mut resp = accepted(&a);
            resp.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            resp
        }
        Ok(KeyedOutcome::Conflict) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "Idempotency-Key \"{}\" was already used for a request with different content",
                key.unwrap_or_default()
            ),
        ),
        Err(IngestError::Invalid { index, source }) => bad_request(&source.to_string(), Some(index)),
        Err(IngestError::CommandNeedsJson { index }) => bad_request("hook command could not be read", Some(index)),
        Err(IngestError::Spool(e)) => {
            if let Some(r) = state.engine.reporter_ref() {
                r.ingest_refused(&e.to_string());
            }
            spool_refused(e)
        }
    }
}

/// The whole body, up to `server.max_body_bytes`; the answer to give
/// instead when it is larger (413) or the connection breaks (400).
pub(super) async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    read_bounded(
        headers,
        body,
        state.max_body_bytes,
        "server.max_body_bytes",
        state.body_timeout,
    )
    .await
    .map_err(super::body::BodyError::into_response)
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

/// 202 with the event ids, and the hook commands' reports when the
/// request had any (each kind's under its key: `"push"`).
fn accepted(a: &Accepted) -> Response {
    let mut body = json!({"accepted": a.ids.len(), "ids": a.ids});
    for report in &a.reports {
        match body.get_mut(report.key) {
            Some(serde_json::Value::Array(list)) => list.push(report.report.clone()),
            _ => body[report.key] = serde_json::Value::Array(vec![report.report.clone()]),
        }
    }
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// Longest `Idempotency-Key` taken; keys are stored, so they are bounded.
const MAX_KEY_LEN: usize = 255;

/// The request's `Idempotency-Key`: 1 to 255 printable ASCII characters
/// (visible ones and spaces: the IETF draft makes the key a structured-field
/// string, which may hold spaces), surrounding spaces trimmed.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, Box<Response>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key =
        v.to_str().ok().map(str::trim).filter(|k| {
            !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        });
    match key {
        Some(k) => Ok(Some(k)),
        None => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters (letters, digits, punctuation, spaces)"),
        ))),
    }
}

fn bad_request(message: &str, index: Option<usize>) -> Response {
    let mut body = json!({"error": message});
    if let Some(i) = index {
        body["index"] = json!(i);
    }
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
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
