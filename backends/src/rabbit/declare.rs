//! Declaring the configured exchanges, and explaining a refusal.
//!
//! Exchanges are declared on every channel we open — at start and after
//! every reconnect — so an exchange deleted while we were away (or a broker
//! that lost its non-durable exchanges in a restart) is back before the
//! first publish. Declaring an exchange that exists with the same settings
//! is a no-op; with other settings the broker closes the channel with
//! `PRECONDITION_FAILED` and a reply text naming the differing argument,
//! which [`explain`] turns into a message that says what the config asks
//! for, what the broker has, and where to change it.

use event_pusher_core::BackendError;
use lapin::options::ExchangeDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, ErrorKind};

use super::config::Exchange;

/// One exchange to declare, with the config table it came from.
#[derive(Debug, Clone)]
pub struct Declaration {
    pub exchange: Exchange,
    /// `backends.rabbit.NAME.presence_exchange`
    pub table: String,
}

impl Declaration {
    fn wanted(&self) -> String {
        format!("type = \"{}\", durable = {}", self.exchange.kind, self.exchange.durable)
    }
}

/// Declare one exchange. Names under `amq.` belong to the broker, which
/// refuses to (re)declare them; they always exist, so only check that.
pub async fn declare(channel: &Channel, d: &Declaration) -> Result<(), BackendError> {
    let name = ShortString::try_new(d.exchange.name.as_str())
        .map_err(|e| BackendError::new(format!("exchange name in [{}]: {e}", d.table)))?;
    let options = ExchangeDeclareOptions {
        passive: d.exchange.name.starts_with("amq."),
        durable: d.exchange.durable,
        auto_delete: false,
        internal: false,
        nowait: false,
    };
    channel
        .exchange_declare(name, d.exchange.kind.to_lapin(), options, FieldTable::default())
        .await
        .map_err(|e| BackendError::with_source(explain(d, &e), e))
}

/// A readable reason for a failed declare.
pub fn explain(d: &Declaration, error: &lapin::Error) -> String {
    let name = &d.exchange.name;
    if let ErrorKind::ProtocolError(amqp) = error.kind() {
        let text = amqp.get_message().as_str();
        match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => return explain_precondition(d, text),
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => {
                return format!(
                    "cannot declare exchange \"{name}\" ({}) from [{}]: the broker refused access \
                     (check the user's configure permission on the vhost). Broker said: {text}",
                    d.wanted(),
                    d.table
                )
            }
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => {
                return format!(
                    "exchange \"{name}\" from [{}] does not exist (names under amq. are only checked, \
                     never created). Broker said: {text}",
                    d.table
                )
            }
            _ => {}
        }
    }
    format!(
        "cannot declare exchange \"{name}\" ({}) from [{}]: {error}",
        d.wanted(),
        d.table
    )
}

/// RabbitMQ's reply text has the shape `PRECONDITION_FAILED - inequivalent
/// arg 'type' for exchange 'presence' in vhost '/': received 'topic' but
/// current is 'fanout'`.
pub fn explain_precondition(d: &Declaration, text: &str) -> String {
    let name = &d.exchange.name;
    match parse_inequivalent(text) {
        Some((arg, received, current)) => format!(
            "exchange \"{name}\" already exists on the broker with {arg} = {current}, but [{table}] asks for \
             {arg} = {received} (configured: {wanted}). Delete the exchange or change [{table}] to match \
             what the broker has. Broker said: {text}",
            table = d.table,
            wanted = d.wanted(),
        ),
        None => format!(
            "cannot declare exchange \"{name}\" ({}) from [{}]: the broker refused it. Broker said: {text}",
            d.wanted(),
            d.table
        ),
    }
}

/// `(argument, what we sent, what the broker has)`.
fn parse_inequivalent(text: &str) -> Option<(&str, &str, &str)> {
    let rest = &text[text.find("inequivalent arg '")? + "inequivalent arg '".len()..];
    let arg = &rest[..rest.find('\'')?];
    let rest = &rest[rest.find("received '")? + "received '".len()..];
    let received = &rest[..rest.find('\'')?];
    let rest = &rest[rest.find("current is '")? + "current is '".len()..];
    let current = &rest[..rest.find('\'')?];
    Some((arg, received, current))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rabbit::config::ExchangeType;

    fn decl() -> Declaration {
        Declaration {
            exchange: Exchange {
                name: "presence".into(),
                kind: ExchangeType::Topic,
                durable: true,
            },
            table: "backends.rabbit.main.presence_exchange".into(),
        }
    }

    #[test]
    fn names_both_settings() {
        let text = "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'presence' in vhost '/': \
                    received 'topic' but current is 'fanout'";
        let m = explain_precondition(&decl(), text);
        assert!(
            m.starts_with("exchange \"presence\" already exists on the broker with type = fanout"),
            "{m}"
        );
        assert!(m.contains("asks for type = topic"), "{m}");
        assert!(m.contains("configured: type = \"topic\", durable = true"), "{m}");
        assert!(m.contains("[backends.rabbit.main.presence_exchange]"), "{m}");
        assert!(m.ends_with(text), "{m}");
    }

    #[test]
    fn falls_back_to_the_broker_text() {
        let m = explain_precondition(&decl(), "PRECONDITION_FAILED - something else");
        assert!(
            m.contains("presence") && m.contains("something else") && m.contains("durable = true"),
            "{m}"
        );
    }
}
