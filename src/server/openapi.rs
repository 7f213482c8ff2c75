//! The HTTP API as an OpenAPI 3.1 document, served at `GET /openapi.json`
//! and checked in as `docs/openapi.json` (a test fails when they differ).
//!
//! The operations come from the `#[utoipa::path]` attributes on the
//! handlers themselves (`server/*.rs`), so a route's method, path,
//! parameters and statuses sit next to the code that answers them. Bodies
//! are the handlers' own types where the handler has one (`WebhookView`,
//! `Detached`, the query structs); where a handler builds its JSON inline,
//! the schema below describes it, and the schemathesis test
//! (`tests/openapi.rs`) checks every answer of the running binary against
//! it, so a body that drifts from its schema fails the suite.
//!
//! Open like `/health`: the document holds no secret, and API clients and
//! gateways fetch it before they have a token.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::schema::*;

/// The whole document. Adding a route: annotate its handler with
/// `#[utoipa::path]` and name it in `paths(...)` here.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "event-pusher",
        description = "Durable event-pushing sidecar for chat servers: ingest, probes and the admin API. \
                       Contract and prose: docs/http-api.md."
    ),
    paths(
        super::health,
        super::ready,
        super::metrics::render,
        serve,
        ui_page,
        ui_slash,
        ui_script,
        ui_style,
        ui_icon,
        super::ingest::post_events,
        super::mongooseim::post_form,
        mongooseim_slash,
        mongooseim_below,
        super::admin::list_backends,
        super::admin::pause,
        super::admin::resume,
        super::admin::list_dead_letters,
        super::admin::replay,
        super::operations::delete_user,
        super::filters::reload,
        super::cluster::status,
        super::webhooks::attach,
        super::webhooks::list,
        super::webhooks::get_one,
        super::webhooks::patch,
        super::webhooks::detach,
        super::webhooks::pause,
        super::webhooks::restart,
        push_list_devices,
        push_put_device,
        push_delete_device,
    ),
    components(schemas(ClusterCounters)),
    modifiers(&BearerToken, &WebhookClusterCounters),
    tags(
        (name = "probes", description = "Open: liveness, readiness, metrics, this document, the status page"),
        (name = "ingest", description = "Hook calls in; 202 once fsync'd"),
        (name = "admin", description = "Backends, dead letters, filters"),
        (name = "webhooks", description = "Webhook subscriptions at runtime"),
        (name = "push", description = "The push device registry"),
        (name = "cluster", description = "The cluster store shared by several sidecars ([cluster] table)"),
    )
)]
pub struct ApiDoc;

/// The `bearer` security scheme that `/v1/*` operations name.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// `WebhookView` plus the `"cluster"` counters that `GET /v1/webhooks` and
/// `GET /v1/webhooks/{id}` add when a cluster store is configured (the
/// handler adds them to the view's JSON, so the view's type lacks them).
struct WebhookClusterCounters;

impl Modify for WebhookClusterCounters {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, Schema};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        if let Some(RefOr::T(Schema::Object(view))) = components.schemas.get_mut("WebhookView") {
            view.properties.insert(
                "cluster".to_owned(),
                RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ClusterCounters")),
            );
        }
    }
}

/// The document as served and checked in (pretty, ending in a newline).
pub fn document() -> String {
    let mut value = serde_json::to_value(ApiDoc::openapi())
        .unwrap_or_else(|e| serde_json::json!({"error": format!("cannot render the OpenAPI document: {e}")}));
    camel_case_links(&mut value);
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

/// utoipa 5 writes a Link Object's `operationId` / `operationRef` in snake
/// case, which OpenAPI tools (schemathesis) reject: spell them as the
/// specification does.
fn camel_case_links(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(links)) = map.get_mut("links") {
                for link in links.values_mut() {
                    if let Value::Object(link) = link {
                        for (from, to) in [("operation_id", "operationId"), ("operation_ref", "operationRef")] {
                            if let Some(v) = link.remove(from) {
                                link.insert(to.to_owned(), v);
                            }
                        }
                    }
                }
            }
            map.values_mut().for_each(camel_case_links);
        }
        Value::Array(items) => items.iter_mut().for_each(camel_case_links),
        _ => {}
    }
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "probes",
    security(()),
    responses((status = 200, description = "This document", content_type = "application/json"))
)]
pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

// Routes served by closures or by another path's handler: described here.

#[utoipa::path(get, path = "/ui", tag = "probes", security(()),
    responses((status = 200, description = "The status page", content_type = "text/html")))]
