//! Finding a backend by the name an operator gives: `NAME`, or `KIND.NAME`
//! where several kinds share a name.

/// Why a backend name did not name exactly one backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    NotFound(String),
    /// The name is used by several kinds: these `KIND.NAME` ids tell them apart.
    Ambiguous(String, Vec<String>),
}

impl std::fmt::Display for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::NotFound(q) => write!(f, "no backend named \"{q}\""),
            Lookup::Ambiguous(q, ids) => {
                write!(
                    f,
                    "backend name \"{q}\" is used by several kinds; say which: {}",
                    ids.join(", ")
                )
            }
        }
    }
}

/// Find a backend by `NAME` or `KIND.NAME` among `(kind, name)` pairs.
/// Names are unique within a kind, not across kinds (docs/configuration.md's own
/// example has `rabbit.main` and `sns.main`).
pub fn find_backend<'a>(backends: impl IntoIterator<Item = (&'a str, &'a str)>, query: &str) -> Result<usize, Lookup> {
    let all: Vec<(&str, &str)> = backends.into_iter().collect();
    if let Some(i) = all
        .iter()
        .position(|(k, n)| query.strip_prefix(*k).and_then(|r| r.strip_prefix('.')) == Some(*n))
    {
        return Ok(i);
    }
    let named: Vec<usize> = (0..all.len()).filter(|i| all[*i].1 == query).collect();
    match named.as_slice() {
        [one] => Ok(*one),
        [] => Err(Lookup::NotFound(query.to_owned())),
        many => Err(Lookup::Ambiguous(
            query.to_owned(),
            many.iter()
                .map(|i| crate::BackendId::new(all[*i].0, all[*i].1).to_string())
                .collect(),
        )),
    }
}
