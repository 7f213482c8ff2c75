//! The API's request and answer shapes as OpenAPI schemas: what the
//! handlers name in their `#[utoipa::path]` annotations and `openapi.rs`
//! collects into the document. Types the handlers already have (views,
//! rows) derive `ToSchema` where they live; these describe the rest.

#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::ToSchema;

/// `?backend=NAME`: one push backend (default: all).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct BackendParam {
    /// One push backend by name (default: all).
    backend: Option<String>,
}

/// An error answer: `error` names what is wrong; some answers add where.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    pub error: String,
    /// Which item of the request (ingest).
    pub index: Option<u64>,
    /// Which field (webhooks, push devices).
    pub field: Option<String>,
    /// The id that is taken (`already_exists`).
    pub id: Option<String>,
}

/// `{"status": ...}` of `/health` and `/ready`; a `/ready` 503 adds
/// `error` and what is not ready.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Probe {
    pub status: Option<String>,
    pub error: Option<String>,
    /// Backends not ready, `KIND.NAME`.
    pub backends: Option<Vec<String>>,
    /// Sources not consuming, `KIND.NAME`.
    pub sources: Option<Vec<String>>,
}

/// One hook call (`POST /v1/events` takes one, an array of them, or
/// NDJSON).
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
pub struct HookCall {
    pub hook: HookName,
    /// chat hooks: the sender.
    pub from: Option<String>,
    /// chat and unacked hooks: the recipient.
    pub to: Option<String>,
    /// presence and push hooks: the user.
    pub jid: Option<String>,
    /// chat: `chat`, `groupchat`, `headline` or `normal` (default).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub body: Option<String>,
    /// The chat server's message id: the record's `message_id`.
    pub id: Option<String>,
    /// RFC 3339; default: now.
    pub timestamp: Option<String>,
    /// Strings, numbers and booleans.
    pub metadata: Option<BTreeMap<String, Value>>,
    /// push hooks: the device.
    pub device_id: Option<String>,
    /// push_enable: `fcm`, `apns`, `webpush`, `mongoosepush`.
    pub provider: Option<String>,
    pub token: Option<String>,
}

/// The hooks `POST /v1/events` understands.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum HookName {
    UserSendMessage,
    FilterLocalPacket,
    UserAvailable,
    UnsetPresence,
    UnacknowledgedMessage,
    PushEnable,
    PushDisable,
}

/// One hook call or a JSON array of them.
#[derive(serde::Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum IngestBody {
    One(Box<HookCall>),
    Many(Vec<HookCall>),
}

/// `202`: every event is in the spool.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Accepted {
    pub accepted: u64,
    /// Event ids (ULIDs), in request order.
    pub ids: Vec<String>,
    /// Reports of push_enable / push_disable calls.
    pub push: Option<Vec<Value>>,
}

