//! What a push provider implements: send one notification to one device.
//!
//! The push backend (registry, presence, fan-out, metrics, pruning) is
//! provider-agnostic; each provider module (`fcm`, `apns`, `webpush`,
//! `mongoosepush`) turns a [`Notification`] for a [`Device`] into its own wire
//! format, holds its own credentials (OAuth token, JWT, VAPID key) and maps
//! its answers to [`Sent`] or a [`DeliveryError`]. Retries, dead letters and
//! per-device order are the delivery engine's job, as for every backend.

use std::collections::BTreeMap;

use async_trait::async_trait;
use event_pusher_core::{BackendError, DeliveryError};

/// Production or sandbox (APNs), as registered with the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Prod,
    Dev,
}

/// Which service MongoosePush forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Fcm,
    Apns,
}

/// How to reach one device, by provider (the registry's stored form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// FCM registration token.
    Fcm { token: String },
    /// APNs device token (hex).
    Apns { token: String, mode: Mode },
    /// A browser's `PushSubscription`: endpoint URL and its keys (base64url).
    WebPush {
        endpoint: String,
        p256dh: String,
        auth: String,
    },
    /// MongoosePush: the device id is in the URL path; the service and mode
    /// go in the body.
    MongoosePush { service: Service, mode: Mode },
}

/// One registered device of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The user's bare JID.
    pub jid: String,
    /// The id the client registered the device under (unique per user).
    pub device_id: String,
    pub address: Address,
    /// Data-only notifications (no title/body shown).
    pub silent: bool,
}

/// What to show and carry, already shaped by the backend's `content`
/// setting; providers only map it to their wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The event id (ULID): FCM/APNs message ids are derived from it.
    pub event_id: String,
    /// `None` for silent devices and for `content = "none"` bodies.
    pub title: Option<String>,
    pub body: Option<String>,
    /// Notifications sent to the recipient since it was last online.
    pub badge: u64,
    /// `event_id`, `message_id`, `from`, `type`, `message_count` and the
    /// event's metadata, all as strings.
    pub data: BTreeMap<String, String>,
    /// True when the device is silent: send data only.
    pub silent: bool,
}

/// A send the provider answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Accepted by the provider.
    Delivered,
    /// The provider says the token/subscription is no longer valid (FCM 404
    /// UNREGISTERED, APNs 410 / BadDeviceToken, Web Push 404/410,
    /// MongoosePush 410): the backend removes the device; not a failure.
    Invalid { reason: String },
}

/// One push provider. Implementations keep their credentials and refresh
/// them themselves: on a credential rejection (FCM 401, APNs 403
/// ExpiredProviderToken / InvalidProviderToken) they get a fresh one and
/// retry once inside `send`; if that is rejected too they report not ready
/// until a later send succeeds, and return a retryable error so the queue
/// holds.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// `fcm`, `apns`, `webpush` or `mongoosepush` (metric label).
    fn name(&self) -> &'static str;

    /// Load keys, fetch a first credential. Retried by the engine on error.
    async fn start(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// False after a credential was rejected twice in a row.
    fn is_ready(&self) -> bool {
        true
    }

    /// Send one notification to one device. Network errors, 429 (with
    /// `Retry-After` as `retry_after`) and 5xx are retryable errors; other
    /// 4xx that do not mean "invalid token" are permanent errors.
    async fn send(&self, device: &Device, note: &Notification) -> Result<Sent, DeliveryError>;
}
