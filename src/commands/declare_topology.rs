//! `event-pusher declare-topology`: declare the scale-out exchange,
//! partition queues, bindings and dead-letter queue, as a sidecar with
//! `declare = true` does at start. For operators who run sidecars with
//! `declare = false` (a user without configure permission) or want the
//! queues before the first sidecar starts.

use super::CommandError;
use crate::sources::amqp::Topology;

pub async fn run(url: &str, exchange: &str, partitions: usize) -> Result<String, CommandError> {
    let (connection, _) = super::amqp::connect(url, "event-pusher declare-topology").await?;
    let topology = Topology::new(exchange, partitions);
    topology.declare(&connection).await.map_err(CommandError)?;
    let _ = connection.close(200, "done".into()).await;
    Ok(format!(
        "declared exchange \"{exchange}\" (x-consistent-hash), queues \"{}\" .. \"{}\" (quorum, single active consumer, weight 1) and \"{}\"\n",
        topology.queue(0),
        topology.queue(partitions - 1),
        topology.dead_queue()
    ))
}
