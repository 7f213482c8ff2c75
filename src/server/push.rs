//! The push device registry over HTTP (`/v1/push/devices/...`, admin
//! token) and the `push_enable` / `push_disable` hook calls that come in
//! through ingest (contract: `docs/backends/push.md`).
//!
//! Both are registry commands, not events: they change a push backend's
//! registry (stored in the spool, answered after the commit) and produce no
//! event id. In an ingest request they are checked with everything else
//! before anything is done (a bad item refuses the whole request), applied
//! before the request's events are stored (so a message right after
//! `push_enable` in the same request reaches the new device), and reported
//! in the 202 answer under `"push"`, one entry per command:
//! `{"index", "hook", "jid", "device_id", "result": "created" | "replaced" |
//! "removed" | "absent"}`. They are idempotent, so a retry after a 503 does
//! no harm.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use event_pusher_backends::push::devices::Put;
use event_pusher_backends::push::registration::{check_device_id, Registration};
use event_pusher_backends::push::{PushBackend, RegistryError};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error;
use super::ingest::{read_body, spool_refused};
use crate::state::AppState;

/// `PUT /v1/push/devices/{jid}/{device_id}`: 201 new, 200 replaced.
pub async fn put_device(
    State(state): State<Arc<AppState>>,
    Path((jid, device_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match read_body(&state, &headers, body).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: not valid JSON: {e}")),
    };
    let reg = match Registration::parse(&value, false) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let backend = match pick_named(&state, reg.backend.as_deref()) {
        Ok(b) => b,
        Err(not_found) => return answer(not_found),
    };
    match backend.register(&jid, &device_id, &reg).await {
        Ok(put) => {
            let status = match put {
                Put::Created => StatusCode::CREATED,
                Put::Replaced => StatusCode::OK,
            };
            let user = event_pusher_core::jid::bare(&jid);
            let view = backend
                .device_views(user)
                .into_iter()
                .find(|v| v["device_id"] == device_id.as_str())
                .unwrap_or(Value::Null);
            (
                status,
                Json(json!({"jid": user, "backend": backend.name(), "device": view})),
            )
                .into_response()
        }
        Err(e) => registry_error(e),
    }
}

#[derive(Deserialize)]
pub struct BackendQuery {
    backend: Option<String>,
}

/// `DELETE /v1/push/devices/{jid}/{device_id}`: 204, or 404.
pub async fn delete_device(
    State(state): State<Arc<AppState>>,
    Path((jid, device_id)): Path<(String, String)>,
    Query(q): Query<BackendQuery>,
) -> Response {
    let backends = match chosen(&state, q.backend.as_deref()) {
        Ok(b) => b,
        Err(not_found) => return answer(not_found),
    };
    let mut removed = false;
    for b in backends {
        match b.unregister(&jid, &device_id).await {
            Ok(r) => removed |= r,
            Err(e) => return registry_error(e),
        }
    }
    if removed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!("no device \"{device_id}\" registered for {jid}"),
        )
    }
}

/// `GET /v1/push/devices/{jid}`: `{"devices": [...]}`, tokens not shown.
pub async fn list_devices(
    State(state): State<Arc<AppState>>,
    Path(jid): Path<String>,
    Query(q): Query<BackendQuery>,
) -> Response {
    if let Err(why) = event_pusher_core::jid::validate(&jid) {
        return error(StatusCode::BAD_REQUEST, format!("jid: {why}"));
    }
    let backends = match chosen(&state, q.backend.as_deref()) {
        Ok(b) => b,
        Err(not_found) => return answer(not_found),
    };
    let devices: Vec<Value> = backends
        .iter()
        .flat_map(|b| {
            b.device_views(&jid).into_iter().map(|mut v| {
                v["backend"] = json!(b.name());
                v
            })
        })
        .collect();
    Json(json!({"jid": event_pusher_core::jid::bare(&jid), "devices": devices})).into_response()
}

/// Why no push backend was found: the status and message to answer with.
type NotFound = (StatusCode, String);

fn answer((status, message): NotFound) -> Response {
    error(status, message)
}

