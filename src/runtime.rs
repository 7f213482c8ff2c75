//! Putting it together: build the chain, open the spool, start the delivery
//! queues, serve HTTP, and shut down cleanly.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use event_pusher_backends::{BuiltBackend, Endpoint};
use event_pusher_config::ConfigError;
use event_pusher_core::delivery::{BackendHandle, DeliveryEngine, DeliveryOptions};
use event_pusher_core::spool::{KeyPolicy, Spool, SpoolError, SpoolLimits};
use event_pusher_core::{
    AnyBackend, Attachment, Backend, BackendError, Chain, EventClasses, Filter, Pipeline, Slot, SlotRegistry,
    StateRouter,
};

use crate::chain_plan::{assemble, ChainBackend, PluginFilter};
use crate::config::{self, LoadedConfig};
use crate::ingest_metrics::IngestMetrics;
use crate::reload::FilterReloader;
use crate::sources::Sources;
use crate::state::AppState;
use crate::webhooks::Webhooks;

/// Why the sidecar could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Spool(#[from] SpoolError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Serve(std::io::Error),
    /// A backend could not load its state from the spool.
    #[error("backend {backend}: {source}")]
    Attach { backend: String, source: BackendError },
}

/// The chain and the backends, numbered by one slot registry; what
/// [`Sidecar::build`] makes without starting anything.
pub struct Assembly {
    pub chain: Chain,
    /// Each backend with the slot the registry gave it.
    pub backends: Vec<(Slot, BuiltBackend)>,
    pub slots: SlotRegistry,
    /// Rebuilds the chain's filters from the config file at runtime.
    pub reloader: FilterReloader,
}

/// A configured sidecar, ready to run.
pub struct Sidecar {
    loaded: LoadedConfig,
    plugins: Vec<PluginFilter>,
    backend_plugins: Vec<BackendPlugin>,
}

/// A backend added in Rust with [`Sidecar::with_backend`].
struct BackendPlugin {
    name: String,
    priority: i64,
    backend: AnyBackend,
}

