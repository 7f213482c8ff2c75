//! The event record: what event-pusher accepts from a chat server, stores,
//! and sends to every backend and consumer (`event`: chat, presence,
//! unacked, with metadata; its one-pass reader in `event_de`), and the JID
//! helpers it is built with (`jid`).
//!
//! A crate of its own so that consumers (the gateway SDK) read the same
//! record the sidecar writes without compiling the sidecar. The sidecar's
//! core re-exports it (`event_pusher_core::event`, `::jid`).

pub mod event;
mod event_de;
pub mod jid;

pub use event::{Chat, ChatType, Direction, Event, EventBody, MetaValue, Metadata, Presence, PresenceStatus, Unacked};