/// The push backend a registration is for: the named one, or the only one.
fn pick_named<'a>(state: &'a AppState, name: Option<&str>) -> Result<&'a Arc<PushBackend>, NotFound> {
    match (name, state.push.as_slice()) {
        (_, []) => Err((StatusCode::NOT_FOUND, "no push backend is configured".to_owned())),
        (Some(n), all) => all.iter().find(|b| b.name() == n).ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                format!("backend: no push backend named \"{n}\""),
            )
        }),
        (None, [only]) => Ok(only),
        (None, all) => Err((
            StatusCode::BAD_REQUEST,
            format!(
                "backend: required when several push backends are configured ({})",
                all.iter().map(|b| b.name()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// The named push backend, or all of them.
fn chosen<'a>(state: &'a AppState, name: Option<&str>) -> Result<Vec<&'a Arc<PushBackend>>, NotFound> {
    match name {
        Some(_) => pick_named(state, name).map(|b| vec![b]),
        None if state.push.is_empty() => Err((StatusCode::NOT_FOUND, "no push backend is configured".into())),
        None => Ok(state.push.iter().collect()),
    }
}

fn registry_error(e: RegistryError) -> Response {
    match e {
        RegistryError::Invalid(message) => error(StatusCode::BAD_REQUEST, message),
        RegistryError::Spool(e) => spool_refused(e),
    }
}

/// Whether a typed hook call is a registry command.
pub(super) fn is_registry_call(call: &event_pusher_core::hook_call::CallItem<'_>) -> bool {
    matches!(call, event_pusher_core::hook_call::CallItem::Call(c)
        if matches!(c.hook.as_str(), Some("push_enable" | "push_disable")))
}

/// A checked `push_enable` / `push_disable` hook call.
pub(super) struct RegistryCall {
    index: usize,
    jid: String,
    device_id: String,
    action: Action,
}

enum Action {
    Enable(Arc<PushBackend>, Registration),
    Disable(Vec<Arc<PushBackend>>),
}

/// A request's calls with its registry commands taken out: the event calls,
/// each one's index in the request, and the checked commands.
pub(super) struct Split {
    pub calls: Vec<Value>,
    pub positions: Vec<usize>,
    pub registry: Vec<RegistryCall>,
}

/// Take the `push_enable` / `push_disable` calls out of a request and check
/// them; a bad one is `(message, index)`.
pub(super) fn split(state: &AppState, calls: Vec<Value>) -> Result<Split, (String, usize)> {
    let mut out = Split {
        calls: Vec::with_capacity(calls.len()),
        positions: Vec::with_capacity(calls.len()),
        registry: Vec::new(),
    };
    for (index, call) in calls.into_iter().enumerate() {
        match call.get("hook").and_then(Value::as_str) {
            Some(hook @ ("push_enable" | "push_disable")) => {
                let enable = hook == "push_enable";
                out.registry
                    .push(check_call(state, &call, enable).map_err(|m| (m, index))?.at(index));
            }
            _ => {
                out.positions.push(index);
                out.calls.push(call);
            }
        }
    }
    Ok(out)
}

impl RegistryCall {
    fn at(mut self, index: usize) -> Self {
        self.index = index;
        self
    }
}

fn check_call(state: &AppState, call: &Value, enable: bool) -> Result<RegistryCall, String> {
    let text = |key: &str| -> Result<String, String> {
        match call.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{key}: must be a string")),
            None => Err(format!("{key}: required")),
        }
    };
    let jid = text("jid")?;
    event_pusher_core::jid::validate(&jid).map_err(|why| format!("jid: {why}"))?;
    let device_id = text("device_id")?;
    check_device_id(&device_id)?;
    let action = if enable {
        let reg = Registration::parse(call, true)?;
        let backend = pick_named(state, reg.backend.as_deref()).map_err(|(_, m)| m)?;
        backend.check(&jid, &device_id, &reg)?;
        Action::Enable(backend.clone(), reg)
    } else {
        let name = match call.get("backend") {
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err("backend: must be a string".into()),
            None => None,
        };
        match name {
            Some(_) => Action::Disable(vec![pick_named(state, name).map_err(|(_, m)| m)?.clone()]),
            None if state.push.is_empty() => return Err("no push backend is configured".into()),
            None => Action::Disable(state.push.clone()),
        }
    };
    Ok(RegistryCall {
        index: 0,
        jid,
        device_id,
        action,
    })
}

/// Apply checked registry commands in order; each one's report, or the
/// answer to give when the spool refused one.
pub(super) async fn apply(registry: Vec<RegistryCall>) -> Result<Vec<Value>, Response> {
    let mut out = Vec::with_capacity(registry.len());
    for call in registry {
        let (hook, result) = match &call.action {
            Action::Enable(backend, reg) => {
                let put = backend.register(&call.jid, &call.device_id, reg).await;
                let result = match put.map_err(registry_error)? {
                    Put::Created => "created",
                    Put::Replaced => "replaced",
                };
                ("push_enable", result)
            }
            Action::Disable(backends) => {
                let mut removed = false;
                for b in backends {
                    removed |= b.unregister(&call.jid, &call.device_id).await.map_err(registry_error)?;
                }
                ("push_disable", if removed { "removed" } else { "absent" })
            }
        };
        out.push(json!({
            "index": call.index,
            "hook": hook,
            "jid": event_pusher_core::jid::bare(&call.jid),
            "device_id": call.device_id,
            "result": result,
        }));
    }
    Ok(out)
}
