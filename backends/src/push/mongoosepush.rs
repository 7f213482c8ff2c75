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
use super::provider::{Address, Device, Notification, Provider, Sent};

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

/// The v3 body.
pub fn body(service: &str, mode: &str, note: &Notification) -> Value {
    let mut body = json!({
        "service": service,
        "mode": mode,
        "data": note.data,
        "priority": "high",
    });
    if !note.silent {
        // `content = "none"` has no body: the key is left out, not empty.
        let mut alert = json!({"badge": note.badge});
        if let Some(t) = &note.title {
            alert["title"] = json!(t);
        }
        if let Some(b) = &note.body {
            alert["body"] = json!(b);
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
        match super::send_json(req, &body(service_name(*service), mode_name(*mode), note)).await? {
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
