//! The stored form of a queue item: the event's canonical JSON, or, for an
//! item claimed for one target (a push device), the target before it.
//!
//! Layout of a targeted record: `0x00`, the target (UTF-8, no NUL), `0x00`,
//! the event JSON. JSON never starts with a NUL byte, so records written
//! before targets existed (plain JSON) read as untargeted ones.

use bytes::{BufMut, Bytes, BytesMut};

const MARK: u8 = 0;

/// The record for `json`, claimed for `target` (or the event as a whole).
pub fn encode(target: Option<&str>, json: &[u8]) -> Bytes {
    match target {
        None => Bytes::copy_from_slice(json),
        Some(t) => {
            let mut out = BytesMut::with_capacity(t.len() + 2 + json.len());
            out.put_u8(MARK);
            // A NUL inside the target would end it early; backends choose
            // their targets, so this is only a guard.
            out.extend(t.bytes().filter(|b| *b != MARK));
            out.put_u8(MARK);
            out.extend_from_slice(json);
            out.freeze()
        }
    }
}

/// The target (if any) and the event JSON of a stored record.
pub fn decode(record: &Bytes) -> (Option<&str>, Bytes) {
    if record.first() != Some(&MARK) {
        return (None, record.clone());
    }
    let rest = &record[1..];
    match rest.iter().position(|b| *b == MARK) {
        Some(end) => match std::str::from_utf8(&rest[..end]) {
            Ok(t) => (Some(t), record.slice(end + 2..)),
            Err(_) => (None, record.clone()),
        },
        None => (None, record.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_targeted_records_round_trip() {
        let json = br#"{"id":"x"}"#;
        let plain = encode(None, json);
        assert_eq!(decode(&plain), (None, Bytes::from_static(json)));
        let targeted = encode(Some("dev-1"), json);
        assert_eq!(decode(&targeted), (Some("dev-1"), Bytes::from_static(json)));
    }
}
