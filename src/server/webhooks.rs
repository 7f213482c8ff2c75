//! `/v1/webhooks`: webhook subscriptions at runtime (attach, list, change,
//! pause, restart, detach). The work is in `crate::webhooks`; this maps
//! requests and answers (400 naming the field, 404, 409 `already_exists`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error;
use crate::state::AppState;
use crate::webhooks::WebhookError;

/// How long `DELETE ...?drain=true` waits when `timeout_s` is not given.
const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks",
    request_body(content = super::schema::AttachRequest, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Attached; `secret` is shown only now", body = crate::webhooks::WebhookView,
            links(
                ("GetWebhook" = (operation_id = "get_webhook", parameters(("id" = "$response.body#/id")))),
                ("PatchWebhook" = (operation_id = "patch_webhook", parameters(("id" = "$response.body#/id")))),
                ("PauseWebhook" = (operation_id = "pause_webhook", parameters(("id" = "$response.body#/id")))),
                ("RestartWebhook" = (operation_id = "restart_webhook", parameters(("id" = "$response.body#/id")))),
                ("DetachWebhook" = (operation_id = "detach_webhook", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 400, description = "A bad field (field names it)", body = super::schema::ErrorBody),
        (status = 401, description = "Bad or missing token", body = super::schema::ErrorBody),
        (status = 408, description = "Body not complete within server.body_timeout_ms", body = super::schema::ErrorBody),
        (status = 409, description = "already_exists: the id is taken", body = super::schema::ErrorBody),
        (status = 413, description = "Body over server.max_body_bytes", body = super::schema::ErrorBody),
        (status = 503, description = "The spool could not store it", body = super::schema::ErrorBody),
    ))]
pub async fn attach(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let body = match json_body(&state, &headers, body).await {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    match state.webhooks.attach(&state.engine, &body).await {
        Ok(view) => (StatusCode::CREATED, Json(view)).into_response(),
        Err(e) => failure(e),
    }
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every subscription (never a secret)", body = Vec<crate::webhooks::WebhookView>),
        (status = 401, description = "Bad or missing token", body = super::schema::ErrorBody),
    ))]
pub async fn list(State(state): State<Arc<AppState>>) -> Response {
    let views = state.webhooks.list(&state.engine).await;
    let totals = state.cluster.as_ref().map(|c| c.subscription_totals());
    let out: Vec<serde_json::Value> = views.iter().map(|v| with_cluster(v, totals.as_ref())).collect();
    Json(out).into_response()
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "get_webhook", params(("id" = String, Path, description = "The subscription's id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The subscription (never its secret)", body = crate::webhooks::WebhookView),
        (status = 401, description = "Bad or missing token", body = super::schema::ErrorBody),
        (status = 404, description = "No such subscription", body = super::schema::ErrorBody),
    ))]
pub async fn get_one(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match state.webhooks.get(&state.engine, &id).await {
        Ok(view) => {
            let totals = state.cluster.as_ref().map(|c| c.subscription_totals());
            Json(with_cluster(&view, totals.as_ref())).into_response()
        }
        Err(e) => failure(e),
    }
}

/// A subscription's view; with a cluster store, plus `"cluster"`: its
/// counters summed over the sidecars that report to the store.
fn with_cluster(
    view: &crate::webhooks::WebhookView,
    totals: Option<&std::collections::BTreeMap<String, event_pusher_cluster::SubscriptionCounters>>,
) -> serde_json::Value {
    let mut v = serde_json::to_value(view).unwrap_or(serde_json::Value::Null);
    if let Some(totals) = totals {
        let c = totals.get(&view.id).cloned().unwrap_or_default();
        v["cluster"] =
            json!({"queued": c.queued, "delivered": c.delivered, "failed": c.failed, "dead_letters": c.dead_letters});
    }
    v
}

#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "patch_webhook", params(("id" = String, Path, description = "The subscription's id")),
    request_body(content = super::schema::PatchRequest, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Changed; with `rotate_secret`, the new `secret`", body = crate::webhooks::WebhookView),
        (status = 400, description = "A bad field (field names it)", body = super::schema::ErrorBody),
        (status = 401, description = "Bad or missing token", body = super::schema::ErrorBody),
        (status = 404, description = "No such subscription", body = super::schema::ErrorBody),
        (status = 408, description = "Body not complete within server.body_timeout_ms", body = super::schema::ErrorBody),
        (status = 413, description = "Body over server.max_body_bytes", body = super::schema::ErrorBody),
        (status = 503, description = "The spool could not store it", body = super::schema::ErrorBody),
    ))]
