//! The admin API: backend status, pause/resume, dead letters and replay.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::body::read_bounded;
use super::error;
use crate::state::AppState;
use event_pusher_core::delivery::dead_letters::{self, PageError};
use event_pusher_core::delivery::Lookup;
use event_pusher_core::spool::Order;
use event_pusher_core::Slot;

#[utoipa::path(get, path = "/v1/backends", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every backend instance and subscription", body = Vec<super::schema::BackendRow>),
        (status = 401, description = "Bad or missing token", body = super::schema::ErrorBody),
    ))]
pub async fn list_backends(State(state): State<Arc<AppState>>) -> Response {
    Json(state.engine.status()).into_response()
}

#[utoipa::path(post, path = "/v1/backends/{name}/pause", tag = "admin", operation_id = "pause_backend", params(("name" = String, Path, description = "NAME, or KIND.NAME where kinds share a name; a subscription id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Paused (stored: survives a restart)", body = super::schema::BackendRow),
        (status = 401, description = "Bad or missing token", body = super::schema::ErrorBody),
        (status = 404, description = "No such backend", body = super::schema::ErrorBody),
        (status = 409, description = "A bare name several kinds share", body = super::schema::ErrorBody),
        (status = 503, description = "The spool could not store it", body = super::schema::ErrorBody),
    ))]
pub async fn pause(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    set_paused(&state, &name, true).await
}

#[utoipa::path(post, path = "/v1/backends/{name}/resume", tag = "admin", operation_id = "resume_backend", params(("name" = String, Path, description = "NAME, or KIND.NAME where kinds share a name; a subscription id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Delivering again", body = super::schema::BackendRow),
        (status = 401, description = "Bad or missing token", body = super::schema::ErrorBody),
        (status = 404, description = "No such backend", body = super::schema::ErrorBody),
        (status = 409, description = "A bare name several kinds share", body = super::schema::ErrorBody),
        (status = 503, description = "The spool could not store it", body = super::schema::ErrorBody),
    ))]
pub async fn resume(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    set_paused(&state, &name, false).await
}

async fn set_paused(state: &AppState, name: &str, paused: bool) -> Response {
    let slot = match state.engine.slot(name) {
        Ok(s) => s,
        Err(e) => return lookup_error(e),
    };
    // A webhook subscription's pause goes through the subscriptions, as
    // `POST /v1/webhooks/{id}/pause` does: stored in the cluster store
    // first when there is one, and `resume` enables a disabled one.
    let name_of_slot = state.spool().slot(slot).name.clone();
    if let Some(id) = name_of_slot.strip_prefix("webhook.") {
        return match state.webhooks.set_paused(&state.engine, id, paused).await {
            Ok(_) => {
                tracing::info!(backend = %name_of_slot, paused, "backend {}", if paused { "paused" } else { "resumed" });
                Json(state.engine.status_of(slot)).into_response()
            }
            Err(e) => super::webhooks::failure(e),
        };
    }
    match state.engine.set_paused(slot, paused).await {
        Ok(status) => {
            tracing::info!(
                backend = %state.spool().slot(slot).name,
                paused,
                "backend {}",
                if paused { "paused" } else { "resumed" }
            );
            Json(status).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[derive(Deserialize)]
pub struct DeadLetterQuery {
    backend: Option<String>,
    limit: Option<String>,
    after: Option<String>,
    order: Option<String>,
}

/// `GET /v1/dead-letters?backend=KIND.NAME&limit=N&after=ID&order=asc|desc`:
/// a JSON array of records, one page. When more remain, `X-Next-After`
/// carries the `after` of the next page and `Link` its URL (`rel="next"`).
#[utoipa::path(get, path = "/v1/dead-letters", tag = "admin", params(DeadLetterQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page, oldest first unless order=desc", body = Vec<super::schema::DeadLetter>,
            headers(
                ("X-Next-After" = String, description = "The `after` of the next page, when more remain"),
                ("Link" = String, description = "The next page's URL, rel=\"next\""),
            )),
        (status = 400, description = "Bad limit, order or after", body = super::schema::ErrorBody),
        (status = 401, description = "Bad or missing token", body = super::schema::ErrorBody),
        (status = 404, description = "No such backend", body = super::schema::ErrorBody),
        (status = 409, description = "A bare name several kinds share", body = super::schema::ErrorBody),
        (status = 503, description = "The spool could not be read", body = super::schema::ErrorBody),
    ))]
