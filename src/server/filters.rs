//! `POST /v1/filters/reload`: re-read the config file's filters and scripts
//! and swap them in, all or none (see `crate::reload`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error;
use crate::reload::ReloadError;
use crate::state::AppState;

/// `200 {"reloaded": true, "filters": [...], "chain": [...]}` (with
/// `not_applied` and `warning` when the file's backends, server or spool
/// differ from the running ones); `400 {"error": "file:line:column: ..."}`
/// when anything fails to read or compile; `409` without a config file.
#[utoipa::path(post, path = "/v1/filters/reload", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "The new filters run", body = super::schema::Reloaded),
        (status = 400, description = "The file or a script does not read or compile (file:line:column); the running filters stay",
            body = super::schema::Reloaded),
        (status = 401, description = "Bad or missing token", body = super::schema::ErrorBody),
        (status = 409, description = "Running on the embedded default: no file to read", body = super::schema::ErrorBody),
    ))]
pub async fn reload(State(state): State<Arc<AppState>>) -> Response {
    match state.reloader.reload(&state.pipeline).await {
        Ok(r) => {
            let chain: Vec<_> = r
                .chain
                .iter()
                .map(|(name, priority, what)| json!({"name": name, "priority": priority, "kind": what}))
                .collect();
            let mut body = json!({"reloaded": true, "filters": r.filters, "chain": chain});
            if let Some(warning) = r.warning() {
                body["not_applied"] = json!(r.not_applied);
                body["warning"] = json!(warning);
            }
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(e @ ReloadError::NoFile) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ ReloadError::Config(_)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"reloaded": false, "error": e.to_string()})),
        )
            .into_response(),
    }
}
