//! The egress guard: URLs that arrive through the API (webhook
//! subscriptions, Web Push endpoints) must not make the sidecar reach the
//! cloud metadata service or internal hosts (SSRF).
//!
//! Three places use it:
//! - at attach time, [`Egress::check_url`] refuses a URL whose host is, in
//!   any spelling, or resolves to a private address, or is a reserved name
//!   (`localhost`, `metadata.google.internal`), unless `[egress]` allows it;
//! - at connect time, [`GuardedResolver`] (the DNS resolver of the clients
//!   that deliver to those URLs) refuses again what a name resolves to
//!   *now* (DNS rebinding), and [`Egress::check_literal`] covers hosts
//!   written as addresses, which reqwest connects to without resolving;
//! - [`reserved_header`] names the headers a configured or subscribed set
//!   of custom headers may not set (framing and signatures are ours).
//!
//! Backends written in the config file are the operator's own and are not
//! checked. The policy is the process's (one `[egress]` table), installed
//! once at start by [`install`]; until then everything is allowed, so a
//! library user that never installs one sees no change.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use event_pusher_config::{EgressConfig, HostRule};
use url::{Host, Url};

/// How long an attach-time lookup may take; a name that does not resolve
/// in time is left to the connect-time check.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Names refused whatever they resolve to.
const RESERVED_NAMES: [&str; 3] = ["localhost", "metadata.google.internal", "metadata"];

/// Why a URL or address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("\"{host}\" is a private address ({kind}); allow it with [egress] allow_private = true or allow_hosts")]
    Private { host: String, kind: &'static str },
    #[error("\"{host}\" resolves to a private address ({addr}, {kind}); allow it with [egress] allow_private = true or allow_hosts")]
    Resolves {
        host: String,
        addr: IpAddr,
        kind: &'static str,
    },
    #[error("\"{host}\" names a private address (reserved name); allow it with [egress] allow_private = true or allow_hosts")]
    ReservedName { host: String },
    #[error("\"{url}\" has no host")]
    NoHost { url: String },
}

/// The process's egress policy.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    allow_private: bool,
    allow_hosts: Vec<HostRule>,
}

static POLICY: RwLock<Option<Arc<Egress>>> = RwLock::new(None);

/// Make `policy` the process's (the binary calls this once at start).
pub fn install(policy: Egress) {
    if let Ok(mut p) = POLICY.write() {
        *p = Some(Arc::new(policy));
    }
}

/// The installed policy; everything allowed when none was installed.
pub fn current() -> Arc<Egress> {
    POLICY
        .read()
        .ok()
        .and_then(|p| p.clone())
        .unwrap_or_else(|| Arc::new(Egress::permissive()))
}

impl Egress {
    pub fn new(config: &EgressConfig) -> Self {
        Egress {
            allow_private: config.allow_private,
            allow_hosts: config.allow_hosts.clone(),
        }
    }

    /// Everything allowed (no `[egress]` installed).
    pub fn permissive() -> Self {
        Egress {
            allow_private: true,
            allow_hosts: Vec::new(),
        }
    }

    /// `allow_private = true`.
    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// Whether `host` (a name) is listed in `allow_hosts`.
    pub fn host_listed(&self, host: &str) -> bool {
        let host = normalize(host);
        self.allow_hosts
            .iter()
            .any(|r| matches!(r, HostRule::Name(n) if *n == host))
    }

    /// Whether the URL's host is listed in `allow_hosts` (by name or range).
    pub fn url_listed(&self, url: &Url) -> bool {
        match url.host() {
            Some(Host::Domain(d)) => self.host_listed(d),
            Some(Host::Ipv4(ip)) => self.addr_listed(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.addr_listed(IpAddr::V6(ip)),
            None => false,
        }
    }

    fn addr_listed(&self, ip: IpAddr) -> bool {
        self.allow_hosts
            .iter()
            .any(|r| r.contains(ip) || r.contains(canonical(ip)))
    }

    /// `Err(kind)` when the policy refuses connecting to `ip`.
    pub fn check_addr(&self, ip: IpAddr) -> Result<(), &'static str> {
        if self.allow_private || self.addr_listed(ip) {
            return Ok(());
        }
        match classify(ip) {
            Some(kind) => Err(kind),
            None => Ok(()),
        }
    }

