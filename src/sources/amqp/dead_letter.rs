//! Messages that are not valid input go to the dead-letter queue
//! (`EXCHANGE.dead`) with a header `x-event-pusher-error` naming the
//! problem, so an operator can see why and fix or drop them.
//!
//! Published by the sidecar rather than through the queue's own
//! dead-lettering: a quorum queue's DLX cannot add a header. The publish
//! waits for the broker's confirm before the original is rejected, so a
//! message is in one queue or the other at every moment (a crash in
//! between leaves a copy in both, never in neither).

use lapin::message::Delivery;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};

use super::topology::short;

/// The header that says why a message was dead-lettered.
pub const ERROR_HEADER: &str = "x-event-pusher-error";
/// The partition queue the message came from.
pub const QUEUE_HEADER: &str = "x-event-pusher-queue";

/// A confirm-mode channel to publish dead letters on.
pub struct DeadLetters {
    channel: Channel,
    queue: ShortString,
}

impl DeadLetters {
    pub async fn open(channel: Channel, queue: &str) -> Result<Self, String> {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("cannot turn on publisher confirms for dead letters: {e}"))?;
        Ok(DeadLetters {
            channel,
            queue: short(queue)?,
        })
    }

    /// Publish a copy of `message` with the reason; returns once the
    /// broker confirmed it. An error leaves the original unsettled.
    pub async fn publish(&self, message: &Delivery, from_queue: &str, reason: &str) -> Result<(), String> {
        let mut headers = message.properties.headers().clone().unwrap_or_default();
        headers.insert(ERROR_HEADER.into(), AMQPValue::LongString(LongString::from(reason)));
        headers.insert(QUEUE_HEADER.into(), AMQPValue::LongString(LongString::from(from_queue)));
        let properties = message.properties.clone().with_headers(headers).with_delivery_mode(2);
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                self.queue.clone(),
                // Mandatory: a missing dead-letter queue comes back as an
                // error instead of the message vanishing.
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &message.data,
                properties,
            )
            .await
            .map_err(|e| format!("cannot publish to dead-letter queue \"{}\": {e}", self.queue))?
            .await
            .map_err(|e| format!("no confirm from dead-letter queue \"{}\": {e}", self.queue))?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => Err(format!(
                "dead-letter queue \"{}\" does not exist (declare = true creates it)",
                self.queue
            )),
            Confirmation::Nack(None) => Err(format!("the broker refused a dead letter for \"{}\"", self.queue)),
            Confirmation::NotRequested => Err("dead-letter channel is not in confirm mode".to_owned()),
        }
    }
}

/// Properties of a message published by this project: persistent JSON.
pub fn json_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
}
