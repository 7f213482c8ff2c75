//! The one way to open an AMQP connection: the rabbit backend's lanes, the
//! AMQP ingest source and the `publish` / `declare-topology` commands all
//! connect here, from the same validated URI, with the same bound on the
//! handshake and a connection name that says who holds it.
//!
//! Everything a connection can be tuned with travels in the URI, as
//! RabbitMQ documents it: `amqps://` for TLS (rustls, system roots),
//! `?heartbeat=30` for the heartbeat interval (default: the broker's
//! proposal, 60 s on RabbitMQ), `?connection_timeout=` in ms, `?frame_max=`,
//! `?channel_max=`.

use std::fmt;
use std::time::Duration;

use lapin::types::LongString;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use serde::{Deserialize, Deserializer};

/// How long connecting (TCP, TLS, AMQP handshake) may take before the
/// broker counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a URI is not a usable AMQP URI. The messages never repeat the
/// password.
#[derive(Debug, thiserror::Error)]
pub enum AmqpUrlError {
    #[error("invalid AMQP URI: {0} (expected amqp://user:password@host:5672/vhost)")]
    NotAUrl(#[source] url::ParseError),
    #[error("AMQP URI \"{redacted}\" must start with amqp:// or amqps://, not {scheme}://")]
    Scheme { redacted: String, scheme: String },
    #[error("AMQP URI \"{0}\" has no host")]
    NoHost(String),
    #[error("invalid AMQP URI \"{redacted}\": {reason}")]
    Invalid { redacted: String, reason: String },
}

/// A validated AMQP URI. Debug and Display hide the password, so the value
/// can be logged and put in error messages.
#[derive(Clone)]
pub struct AmqpUrl {
    uri: AMQPUri,
    redacted: String,
}

impl AmqpUrl {
    pub fn parse(s: &str) -> Result<AmqpUrl, AmqpUrlError> {
        // Never echo the raw value: it usually holds a password. The config
        // error already points at the line.
        let url = url::Url::parse(s).map_err(AmqpUrlError::NotAUrl)?;
        let mut shown = url.clone();
        if shown.password().is_some() {
            // Only fails for URLs that cannot have credentials, and this one has some.
            let _ = shown.set_password(Some("***"));
        }
        let redacted = shown.to_string();
        if !matches!(url.scheme(), "amqp" | "amqps") {
            return Err(AmqpUrlError::Scheme {
                redacted,
                scheme: url.scheme().to_owned(),
            });
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => None,
            Some(url::Host::Ipv4(ip)) => Some(ip.to_string()),
            Some(url::Host::Ipv6(ip)) => Some(ip.to_string()),
            _ => return Err(AmqpUrlError::NoHost(redacted)),
        };
        // amq-protocol-uri's error is a plain string (and never holds the
        // password: it names the bad part).
        let mut uri: AMQPUri = s.parse().map_err(|reason: String| AmqpUrlError::Invalid {
            redacted: redacted.clone(),
            reason,
        })?;
        // amq-protocol-uri only keeps domain names and silently replaces an IP
        // address with "localhost"; put the address back.
        if let Some(ip) = host {
            uri.authority.host = ip;
        }
        Ok(AmqpUrl { uri, redacted })
    }

    /// The parsed URI to connect with.
    pub fn uri(&self) -> &AMQPUri {
        &self.uri
    }

    /// The URI with its password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

impl fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AmqpUrl({})", self.redacted)
    }
}

impl fmt::Display for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl<'de> Deserialize<'de> for AmqpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AmqpUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a connection could not be opened (the URL shown without password).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to RabbitMQ at {url}: no answer within {:?}", CONNECT_TIMEOUT)]
    TimedOut { url: String },
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Refused { url: String, source: lapin::Error },
}

/// Open a connection to `url`, named `name` in the broker's connection
/// list (what `rabbitmqctl list_connections client_properties` and the
/// management UI show), within [`CONNECT_TIMEOUT`].
pub async fn connect(url: &AmqpUrl, name: &str) -> Result<Connection, ConnectError> {
    let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
    // From the parsed URI, not a string: a string would turn an IP host
    // into `localhost` (see `AmqpUrl::parse`).
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(url.uri().clone(), props)).await {
        Err(_) => Err(ConnectError::TimedOut { url: url.to_string() }),
        Ok(Err(source)) => Err(ConnectError::Refused {
            url: url.to_string(),
            source,
        }),
        Ok(Ok(connection)) => Ok(connection),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_the_uri_without_leaking_the_password() {
        let e = AmqpUrl::parse("http://guest:hunter2@host/").unwrap_err().to_string();
        assert!(
            e.contains("amqp://") && e.contains("http://") && !e.contains("hunter2"),
            "{e}"
        );
        let e = AmqpUrl::parse("not a uri hunter2").unwrap_err().to_string();
        assert!(e.contains("invalid AMQP URI") && !e.contains("hunter2"), "{e}");
        let e = AmqpUrl::parse("amqp://guest:hunter2@:5672/").unwrap_err().to_string();
        assert!(e.contains("host") && !e.contains("hunter2"), "{e}");
        let e = AmqpUrl::parse("amqp://guest:hunter2@host/?heartbeat=soon")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid AMQP URI") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn keeps_ip_hosts_vhost_and_options() {
        let u = AmqpUrl::parse("amqp://guest:secret@10.1.2.3:5673/%2f").unwrap();
        assert_eq!(u.uri().authority.host, "10.1.2.3");
        assert_eq!(u.uri().authority.port, 5673);
        assert_eq!(u.uri().vhost, "/");
        assert_eq!(u.redacted(), "amqp://guest:***@10.1.2.3:5673/%2f");
        assert!(!format!("{u:?}").contains("secret"));
        let u = AmqpUrl::parse("amqp://[::1]:5672/prod").unwrap();
        assert_eq!(u.uri().authority.host, "::1");
        assert_eq!(u.uri().vhost, "prod");
        let u = AmqpUrl::parse("amqps://user:pw@rabbit.example.com/?heartbeat=15").unwrap();
        assert_eq!(u.uri().authority.host, "rabbit.example.com");
        assert_eq!(u.uri().authority.port, 5671);
        assert_eq!(u.uri().query.heartbeat, Some(15));
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_url_without_password() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = AmqpUrl::parse(&format!("amqp://guest:hunter2@127.0.0.1:{port}/%2f")).unwrap();
        let e = connect(&url, "test").await.unwrap_err().to_string();
        assert!(
            e.contains(&format!("127.0.0.1:{port}")) && !e.contains("hunter2"),
            "{e}"
        );
    }
}