#[allow(dead_code)]
fn ui_page() {}

#[utoipa::path(get, path = "/ui/", tag = "probes", security(()),
    responses((status = 308, description = "Redirect to /ui")))]
#[allow(dead_code)]
fn ui_slash() {}

#[utoipa::path(get, path = "/ui/app.js", tag = "probes", security(()),
    responses((status = 200, description = "The status page's script", content_type = "text/javascript")))]
#[allow(dead_code)]
fn ui_script() {}

#[utoipa::path(get, path = "/ui/app.css", tag = "probes", security(()),
    responses((status = 200, description = "The status page's style", content_type = "text/css")))]
#[allow(dead_code)]
fn ui_style() {}

#[utoipa::path(get, path = "/ui/icon.svg", tag = "probes", security(()),
    responses((status = 200, description = "The status page's icon", content_type = "image/svg+xml")))]
#[allow(dead_code)]
fn ui_icon() {}

#[utoipa::path(post, path = "/v1/mongooseim/http/", tag = "ingest",
    request_body(content = MongooseImForm, content_type = "application/x-www-form-urlencoded"),
    security(("bearer" = [])),
    responses(FormAnswers))]
#[allow(dead_code)]
fn mongooseim_slash() {}

#[utoipa::path(post, path = "/v1/mongooseim/http/{path}", tag = "ingest",
    params(("path" = String, Path, description = "Any path below: MongooseIM appends its handler's `path`")),
    request_body(content = MongooseImForm, content_type = "application/x-www-form-urlencoded"),
    security(("bearer" = [])),
    responses(FormAnswers))]
#[allow(dead_code)]
fn mongooseim_below() {}

// The push registry's routes exist only with the `push` feature; the
// document describes the default build, so they are described here rather
// than on the feature-gated handlers.

#[utoipa::path(get, path = "/v1/push/devices/{jid}", tag = "push",
    params(("jid" = String, Path, description = "A bare JID, percent-encoded (a full JID is reduced)"), BackendParam),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user's devices", body = DeviceList),
        (status = 400, description = "Not a usable JID", body = ErrorBody),
        (status = 401, description = "Bad or missing token", body = ErrorBody),
        (status = 404, description = "No such push backend", body = ErrorBody),
    ))]
#[allow(dead_code)]
fn push_list_devices() {}

#[utoipa::path(put, path = "/v1/push/devices/{jid}/{device_id}", tag = "push",
    params(
        ("jid" = String, Path, description = "A bare JID, percent-encoded (a full JID is reduced)"),
        ("device_id" = String, Path, description = "The device's id (MongoosePush: its device id)"),
    ),
    request_body(content = DeviceRegistration, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Replaced", body = DeviceRegistered, links(
            ("ListDevices" = (operation_id = "push_list_devices", parameters(("jid" = "$request.path.jid")))),
            ("DeleteDevice" = (operation_id = "push_delete_device",
                parameters(("jid" = "$request.path.jid"), ("device_id" = "$request.path.device_id")))),
        )),
        (status = 201, description = "Registered", body = DeviceRegistered, links(
            ("ListDevices" = (operation_id = "push_list_devices", parameters(("jid" = "$request.path.jid")))),
            ("DeleteDevice" = (operation_id = "push_delete_device",
                parameters(("jid" = "$request.path.jid"), ("device_id" = "$request.path.device_id")))),
        )),
        (status = 400, description = "A bad field, or a provider that is not configured", body = ErrorBody),
        (status = 401, description = "Bad or missing token", body = ErrorBody),
        (status = 404, description = "No push backend is configured, or no such one", body = ErrorBody),
        (status = 408, description = "Body not complete within server.body_timeout_ms", body = ErrorBody),
        (status = 413, description = "Body over server.max_body_bytes", body = ErrorBody),
        (status = 503, description = "The spool could not store it", body = ErrorBody),
    ))]
#[allow(dead_code)]
fn push_put_device() {}

#[utoipa::path(delete, path = "/v1/push/devices/{jid}/{device_id}", tag = "push",
    params(
        ("jid" = String, Path, description = "A bare JID, percent-encoded"),
        ("device_id" = String, Path, description = "The device's id"),
        BackendParam,
    ),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Not a usable JID", body = ErrorBody),
        (status = 401, description = "Bad or missing token", body = ErrorBody),
        (status = 404, description = "No such device, or no push backend", body = ErrorBody),
        (status = 503, description = "The spool could not store it", body = ErrorBody),
    ))]
#[allow(dead_code)]
fn push_delete_device() {}
