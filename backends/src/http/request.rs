//! Building the request: body by format, and the Standard Webhooks
//! signature (`webhook-id`, `webhook-timestamp`, `webhook-signature`).

use base64::Engine;
use event_pusher_core::event::EventBody;
use event_pusher_core::{jid, Event};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// MongooseIM's form body:
/// `author=<sender localpart>&server=<sender domain>&receiver=<receiver localpart>&message=<body>`.
/// `None` for events that have no such form (not a chat message with a body).
pub fn form_body(event: &Event) -> Option<String> {
    let EventBody::Chat(c) = &event.body else { return None };
    let body = c.body.as_deref()?;
    Some(
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("author", jid::localpart(&c.from))
            .append_pair("server", jid::domain(&c.from))
            .append_pair("receiver", jid::localpart(&c.to))
            .append_pair("message", body)
            .finish(),
    )
}

/// The `webhook-signature` value: `v1,` + base64(HMAC-SHA256(key,
/// "{id}.{timestamp}.{body}")).
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_pusher_core::HookTranslator;

    #[test]
    fn signature_matches_the_standard_webhooks_reference() {
        // The example from the Standard Webhooks specification.
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn form_body_is_mongooseim_shaped() {
        let e = HookTranslator
            .translate(&serde_json::json!({"hook":"user_send_message","from":"alice@localhost/phone","to":"bob@example.com","type":"chat","body":"hi & bye"}))
            .unwrap();
        assert_eq!(
            form_body(&e).unwrap(),
            "author=alice&server=localhost&receiver=bob&message=hi+%26+bye"
        );
        let p = HookTranslator
            .translate(&serde_json::json!({"hook":"user_available","jid":"a@x"}))
            .unwrap();
        assert_eq!(form_body(&p), None);
    }
}