pub async fn patch(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match json_body(&state, &headers, body).await {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    match state.webhooks.patch(&state.engine, &id, &body).await {
        Ok(view) => Json(view).into_response(),
        Err(e) => failure(e),
    }
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/pause", tag = "webhooks", operation_id = "pause_webhook", params(("id" = String, Path, description = "The subscription's id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "Paused: keeps queueing", body = crate::webhooks::WebhookView),
        (status = 401, description = "Bad or missing token", body = super::schema::ErrorBody),
        (status = 404, description = "No such subscription", body = super::schema::ErrorBody),
        (status = 503, description = "The spool could not store it", body = super::schema::ErrorBody),
    ))]
pub async fn pause(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    set_paused(&state, &id, true).await
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/restart", tag = "webhooks", operation_id = "restart_webhook", params(("id" = String, Path, description = "The subscription's id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "Sending again, backlog first", body = crate::webhooks::WebhookView),
        (status = 401, description = "Bad or missing token", body = super::schema::ErrorBody),
        (status = 404, description = "No such subscription", body = super::schema::ErrorBody),
        (status = 503, description = "The spool could not store it", body = super::schema::ErrorBody),
    ))]
pub async fn restart(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    set_paused(&state, &id, false).await
}

async fn set_paused(state: &AppState, id: &str, paused: bool) -> Response {
    match state.webhooks.set_paused(&state.engine, id, paused).await {
        Ok(view) => Json(view).into_response(),
        Err(e) => failure(e),
    }
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[derive(Deserialize)]
pub struct DetachQuery {
    drain: Option<String>,
    timeout_s: Option<String>,
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "detach_webhook",
    params(("id" = String, Path, description = "The subscription's id"), DetachQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Detached; `discarded` counts the queued events dropped", body = crate::webhooks::Detached),
        (status = 400, description = "Bad drain or timeout_s", body = super::schema::ErrorBody),
        (status = 401, description = "Bad or missing token", body = super::schema::ErrorBody),
        (status = 404, description = "No such subscription", body = super::schema::ErrorBody),
        (status = 503, description = "The spool could not store it", body = super::schema::ErrorBody),
        (status = 504, description = "drain=true and the queue did not empty in time: nothing was removed",
            body = super::schema::DrainTimeout),
    ))]
pub async fn detach(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<DetachQuery>,
) -> Response {
    let drain = match q.drain.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(other) => return field_error("drain", format!("must be true or false, not \"{other}\"")),
    };
    let timeout = match q.timeout_s.as_deref().map(str::parse::<u64>) {
        None => DEFAULT_DRAIN,
        Some(Ok(s)) => Duration::from_secs(s),
        Some(Err(_)) => return field_error("timeout_s", "must be a whole number of seconds"),
    };
    let drain = drain.then_some(timeout);
    match state.webhooks.detach(&state.engine, &id, drain).await {
        Ok(done) => Json(done).into_response(),
        Err(e) => failure(e),
    }
}

/// The body as JSON; the error answer otherwise.
async fn json_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Value, Box<Response>> {
    let bytes = super::ingest::read_body(state, headers, body).await.map_err(Box::new)?;
    serde_json::from_slice(&bytes).map_err(|e| Box::new(field_error("body", format!("invalid JSON: {e}"))))
}

/// 400 naming the field: `{"error": "FIELD: why", "field": "FIELD"}`.
fn field_error(field: &str, message: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": format!("{field}: {message}"), "field": field})),
    )
        .into_response()
}

pub(super) fn failure(e: WebhookError) -> Response {
    match e {
        WebhookError::Invalid(f) => field_error(&f.field, f.problem),
        WebhookError::AlreadyExists(id) => {
            (StatusCode::CONFLICT, Json(json!({"error": "already_exists", "id": id}))).into_response()
        }
        WebhookError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        WebhookError::DrainTimeout { queued } => (
            StatusCode::GATEWAY_TIMEOUT,
            Json(json!({"error": e.to_string(), "queued": queued})),
        )
            .into_response(),
        WebhookError::Spool(_) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        WebhookError::Backend(_) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        WebhookError::Shared(e) => super::cluster::refused(e),
    }
}
