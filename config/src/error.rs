//! Config errors with positions in the original file.

use std::fmt;
use std::ops::Range;
use std::path::Path;

use crate::interpolate::OffsetMap;

/// A config error: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the error is not about a place in the file.
    pub line: usize,
    pub column: usize,
    /// The dotted key path, when known (`backends.http.notify.url`).
    pub key: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn io(path: &Path, e: std::io::Error) -> Self {
        ConfigError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            key: None,
            message: format!("cannot read config file: {e}"),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        } else {
            write!(f, "{}: ", self.file)?;
        }
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The original text of a config file, to turn byte offsets into
/// line:column, through the `${VAR}` substitutions.
#[derive(Debug, Clone)]
pub struct Source {
    file: String,
    text: String,
    offsets: OffsetMap,
}

impl Source {
    pub(crate) fn new(file: &str, text: &str, offsets: OffsetMap) -> Self {
        Source {
            file: file.to_owned(),
            text: text.to_owned(),
            offsets,
        }
    }

    /// A file read as is, without `${VAR}` interpolation (e.g. another
    /// program's config that is being imported), so its errors are reported
    /// the same way as ours.
    pub fn plain(file: &str, text: &str) -> Self {
        Source::new(file, text, OffsetMap::default())
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// The original text, before `${VAR}` interpolation.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// 1-based line and column of a byte offset in the original text.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        (line, column)
    }

    /// An error at a byte offset of the original text.
    pub fn error_at(&self, offset: usize, key: Option<String>, message: impl Into<String>) -> ConfigError {
        let (line, column) = self.position(offset);
        self.error_at_line(line, column, key, message)
    }

    /// An error at `line:column` of this file (0:0 when no position is known).
    fn error_at_line(
        &self,
        line: usize,
        column: usize,
        key: Option<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line,
            column,
            key,
            message: message.into(),
        }
    }

    /// An error at a span of the interpolated text (as serde_spanned and
    /// toml report them).
    pub fn error_at_span(&self, span: Range<usize>, key: Option<String>, message: impl Into<String>) -> ConfigError {
        self.error_at(self.offsets.to_original(span.start), key, message)
    }

    /// An error at 1-based `line`:`column` of the text *inside* a string
    /// value whose span (in the interpolated text) is `span`: e.g. a syntax
    /// error in an inline script. Skips the opening quotes (and the newline
    /// that TOML trims after `'''` or `"""`); exact for literal strings,
    /// approximate where escapes change the text's shape.
    pub fn error_in_string(
        &self,
        span: Range<usize>,
        line: usize,
        column: usize,
        key: Option<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let start = self.offsets.to_original(span.start).min(self.text.len());
        let rest = &self.text[floor_char_boundary(&self.text, start)..];
        let mut skip = if rest.starts_with("'''") || rest.starts_with("\"\"\"") {
            3
        } else if rest.starts_with(['\'', '"']) {
            1
        } else {
            0
        };
        if skip == 3 {
            if rest[3..].starts_with("\r\n") {
                skip += 2;
            } else if rest[3..].starts_with('\n') {
                skip += 1;
            }
        }
        let (first_line, first_column) = self.position(start + skip);
        let (line, column) = if line <= 1 {
            (first_line, first_column + column.saturating_sub(1))
        } else {
            (first_line + line - 1, column.max(1))
        };
        self.error_at_line(line, column, key, message)
    }

    pub(crate) fn toml_error(&self, e: &toml::de::Error, key: Option<String>) -> ConfigError {
        let message = e.message().trim().to_owned();
        match e.span() {
            Some(span) => self.error_at_span(span, key, message),
            None => self.error_at_line(0, 0, key, message),
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
