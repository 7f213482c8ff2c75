//! `[server] listen`: an `IP:PORT` or `HOST:PORT`, resolved once when the
//! config is read, so that `localhost:8088` works as operators expect and a
//! name that does not resolve is reported at its line and column.

use std::net::{SocketAddr, ToSocketAddrs};

use serde::{Deserialize, Deserializer};

const EXPECTED: &str = "expected IP:PORT or HOST:PORT, e.g. \"127.0.0.1:8088\", \"[::1]:8088\" or \"localhost:8088\"";

/// Deserialize `listen`, resolving a host name to its first address
/// (IPv4 first when the name has both, as `localhost` usually does).
pub fn listen_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    resolve(&text).map_err(serde::de::Error::custom)
}

/// Why `listen` names no address to bind.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("\"{0}\" has no port; {EXPECTED}")]
    NoPort(String),
    #[error("\"{0}\" has no host; {EXPECTED}")]
    NoHost(String),
    #[error("\"{text}\": port \"{port}\" is not a number from 0 to 65535; {EXPECTED}")]
    BadPort { text: String, port: String },
    #[error("cannot resolve host \"{host}\": {source}; {EXPECTED}")]
    Resolve { host: String, source: std::io::Error },
    #[error("host \"{0}\" has no address; {EXPECTED}")]
    NoAddress(String),
}

pub(crate) fn resolve(text: &str) -> Result<SocketAddr, ListenError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(ListenError::NoPort(text.to_owned()));
    };
    if host.is_empty() {
        return Err(ListenError::NoHost(text.to_owned()));
    }
    if port.parse::<u16>().is_err() {
        return Err(ListenError::BadPort {
            text: text.to_owned(),
            port: port.to_owned(),
        });
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|source| ListenError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| ListenError::NoAddress(host.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_addresses_and_host_names() {
        assert_eq!(resolve("127.0.0.1:8088").unwrap().to_string(), "127.0.0.1:8088");
        assert_eq!(resolve("[::1]:9").unwrap().to_string(), "[::1]:9");
        let local = resolve("localhost:8088").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 8088, "{local}");
    }

    #[test]
    fn says_what_is_wrong_and_what_is_expected() {
        let e = resolve("localhost").unwrap_err().to_string();
        assert!(e.contains("no port") && e.contains("HOST:PORT"), "{e}");
        let e = resolve("localhost:http").unwrap_err().to_string();
        assert!(e.contains("port \"http\""), "{e}");
        let e = resolve(":80").unwrap_err().to_string();
        assert!(e.contains("no host"), "{e}");
        let e = resolve("no-such-host.invalid:80").unwrap_err().to_string();
        assert!(e.contains("cannot resolve host \"no-such-host.invalid\""), "{e}");
    }
}
