//! `event-pusher declare-topology`: declare the scale-out exchange,
//! partition queues, bindings and dead-letter queue, as a sidecar with
//! `declare = true` does at start. For operators who run sidecars with
//! `declare = false` (a user without configure permission) or want the
//! queues before the first sidecar starts.

use event_pusher_backends::rabbit::AmqpUrl;
use lapin::types::LongString;
use lapin::{Connection, ConnectionProperties};

use super::CommandError;
use crate::sources::amqp::Topology;

pub async fn run(url: &str, exchange: &str, partitions: usize) -> Result<String, CommandError> {
    let url = AmqpUrl::parse(url).map_err(|e| CommandError(format!("--url: {e}")))?;
    let props = ConnectionProperties::default().with_connection_name(LongString::from("event-pusher declare-topology"));
    let connection = Connection::connect_uri(url.uri().clone(), props)
        .await
        .map_err(|e| CommandError(format!("cannot connect to RabbitMQ at {url}: {e}")))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| CommandError(format!("cannot open a channel on {url}: {e}")))?;
    let topology = Topology::new(exchange, partitions);
    topology.declare(&channel).await.map_err(CommandError)?;
    let _ = connection.close(200, "done".into()).await;
    Ok(format!(
        "declared exchange \"{exchange}\" (x-consistent-hash), queues \"{}\" .. \"{}\" (quorum, single active consumer, weight 1) and \"{}\"\n",
        topology.queue(0),
        topology.queue(partitions - 1),
        topology.dead_queue()
    ))
}
