//! Helpers for the parts of an XMPP address (`local@domain/resource`).
//!
//! Only the splitting the backends need; no stringprep, because the chat
//! server has already normalised what it sends us.

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

/// Check that a string is a plausible JID: non-empty, no whitespace in the
/// bare part (a resource may hold spaces, RFC 7622), no control characters,
/// a non-empty domain. Returns the reason when it is not.
pub fn validate(jid: &str) -> Result<(), &'static str> {
    if jid.is_empty() {
        return Err("is empty");
    }
    if jid.chars().any(char::is_control) {
        return Err("contains control characters");
    }
    if bare(jid).chars().any(char::is_whitespace) {
        return Err("contains whitespace in its local or domain part");
    }
    if domain(jid).is_empty() {
        return Err("has no domain");
    }
    if jid.starts_with('@') {
        return Err("has an empty local part before '@'");
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
}
