//! Helpers for the parts of an XMPP address (`local@domain/resource`).
//!
//! Only the splitting the backends need; no stringprep, because the chat
//! server has already normalised what it sends us.

use std::fmt;

/// The bare JID: `local@domain` without the resource.
pub fn bare(jid: &str) -> &str {
    match jid.find('/') {
        Some(i) => &jid[..i],
        None => jid,
    }
}

/// The local part (before `@`), empty for a domain-only JID.
pub fn localpart(jid: &str) -> &str {
    let b = bare(jid);
    match b.find('@') {
        Some(i) => &b[..i],
        None => "",
    }
}

/// The domain part (between `@` and `/`).
pub fn domain(jid: &str) -> &str {
    let b = bare(jid);
    match b.find('@') {
        Some(i) => &b[i + 1..],
        None => b,
    }
}

/// RFC 7622 §3.2–3.4: each of local, domain and resource part is at most
/// 1023 bytes.
pub const MAX_PART_BYTES: usize = 1023;

/// The resource part (after the first `/`), empty when there is none.
pub fn resourcepart(jid: &str) -> &str {
    match jid.find('/') {
        Some(i) => &jid[i + 1..],
        None => "",
    }
}

/// Why a string is not a plausible JID; the message completes "JID ...".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JidError {
    Empty,
    ControlCharacters,
    /// In the local or domain part (a resource may hold spaces).
    Whitespace,
    NoDomain,
    EmptyLocal,
    SeveralAts,
    TooLong(JidPart),
}

/// A part of a JID, as named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JidPart {
    Local,
    Domain,
    Resource,
}

impl fmt::Display for JidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JidError::Empty => "is empty",
            JidError::ControlCharacters => "contains control characters",
            JidError::Whitespace => "contains whitespace in its local or domain part",
            JidError::NoDomain => "has no domain",
            JidError::EmptyLocal => "has an empty local part before '@'",
            JidError::SeveralAts => "has more than one '@' before the resource",
            JidError::TooLong(JidPart::Local) => "has a local part over 1023 bytes (RFC 7622)",
            JidError::TooLong(JidPart::Domain) => "has a domain part over 1023 bytes (RFC 7622)",
            JidError::TooLong(JidPart::Resource) => "has a resource part over 1023 bytes (RFC 7622)",
        })
    }
}

impl std::error::Error for JidError {}

/// Check that a string is a plausible JID: non-empty, no whitespace in the
/// bare part (a resource may hold spaces, RFC 7622), no control characters,
/// a non-empty domain, at most one `@` before the resource (a resource may
/// hold `@`), and no part over [`MAX_PART_BYTES`]. Returns the reason when
/// it is not.
pub fn validate(jid: &str) -> Result<(), JidError> {
    if jid.is_empty() {
        return Err(JidError::Empty);
    }
    // One pass over the bytes finds the resource separator and rejects
    // control characters and whitespace in the bare part; it
    // runs for every JID of every hook call. Non-ASCII JIDs (rare) take
    // the char-by-char checks below instead, since Unicode has control and
    // whitespace characters beyond ASCII.
    let (bare, resource) = if jid.is_ascii() {
        let bytes = jid.as_bytes();
        let mut slash = bytes.len();
        let mut space = false;
        for (i, &b) in bytes.iter().enumerate() {
            if b < 0x20 || b == 0x7f {
                return Err(JidError::ControlCharacters);
            }
            if slash == bytes.len() {
                if b == b'/' {
                    slash = i;
                } else {
                    space |= b == b' ';
                }
            }
        }
        if space {
            return Err(JidError::Whitespace);
        }
        (&jid[..slash], jid.get(slash + 1..).unwrap_or(""))
    } else {
        if jid.chars().any(char::is_control) {
            return Err(JidError::ControlCharacters);
        }
        let split = match jid.find('/') {
            Some(i) => (&jid[..i], &jid[i + 1..]),
            None => (jid, ""),
        };
        if split.0.chars().any(char::is_whitespace) {
            return Err(JidError::Whitespace);
        }
        split
    };
    let (local, domain) = match bare.find('@') {
        Some(i) => (&bare[..i], &bare[i + 1..]),
        None => ("", bare),
    };
    if domain.is_empty() {
        return Err(JidError::NoDomain);
    }
    if jid.starts_with('@') {
        return Err(JidError::EmptyLocal);
    }
    if domain.contains('@') {
        return Err(JidError::SeveralAts);
    }
    if local.len() > MAX_PART_BYTES {
        return Err(JidError::TooLong(JidPart::Local));
    }
    if domain.len() > MAX_PART_BYTES {
        return Err(JidError::TooLong(JidPart::Domain));
    }
    if resource.len() > MAX_PART_BYTES {
        return Err(JidError::TooLong(JidPart::Resource));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_parts() {
        assert_eq!(bare("alice@localhost/phone"), "alice@localhost");
        assert_eq!(bare("alice@localhost"), "alice@localhost");
        assert_eq!(localpart("alice@localhost/phone"), "alice");
        assert_eq!(domain("alice@localhost/phone"), "localhost");
        assert_eq!(domain("localhost"), "localhost");
        assert_eq!(localpart("localhost"), "");
        // a '/' inside the resource must not confuse the split
        assert_eq!(bare("a@b/c/d"), "a@b");
    }

    #[test]
    fn validates() {
        assert!(validate("alice@localhost/phone").is_ok());
        assert!(validate("").is_err());
        assert!(validate("al ice@x").is_err());
        assert!(validate("alice@localhost/Gajim Desktop").is_ok());
        assert!(validate("alice@localhost/a\u{7}").is_err());
        assert!(validate("@x").is_err());
        assert!(validate("alice@").is_err());
    }

    #[test]
    fn refuses_two_ats_but_not_in_the_resource() {
        assert_eq!(validate("a@b@c"), Err(JidError::SeveralAts));
        assert_eq!(validate("a@b@c/r"), Err(JidError::SeveralAts));
        assert_eq!(
            JidError::SeveralAts.to_string(),
            "has more than one '@' before the resource"
        );
        assert!(validate("a@b/mail@home").is_ok());
    }

    #[test]
    fn refuses_parts_over_1023_bytes() {
        let max = "x".repeat(MAX_PART_BYTES);
        let over = "x".repeat(MAX_PART_BYTES + 1);
        assert!(validate(&format!("{max}@{max}/{max}")).is_ok());
        assert!(validate(&format!("{over}@d"))
            .unwrap_err()
            .to_string()
            .contains("local part"));
        assert!(validate(&format!("a@{over}"))
            .unwrap_err()
            .to_string()
            .contains("domain part"));
        assert!(validate(&format!("a@d/{over}"))
            .unwrap_err()
            .to_string()
            .contains("resource part"));
        // Bytes, not characters: 512 two-byte characters are 1024 bytes.
        assert!(validate(&format!("{}@d", "é".repeat(512))).is_err());
    }
}
