//! event-pusher core: the standard event record, the hook translators that
//! produce it, the priority-ordered handler chain, and the durable spool and
//! delivery engine that carry claimed events to backends.
//!
//! Everything here is backend-agnostic: a backend is anything implementing
//! [`Backend`], a filter anything implementing [`Filter`].

pub mod backend;
pub mod backend_id;
pub mod backend_lookup;
pub mod chain;
pub mod class;
pub mod command;
pub mod delivery;
pub mod delivery_order;
pub mod hook;
pub mod hook_call;
mod hook_error;
pub mod ingest;
pub mod metrics;
pub mod operational;
pub mod slot;
pub mod spool;
pub mod state_change;
pub mod state_router;
pub mod subscriptions;
pub mod token;

/// The event record and JIDs live in their own crate (the gateway SDK
/// reads them too); these paths stay as they were.
pub use event_pusher_event::{event, jid};

pub use backend::{
    one_by_one, AnyBackend, Attachment, Backend, BackendError, Claims, Deliver, Delivery, DeliveryError, ScopedState,
    Targets,
};
pub use backend_id::BackendId;
pub use chain::{Chain, ChainBuilder, ChainOutcome, Filter, Verdict};
pub use class::{EventClass, EventClasses};
pub use command::{CommandError, CommandHook, CommandHooks, CommandOutcome, CommandReport};
pub use event::{
    Chat, ChatType, Direction, Event, EventBody, MetaValue, Metadata, Operational, Presence, PresenceStatus, Unacked,
};
pub use hook::{HookError, HookProblem, HookTranslator};
pub use ingest::{Accepted, IngestError, InvalidCall, KeyedOutcome, Pipeline};
pub use slot::{Slot, SlotRegistry};
pub use state_change::{Changes, StateChange, StateSink};
pub use state_router::StateRouter;
