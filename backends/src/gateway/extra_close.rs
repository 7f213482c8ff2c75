//! Close codes of the WebSocket layer (RFC 6455) and the gateway's own
//! beyond the contract's table.

/// A frame or message over the size limit.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// A WebSocket protocol violation (bad framing, unmasked frame, ...).
pub const PROTOCOL_ERROR: u16 = 1002;
/// A text frame that is not UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// Too many connections: the oldest unidentified one makes room, or
/// `max_sessions` were taken while this one identified. Try again.
pub const TRY_AGAIN_LATER: u16 = 1013;
/// The session was resumed on another connection, which replaced this
/// one (do not resume from here: the session lives on elsewhere).
pub const SESSION_REPLACED: u16 = 4006;
