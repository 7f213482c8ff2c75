//! Whether a backend keeps each user's events in order: a setting of the
//! delivery queue that a backend may also impose (`Backend::ordering`).

/// Whether a backend keeps each user's events in order (`ordering` in
/// config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryOrder {
    /// One event per user in flight, in spool order (the default): a hot
    /// user's backlog drains one request at a time.
    #[default]
    PerUser,
    /// No per-user order: every event may go out at once, so one user's
    /// backlog drains at full concurrency. For receivers that order by the
    /// event's timestamp or id themselves.
    Unordered,
}
