//! `impl Backend` for the gateway: delivering an event is putting it into
//! every matching session's buffer (live, not durable beyond the resume
//! window), and the WebSocket endpoint it serves on the main listener.
//! The buffers are kept in the spool (`persist.rs`): a batch counts as
//! delivered once its dispatches are committed there, so sessions can be
//! resumed after a restart, kill -9 included.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use event_pusher_core::backend::Attachment;
use event_pusher_core::{Backend, BackendError, Delivery, DeliveryError};

use super::config::GatewayConfig;
use super::dispatch::{dispatch_type, intent_of, Payload};
use super::hub::Hub;
use super::limits::{Client, Limits};
use super::protocol::compress::{self, Compression};
use super::protocol::ALL_INTENTS;
use crate::common::Endpoint;

/// Largest frame a client may send (Identify, Resume, heartbeats are small).
const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// Initial read buffer of a connection (grows for a larger frame).
const READ_BUFFER: usize = 4 * 1024;

/// How long shutdown waits for connections to take their op 7.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Events per `deliver` call: one fan-out pass per batch of the spool.
const MAX_BATCH: usize = 256;

/// A gateway backend instance.
pub struct GatewayBackend {
    hub: Arc<Hub>,
}

impl GatewayBackend {
    pub fn new(name: &str, config: &GatewayConfig) -> Result<Self, BackendError> {
        check_path(&config.path)?;
        let mut clients = Vec::with_capacity(config.clients.len());
        for (client, c) in &config.clients {
            if c.token.is_empty() {
                return Err(BackendError::new(format!("clients.{client}.token: must not be empty")));
            }
            if c.intents & !ALL_INTENTS != 0 {
                return Err(BackendError::new(format!(
                    "clients.{client}.intents: {} has bits beyond operational (1<<6); the most is {ALL_INTENTS}",
                    c.intents
                )));
            }
            if clients.iter().any(|o: &Client| o.token == c.token) {
                return Err(BackendError::new(format!(
                    "clients.{client}.token: another client has the same token"
                )));
            }
            clients.push(Client {
                name: client.clone(),
                token: c.token.clone(),
                intents: c.intents,
            });
        }
        let limits = Limits {
            heartbeat_interval: Duration::from_millis(config.heartbeat_interval_ms),
            resume_buffer: config.resume_buffer,
            resume_timeout: Duration::from_millis(config.resume_timeout_ms),
            max_queued: config.max_queued,
            max_sessions: config.max_sessions,
            max_pending: config.max_pending,
        };
        Ok(GatewayBackend {
            hub: Arc::new(
                Hub::new(name.to_owned(), config.path.clone(), limits, clients)
                    .with_public_url(config.public_url.clone()),
            ),
        })
    }

    /// The WebSocket endpoint, metrics and drain of this instance.
    pub fn endpoint(&self) -> Arc<dyn Endpoint> {
        Arc::new(GatewayEndpoint { hub: self.hub.clone() })
    }
}

fn check_path(path: &str) -> Result<(), BackendError> {
    let ok = path.starts_with('/')
        && path.len() > 1
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(BackendError::new(format!(
            "path: \"{path}\" must start with '/' and hold only letters, digits, '/', '-', '_' and '.'"
        )))
    }
}

#[async_trait]
impl Backend for GatewayBackend {
    const KIND: &'static str = "gateway";

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    /// Load the sessions kept in the spool: after a restart they are
    /// detached and can be resumed.
    fn attach(&self, attachment: &Attachment) -> Result<(), BackendError> {
        let restored = self
            .hub
            .attach_store(attachment.state.clone())
            .map_err(|e| BackendError::with_source(format!("cannot read the gateway's sessions: {e}"), e))?;
        if restored > 0 {
            tracing::info!(backend = %self.hub.backend, sessions = restored, "gateway sessions restored; they can resume");
        }
        Ok(())
    }

