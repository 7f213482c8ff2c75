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

/// How urgently a device's notifications are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    High,
    Normal,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
        }
    }
}

/// A device's publish options, registered with it; each provider maps
/// them to its own fields (`docs/backends/push.md`). Unset: the
/// provider's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishOptions {
    pub priority: Option<Priority>,
    /// A sound name (APNs `aps.sound`, FCM `android.notification.sound`).
    pub sound: Option<String>,
    /// Let the app's notification service extension change it (APNs).
    pub mutable_content: bool,
    /// How long the provider keeps an undelivered notification; 0: deliver
    /// now or never.
    pub time_to_live_s: Option<u64>,
    /// APNs topic (bundle id) for this device, instead of the configured one.
    pub topic: Option<String>,
    /// What opening the notification does (FCM `click_action`, APNs `category`).
    pub click_action: Option<String>,
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
    pub options: PublishOptions,
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
    /// One per (recipient, conversation): the recipient's bare JID and the
    /// peer's bare JID (chat) or the room's (groupchat). Providers send it
    /// in their collapse field, so a newer notification of a conversation
    /// replaces the older one. `None` when there is no peer (an unacked
    /// message without `from`).
    pub collapse_key: Option<String>,
    /// MongooseIM's `last-message-sender`: the sender's bare JID for chat,
    /// the full room JID (room/nick) for groupchat.
    pub last_sender: Option<String>,
}

/// The collapse key as one header-safe token of at most 64 bytes (APNs
/// `apns-collapse-id`, FCM `collapse_key`): the key itself when it is
/// short printable ASCII, else its SHA-256 in hex (64 characters).
pub fn collapse_id(key: &str) -> String {
    if key.len() <= 64 && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        key.to_owned()
    } else {
        use sha2::Digest;
        sha2::Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The collapse key as a Web Push `Topic` (RFC 8030 §5.4: at most 32
/// characters of the URL-safe base64 alphabet): its SHA-256, base64url,
/// first 32 characters.
pub fn web_push_topic(key: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let mut t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(key.as_bytes()));
    t.truncate(32);
    t
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
/// for a while, and return a retryable error; meanwhile the backend holds
/// that provider's devices' items (not sent, no attempt spent) while the
/// other providers' devices go on.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// `fcm`, `apns`, `webpush` or `mongoosepush` (metric label).
    fn name(&self) -> &'static str;

    /// Load keys, fetch a first credential. Retried by the engine on error.
    async fn start(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// After a credential was rejected twice in a row: how long the
    /// provider still holds its devices' notifications. `None`: ready.
    fn not_ready_for(&self) -> Option<std::time::Duration> {
        None
    }

    /// False after a credential was rejected twice in a row, for a while.
    fn is_ready(&self) -> bool {
        self.not_ready_for().is_none()
    }

    /// Send one notification to one device. Network errors, 429 (with
    /// `Retry-After` as `retry_after`) and 5xx are retryable errors; other
    /// 4xx that do not mean "invalid token" are permanent errors.
    async fn send(&self, device: &Device, note: &Notification) -> Result<Sent, DeliveryError>;
}
