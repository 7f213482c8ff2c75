//! The broker side of a source: the `x-consistent-hash` exchange, the
//! partition queues bound to it with equal weight, and the dead-letter
//! queue. Declared at start when `declare = true` and by
//! `event-pusher declare-topology`; declaring what exists with the same
//! settings is a no-op.
//!
//! Partition queues are quorum queues (replicated, and a message stays
//! until it is acked) with `x-single-active-consumer`: every sidecar
//! subscribes to every partition and the broker lets one of them consume
//! each, so a user's hook calls (one partition, by the hash of the routing
//! key) are stored by one sidecar at a time, in order.
//!
//! One more queue, `EXCHANGE.members`, is not part of the stream: each
//! sidecar keeps a consumer on it so the sidecars can count each other
//! (see `balance.rs`); it is declared by the sidecars themselves.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ErrorKind, ExchangeKind};

/// The exchange type; a RabbitMQ plugin (`rabbitmq_consistent_hash_exchange`).
pub const EXCHANGE_TYPE: &str = "x-consistent-hash";

/// The names a source's exchange implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub exchange: String,
    pub partitions: usize,
}

impl Topology {
    pub fn new(exchange: &str, partitions: usize) -> Self {
        Topology {
            exchange: exchange.to_owned(),
            partitions,
        }
    }

    /// `EXCHANGE.i`
    pub fn queue(&self, partition: usize) -> String {
        format!("{}.{partition}", self.exchange)
    }

    /// `EXCHANGE.dead`: messages that are not valid input.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.exchange)
    }

    /// Declare the exchange, the partition queues and their bindings, and
    /// the dead-letter queue. A dead-letter queue that exists already is
    /// used as it is, whatever its type: the contract names it but not its
    /// arguments, so an operator may have made it differently.
    pub async fn declare(&self, connection: &Connection) -> Result<(), String> {
        let channel = &open(connection).await?;
        channel
            .exchange_declare(
                short(&self.exchange)?,
                ExchangeKind::Custom(EXCHANGE_TYPE.into()),
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| explain(&format!("exchange \"{}\"", self.exchange), &e))?;
        for p in 0..self.partitions {
            let queue = self.queue(p);
            declare_queue(channel, &queue, true).await?;
            // The binding key of a consistent-hash exchange is the weight:
            // equal weights give each partition an equal share of users.
            channel
                .queue_bind(
                    short(&queue)?,
                    short(&self.exchange)?,
                    "1".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| explain(&format!("binding of queue \"{queue}\""), &e))?;
        }
        let _ = channel.close(200, "declared".into()).await;
        let dead = self.dead_queue();
        // Declared as we would make it, on a channel of its own; one the
        // operator made with other arguments is refused (406) and used as
        // it is. Not probed with a passive declare first: on the first
        // start the queue is missing, and that probe's channel close is
        // logged as an error by the AMQP client.
        let channel = open(connection).await?;
        let declared = channel
            .queue_declare(
                short(&dead)?,
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                quorum_args(false),
            )
            .await;
        let _ = channel.close(200, "declared".into()).await;
        match declared {
            Ok(_) => Ok(()),
            Err(e) if is_precondition_failed(&e) => Ok(()),
            Err(e) => Err(explain(&format!("queue \"{dead}\""), &e)),
        }
    }
}

fn is_precondition_failed(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(amqp)
        if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

async fn open(connection: &Connection) -> Result<Channel, String> {
    connection
        .create_channel()
        .await
        .map_err(|e| format!("cannot open a channel to declare the topology: {e}"))
}

/// A durable quorum queue; partitions also get single-active-consumer.
fn quorum_args(single_active: bool) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    if single_active {
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    args
}

async fn declare_queue(channel: &Channel, name: &str, single_active: bool) -> Result<(), String> {
    let args = quorum_args(single_active);
    channel
        .queue_declare(
            short(name)?,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .map(|_| ())
        .map_err(|e| explain(&format!("queue \"{name}\""), &e))
}

pub fn short(s: &str) -> Result<ShortString, String> {
    ShortString::try_new(s).map_err(|e| format!("\"{s}\" is not an AMQP short string: {e}"))
}

/// A readable reason for a failed declare, with the broker's text.
pub fn explain(what: &str, error: &lapin::Error) -> String {
    if let ErrorKind::ProtocolError(amqp) = error.kind() {
        let text = amqp.get_message().as_str();
        match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => {
                return format!(
                    "cannot declare {what}: it exists on the broker with other settings \
                     (delete it, or set declare = false to use it as it is). Broker said: {text}"
                )
            }
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => {
                return format!(
                    "cannot declare {what}: access refused (check the user's configure permission). \
                     Broker said: {text}"
                )
            }
            AMQPErrorKind::Hard(_) if text.contains(EXCHANGE_TYPE) || text.contains("exchange type") => {
                return format!(
                    "cannot declare {what}: the broker has no `{EXCHANGE_TYPE}` exchange type \
                     (run `rabbitmq-plugins enable rabbitmq_consistent_hash_exchange`). Broker said: {text}"
                )
            }
            _ => {}
        }
    }
    format!("cannot declare {what}: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_exchange() {
        let t = Topology::new("event-pusher.hooks", 8);
        assert_eq!(t.queue(0), "event-pusher.hooks.0");
        assert_eq!(t.queue(7), "event-pusher.hooks.7");
        assert_eq!(t.dead_queue(), "event-pusher.hooks.dead");
    }
}
