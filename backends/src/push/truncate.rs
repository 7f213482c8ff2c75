//! Fitting a notification into a provider's size limit.
//!
//! APNs takes at most 4096 bytes of JSON and one Web Push message holds
//! at most 3993 bytes of plaintext; a long chat message would otherwise be
//! refused for good (APNs `413 PayloadTooLarge`) and the user never
//! notified. So the body, the only unbounded part, is cut to its longest
//! prefix that fits, marked with `…`; a payload that does not fit even
//! with an empty body (huge metadata) is refused.

use super::provider::Notification;

const ELLIPSIS: &str = "…";

/// A payload that does not fit its provider's limit even with an empty body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{size} bytes of payload; the provider takes at most {limit}")]
pub struct TooLarge {
    pub size: usize,
    pub limit: usize,
}

/// `render(note)` if it fits in `limit` bytes, else `render` of `note`
/// with its body cut short; `Err` with the size when nothing fits.
pub fn render_within(
    note: &Notification,
    limit: usize,
    render: impl Fn(&Notification) -> Vec<u8>,
) -> Result<Vec<u8>, TooLarge> {
    let rendered = render(note);
    if rendered.len() <= limit {
        return Ok(rendered);
    }
    let too_large = |size: usize| TooLarge { size, limit };
    let body = match note.body.as_deref() {
        Some(body) if !body.is_empty() && !note.silent => body,
        _ => return Err(too_large(rendered.len())),
    };
    let mut shorter = note.clone();
    let mut with_prefix = |keep: usize| {
        shorter.body = Some(match keep {
            0 => String::new(),
            _ => format!("{}{ELLIPSIS}", &body[..keep]),
        });
        render(&shorter)
    };
    let empty = with_prefix(0);
    if empty.len() > limit {
        return Err(too_large(empty.len()));
    }
    // The longest prefix (on a char boundary) that fits: escapes make the
    // rendered size of a prefix hard to predict, so search for it.
    let (mut fits, mut too_long) = (0, body.len());
    while too_long - fits > 1 {
        let mut mid = floor_char_boundary(body, fits + (too_long - fits) / 2);
        if mid == fits {
            // A wide char straddles the middle: try the boundary after it.
            mid = next_char_boundary(body, fits);
            if mid >= too_long {
                break;
            }
        }
        if with_prefix(mid).len() <= limit {
            fits = mid;
        } else {
            too_long = mid;
        }
    }
    Ok(if fits == 0 { empty } else { with_prefix(fits) })
}

/// The largest char boundary of `s` at or below `at`.
fn floor_char_boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The first char boundary of `s` after `at`.
fn next_char_boundary(s: &str, at: usize) -> usize {
    let mut next = at + 1;
    while next < s.len() && !s.is_char_boundary(next) {
        next += 1;
    }
    next
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn note(body: &str) -> Notification {
        Notification {
            event_id: "e".into(),
            title: Some("alice@localhost".into()),
            body: Some(body.into()),
            badge: 0,
            data: BTreeMap::new(),
            silent: false,
            collapse_key: None,
            last_sender: None,
        }
    }

    fn render(n: &Notification) -> Vec<u8> {
        json!({"title": n.title, "body": n.body}).to_string().into_bytes()
    }

    #[test]
    fn leaves_what_fits_alone() {
        assert_eq!(render_within(&note("hi"), 100, render).unwrap(), render(&note("hi")));
    }

    #[test]
    fn cuts_the_body_on_a_char_boundary_with_an_ellipsis() {
        for body in [
            "😀".repeat(100) + "x",
            "x".repeat(500),
            "✓".repeat(500),
            "\"\n".repeat(300),
            "a✓\u{1}".repeat(200),
        ] {
            let out = render_within(&note(&body), 200, render).unwrap();
            assert!(out.len() <= 200, "{} bytes", out.len());
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let cut = v["body"].as_str().unwrap();
            assert!(
                cut.ends_with('…') && out.len() > 190,
                "{cut:?} is not the longest that fits"
            );
            assert!(body.starts_with(cut.trim_end_matches('…')));
        }
    }

    #[test]
    fn refuses_what_does_not_fit_without_a_body() {
        let mut n = note("hi");
        n.title = Some("t".repeat(300));
        assert!(render_within(&n, 200, render)
            .unwrap_err()
            .to_string()
            .contains("at most 200"));
        n.silent = true;
        n.body = None;
        assert!(render_within(&n, 200, render).is_err());
    }
}