/// What `POST /v1/mongooseim/http` (and every path below it) answers.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum FormAnswers {
    /// Stored
    #[response(status = 200)]
    Stored(#[to_schema] Accepted),
    /// A field missing, repeated or unusable in a JID
    #[response(status = 400)]
    Invalid(#[to_schema] ErrorBody),
    /// Bad or missing token
    #[response(status = 401)]
    Unauthorized(#[to_schema] ErrorBody),
    /// Body not complete within server.body_timeout_ms
    #[response(status = 408)]
    Timeout(#[to_schema] ErrorBody),
    /// Body over server.max_body_bytes
    #[response(status = 413)]
    TooLarge(#[to_schema] ErrorBody),
    /// Not application/x-www-form-urlencoded
    #[response(status = 415)]
    NotAForm(#[to_schema] ErrorBody),
    /// Spool full or unwritable
    #[response(status = 503, headers(("Retry-After" = String, description = "Seconds")))]
    Refused(#[to_schema] ErrorBody),
}

/// What MongooseIM's http backend posts.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MongooseImForm {
    pub author: String,
    pub server: String,
    pub receiver: String,
    pub message: String,
}

/// A row of `GET /v1/backends`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BackendRow {
    pub name: String,
    /// `log`, `http`, `rabbit`, `sns`, `push`, `gateway`, `webhook`.
    pub kind: String,
    pub paused: bool,
    pub ready: bool,
    pub queued: u64,
    pub in_flight: u64,
    pub delivered: u64,
    pub failed: u64,
    pub retries: u64,
    pub dead_letters: u64,
    pub circuit_open: bool,
    /// Events dead-lettered on arrival since start (a full queue with
    /// `overflow = "dead_letter"`, or a disabled subscription).
    pub overflow_dead_lettered: u64,
    /// Seconds ready events waited for `rate_limit_per_s`, since start.
    pub throttled_seconds: f64,
    /// A webhook subscription disabled after failing too long.
    pub disabled: bool,
    /// Push backends only: per provider (`fcm`, `apns`, `webpush`,
    /// `mongoosepush`), whether it can deliver. A provider whose credential
    /// is refused is not ready alone; the others' devices keep being pushed.
    pub providers: Option<BTreeMap<String, ProviderRow>>,
}

/// A push provider in a backend's row.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ProviderRow {
    pub ready: bool,
}

/// A dead letter.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeadLetter {
    /// The event id.
    pub id: String,
    /// `KIND.NAME`.
    pub backend: String,
    /// The event record as it was claimed.
    pub event: BTreeMap<String, Value>,
    pub attempts: u64,
    pub last_error: LastError,
    pub first_attempt_at: String,
    pub last_attempt_at: String,
    pub dead_at: String,
    /// The push device it was for.
    pub target: Option<String>,
}

/// The last attempt's failure.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LastError {
    /// The HTTP status, when there was one.
    pub status: Option<u64>,
    pub message: String,
}

/// `{"replayed": N}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Replayed {
    pub replayed: u64,
}

/// `POST /v1/filters/reload`'s answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Reloaded {
    pub reloaded: Option<bool>,
    pub filters: Option<Vec<String>>,
    pub chain: Option<Vec<Value>>,
    /// Sections that changed in the file but need a restart.
    pub not_applied: Option<Vec<String>>,
    pub warning: Option<String>,
    pub error: Option<String>,
}

/// `POST /v1/webhooks`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AttachRequest {
    /// 1–64 of `A-Z a-z 0-9 _ -`; generated when absent.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: Option<String>,
    /// http:// or https://.
    #[schema(pattern = "^https?://[a-z0-9.-]{1,30}(:[0-9]{2,5})?(/[a-z0-9/]{0,20})?$")]
    pub url: String,
    /// Event classes; default all.
    pub events: Option<Vec<EventClass>>,
    /// `whsec_` + base64 of 24 to 64 bytes; generated (and returned once) when absent.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]{32,86}={0,2}$")]
    pub secret: Option<String>,
    /// Sent with every delivery.
    pub headers: Option<BTreeMap<String, String>>,
    /// `json`, the only one.
    pub format: Option<String>,
    pub retry: Option<Retry>,
    /// What a full queue does to new events: `dead_letter` (default) or `refuse`.
    pub overflow: Option<Overflow>,
    /// Deliveries started per second at most (above 0); absent or null: no limit.
    #[schema(exclusive_minimum = 0.0)]
    pub rate_limit_per_s: Option<f64>,
}

/// `overflow` of a subscription: what new events do while its queue is full.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum Overflow {
    /// Ingest answers 503 while the queue is full.
    Refuse,
    /// New events go to the subscription's dead letters; ingest goes on.
    DeadLetter,
}

/// The event classes of `events` lists.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum EventClass {
    Presence,
    Chat,
    Groupchat,
    Headline,
    Normal,
    Unacked,
    /// The sidecar's reports on itself; received only where it is named.
    Operational,
}

