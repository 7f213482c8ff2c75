//! `[egress]`: where URLs chosen through the API (webhook subscriptions,
//! Web Push endpoints) may point. The checks themselves are the backends'
//! (`event_pusher_backends::egress`); this is the operator's setting, read
//! with its position so a bad `allow_hosts` entry is reported where it is.

use std::net::IpAddr;

use serde::{Deserialize, Deserializer};

/// `[egress]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    /// Allow loopback, private, link-local, CGNAT, ... addresses (off by
    /// default: the API must not reach the metadata service or internal
    /// hosts).
    pub allow_private: bool,
    /// Exceptions: host names (exact, case-insensitive) or CIDRs.
    pub allow_hosts: Vec<HostRule>,
}

/// One `allow_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    /// A host name, lower-case, without a trailing dot.
    Name(String),
    /// An address range (`10.20.0.0/16`, `fd00::/8`, or one address).
    Net { addr: IpAddr, prefix: u8 },
}

/// Why an `allow_hosts` entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostRuleError {
    #[error("an allow_hosts entry is empty")]
    Empty,
    #[error("\"{entry}\": the prefix length must be 0 to {max}")]
    Prefix { entry: String, max: u8 },
    #[error("\"{0}\" is not a CIDR (address/prefix)")]
    NotCidr(String),
    #[error("\"{0}\" is neither a host name nor a CIDR")]
    NotAHost(String),
}

impl HostRule {
    /// Parse `name`, `addr` or `addr/prefix`.
    pub fn parse(s: &str) -> Result<HostRule, HostRuleError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(HostRuleError::Empty);
        }
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let bare = addr.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => match p.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => {
                        return Err(HostRuleError::Prefix {
                            entry: s.to_owned(),
                            max,
                        })
                    }
                },
            };
            return Ok(HostRule::Net { addr: ip, prefix });
        }
        if prefix.is_some() {
            return Err(HostRuleError::NotCidr(s.to_owned()));
        }
        let name = s.trim_end_matches('.').to_ascii_lowercase();
        let ok = name
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        if !ok {
            return Err(HostRuleError::NotAHost(s.to_owned()));
        }
        Ok(HostRule::Name(name))
    }

    /// Whether `ip` is in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let HostRule::Net { addr, prefix } = self else {
            return false;
        };
        match (addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => same_prefix(&net.octets(), &ip.octets(), *prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => same_prefix(&net.octets(), &ip.octets(), *prefix),
            _ => false,
        }
    }
}

/// Whether the first `prefix` bits of `a` and `b` are equal.
fn same_prefix(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (whole, rest) = (usize::from(prefix / 8), prefix % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[whole] & mask == b[whole] & mask
}

impl<'de> Deserialize<'de> for HostRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HostRule::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ranges() {
        let net = HostRule::parse("10.20.0.0/16").unwrap();
        assert!(net.contains("10.20.3.4".parse().unwrap()));
        assert!(!net.contains("10.21.0.1".parse().unwrap()));
        assert!(HostRule::parse("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap()));
        assert!(HostRule::parse("127.0.0.1")
            .unwrap()
            .contains("127.0.0.1".parse().unwrap()));
        assert_eq!(
            HostRule::parse("Hooks.Internal.Example.").unwrap(),
            HostRule::Name("hooks.internal.example".into())
        );
        assert!(HostRule::parse("10.0.0.0/33").is_err());
        assert!(HostRule::parse("a b").is_err());
        assert!(HostRule::parse("").is_err());
    }
}
