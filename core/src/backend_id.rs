//! A backend instance's identity: its kind and its name, written
//! `KIND.NAME` (`http.crm`, `webhook.wh_01J...`, `push.mobile`) everywhere it
//! is shown or used as a key: logs, `/ready`, metrics labels, spool table
//! names, state scopes. Formatted and parsed here only.

use std::fmt;

/// `KIND.NAME`. Names are unique per kind; a kind has no `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId {
    kind: String,
    name: String,
}

impl BackendId {
    pub fn new(kind: &str, name: &str) -> Self {
        BackendId {
            kind: kind.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Read `KIND.NAME` (the name may hold dots; the kind may not).
    pub fn parse(id: &str) -> Option<Self> {
        let (kind, name) = id.split_once('.')?;
        (!kind.is_empty() && !name.is_empty()).then(|| BackendId::new(kind, name))
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_kind_dot_name() {
        let id = BackendId::new("http", "crm.eu");
        assert_eq!(id.to_string(), "http.crm.eu");
        assert_eq!(BackendId::parse("http.crm.eu"), Some(id));
        assert_eq!(BackendId::parse("http"), None);
        assert_eq!(BackendId::parse(".x"), None);
    }
}
