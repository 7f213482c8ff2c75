//! `[backends.push.NAME.webpush]`

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushConfig {
    /// The VAPID key: P-256 private key, PEM (SEC1 or PKCS#8).
    pub vapid_private_key_file: PathBuf,
    /// A contact for the push service's operator: `mailto:` or `https:`.
    #[serde(deserialize_with = "vapid_subject")]
    pub subject: String,
    /// How long the push service keeps an undelivered message (`TTL`).
    #[serde(default = "default_ttl_s")]
    pub ttl_s: u64,
}

fn default_ttl_s() -> u64 {
    86400
}

/// RFC 8292 §2.1: the `sub` claim is a `mailto:` or `https:` URI.
fn vapid_subject<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let well_formed = (s.starts_with("mailto:") && s.len() > "mailto:".len())
        || url::Url::parse(&s).is_ok_and(|u| u.scheme() == "https" && u.host().is_some());
    if !well_formed {
        return Err(serde::de::Error::custom(format!(
            "\"{s}\" must be a mailto: or https: URI (RFC 8292 contact)"
        )));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_contract_keys_with_the_default_ttl() {
        let c: WebPushConfig = toml::from_str(
            "vapid_private_key_file = \"/etc/event-pusher/vapid.pem\"\nsubject = \"mailto:ops@example.com\"",
        )
        .unwrap();
        assert_eq!(c.ttl_s, 86400);
        assert_eq!(c.subject, "mailto:ops@example.com");
    }

    #[test]
    fn names_the_bad_key() {
        let e = toml::from_str::<WebPushConfig>("vapid_private_key_file = \"k\"\nsubject = \"ops@example.com\"")
            .unwrap_err();
        assert!(
            e.to_string().contains("subject") && e.to_string().contains("mailto:"),
            "{e}"
        );
        let e = toml::from_str::<WebPushConfig>(
            "vapid_private_key_file = \"k\"\nsubject = \"https://example.com\"\nttl_s = -1",
        )
        .unwrap_err();
        assert!(e.to_string().contains("ttl_s"), "{e}");
        let e = toml::from_str::<WebPushConfig>(
            "vapid_private_key_file = \"k\"\nsubject = \"https://example.com\"\nttl = 5",
        )
        .unwrap_err();
        assert!(e.to_string().contains("ttl"), "{e}");
    }
}