    /// Encode each event once and put it into every matching session's
    /// buffer, then commit the batch's dispatches to the spool. Never
    /// waits on a client; fails (to be retried) only when the spool does.
    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        let mut writes = Vec::new();
        let mut fanned_out = Vec::new();
        let results: Vec<Result<(), DeliveryError>> = batch
            .iter()
            .map(|d| {
                // The spool's canonical JSON is valid UTF-8 (serde_json wrote it).
                let json = std::str::from_utf8(&d.json)
                    .map_err(|_| DeliveryError::permanent("stored event is not UTF-8 JSON"))?;
                if self.hub.seen_before(&d.event.id) {
                    return Ok(());
                }
                fanned_out.push(d.event.id.clone());
                let intent = intent_of(&d.event);
                let payload = Payload::new(dispatch_type(&d.event), json);
                if self.hub.fan_out(intent, &payload) {
                    writes.extend(self.hub.log_entry(intent, &d.event.id, &payload));
                }
                Ok(())
            })
            .collect();
        match self.hub.commit(writes).await {
            Ok(()) => results,
            Err(e) => {
                // The sessions have them already and a retry does not
                // dispatch them again; their log entries are tried again
                // with the next commit, which the retry waits for.
                self.hub.not_committed(fanned_out);
                let message = format!("cannot keep the dispatches for resume: {e}");
                results
                    .into_iter()
                    .map(|r| r.and(Err(DeliveryError::retryable(message.clone()))))
                    .collect()
            }
        }
    }
}

/// What the listener serves for one gateway backend.
struct GatewayEndpoint {
    hub: Arc<Hub>,
}

impl Endpoint for GatewayEndpoint {
    fn path(&self) -> &str {
        &self.hub.path
    }

    fn router(&self) -> Router {
        Router::new()
            .route(&self.hub.path, get(upgrade))
            .with_state(self.hub.clone())
    }

    fn render_metrics(&self, out: &mut String) {
        let hub = &self.hub;
        let sessions = hub
            .clients
            .iter()
            .map(|c| c.name.as_str())
            .zip(hub.attached_by_client());
        super::metrics::render(&hub.metrics, &hub.backend, sessions, out);
    }

    fn drain(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let hub = self.hub.clone();
        Box::pin(async move { hub.drain(DRAIN_WAIT).await })
    }
}

/// `resume_gateway_url`: from `public_url` when set; else from the
/// request's `Host` only when it is a plain `host[:port]` (never copied
/// verbatim: it is the client's to write).
fn resume_url(hub: &Hub, headers: &HeaderMap) -> String {
    if let Some(base) = &hub.public_url {
        return format!("{base}{}", hub.path);
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| valid_host(h))
        .unwrap_or("localhost");
    format!("ws://{host}{}", hub.path)
}

/// `name[:port]`, `a.b.c.d[:port]` or `[v6][:port]`, nothing else.
fn valid_host(h: &str) -> bool {
    let Ok(auth) = h.parse::<axum::http::uri::Authority>() else {
        return false;
    };
    if auth.as_str() != h || h.contains('@') {
        return false;
    }
    let host = auth.host();
    let ok_name = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    let ok_v6 = host.starts_with('[') && host[1..host.len() - 1].parse::<std::net::Ipv6Addr>().is_ok();
    ok_name || ok_v6
}

/// `GET path` with an upgrade: count the connection, then hand the socket
/// to its own task (outside the listener's connection slots and shutdown
/// deadline: see docs/backends/gateway.md).
async fn upgrade(
    State(hub): State<Arc<Hub>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let compression = match compression(query.as_deref()) {
        Ok(c) => c,
        Err(message) => {
            let body = serde_json::json!({"error": message, "field": compress::QUERY_KEY});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    if hub.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if hub.sessions_full() {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many gateway sessions").into_response();
    }
    // Counted among the unidentified (the oldest is closed when they are
    // too many), not against `max_sessions` until it identifies.
    let (guard, pending) = hub.open_connection();
    let resume_url = resume_url(&hub, &headers);
    ws.max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        // Client frames are small: no 128 KiB read buffer per socket, so
        // thousands of unidentified sockets cost little.
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| super::connection::serve(hub, socket, resume_url, compression, guard, pending))
}

/// `?compress=` of the upgrade request: none, or a known compression;
/// anything else is refused before the upgrade (the error names the
/// parameter). Other parameters (`v`, `encoding`) are ignored.
fn compression(query: Option<&str>) -> Result<Option<Compression>, String> {
    let Some(query) = query else { return Ok(None) };
    let Some((_, value)) = url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == compress::QUERY_KEY) else {
        return Ok(None);
    };
    Compression::parse(&value).map(Some).ok_or_else(|| {
        let known: Vec<&str> = Compression::ALL.iter().map(|c| c.as_str()).collect();
        format!(
            "{}: unknown value \"{value}\"; one of {}",
            compress::QUERY_KEY,
            known.join(", ")
        )
    })
}