impl Sidecar {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Ok(Self::from_config(config::load(Some(path))?))
    }

    /// The embedded default: 127.0.0.1:8088, spool `./data`, log to stdout.
    pub fn embedded_default() -> Result<Self, ConfigError> {
        Ok(Self::from_config(config::load(None)?))
    }

    pub fn from_config(loaded: LoadedConfig) -> Self {
        Sidecar {
            loaded,
            plugins: Vec::new(),
            backend_plugins: Vec::new(),
        }
    }

    pub fn config(&self) -> &config::SidecarConfig {
        &self.loaded.config
    }

    /// Add a filter written in Rust. Among handlers of equal priority it runs
    /// after those from the config file.
    pub fn with_filter(mut self, name: impl Into<String>, priority: i64, filter: impl Filter) -> Self {
        self.plugins.push(PluginFilter {
            name: name.into(),
            priority,
            filter: Arc::new(filter),
        });
        self
    }

    /// Add a backend written in Rust. It receives every event class, with
    /// the default delivery options (retries, dead letters, pause/resume all
    /// apply); among handlers of equal priority it comes after those from
    /// the config file. Its id (`KIND.NAME`) names its spool tables, so keep
    /// it stable across restarts.
    pub fn with_backend(mut self, name: impl Into<String>, priority: i64, backend: impl Backend) -> Self {
        self.backend_plugins.push(BackendPlugin {
            name: name.into(),
            priority,
            backend: AnyBackend::new(backend),
        });
        self
    }

    /// Build the chain and the backends without starting anything.
    pub fn build(&self) -> Result<Assembly, ConfigError> {
        let cfg = &self.loaded.config;
        // The process's `[egress]` policy, before anything that checks or
        // delivers to an API-chosen URL exists.
        event_pusher_backends::egress::install(event_pusher_backends::egress::Egress::new(&cfg.egress));
        let mut backends = cfg.backends.build(&self.loaded.source)?;
        // Checked here too so `check-config` refuses a clashing path.
        endpoints_of(backends.iter(), &self.loaded)?;
        let filters = event_pusher_filters::build(&cfg.filters, &self.loaded.source)?;
        backends.extend(self.backend_plugins.iter().map(|p| BuiltBackend {
            name: p.name.clone(),
            priority: p.priority,
            classes: EventClasses::ALL,
            options: DeliveryOptions::default(),
            backend: p.backend.clone(),
            position: usize::MAX,
            endpoint: None,
        }));
        // The registry numbers the backends once; chain, spool and engine
        // all take their slots from it.
        let mut slots = SlotRegistry::new();
        let mut slotted = Vec::with_capacity(backends.len());
        for b in backends {
            let slot = slots
                .register(b.backend.kind, b.name.clone())
                .map_err(|e| ConfigError {
                    file: self.loaded.source.file().to_owned(),
                    line: 0,
                    column: 0,
                    key: Some(format!("backends.{}", b.id())),
                    message: format!("{e}: a backend added in code has the name of one in the file"),
                })?;
            slotted.push((slot, b));
        }
        let chain_backends: Vec<ChainBackend> = slotted
            .iter()
            .map(|(slot, b)| ChainBackend {
                slot: *slot,
                name: b.name.clone(),
                priority: b.priority,
                classes: b.classes,
                backend: b.backend.clone(),
                position: b.position,
            })
            .collect();
        let chain = assemble(&filters, &chain_backends, &self.plugins);
        let reloader = FilterReloader::new(&self.loaded, chain_backends, self.plugins.clone());
        Ok(Assembly {
            chain,
            backends: slotted,
            slots,
            reloader,
        })
    }

    /// Run until SIGTERM or Ctrl-C.
    pub async fn run(self) -> Result<(), RunError> {
        self.run_until(shutdown_signal()).await
    }

    /// Run until `shutdown` completes: stop accepting, finish in-flight
    /// requests, let deliveries drain for the grace period, sync the spool.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), RunError> {
        let self_limits = crate::server::listener::ListenerLimits {
            header_timeout: Duration::from_millis(self.loaded.config.server.header_timeout_ms),
            max_connections: self.loaded.config.server.max_connections,
        };
        let upkeep = crate::operations::Upkeep::of(&self.loaded.config);
        let (state, listener) = self.start().await?;
        let addr = listener.local_addr().map_err(RunError::Serve)?;
        tracing::info!(%addr, "event-pusher listening");
        #[cfg(unix)]
        let sighup = {
            let state = state.clone();
            crate::reload::on_sighup(move || {
                let state = state.clone();
                // The outcome is logged by `reload`.
                async move {
                    let _ = state.reloader.reload(&state.pipeline).await;
                }
            })
            .map_err(RunError::Serve)?
        };
        // Operations upkeep (operational events, auto-disable, retention):
        // connected before the queues start, stopped before they drain.
        let upkeep = crate::operations::start(&state, upkeep);
        let handles = state.engine.start();
        let intake: Arc<dyn crate::sources::Intake> = state.clone();
        let sources = state.sources.start(&intake);
        let app = crate::server::router(state.clone());
        let serve_state = state.clone();
        let grace = state.shutdown_grace;
        // `shutdown_grace_ms` bounds the whole shutdown: requests still open
        // at the deadline are cut, and deliveries get what is left.
        let deadline = Arc::new(std::sync::OnceLock::new());
        let set_deadline = deadline.clone();
        crate::server::listener::serve(
            listener,
            app,
            self_limits,
            async move {
                shutdown.await;
                serve_state.accepting.store(false, std::sync::atomic::Ordering::Release);
                // Live sessions (gateway WebSockets) left the listener's
                // connections at their upgrade: tell them to reconnect
                // elsewhere before the listener stops.
                for endpoint in &serve_state.endpoints {
                    endpoint.drain().await;
                }
                tracing::info!("shutting down: no new requests; finishing in-flight ones");
            },
            move || *set_deadline.get_or_init(|| tokio::time::Instant::now() + grace),
        )
        .await;
        #[cfg(unix)]
        sighup.abort();
        // Sources stop before deliveries drain: each stores and acks the
        // batch in hand; what it holds unacked goes back to the broker.
        sources.join().await;
        upkeep.stop();
        let left = deadline
            .get()
            .map_or(grace, |d| d.saturating_duration_since(tokio::time::Instant::now()));
        state.engine.shutdown(handles, left).await;
        tracing::info!("stopped; undelivered events are safe in the spool");
        Ok(())
    }

    async fn start(self) -> Result<(Arc<AppState>, tokio::net::TcpListener), RunError> {
        let Assembly {
            chain,
            backends,
            slots,
            reloader,
        } = self.build()?;
        let cfg = &self.loaded.config;
        // Spool tables are keyed by KIND.NAME (names are unique per kind
        // only), in slot order.
        let names = slots.ids();
        let limits = SpoolLimits {
            max_queue: cfg.spool.max_queue,
            max_bytes: cfg.spool.max_bytes,
            keys: KeyPolicy {
                window: Duration::from_secs(cfg.server.idempotency_window_s),
                max_keys: cfg.server.idempotency_max_keys,
            },
        };
        let dir = cfg.spool.dir.clone();
        let spool = tokio::task::spawn_blocking(move || Spool::open(&dir, &names, limits))
            .await
            .map_err(SpoolError::io)??;
        // Backends that keep state in the spool (push registry, presence)
        // load it now, before any event runs through the chain.
        // Committed state changes come back to them through the router.
        let mut states = StateRouter::new();
        for (_, b) in &backends {
            let id = b.id();
            let attachment = Attachment::new(spool.clone(), id.clone());
            b.backend
                .deliver
                .attach(&attachment)
                .map_err(|source| RunError::Attach {
                    backend: id.clone(),
                    source,
                })?;
            states.add(id, b.backend.claims.clone());
        }
        spool.set_state_sink(Box::new(states));
        #[cfg(feature = "push")]
        let push = Arc::new(event_pusher_backends::push::PushCommands::new(
            backends
                .iter()
                .filter_map(|(_, b)| b.backend.downcast::<event_pusher_backends::push::PushBackend>())
                .collect(),
        ));
        let endpoints = endpoints_of(backends.iter().map(|(_, b)| b), &self.loaded)?;
        let handles = backends
            .into_iter()
            .map(|(slot, b)| (slot, BackendHandle::new(b.name, b.backend, b.options)))
            .collect();
        let pipeline = Pipeline::new(chain, spool.clone());
        // Hook commands of the backend kinds that have them.
        #[cfg(feature = "push")]
        if !push.backends().is_empty() {
            pipeline.set_commands(event_pusher_core::CommandHooks::new().with(push.clone()));
        }
        let engine = DeliveryEngine::new(spool, slots, handles, pipeline.subscription_index());
        // Stored subscriptions get their slots after the config's; their
        // queues start with the engine's.
        // With [cluster], state changes accepted with requests wait in the
        // spool's outbox until the store has them.
        let cluster = cfg.cluster.clone().map(|c| {
            engine.spool().enable_outbox();
            Arc::new(crate::cluster::Cluster::new(c, cfg.server.listen.port()))
        });
        let webhooks = Webhooks::new(cluster.clone());
        let loaded = webhooks.load(&engine).await?;
        if loaded > 0 {
            tracing::info!(subscriptions = loaded, "webhook subscriptions loaded");
        }
        let listener = tokio::net::TcpListener::bind(cfg.server.listen)
            .await
            .map_err(|source| RunError::Bind {
                addr: cfg.server.listen,
                source,
            })?;
        let state = Arc::new(AppState {
            pipeline,
            engine,
            token: cfg.server.token().map(str::to_owned),
            max_body_bytes: cfg.server.max_body_bytes,
            body_timeout: Duration::from_millis(cfg.server.body_timeout_ms),
            metrics: IngestMetrics::default(),
            accepting: AtomicBool::new(true),
            shutdown_grace: Duration::from_millis(cfg.server.shutdown_grace_ms),
            reloader,
            webhooks,
            #[cfg(feature = "push")]
            push,
            sources: Sources::new(&cfg.sources),
            endpoints,
            cluster: cluster.clone(),
        });
        if let Some(cluster) = cluster {
            crate::cluster::sync::start(cluster, state.clone(), cfg.server.listen.port());
        }
        Ok((state, listener))
    }
}

/// What the backends serve on the main listener. Two may not share a path,
/// nor take one the sidecar serves itself.
fn endpoints_of<'a>(
    backends: impl Iterator<Item = &'a BuiltBackend>,
    loaded: &LoadedConfig,
) -> Result<Vec<Arc<dyn Endpoint>>, ConfigError> {
    let mut endpoints: Vec<Arc<dyn Endpoint>> = Vec::new();
    for b in backends {
        let Some(endpoint) = &b.endpoint else { continue };
        let path = endpoint.path();
        let clash = if crate::server::is_reserved(path) {
            Some("the sidecar serves it itself".to_owned())
        } else {
            endpoints
                .iter()
                .find(|e| e.path() == path)
                .map(|_| "another backend serves it".to_owned())
        };
        if let Some(why) = clash {
            return Err(loaded.source.error_at_span(
                b.position..b.position,
                Some(format!("backends.{}.path", b.id())),
                format!("path \"{path}\" cannot be used: {why}"),
            ));
        }
        endpoints.push(endpoint.clone());
    }
    Ok(endpoints)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
