//! Ingest sources other than HTTP: inputs the sidecar pulls hook calls
//! from and hands to [`Pipeline::accept`], the same code path as
//! `POST /v1/events`. Configured as `[sources.KIND.NAME]`; one kind today,
//! `amqp` (hook calls from RabbitMQ partitions, so several sidecars can
//! share one stream: see `amqp/mod.rs`).
//!
//! [`Sources`] is what the HTTP side sees (readiness, metrics); [`Running`]
//! is the spawned consumers, stopped at shutdown before the delivery
//! engine drains.
//!
//! [`Pipeline::accept`]: event_pusher_core::Pipeline::accept

#[cfg(feature = "rabbit")]
pub mod amqp;

#[cfg(feature = "rabbit")]
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use event_pusher_core::delivery::DeliveryEngine;
use event_pusher_core::Pipeline;

/// `[sources]`: one map per kind, by name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    #[cfg(feature = "rabbit")]
    #[serde(default)]
    pub amqp: BTreeMap<String, amqp::AmqpSourceConfig>,
}

impl SourcesConfig {
    /// `KIND.NAME` of every configured source, for `check-config`.
    pub fn ids(&self) -> Vec<String> {
        #[allow(unused_mut)] // nothing to add without the rabbit feature
        let mut ids: Vec<String> = Vec::new();
        #[cfg(feature = "rabbit")]
        ids.extend(self.amqp.keys().map(|n| format!("amqp.{n}")));
        ids
    }
}

/// What a source needs of the running sidecar: the pipeline it feeds, the
/// delivery engine (whose backlog paces the partitions) and the body limit
/// HTTP ingest applies. The sidecar's state implements it; sources know
/// nothing else of it.
pub trait Intake: Send + Sync + 'static {
    fn pipeline(&self) -> &Pipeline;
    fn engine(&self) -> &DeliveryEngine;
    fn max_body_bytes(&self) -> usize;
}

/// The configured sources' state, shared with `/ready` and `/metrics`.
#[derive(Default)]
pub struct Sources {
    #[cfg(feature = "rabbit")]
    amqp: Vec<Arc<amqp::AmqpSource>>,
}

impl Sources {
    pub fn new(config: &SourcesConfig) -> Self {
        #[cfg(not(feature = "rabbit"))]
        let _ = config;
        Sources {
            #[cfg(feature = "rabbit")]
            amqp: config
                .amqp
                .iter()
                .map(|(name, c)| Arc::new(amqp::AmqpSource::new(name, c.clone())))
                .collect(),
        }
    }

    /// `KIND.NAME: reason` of every source that cannot consume now.
    pub fn not_ready(&self) -> Vec<String> {
        #[allow(unused_mut)]
        let mut out = Vec::new();
        #[cfg(feature = "rabbit")]
        for s in &self.amqp {
            if let Some(why) = s.status.not_consuming() {
                out.push(format!("amqp.{}: {why}", s.name));
            }
        }
        out
    }

    /// The sources' series for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        #[cfg(feature = "rabbit")]
        amqp::render_metrics(&self.amqp, out);
        #[cfg(not(feature = "rabbit"))]
        let _ = out;
    }

    /// Spawn every source's consumer; they feed `state.pipeline`.
    pub fn start(&self, state: &Arc<dyn Intake>) -> Running {
        let (stop, stopped) = watch::channel(false);
        #[allow(unused_mut)]
        let mut tasks = Vec::new();
        #[cfg(feature = "rabbit")]
        for s in &self.amqp {
            tasks.push(tokio::spawn(amqp::run(s.clone(), state.clone(), stopped.clone())));
        }
        #[cfg(not(feature = "rabbit"))]
        let _ = (state, stopped);
        Running { stop, tasks }
    }
}

/// The spawned source consumers.
pub struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stop taking new input: each consumer finishes (stores and acks) the
    /// batch in hand, then lets go of the rest, which the broker redelivers.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stop, and wait until every consumer has let go.
    pub async fn join(self) {
        self.stop();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
