//! The `[backends.KIND.NAME]` tables: one line per kind.

use event_pusher_config::{ConfigError, Source, Spanned};
use event_pusher_core::{AnyBackend, Backend, BackendError};
use indexmap::IndexMap;
use serde::Deserialize;

use std::sync::Arc;

use crate::common::{BackendConfig, BuiltBackend, Endpoint};

type Instances<T> = IndexMap<String, Spanned<T>>;

/// Declares `BackendsConfig` (one field per kind, instances by name) and
/// its `build`: each kind is one line, `KIND: Config => Backend`, behind its
/// feature when it has one.
macro_rules! backend_kinds {
    ($( $(#[$cfg:meta])* $kind:ident : $config:ty => $backend:ty $([endpoint = $endpoint:path])?, )*) => {
        /// `[backends]`: instances by kind, then by name.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct BackendsConfig {
            $(
                $(#[$cfg])*
                #[serde(default)]
                pub $kind: Instances<$config>,
            )*
        }

        impl BackendsConfig {
            /// Build every configured instance, in config-file order. Names
            /// are unique within a kind (TOML guarantees it); across kinds
            /// the admin API tells them apart as `KIND.NAME`.
            pub fn build(&self, source: &Source) -> Result<Vec<BuiltBackend>, ConfigError> {
                let mut out = Vec::new();
                $(
                    $(#[$cfg])*
                    add(&mut out, stringify!($kind), &self.$kind, source, <$backend>::new, endpoint_of!($($endpoint)?))?;
                )*
                out.sort_by_key(|b| b.position);
                Ok(out)
            }
        }
    };
}

/// A kind's `[endpoint = F]`: `F(&backend)` gives what it serves on the
/// main listener; kinds without one serve nothing.
macro_rules! endpoint_of {
    () => {
        no_endpoint
    };
    ($f:path) => {
        |b: &std::sync::Arc<_>| Some($f(b))
    };
}

backend_kinds! {
    log: crate::log::LogConfig => crate::log::LogBackend,
    http: crate::http::HttpConfig => crate::http::HttpBackend,
    #[cfg(feature = "rabbit")]
    rabbit: crate::rabbit::RabbitConfig => crate::rabbit::RabbitBackend,
    #[cfg(feature = "sns")]
    sns: crate::sns::SnsConfig => crate::sns::SnsBackend,
    #[cfg(feature = "push")]
    push: crate::push::PushConfig => crate::push::PushBackend,
    #[cfg(feature = "gateway")]
    gateway: crate::gateway::GatewayConfig => crate::gateway::GatewayBackend
        [endpoint = crate::gateway::GatewayBackend::endpoint],
}

fn no_endpoint<B>(_: &Arc<B>) -> Option<Arc<dyn Endpoint>> {
    None
}

fn add<C: BackendConfig, B: Backend>(
    out: &mut Vec<BuiltBackend>,
    kind: &str,
    instances: &Instances<C>,
    source: &Source,
    build: impl Fn(&str, &C) -> Result<B, BackendError>,
    endpoint: impl Fn(&Arc<B>) -> Option<Arc<dyn Endpoint>>,
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
        let keys = cfg.get_ref().common();
        let backend = build(name, cfg.get_ref())
            .map(Arc::new)
            .map_err(|e| source.error_at_span(cfg.span(), Some(key.clone()), e.to_string()))?;
        let mut options = keys.options();
        if let Some(order) = backend.ordering() {
            options.ordering = order;
        }
        out.push(BuiltBackend {
            name: name.clone(),
            priority: keys.priority.0,
            classes: keys.events.0,
            options,
            endpoint: endpoint(&backend),
            backend: AnyBackend::from_arc(backend),
            position,
        });
    }
    Ok(())
}