pub async fn list_dead_letters(State(state): State<Arc<AppState>>, Query(q): Query<DeadLetterQuery>) -> Response {
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => dead_letters::DEFAULT_PAGE,
        Some(Ok(n)) if (1..=dead_letters::MAX_PAGE).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("limit: must be a number from 1 to {}", dead_letters::MAX_PAGE),
            )
        }
    };
    let order = match q.order.as_deref() {
        None | Some("asc") => Order::Asc,
        Some("desc") => Order::Desc,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("order: must be \"asc\" or \"desc\", not \"{other}\""),
            )
        }
    };
    let slots = match slots_for(&state, q.backend.as_deref()) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    let req = dead_letters::PageRequest {
        after: q.after.clone(),
        limit,
        order,
    };
    let page = match dead_letters::page(state.spool(), slots, req).await {
        Ok(p) => p,
        Err(e @ PageError::UnknownAfter(_)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(PageError::Spool(e)) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let mut resp = Json(page.records).into_response();
    if let Some(next) = page.next_after {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(b) = &q.backend {
            query.append_pair("backend", b);
        }
        query.append_pair("limit", &limit.to_string());
        query.append_pair("order", if order == Order::Asc { "asc" } else { "desc" });
        query.append_pair("after", &next);
        let link = format!("</v1/dead-letters?{}>; rel=\"next\"", query.finish());
        for (name, value) in [("x-next-after", next), ("link", link)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
    }
    resp
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    backend: Option<String>,
    ids: Option<Vec<String>>,
    /// RFC 3339: only what died at or after it.
    since: Option<String>,
    /// RFC 3339: only what died at or before it.
    until: Option<String>,
}

/// `POST /v1/dead-letters/replay {"backend": NAME, "ids": [...]}`: move dead
/// letters back into the delivery queue (all of them when `ids` is absent).
#[utoipa::path(post, path = "/v1/dead-letters/replay", tag = "admin",
    request_body(content = Option<ReplayRequest>, content_type = "application/json",
        description = "`backend` (default all) and `ids` (default all); an empty body replays everything"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Moved back into their queues", body = super::schema::Replayed),
        (status = 400, description = "Not a replay request", body = super::schema::ErrorBody),
        (status = 401, description = "Bad or missing token", body = super::schema::ErrorBody),
        (status = 404, description = "No such backend", body = super::schema::ErrorBody),
        (status = 408, description = "Body not complete within server.body_timeout_ms", body = super::schema::ErrorBody),
        (status = 409, description = "A bare name several kinds share", body = super::schema::ErrorBody),
        (status = 413, description = "Body over server.max_body_bytes", body = super::schema::ErrorBody),
        (status = 503, description = "The spool could not be written", body = super::schema::ErrorBody),
    ))]
pub async fn replay(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    // Bounded like ingest: a list of ids is the most a replay names.
    let body = match read_bounded(
        &headers,
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
    // No body, `null` or `{}`: everything.
    let everything = || ReplayRequest {
        backend: None,
        ids: None,
        since: None,
        until: None,
    };
    let req: ReplayRequest = if body.iter().all(u8::is_ascii_whitespace) {
        everything()
    } else {
        match serde_json::from_slice::<Option<ReplayRequest>>(&body) {
            Ok(r) => r.unwrap_or_else(everything),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid replay request: {e}")),
        }
    };
    let window = match crate::server::operations::window(req.since.as_deref(), req.until.as_deref()) {
        Ok(w) => w,
        Err(e) => return super::invalid_field(e),
    };
    let slots = match slots_for(&state, req.backend.as_deref()) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    // `KIND.NAME` of what was chosen, for the log: the request may give a
    // bare name.
    let chosen: Vec<String> = slots.iter().map(|s| state.spool().slot(*s).name.clone()).collect();
    let replayed = match dead_letters::replay_window(state.spool(), slots, req.ids, window).await {
        Ok(n) => n,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    tracing::info!(replayed, backends = %chosen.join(","), "dead letters replayed");
    (StatusCode::OK, Json(json!({"replayed": replayed}))).into_response()
}

/// The slots of one backend or of all; the 404 answer for an unknown name.
fn slots_for(state: &AppState, backend: Option<&str>) -> Result<Vec<Slot>, Box<Response>> {
    state
        .engine
        .slots()
        .select(backend)
        .map_err(|e| Box::new(lookup_error(e)))
}

/// 404 for an unknown backend, 409 for a name several kinds share.
fn lookup_error(e: Lookup) -> Response {
    let status = match e {
        Lookup::NotFound(_) => StatusCode::NOT_FOUND,
        Lookup::Ambiguous(..) => StatusCode::CONFLICT,
    };
    error(status, e.to_string())
}
