//! event-pusher configuration: the TOML file, `${VAR}` interpolation, the
//! top-level sections, and errors that say `file:line:column: key: problem`.
//!
//! The config crate owns the file but not every key in it: each backend and
//! filter module defines its own struct, and the binary plugs them in as the
//! `F` and `B` type parameters of [`Document`]. The whole file is then
//! deserialized in one pass, so an error anywhere carries its position.

mod egress;
mod error;
mod interpolate;
mod listen;
mod schema;
pub mod types;

use std::path::Path;

use serde::de::DeserializeOwned;

pub use egress::{EgressConfig, HostRule};
pub use error::{ConfigError, Source};
pub use interpolate::interpolate;
pub use schema::{ClusterConfig, Document, NoSources, ServerConfig, SpoolConfig, WebhooksConfig};
pub use serde_spanned::Spanned;
pub use types::{EventClassList, Priority, RetryConfig};

/// Read, interpolate and deserialize a config file.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<(T, Source), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
    parse(&path.display().to_string(), &text, |name| std::env::var(name).ok())
}

/// Interpolate and deserialize config text. `file` names it in errors.
pub fn parse<T: DeserializeOwned>(
    file: &str,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(T, Source), ConfigError> {
    let interpolated = interpolate(text, env).map_err(|e| {
        let src = Source::new(file, text, Default::default());
        src.error_at(e.offset, interpolate::key_at(text, e.offset), e.message)
    })?;
    let source = Source::new(file, text, interpolated.offsets);
    let de = toml::Deserializer::parse(&interpolated.text).map_err(|e| source.toml_error(&e, None))?;
    let value = serde_path_to_error::deserialize(de).map_err(|e| {
        // serde_spanned wraps values in a private field; it is not a key.
        let path = e.path().to_string().replace(".$__serde_spanned_private_value", "");
        let key = if path == "." || path.is_empty() {
            None
        } else {
            Some(path)
        };
        source.toml_error(e.inner(), key)
    })?;
    Ok((value, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // fields exist to be parsed, not read
    struct Http {
        url: String,
        #[serde(default)]
        events: EventClassList,
        #[serde(default, deserialize_with = "types::positive")]
        concurrency: usize,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Backends {
        #[serde(default)]
        http: BTreeMap<String, Http>,
    }

    type Doc = Document<toml::Table, Backends>;

    fn env(name: &str) -> Option<String> {
        (name == "URL").then(|| "http://x/".to_owned())
    }

    fn err(text: &str) -> ConfigError {
        parse::<Doc>("t.toml", text, env).unwrap_err()
    }

    #[test]
    fn parses_and_interpolates() {
        let (doc, _) = parse::<Doc>("t.toml", "[backends.http.a]\nurl = \"${URL}\"\n", env).unwrap();
        assert_eq!(doc.backends.http["a"].url, "http://x/");
        assert_eq!(doc.server.listen.to_string(), "127.0.0.1:8088");
    }

    #[test]
    fn unknown_key_has_position_and_path() {
        let e = err("[server]\nlisten = \"127.0.0.1:1\"\n\n[backends.http.a]\nurl = \"x\"\nurll = \"y\"\n");
        assert_eq!((e.line, e.column), (6, 1), "{e}");
        assert!(e.message.contains("unknown field `urll`"), "{e}");
        assert!(e.to_string().starts_with("t.toml:6:1: "), "{e}");
        assert!(e.key.as_deref().unwrap_or("").contains("backends.http.a"), "{e}");
    }

    #[test]
    fn bad_value_points_at_value() {
        let e = err("[backends.http.a]\nurl = \"x\"\nevents = [\"chat\", \"gossip\"]\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("unknown event class \"gossip\""), "{e}");
        let e = err("[server]\nlisten = \"nowhere\"\n");
        assert_eq!((e.line, e.column), (2, 10), "{e}");
        assert_eq!(e.key.as_deref(), Some("server.listen"));
        assert!(e.message.contains("HOST:PORT"), "{e}");
        let (doc, _) = parse::<Doc>("t.toml", "[server]\nlisten = \"localhost:8090\"\n", env).unwrap();
        assert!(doc.server.listen.ip().is_loopback(), "{}", doc.server.listen);
        let e = err("[backends.http.a]\nurl = \"x\"\nconcurrency = 0\n");
        assert!(e.message.contains("at least 1"), "{e}");
    }

    #[test]
    fn sources_are_unknown_to_a_program_without_them() {
        let e = err("[sources.amqp.main]\nurl = \"amqp://h\"\n");
        assert_eq!(e.line, 1, "{e}");
        assert!(e.message.contains("unknown field `amqp`"), "{e}");
    }

    #[test]
    fn missing_env_var_and_syntax_errors() {
        let e = err("[backends.http.a]\nurl = \"${NOPE}\"\n");
        assert_eq!((e.line, e.column), (2, 8), "{e}");
        assert!(e.message.contains("`NOPE`"));
        let e = err("[server\nlisten = 1\n");
        assert_eq!(e.line, 1, "{e}");
    }

    #[test]
    fn positions_survive_substitution() {
        let e = err("[backends.http.a]\nurl = \"${URL}\"; concurrency = 0\n");
        // `;` is invalid TOML after a value: the error must point into the
        // original line at the right column, not the substituted one.
        assert_eq!(e.line, 2, "{e}");
        assert_eq!(e.column, 15, "{e}");
    }
}
