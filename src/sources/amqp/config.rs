//! `[sources.amqp.NAME]`: where the hook calls come from and how many
//! partitions the stream has. Every value is checked while it is read, so
//! a mistake is reported at its own line and column.

use event_pusher_backends::rabbit::{checked, AmqpUrl};
use serde::{Deserialize, Deserializer};

/// Most partitions a source may have: each is a quorum queue and a
/// channel per sidecar; past this the broker, not the sidecar, limits.
pub const MAX_PARTITIONS: usize = 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSourceConfig {
    /// `amqp://user:password@host:5672/vhost` (or `amqps://`).
    pub url: AmqpUrl,
    /// The `x-consistent-hash` exchange chat nodes publish to; also the
    /// prefix of the queue names (`NAME.0` .. `NAME.N-1`, `NAME.dead`).
    #[serde(default = "default_exchange", deserialize_with = "exchange_name")]
    pub exchange: String,
    /// Partition queues; change it only with every sidecar stopped and the
    /// queues drained (the hash ring moves users between partitions).
    #[serde(default = "default_partitions", deserialize_with = "partitions")]
    pub partitions: usize,
    /// Unacknowledged messages the broker sends ahead, per partition.
    #[serde(default = "default_prefetch", deserialize_with = "prefetch")]
    pub prefetch: u16,
    /// Declare the exchange, queues and bindings at start (idempotent).
    #[serde(default = "default_declare")]
    pub declare: bool,
}

pub const DEFAULT_EXCHANGE: &str = "event-pusher.hooks";

fn default_exchange() -> String {
    DEFAULT_EXCHANGE.to_owned()
}

fn default_partitions() -> usize {
    8
}

fn default_prefetch() -> u16 {
    256
}

fn default_declare() -> bool {
    true
}

fn exchange_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = checked("exchange", String::deserialize(d)?).map_err(serde::de::Error::custom)?;
    // The longest queue name derived from it must fit too.
    let longest = format!("{name}.dead");
    if longest.len() > event_pusher_backends::rabbit::MAX_SHORT_STRING {
        return Err(serde::de::Error::custom(
            "`exchange` is too long: the queue names `EXCHANGE.N` and `EXCHANGE.dead` must fit in 255 bytes",
        ));
    }
    if name.starts_with("amq.") {
        return Err(serde::de::Error::custom(
            "`exchange` must not start with `amq.` (those names belong to the broker)",
        ));
    }
    Ok(name)
}

fn partitions<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n == 0 || n > MAX_PARTITIONS {
        return Err(serde::de::Error::custom(format!(
            "must be between 1 and {MAX_PARTITIONS}"
        )));
    }
    Ok(n)
}

fn prefetch<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let n = u16::deserialize(d)?;
    if n == 0 {
        return Err(serde::de::Error::custom(
            "must be at least 1 (0 would mean unlimited: the broker could flood the sidecar)",
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<AmqpSourceConfig, String> {
        let text = format!("url = \"amqp://guest:secret@127.0.0.1:5672/%2f\"\n{extra}");
        toml::from_str::<AmqpSourceConfig>(&text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = parse("").unwrap();
        assert_eq!(c.exchange, "event-pusher.hooks");
        assert_eq!((c.partitions, c.prefetch, c.declare), (8, 256, true));
    }

    #[test]
    fn bad_values_name_the_problem() {
        assert!(parse("partitions = 0").unwrap_err().contains("between 1 and 1024"));
        assert!(parse("prefetch = 0").unwrap_err().contains("at least 1"));
        assert!(parse("prefetch = 70000").is_err());
        assert!(parse("exchange = \"\"").unwrap_err().contains("must not be empty"));
        assert!(parse("exchange = \"amq.x\"").unwrap_err().contains("amq."));
        assert!(parse("exchange_name = \"x\"").unwrap_err().contains("unknown field"));
        let e = parse("").map(|_| ()).and_then(|_| {
            toml::from_str::<AmqpSourceConfig>("url = \"nope\"")
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        assert!(e.unwrap_err().contains("invalid AMQP URI"));
    }
}
