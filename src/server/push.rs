//! The push device registry over HTTP (`/v1/push/devices/...`, admin
//! token): request and answer mapping only (contract:
//! `docs/backends/push.md`). The registry itself, and the `push_enable` /
//! `push_disable` hook calls (commands of the push backend, run by the
//! ingest pipeline for every source), are in `event_pusher_backends::push`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use event_pusher_backends::push::commands::Refused;
use event_pusher_backends::push::devices::Put;
use event_pusher_backends::push::provider::Address;
use event_pusher_backends::push::registration::Registration;
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
        Err(e) => return super::invalid_field(e.to_string()),
    };
    // A Web Push endpoint is chosen by whoever registers: besides the
    // literal checks of the parse, the name must not resolve into the
    // sidecar's own network (`[egress]`). The send-time resolver checks
    // again (and covers `push_enable`, which cannot wait on DNS).
    if let Address::WebPush { endpoint, .. } = &reg.address {
        if let Ok(url) = url::Url::parse(endpoint) {
            if let Err(e) = event_pusher_backends::egress::current().check_url(&url).await {
                return super::invalid_field(format!("subscription.endpoint: {e}"));
            }
        }
    }
    let backend = match pick_named(&state, reg.backend.as_deref()) {
        Ok(b) => b,
        Err(not_found) => return answer(not_found),
    };
    let registered = match &state.cluster {
        Some(cluster) => register_shared(cluster, backend, &jid, &device_id, &reg).await,
        None => backend
            .register(&jid, &device_id, &reg)
            .await
            .map_err(Refusal::Registry),
    };
    match registered {
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
        Err(e) => e.into_response(),
    }
}

/// Why a registry change was not made.
enum Refusal {
    Registry(RegistryError),
    Shared(crate::cluster::SharedError),
    /// The registry built something other than a device registration.
    NotARegistration,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Registry(e) => registry_error(e),
            Refusal::Shared(e) => super::cluster::refused(e),
            Refusal::NotARegistration => super::invalid_field("not a registration".into()),
        }
    }
}

/// With a cluster store: the store first (answered once it committed),
/// then this sidecar's registry.
async fn register_shared(
    cluster: &crate::cluster::Cluster,
    backend: &PushBackend,
    jid: &str,
    device_id: &str,
    reg: &Registration,
) -> Result<Put, Refusal> {
    let (change, _) = backend
        .registration_change(jid, device_id, reg, &event_pusher_core::Changes::new())
        .map_err(|e| Refusal::Registry(e.into()))?;
    let event_pusher_core::StateChange::DevicePut {
        scope,
        user,
        device_id,
        record,
    } = &change
    else {
        return Err(Refusal::NotARegistration);
    };
    let store = cluster.store().map_err(Refusal::Shared)?;
    let put = store
        .put_device(scope, user, device_id, record)
        .await
        .map_err(|e| Refusal::Shared(e.into()))?;
    backend
        .commit_local(change)
        .await
        .map_err(|e| Refusal::Registry(e.into()))?;
    Ok(match put {
        event_pusher_cluster::PutOutcome::Created => Put::Created,
        event_pusher_cluster::PutOutcome::Replaced => Put::Replaced,
    })
}

/// With a cluster store: remove from the store first, then here. Whether
/// the store had the device.
async fn unregister_shared(
    cluster: &crate::cluster::Cluster,
    backend: &PushBackend,
    jid: &str,
    device_id: &str,
) -> Result<bool, Refusal> {
    let user = event_pusher_backends::push::registration::bare_jid(jid).map_err(|e| Refusal::Registry(e.into()))?;
    let store = cluster.store().map_err(Refusal::Shared)?;
    let removed = store
        .remove_device(backend.scope(), &user, device_id)
        .await
        .map_err(|e| Refusal::Shared(e.into()))?;
    let change = event_pusher_core::StateChange::DeviceRemove {
        scope: backend.scope().to_owned(),
        user,
        device_id: device_id.to_owned(),
    };
    backend
        .commit_local(change)
        .await
        .map_err(|e| Refusal::Registry(e.into()))?;
    Ok(removed)
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
        let result = match &state.cluster {
            Some(cluster) => unregister_shared(cluster, b, &jid, &device_id).await,
            None => b.unregister(&jid, &device_id).await.map_err(Refusal::Registry),
        };
        match result {
            Ok(r) => removed |= r,
            Err(e) => return e.into_response(),
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

fn not_found(e: Refused) -> NotFound {
    match e {
        Refused::NoBackend => (StatusCode::NOT_FOUND, e.to_string()),
        Refused::UnknownBackend { .. } | Refused::BackendRequired { .. } => (StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// The push backend a registration is for: the named one, or the only one.
fn pick_named<'a>(state: &'a AppState, name: Option<&str>) -> Result<&'a Arc<PushBackend>, NotFound> {
    state.push.pick(name).map_err(not_found)
}

/// The named push backend, or all of them.
fn chosen<'a>(state: &'a AppState, name: Option<&str>) -> Result<Vec<&'a Arc<PushBackend>>, NotFound> {
    state.push.chosen(name).map_err(not_found)
}

fn registry_error(e: RegistryError) -> Response {
    match e {
        RegistryError::Invalid(e) => super::invalid_field(e.to_string()),
        RegistryError::Spool(e) => spool_refused(e),
    }
}
