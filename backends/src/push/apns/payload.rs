//! What one APNs request carries: where it goes, its `apns-id`, its body.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::push::provider::{Mode, Notification, Priority, PublishOptions};

pub const PRODUCTION_URL: &str = "https://api.push.apple.com";
pub const SANDBOX_URL: &str = "https://api.sandbox.push.apple.com";
/// The largest JSON payload APNs takes for alert and background pushes.
pub const MAX_PAYLOAD: usize = 4096;

/// The base URL for a device: `endpoint_url` when configured, else
/// production for `prod` devices and the sandbox for `dev` ones.
pub fn endpoint_for(mode: Mode, configured: Option<&url::Url>) -> String {
    match (configured, mode) {
        (Some(url), _) => url.as_str().trim_end_matches('/').to_owned(),
        (None, Mode::Prod) => PRODUCTION_URL.to_owned(),
        (None, Mode::Dev) => SANDBOX_URL.to_owned(),
    }
}

/// `{endpoint}/3/device/{token}`.
pub fn device_url(endpoint: &str, token: &str) -> String {
    format!("{endpoint}/3/device/{token}")
}

/// APNs device tokens are hex; anything else would change the URL's path,
/// and APNs would only answer `BadDeviceToken`.
pub fn is_device_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= 200 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The `apns-id`: a UUID derived from the event id (the first 16 bytes of
/// its SHA-256, stamped as a version 8 UUID), so every attempt for one
/// event carries the same id and APNs' answers can be matched to events.
pub fn apns_id(event_id: &str) -> String {
    let digest = Sha256::digest(event_id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8: custom
    b[8] = (b[8] & 0x3f) | 0x80; // variant: RFC 9562
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// `{"aps": {"alert": {"title", "body"}, "badge": N, "sound": "default"}, ...data}`,
/// or for a silent device `{"aps": {"content-available": 1}, ...data}`.
/// The device's options: `sound` replaces `"default"`, `mutable_content`
/// adds `"mutable-content": 1`, `click_action` is the `category`.
/// A data key named `aps` cannot replace the real one.
pub fn body(note: &Notification, options: &PublishOptions) -> Value {
    let aps = if note.silent {
        json!({"content-available": 1})
    } else {
        let mut alert = Map::new();
        if let Some(title) = &note.title {
            alert.insert("title".into(), title.as_str().into());
        }
        if let Some(body) = &note.body {
            alert.insert("body".into(), body.as_str().into());
        }
        let sound = options.sound.as_deref().unwrap_or("default");
        let mut aps = json!({"alert": alert, "badge": note.badge, "sound": sound});
        if options.mutable_content {
            aps["mutable-content"] = json!(1);
        }
        if let Some(category) = &options.click_action {
            aps["category"] = json!(category);
        }
        aps
    };
    let mut top: Map<String, Value> = note
        .data
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    top.insert("aps".into(), aps);
    Value::Object(top)
}

/// `apns-push-type`: alerts, or `background` for a silent device.
pub fn push_type(silent: bool) -> &'static str {
    if silent {
        "background"
    } else {
        "alert"
    }
}

/// `apns-priority`: 10 (now) unless the device asked for `normal`, 5;
/// silent pushes always 5, as Apple requires for `background`.
pub fn apns_priority(priority: Priority, silent: bool) -> &'static str {
    match (priority, silent) {
        (Priority::High, false) => "10",
        _ => "5",
    }
}

/// `apns-expiration` for a time to live: a UNIX time, or 0 for "now or
/// never".
pub fn apns_expiration(ttl_s: u64) -> String {
    if ttl_s == 0 {
        "0".to_owned()
    } else {
        (crate::push::es256::unix_now() + ttl_s).to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn chooses_production_or_sandbox_by_mode_unless_configured() {
        assert_eq!(endpoint_for(Mode::Prod, None), "https://api.push.apple.com");
        assert_eq!(endpoint_for(Mode::Dev, None), "https://api.sandbox.push.apple.com");
        let configured = url::Url::parse("https://127.0.0.1:8443/").unwrap();
        assert_eq!(endpoint_for(Mode::Dev, Some(&configured)), "https://127.0.0.1:8443");
        assert_eq!(endpoint_for(Mode::Prod, Some(&configured)), "https://127.0.0.1:8443");
        assert_eq!(
            device_url(&endpoint_for(Mode::Dev, None), "ab12"),
            "https://api.sandbox.push.apple.com/3/device/ab12"
        );
    }

    #[test]
    fn apns_id_is_a_stable_uuid_per_event() {
        let id = apns_id("01JC0000000000000000000000");
        assert_eq!(id, apns_id("01JC0000000000000000000000"));
        assert_ne!(id, apns_id("01JC0000000000000000000001"));
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert!(parts[2].starts_with('8'));
    }

    #[test]
    fn device_tokens_are_hex() {
        assert!(is_device_token("0123abcdEF"));
        assert!(!is_device_token(""));
        assert!(!is_device_token("ab/../x"));
    }

    #[test]
    fn bodies_for_alert_and_silent_devices() {
        let mut note = Notification {
            event_id: "e1".into(),
            title: Some("alice@localhost".into()),
            body: None,
            badge: 3,
            data: BTreeMap::from([("from".into(), "alice@localhost".into()), ("aps".into(), "x".into())]),
            silent: false,
            collapse_key: None,
            last_sender: None,
        };
        assert_eq!(
            body(&note, &PublishOptions::default()),
            json!({"aps": {"alert": {"title": "alice@localhost"}, "badge": 3, "sound": "default"}, "from": "alice@localhost"})
        );
        note.silent = true;
        assert_eq!(
            body(&note, &PublishOptions::default()),
            json!({"aps": {"content-available": 1}, "from": "alice@localhost"})
        );
    }
}
