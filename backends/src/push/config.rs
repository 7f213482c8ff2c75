//! `[backends.push.NAME]` and its provider tables (contract:
//! `docs/backends/push.md`). Each provider table is optional; a device can
//! only be registered for a provider that is configured.

use std::path::PathBuf;

use event_pusher_core::EventClass;
use serde::Deserialize;

use crate::common::backend_config;
use crate::http::config::http_url;

/// What a notification shows (privacy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Content {
    /// Title: the sender's bare JID; body: the message body.
    #[default]
    Full,
    /// Title: the sender; body: "New message".
    Sender,
    /// Title: "New message"; no body.
    None,
}

backend_config! {
// The contract's default: the classes that can push.
default_events = event_pusher_config::EventClassList(
    [EventClass::Chat, EventClass::Groupchat, EventClass::Unacked].into_iter().collect()
);
pub struct PushConfig {
    /// chat/groupchat push only when the recipient has no online resource.
    #[serde(default = "yes")]
    pub offline_only: bool,
    #[serde(default)]
    pub content: Content,
    /// Merge a conversation's notifications to a device within this many
    /// ms after one was sent into one trailing notification (0: off).
    #[serde(default)]
    pub coalesce_ms: u64,
    #[serde(default)]
    pub fcm: Option<FcmConfig>,
    #[serde(default)]
    pub mongoosepush: Option<MongoosePushConfig>,
    #[serde(default)]
    pub apns: Option<super::apns::ApnsConfig>,
    #[serde(default)]
    pub webpush: Option<super::webpush::WebPushConfig>,
}
}

fn yes() -> bool {
    true
}

/// `[backends.push.NAME.fcm]`: FCM HTTP v1 with a service account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// Google service-account JSON (`project_id`, `client_email`,
    /// `private_key`, `token_uri`).
    pub service_account_file: PathBuf,
    /// Where `/v1/projects/{id}/messages:send` lives; for tests.
    #[serde(default = "fcm_endpoint", deserialize_with = "http_url")]
    pub endpoint_url: url::Url,
}

fn fcm_endpoint() -> url::Url {
    // A constant that parses.
    url::Url::parse("https://fcm.googleapis.com").expect("constant URL")
}

/// `[backends.push.NAME.mongoosepush]`: a MongoosePush service (v3 API).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoosePushConfig {
    #[serde(deserialize_with = "http_url")]
    pub url: url::Url,
}

/// The URL without a trailing slash, to append paths to.
pub(crate) fn base(url: &url::Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use event_pusher_core::EventClass;

    use super::*;
    use crate::common::BackendConfig;

    #[test]
    fn events_default_to_the_classes_that_push_and_providers_are_optional() {
        let c: PushConfig = toml::from_str("offline_only = false").unwrap();
        let events = c.common().events.0;
        for class in [EventClass::Chat, EventClass::Groupchat, EventClass::Unacked] {
            assert!(events.contains(class));
        }
        assert!(!events.contains(EventClass::Presence));
        assert!(c.fcm.is_none() && c.mongoosepush.is_none() && c.apns.is_none() && c.webpush.is_none());
        assert_eq!(c.content, Content::Full);
        let c: PushConfig = toml::from_str("events = [\"chat\"]\ncontent = \"none\"").unwrap();
        assert!(!c.common().events.0.contains(EventClass::Unacked));
        assert!(toml::from_str::<PushConfig>("content = \"everything\"").is_err());
        assert!(
            toml::from_str::<PushConfig>("[fcm]\nendpoint_url = \"https://x\"").is_err(),
            "file required"
        );
    }
}
