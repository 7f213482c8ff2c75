//! Publishing one event and turning what the broker says into delivered /
//! retry / dead letter.
//!
//! An event counts as delivered only when the broker acks its publish
//! (publisher confirms are always on). A nack, a missing confirm, a lost
//! channel or no channel at all is retryable; the engine keeps the event in
//! the spool and tries again. A message the broker returns as unroutable
//! (only with `mandatory = true`) will not route any better next time, so
//! it goes to dead letters with the broker's reason.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use event_pusher_core::{one_by_one, Backend, BackendError, Delivery, DeliveryError, Event};
use lapin::message::BasicReturnMessage;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::Confirmation;

use super::channels::Channels;
use super::config::{RabbitConfig, MAX_SHORT_STRING};
use super::declare::Declaration;
use super::message::{outgoing, properties, Exchanges};

/// At most this long a delivery waits for a reconnect (less if
/// `confirm_timeout_ms` is shorter): long enough to ride out a connection
/// reset, short enough that a real outage goes back to the engine's
/// backoff and circuit breaker quickly.
const RECONNECT_GRACE: Duration = Duration::from_secs(2);

pub struct RabbitBackend {
    exchanges: Exchanges,
    channels: Channels,
    confirm_timeout: Duration,
    /// How long a delivery waits for a lost channel to be reopened before
    /// it gives up with a retryable error.
    reconnect_grace: Duration,
    mandatory: bool,
    started: AtomicBool,
}

impl RabbitBackend {
    /// Build from config. Nothing connects until [`Backend::start`].
    pub fn new(name: &str, config: &RabbitConfig) -> Result<Self, BackendError> {
        let exchanges = Exchanges::from_config(config);
        let declarations: Vec<Declaration> = exchanges
            .all()
            .into_iter()
            .map(|(key, exchange)| Declaration {
                exchange: exchange.clone(),
                table: format!("backends.rabbit.{name}.{key}"),
            })
            .collect();
        if declarations.is_empty() {
            // Legal, and MongooseIM allows it too, but it publishes nothing.
            tracing::warn!(
                backend = %format!("rabbit.{name}"),
                "no exchange configured: set presence_exchange, chat_msg_exchange or groupchat_msg_exchange"
            );
        }
        let channels = Channels::new(
            name,
            config.url.clone(),
            declarations,
            config.pool_size,
            config.max_in_flight,
        )?;
        Ok(RabbitBackend {
            exchanges,
            channels,
            confirm_timeout: Duration::from_millis(config.confirm_timeout_ms),
            reconnect_grace: Duration::from_millis(config.confirm_timeout_ms).min(RECONNECT_GRACE),
            mandatory: config.mandatory,
            started: AtomicBool::new(false),
        })
    }

    /// What the broker made of one publish.
    fn classify(&self, confirmation: Confirmation) -> Result<(), DeliveryError> {
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => Err(returned_error(&returned)),
            Confirmation::Nack(None) => Err(DeliveryError::retryable(
                "RabbitMQ nacked the publish (it could not take the message)",
            )),
            // Every channel is put in confirm mode before use; this would
            // mean a channel escaped that, so do not count it as delivered.
            Confirmation::NotRequested => Err(DeliveryError::retryable(
                "publish was not confirmed (channel not in confirm mode)",
            )),
        }
    }
}

/// A message returned as unroutable: no queue is bound for its routing key.
fn returned_error(r: &BasicReturnMessage) -> DeliveryError {
    DeliveryError::permanent(format!(
        "RabbitMQ returned the message as unroutable: {} {} (exchange \"{}\", routing key \"{}\"); \
         bind a queue for it or set mandatory = false",
        r.reply_code, r.reply_text, r.delivery.exchange, r.delivery.routing_key
    ))
    .with_status(r.reply_code)
}

#[async_trait]
impl Backend for RabbitBackend {
    const KIND: &'static str = "rabbit";

