//! `${VAR}` interpolation inside TOML string values.
//!
//! Substitution happens on the text, before parsing, but only inside
//! strings (never in comments or keys), and the value is escaped for the
//! kind of string it lands in, so a secret holding `"` or `\` cannot change
//! the document's structure. `$${` writes a literal `${`. A variable that is
//! not set is an error naming it, at its position.
//!
//! Because values change the text's length, an [`OffsetMap`] maps positions
//! in the interpolated text back to the original, so later errors still
//! point at the right column.

/// Where text shifted: `(end of substitution in output, end in input)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OffsetMap(Vec<(usize, usize)>);

impl OffsetMap {
    pub fn to_original(&self, out: usize) -> usize {
        match self.0.iter().rev().find(|(o, _)| *o <= out) {
            Some((o, i)) => i + (out - o),
            None => out,
        }
    }
}

#[derive(Debug)]
pub struct Interpolated {
    pub text: String,
    pub offsets: OffsetMap,
}

#[derive(Debug, PartialEq)]
pub struct InterpolateError {
    pub offset: usize,
    pub message: String,
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Normal,
    Comment,
    Basic,
    Literal,
    MultiBasic,
    MultiLiteral,
}

/// Substitute `${NAME}` in string values with `env(NAME)`.
pub fn interpolate(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Interpolated, InterpolateError> {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut offsets = OffsetMap::default();
    let mut state = State::Normal;
    let mut i = 0;
    let mut copied = 0; // text[copied..i] is still to be copied
    while i < b.len() {
        let rest = &b[i..];
        match state {
            State::Normal => {
                if rest.starts_with(b"#") {
                    state = State::Comment;
                } else if rest.starts_with(b"\"\"\"") {
                    state = State::MultiBasic;
                    i += 3;
                    continue;
                } else if rest.starts_with(b"'''") {
                    state = State::MultiLiteral;
                    i += 3;
                    continue;
                } else if rest.starts_with(b"\"") {
                    state = State::Basic;
                } else if rest.starts_with(b"'") {
                    state = State::Literal;
                }
                i += 1;
            }
            State::Comment => {
                if rest[0] == b'\n' {
                    state = State::Normal;
                }
                i += 1;
            }
            State::Basic | State::MultiBasic | State::Literal | State::MultiLiteral => {
                let basic = matches!(state, State::Basic | State::MultiBasic);
                if basic && rest[0] == b'\\' {
                    i += 2;
                    continue;
                }
                let closing: &[u8] = match state {
                    State::Basic => b"\"",
                    State::MultiBasic => b"\"\"\"",
                    State::Literal => b"'",
                    _ => b"'''",
                };
                if rest.starts_with(closing) {
                    state = State::Normal;
                    i += closing.len();
                    continue;
                }
                if (state == State::Basic || state == State::Literal) && rest[0] == b'\n' {
                    // An unterminated string; leave it for the TOML parser to report.
                    state = State::Normal;
                    i += 1;
                    continue;
                }
                if rest.starts_with(b"$${") {
                    out.push_str(&text[copied..i]);
                    out.push_str("${");
                    i += 3;
                    copied = i;
                    offsets.0.push((out.len(), i));
                    continue;
                }
                if rest.starts_with(b"${") {
                    let start = i;
                    let close = rest.iter().position(|c| *c == b'}').ok_or_else(|| InterpolateError {
                        offset: start,
                        message: "unclosed `${`: expected `${NAME}` (write `$${` for a literal `${`)".into(),
                    })?;
                    let name = &text[i + 2..i + close];
                    let valid = !name.is_empty()
                        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !valid {
                        return Err(InterpolateError {
                            offset: start,
                            message: format!("invalid variable name `${{{name}}}`: use letters, digits and `_`"),
                        });
                    }
                    let value = env(name).ok_or_else(|| InterpolateError {
                        offset: start,
                        message: format!("environment variable `{name}` is not set (used as `${{{name}}}`)"),
                    })?;
                    out.push_str(&text[copied..i]);
                    if basic {
                        escape_basic(&value, &mut out);
                    } else if value.contains('\'') || (state == State::Literal && value.contains('\n')) {
                        return Err(InterpolateError {
                            offset: start,
                            message: format!(
                                "environment variable `{name}` holds a quote or newline, which a '...' string cannot; use \"...\""
                            ),
                        });
                    } else {
                        out.push_str(&value);
                    }
                    i += close + 1;
                    copied = i;
                    offsets.0.push((out.len(), i));
                    continue;
                }
                i += 1;
            }
        }
    }
    out.push_str(&text[copied..]);
    Ok(Interpolated { text: out, offsets })
}

/// The dotted key whose value holds byte `offset`: the last `[table]` or
/// `[[array]]` header above it plus the `key =` that starts its line. Good
/// enough for naming where a `${VAR}` sits; multi-line values and inline
/// tables name their outer key.
pub fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let mut table: Option<&str> = None;
    let mut key: Option<&str> = None;
    for line in before.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            table = t.trim_start_matches('[').split(']').next().map(str::trim);
            key = None;
        } else if let Some((k, _)) = t.split_once('=') {
            let k = k.trim();
            if !k.is_empty() && !k.starts_with('#') {
                key = Some(k);
            }
        }
    }
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{}", k.trim_matches('"'))),
        (None, Some(k)) => Some(k.trim_matches('"').to_owned()),
        _ => None,
    }
}

fn escape_basic(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cr\"et\\".into()),
            "HOST" => Some("example.org".into()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_in_strings_only() {
        let src = "# uses ${NOT_SET} in a comment\na = \"Bearer ${TOKEN}\"\nb = '${HOST}'\nc = \"$${LITERAL}\"\n";
        let r = interpolate(src, env).unwrap();
        let v: toml::Table = toml::from_str(&r.text).unwrap();
        assert_eq!(v["a"].as_str(), Some("Bearer s3cr\"et\\"));
        assert_eq!(v["b"].as_str(), Some("example.org"));
        assert_eq!(v["c"].as_str(), Some("${LITERAL}"));
    }

    #[test]
    fn missing_variable_names_it_and_where() {
        let src = "a = 1\nb = \"x${MISSING}\"\n";
        let e = interpolate(src, env).unwrap_err();
        assert!(e.message.contains("`MISSING`"), "{}", e.message);
        assert_eq!(e.offset, src.find("${").unwrap());
    }

    #[test]
    fn names_the_key_holding_an_offset() {
        let src = "[server]\nlisten = \"x\"\n\n[backends.http.a]\nurl = \"${U}\"\n";
        assert_eq!(
            key_at(src, src.find("${").unwrap()).as_deref(),
            Some("backends.http.a.url")
        );
    }

    #[test]
    fn maps_offsets_back() {
        let src = "a = \"${HOST}\"; b = 1";
        let r = interpolate(src, env).unwrap();
        let out_b = r.text.find("b =").unwrap();
        assert_eq!(r.offsets.to_original(out_b), src.find("b =").unwrap());
    }
}