    /// The check that needs no lookup: a host spelled as an address (in
    /// any spelling the URL parser normalizes: `2130706433`, `0x7f000001`,
    /// `0`, `[::ffff:127.0.0.1]`) or a reserved name. `Ok(Some(name))`
    /// when the host is a name still to be resolved.
    pub fn check_literal<'u>(&self, url: &'u Url) -> Result<Option<&'u str>, EgressError> {
        let host = url.host().ok_or_else(|| EgressError::NoHost { url: url.to_string() })?;
        let name = match host {
            Host::Ipv4(ip) => return self.literal(IpAddr::V4(ip), url),
            Host::Ipv6(ip) => return self.literal(IpAddr::V6(ip), url),
            Host::Domain(d) => d,
        };
        if self.allow_private || self.host_listed(name) {
            return Ok(None);
        }
        // A name the URL parser left as a name but that reads as an
        // address to a resolver (non-special schemes keep `0x7f.1`).
        if let Some(ip) = parse_ip(name) {
            return self.literal(ip, url).map(|_| None);
        }
        let n = normalize(name);
        if RESERVED_NAMES.contains(&n.as_str()) || n.ends_with(".localhost") {
            return Err(EgressError::ReservedName { host: name.to_owned() });
        }
        Ok(Some(name))
    }

    fn literal(&self, ip: IpAddr, url: &Url) -> Result<Option<&'static str>, EgressError> {
        self.check_addr(ip).map(|_| None).map_err(|kind| EgressError::Private {
            host: url.host_str().unwrap_or_default().to_owned(),
            kind,
        })
    }

    /// The attach-time check: the literal check, then every address the
    /// name resolves to. A name that does not resolve (or not in time) is
    /// accepted: there is nothing to connect to yet, and the connect-time
    /// check runs on whatever it resolves to later.
    pub async fn check_url(&self, url: &Url) -> Result<(), EgressError> {
        let Some(name) = self.check_literal(url)? else {
            return Ok(());
        };
        let port = url.port_or_known_default().unwrap_or(443);
        let lookup = tokio::net::lookup_host((name.to_owned(), port));
        let Ok(Ok(addrs)) = tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await else {
            return Ok(());
        };
        for addr in addrs {
            self.check_resolved(name, addr.ip())?;
        }
        Ok(())
    }

    fn check_resolved(&self, name: &str, ip: IpAddr) -> Result<(), EgressError> {
        self.check_addr(ip).map_err(|kind| EgressError::Resolves {
            host: name.to_owned(),
            addr: ip,
            kind,
        })
    }
}

/// What kind of non-public address `ip` is, or `None` for a public one.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match (a, b) {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_broadcast() => "broadcast",
        (0, _) => "unspecified",
        (127, _) => "loopback",
        (10, _) | (192, 168) => "private",
        (172, b) if (16..32).contains(&b) => "private",
        (169, 254) => "link-local",
        (100, b) if (64..128).contains(&b) => "CGNAT",
        (a, _) if (224..240).contains(&a) => "multicast",
        (a, _) if a >= 240 => "reserved",
        (192, 0) if ip.octets()[2] == 0 => "reserved",
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(match s[0] {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        x if x & 0xfe00 == 0xfc00 => "private",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local",
        x if x & 0xff00 == 0xff00 => "multicast",
        // 6to4: the IPv4 address in bits 16..48.
        0x2002 => {
            let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
            return classify_v4(v4);
        }
        _ => return None,
    })
}

/// IPv4 carried in IPv6 (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`,
/// NAT64 `64:ff9b::a.b.c.d`) as the IPv4 address it reaches.
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let compatible = s[..6].iter().all(|&x| x == 0) && !v6.is_loopback() && !v6.is_unspecified();
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0);
    if compatible || nat64 {
        IpAddr::V4(embedded)
    } else {
        ip
    }
}

/// An address in any spelling a resolver accepts: dotted with 1 to 4
/// parts, each decimal, `0x` hex or `0` octal (`127.1`, `0x7f000001`,
/// `017700000001`, `2130706433`), or IPv6 (with or without brackets).
pub fn parse_ip(host: &str) -> Option<IpAddr> {
    let host = host.trim_end_matches('.');
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(ip);
    }
    let parts: Vec<u64> = host.split('.').map(number).collect::<Option<_>>()?;
    let (last, init) = parts.split_last()?;
    if init.len() > 3 || init.iter().any(|&p| p > 255) {
        return None;
    }
    let bits = 8 * (4 - init.len() as u32);
    if bits < 64 && *last >= 1u64 << bits {
        return None;
    }
    let mut value = *last;
    for (i, p) in init.iter().enumerate() {
        value |= p << (24 - 8 * i as u32);
    }
    u32::try_from(value).ok().map(|v| IpAddr::V4(Ipv4Addr::from(v)))
}