    fn wants(&self, event: &Event) -> bool {
        self.exchanges.route(event).is_some()
    }

    /// Connect every lane and declare the exchanges. A refused declare
    /// comes back as the error, naming the exchange and both settings; the
    /// engine calls `start` again with backoff.
    async fn start(&self) -> Result<(), BackendError> {
        self.channels.open_missing().await?;
        self.channels.supervise();
        self.started.store(true, Ordering::Release);
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.started.load(Ordering::Acquire) && self.channels.is_up()
    }

    /// One event at a time: there is no batch call to use.
    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        one_by_one(batch, |d| self.publish(d)).await
    }
}

impl RabbitBackend {
    /// Publish one event and wait for its confirm.
    pub async fn publish(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let event = &delivery.event;
        let Some(msg) = outgoing(&self.exchanges, event) else {
            return Err(DeliveryError::permanent(
                "not published to RabbitMQ: no exchange is configured for this kind of event, or it has no body",
            ));
        };
        let routing_key = ShortString::try_new(msg.routing_key.as_str()).map_err(|_| {
            DeliveryError::permanent(format!(
                "routing key \"{}\" is {} bytes long; AMQP allows at most {MAX_SHORT_STRING}",
                msg.routing_key,
                msg.routing_key.len()
            ))
        })?;
        // Exchange names were checked against the same limit in config.
        let exchange =
            ShortString::try_new(msg.exchange.as_str()).map_err(|e| DeliveryError::permanent(e.to_string()))?;
        let props = properties(event, msg.class).map_err(|e| DeliveryError::permanent(e.to_string()))?;

        // The lane is checked out only to take handles to its channel (a
        // lapin channel is shared by cloning) and goes back to the pool at
        // once: holding it across the `basic_publish` await serialized
        // every publish on a lane behind the previous one's socket write
        // (rabbit bench, pool_size 1, window 64: 0.24-0.31 of raw lapin
        // against 0.86-0.97), where publishes sharing the channel go out
        // together.
        let (channel, permits, health) = {
            let lane = self
                .channels
                .checkout(self.reconnect_grace)
                .await
                .map_err(|e| DeliveryError::retryable(e.to_string()))?;
            (lane.channel.clone(), lane.permits.clone(), lane.health.clone())
        };
        if health.blocked() {
            return Err(DeliveryError::retryable(
                "RabbitMQ is blocking publishers (a memory or disk alarm on the broker)",
            ));
        }
        // Waiting for a slot is bounded separately from the confirm, so a
        // long queue for permits cannot look like a lost confirm.
        let _permit = match tokio::time::timeout(self.confirm_timeout, permits.acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) | Err(_) => {
                return Err(DeliveryError::retryable(format!(
                    "all publish slots on the RabbitMQ channel stayed busy for {:?}",
                    self.confirm_timeout
                )))
            }
        };
        let options = BasicPublishOptions {
            mandatory: self.mandatory,
            immediate: false,
        };
        let publish = async {
            channel
                .basic_publish(exchange, routing_key, options, &msg.body, props)
                .await?
                .await
        };
        let confirmed = tokio::time::timeout(self.confirm_timeout, publish).await;
        match confirmed {
            Ok(Ok(confirmation)) => self.classify(confirmation),
            Ok(Err(e)) => {
                let why = format!("publish to RabbitMQ failed: {e}");
                self.channels.retire(&health, &why);
                Err(DeliveryError::retryable(why))
            }
            Err(_) => {
                // The channel's state is unknown (a stuck broker, a half-open
                // TCP connection): start over on a fresh one. The broker may
                // still have the message, so a retry can duplicate it; the
                // stable message_id lets consumers drop the copy.
                let why = format!("no publisher confirm from RabbitMQ within {:?}", self.confirm_timeout);
                self.channels.retire(&health, &why);
                Err(DeliveryError::retryable(why))
            }
        }
    }
}
