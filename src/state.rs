//! What the HTTP handlers share: the ingest pipeline, the delivery engine,
//! and the listener's own settings and counters. Its own module so the
//! server and the runtime both depend on it, not on each other.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use event_pusher_backends::Endpoint;
use event_pusher_core::delivery::DeliveryEngine;
use event_pusher_core::spool::Spool;
use event_pusher_core::Pipeline;

use crate::ingest_metrics::IngestMetrics;
use crate::reload::FilterReloader;
use crate::sources::Sources;
use crate::webhooks::Webhooks;

/// Everything the HTTP handlers share.
pub struct AppState {
    pub pipeline: Pipeline,
    pub engine: DeliveryEngine,
    pub token: Option<String>,
    pub max_body_bytes: usize,
    /// How long a request's whole body may take to arrive.
    pub body_timeout: Duration,
    pub metrics: IngestMetrics,
    pub accepting: AtomicBool,
    pub shutdown_grace: Duration,
    pub reloader: FilterReloader,
    /// Webhook subscriptions added at runtime.
    pub webhooks: Webhooks,
    /// The cluster store (`[cluster]`), when configured.
    pub cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
    /// The push backends, for the device registry routes and the
    /// `push_enable`/`push_disable` hook calls.
    #[cfg(feature = "push")]
    pub push: std::sync::Arc<event_pusher_backends::push::PushCommands>,
    /// Ingest sources other than HTTP (`[sources]`): readiness, counters.
    pub sources: Sources,
    /// What backends serve on this listener (the gateway's WebSocket).
    pub endpoints: Vec<Arc<dyn Endpoint>>,
}

impl AppState {
    pub fn spool(&self) -> &Spool {
        self.engine.spool()
    }
}

/// The sources feed the pipeline through this view of the state.
impl crate::sources::Intake for AppState {
    fn pipeline(&self) -> &event_pusher_core::Pipeline {
        &self.pipeline
    }

    fn engine(&self) -> &event_pusher_core::delivery::DeliveryEngine {
        &self.engine
    }

    fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }
}