fn number(part: &str) -> Option<u64> {
    if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
        return if hex.is_empty() {
            Some(0)
        } else {
            u64::from_str_radix(hex, 16).ok()
        };
    }
    if part.len() > 1 && part.starts_with('0') {
        return u64::from_str_radix(&part[1..], 8).ok();
    }
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The headers custom `headers` may not set: framing and the Standard
/// Webhooks signature headers are the sender's.
pub fn reserved_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "host" | "content-length" | "content-type" | "transfer-encoding" | "connection"
    ) || n.starts_with("webhook-")
}

/// The DNS resolver of the clients that deliver to API-chosen URLs: the
/// system resolver, then the installed policy on every address (a name
/// that resolved to a public address at attach time and to a private one
/// now fails the attempt, with the reason in its error).
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let policy = current();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if !policy.host_listed(&name) {
                if let Some(n) = RESERVED_NAMES.iter().find(|n| normalize(&name) == **n) {
                    if !policy.allows_private() {
                        return Err(Box::new(EgressError::ReservedName { host: (*n).to_owned() }) as _);
                    }
                }
                for a in &addrs {
                    policy.check_resolved(&name, a.ip()).map_err(Box::new)?;
                }
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// `builder` with the guarded resolver.
pub fn guard(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    builder.dns_resolver(Arc::new(GuardedResolver))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> Egress {
        Egress::new(&EgressConfig::default())
    }

    fn refused(url: &str) -> bool {
        let url = Url::parse(url).unwrap();
        strict().check_literal(&url).is_err()
    }

    #[test]
    fn every_spelling_of_a_private_address_is_refused() {
        for url in [
            "http://169.254.169.254/latest",
            "http://metadata.google.internal/",
            "http://10.1.2.3/",
            "http://192.168.0.1/",
            "http://172.16.0.1/",
            "http://100.64.0.1/",
            "http://[::1]/",
            "http://0/",
            "http://0.0.0.0/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://127.1/",
            "http://017700000001/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[::]/",
            "http://[64:ff9b::a00:1]/",
            "http://[2002:7f00:1::]/",
            "http://localhost:8080/",
            "http://LOCALHOST./",
            "http://a.localhost/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
        ] {
            assert!(refused(url), "{url} should be refused");
        }
        for url in ["https://example.com/h", "http://8.8.8.8/", "http://[2001:4860::8888]/"] {
            assert!(!refused(url), "{url} should pass");
        }
    }

    #[test]
    fn allow_hosts_and_allow_private_open_the_guard() {
        let config = EgressConfig {
            allow_private: false,
            allow_hosts: vec![
                HostRule::parse("10.20.0.0/16").unwrap(),
                HostRule::parse("hooks.internal").unwrap(),
            ],
        };
        let policy = Egress::new(&config);
        let ok = |u: &str| policy.check_literal(&Url::parse(u).unwrap()).is_ok();
        assert!(ok("http://10.20.1.1/"));
        assert!(!ok("http://10.21.1.1/"));
        assert!(ok("http://hooks.internal/"));
        let open = Egress::new(&EgressConfig {
            allow_private: true,
            allow_hosts: vec![],
        });
        assert!(open.check_literal(&Url::parse("http://127.0.0.1/").unwrap()).is_ok());
    }

    #[test]
    fn parses_resolver_spellings() {
        assert_eq!(parse_ip("0x7f.1"), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(parse_ip("0"), Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        assert_eq!(parse_ip("example.com"), None);
        assert_eq!(parse_ip("1.2.3.256"), None);
    }

    #[test]
    fn reserved_headers() {
        for h in [
            "Host",
            "content-length",
            "Content-Type",
            "Transfer-Encoding",
            "connection",
            "Webhook-Id",
            "webhook-x",
        ] {
            assert!(reserved_header(h), "{h}");
        }
        assert!(!reserved_header("Authorization"));
    }

    #[tokio::test]
    async fn names_are_resolved_at_attach() {
        let url = Url::parse("http://localhost.:1/").unwrap();
        assert!(strict().check_url(&url).await.is_err());
    }
}
