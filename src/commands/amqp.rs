//! What the AMQP commands (`publish`, `declare-topology`) share: a
//! connection (the transport's one AMQP connect) and a channel from a
//! `--url`.

use event_pusher_backends::rabbit::AmqpUrl;
use event_pusher_backends::transport::amqp;
use lapin::{Channel, Connection};

use super::CommandError;

/// Connect to `url` (named `name` in the broker's connection list) and
/// open a channel. Errors show the URL without its password.
pub async fn connect(url: &str, name: &str) -> Result<(Connection, Channel), CommandError> {
    let url = AmqpUrl::parse(url).map_err(|e| CommandError(format!("--url: {e}")))?;
    let connection = amqp::connect(&url, name)
        .await
        .map_err(|e| CommandError(e.to_string()))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| CommandError(format!("cannot open a channel on {url}: {e}")))?;
    Ok((connection, channel))
}
