//! `POST /v1/events`: hook calls in, `202` once every event is in the spool.
//!
//! This handler only maps HTTP onto [`Pipeline::accept`]: it reads the body
//! in full (up to `max_body_bytes`, within `body_timeout_ms`), picks the framing from the content
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
use event_pusher_core::hook::{parse_body, Framing};
use event_pusher_core::spool::SpoolError;
use event_pusher_core::{Accepted, IngestError};
use serde_json::json;

use super::body::read_bounded;
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
    let bytes = match read_bounded(
        headers,
        body,
        state.max_body_bytes,
        "server.max_body_bytes",
        state.body_timeout,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    // Media types are case-insensitive (RFC 9110 §8.3.1).
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let framing = match content_type
        .as_deref()
        .and_then(|ct| ct.split(';').next())
        .map(str::trim)
    {
        Some("application/x-ndjson" | "application/jsonl" | "application/jsonlines") => Framing::NdJson,
        _ => Framing::Json,
    };
    let calls = match parse_body(&bytes, framing) {
        Ok(c) => c,
        Err(e) => return bad_request(&e.message, e.index),
    };

    match state.pipeline.accept(&calls).await {
        Ok(Accepted { ids, stopped }) => {
            state
                .metrics
                .events_accepted
                .fetch_add(ids.len() as u64, Ordering::Relaxed);
            state.metrics.events_stopped.fetch_add(stopped, Ordering::Relaxed);
            (StatusCode::ACCEPTED, Json(json!({"accepted": ids.len(), "ids": ids}))).into_response()
        }
        Err(IngestError::Invalid { message, index }) => bad_request(&message, Some(index)),
        Err(IngestError::Spool(SpoolError::Full(why))) => unavailable(&why, 1),
        Err(IngestError::Spool(e)) => {
            tracing::error!(error = %e, "ingest refused: spool write failed");
            unavailable(&e.to_string(), 5)
        }
    }
}

fn bad_request(message: &str, index: Option<usize>) -> Response {
    let mut body = json!({"error": message});
    if let Some(i) = index {
        body["index"] = json!(i);
    }
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn unavailable(why: &str, retry_after_secs: u64) -> Response {
    let mut resp = error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not accepted, try again later: {why}"),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    resp
}
