//! The HTTP listener: ingest (`/v1/events`, MongooseIM's form posts),
//! probes, the admin API and metrics, all on one port.

mod admin;
mod auth;
mod body;
mod cluster;
mod filters;
mod ingest;
pub mod listener;
mod metrics;
mod mongooseim;
mod operations;

pub use operations::window as replay_window;
mod openapi;
#[cfg(feature = "push")]
mod push;
mod schema;
mod ui;
mod webhooks;

use std::sync::Arc;

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;

/// Paths (and everything below them) the sidecar serves itself: a
/// backend's endpoint may not take them.
const RESERVED: [&str; 13] = [
    "/health",
    "/openapi.json",
    "/ready",
    "/metrics",
    "/ui",
    "/v1/events",
    "/v1/backends",
    "/v1/dead-letters",
    "/v1/filters",
    "/v1/webhooks",
    "/v1/push",
    "/v1/cluster",
    "/v1/users",
];

pub fn is_reserved(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    path.is_empty()
        || path == "/v1"
        || path.starts_with("/v1/mongooseim")
        || RESERVED
            .iter()
            .any(|r| path == *r || path.strip_prefix(r).is_some_and(|rest| rest.starts_with('/')))
}

pub fn router(state: Arc<AppState>) -> Router {
    let endpoints: Vec<Router> = state.endpoints.iter().map(|e| e.router()).collect();
    let api = Router::new()
        .route("/v1/events", post(ingest::post_events))
        .route("/v1/backends", get(admin::list_backends))
        .route("/v1/backends/{name}/pause", post(admin::pause))
        .route("/v1/backends/{name}/resume", post(admin::resume))
        .route("/v1/dead-letters", get(admin::list_dead_letters))
        .route("/v1/dead-letters/replay", post(admin::replay))
        .route("/v1/users/{jid}", axum::routing::delete(operations::delete_user))
        .route("/v1/filters/reload", post(filters::reload))
        .route("/v1/cluster", get(cluster::status))
        .route("/v1/webhooks", post(webhooks::attach).get(webhooks::list))
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::get_one).patch(webhooks::patch).delete(webhooks::detach),
        )
        .route("/v1/webhooks/{id}/pause", post(webhooks::pause))
        .route("/v1/webhooks/{id}/restart", post(webhooks::restart))
        .merge(push_routes())
        // MongooseIM appends its handler's `path`: take any path below.
        .route("/v1/mongooseim/http", post(mongooseim::post_form))
        .route("/v1/mongooseim/http/", post(mongooseim::post_form))
        .route("/v1/mongooseim/http/{*path}", post(mongooseim::post_form))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token));
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi::serve))
        .merge(ui::routes(state.cluster.is_some()))
        .merge(api)
        .fallback(not_found)
        // After every route is added: it applies to the routes present.
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    // Backend endpoints keep their own state; paths were checked at start
    // (`runtime::endpoints_of`), so the merge cannot clash.
    endpoints.into_iter().fold(app, Router::merge)
}

/// The push device registry (admin token, like the routes around it).
#[cfg(feature = "push")]
fn push_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/push/devices/{jid}", get(push::list_devices))
        .route(
            "/v1/push/devices/{jid}/{device_id}",
            axum::routing::put(push::put_device).delete(push::delete_device),
        )
}

#[cfg(not(feature = "push"))]
fn push_routes() -> Router<Arc<AppState>> {
    Router::new()
}

#[utoipa::path(get, path = "/health", tag = "probes", security(()),
    responses((status = 200, description = "Alive", body = schema::Probe)))]
async fn health() -> Response {
    (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
}

/// 200 once the spool is open, every backend has started and every source
/// consumes. Backends and sources are named `KIND.NAME`: names are unique
/// per kind only.
#[utoipa::path(get, path = "/ready", tag = "probes", security(()),
    responses(
        (status = 200, description = "Spool open, backends started, sources consuming", body = schema::Probe),
        (status = 503, description = "Not ready: names what is not", body = schema::Probe),
    ))]
async fn ready(axum::extract::State(state): axum::extract::State<Arc<AppState>>) -> Response {
    let not_ready: Vec<String> = state
        .engine
        .backends()
        .iter()
        .filter(|b| !b.is_ready())
        .map(|b| event_pusher_core::BackendId::new(b.kind, &b.name).to_string())
        .collect();
    if !state.spool().is_healthy() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "spool is not writable");
    }
    if let Some(why) = state.cluster.as_ref().and_then(|c| c.not_ready()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting", "error": why})),
        )
            .into_response();
    }
    let sources = state.sources.not_ready();
    if !sources.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting", "error": "sources not consuming", "sources": sources})),
        )
            .into_response();
    }
    if !not_ready.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting", "error": "backends not ready", "backends": not_ready})),
        )
            .into_response();
    }
    (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

/// A known path with the wrong method: a JSON error too (axum keeps the
/// `Allow` header).
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

/// A JSON error answer: `{"error": "..."}`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// 400 for an error written `FIELD: why`, naming the field as well
/// (`{"error": ..., "field": "subscription.endpoint"}`), as every admin
/// route that checks fields answers.
pub(crate) fn invalid_field(message: String) -> Response {
    let field = message.split_once(": ").map(|(f, _)| f.to_owned());
    let mut body = serde_json::json!({"error": message});
    if let Some(f) = field.filter(|f| !f.contains(' ')) {
        body["field"] = serde_json::json!(f);
    }
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}
