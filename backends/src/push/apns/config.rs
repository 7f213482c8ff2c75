//! `[backends.push.NAME.apns]`

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// The `.p8` token key from the Apple developer account (PKCS#8 P-256).
    pub key_file: PathBuf,
    /// The key's id (the JWT's `kid`).
    #[serde(deserialize_with = "printable_ascii")]
    pub key_id: String,
    /// The developer team id (the JWT's `iss`).
    #[serde(deserialize_with = "printable_ascii")]
    pub team_id: String,
    /// The app's bundle id (`apns-topic`).
    #[serde(deserialize_with = "printable_ascii")]
    pub topic: String,
    /// Where to send every device's notifications; unset: production or
    /// sandbox by the device's mode.
    #[serde(default, deserialize_with = "endpoint_url")]
    pub endpoint_url: Option<url::Url>,
    /// An extra trusted root (PEM), for a test server.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Ids and the topic go into a header or a JWT as they are: non-empty,
/// printable ASCII, no spaces.
fn printable_ascii<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(serde::de::Error::custom(format!(
            "\"{s}\" must be non-empty printable ASCII without spaces"
        )));
    }
    Ok(s)
}

fn endpoint_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<url::Url>, D::Error> {
    crate::http::config::http_url(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_contract_keys() {
        let c: ApnsConfig = toml::from_str(
            r#"
            key_file = "/etc/event-pusher/AuthKey_ABC123DEFG.p8"
            key_id = "ABC123DEFG"
            team_id = "DEF123GHIJ"
            topic = "com.example.chat"
            endpoint_url = "https://api.push.apple.com"
            ca_file = "/path/ca.pem"
            "#,
        )
        .unwrap();
        assert_eq!(c.key_id, "ABC123DEFG");
        assert_eq!(c.endpoint_url.unwrap().as_str(), "https://api.push.apple.com/");
        assert_eq!(c.ca_file.unwrap(), PathBuf::from("/path/ca.pem"));
    }

    #[test]
    fn names_the_bad_key() {
        let base = "key_file = \"k.p8\"\nkey_id = \"K\"\nteam_id = \"T\"\n";
        let e = toml::from_str::<ApnsConfig>(&format!("{base}topic = \"com.example chat\"")).unwrap_err();
        assert!(
            e.to_string().contains("topic") && e.to_string().contains("printable ASCII"),
            "{e}"
        );
        let e = toml::from_str::<ApnsConfig>(&format!("{base}topic = \"t\"\nendpoint_url = \"ftp://x\"")).unwrap_err();
        assert!(e.to_string().contains("endpoint_url"), "{e}");
        let e = toml::from_str::<ApnsConfig>(&format!("{base}topic = \"t\"\nkeyfile = \"x\"")).unwrap_err();
        assert!(e.to_string().contains("keyfile"), "{e}");
    }
}
