//! MongoosePush v3: `POST {url}/v3/notification/{device_id}` with
//! `{"service", "mode", "alert": {"title", "body", "badge"}, "data",
//! "priority": "high"}` (silent: no `alert`). 2xx delivered; 410 means the
//! device is gone ([`Sent::Invalid`]); anything else by the transport's
//! status policy (408, 429, 5xx retried).

use async_trait::async_trait;
use event_pusher_core::{BackendError, DeliveryError};
use serde_json::{json, Value};

use super::config::{base, MongoosePushConfig};
use super::devices::{mode_name, service_name};
use super::provider::{collapse_id, Address, Device, Notification, Priority, Provider, PublishOptions, Sent};

pub struct MongoosePushProvider {
    client: reqwest::Client,
    base: String,
}

impl MongoosePushProvider {
    pub fn new(config: &MongoosePushConfig) -> Result<Self, BackendError> {
        Ok(MongoosePushProvider {
            client: super::http_client()?,
            base: base(&config.url),
        })
    }
}

/// `value` as one URL path segment: every byte but the unreserved ones
/// (`A-Z a-z 0-9 - . _ ~`) percent-encoded, so `a b` is `a%20b` (not `a+b`,
/// another device) and `/`, `?`, `#` stay inside the segment. `None` for
/// empty, `.` and `..`, which a URL parser would treat as path steps
/// however they are encoded.
pub(crate) fn path_segment(value: &str) -> Option<String> {
    if matches!(value, "" | "." | "..") {
        return None;
    }
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Some(out)
}

/// The v3 body, with the device's publish options (`priority`,
/// `time_to_live`, `mutable_content`, `topic`, `alert.sound`,
/// `alert.click_action`), the conversation's collapse key as `alert.tag`
/// (v3 has no collapse field; Android replaces a shown notification of the
/// same tag), and MongooseIM's form fields in `data`: `message-count`,
/// `last-message-sender`, `last-message-body`.
pub fn body(service: &str, mode: &str, note: &Notification, options: &PublishOptions) -> Value {
    let mut data: serde_json::Map<String, Value> = note.data.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    data.insert("message-count".into(), json!(note.badge.to_string()));
    if let Some(sender) = &note.last_sender {
        data.insert("last-message-sender".into(), json!(sender));
    }
    if let Some(b) = &note.body {
        data.insert("last-message-body".into(), json!(b));
    }
    let mut body = json!({
        "service": service,
        "mode": mode,
        "data": data,
        "priority": options.priority.unwrap_or(Priority::High).as_str(),
    });
    if let Some(ttl) = options.time_to_live_s {
        body["time_to_live"] = json!(ttl);
    }
    if options.mutable_content {
        body["mutable_content"] = json!(true);
    }
    if let Some(topic) = &options.topic {
        body["topic"] = json!(topic);
    }
    if !note.silent {
        // `content = "none"` has no body: the key is left out, not empty.
        let mut alert = json!({"badge": note.badge});
        if let Some(t) = &note.title {
            alert["title"] = json!(t);
        }
        if let Some(b) = &note.body {
            alert["body"] = json!(b);
        }
        if let Some(sound) = &options.sound {
            alert["sound"] = json!(sound);
        }
        if let Some(action) = &options.click_action {
            alert["click_action"] = json!(action);
        }
        if let Some(key) = &note.collapse_key {
            alert["tag"] = json!(collapse_id(key));
        }
        body["alert"] = alert;
    }
    body
}

#[async_trait]
impl Provider for MongoosePushProvider {
    fn name(&self) -> &'static str {
        "mongoosepush"
    }

    async fn send(&self, device: &Device, note: &Notification) -> Result<Sent, DeliveryError> {
        let Address::MongoosePush { service, mode } = &device.address else {
            return Err(DeliveryError::permanent("not a MongoosePush device"));
        };
        let Some(id) = path_segment(&device.device_id) else {
            // Refused at registration; a record stored before cannot be
            // sent without climbing out of the path.
            return Err(DeliveryError::permanent(format!(
                "device_id \"{}\" cannot be a path segment",
                device.device_id
            )));
        };
        let req = self.client.post(format!("{}/v3/notification/{id}", self.base));
        match super::send_json(
            req,
            &body(service_name(*service), mode_name(*mode), note, &device.options),
        )
        .await?
        {
            Ok(()) => Ok(Sent::Delivered),
            Err(refusal) if refusal.status == 410 => Ok(Sent::Invalid {
                reason: format!("MongoosePush 410: {}", refusal.body.trim()),
            }),
            Err(refusal) => {
                let message = refusal.describe();
                Err(refusal.into_error(message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::path_segment;

    #[test]
    fn device_ids_stay_one_path_segment() {
        assert_eq!(path_segment("a b").as_deref(), Some("a%20b"));
        assert_eq!(path_segment("a/../b?c#d").as_deref(), Some("a%2F..%2Fb%3Fc%23d"));
        assert_eq!(path_segment("é").as_deref(), Some("%C3%A9"));
        assert_eq!(path_segment(".."), None);
        assert_eq!(path_segment("."), None);
        assert_eq!(path_segment(""), None);
    }
}
