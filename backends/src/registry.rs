//! The `[backends.KIND.NAME]` tables: one line per kind.

use event_pusher_config::{ConfigError, Source, Spanned};
use event_pusher_core::{AnyBackend, Backend, BackendError};
use indexmap::IndexMap;
use serde::Deserialize;

use crate::common::{BuiltBackend, CommonKeys};

type Instances<T> = IndexMap<String, Spanned<T>>;

/// `[backends]`: instances by kind, then by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendsConfig {
    #[serde(default)]
    pub log: Instances<crate::log::LogConfig>,
    #[serde(default)]
    pub http: Instances<crate::http::HttpConfig>,
    #[cfg(feature = "rabbit")]
    #[serde(default)]
    pub rabbit: Instances<crate::rabbit::RabbitConfig>,
    #[cfg(feature = "sns")]
    #[serde(default)]
    pub sns: Instances<crate::sns::SnsConfig>,
}

impl BackendsConfig {
    /// Build every configured instance, in config-file order. Names are
    /// unique within a kind (TOML guarantees it); across kinds the admin API
    /// tells them apart as `KIND.NAME`.
    pub fn build(&self, source: &Source) -> Result<Vec<BuiltBackend>, ConfigError> {
        let mut out = Vec::new();
        add(
            &mut out,
            "log",
            &self.log,
            source,
            |c| c.common(),
            crate::log::LogBackend::new,
        )?;
        add(
            &mut out,
            "http",
            &self.http,
            source,
            |c| c.common(),
            crate::http::HttpBackend::new,
        )?;
        #[cfg(feature = "rabbit")]
        add(
            &mut out,
            "rabbit",
            &self.rabbit,
            source,
            |c| c.common(),
            crate::rabbit::RabbitBackend::new,
        )?;
        #[cfg(feature = "sns")]
        add(
            &mut out,
            "sns",
            &self.sns,
            source,
            |c| c.common(),
            crate::sns::SnsBackend::new,
        )?;
        out.sort_by_key(|b| b.position);
        Ok(out)
    }
}

fn add<C, B: Backend>(
    out: &mut Vec<BuiltBackend>,
    kind: &str,
    instances: &Instances<C>,
    source: &Source,
    common: impl Fn(&C) -> CommonKeys<'_>,
    build: impl Fn(&str, &C) -> Result<B, BackendError>,
) -> Result<(), ConfigError> {
    for (name, cfg) in instances {
        let position = cfg.span().start;
        let key = format!("backends.{kind}.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(source.error_at_span(
                cfg.span(),
                Some(key),
                format!("backend name \"{name}\" may only hold letters, digits, '-', '_' and '.'"),
            ));
        }
        let keys = common(cfg.get_ref());
        let backend = build(name, cfg.get_ref())
            .map_err(|e| source.error_at_span(cfg.span(), Some(key.clone()), e.to_string()))?;
        out.push(BuiltBackend {
            name: name.clone(),
            priority: keys.priority.0,
            classes: keys.events.0,
            options: keys.options(),
            backend: AnyBackend::new(backend),
            position,
        });
    }
    Ok(())
}