/// A subscription's `retry` (the keys of a backend's `retry` table).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Retry {
    /// At least 1 (the first attempt counts).
    #[schema(minimum = 1)]
    pub max_attempts: Option<u32>,
    pub initial_backoff_ms: Option<u64>,
    /// Not below `initial_backoff_ms`.
    pub max_backoff_ms: Option<u64>,
}

/// `PATCH /v1/webhooks/{id}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PatchRequest {
    #[schema(pattern = "^https?://[a-z0-9.-]{1,30}(:[0-9]{2,5})?(/[a-z0-9/]{0,20})?$")]
    pub url: Option<String>,
    pub events: Option<Vec<EventClass>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub retry: Option<Retry>,
    /// Issue a new secret; both are signed for 24 hours.
    pub rotate_secret: Option<bool>,
    pub overflow: Option<Overflow>,
    /// Above 0; null removes the limit.
    #[schema(exclusive_minimum = 0.0)]
    pub rate_limit_per_s: Option<f64>,
}

/// `{"id", "queued"}` of a drain that timed out, with `error`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DrainTimeout {
    pub error: String,
    pub queued: u64,
}

/// `PUT /v1/push/devices/{jid}/{device_id}`: by provider (see docs/backends/push.md).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeviceRegistration {
    /// `fcm`, `apns`, `webpush`, `mongoosepush`.
    pub provider: String,
    /// fcm, apns (hex).
    pub token: Option<String>,
    /// apns, mongoosepush: `prod` or `dev`.
    pub mode: Option<String>,
    /// mongoosepush: `fcm` or `apns`.
    pub service: Option<String>,
    /// webpush: the browser's `PushSubscription.toJSON()`.
    pub subscription: Option<BTreeMap<String, Value>>,
    /// Data-only notifications.
    pub silent: Option<bool>,
    /// Which push backend, when there are several.
    pub backend: Option<String>,
}

/// A registered device, as listed (tokens shown by their last characters only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeviceView {
    pub device_id: String,
    pub provider: String,
    pub mode: Option<String>,
    pub silent: bool,
    pub registered_at: String,
    pub last_push_at: Option<String>,
    pub token_hint: Option<String>,
    pub backend: Option<String>,
}

/// `GET /v1/push/devices/{jid}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeviceList {
    pub jid: String,
    pub devices: Vec<DeviceView>,
}

/// `PUT /v1/push/devices/...`'s answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeviceRegistered {
    pub jid: String,
    pub backend: String,
    pub device: DeviceView,
}

/// `DELETE /v1/users/{jid}`: what was erased.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Erased {
    /// Queued events (of every backend and subscription) that named the user.
    pub queued: u64,
    pub dead_letters: u64,
    /// Push devices removed.
    pub devices: u64,
}

/// `GET /v1/cluster`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ClusterStatus {
    /// This sidecar's node name.
    pub node: String,
    pub store: StoreStatus,
    /// The sidecars that reported to the store in the last 30 s.
    pub nodes: Vec<ClusterNode>,
}

/// The cluster store as this sidecar sees it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StoreStatus {
    /// The connection string with the password replaced by `***`.
    pub postgres: String,
    /// Whether the last attempt to reach the store succeeded.
    pub up: bool,
    /// The last error talking to the store (kept after it recovers).
    pub last_error: Option<String>,
    /// When `up` last changed (RFC 3339); null before the first attempt.
    pub since: Option<String>,
}

/// A sidecar that reports to the cluster store.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ClusterNode {
    pub name: String,
    /// Its last heartbeat (RFC 3339).
    pub last_seen: String,
    /// When it (last) started reporting (RFC 3339).
    pub started_at: String,
}

/// A subscription's counters summed over the sidecars that reported to the
/// cluster store in the last 30 s (only with `[cluster]`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ClusterCounters {
    pub queued: u64,
    pub delivered: u64,
    pub failed: u64,
    pub dead_letters: u64,
}
