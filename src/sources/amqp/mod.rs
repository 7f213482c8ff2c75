//! The `amqp` ingest source: hook calls from RabbitMQ partitions, so that
//! several sidecars can share one stream (`docs/scale-out.md`).
//!
//! ```toml
//! [sources.amqp.main]
//! url = "amqp://guest:guest@127.0.0.1:5672/%2f"
//! exchange = "event-pusher.hooks"
//! partitions = 8
//! prefetch = 256
//! declare = true
//! ```
//!
//! Chat nodes publish each hook call to an `x-consistent-hash` exchange
//! with the user's bare JID as routing key; the exchange spreads users over
//! the partition queues, each a quorum queue with single-active-consumer.
//! Every sidecar subscribes to every partition; RabbitMQ lets one consume
//! each and hands it to another when that one goes away. RabbitMQ is the
//! distributed engine; the sidecar only stores before it acks.
//!
//! - `config.rs`: the `[sources.amqp.NAME]` keys.
//! - `topology.rs`: exchange, partition queues, dead-letter queue; declaring.
//! - `session.rs`: one connection's life (connect, declare, a consumer per
//!   partition, the balancer), and reconnecting.
//! - `partition.rs`: one partition's consumer: batch, accept, ack.
//! - `balance.rs`: handing partitions over so sidecars share the work.
//! - `dead_letter.rs`: invalid messages to `EXCHANGE.dead` with the reason.
//! - `status.rs`: readiness and counters.

mod balance;
mod config;
mod dead_letter;
mod handover;
mod partition;
mod session;
mod status;
pub mod topology;

use std::fmt::Write;
use std::sync::Arc;

use event_pusher_core::metrics::label;

pub use config::{AmqpSourceConfig, DEFAULT_EXCHANGE};
pub use dead_letter::{json_properties, ERROR_HEADER};
pub use session::run;
pub use status::{Outcome, SourceStatus};
pub use topology::Topology;

/// One configured AMQP source: its config and what it reports.
pub struct AmqpSource {
    pub name: String,
    pub config: AmqpSourceConfig,
    pub status: Arc<SourceStatus>,
}

impl AmqpSource {
    pub fn new(name: &str, config: AmqpSourceConfig) -> Self {
        AmqpSource {
            name: name.to_owned(),
            config,
            status: Arc::new(SourceStatus::default()),
        }
    }

    pub fn topology(&self) -> Topology {
        Topology::new(&self.config.exchange, self.config.partitions)
    }
}

/// Reads one gauge off a source's status.
type Reading = fn(&SourceStatus) -> u64;

/// `event_pusher_source_messages_total{source,kind,outcome}`,
/// `event_pusher_source_consuming{source,kind}` and
/// `event_pusher_source_partitions_active{source,kind}`.
pub fn render_metrics(sources: &[Arc<AmqpSource>], out: &mut String) {
    if sources.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP event_pusher_source_messages_total Messages from ingest sources by outcome \
         (consumed, acked, rejected to the dead-letter queue, redelivered by the broker).\n\
         # TYPE event_pusher_source_messages_total counter"
    );
    for s in sources {
        for o in Outcome::ALL {
            let _ = writeln!(
                out,
                "event_pusher_source_messages_total{{source=\"{}\",kind=\"amqp\",outcome=\"{}\"}} {}",
                label(&s.name),
                o.label(),
                s.status.get(o)
            );
        }
    }
    let gauges: [(&str, &str, Reading); 2] = [
        (
            "event_pusher_source_consuming",
            "1 while the source is connected and subscribed to every partition.",
            |s| u64::from(s.not_consuming().is_none()),
        ),
        (
            "event_pusher_source_partitions_active",
            "Partitions this sidecar is the active consumer of.",
            SourceStatus::active_partitions,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for s in sources {
            let _ = writeln!(
                out,
                "{name}{{source=\"{}\",kind=\"amqp\"}} {}",
                label(&s.name),
                value(&s.status)
            );
        }
    }
}
