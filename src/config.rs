//! The sidecar's whole config: the document type with this build's filters
//! and backends plugged in, the embedded default, and the checks that span
//! sections.

use std::path::{Path, PathBuf};

use event_pusher_backends::BackendsConfig;
use event_pusher_config::{ConfigError, Document, Source};
use event_pusher_filters::FilterConfig;

use crate::sources::SourcesConfig;

pub type SidecarConfig = Document<FilterConfig, BackendsConfig, SourcesConfig>;

/// Used when `run` is given no file: listen on 127.0.0.1:8088, spool in
/// `./data`, print every event as a JSON line on stdout.
pub const DEFAULT_CONFIG: &str = r#"# event-pusher embedded default
[server]
listen = "127.0.0.1:8088"

[spool]
dir = "./data"

[backends.log.console]
"#;

/// A loaded, checked config and the text it came from (for error positions).
pub struct LoadedConfig {
    pub config: SidecarConfig,
    pub source: Source,
    /// The file it was read from, which a filter reload reads again;
    /// `None` for the embedded default and for text given to [`parse`].
    pub path: Option<PathBuf>,
}

pub fn load(path: Option<&Path>) -> Result<LoadedConfig, ConfigError> {
    let (config, source) = match path {
        Some(p) => event_pusher_config::load::<SidecarConfig>(p)?,
        None => event_pusher_config::parse::<SidecarConfig>("<embedded default>", DEFAULT_CONFIG, |n| {
            std::env::var(n).ok()
        })?,
    };
    check(&config, &source)?;
    Ok(LoadedConfig {
        config,
        source,
        path: path.map(Path::to_path_buf),
    })
}

pub fn parse(file: &str, text: &str) -> Result<LoadedConfig, ConfigError> {
    let (config, source) = event_pusher_config::parse::<SidecarConfig>(file, text, |n| std::env::var(n).ok())?;
    check(&config, &source)?;
    Ok(LoadedConfig {
        config,
        source,
        path: None,
    })
}

fn check(config: &SidecarConfig, source: &Source) -> Result<(), ConfigError> {
    for (i, f) in config.filters.iter().enumerate() {
        let key = Some(format!("filters[{i}].name"));
        if f.name.get_ref().trim().is_empty() {
            return Err(source.error_at_span(f.name.span(), key, "filter name is empty"));
        }
        if config.filters[..i].iter().any(|g| g.name.get_ref() == f.name.get_ref()) {
            return Err(source.error_at_span(
                f.name.span(),
                key,
                format!("filter name \"{}\" is used twice", f.name.get_ref()),
            ));
        }
    }
    let server = &config.server;
    for (key, value) in [
        ("server.max_body_bytes", server.max_body_bytes as u64),
        ("server.header_timeout_ms", server.header_timeout_ms),
        ("server.body_timeout_ms", server.body_timeout_ms),
        ("server.max_connections", server.max_connections as u64),
    ] {
        if value == 0 {
            return Err(source.error_at(0, Some(key.into()), "must be at least 1"));
        }
    }
    Ok(())
}
