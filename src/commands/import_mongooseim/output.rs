//! The imported config as sections of settings and comments, and its
//! rendering as TOML text.
//!
//! Kept apart from the reading so each backend's mapping only says *what*
//! goes where; quoting (including `$${` for a literal `${`, which our config
//! would otherwise take for a variable) lives here once.

use std::fmt::Write;

/// A value to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<String>),
    /// Already TOML (an inline table).
    Toml(String),
}

/// One line of a section.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// `key = value`, with an optional comment on the same line.
    Set {
        key: String,
        value: Value,
        note: Option<String>,
    },
    /// A MongooseIM setting with no equivalent, quoted in a comment with why.
    Unmapped { key: String, raw: String, why: String },
    /// A comment line of its own.
    Note(String),
}

impl Line {
    pub fn set(key: &str, value: Value) -> Line {
        Line::Set {
            key: key.to_owned(),
            value,
            note: None,
        }
    }

    pub fn set_noted(key: &str, value: Value, note: impl Into<String>) -> Line {
        Line::Set {
            key: key.to_owned(),
            value,
            note: Some(note.into()),
        }
    }
}

/// `[header]` (or `[[header]]`) and its lines.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Section {
    pub header: String,
    /// `[[header]]`: an entry of an array of tables (filters).
    pub array: bool,
    /// Comment lines above the header.
    pub notes: Vec<String>,
    pub lines: Vec<Line>,
    /// Written entirely as comments, with this reason above it.
    pub disabled: Option<String>,
}

impl Section {
    pub fn new(header: impl Into<String>) -> Self {
        Section {
            header: header.into(),
            ..Section::default()
        }
    }
}

/// The whole file: a header comment, then the sections.
pub fn render(preamble: &[String], sections: &[Section]) -> String {
    let mut out = String::new();
    for line in preamble {
        comment(&mut out, line);
    }
    for s in sections {
        out.push('\n');
        if let Some(reason) = &s.disabled {
            comment(&mut out, reason);
        }
        let prefix = if s.disabled.is_some() { "# " } else { "" };
        for n in &s.notes {
            comment(&mut out, n);
        }
        let (open, close) = if s.array { ("[[", "]]") } else { ("[", "]") };
        let _ = writeln!(out, "{prefix}{open}{}{close}", s.header);
        for line in &s.lines {
            match line {
                Line::Set { key, value, note } => {
                    let _ = write!(out, "{prefix}{key} = {}", value_text(value));
                    if let Some(n) = note {
                        let _ = write!(out, "  # {n}");
                    }
                    out.push('\n');
                }
                Line::Unmapped { key, raw, why } => {
                    let _ = writeln!(out, "# {key} = {raw}  # not carried over: {why}");
                }
                Line::Note(n) => comment(&mut out, n),
            }
        }
    }
    out
}

fn comment(out: &mut String, text: &str) {
    if text.is_empty() {
        out.push_str("#\n");
    }
    for l in text.lines() {
        if l.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {l}");
        }
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Str(s) => quote(s),
        Value::Int(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::List(items) => format!("[{}]", items.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")),
        Value::Toml(t) => t.clone(),
    }
}

/// A TOML basic string holding exactly `s` once our config has read it:
/// escapes for TOML, and `${` doubled so it is not taken for a variable.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '$' if chars.peek() == Some(&'{') => out.push_str("$$"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_our_config_reader() {
        let tricky = "a\"b\\c ${HOME} $x \u{1} é";
        let text = format!("v = {}\n", quote(tricky));
        let interpolated = event_pusher_config::interpolate(&text, |_| Some("WRONG".into())).unwrap();
        let t: toml::Table = toml::from_str(&interpolated.text).unwrap();
        assert_eq!(t["v"].as_str(), Some(tricky));
    }

    #[test]
    fn disabled_sections_are_all_comments() {
        let mut s = Section::new("backends.push.x");
        s.disabled = Some("not here".into());
        s.lines.push(Line::set("a", Value::Int(1)));
        let text = render(&[], &[s]);
        assert!(text.lines().all(|l| l.is_empty() || l.starts_with('#')), "{text}");
        assert!(text.contains("# [backends.push.x]\n# a = 1\n"), "{text}");
    }
}
