//! Typed dispatches and the handler trait the user implements.

use async_trait::async_trait;
use event_pusher_event::{Event, EventBody, PresenceStatus};
use serde_json::Value;

use super::cache::PresenceCache;
use super::protocol::dispatch;

/// One dispatch as the handler sees it.
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// The session's sequence number (`s`); 0 for `Resumed`.
    pub seq: u64,
    pub event: GatewayEvent,
}

/// What a dispatch says, typed by its `t`.
#[derive(Debug, Clone)]
pub enum GatewayEvent {
    /// `READY`: a new session (after Identify).
    Ready { session_id: String },
    /// `RESUMED`: the session continues; missed dispatches came before it.
    Resumed,
    /// `PRESENCE_UPDATE`, with the JID's status before it (`None` when
    /// unknown to this client).
    Presence {
        event: Event,
        previous: Option<PresenceStatus>,
    },
    /// `DM_MESSAGE_CREATE`: a one-to-one chat message.
    DirectMessage(Event),
    /// `MESSAGE_CREATE`: groupchat, headline or normal.
    Message(Event),
    /// `MESSAGE_UNACKED`.
    Unacked(Event),
    /// A type this client does not know (a newer server): `t` and `d`.
    Other { t: String, d: Value },
}

impl GatewayEvent {
    /// Type a dispatch, updating `cache` with presences.
    pub(crate) fn parse(t: &str, d: Value, cache: &mut PresenceCache) -> Result<GatewayEvent, serde_json::Error> {
        Ok(match t {
            dispatch::READY => GatewayEvent::Ready {
                session_id: d["session_id"].as_str().unwrap_or_default().to_owned(),
            },
            dispatch::RESUMED => GatewayEvent::Resumed,
            dispatch::PRESENCE_UPDATE => {
                let event: Event = serde_json::from_value(d)?;
                let previous = match &event.body {
                    EventBody::Presence(p) => cache.update(&p.jid, p.status),
                    _ => None,
                };
                GatewayEvent::Presence { event, previous }
            }
            dispatch::DM_MESSAGE_CREATE => GatewayEvent::DirectMessage(serde_json::from_value(d)?),
            dispatch::MESSAGE_CREATE => GatewayEvent::Message(serde_json::from_value(d)?),
            dispatch::MESSAGE_UNACKED => GatewayEvent::Unacked(serde_json::from_value(d)?),
            other => GatewayEvent::Other { t: other.to_owned(), d },
        })
    }

    /// The event record, for the dispatches that carry one.
    pub fn record(&self) -> Option<&Event> {
        match self {
            GatewayEvent::Presence { event, .. }
            | GatewayEvent::DirectMessage(event)
            | GatewayEvent::Message(event)
            | GatewayEvent::Unacked(event) => Some(event),
            _ => None,
        }
    }
}

/// What the user implements: called once per dispatch, from one of the
/// client's consumer tasks.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    async fn handle_event(&self, dispatch: Dispatch);
}
